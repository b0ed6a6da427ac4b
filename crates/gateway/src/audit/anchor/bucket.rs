//! The S3 bucket anchors are written to: signed requests (rusty-s3) sent with reqwest.
//!
//! Requests are signed into the URL (SigV4 query signing, every sent header signed with it).
//! That URL carries the signature and, with temporary credentials, the session token: it is
//! never logged, and errors are reported without it.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use instant_xml::FromXml;
use md5::{Digest as _, Md5};
use rusty_s3::actions::{ListObjectsV2, S3Action};
use rusty_s3::{Bucket, Credentials, Map, Method, UrlStyle};

use super::AnchorError;
use super::credentials::CredentialSource;
use crate::config::AnchorConfig;

/// How long a signed URL stays valid: long enough for one request.
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(300);
/// The most of an anchor object (or an error answer) read into memory.
const MAX_OBJECT: usize = 64 * 1024;
/// The most of one listing page read into memory (a page of 1000 versions is ~400 KB).
const MAX_LISTING: usize = 8 * 1024 * 1024;
/// Keys per listing page: S3's maximum.
const PAGE_SIZE: usize = 1000;
/// Most pages one listing reads: 5 million anchors are 47 years of one every 5 minutes.
pub const MAX_PAGES: usize = 5000;

/// The bucket and prefix anchors live under, with credentials to write and read them.
pub struct AnchorBucket {
    bucket: Bucket,
    credentials: CredentialSource,
    prefix: String,
    retention: Duration,
    page_size: usize,
    http: reqwest::Client,
}

impl std::fmt::Debug for AnchorBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnchorBucket")
            .field("bucket", &self.bucket.name())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Every anchor key under the prefix that has a stored version, whether or not a delete
/// marker hides it from a plain listing. Other keys are only counted: the prefix may hold
/// anything anyone with write access put there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionedKeys {
    /// Anchor keys with at least one stored version, in key order, with the first of them.
    pub anchors: std::collections::BTreeMap<String, FirstVersion>,
    /// Those of them whose latest version is a delete marker.
    pub hidden: std::collections::BTreeSet<String>,
    /// Stored versions of other keys.
    pub others: usize,
}

/// The first stored version of a key: under Object Lock, what was written first stays, and a
/// later version cannot change it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirstVersion {
    /// When S3 stored it (`LastModified`, RFC 3339): set by S3, not by whoever wrote it.
    pub stored_at: Option<String>,
    /// Its version id, to read exactly it.
    pub version_id: Option<String>,
}

/// An object's Object Lock settings, as S3 reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLock {
    /// `COMPLIANCE` or `GOVERNANCE`; `None` when the object is not locked.
    pub mode: Option<String>,
    /// Until when (RFC 3339), if locked.
    pub retain_until: Option<String>,
}

