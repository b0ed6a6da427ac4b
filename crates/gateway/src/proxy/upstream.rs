//! The connection to the rack: pooled HTTP client and WebSocket connector sharing one rustls
//! configuration (web PKI roots, a CA file, or a pinned certificate), and the rack's
//! credentials, which are added here and nowhere else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::secret_eq::secret_eq;
use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gateway_core::scrub::Scrubber;
use http::HeaderValue;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use url::Url;

use super::write_bound::WriteBound;
use crate::config::{Config, RackTls};

/// Why the upstream could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The CA file could not be read.
    #[error("RACK_CA_FILE: {0}")]
    CaFile(String),
    /// The rack token cannot be sent in a header (control characters, non-ASCII).
    #[error("RACK_TOKEN contains characters that cannot be sent in an HTTP header")]
    BadToken,
    /// TLS set-up failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why a request to the rack got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RackError {
    /// Connecting, or waiting for the response head, took longer than allowed.
    #[error("the rack did not answer in time")]
    Timeout,
    /// No connection could be made.
    #[error("could not connect to the rack")]
    Connect,
    /// The connection failed while the request (most often its body) was being sent.
    #[error("request to the rack failed while sending")]
    Send,
    /// The rack closed the connection without a complete answer.
    #[error("the rack closed the connection")]
    Closed,
    /// The rack's answer could not be read as HTTP (malformed, or headers too large).
    #[error("the rack sent an answer that is not valid HTTP, or headers too large")]
    Malformed,
}

/// Why [`Upstream::get_json`] has no answer.
#[derive(Debug, thiserror::Error)]
pub enum RackLookup {
    /// The path does not make a URL.
    #[error("not a usable rack path")]
    BadPath,
    /// The rack could not be asked.
    #[error(transparent)]
    Rack(#[from] RackError),
    /// The rack answered with this status.
    #[error("the rack answered {0}")]
    Status(u16),
    /// The answer was too large, cut short, or not JSON.
    #[error("the rack's answer could not be read")]
    Unreadable,
    /// The gateway holds as much as it may of bodies read whole.
    #[error(transparent)]
    Busy(#[from] super::held::Busy),
}

impl RackLookup {
    /// The answer to a client whose request needed this lookup, `doing` saying what for; a
    /// `404` is `not_found` (what a missing object means depends on the caller).
    pub fn into_api_error(
        self,
        doing: &str,
        not_found: impl FnOnce() -> crate::error::ApiError,
    ) -> crate::error::ApiError {
        use crate::error::ApiError;
        match self {
            RackLookup::Status(404) => not_found(),
            RackLookup::Rack(RackError::Timeout) => ApiError::RackTimeout,
            RackLookup::Status(401) => ApiError::RackRefusedGateway,
            RackLookup::Busy(busy) => ApiError::Busy(busy),
            e => ApiError::RackUnreachable(format!("{doing}: {e}")),
        }
    }
}

/// What the rack said to the gateway's own credentials ([`Upstream::check_token`]).
#[derive(Debug)]
pub enum TokenCheck {
    /// A 2xx: `RACK_TOKEN` works.
    Accepted,
    /// A 401: the rack refuses `RACK_TOKEN`.
    Refused,
    /// Another status.
    Answered(u16),
    /// No answer.
    Failed(RackError),
}

impl RackError {
    fn from_client(err: &hyper_util::client::legacy::Error) -> RackError {
        let timed_out = source_chain(err).any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        });
        if timed_out {
            RackError::Timeout
        } else if err.is_connect() {
            RackError::Connect
        } else if source_chain(err)
            .filter_map(|e| e.downcast_ref::<hyper::Error>())
            .any(|e| e.is_user() || e.is_body_write_aborted())
        {
            RackError::Send
        } else if source_chain(err)
            .filter_map(|e| e.downcast_ref::<hyper::Error>())
            .any(hyper::Error::is_parse)
        {
            RackError::Malformed
        } else {
            RackError::Closed
        }
    }
}

fn source_chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

