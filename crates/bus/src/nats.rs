//! The NATS implementation of [`Bus`] (async-nats).
//!
//! async-nats owns the connection in its own task, reconnects on its own (trying every server
//! of a cluster) and re-registers every live subscription after a reconnect; this wrapper
//! turns its connection events into [`BusState`] and the bus metrics.

use crate::{Bus, BusError, BusState, Subscription};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// How long a subscription may take to be confirmed by the server.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Confirms that the server has processed our earlier commands: a token published to a private
/// inbox on the same connection comes back only after everything sent before it (including a
/// SUB) was processed, since a server handles one connection's commands in order.
struct Barrier {
    subject: String,
    next: AtomicU64,
    seen: watch::Sender<u64>,
}

/// How to reach NATS.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server URLs, comma-separated (`nats://a:4222,nats://b:4222`).
    pub urls: String,
    /// Client name shown by the server's monitoring (e.g. `gripmesh-edge`).
    pub name: String,
    /// Messages buffered per subscription before NATS counts the client as slow.
    pub subscription_capacity: usize,
    /// Credentials and TLS.
    pub auth: NatsAuth,
}

/// How to prove who we are to NATS, and how to check the server (docs/protocol.md, "Cluster state"). User/password or
/// a token may also come in the URL (`nats://user:pass@host`, `nats://token@host`).
#[derive(Debug, Clone, Default)]
pub struct NatsAuth {
    /// A `.creds` file (user JWT + NKey seed), as `nsc` makes them.
    pub creds_file: Option<std::path::PathBuf>,
    /// A file holding an NKey seed (`SU...`).
    pub nkey_file: Option<std::path::PathBuf>,
    /// CA certificate(s) (PEM) the server's certificate must chain to; implies TLS.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with `tls_key`.
    pub tls_cert: Option<std::path::PathBuf>,
    /// Client private key (PEM) for `tls_cert`.
    pub tls_key: Option<std::path::PathBuf>,
}

/// A URL with any password or token replaced, for messages.
fn redact(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((userinfo, host)) => {
            let scheme = userinfo.split_once("://").map_or("", |(s, _)| s);
            if scheme.is_empty() {
                format!("***@{host}")
            } else {
                format!("{scheme}://***@{host}")
            }
        }
        None => url.to_owned(),
    }
}

/// Applies credentials and TLS settings to the connect options.
async fn apply_auth(
    mut opts: async_nats::ConnectOptions,
    auth: &NatsAuth,
    servers: &[async_nats::ServerAddr],
) -> Result<async_nats::ConnectOptions, BusError> {
    let bad = |flag: &str, e: &dyn std::fmt::Display| BusError::Unavailable(format!("{flag}: {e}"));
    if let Some(path) = &auth.creds_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| bad("--nats-creds", &format!("{}: {e}", path.display())))?;
    }
    if let Some(path) = &auth.nkey_file {
        let seed = std::fs::read_to_string(path)
            .map_err(|e| bad("--nats-nkey", &format!("{}: {e}", path.display())))?;
        let seed = seed
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("SU"))
            .ok_or_else(|| {
                bad(
                    "--nats-nkey",
                    &format!("{}: no user seed (SU...) in the file", path.display()),
                )
            })?;
        opts = opts.nkey(seed.to_owned());
    }
    // async-nats does not read credentials from the URL itself: the first URL carrying some
    // gives them (a user alone is a token, as with the Go client).
    if let Some(with_user) = servers.iter().find(|s| s.has_user_pass()) {
        let user = with_user.username().unwrap_or_default().to_owned();
        opts = match with_user.password() {
            Some(pass) => opts.user_and_password(user, pass.to_owned()),
            None => opts.token(user),
        };
    }
    if let Some(ca) = &auth.tls_ca {
        if !ca.is_file() {
            return Err(bad(
                "--nats-tls-ca",
                &format!("{}: no such file", ca.display()),
            ));
        }
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    match (&auth.tls_cert, &auth.tls_key) {
        (Some(cert), Some(key)) => {
            for f in [cert, key] {
                if !f.is_file() {
                    return Err(bad(
                        "--nats-tls-cert/--nats-tls-key",
                        &format!("{}: no such file", f.display()),
                    ));
                }
            }
            opts = opts
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        (None, None) => {}
        _ => {
            return Err(BusError::Unavailable(
                "--nats-tls-cert and --nats-tls-key go together".into(),
            ));
        }
    }
    Ok(opts)
}

/// A [`Bus`] on NATS core pub/sub. Cheap to clone.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
    state: watch::Receiver<BusState>,
    barrier: Arc<Barrier>,
}

