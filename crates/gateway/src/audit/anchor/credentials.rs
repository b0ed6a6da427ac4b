//! Credentials for the anchor bucket: the configured keys, or temporary ones from the
//! container credentials endpoint (an ECS task role, EKS Pod Identity) or the EC2 instance
//! metadata service (an instance profile), kept until five minutes before they expire.

use std::time::{Duration, SystemTime};

use rusty_s3::Credentials;
use tokio::sync::Mutex;

use super::AnchorError;
use crate::config::{AnchorCredentials, ContainerAuthorization};

/// Temporary credentials are renewed this long before they expire.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// Kept this long when the endpoint names no expiry.
const KEEP_WITHOUT_EXPIRY: Duration = Duration::from_secs(900);
/// The most of the endpoint's answer read.
const MAX_ANSWER: usize = 16 * 1024;
/// How long an IMDSv2 session token asks to live (it is used for one fetch).
const IMDS_TOKEN_TTL_SECS: &str = "60";

/// Where a bucket's requests get their credentials.
pub(super) enum CredentialSource {
    Static(Credentials),
    /// Temporary credentials, fetched when the last ones are about to expire.
    Fetched {
        from: Endpoint,
        http: reqwest::Client,
        /// The credentials and when to fetch new ones.
        cached: Mutex<Option<(Credentials, SystemTime)>>,
    },
}

/// Where temporary credentials come from.
pub(super) enum Endpoint {
    Container {
        url: url::Url,
        authorization: Option<ContainerAuthorization>,
    },
    Instance {
        base: url::Url,
    },
}

/// The endpoint's answer (the fields the AWS SDKs read; the instance metadata service adds
/// `Code`).
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialsAnswer {
    code: Option<String>,
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
    expiration: Option<String>,
}

impl CredentialSource {
    pub(super) fn new(config: &AnchorCredentials) -> Result<CredentialSource, AnchorError> {
        Ok(match config {
            AnchorCredentials::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                let key = access_key_id.clone();
                let secret = secret_access_key.expose().to_string();
                CredentialSource::Static(match session_token {
                    Some(token) => {
                        Credentials::new_with_token(key, secret, token.expose().to_string())
                    }
                    None => Credentials::new(key, secret),
                })
            }
            AnchorCredentials::Container { url, authorization } => {
                CredentialSource::fetched(Endpoint::Container {
                    url: url.clone(),
                    authorization: authorization.clone(),
                })?
            }
            AnchorCredentials::Instance { endpoint } => {
                CredentialSource::fetched(Endpoint::Instance {
                    base: endpoint.clone(),
                })?
            }
        })
    }

    fn fetched(from: Endpoint) -> Result<CredentialSource, AnchorError> {
        Ok(CredentialSource::Fetched {
            from,
            // Never through a proxy: plain http is allowed only because the endpoint is on
            // this host or the link-local network, where nobody in between can read it.
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| AnchorError::Setup(e.without_url().to_string()))?,
            cached: Mutex::new(None),
        })
    }

    /// Credentials valid for the next request.
    pub(super) async fn get(&self) -> Result<Credentials, AnchorError> {
        match self {
            CredentialSource::Static(credentials) => Ok(credentials.clone()),
            CredentialSource::Fetched { from, http, cached } => {
                // Held across the fetch: concurrent callers wait for one fetch.
                let mut cached = cached.lock().await;
                if let Some((credentials, renew_at)) = &*cached
                    && SystemTime::now() < *renew_at
                {
                    return Ok(credentials.clone());
                }
                let answer = match from {
                    Endpoint::Container { url, authorization } => {
                        from_container(http, url, authorization.as_ref()).await?
                    }
                    Endpoint::Instance { base } => from_instance(http, base).await?,
                };
                let (credentials, renew_at) = answer.credentials()?;
                *cached = Some((credentials.clone(), renew_at));
                Ok(credentials)
            }
        }
    }
}

