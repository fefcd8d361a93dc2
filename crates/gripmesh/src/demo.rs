//! `gripmesh demo`: the article's scenario on one machine. A mock API gateway that requires an
//! API key and a trades origin run on loopback ports; in front of them the standalone stack
//! (edge + control + the embedded auth sidecar asking the mock gateway) with an in-memory route
//! table; a publisher posts a fake trade every second. After `ready`, the commands to try are
//! printed on stdout.

use crate::cli::DemoArgs;
use crate::common::{self, Fatal};
use crate::tiers;
use arc_swap::ArcSwap;
use control::{Control, ControlConfig, RevocationStore, RouteStore, RoutesSource};
use edge::{Edge, EdgeConfig};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a trade is published.
const TRADE_INTERVAL: Duration = Duration::from_secs(1);
/// Usage records of live connections, and the per-app summary line, this often.
const USAGE_INTERVAL: Duration = Duration::from_secs(10);

/// History of the demo's channels: the trades feed keeps 1,000 items for an hour.
const HISTORY_POLICY: &str = "trades*=1000/1h";

/// `gripmesh demo`.
pub(crate) async fn demo(args: DemoArgs) -> Result<(), Fatal> {
    common::init_logging(&args.common);
    check_loopback(&args)?;
    let mut process = crate::process::Process::start();
    let (gateway_addr, origin_addr) = start_backends(&process).await?;
    let stack = Stack::build(&args, gateway_addr, origin_addr, &process).await?;
    let Stack {
        backend,
        authorizer,
        store,
        revocations,
        table,
        routes_text,
        edge,
        edge_listener,
        control,
    } = stack;

    let publish_listener =
        common::listen("--publish-listen", "publish", args.publish_listen).await?;
    let grpc_listener = common::listen("--grpc-listen", "grpc", args.grpc_listen).await?;
    let admin_listener = common::listen("--admin-listen", "admin", args.admin_listen).await?;
    let edge_addr = local_addr(&edge_listener)?;
    let publish_addr = local_addr(&publish_listener)?;
    let admin_addr = local_addr(&admin_listener)?;
    println!("listening gateway {gateway_addr}");
    println!("listening origin {origin_addr}");

    tiers::prepare_key_buckets(&backend, 1).await;
    tiers::spawn_authz_tasks(
        &edge,
        Some(&authorizer),
        &backend,
        &process.health,
        300,
        &process.stop_background,
    );
    tiers::run_control_stores(
        &store,
        &revocations,
        (backend.state.clone(), 1),
        None,
        1,
        &process.stop_background,
    );
    let usage_file =
        std::env::temp_dir().join(format!("gripmesh-demo-usage-{}.jsonl", std::process::id()));
    let background = vec![tokio::spawn(usage_to_file(
        edge.clone(),
        usage_file.clone(),
        process.stop_background.clone(),
    ))];
    let page = crate::status::page(
        "demo",
        Some(crate::status::RoutesSource::Store(store.clone())),
        Some(crate::status::Revocations::follow(
            &backend,
            process.stop_background.clone(),
        )),
    );
    process.serve_admin(admin_listener, page);
    let edge_task = tiers::serve_edge(&edge, edge_listener, &process.stop_accepting);
    let servers = tiers::serve_control(
        &control,
        publish_listener,
        grpc_listener,
        &process.stop_accepting,
    );
    tokio::spawn(tiers::follow_store(
        store,
        table,
        process.stop_background.clone(),
    ));
    tokio::spawn(::demo::trades::publish_loop(
        publish_addr,
        TRADE_INTERVAL,
        process.stop_accepting.clone(),
    ));
    process.health.set_ready("routes");
    common::announce_ready();
    print_instructions(
        edge_addr,
        publish_addr,
        admin_addr,
        &routes_text,
        &usage_file,
    );
    tracing::info!("gripmesh demo started");

    process
        .running(
            Some((edge, edge_task)),
            servers,
            background,
            args.common.drain_timeout,
        )
        .drain_after(runtime::signal::shutdown_signal())
        .await;
    Ok(())
}

/// The demo's control listeners are unauthenticated: loopback only (the same rule as
/// standalone without --publish-token).
fn check_loopback(args: &DemoArgs) -> Result<(), Fatal> {
    for (flag, addr) in [
        ("--publish-listen", args.publish_listen),
        ("--grpc-listen", args.grpc_listen),
    ] {
        if !addr.ip().is_loopback() {
            return Err(common::config_err(format!(
                "{flag} {addr}: the demo's control API is unauthenticated; give a loopback address"
            )));
        }
    }
    Ok(())
}

