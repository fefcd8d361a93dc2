//! Channel history (docs/protocol.md, "History"): which channels keep their recent items, and where they are kept.
//!
//! Control stores an item of a channel with history *before* it publishes it live, and the live
//! copy carries the position (`seq`) the store gave it, so history and live share one order per
//! channel. An edge reads history only when a client resumes (`prev-id`), and closes the seam
//! between what it replays and what arrives live by that position.
//!
//! [`HistoryStore`] is the seam: [`MemoryHistory`] for standalone without NATS, and
//! [`JetStreamHistory`] (one JetStream stream with per-subject limits) for a cluster. One
//! conformance suite runs against both (`tests/history_conformance.rs`).

mod jetstream;
mod memory;
mod policy;

pub use jetstream::{HISTORY_STREAM, JetStreamHistory, history_subject};
pub use memory::MemoryHistory;
pub use policy::{HistoryPolicy, Limits, PolicyError};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use std::time::Duration;

/// How long a publish `id` de-duplicates later copies on the same channel.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(60);

/// Most items one resume replays; a longer gap is treated as history unavailable (the client
/// falls back to the origin, as without history).
pub const MAX_REPLAY_ITEMS: usize = 10_000;
/// Most payload bytes one resume replays (same fallback beyond).
pub const MAX_REPLAY_BYTES: usize = 8 << 20;

/// One item to store.
#[derive(Debug, Clone)]
pub struct StoreItem {
    /// Channel.
    pub channel: String,
    /// Publisher's item id (de-dup key within [`DEDUP_WINDOW`] on this channel).
    pub id: Option<String>,
    /// The channel's policy.
    pub limits: Limits,
    /// The bus payload (without a `seq`).
    pub payload: Bytes,
}

/// What the store did with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The item's position in its channel's history (increasing along the channel).
    pub seq: u64,
    /// The id was already stored within the de-dup window: nothing new was stored and `seq`
    /// is the earlier copy's; the caller must not publish it live again.
    pub duplicate: bool,
}

/// One stored item as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Position in the channel's history.
    pub seq: u64,
    /// The bus payload as stored.
    pub payload: Bytes,
}

/// The answer to "what came after id X on channel C".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// X is in history: `after_seq` is its position and `items` every later item, in order.
    Found {
        /// X's position.
        after_seq: u64,
        /// Items after X (possibly none).
        items: Vec<Stored>,
    },
    /// X is not (or no longer) in C's history, or C keeps none.
    NotFound,
}

/// History failures.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The store cannot be reached or refused the request.
    #[error("history unavailable: {0}")]
    Unavailable(String),
    /// The cluster keeps no history at all (no history stream): resumes behave as without
    /// history, uncounted.
    #[error("history is not enabled")]
    Disabled,
    /// The requested replay is larger than [`MAX_REPLAY_ITEMS`] / [`MAX_REPLAY_BYTES`].
    #[error("history gap too large to replay")]
    TooLarge,
}

/// Where channel history lives.
pub trait HistoryStore: Send + Sync + 'static {
    /// Stores a batch in order and returns one receipt per item, in order. Items are stored
    /// one after another (a later item of a channel gets a higher `seq`); the future resolves
    /// once every item is stored, or with the first failure (items before it may be stored).
    fn store(&self, items: Vec<StoreItem>) -> BoxFuture<'_, Result<Vec<Receipt>, HistoryError>>;

    /// Every item of `channel` after the one whose id is `after_id`, in order, within the
    /// channel's size and age limits.
    fn read_after<'a>(
        &'a self,
        channel: &'a str,
        after_id: &'a str,
    ) -> BoxFuture<'a, Result<Resume, HistoryError>>;

    /// Every item of `channel` after the one stored at position `after_seq`, in order:
    /// [`Resume::NotFound`] when that item is no longer in history (what came after it may be
    /// incomplete). An edge catching a channel up after a bus outage reads this way.
    fn read_after_seq<'a>(
        &'a self,
        channel: &'a str,
        after_seq: u64,
    ) -> BoxFuture<'a, Result<Resume, HistoryError>>;
}

/// Where a read starts: after the item with this id, or after this position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After<'a> {
    /// After the item with this publisher id.
    Id(&'a str),
    /// After the item stored at this position.
    Seq(u64),
}

impl After<'_> {
    fn is(&self, r: &Record) -> bool {
        match self {
            After::Id(id) => r.id.as_deref() == Some(*id),
            After::Seq(seq) => r.seq == *seq,
        }
    }
}

/// The `Nats-Msg-Id` / de-dup key of an item id on a channel: JetStream de-duplicates across a
/// whole stream, so the channel is part of the key. Hex SHA-256, safe in any header.
pub fn dedup_key(channel: &str, id: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update((channel.len() as u64).to_be_bytes());
    h.update(channel.as_bytes());
    h.update(id.as_bytes());
    hex::encode(h.finalize())
}

/// Applies a channel's limits to its stored items (oldest first) and finds `after`:
/// items older than `age` or beyond the newest `size` are out of history. `records` are
/// (seq, id, stored at (ns since the epoch), limits, payload).
pub(crate) fn resume_from(
    records: impl IntoIterator<Item = Record>,
    after: After<'_>,
    now_nanos: u64,
) -> Result<Resume, HistoryError> {
    let records: Vec<Record> = records.into_iter().collect();
    let Some(newest) = records.last() else {
        return Ok(Resume::NotFound);
    };
    let limits = newest.limits;
    let keep_from = records.len().saturating_sub(limits.size as usize);
    let age = u64::try_from(limits.age.as_nanos()).unwrap_or(u64::MAX);
    let live: Vec<&Record> = records[keep_from..]
        .iter()
        .filter(|r| r.stored_nanos.saturating_add(age) > now_nanos)
        .collect();
    let Some(pos) = live.iter().position(|r| after.is(r)) else {
        return Ok(Resume::NotFound);
    };
    let after = &live[pos + 1..];
    if after.len() > MAX_REPLAY_ITEMS
        || after.iter().map(|r| r.payload.len()).sum::<usize>() > MAX_REPLAY_BYTES
    {
        return Err(HistoryError::TooLarge);
    }
    Ok(Resume::Found {
        after_seq: live[pos].seq,
        items: after
            .iter()
            .map(|r| Stored {
                seq: r.seq,
                payload: r.payload.clone(),
            })
            .collect(),
    })
}

/// One stored item with what [`resume_from`] needs to judge it.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) seq: u64,
    pub(crate) id: Option<String>,
    pub(crate) stored_nanos: u64,
    pub(crate) limits: Limits,
    pub(crate) payload: Bytes,
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
