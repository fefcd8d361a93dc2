//! `gripmesh control`: the publish API (HTTP and gRPC) and the route and revocation stores,
//! on NATS.

use super::serve::serve_control_apart;
use super::setup::control_config;
use super::stores::{control_stores, run_control_stores};
use crate::cli::ControlArgs;
use crate::common::{self, Fatal};
use crate::process::Process;
use crate::status;
use control::Control;

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
