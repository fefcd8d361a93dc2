//! Keep-alives, SSE and the application/grip-instruct body: cases 21, 22, 23, 25.

use std::time::{Duration, Instant};

use testkit::{Origin, OriginResponse, StreamClient, http_get, publish_stream};

use crate::common::{WAIT, assert_proxy_error, count, start_with_origin};

fn sse_origin_response(keep_alive: &str) -> OriginResponse {
    OriginResponse::new(200)
        .header("Content-Type", "text/event-stream")
        .header("Grip-Hold", "stream")
        .header("Grip-Channel", "sse")
        .header("Grip-Keep-Alive", keep_alive)
}

/// Case 21: SSE (a stream hold with text/event-stream) with an idle keep-alive of 3 s: `:\n\n`
/// every 2–3 s, and a publish restarts the timer.
#[tokio::test]
async fn sse_idle_keep_alive_restarts_on_publish() {
    let origin = Origin::start(|_| sse_origin_response(":\\n\\n; format=cstring; timeout=3")).await;
    let env = start_with_origin(&origin, &[]).await;
    let opened = Instant::now();
    let mut client = StreamClient::open(env.edge(), "/sse", &[]).await;
    assert_eq!(client.status, 200);
    assert_eq!(
        client.header("content-type").as_deref(),
        Some("text/event-stream")
    );

    client.read_until(":\n\n", Duration::from_secs(5)).await;
    let first = Instant::now();
    assert!(
        first - opened >= Duration::from_millis(1500),
        "first keep-alive after {:?}, expected 2–3 s",
        first - opened
    );
    client.read_until(":\n\n", Duration::from_secs(5)).await;
    let second = Instant::now();
    let gap = second - first;
    assert!(
        gap >= Duration::from_millis(1500) && gap <= Duration::from_millis(4500),
        "keep-alive gap {gap:?}, expected 2–3 s"
    );

    // 1.5 s into the idle period, publish: the next keep-alive must come ≥ 2 s after it, not
    // 0.5–1.5 s after it as it would without the restart.
    let quiet = client.read_for(Duration::from_millis(1500)).await;
    assert_eq!(&quiet[..], b"", "nothing expected 1.5 s after a keep-alive");
    let publishing = Instant::now();
    publish_stream(env.publish(), "sse", "data: event-1\n\n").await;
    client.read_until("data: event-1\n\n", WAIT).await;
    client.read_until(":\n\n", Duration::from_secs(5)).await;
    // Measured from before the publish, so a slow reader can only make it look later.
    let after = publishing.elapsed();
    assert!(
        after >= Duration::from_millis(1800),
        "keep-alive {after:?} after a publish: the idle timer was not restarted"
    );
    assert!(
        after <= Duration::from_millis(4500),
        "keep-alive {after:?} after a publish, expected 2–3 s"
    );
    assert!(
        client
            .received_text()
            .starts_with(":\n\n:\n\ndata: event-1\n\n:\n\n"),
        "received {:?}",
        client.received_text()
    );
}

/// Case 22: interval mode keeps sending keep-alives while messages flow.
#[tokio::test]
async fn keep_alive_interval_mode_ignores_traffic() {
    let origin = Origin::start(|_| {
        OriginResponse::stream_hold("ivl", "").header(
            "Grip-Keep-Alive",
            "ping\\n; format=cstring; timeout=2; mode=interval",
        )
    })
    .await;
    let env = start_with_origin(&origin, &[]).await;
    let mut client = StreamClient::open(env.edge(), "/interval", &[]).await;
    assert_eq!(client.status, 200);
    let publish_addr = env.publish();
    let publisher = tokio::spawn(async move {
        for i in 0..9 {
            publish_stream(publish_addr, "ivl", &format!("msg-{i}\n")).await;
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    });
    let window = client.read_for(Duration::from_millis(6500)).await;
    publisher.await.expect("publisher task");
    if count(client.received(), b"msg-8\n") == 0 {
        client.read_until("msg-8\n", WAIT).await;
    }
    let all = client.received();
    for i in 0..9 {
        assert_eq!(count(all, format!("msg-{i}\n").as_bytes()), 1, "msg-{i}");
    }
    let pings = count(&window, b"ping\n");
    assert!(
        (2..=7).contains(&pings),
        "{pings} keep-alives in 6.5 s with a message every 0.7 s (expected one every 1–2 s): {:?}",
        String::from_utf8_lossy(&window)
    );
}

/// Keep-alive data formats: raw (default) and base64.
#[tokio::test]
async fn keep_alive_raw_and_base64_formats() {
    let origin = Origin::start(|req| match req.path() {
        "/raw" => {
            OriginResponse::stream_hold("ka", "").header("Grip-Keep-Alive", "raw-ka; timeout=1")
        }
        _ => OriginResponse::stream_hold("ka", "")
            .header("Grip-Keep-Alive", "a2EK; format=base64; timeout=1"),
    })
    .await;
    let env = start_with_origin(&origin, &[]).await;
    let mut raw = StreamClient::open(env.edge(), "/raw", &[]).await;
    let mut b64 = StreamClient::open(env.edge(), "/base64", &[]).await;
    raw.read_until("raw-ka", Duration::from_secs(5)).await;
    b64.read_until("ka\n", Duration::from_secs(5)).await;
    assert!(raw.received_text().starts_with("raw-ka"));
    assert!(b64.received_text().starts_with("ka\n"));
}

/// Case 23: an invalid Grip-Keep-Alive ⇒ 502.
#[tokio::test]
async fn invalid_keep_alive_is_502() {
    let origin = Origin::start(|_| {
        OriginResponse::stream_hold("test", "").header("Grip-Keep-Alive", "x; mode=weird")
    })
    .await;
    let env = start_with_origin(&origin, &[]).await;
    let resp = http_get(env.edge(), "/bad-ka", &[]).await;
    assert_proxy_error(&resp, "Grip-Keep-Alive: x; mode=weird");
}

/// Case 25: an application/grip-instruct JSON body: its response is sent, the hold is a stream
/// on `ji` with a 2 s keep-alive.
#[tokio::test]
async fn grip_instruct_json_body() {
    let instruct = serde_json::json!({
        "hold": {
            "mode": "stream",
            "channels": [{"name": "ji"}],
            "keep-alive": {"content": "ka\n", "timeout": 2}
        },
        "response": {
            "code": 200,
            "headers": {"Content-Type": "text/plain", "X-Inst": "1"},
            "body": "instruct-start\n"
        }
    })
    .to_string();
    let origin = Origin::start(move |_| {
        OriginResponse::new(200)
            .header("Content-Type", "application/grip-instruct")
            .header("X-Origin-Only", "dropped")
            .body(instruct.clone())
    })
    .await;
    let env = start_with_origin(&origin, &[]).await;
    let mut client = StreamClient::open(env.edge(), "/instruct", &[]).await;
    assert_eq!(client.status, 200);
    assert_eq!(client.header("x-inst").as_deref(), Some("1"));
    assert_eq!(client.header("content-type").as_deref(), Some("text/plain"));
    assert_eq!(client.header("x-origin-only"), None);
    client.read_until("instruct-start\n", WAIT).await;
    let window = client.read_for(Duration::from_secs(5)).await;
    let kas = count(&window, b"ka\n");
    assert!(
        (2..=6).contains(&kas),
        "{kas} keep-alives in 5 s, expected one every ~2 s: {:?}",
        String::from_utf8_lossy(&window)
    );
    publish_stream(env.publish(), "ji", "published\n").await;
    client.read_until("published\n", WAIT).await;
    assert!(client.received_text().starts_with("instruct-start\nka\n"));
}
