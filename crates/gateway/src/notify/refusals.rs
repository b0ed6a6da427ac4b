//! Bursts of refusals by one credential.
//!
//! A valid API token or a signed-in person refused again and again is someone trying what the
//! credential does not hold — a leaked CI token tried against other routes, a stolen session
//! feeling its way — or a broken script; either way its owner and the admins want to know. The
//! refusals are counted from the audit trail as the notifier reads it, by the events' own
//! times, and the counts are kept in the database beside the notifier's cursor and moved in the
//! same transaction ([`crate::store::Store::queue_notifications`]): several gateways sharing a
//! database count one burst together, and a restart forgets nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::audit::{ActorType, AuditEvent, Decision};

/// The time a burst must fit in.
pub const WINDOW_MS: i64 = 5 * 60 * 1000;
/// After a notice, the same credential's refusals are not announced again for this long.
pub const QUIET_MS: i64 = 60 * 60 * 1000;
/// Credentials counted at once; past that, the one refused longest ago is forgotten (the
/// counts are written with every move of the cursor, so they must stay small).
const MAX_TRACKED: usize = 256;
/// Different actions, and client addresses, kept per credential for the notice.
const KEPT: usize = 5;

/// Refusals per credential, as stored between the notifier's rounds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalCounts {
    #[serde(default)]
    by: BTreeMap<String, Counted>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Counted {
    /// When its refusals inside the window were made (ms), oldest first; at most the threshold.
    #[serde(default)]
    at: Vec<i64>,
    /// When it was last announced.
    #[serde(default)]
    told: Option<i64>,
    /// What was refused since it was last announced (each action once, the first few).
    #[serde(default)]
    actions: Vec<String>,
    /// From where (each address once, the first few).
    #[serde(default)]
    from: Vec<String>,
}

impl Counted {
    fn latest(&self) -> i64 {
        self.at.iter().copied().chain(self.told).max().unwrap_or(0)
    }
}

/// A burst worth a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burst {
    /// The API token's name, when it was a token.
    pub token: Option<String>,
    /// The person: a session's, or the token's owner when known.
    pub email: Option<String>,
    /// Refusals inside the window.
    pub count: usize,
    /// From the first of them to the last.
    pub over_ms: i64,
    /// What was refused (each action once, the first few).
    pub actions: Vec<String>,
    /// From where.
    pub from: Vec<String>,
}

impl RefusalCounts {
    /// The counts as stored; empty when there are none or they cannot be read (they are the
    /// gateway's own, so a failed read is a bug or a hand edit, and starting over only delays
    /// a notice).
    pub fn from_stored(stored: Option<&str>) -> RefusalCounts {
        stored
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    /// The counts to store.
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Counts `e` when it is a refusal of a valid credential; the burst when this refusal
    /// makes `threshold` inside [`WINDOW_MS`] and the credential was not announced in the last
    /// [`QUIET_MS`]. A `threshold` of 0 counts nothing.
    pub fn note(&mut self, e: &AuditEvent, threshold: usize) -> Option<Burst> {
        if threshold == 0 || e.rbac_decision != Decision::Deny {
            return None;
        }
        let key = match (e.actor_type, &e.token_name, &e.user_email) {
            (ActorType::Token, Some(name), _) => format!("token:{name}"),
            (ActorType::User, _, Some(email)) => format!("user:{}", email.to_ascii_lowercase()),
            // Nobody identified (a bad or missing credential: those are budgeted, see
            // `failure_budget`), or the operator at the server's command line.
            _ => return None,
        };
        let ts = e.ts;
        if !self.by.contains_key(&key) && self.by.len() >= MAX_TRACKED {
            self.forget_before(ts);
            if self.by.len() >= MAX_TRACKED {
                let oldest = self
                    .by
                    .iter()
                    .min_by_key(|(_, c)| c.latest())
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.by.remove(&oldest);
                }
            }
        }
        let counted = self.by.entry(key).or_default();
        counted.at.retain(|&t| t > ts - WINDOW_MS);
        counted.at.push(ts);
        counted.at.sort_unstable();
        if counted.at.len() > threshold {
            let extra = counted.at.len() - threshold;
            counted.at.drain(..extra);
        }
        if counted.actions.len() < KEPT && !counted.actions.contains(&e.action) {
            counted.actions.push(e.action.clone());
        }
        if let Some(ip) = &e.client_ip
            && counted.from.len() < KEPT
            && !counted.from.contains(ip)
        {
            counted.from.push(ip.clone());
        }
        let quiet = counted.told.is_some_and(|told| ts - told < QUIET_MS);
        if counted.at.len() < threshold || quiet {
            return None;
        }
        let burst = Burst {
            token: e
                .token_name
                .clone()
                .filter(|_| e.actor_type == ActorType::Token),
            email: e.user_email.clone(),
            count: counted.at.len(),
            over_ms: match (counted.at.first(), counted.at.last()) {
                (Some(first), Some(last)) => last - first,
                _ => 0,
            },
            actions: std::mem::take(&mut counted.actions),
            from: std::mem::take(&mut counted.from),
        };
        counted.told = Some(ts);
        counted.at.clear();
        Some(burst)
    }

    /// Forgets the credentials with no refusal inside the window and no notice inside the
    /// quiet time, as of `ts`.
    pub fn forget_before(&mut self, ts: i64) {
        self.by.retain(|_, c| {
            c.at.iter().any(|&t| t > ts - WINDOW_MS)
                || c.told.is_some_and(|told| ts - told < QUIET_MS)
        });
    }

