//! The notifier's background task: turn new audit events into queued messages, send what is
//! due, and forget what was sent long ago.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use gateway_core::config::NotifyConfig;
use tokio::task::JoinHandle;
use url::Url;

use super::email::Mailer;
use super::refusals::RefusalCounts;
use super::render::{self, Origin};
use super::rules::{self, Verdict};
use super::slack::Slack;
use super::{Delivery, Notice};
use crate::log_throttle::Throttle;
use crate::metrics::Metrics;
use crate::store::{NewNotification, NotificationRow, Store, StoreError, now_ms};

/// Time between two rounds when there is nothing more to do.
const POLL: Duration = Duration::from_secs(1);
/// Most audit events read in one round.
const SCAN_BATCH: i64 = 200;
/// Most messages sent in one round.
const SEND_BATCH: i64 = 20;
/// How long a claimed message is this instance's to send (then another may).
const LEASE_MS: i64 = 120_000;
/// Attempts before a message is given up on (about six hours with [`backoff_ms`]).
pub const MAX_ATTEMPTS: i64 = 12;
/// Events older than this when first read are not announced (a notifier turned on after a
/// long time off would otherwise send weeks-old news).
const MAX_EVENT_AGE_MS: i64 = 24 * 3600 * 1000;
/// How long sent (and given-up) messages are kept, for `notify list`.
const KEEP_MS: i64 = 30 * 24 * 3600 * 1000;
/// Time between two prunings.
const PRUNE_EVERY_MS: i64 = 3600 * 1000;

static STORE_TROUBLE: Throttle = Throttle::new(60_000);

/// The channels messages go out on.
#[derive(Debug, Clone)]
pub struct Channels {
    /// Slack, when configured.
    pub slack: Option<Slack>,
    /// E-mail, when configured.
    pub mailer: Option<Mailer>,
    /// `EMAIL_ALERTS_TO`.
    pub alerts_to: Vec<String>,
    /// Approving from Slack is on: deploy requests' messages carry Approve and Reject.
    pub decisions_in_slack: bool,
    /// `NOTIFY_REFUSAL_BURST`: refusals of one credential within five minutes that make a
    /// notice (0: none; see [`RefusalCounts`]).
    pub refusal_burst: usize,
    /// `NOTIFY_OFF`: topics sent on no channel.
    pub off: Vec<String>,
}

impl Channels {
    /// The channels `config` sets up.
    pub fn new(config: &NotifyConfig) -> Result<Channels, String> {
        Ok(Channels {
            slack: config.slack.clone().map(Slack::new).transpose()?,
            mailer: config.email.as_ref().map(Mailer::new).transpose()?,
            alerts_to: config
                .email
                .as_ref()
                .map(|e| e.alerts_to.clone())
                .unwrap_or_default(),
            decisions_in_slack: config.slack.as_ref().is_some_and(|s| s.app.is_some()),
            refusal_burst: config.refusal_burst,
            off: config.off.clone(),
        })
    }

    /// The messages `notice` (from audit event `seq`) makes on these channels: one for Slack,
    /// one per e-mail recipient (each address once); none when its topic is off.
    pub fn messages(&self, notice: &Notice, seq: i64, origin: &Origin) -> Vec<NewNotification> {
        let mut out = Vec::new();
        if self.off.iter().any(|t| t == notice.topic.as_str()) {
            return out;
        }
        if notice.slack && self.slack.is_some() {
            out.push(NewNotification {
                channel: "slack",
                recipient: String::new(),
                topic: notice.topic.as_str(),
                message: render::slack(notice, origin, self.decisions_in_slack).to_string(),
                audit_seq: seq,
            });
        }
        if self.mailer.is_some() {
            let alerts = notice
                .alert
                .then_some(&self.alerts_to)
                .into_iter()
                .flatten();
            let mut seen = HashSet::new();
            let email = render::email(notice, origin);
            let message = serde_json::to_string(&email).unwrap_or_default();
            for to in notice.email_to.iter().chain(alerts) {
                let to = to.trim();
                if to.is_empty() || !seen.insert(to.to_ascii_lowercase()) {
                    continue;
                }
                out.push(NewNotification {
                    channel: "email",
                    recipient: to.to_string(),
                    topic: notice.topic.as_str(),
                    message: message.clone(),
                    audit_seq: seq,
                });
            }
        }
        out
    }

