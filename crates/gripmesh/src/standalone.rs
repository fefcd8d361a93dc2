//! `gripmesh standalone`: edge + control in one process over the in-memory bus.

use crate::cli::{LogFormat, StandaloneArgs};
use arc_swap::ArcSwap;
use bus::{Bus, MemoryBus};
use control::{Control, ControlConfig, PublishAuth};
use edge::{Edge, EdgeConfig};
use grip::sig::SigKey;
use routes::RouteTable;
use runtime::Health;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Routes used when no routes file is given and `./routes` does not exist.
const DEFAULT_ROUTES: &str = "* 127.0.0.1:8080\n";

/// Why the process stops with an error.
pub enum Fatal {
    /// Bad flags or configuration (exit 64).
    Config(String),
    /// Anything else (exit 1).
    Runtime(String),
}

fn config_err(msg: impl Into<String>) -> Fatal {
    Fatal::Config(msg.into())
}

/// Runs until SIGTERM/SIGINT, then drains.
pub async fn run(args: StandaloneArgs) -> Result<(), Fatal> {
    runtime::telemetry::init_tracing(match args.log_format {
        LogFormat::Text => runtime::telemetry::LogFormat::Text,
        LogFormat::Json => runtime::telemetry::LogFormat::Json,
    });
    if args.nats.is_some() {
        return Err(config_err(
            "--nats: the NATS bus is not available in this build; standalone uses the in-memory bus",
        ));
    }

    // Validate everything before binding anything.
    let (routes_path, table) = load_routes(args.routes.as_deref())?;
    let sig_key = args
        .sig_key
        .as_deref()
        .map(|k| SigKey::parse(k).map_err(|e| config_err(format!("--sig-key: {e}"))))
        .transpose()?;
    let auth = publish_auth(&args)?;
    if !auth.is_authenticated() && !args.publish_listen.ip().is_loopback() && !args.publish_insecure
    {
        return Err(config_err(format!(
            "--publish-listen {}: a non-loopback publish API needs --publish-token or --publish-key (or --publish-insecure)",
            args.publish_listen
        )));
    }

    let metrics = runtime::telemetry::install_metrics();
    let health = Health::new();
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let routes = Arc::new(ArcSwap::from_pointee(table));
    let edge_config = EdgeConfig {
        sig_key,
        sig_iss: args.sig_iss.clone(),
        max_instruct_body: args.max_instruct_body,
        max_channels_per_connection: args.max_channels_per_connection,
        max_ws_message_size: args.max_ws_message_size,
        send_queue_messages: args.send_queue_messages,
        origin_connect_timeout: Duration::from_secs(args.origin_connect_timeout),
        origin_response_timeout: Duration::from_secs(args.origin_response_timeout),
        server: runtime::server::ServerOptions {
            max_header_bytes: args.max_header_size,
            ..Default::default()
        },
        ..EdgeConfig::default()
    };
    let edge = Edge::new(edge_config, bus.clone(), routes.clone())
        .map_err(|e| Fatal::Runtime(e.to_string()))?;
    let control = Control::new(
        ControlConfig {
            auth,
            max_body: args.publish_max_body,
        },
        bus,
    );

    let edge_listener = bind("--listen", args.listen).await?;
    let publish_listener = bind("--publish-listen", args.publish_listen).await?;
    let admin_listener = bind("--admin-listen", args.admin_listen).await?;
    announce("edge", &edge_listener);
    announce("publish", &publish_listener);
    announce("admin", &admin_listener);

    let stop_accepting = CancellationToken::new();
    let stop_admin = CancellationToken::new();
    let admin = tokio::spawn(runtime::admin::serve(
        admin_listener,
        health.clone(),
        metrics,
        stop_admin.clone(),
    ));
    let edge_task = tokio::spawn({
        let edge = edge.clone();
        let stop = stop_accepting.clone();
        async move { edge.serve(edge_listener, stop).await }
    });
    let publish_task = tokio::spawn({
        let stop = stop_accepting.clone();
        async move { control.serve_publish(publish_listener, stop).await }
    });
    if let Some(path) = routes_path {
        tokio::spawn(edge::routes_file::watch(
            path,
            routes,
            Duration::from_secs(args.routes_poll_interval.max(1)),
            stop_admin.clone(),
        ));
    }
    health.set_ready("routes");
    health.set_ready("listeners");
    println!("ready");
    let _ = std::io::stdout().flush();
    tracing::info!(edge = %args.listen, publish = %args.publish_listen, admin = %args.admin_listen, "gripmesh standalone ready");

    let signal = runtime::signal::shutdown_signal().await;
    tracing::info!(signal, held = edge.held_count(), "draining");
    health.set_draining();
    stop_accepting.cancel();
    let drain = async {
        edge.close_held().await;
        let _ = edge_task.await;
        let _ = publish_task.await;
    };
    if tokio::time::timeout(Duration::from_secs(args.drain_timeout), drain)
        .await
        .is_err()
    {
        tracing::warn!(
            held = edge.held_count(),
            "drain timeout reached; exiting anyway"
        );
    }
    stop_admin.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), admin).await;
    tracing::info!("stopped");
    Ok(())
}

fn load_routes(flag: Option<&Path>) -> Result<(Option<PathBuf>, RouteTable), Fatal> {
    let path = match flag {
        Some(p) => Some(p.to_owned()),
        None => Some(PathBuf::from("routes")).filter(|p| p.is_file()),
    };
    match path {
        Some(p) => {
            let table =
                edge::routes_file::load(&p).map_err(|e| config_err(format!("--routes {e}")))?;
            Ok((Some(p), table))
        }
        None => RouteTable::parse(DEFAULT_ROUTES)
            .map(|t| (None, t))
            .map_err(|e| Fatal::Runtime(format!("default routes: {e}"))),
    }
}

fn publish_auth(args: &StandaloneArgs) -> Result<PublishAuth, Fatal> {
    match (&args.publish_token, &args.publish_key) {
        (Some(_), Some(_)) => Err(config_err(
            "--publish-token and --publish-key: give only one",
        )),
        (Some(t), None) if t.is_empty() => Err(config_err("--publish-token: empty")),
        (Some(t), None) => Ok(PublishAuth::Token(t.clone())),
        (None, Some(k)) => SigKey::parse(k)
            .map(PublishAuth::Key)
            .map_err(|e| config_err(format!("--publish-key: {e}"))),
        (None, None) => Ok(PublishAuth::Open),
    }
}

async fn bind(flag: &str, addr: SocketAddr) -> Result<TcpListener, Fatal> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| config_err(format!("{flag} {addr}: {e}")))
}

/// Prints `listening <name> <addr>` on stdout (tests and scripts read the bound ports).
fn announce(name: &str, listener: &TcpListener) {
    if let Ok(addr) = listener.local_addr() {
        println!("listening {name} {addr}");
    }
}
