//! Credentials for the anchor bucket: the configured keys, or temporary ones from the
//! container credentials endpoint (an ECS task role, EKS Pod Identity), kept until five
//! minutes before they expire.

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

/// Where a bucket's requests get their credentials.
pub(super) enum CredentialSource {
    Static(Credentials),
    Container {
        url: url::Url,
        authorization: Option<ContainerAuthorization>,
        http: reqwest::Client,
        /// The credentials and when to fetch new ones.
        cached: Mutex<Option<(Credentials, SystemTime)>>,
    },
}

/// The endpoint's answer (the fields the AWS SDKs read).
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerAnswer {
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
            AnchorCredentials::Container { url, authorization } => CredentialSource::Container {
                url: url.clone(),
                authorization: authorization.clone(),
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
            },
        })
    }

    /// Credentials valid for the next request.
    pub(super) async fn get(&self) -> Result<Credentials, AnchorError> {
        match self {
            CredentialSource::Static(credentials) => Ok(credentials.clone()),
            CredentialSource::Container {
                url,
                authorization,
                http,
                cached,
            } => {
                // Held across the fetch: concurrent callers wait for one fetch.
                let mut cached = cached.lock().await;
                if let Some((credentials, renew_at)) = &*cached
                    && SystemTime::now() < *renew_at
                {
                    return Ok(credentials.clone());
                }
                let (credentials, renew_at) = fetch(http, url, authorization.as_ref()).await?;
                *cached = Some((credentials.clone(), renew_at));
                Ok(credentials)
            }
        }
    }
}

async fn fetch(
    http: &reqwest::Client,
    url: &url::Url,
    authorization: Option<&ContainerAuthorization>,
) -> Result<(Credentials, SystemTime), AnchorError> {
    let failed = |why: String| AnchorError::Credentials(why);
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
    let answer: ContainerAnswer = serde_json::from_slice(&body)
        .map_err(|_| failed("the credentials endpoint's answer is not credentials".into()))?;
    let renew_at = match &answer.expiration {
        Some(at) => humantime::parse_rfc3339_weak(at.trim_end_matches('Z'))
            .map_err(|_| failed("the credentials endpoint's Expiration is not a time".into()))?
            .checked_sub(RENEW_BEFORE)
            .unwrap_or(SystemTime::UNIX_EPOCH),
        None => SystemTime::now() + KEEP_WITHOUT_EXPIRY,
    };
    let credentials = match answer.token {
        Some(token) => {
            Credentials::new_with_token(answer.access_key_id, answer.secret_access_key, token)
        }
        None => Credentials::new(answer.access_key_id, answer.secret_access_key),
    };
    Ok((credentials, renew_at))
}
