//! The WebSocket sessions in flight (logs, exec, run): how many may be open (in all and per
//! credential: each holds two sockets and a rack connection for as long as it lasts), and,
//! at shutdown, waiting for them and, when time is up, ending them with their outcomes
//! recorded rather than cutting them off unaudited.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use gateway_core::config::WebSocketLimits;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::identity::{Principal, PrincipalKind};

/// Open WebSocket relays. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    tracker: TaskTracker,
    ending: CancellationToken,
    limits: WebSocketLimits,
    open: Arc<Mutex<Open>>,
}

/// Sessions admitted and not yet ended.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_credential: HashMap<Credential, usize>,
}

/// What a session is counted against: one API token, or one user's signed-in sessions
/// together (signing in again must not give a person another set of places).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Credential {
    Token(i64),
    User(i64),
}

/// A session may not open: a limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// `MAX_WEBSOCKETS_PER_CREDENTIAL`.
    #[error(
        "{} open with this credential (this API token, or your signed-in sessions together), \
         the most it may have: close one and try again",
        sessions(*.0)
    )]
    Credential(usize),
    /// `MAX_WEBSOCKETS`.
    #[error(
        "the gateway has {} open, its limit: try again later",
        if *.0 == 1 { "1 WebSocket session".to_string() } else { format!("{} WebSocket sessions", .0) }
    )]
    Total(usize),
}

/// "1 WebSocket session (logs, exec, run) is already", "2 … sessions … are already".
fn sessions(n: usize) -> String {
    if n == 1 {
        "1 WebSocket session (logs, exec, run) is already".into()
    } else {
        format!("{n} WebSocket sessions (logs, exec, run) are already")
    }
}

/// A place among the open sessions, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    open: Arc<Mutex<Open>>,
    credential: Credential,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_credential.get_mut(&self.credential) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_credential.remove(&self.credential);
            }
        }
    }
}

impl Sessions {
    /// No session open yet; at most `limits` at once.
    pub fn new(limits: WebSocketLimits) -> Sessions {
        Sessions {
            limits,
            ..Sessions::default()
        }
    }

    /// A place for one more session of `principal`, unless a limit is reached.
    pub fn admit(&self, principal: &Principal) -> Result<Slot, Full> {
        let credential = match &principal.kind {
            PrincipalKind::ApiToken { id, .. } => Credential::Token(*id),
            PrincipalKind::Session { user_id, .. } => Credential::User(*user_id),
        };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.limits.total {
            return Err(Full::Total(self.limits.total));
        }
        let mine = open.by_credential.entry(credential).or_insert(0);
        if *mine >= self.limits.per_credential {
            return Err(Full::Credential(self.limits.per_credential));
        }
        *mine += 1;
        open.total += 1;
        Ok(Slot {
            open: self.open.clone(),
            credential,
        })
    }

    /// `relay`, counted as open until it finishes.
    pub fn track<F: Future>(&self, relay: F) -> impl Future<Output = F::Output> + use<F> {
        self.tracker.track_future(relay)
    }

    /// Resolves when the gateway asks every session to end.
    pub fn ending(&self) -> CancellationToken {
        self.ending.clone()
    }

    /// How many sessions are open.
    pub fn open(&self) -> usize {
        self.tracker.len()
    }

    /// Waits until every session has finished (new ones may still start while it waits).
    pub async fn finished(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Tells every session to close now (code 1001, "going away").
    pub fn end_all(&self) {
        self.ending.cancel();
    }
}
