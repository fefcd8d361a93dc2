//! What every subcommand starts with and ends with: the metrics recorder, readiness, the stop
//! tokens and the admin listener ([`Process`]), and the drain after a signal ([`Running`]).

use crate::common::{self, Fatal};
use edge::Edge;
use runtime::Health;
use runtime::admin::StatusPage;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What a running process has started, for the drain (made by [`Process::running`]).
pub(crate) struct Running {
    pub(crate) health: Health,
    pub(crate) edge: Option<(Edge, JoinHandle<()>)>,
    pub(crate) servers: Vec<JoinHandle<()>>,
    pub(crate) stop_accepting: CancellationToken,
    pub(crate) stop_background: CancellationToken,
    pub(crate) admin: Option<JoinHandle<()>>,
    pub(crate) drain_timeout: Duration,
    /// Tasks that hand over what they hold after `stop_background` (usage records).
    pub(crate) background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Prints `ready`, logs that `tier` started, then runs until a signal and drains.
    pub(crate) async fn announce_and_wait(self, tier: &str) -> Result<(), Fatal> {
        common::announce_ready();
        tracing::info!("gripmesh {tier} started");
        self.drain_after(runtime::signal::shutdown_signal()).await;
        Ok(())
    }

    /// Waits for `stop` (a signal, named by what it yields), then drains: listeners stop
    /// accepting, held connections close, background work ends.
    pub(crate) async fn drain_after(self, stop: impl Future<Output = &'static str>) {
        let signal = stop.await;
        let held = self.edge.as_ref().map_or(0, |(e, _)| e.held_count());
        tracing::info!(signal, held, "draining");
        // Readiness goes false first, so load balancers stop sending new clients.
        self.health.set_draining();
        self.stop_accepting.cancel();
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        if let Some((edge, task)) = self.edge {
            common::within(deadline, "close held connections", edge.close_held()).await;
            common::within(deadline, "edge connections", async {
                let _ = task.await;
            })
            .await;
            // `Grip-Link rel=gone` requests of the connections that just ended.
            common::within(deadline, "gone links", edge.gone_sent()).await;
        }
        common::within(deadline, "api listeners", async {
            for s in self.servers {
                let _ = s.await;
            }
        })
        .await;
        self.stop_background.cancel();
        // Bounded by the tasks themselves (usage records: 5 s), not by the drain deadline:
        // the connections' final records are made by the drain.
        let _ = tokio::time::timeout(Duration::from_secs(6), async {
            for t in self.background {
                let _ = t.await;
            }
        })
        .await;
        if let Some(admin) = self.admin {
            let _ = tokio::time::timeout(Duration::from_secs(1), admin).await;
        }
        tracing::info!("stopped");
    }
}

/// What every subcommand sets up first and hands to the drain last: the metrics recorder,
/// readiness, the two stop tokens (listeners first, background work after) and the admin
/// listener.
pub(crate) struct Process {
    pub(crate) health: Health,
    /// Cancelled first on a signal: listeners stop accepting.
    pub(crate) stop_accepting: CancellationToken,
    /// Cancelled once held connections are gone: background tasks end.
    pub(crate) stop_background: CancellationToken,
    admin: Option<JoinHandle<()>>,
}

impl Process {
    /// Installs the metrics recorder (every series registered from here on is exported) and
    /// makes the readiness state and the stop tokens.
    pub(crate) fn start() -> Process {
        runtime::telemetry::install_metrics();
        Process {
            health: Health::new(),
            stop_accepting: CancellationToken::new(),
            stop_background: CancellationToken::new(),
            admin: None,
        }
    }

    /// Serves the admin endpoints (`/metrics`, `/healthz`, `/readyz`, the status `page`) on
    /// `listener` until background work stops.
    pub(crate) fn serve_admin(&mut self, listener: TcpListener, page: StatusPage) {
        self.admin = Some(tokio::spawn(runtime::admin::serve(
            listener,
            self.health.clone(),
            runtime::telemetry::install_metrics(),
            page,
            self.stop_background.clone(),
        )));
    }

    /// What runs until the signal: the edge (with its serving task), the API servers and the
    /// background tasks that hand over what they hold; drained within `drain_timeout_secs`.
    pub(crate) fn running(
        self,
        edge: Option<(Edge, JoinHandle<()>)>,
        servers: Vec<JoinHandle<()>>,
        background: Vec<JoinHandle<()>>,
        drain_timeout_secs: u64,
    ) -> Running {
        Running {
            health: self.health,
            edge,
            servers,
            stop_accepting: self.stop_accepting,
            stop_background: self.stop_background,
            admin: self.admin,
            drain_timeout: Duration::from_secs(drain_timeout_secs),
            background,
        }
    }
}
