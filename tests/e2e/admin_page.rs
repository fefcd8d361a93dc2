//! The admin listener's status page (`GET /`, `GET /status.json`) in a real browser: headless
//! Chromium through playwright-core (tests/node/admin_page.mjs). The screenshot is saved as
//! `target/admin-page.png`.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::{Origin, OriginResponse, StreamClient, http_get, publish, query_param};

use crate::common::{WAIT, run_node, start, workspace_root};

/// A live standalone (held streams through the gateway, a publisher, a revocation, a resume
/// from history) as the page shows it: ready, bus connected, connections per transport,
/// channels, messages/s, delivery latency, usage per app, history, the route table and the
/// revocation; nothing loaded from anywhere but the admin listener.
#[tokio::test]
async fn admin_page_shows_a_live_standalone_in_chromium() {
    // The gateway names each key's app, as Apigee's X-Developer-App does.
    let gw = Origin::start(|req| {
        let key = query_param(&req.uri, "apikey").unwrap_or_default();
        OriginResponse::new(200).header("X-Developer-App", &format!("app-{key}"))
    })
    .await;
    let gateway = format!("http://{}", gw.addr());
    let env = start(
        "*,authz test\n",
        &[
            "--authz-gateway",
            &gateway,
            "--history",
            "h=100",
            "--usage-interval",
            "1s",
        ],
    )
    .await;
    let mut clients = Vec::new();
    for path in [
        "/stream?channel=a&apikey=trades",
        "/stream?channel=b&apikey=trades",
        "/sse?channel=a&apikey=chat",
    ] {
        let mut c = StreamClient::open(env.edge(), path, &[]).await;
        c.read_until("stream open", WAIT).await;
        clients.push(c);
    }
    // One resume served from history: an item with an id, then a client back after it.
    let item = json!({"items": [{"channel": "h", "id": "h1",
                                 "formats": {"http-stream": {"content": "h1\n"}}}]});
    assert_eq!(publish(env.publish(), &item).await.status, 200);
    let mut back = StreamClient::open(
        env.edge(),
        "/sse?channel=h&apikey=chat",
        &[("Last-Event-ID", "h1")],
    )
    .await;
    back.read_until("stream open", WAIT).await;
    clients.push(back);
    let resp = testkit::publish_raw(
        env.publish(),
        "POST",
        "/authz/revoke",
        &[("Content-Type", "application/json")],
        json!({"credential": "leaked-key"}).to_string(),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    // Steady publishing while the page polls, so rates and latency have data.
    let addr = env.publish();
    let publisher = tokio::spawn(async move {
        for i in 0..150 {
            let item = json!({"items": [{"channel": "a", "formats": {"http-stream": {"content": format!("m{i}\n")}}}]});
            publish(addr, &item).await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    });

    let status = http_get(env.admin(), "/status.json", &[]).await;
    assert_eq!(status.status, 200);
    let doc: Value = serde_json::from_str(&status.text()).expect("status.json is JSON");
    assert_eq!(doc["tier"], "standalone");

    let shot = workspace_root().join("target/admin-page.png");
    let admin = format!("http://{}/", env.admin());
    let (ok, out, err) = run_node("admin_page.mjs", &[&admin, &shot.to_string_lossy()], &[]).await;
    publisher.abort();
    assert!(ok, "admin_page.mjs failed:\n{out}\n{err}");
    let page: Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(page["status"], 200, "{page}");
    assert!(
        page["csp"]
            .as_str()
            .unwrap_or_default()
            .contains("default-src 'none'"),
        "{page}"
    );
    assert_eq!(
        page["foreign"],
        json!([]),
        "nothing loaded from elsewhere: {page}"
    );
    assert_eq!(page["errors"], json!([]), "{page}");
    assert_eq!(page["ready"], "ready", "{page}");
    assert_eq!(page["bus"], "bus connected", "{page}");
    assert_eq!(page["connTotal"], "4", "{page}");
    let conns = page["conns"].as_str().unwrap_or_default();
    // SSE is an HTTP stream too.
    assert!(
        conns.contains("http-stream4") && conns.contains("ws0"),
        "{page}"
    );
    assert_eq!(page["channels"], "3", "{page}");
    // Apps by connections: app-trades has 2, app-chat 2 (the resumed SSE too); the publisher
    // sends to `a`, which both apps hold, so both have a delivery rate.
    let apps = page["apps"].as_str().unwrap_or_default();
    assert!(
        apps.contains("app-trades2") && apps.contains("app-chat2"),
        "usage per app not shown: {page}"
    );
    let history = page["history"].as_str().unwrap_or_default();
    assert!(
        history.contains("resumes served from history1"),
        "history not shown: {page}"
    );
    assert_ne!(page["rateSent"], "–", "{page}");
    let p50 = page["latP50"].as_str().unwrap_or_default();
    assert!(
        p50.ends_with("ms") || p50.ends_with("µs") || p50.ends_with(" s"),
        "{page}"
    );
    assert!(
        page["routes"]
            .as_str()
            .unwrap_or_default()
            .contains("*,authz test"),
        "{page}"
    );
    let hash = hex(&Sha256::digest(b"leaked-key"));
    assert!(
        page["revocations"]
            .as_str()
            .unwrap_or_default()
            .contains(&hash[..16]),
        "revocation {hash} not shown: {page}"
    );
    assert!(shot.exists(), "screenshot {}", shot.display());
    drop(clients);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
