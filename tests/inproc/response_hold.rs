//! Response holds (long-polling): cases 12, 14, 15, 16, 17, 26 (response half).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{HttpResponse, Origin, OriginResponse, http_get, wait_metric_at_least, wait_until};
use tokio::task::JoinHandle;

use crate::common::{WAIT, assert_proxy_error, publish_items, start_standard, start_with_origin};

/// Sends `GET path` in the background; yields the response and how long it took.
fn spawn_get(edge: SocketAddr, path: &str) -> JoinHandle<(HttpResponse, Duration)> {
    let path = path.to_string();
    tokio::spawn(async move {
        let started = Instant::now();
        let resp = http_get(edge, &path, &[]).await;
        (resp, started.elapsed())
    })
}

/// Waits until the edge reports at least `n` subscriptions (the hold is live).
async fn wait_subscriptions(admin: SocketAddr, n: usize) {
    wait_metric_at_least(admin, "gripmesh_edge_subscriptions", n as f64, WAIT).await;
}

async fn join(task: JoinHandle<(HttpResponse, Duration)>) -> (HttpResponse, Duration) {
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("held request answered within 20 s")
        .expect("request task")
}

/// Case 12 (and 13's deviation): on timeout the client gets the origin's original response, and
/// the origin was asked only once.
#[tokio::test]
async fn response_hold_timeout_returns_original_response() {
    let (env, origin) = start_standard(&[]).await;
    let (resp, took) = join(spawn_get(env.edge(), "/response?channel=resp&timeout=5")).await;
    assert!(
        took >= Duration::from_secs(4) && took <= Duration::from_secs(9),
        "answered after {took:?}, expected ≈5 s"
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-orig").as_deref(), Some("yes"));
    assert_eq!(resp.text(), "timeout-body\n");
    assert_eq!(resp.header("content-length").as_deref(), Some("13"));
    assert_eq!(resp.header_names_with_prefix("grip-"), Vec::<String>::new());
    // Deliberate deviation from Pushpin (docs/protocol.md, "GRIP at the edge"): no re-request of the origin ~1 s
    // after the channel's first subscription.
    assert_eq!(
        origin.request_count(),
        1,
        "the origin was asked more than once"
    );
}

/// Case 14: Grip-Timeout below 5 is raised to 5; without Grip-Timeout the default is 55 s.
#[tokio::test]
async fn grip_timeout_is_clamped_and_defaults_to_55() {
    let (env, _origin) = start_standard(&[]).await;
    let default_hold = spawn_get(env.edge(), "/response?channel=default-timeout");
    let (resp, took) = join(spawn_get(env.edge(), "/response?channel=short&timeout=1")).await;
    assert_eq!(resp.text(), "timeout-body\n");
    assert!(
        took >= Duration::from_secs(4) && took <= Duration::from_secs(9),
        "Grip-Timeout: 1 answered after {took:?}, expected 5 s"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !default_hold.is_finished(),
        "a hold without Grip-Timeout was answered within ~7 s (default is 55 s)"
    );
    default_hold.abort();
}

/// Case 15: a published http-response answers the hold: its code/reason, the origin's headers
/// overlaid by the published ones (Grip-* dropped), its body, a recomputed Content-Length.
#[tokio::test]
async fn response_hold_publish_overlays_origin_headers() {
    let (env, _origin) = start_standard(&[]).await;
    let held = spawn_get(env.edge(), "/response?channel=resp");
    wait_subscriptions(env.admin(), 1).await;
    publish_items(
        env.publish(),
        json!([{"channel": "resp", "formats": {"http-response": {
            "code": 201, "reason": "Made",
            "headers": {"X-Pub": "1", "Grip-Foo": "dropped"},
            "body": "pushed\n"
        }}}]),
    )
    .await;
    let (resp, _) = join(held).await;
    assert_eq!((resp.status, resp.reason.as_str()), (201, "Made"));
    assert_eq!(resp.header("content-type").as_deref(), Some("text/plain"));
    assert_eq!(resp.header("x-orig").as_deref(), Some("yes"));
    assert_eq!(resp.header("x-pub").as_deref(), Some("1"));
    assert_eq!(resp.header_names_with_prefix("grip-"), Vec::<String>::new());
    assert_eq!(resp.text(), "pushed\n");
    assert_eq!(resp.header("content-length").as_deref(), Some("7"));
}

/// Case 15 (defaults): `body-bin` only ⇒ `200 OK` with the decoded body.
#[tokio::test]
async fn response_hold_publish_defaults_and_body_bin() {
    let (env, _origin) = start_standard(&[]).await;
    let held = spawn_get(env.edge(), "/response?channel=resp");
    wait_subscriptions(env.admin(), 1).await;
    publish_items(
        env.publish(),
        json!([{"channel": "resp", "formats": {"http-response": {"body-bin": "aGk="}}}]),
    )
    .await;
    let (resp, _) = join(held).await;
    assert_eq!((resp.status, resp.reason.as_str()), (200, "OK"));
    assert_eq!(resp.text(), "hi");
    assert_eq!(resp.header("content-length").as_deref(), Some("2"));
}

/// Format isolation for response holds: http-stream items don't answer them; one http-response
/// publish answers every hold on the channel.
#[tokio::test]
async fn response_holds_take_only_http_response_and_all_get_it() {
    let (env, _origin) = start_standard(&[]).await;
    let holds: Vec<_> = (0..3)
        .map(|_| spawn_get(env.edge(), "/response?channel=multi"))
        .collect();
    wait_subscriptions(env.admin(), 3).await;
    publish_items(
        env.publish(),
        json!([{"channel": "multi", "formats": {"http-stream": {"content": "as-stream\n"}}}]),
    )
    .await;
    publish_items(
        env.publish(),
        json!([{"channel": "multi", "formats": {"http-response": {"body": "real\n"}}}]),
    )
    .await;
    for held in holds {
        let (resp, _) = join(held).await;
        assert_eq!((resp.status, resp.text().as_str()), (200, "real\n"));
    }
}

/// Case 26 (response half): an instruct body over 100,000 bytes on a response hold ⇒ 502.
#[tokio::test]
async fn response_hold_with_oversized_instruct_body_is_502() {
    let origin = Origin::start(|_| OriginResponse::response_hold("big", vec![b'x'; 150_000])).await;
    let env = start_with_origin(&origin, &[]).await;
    let resp = http_get(env.edge(), "/large", &[]).await;
    assert_proxy_error(&resp, "150,000-byte response-hold instruct body");
}

/// Case 16 (Pushpin prev-id on response holds): a hold whose prev-id is behind the channel's
/// last id is retried against the origin with `Grip-Last`.
#[tokio::test]
async fn response_hold_prev_id_conflict_retries_with_grip_last() {
    let origin = Origin::start(|_| {
        OriginResponse::text("timeout-body\n")
            .header("Grip-Hold", "response")
            .header("Grip-Channel", "pc; prev-id=1")
    })
    .await;
    let env = start_with_origin(&origin, &[]).await;
    let first = spawn_get(env.edge(), "/prev");
    wait_subscriptions(env.admin(), 1).await;
    publish_items(
        env.publish(),
        json!([{"channel": "pc", "id": "2", "prev-id": "1",
                "formats": {"http-response": {"body": "two\n"}}}]),
    )
    .await;
    let (resp, _) = join(first).await;
    assert_eq!(resp.text(), "two\n");
    let second = spawn_get(env.edge(), "/prev");
    wait_until(WAIT, "origin to be asked again with Grip-Last", || async {
        origin
            .requests()
            .iter()
            .any(|r| r.header("grip-last").as_deref() == Some("pc; last-id=1"))
    })
    .await;
    second.abort();
}

/// Case 17 (Pushpin hint): an http-response `hint` makes the edge re-request the origin.
#[tokio::test]
async fn response_hold_hint_rerequests_origin() {
    let (env, origin) = start_standard(&[]).await;
    let held = spawn_get(env.edge(), "/response?channel=hc");
    wait_subscriptions(env.admin(), 1).await;
    publish_items(
        env.publish(),
        json!([{"channel": "hc", "formats": {"http-response": {"action": "hint"}}}]),
    )
    .await;
    origin.wait_for_requests(2, WAIT).await;
    assert!(
        !held.is_finished(),
        "the hint itself must not answer the client"
    );
    held.abort();
}

/// Pushpin prev-id on response holds, while holding: a publish whose prev-id is not the id
/// the origin knew means the origin's answer is out of date, so the edge asks again with
/// `Grip-Last` instead of delivering it.
#[tokio::test]
async fn response_hold_gap_while_holding_rerequests_with_grip_last() {
    let origin = Origin::start(|_| {
        OriginResponse::text("timeout-body\n")
            .header("Grip-Hold", "response")
            .header("Grip-Channel", "gap; prev-id=1")
    })
    .await;
    let env = start_with_origin(&origin, &[]).await;
    let held = spawn_get(env.edge(), "/gap");
    wait_subscriptions(env.admin(), 1).await;
    publish_items(
        env.publish(),
        json!([{"channel": "gap", "id": "3", "prev-id": "2",
                "formats": {"http-response": {"body": "three\n"}}}]),
    )
    .await;
    wait_until(WAIT, "origin to be asked again with Grip-Last", || async {
        origin
            .requests()
            .iter()
            .any(|r| r.header("grip-last").as_deref() == Some("gap; last-id=1"))
    })
    .await;
    // This origin keeps answering from its stale state, so the edge gives up after a few
    // re-requests (502); what matters is that the out-of-order item never reached the client.
    let (resp, _) = join(held).await;
    assert_ne!(
        resp.text(),
        "three\n",
        "the out-of-order item must not answer the hold"
    );
    assert!(
        origin.request_count() >= 2,
        "the origin was asked again instead"
    );
}
