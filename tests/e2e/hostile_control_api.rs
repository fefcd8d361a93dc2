//! The control and authz side under attack (docs/protocol.md, "Publishing", "Auth sidecar"): the trust boundaries an attacker meets
//! at the auth sidecar and the control API, tried as an attacker would, against the real binary.
//!
//! - the decision cache is bounded and reused only for exactly what the gateway decided on;
//! - revoking a credential closes every connection that presented it, in any source;
//! - the gateway sees the real client address, the origin never sees forged gateway headers;
//! - every control listener is loopback-only or authenticated (HTTP and gRPC);
//! - the HTTP control API refuses browser cross-site requests and DNS rebinding;
//! - regression guards: publish auth on every endpoint, HS256-only JWTs, no secrets in logs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use testkit::ws::WsConn;
use testkit::{
    Gripmesh, Origin, OriginResponse, RecordedRequest, StreamClient, StreamEnd, http_get,
    http_request, metric_value, query_param, run, wait_until,
};

use crate::common::{BIN, WAIT, start};
use crate::jwt::{now_unix, sign_hs256};

/// Revocations take effect within 1 s (docs/protocol.md, "Auth sidecar"); room for a loaded machine.
const REVOKE_WAIT: Duration = Duration::from_secs(5);

/// A fake forward-auth gateway deciding on the key (`?apikey=`, else `X-Api-Key`) and the
/// path and query it is asked about: keys in `allowed` pass unless the query names a channel
/// in `forbidden_channels`; anything else gets 401 with `deny_body`.
struct Gateway {
    origin: Origin,
    allowed: Arc<Mutex<Vec<String>>>,
}

impl Gateway {
    async fn start(allowed: &[&str], forbidden_channels: &[&str], deny_body: String) -> Gateway {
        let allowed: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(
            allowed.iter().map(|k| (*k).to_owned()).collect(),
        ));
        let forbidden: Vec<String> = forbidden_channels.iter().map(|c| (*c).to_owned()).collect();
        let origin = Origin::start({
            let allowed = allowed.clone();
            move |req| {
                let key = key_of(&req);
                let channel = query_param(&req.uri, "channel").unwrap_or_default();
                let ok = key
                    .as_ref()
                    .is_some_and(|k| allowed.lock().expect("keys").contains(k))
                    && !forbidden.contains(&channel);
                if ok {
                    OriginResponse::new(200).header(
                        "X-Developer-App",
                        &format!("app-{}", key.unwrap_or_default()),
                    )
                } else {
                    OriginResponse::new(401)
                        .header("Content-Type", "text/plain")
                        .body(deny_body.clone())
                }
            }
        })
        .await;
        Gateway { origin, allowed }
    }

    fn url(&self) -> String {
        format!("http://{}", self.origin.addr())
    }

    fn calls(&self) -> Vec<RecordedRequest> {
        self.origin.requests()
    }

    fn call_count(&self) -> usize {
        self.origin.request_count()
    }

    fn forget(&self, key: &str) {
        self.allowed.lock().expect("keys").retain(|k| k != key);
    }
}

fn key_of(req: &RecordedRequest) -> Option<String> {
    query_param(&req.uri, "apikey")
        .filter(|k| !k.is_empty())
        .or_else(|| req.header("x-api-key"))
}

/// `POST /authz/revoke {"credential": key}` with optional extra headers; asserts 200.
async fn revoke(publish: SocketAddr, key: &str, headers: &[(&str, &str)]) {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    let resp = http_request(
        publish,
        "POST",
        "/authz/revoke",
        &h,
        json!({ "credential": key }).to_string(),
    )
    .await;
    assert_eq!(resp.status, 200, "revoke: {}", resp.text());
}

// ---------------------------------------------------------------------------------------------
// Finding 3: the decision cache is bounded.

