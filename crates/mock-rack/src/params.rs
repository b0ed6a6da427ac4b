//! Request options the way the rack's `stdapi.UnmarshalOptions` reads them:
//! `param:` fields from the form (URL-encoded body first, then the query
//! string), `query:` fields from the query string, `header:` fields from headers.
//! Booleans are `"true"` or false; integers must parse or the request fails.

use std::collections::BTreeMap;

use axum::body::to_bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};

use crate::error::ApiError;
use crate::time::Timestamp;

/// Largest URL-encoded form body accepted (release env can be large).
const MAX_FORM_BYTES: usize = 10 * 1024 * 1024;

/// Form and query values of a request, body values first.
#[derive(Debug, Default, Clone)]
pub struct Form {
    values: Vec<(String, String)>,
}

impl Form {
    /// Parses `query` and an optional URL-encoded `body`.
    pub fn parse(query: Option<&str>, body: &[u8]) -> Self {
        let mut values: Vec<(String, String)> = url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if let Some(q) = query {
            values.extend(
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned())),
            );
        }
        Self { values }
    }

    /// The first value of `name`, if present (even if empty).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name` or `""`.
    pub fn value(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    /// An integer option.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name).map(parse_int).transpose()
    }

    /// A boolean option (`"true"` is true, anything else false).
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.get(name).map(|v| v == "true")
    }

    /// A map option (itself URL-encoded, as the SDK sends `parameters`).
    pub fn map(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.get(name).map(parse_map)
    }

    /// A time option in the rack's sortable format.
    pub fn time(&self, name: &str) -> Result<Option<Timestamp>, ApiError> {
        self.get(name)
            .map(|v| {
                Timestamp::parse_sortable(v).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "parsing time \"{v}\" as \"20060102.150405.000000000\": cannot parse"
                    ))
                })
            })
            .transpose()
    }
}

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let query = req.uri().query().map(str::to_owned);
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            })
            .unwrap_or(false);
        let body = if is_form {
            to_bytes(req.into_body(), MAX_FORM_BYTES)
                .await
                .map_err(|_| {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                })?
        } else {
            Default::default()
        };
        Ok(Self::parse(query.as_deref(), &body))
    }
}

/// Parses an integer with Go's `strconv.Atoi` error text.
pub fn parse_int(v: &str) -> Result<i64, ApiError> {
    v.parse::<i64>().map_err(|_| {
        ApiError::bad_request(format!("strconv.Atoi: parsing \"{v}\": invalid syntax"))
    })
}

/// Parses a URL-encoded map (`a=1&b=2`).
pub fn parse_map(v: &str) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(v.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A header value as a string, if present and valid UTF-8.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// An integer header.
pub fn header_int(headers: &HeaderMap, name: &str) -> Result<Option<i64>, ApiError> {
    header(headers, name).map(parse_int).transpose()
}

/// A boolean header (`"true"` is true).
pub fn header_bool(headers: &HeaderMap, name: &str) -> Option<bool> {
    header(headers, name).map(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_before_query() {
        let f = Form::parse(Some("count=1&limit=5"), b"count=3&env=A%3D1%0AB%3D2");
        assert_eq!(f.int("count"), Ok(Some(3)));
        assert_eq!(f.int("limit"), Ok(Some(5)));
        assert_eq!(f.value("env"), "A=1\nB=2");
        assert!(f.int("env").is_err());
        assert_eq!(f.get("missing"), None);
    }

    #[test]
    fn maps() {
        let m = parse_map("BuildCpu=512&Other=a%26b");
        assert_eq!(m.get("BuildCpu").map(String::as_str), Some("512"));
        assert_eq!(m.get("Other").map(String::as_str), Some("a&b"));
    }
}