type Tls = hyper_rustls::HttpsConnector<HttpConnector>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connecting to the rack — TCP and the TLS handshake together — bounded by one deadline: a
/// rack that accepts connections but never completes a handshake must not hold a request
/// until the much longer read timeout.
#[derive(Clone)]
struct Connector {
    inner: Tls,
    limit: std::time::Duration,
    /// Longest the rack may leave a write of ours waiting ([`WriteBound`]).
    write_limit: std::time::Duration,
}

impl tower::Service<http::Uri> for Connector {
    type Response = WriteBound<<Tls as tower::Service<http::Uri>>::Response>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let (limit, write_limit) = (self.limit, self.write_limit);
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(connected) => connected.map(|io| WriteBound::new(io, write_limit)),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting to the rack timed out",
                )
                .into()),
            }
        })
    }
}

/// The rack, as the gateway reaches it.
#[derive(Clone)]
pub struct Upstream {
    // Shared, not owned: the state holding this is cloned for every request.
    base: Arc<str>,
    ws_base: Arc<str>,
    auth: HeaderValue,
    scrub: Arc<[String]>,
    /// Masks the rack's credentials in response bodies and WebSocket messages.
    pub scrubber: Arc<Scrubber>,
    /// Pooled HTTP/1.1 client (follows no redirects, reads no proxy settings).
    http: Client<Connector, Body>,
    /// TLS configuration for WebSocket connections.
    pub tls: Arc<rustls::ClientConfig>,
    /// Bound for connecting (and for the WebSocket handshake, with `read_timeout`).
    pub connect_timeout: std::time::Duration,
    /// Bound for waiting on the rack's answer.
    pub read_timeout: std::time::Duration,
    /// When the rack's refusal of `RACK_TOKEN` was last logged (unix ms).
    refusal_logged: Arc<std::sync::atomic::AtomicI64>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The forms of the rack token that are masked wherever they would leave the gateway: the
/// token, and the Basic credentials made of it — without their `=` padding, which a copy may
/// lack (a padded copy then keeps only the `=`).
fn rack_credentials(token: &str) -> Vec<String> {
    let basic = STANDARD.encode(format!("convox:{token}"));
    vec![token.to_string(), basic.trim_end_matches('=').to_string()]
}

/// The rack token's forms masked in audit events: those masked in answers (see
/// `rack_credentials`), and the token in lower case, as e-mail addresses are recorded.
pub fn audit_scrubber(token: &str) -> Arc<Scrubber> {
    let mut forms = rack_credentials(token);
    let lower = token.to_lowercase();
    if lower != token {
        forms.push(lower);
    }
    Arc::new(Scrubber::new(&forms))
}

impl Upstream {
    /// Builds the client from configuration.
    pub fn new(config: &Config) -> Result<Upstream, UpstreamError> {
        let tls = Arc::new(tls_config(&config.rack_tls)?);
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let connector = Connector {
            inner: hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config((*tls).clone())
                .https_or_http()
                .enable_http1()
                .wrap_connector(tcp),
            limit: config.rack_connect_timeout,
            // Later than `send`'s own bound on a rack that stops taking a body before it
            // answers, so that case stays a 504 from there; this one catches the rack that
            // answered first.
            write_limit: config.rack_read_timeout + Duration::from_secs(1),
        };
        // Idle connections are dropped well before the idle timeouts of what usually stands in
        // front of a rack (60 s for an AWS load balancer, 75 s for nginx): reusing one as the
        // other side closes it makes a request fail without an answer.
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .build(connector);
        let base = config.rack_host.as_str().trim_end_matches('/').to_string();
        let mut ws = config.rack_host.clone();
        let scheme = if ws.scheme() == "https" { "wss" } else { "ws" };
        // Url refuses some scheme changes (special → special is allowed here).
        if ws.set_scheme(scheme).is_err() {
            ws = Url::parse(&base.replacen("http", "ws", 1)).unwrap_or(ws);
        }
        let ws_base = ws.as_str().trim_end_matches('/').to_string();
        let token = config.rack_token.expose();
        let basic = STANDARD.encode(format!("convox:{token}"));
        let mut auth = HeaderValue::from_str(&format!("Basic {basic}"))
            .map_err(|_| UpstreamError::BadToken)?;
        auth.set_sensitive(true);
        let scrub = rack_credentials(token);
        Ok(Upstream {
            base: base.into(),
            ws_base: ws_base.into(),
            auth,
            scrubber: Arc::new(Scrubber::new(&scrub)),
            scrub: Arc::from(scrub),
            http,
            tls,
            connect_timeout: config.rack_connect_timeout,
            read_timeout: config.rack_read_timeout,
            refusal_logged: Arc::default(),
        })
    }

