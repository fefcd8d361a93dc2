//! The flags of each subcommand that runs a tier: `standalone`, `edge`, `control`, `authz` and
//! `demo`.

use super::CommonFlags;
use super::flags::{
    AuthzFlags, ClientLimitFlags, EdgeFlags, HistoryFlags, KeyLimitFlags, NatsFlags, PublishFlags,
    StateFlags, UsageFlags, UsageStreamFlags, UsageWebhookFlags,
};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

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
