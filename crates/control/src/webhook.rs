//! `--usage-webhook URL`: usage records POSTed in batches as JSON lines
//! (`Content-Type: application/x-ndjson`, one record per line).
//!
//! A batch is retried with exponential backoff (250 ms doubling to 30 s) until the webhook
//! answers 2xx; a timeout, a connection failure or any other status is a failure. Standalone
//! feeds the sender from the edge through a bounded buffer ([`WebhookSender::offer`] never
//! waits: when the buffer is full the record is dropped and counted); in a cluster, control
//! feeds it from the JetStream usage stream ([`WebhookSender::deliver`]), acknowledging a
//! batch only once the webhook took it.

use bytes::{Bytes, BytesMut};
use http::{Request, Uri, header};
use http_body_util::BodyExt;
use runtime::client::{Endpoint, HttpClient};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// First retry delay.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Largest webhook answer body read (and ignored).
const MAX_ANSWER: usize = 64 * 1024;

/// Webhook settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http(s)://host[:port]/path`.
    pub url: String,
    /// Records buffered at most (standalone); more are dropped and counted.
    pub buffer_records: usize,
    /// Record bytes buffered at most (standalone).
    pub buffer_bytes: usize,
    /// Records per POST at most.
    pub batch_records: usize,
    /// Bytes per POST at most (a single larger record is sent alone).
    pub batch_bytes: usize,
    /// Time allowed for connecting and for the answer.
    pub timeout: Duration,
}

impl WebhookConfig {
    /// Defaults for `url`: 10,000 records / 16 MiB buffered, 500 records / 1 MiB per POST,
    /// 10 s timeout.
    pub fn new(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.to_owned(),
            buffer_records: 10_000,
            buffer_bytes: 16 << 20,
            batch_records: 500,
            batch_bytes: 1 << 20,
            timeout: Duration::from_secs(10),
        }
    }
}

struct Buffer {
    records: VecDeque<Bytes>,
    bytes: usize,
}

struct Shared {
    config: WebhookConfig,
    endpoint: Endpoint,
    authority: String,
    path: String,
    client: HttpClient,
    buffer: Mutex<Buffer>,
    notify: Notify,
    metrics: WebhookMetrics,
}

#[derive(Clone)]
struct WebhookMetrics {
    sent: metrics::Counter,
    dropped: metrics::Counter,
    failures: metrics::Counter,
    buffered: metrics::Gauge,
}

impl WebhookMetrics {
    fn new() -> WebhookMetrics {
        metrics::describe_counter!(
            "gripmesh_usage_webhook_records_sent_total",
            "Usage records the webhook accepted (2xx)."
        );
        metrics::describe_counter!(
            "gripmesh_usage_webhook_dropped_total",
            "Usage records dropped because the webhook buffer was full."
        );
        metrics::describe_counter!(
            "gripmesh_usage_webhook_failures_total",
            "Webhook POSTs that failed (timeout, connection error, non-2xx) and were retried."
        );
        metrics::describe_gauge!(
            "gripmesh_usage_webhook_buffered",
            "Usage records waiting for the webhook."
        );
        WebhookMetrics {
            sent: metrics::counter!("gripmesh_usage_webhook_records_sent_total"),
            dropped: metrics::counter!("gripmesh_usage_webhook_dropped_total"),
            failures: metrics::counter!("gripmesh_usage_webhook_failures_total"),
            buffered: metrics::gauge!("gripmesh_usage_webhook_buffered"),
        }
    }
}

/// Sends usage records to the webhook. Cheap to clone.
#[derive(Clone)]
pub struct WebhookSender {
    shared: Arc<Shared>,
}

