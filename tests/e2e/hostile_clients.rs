//! The client side of the edge under attack (docs/protocol.md, "Limits and bad input"): path spellings that would
//! step around a route's gateway check, bounded memory per WebSocket client, channel-name
//! limits, header/body timeouts, clamped durations from the origin, the open-file limit, and
//! client errors answered as 4xx. Plus regression guards for what already held.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use testkit::ws::{WohOrigin, WsConn, WsEvent, echo_events, echo_reply, grip_events_response};
use testkit::{
    BodyChunk, Gripmesh, KitBody, NatsServer, Origin, OriginResponse, StreamClient, TempDir,
    http_get, http_request, metric_value, publish, publish_stream, raw_exchange, try_http_request,
    wait_metric_at_least, wait_until,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{
    BIN, WAIT, assert_proxy_error, publish_items, start, start_standard, start_with_origin,
    stream_item,
};
use crate::ws_common::{publish_ws_text, start_woh};

/// Routes `*,path_beg=/private/,authz ORIGIN` and `* ORIGIN` behind a gateway that denies
/// everything: no spelling of `/private/x` reaches the origin; the origin sees the canonical
/// path of whatever it does get.
#[tokio::test]
async fn no_path_spelling_skips_the_gateway() {
    let gateway = Origin::start(|_| {
        OriginResponse::new(401)
            .header("Content-Type", "text/plain")
            .body("denied\n")
    })
    .await;
    let origin = Origin::start(|_| OriginResponse::text("origin\n")).await;
    let routes = format!(
        "*,path_beg=/private/,authz {t}\n* {t}\n",
        t = origin.target()
    );
    let gw_url = format!("http://{}", gateway.addr());
    let env = start(&routes, &["--authz-gateway", &gw_url]).await;

    let plain = http_get(env.edge(), "/private/x", &[]).await;
    assert_eq!(plain.status, 401, "the plain spelling is denied");
    for path in [
        "/%70rivate/x",
        "/%2e/private/x",
        "/./private/x",
        "/public/../private/x",
        "//private/x",
        "/public/%2E%2E/private/x",
    ] {
        let resp = http_get(env.edge(), path, &[]).await;
        assert_eq!(resp.status, 401, "{path} must take the authz route");
    }
    for path in [
        "/private%2Fx",
        "/private%2fx",
        "/private%5Cx",
        "/../private/x",
        "/a/../../private/x",
        "/private%zz",
    ] {
        let resp = http_get(env.edge(), path, &[]).await;
        assert_eq!(resp.status, 400, "{path} is refused");
    }
    // A raw backslash never reaches hyper's URI parser in the http client, so send it raw.
    let raw = raw_exchange(
        env.edge(),
        b"GET /private\\x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        raw.starts_with(b"HTTP/1.1 400"),
        "raw backslash: {}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(origin.request_count(), 0, "nothing reached the origin");

    // Other paths reach the origin in canonical form, query untouched.
    let resp = http_get(env.edge(), "/public/./a/../%7Euser/%3b?q=%2F..", &[]).await;
    assert_eq!(resp.status, 200);
    let reqs = origin.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].uri, "/public/~user/%3B?q=%2F..");
}

const HUGE: &str = "18446744073709551615";

/// `Grip-Timeout: 2^64-1` used to overflow the hold's deadline and panic the connection task
/// (no answer at all). Clamped, the hold works: a publish answers the client.
#[tokio::test]
async fn huge_grip_timeout_is_clamped() {
    let (env, _origin) = start_standard(&[]).await;
    let edge = env.edge();
    let held = tokio::spawn(async move {
        try_http_request(
            edge,
            "GET",
            &format!("/response?channel=big&timeout={HUGE}"),
            &[],
            "",
        )
        .await
    });
    wait_metric_at_least(
        env.admin(),
        "gripmesh_edge_connections{transport=\"http-response\"}",
        1.0,
        WAIT,
    )
    .await;
    publish_items(
        env.publish(),
        json!([{"channel": "big", "formats": {"http-response": {"body": "published\n"}}}]),
    )
    .await;
    let resp = tokio::time::timeout(WAIT, held)
        .await
        .expect("answered")
        .expect("task")
        .expect("a response, not a dropped connection");
    assert_eq!((resp.status, resp.text().as_str()), (200, "published\n"));
}