impl AnchorBucket {
    /// A client for the configured bucket.
    pub fn new(config: &AnchorConfig) -> Result<AnchorBucket, AnchorError> {
        let (endpoint, style) = match &config.endpoint {
            Some(url) => (url.clone(), UrlStyle::Path),
            None => {
                let aws = format!("https://s3.{}.amazonaws.com", config.region);
                let url = url::Url::parse(&aws)
                    .map_err(|_| AnchorError::Setup(format!("bad region {:?}", config.region)))?;
                // A dotted name as a host would not match AWS's wildcard certificate.
                let style = if config.bucket.contains('.') {
                    UrlStyle::Path
                } else {
                    UrlStyle::VirtualHost
                };
                (url, style)
            }
        };
        let bucket = Bucket::new(
            endpoint,
            style,
            config.bucket.clone(),
            config.region.clone(),
        )
        .map_err(|e| AnchorError::Setup(format!("bucket {}: {e}", config.bucket)))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| AnchorError::Setup(e.without_url().to_string()))?;
        let credentials = CredentialSource::new(&config.credentials)?;
        Ok(AnchorBucket {
            bucket,
            credentials,
            prefix: config.prefix.clone(),
            retention: config.retention,
            page_size: PAGE_SIZE,
            http,
        })
    }

    /// Lists `n` keys per page instead of 1000 (for services with smaller pages, and to test
    /// the paging).
    pub fn with_page_size(mut self, n: usize) -> AnchorBucket {
        self.page_size = n.clamp(1, PAGE_SIZE);
        self
    }

    /// The key prefix anchors are written under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Writes `body` at `key`, locked in COMPLIANCE mode for the configured retention.
    pub async fn put_locked(&self, key: &str, body: Vec<u8>) -> Result<(), AnchorError> {
        let until = humantime::format_rfc3339_seconds(SystemTime::now() + self.retention);
        let until = until.to_string();
        // S3 refuses an object with a retention period unless it can check the body.
        let md5 = STANDARD.encode(Md5::digest(&body));
        let credentials = self.credentials.get().await?;
        let headers = [
            ("content-md5", md5.as_str()),
            ("content-type", "application/json"),
            ("x-amz-object-lock-mode", "COMPLIANCE"),
            ("x-amz-object-lock-retain-until-date", until.as_str()),
        ];
        let url = self.put_url(&credentials, key, &headers, &jiff::Timestamp::now());
        let mut request = self.http.put(url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.map_err(transport)?;
        checked(response, "put", key, MAX_OBJECT).await.map(drop)
    }

    /// The signed URL of a PutObject of `key` with `headers` (every one of them signed).
    fn put_url(
        &self,
        credentials: &Credentials,
        key: &str,
        headers: &[(&str, &str)],
        now: &jiff::Timestamp,
    ) -> url::Url {
        let mut put = self.bucket.put_object(Some(credentials), key);
        for (name, value) in headers {
            put.headers_mut().insert(*name, value.to_string());
        }
        put.sign_with_time(SIGNATURE_LIFETIME, now)
    }

    /// The signed URL of a ListObjectVersions page (rusty-s3 has no action for it).
    fn versions_url(
        &self,
        credentials: &Credentials,
        marker: Option<&(String, String)>,
        now: &jiff::Timestamp,
    ) -> url::Url {
        let mut query = Map::new();
        query.insert("versions", "");
        query.insert("prefix", self.prefix.clone());
        query.insert("max-keys", self.page_size.to_string());
        if let Some((key, version)) = marker {
            query.insert("key-marker", key.clone());
            query.insert("version-id-marker", version.clone());
        }
        rusty_s3::signing::sign(
            now,
            Method::Get,
            self.bucket.base_url().clone(),
            credentials.key(),
            credentials.secret(),
            credentials.token(),
            self.bucket.region(),
            SIGNATURE_LIFETIME.as_secs(),
            query.iter(),
            std::iter::empty(),
        )
    }

    /// Every key under the prefix, in key order (which is chain order), after `start_after`
    /// when given. At most [`MAX_PAGES`] pages: more is not an anchor bucket.
    pub async fn list(&self, start_after: Option<&str>) -> Result<Vec<String>, AnchorError> {
        let mut keys = Vec::new();
        let complete = self
            .list_pages(start_after, MAX_PAGES, |page| keys.extend(page))
            .await?;
        if !complete {
            return Err(too_many(&self.prefix, self.page_size));
        }
        Ok(keys)
    }

    /// Lists the keys under the prefix after `start_after`, page by page, handing each page
    /// to `each` (so a caller keeps only what it needs); stops after `max_pages`. Returns
    /// whether the listing was complete.
    pub async fn list_pages(
        &self,
        start_after: Option<&str>,
        max_pages: usize,
        mut each: impl FnMut(Vec<String>),
    ) -> Result<bool, AnchorError> {
        let mut token: Option<String> = None;
        for _ in 0..max_pages {
            let credentials = self.credentials.get().await?;
            let mut list: ListObjectsV2<'_> = self.bucket.list_objects_v2(Some(&credentials));
            list.with_prefix(self.prefix.as_str());
            list.with_max_keys(self.page_size);
            match (&token, start_after) {
                (Some(t), _) => list.with_continuation_token(t.clone()),
                (None, Some(after)) => list.with_start_after(after.to_string()),
                (None, None) => {}
            }
            let response = self
                .http
                .get(list.sign(SIGNATURE_LIFETIME))
                .send()
                .await
                .map_err(transport)?;
            let text = checked(response, "list", &self.prefix, MAX_LISTING).await?;
            let text = String::from_utf8(text)
                .map_err(|_| AnchorError::Malformed("a listing that is not UTF-8".into()))?;
            let page = ListObjectsV2::parse_response(&text)
                .map_err(|e| AnchorError::Malformed(format!("a listing S3 sent: {e}")))?;
            each(page.contents.into_iter().map(|c| c.key).collect());
            match page.next_continuation_token {
                // A token that does not move would list for ever.
                Some(next) if token.as_ref() == Some(&next) => {
                    return Err(AnchorError::Malformed(
                        "a listing whose continuation token repeats".into(),
                    ));
                }
                Some(next) => token = Some(next),
                None => return Ok(true),
            }
        }
        Ok(false)
    }

    /// Every key under the prefix with a stored version (`ListObjectVersions`): a delete
    /// marker hides an object from [`AnchorBucket::list`] but cannot remove a locked version,
    /// and this listing still shows it.
    pub async fn list_versions(&self) -> Result<VersionedKeys, AnchorError> {
        let mut found = VersionedKeys::default();
        let mut latest_deleted = std::collections::BTreeSet::new();
        let mut marker: Option<(String, String)> = None;
        let mut pages = 0;
        loop {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(too_many(&self.prefix, self.page_size));
            }
            let credentials = self.credentials.get().await?;
            let url = self.versions_url(&credentials, marker.as_ref(), &jiff::Timestamp::now());
            let response = self.http.get(url).send().await.map_err(transport)?;
            let text = checked(response, "list versions", &self.prefix, MAX_LISTING).await?;
            let text = String::from_utf8(text).map_err(|_| {
                AnchorError::Malformed("a version listing that is not UTF-8".into())
            })?;
            let page: VersionListing = instant_xml::from_str(&text)
                .map_err(|e| AnchorError::Malformed(format!("a version listing: {e}")))?;
            for version in page.versions {
                if super::parse_anchor_key(&self.prefix, &version.key).is_none() {
                    found.others += 1;
                    continue;
                }
                let first = found.anchors.entry(version.key).or_default();
                // RFC 3339 times in one format compare as text. A key's versions come newest
                // first, so on a tie (the same second) the later one listed is the older.
                if let Some(at) = version.last_modified
                    && first.stored_at.as_ref().is_none_or(|seen| at <= *seen)
                {
                    *first = FirstVersion {
                        stored_at: Some(at),
                        // "null": a bucket without versioning; there is only one.
                        version_id: version.version_id.filter(|v| v != "null"),
                    };
                }
            }
            for deleted in page.delete_markers {
                if deleted.is_latest == Some(true) {
                    latest_deleted.insert(deleted.key);
                }
            }
            match (page.is_truncated, page.next_key_marker) {
                (Some(true), Some(key)) => {
                    let next = (key, page.next_version_id_marker.unwrap_or_default());
                    if marker.as_ref() == Some(&next) {
                        return Err(AnchorError::Malformed(
                            "a version listing whose marker repeats".into(),
                        ));
                    }
                    marker = Some(next);
                }
                (Some(true), None) => {
                    return Err(AnchorError::Malformed(
                        "a truncated version listing without a marker".into(),
                    ));
                }
                _ => break,
            }
        }
        found.hidden = latest_deleted
            .into_iter()
            .filter(|k| found.anchors.contains_key(k))
            .collect();
        Ok(found)
    }

    /// The object at `key` (at most 64 KiB: an anchor is a few hundred bytes): its latest
    /// version, or the one named.
    pub async fn get(&self, key: &str, version: Option<&str>) -> Result<Vec<u8>, AnchorError> {
        let credentials = self.credentials.get().await?;
        let get = self.bucket.get_object(Some(&credentials), key);
        let response = self
            .http
            .get(signed_for_version(get, version))
            .send()
            .await
            .map_err(transport)?;
        checked(response, "get", key, MAX_OBJECT).await
    }

    /// The Object Lock settings of the object at `key` (its latest version, or the one named).
    pub async fn lock_of(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<ObjectLock, AnchorError> {
        let credentials = self.credentials.get().await?;
        let head = self.bucket.head_object(Some(&credentials), key);
        let response = self
            .http
            .head(signed_for_version(head, version))
            .send()
            .await
            .map_err(transport)?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let lock = ObjectLock {
            mode: header("x-amz-object-lock-mode"),
            retain_until: header("x-amz-object-lock-retain-until-date"),
        };
        checked(response, "head", key, MAX_OBJECT).await?;
        Ok(lock)
    }
}

