//! Command-line interface. Every flag also reads `GRIPMESH_<FLAG>` and the `--config` file.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A horizontally scalable GRIP realtime proxy.
#[derive(Debug, Parser)]
#[command(name = "gripmesh", version, about, args_override_self = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Edge + control in one process, over an in-memory bus (or NATS with --nats).
    Standalone(Box<StandaloneArgs>),
    /// The edge tier: client listener, origin proxying, holds, bus subscriptions.
    Edge(Box<EdgeArgs>),
    /// The control tier: publish API (HTTP + gRPC), route store and distribution.
    Control(ControlArgs),
    /// The auth sidecar: gRPC `Check` against the upstream API gateway.
    Authz(AuthzArgs),
    /// The article's scenario on one machine: standalone + a mock API gateway + a trades feed.
    Demo(DemoArgs),
    /// Publish to a channel from the shell (what `pushpin-publish` is to Pushpin users).
    Publish(PublishCmdArgs),
    /// Read, replace or follow control's route table.
    Routes(RoutesCmdArgs),
    /// Readiness and key figures of a running tier, from its admin listener.
    Status(StatusCmdArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags every subcommand has.
#[derive(Debug, Args)]
pub struct CommonFlags {
    /// Seconds allowed for a graceful drain on SIGTERM/SIGINT.
    #[arg(long, env = "GRIPMESH_DRAIN_TIMEOUT", default_value_t = 30)]
    pub drain_timeout: u64,

    /// Seconds between checks of the routes file for changes.
    #[arg(long, env = "GRIPMESH_ROUTES_POLL_INTERVAL", default_value_t = 1)]
    pub routes_poll_interval: u64,

    /// Log format.
    #[arg(long, env = "GRIPMESH_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// TOML file with the same keys as the long flags (flags and env win).
    #[arg(long, env = "GRIPMESH_CONFIG")]
    pub config: Option<PathBuf>,
}

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

/// Flags of `gripmesh standalone`.
#[derive(Debug, Args)]
pub struct StandaloneArgs {
    /// Client listener (HTTP streaming, long-polling, SSE, WebSocket).
    #[arg(long, env = "GRIPMESH_LISTEN", default_value = "0.0.0.0:7999")]
    pub listen: SocketAddr,

    /// HTTP publish API listener.
    #[arg(
        long,
        env = "GRIPMESH_PUBLISH_LISTEN",
        default_value = "127.0.0.1:5561"
    )]
    pub publish_listen: SocketAddr,

    /// gRPC publish and route API listener.
    #[arg(long, env = "GRIPMESH_GRPC_LISTEN", default_value = "127.0.0.1:5562")]
    pub grpc_listen: SocketAddr,

    /// Admin listener: /metrics, /healthz, /readyz.
    #[arg(long, env = "GRIPMESH_ADMIN_LISTEN", default_value = "127.0.0.1:9100")]
    pub admin_listen: SocketAddr,

    /// Routes file (Pushpin syntax). Default: ./routes if present, else `* 127.0.0.1:8080`.
    #[arg(long, env = "GRIPMESH_ROUTES")]
    pub routes: Option<PathBuf>,

    /// NATS URL(s), comma-separated: use NATS instead of the in-memory bus.
    #[arg(long, env = "GRIPMESH_NATS")]
    pub nats: Option<String>,

    /// Embed the auth sidecar, asking this API gateway (forward-auth) about connections on
    /// routes with the `authz` property.
    #[arg(long, env = "GRIPMESH_AUTHZ_GATEWAY")]
    pub authz_gateway: Option<String>,

    /// Seconds between re-checks of authorized live connections.
    #[arg(long, env = "GRIPMESH_AUTHZ_RECHECK", default_value_t = 300)]
    pub authz_recheck: u64,

    /// Edge settings.
    #[command(flatten)]
    pub edge: EdgeFlags,

    /// Client-facing limits.
    #[command(flatten)]
    pub limits: ClientLimitFlags,

    /// Auth sidecar settings (with --authz-gateway).
    #[command(flatten)]
    pub authz: AuthzFlags,

    /// Per-key limits.
    #[command(flatten)]
    pub keys: KeyLimitFlags,

    /// Publish API settings.
    #[command(flatten)]
    pub publish: PublishFlags,

    /// Usage records and per-app metrics.
    #[command(flatten)]
    pub usage: UsageFlags,

    /// Usage stream retention (with --nats).
    #[command(flatten)]
    pub usage_stream: UsageStreamFlags,

    /// Usage webhook.
    #[command(flatten)]
    pub usage_webhook: UsageWebhookFlags,
    /// Channel history.
    #[command(flatten)]
    pub history: HistoryFlags,

    /// NATS security (with --nats) and the cluster key.
    #[command(flatten)]
    pub nats_flags: NatsFlags,

    /// Cluster state settings.
    #[command(flatten)]
    pub state: StateFlags,

    /// Common settings.
    #[command(flatten)]
    pub common: CommonFlags,
}

