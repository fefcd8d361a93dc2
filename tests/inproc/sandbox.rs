//! `gripmesh standalone` inside the test's process: the flags a test gives are parsed by the
//! binary's own command line ([`gripmesh::cli::Cli`]) and the tiers are started by the binary's
//! own wiring ([`gripmesh::tiers::standalone::start`]), on `127.0.0.1:0` listeners. No process
//! is spawned, so a behaviour test starts in milliseconds.
//!
//! Standalone runs on a multi-threaded runtime of its own (on its own thread), as in the
//! binary: on the test's single-threaded runtime, a test's hundreds of clients and the edge's
//! fan-out to them would take turns on one thread (the 500-client WebSocket test took three
//! times as long).
//!
//! [`Sandbox`] has the accessors of [`testkit::Gripmesh`] that make sense without a process,
//! so a test moves between the two tiers unchanged.

use std::collections::HashMap;
use std::net::SocketAddr;

use gripmesh::cli::{Cli, Command};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// A running in-process standalone. Dropping it stops it (the drain runs as after a signal;
/// the test's process ends with the test).
#[derive(Debug)]
pub(crate) struct Sandbox {
    listeners: HashMap<String, SocketAddr>,
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

impl Sandbox {
    /// Starts standalone from [`testkit::STANDALONE_ARGS`] followed by `extra_args`:
    /// the arguments [`testkit::Gripmesh::standalone`] gives the binary.
    pub(crate) async fn standalone(extra_args: &[&str]) -> Sandbox {
        let args = [&["gripmesh"], testkit::STANDALONE_ARGS, extra_args].concat();
        let cli = <Cli as clap::Parser>::try_parse_from(&args)
            .unwrap_or_else(|e| panic!("gripmesh {args:?}: {e}"));
        let Command::Standalone(flags) = cli.command else {
            unreachable!("the subcommand given is standalone")
        };
        let stop = CancellationToken::new();
        let (started_tx, started_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("gripmesh-standalone".into())
            .spawn({
                let stop = stop.clone();
                move || serve(*flags, started_tx, stop)
            })
            .expect("starting the standalone thread");
        let listeners = started_rx
            .await
            .unwrap_or_else(|_| panic!("gripmesh {args:?}: the standalone thread ended"))
            .unwrap_or_else(|e| panic!("gripmesh {args:?} did not start: {e}"));
        Sandbox {
            listeners,
            stop,
            thread,
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
    pub(crate) fn edge_addr(&self) -> SocketAddr {
        self.listener("edge")
    }

    /// The HTTP publish API listener.
    pub(crate) fn publish_addr(&self) -> SocketAddr {
        self.listener("publish")
    }

    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub(crate) fn admin_addr(&self) -> SocketAddr {
        self.listener("admin")
    }

    /// Any listener by the name the binary announces it with (`grpc`: no test here uses it
    /// yet).
    #[allow(dead_code)]
    pub(crate) fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.get(name).copied()
    }

    /// Whether standalone is still running (it has not drained).
    pub(crate) fn is_running(&mut self) -> bool {
        !self.thread.is_finished()
    }

    /// Panics unless standalone is still running.
    pub(crate) fn assert_running(&mut self) {
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

/// Runs standalone on a runtime like the binary's (multi-threaded), so that its fan-out does
/// not share the test's single thread with the test's own clients; sends the bound listeners
/// (or why it did not start), then serves until `stop`.
fn serve(
    flags: gripmesh::cli::StandaloneArgs,
    started: oneshot::Sender<Result<HashMap<String, SocketAddr>, String>>,
    stop: CancellationToken,
) {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = started.send(Err(format!("runtime: {e}")));
            return;
        }
    };
    runtime.block_on(async move {
        match gripmesh::tiers::standalone::start(flags).await {
            Ok(standalone) => {
                let listeners = standalone
                    .listeners()
                    .iter()
                    .map(|(name, addr)| (name.to_string(), *addr))
                    .collect();
                let _ = started.send(Ok(listeners));
                standalone.run_until(stop).await;
            }
            Err(e) => {
                let _ = started.send(Err(format!("{e:?}")));
            }
        }
    });
}
