//! The flag groups the tiers share (`#[command(flatten)]` into each tier's flags): the edge's
//! behaviour and limits, history, per-key limits, client limits, authz, publishing, NATS,
//! cluster state, and usage records.

use super::{parse_duration, parse_usage_interval};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Edge behaviour and limits.
#[derive(Debug, Args)]
pub struct EdgeFlags {
    /// Key that signs the Grip-Sig sent to origins (literal or `base64:...`).
    #[arg(long, env = "GRIPMESH_SIG_KEY", hide_env_values = true)]
    pub sig_key: Option<String>,

    /// `iss` claim of the Grip-Sig.
    #[arg(long, env = "GRIPMESH_SIG_ISS", default_value = "pushpin")]
    pub sig_iss: String,

    /// Largest client request head (request line + headers) in bytes; larger ⇒ 431.
    #[arg(long, env = "GRIPMESH_MAX_HEADER_SIZE", default_value_t = 16 * 1024)]
    pub max_header_size: usize,

    /// Largest GRIP instruct body read from an origin for a non-stream hold, in bytes.
    #[arg(long, env = "GRIPMESH_MAX_INSTRUCT_BODY", default_value_t = 100_000)]
    pub max_instruct_body: usize,

    /// Channels one connection may subscribe; extra channels are ignored.
    #[arg(
        long,
        env = "GRIPMESH_MAX_CHANNELS_PER_CONNECTION",
        default_value_t = 20
    )]
    pub max_channels_per_connection: usize,

    /// Largest WebSocket message accepted from a client or origin, in bytes; larger ⇒ close 1009.
    #[arg(long, env = "GRIPMESH_MAX_WS_MESSAGE_SIZE", default_value_t = 1 << 20)]
    pub max_ws_message_size: usize,

    /// Messages queued per connection before a slow client is disconnected.
    #[arg(long, env = "GRIPMESH_SEND_QUEUE_MESSAGES", default_value_t = 1024)]
    pub send_queue_messages: usize,

    /// Payload bytes queued per connection before a slow client is disconnected.
    #[arg(long, env = "GRIPMESH_SEND_QUEUE_BYTES", default_value_t = 1 << 20)]
    pub send_queue_bytes: usize,

    /// TLS certificate chain (PEM) for the client listener; repeat with --tls-key for several
    /// certificates chosen by SNI (the first is the default). Reloaded when the files change.
    #[arg(long, env = "GRIPMESH_TLS_CERT", value_delimiter = ',')]
    pub tls_cert: Vec<PathBuf>,

    /// TLS private key (PEM) for each --tls-cert, in the same order.
    #[arg(long, env = "GRIPMESH_TLS_KEY", value_delimiter = ',')]
    pub tls_key: Vec<PathBuf>,

    /// Client connections at most; beyond it new connections get 503 and are closed.
    #[arg(long, env = "GRIPMESH_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Seconds allowed to connect (TCP + TLS) to an origin.
    #[arg(long, env = "GRIPMESH_ORIGIN_CONNECT_TIMEOUT", default_value_t = 5)]
    pub origin_connect_timeout: u64,

    /// Seconds allowed for an origin to send its response head.
    #[arg(long, env = "GRIPMESH_ORIGIN_RESPONSE_TIMEOUT", default_value_t = 60)]
    pub origin_response_timeout: u64,

    /// Client WebSocket messages waiting for an in-flight WebSocket-over-HTTP request, at
    /// most; at the bound the edge stops reading the client until the origin catches up.
    #[arg(
        long,
        env = "GRIPMESH_WS_UPSTREAM_QUEUE_MESSAGES",
        default_value_t = 256
    )]
    pub ws_upstream_queue_messages: usize,

    /// Bytes of client WebSocket messages waiting for an in-flight WebSocket-over-HTTP
    /// request, at most (one message may cross it); then the edge stops reading the client.
    #[arg(long, env = "GRIPMESH_WS_UPSTREAM_QUEUE_BYTES", default_value_t = 1 << 20)]
    pub ws_upstream_queue_bytes: usize,

    /// Seconds without NATS after which held connections are closed (WebSocket 1012, streams
    /// ended) at the drain rate, so clients resume on a healthy edge; 0 never closes them.
    #[arg(long, env = "GRIPMESH_BUS_LOSS_CLOSE", default_value_t = 10)]
    pub bus_loss_close: u64,
}

/// Channel history (docs/protocol.md, "History").
#[derive(Debug, Args)]
pub struct HistoryFlags {
    /// Channels that keep history: `GLOB=SIZE[/AGE]` (repeatable or comma-separated; the first
    /// matching glob wins; `*` matches any run; AGE like 90s, 5m, 1h, 7d, default 5m).
    #[arg(long, env = "GRIPMESH_HISTORY")]
    pub history: Vec<String>,

    /// Copies of the history stream kept by JetStream (3 on a NATS cluster of 3 or more).
    #[arg(long, env = "GRIPMESH_HISTORY_REPLICAS", default_value_t = 1)]
    pub history_replicas: usize,
}

