//! The HTTP publish API: cases 27, 28, raw channel publishing, body limits and auth.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{
    Gripmesh, HttpResponse, StreamClient, publish, publish_raw, publish_with_auth, raw_exchange,
    raw_status, wait_metric_at_least,
};

use crate::common::{
    BIN, Survivor, WAIT, open_stream, publish_items, start_standard, start_standard_origin,
    stream_item,
};
use crate::jwt::{now_unix, sign_hs256};

async fn post(gm: &Gripmesh, body: &str, headers: &[(&str, &str)]) -> HttpResponse {
    publish_raw(
        gm.publish_addr(),
        "POST",
        "/publish/",
        headers,
        body.to_string(),
    )
    .await
}

fn ok_body() -> String {
    json!({"items": [stream_item("c", "x\n")]}).to_string()
}

/// Case 27: every validation error has Pushpin's status and body, and nothing is published.
#[tokio::test]
async fn publish_validation_errors() {
    let (mut env, _origin) = start_standard(&[]).await;
    let mut survivor = Survivor::open(&env).await;
    let item = |v: Value| json!({"items": [v]}).to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("not JSON", "{not json".into(), "Body is not valid JSON.\n"),
        ("JSON array", "[]".into(), "Invalid format.\n"),
        ("JSON string", "\"items\"".into(), "Invalid format.\n"),
        (
            "no items",
            "{}".into(),
            "Invalid format: object does not contain 'items'\n",
        ),
        (
            "items not a list",
            r#"{"items":{}}"#.into(),
            "Invalid format: object contains 'items' with wrong type\n",
        ),
        (
            "item without channel",
            item(json!({"formats": {"http-stream": {"content": "x"}}})),
            "Invalid format: publish item object does not contain 'channel'\n",
        ),
        (
            "item without formats",
            item(json!({"channel": "survivor"})),
            "Invalid format: no formats specified\n",
        ),
        (
            "http-stream without content",
            item(json!({"channel": "survivor", "formats": {"http-stream": {}}})),
            "Invalid format: 'http-stream' does not contain 'content' or 'content-bin'\n",
        ),
        (
            "http-response without body",
            item(json!({"channel": "survivor", "formats": {"http-response": {"code": 200}}})),
            "Invalid format: 'http-response' does not contain 'body', 'body-bin', or 'body-patch'\n",
        ),
        (
            "ws-message without content",
            item(json!({"channel": "survivor", "formats": {"ws-message": {}}})),
            "Invalid format: 'ws-message' does not contain 'content' or 'content-bin'\n",
        ),
    ];
    let mut failures = Vec::new();
    for (name, body, expected) in &cases {
        let resp = post(&env.gm, body, &[("Content-Type", "application/json")]).await;
        if (resp.status, resp.text().as_str()) != (400, *expected) {
            failures.push(format!(
                "{name}: expected 400 {expected:?}, got {} {:?}",
                resp.status,
                resp.text()
            ));
        }
    }
    // Unknown action: 400 with an (empty-reason) "Invalid format" message.
    let resp = post(
        &env.gm,
        &item(json!({"channel": "survivor", "formats": {"http-stream": {"action": "bogus"}}})),
        &[],
    )
    .await;
    if resp.status != 400 || !resp.text().starts_with("Invalid format") {
        failures.push(format!(
            "unknown action: expected 400 Invalid format..., got {} {:?}",
            resp.status,
            resp.text()
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    survivor.check(&mut env, "invalid publishes").await;
}

/// Case 27: success bodies, content negotiation, methods and paths.
#[tokio::test]
async fn publish_api_responses() {
    let gm = Gripmesh::standalone(BIN, &[]).await;
    let addr = gm.publish_addr();

    let resp = post(&gm, &ok_body(), &[]).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "Published\n"));
    assert!(
        resp.header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain"),
        "content-type {:?}",
        resp.header("content-type")
    );

    let resp = post(&gm, &ok_body(), &[("Accept", "application/json")]).await;
    assert_eq!(resp.status, 200);
    let parsed: Value = serde_json::from_slice(&resp.body).expect("JSON body");
    assert_eq!(parsed, json!({"message": "Published"}));

    for accept in ["text/plain", "text/*", "*/*", "application/*"] {
        let resp = post(&gm, &ok_body(), &[("Accept", accept)]).await;
        assert_eq!(resp.status, 200, "Accept: {accept}");
    }

    let resp = post(&gm, &ok_body(), &[("Accept", "text/html")]).await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (
            406,
            "Not Acceptable. Supported formats are text/plain and application/json.\n"
        )
    );

    let resp = publish_raw(addr, "POST", "/publish", &[], ok_body()).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "Published\n"));

    for method in ["GET", "PUT", "DELETE"] {
        let resp = publish_raw(addr, method, "/publish/", &[], "").await;
        assert_eq!(
            (resp.status, resp.text()),
            (405, format!("Method not allowed: {method}.\n")),
            "{method} /publish/"
        );
        assert_eq!(resp.header("allow").as_deref(), Some("POST"), "{method}");
    }

    let resp = publish_raw(addr, "GET", "/", &[], "").await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "Pushpin API\n"));

    let resp = publish_raw(addr, "GET", "/no/such/path", &[], "").await;
    assert_eq!((resp.status, resp.text().as_str()), (404, "Not Found\n"));
}

