//! Plain proxying and request decoration (cases 1, 2, 10), Grip-Sig, streamed bodies, origin
//! errors.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use testkit::{
    BodyChunk, KitBody, Origin, OriginResponse, StreamClient, http_get, http_request, wait_until,
};
use tokio::sync::mpsc;

use crate::common::{WAIT, assert_proxy_error, start, start_standard, start_with_origin};
use crate::jwt::{now_unix, verify_hs256};

const SIG_KEY: &str = "e2e-sig-key-0123456789abcdef";

/// Case 1: a response without GRIP headers is relayed unchanged.
#[tokio::test]
async fn passthrough_plain_response() {
    let (env, origin) = start_standard(&[]).await;
    let resp = http_get(env.edge(), "/plain", &[]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type").as_deref(), Some("text/plain"));
    assert_eq!(resp.text(), "plain\n");
    assert_eq!(resp.header("content-length").as_deref(), Some("6"));
    let reqs = origin.wait_for_requests(1, WAIT).await;
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].uri.as_str()),
        ("GET", "/plain")
    );
}

/// Case 2: client Grip-* and hop headers never reach the origin; Host is preserved; the origin
/// gets a Grip-Sig that verifies with the key (iss `pushpin`, exp ≈ now + 1 h) and Grip-Feature.
#[tokio::test]
async fn request_decoration_strips_client_grip_and_hop_headers_and_signs() {
    let origin = Origin::start(|_| OriginResponse::text("ok\n")).await;
    let env = start_with_origin(&origin, &["--sig-key", SIG_KEY]).await;
    let resp = http_get(
        env.edge(),
        "/decorate?x=1",
        &[
            ("Host", "h.example"),
            ("Grip-Sig", "fake"),
            ("Grip-Last", "x; last-id=1"),
            ("Grip-Custom", "client-value"),
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("X-Client", "kept"),
        ],
    )
    .await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "ok\n"));

    let req = &origin.wait_for_requests(1, WAIT).await[0];
    assert_eq!(req.uri, "/decorate?x=1");
    assert_eq!(req.header("host").as_deref(), Some("h.example"));
    assert_eq!(req.header("x-client").as_deref(), Some("kept"));
    assert_eq!(
        req.header("grip-last"),
        None,
        "client Grip-Last reached the origin"
    );
    assert_eq!(
        req.header("grip-custom"),
        None,
        "client Grip-Custom reached the origin"
    );
    assert_eq!(
        req.header("connection"),
        None,
        "hop header Connection reached the origin"
    );
    assert_eq!(
        req.header("keep-alive"),
        None,
        "hop header Keep-Alive reached the origin"
    );

    let sigs = req.header_all("grip-sig");
    assert_eq!(sigs.len(), 1, "exactly one Grip-Sig expected, got {sigs:?}");
    assert_ne!(sigs[0], "fake", "client Grip-Sig reached the origin");
    let claims = verify_hs256(&sigs[0], SIG_KEY.as_bytes())
        .unwrap_or_else(|e| panic!("Grip-Sig {:?} does not verify: {e}", sigs[0]));
    assert_eq!(claims["iss"], "pushpin", "claims: {claims}");
    let exp = claims["exp"].as_u64().expect("numeric exp claim");
    let expected = now_unix() + 3600;
    assert!(
        exp + 60 >= expected && exp <= expected + 60,
        "exp {exp} is not now + 3600 (≈{expected})"
    );
    let feature = req.header("grip-feature").unwrap_or_default();
    assert!(!feature.trim().is_empty(), "Grip-Feature missing");
}

/// `--sig-iss` sets the issuer; the signature does not verify under another key.
#[tokio::test]
async fn grip_sig_uses_configured_issuer_and_key() {
    let origin = Origin::start(|_| OriginResponse::text("ok\n")).await;
    let env = start_with_origin(&origin, &["--sig-key", SIG_KEY, "--sig-iss", "e2e-issuer"]).await;
    // A second request on another path: every proxied request is signed.
    for path in ["/one", "/two"] {
        let resp = http_get(env.edge(), path, &[]).await;
        assert_eq!(resp.status, 200);
    }
    for req in origin.wait_for_requests(2, WAIT).await {
        let sig = req.header("grip-sig").expect("Grip-Sig on every request");
        let claims = verify_hs256(&sig, SIG_KEY.as_bytes()).expect("Grip-Sig verifies");
        assert_eq!(claims["iss"], "e2e-issuer");
        assert!(verify_hs256(&sig, b"some-other-key").is_err());
    }
}

