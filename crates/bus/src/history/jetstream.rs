//! History in NATS JetStream: one stream, `GRIPMESH_HISTORY`, capturing `gripmesh.hist.<channel>`
//! with per-subject limits — NATS's own advice for many small histories (no stream and no
//! consumer per channel). The stream keeps the largest SIZE and AGE of the policy; a channel
//! under a smaller rule is trimmed to its own limits when read (each stored item carries them).
//!
//! * Store: a JetStream publish with `Nats-Msg-Id` = hash(channel, id), so the stream's
//!   duplicate window (60 s) de-duplicates across control replicas; the publish ack gives the
//!   item's stream sequence, its `seq`. A batch is sent pipelined, then its acks awaited in order.
//! * Read (a client's resume, or an edge catching a channel up after a bus outage): one
//!   short-lived ordered consumer filtered on the channel's subject, read to the end, then
//!   deleted. A read after a position starts there rather than at the channel's oldest item.

use super::{
    After, DEDUP_WINDOW, HistoryError, HistoryStore, Limits, MAX_REPLAY_BYTES, MAX_REPLAY_ITEMS,
    Receipt, Record, Resume, StoreItem, resume_from,
};
use crate::NatsBus;
use async_nats::jetstream::{self, consumer, stream};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use std::collections::VecDeque;
use std::time::Duration;

/// The history stream's name.
pub const HISTORY_STREAM: &str = "GRIPMESH_HISTORY";
/// Prefix of history subjects; the channel follows as one token (see [`history_subject`]).
const SUBJECT_PREFIX: &str = "gripmesh.hist.";
/// Header carrying the publisher's id (percent-escaped).
const ID_HEADER: &str = "Gripmesh-Id";
/// Header carrying the channel's limits: `<size> <age seconds>`.
const KEEP_HEADER: &str = "Gripmesh-Keep";
/// Time allowed for one resume read.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Reads tried before a copy of the stream that stays behind its leader is reported.
const STALE_READS: u32 = 5;

/// The JetStream subject holding `channel`'s history.
pub fn history_subject(channel: &str) -> String {
    let live = crate::subject::channel_subject(channel);
    let token = &live[crate::subject::CHANNEL_PREFIX.len()..];
    format!("{SUBJECT_PREFIX}{token}")
}

/// How long "there is no history stream" is remembered, so a cluster without history does
/// not pay a JetStream request for every `prev-id` (Pushpin-style long-polling).
const DISABLED_TTL_NANOS: u64 = 10_000_000_000;

/// A [`HistoryStore`] on JetStream. Cheap to clone.
#[derive(Clone)]
pub struct JetStreamHistory {
    js: jetstream::Context,
    /// Until when (ns since the epoch) reads answer [`HistoryError::Disabled`] without asking.
    disabled_until: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl JetStreamHistory {
    /// A store over the NATS connection of `bus`.
    pub fn new(bus: &NatsBus) -> JetStreamHistory {
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .build(bus.client().clone());
        JetStreamHistory {
            js,
            disabled_until: Default::default(),
        }
    }

    /// Creates the history stream, or updates its limits (control, at startup): file storage,
    /// `max` items per channel and `max` age, `replicas` copies, 60 s duplicate window.
    pub async fn ensure_stream(&self, max: Limits, replicas: usize) -> Result<(), HistoryError> {
        let config = stream::Config {
            name: HISTORY_STREAM.to_owned(),
            description: Some("gripmesh channel history".to_owned()),
            subjects: vec![format!("{SUBJECT_PREFIX}*")],
            max_messages_per_subject: i64::from(max.size),
            max_age: max.age,
            storage: stream::StorageType::File,
            num_replicas: replicas.max(1),
            duplicate_window: DEDUP_WINDOW,
            allow_direct: true,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        self.js
            .create_or_update_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| HistoryError::Unavailable(format!("history stream: {e}")))
    }

    /// Reads `channel`'s history after `after`, complete up to what the stream's leader held
    /// when the read began.
    ///
    /// The caller is already subscribed live, so every item stored after that moment also
    /// arrives live; everything stored before it must come from this read. The read goes
    /// through an ephemeral consumer, which answers from its own server's copy of the stream,
    /// and a copy that is still catching up (a NATS node just restarted) can be missing the
    /// newest items — items no live delivery will bring again. So the leader is asked first for
    /// the channel's last sequence, and a read that stops short of it is done again (a few
    /// times, then the history is reported unavailable and the caller's fallback applies).
    async fn read(&self, channel: &str, after: After<'_>) -> Result<Resume, HistoryError> {
        let unavailable = |e: &dyn std::fmt::Display| HistoryError::Unavailable(e.to_string());
        let stream = self
            .js
            .get_stream_no_info(HISTORY_STREAM)
            .await
            .map_err(|e| unavailable(&e))?;
        let held = match stream
            .get_last_raw_message_by_subject(&history_subject(channel))
            .await
        {
            Ok(last) => last.sequence,
            Err(e) => match e.kind() {
                stream::LastRawMessageErrorKind::NoMessageFound => 0,
                stream::LastRawMessageErrorKind::JetStream(err)
                    if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    return Err(HistoryError::Disabled);
                }
                _ => return Err(unavailable(&e)),
            },
        };
        let start = match after {
            After::Id(_) => 1,
            After::Seq(seq) => seq.max(1),
        };
        for attempt in 1..=STALE_READS {
            let (result, seen) = self.read_once(&stream, channel, after).await;
            if held <= seen.max(start - 1) {
                return result;
            }
            tracing::debug!(
                channel,
                held,
                seen,
                attempt,
                "history copy behind its leader; reading again"
            );
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
        }
        Err(HistoryError::Unavailable(
            "history copy behind its leader".into(),
        ))
    }