impl NatsBus {
    /// Starts connecting and returns at once; [`Bus::state`] tells when the bus is usable.
    /// Fails only on unusable options (bad URLs).
    pub async fn connect(options: NatsOptions) -> Result<NatsBus, BusError> {
        let servers: Vec<async_nats::ServerAddr> = options
            .urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.parse().map_err(|e| {
                    BusError::Unavailable(format!("invalid NATS URL {}: {e}", redact(u)))
                })
            })
            .collect::<Result<_, _>>()?;
        if servers.is_empty() {
            return Err(BusError::Unavailable("no NATS URL given".into()));
        }
        let (tx, rx) = watch::channel(BusState::Disconnected);
        let tx = Arc::new(tx);
        let connected_once = Arc::new(AtomicBool::new(false));
        let metrics = crate::metrics::BusMetrics::new();
        metrics.connected.set(0.0);
        let cb_tx = tx.clone();
        let cb_once = connected_once.clone();
        let cb_metrics = metrics.clone();
        let opts = apply_auth(async_nats::ConnectOptions::new(), &options.auth, &servers).await?;
        let client = opts
            .name(options.name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .subscription_capacity(options.subscription_capacity)
            .event_callback(move |event| {
                let tx = cb_tx.clone();
                let once = cb_once.clone();
                let metrics = cb_metrics.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            if once.swap(true, Ordering::SeqCst) {
                                metrics.reconnects.increment(1);
                                tracing::info!("bus reconnected");
                            } else {
                                tracing::info!("bus connected");
                            }
                            metrics.connected.set(1.0);
                            tx.send_replace(BusState::Connected);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("bus disconnected");
                            metrics.connected.set(0.0);
                            tx.send_replace(BusState::Disconnected);
                        }
                        other => tracing::debug!(event = %other, "bus event"),
                    }
                }
            })
            .connect(servers)
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        if client.connection_state() == async_nats::connection::State::Connected
            && !connected_once.swap(true, Ordering::SeqCst)
        {
            metrics.connected.set(1.0);
            tx.send_replace(BusState::Connected);
        }
        let barrier = Arc::new(Barrier {
            subject: client.new_inbox(),
            next: AtomicU64::new(0),
            seen: watch::Sender::new(0),
        });
        let mut probe = client
            .subscribe(barrier.subject.clone())
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        let seen = barrier.clone();
        tokio::spawn(async move {
            while let Some(msg) = probe.next().await {
                let token = std::str::from_utf8(&msg.payload)
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
                    .unwrap_or(0);
                seen.seen.send_if_modified(|v| {
                    let newer = token > *v;
                    if newer {
                        *v = token;
                    }
                    newer
                });
            }
        });
        Ok(NatsBus {
            client,
            state: rx,
            barrier,
        })
    }

    /// Waits until the server has processed every command sent so far.
    async fn confirm(&self) -> Result<(), BusError> {
        let token = self.barrier.next.fetch_add(1, Ordering::SeqCst) + 1;
        let mut seen = self.barrier.seen.subscribe();
        self.client
            .publish(self.barrier.subject.clone(), Bytes::from(token.to_string()))
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        match tokio::time::timeout(CONFIRM_TIMEOUT, seen.wait_for(|v| *v >= token)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(BusError::Unavailable(
                "NATS did not confirm the subscription in time".into(),
            )),
        }
    }

    /// The underlying NATS client (for JetStream: history, cluster state).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Waits until the client has sent everything it buffered.
    pub async fn flush(&self) -> Result<(), BusError> {
        self.client
            .flush()
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }
}

impl Bus for NatsBus {
    fn publish(&self, subject: String, payload: Bytes) -> BoxFuture<'_, Result<(), BusError>> {
        async move {
            crate::check_subject(&subject)?;
            // Fail fast while disconnected rather than queue behind a dead connection.
            if *self.state.borrow() != BusState::Connected {
                return Err(BusError::Unavailable("not connected to NATS".into()));
            }
            self.client
                .publish(subject, payload)
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))
        }
        .boxed()
    }

    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<Subscription, BusError>> {
        async move {
            crate::check_subject(&subject)?;
            let sub = self
                .client
                .subscribe(subject)
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            // Only once the server has the SUB may a publish from another client reach it.
            self.confirm().await?;
            // Dropping the async-nats subscriber unsubscribes, so the stream is its own guard.
            let stream = sub.map(|m| m.payload).boxed();
            Ok(Subscription::new(stream, Box::new(())))
        }
        .boxed()
    }

    fn state(&self) -> watch::Receiver<BusState> {
        self.state.clone()
    }

    fn jetstream(&self) -> Option<async_nats::jetstream::Context> {
        Some(async_nats::jetstream::new(self.client.clone()))
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), BusError>> {
        NatsBus::flush(self).boxed()
    }
}
