//! The README's and docs' examples, executed: every fenced block whose info string
//! is `sh test` runs in bash against a fresh `gripmesh standalone --routes
//! examples/test.routes`, with the documented ports rewritten to that instance's (the
//! `GRIPMESH_*_URL` variables of the client subcommands point there too) and `gripmesh` on
//! `PATH`. Lines `#> TEXT` in a block are what it must print (each a substring of its output;
//! background jobs make the order unreliable). Background jobs (`&`) are stopped when the block's commands are done.

use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::Gripmesh;

use crate::common::{BIN, test_python, workspace_root};

/// One tested block: where it is and its text.
pub(crate) struct Block {
    pub file: String,
    pub line: usize,
    pub text: String,
}

/// The blocks of `file` whose fence info string is `info` (e.g. `sh test`).
pub(crate) fn blocks(file: &Path, info: &str) -> Vec<Block> {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None => {
                if line.trim_start().strip_prefix("```").map(str::trim) == Some(info) {
                    current = Some((i + 1, String::new()));
                }
            }
            Some((start, body)) => {
                if line.trim_start().starts_with("```") {
                    out.push(Block {
                        file: file.display().to_string(),
                        line: *start,
                        text: std::mem::take(body),
                    });
                    current = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    out
}

/// A gripmesh for one block and the environment the block runs in.
pub(crate) struct DocEnv {
    pub gm: Gripmesh,
    pub rewrites: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
}

impl DocEnv {
    /// `gripmesh standalone` with `routes` (a file under the workspace) and `extra` flags.
    pub(crate) async fn start(routes: &str, extra: &[&str]) -> DocEnv {
        let routes = workspace_root().join(routes);
        let routes = routes.to_string_lossy().into_owned();
        let mut args = vec!["--routes", routes.as_str()];
        args.extend_from_slice(extra);
        let gm = Gripmesh::standalone(BIN, &args).await;
        let grpc = gm.listener_addr("grpc").expect("grpc listener");
        let (edge, publish, admin) = (gm.edge_addr(), gm.publish_addr(), gm.admin_addr());
        let rewrites = vec![
            ("localhost:7999".into(), edge.to_string()),
            ("localhost:5561".into(), publish.to_string()),
            ("localhost:5562".into(), grpc.to_string()),
            ("localhost:9100".into(), admin.to_string()),
        ];
        let env = vec![
            ("PATH".into(), tools_path()),
            ("GRIPMESH_CONTROL_URL".into(), format!("http://{publish}")),
            ("GRIPMESH_CONTROL_GRPC_URL".into(), format!("http://{grpc}")),
            ("GRIPMESH_ADMIN_URL".into(), format!("http://{admin}")),
        ];
        DocEnv { gm, rewrites, env }
    }
}

/// `PATH` for a documented command: the `gripmesh` under test, the test venv (websocat,
/// Python), `/usr/sbin` (nats-server), then the inherited `PATH`.
fn tools_path() -> String {
    let dir_of = |file: PathBuf| file.parent().expect("a file's directory").to_path_buf();
    format!(
        "{}:{}:/usr/sbin:{}",
        dir_of(PathBuf::from(BIN)).display(),
        dir_of(PathBuf::from(test_python())).display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs `block` in `env`; panics with the block's place and output unless it succeeds and
/// prints every `#>` line.
pub(crate) async fn run_block(block: &Block, env: &DocEnv) {
    run_script(block, &env.rewrites, &env.env, &env.gm.stderr_text()).await;
}

/// Runs `block` with `rewrites` applied and `env` set; panics with the block's place, its
/// output and `context` unless it succeeds and prints every `#>` line (a line given N times
/// must be printed at least N times).
async fn run_script(
    block: &Block,
    rewrites: &[(String, String)],
    env: &[(String, String)],
    context: &str,
) {
    let mut script = block.text.clone();
    for (from, to) in rewrites {
        script = script.replace(from.as_str(), to.as_str());
    }
    let expected: Vec<String> = block
        .text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("#> ").map(str::to_owned))
        .collect();
    // Stop the block's background jobs once its foreground commands are done; give them a
    // moment to print what the last publish sent them.
    let wrapped = format!(
        "set -euo pipefail\n{script}\nsleep 1\nkill $(jobs -p) 2>/dev/null || true\nwait 2>/dev/null || true\n"
    );
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg("-c")
        .arg(&wrapped)
        .current_dir(workspace_root())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("GRIPMESH_") {
            cmd.env_remove(key);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{}:{}: block did not finish in 30 s",
                block.file, block.line
            )
        })
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!(
        "{}:{}: block\n{}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- gripmesh stderr ---\n{context}",
        block.file, block.line, block.text,
    );
    assert!(out.status.success(), "exit {:?}\n{context}", out.status);
    for want in &expected {
        let times = expected.iter().filter(|w| *w == want).count();
        assert!(
            stdout.matches(want.as_str()).count() >= times,
            "expected {want:?} {times} time(s)\n{context}"
        );
    }
}

/// The README's `sh test-cluster` blocks start their own NATS, control and edges on the
/// documented ports: each port is rewritten to a free one (4222 is the machine's own NATS),
/// the JetStream directory to a temporary one, and `gripmesh` and `nats-server` are on `PATH`.
#[tokio::test]
async fn readme_cluster_example_runs() {
    let readme = workspace_root().join("README.md");
    let blocks = blocks(&readme, "sh test-cluster");
    assert!(!blocks.is_empty(), "README has no `sh test-cluster` block");
    for block in &blocks {
        let dir = testkit::TempDir::new();
        let js = dir.path().join("js");
        let mut rewrites: Vec<(String, String)> = Vec::new();
        for port in [
            "4222", "5561", "5562", "7998", "7999", "9101", "9102", "9111",
        ] {
            let free = crate::parity_common::free_port().to_string();
            rewrites.push((format!("127.0.0.1:{port}"), format!("127.0.0.1:{free}")));
            rewrites.push((format!("localhost:{port}"), format!("localhost:{free}")));
            rewrites.push((format!("-p {port} "), format!("-p {free} ")));
        }
        rewrites.push(("/tmp/gripmesh-js".into(), js.to_string_lossy().into_owned()));
        run_script(
            block,
            &rewrites,
            &[("PATH".into(), tools_path())],
            "(the block's own)",
        )
        .await;
    }
}

/// Every `sh test` block of README.md, each against its own fresh standalone.
#[tokio::test]
async fn readme_examples_run() {
    let readme = workspace_root().join("README.md");
    let blocks = blocks(&readme, "sh test");
    assert!(
        blocks.len() >= 5,
        "README has {} tested blocks",
        blocks.len()
    );
    for block in &blocks {
        let env = DocEnv::start("examples/test.routes", &[]).await;
        run_block(block, &env).await;
    }
}

/// The README's `sh test-lines` blocks (the demo's client commands) against a running
/// `gripmesh demo` on free ports: each command line runs on its own for at most 3 s (the feeds
/// never end, so they are cut), and the `#>` lines after it must be in its output (stdout and
/// stderr: a refused WebSocket is an error message). Exit codes are not checked: some lines
/// show a refusal on purpose.
#[tokio::test]
async fn readme_demo_commands_run() {
    let readme = workspace_root().join("README.md");
    let blocks = blocks(&readme, "sh test-lines");
    assert!(!blocks.is_empty(), "README has no `sh test-lines` block");
    for block in &blocks {
        let demo = crate::demo::start_demo().await;
        let rewrites = [
            ("localhost:7999", demo.edge_addr().to_string()),
            ("localhost:5561", demo.publish_addr().to_string()),
            ("localhost:9100", demo.admin_addr().to_string()),
        ];
        let path = tools_path();
        // (command, expected lines) in order.
        let mut commands: Vec<(String, Vec<String>)> = Vec::new();
        for line in block.text.lines() {
            if let Some(want) = line.trim_start().strip_prefix("#> ") {
                let (_, wants) = commands.last_mut().expect("a #> line follows a command");
                wants.push(want.to_owned());
            } else if !line.trim().is_empty() && !line.trim_start().starts_with('#') {
                let mut cmd = line.to_owned();
                for (from, to) in &rewrites {
                    cmd = cmd.replace(from, to);
                }
                commands.push((cmd, Vec::new()));
            }
        }
        for (cmd, wants) in &commands {
            // Stdin stays open, as a terminal's would (websocat ends at end of input).
            let mut child = tokio::process::Command::new("timeout")
                .args(["3", "bash", "-c", cmd])
                .env("PATH", &path)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("timeout runs");
            let stdin = child.stdin.take();
            let out = child.wait_with_output().await.expect("output");
            drop(stdin);
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            for want in wants {
                assert!(
                    text.contains(want.as_str()),
                    "{}:{}: `{cmd}` should print {want:?}; printed:\n{text}\n--- demo stderr ---\n{}",
                    block.file,
                    block.line,
                    demo.stderr_text()
                );
            }
        }
    }
}
