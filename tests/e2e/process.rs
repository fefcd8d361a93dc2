//! The process contract: flags and config (exit 64 on bad input), admin endpoints, metrics,
//! graceful shutdown on SIGTERM/SIGINT.

use serde_json::json;
use testkit::{
    Gripmesh, Origin, OriginResponse, Signal, StreamClient, TempDir, http_get, metric_value,
    publish_with_auth, run, scrape_metrics, wait_metric, wait_metric_at_least,
};

use crate::common::{
    BIN, WAIT, open_stream, publish_items, start_standard, start_standard_origin, stream_item,
};
use crate::jwt::verify_hs256;

fn non_empty_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// Asserts exit status 64 and exactly one stderr line containing every `needles` entry.
fn assert_usage_error(
    context: &str,
    status: std::process::ExitStatus,
    stderr: &str,
    needles: &[&str],
) {
    assert_eq!(
        status.code(),
        Some(64),
        "{context}: exit status; stderr:\n{stderr}"
    );
    let lines = non_empty_lines(stderr);
    assert_eq!(
        lines.len(),
        1,
        "{context}: expected a one-line message, got:\n{stderr}"
    );
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{context}: message does not name {needle:?}: {:?}",
            lines[0]
        );
    }
}

/// Bad flag values ⇒ exit 64 with one stderr line naming the value.
#[tokio::test]
async fn bad_flag_values_exit_64() {
    let cases: [(&str, &str); 6] = [
        ("--listen", "nonsense"),
        ("--publish-listen", "300.1.2.3:99"),
        ("--admin-listen", "localhost:notaport"),
        ("--publish-max-body", "lots"),
        ("--drain-timeout", "soon"),
        ("--log-format", "xml"),
    ];
    for (flag, value) in cases {
        let mut args = listener_args_without(flag);
        args.push(flag);
        args.push(value);
        let (status, _stdout, stderr) = run(BIN, &args).await;
        assert_usage_error(&format!("{flag} {value}"), status, &stderr, &[value]);
    }
}

/// [`testkit::STANDALONE_ARGS`] (every listener on port 0, so nothing binds a default port)
/// without `flag` and its value.
fn listener_args_without(flag: &str) -> Vec<&'static str> {
    let (subcommand, flags) = (testkit::STANDALONE_ARGS[0], &testkit::STANDALONE_ARGS[1..]);
    let mut args = vec![subcommand];
    for pair in flags.chunks(2) {
        if pair[0] != flag {
            args.extend_from_slice(pair);
        }
    }
    args
}

/// An unknown flag ⇒ exit 64 naming it.
#[tokio::test]
async fn unknown_flag_exits_64() {
    let mut args = listener_args_without("");
    args.push("--no-such-flag");
    let (status, _stdout, stderr) = run(BIN, &args).await;
    assert_usage_error("--no-such-flag", status, &stderr, &["--no-such-flag"]);
}

/// A routes file with an error (or a missing one) at startup ⇒ exit 64 naming file and line.
#[tokio::test]
async fn bad_routes_file_at_startup_exits_64() {
    let dir = TempDir::new();
    let file = dir.write("e2e-bad.routes", "* 127.0.0.1:1\n*,path_beg=/no-target\n");
    let mut args = listener_args_without("");
    args.extend(["--routes", file.to_str().expect("utf-8 path")]);
    let (status, _stdout, stderr) = run(BIN, &args).await;
    assert_usage_error(
        "routes file with an error",
        status,
        &stderr,
        &["e2e-bad.routes"],
    );
    assert!(
        ["line 2", "line=2", "line: 2", ":2"]
            .iter()
            .any(|l| stderr.contains(l)),
        "message does not name line 2: {stderr}"
    );

    let missing = dir.path().join("does-not-exist.routes");
    let mut args = listener_args_without("");
    args.extend(["--routes", missing.to_str().expect("utf-8 path")]);
    let (status, _stdout, stderr) = run(BIN, &args).await;
    assert_usage_error(
        "missing routes file",
        status,
        &stderr,
        &["does-not-exist.routes"],
    );
}

/// `--config FILE` (TOML, same keys as the long flags) configures listeners, the publish token
/// and the signing key.
#[tokio::test]
async fn config_file_sets_options() {
    const SIG_KEY: &str = "config-sig-key-0123456789";
    let origin = Origin::start(|_| OriginResponse::text("ok\n")).await;
    let dir = TempDir::new();
    let routes = dir.write("routes", &format!("* {}\n", origin.target()));
    let config = dir.write(
        "gripmesh.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\n\
             publish-listen = \"127.0.0.1:0\"\n\
             admin-listen = \"127.0.0.1:0\"\n\
             grpc-listen = \"127.0.0.1:0\"\n\
             log-format = \"text\"\n\
             routes = \"{}\"\n\
             publish-token = \"config-token\"\n\
             sig-key = \"{SIG_KEY}\"\n\
             sig-iss = \"config-iss\"\n",
            routes.to_str().expect("utf-8 path")
        ),
    );
    let gm = Gripmesh::start(
        BIN,
        &[
            "standalone",
            "--config",
            config.to_str().expect("utf-8 path"),
        ],
        &[],
    )
    .await;
    let body = json!({"items": [stream_item("c", "x\n")]});
    assert_eq!(testkit::publish(gm.publish_addr(), &body).await.status, 401);
    let resp = publish_with_auth(gm.publish_addr(), &body, "Bearer config-token").await;
    assert_eq!(resp.status, 200);
    let resp = http_get(gm.edge_addr(), "/cfg", &[]).await;
    assert_eq!(resp.status, 200);
    let req = &origin.wait_for_requests(1, WAIT).await[0];
    let sig = req
        .header("grip-sig")
        .expect("Grip-Sig from the configured key");
    let claims = verify_hs256(&sig, SIG_KEY.as_bytes()).expect("Grip-Sig verifies");
    assert_eq!(claims["iss"], "config-iss");
}

