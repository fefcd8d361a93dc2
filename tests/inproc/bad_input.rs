//! Bad input of every kind gets a clear error and never hurts the process or other
//! connections: each test keeps an unrelated stream hold open and checks it afterwards.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use testkit::{
    BodyChunk, Origin, OriginResponse, RawOrigin, http_get, publish_raw, raw_exchange, raw_status,
    try_http_request, wait_until,
};
use tokio::sync::mpsc;

use crate::common::{
    Env, Survivor, WAIT, assert_proxy_error, start, start_standard, start_standard_origin,
};

/// Starts gripmesh with `extra_routes` first and the standard origin as the fallback, and a
/// survivor stream through it.
async fn start_with_survivor(extra_routes: &str) -> (Env, Origin, Survivor) {
    let standard = start_standard_origin().await;
    let env = start(&format!("{extra_routes}* {}\n", standard.target()), &[]).await;
    let survivor = Survivor::open(&env).await;
    (env, standard, survivor)
}

/// Malformed request lines and headers ⇒ 400.
#[tokio::test]
async fn malformed_http_is_400() {
    let (mut env, _origin) = start_standard(&[]).await;
    let mut survivor = Survivor::open(&env).await;
    let cases: [(&str, &[u8]); 3] = [
        ("not HTTP", b"THIS IS NOT HTTP\r\n\r\n"),
        (
            "header without colon",
            b"GET /plain HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
        ),
        ("bad version", b"GET /plain HTTP/9.Z\r\nHost: x\r\n\r\n"),
    ];
    for (name, request) in cases {
        let answer = raw_exchange(env.edge(), request, Duration::from_secs(5)).await;
        assert_eq!(
            raw_status(&answer),
            Some(400),
            "{name}: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    // Binary garbage: any answer or a close is fine, as long as nothing else is hurt.
    let _ = raw_exchange(
        env.edge(),
        &[0u8, 1, 2, 255, 254, 13, 10, 13, 10],
        Duration::from_secs(2),
    )
    .await;
    survivor.check(&mut env, "malformed HTTP").await;
}

/// A request header section over 16 KB ⇒ 431; a 12 KB one is fine.
#[tokio::test]
async fn oversized_request_headers_are_431() {
    let (mut env, origin) = start_standard(&[]).await;
    let mut survivor = Survivor::open(&env).await;

    let ok = format!(
        "GET /plain HTTP/1.1\r\nHost: x\r\nX-Medium: {}\r\nConnection: close\r\n\r\n",
        "m".repeat(12 * 1024)
    );
    let answer = raw_exchange(env.edge(), ok.as_bytes(), WAIT).await;
    assert_eq!(raw_status(&answer), Some(200), "12 KB header section");

    let one_big = format!(
        "GET /plain HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20 * 1024)
    );
    let many: String = (0..40)
        .map(|i| format!("X-Many-{i}: {}\r\n", "n".repeat(500)))
        .collect();
    let many = format!("GET /plain HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let before = origin.request_count();
    for (name, request) in [("one 20 KB header", one_big), ("40 × 500 B headers", many)] {
        let answer = raw_exchange(env.edge(), request.as_bytes(), WAIT).await;
        assert_eq!(
            raw_status(&answer),
            Some(431),
            "{name}: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }
    assert_eq!(
        origin.request_count(),
        before,
        "oversized requests reached the origin"
    );
    survivor.check(&mut env, "oversized headers").await;
}

/// Bad GRIP instructions from the origin ⇒ 502 `Error while proxying to origin.\n`.
#[tokio::test]
async fn bad_grip_instructions_are_502() {
    let bad = Origin::start(|req| {
        let hold = |mode: &str| OriginResponse::text("body\n").header("Grip-Hold", mode);
        match req.path() {
            "/bad/hold" => hold("bogus").header("Grip-Channel", "x"),
            "/bad/timeout" => hold("response")
                .header("Grip-Channel", "x")
                .header("Grip-Timeout", "soon"),
            "/bad/negative-timeout" => hold("response")
                .header("Grip-Channel", "x")
                .header("Grip-Timeout", "-3"),
            "/bad/keep-alive-mode" => hold("stream")
                .header("Grip-Channel", "x")
                .header("Grip-Keep-Alive", "x; mode=weird"),
            "/bad/keep-alive-format" => hold("stream")
                .header("Grip-Channel", "x")
                .header("Grip-Keep-Alive", "x; format=rot13"),
            "/bad/keep-alive-empty" => hold("stream")
                .header("Grip-Channel", "x")
                .header("Grip-Keep-Alive", "; timeout=5"),
            "/bad/channel-empty" => hold("stream").header("Grip-Channel", "a,,b"),
            "/bad/status" => hold("stream")
                .header("Grip-Channel", "x")
                .header("Grip-Status", "abc"),
            "/bad/link" => hold("stream")
                .header("Grip-Channel", "x")
                .header("Grip-Link", "no-brackets; rel=next"),
            "/bad/instruct-json" => OriginResponse::new(200)
                .header("Content-Type", "application/grip-instruct")
                .body("{not json"),
            "/bad/instruct-not-object" => OriginResponse::new(200)
                .header("Content-Type", "application/grip-instruct")
                .body("[1,2]"),
            "/bad/instruct-mode" => OriginResponse::new(200)
                .header("Content-Type", "application/grip-instruct")
                .body(r#"{"hold":{"mode":"sideways","channels":[{"name":"x"}]}}"#),
            _ => OriginResponse::new(404),
        }
    })
    .await;
    let (mut env, _standard, mut survivor) =
        start_with_survivor(&format!("*,path_beg=/bad/ {}\n", bad.target())).await;
    let paths = [
        "/bad/hold",
        "/bad/timeout",
        "/bad/negative-timeout",
        "/bad/keep-alive-mode",
        "/bad/keep-alive-format",
        "/bad/keep-alive-empty",
        "/bad/channel-empty",
        "/bad/status",
        "/bad/link",
        "/bad/instruct-json",
        "/bad/instruct-not-object",
        "/bad/instruct-mode",
    ];
    let mut failures = Vec::new();
    for path in paths {
        match try_http_request(env.edge(), "GET", path, &[], Bytes::new()).await {
            Ok(resp)
                if resp.status == 502 && resp.text() == "Error while proxying to origin.\n" => {}
            Ok(resp) => failures.push(format!("{path}: {} {:?}", resp.status, resp.text())),
            Err(e) => failures.push(format!("{path}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "expected 502s:\n{}",
        failures.join("\n")
    );
    survivor.check(&mut env, "bad GRIP instructions").await;
}

/// Invalid publish JSON is rejected without affecting anyone.
#[tokio::test]
async fn bad_publish_json_is_harmless() {
    let (mut env, _origin) = start_standard(&[]).await;
    let mut survivor = Survivor::open(&env).await;
    for body in [
        &b"{\"items\": [{\"channel\": \"survivor\", \"formats\": "[..],
        b"\xff\xfe\x00garbage",
        b"{\"items\": [{\"channel\": 42, \"formats\": {\"http-stream\": {\"content\": 1}}}]}",
        b"{\"items\": [{\"channel\": \"survivor\", \"formats\": {\"http-stream\": {\"content-bin\": \"***\"}}}]}",
    ] {
        let resp = publish_raw(
            env.publish(),
            "POST",
            "/publish/",
            &[("Content-Type", "application/json")],
            Bytes::copy_from_slice(body),
        )
        .await;
        assert_eq!(
            resp.status,
            400,
            "body {:?}: {}",
            String::from_utf8_lossy(body),
            resp.text()
        );
    }
    survivor.check(&mut env, "bad publish JSON").await;
}

/// An origin that breaks the connection mid-response: the client never sees a complete
/// response, and nothing else is affected.
#[tokio::test]
async fn origin_closing_mid_response_is_contained() {
    type Slot = Arc<Mutex<Option<mpsc::Sender<BodyChunk>>>>;
    let slot: Slot = Arc::new(Mutex::new(None));
    let handler_slot = slot.clone();
    let aborting = Origin::start(move |_| {
        let (resp, tx) = OriginResponse::new(200)
            .header("Content-Type", "text/plain")
            .header("Content-Length", "100")
            .streamed();
        *handler_slot.lock().expect("slot") = Some(tx);
        resp
    })
    .await;
    let (mut env, _standard, mut survivor) =
        start_with_survivor(&format!("*,path_beg=/abort {}\n", aborting.target())).await;
    let edge = env.edge();
    let request =
        tokio::spawn(
            async move { try_http_request(edge, "GET", "/abort", &[], Bytes::new()).await },
        );
    wait_until(WAIT, "origin to start its response", || async {
        slot.lock().expect("slot").is_some()
    })
    .await;
    let tx = slot.lock().expect("slot").take().expect("sender");
    tx.send(BodyChunk::Data(Bytes::from_static(b"0123456789")))
        .await
        .expect("origin body open");
    tx.send(BodyChunk::Abort).await.expect("origin body open");
    let outcome = tokio::time::timeout(WAIT, request)
        .await
        .expect("client request finished")
        .expect("request task");
    if let Ok(resp) = &outcome {
        assert!(
            !(resp.status == 200 && resp.body.len() == 100),
            "client got a complete response from a broken origin: {resp:?}"
        );
    }
    survivor
        .check(&mut env, "origin closing mid-response")
        .await;
}

/// Origins that close without answering or answer garbage ⇒ 502.
#[tokio::test]
async fn broken_origin_responses_are_502() {
    let silent = RawOrigin::start(Bytes::new()).await;
    let garbage = RawOrigin::start(&b"NOT HTTP AT ALL\r\n\r\n"[..]).await;
    let (mut env, _standard, mut survivor) = start_with_survivor(&format!(
        "*,path_beg=/silent {}\n*,path_beg=/garbage {}\n",
        silent.target(),
        garbage.target()
    ))
    .await;
    for path in ["/silent", "/garbage"] {
        let resp = http_get(env.edge(), path, &[]).await;
        assert_proxy_error(&resp, path);
    }
    assert!(silent.connection_count() >= 1 && garbage.connection_count() >= 1);
    survivor.check(&mut env, "broken origins").await;
}
