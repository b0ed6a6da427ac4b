//! `/apps/{app}/objects`: uploads (build sources).

use reqwest::Method;
use reqwest::header::CONTENT_TYPE;

use super::error::ClientError;
use super::model::Object;
use super::{Client, seg};

impl Client {
    /// `POST /apps/{app}/objects/{key}`: stores `body` (streamed) under `key` (`tmp/x.tgz`).
    pub async fn store_object(
        &self,
        app: &str,
        key: &str,
        body: reqwest::Body,
    ) -> Result<Object, ClientError> {
        let key: Vec<String> = key.split('/').map(seg).collect();
        let (url, builder) = self.request(
            Method::POST,
            &format!("/apps/{}/objects/{}", seg(app), key.join("/")),
        );
        let builder = builder
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body);
        let response = self.send(&url, builder).await?;
        self.json(&url, response).await
    }
}
