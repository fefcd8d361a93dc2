//! `gripmesh standalone`: the edge and control in one process over one bus (in memory, or NATS
//! with `--nats`), with the authorizer embedded when `--authz-gateway` is given.
//!
//! [`start`] does the wiring on the listeners the flags name (`127.0.0.1:0` binds ports of its
//! own) and hands back a [`Standalone`]: the bound addresses, and the drain to run once stopped.
//! The binary runs it until a signal; the in-process test tier (tests/inproc) runs it until its
//! own stop token, so both start the tiers through this same code.

use super::follow::{spawn_authz_tasks, spawn_bus_loss_close};
use super::serve::{serve_control_apart, serve_edge};
use super::setup::{control_config, edge_setup, prepare_key_buckets, start_edge};
use super::stores::{control_stores, follow_store, run_control_stores};
use crate::cli::StandaloneArgs;
use crate::common::{self, Backend, Fatal};
use crate::process::{Process, Running};
use crate::status;
use arc_swap::ArcSwap;
use bus::history::{HistoryPolicy, HistoryStore};
use control::{Control, RevocationStore, RouteStore};
use edge::{Edge, EdgeConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// `gripmesh standalone`: runs until SIGTERM/SIGINT, then drains.
pub async fn standalone(args: StandaloneArgs) -> Result<(), Fatal> {
    start(args)
        .await?
        .running
        .announce_and_wait("standalone")
        .await
}

/// A started standalone: every listener is bound and served, and readiness is set.
pub struct Standalone {
    running: Running,
    listeners: Vec<(&'static str, SocketAddr)>,
}

impl Standalone {
    /// The bound listeners by the names they are announced with (`edge`, `publish`, `grpc`,
    /// `admin`).
    pub fn listeners(&self) -> &[(&'static str, SocketAddr)] {
        &self.listeners
    }

    /// Runs until `stop` is cancelled, then drains exactly as after a signal.
    pub async fn run_until(self, stop: CancellationToken) {
        self.running
            .drain_after(async move {
                stop.cancelled().await;
                "stop"
            })
            .await;
    }
}

/// Wires standalone from its flags: checks them, connects the bus, makes the edge and control,
/// binds and serves their listeners and starts the background work. Errors are what the
/// binary exits with (bad configuration: exit 64).
pub async fn start(args: StandaloneArgs) -> Result<Standalone, Fatal> {
    let checked = Checked::new(&args)?;
    let mut process = Process::start();
    let mut tiers = Tiers::build(&args, checked, &process).await?;
    let listeners = ApiListeners::bind(&args).await?;
    let mut addrs = vec![("edge", local_addr(&tiers.edge_listener)?)];
    addrs.extend(listeners.addrs()?);
    let background = tiers.spawn_background(&args, &process).await;
    process.serve_admin(listeners.admin, tiers.page(&process));
    let edge_task = serve_edge(&tiers.edge, tiers.edge_listener, &process.stop_accepting);
    let servers = serve_control_apart(
        &tiers.control,
        listeners.publish,
        listeners.grpc,
        &process.stop_accepting,
    )?;
    // One table: the routes file and `PUT /routes` both go through control's store, and the
    // embedded edge follows the store.
    run_control_stores(
        &tiers.store,
        &tiers.revocations,
        (
            tiers.backend.state.clone(),
            args.state.state_replicas.max(1),
        ),
        tiers.routes_path,
        args.common.routes_poll_interval,
        &process.stop_background,
    );
    tokio::spawn(follow_store(
        tiers.store,
        tiers.table,
        process.stop_background.clone(),
    ));
    process.health.set_ready("routes");
    let running = process.running(
        Some((tiers.edge, edge_task)),
        servers,
        background,
        args.common.drain_timeout,
    );
    Ok(Standalone {
        running,
        listeners: addrs,
    })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, Fatal> {
    listener
        .local_addr()
        .map_err(|e| Fatal::Runtime(format!("listener address: {e}")))
}

/// What is checked before anything may log, so that a refused configuration is one line.
struct Checked {
    auth: control::PublishAuth,
    routes_path: Option<PathBuf>,
    routes_text: String,
    table: routes::RouteTable,
    tls: common::EdgeTls,
    edge_config: EdgeConfig,
    usage_stream: bus::usage::UsageStreamConfig,
}

impl Checked {
    fn new(args: &StandaloneArgs) -> Result<Checked, Fatal> {
        let auth = common::publish_auth(
            &args.publish,
            &[
                ("--publish-listen", args.publish_listen),
                ("--grpc-listen", args.grpc_listen),
            ],
        )?;
        let routes_path = common::routes_path(args.routes.as_deref());
        let (routes_text, table) = common::load_routes(routes_path.as_deref())?;
        let (tls, edge_config) = edge_setup(
            &args.edge,
            &args.limits,
            &args.authz.forward_headers,
            &args.keys,
        )?;
        let usage_stream = crate::usage::stream_config(&args.usage_stream)?;
        crate::usage::webhook(&args.usage_webhook)?;
        Ok(Checked {
            auth,
            routes_path,
            routes_text,
            table,
            tls,
            edge_config,
            usage_stream,
        })
    }
}

/// The edge and control on one backend, the edge's client listener bound.
struct Tiers {
    backend: Backend,
    authorizer: Option<authz::Authorizer>,
    webhook: Option<control::webhook::WebhookSender>,
    store: RouteStore,
    revocations: RevocationStore,
    routes_path: Option<PathBuf>,
    table: Arc<ArcSwap<routes::RouteTable>>,
    tls: common::EdgeTls,
    usage_stream: bus::usage::UsageStreamConfig,
    edge: Edge,
    edge_listener: TcpListener,
    control: Control,
}

impl Tiers {
    async fn build(
        args: &StandaloneArgs,
        checked: Checked,
        process: &Process,
    ) -> Result<Tiers, Fatal> {
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
        let mut edge_config = checked.edge_config;
        common::warn_default_sig_key(&edge_config, args.listen);
        // Standalone: the routes file is written to the store when it changes, and `PUT /routes`
        // may still replace the table (a single process has no replicas to disagree).
        let (store, revocations) =
            control_stores(&backend, &args.state, false, &checked.routes_text)?;
        common::track_bus(&backend.bus, &process.health);
        common::track_state(&backend, &process.health);
        let (policy, history) = history(args, &backend, process)?;
        edge_config.history = history.clone().map(edge::EdgeHistory);
        let table = Arc::new(ArcSwap::from_pointee(checked.table));
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
        let control_history = history
            .filter(|_| !policy.is_empty())
            .map(|store| control::ControlHistory { policy, store });
        let control = Control::new(
            control_config(checked.auth, &args.publish, &args.limits, control_history)?,
            backend.bus.clone(),
            store.clone(),
            revocations.clone(),
        );
        Ok(Tiers {
            backend,
            authorizer,
            webhook,
            store,
            revocations,
            routes_path: checked.routes_path,
            table,
            tls: checked.tls,
            usage_stream: checked.usage_stream,
            edge,
            edge_listener,
            control,
        })
    }

    /// The background work: per-key buckets, revocations and authz re-checks, usage records,
    /// certificate reloads and (on NATS) closing held connections when the bus is lost.
    /// Returns the tasks the drain waits for (usage records).
    async fn spawn_background(
        &mut self,
        args: &StandaloneArgs,
        process: &Process,
    ) -> Vec<JoinHandle<()>> {
        // The embedded edge finds its per-key count buckets at once (ready sooner).
        prepare_key_buckets(&self.backend, args.state.state_replicas).await;
        spawn_authz_tasks(
            &self.edge,
            self.authorizer.as_ref(),
            &self.backend,
            &process.health,
            args.authz_recheck,
            &process.stop_background,
        );
        let mut background = crate::usage::spawn_edge(
            &self.edge,
            &self.backend.bus,
            &self.usage_stream,
            self.webhook.as_ref(),
            &process.stop_background,
        );
        background.extend(crate::usage::spawn_control(
            &self.backend.bus,
            &self.usage_stream,
            self.webhook.take(),
            &process.stop_background,
        ));
        common::watch_tls(
            &self.tls,
            args.common.routes_poll_interval,
            &process.stop_background,
        );
        if self.backend.on_nats {
            spawn_bus_loss_close(
                &self.edge,
                &self.backend.bus,
                args.edge.bus_loss_close,
                &process.stop_background,
            );
        }
        background
    }

    /// The admin status page: the store's table and the most recent revocations.
    fn page(&self, process: &Process) -> runtime::admin::StatusPage {
        let recent_revocations =
            status::Revocations::follow(&self.backend, process.stop_background.clone());
        status::page(
            "standalone",
            Some(status::RoutesSource::Store(self.store.clone())),
            Some(recent_revocations),
        )
    }
}

/// The history policy and store: in memory without NATS (only when a channel has a policy),
/// else JetStream.
fn history(
    args: &StandaloneArgs,
    backend: &Backend,
    process: &Process,
) -> Result<(HistoryPolicy, Option<Arc<dyn HistoryStore>>), Fatal> {
    let policy = common::history_policy(&args.history)?;
    let store = (!policy.is_empty() || backend.nats.is_some()).then(|| {
        common::history_store(
            backend.nats.as_ref(),
            &policy,
            args.history.history_replicas,
            &process.health,
        )
    });
    Ok((policy, store))
}

/// Control's publish and gRPC listeners and the admin listener, bound (and announced) after
/// the edge's.
struct ApiListeners {
    publish: TcpListener,
    grpc: TcpListener,
    admin: TcpListener,
}

impl ApiListeners {
    async fn bind(args: &StandaloneArgs) -> Result<ApiListeners, Fatal> {
        Ok(ApiListeners {
            publish: common::listen("--publish-listen", "publish", args.publish_listen).await?,
            grpc: common::listen("--grpc-listen", "grpc", args.grpc_listen).await?,
            admin: common::listen("--admin-listen", "admin", args.admin_listen).await?,
        })
    }

    fn addrs(&self) -> Result<[(&'static str, SocketAddr); 3], Fatal> {
        Ok([
            ("publish", local_addr(&self.publish)?),
            ("grpc", local_addr(&self.grpc)?),
            ("admin", local_addr(&self.admin)?),
        ])
    }
}