const S3_XML_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// A page of `ListObjectVersions`, with only what anchors need.
#[derive(FromXml)]
#[xml(rename = "ListVersionsResult", ns(S3_XML_NS))]
struct VersionListing {
    versions: Vec<ListedVersion>,
    delete_markers: Vec<ListedDeleteMarker>,
    #[xml(rename = "IsTruncated")]
    is_truncated: Option<bool>,
    #[xml(rename = "NextKeyMarker")]
    next_key_marker: Option<String>,
    #[xml(rename = "NextVersionIdMarker")]
    next_version_id_marker: Option<String>,
}

#[derive(FromXml)]
#[xml(rename = "Version", ns(S3_XML_NS))]
struct ListedVersion {
    #[xml(rename = "Key")]
    key: String,
    #[xml(rename = "LastModified")]
    last_modified: Option<String>,
    #[xml(rename = "VersionId")]
    version_id: Option<String>,
}

#[derive(FromXml)]
#[xml(rename = "DeleteMarker", ns(S3_XML_NS))]
struct ListedDeleteMarker {
    #[xml(rename = "Key")]
    key: String,
    #[xml(rename = "IsLatest")]
    is_latest: Option<bool>,
}

fn too_many(prefix: &str, page_size: usize) -> AnchorError {
    AnchorError::Malformed(format!(
        "more than {} objects under {prefix}: not an anchor prefix",
        MAX_PAGES * page_size
    ))
}

