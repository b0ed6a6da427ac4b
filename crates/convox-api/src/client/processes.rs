//! `/apps/{app}/processes` and running one-off processes.

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::error::ClientError;
use super::http::{Params, push};
use super::model::Process;
use super::options::{ProcessListOptions, ProcessRunOptions};
use super::{Client, seg};

impl Client {
    /// `GET /apps/{app}/processes`.
    pub async fn processes(
        &self,
        app: &str,
        opts: &ProcessListOptions,
    ) -> Result<Vec<Process>, ClientError> {
        let mut query = Params::new();
        push(&mut query, "service", opts.service.as_ref());
        push(&mut query, "release", opts.release.as_ref());
        self.get_json(&format!("/apps/{}/processes", seg(app)), &query)
            .await
    }

    /// `GET /apps/{app}/processes/{pid}`.
    pub async fn process(&self, app: &str, pid: &str) -> Result<Process, ClientError> {
        self.get_json(
            &format!("/apps/{}/processes/{}", seg(app), seg(pid)),
            &Params::new(),
        )
        .await
    }

    /// `DELETE /apps/{app}/processes/{pid}`.
    pub async fn stop_process(&self, app: &str, pid: &str) -> Result<(), ClientError> {
        self.send_ok(
            Method::DELETE,
            &format!("/apps/{}/processes/{}", seg(app), seg(pid)),
            &Params::new(),
        )
        .await
    }

    /// `POST /apps/{app}/services/{service}/processes`: starts a one-off process. Options go
    /// in headers (`Command`, `Release`, `Height`, `Width`…), as the Convox SDK sends them.
    pub async fn run_process(
        &self,
        app: &str,
        service: &str,
        opts: &ProcessRunOptions,
    ) -> Result<Process, ClientError> {
        let mut headers = HeaderMap::new();
        let mut set = |name: &'static str, value: Option<String>| -> Result<(), ClientError> {
            if let Some(v) = value {
                let v = HeaderValue::from_str(&v)
                    .map_err(|_| ClientError::Url(format!("{name}: not a valid header value")))?;
                headers.insert(HeaderName::from_static(name), v);
            }
            Ok(())
        };
        set("command", opts.command.clone())?;
        set("release", opts.release.clone())?;
        set("cpu", opts.cpu.map(|v| v.to_string()))?;
        set("memory", opts.memory.map(|v| v.to_string()))?;
        set("height", opts.height.map(|v| v.to_string()))?;
        set("width", opts.width.map(|v| v.to_string()))?;
        let env = (!opts.environment.is_empty()).then(|| {
            opts.environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        });
        set("environment", env)?;
        let (url, response) = self
            .send_form(
                Method::POST,
                &format!("/apps/{}/services/{}/processes", seg(app), seg(service)),
                &Params::new(),
                headers,
            )
            .await?;
        self.json(&url, response).await
    }
}
