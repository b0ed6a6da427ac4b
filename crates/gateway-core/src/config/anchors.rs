//! `AUDIT_ANCHOR_*`: where the audit chain's head is anchored (an S3 bucket with Object Lock).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::{ConfigError, Secret, seconds, whole_number};

/// Default key prefix of the anchor objects.
pub const DEFAULT_ANCHOR_PREFIX: &str = "audit-anchors/";
/// Default region when neither `AUDIT_ANCHOR_REGION` nor `AWS_REGION` is set.
pub const DEFAULT_ANCHOR_REGION: &str = "us-east-1";
/// Default seconds between two anchors.
pub const DEFAULT_ANCHOR_INTERVAL_SECS: u64 = 300;
/// Default days an anchor stays locked: a twelve-month SOC 2 audit period and a margin.
pub const DEFAULT_ANCHOR_RETENTION_DAYS: u64 = 400;
/// Longest retention `AUDIT_ANCHOR_RETENTION_DAYS` takes (a COMPLIANCE lock cannot be
/// shortened by anyone, so a typo in days would be for ever).
const MAX_RETENTION_DAYS: u64 = 3650;

/// Where and how often the audit chain's head is written to S3.
#[derive(Clone)]
pub struct AnchorConfig {
    /// The bucket (`AUDIT_ANCHOR_BUCKET`); it must have Object Lock enabled.
    pub bucket: String,
    /// Key prefix (`AUDIT_ANCHOR_PREFIX`), empty or ending in `/`.
    pub prefix: String,
    /// The bucket's region (`AUDIT_ANCHOR_REGION`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`).
    pub region: String,
    /// An S3-compatible endpoint (`AUDIT_ANCHOR_ENDPOINT`, path-style); `None`: AWS's
    /// regional endpoint, virtual-host style.
    pub endpoint: Option<Url>,
    /// Time between anchors (`AUDIT_ANCHOR_INTERVAL_SECS`).
    pub interval: Duration,
    /// How long each anchor is locked (`AUDIT_ANCHOR_RETENTION_DAYS`).
    pub retention: Duration,
    /// Where the credentials come from.
    pub credentials: AnchorCredentials,
}

/// Where the anchor bucket's credentials come from.
#[derive(Clone)]
pub enum AnchorCredentials {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, for temporary credentials,
    /// `AWS_SESSION_TOKEN`.
    Static {
        /// `AWS_ACCESS_KEY_ID`.
        access_key_id: String,
        /// `AWS_SECRET_ACCESS_KEY`.
        secret_access_key: Secret,
        /// `AWS_SESSION_TOKEN`.
        session_token: Option<Secret>,
    },
    /// The container credentials endpoint (an ECS task role, EKS Pod Identity), fetched and
    /// renewed before they expire.
    Container {
        /// `AWS_CONTAINER_CREDENTIALS_FULL_URI`, or ECS's address with
        /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
        url: Url,
        /// What the endpoint wants in `Authorization`, if anything.
        authorization: Option<ContainerAuthorization>,
    },
    /// The EC2 instance metadata service (an instance profile's role), spoken as IMDSv2 only,
    /// fetched and renewed before they expire.
    Instance {
        /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, else the IPv4 or IPv6 address
        /// (`AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE`).
        endpoint: Url,
    },
}

