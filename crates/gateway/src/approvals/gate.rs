//! The proxy's side of deploy approvals: a caller whose permissions lack a deploy step, but
//! who may ask for approvals, takes that step on one app while a request it made for that app
//! is approved and not expired:
//!
//! - upload the source (`POST /apps/{app}/objects/…`) and build it (`POST /apps/{app}/builds`),
//!   as often as the window allows (a failed build can be retried);
//! - promote one release (`POST /apps/{app}/releases/{id}/promote`), and only one whose build
//!   the rack records as made from the approved commit (its `git-sha`, which `convox deploy`
//!   and `rack-gateway deploy` send). That promote spends the approval.
//!
//! Nothing else is widened: not env, not scale, not another app.

use std::time::Duration;

use crate::app::AppState;
use crate::error::ApiError;
use crate::identity::Principal;
use crate::proxy::{RackError, RackLookup};
use crate::store::now_ms;

use super::{REQUEST, Requester};

/// Most of a release or build the gateway reads to learn its build or commit (a release
/// carries the app's environment, so it may be large; it is read, never kept).
const LOOKUP_LIMIT: usize = 4 * 1024 * 1024;

/// A deploy step an approval may let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Upload the source tarball.
    Upload,
    /// Start a build.
    Build,
    /// Promote this release.
    Promote {
        /// The release id.
        release: String,
    },
}

/// What let a step through: recorded with the request's audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The approved request.
    pub approval_id: i64,
    /// Its commit.
    pub git_commit: String,
    /// Whether this step spent it (the promote).
    pub spent: bool,
}

/// The app and deploy step of a request for `permission` on `decoded_path`, when it is one an
/// approval may let through.
pub fn deploy_step(permission: &str, decoded_path: &str) -> Option<(String, Step)> {
    let segments: Vec<&str> = decoded_path.trim_start_matches('/').split('/').collect();
    let app = match segments.as_slice() {
        ["apps", app, ..] => (*app).to_string(),
        _ => return None,
    };
    let step = match (permission, segments.as_slice()) {
        ("convox:objects:create", ["apps", _, "objects", _, ..]) => Step::Upload,
        ("convox:builds:create", ["apps", _, "builds"]) => Step::Build,
        ("convox:releases:promote", ["apps", _, "releases", release, "promote"]) => Step::Promote {
            release: (*release).to_string(),
        },
        _ => return None,
    };
    Some((app, step))
}

/// Whether `principal` may take `step` on `app` through an approved request of its own: the
/// grant, or why not. A promote spends the approval here, before anything is forwarded (an
/// approval is for one deploy, and a second promote must not race this one).
pub async fn let_through(
    state: &AppState,
    principal: &Principal,
    permission: &str,
    app: &str,
    step: Step,
) -> Result<Grant, ApiError> {
    if !principal.permissions.allows(REQUEST) || !super::input::is_app_name(app) {
        return Err(forbidden(principal, permission));
    }
    let requester = Requester::of(state, principal)
        .await
        .map_err(ApiError::store)?;
    let now = now_ms();
    let approval = state
        .store
        .usable_approval(requester.token_id, requester.user_id, app, now)
        .await
        .map_err(ApiError::store)?;
    let Some(approval) = approval else {
        return Err(ApiError::NotApproved(format!(
            "{permission} on app {app} needs an approved deploy request: ask with `rack-gateway \
             deploy-approval request --app {app} --commit <full sha> --wait` (or POST \
             /api/v1/deploy-approvals), and deploy once a person has approved it"
        )));
    };
    let release = match step {
        Step::Upload | Step::Build => {
            return Ok(Grant {
                approval_id: approval.id,
                git_commit: approval.git_commit,
                spent: false,
            });
        }
        Step::Promote { release } => release,
    };
    let built_from = commit_of_release(state, app, &release).await?;
    if !built_from.eq_ignore_ascii_case(&approval.git_commit) {
        let built = if built_from.is_empty() {
            "no recorded commit".to_string()
        } else {
            format!("commit {built_from}")
        };
        return Err(ApiError::NotApproved(format!(
            "release {release} of app {app} was built from {built}, but deploy request {} \
             approves commit {}: only a build of the approved commit (its git-sha) may be \
             promoted",
            approval.id, approval.git_commit
        )));
    }
    let spent = state
        .store
        .spend_approval(approval.id, &release, now_ms())
        .await
        .map_err(ApiError::store)?;
    if !spent {
        return Err(ApiError::NotApproved(format!(
            "deploy request {} was used or expired a moment ago: ask for another",
            approval.id
        )));
    }
    Ok(Grant {
        approval_id: approval.id,
        git_commit: approval.git_commit,
        spent: true,
    })
}

