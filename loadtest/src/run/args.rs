//! The flags of `run`: what to measure (clients, transports, channels, rates), how to reach or
//! start the system under test, and where to write the results.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::Args;

use crate::clients::Transport;
use crate::publish::Api;

/// Flags of `run`.
#[derive(Debug, Clone, Args)]
pub(crate) struct RunArgs {
    /// System under test, for reports and tables (`gripmesh`, `pushpin`).
    #[arg(long, default_value = "gripmesh")]
    pub system: String,
    /// Scenario name, pairs results of different systems in `table`.
    #[arg(long, default_value = "custom")]
    pub scenario: String,
    /// Edge (client listener) address, `host:port`; repeat for several edges (clients are
    /// spread round-robin).
    #[arg(long = "edge")]
    pub edges: Vec<String>,
    /// HTTP publish API base URL.
    #[arg(long, default_value = "http://127.0.0.1:5561")]
    pub publish: String,
    /// gRPC publish API base URL (for `--api grpc`).
    #[arg(long)]
    pub grpc: Option<String>,
    /// Start `PATH standalone` on loopback ports (high limits, JSON logs to a temp file) and
    /// measure it; `--edge`/`--publish`/`--grpc` are then ignored.
    #[arg(long, value_name = "PATH")]
    pub spawn_gripmesh: Option<PathBuf>,
    /// With --spawn-gripmesh: route everything to this GRIP origin (`host:port`, e.g. a
    /// `gripmesh-loadtest origin`), WebSockets over HTTP; default: the built-in `test` target.
    #[arg(long, value_name = "ADDR")]
    pub origin: Option<String>,
    /// Client *i* presents the API key `key-<i mod K>` (`&apikey=`), e.g. to meter usage per
    /// key on an `authz` route (0: no key).
    #[arg(long, default_value_t = 0)]
    pub keys: usize,
    /// With --spawn-gripmesh: the routes carry `authz` (give the gateway with
    /// `--gripmesh-arg=--authz-gateway=http://<loadtest origin>/auth`).
    #[arg(long)]
    pub authz_route: bool,
    /// Subscription filter on every subscription (repeatable), e.g. `skip-self`; passed to the
    /// tool's origin as `&filter=NAME` (needs `--origin` with a `gripmesh-loadtest origin`).
    #[arg(long = "filter")]
    pub filters: Vec<String>,
    /// Client *i* gets sub meta `user` = `u-<i mod U>` (`&user=`, the tool's origin sets it;
    /// 0: no user).
    #[arg(long, default_value_t = 0)]
    pub users: usize,
    /// Publish meta `sender` on every item. With `--filter skip-self`, clients whose user is
    /// this value are skipped by the server: they are expected to get nothing (and anything
    /// they get is counted as `unexpected`).
    #[arg(long)]
    pub sender: Option<String>,
    /// Give every item an id (`<run>-<seq>`, unique across runs), as publishers to channels
    /// with history do.
    #[arg(long)]
    pub ids: bool,
    /// Extra flag for the spawned gripmesh (repeatable), e.g. `--gripmesh-arg=--nats=…`.
    #[arg(long, allow_hyphen_values = true)]
    pub gripmesh_arg: Vec<String>,
    /// Server process to measure (RSS, CPU), with its descendants; repeatable.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Client transports, comma-separated; each gets `--clients` clients.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ws")]
    pub transport: Vec<Transport>,
    /// Clients per transport.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Channels; client i of each transport subscribes to channel i % channels.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Channel name prefix (channels are PREFIX0, PREFIX1, …).
    #[arg(long, default_value = "lt")]
    pub channel_prefix: String,
    /// Messages per second per channel, one benchmark step per value (comma-separated); empty
    /// or 0 = connect only (idle RSS, ramp rate).
    #[arg(long, value_delimiter = ',')]
    pub rate: Vec<f64>,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// One publish call (batch) per tick.
    #[arg(long, default_value_t = 50)]
    pub tick_ms: u64,
    /// Seconds each step publishes.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Publish API; several (comma-separated) alternate between steps.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "http")]
    pub api: Vec<Api>,
    /// Most items per publish call (a tick with more makes several calls, one after the other).
    #[arg(long, default_value_t = 1000)]
    pub max_batch: u64,
    /// Connection opens per second (0 = as fast as --connect-concurrency allows).
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Seconds allowed for the whole connection phase.
    #[arg(long, default_value_t = 120.0)]
    pub connect_timeout: f64,
    /// Seconds to wait after connecting before measuring RSS and publishing (subscriptions
    /// settle).
    #[arg(long, default_value_t = 1.0)]
    pub settle: f64,
    /// Most seconds to wait after a step for late deliveries.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// A step passes with no loss and p99 below this.
    #[arg(long, default_value_t = 50.0)]
    pub p99_target_ms: f64,
    /// Stop stepping after the first failing step.
    #[arg(long)]
    pub stop_on_fail: bool,
    /// Keep stepping after a step collapsed (lost more than 1% of its deliveries, or its
    /// publishing overran twice its duration because the server accepted publishes too slowly);
    /// by default the remaining, higher steps are skipped.
    #[arg(long)]
    pub continue_after_collapse: bool,
    /// Publish every channel's messages at the same instants instead of spreading the channels'
    /// phases over the period (bursty: with 1,000 channels at 1 msg/s, one call of 1,000 items
    /// per second instead of 50 items per tick).
    #[arg(long)]
    pub no_stagger: bool,
    /// Exit non-zero on any loss, connection failure or disconnect.
    #[arg(long)]
    pub fail_on_loss: bool,
    /// Clients per source address (loopback edges only; 0 = don't bind). Each address has
    /// ~28k ephemeral ports (ip_local_port_range), and the previous run's ports linger in
    /// TIME_WAIT for 60 s. Kept small: `bind()` with an ephemeral port scans the sockets
    /// already bound to the address, which grows with the clients per address.
    #[arg(long, default_value_t = 500)]
    pub clients_per_source_ip: usize,
    /// First source address for loopback edges; the next one is used every
    /// --clients-per-source-ip clients. Default: a random 127.X.Y.1, so back-to-back runs
    /// don't collide with each other's TIME_WAIT ports.
    #[arg(long)]
    pub source_ip_base: Option<Ipv4Addr>,
    /// WebSocket path.
    #[arg(long, default_value = "/ws")]
    pub ws_path: String,
    /// HTTP stream path.
    #[arg(long, default_value = "/stream")]
    pub stream_path: String,
    /// SSE path.
    #[arg(long, default_value = "/sse")]
    pub sse_path: String,
    /// Long-poll path.
    #[arg(long, default_value = "/response")]
    pub poll_path: String,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl RunArgs {
    /// Defaults, as if given no flags.
    pub(crate) fn defaults() -> RunArgs {
        use clap::FromArgMatches;
        let cmd = RunArgs::augment_args(clap::Command::new("run").no_binary_name(true));
        let m = cmd.get_matches_from(Vec::<String>::new());
        RunArgs::from_arg_matches(&m).expect("defaults parse")
    }
}
