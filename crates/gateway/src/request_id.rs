//! Every request the gateway serves gets an id of its own, generated here (never taken from the
//! client), returned in `X-Request-Id`, and carried by every audit event recorded while serving
//! it — proxied calls, sign-ins, refusals, user and session changes alike — so a caller who
//! quotes the header can be matched to the trail.
//!
//! The id is ambient for the request's task, as its tracing span would be: code that records an
//! event asks for [`current`] instead of every handler passing the id down. Outside a request
//! (the server's admin subcommands, background jobs) [`current`] is a fresh id.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;

/// The response header that carries the id.
pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static CURRENT: String;
}

/// Middleware: gives the request its id, serves it with that id current, and sets
/// [`HEADER`] on the response (replacing any the rack sent).
pub async fn assign(request: Request, next: Next) -> Response {
    let id = crate::audit::new_request_id();
    let value = HeaderValue::from_str(&id).ok();
    let mut response = CURRENT.scope(id, next.run(request)).await;
    if let Some(value) = value {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

/// The id of the request being served, or a fresh one outside a request.
pub fn current() -> String {
    CURRENT
        .try_with(Clone::clone)
        .unwrap_or_else(|_| crate::audit::new_request_id())
}

/// Spawns `work` as a task of its own that carries the current request's id: for a step that
/// must run to its end even when the caller goes away (an HTTP client that disconnects drops
/// its handler), and whose events belong to the request all the same.
pub fn spawn<F>(work: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(CURRENT.scope(current(), work))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_id_is_the_same_for_the_whole_request_and_fresh_outside() {
        let inside = CURRENT
            .scope("r-1".to_string(), async {
                tokio::task::yield_now().await;
                (current(), current())
            })
            .await;
        assert_eq!(inside, ("r-1".to_string(), "r-1".to_string()));
        let (a, b) = (current(), current());
        assert_ne!(a, b, "outside a request every call is a new id");
        assert_ne!(a, "r-1");
    }

    #[tokio::test]
    async fn a_spawned_step_keeps_the_request_id() {
        let spawned = CURRENT
            .scope("r-2".to_string(), async {
                spawn(async { (current(), current()) }).await
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spawned, ("r-2".to_string(), "r-2".to_string()));
    }
}
