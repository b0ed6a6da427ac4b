//! OpenID Connect sign-in against any standards-compliant issuer (Google Workspace with domain
//! restriction is the headline case): discovery, the authorization URL with state, nonce and
//! PKCE, and the code exchange with ID-token verification.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{
    CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreResponseType,
};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret,
    CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError,
};
use tokio::sync::RwLock;

use crate::config::OidcConfig;

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// How long discovered provider metadata (and its keys) is reused.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// An ID token signed with a key the cached set lacks makes the gateway fetch the metadata and
/// keys again (the provider has rotated its key), at most this often: a flood of such tokens
/// must not turn into a flood of requests to the provider.
const KEY_REFRESH_PAUSE: Duration = Duration::from_secs(10);

/// How far the provider's clock may be ahead of ours (`iat`, `nbf`).
const CLOCK_SKEW: Duration = Duration::from_secs(300);
/// The most the gateway reads of any answer from the provider (discovery, keys, tokens): a
/// hostile or broken provider must not fill the gateway's memory.
const MAX_PROVIDER_ANSWER: usize = 1024 * 1024;
/// A failed discovery is answered from memory for this long: every visitor starting a
/// sign-in must not become two more requests to a provider that is down (or hostile).
const FAILED_DISCOVERY_PAUSE: Duration = Duration::from_secs(5);

/// Seconds since the Unix epoch, now.
fn unix_now() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}

/// A sign-in failure. The `Display` text is safe to show and audit.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or answered nonsense.
    #[error("identity provider unavailable: {0}")]
    Provider(String),
    /// The provider refused or the exchange failed.
    #[error("sign-in with the identity provider failed: {0}")]
    Exchange(String),
    /// The ID token did not verify (issuer, audience, signature, expiry or nonce).
    #[error("the identity provider's ID token was rejected: {0}")]
    InvalidIdToken(String),
    /// The token carries no e-mail.
    #[error("the identity provider did not share an e-mail address")]
    NoEmail,
    /// The e-mail is not one the gateway accepts (see `gateway_core::text::email_problem`).
    #[error("the e-mail address from the identity provider cannot be used here: it {0}")]
    UnusableEmail(&'static str),
}

/// What the provider vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// E-mail, lower-cased.
    pub email: String,
    /// Display name.
    pub name: String,
    /// `email_verified` claim.
    pub email_verified: bool,
    /// Google Workspace domain (`hd` claim).
    pub hosted_domain: Option<String>,
}

/// The claims of an ID token's payload that the library does not read (`nbf`, `hd`). Only for
/// a token whose signature has been verified.
fn payload(id_token: &openidconnect::core::CoreIdToken) -> serde_json::Value {
    id_token
        .to_string()
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
        .unwrap_or_default()
}

/// Who a verified ID token names: its `nbf` reached, its e-mail one the gateway accepts, its
/// texts without control or invisible characters (a name's are dropped, the rest refused).
fn identity(
    claims: &openidconnect::core::CoreIdTokenClaims,
    payload: &serde_json::Value,
) -> Result<Identity, OidcError> {
    let skew = i64::try_from(CLOCK_SKEW.as_secs()).unwrap_or(i64::MAX);
    if let Some(nbf) = payload["nbf"].as_f64()
        && nbf > (unix_now().saturating_add(skew)) as f64
    {
        return Err(OidcError::InvalidIdToken(
            "not valid yet (nbf is in the future)".into(),
        ));
    }
    let hosted_domain = match payload["hd"].as_str() {
        Some(hd) if hd.chars().any(gateway_core::text::is_hidden) => {
            return Err(OidcError::InvalidIdToken(
                "the hd claim holds control or invisible characters".into(),
            ));
        }
        hd => hd.map(str::to_ascii_lowercase),
    };
    let email = claims
        .email()
        .map(|e| gateway_core::text::email_key(e.as_str()))
        .ok_or(OidcError::NoEmail)?;
    if email.chars().any(gateway_core::text::is_hidden) {
        return Err(OidcError::InvalidIdToken(
            "the e-mail claim holds control or invisible characters".into(),
        ));
    }
    if let Some(problem) = gateway_core::text::email_problem(&email) {
        return Err(OidcError::UnusableEmail(problem));
    }
    let name = claims
        .name()
        .and_then(|n| n.get(None))
        // Shown on pages and stored: control characters (NUL cannot be stored in
        // PostgreSQL at all) are dropped rather than failing the sign-in.
        .map(|n| {
            n.as_str()
                .chars()
                .filter(|c| !gateway_core::text::is_hidden(*c))
                .collect()
        })
        .unwrap_or_default();
    Ok(Identity {
        email,
        name,
        email_verified: claims.email_verified().unwrap_or(false),
        hosted_domain,
    })
}