    /// How many credentials are being counted.
    pub fn len(&self) -> usize {
        self.by.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::EventKind;

    const MIN: i64 = 60_000;

    fn refused(who: &str, ts: i64, action: &str) -> AuditEvent {
        let mut e = AuditEvent::new(EventKind::Request, "r", action);
        e.ts = ts;
        e.rbac_decision = Decision::Deny;
        if let Some(name) = who.strip_prefix("token:") {
            e.actor_type = ActorType::Token;
            e.token_name = Some(name.into());
            e.user_email = Some("owner@example.com".into());
        } else {
            e.actor_type = ActorType::User;
            e.user_email = Some(who.into());
        }
        e.client_ip = Some("203.0.113.7".into());
        e
    }

    /// Notes `n` refusals of `who` a second apart from `start`; the bursts they make.
    fn refuse(c: &mut RefusalCounts, who: &str, start: i64, n: i64) -> Vec<Burst> {
        (0..n)
            .filter_map(|i| c.note(&refused(who, start + i * 1000, "convox:apps:delete"), 10))
            .collect()
    }

    #[test]
    fn the_tenth_refusal_inside_five_minutes_is_a_burst_once_an_hour() {
        let mut c = RefusalCounts::default();
        assert!(refuse(&mut c, "token:ci", 0, 9).is_empty());
        let bursts = refuse(&mut c, "token:ci", 9_000, 1);
        assert_eq!(bursts.len(), 1);
        let b = &bursts[0];
        assert_eq!(b.token.as_deref(), Some("ci"));
        assert_eq!(b.email.as_deref(), Some("owner@example.com"));
        assert_eq!((b.count, b.over_ms), (10, 9_000));
        assert_eq!(b.actions, ["convox:apps:delete"]);
        assert_eq!(b.from, ["203.0.113.7"]);
        // Going on: quiet for an hour, then a new burst is news again.
        assert!(refuse(&mut c, "token:ci", 10_000, 50).is_empty());
        assert!(refuse(&mut c, "token:ci", 59 * MIN, 20).is_empty());
        assert_eq!(refuse(&mut c, "token:ci", 61 * MIN, 10).len(), 1);
    }

    #[test]
    fn refusals_spread_wider_than_the_window_are_no_burst() {
        let mut c = RefusalCounts::default();
        // One every 40 s: never ten inside five minutes.
        let bursts: Vec<Burst> = (0..100)
            .filter_map(|i| {
                c.note(
                    &refused("ann@example.com", i * 40_000, "convox:env:read"),
                    10,
                )
            })
            .collect();
        assert!(bursts.is_empty());
        assert_eq!(refuse(&mut c, "ann@example.com", 100 * 40_000, 10).len(), 1);
    }

    #[test]
    fn credentials_are_counted_apart_and_anonymous_or_allowed_events_not_at_all() {
        let mut c = RefusalCounts::default();
        assert!(refuse(&mut c, "token:a", 0, 5).is_empty());
        assert!(refuse(&mut c, "token:b", 0, 5).is_empty());
        assert!(refuse(&mut c, "ann@example.com", 0, 5).is_empty());
        // The same person, spelt otherwise, is the same person.
        assert_eq!(refuse(&mut c, "ANN@example.com", 5_000, 5).len(), 1);
        let mut anon = refused("token:a", 0, "convox:apps:list");
        anon.actor_type = ActorType::Anonymous;
        let mut allowed = refused("token:a", 0, "convox:apps:list");
        allowed.rbac_decision = Decision::Allow;
        for _ in 0..20 {
            assert!(c.note(&anon, 10).is_none());
            assert!(c.note(&allowed, 10).is_none());
        }
        assert!(c.note(&refused("token:a", 0, "x"), 0).is_none(), "0 is off");
    }

    #[test]
    fn the_notice_names_each_action_and_address_once_and_a_few_at_most() {
        let mut c = RefusalCounts::default();
        let mut last = None;
        for i in 0..10 {
            let mut e = refused("token:ci", i * 1000, &format!("convox:thing{}:read", i % 7));
            e.client_ip = Some(format!("198.51.100.{}", i % 2));
            last = c.note(&e, 10);
        }
        let b = last.unwrap_or_else(|| panic!("no burst"));
        assert_eq!(b.actions.len(), KEPT);
        assert_eq!(b.from, ["198.51.100.0", "198.51.100.1"]);
    }

    #[test]
    fn counts_survive_being_stored_and_stay_bounded() {
        let mut c = RefusalCounts::default();
        refuse(&mut c, "token:ci", 0, 6);
        let stored = c.to_stored();
        let mut back = RefusalCounts::from_stored(Some(&stored));
        assert_eq!(back, c);
        assert_eq!(refuse(&mut back, "token:ci", 6_000, 4).len(), 1);
        assert_eq!(
            RefusalCounts::from_stored(Some("not json")),
            RefusalCounts::default()
        );
        assert_eq!(RefusalCounts::from_stored(None), RefusalCounts::default());

        // Many credentials at once: the oldest are forgotten, never more than the bound.
        let mut many = RefusalCounts::default();
        for i in 0..(MAX_TRACKED as i64 * 3) {
            refuse(&mut many, &format!("token:t{i}"), i, 1);
        }
        assert_eq!(many.len(), MAX_TRACKED);
        assert!(many.to_stored().len() < 64 * 1024);
        // Forgotten once the window and the quiet time are over.
        many.forget_before(10 * MIN);
        assert!(many.is_empty());
    }
}
