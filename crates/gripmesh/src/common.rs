//! Plumbing shared by the subcommands: validation (exit 64), listeners, bus, health, drain.

use crate::cli::{
    AuthzFlags, ClientLimitFlags, CommonFlags, EdgeFlags, HistoryFlags, KeyLimitFlags, LogFormat,
    NatsFlags, PublishFlags, StateFlags,
};
use bus::history::{HistoryPolicy, HistoryStore, JetStreamHistory, MemoryHistory};
use bus::kv::{JetStreamState, KvError, MemoryState, StateStore};
use bus::records::{ClusterKey, RecordCodec};
use bus::{Bus, BusState, MemoryBus, NatsAuth, NatsBus, NatsOptions};
use control::PublishAuth;
use edge::EdgeConfig;
use grip::sig::SigKey;
use routes::RouteTable;
use runtime::Health;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Routes used when no routes file is given and `./routes` does not exist.
pub(crate) const DEFAULT_ROUTES: &str = "* 127.0.0.1:8080\n";

/// Why the process stops with an error.
#[derive(Debug)]
pub enum Fatal {
    /// Bad flags or configuration (exit 64).
    Config(String),
    /// Anything else (exit 1).
    Runtime(String),
}

/// A configuration error.
pub(crate) fn config_err(msg: impl Into<String>) -> Fatal {
    Fatal::Config(msg.into())
}

/// Installs logging (stderr) for the chosen format.
pub(crate) fn init_logging(common: &CommonFlags) {
    runtime::telemetry::init_tracing(match common.log_format {
        LogFormat::Text => runtime::telemetry::LogFormat::Text,
        LogFormat::Json => runtime::telemetry::LogFormat::Json,
    });
    // Every tier: the open-file limit goes up before any listener or connection exists.
    if let Some(limit) = runtime::fdlimit::raise_nofile_limit() {
        tracing::debug!(open_file_limit = limit, "open-file limit");
    }
}

/// A routes file to load: the flag, else `./routes` if it exists.
pub(crate) fn routes_path(flag: Option<&Path>) -> Option<PathBuf> {
    match flag {
        Some(p) => Some(p.to_owned()),
        None => Some(PathBuf::from("routes")).filter(|p| p.is_file()),
    }
}

/// Loads the routes file (or the default table) as text and parsed table.
pub(crate) fn load_routes(path: Option<&Path>) -> Result<(String, RouteTable), Fatal> {
    match path {
        Some(p) => runtime::routes_file::load(p).map_err(|e| config_err(format!("--routes {e}"))),
        None => RouteTable::parse(DEFAULT_ROUTES)
            .map(|t| (DEFAULT_ROUTES.to_owned(), t))
            .map_err(|e| Fatal::Runtime(format!("default routes: {e}"))),
    }
}

/// The client listener's TLS: the certificate files (watched for changes) and the config the
/// listener uses (`None`: plain HTTP).
pub(crate) type EdgeTls = Option<(Vec<runtime::tls::CertFiles>, runtime::tls::SharedTls)>;

/// The client listener's TLS from flags.
pub(crate) fn edge_tls(flags: &EdgeFlags) -> Result<EdgeTls, Fatal> {
    if flags.tls_cert.len() != flags.tls_key.len() {
        return Err(config_err(format!(
            "--tls-cert/--tls-key: {} certificates but {} keys",
            flags.tls_cert.len(),
            flags.tls_key.len()
        )));
    }
    if flags.tls_cert.is_empty() {
        return Ok(None);
    }
    let files: Vec<runtime::tls::CertFiles> = flags
        .tls_cert
        .iter()
        .zip(&flags.tls_key)
        .map(|(cert, key)| runtime::tls::CertFiles {
            cert: cert.clone(),
            key: key.clone(),
        })
        .collect();
    let config =
        runtime::tls::load(&files).map_err(|e| config_err(format!("--tls-cert/--tls-key {e}")))?;
    Ok(Some((files, Arc::new(arc_swap::ArcSwap::new(config)))))
}