/// A stream hold with a huge keep-alive timeout and a huge next-link timeout still streams.
#[tokio::test]
async fn huge_keep_alive_and_next_link_timeouts_are_clamped() {
    let origin = Origin::start(|req| match req.path() {
        "/ka" => OriginResponse::stream_hold("ka", "hello\n").header(
            "Grip-Keep-Alive",
            &format!("ping\\n; format=cstring; timeout={HUGE}"),
        ),
        "/link" => OriginResponse::stream_hold("link", "hello\n")
            .header("Grip-Link", &format!("</next>; rel=next; timeout={HUGE}")),
        _ => OriginResponse::text("next\n"),
    })
    .await;
    let env = start_with_origin(&origin, &[]).await;
    for channel in ["ka", "link"] {
        let mut client = StreamClient::open(env.edge(), &format!("/{channel}"), &[]).await;
        assert_eq!(client.status, 200, "{channel}");
        client.read_until("hello\n", WAIT).await;
        publish_stream(env.publish(), channel, "after\n").await;
        client.read_until("after\n", WAIT).await;
    }
}

/// WebSocket-over-HTTP: `Keep-Alive-Interval: 2^64-1` and a `keep-alive` control message with
/// a huge timeout leave the session working.
#[tokio::test]
async fn huge_websocket_durations_are_clamped() {
    let origin = WohOrigin::start(|req| {
        let mut events = echo_events(req);
        if req.is_open() {
            events.push(WsEvent::control(
                &json!({"type": "keep-alive", "content": "ka", "timeout": u64::MAX}),
            ));
        }
        grip_events_response(&events).header("Keep-Alive-Interval", HUGE)
    })
    .await;
    let env = start_woh(&origin, &[]).await;
    let mut ws = WsConn::connect(env.edge(), "/ws?channel=wsbig", &[]).await;
    ws.send_text("one").await;
    assert_eq!(ws.expect_text(WAIT).await, "one");
    ws.send_text("two").await;
    assert_eq!(ws.expect_text(WAIT).await, "two");
    publish_ws_text(env.publish(), "wsbig", "published").await;
    assert_eq!(ws.expect_text(WAIT).await, "published");
}

/// The finding: `GET /response?channel=` + 5,000 bytes on the built-in test target made a SUB
/// longer than NATS' control line; the server dropped the edge, which replayed it for ever.
/// Now names over `--max-channel-length` are refused where they enter (instructions ⇒ 502,
/// publishes ⇒ 400) and the edge stays on the bus.
#[tokio::test]
async fn long_channel_names_are_refused_and_the_bus_stays_up() {
    let nats = NatsServer::start();
    let env = start("* test\n", &["--nats", &nats.url()]).await;
    let long = "x".repeat(5000);
    for path in [
        format!("/response?channel={long}"),
        format!("/stream?channel={long}"),
        format!("/response?channel={}", "y".repeat(513)),
    ] {
        let resp = http_get(env.edge(), &path, &[]).await;
        assert_proxy_error(&resp, &path[..20]);
    }
    let resp = publish(
        env.publish(),
        &json!({"items": [stream_item("ok", "x"), stream_item(&long, "x")]}),
    )
    .await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (400, "Invalid channel.\n")
    );
    let resp = http_request(
        env.publish(),
        "POST",
        &format!("/publish/{long}/"),
        &[],
        "raw",
    )
    .await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (400, "Invalid channel.\n")
    );

    // Still on the bus: ready, never reconnected, and a normal channel still delivers (a name
    // of exactly the limit too).
    // (Readiness also waits for the per-key counts to load, which may take a moment after
    // start on a loaded machine: wait for it rather than sample it once.)
    testkit::cluster::wait_ready(
        env.admin(),
        Duration::from_secs(20),
        "edge still on the bus",
    )
    .await;
    let at_limit = "z".repeat(512);
    for channel in ["normal", at_limit.as_str()] {
        let mut client =
            StreamClient::open(env.edge(), &format!("/stream?channel={channel}"), &[]).await;
        assert_eq!(client.status, 200);
        client.read_until("stream open", WAIT).await;
        publish_stream(env.publish(), channel, "delivered\n").await;
        client.read_until("delivered\n", WAIT).await;
    }
    let reconnects = metric_value(env.admin(), "gripmesh_bus_reconnects_total").await;
    assert_eq!(reconnects.unwrap_or(0.0), 0.0, "the edge never lost NATS");
}