/// Case 10: Grip-* headers without Grip-Hold are stripped, the rest relayed unchanged.
#[tokio::test]
async fn grip_headers_without_hold_are_stripped() {
    let origin = Origin::start(|_| {
        OriginResponse::text("nohold\n")
            .header("Grip-Channel", "x")
            .header("Grip-Foo", "bar")
            .header("X-Keep", "1")
    })
    .await;
    let env = start_with_origin(&origin, &[]).await;
    let resp = http_get(env.edge(), "/nohold", &[]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("x-keep").as_deref(), Some("1"));
    assert_eq!(resp.header_names_with_prefix("grip-"), Vec::<String>::new());
    assert_eq!(resp.text(), "nohold\n");
    assert_eq!(resp.header("content-length").as_deref(), Some("7"));
}

/// Plain proxying streams both ways: the client sees the first part of the response body before
/// the origin sends the rest, and the origin sees the first part of a chunked request body
/// before the client sends the rest.
#[tokio::test]
async fn passthrough_streams_request_and_response_bodies() {
    type Slot = Arc<Mutex<Option<mpsc::Sender<BodyChunk>>>>;
    let slot: Slot = Arc::new(Mutex::new(None));
    let handler_slot = slot.clone();
    let origin = Origin::start(move |req| match req.path() {
        "/download" => {
            let (resp, tx) = OriginResponse::new(200)
                .header("Content-Type", "application/octet-stream")
                .streamed();
            *handler_slot.lock().expect("slot") = Some(tx);
            resp
        }
        _ => OriginResponse::text(format!("got {} bytes\n", req.body.len())),
    })
    .await;
    let env = start_with_origin(&origin, &[]).await;
    let edge = env.edge();

    // Response direction.
    let opening = tokio::spawn(async move { StreamClient::open(edge, "/download", &[]).await });
    wait_until(WAIT, "origin to start the streamed response", || async {
        slot.lock().expect("slot").is_some()
    })
    .await;
    let tx = slot.lock().expect("slot").take().expect("sender");
    tx.send(BodyChunk::Data(Bytes::from_static(b"first-part\n")))
        .await
        .expect("origin body open");
    let mut client = opening.await.expect("client task");
    assert_eq!(client.status, 200);
    client.read_until("first-part\n", WAIT).await;
    tx.send(BodyChunk::Data(Bytes::from_static(b"second-part\n")))
        .await
        .expect("origin body open");
    drop(tx);
    let rest = client.expect_eof(WAIT).await;
    assert_eq!(&rest[..], b"second-part\n");
    assert_eq!(client.received_text(), "first-part\nsecond-part\n");

    // Request direction: a chunked upload of 16 KiB, then more once the origin has seen it.
    let (body_tx, body) = KitBody::channel();
    let uploading = tokio::spawn(async move {
        let mut client = StreamClient::open_request(
            edge,
            "POST",
            "/upload",
            &[("Content-Type", "application/octet-stream")],
            body,
        )
        .await;
        let text = String::from_utf8_lossy(&client.expect_eof(WAIT).await).into_owned();
        (client.status, text)
    });
    let first = vec![b'a'; 16 * 1024];
    body_tx
        .send(BodyChunk::Data(Bytes::from(first)))
        .await
        .expect("request body open");
    wait_until(
        WAIT,
        "origin to receive the first 16 KiB of the upload",
        || async { origin.body_bytes_received() >= 16 * 1024 },
    )
    .await;
    body_tx
        .send(BodyChunk::Data(Bytes::from_static(b"tail")))
        .await
        .expect("request body open");
    drop(body_tx);
    let (status, text) = uploading.await.expect("upload task");
    assert_eq!((status, text.as_str()), (200, "got 16388 bytes\n"));
    let upload = origin
        .requests()
        .into_iter()
        .find(|r| r.path() == "/upload")
        .expect("upload recorded");
    assert_eq!(upload.body.len(), 16 * 1024 + 4);
    assert!(upload.body.ends_with(b"aaaatail"));
}

/// A large plain response (2 MB) is relayed completely.
#[tokio::test]
async fn passthrough_large_body_both_ways() {
    let origin = Origin::start(|req| {
        let mut body = req.body.to_vec();
        body.reverse();
        OriginResponse::new(200)
            .header("Content-Type", "application/octet-stream")
            .body(body)
    })
    .await;
    let env = start_with_origin(&origin, &[]).await;
    let upload: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let resp = http_request(env.edge(), "POST", "/echo", &[], upload.clone()).await;
    assert_eq!(resp.status, 200);
    let mut expected = upload;
    expected.reverse();
    assert_eq!(resp.body.len(), expected.len());
    assert!(resp.body[..] == expected[..], "body differs");
}

/// Origin unreachable (every target refuses) ⇒ 502 `Error while proxying to origin.\n`.
#[tokio::test]
async fn unreachable_origin_is_502() {
    let refused = Origin::refusing_addr();
    let env = start(&format!("* 127.0.0.1:{}\n", refused.port()), &[]).await;
    let resp = http_get(env.edge(), "/anything", &[]).await;
    assert_proxy_error(&resp, "origin refusing connections");
}
