//! Refusals of unauthenticated callers: audited one by one within each address's budget
//! ([`FailureBudget`]), the rest as one summary event per address per window.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use gateway_core::failure_budget::{FailureBudget, OVERFLOW};
use serde_json::json;
use tokio::task::JoinHandle;

use super::{ActorType, AuditEvent, AuditLog, Decision, EventKind, new_request_id};

/// The action of a summary event.
pub const SUPPRESSED_ACTION: &str = "gateway:audit:suppressed";

/// Writes the summaries once per window until aborted.
pub fn spawn_summaries(budget: Arc<FailureBudget>, audit: AuditLog) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(budget.window());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            record_summaries(&budget, &audit);
        }
    })
}

/// Queues one summary event per address whose refusals went unaudited since the last call.
pub fn record_summaries(budget: &FailureBudget, audit: &AuditLog) {
    for (address, count) in budget.take_suppressed(Instant::now()) {
        audit.record_later(summary(budget, address, count));
    }
}

fn summary(budget: &FailureBudget, address: IpAddr, count: u64) -> AuditEvent {
    let mut e = AuditEvent::new(EventKind::Gateway, new_request_id(), SUPPRESSED_ACTION);
    e.actor_type = ActorType::Anonymous;
    e.rbac_decision = Decision::Deny;
    e.client_ip = Some(address.to_string());
    e.with_details(json!({
        "suppressed_count": count,
        "audited_per_window": budget.per_window(),
        "window_secs": budget.window().as_secs(),
        "addresses": if address == OVERFLOW { "many (beyond those tracked one by one, or beyond the total budget)" } else if address.is_ipv6() { "this /64" } else { "this address" },
        "reason": "refusals of callers without valid credentials beyond the per-address or total budget are counted, not audited one by one",
    }))
}
