//! Control's route and revocation stores: made on the backend's state, kept up (buckets
//! created, the routes file written to the route bucket) and followed by an in-process edge.

use crate::cli::StateFlags;
use crate::common::{self, Backend, Fatal};
use arc_swap::ArcSwap;
use control::{PutError, RevocationStore, RouteStore, RoutesSource};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Control's route and revocation stores on the backend's state. With `file_owns_table` (a
/// control with a routes file) API writes are refused; otherwise an empty bucket is seeded
/// with `seed`.
pub(crate) fn control_stores(
    backend: &Backend,
    state: &StateFlags,
    file_owns_table: bool,
    seed: &str,
) -> Result<(RouteStore, RevocationStore), Fatal> {
    let replicas = state.state_replicas.max(1);
    let source = if file_owns_table {
        RoutesSource::File
    } else {
        RoutesSource::Api {
            seed: seed.to_owned(),
        }
    };
    let routes = RouteStore::new(
        backend.state.clone(),
        backend.codec.clone(),
        replicas,
        source,
    );
    let revocations = RevocationStore::new(
        backend.state.clone(),
        backend.codec.clone(),
        common::revocation_ttl(state)?,
        replicas,
    );
    Ok((routes, revocations))
}

/// Runs the stores' background work until `shutdown`: follows the route bucket, creates the
/// revocations bucket and the per-key count buckets in `key_buckets` (store, replicas) so
/// followers find them, and writes the routes file to the bucket whenever it changes.
pub(crate) fn run_control_stores(
    routes: &RouteStore,
    revocations: &RevocationStore,
    key_buckets: (Arc<dyn bus::kv::StateStore>, usize),
    file: Option<PathBuf>,
    poll_interval: u64,
    shutdown: &CancellationToken,
) {
    tokio::spawn({
        let ((state, replicas), stop) = (key_buckets, shutdown.clone());
        async move {
            while let Err(err) = bus::key_state::prepare(state.as_ref(), replicas).await {
                tracing::debug!(error = %err, "per-key count buckets not available yet");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    });
    tokio::spawn({
        let (routes, stop) = (routes.clone(), shutdown.clone());
        async move { routes.run(stop).await }
    });
    tokio::spawn({
        let (revocations, stop) = (revocations.clone(), shutdown.clone());
        async move {
            while let Err(err) = revocations.prepare().await {
                tracing::debug!(error = %err, "revocations bucket not available yet");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    });
    if let Some(path) = file {
        tokio::spawn(sync_routes_file(
            routes.clone(),
            path,
            Duration::from_secs(poll_interval.max(1)),
            shutdown.clone(),
        ));
    }
}

/// Writes the routes file's table to the bucket at startup and whenever the file changes; a
/// bad file is logged (file, line, reason) and counted, and the stored table stays. A write
/// that fails (NATS away) is tried again at the next check.
async fn sync_routes_file(
    store: RouteStore,
    path: PathBuf,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut written: Option<Vec<u8>> = None;
    let mut reported: Option<Result<Vec<u8>, String>> = None;
    loop {
        match std::fs::read(&path) {
            Ok(bytes) if written.as_ref() != Some(&bytes) => {
                let outcome = match runtime::routes_file::parse_bytes(&bytes) {
                    Err(err) => Err(format!("line {}: {}", err.line, err.reason)),
                    Ok(_) => match store
                        .sync_file(String::from_utf8_lossy(&bytes).into_owned())
                        .await
                    {
                        Ok(v) => {
                            tracing::info!(path = %path.display(), version = v.version, "routes file written to the route bucket");
                            written = Some(bytes.clone());
                            Ok(())
                        }
                        Err(PutError::Unavailable(err)) => {
                            tracing::debug!(error = %err, "route bucket not writable yet; will retry");
                            Ok(())
                        }
                        Err(err) => Err(err.to_string()),
                    },
                };
                if let Err(reason) = outcome
                    && reported.as_ref() != Some(&Ok(bytes.clone()))
                {
                    runtime::routes_file::rejected(&path, &reason);
                    reported = Some(Ok(bytes));
                }
            }
            Ok(_) => {}
            Err(err) => {
                let msg = err.to_string();
                if reported.as_ref() != Some(&Err(msg.clone())) {
                    runtime::routes_file::rejected(&path, &format!("file unreadable: {msg}"));
                    reported = Some(Err(msg));
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Applies every change of the route store to an in-process edge's table.
pub(crate) async fn follow_store(
    store: RouteStore,
    table: Arc<ArcSwap<routes::RouteTable>>,
    shutdown: CancellationToken,
) {
    let mut changes = store.watch();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                let text = changes.borrow_and_update().text.clone();
                // The store only holds validated tables.
                if let Ok(new) = routes::RouteTable::parse(&text) {
                    table.store(Arc::new(new));
                }
            }
        }
    }
}
