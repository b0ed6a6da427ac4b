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

/// Most JSON values (arrays, objects, members, elements) an answer may hold. Held in memory, a
/// value takes tens of bytes however short its text: 20 million `[]` in 60 MB took the CLI to
/// 1.4 GB. A listing of thousands of processes holds under 100 000.
pub const ANSWER_VALUES: usize = 1_000_000;

/// Parses a JSON answer read from `url`, refusing one with more than [`ANSWER_VALUES`] values
/// before building any of them.
pub(crate) fn parse_answer<T: DeserializeOwned>(url: &str, bytes: &[u8]) -> Result<T, ClientError> {
    if more_values_than(bytes, ANSWER_VALUES) {
        return Err(ClientError::Decode {
            url: url.to_string(),
            reason: format!("the answer holds more than {ANSWER_VALUES} JSON values"),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
        url: url.to_string(),
        reason: e.to_string(),
    })
}

/// Whether `json` holds more than about `limit` values, counted without parsing as its `[`,
/// `{` and `,` outside strings: each opens an array or object or separates one element or
/// member from the next, so the count is between about half and twice the number of values.
pub(crate) fn more_values_than(json: &[u8], limit: usize) -> bool {
    let (mut count, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' | b',' => {
                count += 1;
                if count > limit {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

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
        parse_answer(url, &bytes)
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

#[cfg(test)]
mod tests {
    use super::more_values_than;

    #[test]
    fn values_are_counted_outside_strings_only() {
        // `[1,2]` counts 2 (`[` and `,`); `{"a":[]}` 2.
        assert!(!more_values_than(b"[1,2]", 2));
        assert!(more_values_than(b"[1,2]", 1));
        assert!(!more_values_than(br#"{"a":[]}"#, 2));
        assert!(more_values_than(br#"{"a":[]}"#, 1));
        assert!(!more_values_than(b"\"a scalar\"", 0));
        // Brackets and commas inside strings, escaped quotes included, are text: 2 here.
        let text = br#"["[,{\"],[,{", "\\"]"#;
        assert!(!more_values_than(text, 2));
        assert!(more_values_than(text, 1));
        // `[` + ten `[],` (each `[` and `,`) = 21.
        let many = format!("[{}0]", "[],".repeat(10));
        assert!(!more_values_than(many.as_bytes(), 21));
        assert!(more_values_than(many.as_bytes(), 20));
    }
}
