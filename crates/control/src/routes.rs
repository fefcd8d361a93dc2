//! The cluster's route table, owned by control and kept in the `gripmesh_routes` bucket
//! (JetStream, or in memory for standalone without NATS).
//!
//! `PUT /routes` and gRPC `Put` validate and write the bucket (compare-and-set); with
//! `--routes FILE` the file is the source of truth, written to the bucket whenever it changes,
//! and API writes are refused. Every control replica reads the same bucket, so they all serve
//! the same table and version (the bucket revision); edges watch the bucket themselves.

use bus::cluster_state::{RoutesBucket, StoredRoutes, routes_bucket};
use bus::kv::{KvError, StateStore};
use bus::records::RecordCodec;
use routes::RouteTable;
use std::sync::Arc;
use tokio::sync::{OnceCell, watch};
use tokio_util::sync::CancellationToken;

/// One version of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutesVersion {
    /// The bucket revision that holds this table (0: none yet).
    pub version: u64,
    /// The table in routes-file syntax.
    pub text: String,
}

impl From<StoredRoutes> for RoutesVersion {
    fn from(s: StoredRoutes) -> Self {
        RoutesVersion {
            version: s.revision,
            text: s.text,
        }
    }
}

/// Why a table was not written.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The table has an error (line and reason); nothing changed.
    #[error("{0}")]
    Invalid(#[from] routes::RoutesError),
    /// `--routes FILE` owns the table.
    #[error("routes are managed by a file")]
    FileManaged,
    /// The bucket cannot be written right now.
    #[error("{0}")]
    Unavailable(String),
}

/// Where the table comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutesSource {
    /// `PUT /routes` and gRPC `Put`; an empty bucket is seeded with this table.
    Api {
        /// Table written when the bucket holds none yet (first start of a cluster).
        seed: String,
    },
    /// A routes file (written to the bucket by the caller through [`RouteStore::sync_file`]).
    File,
}

/// The route table store. Cheap to clone.
#[derive(Clone)]
pub struct RouteStore {
    state: Arc<dyn StateStore>,
    codec: RecordCodec,
    replicas: usize,
    source: RoutesSource,
    bucket: Arc<OnceCell<RoutesBucket>>,
    latest: Arc<watch::Sender<RoutesVersion>>,
}

impl RouteStore {
    /// A store on `state` (records sealed with `codec`, the bucket made with `replicas`).
    pub fn new(
        state: Arc<dyn StateStore>,
        codec: RecordCodec,
        replicas: usize,
        source: RoutesSource,
    ) -> RouteStore {
        RouteStore {
            state,
            codec,
            replicas,
            source,
            bucket: Arc::new(OnceCell::new()),
            latest: Arc::new(watch::Sender::new(RoutesVersion {
                version: 0,
                text: String::new(),
            })),
        }
    }

    /// True when `--routes FILE` owns the table.
    pub fn is_file_managed(&self) -> bool {
        self.source == RoutesSource::File
    }

    async fn bucket(&self) -> Result<&RoutesBucket, PutError> {
        self.bucket
            .get_or_try_init(|| async {
                let kv = self
                    .state
                    .open(&routes_bucket(self.replicas), true)
                    .await
                    .map_err(|e| PutError::Unavailable(e.to_string()))?;
                Ok(RoutesBucket::new(kv, self.codec.clone()))
            })
            .await
    }

    /// The table as the bucket holds it now (so every replica answers the same at once);
    /// the last one seen when the bucket cannot be read.
    pub async fn current(&self) -> RoutesVersion {
        if let Ok(b) = self.bucket().await
            && let Ok(Some(stored)) = b.current().await
        {
            let v = RoutesVersion::from(stored);
            self.offer(&v);
            return v;
        }
        self.latest.borrow().clone()
    }

    /// The last table seen (no I/O).
    pub fn latest(&self) -> RoutesVersion {
        self.latest.borrow().clone()
    }

    /// Follows changes (for gRPC `Watch`): the latest table seen, then every newer one.
    pub fn watch(&self) -> watch::Receiver<RoutesVersion> {
        self.latest.subscribe()
    }