/// Flags of `gripmesh edge`.
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// Client listener (HTTP streaming, long-polling, SSE, WebSocket).
    #[arg(long, env = "GRIPMESH_LISTEN", default_value = "0.0.0.0:7999")]
    pub listen: SocketAddr,

    /// Admin listener: /metrics, /healthz, /readyz.
    #[arg(long, env = "GRIPMESH_ADMIN_LISTEN", default_value = "0.0.0.0:9101")]
    pub admin_listen: SocketAddr,

    /// Routes file; without it the edge follows the route table control keeps in JetStream.
    #[arg(long, env = "GRIPMESH_ROUTES")]
    pub routes: Option<PathBuf>,

    /// NATS URL(s), comma-separated.
    #[arg(long, env = "GRIPMESH_NATS")]
    pub nats: String,

    /// The auth sidecar's gRPC URL (`http://127.0.0.1:9191`), for routes with `authz`.
    #[arg(long, env = "GRIPMESH_AUTHZ")]
    pub authz: Option<String>,

    /// Headers the sidecar sets from the gateway's answer (its --forward-headers): client-sent
    /// copies are removed on `authz` routes whatever the decision, even when the sidecar is down.
    #[arg(
        long,
        env = "GRIPMESH_FORWARD_HEADERS",
        default_value = "X-Developer-App,X-Api-Product,X-Auth-Subject"
    )]
    pub forward_headers: String,

    /// Per-key limits.
    #[command(flatten)]
    pub keys: KeyLimitFlags,

    /// Seconds between re-checks of authorized live connections.
    #[arg(long, env = "GRIPMESH_AUTHZ_RECHECK", default_value_t = 300)]
    pub authz_recheck: u64,

    /// Edge settings.
    #[command(flatten)]
    pub edge: EdgeFlags,

    /// Client-facing limits.
    #[command(flatten)]
    pub limits: ClientLimitFlags,

    /// Usage records and per-app metrics.
    #[command(flatten)]
    pub usage: UsageFlags,

    /// Usage stream retention.
    #[command(flatten)]
    pub usage_stream: UsageStreamFlags,

    /// NATS security and the cluster key.
    #[command(flatten)]
    pub nats_flags: NatsFlags,

    /// Common settings.
    #[command(flatten)]
    pub common: CommonFlags,
}

/// Flags of `gripmesh control`.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// HTTP publish API listener (also serves /routes).
    #[arg(long, env = "GRIPMESH_PUBLISH_LISTEN", default_value = "0.0.0.0:5561")]
    pub publish_listen: SocketAddr,

    /// gRPC publish and route API listener.
    #[arg(long, env = "GRIPMESH_GRPC_LISTEN", default_value = "0.0.0.0:5562")]
    pub grpc_listen: SocketAddr,

    /// Admin listener: /metrics, /healthz, /readyz.
    #[arg(long, env = "GRIPMESH_ADMIN_LISTEN", default_value = "0.0.0.0:9102")]
    pub admin_listen: SocketAddr,

    /// Routes file: the source of truth for the cluster's route table (watched, written to
    /// the JetStream bucket when it changes; `PUT /routes` then answers 409). Default:
    /// ./routes if present; without a file the table is set with `PUT /routes` and kept in
    /// the bucket (`* 127.0.0.1:8080` on a cluster's first start).
    #[arg(long, env = "GRIPMESH_ROUTES")]
    pub routes: Option<PathBuf>,

    /// NATS URL(s), comma-separated.
    #[arg(long, env = "GRIPMESH_NATS")]
    pub nats: String,

    /// Publish API settings.
    #[command(flatten)]
    pub publish: PublishFlags,

    /// Client-facing limits (publish listener timeouts, channel names).
    #[command(flatten)]
    pub limits: ClientLimitFlags,
    /// Channel history.
    #[command(flatten)]
    pub history: HistoryFlags,

    /// Usage stream retention.
    #[command(flatten)]
    pub usage_stream: UsageStreamFlags,

    /// Usage webhook (fed from the usage stream).
    #[command(flatten)]
    pub usage_webhook: UsageWebhookFlags,

    /// NATS security and the cluster key.
    #[command(flatten)]
    pub nats_flags: NatsFlags,

    /// Cluster state settings.
    #[command(flatten)]
    pub state: StateFlags,

    /// Common settings.
    #[command(flatten)]
    pub common: CommonFlags,
}

