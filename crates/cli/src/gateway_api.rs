//! The gateway's own endpoints the CLI uses: who am I (`/api/v1/info`), the CLI sign-in
//! (`/api/v1/auth/cli/start` and `/poll`), sign-out (`/api/v1/auth/logout`) and the audit
//! trail (`/api/v1/audit/events`).

use std::time::Duration;

use convox_api::client::{ClientError, error_from_response};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Largest answer from the gateway's own endpoints (a few fields each).
const GATEWAY_ANSWER_LIMIT: usize = 1 << 20;

/// Per-request time limit for these small calls.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `GET /api/v1/info`: the caller.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Info {
    /// `api_token` or `session`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The API token's name.
    #[serde(default)]
    pub token_name: Option<String>,
    /// The person.
    #[serde(default)]
    pub email: Option<String>,
    /// The role.
    #[serde(default)]
    pub role: Option<String>,
    /// Granted permissions.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// When the session ends (unix ms), for sessions.
    #[serde(default)]
    pub session_expires_at: Option<i64>,
    /// When the API token expires (unix ms), for tokens that do.
    #[serde(default)]
    pub token_expires_at: Option<i64>,
}

/// `POST /api/v1/auth/cli/start`'s answer.
#[derive(Debug, Clone, Deserialize)]
pub struct LoginStart {
    /// The attempt's id (secret-ish: it is in the browser URL).
    pub login_id: String,
    /// Where the person signs in.
    pub browser_url: String,
    /// The code the browser's confirmation page shows (older gateways send none).
    #[serde(default)]
    pub code: Option<String>,
    /// How often to poll.
    #[serde(default = "one")]
    pub poll_interval_secs: u64,
    /// How long the attempt lives.
    #[serde(default = "ten_minutes")]
    pub expires_in_secs: u64,
}

fn one() -> u64 {
    1
}

fn ten_minutes() -> u64 {
    600
}

/// A finished CLI sign-in.
#[derive(Debug, Clone, Deserialize)]
pub struct Session {
    /// The session token (`rgs_…`).
    pub session_token: String,
    /// The person.
    #[serde(default)]
    pub email: Option<String>,
    /// Their role.
    #[serde(default)]
    pub role: Option<String>,
    /// When the session ends (unix ms).
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// Where a CLI sign-in stands.
#[derive(Debug)]
pub enum Poll {
    /// The browser has not finished.
    Pending,
    /// Signed in.
    Complete(Session),
    /// Too late, or already collected.
    Expired(String),
    /// The gateway refused the sign-in.
    Refused(String),
}

/// The gateway at one base URL.
#[derive(Debug, Clone)]
pub struct GatewayApi {
    http: reqwest::Client,
    base: String,
}

impl GatewayApi {
    /// The gateway at `base` (no trailing slash).
    pub fn new(http: reqwest::Client, base: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(
        &self,
        url: &str,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        rb.timeout(TIMEOUT)
            .send()
            .await
            .map_err(|e| ClientError::from_reqwest(url, &e))
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        url: &str,
        response: reqwest::Response,
    ) -> Result<T, ClientError> {
        let bytes = convox_api::client::read_limited(url, response, GATEWAY_ANSWER_LIMIT).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: url.to_string(),
            reason: format!("{e} (is this a rack-gateway?)"),
        })
    }

    /// `GET /api/v1/info` with `token`.
    pub async fn info(&self, token: &str) -> Result<Info, ClientError> {
        let url = self.url("/api/v1/info");
        let response = self
            .send(&url, self.http.get(&url).bearer_auth(token))
            .await?;
        if !response.status().is_success() {
            return Err(gateway_error(&url, response).await);
        }
        Self::json(&url, response).await
    }

    /// `POST /api/v1/auth/cli/start` with the PKCE challenge.
    pub async fn start_login(
        &self,
        challenge: &str,
        rack: &str,
        hostname: &str,
    ) -> Result<LoginStart, ClientError> {
        let url = self.url("/api/v1/auth/cli/start");
        let body = json!({
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "rack": rack,
            "hostname": hostname,
        });
        let response = self.send(&url, self.http.post(&url).json(&body)).await?;
        if !response.status().is_success() {
            return Err(gateway_error(&url, response).await);
        }
        Self::json(&url, response).await
    }