    /// Says on stderr, at most once a minute, that the rack refused the gateway's credentials
    /// (`how`: with a 401, or inside a WebSocket). The callers' own credentials never reach the
    /// rack, so it refused the gateway's `RACK_TOKEN` (rotated on the rack, or mistyped):
    /// callers get [`crate::error::ApiError::RackRefusedGateway`] (or its message in their
    /// WebSocket) rather than a 401 that says to sign in again.
    pub fn note_token_refused(&self, how: &str) {
        use std::sync::atomic::Ordering;
        let now = crate::store::now_ms();
        let last = self.refusal_logged.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60_000
            && self
                .refusal_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(
                rack = %self.base,
                "the rack refused the gateway's credentials ({how}): RACK_TOKEN is wrong or was \
                 rotated on the rack; set the rack's current token and restart the gateway \
                 (callers are told meanwhile that it is the gateway's credentials, not theirs: \
                 502 rack_refused_gateway, or that message in their WebSocket)"
            );
        }
    }

    /// The rack URL for a normalised path and (raw) query.
    pub fn url(&self, path: &str, query: Option<&str>) -> String {
        join(&self.base, path, query)
    }

    /// The rack WebSocket URL for a normalised path and (raw) query.
    pub fn ws_url(&self, path: &str, query: Option<&str>) -> String {
        join(&self.ws_base, path, query)
    }

