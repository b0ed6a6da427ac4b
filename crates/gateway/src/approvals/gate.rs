//! The proxy's side of deploy approvals: a caller whose permissions lack a deploy step, but
//! who may ask for approvals, takes that step on one app while a request it made for that app
//! is approved and not expired:
//!
//! - upload the source (`POST /apps/{app}/objects/…`) and build it (`POST /apps/{app}/builds`),
//!   as often as the window allows (a failed build can be retried);
//! - promote one release (`POST /apps/{app}/releases/{id}/promote`), and only one whose build
//!   the rack records as made from the approved commit (its `git-sha`, which `convox deploy`
//!   and `rack-gateway deploy` send), and whose services run the images the app's rules ask
//!   for ([`crate::app_rules`], `service_images`). That promote spends the approval;
//! - run the app's approved commands (its rules' `approved_commands`): `convox run --detach
//!   <service> <command>`, or `convox run` attached, which starts a `sleep <seconds>` process
//!   and then `exec`s the command in it; and `convox exec <pid> <command>` on the app's
//!   processes. A run that sets its own environment (`Environment`) is refused: the command
//!   approved is the one run; and with image rules, a run on another release (`Release`) is
//!   let through only on one whose images keep them;
//! - stop (`DELETE /apps/{app}/processes/{pid}`) the holder process an attached run started
//!   through one of its approvals, as `convox run` does when the command ends
//!   ([`super::holders`]): at any time, the approval spent or expired, since stopping it only
//!   ends what the approval began.
//!
//! Nothing else is widened: not env, not scale, not another app.

use std::time::Duration;

use crate::app::AppState;
use crate::app_rules::AppRules;
use crate::error::ApiError;
use crate::identity::Principal;
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
    /// Start a process running `command` (`convox run`).
    Run {
        /// The `Command` header, if any.
        command: Option<String>,
        /// Whether the run sets environment variables of its own.
        sets_env: bool,
        /// The release it runs (`Release`), when not the app's current one.
        release: Option<String>,
    },
    /// Run `command` in a process (`convox exec`, and `convox run` attached).
    Exec {
        /// The `Command` header, if any.
        command: Option<String>,
    },
    /// Stop process `pid` (`convox run` attached, once its command ended).
    Stop {
        /// The process id.
        pid: String,
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
    /// When its deploy window ends (unix ms): a session it let through ends then too.
    pub until: i64,
    /// Whether it let through an attached run's holder (`sleep N`), whose process id is then
    /// remembered, so that the run may stop it ([`super::holders`]).
    pub starts_holder: bool,
}