    /// Validates and writes a table from the API; on error nothing changes.
    pub async fn put(&self, text: String) -> Result<RoutesVersion, PutError> {
        if self.is_file_managed() {
            return Err(PutError::FileManaged);
        }
        self.write(text, false).await
    }

    /// Validates and writes the routes file's table (nothing is written when the bucket holds
    /// it already).
    pub async fn sync_file(&self, text: String) -> Result<RoutesVersion, PutError> {
        self.write(text, true).await
    }

    async fn write(&self, text: String, only_if_changed: bool) -> Result<RoutesVersion, PutError> {
        RouteTable::parse_serving(&text)?;
        let stored = self
            .bucket()
            .await?
            .put(&text, only_if_changed)
            .await
            .map_err(|e| PutError::Unavailable(e.to_string()))?;
        let v = RoutesVersion::from(stored);
        self.offer(&v);
        Ok(v)
    }

    /// Takes `v` as the latest if it is newer than what we have.
    fn offer(&self, v: &RoutesVersion) {
        self.latest.send_if_modified(|cur| {
            let newer = v.version > cur.version;
            if newer {
                *cur = v.clone();
            }
            newer
        });
    }

    /// Opens the bucket (retrying while NATS or JetStream is away), seeds an empty one with
    /// the default table unless a file owns it, and follows it until `shutdown`, keeping
    /// [`RouteStore::watch`] current (`Control::track_routes_version` turns it into the
    /// `gripmesh_control_routes_version` gauge).
    pub async fn run(&self, shutdown: CancellationToken) {
        let bucket = loop {
            match self.bucket().await {
                Ok(b) => break b.clone(),
                Err(err) => {
                    tracing::debug!(error = %err, "route bucket not available yet");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        if let RoutesSource::Api { seed } = &self.source {
            while let Err(err) = bucket.seed(seed).await {
                tracing::debug!(error = %err, "cannot seed the route bucket yet");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
        bucket
            .follow(&shutdown, |stored| {
                // Control validates before writing; a table this build cannot parse is a
                // version skew between replicas and is not served.
                if let Err(err) = RouteTable::parse_serving(&stored.text) {
                    tracing::error!(version = stored.revision, line = err.line, reason = %err.reason, "stored route table rejected");
                    return;
                }
                self.offer(&RoutesVersion::from(stored));
            })
            .await;
    }
}

impl From<KvError> for PutError {
    fn from(e: KvError) -> Self {
        PutError::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::kv::MemoryState;

    #[tokio::test]
    async fn put_validates_writes_the_bucket_and_refuses_when_file_managed() {
        let state: Arc<dyn StateStore> = Arc::new(MemoryState::new());
        let api = RouteStore::new(
            state.clone(),
            RecordCodec::default(),
            1,
            RoutesSource::Api {
                seed: "* 127.0.0.1:1\n".into(),
            },
        );
        let stop = CancellationToken::new();
        tokio::spawn({
            let (api, stop) = (api.clone(), stop.clone());
            async move { api.run(stop).await }
        });
        let mut w = api.watch();
        w.wait_for(|v| v.version > 0).await.expect("seeded");
        let seeded = api.current().await;
        assert_eq!(seeded.text, "* 127.0.0.1:1\n");
        assert!(matches!(
            api.put("* nonsense-without-port\n".into()).await,
            Err(PutError::Invalid(_))
        ));
        assert_eq!(api.current().await, seeded);
        let v = api.put("* 127.0.0.1:2\n".into()).await.expect("valid");
        assert!(v.version > seeded.version);

        // A second replica on the same state serves the same table at once.
        let other = RouteStore::new(state, RecordCodec::default(), 1, RoutesSource::File);
        assert_eq!(other.current().await, v);
        assert!(matches!(
            other.put("* 127.0.0.1:3\n".into()).await,
            Err(PutError::FileManaged)
        ));
        let synced = other
            .sync_file("* 127.0.0.1:3\n".into())
            .await
            .expect("file");
        assert!(synced.version > v.version);
        assert_eq!(
            other
                .sync_file("* 127.0.0.1:3\n".into())
                .await
                .expect("same"),
            synced
        );
        w.wait_for(|x| *x == synced).await.expect("followed");
        stop.cancel();
    }
}
