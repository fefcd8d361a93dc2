//! The cluster's route table, owned by control: loaded from `--routes FILE`, replaced through
//! `PUT /routes` or gRPC, versioned, and broadcast to every edge over the bus.

use crate::Inner;
use bytes::Bytes;
use routes::RouteTable;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One version of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutesVersion {
    /// Milliseconds since the epoch when this table was set (a file's mtime for file loads, so
    /// every control replica reading the same file agrees). Newer wins.
    pub version: u64,
    /// The table in routes-file syntax.
    pub text: String,
}

/// A rejected table: the line and reason.
pub type RoutesRejection = routes::RoutesError;

/// The route table and its history head. Cheap to clone.
#[derive(Clone)]
pub struct RouteStore {
    current: watch::Sender<RoutesVersion>,
    file: Option<PathBuf>,
    write_lock: Arc<Mutex<()>>,
}

/// Milliseconds since the epoch.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RouteStore {
    /// A store starting with `initial` (already validated), persisting `PUT`s to `file` when
    /// given.
    pub fn new(initial: RoutesVersion, file: Option<PathBuf>) -> RouteStore {
        RouteStore {
            current: watch::Sender::new(initial),
            file,
            write_lock: Arc::new(Mutex::new(())),
        }
    }

    /// The current version.
    pub fn current(&self) -> RoutesVersion {
        self.current.borrow().clone()
    }

    /// Follows changes.
    pub fn watch(&self) -> watch::Receiver<RoutesVersion> {
        self.current.subscribe()
    }

    /// Validates and installs a new table; on error nothing changes.
    pub fn put(&self, text: String) -> Result<RoutesVersion, RoutesRejection> {
        RouteTable::parse_serving(&text)?;
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let version = now_millis().max(self.current.borrow().version + 1);
        let new = RoutesVersion { version, text };
        if let Some(path) = &self.file {
            // Best effort: keep the file in step so a restart serves the same table. A
            // read-only file (a ConfigMap) keeps the table in memory only.
            let tmp = path.with_extension("gripmesh-tmp");
            let written =
                std::fs::write(&tmp, &new.text).and_then(|()| std::fs::rename(&tmp, path));
            if let Err(err) = written {
                tracing::warn!(path = %path.display(), error = %err, "could not persist routes; serving them from memory");
            }
        }
        self.current.send_replace(new.clone());
        Ok(new)
    }

    /// Adopts a table from elsewhere (a peer's broadcast, or a file change) if it is newer.
    /// Returns true when it was adopted.
    pub fn adopt(&self, candidate: RoutesVersion) -> bool {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.current.borrow().clone();
        if candidate.version > cur.version && candidate.text != cur.text {
            if RouteTable::parse_serving(&candidate.text).is_err() {
                return false;
            }
            self.current.send_replace(candidate);
            return true;
        }
        false
    }
}

/// See [`crate::Control::distribute_routes`].
pub(crate) async fn distribute(inner: Arc<Inner>, every: Duration, shutdown: CancellationToken) {
    let mut changes = inner.routes.watch();
    let mut requests = None;
    let mut peers = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // (Re)subscribe lazily: the bus may not be up yet when control starts.
        if requests.is_none() {
            requests = inner
                .bus
                .subscribe(bus::payload::ROUTES_REQUEST_SUBJECT.into())
                .await
                .ok();
        }
        if peers.is_none() {
            peers = inner
                .bus
                .subscribe(bus::payload::ROUTES_SUBJECT.into())
                .await
                .ok();
        }
        let current = inner.routes.current();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                broadcast(&inner, &inner.routes.current()).await;
            }
            msg = next_or_pending(&mut requests) => match msg {
                Some(_) => broadcast(&inner, &current).await,
                None => requests = None,
            },
            msg = next_or_pending(&mut peers) => match msg {
                Some(payload) => {
                    if let Ok((version, text)) = bus::payload::decode_routes(payload)
                        && inner.routes.adopt(RoutesVersion { version, text })
                    {
                        tracing::info!(version, "adopted a newer route table from a peer");
                    }
                }
                None => peers = None,
            },
            _ = tick.tick() => broadcast(&inner, &current).await,
        }
    }
}

async fn next_or_pending(sub: &mut Option<bus::Subscription>) -> Option<Bytes> {
    match sub {
        Some(s) => s.next().await,
        None => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            None
        }
    }
}

async fn broadcast(inner: &Inner, v: &RoutesVersion) {
    let payload = bus::payload::encode_routes(v.version, &v.text);
    if let Err(err) = inner
        .bus
        .publish(bus::payload::ROUTES_SUBJECT.into(), payload)
        .await
    {
        tracing::debug!(error = %err, "route broadcast failed; will retry");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_validates_and_bumps_the_version() {
        let store = RouteStore::new(
            RoutesVersion {
                version: 5,
                text: "* 127.0.0.1:1\n".into(),
            },
            None,
        );
        assert!(store.put("* nonsense-without-port\n".into()).is_err());
        assert_eq!(store.current().version, 5);
        let v = store.put("* 127.0.0.1:2\n".into()).expect("valid");
        assert!(v.version > 5);
        assert_eq!(store.current(), v);
        assert!(!store.adopt(RoutesVersion {
            version: 1,
            text: "* 127.0.0.1:3\n".into()
        }));
        assert!(store.adopt(RoutesVersion {
            version: u64::MAX,
            text: "* 127.0.0.1:3\n".into()
        }));
        assert!(!store.adopt(RoutesVersion {
            version: u64::MAX,
            text: "bad line\n".into()
        }));
    }
}