    /// Asks the rack (`GET /system`) whether it takes the gateway's own credentials, waiting
    /// at most `wait`; the body is not read.
    pub async fn check_token(&self, wait: Duration) -> TokenCheck {
        let Ok(uri) = http::Uri::try_from(self.url("/system", None)) else {
            return TokenCheck::Failed(RackError::Connect);
        };
        let mut request = http::Request::new(Body::empty());
        *request.uri_mut() = uri;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, self.authorization());
        match self.send(request, wait, None).await {
            Ok(response) if response.status().is_success() => TokenCheck::Accepted,
            Ok(response) if response.status() == http::StatusCode::UNAUTHORIZED => {
                TokenCheck::Refused
            }
            Ok(response) => TokenCheck::Answered(response.status().as_u16()),
            Err(e) => TokenCheck::Failed(e),
        }
    }

    /// Sends `request` (the rack's credentials already added) and waits at most `wait` for
    /// the response head: reading the body is bounded by the caller. With a streamed request
    /// body, `upload` says how it moves, and `wait` counts only time the rack holds things up:
    /// an upload that keeps flowing may take as long as it takes (the client's own silence is
    /// bounded by `CLIENT_TIMEOUT_SECS`), while a rack that stops taking the body, or gives no
    /// answer `wait` after its end, times out.
    pub async fn send(
        &self,
        request: http::Request<Body>,
        wait: Duration,
        upload: Option<&UploadProgress>,
    ) -> Result<http::Response<Incoming>, RackError> {
        let answer = self.http.request(request);
        let result = match upload {
            None => tokio::time::timeout(wait, answer)
                .await
                .map_err(|_| RackError::Timeout)?,
            Some(upload) => {
                tokio::pin!(answer);
                loop {
                    let deadline = match upload.rack_idle_since() {
                        Some(since) => since + wait,
                        // Waiting for the client: its own timeout applies; look again later.
                        None => tokio::time::Instant::now() + wait,
                    };
                    tokio::select! {
                        result = &mut answer => break result,
                        () = tokio::time::sleep_until(deadline) => {
                            if upload
                                .rack_idle_since()
                                .is_some_and(|since| since + wait <= tokio::time::Instant::now())
                            {
                                return Err(RackError::Timeout);
                            }
                        }
                    }
                }
            }
        };
        result.map_err(|err| {
            tracing::debug!(error = ?err, "rack request failed");
            RackError::from_client(&err)
        })
    }

    /// `GET path` on the rack as the gateway itself, for a fact a decision rests on (which
    /// build a release was made from): the JSON answer, at most `limit` bytes of it, all
    /// within `wait`.
    pub async fn get_json(
        &self,
        path: &str,
        wait: Duration,
        limit: usize,
    ) -> Result<serde_json::Value, RackLookup> {
        let uri = http::Uri::try_from(self.url(path, None)).map_err(|_| RackLookup::BadPath)?;
        let mut request = http::Request::new(Body::empty());
        *request.uri_mut() = uri;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, self.authorization());
        let read = async {
            let response = self.send(request, wait, None).await?;
            let status = response.status();
            if !status.is_success() {
                return Err(RackLookup::Status(status.as_u16()));
            }
            let mut body = response.into_body();
            let (bytes, _held) = super::held::read(&mut body, limit, Some(&super::held::SHARED))
                .await
                .map_err(|e| match e {
                    super::held::NotRead::Busy(busy) => RackLookup::Busy(busy),
                    _ => RackLookup::Unreadable,
                })?;
            // Counted while they are parsed; what is made of them is the caller's.
            serde_json::from_slice(&bytes).map_err(|_| RackLookup::Unreadable)
        };
        tokio::time::timeout(wait, read)
            .await
            .map_err(|_| RackLookup::Rack(RackError::Timeout))?
    }

    /// The `Authorization` value carrying the rack token.
    pub fn authorization(&self) -> HeaderValue {
        self.auth.clone()
    }

    /// True when `value` contains the rack token in any form we send it, in any letter case
    /// (a header name comes lower-cased).
    pub fn leaks_token(&self, value: &[u8]) -> bool {
        self.scrub
            .iter()
            .any(|s| contains_ignoring_case(value, s.as_bytes()))
    }
}

/// Whether `needle` (not empty) occurs in `hay`, ASCII letter case aside. Every header of
/// every answer is searched: only the places that begin like `needle` are compared.
fn contains_ignoring_case(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return false;
    };
    let Some(last_start) = hay.len().checked_sub(needle.len()) else {
        return false;
    };
    let starts = &hay[..=last_start];
    memchr::memchr2_iter(
        first.to_ascii_lowercase(),
        first.to_ascii_uppercase(),
        starts,
    )
    .any(|i| hay[i + 1..i + needle.len()].eq_ignore_ascii_case(rest))
}

/// How a streamed request body is moving, recorded by the body as it goes: the time it last
/// handed a chunk on (or ended), and whether it is waiting for the client. Shared between the
/// body (polled by hyper) and [`Upstream::send`]; both facts live in one atomic word, so a
/// reader never sees one updated without the other.
#[derive(Debug)]
pub struct UploadProgress {
    started: tokio::time::Instant,
    /// Microseconds from `started` to the last move, with [`WAITING_ON_CLIENT`] set while the
    /// body waits for the client.
    state: AtomicU64,
}

/// The flag bit of [`UploadProgress::state`].
const WAITING_ON_CLIENT: u64 = 1 << 63;

impl UploadProgress {
    /// A body that has not moved yet: the rack's wait starts now.
    pub fn new() -> UploadProgress {
        UploadProgress {
            started: tokio::time::Instant::now(),
            state: AtomicU64::new(0),
        }
    }

    /// A chunk was handed on, or the body ended.
    pub fn moved(&self) {
        let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.state
            .store(micros & !WAITING_ON_CLIENT, Ordering::Release);
    }

