//! `/apps/{app}/builds`.

use super::error::ClientError;
use super::http::{Params, push};
use super::model::Build;
use super::options::BuildCreateOptions;
use super::{Client, seg};

impl Client {
    /// `GET /apps/{app}/builds` (newest first; the rack's default limit is 10).
    pub async fn builds(&self, app: &str, limit: Option<u32>) -> Result<Vec<Build>, ClientError> {
        let mut query = Params::new();
        push(&mut query, "limit", limit);
        self.get_json(&format!("/apps/{}/builds", seg(app)), &query)
            .await
    }

    /// `GET /apps/{app}/builds/{id}`.
    pub async fn build(&self, app: &str, id: &str) -> Result<Build, ClientError> {
        self.get_json(
            &format!("/apps/{}/builds/{}", seg(app), seg(id)),
            &Params::new(),
        )
        .await
    }

    /// `POST /apps/{app}/builds`: builds the source at `url` (`object://app/key`).
    pub async fn create_build(
        &self,
        app: &str,
        url: &str,
        opts: &BuildCreateOptions,
    ) -> Result<Build, ClientError> {
        let mut form: Params = vec![("url", url.to_string())];
        push(&mut form, "description", opts.description.as_ref());
        push(&mut form, "manifest", opts.manifest.as_ref());
        push(&mut form, "git-sha", opts.git_sha.as_ref());
        if opts.no_cache {
            form.push(("no-cache", "true".into()));
        }
        if opts.development {
            form.push(("development", "true".into()));
        }
        self.post_json(&format!("/apps/{}/builds", seg(app)), &form)
            .await
    }
}