    /// `POST /api/v1/auth/cli/poll` with the verifier.
    pub async fn poll_login(&self, login_id: &str, verifier: &str) -> Result<Poll, ClientError> {
        let url = self.url("/api/v1/auth/cli/poll");
        let body = json!({ "login_id": login_id, "code_verifier": verifier });
        let response = self.send(&url, self.http.post(&url).json(&body)).await?;
        let status = response.status().as_u16();
        match status {
            200 => Ok(Poll::Complete(Self::json(&url, response).await?)),
            202 => Ok(Poll::Pending),
            410 | 403 => {
                let body: serde_json::Value = Self::json(&url, response).await.unwrap_or_default();
                let message = body["error"].as_str().unwrap_or("").to_string();
                if status == 410 {
                    Ok(Poll::Expired(message))
                } else {
                    Ok(Poll::Refused(message))
                }
            }
            _ => Err(error_from_response(response).await),
        }
    }

    /// `POST /api/v1/auth/logout`: ends the session `token` on the gateway.
    pub async fn logout(&self, token: &str) -> Result<(), ClientError> {
        let url = self.url("/api/v1/auth/logout");
        let response = self
            .send(&url, self.http.post(&url).bearer_auth(token))
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(error_from_response(response).await)
        }
    }
}

/// Largest listing: a page of up to 1 000 audit events (a few hundred bytes to a few KiB
/// each), or every token or user.
const AUDIT_PAGE_LIMIT: usize = 32 << 20;

/// `GET /api/v1/audit/events`: a page of the trail, newest first.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditPage {
    /// The events, as the gateway's stdout prints them.
    #[serde(default)]
    pub events: Vec<serde_json::Value>,
    /// Where older events go on from (`before=`), when there may be more.
    #[serde(default)]
    pub next_before: Option<i64>,
}

impl GatewayApi {
    /// `GET url` with `token`: a listing, read up to [`AUDIT_PAGE_LIMIT`].
    async fn listing<T: for<'de> Deserialize<'de>>(
        &self,
        token: &str,
        url: String,
    ) -> Result<T, ClientError> {
        let response = self
            .send(&url, self.http.get(&url).bearer_auth(token))
            .await?;
        if !response.status().is_success() {
            return Err(gateway_error(&url, response).await);
        }
        let bytes = convox_api::client::read_limited(&url, response, AUDIT_PAGE_LIMIT).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url: url.clone(),
            reason: format!("{e} (is this a rack-gateway?)"),
        })
    }

    /// `GET /api/v1/audit/events` with `token` and the `query` pairs.
    pub async fn audit_events(
        &self,
        token: &str,
        query: &[(&str, String)],
    ) -> Result<AuditPage, ClientError> {
        let mut url = self.url("/api/v1/audit/events");
        if !query.is_empty() {
            let encoded = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())))
                .finish();
            url = format!("{url}?{encoded}");
        }
        self.listing(token, url).await
    }
}

/// An API token as `GET /api/v1/tokens` lists it (never its secret).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApiToken {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Role, or `None` with permissions.
    #[serde(default)]
    pub role: Option<String>,
    /// Permissions instead of a role.
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    /// The user it acts for.
    #[serde(default)]
    pub owner_user_id: Option<i64>,
    /// Who made it.
    #[serde(default)]
    pub created_by: String,
    /// Unix ms.
    #[serde(default)]
    pub created_at: i64,
    /// Unix ms.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Unix ms.
    #[serde(default)]
    pub last_used_at: Option<i64>,
    /// Unix ms.
    #[serde(default)]
    pub revoked_at: Option<i64>,
}

impl GatewayApi {
    /// `GET /api/v1/tokens` with `token`.
    pub async fn tokens(&self, token: &str) -> Result<Vec<ApiToken>, ClientError> {
        self.listing(token, self.url("/api/v1/tokens")).await
    }

