//! The environment a new release sets (`POST /apps/{app}/releases` with `env`: `convox env
//! set`, `env unset`, `env edit`), checked against what the caller may not see or change:
//!
//! - a value the caller was shown masked — every value, without `convox:env:read`; the app's
//!   secret env vars ([`crate::app_rules`]), without `gateway:secrets:read` — comes back as the
//!   mask, because `convox env set` writes the whole environment it read. Such a value keeps
//!   what the release being changed has, so that setting one variable does not wipe the others;
//! - the app's protected env vars may not be set, changed or unset without
//!   `gateway:protected-env:write` (`403 env_protected`): their values must be those of the
//!   app's latest release, whichever release the new one is made from.
//!
//! The release being changed is the one `parent-release` names, or else the app's latest one
//! (as the rack picks it, and as `convox env` reads it), read from the rack. The form is read
//! whole (it is small) and strictly: a body the gateway could read otherwise than the rack (a `;`, a bad `%` escape,
//! `env` twice, `env` in the query string, another content type) is refused rather than
//! guessed at. Callers the rules do not bind (admins) are not slowed: nothing is read.

use std::time::Duration;

use axum::body::{Body, Bytes};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::app::AppState;
use crate::app_rules::{self, AppRules, env};
use crate::error::ApiError;
use crate::identity::Principal;
use crate::proxy::env_mask::ENV_READ;
use gateway_core::redact::REDACTED;

/// The permission of `POST /apps/{app}/releases`.
pub const RELEASE_CREATE: &str = "convox:releases:create";

/// The most of a release form read (an environment with certificates in it is still small).
const FORM_LIMIT: usize = 4 * 1024 * 1024;
/// The most of a release read from the rack to learn its environment.
const LOOKUP_LIMIT: usize = 16 * 1024 * 1024;

/// The permission of `POST /apps/{app}/releases/{id}/promote`.
pub const RELEASE_PROMOTE: &str = "convox:releases:promote";

/// Whether requests needing `permission` may fall under the app's environment rules: the
/// release routes (see `env_mask::carries_env`), and promoting a release, whose environment
/// then takes effect.
pub fn applies(permission: &str) -> bool {
    super::env_mask::carries_env(permission) || permission == RELEASE_PROMOTE
}

/// Whether a request needing `permission` (see [`applies`]) by `principal` needs the app's
/// rules at all: never for callers they do not bind (admins), so those read nothing.
pub fn needs_rules(permission: &str, principal: &Principal) -> bool {
    let reach = Reach::of(principal);
    if permission == RELEASE_CREATE {
        !(reach.reads_env && reach.reads_secrets && reach.writes_protected)
    } else if permission == RELEASE_PROMOTE {
        !reach.writes_protected
    } else {
        // An answer only: masked whole without env:read, else the secrets alone.
        reach.reads_env && !reach.reads_secrets
    }
}

/// What the caller may do with an app's environment.
struct Reach {
    reads_env: bool,
    reads_secrets: bool,
    writes_protected: bool,
}

impl Reach {
    fn of(principal: &Principal) -> Reach {
        let p = &principal.permissions;
        Reach {
            reads_env: p.allows(ENV_READ),
            reads_secrets: p.allows(app_rules::READ_SECRETS),
            writes_protected: p.allows(app_rules::WRITE_PROTECTED),
        }
    }

    /// Whether `name`'s value was masked for this caller.
    fn hidden(&self, rules: &AppRules, name: &str) -> bool {
        !self.reads_env || (!self.reads_secrets && rules.is_secret(name))
    }

    /// Whether this caller may not change `name`.
    fn guarded(&self, rules: &AppRules, name: &str) -> bool {
        !self.writes_protected && rules.is_protected(name)
    }
}