/// Text from S3 fit for a log line: no control characters (a newline could forge a line),
/// at most 200 characters.
pub(super) fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// A transport error, without the signed URL reqwest would otherwise print.
fn transport(e: reqwest::Error) -> AnchorError {
    AnchorError::Unreachable(e.without_url().to_string())
}

/// `action` signed, for the object version named (the latest when `None`).
fn signed_for_version<'a>(mut action: impl S3Action<'a>, version: Option<&str>) -> url::Url {
    if let Some(version) = version {
        action.query_mut().insert("versionId", version.to_string());
    }
    action.sign(SIGNATURE_LIFETIME)
}

/// The body of `response`, or `None` when it is longer than `limit` bytes (read no further).
pub(super) async fn read_capped(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// S3's error answer (`<Error><Code>…</Code><Message>…</Message>…</Error>`).
#[derive(FromXml)]
#[xml(rename = "Error")]
struct ErrorAnswer {
    #[xml(rename = "Code")]
    code: Option<String>,
    #[xml(rename = "Message")]
    message: Option<String>,
}

/// The body of a successful answer; an error answer as [`AnchorError::Refused`] with S3's
/// error code and message (never the request's URL).
async fn checked(
    mut response: reqwest::Response,
    what: &'static str,
    key: &str,
    limit: usize,
) -> Result<Vec<u8>, AnchorError> {
    let status = response.status();
    let body = read_capped(&mut response, limit)
        .await
        .map_err(transport)?
        .ok_or_else(|| {
            AnchorError::Malformed(format!("an answer to {what} {key} over {limit} bytes"))
        })?;
    if status.is_success() {
        return Ok(body);
    }
    // A HEAD's answer has no body; anything else that is not S3's error shape says nothing.
    let answer = std::str::from_utf8(&body)
        .ok()
        .and_then(|text| instant_xml::from_str::<ErrorAnswer>(text).ok());
    let (code, message) = answer.map(|a| (a.code, a.message)).unwrap_or_default();
    Err(AnchorError::Refused {
        what,
        key: key.to_string(),
        status: status.as_u16(),
        code: code.as_deref().map(printable).unwrap_or_default(),
        message: message.as_deref().map(printable).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AnchorConfig, AnchorCredentials, Secret};

    /// Signatures computed by botocore 1.44.8 (the AWS SDK for Python) for the same requests:
    /// AWS S3 accepts exactly these.
    const BOTOCORE_LIST_VERSIONS: &str =
        "b49e5f9f8cf4ec096a951312ab9eee1ac6cf11296b78cc7302e4d9cf84cd2d35";
    const BOTOCORE_PUT: &str = "e2b7869f5ac7465138f32208cd80814ee07a02b74575d93052071fd955143e2a";

    fn bucket() -> AnchorBucket {
        bucket_named("acme-anchors")
    }

    fn bucket_named(name: &str) -> AnchorBucket {
        bucket_at(name, None)
    }

    fn bucket_at(name: &str, endpoint: Option<url::Url>) -> AnchorBucket {
        // As the binaries do at start (reqwest is built without a provider of its own).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = AnchorConfig {
            bucket: name.into(),
            prefix: "audit-anchors/".into(),
            region: "eu-west-1".into(),
            endpoint,
            interval: Duration::from_secs(300),
            retention: Duration::from_secs(86_400),
            credentials: AnchorCredentials::Static {
                access_key_id: "AKIAEXAMPLE".into(),
                secret_access_key: Secret::new("secret/EXAMPLE+key".to_string()),
                session_token: Some(Secret::new("session-token/+=".to_string())),
            },
        };
        AnchorBucket::new(&config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn credentials() -> Credentials {
        Credentials::new_with_token("AKIAEXAMPLE", "secret/EXAMPLE+key", "session-token/+=")
    }

    fn signature(url: &url::Url) -> String {
        url.query_pairs()
            .find(|(k, _)| k == "X-Amz-Signature")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    }

    fn at() -> jiff::Timestamp {
        // 2026-12-03T01:02:03Z
        jiff::Timestamp::from_second(1_796_259_723).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn version_listings_are_signed_as_aws_signs_them() {
        let marker = (
            "audit-anchors/00000000000000000007-ab.json".to_string(),
            "v+1".to_string(),
        );
        let url = bucket().versions_url(&credentials(), Some(&marker), &at());
        assert_eq!(
            url.host_str(),
            Some("acme-anchors.s3.eu-west-1.amazonaws.com")
        );
        assert_eq!(signature(&url), BOTOCORE_LIST_VERSIONS, "{url}");
    }

    #[test]
    fn locked_puts_are_signed_as_aws_signs_them() {
        let headers = [
            ("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg=="),
            ("content-type", "application/json"),
            ("x-amz-object-lock-mode", "COMPLIANCE"),
            (
                "x-amz-object-lock-retain-until-date",
                "2028-01-07T01:02:03Z",
            ),
        ];
        let url = bucket().put_url(
            &credentials(),
            "audit-anchors/00000000000000000007-ab.json",
            &headers,
            &at(),
        );
        assert_eq!(signature(&url), BOTOCORE_PUT, "{url}");
        let signed = url
            .query_pairs()
            .find(|(k, _)| k == "X-Amz-SignedHeaders")
            .map(|(_, v)| v.into_owned());
        assert_eq!(
            signed.as_deref(),
            Some(
                "content-md5;content-type;host;x-amz-object-lock-mode;\
                 x-amz-object-lock-retain-until-date"
            )
        );
    }

    #[test]
    fn a_dotted_bucket_name_is_addressed_by_path_on_aws() {
        // As a host name it would not match AWS's *.s3.<region>.amazonaws.com certificate.
        let url = bucket_named("acme.anchors").versions_url(&credentials(), None, &at());
        assert_eq!(url.host_str(), Some("s3.eu-west-1.amazonaws.com"));
        assert_eq!(url.path(), "/acme.anchors/");
    }

    /// A hostile S3 on a loopback port: every answer is `status` with `body`.
    async fn hostile_s3(status: u16, body: &'static str) -> AnchorBucket {
        let app = axum::Router::new().fallback(move || async move {
            let status = axum::http::StatusCode::from_u16(status)
                .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
            (status, body)
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let endpoint = url::Url::parse(&format!("http://{addr}")).ok();
        bucket_at("acme-anchors", endpoint)
    }

    #[tokio::test]
    async fn a_listing_that_never_moves_on_ends() {
        let bucket = hostile_s3(
            200,
            "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <IsTruncated>true</IsTruncated><NextContinuationToken>again</NextContinuationToken>\
             <Contents><Key>audit-anchors/x</Key></Contents></ListBucketResult>",
        )
        .await;
        let listed = bucket.list(None).await;
        assert!(
            matches!(&listed, Err(AnchorError::Malformed(m)) if m.contains("repeats")),
            "{listed:?}"
        );
    }

    #[tokio::test]
    async fn a_version_listing_that_never_moves_on_ends() {
        let bucket = hostile_s3(
            200,
            "<ListVersionsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <IsTruncated>true</IsTruncated><NextKeyMarker>k</NextKeyMarker>\
             <NextVersionIdMarker>v</NextVersionIdMarker></ListVersionsResult>",
        )
        .await;
        let listed = bucket.list_versions().await;
        assert!(
            matches!(&listed, Err(AnchorError::Malformed(m)) if m.contains("repeats")),
            "{listed:?}"
        );
    }

    #[tokio::test]
    async fn s3_errors_are_reported_by_code_and_message_fit_for_a_log() {
        let bucket = hostile_s3(
            403,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>\
             <Message>Access Denied\n{\"level\":\"INFO\"}</Message><RequestId>r</RequestId>\
             <HostId>h</HostId></Error>",
        )
        .await;
        let error = bucket.get("audit-anchors/x", None).await.err();
        let shown = error.map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            shown,
            "S3 refused to get audit-anchors/x: 403 AccessDenied Access Denied{\"level\":\"INFO\"}"
        );
        // Not S3's error shape: the status alone.
        let bucket = hostile_s3(502, "<html>bad gateway</html>").await;
        let shown = bucket
            .lock_of("audit-anchors/x", Some("v1"))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(shown, "S3 refused to head audit-anchors/x: 502  ");
    }

    #[test]
    fn control_characters_never_reach_a_log_line() {
        assert_eq!(printable("Access\nDenied\r\u{1b}[31m"), "AccessDenied[31m");
        assert_eq!(printable(&"x".repeat(500)).len(), 200);
    }
}
