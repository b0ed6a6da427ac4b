//! `/apps/{app}/builds`. A created build runs in the background: it writes
//! its output line by line, then creates a release and turns `complete`
//! (or `failed` when its `object://` source was never uploaded).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::St;
use crate::error::{ApiResult, render_json};
use crate::model::Build;
use crate::params::Form;
use crate::seed::build_script;
use crate::state::{BuildUpdate, Shared};
use crate::tgz::tgz;

/// Pause between two lines of build output.
const BUILD_STEP: Duration = Duration::from_millis(100);

/// `GET /apps/{app}/builds` (query: `limit`, default 10), newest first.
pub async fn list(st: St, Path(app): Path<String>, form: Form) -> ApiResult<Response> {
    let limit = form.int("limit")?.unwrap_or(10).max(0) as usize;
    let rack = st.lock();
    let mut bs: Vec<&Build> = rack.app(&app)?.builds.iter().map(|b| &b.build).collect();
    bs.sort_by_key(|b| std::cmp::Reverse(b.started));
    bs.truncate(limit);
    Ok(render_json(&bs))
}

/// `GET /apps/{app}/builds/{id}`, or `GET /apps/{app}/builds/{id}.tgz` (export).
pub async fn get(st: St, Path((app, id)): Path<(String, String)>) -> ApiResult<Response> {
    let rack = st.lock();
    let a = rack.app(&app)?;
    if let Some(id) = id.strip_suffix(".tgz") {
        let b = a.build(id)?;
        let json = serde_json::to_vec_pretty(&b.build).unwrap_or_default();
        let logs = b.log_lines.join("\n");
        let body = tgz(&[("build.json", &json), ("logs.txt", logs.as_bytes())]);
        return Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )],
            body,
        )
            .into_response());
    }
    Ok(render_json(&a.build(&id)?.build))
}

/// `POST /apps/{app}/builds` (form: `url`, `description`, `manifest`,
/// `development`, `external`, `no-cache`, `git-sha`, `build-args`).
pub async fn create(st: St, Path(app): Path<String>, form: Form) -> ApiResult<Response> {
    let url = form.value("url").to_string();
    let external = form.bool("external").unwrap_or(false);
    let b = st.lock().create_build(
        &app,
        form.value("description").to_string(),
        form.value("git-sha").to_string(),
        external,
    )?;
    if !external {
        tokio::spawn(run_build(st.0.clone(), app, b.id.clone(), url));
    }
    Ok(render_json(&b))
}

/// `PUT /apps/{app}/builds/{id}` (form: `ended`, `entrypoint`, `logs`,
/// `manifest`, `release`, `started`, `status`; times as `20060102.150405.000000000`).
pub async fn update(
    st: St,
    Path((app, id)): Path<(String, String)>,
    form: Form,
) -> ApiResult<Response> {
    let u = BuildUpdate {
        ended: form.time("ended")?,
        entrypoint: form.get("entrypoint").map(str::to_string),
        logs: form.get("logs").map(str::to_string),
        manifest: form.get("manifest").map(str::to_string),
        release: form.get("release").map(str::to_string),
        started: form.time("started")?,
        status: form.get("status").map(str::to_string),
    };
    let b = st.lock().update_build(&app, &id, u)?;
    Ok(render_json(&b))
}

/// The background part of a build.
async fn run_build(shared: Arc<Shared>, app: String, id: String, url: String) {
    let script = {
        let rack = shared.lock();
        let Ok(a) = rack.app(&app) else { return };
        if let Some(rest) = url.strip_prefix("object://") {
            let (obj_app, key) = rest.split_once('/').unwrap_or((rest, ""));
            let exists = rack
                .apps
                .get(obj_app)
                .is_some_and(|o| o.objects.contains_key(key));
            if !exists {
                drop(rack);
                let _ = shared
                    .lock()
                    .fail_build(&app, &id, &format!("object not found: {key}"));
                return;
            }
        }
        let mut services: Vec<String> = a.services.iter().map(|s| s.name.clone()).collect();
        if services.is_empty() {
            services.push("web".into());
        }
        build_script(&app, &id, &services)
    };
    for line in script {
        tokio::time::sleep(BUILD_STEP).await;
        if shared.lock().build_log(&app, &id, &line).is_err() {
            return;
        }
    }
    tokio::time::sleep(BUILD_STEP).await;
    let mut rack = shared.lock();
    if let Ok(r) = rack.complete_build(&app, &id) {
        let _ = rack.build_log(&app, &id, &format!("Release: {}", r.id));
    }
}
