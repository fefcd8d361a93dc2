//! Usage records (docs/protocol.md, "Key limits and usage"): what each connection on an `authz` route received, for analytics
//! and billing.
//!
//! Counting is per connection with two relaxed atomic adds per write (messages, bytes) — no
//! allocation, lock or bus traffic per message. One sweeper task per edge turns the counters
//! into records every `--usage-interval` (the deltas since the connection's last record) and
//! folds them into the per-app metrics; the connection's final record is made when it closes.
//! Records leave through a bounded queue to whatever the binary wires behind it (JetStream,
//! or the webhook sender in standalone).

use crate::app_labels::{AppLabeller, AppSummary, Tracked};
use crate::conn::CloseReason;
use crate::delivery::Transport;
use bus::usage::UsageRecord;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Record schema version (`"v"`).
pub const SCHEMA_VERSION: u32 = 1;
/// Shortest `--usage-interval` accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Gateway answer naming the developer app (forwarded to the origin on allow).
const APP_HEADER: &str = "x-developer-app";
/// Gateway answer naming the API product.
const PRODUCT_HEADER: &str = "x-api-product";

/// Usage settings of an edge.
#[derive(Debug, Clone)]
pub struct UsageConfig {
    /// Time between interim records of a live connection (`--usage-interval`).
    pub interval: Duration,
    /// This edge's name in records (`--node-id`).
    pub node_id: String,
    /// Apps with their own `app` label in the per-app metrics (`--usage-top-apps`).
    pub top_apps: usize,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            interval: Duration::from_secs(60),
            node_id: "edge".to_owned(),
            top_apps: 100,
        }
    }
}

/// Why a metered connection ended, as written in `close_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EndReason {
    /// The client went away (closed, disconnected, stopped the request).
    Client = 1,
    /// The edge drained (shutdown).
    Drain = 2,
    /// The client read too slowly (send queue overflow).
    SlowConsumer = 3,
    /// The credential was revoked (or a re-check denied it).
    Revoked = 4,
    /// The key's message quota was spent.
    Quota = 5,
    /// The credential expired.
    Expired = 6,
    /// The server side ended it as instructed: the origin closed or disconnected, a `close`
    /// was published, a long-poll was answered or timed out.
    Origin = 7,
}

impl EndReason {
    /// The `close_reason` value.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Client => "client",
            EndReason::Drain => "drain",
            EndReason::SlowConsumer => "slow_consumer",
            EndReason::Revoked => "revoked",
            EndReason::Quota => "quota",
            EndReason::Expired => "expired",
            EndReason::Origin => "origin",
        }
    }

    fn from_u8(v: u8) -> Option<EndReason> {
        Some(match v {
            1 => EndReason::Client,
            2 => EndReason::Drain,
            3 => EndReason::SlowConsumer,
            4 => EndReason::Revoked,
            5 => EndReason::Quota,
            6 => EndReason::Expired,
            7 => EndReason::Origin,
            _ => return None,
        })
    }
}

impl From<CloseReason> for EndReason {
    fn from(r: CloseReason) -> EndReason {
        match r {
            CloseReason::Drain => EndReason::Drain,
            CloseReason::SlowConsumer => EndReason::SlowConsumer,
            CloseReason::Revoked => EndReason::Revoked,
            CloseReason::QuotaExceeded => EndReason::Quota,
            CloseReason::Expired => EndReason::Expired,
        }
    }
}

/// What a record says about its connection besides the counts.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Cluster-unique connection id.
    pub connection_id: String,
    /// Hex SHA-256 of the credential.
    pub key_hash: String,
    /// `X-Developer-App` from the gateway.
    pub app: Option<String>,
    /// `X-Api-Product` from the gateway.
    pub product: Option<String>,
    /// Route id.
    pub route: String,
    /// Transport.
    pub transport: Transport,
    /// Edge (`--node-id`).
    pub edge: Arc<str>,
    /// Opened, ms since the epoch.
    pub opened_at: u64,
}

#[derive(Debug, Default)]
struct Reported {
    seq: u64,
    messages: u64,
    bytes: u64,
    done: bool,
}

