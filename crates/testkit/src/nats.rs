//! A real `nats-server` for tests: on free loopback ports, with JetStream (its store in a temp
//! dir that survives restarts) unless asked otherwise, optionally with user/password or token
//! authorisation, optionally clustered, killable and restartable on the same ports.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `nats-server` child process. Killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    /// Client port.
    pub port: u16,
    /// HTTP monitoring port.
    pub monitor_port: u16,
    /// Cluster port (0 when not clustered).
    pub cluster_port: u16,
    routes: Vec<u16>,
    name: String,
    options: NatsServerOptions,
    /// JetStream storage, kept across restarts of this server.
    store: crate::tempdir::TempDir,
}

/// How to start a test server.
#[derive(Debug, Clone)]
pub struct NatsServerOptions {
    /// Enable JetStream (`-js -sd <temp dir>`); on by default, as a cluster needs it.
    pub jetstream: bool,
    /// Require this user and password (`--user`/`--pass`).
    pub user: Option<(String, String)>,
    /// Require this token (`--auth`).
    pub token: Option<String>,
    /// Serve TLS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Default for NatsServerOptions {
    fn default() -> Self {
        NatsServerOptions {
            jetstream: true,
            user: None,
            token: None,
            tls: None,
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn binary() -> PathBuf {
    std::env::var_os("GRIPMESH_TEST_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            [
                "/usr/sbin/nats-server",
                "/usr/bin/nats-server",
                "/usr/local/bin/nats-server",
            ]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("nats-server"))
        })
}

impl NatsServer {
    /// Starts a standalone server with JetStream and waits until it accepts connections.
    pub fn start() -> NatsServer {
        NatsServer::start_with(NatsServerOptions::default())
    }

    /// Starts a standalone server with `options`.
    pub fn start_with(options: NatsServerOptions) -> NatsServer {
        let mut s = NatsServer {
            child: None,
            port: free_port(),
            monitor_port: free_port(),
            cluster_port: 0,
            routes: Vec::new(),
            name: format!("test-{}", free_port()),
            options,
            store: crate::tempdir::TempDir::new(),
        };
        // A port free when picked can be taken before nats-server binds it (another test's
        // outgoing connection may get it as its source port): then the server exits at once,
        // and a first start simply tries fresh ports.
        for _ in 0..3 {
            if s.try_spawn() {
                return s;
            }
            s.port = free_port();
            s.monitor_port = free_port();
        }
        panic!("nats-server exited before listening, three times (ports taken?)");
    }

    /// Starts a standalone server with JetStream (every test server has JetStream now; the
    /// name says what the history tests rely on).
    pub fn start_jetstream() -> NatsServer {
        NatsServer::start()
    }

    /// Starts an `n`-node cluster (full mesh of routes) and waits until every node accepts
    /// connections and sees its peers.
    pub fn start_cluster(n: usize) -> Vec<NatsServer> {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut nodes: Vec<NatsServer> = (0..n)
            .map(|i| NatsServer {
                child: None,
                port: free_port(),
                monitor_port: free_port(),
                cluster_port: cluster_ports[i],
                routes: cluster_ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| *p)
                    .collect(),
                name: format!("node-{i}-{}", cluster_ports[i]),
                options: NatsServerOptions::default(),
                store: crate::tempdir::TempDir::new(),
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for node in &nodes {
            while node.route_count() < n - 1 {
                assert!(Instant::now() < deadline, "NATS cluster did not form");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // JetStream needs a meta leader before it answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            while node.monitor("/jsz")["meta_cluster"]["leader"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                assert!(
                    Instant::now() < deadline,
                    "JetStream meta leader not elected"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        nodes
    }

    /// Starts the server on its ports and waits until it listens.
    fn spawn(&mut self) {
        let port = self.port;
        assert!(
            self.try_spawn(),
            "nats-server exited before listening on 127.0.0.1:{port}"
        );
    }

    /// Starts the server and waits until it listens (true) or exits first (false).
    fn try_spawn(&mut self) -> bool {
        let mut cmd = Command::new(binary());
        cmd.args(["-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-m"])
            .arg(self.monitor_port.to_string())
            .args(["-n", &self.name]);
        if self.options.jetstream {
            cmd.arg("-js").arg("-sd").arg(self.store.path());
        }
        if let Some((user, pass)) = &self.options.user {
            cmd.arg("--user").arg(user).arg("--pass").arg(pass);
        }
        if let Some(token) = &self.options.token {
            cmd.arg("--auth").arg(token);
        }
        if let Some((cert, key)) = &self.options.tls {
            cmd.arg("--tls")
                .arg("--tlscert")
                .arg(cert)
                .arg("--tlskey")
                .arg(key);
        }
        if self.cluster_port != 0 {
            cmd.arg("--cluster_name")
                .arg("gripmesh-test")
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{}", self.cluster_port));
            let routes: Vec<String> = self
                .routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            cmd.arg("--routes").arg(routes.join(","));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (the test script installs it)");
        let child = self.child.insert(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        // Generous: a restarted JetStream node recovers its store before it listens, and the
        // test machine may be loaded.
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if matches!(child.try_wait(), Ok(Some(_))) {
                self.child = None;
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start on {addr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }

    /// `nats://127.0.0.1:<port>` (no credentials).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The URL with the server's user/password or token in it (`tls://` when TLS is on, with
    /// `localhost` as the host so the test certificate's name matches).
    pub fn auth_url(&self) -> String {
        let userinfo = match (&self.options.user, &self.options.token) {
            (Some((u, p)), _) => format!("{u}:{p}@"),
            (None, Some(t)) => format!("{t}@"),
            (None, None) => String::new(),
        };
        match self.options.tls {
            Some(_) => format!("tls://{userinfo}localhost:{}", self.port),
            None => format!("nats://{userinfo}127.0.0.1:{}", self.port),
        }
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts the server again on the same ports and store, with JetStream on or off (a NATS
    /// whose JetStream went away, and came back).
    pub fn restart_with_jetstream(&mut self, jetstream: bool) {
        self.options.jetstream = jetstream;
        self.restart();
    }

    /// Fetches a monitoring endpoint (`/varz`, `/subsz`, `/routez`) as JSON.
    pub fn monitor(&self, path: &str) -> serde_json::Value {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.monitor_port)).expect("monitor port");
        use std::io::{Read, Write};
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("monitor request");
        let mut buf = String::new();
        let _ = stream.read_to_string(&mut buf);
        let body = buf.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
    }

    /// Client subscriptions the server holds (summed over `/connz`; the server's own internal
    /// subscriptions are not counted).
    pub fn subscription_count(&self) -> u64 {
        self.client_subjects(None).len() as u64
    }

    /// Subjects of client subscriptions, optionally only those starting with `prefix`.
    pub fn client_subjects(&self, prefix: Option<&str>) -> Vec<String> {
        let connz = self.monitor("/connz?subs=1&limit=10000");
        let mut out = Vec::new();
        for conn in connz["connections"].as_array().into_iter().flatten() {
            for sub in conn["subscriptions_list"].as_array().into_iter().flatten() {
                if let Some(subject) = sub.as_str()
                    && prefix.is_none_or(|p| subject.starts_with(p))
                {
                    out.push(subject.to_owned());
                }
            }
        }
        out
    }

    /// Number of cluster routes (`/routez` `num_routes`).
    pub fn route_count(&self) -> usize {
        self.monitor("/routez")["num_routes"]
            .as_u64()
            .map_or(0, |n| usize::try_from(n).unwrap_or(0))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