/// A bad value in the config file ⇒ exit 64 naming it.
#[tokio::test]
async fn bad_config_file_exits_64() {
    let dir = TempDir::new();
    let config = dir.write("bad.toml", "listen = \"nonsense-addr\"\n");
    // No `--listen` on the command line: the file's `listen` is the one in force.
    let mut args = listener_args_without("--listen");
    args.extend(["--config", config.to_str().expect("utf-8 path")]);
    let (status, _stdout, stderr) = run(BIN, &args).await;
    assert_usage_error(
        "config listen = nonsense-addr",
        status,
        &stderr,
        &["nonsense-addr"],
    );

    let config = dir.write("syntax.toml", "listen = \n[[[\n");
    let mut args = listener_args_without("");
    args.extend(["--config", config.to_str().expect("utf-8 path")]);
    let (status, _stdout, stderr) = run(BIN, &args).await;
    assert_usage_error(
        "config with a TOML syntax error",
        status,
        &stderr,
        &["syntax.toml"],
    );
}

/// Admin endpoints: /healthz, /readyz and /metrics with the contract's metric names.
#[tokio::test]
async fn admin_endpoints() {
    let gm = Gripmesh::standalone(BIN, &[]).await;
    let resp = http_get(gm.admin_addr(), "/healthz", &[]).await;
    assert_eq!(resp.status, 200);
    // Readiness turns 200 once the revocations are loaded, which happens just after `ready`.
    testkit::cluster::wait_ready(gm.admin_addr(), WAIT, "standalone").await;
    let resp = http_get(gm.admin_addr(), "/readyz", &[]).await;
    assert_eq!(resp.status, 200, "readyz: {}", resp.text());
    let text = scrape_metrics(gm.admin_addr()).await;
    assert!(
        testkit::parse_metric(&text, "gripmesh_build_info").is_some(),
        "gripmesh_build_info missing:\n{text}"
    );
}

/// Metrics move with traffic: connection gauge up and down, counters increase.
#[tokio::test]
async fn metrics_follow_traffic() {
    let (env, _origin) = start_standard(&[]).await;
    let admin = env.admin();
    let messages = "gripmesh_edge_messages_sent_total{transport=\"http-stream\"}";
    let items = "gripmesh_control_publish_items_total{api=\"http\"}";
    let sent_before = metric_value(admin, messages).await.unwrap_or(0.0);
    let items_before = metric_value(admin, items).await.unwrap_or(0.0);

    let mut client = open_stream(env.edge(), "metrics").await;
    let gauge = "gripmesh_edge_connections{transport=\"http-stream\"}";
    wait_metric_at_least(admin, gauge, 1.0, WAIT).await;
    wait_metric_at_least(admin, "gripmesh_edge_subscriptions", 1.0, WAIT).await;
    wait_metric_at_least(admin, "gripmesh_edge_channels", 1.0, WAIT).await;
    wait_metric_at_least(
        admin,
        "gripmesh_edge_connections_opened_total{transport=\"http-stream\"}",
        1.0,
        WAIT,
    )
    .await;
    wait_metric_at_least(admin, "gripmesh_edge_origin_requests_total", 1.0, WAIT).await;

    publish_items(
        env.publish(),
        json!([
            stream_item("metrics", "m1\n"),
            stream_item("metrics", "m2\n")
        ]),
    )
    .await;
    client.read_until("m2\n", WAIT).await;
    wait_metric_at_least(admin, messages, sent_before + 2.0, WAIT).await;
    wait_metric_at_least(admin, items, items_before + 2.0, WAIT).await;

    let resp = testkit::publish_raw(env.publish(), "POST", "/publish/", &[], "{bad").await;
    assert_eq!(resp.status, 400);
    wait_metric_at_least(admin, "gripmesh_control_publish_rejected_total", 1.0, WAIT).await;

    client.close();
    wait_metric(admin, gauge, WAIT, "back to 0 after the client left", |v| {
        v == 0.0
    })
    .await;
    wait_metric(
        admin,
        "gripmesh_edge_subscriptions",
        WAIT,
        "back to 0 after the client left",
        |v| v == 0.0,
    )
    .await;
}

/// SIGTERM: held streams end cleanly (terminating chunk) and the process exits 0.
#[tokio::test]
async fn sigterm_ends_streams_cleanly_and_exits_0() {
    let (mut env, _origin) = start_standard(&["--drain-timeout", "5"]).await;
    let mut first = open_stream(env.edge(), "drain").await;
    let mut second = open_stream(env.edge(), "drain").await;
    env.gm.signal(Signal::Term);
    first.expect_eof(WAIT).await;
    second.expect_eof(WAIT).await;
    let status = env.gm.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
}

/// SIGINT drains like SIGTERM.
#[tokio::test]
async fn sigint_exits_0() {
    let origin = start_standard_origin().await;
    let env = crate::common::start_with_origin(&origin, &["--drain-timeout", "5"]).await;
    let mut gm = env.gm;
    let mut client = StreamClient::open(gm.edge_addr(), "/stream", &[]).await;
    client.read_until("hello\n", WAIT).await;
    gm.signal(Signal::Int);
    client.expect_eof(WAIT).await;
    let status = gm.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGINT");
}
