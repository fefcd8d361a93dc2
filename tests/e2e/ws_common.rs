//! Shared setup for the WebSocket end-to-end tests: routes to WebSocket-over-HTTP origins,
//! `ws-message` publish items, and a "survivor" WebSocket client used to prove that bad input
//! did not hurt unrelated connections.

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use testkit::http_get;
use testkit::ws::{WohOrigin, WsConn};

use crate::common::{Env, WAIT, publish_items, start};

/// The `--sig-key` used by WebSocket tests that check `Grip-Sig`.
pub(crate) const SIG_KEY: &str = "e2e-ws-sig-key-0123456789abcdef";

/// Starts gripmesh with the single route `* <origin>,over_http`.
pub(crate) async fn start_woh(origin: &WohOrigin, extra: &[&str]) -> Env {
    start(&format!("* {},over_http\n", origin.target()), extra).await
}

/// A `ws-message` text item.
pub(crate) fn ws_text_item(channel: &str, content: &str) -> Value {
    json!({"channel": channel, "formats": {"ws-message": {"content": content}}})
}

/// A `ws-message` binary item (`content-bin`, base64).
pub(crate) fn ws_binary_item(channel: &str, data: &[u8]) -> Value {
    json!({"channel": channel, "formats": {"ws-message": {"content-bin": STANDARD.encode(data)}}})
}

/// A `ws-message` close item.
pub(crate) fn ws_close_item(channel: &str, code: u16, reason: &str) -> Value {
    json!({"channel": channel, "formats": {"ws-message": {"action": "close", "code": code, "reason": reason}}})
}

/// Publishes one `ws-message` text item and asserts `200 Published\n`.
pub(crate) async fn publish_ws_text(publish: SocketAddr, channel: &str, content: &str) {
    publish_items(publish, json!([ws_text_item(channel, content)])).await;
}

/// A WebSocket client on channel `survivor` through a GRIP echo origin
/// ([`testkit::ws::echo_reply`]), opened before some bad input, that must still work after it.
pub(crate) struct WsSurvivor {
    conn: WsConn,
}

impl WsSurvivor {
    /// Connects to `/survivor?channel=survivor` (the edge must route it to an echo origin).
    pub(crate) async fn open(env: &Env) -> WsSurvivor {
        let mut conn = WsConn::connect(env.edge(), "/survivor?channel=survivor", &[]).await;
        conn.send_text("survivor-hello").await;
        assert_eq!(conn.expect_text(WAIT).await, "survivor-hello");
        WsSurvivor { conn }
    }

    /// Asserts the process is still up, healthy, and the survivor still receives a publish
    /// and still gets echoes through its origin.
    pub(crate) async fn check(&mut self, env: &mut Env, tag: &str) {
        env.gm.assert_running();
        let content = format!("still-alive-after-{tag}");
        publish_ws_text(env.publish(), "survivor", &content).await;
        assert_eq!(
            self.conn.expect_text(WAIT).await,
            content,
            "survivor publish after {tag}"
        );
        let echo = format!("echo-after-{tag}");
        self.conn.send_text(echo.clone()).await;
        assert_eq!(
            self.conn.expect_text(WAIT).await,
            echo,
            "survivor echo after {tag}"
        );
        let healthz = http_get(env.admin(), "/healthz", &[]).await;
        assert_eq!(healthz.status, 200, "healthz after {tag}");
    }
}
