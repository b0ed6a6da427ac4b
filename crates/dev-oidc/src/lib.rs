//! A small, real OpenID Connect provider for the dev stack and tests: discovery, JWKS,
//! authorize (with a user picker, or `login_hint=<email>` to pick without a click), token
//! (authorization code + PKCE S256, client secret basic or post) and userinfo, with RS256-signed
//! ID tokens.
//!
//! It signs with a fixed, public test key (`dev-signing-key.pem`; `dev-signing-key-2.pem` for
//! the key-rotation quirk): never trust it outside development.

#[cfg(feature = "browser")]
pub mod browser;
mod pages;
#[cfg(feature = "browser")]
pub mod softkey;
mod state;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use openidconnect::core::{
    CoreIdToken, CoreIdTokenClaims, CoreJsonWebKeySet, CoreJwsSigningAlgorithm,
    CoreRsaPrivateSigningKey,
};
use openidconnect::{
    AccessToken, Audience, AuthorizationCode, EmptyAdditionalClaims, EndUserEmail, EndUserName,
    IssuerUrl, JsonWebKeyId, LocalizedClaim, Nonce, PrivateSigningKey, StandardClaims,
    SubjectIdentifier,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use state::{Grant, Shared};

const SIGNING_KEY_PEM: &str = include_str!("dev-signing-key.pem");
const KEY_ID: &str = "dev-oidc-1";
/// The key [`Quirks::rotates_key`] moves to.
const NEXT_SIGNING_KEY_PEM: &str = include_str!("dev-signing-key-2.pem");
const NEXT_KEY_ID: &str = "dev-oidc-2";

/// A test user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevUser {
    /// E-mail address (the identity).
    pub email: String,
    /// Display name.
    pub name: String,
    /// Whether the provider vouches for the e-mail.
    pub email_verified: bool,
}

impl DevUser {
    fn new(email: &str, name: &str, verified: bool) -> DevUser {
        DevUser {
            email: email.into(),
            name: name.into(),
            email_verified: verified,
        }
    }
}

/// The default test users: one per role, plus users that exist to be refused.
pub fn default_users() -> Vec<DevUser> {
    vec![
        DevUser::new("admin@example.com", "Ada Admin", true),
        DevUser::new("deployer@example.com", "Dee Deployer", true),
        DevUser::new("ops@example.com", "Otto Ops", true),
        DevUser::new("viewer@example.com", "Vera Viewer", true),
        DevUser::new("stranger@example.com", "Sam Stranger", true),
        DevUser::new("unverified@example.com", "Una Unverified", false),
        DevUser::new("outsider@elsewhere.test", "Oscar Outsider", true),
    ]
}

/// Provider configuration.
#[derive(Debug, Clone)]
pub struct DevOidcConfig {
    /// Issuer URL, e.g. `http://127.0.0.1:3345` (must be where it is reachable).
    pub issuer: String,
    /// The one registered client.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// Redirect URIs the client may use (exact match).
    pub redirect_uris: Vec<String>,
    /// Users offered on the picker.
    pub users: Vec<DevUser>,
    /// Deliberate misbehaviour, for testing the relying party's checks.
    pub quirks: Quirks,
}

/// Ways a provider can misbehave; all off by default. The gateway must refuse every one that
/// breaks the protocol, and live with a slow one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quirks {
    /// ID tokens name another audience.
    pub wrong_audience: bool,
    /// ID tokens name another issuer.
    pub wrong_issuer: bool,
    /// ID tokens carry a nonce other than the one asked for.
    pub wrong_nonce: bool,
    /// Key rotation: once the key set has been served, ID tokens are signed with a new key that
    /// only key sets served after that list (a relying party must fetch the keys again).
    pub rotates_key: bool,
    /// The token endpoint answers this many milliseconds late (a slow provider: the relying
    /// party's caller may give up meanwhile).
    pub token_delay_ms: u64,
    /// ID tokens name this client as their audience, but another as the authorized party
    /// (`azp`).
    pub other_party: bool,
    /// ID tokens are issued a day in the future (`iat`), and expire after that.
    pub issued_in_future: bool,
    /// The discovery document is padded past 2 MiB (a relying party must not read it all).
    pub huge_discovery: bool,
    /// The discovery document names a plain-http token endpoint on another host.
    pub plain_token_endpoint: bool,
}

/// Why the provider could not start.
#[derive(Debug)]
pub struct DevOidcError(String);

