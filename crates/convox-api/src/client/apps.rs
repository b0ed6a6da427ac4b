//! `/apps`.

use reqwest::Method;

use super::error::ClientError;
use super::http::Params;
use super::model::App;
use super::{Client, seg};

impl Client {
    /// `GET /apps`.
    pub async fn apps(&self) -> Result<Vec<App>, ClientError> {
        self.get_json("/apps", &Params::new()).await
    }

    /// `GET /apps/{app}`.
    pub async fn app(&self, name: &str) -> Result<App, ClientError> {
        self.get_json(&format!("/apps/{}", seg(name)), &Params::new())
            .await
    }

    /// `POST /apps` (form `name`, optional `generation`).
    pub async fn create_app(
        &self,
        name: &str,
        generation: Option<&str>,
    ) -> Result<App, ClientError> {
        let mut form: Params = vec![("name", name.to_string())];
        if let Some(g) = generation {
            form.push(("generation", g.to_string()));
        }
        self.post_json("/apps", &form).await
    }

    /// `DELETE /apps/{app}`.
    pub async fn delete_app(&self, name: &str) -> Result<(), ClientError> {
        self.send_ok(
            Method::DELETE,
            &format!("/apps/{}", seg(name)),
            &Params::new(),
        )
        .await
    }
}
