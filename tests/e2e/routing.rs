//! Routes: case 38, host rules, path rewriting, failover, Host rewriting, the built-in `test`
//! target, and hot reload of the routes file.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{
    Origin, OriginResponse, StreamClient, http_get, publish_stream, wait_metric_at_least,
};

use crate::common::{
    WAIT, assert_proxy_error, open_stream, publish_items, start, start_named, start_standard_origin,
};

/// An origin that answers `<name> <path-and-query>\n`, to see which origin got a request.
async fn named_origin(name: &'static str) -> Origin {
    Origin::start(move |req| OriginResponse::text(format!("{name} {}\n", req.uri))).await
}

/// Case 38: `replace_beg`, `header=`, and 502 `No route for host` when nothing matches.
#[tokio::test]
async fn path_rewrite_header_injection_and_no_route() {
    let origin = named_origin("o").await;
    let routes = format!(
        "*,path_beg=/aco/,replace_beg=/ {o}\n\
         *,path_beg=/hdr/,replace_beg=/,header=X-Route:yes,header=X-Remove: {o}\n",
        o = origin.target()
    );
    let env = start(&routes, &[]).await;

    let resp = http_get(env.edge(), "/aco/response?x=1", &[]).await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "o /response?x=1\n")
    );

    let resp = http_get(
        env.edge(),
        "/hdr/plain",
        &[("X-Route", "client-value"), ("X-Remove", "should-go")],
    )
    .await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "o /plain\n"));
    let req = origin
        .requests()
        .into_iter()
        .find(|r| r.uri == "/plain")
        .expect("request to /plain recorded");
    assert_eq!(req.header_all("x-route"), vec!["yes".to_string()]);
    assert_eq!(
        req.header("x-remove"),
        None,
        "empty header= value must remove it"
    );

    let resp = http_get(env.edge(), "/elsewhere", &[("Host", "nomatch.example")]).await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (502, "No route for host: nomatch.example\n")
    );
}

/// Host rules win over `*` (Host matched without its port); a host with rules but no matching
/// path gets no `*` fallback.
#[tokio::test]
async fn host_rules_win_over_wildcard() {
    let a = named_origin("a").await;
    let any = named_origin("any").await;
    let routes = format!(
        "* {any}\na.example,path_beg=/only {a}\n",
        any = any.target(),
        a = a.target()
    );
    let env = start(&routes, &[]).await;
    let get = |host: &'static str, path: &'static str| {
        let edge = env.edge();
        async move { http_get(edge, path, &[("Host", host)]).await }
    };
    assert_eq!(get("a.example", "/only/x").await.text(), "a /only/x\n");
    assert_eq!(get("A.Example:7999", "/only/y").await.text(), "a /only/y\n");
    assert_eq!(get("b.example", "/only/z").await.text(), "any /only/z\n");
    let resp = get("a.example", "/other").await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (502, "No route for host: a.example\n")
    );
}

/// The longest matching `path_beg` wins, whatever the file order; `path_rem` strips characters.
#[tokio::test]
async fn longest_path_beg_wins_and_path_rem_strips() {
    let short = named_origin("short").await;
    let long = named_origin("long").await;
    let rem = named_origin("rem").await;
    let routes = format!(
        "*,path_beg=/api {short}\n*,path_beg=/api/v2 {long}\n*,path_beg=/strip/,path_rem=6 {rem}\n",
        short = short.target(),
        long = long.target(),
        rem = rem.target()
    );
    let env = start(&routes, &[]).await;
    assert_eq!(
        http_get(env.edge(), "/api/v1/x", &[]).await.text(),
        "short /api/v1/x\n"
    );
    assert_eq!(
        http_get(env.edge(), "/api/v2/x", &[]).await.text(),
        "long /api/v2/x\n"
    );
    assert_eq!(
        http_get(env.edge(), "/strip/rest?q=1", &[]).await.text(),
        "rem /rest?q=1\n"
    );
}

