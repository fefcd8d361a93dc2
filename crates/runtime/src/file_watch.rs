//! Polling a file for content changes.
//!
//! Polling (rather than inotify) also follows Kubernetes ConfigMap updates, which swap a
//! symlink instead of writing the file.

use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Calls `on_change` with the file's new content whenever it differs from the last content
/// seen (the content at the time of the call counts as seen), and with the error when the file
/// becomes unreadable (once, until it is readable again), checking every `interval`, until
/// `shutdown`.
pub async fn watch(
    path: PathBuf,
    interval: Duration,
    shutdown: CancellationToken,
    mut on_change: impl FnMut(std::io::Result<Vec<u8>>) + Send,
) {
    let mut last = tokio::fs::read(&path).await.ok();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match tokio::fs::read(&path).await {
            Ok(content) => {
                if last.as_deref() != Some(content.as_slice()) {
                    last = Some(content.clone());
                    on_change(Ok(content));
                }
            }
            Err(err) => {
                if last.take().is_some() {
                    on_change(Err(err));
                }
            }
        }
    }
}
