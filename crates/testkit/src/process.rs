//! Launching the `gripmesh` binary and following its startup protocol.
//!
//! Once each listener is bound the process prints `listening <name> <addr>` on stdout (names
//! `edge`, `publish`, `admin`), then `ready`. Logs go to stderr, which is drained into memory
//! by a background task (so the pipe never fills) and echoed, line by line with a
//! `[gripmesh]` prefix, to the test's own stderr (shown by the test runner on failure).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::TempDir;

/// How long the binary may take to print `ready`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Signals a test can send to the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `SIGTERM`: graceful drain.
    Term,
    /// `SIGINT`: graceful drain, like Ctrl-C.
    Int,
    /// `SIGKILL`.
    Kill,
}

impl Signal {
    fn flag(self) -> &'static str {
        match self {
            Signal::Term => "-TERM",
            Signal::Int => "-INT",
            Signal::Kill => "-KILL",
        }
    }
}

/// How tests start standalone: the subcommand, every listener on `127.0.0.1:0` (the addresses
/// are read back from what it reports) and plain-text logs; a test's own flags follow. The
/// in-process tier (`tests/inproc`) starts standalone from the same arguments.
pub const STANDALONE_ARGS: &[&str] = &[
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

/// A running `gripmesh` process. Killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Gripmesh {
    child: Child,
    pid: u32,
    listeners: HashMap<String, SocketAddr>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    exit: Option<ExitStatus>,
    // Working directory of the child, so a stray `./routes` never changes what it loads.
    _cwd: TempDir,
}

impl Gripmesh {
    /// Starts `gripmesh standalone` with all listeners on `127.0.0.1:0` (edge, publish, admin,
    /// gRPC) and `--log-format text`, followed by `extra_args`; waits for `ready`.
    pub async fn standalone(bin: &str, extra_args: &[&str]) -> Gripmesh {
        Gripmesh::standalone_with_env(bin, extra_args, &[]).await
    }