/// Per-key limits on `authz` routes (docs/protocol.md, "Key limits and usage"); the gateway's allow answer may override them
/// per key (`Gripmesh-Max-Connections`, `Gripmesh-Message-Quota`).
#[derive(Debug, Args)]
pub struct KeyLimitFlags {
    /// Concurrent connections per key (0: unlimited); beyond it 429 `Too many connections for
    /// this key.` (WebSocket handshake included).
    #[arg(long, env = "GRIPMESH_KEY_MAX_CONNECTIONS", default_value_t = 0)]
    pub key_max_connections: u32,

    /// Messages delivered to a key's connections per period, `N/PERIOD` with PERIOD `1m`, `1h`
    /// or `1d`; when spent the key's connections close (WebSocket 4429) and new ones get 429
    /// until the period ends.
    #[arg(long, env = "GRIPMESH_KEY_MESSAGE_QUOTA")]
    pub key_message_quota: Option<String>,
}

/// Client-facing limits shared by the edge and control listeners (docs/protocol.md, "Limits and bad input").
#[derive(Debug, Args)]
pub struct ClientLimitFlags {
    /// Seconds allowed for a client to send a complete request head (client and publish
    /// listeners); slower connections are closed.
    #[arg(long, env = "GRIPMESH_CLIENT_HEADER_TIMEOUT", default_value_t = 30)]
    pub client_header_timeout: u64,

    /// Seconds a request body may go without a byte before the request fails with 408 (client
    /// and publish listeners).
    #[arg(long, env = "GRIPMESH_CLIENT_BODY_TIMEOUT", default_value_t = 30)]
    pub client_body_timeout: u64,

    /// Longest channel name in bytes (at most 1024): longer names in origin instructions ⇒ 502,
    /// in publishes ⇒ 400 `Invalid channel.`.
    #[arg(long, env = "GRIPMESH_MAX_CHANNEL_LENGTH", default_value_t = 512)]
    pub max_channel_length: usize,
}

/// Auth sidecar behaviour.
#[derive(Debug, Args)]
pub struct AuthzFlags {
    /// Where credentials are read from, in order: `query:NAME` and `header:NAME`, comma-separated.
    #[arg(
        long,
        env = "GRIPMESH_CREDENTIAL_SOURCES",
        default_value = "query:apikey,header:X-Api-Key,header:Authorization"
    )]
    pub credential_sources: String,

    /// Gateway response headers copied onto the origin request on allow, comma-separated.
    #[arg(
        long,
        env = "GRIPMESH_FORWARD_HEADERS",
        default_value = "X-Developer-App,X-Api-Product,X-Auth-Subject"
    )]
    pub forward_headers: String,

    /// Seconds an allow decision is cached.
    #[arg(long, env = "GRIPMESH_AUTHZ_ALLOW_TTL", default_value_t = 60)]
    pub authz_allow_ttl: u64,

    /// Seconds a deny decision is cached.
    #[arg(long, env = "GRIPMESH_AUTHZ_DENY_TTL", default_value_t = 10)]
    pub authz_deny_ttl: u64,

    /// Seconds allowed for one gateway call.
    #[arg(long, env = "GRIPMESH_GATEWAY_TIMEOUT", default_value_t = 5)]
    pub gateway_timeout: u64,

    /// Decisions cached at most; beyond it the one closest to expiry is dropped.
    #[arg(long, env = "GRIPMESH_AUTHZ_CACHE_ENTRIES", default_value_t = 100_000)]
    pub authz_cache_entries: usize,

    /// Bytes of cached decisions at most (deny bodies and headers, credential hashes and
    /// bookkeeping); beyond it the decisions closest to expiry are dropped.
    #[arg(long, env = "GRIPMESH_AUTHZ_CACHE_BYTES", default_value_t = 64 << 20)]
    pub authz_cache_bytes: usize,
}

/// Publish API behaviour.
#[derive(Debug, Args)]
pub struct PublishFlags {
    /// Publishing requires `Authorization: Bearer <token>`.
    #[arg(long, env = "GRIPMESH_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,

    /// Publishing requires a Bearer JWT (HS256) signed with this key (literal or `base64:...`).
    #[arg(long, env = "GRIPMESH_PUBLISH_KEY", hide_env_values = true)]
    pub publish_key: Option<String>,

    /// With --publish-key: the `iss` claim publish JWTs must carry (the `iss` of the
    /// publishers' `GRIP_URL`); without it any `iss` is accepted.
    #[arg(long, env = "GRIPMESH_PUBLISH_ISS")]
    pub publish_iss: Option<String>,

    /// Allow unauthenticated control listeners (HTTP publish API, gRPC) on a non-loopback
    /// address.
    #[arg(long, env = "GRIPMESH_PUBLISH_INSECURE")]
    pub publish_insecure: bool,