    /// `DELETE /api/v1/tokens/{id_or_name}` with `token`: the revoked token.
    /// Mints a token (`POST /api/v1/tokens`).
    pub async fn create_token(
        &self,
        token: &str,
        new: &NewToken,
    ) -> Result<CreatedToken, ClientError> {
        let url = self.url("/api/v1/tokens");
        let request = self.http.post(&url).bearer_auth(token).json(new);
        let response = self.send(&url, request).await?;
        if !response.status().is_success() {
            return Err(gateway_error(&url, response).await);
        }
        Self::json(&url, response).await
    }

    /// Revokes a token by id or name.
    pub async fn revoke_token(
        &self,
        token: &str,
        id_or_name: &str,
    ) -> Result<ApiToken, ClientError> {
        let url = self.url(&format!("/api/v1/tokens/{}", segment(id_or_name)?));
        let request = self.http.delete(&url);
        self.change(&url, request, token).await
    }

    /// Sends a change about one resource (`request` to `url`) with `token`: the resource as
    /// the gateway answers with it, or its refusal as it said it.
    async fn change<T: for<'de> Deserialize<'de>>(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
        token: &str,
    ) -> Result<T, ClientError> {
        let response = self.send(url, request.bearer_auth(token)).await?;
        if !response.status().is_success() {
            return Err(resource_error(url, response).await);
        }
        Self::json(url, response).await
    }
}

/// What `POST /api/v1/tokens` takes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NewToken {
    /// Name.
    pub name: String,
    /// A built-in role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Explicit permissions instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    /// Life, e.g. `90d`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
    /// The user it acts for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// A code from the authenticator app, given with the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// A minted token and its secret, shown once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    /// The token as listed.
    pub token: ApiToken,
    /// Its secret.
    pub secret: String,
}

/// The gateway's answer to a code given with [`GatewayApi::verify_mfa`].
#[derive(Debug, Clone, Deserialize)]
pub struct Verified {
    /// For how long privileged changes are allowed now.
    #[serde(default)]
    pub valid_for_secs: u64,
    /// `totp` or `backup_code`.
    #[serde(default)]
    pub factor: String,
}

/// A security-key confirmation just asked for (`POST /api/v1/auth/mfa/key/start`).
#[derive(Debug, Clone, Deserialize)]
pub struct KeyStart {
    /// Its id, to poll with.
    pub id: String,
    /// Where the person confirms.
    pub browser_url: String,
    /// The code the page shows too.
    pub code: String,
    /// How often to poll.
    #[serde(default = "one")]
    pub poll_interval_secs: u64,
    /// How long it waits.
    #[serde(default = "five_minutes")]
    pub expires_in_secs: u64,
}

fn five_minutes() -> u64 {
    300
}

/// Where a security-key confirmation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPoll {
    /// Waiting for the key.
    Pending,
    /// Confirmed: the proof to give where a code goes (once).
    Confirmed(String),
    /// Over (expired, or collected already); the gateway's words.
    Expired(String),
}

impl GatewayApi {
    /// The gateway's base URL (no trailing slash).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `POST /api/v1/auth/mfa/key/start` with session `token`.
    pub async fn start_key_confirmation(&self, token: &str) -> Result<KeyStart, ClientError> {
        let url = self.url("/api/v1/auth/mfa/key/start");
        let request = self.http.post(&url).bearer_auth(token).json(&json!({}));
        let response = self.send(&url, request).await?;
        if !response.status().is_success() {
            return Err(gateway_error(&url, response).await);
        }
        Self::json(&url, response).await
    }

    /// `POST /api/v1/auth/mfa/key/poll` with session `token` for confirmation `id`.
    pub async fn poll_key_confirmation(
        &self,
        token: &str,
        id: &str,
    ) -> Result<KeyPoll, ClientError> {
        let url = self.url("/api/v1/auth/mfa/key/poll");
        let request = self
            .http
            .post(&url)
            .bearer_auth(token)
            .json(&json!({ "id": id }));
        let response = self.send(&url, request).await?;
        match response.status().as_u16() {
            202 => Ok(KeyPoll::Pending),
            200 => {
                let body: serde_json::Value = Self::json(&url, response).await?;
                match body["proof"].as_str() {
                    Some(proof) => Ok(KeyPoll::Confirmed(proof.to_string())),
                    None => Err(ClientError::Decode {
                        url,
                        reason: "a confirmation without its proof".into(),
                    }),
                }
            }
            410 => {
                let body: serde_json::Value = Self::json(&url, response).await.unwrap_or_default();
                let message = body["error"].as_str().unwrap_or("").to_string();
                Ok(KeyPoll::Expired(message))
            }
            _ => Err(gateway_error(&url, response).await),
        }
    }

