//! `POST /recover` (Pushpin's control API): every held long-poll is re-requested from its
//! origin — against gripmesh and Pushpin 1.36, and across two edges over NATS.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use testkit::cluster::{ControlNode, start_edges, wait_ready};
use testkit::{NatsServer, Origin, OriginResponse, http_get, http_request};

use crate::common::{BIN, WAIT};
use crate::parity_common::{Kind, Proxy};

/// Holds `/poll` until `recovered` is set; then answers it plainly (`/ping` answers `pong`).
async fn recover_origin(recovered: Arc<AtomicBool>) -> Origin {
    Origin::start(move |req| {
        if req.path() == "/ping" {
            return OriginResponse::text("pong\n");
        }
        if recovered.load(Ordering::SeqCst) {
            OriginResponse::text("recovered\n")
        } else {
            OriginResponse::response_hold("rec", "timeout\n")
        }
    })
    .await
}

async fn recover(kind: Kind) {
    let recovered = Arc::new(AtomicBool::new(false));
    let origin = recover_origin(recovered.clone()).await;
    let proxy = Proxy::start(kind, &format!("* {}\n", origin.target())).await;
    let edge = proxy.edge();
    let held = tokio::spawn(async move { http_get(edge, "/poll", &[]).await });
    origin.wait_for_requests(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    recovered.store(true, Ordering::SeqCst);
    // Pushpin wants a Content-Length even for an empty body.
    let resp = http_request(
        proxy.control(),
        "POST",
        "/recover",
        &[("Content-Length", "0")],
        "",
    )
    .await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "Updated\n"),
        "{kind:?}"
    );
    let resp = tokio::time::timeout(WAIT, held)
        .await
        .expect("the hold was re-requested")
        .expect("request task");
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "recovered\n"),
        "{kind:?}"
    );
}

#[tokio::test]
async fn parity_recover_rerequests_long_polls_gripmesh() {
    recover(Kind::Gripmesh).await;
}

#[tokio::test]
async fn parity_recover_rerequests_long_polls_pushpin() {
    recover(Kind::Pushpin).await;
}

/// `POST /recover` on control reaches the long-polls held by every edge.
#[tokio::test]
async fn parity_recover_reaches_every_edge_over_nats() {
    let recovered = Arc::new(AtomicBool::new(false));
    let origin = recover_origin(recovered.clone()).await;
    let routes = format!("* {}\n", origin.target());
    let nats = NatsServer::start();
    let url = nats.url();
    let (control, edges) = tokio::join!(
        ControlNode::start(BIN, &url, &routes, &[]),
        start_edges(BIN, &url, 2, &[])
    );
    wait_ready(control.admin_addr(), WAIT, "control").await;
    let mut polls = Vec::new();
    for (i, e) in edges.iter().enumerate() {
        wait_ready(e.admin_addr(), WAIT, &format!("edge {i}")).await;
        let addr = e.edge_addr();
        testkit::wait_until(WAIT, "edge has routes", || async move {
            testkit::try_http_request(addr, "GET", "/ping", &[], "")
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await;
        polls.push(tokio::spawn(
            async move { http_get(addr, "/poll", &[]).await },
        ));
    }
    testkit::wait_until(WAIT, "both long-polls reached the origin", || {
        let n = origin
            .requests()
            .iter()
            .filter(|r| r.path() == "/poll")
            .count();
        async move { n >= 2 }
    })
    .await;
    recovered.store(true, Ordering::SeqCst);
    let resp = http_request(control.publish_addr(), "POST", "/recover", &[], "").await;
    assert_eq!(resp.status, 200);
    for p in polls {
        let resp = tokio::time::timeout(WAIT, p)
            .await
            .expect("re-requested")
            .expect("task");
        assert_eq!(resp.text(), "recovered\n");
    }
}