/// The article's backend and its API gateway, on loopback ports of their own; returns the
/// gateway's and the origin's addresses.
async fn start_backends(
    process: &crate::process::Process,
) -> Result<(SocketAddr, SocketAddr), Fatal> {
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let gateway_listener = common::bind("gateway", loopback).await?;
    let origin_listener = common::bind("origin", loopback).await?;
    let gateway_addr = local_addr(&gateway_listener)?;
    let origin_addr = local_addr(&origin_listener)?;
    tokio::spawn(
        ::demo::gateway::MockGateway::new()
            .serve(gateway_listener, process.stop_background.clone()),
    );
    tokio::spawn(::demo::origin::serve(
        origin_listener,
        process.stop_background.clone(),
    ));
    Ok((gateway_addr, origin_addr))
}

/// The standalone stack, built like `gripmesh standalone --authz-gateway`: the edge (its
/// client listener bound) and control on an in-memory bus, with the demo's routes.
struct Stack {
    backend: common::Backend,
    authorizer: authz::Authorizer,
    store: RouteStore,
    revocations: RevocationStore,
    table: Arc<ArcSwap<routes::RouteTable>>,
    routes_text: String,
    edge: Edge,
    edge_listener: tokio::net::TcpListener,
    control: Control,
}

impl Stack {
    async fn build(
        args: &DemoArgs,
        gateway_addr: SocketAddr,
        origin_addr: SocketAddr,
        process: &crate::process::Process,
    ) -> Result<Stack, Fatal> {
        let routes_text = ::demo::routes(&origin_addr.to_string());
        let table = routes::RouteTable::parse(&routes_text)
            .map_err(|e| Fatal::Runtime(format!("demo routes: {e}")))?;
        let authorizer =
            authz::Authorizer::new(authz::AuthzConfig::new(format!("http://{gateway_addr}")))
                .map_err(|e| Fatal::Runtime(e.to_string()))?;
        let backend =
            common::connect_bus(None, "gripmesh-demo", &crate::cli::NatsFlags::none()).await?;
        let bus = backend.bus.clone();
        common::track_bus(&bus, &process.health);
        let store = RouteStore::new(
            backend.state.clone(),
            backend.codec.clone(),
            1,
            RoutesSource::Api {
                seed: routes_text.clone(),
            },
        );
        let revocations = RevocationStore::new(
            backend.state.clone(),
            backend.codec.clone(),
            std::time::Duration::from_secs(600),
            1,
        );
        let table = Arc::new(ArcSwap::from_pointee(table));
        let checker: Arc<dyn edge::authz::AuthzCheck> =
            Arc::new(common::Embedded(authorizer.clone()));
        // The trades channels keep an hour of history, so a reconnecting EventSource (or
        // WebSocket resubscribing with prev-id) misses nothing.
        let history = Arc::new(bus::history::MemoryHistory::new());
        let policy = bus::history::HistoryPolicy::parse(&[HISTORY_POLICY])
            .map_err(|e| Fatal::Runtime(e.to_string()))?;
        let edge_listener = common::listen("--listen", "edge", args.listen).await?;
        let edge_config = EdgeConfig {
            usage: edge::usage::UsageConfig {
                interval: USAGE_INTERVAL,
                node_id: crate::usage::node_id(None, &edge_listener),
                top_apps: 100,
            },
            history: Some(edge::EdgeHistory(history.clone())),
            ..EdgeConfig::default()
        };
        let edge = Edge::new(edge_config, bus.clone(), table.clone(), Some(checker))
            .map_err(|e| Fatal::Runtime(e.to_string()))?;
        let control = Control::new(
            ControlConfig {
                history: Some(control::ControlHistory {
                    policy,
                    store: history,
                }),
                ..ControlConfig::default()
            },
            bus.clone(),
            store.clone(),
            revocations.clone(),
        );
        Ok(Stack {
            backend,
            authorizer,
            store,
            revocations,
            table,
            routes_text,
            edge,
            edge_listener,
            control,
        })
    }
}

fn local_addr(listener: &tokio::net::TcpListener) -> Result<SocketAddr, Fatal> {
    listener
        .local_addr()
        .map_err(|e| Fatal::Runtime(format!("listener address: {e}")))
}

/// `host:port` as a client would type it (`localhost` for a wildcard address).
fn client_host(addr: SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() || ip.is_loopback() => format!("localhost:{}", addr.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
    }
}

