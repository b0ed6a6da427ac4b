//! Cookies and CSRF tokens.

use crate::secret_eq::secret_eq;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};

use crate::app::AppState;

/// The web session cookie.
pub const SESSION_COOKIE: &str = "rg_session";
/// Binds a sign-in round trip to the browser that started it.
pub const LOGIN_COOKIE: &str = "rg_login";
/// Ties a CLI sign-in's confirmation to the page that asked for it (one cookie per sign-in:
/// see [`cli_confirm_cookie`]).
const CLI_CONFIRM_COOKIE: &str = "rg_cli_confirm";

/// The value of cookie `name`.
pub fn get(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The browser session in the session cookie, if it holds one. Only a session (`rgs_…`): an
/// API token planted in the cookie (by a sibling subdomain, say) must not act for the
/// browser's user, and is not even looked up.
pub fn session(headers: &HeaderMap) -> Option<String> {
    get(headers, SESSION_COOKIE)
        .filter(|c| c.starts_with(crate::identity::sessions::SESSION_PREFIX))
}

fn secure(state: &AppState) -> bool {
    state
        .config
        .public_url
        .as_ref()
        .is_some_and(|u| u.scheme() == "https")
}

fn set(response: &mut Response, cookie: String) {
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Sets the session cookie: HttpOnly, SameSite=Lax, Secure on https.
pub fn set_session(state: &AppState, response: &mut Response, token: &str, max_age_secs: u64) {
    let secure = if secure(state) { "; Secure" } else { "" };
    set(
        response,
        format!(
            "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
        ),
    );
}

/// Clears the session cookie.
pub fn clear_session(state: &AppState, response: &mut Response) {
    let secure = if secure(state) { "; Secure" } else { "" };
    set(
        response,
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    );
}

/// Sets the login-binding cookie for a round trip (10 minutes).
pub fn set_login(state: &AppState, response: &mut Response, attempt_id: &str) {
    let secure = if secure(state) { "; Secure" } else { "" };
    set(
        response,
        format!(
            "{LOGIN_COOKIE}={attempt_id}; Path=/api/v1/auth; HttpOnly; SameSite=Lax; Max-Age=600{secure}"
        ),
    );
}

/// Clears the login-binding cookie.
pub fn clear_login(state: &AppState, response: &mut Response) {
    let secure = if secure(state) { "; Secure" } else { "" };
    set(
        response,
        format!("{LOGIN_COOKIE}=; Path=/api/v1/auth; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    );
}

/// The name of the confirmation cookie of the CLI sign-in `login_id`: one per sign-in, so two
/// in one browser do not overwrite each other's; `__Host-` on https, so a sibling subdomain
/// (same-site for `SameSite=Strict`) cannot plant one with a value it knows.
pub fn cli_confirm_cookie(state: &AppState, login_id: &str) -> String {
    confirm_cookie_name(secure(state), login_id)
}

fn confirm_cookie_name(secure: bool, login_id: &str) -> String {
    let prefix = if secure { "__Host-" } else { "" };
    let digest = hex::encode(Sha256::digest(login_id.as_bytes()));
    format!("{prefix}{CLI_CONFIRM_COOKIE}_{}", &digest[..16])
}

/// Sets the CLI-confirmation cookie of `login_id` (10 minutes). `SameSite=Strict`: a request
/// another site makes the user's browser send arrives without it, so only the gateway's own
/// page can confirm.
pub fn set_cli_confirm(state: &AppState, response: &mut Response, login_id: &str, value: &str) {
    let secure = if secure(state) { "; Secure" } else { "" };
    let name = cli_confirm_cookie(state, login_id);
    set(
        response,
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=600{secure}"),
    );
}

/// Clears the CLI-confirmation cookie of `login_id`.
pub fn clear_cli_confirm(state: &AppState, response: &mut Response, login_id: &str) {
    let secure = if secure(state) { "; Secure" } else { "" };
    let name = cli_confirm_cookie(state, login_id);
    set(
        response,
        format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    );
}

/// The CSRF token for a session: derived from the session secret, which no other site knows.
pub fn csrf_token(session_token: &str) -> String {
    hex::encode(Sha256::digest(
        format!("rack-gateway csrf\0{session_token}").as_bytes(),
    ))
}

/// Checks a submitted CSRF token in constant time.
pub fn csrf_ok(session_token: &str, submitted: Option<&str>) -> bool {
    let expected = csrf_token(session_token);
    submitted.is_some_and(|s| secret_eq(s.as_bytes(), expected.as_bytes()))
}

/// True for a path on this site: `/…`, not `//…` or `/\…`, no scheme, no control characters.
/// (Its length is the sign-in's business: up to 2 KiB there.)
pub fn safe_return_to(path: &str) -> bool {
    path.starts_with('/')
        && !path.starts_with("//")
        && !path.starts_with("/\\")
        && !path.contains("://")
        && !path.chars().any(|c| c.is_control() || c == '\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_confirmation_cookies_are_per_sign_in_and_host_only_on_https() {
        let (a, b) = (
            confirm_cookie_name(false, "one"),
            confirm_cookie_name(false, "two"),
        );
        assert!(a.starts_with("rg_cli_confirm_") && a != b, "{a} {b}");
        // `__Host-`: a sibling subdomain cannot set it (browsers require Secure, Path=/ and no
        // Domain, which `set_cli_confirm` sends).
        assert_eq!(confirm_cookie_name(true, "one"), format!("__Host-{a}"));
    }

    #[test]
    fn return_to_must_stay_on_site() {
        for ok in ["/", "/account", "/apps?x=1"] {
            assert!(safe_return_to(ok), "{ok}");
        }
        for bad in [
            "https://evil.test/",
            "//evil.test",
            "/\\evil.test",
            "evil",
            "/a\nb",
            "/x://y",
        ] {
            assert!(!safe_return_to(bad), "{bad}");
        }
    }

    #[test]
    fn csrf() {
        let t = csrf_token("rgs_a");
        assert!(csrf_ok("rgs_a", Some(&t)));
        assert!(!csrf_ok("rgs_b", Some(&t)));
        assert!(!csrf_ok("rgs_a", None));
    }
}