/// Several targets = failover: a refusing first target is skipped.
#[tokio::test]
async fn failover_to_next_target() {
    let refused = Origin::refusing_addr();
    let backup = named_origin("backup").await;
    let routes = format!("* 127.0.0.1:{} {}\n", refused.port(), backup.target());
    let env = start(&routes, &[]).await;
    for i in 0..3 {
        let resp = http_get(env.edge(), &format!("/f{i}"), &[]).await;
        assert_eq!((resp.status, resp.text()), (200, format!("backup /f{i}\n")));
    }
    // Failover also works for GRIP: a stream hold through the second target.
    let grip = start_standard_origin().await;
    let routes = format!("* 127.0.0.1:{} {}\n", refused.port(), grip.target());
    let env = start(&routes, &[]).await;
    let mut client = open_stream(env.edge(), "fo").await;
    publish_stream(env.publish(), "fo", "via-backup\n").await;
    client.read_until("via-backup\n", WAIT).await;
}

/// Every target refusing ⇒ 502.
#[tokio::test]
async fn all_targets_refusing_is_502() {
    let a = Origin::refusing_addr();
    let b = Origin::refusing_addr();
    let env = start(
        &format!("* 127.0.0.1:{} 127.0.0.1:{}\n", a.port(), b.port()),
        &[],
    )
    .await;
    let resp = http_get(env.edge(), "/x", &[]).await;
    assert_proxy_error(&resp, "all targets refusing");
}

/// Target `host=` and condition `as_host=` rewrite the Host header sent to the origin; without
/// them the client's Host is preserved.
#[tokio::test]
async fn host_header_rewriting() {
    let origin = named_origin("o").await;
    let routes = format!(
        "*,path_beg=/target {o},host=api.internal.example\n\
         *,path_beg=/cond,as_host=as.example {o}\n\
         * {o}\n",
        o = origin.target()
    );
    let env = start(&routes, &[]).await;
    for path in ["/target/x", "/cond/x", "/plain/x"] {
        let resp = http_get(env.edge(), path, &[("Host", "client.example")]).await;
        assert_eq!(resp.status, 200, "{path}");
    }
    let reqs = origin.wait_for_requests(3, WAIT).await;
    let host_for = |prefix: &str| {
        reqs.iter()
            .find(|r| r.uri.starts_with(prefix))
            .and_then(|r| r.header("host"))
            .unwrap_or_else(|| panic!("no request for {prefix}"))
    };
    assert_eq!(host_for("/target"), "api.internal.example");
    assert_eq!(host_for("/cond"), "as.example");
    assert_eq!(host_for("/plain"), "client.example");
}

/// The built-in `test` target: `/` says hello, `/stream` and `/response` are holds on the
/// `channel` query parameter.
#[tokio::test]
async fn builtin_test_target() {
    let env = start("* test\n", &[]).await;
    let resp = http_get(env.edge(), "/", &[]).await;
    assert_eq!(resp.status, 200);
    assert!(!resp.body.is_empty(), "hello text expected");

    let mut stream = StreamClient::open(env.edge(), "/stream?channel=tt", &[]).await;
    assert_eq!(stream.status, 200);
    publish_stream(env.publish(), "tt", "to-test-stream\n").await;
    stream.read_until("to-test-stream\n", WAIT).await;

    let edge = env.edge();
    let held = tokio::spawn(async move { http_get(edge, "/response?channel=tr", &[]).await });
    wait_metric_at_least(env.admin(), "gripmesh_edge_subscriptions", 2.0, WAIT).await;
    publish_items(
        env.publish(),
        json!([{"channel": "tr", "formats": {"http-response": {"body": "to-test-response\n"}}}]),
    )
    .await;
    let resp = tokio::time::timeout(WAIT, held)
        .await
        .expect("response hold answered")
        .expect("request task");
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "to-test-response\n")
    );
}

