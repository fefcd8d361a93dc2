//! A small circuit breaker: after `threshold` consecutive failures the gateway is not called
//! for `cooldown`; then one trial call decides whether it closes again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

struct State {
    failures: u32,
    open_until: Option<Instant>,
    trial_in_flight: bool,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State {
                failures: 0,
                open_until: None,
                trial_in_flight: false,
            }),
        }
    }

    /// May a call go to the gateway now?
    pub(crate) fn allow(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.open_until {
            None => true,
            Some(until) if Instant::now() < until => false,
            Some(_) => {
                // Half-open: one trial at a time.
                if s.trial_in_flight {
                    false
                } else {
                    s.trial_in_flight = true;
                    true
                }
            }
        }
    }

    /// Records the result of a call that `allow` let through.
    pub(crate) fn record(&self, ok: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.trial_in_flight = false;
        if ok {
            s.failures = 0;
            s.open_until = None;
        } else {
            s.failures += 1;
            if s.failures >= self.threshold {
                s.open_until = Some(Instant::now() + self.cooldown);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_half_opens_after_cooldown() {
        let b = Breaker::new(2, Duration::from_millis(50));
        assert!(b.allow());
        b.record(false);
        assert!(b.allow());
        b.record(false);
        assert!(!b.allow(), "open after two failures");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow(), "one trial after the cooldown");
        assert!(!b.allow(), "only one trial at a time");
        b.record(true);
        assert!(b.allow() && b.allow(), "closed again after a success");
    }
}
