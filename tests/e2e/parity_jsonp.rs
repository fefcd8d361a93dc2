//! JSON-P on routes with `aco` (Pushpin's `jsonp_*` route options), against gripmesh and
//! Pushpin 1.36: extended and basic wrapping of relayed answers and of long-poll answers,
//! and the 400 for a bad callback.

use serde_json::{Value, json};
use testkit::{HttpResponse, Origin, OriginResponse, http_get};

use crate::common::WAIT;
use crate::parity_common::{Kind, Proxy, publish};

fn origin_handler(req: testkit::RecordedRequest) -> OriginResponse {
    match req.path() {
        "/response" => OriginResponse::response_hold("jp", "timeout\n").header("X-Orig", "yes"),
        _ => OriginResponse::text("plain\n")
            .header("X-Orig", "yes")
            .header("Cache-Control", "no-cache"),
    }
}

/// The JSON inside `/**/cb(...);\n`.
fn unwrap(resp: &HttpResponse, cb: &str) -> String {
    let text = resp.text();
    let inner = text
        .strip_prefix(&format!("/**/{cb}("))
        .and_then(|t| t.strip_suffix(");\n"))
        .unwrap_or_else(|| panic!("not a JSON-P body: {text:?}"));
    inner.to_owned()
}

fn header_ci<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

async fn jsonp(kind: Kind) {
    let origin = Origin::start(origin_handler).await;
    let proxy = Proxy::start(
        kind,
        &format!(
            "*,path_beg=/basic/,replace_beg=/,aco,jsonp_mode=basic {o}\n*,aco {o}\n",
            o = origin.target()
        ),
    )
    .await;
    let edge = proxy.edge();

    // Extended (default): the whole answer as a JSON object.
    let resp = http_get(edge, "/plain?a=1&callback=cb", &[]).await;
    assert_eq!(resp.status, 200, "{kind:?}");
    assert!(
        resp.header("content-type")
            .is_some_and(|t| t.starts_with("application/javascript")),
        "{kind:?}"
    );
    assert_eq!(
        resp.header("cache-control").as_deref(),
        Some("no-cache"),
        "{kind:?}"
    );
    let v: Value = serde_json::from_str(&unwrap(&resp, "cb")).expect("JSON inside");
    assert_eq!(v["code"], 200, "{kind:?}");
    assert_eq!(v["body"], "plain\n", "{kind:?}");
    assert_eq!(header_ci(&v["headers"], "x-orig"), Some("yes"), "{kind:?}");
    // The callback parameter does not reach the origin; the rest of the query does.
    let seen = origin.requests();
    let last = seen.last().expect("a request");
    assert_eq!(last.uri, "/plain?a=1", "{kind:?}");
    assert_eq!(last.header("accept").as_deref(), Some("*/*"), "{kind:?}");

    // Basic: the body itself, without its trailing newline.
    let resp = http_get(edge, "/basic/plain?callback=cb", &[]).await;
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "/**/cb(plain);\n"),
        "{kind:?}"
    );

    // A long-poll's published answer is wrapped too.
    let held = tokio::spawn(async move { http_get(edge, "/response?callback=cb", &[]).await });
    origin.wait_for_requests(3, WAIT).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    publish(
        &proxy,
        json!([{"channel": "jp", "formats": {"http-response": {"code": 201, "body": "pushed\n"}}}]),
    )
    .await;
    let resp = tokio::time::timeout(WAIT, held)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(resp.status, 200, "{kind:?}");
    let v: Value = serde_json::from_str(&unwrap(&resp, "cb")).expect("JSON inside");
    assert_eq!(
        (v["code"].as_u64(), v["body"].as_str()),
        (Some(201), Some("pushed\n")),
        "{kind:?}"
    );
    assert_eq!(header_ci(&v["headers"], "x-orig"), Some("yes"), "{kind:?}");

    // An empty callback is refused.
    let resp = http_get(edge, "/plain?callback=", &[]).await;
    assert_eq!(resp.status, 400, "{kind:?}");
    assert!(
        resp.text().starts_with("Invalid callback parameter."),
        "{kind:?}"
    );
}

#[tokio::test]
async fn parity_jsonp_gripmesh() {
    jsonp(Kind::Gripmesh).await;
}

#[tokio::test]
async fn parity_jsonp_pushpin() {
    jsonp(Kind::Pushpin).await;
}
