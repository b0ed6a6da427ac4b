//! `/apps/{app}/releases`.

use reqwest::Method;

use super::error::ClientError;
use super::http::{Params, push};
use super::model::Release;
use super::options::ReleaseCreateOptions;
use super::{Client, seg};

impl Client {
    /// `GET /apps/{app}/releases` (newest first; the rack's default limit is 10).
    pub async fn releases(
        &self,
        app: &str,
        limit: Option<u32>,
    ) -> Result<Vec<Release>, ClientError> {
        let mut query = Params::new();
        push(&mut query, "limit", limit);
        self.get_json(&format!("/apps/{}/releases", seg(app)), &query)
            .await
    }

    /// `GET /apps/{app}/releases/{id}`.
    pub async fn release(&self, app: &str, id: &str) -> Result<Release, ClientError> {
        self.get_json(
            &format!("/apps/{}/releases/{}", seg(app), seg(id)),
            &Params::new(),
        )
        .await
    }

    /// `POST /apps/{app}/releases`: a new release (this is how the environment changes).
    pub async fn create_release(
        &self,
        app: &str,
        opts: &ReleaseCreateOptions,
    ) -> Result<Release, ClientError> {
        let mut form = Params::new();
        push(&mut form, "build", opts.build.as_ref());
        push(&mut form, "description", opts.description.as_ref());
        push(&mut form, "env", opts.env.as_ref());
        push(&mut form, "parent-release", opts.parent_release.as_ref());
        self.post_json(&format!("/apps/{}/releases", seg(app)), &form)
            .await
    }

    /// `POST /apps/{app}/releases/{id}/promote`.
    pub async fn promote_release(
        &self,
        app: &str,
        id: &str,
        force: bool,
    ) -> Result<(), ClientError> {
        let mut form = Params::new();
        if force {
            form.push(("force", "true".into()));
        }
        self.send_ok(
            Method::POST,
            &format!("/apps/{}/releases/{}/promote", seg(app), seg(id)),
            &form,
        )
        .await
    }
}
