//! `/apps/{app}/releases`.

use axum::extract::Path;
use axum::response::Response;

use super::St;
use crate::error::{ApiResult, render_json, render_ok};
use crate::model::Release;
use crate::params::Form;
use crate::state::ReleaseCreate;

/// `GET /apps/{app}/releases` (query: `limit`, default 10), newest first.
pub async fn list(st: St, Path(app): Path<String>, form: Form) -> ApiResult<Response> {
    let limit = form.int("limit")?.unwrap_or(10).max(0) as usize;
    let rack = st.lock();
    let mut rs: Vec<&Release> = rack.app(&app)?.releases.iter().collect();
    rs.sort_by_key(|r| std::cmp::Reverse(r.created));
    rs.truncate(limit);
    Ok(render_json(&rs))
}

/// `GET /apps/{app}/releases/{id}`.
pub async fn get(st: St, Path((app, id)): Path<(String, String)>) -> ApiResult<Response> {
    let rack = st.lock();
    Ok(render_json(rack.app(&app)?.release(&id)?))
}

/// `POST /apps/{app}/releases` (form: `build`, `description`, `env`,
/// `parent-release`). This is how `convox env set` changes the environment.
pub async fn create(st: St, Path(app): Path<String>, form: Form) -> ApiResult<Response> {
    let opts = ReleaseCreate {
        build: form.get("build").map(str::to_string),
        description: form.get("description").map(str::to_string),
        env: form.get("env").map(str::to_string),
        parent_release: form.get("parent-release").map(str::to_string),
    };
    let r = st.lock().create_release(&app, opts)?;
    Ok(render_json(&r))
}

/// `POST /apps/{app}/releases/{id}/promote` (form: `development`, `force`,
/// `idle`, `min`, `max`, `timeout`). Rollback is a promote of an older
/// release (or of a new release copying an older one's build and env).
pub async fn promote(
    st: St,
    Path((app, id)): Path<(String, String)>,
    form: Form,
) -> ApiResult<Response> {
    for name in ["min", "max", "timeout"] {
        form.int(name)?;
    }
    st.lock().promote_release(&app, &id)?;
    Ok(render_ok())
}