/// The `Authorization` value of the container credentials endpoint.
#[derive(Clone)]
pub enum ContainerAuthorization {
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
    Token(Secret),
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`, read at every fetch (it is rotated).
    File(PathBuf),
}

impl std::fmt::Debug for AnchorCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnchorCredentials::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", secret_access_key)
                .field("session_token", session_token)
                .finish(),
            AnchorCredentials::Container { url, authorization } => f
                .debug_struct("Container")
                .field("url", &url.as_str())
                .field(
                    "authorization",
                    &match authorization {
                        None => "none".to_string(),
                        Some(ContainerAuthorization::Token(_)) => "[redacted]".to_string(),
                        Some(ContainerAuthorization::File(path)) => path.display().to_string(),
                    },
                )
                .finish(),
            AnchorCredentials::Instance { endpoint } => f
                .debug_struct("Instance")
                .field("endpoint", &endpoint.as_str())
                .finish(),
        }
    }
}

/// ECS's container credentials address, which `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is
/// relative to.
const ECS_CREDENTIALS_HOST: &str = "http://169.254.170.2";

/// The instance metadata service's addresses (`AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE`
/// `IPv4`, the default, and `IPv6`).
const IMDS_IPV4: &str = "http://169.254.169.254/";
const IMDS_IPV6: &str = "http://[fd00:ec2::254]/";

/// Reads the credential variables in the AWS SDKs' order: static keys, then the container
/// endpoint, then the instance metadata service (unless `AWS_EC2_METADATA_DISABLED=true`).
fn parse_credentials(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<AnchorCredentials, ConfigError> {
    if let Some(access_key_id) = get("AWS_ACCESS_KEY_ID") {
        let secret_access_key =
            get("AWS_SECRET_ACCESS_KEY")
                .map(Secret::new)
                .ok_or(ConfigError::Missing {
                    name: "AWS_SECRET_ACCESS_KEY",
                    expected: "the secret of AWS_ACCESS_KEY_ID (AUDIT_ANCHOR_BUCKET is set)",
                })?;
        return Ok(AnchorCredentials::Static {
            access_key_id: access_key_id.trim().to_string(),
            secret_access_key,
            session_token: get("AWS_SESSION_TOKEN").map(Secret::new),
        });
    }
    let (name, url) = match (
        get("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
        get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
    ) {
        (Some(full), _) => (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            full.trim().to_string(),
        ),
        (None, Some(relative)) => (
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            format!("{ECS_CREDENTIALS_HOST}{}", relative.trim()),
        ),
        (None, None) => return instance_credentials(get),
    };
    let url = Url::parse(&url)
        .ok()
        .filter(credentials_endpoint_allowed)
        .ok_or(ConfigError::Invalid {
            name,
            expected: "a container credentials endpoint: https, or http to a loopback address \
                       or the ECS/EKS link-local one"
                .into(),
        })?;
    let authorization = match (
        get("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
    ) {
        (Some(token), _) => Some(ContainerAuthorization::Token(Secret::new(token))),
        (None, Some(file)) => Some(ContainerAuthorization::File(PathBuf::from(file.trim()))),
        (None, None) => None,
    };
    Ok(AnchorCredentials::Container { url, authorization })
}

/// The instance metadata service, where the AWS SDKs look last.
fn instance_credentials(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<AnchorCredentials, ConfigError> {
    if get("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Err(ConfigError::Missing {
            name: "AWS_ACCESS_KEY_ID",
            expected: "credentials allowed to put objects into AUDIT_ANCHOR_BUCKET: \
                       AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, an ECS task role \
                       (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI), or an EC2 instance profile \
                       (AWS_EC2_METADATA_DISABLED is set)",
        });
    }
    let (name, raw) = match get("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
        Some(endpoint) => ("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint),
        None => match get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE") {
            None => ("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", IMDS_IPV4.into()),
            Some(mode) if mode.trim().eq_ignore_ascii_case("ipv4") => {
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", IMDS_IPV4.into())
            }
            Some(mode) if mode.trim().eq_ignore_ascii_case("ipv6") => {
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", IMDS_IPV6.into())
            }
            Some(_) => {
                return Err(ConfigError::Invalid {
                    name: "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
                    expected: "IPv4 or IPv6".into(),
                });
            }
        },
    };
    let endpoint = Url::parse(raw.trim())
        .ok()
        .filter(metadata_endpoint_allowed)
        .filter(|u| u.query().is_none() && u.fragment().is_none())
        .ok_or(ConfigError::Invalid {
            name,
            expected: "the instance metadata service's address: http://169.254.169.254, \
                       http://[fd00:ec2::254], https, or http to a loopback address"
                .into(),
        })?;
    Ok(AnchorCredentials::Instance { endpoint })
}

/// Like [`credentials_endpoint_allowed`], for the instance metadata service's addresses.
fn metadata_endpoint_allowed(url: &Url) -> bool {
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Ipv4(ip))) => {
            ip.is_loopback() || ip == std::net::Ipv4Addr::new(169, 254, 169, 254)
        }
        ("http", Some(url::Host::Ipv6(ip))) => {
            ip.is_loopback() || ip == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
        ("http", Some(url::Host::Domain(_))) => is_loopback(url),
        _ => false,
    }
}

/// Whether credentials may be fetched from `url`: as the AWS SDKs allow, https anywhere, plain
/// http only to this host or the link-local addresses of ECS and EKS, where nobody in between
/// can read them.
fn credentials_endpoint_allowed(url: &Url) -> bool {
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    match url.scheme() {
        "https" => url.host_str().is_some(),
        "http" => {
            let ip = match url.host() {
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
                _ => return is_loopback(url),
            };
            ip.is_loopback()
                || ip == IpAddr::from([169, 254, 170, 2])
                || ip == IpAddr::from([169, 254, 170, 23])
                || ip == IpAddr::from([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23])
        }
        _ => false,
    }
}

impl std::fmt::Debug for AnchorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnchorConfig")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint.as_ref().map(Url::as_str))
            .field("interval", &self.interval)
            .field("retention", &self.retention)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// Reads the `AUDIT_ANCHOR_*` variables; `None` when `AUDIT_ANCHOR_BUCKET` is not set.
pub fn parse_anchors(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<AnchorConfig>, ConfigError> {
    let Some(bucket) = get("AUDIT_ANCHOR_BUCKET") else {
        return Ok(None);
    };
    let bucket = bucket.trim().to_string();
    if !valid_bucket(&bucket) {
        return Err(ConfigError::Invalid {
            name: "AUDIT_ANCHOR_BUCKET",
            expected: "an S3 bucket name: 3 to 63 lowercase letters, digits, '.' and '-'".into(),
        });
    }
    let mut prefix = get("AUDIT_ANCHOR_PREFIX")
        .map(|p| p.trim().to_string())
        .unwrap_or_else(|| DEFAULT_ANCHOR_PREFIX.into());
    if prefix.starts_with('/')
        || prefix.len() > 512
        || prefix.chars().any(|c| c.is_control() || c == '\\')
        || prefix.split('/').any(|s| s == "." || s == "..")
    {
        return Err(ConfigError::Invalid {
            name: "AUDIT_ANCHOR_PREFIX",
            expected: "a key prefix such as audit-anchors/ (no leading '/', no '.' or '..' \
                       segments, no control characters, at most 512 bytes)"
                .into(),
        });
    }
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    // The error names the variable the region came from: the one to fix.
    let (region_from, region) = ["AUDIT_ANCHOR_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"]
        .into_iter()
        .find_map(|name| get(name).map(|r| (name, r.trim().to_string())))
        .unwrap_or(("AUDIT_ANCHOR_REGION", DEFAULT_ANCHOR_REGION.into()));
    if region.is_empty()
        || region.len() > 32
        || !region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(ConfigError::Invalid {
            name: region_from,
            expected: "an AWS region such as eu-west-1".into(),
        });
    }
    let endpoint = match get("AUDIT_ANCHOR_ENDPOINT") {
        None => None,
        Some(raw) => {
            // Plain http only on this host: `audit verify` trusts the listings it reads, and
            // anyone in between could forge them.
            let url = Url::parse(raw.trim())
                .ok()
                .filter(|u| u.scheme() == "https" || (u.scheme() == "http" && is_loopback(u)))
                .filter(|u| u.host_str().is_some())
                .filter(|u| u.username().is_empty() && u.password().is_none())
                .filter(|u| u.query().is_none() && u.fragment().is_none())
                .ok_or(ConfigError::Invalid {
                    name: "AUDIT_ANCHOR_ENDPOINT",
                    expected: "the https base URL of an S3-compatible service, e.g. \
                               https://minio.internal:9000 (http only to a loopback address; \
                               no credentials, query or fragment)"
                        .into(),
                })?;
            Some(url)
        }
    };
    let credentials = parse_credentials(get)?;
    let interval = seconds(
        get,
        "AUDIT_ANCHOR_INTERVAL_SECS",
        DEFAULT_ANCHOR_INTERVAL_SECS,
    )?;
    let retention_days = whole_number(
        get,
        "AUDIT_ANCHOR_RETENTION_DAYS",
        DEFAULT_ANCHOR_RETENTION_DAYS,
        MAX_RETENTION_DAYS,
        || format!("a whole number of days from 1 to {MAX_RETENTION_DAYS}"),
    )?;
    Ok(Some(AnchorConfig {
        bucket,
        prefix,
        region,
        endpoint,
        interval,
        retention: Duration::from_secs(retention_days * 24 * 3600),
        credentials,
    }))
}

/// Whether `url` names this host.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    }
}

