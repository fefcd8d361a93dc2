//! Loading and watching a routes file.

use arc_swap::ArcSwap;
use routes::RouteTable;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A routes file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RoutesFileError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file has an error; nothing of it is used.
    #[error("{path}:{}: {}", .source.line, .source.reason)]
    Parse {
        /// File.
        path: PathBuf,
        /// Line and reason.
        source: routes::RoutesError,
    },
}

/// Reads and parses a routes file.
pub fn load(path: &Path) -> Result<RouteTable, RoutesFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| RoutesFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    RouteTable::parse(&text).map_err(|source| RoutesFileError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Re-reads `path` every `interval` and swaps in the new table when the content changed and
/// parses. A bad file is logged (file, line, reason) and counted; the old table stays.
/// Polling (rather than inotify) also follows Kubernetes ConfigMap symlink swaps.
pub async fn watch(
    path: PathBuf,
    table: Arc<ArcSwap<RouteTable>>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut last = std::fs::read(&path).ok();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let content = match tokio::fs::read(&path).await {
            Ok(c) => c,
            Err(err) => {
                if last.is_some() {
                    tracing::warn!(path = %path.display(), error = %err, "routes file unreadable; keeping the current routes");
                    last = None;
                }
                continue;
            }
        };
        if last.as_deref() == Some(content.as_slice()) {
            continue;
        }
        let parsed = std::str::from_utf8(&content)
            .map_err(|_| routes::RoutesError {
                line: 0,
                reason: "file is not UTF-8".into(),
            })
            .and_then(RouteTable::parse);
        match parsed {
            Ok(new) => {
                tracing::info!(path = %path.display(), routes = new.routes().len(), "routes reloaded");
                table.store(Arc::new(new));
            }
            Err(err) => {
                tracing::error!(
                    path = %path.display(),
                    line = err.line,
                    reason = %err.reason,
                    "routes file rejected; keeping the current routes"
                );
                metrics::counter!("gripmesh_edge_routes_reload_errors_total").increment(1);
            }
        }
        last = Some(content);
    }
}