/// The body to forward for a release create by `principal` on `app` under its `rules`, with
/// the environment checked and masked values restored; and the names whose values were kept
/// (for the trail).
/// `headers` are the ones forwarded: their length is set to the new body's.
pub async fn checked(
    state: &AppState,
    principal: &Principal,
    (app, rules): (&str, &AppRules),
    parts: &http::request::Parts,
    query: Option<&str>,
    body: Body,
    headers: &mut HeaderMap,
) -> Result<(Body, Vec<String>), ApiError> {
    let reach = Reach::of(principal);
    if reach.reads_env && reach.reads_secrets && reach.writes_protected {
        return Ok((body, Vec::new()));
    }
    let binds = !reach.reads_env
        || (!reach.reads_secrets && !rules.secret_env.is_empty())
        || (!reach.writes_protected && !rules.protected_env.is_empty());
    if !binds {
        return Ok((body, Vec::new()));
    }
    if let Some(q) = query
        && let Some(name) = form_pairs(q.as_bytes())?
            .iter()
            .map(|(k, _)| k.as_str())
            .find(|k| matches!(*k, "env" | "parent-release"))
    {
        return Err(ApiError::BadRequest(format!(
            "{name}: send it in the form body, not the query string (the gateway checks the \
             environment a release sets)"
        )));
    }
    if !http_body::Body::is_end_stream(&body) && !is_form(&parts.headers) {
        return Err(ApiError::InvalidBody {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "a release's environment is checked by the gateway: send it as \
                      application/x-www-form-urlencoded, as the convox CLI does",
        });
    }
    // Counted while the form is checked (its pairs, and the release looked up beside it).
    let (bytes, _held) = read_form(state, body).await?;
    let pairs = form_pairs(&bytes)?;
    let one = |name: &str| -> Result<Option<&str>, ApiError> {
        let mut found = pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = found.next();
        if found.next().is_some() {
            return Err(ApiError::BadRequest(format!(
                "{name}: given more than once"
            )));
        }
        Ok(first)
    };
    let (Some(sent), parent) = (one("env")?, one("parent-release")?) else {
        // No new environment: the release keeps its parent's.
        set_length(headers, bytes.len());
        return Ok((Body::from(bytes), Vec::new()));
    };
    let base = base_env(state, app, parent.filter(|p| !p.is_empty())).await?;
    let mut wanted = env::parse(sent);
    let mut kept = Vec::new();
    for (name, value) in wanted.iter_mut() {
        if value != REDACTED || !reach.hidden(rules, name) {
            continue;
        }
        match base.get(name) {
            Some(real) => {
                value.clone_from(real);
                kept.push(name.clone());
            }
            None => {
                return Err(ApiError::BadRequest(format!(
                    "{name}: its value is the mask {REDACTED}, and the release being changed \
                     has no {name} whose value it could keep: give it a value"
                )));
            }
        }
    }
    // Protected values are judged against the app's latest release whatever the parent: a
    // parent with older values must not carry them into a new release.
    let parent = parent.filter(|p| !p.is_empty());
    let latest;
    let now = match parent {
        Some(_) if !rules.protected_env.is_empty() && !reach.writes_protected => {
            latest = base_env(state, app, None).await?;
            &latest
        }
        _ => &base,
    };
    let touched = protected_changes(&reach, rules, now, &wanted);
    if !touched.is_empty() {
        return Err(ApiError::EnvProtected(format!(
            "{} of app {app} {} protected by the app's rules: setting, changing or unsetting \
             {} needs {} (ask an admin)",
            touched.join(", "),
            if touched.len() == 1 { "is" } else { "are" },
            if touched.len() == 1 { "it" } else { "them" },
            app_rules::WRITE_PROTECTED
        )));
    }
    if kept.is_empty() {
        set_length(headers, bytes.len());
        return Ok((Body::from(bytes), kept));
    }
    let rendered = env::render(&wanted);
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &pairs {
        form.append_pair(k, if k == "env" { &rendered } else { v });
    }
    let new = Bytes::from(form.finish());
    set_length(headers, new.len());
    Ok((Body::from(new), kept))
}

/// Whether the request says its body is a URL-encoded form.
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

/// The form body, whole, within [`FORM_LIMIT`], the client's time and the bytes the gateway
/// holds at once (`super::held`).
async fn read_form(
    state: &AppState,
    mut body: Body,
) -> Result<(Bytes, super::held::Held<'static>), ApiError> {
    let wait = state.config.client_timeout;
    let read = super::held::read(&mut body, FORM_LIMIT, Some(&super::held::FORMS));
    match tokio::time::timeout(wait, read).await {
        Err(_) => Err(ApiError::BodyTimeout(wait.as_secs())),
        Ok(Err(super::held::NotRead::Busy(busy))) => Err(ApiError::Busy(busy)),
        Ok(Err(_)) => Err(ApiError::InvalidBody {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: "a release's form is read whole to check its environment: at most 4 MiB",
        }),
        Ok(Ok(read)) => Ok(read),
    }
}

/// The name/value pairs of a URL-encoded form, decoded, refusing what the rack's parser
/// (Go's `url.ParseQuery`) would read otherwise: a `;` in a pair, a bad `%` escape, text that
/// is not UTF-8.
fn form_pairs(bytes: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let bad = |why: &str| ApiError::BadRequest(format!("the release's form is malformed: {why}"));
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
    let mut pairs = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        if pair.contains(';') {
            return Err(bad("a ';' in a pair (encode it as %3B)"));
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        pairs.push((decode(k).ok_or_else(|| bad("a bad % escape"))?, {
            decode(v).ok_or_else(|| bad("a bad % escape"))?
        }));
    }
    Ok(pairs)
}