    /// `POST /api/v1/auth/mfa/verify` with session `token` and `code`.
    pub async fn verify_mfa(&self, token: &str, code: &str) -> Result<Verified, ClientError> {
        let url = self.url("/api/v1/auth/mfa/verify");
        let request = self
            .http
            .post(&url)
            .bearer_auth(token)
            .json(&json!({ "code": code }));
        let response = self.send(&url, request).await?;
        if !response.status().is_success() {
            return Err(gateway_error(&url, response).await);
        }
        Self::json(&url, response).await
    }
}

/// A person as `GET /api/v1/users` lists them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub id: i64,
    /// E-mail (their identity).
    pub email: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Role.
    #[serde(default)]
    pub role: String,
    /// Locked out.
    #[serde(default)]
    pub locked: bool,
    /// Unix ms.
    #[serde(default)]
    pub created_at: i64,
    /// Unix ms.
    #[serde(default)]
    pub last_seen_at: Option<i64>,
    /// An authenticator app guards their sign-ins (`None` from a gateway that does not say).
    #[serde(default)]
    pub mfa: Option<bool>,
    /// Security keys and passkeys beside the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_keys: Option<i64>,
    /// YubiKeys beside the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yubikeys: Option<i64>,
    /// Browsers trusted at a sign-in (skipping the code), still in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_browsers: Option<i64>,
}

/// A change to a user over `/api/v1/users`.
#[derive(Debug, Clone, Copy)]
pub enum UserChange<'a> {
    /// `POST /api/v1/users`.
    Add {
        /// E-mail.
        email: &'a str,
        /// Role.
        role: &'a str,
        /// Display name.
        name: &'a str,
    },
    /// `PUT /api/v1/users/{email}/role`.
    Role {
        /// E-mail.
        email: &'a str,
        /// New role.
        role: &'a str,
    },
    /// `POST /api/v1/users/{email}/lock` (`true`) or `…/unlock`.
    Locked {
        /// E-mail.
        email: &'a str,
        /// Lock or unlock.
        locked: bool,
    },
    /// `DELETE /api/v1/users/{email}/mfa`.
    ResetMfa {
        /// E-mail.
        email: &'a str,
    },
}

impl GatewayApi {
    /// `GET /api/v1/users` with `token`.
    pub async fn users(&self, token: &str) -> Result<Vec<User>, ClientError> {
        self.listing(token, self.url("/api/v1/users")).await
    }

    /// Makes `change` with `token` (and `code`, a code from the person's authenticator app
    /// given with it, in `X-MFA-Code`); the user as it now stands.
    pub async fn change_user(
        &self,
        token: &str,
        change: UserChange<'_>,
        code: Option<&str>,
    ) -> Result<User, ClientError> {
        let (url, request) = match change {
            UserChange::Add { email, role, name } => {
                let url = self.url("/api/v1/users");
                let body = json!({ "email": email, "role": role, "name": name });
                let rb = self.http.post(&url).json(&body);
                (url, rb)
            }
            UserChange::Role { email, role } => {
                let url = self.url(&format!("/api/v1/users/{}/role", segment(email)?));
                let rb = self.http.put(&url).json(&json!({ "role": role }));
                (url, rb)
            }
            UserChange::Locked { email, locked } => {
                let verb = if locked { "lock" } else { "unlock" };
                let url = self.url(&format!("/api/v1/users/{}/{verb}", segment(email)?));
                let rb = self.http.post(&url);
                (url, rb)
            }
            UserChange::ResetMfa { email } => {
                let url = self.url(&format!("/api/v1/users/{}/mfa", segment(email)?));
                let rb = self.http.delete(&url);
                (url, rb)
            }
        };
        let request = match code {
            Some(code) => request.header("x-mfa-code", code),
            None => request,
        };
        self.change(&url, request, token).await
    }
}