impl std::fmt::Display for DevOidcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DevOidcError {}

/// The provider's router.
pub fn router(config: DevOidcConfig) -> Result<Router, DevOidcError> {
    let key =
        CoreRsaPrivateSigningKey::from_pem(SIGNING_KEY_PEM, Some(JsonWebKeyId::new(KEY_ID.into())))
            .map_err(|e| DevOidcError(format!("signing key: {e}")))?;
    let next = CoreRsaPrivateSigningKey::from_pem(
        NEXT_SIGNING_KEY_PEM,
        Some(JsonWebKeyId::new(NEXT_KEY_ID.into())),
    )
    .map_err(|e| DevOidcError(format!("signing key: {e}")))?;
    let shared = Arc::new(Shared::new(config, key, next));
    Ok(Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .route("/userinfo", get(userinfo))
        .with_state(shared))
}

/// Serves the provider on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: DevOidcConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(config).map_err(std::io::Error::other)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

type St = State<Arc<Shared>>;

async fn discovery(State(s): St) -> Response {
    let i = s.config.issuer.trim_end_matches('/');
    let padding = if s.config.quirks.huge_discovery {
        "x".repeat(2 * 1024 * 1024 + 1)
    } else {
        String::new()
    };
    axum::Json(serde_json::json!({
        "padding": padding,
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": if s.config.quirks.plain_token_endpoint {
            "http://token.example.invalid/token".to_string()
        } else {
            format!("{i}/token")
        },
        "userinfo_endpoint": format!("{i}/userinfo"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "email", "email_verified", "name", "hd"],
        "grant_types_supported": ["authorization_code"],
    }))
    .into_response()
}

async fn jwks(State(s): St) -> Response {
    let mut keys = vec![s.key.as_verification_key()];
    if s.config.quirks.rotates_key && s.key_set_served() {
        keys.push(s.next_key.as_verification_key());
    }
    let set = CoreJsonWebKeySet::new(keys);
    axum::Json(set).into_response()
}

/// Query of `/authorize`.
#[derive(Debug, Deserialize)]
struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    login_hint: Option<String>,
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Html(pages::error(message))).into_response()
}

async fn authorize(State(s): St, Query(q): Query<AuthorizeQuery>) -> Response {
    if q.client_id.as_deref() != Some(s.config.client_id.as_str()) {
        return bad_request("unknown client_id");
    }
    let Some(redirect_uri) = q.redirect_uri.clone() else {
        return bad_request("redirect_uri is required");
    };
    if !s.config.redirect_uris.contains(&redirect_uri) {
        return bad_request("redirect_uri is not registered for this client");
    }
    // From here on, errors go back to the client as the spec says.
    let back = |error: &str| {
        let mut url = redirect_uri.clone();
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("error={error}"));
        if let Some(state) = &q.state {
            url.push_str("&state=");
            url.push_str(
                &url::form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>(),
            );
        }
        Redirect::to(&url).into_response()
    };
    if q.response_type.as_deref() != Some("code") {
        return back("unsupported_response_type");
    }
    if !q
        .scope
        .as_deref()
        .unwrap_or_default()
        .split(' ')
        .any(|s| s == "openid")
    {
        return back("invalid_scope");
    }
    let (Some(challenge), Some("S256")) =
        (q.code_challenge.clone(), q.code_challenge_method.as_deref())
    else {
        return back("invalid_request");
    };
    let Some(email) = q.login_hint.clone().filter(|e| s.user(e).is_some()) else {
        return Html(pages::picker(&s.config.users, &picker_query(&q))).into_response();
    };
    let code = s.grant(Grant {
        email,
        redirect_uri: redirect_uri.clone(),
        nonce: q.nonce.clone(),
        code_challenge: challenge,
    });
    let mut url = redirect_uri;
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&format!("code={code}"));
    if let Some(state) = &q.state {
        url.push_str("&state=");
        url.push_str(&url::form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>());
    }
    Redirect::to(&url).into_response()
}

/// The authorize query minus `login_hint`, for the picker's links.
fn picker_query(q: &AuthorizeQuery) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("response_type", &q.response_type),
        ("client_id", &q.client_id),
        ("redirect_uri", &q.redirect_uri),
        ("scope", &q.scope),
        ("state", &q.state),
        ("nonce", &q.nonce),
        ("code_challenge", &q.code_challenge),
        ("code_challenge_method", &q.code_challenge_method),
    ] {
        if let Some(v) = v {
            s.append_pair(k, v);
        }
    }
    s.finish()
}