/// Reloads the client listener's certificates when their files change.
pub(crate) fn watch_tls(
    tls: &Option<(Vec<runtime::tls::CertFiles>, runtime::tls::SharedTls)>,
    interval: u64,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    if let Some((files, shared)) = tls {
        tokio::spawn(runtime::tls::watch(
            files.clone(),
            shared.clone(),
            Duration::from_secs(interval.max(1)),
            shutdown.clone(),
        ));
    }
}

/// Client listener options (timeouts, header size, connection limit that fits under the
/// open-file limit) from flags; `max_connections` is `--max-connections` where the listener
/// has one.
pub(crate) fn server_options(
    limits: &ClientLimitFlags,
    max_header_bytes: usize,
    max_connections: Option<usize>,
) -> Result<runtime::server::ServerOptions, Fatal> {
    for (flag, secs) in [
        ("--client-header-timeout", limits.client_header_timeout),
        ("--client-body-timeout", limits.client_body_timeout),
    ] {
        if secs == 0 || secs > grip::MAX_DURATION_SECS {
            return Err(config_err(format!(
                "{flag} {secs}: must be 1..={}",
                grip::MAX_DURATION_SECS
            )));
        }
    }
    Ok(runtime::server::ServerOptions {
        max_header_bytes,
        header_read_timeout: Duration::from_secs(limits.client_header_timeout),
        body_timeout: Duration::from_secs(limits.client_body_timeout),
        // Lowered to what fits under the open-file limit when the listener starts; a listener
        // without --max-connections (control's) takes what fits, silently.
        max_connections: max_connections.unwrap_or(usize::MAX),
        ..Default::default()
    })
}

/// `--max-channel-length`, checked against what the bus can carry.
pub(crate) fn max_channel_length(limits: &ClientLimitFlags) -> Result<usize, Fatal> {
    let n = limits.max_channel_length;
    if n == 0 || n > bus::subject::MAX_CHANNEL_LENGTH {
        return Err(config_err(format!(
            "--max-channel-length {n}: must be 1..={} (longer names make bus subjects NATS refuses)",
            bus::subject::MAX_CHANNEL_LENGTH
        )));
    }
    Ok(n)
}

/// Says once, loudly, when origin requests are signed with Pushpin's well-known default key
/// on a client listener other than loopback (anyone can forge that `Grip-Sig`). Called after
/// logging starts, so the warning is not lost.
pub(crate) fn warn_default_sig_key(config: &EdgeConfig, listen: SocketAddr) {
    if config.sig_key.is_pushpin_default() && !listen.ip().is_loopback() {
        tracing::warn!(
            listen = %listen,
            "Grip-Sig is signed with Pushpin's well-known default key \"changeme\": origins cannot \
             tell gripmesh from anyone else who knows it; set --sig-key (GRIPMESH_SIG_KEY)"
        );
    }
}

/// The edge configuration from flags. Without `--sig-key`, origin requests are signed with
/// Pushpin's default key, as a stock Pushpin does ([`warn_default_sig_key`] says so).
pub(crate) fn edge_config(
    flags: &EdgeFlags,
    limits: &ClientLimitFlags,
) -> Result<EdgeConfig, Fatal> {
    let sig_key = match flags.sig_key.as_deref() {
        Some(k) => SigKey::parse(k).map_err(|e| config_err(format!("--sig-key: {e}")))?,
        None => SigKey::pushpin_default(),
    };
    Ok(EdgeConfig {
        sig_key,
        sig_iss: flags.sig_iss.clone(),
        max_instruct_body: flags.max_instruct_body,
        max_channels_per_connection: flags.max_channels_per_connection,
        max_ws_message_size: flags.max_ws_message_size,
        send_queue_messages: flags.send_queue_messages,
        send_queue_bytes: flags.send_queue_bytes,
        origin_connect_timeout: Duration::from_secs(flags.origin_connect_timeout),
        origin_response_timeout: Duration::from_secs(flags.origin_response_timeout),
        bus_loss_close: Duration::from_secs(flags.bus_loss_close),
        ws_upstream_queue_messages: flags.ws_upstream_queue_messages.max(1),
        ws_upstream_queue_bytes: flags.ws_upstream_queue_bytes.max(1),
        server: server_options(limits, flags.max_header_size, Some(flags.max_connections))?,
        registry: edge::registry::RegistryConfig {
            max_channel_length: max_channel_length(limits)?,
            ..Default::default()
        },
        ..EdgeConfig::default()
    })
}