/// The app and deploy step of a request for `permission` on `decoded_path`, with `headers` as
/// they will be forwarded, when it is one an approval may let through.
pub fn deploy_step(
    permission: &str,
    decoded_path: &str,
    headers: &http::HeaderMap,
) -> Option<(String, Step)> {
    let command = || {
        headers
            .get("command")
            .map(|c| String::from_utf8_lossy(c.as_bytes()).into_owned())
    };
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
        ("convox:processes:start", ["apps", _, "services", _, "processes"]) => Step::Run {
            command: command(),
            sets_env: headers.contains_key("environment"),
            release: headers
                .get("release")
                .map(|r| String::from_utf8_lossy(r.as_bytes()).trim().to_string())
                .filter(|r| !r.is_empty()),
        },
        ("convox:processes:exec", ["apps", _, "processes", _, "exec"]) => {
            Step::Exec { command: command() }
        }
        ("convox:processes:terminate", ["apps", _, "processes", pid]) => Step::Stop {
            pid: (*pid).to_string(),
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
    if let Step::Stop { pid } = &step {
        return super::holders::may_stop(state, &requester, app, pid).await;
    }
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
    let unspent = |approval: crate::store::ApprovalRow| Grant {
        approval_id: approval.id,
        git_commit: approval.git_commit,
        spent: false,
        until: approval.expires_at,
        starts_holder: false,
    };
    let release = match step {
        Step::Upload | Step::Build => return Ok(unspent(approval)),
        Step::Run {
            command,
            sets_env,
            release,
        } => {
            let rules = rules_of(state, app).await?;
            if sets_env {
                return Err(ApiError::NotApproved(format!(
                    "a run on app {app} through deploy request {} runs an approved command as \
                     the release has it: drop the Environment option",
                    approval.id
                )));
            }
            let command = command.unwrap_or_default();
            let holder = super::holders::is_holder(&command);
            if !holder && !rules.approves_command(&command) {
                return Err(not_approved_command(app, &command, &rules));
            }
            // A release not yet promoted (migrations before the promote) runs what its images
            // are: with image rules, only one whose images are the approved commit's.
            if let Some(release) = release.filter(|_| !rules.service_images.is_empty()) {
                let built = built_by(state, app, &release).await?;
                if let Some(problem) = built.images_problem(&rules, &approval.git_commit) {
                    return Err(ApiError::NotApproved(format!(
                        "a run on release {release} of app {app} through deploy request {}: \
                         the release breaks the app's image rules: {problem}",
                        approval.id
                    )));
                }
            }
            return Ok(Grant {
                starts_holder: holder,
                ..unspent(approval)
            });
        }
        Step::Exec { command } => {
            let rules = rules_of(state, app).await?;
            let command = command.unwrap_or_default();
            if rules.approves_command(&command) {
                return Ok(unspent(approval));
            }
            return Err(not_approved_command(app, &command, &rules));
        }
        Step::Promote { release } => release,
        // Answered above, before any approval is looked for.
        Step::Stop { .. } => return Err(forbidden(principal, permission)),
    };
    let built = built_by(state, app, &release).await?;
    // The newest approval may be of another commit than this build's, while an older one of
    // the credential's is of this one: that one is the one to spend.
    let approval =
        if built.commit.is_empty() || built.commit.eq_ignore_ascii_case(&approval.git_commit) {
            approval
        } else {
            state
                .store
                .usable_approval_of_commit(
                    requester.token_id,
                    requester.user_id,
                    app,
                    &built.commit,
                    now,
                )
                .await
                .map_err(ApiError::store)?
                .unwrap_or(approval)
        };
    let rules = rules_of(state, app).await?;
    if let Some(problem) = built.images_problem(&rules, &approval.git_commit) {
        return Err(ApiError::NotApproved(format!(
            "release {release} of app {app} breaks the app's image rules: {problem}"
        )));
    }
    let built_from = built.commit;
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
        until: approval.expires_at,
        starts_holder: false,
    })
}

/// The refusal a caller gets who may not take the step at all.
fn forbidden(principal: &Principal, permission: &str) -> ApiError {
    ApiError::Forbidden {
        permission: permission.to_string(),
        role: principal.role_name().to_string(),
    }
}

/// Refusal of a command the app's rules do not approve.
fn not_approved_command(app: &str, command: &str, rules: &AppRules) -> ApiError {
    let command: String = command
        .chars()
        .map(gateway_core::text::shown)
        .take(200)
        .collect();
    let approved = if rules.approved_commands.is_empty() {
        "it approves none".to_string()
    } else {
        format!("it approves {}", rules.approved_commands.join(" | "))
    };
    ApiError::NotApproved(format!(
        "{command:?} is not an approved command of app {app} (its rules: `rack-gateway app-rules \
         show --app {app}`; {approved}): an approved deploy runs only those"
    ))
}

/// App `app`'s rules (none: no rule).
async fn rules_of(state: &AppState, app: &str) -> Result<AppRules, ApiError> {
    Ok(state
        .store
        .app_rules(app)
        .await
        .map_err(ApiError::store)?
        .map(|row| row.rules)
        .unwrap_or_default())
}

/// What the rack records a release was built from.
struct Built {
    /// The build's commit (empty when it records none).
    commit: String,
    /// The release's manifest (`convox.yml`).
    manifest: String,
}

impl Built {
    /// Why the release's services break `rules`' image patterns for `commit`, if they do.
    fn images_problem(&self, rules: &AppRules, commit: &str) -> Option<String> {
        if rules.service_images.is_empty() {
            return None;
        }
        match crate::app_rules::manifest::service_images(&self.manifest) {
            Ok(images) => rules.image_problem(&images, commit),
            Err(why) => Some(why),
        }
    }
}