    /// Sends one queued message.
    pub async fn deliver(&self, row: &NotificationRow) -> Delivery {
        match row.channel.as_str() {
            "slack" => match &self.slack {
                Some(slack) => slack.post(&row.message).await,
                None => Delivery::Failed {
                    error: "SLACK_WEBHOOK_URL is no longer set".into(),
                },
            },
            "email" => match (
                &self.mailer,
                serde_json::from_str::<render::Email>(&row.message),
            ) {
                (Some(mailer), Ok(email)) => mailer.send(&row.recipient, &email).await,
                (None, _) => Delivery::Failed {
                    error: "SMTP_URL is no longer set".into(),
                },
                (_, Err(e)) => Delivery::Failed {
                    error: format!("unreadable queued e-mail: {e}"),
                },
            },
            other => Delivery::Failed {
                error: format!("unknown channel {other:?}"),
            },
        }
    }
}

/// Milliseconds before attempt `attempts + 1`: 30 s, doubling, at most an hour.
pub fn backoff_ms(attempts: i64) -> i64 {
    let doublings = attempts.clamp(1, 8) - 1;
    (30_000_i64 << doublings).min(3_600_000)
}

/// The running notifier; stopped with [`Notifier::stop`].
#[derive(Debug)]
pub struct Notifier {
    task: JoinHandle<()>,
}

impl Notifier {
    /// Stops it. A message being sent may be sent again by the next start (its claim runs
    /// out): at least once, not exactly once.
    pub fn stop(self) {
        self.task.abort();
    }
}

/// Starts the notifier when `config` sets up a channel.
pub fn spawn(
    store: Store,
    config: &NotifyConfig,
    public_url: Option<Url>,
    metrics: Arc<Metrics>,
) -> Result<Option<Notifier>, String> {
    if config.is_off() {
        return Ok(None);
    }
    let channels = Channels::new(config)?;
    let origin = Origin::new(public_url);
    let task = tokio::spawn(async move {
        let mut pruned_at = 0;
        loop {
            let now = now_ms();
            let more = match round(&store, &channels, &origin, &metrics, now).await {
                Ok(more) => more,
                Err(e) => {
                    if let Some(held) = STORE_TROUBLE.admit() {
                        tracing::warn!(error = %e, held_back = held, "notifications: the store did not answer; trying again");
                    }
                    false
                }
            };
            if now - pruned_at > PRUNE_EVERY_MS {
                pruned_at = now;
                if let Err(e) = store.prune_notifications(now - KEEP_MS).await {
                    tracing::debug!(error = %e, "notifications: old ones not pruned");
                }
            }
            if !more {
                tokio::time::sleep(POLL).await;
            }
        }
    });
    Ok(Some(Notifier { task }))
}

/// One round: queue the notices of new events, then send what is due. Whether there is more
/// to do at once.
async fn round(
    store: &Store,
    channels: &Channels,
    origin: &Origin,
    metrics: &Metrics,
    now: i64,
) -> Result<bool, StoreError> {
    let more_events = scan(store, channels, origin, now).await?;
    let more_messages = send_due(store, channels, metrics, now).await?;
    Ok(more_events || more_messages)
}