/// Form of `/token`.
#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    code_verifier: Option<String>,
}

fn token_error(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": error }))).into_response()
}

fn client_credentials(headers: &HeaderMap, form: &TokenForm) -> Option<(String, String)> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = STANDARD.decode(basic.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        let unescape = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        return Some((unescape(id), unescape(secret)));
    }
    Some((form.client_id.clone()?, form.client_secret.clone()?))
}

async fn token(State(s): St, headers: HeaderMap, Form(form): Form<TokenForm>) -> Response {
    match client_credentials(&headers, &form) {
        Some((id, secret)) if id == s.config.client_id && secret == s.config.client_secret => {}
        _ => return token_error(StatusCode::UNAUTHORIZED, "invalid_client"),
    }
    if s.config.quirks.token_delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(
            s.config.quirks.token_delay_ms,
        ))
        .await;
    }
    if form.grant_type.as_deref() != Some("authorization_code") {
        return token_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    let Some(grant) = form.code.as_deref().and_then(|c| s.redeem(c)) else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    if form.redirect_uri.as_deref() != Some(grant.redirect_uri.as_str()) {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let verifier = form.code_verifier.unwrap_or_default();
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if computed != grant.code_challenge {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let Some(user) = s.user(&grant.email) else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    let access = s.access_token(&user.email);
    match id_token(
        &s,
        &user,
        grant.nonce.as_deref(),
        &access,
        form.code.as_deref(),
    ) {
        Ok(id_token) => axum::Json(serde_json::json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": 3600,
            "id_token": id_token,
            "scope": "openid email profile",
        }))
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "dev-oidc could not sign an ID token");
            token_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error")
        }
    }
}

fn id_token(
    s: &Shared,
    user: &DevUser,
    nonce: Option<&str>,
    access: &str,
    code: Option<&str>,
) -> Result<String, String> {
    let quirks = s.config.quirks;
    let issuer = if quirks.wrong_issuer {
        "http://issuer.invalid".to_string()
    } else {
        s.config.issuer.trim_end_matches('/').to_string()
    };
    let issuer = IssuerUrl::new(issuer).map_err(|e| e.to_string())?;
    let audience = if quirks.wrong_audience {
        "another-client".to_string()
    } else {
        s.config.client_id.clone()
    };
    let now = if quirks.issued_in_future {
        chrono::Utc::now() + chrono::Duration::days(1)
    } else {
        chrono::Utc::now()
    };
    let mut name = LocalizedClaim::new();
    name.insert(None, EndUserName::new(user.name.clone()));
    let subject = SubjectIdentifier::new(
        URL_SAFE_NO_PAD.encode(&Sha256::digest(user.email.as_bytes())[..16]),
    );
    let standard = StandardClaims::new(subject)
        .set_email(Some(EndUserEmail::new(user.email.clone())))
        .set_email_verified(Some(user.email_verified))
        .set_name(Some(name));
    let mut claims = CoreIdTokenClaims::new(
        issuer,
        vec![Audience::new(audience)],
        now + chrono::Duration::minutes(10),
        now,
        standard,
        EmptyAdditionalClaims {},
    );
    if quirks.other_party {
        claims = claims
            .set_authorized_party(Some(openidconnect::ClientId::new("another-client".into())));
    }
    let nonce = if quirks.wrong_nonce {
        Some("forged-nonce")
    } else {
        nonce
    };
    if let Some(nonce) = nonce {
        claims = claims.set_nonce(Some(Nonce::new(nonce.to_string())));
    }
    let key = if quirks.rotates_key && s.key_set_was_served() {
        &s.next_key
    } else {
        &s.key
    };
    let token = CoreIdToken::new(
        claims,
        key,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        Some(&AccessToken::new(access.to_string())),
        code.map(|c| AuthorizationCode::new(c.to_string())).as_ref(),
    )
    .map_err(|e| e.to_string())?;
    Ok(token.to_string())
}

async fn userinfo(State(s): St, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token.and_then(|t| s.user_for_access(t)) {
        Some(user) => axum::Json(serde_json::json!({
            "sub": URL_SAFE_NO_PAD.encode(&Sha256::digest(user.email.as_bytes())[..16]),
            "email": user.email,
            "email_verified": user.email_verified,
            "name": user.name,
        }))
        .into_response(),
        None => token_error(StatusCode::UNAUTHORIZED, "invalid_token"),
    }
}