impl GatewayApi {
    /// `DELETE /api/v1/users/{email}/trusted-browsers`: how many were forgotten.
    pub async fn forget_browsers(&self, token: &str, email: &str) -> Result<u64, ClientError> {
        let url = self.url(&format!(
            "/api/v1/users/{}/trusted-browsers",
            segment(email)?
        ));
        let request = self.http.delete(&url);
        let answer: serde_json::Value = self.change(&url, request, token).await?;
        Ok(answer["forgotten"].as_u64().unwrap_or(0))
    }
}

/// A session as `GET /api/v1/sessions` lists it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SessionInfo {
    /// Its id (to revoke it by).
    pub id: i64,
    /// `web` or `cli`.
    #[serde(default)]
    pub channel: String,
    /// The browser's or CLI's User-Agent at sign-in.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// Where it signed in from.
    #[serde(default)]
    pub ip: Option<String>,
    /// When it signed in (unix ms).
    #[serde(default)]
    pub created_at: i64,
    /// Its last request (unix ms).
    #[serde(default)]
    pub last_seen_at: i64,
    /// When it ends at the latest (unix ms).
    #[serde(default)]
    pub expires_at: i64,
    /// The session asking.
    #[serde(default)]
    pub current: bool,
}

impl GatewayApi {
    /// `GET /api/v1/sessions[?email=]` with `token`.
    pub async fn sessions(
        &self,
        token: &str,
        email: Option<&str>,
    ) -> Result<Vec<SessionInfo>, ClientError> {
        let url = self.url(&format!("/api/v1/sessions{}", for_email(email)));
        self.listing(token, url).await
    }

    /// `DELETE /api/v1/sessions/{id}`: whether it was live.
    pub async fn revoke_session(&self, token: &str, id: i64) -> Result<bool, ClientError> {
        let url = self.url(&format!("/api/v1/sessions/{id}"));
        let request = self.http.delete(&url);
        let answer: serde_json::Value = self.change(&url, request, token).await?;
        Ok(answer["revoked"].as_bool().unwrap_or(false))
    }

    /// `POST /api/v1/sessions/revoke-all[?email=]`: how many were ended.
    pub async fn revoke_all_sessions(
        &self,
        token: &str,
        email: Option<&str>,
    ) -> Result<u64, ClientError> {
        let url = self.url(&format!("/api/v1/sessions/revoke-all{}", for_email(email)));
        let request = self.http.post(&url);
        let answer: serde_json::Value = self.change(&url, request, token).await?;
        Ok(answer["revoked"].as_u64().unwrap_or(0))
    }
}

/// `?email=…` (encoded) when an e-mail is given.
fn for_email(email: Option<&str>) -> String {
    match email {
        Some(email) => format!(
            "?email={}",
            percent_encoding::utf8_percent_encode(email, percent_encoding::NON_ALPHANUMERIC)
        ),
        None => String::new(),
    }
}

/// A section of `GET /api/v1/settings`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SettingsSection {
    /// Its heading.
    pub title: String,
    /// Its settings.
    pub settings: Vec<SettingInfo>,
}

/// One setting: its environment variable and its effective value.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SettingInfo {
    /// The variable.
    pub name: String,
    /// The value (a secret's only as `set (not shown)` or `not set`).
    pub value: String,
}

/// A role as `GET /api/v1/roles` lists it (and as a custom role's change answers).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoleInfo {
    /// Its name.
    pub name: String,
    /// Built into the gateway.
    #[serde(default)]
    pub built_in: bool,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// The permission patterns it grants.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Users who hold it (custom roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<i64>,
    /// Tokens not revoked that carry it (custom roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<i64>,
}

