//! Starting `gripmesh standalone` for a run and following its startup protocol.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A temporary directory, removed when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under the system temp dir.
    pub(crate) fn new(prefix: &str) -> Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `gripmesh standalone` started by the tool; killed when dropped.
#[derive(Debug)]
pub(crate) struct Spawned {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// `listening <name> <addr>` lines: `edge`, `publish`, `grpc`, `admin`.
    pub listeners: HashMap<String, SocketAddr>,
    dir: TempDir,
}

impl Spawned {
    /// The address of listener `name`.
    pub(crate) fn addr(&self, name: &str) -> Result<SocketAddr> {
        self.listeners
            .get(name)
            .copied()
            .ok_or_else(|| anyhow!("gripmesh did not announce a `{name}` listener"))
    }

    /// The file its logs (stderr) go to.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join("gripmesh.log")
    }

    /// Stops it (SIGKILL; the benchmark is over, no drain needed).
    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Routes for a gripmesh that should use the tool's own origin at `origin` (the same routes
/// Pushpin gets in `compare-pushpin.sh`).
pub(crate) fn origin_routes(origin: &str) -> String {
    format!("*,proto=ws {origin},over_http\n* {origin}\n")
}

/// Starts `bin standalone` on loopback port 0 with `routes` (file text) and limits high enough
/// for a benchmark, plus `extra` flags; waits for `ready` (at most 30 s).
pub(crate) async fn spawn_gripmesh(bin: &Path, routes: &str, extra: &[String]) -> Result<Spawned> {
    let dir = TempDir::new("gripmesh-loadtest")?;
    let routes_file = dir.path().join("routes");
    std::fs::write(&routes_file, routes)?;
    let log = std::fs::File::create(dir.path().join("gripmesh.log"))?;
    // The child runs in the temp dir: resolve a relative path first.
    let bin = if bin.components().count() > 1 {
        std::fs::canonicalize(bin).with_context(|| format!("{}", bin.display()))?
    } else {
        bin.to_path_buf()
    };
    let mut cmd = Command::new(&bin);
    cmd.arg("standalone")
        .arg("--routes")
        .arg(&routes_file)
        .args(["--listen", "127.0.0.1:0"])
        .args(["--publish-listen", "127.0.0.1:0"])
        .args(["--grpc-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .args(["--max-connections", "1000000"])
        .args(["--send-queue-messages", "100000"])
        .args(["--send-queue-bytes", "100000000"])
        .args(extra)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("gripmesh exited at once"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut listeners = HashMap::new();
    let wait = async {
        while let Some(line) = lines.next_line().await? {
            if line.trim() == "ready" {
                return Ok(true);
            }
            let mut w = line.split_whitespace();
            if let (Some("listening"), Some(name), Some(addr)) = (w.next(), w.next(), w.next()) {
                listeners.insert(name.to_owned(), addr.parse()?);
            }
        }
        Ok::<bool, anyhow::Error>(false)
    };
    match tokio::time::timeout(Duration::from_secs(30), wait).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) | Ok(Err(_)) | Err(_) => {
            let log = std::fs::read_to_string(dir.path().join("gripmesh.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            let _ = child.start_kill();
            bail!(
                "gripmesh did not print `ready`; last log lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Spawned {
        child,
        pid,
        listeners,
        dir,
    })
}
