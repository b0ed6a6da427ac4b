//! `/apps` and `/apps/{app}`.

use axum::extract::Path;
use axum::response::Response;

use super::St;
use crate::error::{ApiResult, render_json, render_ok};
use crate::model::App;
use crate::params::Form;

/// `GET /apps`: all apps, sorted by name.
pub async fn list(st: St) -> Response {
    let rack = st.lock();
    let apps: Vec<&App> = rack.apps.values().map(|a| &a.app).collect();
    render_json(&apps)
}

/// `POST /apps` (form: `name`, `generation`, `timeout`).
pub async fn create(st: St, form: Form) -> ApiResult<Response> {
    form.int("timeout")?;
    let app = st.lock().create_app(form.value("name"))?;
    Ok(render_json(&app))
}

/// `GET /apps/{app}`.
pub async fn get(st: St, Path(app): Path<String>) -> ApiResult<Response> {
    let rack = st.lock();
    Ok(render_json(&rack.app(&app)?.app))
}

/// `DELETE /apps/{app}`.
pub async fn delete(st: St, Path(app): Path<String>) -> ApiResult<Response> {
    st.lock().delete_app(&app)?;
    Ok(render_ok())
}

/// `PUT /apps/{app}` (form: `lock`, `parameters` as a URL-encoded map).
pub async fn update(st: St, Path(app): Path<String>, form: Form) -> ApiResult<Response> {
    st.lock()
        .update_app(&app, form.bool("lock"), form.map("parameters"))?;
    Ok(render_ok())
}