impl WebhookSender {
    /// A sender for `config.url` (`http://` or `https://`).
    pub fn new(config: WebhookConfig) -> Result<WebhookSender, String> {
        let uri: Uri = config
            .url
            .parse()
            .map_err(|e| format!("invalid URL {}: {e}", config.url))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{}: expected http:// or https://", config.url)),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("{}: no host", config.url))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let authority = uri.authority().map_or_else(String::new, |a| a.to_string());
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let client = HttpClient::new(config.timeout, config.timeout).map_err(|e| e.to_string())?;
        Ok(WebhookSender {
            shared: Arc::new(Shared {
                endpoint: Endpoint {
                    host,
                    port,
                    tls,
                    insecure: false,
                    server_name: None,
                },
                authority,
                path,
                client,
                buffer: Mutex::new(Buffer {
                    records: VecDeque::new(),
                    bytes: 0,
                }),
                notify: Notify::new(),
                metrics: WebhookMetrics::new(),
                config,
            }),
        })
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.shared.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Buffers one record for the webhook without waiting; false (and counted) when the
    /// buffer is full.
    pub fn offer(&self, record: Bytes) -> bool {
        let c = &self.shared.config;
        {
            let mut b = self.buffer();
            if b.records.len() >= c.buffer_records || b.bytes + record.len() > c.buffer_bytes {
                drop(b);
                self.shared.metrics.dropped.increment(1);
                return false;
            }
            b.bytes += record.len();
            b.records.push_back(record);
            #[allow(clippy::cast_precision_loss)]
            self.shared.metrics.buffered.set(b.records.len() as f64);
        }
        self.shared.notify.notify_one();
        true
    }

    /// Records waiting in the buffer.
    pub fn buffered(&self) -> usize {
        self.buffer().records.len()
    }

    /// Takes the next batch from the buffer (up to the batch bounds).
    fn take_batch(&self) -> Vec<Bytes> {
        let c = &self.shared.config;
        let mut b = self.buffer();
        let mut out = Vec::new();
        let mut size = 0;
        while let Some(r) = b.records.front() {
            if !out.is_empty() && (out.len() >= c.batch_records || size + r.len() > c.batch_bytes) {
                break;
            }
            size += r.len() + 1;
            if let Some(r) = b.records.pop_front() {
                b.bytes -= r.len();
                out.push(r);
            }
        }
        #[allow(clippy::cast_precision_loss)]
        self.shared.metrics.buffered.set(b.records.len() as f64);
        out
    }

    /// Sends buffered records until `shutdown`, then what is buffered for at most `drain`.
    pub async fn run(&self, shutdown: CancellationToken, drain: Duration) {
        loop {
            let batch = self.take_batch();
            if batch.is_empty() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = self.shared.notify.notified() => continue,
                }
            }
            if !self.deliver(batch, &shutdown).await {
                break;
            }
        }
        // Best effort on the way out: one try per batch, bounded by `drain`.
        let _ = tokio::time::timeout(drain, async {
            loop {
                let batch = self.take_batch();
                if batch.is_empty() || self.post(&batch).await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// POSTs `records` (at most one batch's worth, see [`WebhookConfig`]) until the webhook
    /// takes them; false if `shutdown` came first.
    pub async fn deliver(&self, records: Vec<Bytes>, shutdown: &CancellationToken) -> bool {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.post(&records).await {
                Ok(()) => return true,
                Err(err) => {
                    self.shared.metrics.failures.increment(1);
                    tracing::warn!(error = %err, records = records.len(), retry_in = ?backoff, "usage webhook failed");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One POST of `records` as JSON lines.
    async fn post(&self, records: &[Bytes]) -> Result<(), String> {
        let s = &self.shared;
        let mut body = BytesMut::with_capacity(records.iter().map(|r| r.len() + 1).sum());
        for r in records {
            body.extend_from_slice(r);
            body.extend_from_slice(b"\n");
        }
        let req = Request::post(s.path.as_str())
            .header(header::HOST, s.authority.as_str())
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .header(
                header::USER_AGENT,
                concat!("gripmesh/", env!("CARGO_PKG_VERSION")),
            )
            .body(runtime::server::full(body.freeze()))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let sender = s
                .client
                .connect(&s.endpoint)
                .await
                .map_err(|e| e.to_string())?;
            let resp = s
                .client
                .send(sender, req)
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            // Read (and bound) the answer so the exchange completes cleanly.
            let mut body = resp.into_body();
            let mut read = 0usize;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Ok(d) = frame.into_data() {
                    read += d.len();
                    if read > MAX_ANSWER {
                        break;
                    }
                }
            }
            Ok::<_, String>(status)
        };
        let status = tokio::time::timeout(s.config.timeout, exchange)
            .await
            .map_err(|_| "webhook did not answer in time".to_owned())??;
        if status.is_success() {
            s.metrics.sent.increment(records.len() as u64);
            Ok(())
        } else {
            Err(format!("webhook answered {status}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(records: usize, bytes: usize, batch_records: usize) -> WebhookSender {
        let mut c = WebhookConfig::new("http://127.0.0.1:9/usage");
        c.buffer_records = records;
        c.buffer_bytes = bytes;
        c.batch_records = batch_records;
        c.batch_bytes = 100;
        match WebhookSender::new(c) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_buffer_is_bounded_in_records_and_bytes() {
        let s = sender(3, 1000, 10);
        assert!(s.offer(Bytes::from_static(b"{}")));
        assert!(s.offer(Bytes::from_static(b"{}")));
        assert!(s.offer(Bytes::from_static(b"{}")));
        assert!(!s.offer(Bytes::from_static(b"{}")), "4th record dropped");
        assert_eq!(s.buffered(), 3);

        let s = sender(100, 10, 10);
        assert!(s.offer(Bytes::from_static(b"12345678")));
        assert!(!s.offer(Bytes::from_static(b"123")), "over the byte bound");
        assert!(s.offer(Bytes::from_static(b"12")));
    }

    #[test]
    fn batches_are_bounded_and_keep_order() {
        let s = sender(100, 10_000, 3);
        for i in 0..7 {
            s.offer(Bytes::from(format!("{{\"n\":{i}}}")));
        }
        let sizes: Vec<usize> = std::iter::from_fn(|| {
            let b = s.take_batch();
            (!b.is_empty()).then_some(b.len())
        })
        .collect();
        assert_eq!(sizes, [3, 3, 1]);

        // Byte bound: 100 bytes per batch; a lone large record still goes alone.
        let s = sender(100, 10_000, 100);
        s.offer(Bytes::from(vec![b'a'; 60]));
        s.offer(Bytes::from(vec![b'b'; 60]));
        s.offer(Bytes::from(vec![b'c'; 500]));
        let a = s.take_batch();
        let b = s.take_batch();
        let c = s.take_batch();
        assert_eq!((a.len(), b.len(), c.len()), (1, 1, 1));
        assert_eq!(a[0][0], b'a');
        assert_eq!(c[0].len(), 500);
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(WebhookSender::new(WebhookConfig::new("ftp://x/")).is_err());
        assert!(WebhookSender::new(WebhookConfig::new("not a url")).is_err());
    }
}
