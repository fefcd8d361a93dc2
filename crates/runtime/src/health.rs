//! Liveness and readiness state, as `/healthz` and `/readyz` report it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Readiness of one process: a set of named conditions, each ready or not with a reason, plus a
/// draining flag. Cheap to clone; every clone shares the same state.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Condition name ⇒ `None` when ready, `Some(reason)` when not.
    conditions: Mutex<BTreeMap<&'static str, Option<String>>>,
    draining: AtomicBool,
}

impl Health {
    /// A fresh state with no conditions (ready).
    pub fn new() -> Health {
        Health::default()
    }

    /// Marks a condition ready.
    pub fn set_ready(&self, name: &'static str) {
        self.lock().insert(name, None);
    }

    /// Marks a condition not ready, with the reason `/readyz` shows.
    pub fn set_not_ready(&self, name: &'static str, reason: impl Into<String>) {
        self.lock().insert(name, Some(reason.into()));
    }

    /// Marks the process as draining: readiness is false from now on.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    /// True once [`Health::set_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// `Ok` when ready, else every reason, one per failing condition.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut reasons: Vec<String> = self
            .lock()
            .iter()
            .filter_map(|(name, reason)| reason.as_ref().map(|r| format!("{name}: {r}")))
            .collect();
        if self.is_draining() {
            reasons.push("draining".to_owned());
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Option<String>>> {
        // A poisoned lock only means another thread panicked while inserting; the map is still
        // consistent, so keep serving health.
        self.inner
            .conditions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_and_draining() {
        let h = Health::new();
        assert!(h.readiness().is_ok());
        h.set_not_ready("routes", "not loaded");
        h.set_ready("listener");
        assert_eq!(h.readiness(), Err(vec!["routes: not loaded".to_owned()]));
        h.set_ready("routes");
        assert!(h.readiness().is_ok());
        h.set_draining();
        assert_eq!(h.readiness(), Err(vec!["draining".to_owned()]));
    }
}