/// What the release `release` of `app` was built from: its build's commit, and its manifest.
async fn built_by(state: &AppState, app: &str, release: &str) -> Result<Built, ApiError> {
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
    let text = |json: &serde_json::Value, key: &str| {
        json.get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let build = text(&release_json, "build");
    let manifest = text(&release_json, "manifest");
    // No build (or none the gateway would put in a path): no commit to match.
    if !is_rack_id(&build) {
        return Ok(Built {
            commit: String::new(),
            manifest,
        });
    }
    let build_json = lookup(state, &format!("/apps/{app}/builds/{build}"), wait).await?;
    Ok(Built {
        commit: text(&build_json, "git-sha").trim().to_string(),
        manifest,
    })
}

/// A rack object id as one path segment (`RABCDEFGHIJ`, `BABCDEFGHIJ`).
pub(crate) fn is_rack_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

async fn lookup(
    state: &AppState,
    path: &str,
    wait: Duration,
) -> Result<serde_json::Value, ApiError> {
    state
        .upstream
        .get_json(path, wait, LOOKUP_LIMIT)
        .await
        .map_err(|e| {
            e.into_api_error("checking which commit the release was built from", || {
                ApiError::NotApproved(format!(
                    "the rack has no {}: nothing to promote",
                    path.trim_start_matches('/')
                ))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_steps_are_exactly_six_routes() {
        let none = http::HeaderMap::new();
        assert_eq!(
            deploy_step(
                "convox:objects:create",
                "/apps/web/objects/tmp/a.tgz",
                &none
            ),
            Some(("web".into(), Step::Upload))
        );
        assert_eq!(
            deploy_step("convox:builds:create", "/apps/web/builds", &none),
            Some(("web".into(), Step::Build))
        );
        assert_eq!(
            deploy_step(
                "convox:releases:promote",
                "/apps/web/releases/RABC/promote",
                &none
            ),
            Some((
                "web".into(),
                Step::Promote {
                    release: "RABC".into()
                }
            ))
        );
        assert_eq!(
            deploy_step(
                "convox:processes:terminate",
                "/apps/web/processes/web-1",
                &none
            ),
            Some((
                "web".into(),
                Step::Stop {
                    pid: "web-1".into()
                }
            ))
        );
        for (permission, path) in [
            ("convox:builds:import", "/apps/web/builds/import"),
            ("convox:env:set", "/apps/web/environment"),
            ("convox:releases:create", "/apps/web/releases"),
            ("convox:objects:delete", "/apps/web/objects/x"),
            ("convox:builds:create", "/apps/web/builds/x"),
            ("convox:processes:start", "/apps/web/processes"),
            ("convox:processes:exec", "/apps/web/processes/p1/files"),
            ("convox:apps:delete", "/apps/web"),
            ("convox:processes:terminate", "/apps/web/processes"),
            ("convox:processes:terminate", "/apps/web/processes/p1/exec"),
        ] {
            assert_eq!(
                deploy_step(permission, path, &none),
                None,
                "{permission} {path}"
            );
        }
    }

    #[test]
    fn runs_and_execs_carry_their_command() {
        let mut headers = http::HeaderMap::new();
        headers.insert("command", http::HeaderValue::from_static("bin/migrate"));
        assert_eq!(
            deploy_step(
                "convox:processes:start",
                "/apps/web/services/web/processes",
                &headers
            ),
            Some((
                "web".into(),
                Step::Run {
                    command: Some("bin/migrate".into()),
                    sets_env: false,
                    release: None,
                }
            ))
        );
        headers.insert("environment", http::HeaderValue::from_static("A=1"));
        assert_eq!(
            deploy_step(
                "convox:processes:exec",
                "/apps/web/processes/web-1/exec",
                &headers
            ),
            Some((
                "web".into(),
                Step::Exec {
                    command: Some("bin/migrate".into())
                }
            ))
        );
        assert!(matches!(
            deploy_step(
                "convox:processes:start",
                "/apps/web/services/web/processes",
                &headers
            ),
            Some((_, Step::Run { sets_env: true, .. }))
        ));
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
