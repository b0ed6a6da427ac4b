//! `/apps/{app}/processes` and `POST /apps/{app}/services/{service}/processes`.

use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::Response;

use super::St;
use crate::error::{ApiResult, render_json, render_ok};
use crate::model::Process;
use crate::params::{Form, header, header_int};
use crate::state::RunOptions;

/// `GET /apps/{app}/processes` (query: `service`, `release`).
pub async fn list(st: St, Path(app): Path<String>, form: Form) -> ApiResult<Response> {
    let rack = st.lock();
    let a = rack.app(&app)?;
    let service = form.get("service").filter(|s| !s.is_empty());
    let release = form.get("release").filter(|s| !s.is_empty());
    let mut ps: Vec<&Process> = a
        .processes
        .iter()
        .map(|p| &p.process)
        .filter(|p| service.is_none_or(|s| p.name == s))
        .filter(|p| release.is_none_or(|r| p.release == r))
        .collect();
    ps.sort_by(|a, b| (&a.app, &a.name, &a.id).cmp(&(&b.app, &b.name, &b.id)));
    Ok(render_json(&ps))
}

/// `GET /apps/{app}/processes/{pid}`.
pub async fn get(st: St, Path((app, pid)): Path<(String, String)>) -> ApiResult<Response> {
    let rack = st.lock();
    Ok(render_json(&rack.app(&app)?.process(&pid)?.process))
}

/// `DELETE /apps/{app}/processes/{pid}`.
pub async fn stop(st: St, Path((app, pid)): Path<(String, String)>) -> ApiResult<Response> {
    st.lock().stop_process(&app, &pid)?;
    Ok(render_ok())
}

/// `POST /apps/{app}/services/{service}/processes` (headers: `Command`,
/// `Release`, `Cpu`, `Memory`, `Height`, `Width`, `Environment`, ...).
pub async fn run(
    st: St,
    Path((app, service)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    for name in ["Cpu-Limit", "Gpu", "Height", "Memory-Limit", "Width"] {
        header_int(&headers, name)?;
    }
    let opts = RunOptions {
        command: header(&headers, "Command").map(str::to_string),
        release: header(&headers, "Release").map(str::to_string),
        cpu: header_int(&headers, "Cpu")?,
        memory: header_int(&headers, "Memory")?,
    };
    let p = st.lock().run_process(&app, &service, opts)?;
    Ok(render_json(&p))
}
