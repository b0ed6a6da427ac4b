//! `/apps/{app}/services`.

use axum::extract::Path;
use axum::response::Response;

use super::St;
use crate::error::{ApiResult, render_json, render_ok};
use crate::params::Form;
use crate::state::ServiceUpdate;

/// `GET /apps/{app}/services`.
pub async fn list(st: St, Path(app): Path<String>) -> ApiResult<Response> {
    let rack = st.lock();
    Ok(render_json(&rack.app(&app)?.services))
}

/// `PUT /apps/{app}/services/{service}` (form: `count`, `cpu`, `memory`,
/// `gpu`, `gpu-vendor`, `min`, `max`).
pub async fn update(
    st: St,
    Path((app, service)): Path<(String, String)>,
    form: Form,
) -> ApiResult<Response> {
    let update = ServiceUpdate {
        count: form.int("count")?,
        cpu: form.int("cpu")?,
        memory: form.int("memory")?,
        gpu: form.int("gpu")?,
        gpu_vendor: form.get("gpu-vendor").map(str::to_string),
        min: form.int("min")?,
        max: form.int("max")?,
    };
    st.lock().update_service(&app, &service, update)?;
    Ok(render_ok())
}

/// `POST /apps/{app}/services/{service}/restart`.
pub async fn restart(st: St, Path((app, service)): Path<(String, String)>) -> ApiResult<Response> {
    st.lock().restart_service(&app, &service)?;
    Ok(render_ok())
}
