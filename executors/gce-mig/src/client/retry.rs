//! The one retry loop every Compute call goes through: exponential backoff with jitter,
//! honouring `Retry-After`, on the errors [`ApiError::retryable`] names. It lives with the
//! client (as aws-asg's does) so the scaling code only says which call to make.

use super::ApiError;
use crate::config::Config;
use crate::target::GroupPath;
use std::future::Future;
use std::time::Duration;
use tracing::warn;

/// A call that failed for good: the last error and how many attempts were made, so the
/// message can say "(after N attempts)".
pub(crate) type Failed = (ApiError, u32);

/// How often and how patiently a call is retried, from the checked config.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    attempts: u32,
    initial: Duration,
    max: Duration,
}

impl RetryPolicy {
    /// `max_attempts`, `retry_initial_backoff_ms` and `retry_max_backoff_ms` (checked by
    /// [`Config::resolve`]: at least one attempt, the maximum not below the first pause).
    pub(crate) fn from_config(cfg: &Config) -> RetryPolicy {
        RetryPolicy {
            attempts: cfg.max_attempts,
            initial: Duration::from_millis(cfg.retry_initial_backoff_ms),
            max: Duration::from_millis(cfg.retry_max_backoff_ms),
        }
    }

    /// Runs `call`, retrying throttling, 5xx, timeouts and connection errors with exponential
    /// backoff (honouring `Retry-After` up to the maximum pause). Returns the last error and
    /// how many attempts were made.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        pool: &str,
        what: &str,
        group: &GroupPath,
        mut call: F,
    ) -> Result<T, Failed>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut delay = self.initial;
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if e.retryable() && attempt < self.attempts => {
                    let pause = jitter(e.retry_after.unwrap_or(delay).min(self.max));
                    warn!(pool, group = %group, call = what, attempt, error = %e.detail(), pause_ms = pause.as_millis() as u64, "retrying Compute call");
                    tokio::time::sleep(pause).await;
                    delay = (delay * 2).min(self.max);
                    attempt += 1;
                }
                Err(e) => return Err((e, attempt)),
            }
        }
    }
}

/// Spreads retries of concurrent pools apart (±20 %), without a random-number dependency.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.8 + (nanos % 400) as f64 / 1000.0;
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_near() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(1000));
            assert!(
                j >= Duration::from_millis(800) && j <= Duration::from_millis(1200),
                "{j:?}"
            );
        }
    }
}
