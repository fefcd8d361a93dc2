//! Polling helper: wait for a condition instead of sleeping and hoping.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Polls `check` every 25 ms until it returns `true`; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The most of `arrivals` (in any order) that fall within one `window`: when an origin holds
/// each request for longer than `window`, the requests that arrived that close together were
/// in flight at once.
pub fn most_within(arrivals: &[Instant], window: Duration) -> usize {
    let mut at = arrivals.to_vec();
    at.sort_unstable();
    (0..at.len())
        .map(|i| at[i..].iter().take_while(|t| **t - at[i] < window).count())
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_within_counts_the_densest_window() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let arrivals = [ms(500), ms(0), ms(10), ms(20), ms(490), ms(495), ms(499)];
        // 490, 495, 499 and 500 lie within 15 ms of each other; 0, 10 and 20 do not.
        assert_eq!(most_within(&arrivals, Duration::from_millis(15)), 4);
        assert_eq!(most_within(&arrivals, Duration::from_millis(5)), 2);
        assert_eq!(most_within(&arrivals, Duration::from_millis(1)), 1);
        assert_eq!(most_within(&[], Duration::from_millis(5)), 0);
    }
}