/// Flags of `gripmesh authz`.
#[derive(Debug, Args)]
pub struct AuthzArgs {
    /// The upstream API gateway's forward-auth URL; the client's path and query are appended.
    #[arg(long, env = "GRIPMESH_GATEWAY")]
    pub gateway: String,

    /// gRPC listener for `gripmesh.v1.Authorization/Check`.
    #[arg(long, env = "GRIPMESH_LISTEN", default_value = "127.0.0.1:9191")]
    pub listen: SocketAddr,

    /// Admin listener: /metrics, /healthz, /readyz.
    #[arg(long, env = "GRIPMESH_ADMIN_LISTEN", default_value = "0.0.0.0:9103")]
    pub admin_listen: SocketAddr,

    /// NATS URL(s), comma-separated, to follow revocations (without it, revoked credentials
    /// are only forgotten when their cached decision expires).
    #[arg(long, env = "GRIPMESH_NATS")]
    pub nats: Option<String>,

    /// Sidecar settings.
    #[command(flatten)]
    pub authz: AuthzFlags,

    /// NATS security and the cluster key.
    #[command(flatten)]
    pub nats_flags: NatsFlags,

    /// Common settings.
    #[command(flatten)]
    pub common: CommonFlags,
}

/// Flags of `gripmesh demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Client listener (WebSocket, HTTP streaming, SSE).
    #[arg(long, env = "GRIPMESH_LISTEN", default_value = "0.0.0.0:7999")]
    pub listen: SocketAddr,

    /// HTTP publish API listener (unauthenticated, so loopback only).
    #[arg(
        long,
        env = "GRIPMESH_PUBLISH_LISTEN",
        default_value = "127.0.0.1:5561"
    )]
    pub publish_listen: SocketAddr,

    /// gRPC publish and route API listener.
    #[arg(long, env = "GRIPMESH_GRPC_LISTEN", default_value = "127.0.0.1:5562")]
    pub grpc_listen: SocketAddr,

    /// Admin listener: /metrics, /healthz, /readyz.
    #[arg(long, env = "GRIPMESH_ADMIN_LISTEN", default_value = "127.0.0.1:9100")]
    pub admin_listen: SocketAddr,

    /// Common settings.
    #[command(flatten)]
    pub common: CommonFlags,
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

/// A duration: `500ms`, `10s`, `5m`, `1h`, `7d`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}': expected a number with ms, s, m, h or d"))?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (ms, s, m, h, d)")),
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("'{s}': too large"))
}

fn parse_usage_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < edge::usage::MIN_INTERVAL {
        return Err(format!("'{s}': the shortest usage interval is 100ms"));
    }
    Ok(d)
}

#[cfg(test)]
mod usage_flag_tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_usage_interval("50ms").is_err());
        assert!(parse_usage_interval("100ms").is_ok());
    }
}

// ---- client subcommands: `publish`, `routes`, `status` ----

