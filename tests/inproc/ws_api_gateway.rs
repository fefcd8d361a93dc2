//! The article scenario ("Real-Time API Management with Apigee and Fanout") end to end: the
//! edge routes WebSocket clients over HTTP to an API gateway that requires an `apikey` query
//! parameter; with the key the backend (behind the gateway) opens a GRIP WebSocket subscribed
//! to `trades`, without it the client's handshake fails with the gateway's 401.

use serde_json::json;
use testkit::OriginResponse;
use testkit::ws::{WohOrigin, WohRequest, WsConn, WsEvent, echo_reply, grip_events_response};

use crate::common::{WAIT, publish_items, start};
use crate::ws_common::{start_woh, ws_text_item};

const API_KEY: &str = "demo-key";

/// What Apigee answers when the API key is missing or wrong.
const FAULT: &str = r#"{"fault":{"faultstring":"Failed to resolve API Key variable request.queryparam.apikey","detail":{"errorcode":"steps.oauth.v2.FailedToResolveAPIKey"}}}"#;

/// The trade from the article, published verbatim.
const TRADE: &str = r#"{
"exchange":"QuadrigaCX",
"exchange_link":"http://www.quadrigacx.com",
"volume":0.06552763,
"price":1502.93,
"value":98.48,
"date":"2017-02-21T19:13:14+0000",
"transaction_id":394131
}"#;

/// The mock API gateway in front of the trades backend.
fn gateway(req: &WohRequest) -> OriginResponse {
    if req.query("apikey").as_deref() != Some(API_KEY) {
        return OriginResponse::new(401)
            .header("Content-Type", "application/json")
            .body(FAULT);
    }
    if req.is_open() {
        // The backend's answer as shown in the article, plus the subscription.
        return grip_events_response(&[WsEvent::Open, WsEvent::subscribe("trades")]);
    }
    echo_reply(req)
}

/// `wscat -c ws://edge/authenticated/trades?apikey=KEY` connects and receives the published
/// trade verbatim; without (or with a wrong) key the handshake fails with the gateway's 401
/// and its JSON fault body.
#[tokio::test]
async fn article_authenticated_trades_feed() {
    let gw = WohOrigin::start(gateway).await;
    let env = start_woh(&gw, &[]).await;

    for path in [
        "/authenticated/trades",
        "/authenticated/trades?apikey=wrong-key",
    ] {
        let rejection = WsConn::connect_rejected(env.edge(), path, &[]).await;
        assert_eq!(rejection.status, 401, "{path}");
        assert_eq!(rejection.text(), FAULT, "{path}: gateway body relayed");
        assert_eq!(
            rejection.header("content-type").as_deref(),
            Some("application/json"),
            "{path}"
        );
    }

    let path = format!("/authenticated/trades?apikey={API_KEY}");
    let mut client = WsConn::connect(env.edge(), &path, &[]).await;
    let open = gw.wait_open(&path, WAIT).await;
    assert_eq!(open.query("apikey").as_deref(), Some(API_KEY));

    publish_items(env.publish(), json!([ws_text_item("trades", TRADE)])).await;
    assert_eq!(client.expect_text(WAIT).await, TRADE);
    // A second trade, to show the feed keeps going.
    let second = TRADE.replace("394131", "394132");
    publish_items(env.publish(), json!([ws_text_item("trades", &second)])).await;
    assert_eq!(client.expect_text(WAIT).await, second);
}

/// The article's "Rewrite Host Header" option: with target `host=`, the gateway sees its own
/// host name (and rejects anything else, as a name-based gateway would).
#[tokio::test]
async fn article_host_rewrite_reaches_gateway() {
    const GATEWAY_HOST: &str = "cbix-prod.apigee.net";
    let gw = WohOrigin::start(|req| {
        let host = req.header("host").unwrap_or_default();
        if host.split(':').next() != Some(GATEWAY_HOST) {
            return OriginResponse::new(404)
                .header("Content-Type", "text/plain")
                .body(format!("unknown host {host}\n"));
        }
        gateway(req)
    })
    .await;
    let env = start(
        &format!("* {},over_http,host={GATEWAY_HOST}\n", gw.target()),
        &[],
    )
    .await;
    let path = format!("/authenticated/trades?apikey={API_KEY}");
    let mut client = WsConn::connect(env.edge(), &path, &[("Host", "realtime.cbix.ca")]).await;
    publish_items(env.publish(), json!([ws_text_item("trades", TRADE)])).await;
    assert_eq!(client.expect_text(WAIT).await, TRADE);
}
