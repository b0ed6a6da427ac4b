//! `audit verify`: re-computes the chain from the database and, when `AUDIT_ANCHOR_BUCKET` is
//! set, checks it against every anchor in S3. Read-only: the database under examination is
//! evidence (no migrations, no key generated, no file created).

use std::time::{Duration, SystemTime};

use crate::output::outln;
use anyhow::Context;
use gateway::audit::anchor::{self, Anchor, AnchorBucket, AnchorRef, CHAIN_ID_SETTING, ObjectLock};
use gateway::audit::{KeySource, VerifyError, VerifyReport, key_ring, verify_chain_against};
use gateway::config::{AnchorConfig, StoreConfig, parse_anchors};
use gateway::store::{Store, now_ms, unix_ms};

/// Slack on "should have been anchored by now": an anchor's write takes a moment.
const ANCHOR_SLACK: Duration = Duration::from_secs(60);

/// Runs `audit verify`; an error (non-zero exit) when the chain or its anchors fail.
pub async fn run() -> anyhow::Result<()> {
    let config = StoreConfig::from_env().context("configuration")?;
    let anchors_config =
        parse_anchors(&|name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
            .context("configuration")?;
    // Anchors first: each names an event the chain had when it was written, so listed before
    // the chain's head is read, none can name one the walk won't reach. "Overdue" is judged
    // as of now, not of the end of a long walk.
    let listed_at = now_ms();
    let anchors = match &anchors_config {
        Some(anchors) => Some(Anchors::list(anchors).await?),
        None => None,
    };
    // Said before the chain is walked: evidence whether or not the chain holds.
    let deleted = anchors.as_ref().and_then(Anchors::deleted);
    if let Some(deleted) = &deleted {
        eprintln!("error: {deleted}");
    }
    let store = Store::open_read_only(&config.database_url)
        .await
        .context("cannot open the database (DATABASE_URL)")?;
    let checked = check(&store, &config, anchors.as_ref(), listed_at).await;
    store.close().await;
    let (report, source, found) = checked?;
    let Findings { problems, notes } = found;
    // A stdout that fails must not keep the problems below from being told (on stderr) and
    // failing the command: its own error comes last.
    let shown = outln!(
        "audit chain OK: {} events, head {}",
        report.events,
        report.head_hash
    );
    let hidden = anchors.as_ref().map_or(0, |a| a.listing.hidden.len());
    let anchors_shown = match &anchors {
        Some(anchors) => anchors.print(&report, problems.is_empty() && hidden == 0),
        None => {
            eprintln!(
                "note: no anchors configured (AUDIT_ANCHOR_BUCKET): the chain shows edits by \
                 anyone without the key, but not a rebuild by someone holding it, nor a \
                 database replaced by an older copy (see docs/deployment.md)"
            );
            Ok(())
        }
    };
    if source == KeySource::Generated {
        // The key sits in the database it protects: whoever can write the database could
        // have rebuilt the whole chain, and it would still verify.
        eprintln!(
            "warning: the chain's key was generated and is kept in this database, so a \
             database writer could rebuild the chain undetected; set AUDIT_HMAC_KEY (see \
             docs/configuration.md) for a chain the database alone cannot forge"
        );
    }
    for note in &notes {
        eprintln!("warning: {note}");
    }
    for problem in &problems {
        eprintln!("error: {problem}");
    }
    let count = problems.len() + hidden;
    if count > 0 {
        anyhow::bail!(
            "the chain itself is intact, but its anchors show {count} problem(s) (above)"
        );
    }
    shown.and(anchors_shown)?;
    Ok(())
}

/// Verifies the chain (against the anchors, if any) and lists what the anchors say is wrong
/// beyond a broken link.
async fn check(
    store: &Store,
    config: &StoreConfig,
    anchors: Option<&Anchors>,
    listed_at: i64,
) -> anyhow::Result<(VerifyReport, KeySource, Findings)> {
    crate::admin::require_current_schema(store).await?;
    let (keys, source) = key_ring(
        config.audit_hmac_key.as_ref(),
        config.audit_hmac_key_next.as_ref(),
        &config.audit_hmac_key_retired,
        store,
    )
    .await?;
    let mut refs: Vec<AnchorRef> = anchors.map(|a| a.refs().to_vec()).unwrap_or_default();
    let mut planted = Vec::new();
    let report = loop {
        match verify_chain_against(store, &keys, &refs).await {
            Ok(report) => break report,
            // The chain disagrees with an anchor. An anchor the gateway wrote is locked and
            // belongs to this chain; one that is not was put there by someone else with
            // write access to the bucket, and says nothing about the database: it is named
            // as such, and the chain checked against the others.
            Err(VerifyError::AnchorMismatch {
                key: anchor_key, ..
            }) if let Some(anchors) = anchors
                && let Some(why) = anchors.not_genuine(&anchor_key).await? =>
            {
                planted.push(format!(
                    "{anchor_key} in {} is not an anchor the gateway wrote ({why}): someone \
                     with write access to the bucket put it there; the chain was checked \
                     against the other anchors",
                    anchors.location
                ));
                refs.retain(|r| r.key != anchor_key);
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut found = match anchors {
        Some(anchors) => anchors.problems(store, &report, listed_at).await?,
        None => Findings::default(),
    };
    found.problems.extend(planted);
    Ok((report, source, found))
}

/// What the anchors show besides a broken link or a deleted anchor.
#[derive(Debug, Default)]
struct Findings {
    /// Failures: verification exits non-zero.
    problems: Vec<String>,
    /// Worth an auditor's attention, though nothing failed (a pause in anchoring that ended).
    notes: Vec<String>,
}

/// The anchors found in S3.
struct Anchors {
    config: AnchorConfig,
    location: String,
    listing: anchor::AnchorListing,
    /// The newest anchor's first version: its content and Object Lock.
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
        // The newest anchor as first written: under Object Lock that version stays, even
        // behind a delete marker, and a later version (claiming another time, another chain)
        // cannot replace it.
        let newest = match listing.anchors.last() {
            Some(newest) => {
                let first = listing.first_versions.get(&newest.key);
                let version = first.and_then(|f| f.version_id.as_deref());
                let content = anchor::read_anchor(&bucket, newest, version)
                    .await
                    .with_context(|| format!("the newest anchor in {location}"))?;
                let lock = bucket.lock_of(&newest.key, version).await?;
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

    /// Why the anchor at `key` is not one the gateway wrote — its first version is not an
    /// anchor, or is not under a COMPLIANCE lock — or `None` when it may be (then the chain
    /// is at fault).
    async fn not_genuine(&self, key: &str) -> anyhow::Result<Option<String>> {
        let Some(anchor) = self.listing.anchors.iter().find(|a| a.key == key) else {
            return Ok(None);
        };
        let bucket = AnchorBucket::new(&self.config)?;
        let version = self
            .listing
            .first_versions
            .get(key)
            .and_then(|f| f.version_id.as_deref());
        if let Err(e) = anchor::read_anchor(&bucket, anchor, version).await {
            return Ok(Some(format!("its content is not an anchor's: {e}")));
        }
        let lock = bucket.lock_of(key, version).await?;
        if lock.mode.as_deref() != Some("COMPLIANCE") {
            return Ok(Some(format!(
                "it has no COMPLIANCE lock (mode {})",
                lock.mode.as_deref().unwrap_or("none")
            )));
        }
        // Another chain's locked anchor counts as genuine: this database was replaced, and
        // the newest anchor's chain id check says so.
        Ok(None)
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
    async fn problems(
        &self,
        store: &Store,
        report: &VerifyReport,
        listed_at: i64,
    ) -> anyhow::Result<Findings> {
        let mut problems = Vec::new();
        let location = &self.location;
        // The writer's interval when the newest anchor names it (it may differ from this
        // command's environment), never shorter than the configured one.
        // Bounded as the setting is: whoever can write to the bucket could name any interval
        // there (near `u64::MAX` seconds, the sums below overflowed).
        let interval = self
            .newest
            .as_ref()
            .and_then(|(_, content, _)| content.interval_secs)
            .map(|secs| Duration::from_secs(secs.min(gateway::config::MAX_SECONDS)))
            .unwrap_or_default()
            .max(self.config.interval);
        let window = interval.saturating_add(ANCHOR_SLACK);
        let overdue_before =
            listed_at.saturating_sub(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
        let Some(last) = self.listing.anchors.last() else {
            // A new chain's first events wait up to one interval for their anchor.
            if let Some((seq, ts)) = store
                .first_event_between(0, report.events, i64::MIN, overdue_before)
                .await?
            {
                problems.push(format!(
                    "no anchors in {location}, though event {seq} ({}) is older than one \
                     interval ({} s): a wrong bucket or prefix, or a gateway that cannot write \
                     them (its log says \"audit anchor not written\")",
                    time(ts),
                    interval.as_secs()
                ));
            }
            return Ok(Findings {
                problems,
                notes: Vec::new(),
            });
        };
        if let Some((newest, content, lock)) = &self.newest {
            if lock.mode.as_deref() != Some("COMPLIANCE") {
                problems.push(format!(
                    "S3 reports no COMPLIANCE lock on the newest anchor {} (mode {}): without \
                     Object Lock on the bucket anchors can be deleted (docs/deployment.md); or \
                     these credentials may not read it (s3:GetObjectRetention)",
                    newest.key,
                    lock.mode.as_deref().unwrap_or("none")
                ));
            }
            let chain_id = store.setting(CHAIN_ID_SETTING).await?;
            if chain_id.as_deref() != Some(content.chain_id.as_str()) {
                problems.push(format!(
                    "the newest anchor {} belongs to chain {}, this database's chain is {}: \
                     another database shares this prefix, or this one was replaced",
                    newest.key,
                    content.chain_id,
                    chain_id.as_deref().unwrap_or("(never anchored)")
                ));
            }
        }
        // Anchors are written every interval while events are added, and at shutdown: events
        // well after the last anchor's time, and old enough to have been anchored since, mean
        // anchoring stopped (switched off, failing, or kept from writing). The anchor's time
        // is the earlier of what its first version says and when S3 stored that version.
        let said = self
            .newest
            .as_ref()
            .and_then(|(_, content, _)| anchor::parse_time(&content.written_at));
        let stored = self
            .listing
            .first_versions
            .get(&last.key)
            .and_then(|f| f.stored_at.as_deref())
            .and_then(anchor::parse_time);
        let anchored_at = match (said, stored) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(anchored_at) = anchored_at {
            let due = unix_ms(anchored_at)
                .saturating_add(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
            if let Some((seq, ts)) = store
                .first_event_between(last.seq, report.events, due, overdue_before)
                .await?
            {
                problems.push(format!(
                    "event {seq} ({}) and later are not anchored, though the last anchor was \
                     written at {} and anchors are due every {} s: anchoring stopped (see the \
                     gateway's log; a gateway stopped with kill -9 right after a quiet spell \
                     leaves this too, until it runs again)",
                    time(ts),
                    gateway::audit::format_time(anchored_at),
                    interval.as_secs()
                ));
            }
        }
        let mut notes = self.pauses(store, window).await?;
        if interval > self.config.interval {
            notes.push(format!(
                "the newest anchor names an interval of {} s, longer than \
                 AUDIT_ANCHOR_INTERVAL_SECS here ({} s): overdue anchors were judged by it",
                interval.as_secs(),
                self.config.interval.as_secs()
            ));
        }
        Ok(Findings { problems, notes })
    }

    /// Pauses in anchoring that ended: two anchors, one after the other, further apart (as
    /// S3 stored them) than the interval allows, with events between them old enough to have
    /// been anchored sooner. Those events were protected by the chain alone meanwhile (S3
    /// unreachable, or refusing the gateway's writes; admin commands run while no gateway
    /// was serving leave this too). Only pairs that far apart are looked into.
    async fn pauses(&self, store: &Store, window: Duration) -> anyhow::Result<Vec<String>> {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        let stored = |a: &AnchorRef| {
            self.listing
                .first_versions
                .get(&a.key)
                .and_then(|f| f.stored_at.as_deref())
                .and_then(anchor::parse_time)
                .map(unix_ms)
        };
        let mut notes = Vec::new();
        for (earlier, later, late_from, late_to) in
            far_apart(&self.listing.anchors, stored, window_ms)
        {
            if let Some((seq, ts)) = store
                .first_event_between(earlier.seq, later.seq, late_from, late_to)
                .await?
            {
                notes.push(format!(
                    "anchoring paused: event {seq} ({}) waited until {} for its anchor ({}), \
                     longer than the interval allows; events {seq}–{} were protected by the \
                     chain alone meanwhile (S3 unreachable or refusing the gateway's writes — \
                     its log says \"audit anchor not written\" — or admin commands run while \
                     no gateway was serving)",
                    time(ts),
                    time(late_to.saturating_add(window_ms)),
                    later.key,
                    later.seq
                ));
            }
        }
        Ok(notes)
    }

    /// The anchors' part of a successful verification.
    fn print(&self, report: &VerifyReport, ok: bool) -> anyhow::Result<()> {
        let verdict = if ok { "anchors OK" } else { "anchors checked" };
        if self.listing.others > 0 {
            eprintln!(
                "note: {} stored version(s) of other objects in {} are not anchors and were \
                 ignored",
                self.listing.others, self.location
            );
        }
        match (report.last_anchored, &self.newest) {
            (Some(last), Some((_, content, _))) => outln!(
                "{verdict}: {} in {}, the newest at event {last} ({} events since), written {}",
                report.anchors_checked,
                self.location,
                report.events - last,
                content.written_at
            ),
            (Some(last), None) => outln!(
                "{verdict}: {} in {}, the newest at event {last} ({} events since)",
                report.anchors_checked,
                self.location,
                report.events - last
            ),
            // When the missing anchors are a problem, the error says so instead.
            (None, _) if ok => {
                eprintln!(
                    "note: no anchors in {} yet (the gateway writes one within \
                     AUDIT_ANCHOR_INTERVAL_SECS of the first events)",
                    self.location
                );
                Ok(())
            }
            (None, _) => Ok(()),
        }
    }
}

/// Consecutive anchors (in chain order) that S3 stored more than `window_ms` apart, with the
/// times an event between them must fall within to have waited too long for the later one:
/// written a window after the earlier anchor, and a window before the later one.
fn far_apart(
    anchors: &[AnchorRef],
    stored: impl Fn(&AnchorRef) -> Option<i64>,
    window_ms: i64,
) -> Vec<(&AnchorRef, &AnchorRef, i64, i64)> {
    anchors
        .windows(2)
        .filter_map(|pair| {
            let [earlier, later] = pair else { return None };
            let (from, to) = (stored(earlier)?, stored(later)?);
            (later.seq > earlier.seq && to.saturating_sub(from) > window_ms.saturating_mul(2)).then(
                || {
                    (
                        earlier,
                        later,
                        from.saturating_add(window_ms),
                        to.saturating_sub(window_ms),
                    )
                },
            )
        })
        .collect()
}

/// An event's time (unix ms) as the audit log writes it.
fn time(ms: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    gateway::audit::format_time(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: i64) -> AnchorRef {
        AnchorRef {
            key: format!("p/{seq}"),
            seq,
            hash: String::new(),
        }
    }

    #[test]
    fn only_anchors_stored_far_apart_are_looked_into() {
        let anchors = [at(1), at(5), at(5), at(9), at(20)];
        // Stored at 0 s, 100 s, 100 s, 500 s and 501 s; a window of 60 s.
        let times = |a: &AnchorRef| match a.seq {
            1 => Some(0),
            5 => Some(100_000),
            9 => Some(500_000),
            _ => Some(501_000),
        };
        let found: Vec<_> = far_apart(&anchors, times, 60_000)
            .into_iter()
            .map(|(a, b, from, to)| (a.seq, b.seq, from, to))
            .collect();
        // 1 → 5 is 100 s apart, under two windows: an event between could not have waited a
        // whole window after one anchor and before the next. 5 → 9 is 400 s apart.
        assert_eq!(found, [(5, 9, 160_000, 440_000)]);
        // No time from S3: nothing to judge by.
        assert!(far_apart(&anchors, |_| None, 60_000).is_empty());
    }
}