/// The ID-token verifier for `client`: public-key signatures only. With an HMAC algorithm the
/// client secret (which this gateway and its configuration hold) would be a key that signs ID
/// tokens for any e-mail, and providers list HS256 among the algorithms they support.
fn verifier(client: &Client) -> openidconnect::core::CoreIdTokenVerifier<'_> {
    client
        .id_token_verifier()
        // A token issued in the future (beyond clock skew) was made by a clock or a signer
        // that cannot be trusted with the rest of its times either.
        .set_issue_time_verifier_fn(|iat| {
            let skew = i64::try_from(CLOCK_SKEW.as_secs()).unwrap_or(i64::MAX);
            if iat.timestamp() > unix_now().saturating_add(skew) {
                Err(format!("issued in the future ({iat})"))
            } else {
                Ok(())
            }
        })
        .set_allowed_algs([
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
            CoreJwsSigningAlgorithm::RsaSsaPssSha256,
            CoreJwsSigningAlgorithm::RsaSsaPssSha384,
            CoreJwsSigningAlgorithm::RsaSsaPssSha512,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
            CoreJwsSigningAlgorithm::EcdsaP384Sha384,
            CoreJwsSigningAlgorithm::EcdsaP521Sha512,
            CoreJwsSigningAlgorithm::EdDsa,
        ])
}

/// The provider client with cached discovery.
pub struct Oidc {
    config: OidcConfig,
    http: reqwest::Client,
    metadata: RwLock<Option<(Arc<CoreProviderMetadata>, Instant)>>,
    /// Held while discovering: concurrent sign-ins wait for one discovery instead of each
    /// starting their own.
    discovering: tokio::sync::Mutex<()>,
    /// The last failed discovery: when, and why (see [`FAILED_DISCOVERY_PAUSE`]).
    failed: std::sync::Mutex<Option<(Instant, String)>>,
    /// When the keys were last fetched again for an unknown key (see [`KEY_REFRESH_PAUSE`]).
    key_refreshed: std::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.config.issuer.as_str())
            .finish()
    }
}