/// Names enter through route `prefix=` / `sub=` and WebSocket `c:subscribe` too.
#[tokio::test]
async fn long_channel_names_from_routes_and_websocket_control_are_refused() {
    let long = "w".repeat(600);
    let origin = WohOrigin::start({
        let long = long.clone();
        move |req| {
            let mut events = echo_events(req);
            if req.is_open() && req.request.path() == "/open-long" {
                events.push(WsEvent::subscribe(&long));
            }
            if req
                .events
                .iter()
                .any(|e| e.as_text().as_deref() == Some("sub-long"))
            {
                events.push(WsEvent::subscribe(&long));
            }
            grip_events_response(&events)
        }
    })
    .await;
    let routes = format!(
        "*,path_beg=/prefixed/,replace_beg=/,prefix={p} test\n*,path_beg=/implicit/,replace_beg=/ test,sub={long}\n* {o},over_http\n",
        p = "p".repeat(500),
        o = origin.target()
    );
    let env = start(&routes, &[]).await;
    let resp = http_get(env.edge(), "/prefixed/stream?channel=abcdefghijklmnop", &[]).await;
    assert_proxy_error(&resp, "prefix makes the name too long");
    let resp = http_get(env.edge(), "/implicit/stream?channel=a", &[]).await;
    assert_proxy_error(&resp, "sub= too long");

    // In the OPEN answer: the handshake fails with 502.
    let rejected = WsConn::connect_rejected(env.edge(), "/open-long", &[]).await;
    assert_eq!(rejected.status, 502);
    // Later: the client is closed with a reason that says why.
    let mut ws = WsConn::connect(env.edge(), "/later?channel=fine", &[]).await;
    ws.send_text("hello").await;
    assert_eq!(ws.expect_text(WAIT).await, "hello");
    ws.send_text("sub-long").await;
    let (code, reason) = ws.expect_close(WAIT).await;
    assert_eq!((code, reason.as_str()), (1011, "channel name too long"));
}

/// Writes `request` on a new connection, half-closes when `close_write`, and reads until the
/// server closes or `timeout` passes. Returns what was read.
async fn raw_send(
    addr: SocketAddr,
    request: &[u8],
    close_write: bool,
    timeout: Duration,
) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    if close_write {
        let _ = stream.shutdown().await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, stream.read_to_end(&mut out)).await;
    out
}