/// How a client subcommand reaches and authenticates to control's publish API.
#[derive(Debug, Args)]
pub struct ControlClientFlags {
    /// Control's HTTP publish API (`https://` for a TLS front end).
    #[arg(
        long,
        env = "GRIPMESH_CONTROL_URL",
        default_value = "http://127.0.0.1:5561"
    )]
    pub control_url: String,

    /// Send `Authorization: Bearer <token>` (control's --publish-token).
    #[arg(long, env = "GRIPMESH_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,

    /// Sign a short-lived HS256 JWT with this key (control's --publish-key; literal or
    /// `base64:...`).
    #[arg(long, env = "GRIPMESH_PUBLISH_KEY", hide_env_values = true)]
    pub publish_key: Option<String>,

    /// `iss` claim of that JWT (control's --publish-iss).
    #[arg(long, env = "GRIPMESH_PUBLISH_ISS", default_value = "gripmesh")]
    pub publish_iss: String,

    /// Seconds to wait for control's answer.
    #[arg(long, env = "GRIPMESH_CLIENT_TIMEOUT", default_value_t = 10)]
    pub timeout: u64,
}

/// Flags of `gripmesh publish CHANNEL [CONTENT]`.
#[derive(Debug, Args)]
pub struct PublishCmdArgs {
    /// The channel.
    pub channel: String,

    /// The content; `-` or absent: read standard input.
    pub content: Option<String>,

    /// Item id (de-duplication, `prev-id` sequencing, SSE `id:`).
    #[arg(long)]
    pub id: Option<String>,

    /// The id of the previous item on the channel.
    #[arg(long)]
    pub prev_id: Option<String>,

    /// Frame HTTP-stream content as a Server-Sent Event (`event:`/`id:`/`data:` lines and the
    /// blank line); with it the item goes to streams only unless formats are given.
    #[arg(long)]
    pub sse: bool,

    /// SSE event name (with --sse).
    #[arg(long, requires = "sse")]
    pub event: Option<String>,

    /// Close: streams end, WebSockets get a close frame (--code for its code); no content.
    #[arg(long, conflicts_with_all = ["content", "sse", "http_response"])]
    pub close: bool,

    /// Publish as an `http-response` only (answers long-polls).
    #[arg(long)]
    pub http_response: bool,

    /// Formats to publish, comma-separated (`http-response,http-stream,ws-message`); default:
    /// all three, or only `http-stream` with --sse, only `http-response` with --http-response.
    #[arg(long, value_delimiter = ',')]
    pub format: Vec<PublishFormat>,

    /// HTTP status of an `http-response` (default 200), or the WebSocket close code with --close.
    #[arg(long)]
    pub code: Option<u16>,

    /// Header of an `http-response`, `Name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// Meta key=value for subscriber filters (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,

    /// Do not append a newline to HTTP content (pushpin-publish appends one).
    #[arg(long)]
    pub no_eol: bool,

    /// Control and credentials.
    #[command(flatten)]
    pub client: ControlClientFlags,
}

/// One publish format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PublishFormat {
    /// `http-response` (long-polls).
    HttpResponse,
    /// `http-stream` (HTTP streaming and SSE).
    HttpStream,
    /// `ws-message` (WebSockets).
    WsMessage,
}

/// `gripmesh routes get|put|watch`.
#[derive(Debug, Args)]
pub struct RoutesCmdArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: RoutesAction,

    /// Control and credentials.
    #[command(flatten)]
    pub client: ControlClientFlags,
}

/// Route table actions.
#[derive(Debug, Subcommand)]
pub enum RoutesAction {
    /// Print the route table (routes syntax; `--json` for version and routes).
    Get {
        /// Print control's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Replace the route table with FILE (`-`: standard input); validated whole by control.
    Put {
        /// A routes file.
        file: PathBuf,
    },
    /// Print the table now and after every change, until interrupted (gRPC
    /// `RouteService.Watch`).
    Watch {
        /// Control's gRPC listener.
        #[arg(
            long,
            env = "GRIPMESH_CONTROL_GRPC_URL",
            default_value = "http://127.0.0.1:5562"
        )]
        grpc_url: String,
        /// Stop after this many tables (default: never).
        #[arg(long)]
        count: Option<u64>,
    },
}

/// Flags of `gripmesh status`.
#[derive(Debug, Args)]
pub struct StatusCmdArgs {
    /// The tier's admin listener.
    #[arg(
        long,
        env = "GRIPMESH_ADMIN_URL",
        default_value = "http://127.0.0.1:9100"
    )]
    pub admin_url: String,

    /// Print the admin listener's `/status.json` as is.
    #[arg(long)]
    pub json: bool,

    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
}