/// Per-key limits from flags (exit 64 on a malformed quota).
pub(crate) fn key_limits(flags: &KeyLimitFlags) -> Result<edge::keys::KeyLimitsConfig, Fatal> {
    let message_quota = flags
        .key_message_quota
        .as_deref()
        .map(|q| {
            authz::limits::parse_quota(q).ok_or_else(|| {
                config_err(format!(
                    "--key-message-quota {q}: expected N/PERIOD, N from 0 to {} and PERIOD 1m, 1h or 1d",
                    u32::MAX
                ))
            })
        })
        .transpose()?;
    Ok(edge::keys::KeyLimitsConfig {
        max_connections: (flags.key_max_connections != 0).then_some(flags.key_max_connections),
        message_quota,
    })
}

/// Publish authentication from flags. One loopback-or-auth rule for every control listener
/// (`listeners`: flag name and address, the HTTP publish API and gRPC alike): without a
/// token or key, any of them on a non-loopback address refuses to start unless
/// `--publish-insecure`.
pub(crate) fn publish_auth(
    flags: &PublishFlags,
    listeners: &[(&str, SocketAddr)],
) -> Result<PublishAuth, Fatal> {
    let auth = match (&flags.publish_token, &flags.publish_key) {
        (Some(_), Some(_)) => {
            return Err(config_err(
                "--publish-token and --publish-key: give only one",
            ));
        }
        (Some(t), None) if t.is_empty() => return Err(config_err("--publish-token: empty")),
        (Some(t), None) => PublishAuth::Token(t.clone()),
        (None, Some(k)) => SigKey::parse(k)
            .map(|key| PublishAuth::Key(key, flags.publish_iss.clone()))
            .map_err(|e| config_err(format!("--publish-key: {e}")))?,
        (None, None) => PublishAuth::Open,
    };
    if flags.publish_iss.is_some() && flags.publish_key.is_none() {
        return Err(config_err("--publish-iss: needs --publish-key"));
    }
    if !auth.is_authenticated() && !flags.publish_insecure {
        for (flag, addr) in listeners {
            if !addr.ip().is_loopback() {
                return Err(config_err(format!(
                    "{flag} {addr}: a control listener on a non-loopback address needs --publish-token or --publish-key (or --publish-insecure)"
                )));
            }
        }
    }
    Ok(auth)
}

/// What a tier talks to the rest of the cluster through: the message bus and the state store
/// (NATS + JetStream, or both in memory), and the codec for state records.
#[derive(Clone)]
pub(crate) struct Backend {
    /// Publish/subscribe.
    pub bus: Arc<dyn Bus>,
    /// Key-value buckets (route table, revocations).
    pub state: Arc<dyn StateStore>,
    /// Signs and checks state records (`--cluster-key`).
    pub codec: RecordCodec,
    /// True on NATS (JetStream can then go away, and readiness says so).
    pub on_nats: bool,
    /// The NATS connection, when on NATS (channel history uses its JetStream).
    pub nats: Option<NatsBus>,
}

/// How long startup waits for NATS before checking that it has JetStream; a NATS that is not
/// reachable yet is not an error (readiness says so until it is).
const STARTUP_NATS_WAIT: Duration = Duration::from_secs(5);