    /// One read through an ordered consumer: the resume, and the highest stream sequence the
    /// consumer delivered (0 if none).
    async fn read_once(
        &self,
        stream: &stream::Stream<()>,
        channel: &str,
        after: After<'_>,
    ) -> (Result<Resume, HistoryError>, u64) {
        let unavailable = |e: &dyn std::fmt::Display| HistoryError::Unavailable(e.to_string());
        let consumer = match stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: history_subject(channel),
                deliver_policy: match after {
                    After::Id(_) => consumer::DeliverPolicy::All,
                    After::Seq(seq) => consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: seq.max(1),
                    },
                },
                ..Default::default()
            })
            .await
            .map_err(|e| match e.kind() {
                stream::ConsumerErrorKind::JetStream(err)
                    if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    HistoryError::Disabled
                }
                _ => unavailable(&e),
            }) {
            Ok(consumer) => consumer,
            Err(e) => return (Err(e), 0),
        };
        let mut seen = 0;
        let name = consumer.cached_info().name.clone();
        let pending = consumer.cached_info().num_pending;
        let result = if pending == 0 {
            Ok(Resume::NotFound)
        } else {
            drain(consumer, after, &mut seen).await
        };
        // Ordered consumers are ephemeral and expire on their own; deleting now keeps the
        // steady state free of them.
        let js = self.js.clone();
        tokio::spawn(async move {
            if let Ok(stream) = js.get_stream_no_info(HISTORY_STREAM).await {
                let _ = stream.delete_consumer(&name).await;
            }
        });
        (result, seen)
    }
}

/// Takes every message `consumer` has for the read, noting the highest sequence in `seen`.
async fn drain(
    consumer: consumer::Consumer<consumer::pull::OrderedConfig>,
    after: After<'_>,
    seen: &mut u64,
) -> Result<Resume, HistoryError> {
    let unavailable = |e: &dyn std::fmt::Display| HistoryError::Unavailable(e.to_string());
    let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
    let mut kept: VecDeque<Record> = VecDeque::new();
    let mut kept_bytes = 0usize;
    let mut dropped = false;
    loop {
        let Some(msg) = messages.next().await else {
            break Err(HistoryError::Unavailable("history read ended early".into()));
        };
        let msg = msg.map_err(|e| unavailable(&e))?;
        let info = msg.info().map_err(|e| unavailable(&e))?;
        let (seq, left) = (info.stream_sequence, info.pending);
        *seen = (*seen).max(seq);
        let stored_nanos = u64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(0);
        let headers = msg.headers.as_ref();
        let id = headers
            .and_then(|h| h.get(ID_HEADER))
            .map(|v| unescape(v.as_str()));
        let limits = headers
            .and_then(|h| h.get(KEEP_HEADER))
            .and_then(|v| parse_keep(v.as_str()))
            .unwrap_or(Limits {
                size: u32::MAX,
                age: Duration::from_secs(u64::MAX / 4),
            });
        kept_bytes += msg.payload.len();
        kept.push_back(Record {
            seq,
            id,
            stored_nanos,
            limits,
            payload: msg.payload.clone(),
        });
        // Hold at most one replay's worth (plus X itself) in memory.
        while kept.len() > MAX_REPLAY_ITEMS + 1 || kept_bytes > MAX_REPLAY_BYTES * 2 {
            if let Some(r) = kept.pop_front() {
                kept_bytes -= r.payload.len();
                dropped = true;
            }
        }
        if left == 0 {
            let resume = resume_from(kept, after, super::now_nanos())?;
            break match resume {
                Resume::NotFound if dropped => Err(HistoryError::TooLarge),
                other => Ok(other),
            };
        }
    }
}