/// Case 28: a batch with one invalid item is rejected whole; the valid item is not delivered.
#[tokio::test]
async fn publish_batch_is_atomic() {
    let (env, _origin) = start_standard(&[]).await;
    let mut client = open_stream(env.edge(), "test").await;
    let resp = publish(
        env.publish(),
        &json!({"items": [
            stream_item("test", "must-not-arrive\n"),
            {"channel": "test", "formats": {"http-stream": {}}}
        ]}),
    )
    .await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    publish_items(env.publish(), json!([stream_item("test", "marker\n")])).await;
    client.read_until("marker\n", WAIT).await;
    assert_eq!(client.received_text(), "hello\nmarker\n");
}

/// `POST /publish/<channel>/` with a raw body publishes it as http-stream content and
/// http-response body.
#[tokio::test]
async fn raw_channel_publish_reaches_stream_and_response_holds() {
    let (env, _origin) = start_standard(&[]).await;
    let mut stream = open_stream(env.edge(), "rawch").await;
    let edge = env.edge();
    let held =
        tokio::spawn(async move { testkit::http_get(edge, "/response?channel=rawch", &[]).await });
    wait_metric_at_least(env.admin(), "gripmesh_edge_subscriptions", 2.0, WAIT).await;
    let resp = publish_raw(
        env.publish(),
        "POST",
        "/publish/rawch/",
        &[("Content-Type", "text/plain")],
        "raw-payload",
    )
    .await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "Published\n"));
    stream.read_until("raw-payload", WAIT).await;
    assert_eq!(stream.received_text(), "hello\nraw-payload");
    let resp = tokio::time::timeout(WAIT, held)
        .await
        .expect("response hold answered")
        .expect("request task");
    assert_eq!((resp.status, resp.text().as_str()), (200, "raw-payload"));
}

/// Bodies over `--publish-max-body` ⇒ 413 `Request body too large.\n`; at the limit ⇒ accepted.
#[tokio::test]
async fn publish_body_limit_from_flag() {
    let (mut env, _origin) = start_standard(&["--publish-max-body", "1000"]).await;
    let mut survivor = Survivor::open(&env).await;
    let exact = |len: usize| {
        let base = json!({"items": [stream_item("survivor", "")]}).to_string();
        let pad = "p".repeat(len - base.len());
        let body = json!({"items": [stream_item("survivor", &pad)]}).to_string();
        assert_eq!(body.len(), len);
        body
    };
    let resp = post(&env.gm, &exact(1000), &[]).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "Published\n"));
    let resp = post(&env.gm, &exact(1001), &[]).await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (413, "Request body too large.\n")
    );
    survivor.check(&mut env, "oversized publish").await;
}