/// A form component decoded (`+` is a space), or `None` for a bad escape or non-UTF-8 bytes.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Refuses promoting release `release` of `app` by `principal` when that would change a
/// variable the app's `rules` protect from what the app's latest release holds: an older
/// release carries older values, and promoting it (`convox releases promote OLD`) would roll
/// them back as surely as `convox env set` would change them.
pub async fn promote_checked(
    state: &AppState,
    principal: &Principal,
    (app, rules): (&str, &AppRules),
    release: &str,
) -> Result<(), ApiError> {
    let reach = Reach::of(principal);
    if reach.writes_protected || rules.protected_env.is_empty() {
        return Ok(());
    }
    let latest = base_env(state, app, None).await?;
    let promoted = base_env(state, app, Some(release)).await?;
    let touched = protected_changes(&reach, rules, &latest, &promoted);
    if touched.is_empty() {
        return Ok(());
    }
    Err(ApiError::EnvProtected(format!(
        "promoting release {release} would change {} of app {app} from its latest release, \
         protected by the app's rules: that needs {} (ask an admin)",
        touched.join(", "),
        app_rules::WRITE_PROTECTED
    )))
}

/// The protected variables (for this caller) whose values differ between `now` and `wanted`,
/// by name.
fn protected_changes<'a>(
    reach: &Reach,
    rules: &AppRules,
    now: &'a env::Environment,
    wanted: &'a env::Environment,
) -> Vec<&'a str> {
    now.keys()
        .chain(wanted.keys())
        .filter(|name| reach.guarded(rules, name) && now.get(*name) != wanted.get(*name))
        .map(String::as_str)
        .collect::<std::collections::BTreeSet<&str>>()
        .into_iter()
        .collect()
}

/// The environment of the release a new one is made from, as the rack picks it: `parent` when
/// given, else the app's latest release (not necessarily the promoted one; none yet: empty).
async fn base_env(
    state: &AppState,
    app: &str,
    parent: Option<&str>,
) -> Result<env::Environment, ApiError> {
    let wait = state.config.rack_read_timeout.min(Duration::from_secs(30));
    let release = match parent {
        Some(id) => id.to_string(),
        None => {
            let latest = rack_json(state, &format!("/apps/{app}/releases?limit=1"), wait).await?;
            latest
                .get(0)
                .and_then(|r| r.get("id"))
                .and_then(|r| r.as_str())
                .unwrap_or_default()
                .to_string()
        }
    };
    if release.is_empty() {
        return Ok(env::Environment::new());
    }
    if !crate::approvals::gate::is_rack_id(&release) {
        return Err(ApiError::BadRequest(
            "not a rack release id (parent-release, or the release promoted)".into(),
        ));
    }
    let json = rack_json(state, &format!("/apps/{app}/releases/{release}"), wait).await?;
    Ok(env::parse(
        json.get("env").and_then(|e| e.as_str()).unwrap_or_default(),
    ))
}

async fn rack_json(
    state: &AppState,
    path: &str,
    wait: Duration,
) -> Result<serde_json::Value, ApiError> {
    state
        .upstream
        .get_json(path, wait, LOOKUP_LIMIT)
        .await
        .map_err(|e| {
            e.into_api_error("reading the environment the release changes", || {
                ApiError::no_such(path.trim_start_matches('/'))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_read_strictly() {
        let pairs = form_pairs(b"env=A%3D1%0AB%3D2&parent-release=R1&x=a+b")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            pairs,
            [
                ("env".to_string(), "A=1\nB=2".to_string()),
                ("parent-release".into(), "R1".into()),
                ("x".into(), "a b".into()),
            ]
        );
        for bad in [&b"env=A%3D1;x=1"[..], b"env=%zz", b"env=%4", b"env=%ff"] {
            assert!(form_pairs(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(form_pairs(b"").map(|p| p.len()).ok(), Some(0));
    }

    proptest::proptest! {
        /// Whatever a client encodes as a form (the convox CLI uses Go's encoder; this is the
        /// same encoding), the gateway reads back exactly.
        #[test]
        fn an_encoded_form_reads_back_exactly(
            pairs in proptest::collection::vec((".{0,12}", "(?s).{0,40}"), 0..6)
        ) {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &pairs {
                form.append_pair(k, v);
            }
            let read = form_pairs(form.finish().as_bytes());
            proptest::prop_assert_eq!(read.ok(), Some(pairs));
        }

        /// Hostile bytes get an answer (pairs or a 400), never a panic.
        #[test]
        fn any_body_gets_an_answer(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = form_pairs(&body);
        }
    }
}
