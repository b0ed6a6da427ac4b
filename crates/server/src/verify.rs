//! `audit verify`: re-computes the chain from the database and, when `AUDIT_ANCHOR_BUCKET` is
//! set, checks it against every anchor in S3. Read-only: the database under examination is
//! evidence (no migrations, no key generated, no file created).

use std::time::{Duration, SystemTime};

use anyhow::Context;
use gateway::audit::anchor::{self, Anchor, AnchorBucket, AnchorRef, ObjectLock};
use gateway::audit::{KeySource, VerifyReport, existing_key, verify_chain_against};
use gateway::config::{AnchorConfig, StoreConfig, parse_anchors};
use gateway::store::{Store, now_ms};

/// The setting the gateway keeps its chain's id in (see the anchor job).
const CHAIN_ID_SETTING: &str = "audit_chain_id";
/// Slack on "should have been anchored by now": an anchor's write takes a moment.
const ANCHOR_SLACK: Duration = Duration::from_secs(60);

/// Runs `audit verify`; an error (non-zero exit) when the chain or its anchors fail.
pub async fn run() -> anyhow::Result<()> {
    let config = StoreConfig::from_env().context("configuration")?;
    let anchors_config =
        parse_anchors(&|name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
            .context("configuration")?;
    // Anchors first: each names an event the chain had when it was written, so listed before
    // the chain's head is read, none can name one the walk won't reach.
    let anchors = match &anchors_config {
        Some(anchors) => Some(Anchors::list(anchors).await?),
        None => None,
    };
    // Said before the chain is walked: evidence whether or not the chain holds.
    let deleted = anchors.as_ref().and_then(Anchors::deleted);
    if let Some(deleted) = &deleted {
        eprintln!("error: {deleted}");
    }
    let store = Store::open_existing(&config.database_url)
        .await
        .context("cannot open the database (DATABASE_URL)")?;
    let checked = check(&store, &config, anchors.as_ref()).await;
    store.close().await;
    let (report, source, problems) = checked?;
    println!(
        "audit chain OK: {} events, head {}",
        report.events, report.head_hash
    );
    match &anchors {
        Some(anchors) => anchors.print(&report),
        None => eprintln!(
            "note: no anchors configured (AUDIT_ANCHOR_BUCKET): the chain shows edits by anyone \
             without the key, but not a rebuild by someone holding it, nor a database replaced \
             by an older copy (see docs/deployment.md)"
        ),
    }
    if source == KeySource::Generated {
        // The key sits in the database it protects: whoever can write the database could
        // have rebuilt the whole chain, and it would still verify.
        eprintln!(
            "warning: the chain's key was generated and is kept in this database, so a \
             database writer could rebuild the chain undetected; set AUDIT_HMAC_KEY (see \
             docs/configuration.md) for a chain the database alone cannot forge"
        );
    }
    for problem in &problems {
        eprintln!("error: {problem}");
    }
    let count = problems.len() + usize::from(deleted.is_some());
    if count > 0 {
        anyhow::bail!(
            "the chain itself is intact, but its anchors show {count} problem(s) (above)"
        );
    }
    Ok(())
}

/// Verifies the chain (against the anchors, if any) and lists what the anchors say is wrong
/// beyond a broken link.
async fn check(
    store: &Store,
    config: &StoreConfig,
    anchors: Option<&Anchors>,
) -> anyhow::Result<(VerifyReport, KeySource, Vec<String>)> {
    let pending = store.migrations_pending().await?;
    if pending > 0 {
        anyhow::bail!(
            "the database's schema is {pending} migration(s) behind this version (or holds no \
             gateway data at all): check DATABASE_URL, and run `rack-gateway-server migrate` \
             (or start the gateway) first"
        );
    }
    let (key, source) = existing_key(config.audit_hmac_key.as_ref(), store).await?;
    let refs = anchors.map(|a| a.refs()).unwrap_or(&[]);
    let report = verify_chain_against(store, &key, refs).await?;
    let problems = match anchors {
        Some(anchors) => anchors.problems(store, &report).await?,
        None => Vec::new(),
    };
    Ok((report, source, problems))
}

/// The anchors found in S3.
struct Anchors {
    config: AnchorConfig,
    location: String,
    listing: anchor::AnchorListing,
    /// The newest anchor not hidden by a delete marker: its content and Object Lock.
    newest: Option<(AnchorRef, Anchor, ObjectLock)>,
}

impl Anchors {
    /// Lists every anchor (every version), and reads the newest one's content and lock.
    async fn list(config: &AnchorConfig) -> anyhow::Result<Anchors> {
        let location = match &config.endpoint {
            Some(endpoint) => format!("s3://{}/{} at {endpoint}", config.bucket, config.prefix),
            None => format!("s3://{}/{}", config.bucket, config.prefix),
        };
        let bucket = AnchorBucket::new(config)?;
        let listing = anchor::list_anchors(&bucket)
            .await
            .with_context(|| format!("cannot list the audit anchors in {location}"))?;
        // A hidden anchor's content is behind its delete marker; its key says what it anchors.
        let newest = listing
            .anchors
            .iter()
            .rev()
            .find(|a| !listing.hidden.contains(&a.key));
        let newest = match newest {
            Some(newest) => {
                let content = anchor::read_anchor(&bucket, newest)
                    .await
                    .with_context(|| format!("the newest anchor in {location}"))?;
                let lock = bucket.lock_of(&newest.key).await?;
                Some((newest.clone(), content, lock))
            }
            None => None,
        };
        Ok(Anchors {
            config: config.clone(),
            location,
            listing,
            newest,
        })
    }

    fn refs(&self) -> &[AnchorRef] {
        &self.listing.anchors
    }

    /// Anchors someone tried to delete, if any.
    fn deleted(&self) -> Option<String> {
        let first = self.listing.hidden.first()?;
        Some(format!(
            "{} anchor(s) in {} were deleted (a delete marker hides them; their locked versions \
             remain and are checked): someone with access to the bucket tried to remove \
             evidence. The first: {first}",
            self.listing.hidden.len(),
            self.location
        ))
    }

    /// What fails verification besides a broken link or a deleted anchor: no lock, anchors
    /// of another chain, none at all, or anchoring that stopped while events went on.
    async fn problems(&self, store: &Store, report: &VerifyReport) -> anyhow::Result<Vec<String>> {
        let mut problems = Vec::new();
        let location = &self.location;
        let Some((newest, content, lock)) = &self.newest else {
            if self.listing.anchors.is_empty() && report.events > 0 {
                problems.push(format!(
                    "no anchors in {location} while the chain has {} events: a wrong bucket or \
                     prefix, or a gateway that cannot write them (its log says \"audit anchor \
                     not written\")",
                    report.events
                ));
            }
            return Ok(problems);
        };
        if lock.mode.as_deref() != Some("COMPLIANCE") {
            problems.push(format!(
                "S3 reports no COMPLIANCE lock on the newest anchor {} (mode {}): without Object \
                 Lock on the bucket anchors can be deleted (docs/deployment.md); or these \
                 credentials may not read it (s3:GetObjectRetention)",
                newest.key,
                lock.mode.as_deref().unwrap_or("none")
            ));
        }
        let chain_id = store.setting(CHAIN_ID_SETTING).await?;
        if chain_id.as_deref() != Some(content.chain_id.as_str()) {
            problems.push(format!(
                "the newest anchor {} belongs to chain {}, this database's chain is {}: another \
                 database shares this prefix, or this one was replaced",
                newest.key,
                content.chain_id,
                chain_id.as_deref().unwrap_or("(never anchored)")
            ));
        }
        // Anchors are written every interval while events are added, and at shutdown: events
        // well after the newest anchor's time, and old enough to have been anchored since,
        // mean anchoring stopped (switched off, failing, or kept from writing).
        let written = humantime::parse_rfc3339_weak(content.written_at.trim_end_matches('Z'))
            .with_context(|| format!("the newest anchor's time {:?}", content.written_at))?;
        let window = self.config.interval + ANCHOR_SLACK;
        let from = ms(written + window);
        let to = now_ms() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        if let Some((seq, ts)) = store
            .first_event_between(newest.seq, report.events, from, to)
            .await?
        {
            problems.push(format!(
                "event {seq} ({}) and later are not anchored, though the newest anchor was \
                 written at {} and anchors are due every {} s: anchoring stopped; see the \
                 gateway's log",
                gateway::audit::format_time(SystemTime::UNIX_EPOCH + millis(ts)),
                content.written_at,
                self.config.interval.as_secs()
            ));
        }
        Ok(problems)
    }

    /// The anchors' part of a successful verification.
    fn print(&self, report: &VerifyReport) {
        if self.listing.others > 0 {
            eprintln!(
                "note: {} other object(s) in {} are not anchors and were ignored",
                self.listing.others, self.location
            );
        }
        if let (Some(last), Some((_, content, _))) = (report.last_anchored, &self.newest) {
            println!(
                "anchors OK: {} in {}, the newest at event {last} ({} events since), written {}",
                report.anchors_checked,
                self.location,
                report.events - last,
                content.written_at
            );
        }
    }
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .unwrap_or(i64::MAX)
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
