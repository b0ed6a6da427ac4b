//! Sending HTTP requests: authentication, forms, JSON answers and error answers.

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;

use super::error::{ClientError, error_from_response};
use super::{BASIC_USER, Client};

/// Form or query parameters, in order.
pub(crate) type Params = Vec<(&'static str, String)>;

/// Largest answer read into memory: listings of apps, releases or processes are far smaller.
/// Without a bound, a server sending gigabytes made the CLI try to hold them all.
pub const ANSWER_LIMIT: usize = 64 << 20;

/// Longest a request with a small answer (not a stream, not an upload) may take in all, a
/// little over the gateway's default wait for the rack (`RACK_READ_TIMEOUT_SECS`, 300 s).
pub const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(330);

/// Reads `response`'s body, at most `limit` bytes (more is an error, not a cut).
pub async fn read_limited(
    url: &str,
    mut response: Response,
    limit: usize,
) -> Result<Vec<u8>, ClientError> {
    let too_large = || ClientError::Decode {
        url: url.to_string(),
        reason: format!("the answer is larger than {} MiB", limit >> 20),
    };
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ClientError::from_reqwest(url, &e))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Client {
    /// The full URL of an API path (`/apps/web`).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with the rack's Basic auth and a JSON `Accept`.
    pub(crate) fn request(&self, method: Method, path: &str) -> (String, RequestBuilder) {
        let url = self.url(path);
        let builder = self
            .http
            .request(method, &url)
            .basic_auth(BASIC_USER, Some(&self.token))
            .header(ACCEPT, "application/json");
        (url, builder)
    }

    /// Sends `builder`; error statuses become [`ClientError::Api`].
    pub(crate) async fn send(
        &self,
        url: &str,
        builder: RequestBuilder,
    ) -> Result<Response, ClientError> {
        let response = builder
            .send()
            .await
            .map_err(|e| ClientError::from_reqwest(url, &e))?;
        if response.status().is_success() {
            Ok(response)
        } else if response.status().is_redirection() {
            // Not followed: a redirect could carry a form (an env value) to another host.
            Err(redirected(url, &response))
        } else {
            Err(error_from_response(response).await)
        }
    }

    /// Reads a JSON answer.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        url: &str,
        response: Response,
    ) -> Result<T, ClientError> {
        let bytes = read_limited(url, response, ANSWER_LIMIT).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    /// `GET path?query` → JSON.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Params,
    ) -> Result<T, ClientError> {
        let path = if query.is_empty() {
            path.to_string()
        } else {
            let qs =
                serde_urlencoded::to_string(query).map_err(|e| ClientError::Url(e.to_string()))?;
            format!("{path}?{qs}")
        };
        let (url, builder) = self.request(Method::GET, &path);
        let response = self.send(&url, builder.timeout(ANSWER_TIMEOUT)).await?;
        self.json(&url, response).await
    }

    /// A request carrying a URL-encoded form (the rack's `param:` options) and headers.
    pub(crate) async fn send_form(
        &self,
        method: Method,
        path: &str,
        form: &Params,
        headers: HeaderMap,
    ) -> Result<(String, Response), ClientError> {
        let (url, builder) = self.request(method, path);
        let body =
            serde_urlencoded::to_string(form).map_err(|e| ClientError::Url(e.to_string()))?;
        let builder = builder
            .headers(headers)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .timeout(ANSWER_TIMEOUT)
            .body(body);
        let response = self.send(&url, builder).await?;
        Ok((url, response))
    }

    /// `POST path` with a form → JSON.
    pub(crate) async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        form: &Params,
    ) -> Result<T, ClientError> {
        let (url, response) = self
            .send_form(Method::POST, path, form, HeaderMap::new())
            .await?;
        self.json(&url, response).await
    }

    /// A form request whose answer body is ignored.
    pub(crate) async fn send_ok(
        &self,
        method: Method,
        path: &str,
        form: &Params,
    ) -> Result<(), ClientError> {
        self.send_form(method, path, form, HeaderMap::new())
            .await
            .map(|_| ())
    }
}

/// Adds `name=value` to `params` when `value` is set.
pub(crate) fn push<T: ToString>(params: &mut Params, name: &'static str, value: Option<T>) {
    if let Some(v) = value {
        params.push((name, v.to_string()));
    }
}

/// The error for a redirect answer, naming where it pointed (printable, cut short).
pub fn redirected(url: &str, response: &Response) -> ClientError {
    let to: String = response
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .unwrap_or("nowhere")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    ClientError::Decode {
        url: url.to_string(),
        reason: format!(
            "HTTP {} redirect to {to:?}, not followed: give the gateway's own URL",
            response.status().as_u16()
        ),
    }
}
