//! The names of the settings: every one `serve` reads, and a misspelt one named with what it
//! likely meant.

/// Every setting `serve` reads (docs/configuration.md).
pub const SETTINGS: &[&str] = &[
    "ADMIN_USERS",
    "AUDIT_ANCHOR_BUCKET",
    "AUDIT_ANCHOR_ENDPOINT",
    "AUDIT_ANCHOR_INTERVAL_SECS",
    "AUDIT_ANCHOR_PREFIX",
    "AUDIT_ANCHOR_REGION",
    "AUDIT_ANCHOR_RETENTION_DAYS",
    "AUDIT_HMAC_KEY",
    "AUDIT_HMAC_KEY_NEXT",
    "AUDIT_HMAC_KEY_RETIRED",
    "AUDIT_STDOUT",
    "CLIENT_TIMEOUT_SECS",
    "DATABASE_URL",
    "DEPLOY_APPROVAL_REQUEST_TTL_SECS",
    "DEPLOY_APPROVAL_WINDOW_SECS",
    "EMAIL_ALERTS_TO",
    "EMAIL_FROM",
    "LISTEN_ADDR",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "MAX_CONNECTIONS",
    "MAX_SESSIONS_PER_USER",
    "MAX_WEBSOCKETS",
    "MAX_WEBSOCKETS_PER_CREDENTIAL",
    "METRICS_LISTEN_ADDR",
    "MFA_ENCRYPTION_KEY",
    "MFA_ENCRYPTION_KEY_RETIRED",
    "MFA_REQUIRED",
    "MFA_STEP_UP_SECS",
    "MFA_TRUSTED_DEVICE_DAYS",
    "NOTIFY_OFF",
    "NOTIFY_REFUSAL_BURST",
    "OIDC_ALLOWED_DOMAINS",
    "OIDC_CLIENT_ID",
    "OIDC_CLIENT_SECRET",
    "OIDC_ISSUER",
    "OIDC_REDIRECT_URL",
    "PORT",
    "PUBLIC_URL",
    "RACK_CA_FILE",
    "RACK_CONNECT_TIMEOUT_SECS",
    "RACK_HOST",
    "RACK_READ_TIMEOUT_SECS",
    "RACK_TLS_PIN_SHA256",
    "RACK_TOKEN",
    "SESSION_IDLE_TIMEOUT_SECS",
    "SESSION_LIFETIME_SECS",
    "SHUTDOWN_TIMEOUT_SECS",
    "SLACK_API_URL",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_WEBHOOK_URL",
    "SMTP_URL",
    "SQLITE_SYNCHRONOUS",
    "TRUSTED_PROXIES",
    "WORKER_THREADS",
    "YUBICO_API_URL",
    "YUBICO_CLIENT_ID",
    "YUBICO_SECRET_KEY",
];

/// Beginnings of this gateway's settings' names: a variable that starts like one but is not
/// one is most likely a misspelt setting.
const SETTING_PREFIXES: &[&str] = &[
    "ADMIN_",
    "AUDIT_",
    "DEPLOY_",
    "EMAIL_",
    "SMTP_",
    "NOTIFY_",
    "SLACK_WEBHOOK",
    "SLACK_SIGNING",
    "SLACK_BOT",
    "SLACK_API",
    "MFA_",
    "OIDC_",
    "RACK_",
    "SESSION_",
    "YUBICO_",
    "MAX_WEBSOCKET",
    "MAX_CONNECTION",
    "TRUSTED_PROX",
    "PUBLIC_UR",
    "SQLITE_",
    "CLIENT_TIMEOUT",
    "SHUTDOWN_TIMEOUT",
    "MAX_SESSION",
    "LISTEN_ADDR",
    "METRICS_",
];

/// A name this close to a setting's (in edits, a swap of two neighbours counting as one), and
/// not one, is taken as that setting misspelt whatever it starts with (`DATABSE_URL`,
/// `DATABASE_URI`, `LSITEN_ADDR`, `LOG_LEVL`). Broader rules caught other software's
/// variables: systemd's `LISTEN_FDS`, the service links Docker and Kubernetes set
/// (`DATABASE_PORT_5432_TCP`, `WORKER_SERVICE_HOST`), and `SLACK_TOKEN`, two edits from
/// `RACK_TOKEN`.
const NEAR_A_SETTING: usize = 1;

/// Warnings for `names` (the environment's variable names) that look like settings but are
/// not one: a misspelt `OIDC_ALLOWED_DOMAIN` is otherwise silently ignored, and with it the
/// restriction it was meant to set. Each names the setting it most likely meant.
pub fn misspelt_settings<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    names
        .into_iter()
        .filter(|name| !SETTINGS.contains(name))
        // Convox sets it for every app it runs (the gateway deployed on a rack): not ours.
        .filter(|name| *name != "RACK_URL")
        .filter(|name| {
            SETTING_PREFIXES.iter().any(|p| name.starts_with(p))
                || SETTINGS.iter().any(|known| {
                    // Short names (`PORT`) are near too many others to judge.
                    known.len() >= 8 && strsim::osa_distance(name, known) <= NEAR_A_SETTING
                })
        })
        .map(|name| {
            let nearest = SETTINGS
                .iter()
                .min_by_key(|known| edit_distance(name, known))
                .filter(|known| edit_distance(name, known) <= 3);
            match nearest {
                Some(known) => {
                    format!("{name} is not a setting (did you mean {known}?): it is ignored")
                }
                None => format!("{name} is not a setting: it is ignored (docs/configuration.md)"),
            }
        })
        .collect()
}

/// How many edits turn `a` into `b`, for suggesting a setting's name.
fn edit_distance(a: &str, b: &str) -> usize {
    strsim::levenshtein(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_a_row_in_the_configuration_docs() {
        let docs = include_str!("../../../../docs/configuration.md");
        let undocumented: Vec<&str> = SETTINGS
            .iter()
            .copied()
            .filter(|name| !docs.contains(&format!("| `{name}`")))
            .collect();
        assert!(
            undocumented.is_empty(),
            "not in docs/configuration.md: {undocumented:?}"
        );
    }

    #[test]
    fn a_misspelt_notification_setting_is_named() {
        let warnings = misspelt_settings(["NOTIFY_REFUSAL_BURTS", "NOTIFY_OF"]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("did you mean NOTIFY_REFUSAL_BURST?"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("did you mean NOTIFY_OFF?"),
            "{warnings:?}"
        );
    }
}