/// The refusal a caller gets who may not take the step at all.
fn forbidden(principal: &Principal, permission: &str) -> ApiError {
    ApiError::Forbidden {
        permission: permission.to_string(),
        role: principal.role_name().to_string(),
    }
}

/// The commit the rack records for the build release `release` of `app` was made from
/// (empty when the build records none).
async fn commit_of_release(state: &AppState, app: &str, release: &str) -> Result<String, ApiError> {
    if !is_rack_id(release) {
        return Err(ApiError::BadRequest(format!(
            "release: not a rack release id ({})",
            gateway_core::redact::clip(
                release.chars().map(gateway_core::text::shown).collect(),
                80
            )
        )));
    }
    let wait = state.config.rack_read_timeout.min(Duration::from_secs(30));
    let release_json = lookup(state, &format!("/apps/{app}/releases/{release}"), wait).await?;
    let build = release_json
        .get("build")
        .and_then(|b| b.as_str())
        .unwrap_or_default()
        .to_string();
    // No build (or none the gateway would put in a path): no commit to match.
    if !is_rack_id(&build) {
        return Ok(String::new());
    }
    let build_json = lookup(state, &format!("/apps/{app}/builds/{build}"), wait).await?;
    Ok(build_json
        .get("git-sha")
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// A rack object id as one path segment (`RABCDEFGHIJ`, `BABCDEFGHIJ`).
fn is_rack_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

async fn lookup(
    state: &AppState,
    path: &str,
    wait: Duration,
) -> Result<serde_json::Value, ApiError> {
    match state.upstream.get_json(path, wait, LOOKUP_LIMIT).await {
        Ok(value) => Ok(value),
        Err(RackLookup::Status(404)) => Err(ApiError::NotApproved(format!(
            "the rack has no {}: nothing to promote",
            path.trim_start_matches('/')
        ))),
        Err(RackLookup::Rack(RackError::Timeout)) => Err(ApiError::RackTimeout),
        Err(RackLookup::Status(401)) => Err(ApiError::RackRefusedGateway),
        Err(e) => Err(ApiError::RackUnreachable(format!(
            "checking which commit the release was built from: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_steps_are_exactly_three_routes() {
        assert_eq!(
            deploy_step("convox:objects:create", "/apps/web/objects/tmp/a.tgz"),
            Some(("web".into(), Step::Upload))
        );
        assert_eq!(
            deploy_step("convox:builds:create", "/apps/web/builds"),
            Some(("web".into(), Step::Build))
        );
        assert_eq!(
            deploy_step("convox:releases:promote", "/apps/web/releases/RABC/promote"),
            Some((
                "web".into(),
                Step::Promote {
                    release: "RABC".into()
                }
            ))
        );
        for (permission, path) in [
            ("convox:builds:import", "/apps/web/builds/import"),
            ("convox:env:set", "/apps/web/environment"),
            ("convox:releases:create", "/apps/web/releases"),
            ("convox:objects:delete", "/apps/web/objects/x"),
            ("convox:builds:create", "/apps/web/builds/x"),
            ("convox:apps:delete", "/apps/web"),
        ] {
            assert_eq!(deploy_step(permission, path), None, "{permission} {path}");
        }
    }

    #[test]
    fn rack_ids() {
        assert!(is_rack_id("RABCDEF123"));
        assert!(!is_rack_id(""));
        assert!(!is_rack_id("a/b"));
        assert!(!is_rack_id("a?b"));
        assert!(!is_rack_id(&"R".repeat(65)));
    }
}