/// A fresh random URL-safe value with 256 bits.
pub fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Oidc {
    /// A client for `config`; discovery happens on first use.
    pub fn new(config: OidcConfig) -> Result<Oidc, OidcError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        Ok(Oidc {
            config,
            http,
            metadata: RwLock::new(None),
            discovering: tokio::sync::Mutex::new(()),
            failed: std::sync::Mutex::new(None),
            key_refreshed: std::sync::Mutex::new(None),
        })
    }

    /// The settings.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The provider's metadata and keys: cached, or discovered again when older than
    /// [`METADATA_TTL`] or when `fresh`.
    async fn metadata(&self, fresh: bool) -> Result<Arc<CoreProviderMetadata>, OidcError> {
        let cached = || async {
            self.metadata
                .read()
                .await
                .as_ref()
                .filter(|(_, at)| at.elapsed() < METADATA_TTL)
                .map(|(m, at)| (m.clone(), *at))
        };
        if !fresh && let Some((m, _)) = cached().await {
            return Ok(m);
        }
        let asked_at = Instant::now();
        let _one_at_a_time = self.discovering.lock().await;
        // Another sign-in may have discovered while this one waited.
        if let Some((m, at)) = cached().await
            && (!fresh || at >= asked_at)
        {
            return Ok(m);
        }
        if let Some(why) = self.recent_failure() {
            return Err(OidcError::Provider(why));
        }
        let discovered = self
            .discover_either()
            .await
            .and_then(|m| plain_endpoints(&m).map_or(Ok(m), |why| Err(OidcError::Provider(why))));
        if let Err(OidcError::Provider(why)) = &discovered
            && let Ok(mut failed) = self.failed.lock()
        {
            *failed = Some((Instant::now(), why.clone()));
        }
        let metadata = Arc::new(discovered?);
        *self.metadata.write().await = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    /// Why discovery failed, when it did within [`FAILED_DISCOVERY_PAUSE`].
    fn recent_failure(&self) -> Option<String> {
        let failed = self.failed.lock().ok()?;
        failed
            .as_ref()
            .filter(|(at, _)| at.elapsed() < FAILED_DISCOVERY_PAUSE)
            .map(|(_, why)| why.clone())
    }

    /// Discovery at the configured issuer, then at it with or without a final `/`.
    async fn discover_either(&self) -> Result<CoreProviderMetadata, OidcError> {
        let given = self.config.issuer_id.as_str();
        let metadata = match self.discover(given).await {
            Ok(metadata) => metadata,
            Err(first) => {
                // The provider's metadata must name the issuer exactly. Earlier versions
                // dropped a final `/` (so `https://accounts.google.com/` worked): an issuer
                // that differs only by one still does, with a warning saying which to set.
                let other = match given.strip_suffix('/') {
                    Some(trimmed) => trimmed.to_string(),
                    None => format!("{given}/"),
                };
                match self.discover(&other).await {
                    Ok(metadata) => {
                        tracing::warn!(
                            configured = given,
                            provider = %other,
                            "OIDC_ISSUER differs from the provider's issuer by a final /; set it \
                             exactly as the provider names itself"
                        );
                        metadata
                    }
                    Err(_) => return Err(first),
                }
            }
        };
        Ok(metadata)
    }

    async fn discover(&self, issuer: &str) -> Result<CoreProviderMetadata, OidcError> {
        let issuer =
            IssuerUrl::new(issuer.to_string()).map_err(|e| OidcError::Provider(e.to_string()))?;
        CoreProviderMetadata::discover_async(issuer, &self.http_client())
            .await
            .map_err(|e| OidcError::Provider(format!("discovery failed: {}", exchange_error(&e))))
    }

    /// Whether the keys may be fetched again now for an unknown key; notes it when so.
    fn may_refresh_keys(&self) -> bool {
        let mut last = self
            .key_refreshed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < KEY_REFRESH_PAUSE) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    async fn client(&self, fresh: bool) -> Result<Client, OidcError> {
        let metadata = self.metadata(fresh).await?;
        let redirect = RedirectUrl::new(self.config.redirect_url.to_string())
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(
            (*metadata).clone(),
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(
                self.config.client_secret.expose().to_string(),
            )),
        )
        .set_redirect_uri(redirect))
    }

    /// The provider URL to send the browser to.
    pub async fn authorize_url(
        &self,
        state: &str,
        nonce: &str,
        pkce_verifier: &str,
    ) -> Result<String, OidcError> {
        let client = self.client(false).await?;
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            pkce_verifier.into(),
        ));
        let state = state.to_string();
        let nonce = nonce.to_string();
        let mut request = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge);
        if let (true, [domain]) = (
            self.config.is_google(),
            self.config.allowed_domains.as_slice(),
        ) {
            request = request.add_extra_param("hd", domain.clone());
        }
        let (url, _, _) = request.url();
        Ok(url.to_string())
    }

    /// Exchanges `code` and verifies the ID token (signature, issuer, audience, expiry, nonce).
    pub async fn exchange(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<Identity, OidcError> {
        use openidconnect::TokenResponse;
        let client = self.client(false).await?;
        let response = self.request_tokens(&client, code, pkce_verifier).await?;
        let id_token = response
            .id_token()
            .ok_or_else(|| OidcError::InvalidIdToken("no ID token in the response".into()))?;
        let nonce = Nonce::new(nonce.to_string());
        let claims = self.verified_claims(&client, id_token, &nonce).await?;
        // Left to clients by the library (Google's mobile flows name another client here);
        // this gateway's own web flow must be the party the token was issued to.
        if let Some(azp) = claims.authorized_party()
            && azp.as_str() != self.config.client_id
        {
            return Err(OidcError::InvalidIdToken(format!(
                "issued to another client (azp {})",
                gateway_core::text::readable(azp.as_str())
                    .chars()
                    .take(100)
                    .collect::<String>()
            )));
        }
        identity(claims, &payload(id_token))
    }

    /// Trades the authorization code (with the PKCE verifier) for the provider's tokens.
    async fn request_tokens(
        &self,
        client: &Client,
        code: &str,
        pkce_verifier: &str,
    ) -> Result<openidconnect::core::CoreTokenResponse, OidcError> {
        let http = self.http_client();
        client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Provider(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
            .request_async(&http)
            .await
            .map_err(|e| {
                // The gateway's own credentials, not the person signing in: every sign-in
                // fails until the operator fixes them, so the log says so.
                if let openidconnect::RequestTokenError::ServerResponse(answer) = &e
                    && matches!(
                        answer.error(),
                        openidconnect::core::CoreErrorResponseType::InvalidClient
                            | openidconnect::core::CoreErrorResponseType::UnauthorizedClient
                    )
                {
                    tracing::error!(
                        issuer = %self.config.issuer_id,
                        answer = %answer.error(),
                        "the identity provider refused the gateway's client credentials: \
                         OIDC_CLIENT_ID or OIDC_CLIENT_SECRET is wrong or was rotated, and every \
                         sign-in fails until they are fixed"
                    );
                }
                OidcError::Exchange(exchange_error(&e))
            })
    }

    /// The ID token's claims once its signature, issuer, audience, times and nonce verify.
    async fn verified_claims<'t>(
        &self,
        client: &Client,
        id_token: &'t openidconnect::core::CoreIdToken,
        nonce: &Nonce,
    ) -> Result<&'t openidconnect::core::CoreIdTokenClaims, OidcError> {
        match id_token.claims(&verifier(client), nonce) {
            Ok(claims) => Ok(claims),
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) if self.may_refresh_keys() => {
                // Signed with a key the cached set does not have: the provider has rotated its
                // key since the keys were fetched. Fetch them again and verify once more.
                tracing::info!(
                    "the ID token is signed with a key the cached set lacks: fetching the \
                     provider's keys again"
                );
                let client = self.client(true).await?;
                id_token
                    .claims(&verifier(&client), nonce)
                    .map_err(|e| OidcError::InvalidIdToken(e.to_string()))
            }
            Err(e) => Err(OidcError::InvalidIdToken(e.to_string())),
        }
    }

    /// Checks the identity against the domain rules; `Err` is the refusal reason.
    pub fn check_domain(&self, identity: &Identity) -> Result<(), String> {
        if !identity.email_verified {
            return Err("the identity provider has not verified this e-mail address".into());
        }
        let allowed = &self.config.allowed_domains;
        if allowed.is_empty() {
            return Ok(());
        }
        let domain = identity
            .email
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or_default();
        if !allowed.iter().any(|d| d == domain) {
            return Err(format!("e-mail domain {domain} is not allowed to sign in"));
        }
        match (&identity.hosted_domain, self.config.is_google()) {
            (Some(hd), _) if !allowed.iter().any(|d| d == hd) => Err(format!(
                "Google Workspace domain {hd} is not allowed to sign in"
            )),
            (None, true) => Err("a Google Workspace account is required (no hd claim)".into()),
            _ => Ok(()),
        }
    }

    fn http_client(
        &self,
    ) -> impl Fn(
        openidconnect::HttpRequest,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, HttpError>> + Send,
        >,
    > + use<> {
        let client = self.http.clone();
        move |request: openidconnect::HttpRequest| {
            let client = client.clone();
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                let response = client
                    .request(parts.method, parts.uri.to_string())
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| HttpError(e.to_string()))?;
                let status = response.status();
                let headers = response.headers().clone();
                let bytes = bounded_body(response).await?;
                let mut out = http::Response::new(bytes);
                *out.status_mut() = status;
                *out.headers_mut() = headers;
                Ok(out)
            })
        }
    }
}