impl HistoryStore for JetStreamHistory {
    fn store(&self, items: Vec<StoreItem>) -> BoxFuture<'_, Result<Vec<Receipt>, HistoryError>> {
        async move {
            let mut acks = Vec::with_capacity(items.len());
            for item in items {
                let mut publish = jetstream::message::PublishMessage::build()
                    .payload(item.payload)
                    .header(
                        KEEP_HEADER,
                        format!("{} {}", item.limits.size, item.limits.age.as_secs()).as_str(),
                    );
                if let Some(id) = &item.id {
                    publish = publish
                        .message_id(super::dedup_key(&item.channel, id))
                        .header(ID_HEADER, escape(id).as_str());
                }
                let ack = self
                    .js
                    .send_publish(history_subject(&item.channel), publish)
                    .await
                    .map_err(|e| HistoryError::Unavailable(e.to_string()))?;
                acks.push(ack);
            }
            let mut receipts = Vec::with_capacity(acks.len());
            for ack in acks {
                let ack = ack
                    .await
                    .map_err(|e| HistoryError::Unavailable(e.to_string()))?;
                receipts.push(Receipt {
                    seq: ack.sequence,
                    duplicate: ack.duplicate,
                });
            }
            Ok(receipts)
        }
        .boxed()
    }

    fn read_after<'a>(
        &'a self,
        channel: &'a str,
        after_id: &'a str,
    ) -> BoxFuture<'a, Result<Resume, HistoryError>> {
        self.read_timed(channel, After::Id(after_id)).boxed()
    }

    fn read_after_seq<'a>(
        &'a self,
        channel: &'a str,
        after_seq: u64,
    ) -> BoxFuture<'a, Result<Resume, HistoryError>> {
        self.read_timed(channel, After::Seq(after_seq)).boxed()
    }
}

impl JetStreamHistory {
    /// [`JetStreamHistory::read`] within [`READ_TIMEOUT`], remembering a missing stream.
    async fn read_timed(&self, channel: &str, after: After<'_>) -> Result<Resume, HistoryError> {
        use std::sync::atomic::Ordering;
        let now = super::now_nanos();
        if self.disabled_until.load(Ordering::Relaxed) > now {
            return Err(HistoryError::Disabled);
        }
        let result = tokio::time::timeout(READ_TIMEOUT, self.read(channel, after))
            .await
            .unwrap_or_else(|_| Err(HistoryError::Unavailable("history read timed out".into())));
        if matches!(result, Err(HistoryError::Disabled)) {
            self.disabled_until
                .store(now.saturating_add(DISABLED_TTL_NANOS), Ordering::Relaxed);
        }
        result
    }
}

fn parse_keep(v: &str) -> Option<Limits> {
    let (size, age) = v.split_once(' ')?;
    Some(Limits {
        size: size.parse().ok()?,
        age: Duration::from_secs(age.parse().ok()?),
    })
}

/// Percent-escapes what a header value cannot carry (controls, `%`, non-ASCII).
fn escape(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_graphic() && b != b'%' || b == b' ' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(n) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(n);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_the_header() {
        for id in ["plain", "with space", "100%", "ünï\r\n", ""] {
            assert_eq!(unescape(&escape(id)), id);
            assert!(!escape(id).contains(['\r', '\n']));
        }
        assert_eq!(history_subject("a.b"), "gripmesh.hist.a_2Eb");
        assert_eq!(
            parse_keep("10 300"),
            Some(Limits {
                size: 10,
                age: Duration::from_secs(300)
            })
        );
    }
}
