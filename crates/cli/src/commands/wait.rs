//! Waiting for the rack to reach a state: check, sleep (200 ms growing to 2 s), check again.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{CliError, CliResult};

/// Calls `check` until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> CliResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = CliResult<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(200);
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(CliError::Failed(format!(
                "timed out after {}s waiting for {what}",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}
