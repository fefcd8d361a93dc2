//! Usage records wiring (docs/protocol.md, "Key limits and usage"): where an edge's records go, and control's webhook feed.
//!
//! - Edge (and standalone with `--nats`): records are published to the JetStream usage stream.
//! - Control (and standalone with `--nats`) with `--usage-webhook`: one durable consumer on the
//!   stream feeds the webhook; a batch is acknowledged once the webhook took it.
//! - Standalone without NATS, with `--usage-webhook`: records go straight to the webhook sender
//!   through its bounded buffer.
//! - Otherwise records are not made; the per-app metrics still are.

use crate::cli::{UsageFlags, UsageStreamFlags, UsageWebhookFlags};
use crate::common::{Fatal, config_err};
use bus::Bus;
use bus::usage::UsageStreamConfig;
use control::webhook::{WebhookConfig, WebhookSender};
use edge::Edge;
use edge::usage::UsageConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Records queued between the edge and its sink at most.
const RECORD_QUEUE: usize = 65_536;
/// Time allowed on shutdown to hand over the records still queued.
const DRAIN: Duration = Duration::from_secs(5);

/// `--node-id`, or `<hostname>:<client port>`.
pub(crate) fn node_id(flag: Option<&str>, listener: &tokio::net::TcpListener) -> String {
    if let Some(id) = flag.filter(|s| !s.is_empty()) {
        return id.to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned());
    let port = listener.local_addr().map_or(0, |a| a.port());
    format!("{host}:{port}")
}

/// The edge's usage settings.
pub(crate) fn edge_config(flags: &UsageFlags, node_id: String) -> UsageConfig {
    UsageConfig {
        interval: flags.usage_interval,
        node_id,
        top_apps: flags.usage_top_apps,
    }
}

/// The usage stream's retention.
pub(crate) fn stream_config(flags: &UsageStreamFlags) -> Result<UsageStreamConfig, Fatal> {
    if flags.usage_stream_max_bytes <= 0 {
        return Err(config_err(format!(
            "--usage-stream-max-bytes {}: must be positive",
            flags.usage_stream_max_bytes
        )));
    }
    Ok(UsageStreamConfig {
        max_age: flags.usage_stream_max_age,
        max_bytes: flags.usage_stream_max_bytes,
    })
}

/// The webhook sender, when `--usage-webhook` is given.
pub(crate) fn webhook(flags: &UsageWebhookFlags) -> Result<Option<WebhookSender>, Fatal> {
    let Some(url) = flags.usage_webhook.as_deref() else {
        return Ok(None);
    };
    let mut config = WebhookConfig::new(url);
    config.buffer_records = flags.usage_webhook_buffer.max(1);
    config.buffer_bytes = flags.usage_webhook_buffer_bytes.max(1);
    config.timeout = flags.usage_webhook_timeout.max(Duration::from_millis(100));
    WebhookSender::new(config)
        .map(Some)
        .map_err(|e| config_err(format!("--usage-webhook {e}")))
}

/// Starts the edge's interval sweeper and its record sink; the returned tasks finish handing
/// over queued records after `stop` (bounded), so the drain awaits them.
pub(crate) fn spawn_edge(
    edge: &Edge,
    bus: &Arc<dyn Bus>,
    stream: &UsageStreamConfig,
    webhook: Option<&WebhookSender>,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    tokio::spawn(edge.usage().clone().run(stop.clone()));
    let mut tasks = Vec::new();
    if let Some(js) = bus.jetstream() {
        let Some(rx) = edge.usage().records(RECORD_QUEUE) else {
            return tasks;
        };
        tracing::info!(
            subject = bus::usage::USAGE_SUBJECT,
            stream = bus::usage::USAGE_STREAM,
            "usage records published to JetStream"
        );
        tasks.push(tokio::spawn(bus::usage::publish_records(
            js,
            stream.clone(),
            rx,
            stop.clone(),
            DRAIN,
        )));
    } else if let Some(webhook) = webhook {
        let Some(mut rx) = edge.usage().records(RECORD_QUEUE) else {
            return tasks;
        };
        tracing::info!("usage records sent to the webhook");
        // The sender stops after the forwarder handed it the last records.
        let sender_stop = CancellationToken::new();
        let (w, s) = (webhook.clone(), sender_stop.clone());
        tasks.push(tokio::spawn(async move { w.run(s, DRAIN).await }));
        let (w, stop) = (webhook.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = rx.recv() => match r {
                        Some(r) => { w.offer(r.json); }
                        None => break,
                    },
                    _ = stop.cancelled() => {
                        // The drain closed every connection first: their finals are queued.
                        while let Ok(r) = rx.try_recv() {
                            w.offer(r.json);
                        }
                        break;
                    }
                }
            }
            sender_stop.cancel();
        }));
    } else {
        tracing::info!("usage records off (no --nats, no --usage-webhook); per-app metrics on");
    }
    tasks
}

/// Control's side: makes sure the usage stream exists, and feeds the webhook from it with the
/// shared durable consumer.
pub(crate) fn spawn_control(
    bus: &Arc<dyn Bus>,
    stream: &UsageStreamConfig,
    webhook: Option<WebhookSender>,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let Some(js) = bus.jetstream() else {
        return Vec::new();
    };
    let Some(webhook) = webhook else {
        let (js, stream) = (js.clone(), stream.clone());
        tokio::spawn(async move {
            if let Err(err) = bus::usage::ensure_stream(&js, &stream).await {
                tracing::warn!(error = %err, "usage stream not created (edges will create it)");
            }
        });
        return Vec::new();
    };
    tracing::info!(
        consumer = bus::usage::WEBHOOK_CONSUMER,
        "usage webhook fed from the JetStream usage stream"
    );
    let (stream, stop) = (stream.clone(), stop.clone());
    vec![tokio::spawn(async move {
        let stop2 = stop.clone();
        bus::usage::consume_records(js, stream, stop, move |records| {
            let (w, stop) = (webhook.clone(), stop2.clone());
            async move { w.deliver(records, &stop).await }
        })
        .await;
    })]
}
