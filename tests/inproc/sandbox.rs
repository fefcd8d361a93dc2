//! `gripmesh standalone` inside the test's own Tokio runtime: the flags a test gives are parsed
//! by the binary's own command line ([`gripmesh::cli::Cli`]) and the tiers are started by the
//! binary's own wiring ([`gripmesh::tiers::standalone::start`]), on `127.0.0.1:0` listeners.
//! Nothing is spawned, so a behaviour test starts in milliseconds.
//!
//! [`Sandbox`] has the accessors of [`testkit::Gripmesh`] that make sense without a process,
//! so a test moves between the two tiers unchanged.

use std::collections::HashMap;
use std::net::SocketAddr;

use gripmesh::cli::{Cli, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running in-process standalone. Dropping it stops it (the drain runs as after a signal,
/// for as long as the test's runtime lives).
#[derive(Debug)]
pub struct Sandbox {
    listeners: HashMap<String, SocketAddr>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Sandbox {
    /// Starts standalone with all listeners on `127.0.0.1:0` (edge, publish, admin, gRPC) and
    /// `--log-format text`, followed by `extra_args`: the arguments
    /// [`testkit::Gripmesh::standalone`] gives the binary.
    pub async fn standalone(extra_args: &[&str]) -> Sandbox {
        let mut args = vec![
            "gripmesh",
            "standalone",
            "--listen",
            "127.0.0.1:0",
            "--publish-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ];
        args.extend_from_slice(extra_args);
        let cli = <Cli as clap::Parser>::try_parse_from(&args)
            .unwrap_or_else(|e| panic!("gripmesh {args:?}: {e}"));
        let Command::Standalone(flags) = cli.command else {
            unreachable!("the subcommand given is standalone")
        };
        let started = gripmesh::tiers::standalone::start(*flags)
            .await
            .unwrap_or_else(|e| panic!("gripmesh {args:?} did not start: {e:?}"));
        let listeners = started
            .listeners()
            .iter()
            .map(|(name, addr)| (name.to_string(), *addr))
            .collect();
        let stop = CancellationToken::new();
        let task = tokio::spawn(started.run_until(stop.clone()));
        Sandbox {
            listeners,
            stop,
            task,
        }
    }

    fn listener(&self, name: &str) -> SocketAddr {
        *self.listeners.get(name).unwrap_or_else(|| {
            panic!(
                "standalone bound no `{name}` listener (got {:?})",
                self.listeners
            )
        })
    }

    /// The client (edge) listener.
    pub fn edge_addr(&self) -> SocketAddr {
        self.listener("edge")
    }

    /// The HTTP publish API listener.
    pub fn publish_addr(&self) -> SocketAddr {
        self.listener("publish")
    }

    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.listener("admin")
    }

    /// Any listener by the name the binary announces it with (`grpc`: no test here uses it
    /// yet).
    #[allow(dead_code)]
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.get(name).copied()
    }

    /// Whether standalone is still running (it has not drained).
    pub fn is_running(&mut self) -> bool {
        !self.task.is_finished()
    }

    /// Panics unless standalone is still running.
    pub fn assert_running(&mut self) {
        assert!(
            self.is_running(),
            "in-process standalone stopped unexpectedly"
        );
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