    /// Like [`Gripmesh::standalone`], with extra environment variables for the child.
    pub async fn standalone_with_env(
        bin: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Gripmesh {
        let args = [STANDALONE_ARGS, extra_args].concat();
        Gripmesh::start(bin, &args, env).await
    }

    /// Starts the binary with exactly `args` (subcommand included) and waits for `ready`.
    /// Panics with the captured stdout/stderr if it exits or does not get ready in 20 s.
    pub async fn start(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Gripmesh {
        let cwd = TempDir::new();
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(cwd.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, _) in std::env::vars() {
            // Tests must not depend on the environment they were launched from.
            if key.starts_with("GRIPMESH_") {
                cmd.env_remove(key);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {bin} {args:?}: {e}"));
        let pid = child.id().expect("child has a pid right after spawn");

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let child_stderr = child.stderr.take().expect("stderr is piped");
        tokio::spawn(drain_stderr(child_stderr, stderr.clone()));

        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (line_tx, mut line_rx) = mpsc::unbounded_channel();
        let child_stdout = child.stdout.take().expect("stdout is piped");
        tokio::spawn(drain_stdout(child_stdout, stdout.clone(), line_tx));

        let mut listeners = HashMap::new();
        let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
        loop {
            let line = match tokio::time::timeout_at(deadline, line_rx.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => {
                    // stdout closed: the process is exiting. Give stderr a moment to drain.
                    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    panic!(
                        "gripmesh {args:?} closed stdout before `ready` (exit: {status:?})\n\
                         --- stdout ---\n{}\n--- stderr ---\n{}",
                        text(&stdout),
                        text(&stderr)
                    );
                }
                Err(_) => panic!(
                    "gripmesh {args:?} did not print `ready` within {STARTUP_TIMEOUT:?}\n\
                     --- stdout ---\n{}\n--- stderr ---\n{}",
                    text(&stdout),
                    text(&stderr)
                ),
            };
            let line = line.trim();
            if line == "ready" {
                break;
            }
            let mut words = line.split_whitespace();
            if let (Some("listening"), Some(name), Some(addr)) =
                (words.next(), words.next(), words.next())
            {
                let addr: SocketAddr = addr
                    .parse()
                    .unwrap_or_else(|e| panic!("bad address in startup line {line:?}: {e}"));
                listeners.insert(name.to_string(), addr);
            }
        }

        Gripmesh {
            child,
            pid,
            listeners,
            stdout,
            stderr,
            exit: None,
            _cwd: cwd,
        }
    }

    fn listener(&self, name: &str) -> SocketAddr {
        *self.listeners.get(name).unwrap_or_else(|| {
            panic!(
                "gripmesh printed no `listening {name} ...` line before `ready` (got {:?})",
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

    /// Any listener announced on stdout, by name.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.get(name).copied()
    }

    /// Everything written to stderr so far (lossy UTF-8).
    pub fn stderr_text(&self) -> String {
        text(&self.stderr)
    }

    /// Everything written to stdout so far (lossy UTF-8).
    pub fn stdout_text(&self) -> String {
        text(&self.stdout)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends a signal to the process (via `kill(1)`).
    pub fn signal(&self, signal: Signal) {
        let status = std::process::Command::new("kill")
            .arg(signal.flag())
            .arg(self.pid.to_string())
            .status()
            .expect("running kill(1)");
        assert!(
            status.success(),
            "kill {} {} failed",
            signal.flag(),
            self.pid
        );
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub async fn kill(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.start_kill();
            if let Ok(status) = self.child.wait().await {
                self.exit = Some(status);
            }
        }
    }

    /// Waits for the process to exit; panics (with stderr) if it is still running after
    /// `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.exit = Some(status);
                status
            }
            Ok(Err(e)) => panic!("waiting for gripmesh: {e}"),
            Err(_) => panic!(
                "gripmesh (pid {}) still running {timeout:?} after being asked to exit\n\
                 --- stderr ---\n{}",
                self.pid,
                self.stderr_text()
            ),
        }
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.exit = Some(status);
                false
            }
            Err(_) => false,
        }
    }

    /// Panics (with stderr) unless the process is still running.
    pub fn assert_running(&mut self) {
        if !self.is_running() {
            panic!(
                "gripmesh exited unexpectedly ({:?})\n--- stderr ---\n{}",
                self.exit,
                self.stderr_text()
            );
        }
    }
}

fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    let guard = buf.lock().unwrap_or_else(|p| p.into_inner());
    String::from_utf8_lossy(&guard).into_owned()
}

async fn drain_stderr(mut pipe: tokio::process::ChildStderr, sink: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = vec![0u8; 16 * 1024];
    let mut pending = Vec::new();
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        sink.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(&chunk[..n]);
        pending.extend_from_slice(&chunk[..n]);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            eprint!("[gripmesh] {}", String::from_utf8_lossy(&line));
        }
    }
    if !pending.is_empty() {
        eprintln!("[gripmesh] {}", String::from_utf8_lossy(&pending));
    }
}

async fn drain_stdout(
    pipe: tokio::process::ChildStdout,
    sink: Arc<Mutex<Vec<u8>>>,
    lines: mpsc::UnboundedSender<String>,
) {
    let mut reader = BufReader::new(pipe);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(line.as_bytes());
                // The receiver is gone once startup is over; keep draining regardless.
                let _ = lines.send(line.clone());
            }
        }
    }
}

/// Runs the binary to completion (20 s limit) and returns its exit status, stdout and stderr.
/// For exit-code tests: bad flags, bad config.
pub async fn run(bin: &str, args: &[&str]) -> (ExitStatus, String, String) {
    run_with_env(bin, args, &[]).await
}

/// Like [`run`], with extra environment variables.
pub async fn run_with_env(
    bin: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (ExitStatus, String, String) {
    let cwd = TempDir::new();
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("GRIPMESH_") {
            cmd.env_remove(key);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {bin} {args:?}: {e}"));
    match tokio::time::timeout(Duration::from_secs(20), child.wait_with_output()).await {
        Ok(Ok(out)) => (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Ok(Err(e)) => panic!("running {bin} {args:?}: {e}"),
        Err(_) => panic!("{bin} {args:?} did not exit within 20 s"),
    }
}