/// Why the provider's metadata cannot be used, when it sends the code exchange (with the
/// client secret) or the keys over plain http to another host: an https issuer whose
/// metadata points there would undo what https on the issuer protects.
fn plain_endpoints(metadata: &CoreProviderMetadata) -> Option<String> {
    let plain = |url: &url::Url| {
        url.scheme() != "https"
            && !(url.scheme() == "http"
                && match url.host() {
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    Some(url::Host::Domain(d)) => d == "localhost",
                    None => false,
                })
    };
    let token = metadata.token_endpoint().map(|t| t.url());
    let keys = metadata.jwks_uri().url();
    [("token_endpoint", token), ("jwks_uri", Some(keys))]
        .into_iter()
        .find_map(|(name, url)| {
            url.filter(|u| plain(u)).map(|u| {
                format!(
                    "the provider's {name} is not https ({}): refused",
                    gateway_core::text::readable(u.as_str())
                        .chars()
                        .take(200)
                        .collect::<String>()
                )
            })
        })
}

/// The body of `response`, refused past [`MAX_PROVIDER_ANSWER`] bytes (read in chunks, so a
/// huge or endless answer never sits in memory).
async fn bounded_body(mut response: reqwest::Response) -> Result<Vec<u8>, HttpError> {
    let too_large = || {
        HttpError(format!(
            "the provider's answer is larger than {} KiB",
            MAX_PROVIDER_ANSWER / 1024
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_PROVIDER_ANSWER as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| HttpError(e.to_string()))?
    {
        if body.len() + chunk.len() > MAX_PROVIDER_ANSWER {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn exchange_error<E: std::error::Error>(e: &E) -> String {
    crate::error::with_causes(e).chars().take(300).collect()
}

/// The HTTP transport's error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);