    /// The body is waiting for the client to send more.
    pub fn waiting_on_client(&self) {
        self.state.fetch_or(WAITING_ON_CLIENT, Ordering::AcqRel);
    }

    /// Since when the rack has been the one holding things up; `None` while the body waits
    /// for the client.
    fn rack_idle_since(&self) -> Option<tokio::time::Instant> {
        let state = self.state.load(Ordering::Acquire);
        (state & WAITING_ON_CLIENT == 0).then(|| self.started + Duration::from_micros(state))
    }
}

impl Default for UploadProgress {
    fn default() -> Self {
        UploadProgress::new()
    }
}

fn join(base: &str, path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) if !q.is_empty() => format!("{base}{path}?{q}"),
        _ => format!("{base}{path}"),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(mode: &RackTls) -> Result<rustls::ClientConfig, UpstreamError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let config = match mode {
        RackTls::WebPki => {
            let roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        RackTls::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| UpstreamError::CaFile(format!("{}: {e}", path.display())))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| UpstreamError::CaFile(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| UpstreamError::CaFile(format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(UpstreamError::CaFile(format!(
                    "{}: no certificates found",
                    path.display()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        RackTls::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCert {
                pin: *pin,
                provider: provider(),
            }))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// Accepts exactly one certificate, by the SHA-256 of its DER bytes. Racks often run with a
/// self-signed certificate; pinning it is the safe alternative to turning verification off.
#[derive(Debug)]
struct PinnedCert {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = Sha256::digest(end_entity.as_ref());
        if secret_eq(digest.as_slice(), &self.pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "rack certificate does not match RACK_TLS_PIN_SHA256".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by review: e-mail addresses are recorded lower-cased, past a search for the token
    /// as it is.
    #[test]
    fn the_audit_also_masks_the_token_in_lower_case() {
        let masks = audit_scrubber("AbCdEfGh12345678");
        assert!(masks.contains(b"abcdefgh12345678@example.com"));
        assert!(masks.contains(b"AbCdEfGh12345678"));
        let basic = STANDARD.encode("convox:AbCdEfGh12345678");
        assert!(masks.contains(basic.trim_end_matches('=').as_bytes()));
    }

    fn upstream(token: &str) -> Upstream {
        let vars = [
            ("RACK_HOST", "http://127.0.0.1:1"),
            ("RACK_TOKEN", token),
            (
                "AUDIT_HMAC_KEY",
                "unit-test-audit-key-0123456789abcdef0123456789",
            ),
        ];
        let lookup = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let config = Config::from_lookup(lookup).unwrap_or_else(|e| panic!("{e}"));
        Upstream::new(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_form_of_the_token_is_found() {
        // `convox:` + 10 characters: Basic with one `=` of padding.
        let rack = upstream("Tok3n-ABCD");
        let basic = STANDARD.encode("convox:Tok3n-ABCD");
        assert!(basic.ends_with('='));
        for copy in [
            "Tok3n-ABCD".to_string(),
            "tok3n-abcd".to_string(),
            basic.clone(),
            basic.trim_end_matches('=').to_string(),
            format!("x-{}: 1", "tok3n-abcd"),
        ] {
            assert!(rack.leaks_token(copy.as_bytes()), "{copy}");
        }
        assert!(!rack.leaks_token(b"Tok3n-ABC"));
        assert!(!rack.leaks_token(b""));
        assert!(rack.leaks_token(b"xxTOK3N-abcd"));
        assert!(!contains_ignoring_case(b"abc", b""));
        assert!(contains_ignoring_case(b"abc", b"ABC"));
        assert!(!contains_ignoring_case(b"ab", b"abc"));
        // In bodies, the unpadded form is masked: a padded copy keeps only its `=`.
        let mut scrub = rack.scrubber.stream();
        let mut out = scrub.push(format!("a {basic} b").as_bytes());
        out.extend(scrub.finish());
        let masked = "*".repeat(basic.len() - 1);
        assert_eq!(String::from_utf8_lossy(&out), format!("a {masked}= b"));
    }
}