/// An app's rules as `/api/v1/app-rules` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRules {
    /// Env var names (patterns) whose values only `gateway:secrets:read` holders see.
    #[serde(default)]
    pub secret_env: Vec<String>,
    /// Env var names (patterns) only `gateway:protected-env:write` holders change.
    #[serde(default)]
    pub protected_env: Vec<String>,
    /// Commands an approved deploy may run.
    #[serde(default)]
    pub approved_commands: Vec<String>,
    /// Service (or `*`) → image pattern with `{commit}`.
    #[serde(default)]
    pub service_images: std::collections::BTreeMap<String, String>,
}

/// One app and its rules.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppRulesInfo {
    /// The app.
    pub app: String,
    /// Its rules.
    #[serde(default)]
    pub rules: AppRules,
    /// When they were set (unix ms).
    #[serde(default)]
    pub updated_at: Option<i64>,
    /// Who set them.
    #[serde(default)]
    pub updated_by: Option<String>,
}

/// A change to a custom role over `/api/v1/roles`.
#[derive(Debug, Clone, Copy)]
pub enum RoleChange<'a> {
    /// `POST /api/v1/roles`.
    Create {
        /// Name.
        name: &'a str,
        /// Permission patterns.
        permissions: &'a [String],
        /// Description.
        description: &'a str,
    },
    /// `PUT /api/v1/roles/{name}`.
    Update {
        /// Name.
        name: &'a str,
        /// The whole new list.
        permissions: &'a [String],
        /// A new description.
        description: Option<&'a str>,
    },
    /// `DELETE /api/v1/roles/{name}`.
    Delete {
        /// Name.
        name: &'a str,
    },
}

impl GatewayApi {
    /// `GET /api/v1/settings` with `token`: the gateway's effective settings, by section.
    pub async fn settings(&self, token: &str) -> Result<Vec<SettingsSection>, ClientError> {
        self.listing(token, self.url("/api/v1/settings")).await
    }

    /// `GET /api/v1/roles` with `token`.
    pub async fn roles(&self, token: &str) -> Result<Vec<RoleInfo>, ClientError> {
        self.listing(token, self.url("/api/v1/roles")).await
    }

    /// `GET /api/v1/app-rules`: every app that has rules.
    pub async fn all_app_rules(&self, token: &str) -> Result<Vec<AppRulesInfo>, ClientError> {
        self.listing(token, self.url("/api/v1/app-rules")).await
    }

    /// `GET /api/v1/app-rules/{app}`.
    pub async fn app_rules(&self, token: &str, app: &str) -> Result<AppRulesInfo, ClientError> {
        let url = self.url(&format!("/api/v1/app-rules/{}", segment(app)?));
        self.listing(token, url).await
    }

    /// `PUT /api/v1/app-rules/{app}` with `rules` (all of them); what they now are.
    pub async fn set_app_rules(
        &self,
        token: &str,
        app: &str,
        rules: &AppRules,
    ) -> Result<AppRulesInfo, ClientError> {
        let url = self.url(&format!("/api/v1/app-rules/{}", segment(app)?));
        let request = self.http.put(&url).json(rules);
        self.change(&url, request, token).await
    }

    /// `DELETE /api/v1/app-rules/{app}`; what they were.
    pub async fn clear_app_rules(
        &self,
        token: &str,
        app: &str,
    ) -> Result<AppRulesInfo, ClientError> {
        let url = self.url(&format!("/api/v1/app-rules/{}", segment(app)?));
        let request = self.http.delete(&url);
        self.change(&url, request, token).await
    }

    /// Makes `change` with `token` (and `code`, a code from the person's authenticator app
    /// given with it); the role as it now stands (as it stood, for a deletion).
    pub async fn change_role(
        &self,
        token: &str,
        change: RoleChange<'_>,
        code: Option<&str>,
    ) -> Result<RoleInfo, ClientError> {
        let (url, request) = match change {
            RoleChange::Create {
                name,
                permissions,
                description,
            } => {
                let url = self.url("/api/v1/roles");
                let body = json!({
                    "name": name, "permissions": permissions, "description": description,
                });
                let rb = self.http.post(&url).json(&body);
                (url, rb)
            }
            RoleChange::Update {
                name,
                permissions,
                description,
            } => {
                let url = self.url(&format!("/api/v1/roles/{}", segment(name)?));
                let mut body = json!({ "permissions": permissions });
                if let Some(description) = description {
                    body["description"] = description.into();
                }
                let rb = self.http.put(&url).json(&body);
                (url, rb)
            }
            RoleChange::Delete { name } => {
                let url = self.url(&format!("/api/v1/roles/{}", segment(name)?));
                let rb = self.http.delete(&url);
                (url, rb)
            }
        };
        let request = match code {
            Some(code) => request.header("x-mfa-code", code),
            None => request,
        };
        self.change(&url, request, token).await
    }
}