    /// Largest publish request body in bytes.
    #[arg(long, env = "GRIPMESH_PUBLISH_MAX_BODY", default_value_t = 1_000_000)]
    pub publish_max_body: usize,
}

/// NATS credentials and TLS, and the cluster key (every tier that talks to NATS; docs/protocol.md, "Cluster state").
/// User/password or a token may also be given in the `--nats` URL
/// (`nats://user:pass@host:4222`, `nats://token@host:4222`).
#[derive(Debug, Args)]
pub struct NatsFlags {
    /// NATS credentials file (user JWT + NKey seed, as `nsc` makes them).
    #[arg(long, env = "GRIPMESH_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// File holding a NATS NKey user seed (`SU...`).
    #[arg(long, env = "GRIPMESH_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,

    /// CA certificate (PEM) that NATS server certificates must chain to; turns TLS on.
    #[arg(long, env = "GRIPMESH_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS with NATS (with --nats-tls-key).
    #[arg(long, env = "GRIPMESH_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,

    /// Client private key (PEM) for --nats-tls-cert.
    #[arg(long, env = "GRIPMESH_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,

    /// Key (at least 16 bytes, literal or `base64:...`) that signs route tables and
    /// revocations in the state buckets (HMAC-SHA256); unsigned or badly signed records are
    /// then refused and counted. Give every tier the same key.
    #[arg(long, env = "GRIPMESH_CLUSTER_KEY", hide_env_values = true)]
    pub cluster_key: Option<String>,
}

impl NatsFlags {
    /// No credentials, TLS or cluster key (the demo's in-memory setup).
    pub fn none() -> NatsFlags {
        NatsFlags {
            nats_creds: None,
            nats_nkey: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            cluster_key: None,
        }
    }
}

/// Cluster state settings of the tiers that write it (control, standalone).
#[derive(Debug, Args)]
pub struct StateFlags {
    /// Seconds a revocation is kept: until then a connection presenting the credential is
    /// refused (403) without asking the gateway, on every edge and sidecar.
    #[arg(long, env = "GRIPMESH_REVOCATION_TTL", default_value_t = 600)]
    pub revocation_ttl: u64,

    /// JetStream replicas of the state buckets (3 on a 3-server NATS cluster).
    #[arg(long, env = "GRIPMESH_STATE_REPLICAS", default_value_t = 1)]
    pub state_replicas: usize,
}

// --- Usage records (docs/protocol.md, "Key limits and usage") -------------------------------------------------------------

/// Usage records and per-app metrics, where connections are held (edge, standalone).
#[derive(Debug, Args)]
pub struct UsageFlags {
    /// Time between interim usage records of a live connection (`60s`, `500ms`, `2m`; at
    /// least 100ms).
    #[arg(long, env = "GRIPMESH_USAGE_INTERVAL", default_value = "60s", value_parser = parse_usage_interval)]
    pub usage_interval: Duration,

    /// This edge's name in usage records (`edge`). Default: `<hostname>:<client port>`.
    #[arg(long, env = "GRIPMESH_NODE_ID")]
    pub node_id: Option<String>,

    /// Developer apps (the busiest) with their own `app` label in the per-app metrics; the
    /// rest are `app="other"`.
    #[arg(long, env = "GRIPMESH_USAGE_TOP_APPS", default_value_t = 100)]
    pub usage_top_apps: usize,
}

/// Retention of the JetStream usage stream (edge, control, standalone with --nats).
#[derive(Debug, Args)]
pub struct UsageStreamFlags {
    /// Usage records older than this are discarded from the stream (`7d`, `24h`).
    #[arg(long, env = "GRIPMESH_USAGE_STREAM_MAX_AGE", default_value = "7d", value_parser = parse_duration)]
    pub usage_stream_max_age: Duration,

    /// The usage stream keeps at most this many bytes (oldest records discarded first).
    #[arg(long, env = "GRIPMESH_USAGE_STREAM_MAX_BYTES", default_value_t = 1 << 30)]
    pub usage_stream_max_bytes: i64,
}

/// The usage webhook (control, standalone).
#[derive(Debug, Args)]
pub struct UsageWebhookFlags {
    /// POST usage records in batches as JSON lines to this URL (http:// or https://).
    #[arg(long, env = "GRIPMESH_USAGE_WEBHOOK")]
    pub usage_webhook: Option<String>,

    /// Records buffered for the webhook at most (standalone; more are dropped and counted).
    #[arg(long, env = "GRIPMESH_USAGE_WEBHOOK_BUFFER", default_value_t = 10_000)]
    pub usage_webhook_buffer: usize,

    /// Record bytes buffered for the webhook at most (standalone).
    #[arg(long, env = "GRIPMESH_USAGE_WEBHOOK_BUFFER_BYTES", default_value_t = 16 << 20)]
    pub usage_webhook_buffer_bytes: usize,

    /// Time allowed for one webhook POST (connect + answer) before it is retried.
    #[arg(long, env = "GRIPMESH_USAGE_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub usage_webhook_timeout: Duration,
}
