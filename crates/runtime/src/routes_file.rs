//! Loading and watching a routes file: the edge's `--routes FILE` table and the file control
//! writes to the route bucket use the same reading, parsing and error reporting. Rejections
//! are counted in `gripmesh_edge_routes_reload_errors_total` on both tiers (the documented
//! name, which the shipped alerts and dashboard use).

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

/// Reads and parses a routes file (read once): its text and its table.
pub fn load(path: &Path) -> Result<(String, RouteTable), RoutesFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| RoutesFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table = RouteTable::parse_serving(&text).map_err(|source| RoutesFileError::Parse {
        path: path.to_owned(),
        source,
    })?;
    Ok((text, table))
}

/// Re-reads `path` every `interval` and swaps in the new table when the content changed and
/// parses. A bad file is logged (file, line, reason) and counted; the old table stays.
pub async fn watch(
    path: PathBuf,
    table: Arc<ArcSwap<RouteTable>>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let shown = path.clone();
    crate::file_watch::watch(path, interval, shutdown, move |content| {
        match content.map_err(|e| format!("file unreadable: {e}")).and_then(|c| {
            parse_bytes(&c).map_err(|err| format!("line {}: {}", err.line, err.reason))
        }) {
            Ok(new) => {
                tracing::info!(path = %shown.display(), routes = new.routes().len(), "routes reloaded");
                table.store(Arc::new(new));
            }
            Err(reason) => rejected(&shown, &reason),
        }
    })
    .await;
}

/// Parses routes-file bytes (which must be UTF-8).
pub fn parse_bytes(content: &[u8]) -> Result<RouteTable, routes::RoutesError> {
    std::str::from_utf8(content)
        .map_err(|_| routes::RoutesError {
            line: 0,
            reason: "file is not UTF-8".into(),
        })
        .and_then(RouteTable::parse_serving)
}

/// Logs and counts a routes file that could not be used; the current table stays.
pub fn rejected(path: &Path, reason: &str) {
    tracing::error!(path = %path.display(), %reason, "routes file rejected; keeping the current routes");
    metrics::counter!("gripmesh_edge_routes_reload_errors_total").increment(1);
}