/// The bus and state store: NATS + JetStream when URLs are given, else in memory. A NATS
/// without JetStream is a configuration error (exit 64, one line naming JetStream).
pub(crate) async fn connect_bus(
    nats: Option<&str>,
    name: &str,
    flags: &NatsFlags,
) -> Result<Backend, Fatal> {
    let codec = RecordCodec::new(
        flags
            .cluster_key
            .as_deref()
            .map(|k| ClusterKey::parse(k).map_err(|e| config_err(format!("--cluster-key: {e}"))))
            .transpose()?,
    );
    let Some(urls) = nats else {
        return Ok(Backend {
            bus: Arc::new(MemoryBus::new()),
            state: Arc::new(MemoryState::new()),
            codec,
            on_nats: false,
            nats: None,
        });
    };
    let bus = NatsBus::connect(NatsOptions {
        urls: urls.to_owned(),
        name: name.to_owned(),
        subscription_capacity: 65_536,
        auth: NatsAuth {
            creds_file: flags.nats_creds.clone(),
            nkey_file: flags.nats_nkey.clone(),
            tls_ca: flags.nats_tls_ca.clone(),
            tls_cert: flags.nats_tls_cert.clone(),
            tls_key: flags.nats_tls_key.clone(),
        },
    })
    .await
    .map_err(|e| config_err(format!("--nats: {e}")))?;
    let state = JetStreamState::new(bus.client().clone());
    let mut connected = bus.state();
    let up = tokio::time::timeout(
        STARTUP_NATS_WAIT,
        connected.wait_for(|s| *s == BusState::Connected),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if up && let Err(KvError::NoJetStream(why)) = state.check().await {
        return Err(config_err(format!(
            "--nats: JetStream is not enabled on the NATS server ({why}); a cluster keeps its state in JetStream: start nats-server with -js (Helm: config.jetstream.enabled=true)"
        )));
    }
    Ok(Backend {
        bus: Arc::new(bus.clone()),
        state: Arc::new(state),
        codec,
        on_nats: true,
        nats: Some(bus),
    })
}

/// Keeps the `jetstream` readiness condition in step with JetStream's availability (checked
/// every two seconds while the bus is connected; a disconnected bus is the `bus` condition's
/// business).
pub(crate) fn track_state(backend: &Backend, health: &Health) {
    if !backend.on_nats {
        return;
    }
    let (state, bus, health) = (backend.state.clone(), backend.bus.clone(), health.clone());
    health.set_not_ready("jetstream", "JetStream not checked yet");
    tokio::spawn(async move {
        loop {
            if *bus.state().borrow() == BusState::Connected {
                match state.check().await {
                    Ok(()) => health.set_ready("jetstream"),
                    Err(err) => {
                        health.set_not_ready("jetstream", format!("JetStream unavailable: {err}"))
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}

/// The revocation TTL from flags (at least a second).
pub(crate) fn revocation_ttl(flags: &StateFlags) -> Result<Duration, Fatal> {
    if flags.revocation_ttl == 0 {
        return Err(config_err("--revocation-ttl 0: must be at least 1 second"));
    }
    Ok(Duration::from_secs(flags.revocation_ttl))
}

/// The `--history` policy (exit 64 on a bad rule).
pub(crate) fn history_policy(flags: &HistoryFlags) -> Result<HistoryPolicy, Fatal> {
    if flags.history_replicas == 0 || flags.history_replicas > 5 {
        return Err(config_err(format!(
            "--history-replicas {}: must be 1..=5",
            flags.history_replicas
        )));
    }
    HistoryPolicy::parse(&flags.history).map_err(|e| config_err(e.to_string()))
}

/// Where history lives: JetStream over `nats`, else process memory. Control (with a policy)
/// creates or updates the JetStream stream in the background until it succeeds; the
/// `history` readiness condition is false until then.
pub(crate) fn history_store(
    nats: Option<&NatsBus>,
    policy: &HistoryPolicy,
    replicas: usize,
    health: &Health,
) -> Arc<dyn HistoryStore> {
    let Some(nats) = nats else {
        return Arc::new(MemoryHistory::new());
    };
    let store = JetStreamHistory::new(nats);
    if let Some(max) = policy.max_limits() {
        health.set_not_ready("history", "creating the JetStream history stream");
        let (store, health) = (store.clone(), health.clone());
        tokio::spawn(async move {
            loop {
                match store.ensure_stream(max, replicas).await {
                    Ok(()) => {
                        tracing::info!(
                            stream = bus::history::HISTORY_STREAM,
                            max_items = max.size,
                            max_age_secs = max.age.as_secs(),
                            replicas,
                            "history stream ready"
                        );
                        health.set_ready("history");
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot create the history stream yet; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
    Arc::new(store)
}

/// Keeps the `bus` readiness condition in step with the bus connection.
pub(crate) fn track_bus(bus: &Arc<dyn Bus>, health: &Health) {
    let mut state = bus.state();
    // The initial state is set before returning, so /readyz is never optimistic at startup.
    match *state.borrow() {
        BusState::Connected => health.set_ready("bus"),
        BusState::Disconnected => health.set_not_ready("bus", "not connected to NATS"),
    }
    let health = health.clone();
    tokio::spawn(async move {
        loop {
            let current = *state.borrow_and_update();
            match current {
                BusState::Connected => health.set_ready("bus"),
                BusState::Disconnected => health.set_not_ready("bus", "not connected to NATS"),
            }
            if state.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Binds a listener; failures name the flag.
pub(crate) async fn bind(flag: &str, addr: SocketAddr) -> Result<TcpListener, Fatal> {
    runtime::server::bind(addr).map_err(|e| config_err(format!("{flag} {addr}: {e}")))
}

/// Binds a listener (failures name the flag) and announces it as `name`.
pub(crate) async fn listen(flag: &str, name: &str, addr: SocketAddr) -> Result<TcpListener, Fatal> {
    let listener = bind(flag, addr).await?;
    announce(name, &listener);
    Ok(listener)
}

/// Prints `listening <name> <addr>` on stdout (tests and scripts read the bound ports).
pub(crate) fn announce(name: &str, listener: &TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        println!("listening {name} {addr}");
        tracing::info!(listener = name, %addr, "listening");
    }
}

/// Prints `ready` on stdout once every listener is announced.
pub(crate) fn announce_ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

/// Bounds a drain step by the remaining drain time; logs when it runs out.
pub(crate) async fn within(
    deadline: tokio::time::Instant,
    what: &str,
    fut: impl Future<Output = ()>,
) {
    if tokio::time::timeout_at(deadline, fut).await.is_err() {
        tracing::warn!(step = what, "drain timeout reached; continuing shutdown");
    }
}

/// `--forward-headers`: comma-separated header names (lower-cased); a bad name exits 64.
pub(crate) fn forward_headers(text: &str) -> Result<Vec<http::HeaderName>, Fatal> {
    text.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            http::HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                .map_err(|_| config_err(format!("--forward-headers: '{h}' is not a header name")))
        })
        .collect()
}

/// The sidecar's configuration from flags.
pub(crate) fn authz_config(gateway: &str, flags: &AuthzFlags) -> Result<authz::Authorizer, Fatal> {
    let sources = authz::credential::parse_sources(&flags.credential_sources)
        .map_err(|e| config_err(format!("--credential-sources: {e}")))?;
    if flags.authz_cache_entries == 0 {
        return Err(config_err("--authz-cache-entries: must be at least 1"));
    }
    let config = authz::AuthzConfig {
        sources,
        forward_headers: forward_headers(&flags.forward_headers)?
            .iter()
            .map(|h| h.as_str().to_owned())
            .collect(),
        cache_entries: flags.authz_cache_entries,
        cache_bytes: flags.authz_cache_bytes,
        allow_ttl: Duration::from_secs(flags.authz_allow_ttl),
        deny_ttl: Duration::from_secs(flags.authz_deny_ttl),
        gateway_timeout: Duration::from_secs(flags.gateway_timeout.max(1)),
        ..authz::AuthzConfig::new(gateway)
    };
    authz::Authorizer::new(config).map_err(|e| config_err(e.to_string()))
}

/// The embedded sidecar as the edge's checker (standalone).
pub(crate) struct Embedded(pub authz::Authorizer);

impl edge::authz::AuthzCheck for Embedded {
    fn check(
        &self,
        req: proto::v1::CheckRequest,
    ) -> futures_util::future::BoxFuture<'_, Result<proto::v1::CheckResponse, String>> {
        Box::pin(async move { Ok(self.0.check(req).await) })
    }
}
