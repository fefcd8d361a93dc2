//! `gripmesh edge`: the client listener on NATS, its route table from a routes file or the
//! route bucket, and an authz sidecar when `--authz` names one.

use super::follow::{spawn_authz_tasks, spawn_bus_loss_close};
use super::serve::serve_edge;
use super::setup::{edge_setup, start_edge};
use crate::cli::EdgeArgs;
use crate::common::{self, Fatal};
use crate::process::Process;
use crate::status;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;

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
    let checker = sidecar(args.authz.as_deref())?;
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
    follow_routes(
        file.map(|(path, _)| path),
        &table,
        &backend,
        &process,
        &args,
    );
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

/// The authz sidecar that `--authz` names, if any.
fn sidecar(url: Option<&str>) -> Result<Option<Arc<dyn edge::authz::AuthzCheck>>, Fatal> {
    url.map(|url| {
        edge::authz::GrpcAuthz::new(url)
            .map(|c| Arc::new(c) as Arc<dyn edge::authz::AuthzCheck>)
            .map_err(|e| common::config_err(format!("--authz {e}")))
    })
    .transpose()
}

/// Keeps the table up to date: from the routes `file` when given (ready at once), else from
/// the route bucket (ready once the table is in).
fn follow_routes(
    file: Option<std::path::PathBuf>,
    table: &Arc<ArcSwap<routes::RouteTable>>,
    backend: &common::Backend,
    process: &Process,
    args: &EdgeArgs,
) {
    match file {
        Some(path) => {
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
}