/// The default publish body limit is 1,000,000 bytes.
#[tokio::test]
async fn publish_body_limit_default_is_one_megabyte() {
    let (mut env, _origin) = start_standard(&[]).await;
    let mut survivor = Survivor::open(&env).await;
    let body = "x".repeat(1_000_001);
    let request = format!(
        "POST /publish/ HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = raw_exchange(env.publish(), request.as_bytes(), WAIT).await;
    assert_eq!(
        raw_status(&answer),
        Some(413),
        "answer: {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(300)])
    );
    assert!(
        String::from_utf8_lossy(&answer).ends_with("Request body too large.\n"),
        "answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    survivor.check(&mut env, "1 MB publish").await;
}

/// `--publish-token`: only `Authorization: Bearer <token>` may publish.
#[tokio::test]
async fn publish_token_auth() {
    let (env, _origin) = start_standard(&["--publish-token", "s3cret-token"]).await;
    let mut client = open_stream(env.edge(), "test").await;
    let body = json!({"items": [stream_item("test", "denied\n")]});
    let resp = publish(env.publish(), &body).await;
    assert_eq!(resp.status, 401, "no Authorization");
    for auth in [
        "Bearer wrong-token",
        "s3cret-token",
        "Basic czNjcmV0LXRva2VuOg==",
        "Bearer ",
    ] {
        let resp = publish_with_auth(env.publish(), &body, auth).await;
        assert_eq!(resp.status, 401, "Authorization: {auth}");
    }
    let ok = json!({"items": [stream_item("test", "allowed\n")]});
    let resp = publish_with_auth(env.publish(), &ok, "Bearer s3cret-token").await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "Published\n"));
    client.read_until("allowed\n", WAIT).await;
    assert_eq!(client.received_text(), "hello\nallowed\n");
}

/// `GRIPMESH_PUBLISH_TOKEN` in the environment works like `--publish-token`.
#[tokio::test]
async fn publish_token_from_environment() {
    let origin = start_standard_origin().await;
    let dir = testkit::TempDir::new();
    let routes = dir.write("routes", &format!("* {}\n", origin.target()));
    let gm = Gripmesh::standalone_with_env(
        BIN,
        &["--routes", routes.to_str().expect("utf-8 path")],
        &[("GRIPMESH_PUBLISH_TOKEN", "env-token")],
    )
    .await;
    let body = json!({"items": [stream_item("test", "x\n")]});
    assert_eq!(publish(gm.publish_addr(), &body).await.status, 401);
    let resp = publish_with_auth(gm.publish_addr(), &body, "Bearer env-token").await;
    assert_eq!(resp.status, 200);
}

/// `--publish-key`: a Bearer HS256 JWT signed with the key and not expired.
#[tokio::test]
async fn publish_key_jwt_auth() {
    const KEY: &str = "publish-key-0123456789abcdef";
    let (env, _origin) = start_standard(&["--publish-key", KEY]).await;
    let mut client = open_stream(env.edge(), "test").await;
    let body = json!({"items": [stream_item("test", "denied\n")]});
    let now = now_unix();
    let rejected = [
        ("no Authorization", None),
        ("raw key as bearer", Some(format!("Bearer {KEY}"))),
        (
            "wrong key",
            Some(format!(
                "Bearer {}",
                sign_hs256(&json!({"iss": "e2e", "exp": now + 600}), b"wrong-key")
            )),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                sign_hs256(&json!({"iss": "e2e", "exp": now - 60}), KEY.as_bytes())
            )),
        ),
        (
            "alg none",
            Some(format!(
                "Bearer {}.{}.",
                "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0",
                base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    json!({"iss": "e2e", "exp": now + 600}).to_string()
                )
            )),
        ),
        ("garbage", Some("Bearer not.a.jwt".to_string())),
    ];
    for (name, auth) in &rejected {
        let resp = match auth {
            Some(auth) => publish_with_auth(env.publish(), &body, auth).await,
            None => publish(env.publish(), &body).await,
        };
        assert_eq!(resp.status, 401, "{name}");
    }
    let token = sign_hs256(&json!({"iss": "e2e", "exp": now + 600}), KEY.as_bytes());
    let ok = json!({"items": [stream_item("test", "allowed\n")]});
    let resp = publish_with_auth(env.publish(), &ok, &format!("Bearer {token}")).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "Published\n"));
    client.read_until("allowed\n", WAIT).await;
    assert_eq!(client.received_text(), "hello\nallowed\n");
}

/// Publishing to a channel nobody listens on is fine (200) and harmless.
#[tokio::test]
async fn publish_without_subscribers_is_accepted() {
    let (env, _origin) = start_standard(&[]).await;
    publish_items(env.publish(), json!([stream_item("nobody", "x\n")])).await;
    let mut client = StreamClient::open(env.edge(), "/stream?channel=nobody", &[]).await;
    client.read_until("hello\n", WAIT).await;
    let late = client.read_for(Duration::from_millis(300)).await;
    assert_eq!(&late[..], b"", "an earlier publish was replayed");
}
