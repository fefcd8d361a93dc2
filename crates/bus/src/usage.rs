//! Usage records on JetStream (docs/protocol.md, "Key limits and usage"): edges publish each record to the `gripmesh.usage`
//! subject of one stream with bounded retention; a collector (or control's webhook feed, with
//! one durable consumer) reads it at its own pace, so nothing is lost while it is down.
//!
//! Records are opaque JSON here; the edge builds them and the webhook forwards them.

use crate::BusError;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Subject every usage record is published on.
pub const USAGE_SUBJECT: &str = "gripmesh.usage";
/// Name of the JetStream stream holding usage records.
pub const USAGE_STREAM: &str = "GRIPMESH_USAGE";
/// Durable consumer control's webhook feed reads with (shared by every control replica).
pub const WEBHOOK_CONSUMER: &str = "gripmesh-usage-webhook";

/// Records published and awaited together (their acks are awaited as one batch).
const PUBLISH_BATCH: usize = 256;
/// Records fetched per webhook batch.
const FETCH_BATCH: usize = 500;
/// How long the webhook consumer leaves a delivered record unacknowledged before JetStream
/// redelivers it; progress acks extend it while the webhook is retried.
const ACK_WAIT: Duration = Duration::from_secs(120);

/// One usage record: its JSON and a stable id (`<connection_id>/<seq>`), used as the
/// `Nats-Msg-Id` so a retried publish is stored once.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    /// `<connection_id>/<seq>`.
    pub id: String,
    /// The record (one JSON object, no trailing newline).
    pub json: Bytes,
}

/// Retention of the usage stream (flags `--usage-stream-max-age`, `--usage-stream-max-bytes`).
#[derive(Debug, Clone)]
pub struct UsageStreamConfig {
    /// Records older than this are discarded.
    pub max_age: Duration,
    /// The stream keeps at most this many bytes (oldest records discarded first).
    pub max_bytes: i64,
}

impl Default for UsageStreamConfig {
    fn default() -> Self {
        UsageStreamConfig {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
        }
    }
}

/// Creates the usage stream, or updates its retention to `config` (idempotent; edges and
/// control all call it at startup).
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &UsageStreamConfig,
) -> Result<(), BusError> {
    let wanted = stream::Config {
        name: USAGE_STREAM.to_owned(),
        subjects: vec![USAGE_SUBJECT.to_owned()],
        max_age: config.max_age,
        max_bytes: config.max_bytes,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        // Retried publishes (same Nats-Msg-Id) within this window are stored once.
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    js.create_or_update_stream(wanted)
        .await
        .map(|_| ())
        .map_err(|e| BusError::Unavailable(format!("usage stream: {e}")))
}

/// Publishes the records from `rx` to the usage stream until `rx` ends, or `shutdown` is
/// cancelled and what is queued has been published (at most `drain` later).
///
/// A record is retried (with backoff) until JetStream acknowledges it; its `Nats-Msg-Id`
/// keeps retries from storing it twice.
pub async fn publish_records(
    js: jetstream::Context,
    config: UsageStreamConfig,
    mut rx: mpsc::Receiver<UsageRecord>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let mut stream_ready = false;
    let mut backoff = Backoff::new();
    let mut batch: Vec<UsageRecord> = Vec::with_capacity(PUBLISH_BATCH);
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if batch.is_empty() {
            let next = match deadline {
                // Draining (the edge's connections are closed by now): what is queued.
                Some(_) => match rx.try_recv() {
                    Ok(r) => Some(r),
                    Err(_) => return,
                },
                None => tokio::select! {
                    r = rx.recv() => r,
                    _ = shutdown.cancelled() => {
                        deadline = Some(tokio::time::Instant::now() + drain);
                        continue;
                    }
                },
            };
            let Some(first) = next else { return };
            batch.push(first);
            while batch.len() < PUBLISH_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            tracing::warn!(
                lost = batch.len() + rx.len(),
                "usage records not published before exit"
            );
            return;
        }
        if !stream_ready {
            match ensure_stream(&js, &config).await {
                Ok(()) => stream_ready = true,
                Err(err) => {
                    tracing::warn!(error = %err, "usage stream unavailable; retrying");
                    backoff.wait(&shutdown, deadline).await;
                    continue;
                }
            }
        }
        batch = publish_batch(&js, batch).await;
        if batch.is_empty() {
            backoff.reset();
        } else {
            // A stream deleted or lost by its server is created again.
            stream_ready = false;
            backoff.wait(&shutdown, deadline).await;
        }
    }
}

