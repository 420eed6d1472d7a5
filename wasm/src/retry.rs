//! Trying again, further apart each time.
use std::future::Future;
use std::time::Duration;

/// Run `attempt` until it succeeds, until `again` says an error will not pass by waiting, or
/// until the wait before the next try (doubling from `first_ms`) would be over `last_ms`.
/// Each error tried again is logged under `what`; the last result is returned as it is.
pub(crate) async fn with_backoff<T, E, F>(
    what: &str,
    first_ms: u64,
    last_ms: u64,
    again: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: Future<Output = Result<T, E>>,
{
    let mut wait_ms = first_ms;
    loop {
        match attempt().await {
            Err(e) if wait_ms <= last_ms && again(&e) => {
                tracing::info!("{what}: {e}; again in {wait_ms} ms");
                futures_timer::Delay::new(Duration::from_millis(wait_ms)).await;
                wait_ms = wait_ms.saturating_mul(2);
            }
            result => return result,
        }
    }
}