/// The counters of one metered connection. The hot path only calls [`UsageMeter::add`].
#[derive(Debug)]
pub struct UsageMeter {
    messages: AtomicU64,
    bytes: AtomicU64,
    end: AtomicU8,
    info: ConnInfo,
    app_key: Arc<str>,
    tracked: Tracked,
    reported: Mutex<Reported>,
}

/// One record's worth of counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delta {
    /// Record number (from 1).
    pub seq: u64,
    /// Messages since the previous record.
    pub messages: u64,
    /// Bytes since the previous record.
    pub bytes: u64,
}

impl UsageMeter {
    /// Counts `messages` deliveries of `bytes` wire bytes written to the client.
    #[inline]
    pub fn add(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Notes how the server side ended the connection (the first note wins; a close reason
    /// on the connection's handle wins over it).
    pub fn ended(&self, reason: EndReason) {
        let _ = self
            .end
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The counts since the previous record; `None` once the final record was taken.
    fn take(&self, last: bool) -> Option<Delta> {
        let mut r = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        if r.done {
            return None;
        }
        let messages = self.messages.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        r.seq += 1;
        let delta = Delta {
            seq: r.seq,
            messages: messages.saturating_sub(r.messages),
            bytes: bytes.saturating_sub(r.bytes),
        };
        r.messages = messages;
        r.bytes = bytes;
        r.done = last;
        Some(delta)
    }
}

/// Builds one record (a JSON object). `end` is `Some((closed_at, reason))` for the final one.
pub fn record_json(
    info: &ConnInfo,
    delta: Delta,
    at: u64,
    end: Option<(u64, EndReason)>,
) -> bytes::Bytes {
    let value = serde_json::json!({
        "type": "usage",
        "v": SCHEMA_VERSION,
        "connection_id": info.connection_id,
        "seq": delta.seq,
        "key_hash": info.key_hash,
        "app": info.app,
        "product": info.product,
        "route": info.route,
        "transport": info.transport.label(),
        "edge": &*info.edge,
        "opened_at": info.opened_at,
        "at": at,
        "closed_at": end.map(|(t, _)| t),
        "messages": delta.messages,
        "bytes": delta.bytes,
        "close_reason": end.map(|(_, r)| r.as_str()),
        "final": end.is_some(),
    });
    bytes::Bytes::from(value.to_string())
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The edge's usage state: live meters, the record queue and the per-app table.
pub struct UsageTracker {
    config: UsageConfig,
    edge_name: Arc<str>,
    /// Random per process, so connection ids stay unique across restarts and edges.
    boot: String,
    live: DashMap<u64, Arc<UsageMeter>>,
    sink: OnceLock<mpsc::Sender<UsageRecord>>,
    apps: Mutex<AppLabeller>,
    dropped: metrics::Counter,
}

impl std::fmt::Debug for UsageTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageTracker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl UsageTracker {
    /// A tracker; records are made once [`UsageTracker::records`] was called.
    pub fn new(config: UsageConfig) -> Arc<UsageTracker> {
        metrics::describe_counter!(
            "gripmesh_usage_records_dropped_total",
            "Usage records dropped because the record queue was full."
        );
        let tracker = Arc::new(UsageTracker {
            edge_name: Arc::from(config.node_id.as_str()),
            apps: Mutex::new(AppLabeller::new(config.top_apps)),
            config,
            boot: format!("{:016x}", fastrand::u64(..)),
            live: DashMap::new(),
            sink: OnceLock::new(),
            dropped: metrics::counter!("gripmesh_usage_records_dropped_total"),
        });
        let weak = Arc::downgrade(&tracker);
        runtime::admin::add_metrics_section(move |out: &mut String| match weak.upgrade() {
            Some(t) => {
                t.apps_lock().render(out);
                true
            }
            None => false,
        });
        tracker
    }

    /// The queue records leave through (bounded to `capacity`; created on the first call).
    pub fn records(&self, capacity: usize) -> Option<mpsc::Receiver<UsageRecord>> {
        let (tx, rx) = mpsc::channel(capacity.max(16));
        self.sink.set(tx).ok().map(|()| rx)
    }

    fn apps_lock(&self) -> std::sync::MutexGuard<'_, AppLabeller> {
        self.apps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts metering connection `id`.
    pub fn open(
        &self,
        id: u64,
        transport: Transport,
        route: &str,
        authorized: &crate::authz::Authorized,
    ) -> Arc<UsageMeter> {
        let header = |name: &str| {
            authorized
                .headers
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .and_then(|(_, v)| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let app = header(APP_HEADER);
        let app_key: Arc<str> = Arc::from(app.as_deref().unwrap_or("unknown"));
        let tracked = self.apps_lock().open(&app_key);
        let meter = Arc::new(UsageMeter {
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            end: AtomicU8::new(0),
            info: ConnInfo {
                connection_id: format!("{}-{id}", self.boot),
                key_hash: authorized.credential_hash.clone(),
                app,
                product: header(PRODUCT_HEADER),
                route: route.to_owned(),
                transport,
                edge: self.edge_name.clone(),
                opened_at: now_ms(),
            },
            app_key,
            tracked,
            reported: Mutex::new(Reported::default()),
        });
        self.live.insert(id, meter.clone());
        meter
    }

    /// Ends metering: the final record (with `reason` when the edge closed the connection).
    pub fn close(&self, id: u64, meter: &UsageMeter, reason: Option<CloseReason>) {
        self.live.remove(&id);
        let end = reason
            .map(EndReason::from)
            .or_else(|| EndReason::from_u8(meter.end.load(Ordering::Acquire)))
            .unwrap_or(EndReason::Client);
        let Some(delta) = meter.take(true) else {
            return;
        };
        {
            let mut apps = self.apps_lock();
            apps.add(&meter.app_key, meter.tracked, delta.messages, delta.bytes);
            apps.close(&meter.app_key, meter.tracked);
        }
        if let Some(sink) = self.sink.get() {
            let now = now_ms();
            let record = UsageRecord {
                id: format!("{}/{}", meter.info.connection_id, delta.seq),
                json: record_json(&meter.info, delta, now, Some((now, end))),
            };
            if sink.try_send(record).is_err() {
                self.dropped.increment(1);
            }
        }
    }

    /// Makes an interim record of every live connection each interval, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.interval.max(MIN_INTERVAL));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.sweep().await;
        }
    }

    /// One interval: interim records and per-app counts, then a re-rank of the apps.
    async fn sweep(&self) {
        let meters: Vec<Arc<UsageMeter>> = self.live.iter().map(|e| e.value().clone()).collect();
        let sink = self.sink.get();
        for meter in meters {
            let Some(delta) = meter.take(false) else {
                continue;
            };
            self.apps_lock()
                .add(&meter.app_key, meter.tracked, delta.messages, delta.bytes);
            let Some(sink) = sink else { continue };
            let record = UsageRecord {
                id: format!("{}/{}", meter.info.connection_id, delta.seq),
                json: record_json(&meter.info, delta, now_ms(), None),
            };
            // Interim records wait for room (this task is off the delivery path), leaving a
            // quarter of the queue for final records, which cannot wait.
            while sink.capacity() < sink.max_capacity() / 4 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if sink.try_send(record).is_err() {
                self.dropped.increment(1);
            }
        }
        self.apps_lock().rerank();
    }

    /// The labelled apps and `other`, busiest first (for `gripmesh demo`).
    pub fn app_summary(&self) -> Vec<AppSummary> {
        self.apps_lock().summary()
    }

    /// Number of metered live connections.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }
}

/// Wire size of a WebSocket frame the edge sends (unmasked) with `payload` bytes.
pub fn ws_frame_len(payload: usize) -> u64 {
    let header = if payload < 126 {
        2
    } else if payload <= 0xFFFF {
        4
    } else {
        10
    };
    (payload + header) as u64
}

/// Wire size of an HTTP/1.1 chunk carrying `data` bytes (`<hex size>\r\n<data>\r\n`).
pub fn chunk_len(data: usize) -> u64 {
    let mut digits = 1;
    let mut n = data >> 4;
    while n > 0 {
        digits += 1;
        n >>= 4;
    }
    (data + digits + 4) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ConnInfo {
        ConnInfo {
            connection_id: "abc-1".into(),
            key_hash: "kh".into(),
            app: Some("trading-desk".into()),
            product: None,
            route: "r1".into(),
            transport: Transport::Ws,
            edge: Arc::from("host:7999"),
            opened_at: 1000,
        }
    }

    fn meter() -> UsageMeter {
        UsageMeter {
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            end: AtomicU8::new(0),
            info: info(),
            app_key: Arc::from("trading-desk"),
            tracked: AppLabeller::new(1).open(&Arc::from("x")),
            reported: Mutex::new(Reported::default()),
        }
    }

    #[test]
    fn records_carry_deltas_and_sequence_numbers_and_stop_after_the_final_one() {
        let m = meter();
        m.add(2, 20);
        assert_eq!(
            m.take(false),
            Some(Delta {
                seq: 1,
                messages: 2,
                bytes: 20
            })
        );
        assert_eq!(
            m.take(false),
            Some(Delta {
                seq: 2,
                messages: 0,
                bytes: 0
            })
        );
        m.add(1, 5);
        assert_eq!(
            m.take(true),
            Some(Delta {
                seq: 3,
                messages: 1,
                bytes: 5
            })
        );
        assert_eq!(m.take(false), None);
        assert_eq!(m.take(true), None);
    }

    #[test]
    fn record_json_has_the_schema() {
        let d = Delta {
            seq: 3,
            messages: 4,
            bytes: 50,
        };
        let v: serde_json::Value =
            serde_json::from_slice(&record_json(&info(), d, 2000, None)).unwrap_or_default();
        assert_eq!(v["type"], "usage");
        assert_eq!(v["v"], 1);
        assert_eq!(v["connection_id"], "abc-1");
        assert_eq!(v["seq"], 3);
        assert_eq!(v["key_hash"], "kh");
        assert_eq!(v["app"], "trading-desk");
        assert!(v["product"].is_null());
        assert_eq!(v["route"], "r1");
        assert_eq!(v["transport"], "ws");
        assert_eq!(v["edge"], "host:7999");
        assert_eq!(v["opened_at"], 1000);
        assert!(v["closed_at"].is_null());
        assert_eq!(
            (v["messages"].as_u64(), v["bytes"].as_u64()),
            (Some(4), Some(50))
        );
        assert!(v["close_reason"].is_null());
        assert_eq!(v["final"], false);
        let v: serde_json::Value = serde_json::from_slice(&record_json(
            &info(),
            d,
            2000,
            Some((2000, EndReason::SlowConsumer)),
        ))
        .unwrap_or_default();
        assert_eq!(v["closed_at"], 2000);
        assert_eq!(v["close_reason"], "slow_consumer");
        assert_eq!(v["final"], true);
    }

    #[test]
    fn wire_sizes() {
        assert_eq!(ws_frame_len(0), 2);
        assert_eq!(ws_frame_len(125), 127);
        assert_eq!(ws_frame_len(126), 130);
        assert_eq!(ws_frame_len(65535), 65539);
        assert_eq!(ws_frame_len(65536), 65546);
        // "5\r\nhello\r\n"
        assert_eq!(chunk_len(5), 10);
        // "10\r\n" + 16 + "\r\n"
        assert_eq!(chunk_len(16), 22);
        assert_eq!(chunk_len(0x1000), 0x1000 + 3 + 4 + 1);
    }

    #[test]
    fn the_edge_reason_wins_over_the_noted_one() {
        let m = meter();
        m.ended(EndReason::Origin);
        m.ended(EndReason::Client);
        assert_eq!(
            EndReason::from_u8(m.end.load(Ordering::Acquire)),
            Some(EndReason::Origin)
        );
        assert_eq!(EndReason::from(CloseReason::Revoked), EndReason::Revoked);
    }
}