/// 300 random `?apikey=` values against a gateway that denies with a 10 KB body: the cache
/// gauge never passes `--authz-cache-entries` (50) and the relayed deny body is cut to 4 KB.
#[tokio::test]
async fn authz_cache_stays_within_its_bound_under_random_keys() {
    let gw = Gateway::start(&[], &[], "x".repeat(10_000)).await;
    let env = start(
        "*,authz test\n",
        &["--authz-gateway", &gw.url(), "--authz-cache-entries", "50"],
    )
    .await;
    let edge = env.edge();
    let mut max_seen = 0.0f64;
    for round in 0..10 {
        let answers = futures_util::future::join_all((0..30).map(|i| async move {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let key = format!("rnd-{round}-{i}-{nanos}");
            http_get(edge, &format!("/stream?apikey={key}"), &[]).await
        }))
        .await;
        for a in &answers {
            assert_eq!(a.status, 401);
            assert_eq!(a.body.len(), 4096, "deny bodies are capped at 4 KB");
        }
        let entries = metric_value(env.admin(), "gripmesh_authz_cache_entries")
            .await
            .expect("gripmesh_authz_cache_entries is exported");
        max_seen = max_seen.max(entries);
        assert!(entries <= 50.0, "round {round}: {entries} cached decisions");
    }
    assert!(max_seen >= 40.0, "the cache was used: {max_seen}");
    assert_eq!(gw.call_count(), 300, "every new key asked the gateway");
    let bytes = metric_value(env.admin(), "gripmesh_authz_cache_bytes")
        .await
        .expect("gripmesh_authz_cache_bytes is exported");
    assert!(
        bytes > 0.0 && bytes <= 50.0 * 6_000.0,
        "cache bytes {bytes} for at most 50 capped entries"
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 10: a cached decision is reused only for the same credentials and request.

/// A key allowed on one channel is not allowed, from the cache, on a channel the gateway
/// refuses; nor is a decision reused when a second credential is added. The same request
/// (credential parameter anywhere in the query) is answered from the cache.
#[tokio::test]
async fn cached_allow_is_reused_only_for_the_same_request_and_credentials() {
    let gw = Gateway::start(&["k1"], &["secret"], "denied\n".into()).await;
    let env = start("*,authz test\n", &["--authz-gateway", &gw.url()]).await;
    let edge = env.edge();

    let ok = StreamClient::open(edge, "/stream?channel=public&apikey=k1", &[]).await;
    assert_eq!(ok.status, 200);
    assert_eq!(gw.call_count(), 1);
    let again = StreamClient::open(edge, "/stream?apikey=k1&channel=public", &[]).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        gw.call_count(),
        1,
        "the same request is answered from the cache"
    );

    let refused = http_get(edge, "/stream?channel=secret&apikey=k1", &[]).await;
    assert_eq!(
        (refused.status, refused.text().as_str()),
        (401, "denied\n"),
        "a cached allow for another query must not be reused"
    );
    assert_eq!(gw.call_count(), 2);

    // Another path is another request (the built-in test origin answers it 404, after
    // authorization).
    let other_path = http_get(edge, "/other?channel=public&apikey=k1", &[]).await;
    assert_eq!(other_path.status, 404);
    assert_eq!(gw.call_count(), 3);

    // A second credential (which the gateway may read instead) is a different request.
    let two = StreamClient::open(
        edge,
        "/stream?channel=public&apikey=k1",
        &[("X-Api-Key", "other")],
    )
    .await;
    assert_eq!(two.status, 200);
    assert_eq!(gw.call_count(), 4, "two credentials are not one credential");
    let calls = gw.calls();
    assert_eq!(
        calls[3].header("x-api-key").as_deref(),
        Some("other"),
        "the gateway got both credentials"
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 9: revocation closes every connection that presented the credential, in any source.

/// `?apikey=alias` + `X-Api-Key: good` (the gateway reads the query first): revoking `good`
/// closes the WebSocket (4401) and the stream, and the next connection presenting it is asked
/// of the gateway again — the alias cannot ride the cached allow.
#[tokio::test]
async fn revoking_any_presented_credential_closes_the_connection() {
    let gw = Gateway::start(&["alias", "good"], &[], "denied\n".into()).await;
    let env = start(
        "*,authz test\n",
        &["--authz-gateway", &gw.url(), "--revocation-ttl", "2"],
    )
    .await;
    let edge = env.edge();
    let both = [("X-Api-Key", "good")];
    let mut ws = WsConn::connect(edge, "/ws?channel=rv&apikey=alias", &both).await;
    let mut stream = StreamClient::open(edge, "/stream?channel=rv&apikey=alias", &both).await;
    assert_eq!(stream.status, 200);
    let mut bystander = StreamClient::open(edge, "/stream?channel=rv&apikey=alias", &[]).await;
    assert_eq!(bystander.status, 200);
    stream.read_until("stream open", WAIT).await;
    bystander.read_until("stream open", WAIT).await;
    let calls_before = gw.call_count();

    revoke(env.publish(), "good", &[]).await;
    assert_eq!(ws.expect_close(REVOKE_WAIT).await.0, 4401);
    assert_eq!(stream.wait_end(REVOKE_WAIT).await, StreamEnd::Clean);

    // The connection that presented only `alias` is not affected.
    assert!(
        bystander
            .try_read_until("never", Duration::from_millis(300))
            .await
            .is_none(),
        "the alias-only stream stays open"
    );
    assert!(
        bystander.end().is_none(),
        "the alias-only stream stays open"
    );

    // While the revocation lasts (--revocation-ttl 2; docs/protocol.md, "Cluster state") a connection presenting `good`
    // next to `alias` is refused without a gateway call; after it, it is asked of the gateway
    // again instead of riding the cached allow.
    gw.forget("good");
    let mut tries = 0;
    let again = loop {
        let c = StreamClient::open(edge, "/stream?channel=rv&apikey=alias", &both).await;
        if c.status != 403 {
            break c;
        }
        tries += 1;
        assert!(tries < 100, "still refused long after the revocation TTL");
        assert_eq!(
            gw.call_count(),
            calls_before,
            "no gateway call while revoked"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        gw.call_count(),
        calls_before + 1,
        "the cached decision for alias+good was dropped"
    );
    // The fake gateway reads `?apikey=` first, so it still allows: what matters is that it
    // was asked.
    assert_eq!(again.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Finding 11: the gateway sees the real client address.

/// Whatever `X-Forwarded-For` the client sends, the gateway's last (and only) entry is the
/// address the edge saw.
#[tokio::test]
async fn gateway_sees_the_real_client_address_last_in_x_forwarded_for() {
    let gw = Gateway::start(&["k"], &[], "denied\n".into()).await;
    let env = start("*,authz test\n", &["--authz-gateway", &gw.url()]).await;
    for forged in ["6.6.6.6", "10.0.0.1, 6.6.6.6", ""] {
        let headers: Vec<(&str, &str)> = if forged.is_empty() {
            vec![]
        } else {
            vec![("X-Forwarded-For", forged)]
        };
        // A distinct query per round, so each round reaches the gateway.
        let path = format!("/stream?channel=x{}&apikey=k", forged.len());
        let resp = StreamClient::open(env.edge(), &path, &headers).await;
        assert_eq!(resp.status, 200);
        let call = gw.calls().pop().expect("the gateway was asked");
        let xff = call.header_all("x-forwarded-for");
        let last = xff
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .next_back()
            .map(str::to_owned);
        assert_eq!(
            last.as_deref(),
            Some("127.0.0.1"),
            "forged {forged:?}: gateway saw X-Forwarded-For {xff:?}"
        );
        assert!(
            !xff.iter().any(|v| v.contains("6.6.6.6")),
            "the client's claim is dropped: {xff:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 12: forged gateway headers never reach the origin.

/// On a fail-open route with the gateway down, on an allow, and with a custom
/// `--forward-headers`, client-sent copies of the forwarded headers never reach the origin.
#[tokio::test]
async fn forged_forward_headers_never_reach_the_origin() {
    let origin = Origin::start(|_| OriginResponse::stream_hold("fh", "hello\n")).await;
    let dead = format!("http://{}", Origin::refusing_addr());
    let env = start(
        &format!("*,authz,authz_fail=open {}\n", origin.target()),
        &["--authz-gateway", &dead],
    )
    .await;
    let forged = [
        ("X-Developer-App", "forged-app"),
        ("X-Api-Product", "forged-product"),
        ("X-Auth-Subject", "forged-subject"),
        ("X-Other", "kept"),
    ];
    let mut s = StreamClient::open(env.edge(), "/stream?apikey=k", &forged).await;
    assert_eq!(s.status, 200, "fail-open lets the client through");
    s.read_until("hello\n", WAIT).await;
    let seen = origin.requests().pop().expect("origin was asked");
    for (name, _) in &forged[..3] {
        assert_eq!(
            seen.header(name),
            None,
            "{name} reached the origin on fail-open"
        );
    }
    assert_eq!(seen.header("x-other").as_deref(), Some("kept"));

    // A custom list: those names are the ones stripped, on allow too.
    let origin2 = Origin::start(|_| OriginResponse::stream_hold("fh", "hello\n")).await;
    let gw = Gateway::start(&["k"], &[], "denied\n".into()).await;
    let env2 = start(
        &format!("*,authz {}\n", origin2.target()),
        &[
            "--authz-gateway",
            &gw.url(),
            "--forward-headers",
            "X-Tenant,X-Developer-App",
        ],
    )
    .await;
    let mut s2 = StreamClient::open(
        env2.edge(),
        "/stream?apikey=k",
        &[("X-Tenant", "forged-tenant"), ("X-Developer-App", "forged")],
    )
    .await;
    assert_eq!(s2.status, 200);
    s2.read_until("hello\n", WAIT).await;
    let seen = origin2.requests().pop().expect("origin was asked");
    assert_eq!(seen.header("x-tenant"), None);
    assert_eq!(
        seen.header_all("x-developer-app"),
        vec!["app-k".to_owned()],
        "the gateway's answer replaces the client's"
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 5: one loopback-or-auth rule for every control listener.

fn one_line(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// Without `--publish-token`/`--publish-key`, a gRPC (or HTTP) control listener on a
/// non-loopback address refuses to start with exit 64 and one line naming the flag — for
/// standalone, control and demo; a token or `--publish-insecure` lets it start.
#[tokio::test]
async fn control_listeners_are_loopback_or_authenticated() {
    let base = [
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--publish-listen",
        "127.0.0.1:0",
    ];
    let mut standalone = vec!["standalone"];
    standalone.extend_from_slice(&base);
    standalone.extend_from_slice(&["--grpc-listen", "0.0.0.0:0"]);
    let control = [
        "control",
        "--nats",
        "nats://127.0.0.1:1",
        "--admin-listen",
        "127.0.0.1:0",
        "--publish-listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "0.0.0.0:0",
    ];
    let mut demo = vec!["demo"];
    demo.extend_from_slice(&base);
    demo.extend_from_slice(&["--grpc-listen", "0.0.0.0:0"]);
    for args in [&standalone[..], &control[..], &demo[..]] {
        let (status, _, stderr) = run(BIN, args).await;
        assert_eq!(status.code(), Some(64), "{args:?}: {stderr}");
        let lines = one_line(&stderr);
        assert_eq!(lines.len(), 1, "{args:?}: one line expected: {stderr}");
        assert!(lines[0].contains("--grpc-listen"), "{}", lines[0]);
    }
    // The default control listeners (0.0.0.0) need a token too.
    let (status, _, stderr) = run(BIN, &["control", "--nats", "nats://127.0.0.1:1"]).await;
    assert_eq!(status.code(), Some(64), "{stderr}");

    for extra in [["--publish-token", "t0k3n"], ["--publish-insecure", "true"]] {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(&["--grpc-listen", "0.0.0.0:0"]);
        if extra[0] == "--publish-insecure" {
            args.push(extra[0]);
        } else {
            args.extend_from_slice(&extra);
        }
        let mut full = vec!["standalone"];
        full.extend_from_slice(&args);
        let gm = Gripmesh::start(BIN, &full, &[]).await;
        assert!(gm.listener_addr("grpc").is_some(), "{extra:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 8: cross-site requests and DNS rebinding.

/// The unauthenticated loopback control API: a cross-site form POST (Origin of another site,
/// or `Sec-Fetch-Site: cross-site`) gets 403 and publishes nothing; a rebound `Host` gets 403
/// (so `GET /routes` cannot be read); `POST /routes` gets 405 with `Allow: GET, PUT`. A
/// publisher without browser headers, or a same-origin page, is served.
#[tokio::test]
async fn control_api_refuses_cross_site_requests_and_dns_rebinding() {
    let env = start("* test\n", &[]).await;
    let publish = env.publish();
    let mut stream = StreamClient::open(env.edge(), "/stream?channel=xs", &[]).await;
    stream.read_until("stream open", WAIT).await;
    let item =
        json!({"items": [{"channel": "xs", "formats": {"http-stream": {"content": "forged\n"}}}]})
            .to_string();
    let form = [("Content-Type", "text/plain")];
    for headers in [
        vec![form[0], ("Origin", "http://evil.example")],
        vec![form[0], ("Origin", "null")],
        vec![form[0], ("Sec-Fetch-Site", "cross-site")],
    ] {
        let resp = http_request(publish, "POST", "/publish/", &headers, item.clone()).await;
        assert_eq!(resp.status, 403, "{headers:?}: {}", resp.text());
    }
    let evil_routes = http_request(
        publish,
        "PUT",
        "/routes",
        &[("Origin", "http://evil.example")],
        "* 127.0.0.1:9\n",
    )
    .await;
    assert_eq!(evil_routes.status, 403);
    for host in [
        "rebind.evil.example",
        &format!("evil.example:{}", publish.port()),
    ] {
        let read = http_get(publish, "/routes", &[("Host", host)]).await;
        assert_eq!(read.status, 403, "Host {host}: {}", read.text());
        assert!(!read.text().contains("test"), "no route table leaked");
    }
    let post_routes = http_request(publish, "POST", "/routes", &[], "* 127.0.0.1:9\n").await;
    assert_eq!(post_routes.status, 405);
    assert_eq!(post_routes.header("allow").as_deref(), Some("GET, PUT"));
    let routes = http_get(publish, "/routes", &[]).await;
    assert_eq!(routes.status, 200);
    assert!(
        routes.text().contains("* test"),
        "nothing replaced the table"
    );

    // Nothing forged was delivered; a plain publisher and a same-origin page are served.
    let own_origin = format!("http://{publish}");
    let ok = http_request(
        publish,
        "POST",
        "/publish/",
        &[("Origin", own_origin.as_str()), ("Host", "localhost")],
        json!({"items": [{"channel": "xs", "formats": {"http-stream": {"content": "real\n"}}}]})
            .to_string(),
    )
    .await;
    assert_eq!(
        ok.status,
        403,
        "Origin host differs from Host: {}",
        ok.text()
    );
    let ok = http_request(
        publish,
        "POST",
        "/publish/",
        &[("Origin", own_origin.as_str())],
        json!({"items": [{"channel": "xs", "formats": {"http-stream": {"content": "real\n"}}}]})
            .to_string(),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let got = String::from_utf8_lossy(&stream.read_until("real\n", WAIT).await).into_owned();
    assert!(!got.contains("forged"), "{got}");

    // Authenticated: any Host is fine (a Service name), cross-site still is not.
    let env = start("* test\n", &["--publish-token", "tok"]).await;
    let auth = [
        ("Authorization", "Bearer tok"),
        ("Host", "gripmesh-control:5561"),
    ];
    let read = http_get(env.publish(), "/routes", &auth).await;
    assert_eq!(read.status, 200, "{}", read.text());
    let mut cross = auth.to_vec();
    cross.push(("Origin", "http://evil.example"));
    let read = http_get(env.publish(), "/routes", &cross).await;
    assert_eq!(read.status, 403);
}

// ---------------------------------------------------------------------------------------------
// Regression guards.

/// With `--publish-token`, every HTTP control endpoint answers 401 without the token and works
/// with it: publish (batch and per channel), `GET`/`PUT /routes`, `POST /authz/revoke`.
#[tokio::test]
async fn publish_auth_guards_every_http_control_endpoint() {
    let env = start("* test\n", &["--publish-token", "s3cr3t"]).await;
    let p = env.publish();
    let batch =
        json!({"items": [{"channel": "a", "formats": {"http-stream": {"content": "x\n"}}}]})
            .to_string();
    let calls: [(&str, &str, String); 5] = [
        ("POST", "/publish/", batch),
        ("POST", "/publish/a/", "x".into()),
        ("GET", "/routes", String::new()),
        ("PUT", "/routes", "* test\n".into()),
        (
            "POST",
            "/authz/revoke",
            json!({"credential": "k"}).to_string(),
        ),
    ];
    for (method, path, body) in &calls {
        for bad in [vec![], vec![("Authorization", "Bearer wrong")]] {
            let resp = http_request(p, method, path, &bad, body.clone()).await;
            assert_eq!(resp.status, 401, "{method} {path} {bad:?}");
        }
        let good = [("Authorization", "Bearer s3cr3t")];
        let resp = http_request(p, method, path, &good, body.clone()).await;
        assert_eq!(resp.status, 200, "{method} {path}: {}", resp.text());
    }
}

/// `--publish-key`: only HS256 JWTs signed with the key are accepted; `alg: none`, an RS256
/// header over an HMAC signature, an expired token and another key's token get 401.
#[tokio::test]
async fn publish_key_accepts_hs256_only() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let env = start("* test\n", &["--publish-key", "pub-key"]).await;
    let now = now_unix();
    let claims = json!({"iss": "me", "exp": now + 600});
    let good = sign_hs256(&claims, b"pub-key");
    let payload = good.split('.').nth(1).expect("payload").to_owned();
    let none = format!(
        "{}.{payload}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string())
    );
    let rs256 = {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "typ": "JWT"}).to_string());
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"pub-key").expect("key");
        mac.update(format!("{header}.{payload}").as_bytes());
        format!(
            "{header}.{payload}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    };
    let expired = sign_hs256(&json!({"iss": "me", "exp": now - 10}), b"pub-key");
    let other = sign_hs256(&claims, b"other-key");
    let body = json!({"items": [{"channel": "a", "formats": {"http-stream": {"content": "x\n"}}}]})
        .to_string();
    for (name, token, want) in [
        ("none", none, 401),
        ("rs256", rs256, 401),
        ("expired", expired, 401),
        ("other key", other, 401),
        ("hs256", good, 200),
    ] {
        let auth = format!("Bearer {token}");
        let resp = http_request(
            env.publish(),
            "POST",
            "/publish/",
            &[("Authorization", auth.as_str())],
            body.clone(),
        )
        .await;
        assert_eq!(resp.status, want, "{name}: {}", resp.text());
    }
}

/// At debug level, with every secret in play (publish token, API keys in the query and in
/// headers, a bearer credential, a revoked key), the logs contain none of them.
#[tokio::test]
async fn no_secrets_in_debug_logs() {
    let secrets = [
        "pubtok-9f8e7d",
        "qkey-1a2b3c",
        "hkey-4d5e6f",
        "bearer-7a8b9c",
        "revoked-0d1e2f",
    ];
    let gw = Gateway::start(&["qkey-1a2b3c", "hkey-4d5e6f"], &[], "denied\n".into()).await;
    let dir = testkit::TempDir::new();
    let routes = dir.write("routes", "*,authz test\n");
    let gm = Gripmesh::standalone_with_env(
        BIN,
        &[
            "--routes",
            routes.to_str().expect("utf-8 path"),
            "--authz-gateway",
            &gw.url(),
            "--publish-token",
            secrets[0],
        ],
        &[("RUST_LOG", "debug")],
    )
    .await;
    let auth = format!("Bearer {}", secrets[0]);
    let s1 = StreamClient::open(gm.edge_addr(), "/stream?apikey=qkey-1a2b3c", &[]).await;
    assert_eq!(s1.status, 200);
    let s2 = StreamClient::open(gm.edge_addr(), "/stream", &[("X-Api-Key", secrets[2])]).await;
    assert_eq!(s2.status, 200);
    let bearer = format!("Bearer {}", secrets[3]);
    let denied = http_get(
        gm.edge_addr(),
        "/stream",
        &[("Authorization", bearer.as_str())],
    )
    .await;
    assert_eq!(denied.status, 401);
    let mut ws = WsConn::connect(gm.edge_addr(), "/ws?apikey=qkey-1a2b3c", &[]).await;
    revoke(
        gm.publish_addr(),
        secrets[4],
        &[("Authorization", auth.as_str())],
    )
    .await;
    revoke(
        gm.publish_addr(),
        secrets[1],
        &[("Authorization", auth.as_str())],
    )
    .await;
    assert_eq!(ws.expect_close(REVOKE_WAIT).await.0, 4401);
    let unauthorized = http_get(
        gm.publish_addr(),
        "/routes",
        &[("Authorization", "Bearer nope-5x")],
    )
    .await;
    assert_eq!(unauthorized.status, 401);
    // Give the log lines of the above time to be written.
    wait_until(WAIT, "debug logs", || async {
        gm.stderr_text().contains("revocation applied")
    })
    .await;
    let logs = gm.stderr_text();
    assert!(logs.contains("DEBUG"), "debug logging is on");
    let mut leaks: HashMap<&str, usize> = HashMap::new();
    for s in secrets.iter().chain(["nope-5x"].iter()) {
        let n = logs.matches(s).count();
        if n > 0 {
            leaks.insert(s, n);
        }
    }
    assert!(leaks.is_empty(), "secrets in the logs: {leaks:?}");
}

/// A gRPC channel to `addr` over a plain hyper HTTP/2 client.
type GrpcHttp = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    tonic::body::Body,
>;

fn grpc_http() -> GrpcHttp {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build(hyper_util::client::legacy::connect::HttpConnector::new())
}

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("ascii metadata"),
        );
    }
    req
}

/// With `--publish-token`, every gRPC method of every control service (Publisher,
/// RouteService, Revocation) answers UNAUTHENTICATED without the token (metadata
/// `authorization`) or with another one, and works with it.
#[tokio::test]
async fn publish_auth_guards_every_grpc_control_service() {
    use proto::v1::publisher_client::PublisherClient;
    use proto::v1::revocation_client::RevocationClient;
    use proto::v1::route_service_client::RouteServiceClient;
    use proto::v1::{
        ListRoutesRequest, PublishRequest, PutRoutesRequest, RevokeRequest, WatchRoutesRequest,
    };
    let env = start("* test\n", &["--publish-token", "grpc-t0k"]).await;
    let addr = env.gm.listener_addr("grpc").expect("grpc listener");
    let uri: http::Uri = format!("http://{addr}").parse().expect("uri");
    let mut publisher = PublisherClient::with_origin(grpc_http(), uri.clone());
    let mut routes = RouteServiceClient::with_origin(grpc_http(), uri.clone());
    let mut revocation = RevocationClient::with_origin(grpc_http(), uri);
    let unauthenticated = |r: Result<(), tonic::Status>, what: &str| match r {
        Err(s) => assert_eq!(s.code(), tonic::Code::Unauthenticated, "{what}: {s:?}"),
        Ok(()) => panic!("{what} succeeded without the token"),
    };
    for token in [None, Some("wrong")] {
        let what = |m: &str| format!("{m} with {token:?}");
        unauthenticated(
            publisher
                .publish(with_token(PublishRequest::default(), token))
                .await
                .map(drop),
            &what("Publish"),
        );
        let stream = futures_util::stream::iter(vec![PublishRequest::default()]);
        let r = match publisher.publish_stream(with_token(stream, token)).await {
            Err(s) => Err(s),
            Ok(resp) => {
                let mut replies = resp.into_inner();
                match replies.message().await {
                    Err(s) => Err(s),
                    Ok(_) => Ok(()),
                }
            }
        };
        unauthenticated(r, &what("PublishStream"));
        unauthenticated(
            routes
                .list(with_token(ListRoutesRequest {}, token))
                .await
                .map(drop),
            &what("List"),
        );
        unauthenticated(
            routes
                .put(with_token(
                    PutRoutesRequest {
                        text: "* 127.0.0.1:9\n".into(),
                    },
                    token,
                ))
                .await
                .map(drop),
            &what("Put"),
        );
        let r = match routes.watch(with_token(WatchRoutesRequest {}, token)).await {
            Err(s) => Err(s),
            Ok(resp) => resp.into_inner().message().await.map(drop),
        };
        unauthenticated(r, &what("Watch"));
        unauthenticated(
            revocation
                .revoke(with_token(
                    RevokeRequest {
                        credential: "k".into(),
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .map(drop),
            &what("Revoke"),
        );
    }
    let table = routes
        .list(with_token(ListRoutesRequest {}, Some("grpc-t0k")))
        .await
        .expect("List with the token")
        .into_inner();
    assert!(table.text.contains("* test"), "nothing replaced the table");
    revocation
        .revoke(with_token(
            RevokeRequest {
                credential: "k".into(),
                ..Default::default()
            },
            Some("grpc-t0k"),
        ))
        .await
        .expect("Revoke with the token");
}