/// Publishes `batch`; returns the records that were not acknowledged.
async fn publish_batch(js: &jetstream::Context, batch: Vec<UsageRecord>) -> Vec<UsageRecord> {
    let mut acks = Vec::with_capacity(batch.len());
    for record in &batch {
        let msg = jetstream::message::PublishMessage::build()
            .payload(record.json.clone())
            .message_id(&record.id);
        acks.push(js.send_publish(USAGE_SUBJECT, msg).await);
    }
    let mut failed = Vec::new();
    let mut first_err = None;
    for (record, ack) in batch.into_iter().zip(acks) {
        let result = match ack {
            Ok(fut) => fut.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(err) = result {
            first_err.get_or_insert(err);
            failed.push(record);
        }
    }
    if let Some(err) = first_err {
        tracing::warn!(failed = failed.len(), error = %err, "usage records not stored; retrying");
        crate::metrics::usage_publish_failed(failed.len());
    }
    failed
}

/// Feeds control's webhook from the usage stream with the shared durable consumer: each batch
/// is handed to `deliver` (which retries until the webhook took it, or returns false on
/// shutdown) and acknowledged only then, so records survive control and webhook outages.
pub async fn consume_records<F, Fut>(
    js: jetstream::Context,
    config: UsageStreamConfig,
    shutdown: CancellationToken,
    mut deliver: F,
) where
    F: FnMut(Vec<Bytes>) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut backoff = Backoff::new();
    'outer: loop {
        if shutdown.is_cancelled() {
            return;
        }
        let consumer = match open_consumer(&js, &config).await {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(error = %err, "usage consumer unavailable; retrying");
                backoff.wait(&shutdown, None).await;
                continue;
            }
        };
        backoff.reset();
        loop {
            let fetched = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = consumer.fetch().max_messages(FETCH_BATCH).expires(Duration::from_secs(1)).messages() => r,
            };
            let mut messages = match fetched {
                Ok(m) => m,
                Err(err) => {
                    tracing::warn!(error = %err, "usage fetch failed");
                    backoff.wait(&shutdown, None).await;
                    continue 'outer;
                }
            };
            let mut batch = Vec::new();
            while let Some(msg) = messages.next().await {
                match msg {
                    Ok(m) => batch.push(m),
                    Err(err) => {
                        tracing::debug!(error = %err, "usage fetch ended early");
                        break;
                    }
                }
            }
            if batch.is_empty() {
                continue;
            }
            let records: Vec<Bytes> = batch.iter().map(|m| m.payload.clone()).collect();
            // While the webhook is retried, keep the batch ours (no redelivery elsewhere).
            let progress = async {
                let mut tick = tokio::time::interval(ACK_WAIT / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    for m in &batch {
                        let _ = m.ack_with(jetstream::AckKind::Progress).await;
                    }
                }
            };
            let delivered = tokio::select! {
                ok = deliver(records) => ok,
                () = progress => false,
            };
            if !delivered {
                // Shutdown: left unacknowledged, redelivered to the next consumer.
                return;
            }
            for m in &batch {
                if let Err(err) = m.ack().await {
                    tracing::debug!(error = %err, "usage ack failed (record will be redelivered)");
                }
            }
        }
    }
}

async fn open_consumer(
    js: &jetstream::Context,
    config: &UsageStreamConfig,
) -> Result<consumer::PullConsumer, BusError> {
    ensure_stream(js, config).await?;
    let stream = js
        .get_stream(USAGE_STREAM)
        .await
        .map_err(|e| BusError::Unavailable(format!("usage stream: {e}")))?;
    stream
        .get_or_create_consumer(
            WEBHOOK_CONSUMER,
            consumer::pull::Config {
                durable_name: Some(WEBHOOK_CONSUMER.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| BusError::Unavailable(format!("usage consumer: {e}")))
}

/// Exponential backoff from 100 ms to 5 s.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(100),
        }
    }

    fn reset(&mut self) {
        self.next = Duration::from_millis(100);
    }

    async fn wait(&mut self, shutdown: &CancellationToken, deadline: Option<tokio::time::Instant>) {
        let mut until = tokio::time::Instant::now() + self.next;
        if let Some(d) = deadline {
            until = until.min(d);
        }
        self.next = (self.next * 2).min(Duration::from_secs(5));
        if deadline.is_some() {
            // Draining: shutdown is already cancelled, so only the timer counts.
            tokio::time::sleep_until(until).await;
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep_until(until) => {}
        }
    }
}
