//! `/system`, `/instances`, `/resources`, app resources and small fixed lists.

use axum::extract::Path;
use axum::response::Response;

use super::St;
use crate::error::{ApiResult, render_json, render_ok};
use crate::model::{Capacity, Process, Release};
use crate::params::Form;

/// `GET /auth`: `ok` when the credentials are good.
pub async fn auth() -> Response {
    render_ok()
}

/// `GET /check` (unauthenticated health check): `ok`.
pub async fn check() -> &'static str {
    "ok"
}

/// `GET /system`.
pub async fn get(st: St) -> Response {
    render_json(&st.lock().system)
}

/// `PUT /system` (form: `count`, `force`, `parameters`, `type`, `version`).
pub async fn update(st: St, form: Form) -> ApiResult<Response> {
    let count = form.int("count")?;
    let mut rack = st.lock();
    if let Some(params) = form.map("parameters") {
        rack.system.parameters.extend(params);
    }
    if let Some(v) = form.get("version").filter(|v| !v.is_empty()) {
        rack.system.version = v.to_string();
    }
    if let Some(t) = form.get("type").filter(|v| !v.is_empty()) {
        rack.system.kind = t.to_string();
    }
    if let Some(c) = count {
        rack.system.count = c;
    }
    Ok(render_ok())
}

/// `GET /system/capacity`.
pub async fn capacity(st: St) -> Response {
    let rack = st.lock();
    let mut cap = Capacity {
        cluster_cpu: rack
            .instances
            .iter()
            .map(|i| (i.cpu_capacity * 1024.0) as i64)
            .sum(),
        cluster_gpu: rack.instances.iter().map(|i| i.gpu_capacity).sum(),
        cluster_memory: rack
            .instances
            .iter()
            .map(|i| i.memory_capacity as i64)
            .sum(),
        process_count: 0,
        process_cpu: 0,
        process_gpu: 0,
        process_memory: 0,
    };
    for a in rack.apps.values() {
        for s in &a.services {
            cap.process_count += s.count;
            cap.process_cpu += s.cpu * s.count;
            cap.process_gpu += s.gpu * s.count;
            cap.process_memory += s.memory * s.count;
        }
    }
    render_json(&cap)
}

/// `GET /system/processes` (query: `all`: include app processes).
pub async fn processes(st: St, form: Form) -> Response {
    let rack = st.lock();
    let mut ps: Vec<&Process> = rack.system_processes.iter().collect();
    if form.bool("all").unwrap_or(false) {
        ps.extend(
            rack.apps
                .values()
                .flat_map(|a| a.processes.iter().map(|p| &p.process)),
        );
    }
    render_json(&ps)
}

/// `GET /system/releases`: rack versions, newest first.
pub async fn releases(st: St) -> Response {
    let rack = st.lock();
    let mut rs: Vec<&Release> = rack.system_releases.iter().collect();
    rs.sort_by_key(|r| std::cmp::Reverse(r.created));
    render_json(&rs)
}

/// `GET /instances`.
pub async fn instances(st: St) -> Response {
    render_json(&st.lock().instances)
}

/// `DELETE /instances/{id}`.
pub async fn terminate_instance(st: St, Path(id): Path<String>) -> ApiResult<Response> {
    st.lock().terminate_instance(&id)?;
    Ok(render_ok())
}

/// `GET /resources`.
pub async fn system_resources(st: St) -> Response {
    render_json(&st.lock().system_resources)
}

/// `GET /resources/{name}`.
pub async fn system_resource(st: St, Path(name): Path<String>) -> ApiResult<Response> {
    let rack = st.lock();
    let r = rack
        .system_resources
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| crate::error::ApiError::not_found(format!("resource not found: {name}")))?;
    Ok(render_json(r))
}

/// `GET /apps/{app}/resources`.
pub async fn app_resources(st: St, Path(app): Path<String>) -> ApiResult<Response> {
    let rack = st.lock();
    Ok(render_json(&rack.app(&app)?.resources))
}

/// `GET /apps/{app}/resources/{name}`.
pub async fn app_resource(
    st: St,
    Path((app, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let rack = st.lock();
    let r = rack
        .app(&app)?
        .resources
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| crate::error::ApiError::not_found(format!("resource not found: {name}")))?;
    Ok(render_json(r))
}

/// `GET /apps/{app}/balancers`: none.
pub async fn balancers(st: St, Path(app): Path<String>) -> ApiResult<Response> {
    st.lock().app(&app)?;
    Ok(render_json(&Vec::<()>::new()))
}

/// `GET /certificates` and `GET /registries`: empty lists.
pub async fn empty_list() -> Response {
    render_json(&Vec::<()>::new())
}