/// S3's bucket naming rules, as far as they matter for building a URL.
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Option<AnchorConfig>, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_anchors(&|k: &str| map.get(k).cloned().filter(|v| !v.trim().is_empty()))
    }

    const CREDS: [(&str, &str); 2] = [
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret-access-key-value"),
    ];

    #[test]
    fn off_unless_a_bucket_is_named() {
        assert!(matches!(parse(&CREDS), Ok(None)));
    }

    #[test]
    fn defaults() {
        let mut vars = CREDS.to_vec();
        vars.push(("AUDIT_ANCHOR_BUCKET", "audit-anchors"));
        let config = parse(&vars).ok().flatten();
        let Some(config) = config else {
            panic!("no anchor config")
        };
        assert_eq!(config.prefix, DEFAULT_ANCHOR_PREFIX);
        assert_eq!(config.region, DEFAULT_ANCHOR_REGION);
        assert_eq!(config.endpoint, None);
        assert_eq!(config.interval, Duration::from_secs(300));
        assert_eq!(config.retention, Duration::from_secs(400 * 86_400));
        assert!(matches!(
            config.credentials,
            AnchorCredentials::Static {
                session_token: None,
                ..
            }
        ));
        // Debug never shows the secret.
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret-access-key-value"), "{shown}");
    }

    #[test]
    fn region_falls_back_to_aws_region_and_prefix_gets_its_slash() {
        let mut vars = CREDS.to_vec();
        vars.extend([
            ("AUDIT_ANCHOR_BUCKET", "audit-anchors"),
            ("AWS_REGION", "eu-west-1"),
            ("AUDIT_ANCHOR_PREFIX", "prod/gateway"),
            ("AUDIT_ANCHOR_ENDPOINT", "http://127.0.0.1:9000"),
        ]);
        let Ok(Some(config)) = parse(&vars) else {
            panic!("no anchor config")
        };
        assert_eq!(config.region, "eu-west-1");
        assert_eq!(config.prefix, "prod/gateway/");
        assert_eq!(
            config.endpoint.as_ref().map(Url::as_str),
            Some("http://127.0.0.1:9000/")
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "AUDIT_ANCHOR_BUCKET",
                "Audit_Anchors",
                "AUDIT_ANCHOR_BUCKET",
            ),
            ("AUDIT_ANCHOR_BUCKET", "ab", "AUDIT_ANCHOR_BUCKET"),
            ("AUDIT_ANCHOR_BUCKET", "a..b", "AUDIT_ANCHOR_BUCKET"),
            ("AUDIT_ANCHOR_PREFIX", "/abs", "AUDIT_ANCHOR_PREFIX"),
            ("AUDIT_ANCHOR_PREFIX", "a/../b", "AUDIT_ANCHOR_PREFIX"),
            ("AUDIT_ANCHOR_PREFIX", "a\u{7}b", "AUDIT_ANCHOR_PREFIX"),
            ("AUDIT_ANCHOR_REGION", "EU WEST", "AUDIT_ANCHOR_REGION"),
            // From the fallback, the fallback is named (it said AUDIT_ANCHOR_REGION, unset).
            ("AWS_REGION", "EU WEST", "AWS_REGION"),
            ("AWS_DEFAULT_REGION", "EU WEST", "AWS_DEFAULT_REGION"),
            ("AUDIT_ANCHOR_ENDPOINT", "ftp://x", "AUDIT_ANCHOR_ENDPOINT"),
            (
                "AUDIT_ANCHOR_ENDPOINT",
                "http://minio.internal:9000",
                "AUDIT_ANCHOR_ENDPOINT",
            ),
            (
                "AUDIT_ANCHOR_ENDPOINT",
                "https://user:pw@minio.internal",
                "AUDIT_ANCHOR_ENDPOINT",
            ),
            (
                "AUDIT_ANCHOR_INTERVAL_SECS",
                "0",
                "AUDIT_ANCHOR_INTERVAL_SECS",
            ),
            (
                "AUDIT_ANCHOR_RETENTION_DAYS",
                "0",
                "AUDIT_ANCHOR_RETENTION_DAYS",
            ),
            (
                "AUDIT_ANCHOR_RETENTION_DAYS",
                "36500",
                "AUDIT_ANCHOR_RETENTION_DAYS",
            ),
        ];
        for (name, value, named) in cases {
            let mut vars = CREDS.to_vec();
            if *name != "AUDIT_ANCHOR_BUCKET" {
                vars.push(("AUDIT_ANCHOR_BUCKET", "audit-anchors"));
            }
            vars.push((name, value));
            let err = parse(&vars)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.starts_with(named), "{name}={value:?}: {err:?}");
            assert!(!err.contains("pw@"), "{err}");
        }
    }

    #[test]
    fn credentials_are_required() {
        // Without keys or a container endpoint: the instance metadata service, as the AWS
        // SDKs do, unless it is turned off.
        let instance = |vars: &[(&str, &str)]| {
            let mut all = vec![("AUDIT_ANCHOR_BUCKET", "audit-anchors")];
            all.extend_from_slice(vars);
            match parse(&all) {
                Ok(Some(AnchorConfig {
                    credentials: AnchorCredentials::Instance { endpoint },
                    ..
                })) => Ok(endpoint.to_string()),
                other => Err(format!("{other:?}")),
            }
        };
        assert_eq!(instance(&[]).as_deref(), Ok("http://169.254.169.254/"));
        assert_eq!(
            instance(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6")]).as_deref(),
            Ok("http://[fd00:ec2::254]/")
        );
        assert_eq!(
            instance(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:8111")]).as_deref(),
            Ok("http://127.0.0.1:8111/")
        );
        for (name, value) in [
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                "http://metadata.example.com",
            ),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://10.0.0.1"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://u:pw@127.0.0.1"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "file:///etc/passwd"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "ipv5"),
        ] {
            let err = instance(&[(name, value)]).err().unwrap_or_default();
            assert!(err.contains(name) && !err.contains("pw@"), "{value}: {err}");
        }
        let err = parse(&[
            ("AUDIT_ANCHOR_BUCKET", "audit-anchors"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.starts_with("AWS_ACCESS_KEY_ID is required"), "{err}");
        let err = parse(&[
            ("AUDIT_ANCHOR_BUCKET", "audit-anchors"),
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.starts_with("AWS_SECRET_ACCESS_KEY is required"),
            "{err}"
        );
    }
}
