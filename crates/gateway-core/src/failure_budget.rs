//! How many refusals of unauthenticated callers are audited one by one.
//!
//! Every refusal is audited, and refusing a caller with no valid credentials costs that
//! caller nothing, so without a budget anyone who can reach the gateway could write audit rows
//! as fast as the database takes them until its disk is full. Each client address (IPv6: its
//! /64) gets `per_window` audited refusals per window; beyond that its refusals are only
//! counted, and the counts are audited as one summary per address per window
//! ([`FailureBudget::take_suppressed`]). All addresses together have `total_per_window`: a
//! flood from many addresses, each within its own budget, is counted into one summary beyond
//! it ([`OVERFLOW`]) rather than written row by row. The answers to the callers do not change,
//! and callers with valid credentials are never affected.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the addresses beyond `max_addresses`, and refusals beyond the total budget, are
/// counted together (a distributed flood).
pub const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// Per-address budgets of audited refusals, within a total.
#[derive(Debug)]
pub struct FailureBudget {
    per_window: u32,
    total_per_window: u32,
    window: Duration,
    max_addresses: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<IpAddr, Entry>,
    /// The total's window: when it started, and how many it admitted.
    total: Option<(Instant, u32)>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    admitted: u32,
    suppressed: u64,
}

impl FailureBudget {
    /// `per_window` audited refusals per address per `window`, tracking at most
    /// `max_addresses` addresses separately; no total beyond what that allows.
    pub fn new(per_window: u32, window: Duration, max_addresses: usize) -> FailureBudget {
        FailureBudget {
            per_window,
            total_per_window: u32::MAX,
            window,
            max_addresses,
            state: Mutex::new(State::default()),
        }
    }

    /// At most `total` audited refusals per window, all addresses together.
    pub fn with_total(mut self, total: u32) -> FailureBudget {
        self.total_per_window = total;
        self
    }

    /// The gateway's budget: 60 a minute per address, 3 000 a minute in all (about 1 MB of
    /// audit rows), 100 000 addresses.
    pub fn standard() -> FailureBudget {
        FailureBudget::new(60, Duration::from_secs(60), 100_000).with_total(3_000)
    }

    /// The window summaries cover.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Audited refusals per address per window.
    pub fn per_window(&self) -> u32 {
        self.per_window
    }

    /// Counts one refusal of a caller at `ip`; true when it should be audited on its own.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> bool {
        let Ok(mut state) = self.state.lock() else {
            // A poisoned lock means a panic elsewhere; auditing everything is the safe side.
            return true;
        };
        let State { entries, total } = &mut *state;
        let (total_start, total_admitted) = total.get_or_insert((now, 0));
        if now.saturating_duration_since(*total_start) >= self.window {
            (*total_start, *total_admitted) = (now, 0);
        }
        let mut key = address_key(ip);
        if !entries.contains_key(&key) && entries.len() >= self.max_addresses {
            key = OVERFLOW;
        }
        let fresh = Entry {
            window_start: now,
            admitted: 0,
            suppressed: 0,
        };
        let entry = entries.entry(key).or_insert(fresh);
        if now.saturating_duration_since(entry.window_start) >= self.window {
            entry.window_start = now;
            entry.admitted = 0;
        }
        if entry.admitted >= self.per_window {
            entry.suppressed += 1;
            return false;
        }
        if *total_admitted < self.total_per_window {
            entry.admitted += 1;
            *total_admitted += 1;
            return true;
        }
        // Over the total while within its own budget: one of many. Counted with the overflow,
        // so that a flood from many addresses makes one summary, not one per address.
        entries.entry(OVERFLOW).or_insert(fresh).suppressed += 1;
        false
    }

    /// The refusals counted but not audited since the last call, per address (IPv6: the /64's
    /// first address; [`OVERFLOW`] for addresses beyond the limit); forgets quiet addresses.
    pub fn take_suppressed(&self, now: Instant) -> Vec<(IpAddr, u64)> {
        let Ok(mut state) = self.state.lock() else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        state.entries.retain(|ip, entry| {
            if entry.suppressed > 0 {
                taken.push((*ip, entry.suppressed));
                entry.suppressed = 0;
            }
            now.saturating_duration_since(entry.window_start) < self.window
        });
        taken.sort();
        taken
    }
}