/// The demo's usage pipeline: records appended to `path` as JSON lines, and a line per
/// interval on stdout with each app's connections and what it received since the last line —
/// the article's "Apigee analytics", for the realtime traffic itself.
async fn usage_to_file(edge: Edge, path: std::path::PathBuf, stop: CancellationToken) {
    use tokio::io::AsyncWriteExt;
    tokio::spawn(edge.usage().clone().run(stop.clone()));
    let Some(mut rx) = edge.usage().records(4096) else {
        return;
    };
    let mut file = match tokio::fs::File::create(&path).await {
        Ok(f) => Some(f),
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "usage records not written");
            None
        }
    };
    let mut tick = tokio::time::interval(USAGE_INTERVAL);
    tick.tick().await;
    let mut before: std::collections::HashMap<String, (u64, u64)> = Default::default();
    loop {
        tokio::select! {
            r = rx.recv() => {
                let Some(r) = r else { return };
                if let Some(f) = file.as_mut() {
                    let mut line = r.json.to_vec();
                    line.push(b'\n');
                    let _ = f.write_all(&line).await;
                }
            }
            _ = tick.tick() => {
                let mut line = String::from("usage:");
                for app in edge.usage().app_summary() {
                    let (m0, b0) = before.insert(app.app.clone(), (app.messages, app.bytes)).unwrap_or((0, 0));
                    if app.connections == 0 && app.messages == m0 {
                        continue;
                    }
                    line.push_str(&format!(
                        " app={} connections={} messages=+{} bytes=+{}",
                        app.app,
                        app.connections,
                        app.messages.saturating_sub(m0),
                        app.bytes.saturating_sub(b0),
                    ));
                }
                if line.len() > "usage:".len() {
                    println!("{line}");
                }
            }
            _ = stop.cancelled() => {
                while let Ok(r) = rx.try_recv() {
                    if let Some(f) = file.as_mut() {
                        let mut line = r.json.to_vec();
                        line.push(b'\n');
                        let _ = f.write_all(&line).await;
                    }
                }
                if let Some(f) = file.as_mut() {
                    let _ = f.flush().await;
                }
                return;
            }
        }
    }
}

fn print_instructions(
    edge: SocketAddr,
    publish: SocketAddr,
    admin: SocketAddr,
    routes: &str,
    usage_file: &std::path::Path,
) {
    let (e, p, a) = (client_host(edge), client_host(publish), client_host(admin));
    let (key, path) = (::demo::API_KEY, ::demo::FEED_PATH);
    let (max_conns, quota) = (::demo::MAX_CONNECTIONS, ::demo::MESSAGE_QUOTA);
    let routes: String = routes.lines().map(|l| format!("    {l}\n")).collect();
    let ws = format!("ws://{e}{path}");
    let text = format!(
        r#"
gripmesh demo: an authenticated real-time trades feed. A mock API gateway (standing in for
Apigee) accepts the API key `{key}` (query parameter `apikey` or header `X-Api-Key`); the
auth sidecar asks it before any client reaches the trades origin, and a trade is published
to channel `trades` every second. Routes:
{routes}
Try it:

  # WebSocket with the key: connected, a trade every second
  websocat '{ws}?apikey={key}'
  # (or, as in the article: wscat -c '{ws}?apikey={key}')

  # WebSocket without a key: the gateway's 401 (websocat: "401 Unauthorized")
  websocat {ws}

  # HTTP streaming with the key (one JSON trade per line), as a query parameter or a header
  curl -N 'http://{e}{path}?apikey={key}'
  curl -N -H 'X-Api-Key: {key}' http://{e}{path}
  # Server-Sent Events
  curl -N -H 'Accept: text/event-stream' 'http://{e}{path}?apikey={key}'

  # A wrong key: 401 with Apigee's JSON fault
  curl -i 'http://{e}{path}?apikey=wrong-key'

  # The gateway grants `{key}` {max_conns} concurrent connections and {quota} messages
  # (Gripmesh-Max-Connections / Gripmesh-Message-Quota): connection {max_conns}+1 gets
  # 429 "Too many connections for this key."
  curl -s http://{a}/metrics | grep gripmesh_edge_key_limited_total

  # Revoke the key: live connections opened with it are closed now (WebSocket close 4401,
  # streams ended); the next connection asks the gateway again (which still accepts it)
  curl -d '{{"credential":"{key}"}}' http://{p}/authz/revoke

  # Authorization metrics (checks, cache hits, gateway latency, revocations)
  curl -s http://{a}/metrics | grep gripmesh_authz

Usage — what each key's connections received, for analytics and billing. A record per
connection every {interval} s and when it closes (JSON lines), appended to
  {usage}
  tail -f {usage}
and a "usage:" line per app every {interval} s here; per-app metrics:
  curl -s http://{a}/metrics | grep gripmesh_app_
(In a cluster the records go to the JetStream stream `{stream}` on subject `{subject}`, and
`--usage-webhook URL` POSTs them as JSON lines.)
"#,
        interval = USAGE_INTERVAL.as_secs(),
        usage = usage_file.display(),
        stream = bus::usage::USAGE_STREAM,
        subject = bus::usage::USAGE_SUBJECT,
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
