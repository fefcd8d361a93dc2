//! A real API gateway instead of our mock: Express Gateway (npm `express-gateway`,
//! tests/gateway) with key-auth on an `apikey` query parameter, like the article's Apigee
//! proxy, in the article's two setups:
//!
//! (a) the gateway in the path: gripmesh's route targets the gateway with `host=` (the
//!     article's "Rewrite Host Header"), the gateway proxies to the origin;
//! (b) forward-auth through the auth sidecar: `--authz-gateway` at a gateway pipeline that only
//!     checks the key.
//!
//! Without a key the WebSocket handshake gets the gateway's 401; with one the client gets the
//! channel's messages; a key the gateway revokes stops working.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::http_request;
use testkit::ws::WsConn;

use crate::common::{BIN, WAIT, start, workspace_root};
use crate::node::{NodeOrigin, start_origin};

/// A running Express Gateway; killed on drop.
struct Gateway {
    _child: tokio::process::Child,
    http: SocketAddr,
    admin: SocketAddr,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Gateway {
    async fn start(origin: &NodeOrigin) -> Gateway {
        let dir = workspace_root().join("tests/gateway");
        assert!(
            dir.join("node_modules/express-gateway").exists(),
            "tests/gateway/node_modules is missing: run scripts/test"
        );
        let (http_port, admin_port) = (free_port(), free_port());
        let child = tokio::process::Command::new("node")
            .arg(dir.join("run_gateway.js"))
            .env("GW_HTTP_PORT", http_port.to_string())
            .env("GW_ADMIN_PORT", admin_port.to_string())
            .env("GW_BACKEND", format!("http://127.0.0.1:{}", origin.port))
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node");
        let gw = Gateway {
            _child: child,
            http: format!("127.0.0.1:{http_port}").parse().expect("addr"),
            admin: format!("127.0.0.1:{admin_port}").parse().expect("addr"),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(resp) =
                testkit::try_http_request(gw.admin, "GET", "/users", &[], bytes::Bytes::new()).await
                && resp.status == 200
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Express Gateway did not start in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        gw
    }

    async fn admin_json(&self, method: &str, path: &str, body: &Value) -> Value {
        let resp = http_request(
            self.admin,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.to_string(),
        )
        .await;
        assert!(
            (200..300).contains(&resp.status),
            "{method} {path}: {} {}",
            resp.status,
            resp.text()
        );
        serde_json::from_str(&resp.text()).unwrap_or(Value::Null)
    }

    /// A developer with a key-auth credential; returns (key id, API key `id:secret`).
    async fn new_key(&self, user: &str) -> (String, String) {
        self.admin_json(
            "POST",
            "/users",
            &json!({"username": user, "firstname": "Dev", "lastname": "Eloper"}),
        )
        .await;
        let cred = self
            .admin_json(
                "POST",
                "/credentials",
                &json!({"consumerId": user, "type": "key-auth"}),
            )
            .await;
        let id = cred["keyId"].as_str().expect("keyId").to_owned();
        let secret = cred["keySecret"].as_str().expect("keySecret");
        (id.clone(), format!("{id}:{secret}"))
    }

    /// Deactivates a key in the gateway.
    async fn revoke(&self, key_id: &str) {
        self.admin_json(
            "PUT",
            &format!("/credentials/key-auth/{key_id}/status"),
            &json!({"status": false}),
        )
        .await;
    }
}

async fn publish_cli(control: SocketAddr, channel: &str, text: &str) {
    let url = format!("http://{control}");
    let (status, out, err) =
        testkit::run(BIN, &["publish", "--control-url", &url, channel, text]).await;
    assert!(status.success(), "{out}{err}");
}

/// (a) The gateway in the path, reached with the Host it routes on.
#[tokio::test]
async fn express_gateway_in_the_path_with_host_rewrite() {
    let origin = start_origin("http://127.0.0.1:1/").await;
    let gw = Gateway::start(&origin).await;
    let (key_id, key) = gw.new_key("trader-a").await;
    let env = start(
        &format!(
            "*,path_beg=/ws {gw},over_http,host=api.example.com\n* {gw},host=api.example.com\n",
            gw = gw.http
        ),
        &[],
    )
    .await;

    let refused = WsConn::connect_rejected(env.edge(), "/ws", &[]).await;
    assert_eq!(refused.status, 401, "without a key");

    let path = format!("/ws?apikey={key}");
    let mut ws = WsConn::connect(env.edge(), &path, &[]).await;
    ws.send_text("through the gateway").await;
    assert_eq!(ws.expect_text(WAIT).await, "through the gateway");
    publish_cli(env.publish(), "test", "trade 1").await;
    assert_eq!(ws.expect_text(WAIT).await, "trade 1");

    gw.revoke(&key_id).await;
    let refused = WsConn::connect_rejected(env.edge(), &path, &[]).await;
    assert_eq!(refused.status, 401, "a key the gateway revoked");
}

/// (b) Forward-auth: the sidecar asks the gateway; a revocation closes the live connection.
#[tokio::test]
async fn express_gateway_as_forward_auth_for_the_sidecar() {
    let origin = start_origin("http://127.0.0.1:1/").await;
    let gw = Gateway::start(&origin).await;
    let (key_id, key) = gw.new_key("trader-b").await;
    let check = format!("http://{}/check", gw.http);
    let env = start(
        &format!(
            "*,path_beg=/ws,authz 127.0.0.1:{p},over_http\n*,authz 127.0.0.1:{p}\n",
            p = origin.port
        ),
        &["--authz-gateway", &check],
    )
    .await;

    let refused = WsConn::connect_rejected(env.edge(), "/ws", &[]).await;
    assert_eq!(refused.status, 401, "without a key: the gateway's answer");

    let path = format!("/ws?apikey={key}");
    let mut ws = WsConn::connect(env.edge(), &path, &[]).await;
    publish_cli(env.publish(), "test", "trade 2").await;
    assert_eq!(ws.expect_text(WAIT).await, "trade 2");

    gw.revoke(&key_id).await;
    let resp = http_request(
        env.publish(),
        "POST",
        "/authz/revoke",
        &[("Content-Type", "application/json")],
        json!({ "credential": key }).to_string(),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let (code, _) = ws.expect_close(WAIT).await;
    assert_eq!(code, 4401);
    let refused = WsConn::connect_rejected(env.edge(), &path, &[]).await;
    // docs/protocol.md, "Cluster state": during --revocation-ttl the edge refuses the revoked key itself (403
    // `Credential revoked.`), without asking the gateway again.
    assert_eq!(
        refused.status, 403,
        "the revoked key, during the revocation TTL"
    );
}