/// IPv4 addresses (also written as IPv4-mapped IPv6) count alone; IPv6 by /64, the block one
/// host usually has to itself. Every per-address limit counts by this key: one host with a
/// /64 would otherwise have 2^64 addresses to spread over.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn each_address_has_its_own_budget_per_window() {
        let budget = FailureBudget::new(3, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        let admitted: Vec<bool> = (0..5).map(|_| budget.admit(a, t0)).collect();
        assert_eq!(admitted, [true, true, true, false, false]);
        assert!(budget.admit(b, t0), "another address is not affected");
        assert_eq!(budget.take_suppressed(t0), vec![(a, 2)]);
        assert_eq!(budget.take_suppressed(t0), vec![], "counts are taken once");
        // A new window, a new budget.
        let t1 = t0 + Duration::from_secs(60);
        assert!(budget.admit(a, t1));
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let budget = FailureBudget::new(1, Duration::from_secs(60), 100);
        let t = Instant::now();
        assert!(budget.admit(ip("2001:db8:1:2::1"), t));
        assert!(!budget.admit(ip("2001:db8:1:2:ffff::9"), t), "same /64");
        assert!(budget.admit(ip("2001:db8:1:3::1"), t), "another /64");
        assert!(budget.admit(ip("203.0.113.5"), t));
        assert!(
            !budget.admit(ip("::ffff:203.0.113.5"), t),
            "the same IPv4 host"
        );
        assert_eq!(
            budget.take_suppressed(t),
            vec![(ip("203.0.113.5"), 1), (ip("2001:db8:1:2::"), 1)]
        );
    }

    #[test]
    fn addresses_beyond_the_limit_share_one_budget_and_quiet_ones_are_forgotten() {
        let budget = FailureBudget::new(1, Duration::from_secs(60), 2);
        let t = Instant::now();
        assert!(budget.admit(ip("192.0.2.1"), t));
        assert!(budget.admit(ip("192.0.2.2"), t));
        assert!(
            budget.admit(ip("192.0.2.3"), t),
            "the overflow entry's first"
        );
        assert!(
            !budget.admit(ip("192.0.2.4"), t),
            "shares the overflow budget"
        );
        assert_eq!(budget.take_suppressed(t), vec![(OVERFLOW, 1)]);
        // After a quiet window every entry is dropped, so new addresses get their own again.
        let later = t + Duration::from_secs(61);
        assert_eq!(budget.take_suppressed(later), vec![]);
        assert!(budget.admit(ip("192.0.2.5"), later));
        assert!(budget.admit(ip("192.0.2.6"), later));
    }

    #[test]
    fn beyond_the_total_refusals_are_counted_together() {
        let budget = FailureBudget::new(1, Duration::from_secs(60), 100).with_total(3);
        let t0 = Instant::now();
        let hosts: Vec<IpAddr> = (1..=5).map(|h| IpAddr::from([192, 0, 2, h])).collect();
        let admitted: Vec<bool> = hosts.iter().map(|h| budget.admit(*h, t0)).collect();
        assert_eq!(admitted, [true, true, true, false, false]);
        // An address over its own budget is still summarised on its own.
        assert!(!budget.admit(hosts[0], t0));
        assert_eq!(
            budget.take_suppressed(t0),
            vec![(hosts[0], 1), (OVERFLOW, 2)]
        );
        // The total has a window of its own.
        let t1 = t0 + Duration::from_secs(60);
        assert!(budget.admit(hosts[4], t1));
    }

    proptest::proptest! {
        /// Nothing is lost: every refusal is either admitted or counted in a summary.
        #[test]
        fn every_refusal_is_audited_or_summarised(
            hits in proptest::collection::vec((0u8..6, 0u64..200), 1..300),
        ) {
            let budget = FailureBudget::new(4, Duration::from_secs(60), 4).with_total(9);
            let t0 = Instant::now();
            let mut admitted = 0u64;
            let mut sorted = hits.clone();
            sorted.sort_by_key(|(_, secs)| *secs);
            for (host, secs) in &sorted {
                let now = t0 + Duration::from_secs(*secs);
                let address = IpAddr::from([192, 0, 2, *host]);
                if budget.admit(address, now) {
                    admitted += 1;
                }
            }
            let summarised: u64 = budget
                .take_suppressed(t0 + Duration::from_secs(1000))
                .iter()
                .map(|(_, n)| n)
                .sum();
            proptest::prop_assert_eq!(admitted + summarised, sorted.len() as u64);
        }
    }
}
