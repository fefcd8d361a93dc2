//! Resuming by `prev-id` from channel history (docs/protocol.md, "History").
//!
//! The connection is subscribed live *before* history is read, so every item stored after the
//! read began reaches the connection's queue live, and every item stored before it is in the
//! read. The replay goes out first; queued live deliveries at or below the last replayed
//! position are skipped (they were replayed, or came before the client's last id), later ones
//! follow. Control stores an item before publishing it live and the live copy carries the
//! stored position, which is what makes that comparison exact.

use crate::EdgeInner;
use crate::conn::ConnQueue;
use crate::delivery::Delivery;
use crate::metrics::EdgeMetrics;
use bus::history::{HistoryError, Resume};
use std::sync::Arc;

/// Resumes read from history at once per edge; more wait their turn (bounds the memory that
/// replays being read can take: at most this many × `MAX_REPLAY_BYTES`).
pub(crate) const MAX_CONCURRENT_RESUMES: usize = 32;

/// What a resume found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resumed {
    /// The items after the client's last id are queued ahead of live ones.
    Recovered,
    /// The last id is not in history (too old, unknown, channel without history, or history
    /// unreachable): the caller takes the transport's fallback. Counted.
    Gap,
    /// This edge has no history at all: behave as before history existed. Not counted.
    Off,
}

/// Reads `channel`'s history after `prev_id` into `queue` (the connection must already be
/// subscribed to `channel`). Counts the outcome in `gripmesh_edge_recoveries_total`.
pub(crate) async fn resume(
    edge: &EdgeInner,
    queue: &mut ConnQueue,
    channel: &str,
    prev_id: &str,
) -> Resumed {
    let Some(history) = &edge.config.history else {
        return Resumed::Off;
    };
    let read = {
        let _permit = edge.resumes.acquire().await;
        history.0.read_after(channel, prev_id).await
    };
    match read {
        Ok(Resume::Found { after_seq, items }) => {
            let mut floor = after_seq;
            let mut replay = Vec::with_capacity(items.len());
            for stored in items {
                floor = floor.max(stored.seq);
                match bus::payload::decode_full(stored.payload) {
                    // Replays are not live deliveries: no latency sample (accept time 0).
                    Ok(d) => {
                        if let Some(mut delivery) = Delivery::render(d.item, 0) {
                            delivery.seq = stored.seq;
                            replay.push(Arc::new(delivery));
                        }
                    }
                    Err(err) => {
                        tracing::warn!(%channel, error = %err, "skipping undecodable history item");
                        EdgeMetrics::dropped("bad_payload");
                    }
                }
            }
            tracing::debug!(%channel, prev_id, items = replay.len(), "resumed from history");
            queue.resume(channel, floor, replay);
            EdgeMetrics::recovery(true);
            Resumed::Recovered
        }
        Ok(Resume::NotFound) => {
            tracing::debug!(%channel, prev_id, "last id not in history");
            EdgeMetrics::recovery(false);
            Resumed::Gap
        }
        Err(HistoryError::Disabled) => Resumed::Off,
        Err(err) => {
            tracing::warn!(%channel, prev_id, error = %err, "cannot resume from history");
            EdgeMetrics::recovery(false);
            Resumed::Gap
        }
    }
}
