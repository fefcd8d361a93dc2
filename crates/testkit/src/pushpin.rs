//! Debian's Pushpin (1.36) run side by side with gripmesh, so a test can assert the same
//! behaviour against both (Debian's package with its default setup).
//!
//! Each [`Pushpin`] gets its own run directory, routes file and loopback ports; the runner
//! (`pushpin --config …`) starts condure, zurl, the proxy and the handler; dropping the value
//! sends the runner (by its pid) SIGTERM, which stops them all. A missing `pushpin` binary fails
//! the test with instructions: `scripts/test` installs it.

use crate::TempDir;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A running Pushpin.
pub struct Pushpin {
    child: Child,
    /// The runner's pid.
    pid: Option<u32>,
    /// The client-facing listener.
    pub http: SocketAddr,
    /// The HTTP control API (`/publish`, `/recover`).
    pub control: SocketAddr,
    dir: TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral port")
}

/// The `pushpin` runner binary (`GRIPMESH_TEST_PUSHPIN`, default `pushpin` on `PATH`).
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("GRIPMESH_TEST_PUSHPIN") {
        return PathBuf::from(p);
    }
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = PathBuf::from(dir).join("pushpin");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "pushpin not found: install Debian's pushpin (`apt-get install -y pushpin`; scripts/test \
         does) or set GRIPMESH_TEST_PUSHPIN"
    );
}

impl Pushpin {
    /// Starts Pushpin with `routes` (Pushpin routes-file syntax) and waits until its client
    /// listener and control API answer. `proxy_extra` lines go to the `[proxy]` section.
    pub async fn start(routes: &str, proxy_extra: &[&str]) -> Pushpin {
        let bin = binary();
        let dir = TempDir::new();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("run")).expect("run dir");
        std::fs::create_dir_all(root.join("log")).expect("log dir");
        dir.write("routes", routes);
        let (http, push_in, push_sub, push_http, command) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let conf = format!(
            "[global]\ninclude={{libdir}}/internal.conf\nrundir={run}\nipc_prefix=pushpin-\n\
             port_offset=0\nstats_connection_ttl=120\n\
             [runner]\nservices=condure,zurl,pushpin-proxy,pushpin-handler\n\
             http_port=127.0.0.1:{http}\nlogdir={log}\nlog_level=2\nclient_buffer_size=8192\n\
             client_maxconn=50000\ncondure_bin=condure\nzurl_bin=zurl\n\
             [proxy]\nroutesfile=routes\ndebug=false\nauto_cross_origin=false\n\
             accept_x_forwarded_protocol=false\nset_x_forwarded_protocol=proto-only\n\
             x_forwarded_for=\nx_forwarded_for_trusted=\norig_headers_need_mark=\n\
             accept_pushpin_route=false\nlog_from=false\nlog_user_agent=false\n\
             sig_iss=pushpin\nsig_key=changeme\nupstream_key=\nupdates_check=off\n\
             zurl_out_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in\n\
             zurl_out_stream_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in-stream\n\
             zurl_in_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-out\n{extra}\
             [handler]\npush_in_spec=tcp://127.0.0.1:{push_in}\n\
             push_in_sub_specs=tcp://127.0.0.1:{push_sub}\npush_in_sub_connect=false\n\
             push_in_http_addr=127.0.0.1\npush_in_http_port={push_http}\n\
             push_in_http_max_headers_size=10000\npush_in_http_max_body_size=1000000\n\
             stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats\n\
             command_spec=tcp://127.0.0.1:{command}\nmessage_rate=2500\nmessage_hwm=25000\n\
             message_wait=5000\nid_cache_ttl=60\nconnection_subscription_max=20\n\
             subscription_linger=60\nstats_subscription_ttl=60\nstats_report_interval=10\n\
             stats_format=json\n",
            run = root.join("run").display(),
            log = root.join("log").display(),
            extra = proxy_extra
                .iter()
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
        );
        let conf_path = dir.write("pushpin.conf", &conf);
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(&conf_path)
            .arg("--merge-output")
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let pid = child.id();
        let pushpin = Pushpin {
            child,
            pid,
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            control: SocketAddr::from(([127, 0, 0, 1], push_http)),
            dir,
        };
        pushpin.wait_ready().await;
        pushpin
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let control = crate::try_http_request(self.control, "GET", "/", &[], "").await;
            let client = tokio::net::TcpStream::connect(self.http).await;
            if matches!(control, Ok(ref r) if r.status == 200) && client.is_ok() {
                // The proxy's link to the handler (GRIP accepts) comes up a moment after both
                // listeners; before that a hold answers 500 "Accept service unavailable".
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pushpin did not become ready in 30 s; log dir {}",
                self.dir.path().join("log").display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Pushpin {
    fn drop(&mut self) {
        // SIGTERM to the runner alone (a positive pid: never a group, never -1); it stops the
        // services it started (each runs in a process group of its own). SIGKILL only if it
        // has not exited after a moment.
        if let Some(pid) = self.pid.filter(|p| *p > 1) {
            let _ = std::process::Command::new("kill")
                .arg("-s")
                .arg("TERM")
                .arg(pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            for _ in 0..30 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = self.child.start_kill();
    }
}