async fn from_container(
    http: &reqwest::Client,
    url: &url::Url,
    authorization: Option<&ContainerAuthorization>,
) -> Result<CredentialsAnswer, AnchorError> {
    let failed = AnchorError::Credentials;
    let mut request = http.get(url.clone());
    match authorization {
        None => {}
        Some(ContainerAuthorization::Token(token)) => {
            request = request.header(reqwest::header::AUTHORIZATION, token.expose());
        }
        Some(ContainerAuthorization::File(path)) => {
            let token = tokio::fs::read_to_string(path).await.map_err(|e| {
                failed(format!(
                    "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {}: {e}",
                    path.display()
                ))
            })?;
            request = request.header(reqwest::header::AUTHORIZATION, token.trim());
        }
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| failed(format!("the credentials endpoint: {}", e.without_url())))?;
    let status = response.status();
    let body = super::bucket::read_capped(&mut response, MAX_ANSWER)
        .await
        .map_err(|e| failed(format!("the credentials endpoint: {}", e.without_url())))?
        .ok_or_else(|| failed("the credentials endpoint's answer is too long".into()))?;
    if !status.is_success() {
        // The body is not repeated: it could hold anything.
        return Err(failed(format!(
            "the credentials endpoint answered {}",
            status.as_u16()
        )));
    }
    serde_json::from_slice(&body)
        .map_err(|_| failed("the credentials endpoint's answer is not credentials".into()))
}

/// IMDSv2 only: a session token first (a `PUT`, which a request forged through a careless
/// proxy or a server-side request forgery cannot send), then the instance profile's role name,
/// then its credentials. IMDSv1's plain `GET`s are not tried.
async fn from_instance(
    http: &reqwest::Client,
    base: &url::Url,
) -> Result<CredentialsAnswer, AnchorError> {
    let failed =
        |why: String| AnchorError::Credentials(format!("the instance metadata service {why}"));
    let url = |path: &str| {
        base.join(path)
            .map_err(|_| failed(format!("address cannot take {path}")))
    };
    let token = text(
        http.put(url("latest/api/token")?)
            .header("x-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL_SECS),
        "session token",
        None,
    )
    .await?;
    const ROLES: &str = "latest/meta-data/iam/security-credentials/";
    let roles = text(
        http.get(url(ROLES)?)
            .header("x-aws-ec2-metadata-token", token.trim()),
        "instance profile",
        Some("no instance profile (IAM role) is attached to this instance"),
    )
    .await?;
    let role = roles
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    // IAM role names: 1 to 64 of these characters. Anything else would change the path.
    if role.is_empty()
        || role.len() > 64
        || !role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
    {
        return Err(failed(
            "names no IAM role: attach an instance profile to this instance".into(),
        ));
    }
    let body = text(
        http.get(url(&format!("{ROLES}{role}"))?)
            .header("x-aws-ec2-metadata-token", token.trim()),
        "role's credentials",
        None,
    )
    .await?;
    let answer: CredentialsAnswer = serde_json::from_str(&body)
        .map_err(|_| failed("answered something that is not credentials".into()))?;
    match answer.code.as_deref() {
        None | Some("Success") => Ok(answer),
        Some(code) => Err(failed(format!(
            "answered {} for the role's credentials",
            super::bucket::printable(code)
        ))),
    }
}

/// The text of an instance metadata answer (`what` names it in errors; `not_found` says what
/// a 404 means, when it means more than that).
async fn text(
    request: reqwest::RequestBuilder,
    what: &str,
    not_found: Option<&str>,
) -> Result<String, AnchorError> {
    let failed = |why: String| {
        AnchorError::Credentials(format!("the instance metadata service, {what}: {why}"))
    };
    let mut response = request
        .send()
        .await
        .map_err(|e| failed(e.without_url().to_string()))?;
    let status = response.status();
    let body = super::bucket::read_capped(&mut response, MAX_ANSWER)
        .await
        .map_err(|e| failed(e.without_url().to_string()))?
        .ok_or_else(|| failed("the answer is too long".into()))?;
    if let Some(meaning) = not_found.filter(|_| status == reqwest::StatusCode::NOT_FOUND) {
        return Err(failed(meaning.into()));
    }
    if !status.is_success() {
        // The body is not repeated: it could hold anything.
        return Err(failed(format!("answered {}", status.as_u16())));
    }
    String::from_utf8(body).map_err(|_| failed("the answer is not text".into()))
}

impl CredentialsAnswer {
    /// The credentials, and when to fetch new ones.
    fn credentials(self) -> Result<(Credentials, SystemTime), AnchorError> {
        let renew_at = match &self.expiration {
            Some(at) => humantime::parse_rfc3339_weak(at.trim_end_matches('Z'))
                .map_err(|_| {
                    AnchorError::Credentials("the credentials' Expiration is not a time".into())
                })?
                .checked_sub(RENEW_BEFORE)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            None => SystemTime::now() + KEEP_WITHOUT_EXPIRY,
        };
        let credentials = match self.token {
            Some(token) => {
                Credentials::new_with_token(self.access_key_id, self.secret_access_key, token)
            }
            None => Credentials::new(self.access_key_id, self.secret_access_key),
        };
        Ok((credentials, renew_at))
    }
}