/// `value` as one segment of a URL's path (an e-mail, a token's name, a role). Nothing, `.`
/// and `..` are refused: percent-encoded they are still dots to URL parsing, which resolves
/// them away (`users reset-mfa ..` would delete `/api/v1/mfa`). A `%` is encoded, so no other
/// value can come out as one.
fn segment(value: &str) -> Result<String, ClientError> {
    if crate::cli::is_dot_segment(value) {
        return Err(ClientError::Url(format!(
            "{value:?} is not a valid name or id here"
        )));
    }
    Ok(
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
    )
}

/// A failed answer about one resource (a token, a user): the gateway's 404 says the resource
/// is not there, not that its URL is wrong, so it is passed on as the gateway said it.
async fn resource_error(url: &str, response: reqwest::Response) -> ClientError {
    if response.status() != reqwest::StatusCode::NOT_FOUND {
        return gateway_error(url, response).await;
    }
    let bytes = convox_api::client::read_limited(url, response, 64 * 1024)
        .await
        .unwrap_or_default();
    let said = serde_json::from_slice::<serde_json::Value>(&bytes)
        .is_ok_and(|v| v.get("code").is_some_and(serde_json::Value::is_string));
    if said {
        return convox_api::client::error_from_body(404, &bytes);
    }
    ClientError::Decode {
        url: url.to_string(),
        reason: "HTTP 404 without a gateway's answer: is this a rack-gateway?".into(),
    }
}

/// A failed answer to one of the gateway's own endpoints: its error when it sent one (always
/// JSON with a `code`), otherwise a server that is not a rack-gateway (a wrong URL, the rack
/// itself, a proxy's page).
async fn gateway_error(url: &str, response: reqwest::Response) -> ClientError {
    if response.status().is_redirection() {
        return convox_api::client::redirected(url, &response);
    }
    let status = response.status().as_u16();
    let bytes = convox_api::client::read_limited(url, response, 64 * 1024)
        .await
        .unwrap_or_default();
    let is_gateway = serde_json::from_slice::<serde_json::Value>(&bytes)
        .is_ok_and(|v| v.get("code").is_some_and(serde_json::Value::is_string));
    if is_gateway && status == 404 {
        // Every endpoint asked for here exists at a gateway's root: a gateway answering "not
        // found" was given with a path in front of them (`https://gw.example.com/account`).
        return ClientError::Decode {
            url: url.to_string(),
            reason: "the gateway answered 404 not found: give its base URL, without a path \
                     (e.g. https://gateway.example.com)"
                .to_string(),
        };
    }
    if is_gateway {
        return convox_api::client::error_from_body(status, &bytes);
    }
    ClientError::Decode {
        url: url.to_string(),
        reason: format!(
            "HTTP {status} without a gateway's answer: is this a rack-gateway? Give its base URL, \
             e.g. https://gateway.example.com"
        ),
    }
}

/// A deploy request as `/api/v1/deploy-approvals` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeployRequest {
    /// Its number.
    pub id: i64,
    /// The app.
    pub app: String,
    /// The full commit id.
    pub git_commit: String,
    /// What CI said about it.
    #[serde(default)]
    pub message: String,
    /// The pipeline's address.
    #[serde(default)]
    pub ci_url: Option<String>,
    /// The branch.
    #[serde(default)]
    pub branch: Option<String>,
    /// Who asked.
    pub requested_by: String,
    /// `pending`, `approved`, `rejected`, `deployed` or `expired`.
    pub status: String,
    /// When asked (unix ms).
    pub created_at: i64,
    /// Pending: until when it can be decided; approved: until when the deploy may run.
    pub expires_at: i64,
    /// Who decided.
    #[serde(default)]
    pub decided_by: Option<String>,
    /// When (unix ms).
    #[serde(default)]
    pub decided_at: Option<i64>,
    /// What they wrote.
    #[serde(default)]
    pub note: Option<String>,
    /// When the deploy was promoted (unix ms).
    #[serde(default)]
    pub deployed_at: Option<i64>,
    /// The release promoted.
    #[serde(default)]
    pub release: Option<String>,
}

