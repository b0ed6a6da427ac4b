//! Sending HTTP requests: authentication, forms, JSON answers and error answers.

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;

use super::error::{ClientError, error_from_response};
use super::{BASIC_USER, Client};

/// Form or query parameters, in order.
pub(crate) type Params = Vec<(&'static str, String)>;

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
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::from_reqwest(url, &e))?;
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
        let response = self.send(&url, builder).await?;
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
