//! Cookies and CSRF tokens.

use crate::secret_eq::secret_eq;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};

use crate::app::AppState;

/// The web session cookie (`__Host-rg_session` on https: see [`name`]).
const SESSION_COOKIE: &str = "rg_session";
/// Binds a sign-in round trip to the browser that started it (`__Host-rg_login` on https).
const LOGIN_COOKIE: &str = "rg_login";
/// A browser its person chose to trust at sign-in (`__Host-rg_device` on https): its sign-ins
/// skip the authenticator code for a while (`mfa::trusted`).
const DEVICE_COOKIE: &str = "rg_device";
/// Ties a CLI sign-in's confirmation to the page that asked for it (one cookie per sign-in:
/// see [`cli_confirm_cookie`]).
const CLI_CONFIRM_COOKIE: &str = "rg_cli_confirm";

/// The value of cookie `name`. A name sent twice gives none: browsers send both of two
/// cookies of one name (one set for a narrower path, or by a parent domain), most specific
/// first, so the second is how a planted cookie would shadow the gateway's own.
pub fn get(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v);
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    Some(first.to_string())
}

/// The browser session in the session cookie, if it holds one. Only a session (`rgs_…`): an
/// API token planted in the cookie (by a sibling subdomain, say) must not act for the
/// browser's user, and is not even looked up.
pub fn session(state: &AppState, headers: &HeaderMap) -> Option<String> {
    get(headers, &name(state, SESSION_COOKIE))
        .filter(|c| c.starts_with(crate::identity::sessions::SESSION_PREFIX))
}

/// This browser's claim to a sign-in, if it holds one: the attempt's id and the secret of
/// the provider round trip it went on ([`login_value`]).
pub fn login(state: &AppState, headers: &HeaderMap) -> Option<(String, String)> {
    let value = get(headers, &name(state, LOGIN_COOKIE))?;
    let (id, secret) = value.split_once('.')?;
    Some((id.to_string(), secret.to_string()))
}

/// The login cookie's value for attempt `id`, whose provider round trip this browser went on
/// with `secret` (both URL-safe base64: no `.`).
pub fn login_value(id: &str, secret: &str) -> String {
    format!("{id}.{secret}")
}

/// The trusted-browser cookie, if this browser holds one (`rgd_…` only).
pub fn device(state: &AppState, headers: &HeaderMap) -> Option<String> {
    get(headers, &name(state, DEVICE_COOKIE)).filter(|c| c.starts_with(crate::mfa::trusted::PREFIX))
}

/// Sets the trusted-browser cookie for `max_age_secs`: HttpOnly, SameSite=Lax, Secure on
/// https. It outlives sign-outs, which is its point.
pub fn set_device(state: &AppState, response: &mut Response, token: &str, max_age_secs: u64) {
    let secure = if secure(state) { "; Secure" } else { "" };
    let name = name(state, DEVICE_COOKIE);
    set(
        response,
        format!("{name}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"),
    );
}

/// Whether browsers reach the gateway over https: its public URL, or else (when that is not
/// set) the callback registered with the identity provider, which is where the cookies are
/// set. Either way on https, cookies must never travel in clear.
fn secure(state: &AppState) -> bool {
    is_https(state.browser_url())
}

fn is_https(url: Option<&url::Url>) -> bool {
    url.is_some_and(|u| u.scheme() == "https")
}

/// A cookie's name: `__Host-` on https, which browsers accept only from this very host, with
/// `Secure` and `Path=/`, so no sibling subdomain can plant one.
fn name(state: &AppState, base: &str) -> String {
    prefixed(secure(state), base)
}

fn prefixed(secure: bool, base: &str) -> String {
    if secure {
        format!("__Host-{base}")
    } else {
        base.to_string()
    }
}

fn set(response: &mut Response, cookie: String) {
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Sets the session cookie: HttpOnly, SameSite=Lax, Secure on https.
pub fn set_session(state: &AppState, response: &mut Response, token: &str, max_age_secs: u64) {
    let secure = if secure(state) { "; Secure" } else { "" };
    let name = name(state, SESSION_COOKIE);
    set(
        response,
        format!("{name}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"),
    );
}

/// Clears the session cookie.
pub fn clear_session(state: &AppState, response: &mut Response) {
    let secure = if secure(state) { "; Secure" } else { "" };
    let name = name(state, SESSION_COOKIE);
    set(
        response,
        format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    );
}

/// Sets the login-binding cookie for a round trip (10 minutes) to `value` ([`login_value`]).
pub fn set_login(state: &AppState, response: &mut Response, value: &str) {
    let secure = if secure(state) { "; Secure" } else { "" };
    let name = name(state, LOGIN_COOKIE);
    set(
        response,
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age=600{secure}"),
    );
}

/// Clears the login-binding cookie.
pub fn clear_login(state: &AppState, response: &mut Response) {
    let secure = if secure(state) { "; Secure" } else { "" };
    let name = name(state, LOGIN_COOKIE);
    set(
        response,
        format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}"),
    );
}

/// The name of the confirmation cookie of the CLI sign-in `login_id`: one per sign-in, so two
/// in one browser do not overwrite each other's; `__Host-` on https, so a sibling subdomain
/// (same-site for `SameSite=Strict`) cannot plant one with a value it knows.
pub fn cli_confirm_cookie(state: &AppState, login_id: &str) -> String {
    confirm_cookie_name(secure(state), login_id)
}

fn confirm_cookie_name(secure: bool, login_id: &str) -> String {
    let digest = hex::encode(Sha256::digest(login_id.as_bytes()));
    prefixed(secure, &format!("{CLI_CONFIRM_COOKIE}_{}", &digest[..16]))
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
    fn cookies_are_host_only_whenever_browsers_come_over_https() {
        let url = |u: &str| url::Url::parse(u).ok();
        let https = url("https://gw.example.com");
        let http = url("http://127.0.0.1:8447");
        // The public URL decides; without one, the registered callback (where cookies are
        // set) does: an https callback with no PUBLIC_URL sent them without Secure.
        assert!(is_https(https.as_ref()));
        assert!(!is_https(http.as_ref()));
        assert!(!is_https(None));
        assert_eq!(prefixed(true, SESSION_COOKIE), "__Host-rg_session");
        assert_eq!(prefixed(false, LOGIN_COOKIE), "rg_login");
    }

    #[test]
    fn a_cookie_name_sent_twice_is_not_trusted() {
        let headers = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(
                    header::COOKIE,
                    HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
                );
            }
            h
        };
        let one = headers(&["a=1; rg_session=rgs_mine; b=2"]);
        assert_eq!(get(&one, "rg_session").as_deref(), Some("rgs_mine"));
        // A narrower path's cookie comes first: a planted one would win.
        let planted = headers(&["rg_session=rgs_planted; rg_session=rgs_mine"]);
        assert_eq!(get(&planted, "rg_session"), None);
        let split = headers(&["rg_session=rgs_planted", "rg_session=rgs_mine"]);
        assert_eq!(get(&split, "rg_session"), None);
        assert_eq!(get(&split, "other"), None);
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
