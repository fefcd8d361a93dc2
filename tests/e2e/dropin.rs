//! gripmesh as a drop-in for Pushpin with stock GRIP clients: `Grip-Sig` signed with
//! Pushpin's default key when no `--sig-key` is given (and one warning on a public listener),
//! CORS preflights answered by the built-in test target, publish JWTs checked for `iss`.

use std::time::Duration;

use serde_json::json;
use testkit::{Gripmesh, Origin, OriginResponse, http_get, http_request, publish_with_auth};

use crate::common::{BIN, WAIT, start, start_with_origin};
use crate::jwt::{now_unix, sign_hs256, verify_hs256};

/// The warning's distinctive words (the key itself is named in it).
const DEFAULT_KEY_WARNING: &str = "well-known default key";

/// Without `--sig-key` every origin request carries a `Grip-Sig` signed with Pushpin's default
/// `changeme`, iss `pushpin` — what stock GRIP libraries check for. On a loopback listener no
/// warning is logged.
#[tokio::test]
async fn default_grip_sig_is_pushpins_changeme() {
    let origin = Origin::start(|_| OriginResponse::text("ok\n")).await;
    let env = start_with_origin(&origin, &[]).await;
    let resp = http_get(env.edge(), "/x", &[]).await;
    assert_eq!(resp.status, 200);
    let req = &origin.wait_for_requests(1, WAIT).await[0];
    let sig = req
        .header("grip-sig")
        .expect("a Grip-Sig without --sig-key, as stock Pushpin sends");
    let claims = verify_hs256(&sig, b"changeme").expect("signed with Pushpin's default key");
    assert_eq!(claims["iss"], "pushpin");
    assert!(claims["exp"].as_u64().is_some_and(|e| e > now_unix()));
    assert!(
        !env.gm.stderr_text().contains(DEFAULT_KEY_WARNING),
        "no warning on a loopback listener:\n{}",
        env.gm.stderr_text()
    );
}

/// The default key on a non-loopback client listener is said once at startup; an explicit
/// `--sig-key` silences it.
#[tokio::test]
async fn default_key_on_a_public_listener_warns_once() {
    let gm = Gripmesh::standalone(BIN, &["--listen", "0.0.0.0:0"]).await;
    let stderr = gm.stderr_text();
    assert_eq!(
        stderr.matches(DEFAULT_KEY_WARNING).count(),
        1,
        "exactly one warning expected:\n{stderr}"
    );
    assert!(stderr.contains("--sig-key"), "the warning names the fix");
    let gm = Gripmesh::standalone(BIN, &["--listen", "0.0.0.0:0", "--sig-key", "s3cret"]).await;
    assert!(
        !gm.stderr_text().contains(DEFAULT_KEY_WARNING),
        "{}",
        gm.stderr_text()
    );
}

/// The built-in test target answers a CORS preflight at once (with `aco`, the CORS headers a
/// browser needs) instead of holding it like a stream.
#[tokio::test]
async fn test_target_answers_cors_preflights() {
    let env = start("*,aco test\n", &[]).await;
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        http_request(
            env.edge(),
            "OPTIONS",
            "/sse?channel=x",
            &[
                ("Origin", "http://page.example"),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "last-event-id"),
            ],
            "",
        ),
    )
    .await
    .expect("the preflight is answered, not held");
    assert_eq!(resp.status, 204);
    assert_eq!(
        resp.header("access-control-allow-origin").as_deref(),
        Some("http://page.example")
    );
    assert_eq!(
        resp.header("access-control-allow-headers").as_deref(),
        Some("last-event-id")
    );
}

/// `--publish-iss`: a publish JWT signed with the right key is accepted only with that `iss`.
#[tokio::test]
async fn publish_jwt_iss_is_checked_when_configured() {
    const KEY: &str = "publish-key-0123456789";
    let gm = Gripmesh::standalone(BIN, &["--publish-key", KEY, "--publish-iss", "backend"]).await;
    let body = json!({"items": [{"channel": "c", "formats": {"http-stream": {"content": "x"}}}]});
    let token = |iss: &str| {
        let jwt = sign_hs256(
            &json!({"iss": iss, "exp": now_unix() + 600}),
            KEY.as_bytes(),
        );
        format!("Bearer {jwt}")
    };
    let ok = publish_with_auth(gm.publish_addr(), &body, &token("backend")).await;
    assert_eq!((ok.status, ok.text().as_str()), (200, "Published\n"));
    let wrong = publish_with_auth(gm.publish_addr(), &body, &token("someone-else")).await;
    assert_eq!(wrong.status, 401, "a JWT with another iss is refused");
}
