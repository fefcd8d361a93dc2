//! `standalone`, `edge`, `control` and `authz`: the same building blocks, wired per tier
//! ([`Process`] is what they share).

use crate::cli::{AuthzArgs, ControlArgs, EdgeArgs, StandaloneArgs};
use crate::cli::{
    ClientLimitFlags, EdgeFlags, KeyLimitFlags, PublishFlags, StateFlags, UsageFlags,
};
use crate::common::{self, Backend, Fatal};
use crate::process::Process;
use crate::status;
use arc_swap::ArcSwap;
use control::{Control, ControlConfig, PutError, RevocationStore, RouteStore, RoutesSource};
use edge::{Edge, EdgeConfig};
use runtime::Health;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The edge's configuration from its flags (standalone and edge), with the client
/// listener's TLS (certificate files to watch, and the shared config the listener uses).
fn edge_setup(
    flags: &EdgeFlags,
    limits: &ClientLimitFlags,
    forward_headers: &str,
    keys: &KeyLimitFlags,
) -> Result<(common::EdgeTls, EdgeConfig), Fatal> {
    let tls = common::edge_tls(flags)?;
    let mut config = common::edge_config(flags, limits)?;
    config.server.tls = tls.as_ref().map(|(_, shared)| shared.clone());
    config.forward_headers = common::forward_headers(forward_headers)?;
    config.key_limits = common::key_limits(keys)?;
    Ok((tls, config))
}

/// Binds the client listener and makes the edge on it (its node id, for usage records,
/// names the listener's port).
async fn start_edge(
    mut config: EdgeConfig,
    listen: std::net::SocketAddr,
    usage: &UsageFlags,
    backend: &Backend,
    table: Arc<ArcSwap<routes::RouteTable>>,
    checker: Option<Arc<dyn edge::authz::AuthzCheck>>,
) -> Result<(Edge, tokio::net::TcpListener), Fatal> {
    let listener = common::listen("--listen", "edge", listen).await?;
    let node_id = crate::usage::node_id(usage.node_id.as_deref(), &listener);
    config.usage = crate::usage::edge_config(usage, node_id);
    let edge = Edge::new(config, backend.bus.clone(), table, checker)
        .map_err(|e| Fatal::Runtime(e.to_string()))?;
    Ok((edge, listener))
}

/// Control's configuration from its flags (standalone and control).
fn control_config(
    auth: control::PublishAuth,
    publish: &PublishFlags,
    limits: &ClientLimitFlags,
    history: Option<control::ControlHistory>,
) -> Result<ControlConfig, Fatal> {
    Ok(ControlConfig {
        auth,
        max_body: publish.publish_max_body,
        max_channel_length: common::max_channel_length(limits)?,
        server: common::server_options(limits, 16 * 1024, None)?,
        history,
    })
}

/// Control's route and revocation stores on the backend's state. With `file_owns_table` (a
/// control with a routes file) API writes are refused; otherwise an empty bucket is seeded
/// with `seed`.
pub(crate) fn control_stores(
    backend: &Backend,
    state: &StateFlags,
    file_owns_table: bool,
    seed: &str,
) -> Result<(RouteStore, RevocationStore), Fatal> {
    let replicas = state.state_replicas.max(1);
    let source = if file_owns_table {
        RoutesSource::File
    } else {
        RoutesSource::Api {
            seed: seed.to_owned(),
        }
    };
    let routes = RouteStore::new(
        backend.state.clone(),
        backend.codec.clone(),
        replicas,
        source,
    );
    let revocations = RevocationStore::new(
        backend.state.clone(),
        backend.codec.clone(),
        common::revocation_ttl(state)?,
        replicas,
    );
    Ok((routes, revocations))
}

