//! `/apps/{app}/objects/{key}`. Uploads are streamed: only their size and
//! SHA-256 are kept, never their content, so 200 MB uploads cost nothing.
//! Fetching an object streams back as many zero bytes as were uploaded, with
//! the original digest in `X-Object-Sha256`.

use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::St;
use crate::error::{ApiError, ApiResult, render_json, render_ok};
use crate::model::Object;
use crate::params::Form;

/// The rack's key check: no `..` segments, not empty after cleaning.
fn sanitize_key(key: &str) -> ApiResult<String> {
    if key.split('/').any(|seg| seg == "..") {
        return Err(ApiError::bad_request("invalid object key"));
    }
    let cleaned: Vec<&str> = key
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    let cleaned = cleaned.join("/");
    if cleaned.trim().is_empty() {
        return Err(ApiError::bad_request("invalid object key"));
    }
    Ok(cleaned)
}

/// `POST /apps/{app}/objects/{key}`: stores the request body. Answers `{"Url": "object://<app>/<key>"}`.
pub async fn store(
    st: St,
    Path((app, key)): Path<(String, String)>,
    body: Body,
) -> ApiResult<Response> {
    store_inner(st, app, Some(key), body).await
}

/// `POST /apps/{app}/objects/` (empty key): stores under a generated `tmp/` key.
pub async fn store_generated(st: St, Path(app): Path<String>, body: Body) -> ApiResult<Response> {
    store_inner(st, app, None, body).await
}

async fn store_inner(st: St, app: String, key: Option<String>, body: Body) -> ApiResult<Response> {
    let key = key
        .filter(|k| !k.is_empty())
        .map(|k| sanitize_key(&k))
        .transpose()?;
    st.lock().app(&app)?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading body: {e}")))?;
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    tracing::debug!(app, size, sha256 = %digest, "object stored");
    let key = st.lock().store_object(&app, key, size, digest)?;
    Ok(render_json(&Object {
        url: format!("object://{app}/{key}"),
    }))
}

/// `GET /apps/{app}/objects/{key}`: `size` zero bytes, digest in a header.
pub async fn fetch(st: St, Path((app, key)): Path<(String, String)>) -> ApiResult<Response> {
    let key = sanitize_key(&key)?;
    let obj = st
        .lock()
        .app(&app)?
        .objects
        .get(&key)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("object not found: {key}")))?;
    const CHUNK: usize = 64 * 1024;
    let zeros = Bytes::from(vec![0u8; CHUNK]);
    let full = obj.size / CHUNK as u64;
    let rest = (obj.size % CHUNK as u64) as usize;
    let chunks = futures_util::stream::iter(
        (0..full)
            .map(move |_| zeros.clone())
            .chain((rest > 0).then(|| Bytes::from(vec![0u8; rest]))),
    )
    .map(Ok::<_, std::io::Error>);
    let mut res = Body::from_stream(chunks).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(obj.size));
    if let Ok(v) = HeaderValue::from_str(&obj.sha256) {
        h.insert("x-object-sha256", v);
    }
    Ok(res)
}

/// `HEAD /apps/{app}/objects/{key}`: 200 when the object exists, else 404.
pub async fn exists(st: St, Path((app, key)): Path<(String, String)>) -> ApiResult<Response> {
    let key = sanitize_key(&key)?;
    let rack = st.lock();
    if rack.app(&app)?.objects.contains_key(&key) {
        Ok(render_json(&true))
    } else {
        Err(ApiError::not_found(format!("object not found: {key}")))
    }
}

/// `DELETE /apps/{app}/objects/{key}`.
pub async fn delete(st: St, Path((app, key)): Path<(String, String)>) -> ApiResult<Response> {
    let key = sanitize_key(&key)?;
    let mut rack = st.lock();
    rack.app_mut(&app)?
        .objects
        .remove(&key)
        .ok_or_else(|| ApiError::not_found(format!("object not found: {key}")))?;
    Ok(render_ok())
}

/// `GET /apps/{app}/objects` (query: `prefix`): keys.
pub async fn list(st: St, Path(app): Path<String>, form: Form) -> ApiResult<Response> {
    let prefix = form.value("prefix");
    if prefix.split('/').any(|s| s == "..") {
        return Err(ApiError::bad_request("invalid prefix"));
    }
    let rack = st.lock();
    let keys: Vec<&String> = rack
        .app(&app)?
        .objects
        .keys()
        .filter(|k| k.starts_with(prefix))
        .collect();
    Ok(render_json(&keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(
            sanitize_key("tmp/abc.tgz").ok().as_deref(),
            Some("tmp/abc.tgz")
        );
        assert_eq!(sanitize_key("/a//b/./c").ok().as_deref(), Some("a/b/c"));
        assert!(sanitize_key("a/../b").is_err());
        assert!(sanitize_key("/").is_err());
    }
}