/// The routes file is watched: a new route works within 3 s without dropping held streams; a
/// broken file is rejected whole (old table kept) and the error names the file and line.
#[tokio::test]
async fn routes_file_hot_reload() {
    let standard = start_standard_origin().await;
    let fresh = named_origin("fresh").await;
    let v1 = format!("* {}\n", standard.target());
    let mut env = start_named("e2e-reload.routes", &v1, &[]).await;
    let mut held = open_stream(env.edge(), "reload").await;
    let resp = http_get(env.edge(), "/new/x", &[]).await;
    assert_eq!(
        resp.status, 404,
        "before reload /new/ goes to the standard origin"
    );

    let v2 = format!(
        "*,path_beg=/new/ {}\n* {}\n",
        fresh.target(),
        standard.target()
    );
    env.write_routes(&v2);
    let written = Instant::now();
    loop {
        let resp = http_get(env.edge(), "/new/x", &[]).await;
        if resp.text() == "fresh /new/x\n" {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_secs(3),
            "new route not active 3 s after rewriting the routes file (last answer {} {:?})",
            resp.status,
            resp.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publish_stream(env.publish(), "reload", "after-reload\n").await;
    held.read_until("after-reload\n", WAIT).await;

    // Line 2 has a condition but no target.
    let broken = format!(
        "*,path_beg=/new/ 127.0.0.1:1\n*,path_beg=/broken\n* {}\n",
        standard.target()
    );
    env.write_routes(&broken);
    testkit::wait_until(WAIT, "a log line naming the routes file and line 2", || {
        let stderr = env.gm.stderr_text();
        async move {
            stderr.lines().any(|line| {
                line.contains("e2e-reload.routes")
                    && ["line 2", "line=2", "line: 2", ":2"]
                        .iter()
                        .any(|l| line.contains(l))
            })
        }
    })
    .await;
    env.gm.assert_running();
    let resp = http_get(env.edge(), "/new/x", &[]).await;
    assert_eq!(
        resp.text(),
        "fresh /new/x\n",
        "the broken file must not replace the old table"
    );
    publish_stream(env.publish(), "reload", "after-bad-reload\n").await;
    held.read_until("after-bad-reload\n", WAIT).await;
    assert_eq!(
        held.received_text(),
        "hello\nafter-reload\nafter-bad-reload\n"
    );
}

/// Case 39 (CORS part; JSON-P is not supported): on an `aco` route every response gets the
/// CORS headers the origin did not set, echoing Origin and the requested headers; routes
/// without `aco` get none.
#[tokio::test]
async fn aco_route_adds_cors_headers() {
    let origin = Origin::start(|_| {
        OriginResponse::text("plain\n")
            .header("X-Custom", "1")
            .header("Access-Control-Max-Age", "10")
    })
    .await;
    let routes = format!("*,path_beg=/aco/,aco {o}\n* {o}\n", o = origin.target());
    let env = start(&routes, &[]).await;
    let cors_request = [
        ("Origin", "http://example.com"),
        ("Access-Control-Request-Headers", "X-Foo"),
    ];
    let resp = http_get(env.edge(), "/aco/plain", &cors_request).await;
    assert_eq!(resp.status, 200);
    let h = |n: &str| resp.header(n);
    assert_eq!(
        h("access-control-allow-origin").as_deref(),
        Some("http://example.com")
    );
    assert_eq!(
        h("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(h("access-control-allow-headers").as_deref(), Some("X-Foo"));
    assert_eq!(
        h("access-control-allow-methods").as_deref(),
        Some("OPTIONS, HEAD, GET, POST, PUT, DELETE")
    );
    let exposed = h("access-control-expose-headers").unwrap_or_default();
    assert!(exposed.split(", ").any(|n| n == "x-custom"), "{exposed}");
    assert!(
        !exposed.contains("content-type"),
        "simple headers are not listed: {exposed}"
    );
    assert_eq!(
        h("access-control-max-age").as_deref(),
        Some("10"),
        "origin's value kept"
    );

    let plain = http_get(env.edge(), "/plain", &cors_request).await;
    assert_eq!(plain.status, 200);
    assert!(
        plain
            .header_names_with_prefix("access-control-allow")
            .is_empty()
    );
}