/// Runs the stores' background work until `shutdown`: follows the route bucket, creates the
/// revocations bucket and the per-key count buckets in `key_buckets` (store, replicas) so
/// followers find them, and writes the routes file to the bucket whenever it changes.
pub(crate) fn run_control_stores(
    routes: &RouteStore,
    revocations: &RevocationStore,
    key_buckets: (Arc<dyn bus::kv::StateStore>, usize),
    file: Option<PathBuf>,
    poll_interval: u64,
    shutdown: &CancellationToken,
) {
    tokio::spawn({
        let ((state, replicas), stop) = (key_buckets, shutdown.clone());
        async move {
            while let Err(err) = bus::key_state::prepare(state.as_ref(), replicas).await {
                tracing::debug!(error = %err, "per-key count buckets not available yet");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    });
    tokio::spawn({
        let (routes, stop) = (routes.clone(), shutdown.clone());
        async move { routes.run(stop).await }
    });
    tokio::spawn({
        let (revocations, stop) = (revocations.clone(), shutdown.clone());
        async move {
            while let Err(err) = revocations.prepare().await {
                tracing::debug!(error = %err, "revocations bucket not available yet");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    });
    if let Some(path) = file {
        tokio::spawn(sync_routes_file(
            routes.clone(),
            path,
            Duration::from_secs(poll_interval.max(1)),
            shutdown.clone(),
        ));
    }
}

/// Writes the routes file's table to the bucket at startup and whenever the file changes; a
/// bad file is logged (file, line, reason) and counted, and the stored table stays. A write
/// that fails (NATS away) is tried again at the next check.
async fn sync_routes_file(
    store: RouteStore,
    path: PathBuf,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut written: Option<Vec<u8>> = None;
    let mut reported: Option<Result<Vec<u8>, String>> = None;
    loop {
        match std::fs::read(&path) {
            Ok(bytes) if written.as_ref() != Some(&bytes) => {
                let outcome = match runtime::routes_file::parse_bytes(&bytes) {
                    Err(err) => Err(format!("line {}: {}", err.line, err.reason)),
                    Ok(_) => match store
                        .sync_file(String::from_utf8_lossy(&bytes).into_owned())
                        .await
                    {
                        Ok(v) => {
                            tracing::info!(path = %path.display(), version = v.version, "routes file written to the route bucket");
                            written = Some(bytes.clone());
                            Ok(())
                        }
                        Err(PutError::Unavailable(err)) => {
                            tracing::debug!(error = %err, "route bucket not writable yet; will retry");
                            Ok(())
                        }
                        Err(err) => Err(err.to_string()),
                    },
                };
                if let Err(reason) = outcome
                    && reported.as_ref() != Some(&Ok(bytes.clone()))
                {
                    runtime::routes_file::rejected(&path, &reason);
                    reported = Some(Ok(bytes));
                }
            }
            Ok(_) => {}
            Err(err) => {
                let msg = err.to_string();
                if reported.as_ref() != Some(&Err(msg.clone())) {
                    runtime::routes_file::rejected(&path, &format!("file unreadable: {msg}"));
                    reported = Some(Err(msg));
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Serves control's HTTP publish API and gRPC API until `stop`.
pub(crate) fn serve_control(
    control: &Control,
    publish: tokio::net::TcpListener,
    grpc: tokio::net::TcpListener,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let publish_task = tokio::spawn({
        let (control, stop) = (control.clone(), stop.clone());
        async move { control.serve_publish(publish, stop).await }
    });
    let grpc_task = tokio::spawn({
        let (control, stop) = (control.clone(), stop.clone());
        async move { control.serve_grpc(grpc, stop).await }
    });
    tokio::spawn({
        let (control, stop) = (control.clone(), stop.clone());
        async move { control.track_routes_version(stop).await }
    });
    vec![publish_task, grpc_task]
}

/// [`serve_control`] on a Tokio runtime of its own (one thread): in `standalone` the edge's
/// fan-out keeps the main runtime's workers busy, and a publish call must not queue behind
/// it (a publisher never waits on delivery). The listeners move to that runtime, so their
/// readiness is driven there too. The returned handle ends when the servers have.
pub(crate) fn serve_control_apart(
    control: &Control,
    publish: tokio::net::TcpListener,
    grpc: tokio::net::TcpListener,
    stop: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>, Fatal> {
    let fatal = |e: std::io::Error| Fatal::Runtime(format!("control listeners: {e}"));
    let publish = publish.into_std().map_err(fatal)?;
    let grpc = grpc.into_std().map_err(fatal)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fatal::Runtime(format!("control runtime: {e}")))?;
    let (control, stop) = (control.clone(), stop.clone());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("gripmesh-control".into())
        .spawn(move || {
            rt.block_on(async move {
                let listeners = tokio::net::TcpListener::from_std(publish)
                    .and_then(|p| Ok((p, tokio::net::TcpListener::from_std(grpc)?)));
                let (publish, grpc) = match listeners {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "control listeners unusable");
                        return;
                    }
                };
                for server in serve_control(&control, publish, grpc, &stop) {
                    let _ = server.await;
                }
            });
            drop(done_tx);
        })
        .map_err(|e| Fatal::Runtime(format!("control thread: {e}")))?;
    Ok(vec![tokio::spawn(async move {
        let _ = done_rx.await;
    })])
}

/// Serves clients on the edge listener until `stop`.
pub(crate) fn serve_edge(
    edge: &Edge,
    listener: tokio::net::TcpListener,
    stop: &CancellationToken,
) -> JoinHandle<()> {
    let (edge, stop) = (edge.clone(), stop.clone());
    tokio::spawn(async move { edge.serve(listener, stop).await })
}

/// Creates the per-key count buckets now when the store answers (standalone and demo, whose
/// embedded edge then opens them at once); otherwise `run_control_stores` keeps trying.
pub(crate) async fn prepare_key_buckets(backend: &Backend, replicas: usize) {
    let prepared = tokio::time::timeout(
        Duration::from_secs(2),
        bus::key_state::prepare(backend.state.as_ref(), replicas.max(1)),
    )
    .await;
    if !matches!(prepared, Ok(Ok(()))) {
        tracing::debug!("per-key count buckets not available yet");
    }
}

/// Revocations for the edge (close live connections, refuse revoked credentials) and the
/// sidecar (drop cached decisions, refuse without asking the gateway), and periodic re-checks
/// of authorized connections.
pub(crate) fn spawn_authz_tasks(
    edge: &Edge,
    authorizer: Option<&authz::Authorizer>,
    backend: &Backend,
    health: &Health,
    recheck_secs: u64,
    shutdown: &CancellationToken,
) {
    let caught_up = revocations_condition(health);
    tokio::spawn({
        let (edge, state, codec, stop) = (
            edge.clone(),
            backend.state.clone(),
            backend.codec.clone(),
            shutdown.clone(),
        );
        async move { edge.follow_revocations(state, codec, caught_up, stop).await }
    });
    // Per-key limits counted across the cluster (the key buckets); not ready until the other
    // edges' counts are known.
    health.set_not_ready("key-limits", "loading per-key counts");
    let counted = {
        let health = health.clone();
        bus::cluster_state::CaughtUp::new(move || health.set_ready("key-limits"))
    };
    tokio::spawn({
        let (edge, state, codec, stop) = (
            edge.clone(),
            backend.state.clone(),
            backend.codec.clone(),
            shutdown.clone(),
        );
        async move { edge.follow_key_limits(state, codec, counted, stop).await }
    });
    // Cluster-wide `recover` and `refresh` commands (not an authz matter, but every edge runs
    // these tasks).
    tokio::spawn({
        let (edge, bus, stop) = (edge.clone(), backend.bus.clone(), shutdown.clone());
        async move { edge.follow_commands(bus, stop).await }
    });
    if let Some(a) = authorizer {
        spawn_sidecar_revocations(a, backend, health, shutdown);
    }
    tokio::spawn({
        let (edge, stop) = (edge.clone(), shutdown.clone());
        let every = Duration::from_secs(recheck_secs.max(1));
        async move { edge.recheck_authz(every, stop).await }
    });
}

/// Closes the edge's held connections after `--bus-loss-close` seconds without NATS (0: never).
pub(crate) fn spawn_bus_loss_close(
    edge: &Edge,
    bus: &Arc<dyn bus::Bus>,
    secs: u64,
    shutdown: &CancellationToken,
) {
    if secs == 0 {
        return;
    }
    let (edge, state, stop) = (edge.clone(), bus.state(), shutdown.clone());
    tokio::spawn(async move { edge.close_on_bus_loss(state, stop).await });
}

/// The sidecar follows the revocations bucket.
pub(crate) fn spawn_sidecar_revocations(
    authorizer: &authz::Authorizer,
    backend: &Backend,
    health: &Health,
    shutdown: &CancellationToken,
) {
    let caught_up = revocations_condition(health);
    let (a, state, codec, stop) = (
        authorizer.clone(),
        backend.state.clone(),
        backend.codec.clone(),
        shutdown.clone(),
    );
    tokio::spawn(async move { a.follow_revocations(state, codec, caught_up, stop).await });
}

/// The `revocations` readiness condition: not ready until the revocations that exist are
/// known, so a restarted edge or sidecar never lets a revoked credential through meanwhile.
fn revocations_condition(health: &Health) -> bus::cluster_state::CaughtUp {
    health.set_not_ready("revocations", "loading revocations");
    let health = health.clone();
    bus::cluster_state::CaughtUp::new(move || health.set_ready("revocations"))
}

/// Applies every change of the route store to an in-process edge's table.
pub(crate) async fn follow_store(
    store: RouteStore,
    table: Arc<ArcSwap<routes::RouteTable>>,
    shutdown: CancellationToken,
) {
    let mut changes = store.watch();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                let text = changes.borrow_and_update().text.clone();
                // The store only holds validated tables.
                if let Ok(new) = routes::RouteTable::parse(&text) {
                    table.store(Arc::new(new));
                }
            }
        }
    }
}

/// `gripmesh standalone`.
pub async fn standalone(args: StandaloneArgs) -> Result<(), Fatal> {
    // Before anything that may log: a refused configuration is one line.
    let auth = common::publish_auth(
        &args.publish,
        &[
            ("--publish-listen", args.publish_listen),
            ("--grpc-listen", args.grpc_listen),
        ],
    )?;
    let routes_path = common::routes_path(args.routes.as_deref());
    let (text, table) = common::load_routes(routes_path.as_deref())?;
    let (tls, mut edge_config) = edge_setup(
        &args.edge,
        &args.limits,
        &args.authz.forward_headers,
        &args.keys,
    )?;
    let usage_stream = crate::usage::stream_config(&args.usage_stream)?;
    crate::usage::webhook(&args.usage_webhook)?;

    let mut process = Process::start();
    // Built after the recorder is installed, so its metrics are registered with it.
    let webhook = crate::usage::webhook(&args.usage_webhook)?;
    let authorizer = args
        .authz_gateway
        .as_deref()
        .map(|g| common::authz_config(g, &args.authz))
        .transpose()?;
    let backend = common::connect_bus(
        args.nats.as_deref(),
        "gripmesh-standalone",
        &args.nats_flags,
    )
    .await?;
    // Logging starts once NATS is checked, so a refusal (no JetStream) stays one line.
    common::init_logging(&args.common);
    common::warn_default_sig_key(&edge_config, args.listen);
    // Standalone: the routes file is written to the store when it changes, and `PUT /routes`
    // may still replace the table (a single process has no replicas to disagree).
    let (store, revocations) = control_stores(&backend, &args.state, false, &text)?;
    common::track_bus(&backend.bus, &process.health);
    common::track_state(&backend, &process.health);
    let policy = common::history_policy(&args.history)?;
    // History: in memory without NATS (only when a channel has a policy), else JetStream.
    let history = (!policy.is_empty() || backend.nats.is_some()).then(|| {
        common::history_store(
            backend.nats.as_ref(),
            &policy,
            args.history.history_replicas,
            &process.health,
        )
    });
    edge_config.history = history.clone().map(edge::EdgeHistory);
    let table = Arc::new(ArcSwap::from_pointee(table));
    let checker = authorizer
        .clone()
        .map(|a| Arc::new(common::Embedded(a)) as Arc<dyn edge::authz::AuthzCheck>);
    let (edge, edge_listener) = start_edge(
        edge_config,
        args.listen,
        &args.usage,
        &backend,
        table.clone(),
        checker,
    )
    .await?;
    let control = Control::new(
        control_config(
            auth,
            &args.publish,
            &args.limits,
            history
                .filter(|_| !policy.is_empty())
                .map(|store| control::ControlHistory { policy, store }),
        )?,
        backend.bus.clone(),
        store.clone(),
        revocations.clone(),
    );

    let publish_listener =
        common::listen("--publish-listen", "publish", args.publish_listen).await?;
    let grpc_listener = common::listen("--grpc-listen", "grpc", args.grpc_listen).await?;
    let admin_listener = common::listen("--admin-listen", "admin", args.admin_listen).await?;

    // The embedded edge finds its per-key count buckets at once (ready sooner).
    prepare_key_buckets(&backend, args.state.state_replicas).await;
    spawn_authz_tasks(
        &edge,
        authorizer.as_ref(),
        &backend,
        &process.health,
        args.authz_recheck,
        &process.stop_background,
    );
    let mut background = crate::usage::spawn_edge(
        &edge,
        &backend.bus,
        &usage_stream,
        webhook.as_ref(),
        &process.stop_background,
    );
    background.extend(crate::usage::spawn_control(
        &backend.bus,
        &usage_stream,
        webhook,
        &process.stop_background,
    ));
    common::watch_tls(
        &tls,
        args.common.routes_poll_interval,
        &process.stop_background,
    );
    let recent_revocations = status::Revocations::follow(&backend, process.stop_background.clone());
    let page = status::page(
        "standalone",
        Some(status::RoutesSource::Store(store.clone())),
        Some(recent_revocations),
    );
    if backend.on_nats {
        spawn_bus_loss_close(
            &edge,
            &backend.bus,
            args.edge.bus_loss_close,
            &process.stop_background,
        );
    }
    process.serve_admin(admin_listener, page);
    let edge_task = serve_edge(&edge, edge_listener, &process.stop_accepting);
    let servers = serve_control_apart(
        &control,
        publish_listener,
        grpc_listener,
        &process.stop_accepting,
    )?;
    // One table: the routes file and `PUT /routes` both go through control's store, and the
    // embedded edge follows the store.
    run_control_stores(
        &store,
        &revocations,
        (backend.state.clone(), args.state.state_replicas.max(1)),
        routes_path,
        args.common.routes_poll_interval,
        &process.stop_background,
    );
    tokio::spawn(follow_store(store, table, process.stop_background.clone()));
    process.health.set_ready("routes");
    process
        .running(
            Some((edge, edge_task)),
            servers,
            background,
            args.common.drain_timeout,
        )
        .announce_and_wait("standalone")
        .await
}

/// `gripmesh edge`.
pub async fn edge(args: EdgeArgs) -> Result<(), Fatal> {
    let (tls, mut edge_config) =
        edge_setup(&args.edge, &args.limits, &args.forward_headers, &args.keys)?;
    let file = match &args.routes {
        Some(p) => Some((p.clone(), common::load_routes(Some(p))?.1)),
        None => None,
    };
    let mut process = Process::start();
    let backend = common::connect_bus(Some(&args.nats), "gripmesh-edge", &args.nats_flags).await?;
    // Logging starts once NATS is checked, so a refusal (no JetStream) stays one line.
    common::init_logging(&args.common);
    common::warn_default_sig_key(&edge_config, args.listen);
    common::track_bus(&backend.bus, &process.health);
    common::track_state(&backend, &process.health);
    // Edges read history (on resumes only) straight from JetStream, never through control.
    edge_config.history = backend
        .nats
        .as_ref()
        .map(|n| edge::EdgeHistory(Arc::new(bus::history::JetStreamHistory::new(n))));
    let table = Arc::new(ArcSwap::from_pointee(
        file.as_ref().map(|(_, t)| t.clone()).unwrap_or_default(),
    ));
    let usage_stream = crate::usage::stream_config(&args.usage_stream)?;
    let checker = args
        .authz
        .as_deref()
        .map(|url| {
            edge::authz::GrpcAuthz::new(url)
                .map(|c| Arc::new(c) as Arc<dyn edge::authz::AuthzCheck>)
                .map_err(|e| common::config_err(format!("--authz {e}")))
        })
        .transpose()?;
    let (edge, edge_listener) = start_edge(
        edge_config,
        args.listen,
        &args.usage,
        &backend,
        table.clone(),
        checker,
    )
    .await?;
    if file.is_none() {
        // Not ready until the table is in (set before the admin listener answers).
        process.health.set_not_ready(
            edge::routes_follow::READY_CONDITION,
            "waiting for the route table (bucket gripmesh_routes)",
        );
    }
    let admin_listener = common::listen("--admin-listen", "admin", args.admin_listen).await?;

    spawn_authz_tasks(
        &edge,
        None,
        &backend,
        &process.health,
        args.authz_recheck,
        &process.stop_background,
    );
    let background = crate::usage::spawn_edge(
        &edge,
        &backend.bus,
        &usage_stream,
        None,
        &process.stop_background,
    );
    spawn_bus_loss_close(
        &edge,
        &backend.bus,
        args.edge.bus_loss_close,
        &process.stop_background,
    );
    common::watch_tls(
        &tls,
        args.common.routes_poll_interval,
        &process.stop_background,
    );
    let revocations = status::Revocations::follow(&backend, process.stop_background.clone());
    let page = status::page(
        "edge",
        Some(status::RoutesSource::Table(table.clone())),
        Some(revocations),
    );
    process.serve_admin(admin_listener, page);
    match file {
        Some((path, _)) => {
            process.health.set_ready("routes");
            tokio::spawn(runtime::routes_file::watch(
                path,
                table.clone(),
                Duration::from_secs(args.common.routes_poll_interval.max(1)),
                process.stop_background.clone(),
            ));
        }
        None => {
            tokio::spawn(edge::routes_follow::follow(
                backend.state.clone(),
                backend.codec.clone(),
                table.clone(),
                process.health.clone(),
                process.stop_background.clone(),
            ));
        }
    }
    let edge_task = serve_edge(&edge, edge_listener, &process.stop_accepting);
    process
        .running(
            Some((edge, edge_task)),
            Vec::new(),
            background,
            args.common.drain_timeout,
        )
        .announce_and_wait("edge")
        .await
}

/// `gripmesh control`.
pub async fn control(args: ControlArgs) -> Result<(), Fatal> {
    let auth = common::publish_auth(
        &args.publish,
        &[
            ("--publish-listen", args.publish_listen),
            ("--grpc-listen", args.grpc_listen),
        ],
    )?;
    let routes_path = common::routes_path(args.routes.as_deref());
    // A bad file is a startup error (exit 64), as before.
    common::load_routes(routes_path.as_deref())?;
    let usage_stream = crate::usage::stream_config(&args.usage_stream)?;
    crate::usage::webhook(&args.usage_webhook)?;
    let mut process = Process::start();
    // Built after the recorder is installed, so its metrics are registered with it.
    let webhook = crate::usage::webhook(&args.usage_webhook)?;
    let backend =
        common::connect_bus(Some(&args.nats), "gripmesh-control", &args.nats_flags).await?;
    // Logging starts once NATS is checked, so a refusal (no JetStream) stays one line.
    common::init_logging(&args.common);
    let (store, revocations) = control_stores(
        &backend,
        &args.state,
        routes_path.is_some(),
        common::DEFAULT_ROUTES,
    )?;
    common::track_bus(&backend.bus, &process.health);
    common::track_state(&backend, &process.health);
    let usage_bus = backend.bus.clone();
    let policy = common::history_policy(&args.history)?;
    let history = (!policy.is_empty()).then(|| control::ControlHistory {
        store: common::history_store(
            backend.nats.as_ref(),
            &policy,
            args.history.history_replicas,
            &process.health,
        ),
        policy,
    });
    let control = Control::new(
        control_config(auth, &args.publish, &args.limits, history)?,
        backend.bus.clone(),
        store.clone(),
        revocations.clone(),
    );
    process
        .health
        .set_not_ready("routes", "route table not loaded from the bucket yet");
    let publish_listener =
        common::listen("--publish-listen", "publish", args.publish_listen).await?;
    let grpc_listener = common::listen("--grpc-listen", "grpc", args.grpc_listen).await?;
    let admin_listener = common::listen("--admin-listen", "admin", args.admin_listen).await?;

    let page = status::page(
        "control",
        Some(status::RoutesSource::Store(store.clone())),
        Some(status::Revocations::follow(
            &backend,
            process.stop_background.clone(),
        )),
    );
    process.serve_admin(admin_listener, page);
    run_control_stores(
        &store,
        &revocations,
        (backend.state.clone(), args.state.state_replicas.max(1)),
        routes_path,
        args.common.routes_poll_interval,
        &process.stop_background,
    );
    tokio::spawn({
        let (health, mut latest) = (process.health.clone(), store.watch());
        async move {
            if latest.wait_for(|v| v.version > 0).await.is_ok() {
                health.set_ready("routes");
            }
        }
    });
    let servers = serve_control_apart(
        &control,
        publish_listener,
        grpc_listener,
        &process.stop_accepting,
    )?;
    let background =
        crate::usage::spawn_control(&usage_bus, &usage_stream, webhook, &process.stop_background);
    process
        .running(None, servers, background, args.common.drain_timeout)
        .announce_and_wait("control")
        .await
}

/// `gripmesh authz`.
pub async fn authz(args: AuthzArgs) -> Result<(), Fatal> {
    // The recorder first, so the sidecar's series exist at 0 from the start.
    let mut process = Process::start();
    let authorizer = common::authz_config(&args.gateway, &args.authz)?;
    let backend = match &args.nats {
        Some(urls) => {
            let backend =
                common::connect_bus(Some(urls), "gripmesh-authz", &args.nats_flags).await?;
            common::track_bus(&backend.bus, &process.health);
            common::track_state(&backend, &process.health);
            Some(backend)
        }
        None => None,
    };
    // Logging starts once NATS is checked, so a refusal (no JetStream) stays one line.
    common::init_logging(&args.common);
    let listener = common::listen("--listen", "authz", args.listen).await?;
    let admin_listener = common::listen("--admin-listen", "admin", args.admin_listen).await?;
    let revocations = backend
        .as_ref()
        .map(|b| status::Revocations::follow(b, process.stop_background.clone()));
    process.serve_admin(admin_listener, status::page("authz", None, revocations));
    if let Some(backend) = &backend {
        spawn_sidecar_revocations(
            &authorizer,
            backend,
            &process.health,
            &process.stop_background,
        );
    }
    let server = tokio::spawn({
        let stop = process.stop_accepting.clone();
        async move { authz::serve(authorizer, listener, stop).await }
    });
    // Readiness does not depend on the gateway: a gateway outage is the routes' fail policy's
    // business, not a reason to take the sidecar out of rotation.
    process
        .running(None, vec![server], Vec::new(), args.common.drain_timeout)
        .announce_and_wait("authz")
        .await
}