/// Queues the notices of the events past the cursor. Whether more events are waiting to be
/// read at once (a full batch; not an event that is waiting to settle).
pub async fn scan(
    store: &Store,
    channels: &Channels,
    origin: &Origin,
    now: i64,
) -> Result<bool, StoreError> {
    let head = store.chain_head().await?.seq;
    let cursor = store.notify_cursor(head).await?;
    if cursor > head {
        // The database was restored from an older copy (or the chain started over): go on
        // from its head rather than wait for the chain to grow past a cursor it no longer has.
        tracing::warn!(
            cursor,
            head,
            "notifications: the audit chain is behind the notifier's cursor; going on from its head"
        );
        store
            .queue_notifications(cursor, head, &[], None, now)
            .await?;
        return Ok(false);
    }
    if cursor == head {
        return Ok(false);
    }
    let rows = store
        .notable_events_between(cursor, head, SCAN_BATCH)
        .await?;
    let full = rows.len() as i64 == SCAN_BATCH;
    // Read through the head, unless the batch was full (then through its last event) or an
    // event is not settled yet (then up to just before it).
    let mut to = match rows.last() {
        Some(last) if full => last.seq,
        _ => head,
    };
    // Read after the cursor: if another instance moves both meanwhile, the cursor's
    // compare-and-set below fails and nothing read here is kept.
    let counted = RefusalCounts::from_stored(store.refusal_counts().await?.as_deref());
    let mut counts = counted.clone();
    let mut queued = Vec::new();
    let mut waiting = false;
    for row in &rows {
        if now.saturating_sub(row.event.ts) > MAX_EVENT_AGE_MS {
            continue;
        }
        match rules::notices(store, row, now).await? {
            Verdict::NotYet => {
                to = row.seq - 1;
                waiting = true;
                break;
            }
            Verdict::Notices(notices) => {
                for notice in &notices {
                    queued.extend(channels.messages(notice, row.seq, origin));
                }
            }
        }
        if let Some(burst) = counts.note(&row.event, channels.refusal_burst) {
            let notice = rules::refusal_burst(&burst);
            queued.extend(channels.messages(&notice, row.seq, origin));
        }
    }
    if to == cursor {
        return Ok(false);
    }
    if let Some(last) = rows.iter().rfind(|r| r.seq <= to) {
        counts.forget_before(last.event.ts);
    }
    let counts = (counts != counted).then(|| counts.to_stored());
    // Lost to another instance: it queued these; go on from where it got to.
    let _ = store
        .queue_notifications(cursor, to, &queued, counts.as_deref(), now)
        .await?;
    Ok(full && !waiting)
}

/// Sends the messages due at `now`. Whether a full batch was claimed (more may be due).
pub async fn send_due(
    store: &Store,
    channels: &Channels,
    metrics: &Metrics,
    now: i64,
) -> Result<bool, StoreError> {
    let claimed = store.claim_notifications(now, LEASE_MS, SEND_BATCH).await?;
    let full = claimed.len() as i64 == SEND_BATCH;
    for row in claimed {
        // The batch's claim was taken at `now`; each message gets a whole lease of its own
        // right before it is sent, or is left to the instance that took it meanwhile.
        let Some(batch_claim) = row.claimed_until else {
            continue;
        };
        let claim = now_ms().saturating_add(LEASE_MS);
        if !store
            .renew_notification_claim(row.id, batch_claim, claim)
            .await?
        {
            tracing::debug!(
                id = row.id,
                "notification taken by another instance; not sent here"
            );
            continue;
        }
        let delivery = channels.deliver(&row).await;
        let done_at = now_ms();
        let recorded = match delivery {
            Delivery::Sent => {
                metrics.observe_notification(&row.channel, "sent");
                tracing::info!(id = row.id, channel = %row.channel, topic = %row.topic, "notification sent");
                store.notification_sent(row.id, claim, done_at).await?
            }
            Delivery::Retry { error, after_secs } if row.attempts < MAX_ATTEMPTS => {
                metrics.observe_notification(&row.channel, "retry");
                // Slack's `Retry-After` says when; otherwise back off. At least a second,
                // at most an hour, whatever a service asks for.
                let wait = match after_secs {
                    Some(secs) => i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX),
                    None => backoff_ms(row.attempts),
                }
                .clamp(1000, 3_600_000);
                tracing::warn!(id = row.id, channel = %row.channel, attempts = row.attempts, retry_in_secs = wait / 1000, %error, "notification not sent; trying again");
                store
                    .notification_failed(
                        row.id,
                        claim,
                        &error,
                        done_at,
                        Some(done_at.saturating_add(wait)),
                    )
                    .await?
            }
            Delivery::Retry { error, .. } | Delivery::Failed { error } => {
                metrics.observe_notification(&row.channel, "failed");
                tracing::error!(id = row.id, channel = %row.channel, topic = %row.topic, attempts = row.attempts, %error, "notification given up on (rack-gateway-server notify list --failed)");
                store
                    .notification_failed(row.id, claim, &error, done_at, None)
                    .await?
            }
        };
        if !recorded {
            // Its lease ran out during the send (a send is bounded well inside one): another
            // instance may send it too.
            tracing::warn!(id = row.id, channel = %row.channel, "a notification's claim ran out while it was sent; another instance may send it again");
        }
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_thirty_seconds_to_an_hour() {
        let waits: Vec<i64> = (1..=MAX_ATTEMPTS).map(|n| backoff_ms(n) / 1000).collect();
        assert_eq!(
            waits,
            [
                30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600, 3600
            ]
        );
        assert_eq!(backoff_ms(0), 30_000);
    }
}
