//! WebSocket connection lifecycle: graceful shutdown (SIGTERM ⇒ close 1012, exit 0) and the
//! `transport="ws"` metrics.

use std::time::Duration;

use testkit::ws::{WohOrigin, WsConn, WsOrigin, WsOriginMode};
use testkit::{Signal, metric_value, wait_metric, wait_metric_at_least};

use crate::common::{WAIT, start};
use crate::ws_common::publish_ws_text;

/// SIGTERM: every WebSocket client (over HTTP, passthrough, built-in test target) gets close
/// 1012 and the process exits 0.
#[tokio::test]
async fn ws_sigterm_closes_clients_with_1012_and_exits_0() {
    let echo = WohOrigin::echo().await;
    let passthrough = WsOrigin::start(WsOriginMode::Grip).await;
    let mut env = start(
        &format!(
            "*,path_beg=/ws test\n*,path_beg=/pt {}\n* {},over_http\n",
            passthrough.target(),
            echo.target()
        ),
        &["--drain-timeout", "5"],
    )
    .await;
    let mut clients = [
        WsConn::connect(env.edge(), "/woh?channel=a", &[]).await,
        WsConn::connect(env.edge(), "/woh?channel=b", &[]).await,
        WsConn::connect(env.edge(), "/ws?channel=c", &[]).await,
        WsConn::connect(env.edge(), "/pt", &[]).await,
    ];
    let _upstream = passthrough.accept(WAIT).await;
    for (i, client) in clients.iter_mut().take(3).enumerate() {
        let text = format!("up-{i}");
        client.send_text(text.clone()).await;
        assert_eq!(
            client.expect_text(WAIT).await,
            text,
            "client {i} before SIGTERM"
        );
    }

    env.gm.signal(Signal::Term);
    for (i, client) in clients.iter_mut().enumerate() {
        let (code, reason) = client.expect_close(Duration::from_secs(10)).await;
        assert_eq!(code, 1012, "client {i} close code (reason {reason:?})");
    }
    let status = env.gm.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
}

/// `gripmesh_edge_connections{transport="ws"}` follows open WebSocket connections and
/// `gripmesh_edge_messages_sent_total{transport="ws"}` counts delivered publishes.
#[tokio::test]
async fn ws_connection_and_message_metrics() {
    const GAUGE: &str = "gripmesh_edge_connections{transport=\"ws\"}";
    const SENT: &str = "gripmesh_edge_messages_sent_total{transport=\"ws\"}";
    let echo = WohOrigin::echo().await;
    let env = start(&format!("* {},over_http\n", echo.target()), &[]).await;
    let admin = env.admin();
    assert_eq!(
        metric_value(admin, GAUGE).await.unwrap_or(0.0),
        0.0,
        "no WebSocket yet"
    );

    let mut a = WsConn::connect(env.edge(), "/m?channel=metrics", &[]).await;
    let mut b = WsConn::connect(env.edge(), "/m?channel=metrics", &[]).await;
    wait_metric(admin, GAUGE, WAIT, "== 2", |v| v == 2.0).await;

    let before = metric_value(admin, SENT).await.unwrap_or(0.0);
    publish_ws_text(env.publish(), "metrics", "counted").await;
    assert_eq!(a.expect_text(WAIT).await, "counted");
    assert_eq!(b.expect_text(WAIT).await, "counted");
    wait_metric_at_least(admin, SENT, before + 2.0, WAIT).await;

    a.close(1000, "done").await;
    a.expect_close(WAIT).await;
    b.abort();
    wait_metric(admin, GAUGE, WAIT, "== 0", |v| v == 0.0).await;
}