fn status_line(resp: &[u8]) -> String {
    String::from_utf8_lossy(resp)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// A broken chunked body and a body cut short are the client's fault: 400, never 502 (which
/// fires the operator's 5xx alerts), on the buffered and the streamed path.
#[tokio::test]
async fn malformed_request_bodies_get_400() {
    let origin = Origin::start(|_| OriginResponse::text("origin\n")).await;
    let env = start_with_origin(&origin, &[]).await;
    let chunked = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n\r\n";
    let resp = raw_send(env.edge(), chunked, false, WAIT).await;
    assert_eq!(
        status_line(&resp),
        "HTTP/1.1 400 Bad Request",
        "broken chunk"
    );
    let short = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly-some";
    let resp = raw_send(env.edge(), short, true, WAIT).await;
    assert_eq!(status_line(&resp), "HTTP/1.1 400 Bad Request", "short body");
    let publish_chunked = b"POST /publish/ HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n\r\n";
    let resp = raw_send(env.publish(), publish_chunked, false, WAIT).await;
    assert_eq!(
        status_line(&resp),
        "HTTP/1.1 400 Bad Request",
        "publish: broken chunk"
    );
}

/// A request head or body that stalls is timed out: the head by closing the connection
/// (`--client-header-timeout`), the body with 408 (`--client-body-timeout`) — on the client
/// listener (buffered and streamed bodies) and on control's publish listener.
#[tokio::test]
async fn stalled_heads_and_bodies_are_timed_out() {
    let origin = Origin::start(|_| OriginResponse::text("origin\n")).await;
    let env = start_with_origin(
        &origin,
        &["--client-header-timeout", "1", "--client-body-timeout", "1"],
    )
    .await;
    // Head: the connection is closed although the client keeps it open.
    let resp = raw_send(env.edge(), b"GET / HTTP/1.1\r\nHost: a\r\n", false, WAIT).await;
    assert!(
        resp.is_empty() || resp.starts_with(b"HTTP/1.1 408"),
        "stalled head: {}",
        String::from_utf8_lossy(&resp)
    );
    for (what, addr, req) in [
        (
            "edge, buffered",
            env.edge(),
            &b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"[..],
        ),
        (
            "edge, streamed",
            env.edge(),
            &b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"[..],
        ),
        (
            "publish",
            env.publish(),
            &b"POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{\"items\""
                [..],
        ),
    ] {
        let started = std::time::Instant::now();
        let resp = raw_send(addr, req, false, WAIT).await;
        assert_eq!(
            status_line(&resp),
            "HTTP/1.1 408 Request Timeout",
            "{what}: {}",
            String::from_utf8_lossy(&resp)
        );
        assert!(started.elapsed() < WAIT, "{what}: answered, not waited out");
    }
}

/// An over-limit publish body gets its 413, and the client reads it: the rest of the body is
/// drained (up to a bound) instead of the connection being reset under the client.
#[tokio::test]
async fn over_limit_publish_body_gets_a_readable_413() {
    let env = start("* test\n", &["--publish-max-body", "1000"]).await;
    let big = format!(
        "{{\"items\":[{{\"channel\":\"c\",\"formats\":{{\"http-stream\":{{\"content\":\"{}\"}}}}}}]}}",
        "x".repeat(3 << 20)
    );
    // A client that writes its whole request before reading (as most do): the body is larger
    // than both sockets' buffers, so it can only finish writing if the server reads it.
    let huge = vec![b'x'; 16 << 20];
    let mut stream = TcpStream::connect(env.publish()).await.expect("connect");
    let head = format!(
        "POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        huge.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream
        .write_all(&huge)
        .await
        .expect("the whole body is taken, not reset");
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut resp)).await;
    assert_eq!(status_line(&resp), "HTTP/1.1 413 Payload Too Large");
    // Declared length over the limit through a client that reads while writing, and chunked
    // (no declared length).
    let resp = try_http_request(env.publish(), "POST", "/publish/", &[], big.clone())
        .await
        .expect("the 413 is readable");
    assert_eq!(resp.status, 413);
    let (tx, body) = KitBody::channel();
    let send = tokio::spawn(async move {
        for chunk in big.as_bytes().chunks(256 * 1024) {
            let chunk = BodyChunk::Data(bytes::Bytes::copy_from_slice(chunk));
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let mut client =
        StreamClient::open_request(env.publish(), "POST", "/publish/", &[], body).await;
    assert_eq!(client.status, 413, "chunked");
    client.read_until("too large", WAIT).await;
    let _ = send.await;
}

/// A WebSocket client that floods while its WebSocket-over-HTTP origin is slow: the edge holds
/// at most `--ws-upstream-queue-messages` of its messages (each origin request carries at most
/// that many: the edge stopped reading the client instead of queueing), and none is lost.
#[tokio::test]
async fn websocket_flood_toward_a_slow_origin_is_bounded_and_lossless() {
    flood_slow_origin(Some(8), 200).await;
}

/// The same with the default bound (256 messages): before the bound existed, a flood of 1,500
/// messages during one slow request went to the origin as one batch.
#[tokio::test]
async fn websocket_flood_default_bound() {
    flood_slow_origin(None, 1500).await;
}

async fn flood_slow_origin(flag: Option<usize>, messages: usize) {
    let bound = flag.unwrap_or(256);
    let origin = WohOrigin::start(|req| {
        let reply = echo_reply(req);
        if req.is_open() {
            reply
        } else {
            reply.delay(Duration::from_millis(50))
        }
    })
    .await;
    let bound_text = bound.to_string();
    let args: Vec<&str> = match flag {
        Some(_) => vec!["--ws-upstream-queue-messages", &bound_text],
        None => Vec::new(),
    };
    let env = start_woh(&origin, &args).await;
    let mut ws = WsConn::connect(env.edge(), "/flood", &[]).await;
    for i in 0..messages {
        ws.send_text(format!("m{i}")).await;
    }
    let echoed = ws.expect_texts(messages, Duration::from_secs(60)).await;
    let expected: Vec<String> = (0..messages).map(|i| format!("m{i}")).collect();
    assert_eq!(echoed, expected, "every message, in order");
    let batches: Vec<usize> = origin
        .requests()
        .iter()
        .filter(|r| !r.is_open())
        .map(|r| r.events.len())
        .collect();
    let largest = batches.iter().copied().max().unwrap_or(0);
    assert!(
        largest <= bound,
        "an origin request carried {largest} messages (bound {bound}): {batches:?}"
    );
    assert!(batches.len() >= messages / bound, "{batches:?}");
}

/// Under an open-file limit that cannot hold `--max-connections`, the edge says so at startup
/// and clients beyond what fits get 503 instead of waiting unanswered in the accept queue.
#[tokio::test]
async fn low_open_file_limit_answers_503_instead_of_hanging() {
    let dir = TempDir::new();
    let routes = dir.write("routes", "* test\n");
    let routes = routes.to_str().expect("utf-8 path");
    let args = [
        &["--nofile=128:128", "--", BIN],
        testkit::STANDALONE_ARGS,
        &["--routes", routes],
    ]
    .concat();
    let gm = Gripmesh::start("prlimit", &args, &[]).await;
    wait_until(
        WAIT,
        "the startup warning about --max-connections",
        || async { gm.stderr_text().contains("--max-connections cannot fit") },
    )
    .await;
    let mut held = Vec::new();
    let (mut ok, mut refused) = (0, 0);
    for i in 0..150 {
        let path = format!("/stream?channel=fd{i}");
        let open = StreamClient::open(gm.edge_addr(), &path, &[]);
        let client = tokio::time::timeout(WAIT, open)
            .await
            .unwrap_or_else(|_| panic!("client {i} got no answer ({ok} held, {refused} refused)"));
        match client.status {
            200 => ok += 1,
            503 => refused += 1,
            other => panic!("client {i}: status {other}"),
        }
        held.push(client);
    }
    assert!(ok > 0 && refused > 0, "{ok} held, {refused} refused");
    // Room again once clients leave.
    drop(held);
    wait_until(WAIT, "a new client is served again", || async {
        http_get(gm.edge_addr(), "/", &[]).await.status == 200
    })
    .await;
}

// ---- Regression guards: what already held, kept holding.

/// Channel names with NATS wildcards, dots and odd bytes are names, not patterns: a publish
/// reaches exactly its own channel's subscribers (over a real nats-server).
#[tokio::test]
async fn wildcard_and_odd_channel_names_match_only_themselves() {
    let nats = NatsServer::start();
    let (env, _origin) = start_standard(&["--nats", &nats.url()]).await;
    let names = ["a.b", "a.*", "*", "a%20b", "a_20b", "_2E", "a_2Eb", "a-b"];
    let mut clients = Vec::new();
    for name in names {
        let mut c = StreamClient::open(env.edge(), &format!("/stream?channel={name}"), &[]).await;
        assert_eq!(c.status, 200, "{name}");
        c.read_until("hello\n", WAIT).await;
        clients.push(c);
    }
    for name in names {
        let channel = name.replace("%20", " ");
        publish_stream(env.publish(), &channel, &format!("to[{channel}]\n")).await;
    }
    for (name, client) in names.iter().zip(clients.iter_mut()) {
        let channel = name.replace("%20", " ");
        client.read_until(format!("to[{channel}]\n"), WAIT).await;
        let got = client.read_for(Duration::from_millis(300)).await;
        let all = client.received_text();
        assert_eq!(
            all.matches("to[").count(),
            1,
            "{name} received only its own item: {all:?} (late: {got:?})"
        );
    }
}

/// Request smuggling: conflicting lengths and obsolete line folding are refused; a request
/// with both `Content-Length` and `Transfer-Encoding` is framed one way only, and the origin
/// never receives both headers or a second request hidden in a body.
#[tokio::test]
async fn request_smuggling_variants_do_not_reach_the_origin() {
    let origin = Origin::start(|_| OriginResponse::text("origin\n")).await;
    let env = start_with_origin(&origin, &[]).await;
    for (what, req) in [
        (
            "double Content-Length",
            &b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nbody"
                [..],
        ),
        (
            "obs-fold",
            &b"GET /a HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n"[..],
        ),
        (
            "space before colon",
            &b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length : 4\r\n\r\nbody"[..],
        ),
    ] {
        let resp = raw_send(env.edge(), req, false, WAIT).await;
        assert!(
            resp.starts_with(b"HTTP/1.1 400"),
            "{what}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    let cl_te = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let resp = raw_send(env.edge(), cl_te, true, WAIT).await;
    assert!(
        resp.starts_with(b"HTTP/1.1 400") || resp.starts_with(b"HTTP/1.1 200"),
        "CL+TE: {}",
        String::from_utf8_lossy(&resp)
    );
    for r in origin.requests() {
        assert!(
            !(r.headers.contains_key("content-length")
                && r.headers.contains_key("transfer-encoding")),
            "origin got both length headers: {:?}",
            r.headers
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("HTTP/1.1"),
            "a request hidden in a body reached the origin: {:?}",
            r.body
        );
    }
}

/// CR/LF never crosses into a header the client gets: not from a published `http-response`,
/// not from a `grip-instruct` answer.
#[tokio::test]
async fn cr_lf_never_crosses_into_headers() {
    let origin = Origin::start(|req| match req.path() {
        "/instruct" => OriginResponse::new(200)
            .header("Content-Type", "application/grip-instruct")
            .body(
                r#"{"hold":{"mode":"response","channels":[{"name":"crlf2"}],"timeout":5},"response":{"headers":{"X-Inst":"a\r\nInjected: 1"},"body":"t\n"}}"#,
            ),
        _ => OriginResponse::response_hold("crlf", "timeout\n"),
    })
    .await;
    let env = start_with_origin(&origin, &[]).await;
    let edge = env.edge();
    let held = tokio::spawn(async move { http_get(edge, "/hold", &[]).await });
    wait_metric_at_least(
        env.admin(),
        "gripmesh_edge_connections{transport=\"http-response\"}",
        1.0,
        WAIT,
    )
    .await;
    publish_items(
        env.publish(),
        json!([{"channel": "crlf", "formats": {"http-response": {
            "headers": {"X-Pub": "a\r\nInjected: 1", "X-Ok": "fine"}, "body": "published\n"}}}]),
    )
    .await;
    let resp = tokio::time::timeout(WAIT, held)
        .await
        .expect("answer")
        .expect("task");
    assert_eq!(resp.text(), "published\n");
    assert_eq!(resp.header("x-ok").as_deref(), Some("fine"));
    assert!(resp.header("injected").is_none() && resp.header("x-pub").is_none());
    let resp = http_get(env.edge(), "/instruct", &[]).await;
    assert!(resp.header("injected").is_none(), "{:?}", resp.headers);
}

/// A `Grip-Link` to another host is fetched from the route's own targets, never from that
/// host.
#[tokio::test]
async fn next_links_never_leave_the_routes_targets() {
    let elsewhere = Origin::start(|_| OriginResponse::text("elsewhere\n")).await;
    let link = format!("<http://{}/next>; rel=next; timeout=1", elsewhere.addr());
    let origin = Origin::start(move |req| match req.path() {
        "/next" => OriginResponse::text("from-the-route\n"),
        _ => OriginResponse::stream_hold("links", "hello\n").header("Grip-Link", &link),
    })
    .await;
    let env = start_with_origin(&origin, &[]).await;
    let mut client = StreamClient::open(env.edge(), "/start", &[]).await;
    client.read_until("hello\n", WAIT).await;
    client.read_until("from-the-route\n", WAIT).await;
    assert_eq!(elsewhere.request_count(), 0);
}