/// What a deploy request asks for.
#[derive(Debug, Clone, Serialize)]
pub struct NewDeployRequest<'a> {
    /// The app.
    pub app: &'a str,
    /// The full commit id.
    pub git_commit: &'a str,
    /// What it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
    /// The pipeline's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ci_url: Option<&'a str>,
    /// The branch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<&'a str>,
}

impl GatewayApi {
    /// `POST /api/v1/deploy-approvals` with `token`: the request (new or the live one).
    pub async fn request_deploy(
        &self,
        token: &str,
        asked: &NewDeployRequest<'_>,
    ) -> Result<DeployRequest, ClientError> {
        let url = self.url("/api/v1/deploy-approvals");
        let request = self.http.post(&url).bearer_auth(token).json(asked);
        let response = self.send(&url, request).await?;
        if !response.status().is_success() {
            return Err(gateway_error(&url, response).await);
        }
        Self::json(&url, response).await
    }

    /// `GET /api/v1/deploy-approvals[?status=…]` with `token`.
    pub async fn deploy_requests(
        &self,
        token: &str,
        status: Option<&str>,
    ) -> Result<Vec<DeployRequest>, ClientError> {
        let mut url = self.url("/api/v1/deploy-approvals");
        if let Some(status) = status {
            let status =
                percent_encoding::utf8_percent_encode(status, percent_encoding::NON_ALPHANUMERIC);
            url = format!("{url}?status={status}");
        }
        self.listing(token, url).await
    }

    /// `GET /api/v1/deploy-approvals/{id}` with `token`.
    pub async fn deploy_request(&self, token: &str, id: i64) -> Result<DeployRequest, ClientError> {
        let url = self.url(&format!("/api/v1/deploy-approvals/{id}"));
        let response = self
            .send(&url, self.http.get(&url).bearer_auth(token))
            .await?;
        if !response.status().is_success() {
            return Err(resource_error(&url, response).await);
        }
        Self::json(&url, response).await
    }

    /// `POST /api/v1/deploy-approvals/{id}/approve` (or `…/reject`) with `token`.
    pub async fn decide_deploy(
        &self,
        token: &str,
        id: i64,
        approve: bool,
        note: Option<&str>,
        code: Option<&str>,
    ) -> Result<DeployRequest, ClientError> {
        let verb = if approve { "approve" } else { "reject" };
        let url = self.url(&format!("/api/v1/deploy-approvals/{id}/{verb}"));
        let mut body = json!({ "note": note });
        if let Some(code) = code {
            body["code"] = code.into();
        }
        let request = self.http.post(&url).json(&body);
        self.change(&url, request, token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value stays one segment where it was put, once the URL is parsed, or is
    /// refused.
    #[test]
    fn a_value_stays_one_segment_of_the_path() {
        for value in ["..", ".", ""] {
            let err = segment(value).map_err(|e| e.to_string());
            assert!(
                err.as_ref()
                    .is_err_and(|e| e.contains("is not a valid name")),
                "{value:?}: {err:?}"
            );
        }
        for value in ["...", ".a", "a/..", "%2E%2E", "%2e", "a@b.c", "x y"] {
            let encoded = segment(value).unwrap_or_else(|e| panic!("{value:?}: {e}"));
            let url = url::Url::parse(&format!(
                "https://gw.example.com/api/v1/users/{encoded}/mfa"
            ));
            let path = url.map(|u| u.path().to_string()).unwrap_or_default();
            assert!(
                path.starts_with("/api/v1/users/") && path.ends_with("/mfa") && path.len() > 18,
                "{value:?} made {path:?}"
            );
        }
    }
}
