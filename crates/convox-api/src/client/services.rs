//! `/apps/{app}/services`.

use reqwest::Method;

use super::error::ClientError;
use super::http::{Params, push};
use super::model::Service;
use super::options::ServiceUpdateOptions;
use super::{Client, seg};

impl Client {
    /// `GET /apps/{app}/services`.
    pub async fn services(&self, app: &str) -> Result<Vec<Service>, ClientError> {
        self.get_json(&format!("/apps/{}/services", seg(app)), &Params::new())
            .await
    }

    /// `PUT /apps/{app}/services/{service}`: scale.
    pub async fn update_service(
        &self,
        app: &str,
        service: &str,
        opts: &ServiceUpdateOptions,
    ) -> Result<(), ClientError> {
        let mut form = Params::new();
        push(&mut form, "count", opts.count);
        push(&mut form, "cpu", opts.cpu);
        push(&mut form, "memory", opts.memory);
        push(&mut form, "min", opts.min);
        push(&mut form, "max", opts.max);
        self.send_ok(
            Method::PUT,
            &format!("/apps/{}/services/{}", seg(app), seg(service)),
            &form,
        )
        .await
    }

    /// `POST /apps/{app}/services/{service}/restart`.
    pub async fn restart_service(&self, app: &str, service: &str) -> Result<(), ClientError> {
        self.send_ok(
            Method::POST,
            &format!("/apps/{}/services/{}/restart", seg(app), seg(service)),
            &Params::new(),
        )
        .await
    }
}
