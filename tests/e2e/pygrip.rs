//! A real third-party GRIP publisher: Python `gripcontrol`/`pubcontrol` (tests/py).
//!
//! The interpreter comes from `GRIPMESH_TEST_PYTHON`, default
//! `<workspace>/target/e2e-venv/bin/python` (created by `tests/py/setup-venv.sh`). A missing
//! interpreter fails the test: it is never silently skipped.

use std::path::PathBuf;

use serde_json::json;
use testkit::{http_get, run, wait_metric_at_least};

use crate::common::{WAIT, open_stream, start_standard, stream_item, workspace_root};
use crate::jwt::{now_unix, sign_hs256};

fn python() -> String {
    let python = std::env::var("GRIPMESH_TEST_PYTHON").unwrap_or_else(|_| {
        workspace_root()
            .join("target/e2e-venv/bin/python")
            .to_string_lossy()
            .into_owned()
    });
    assert!(
        PathBuf::from(&python).exists(),
        "Python interpreter {python} not found. Run scripts/test or tests/py/setup-venv.sh \
         (they create target/e2e-venv with gripcontrol and pubcontrol), or set \
         GRIPMESH_TEST_PYTHON to an interpreter that has tests/py/requirements.txt installed."
    );
    python
}

/// Runs the publisher script; returns (exit success, stdout + stderr).
async fn gripcontrol_publish(args: &[&str]) -> (bool, String) {
    let script = workspace_root().join("tests/py/publish_gripcontrol.py");
    let script = script.to_string_lossy().into_owned();
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = run(&python(), &all).await;
    (status.success(), format!("{stdout}{stderr}"))
}

/// gripcontrol publishes (legacy item shape, both formats) to a stream hold and a response
/// hold.
#[tokio::test]
async fn gripcontrol_publishes_to_stream_and_response_holds() {
    let (env, _origin) = start_standard(&[]).await;
    let uri = format!("http://{}", env.publish());
    let mut stream = open_stream(env.edge(), "py").await;
    let (ok, out) = gripcontrol_publish(&[&uri, "py", "from-python\n"]).await;
    assert!(ok, "gripcontrol publish failed:\n{out}");
    stream.read_until("from-python\n", WAIT).await;
    assert_eq!(stream.received_text(), "hello\nfrom-python\n");

    let edge = env.edge();
    let held = tokio::spawn(async move { http_get(edge, "/response?channel=pyresp", &[]).await });
    wait_metric_at_least(env.admin(), "gripmesh_edge_subscriptions", 2.0, WAIT).await;
    let (ok, out) =
        gripcontrol_publish(&[&uri, "pyresp", "python-response\n", "--format", "response"]).await;
    assert!(ok, "gripcontrol publish failed:\n{out}");
    let resp = tokio::time::timeout(WAIT, held)
        .await
        .expect("response hold answered")
        .expect("request task");
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "python-response\n")
    );
}

/// With `--publish-key`, gripcontrol's JWT (control_iss + key) is accepted.
#[tokio::test]
async fn gripcontrol_jwt_is_accepted_with_publish_key() {
    const KEY: &str = "python-shared-key-0123456789abcdef";
    let (env, _origin) = start_standard(&["--publish-key", KEY]).await;
    let uri = format!("http://{}", env.publish());
    let mut stream = open_stream(env.edge(), "pyjwt").await;
    let (ok, out) = gripcontrol_publish(&[
        &uri,
        "pyjwt",
        "signed\n",
        "--iss",
        "py-publisher",
        "--key",
        KEY,
    ])
    .await;
    assert!(ok, "gripcontrol publish with a valid JWT failed:\n{out}");
    stream.read_until("signed\n", WAIT).await;
}

/// A wrong key: the library reports the 401 as an error and nothing is delivered.
#[tokio::test]
async fn gripcontrol_wrong_key_is_rejected() {
    const KEY: &str = "python-shared-key-0123456789abcdef";
    let (env, _origin) = start_standard(&["--publish-key", KEY]).await;
    let uri = format!("http://{}", env.publish());
    let mut stream = open_stream(env.edge(), "pyjwt").await;
    let (ok, out) = gripcontrol_publish(&[
        &uri,
        "pyjwt",
        "forged\n",
        "--iss",
        "py-publisher",
        "--key",
        "not-the-right-key-0123456789abcdef",
    ])
    .await;
    assert!(!ok, "publish with a wrong key succeeded:\n{out}");
    assert!(
        out.contains("401"),
        "expected the library to report 401:\n{out}"
    );
    // A correctly signed marker proves ordering: the forged item would have come first.
    let token = sign_hs256(
        &json!({"iss": "e2e", "exp": now_unix() + 600}),
        KEY.as_bytes(),
    );
    let resp = testkit::publish_with_auth(
        env.publish(),
        &json!({"items": [stream_item("pyjwt", "marker\n")]}),
        &format!("Bearer {token}"),
    )
    .await;
    assert_eq!(resp.status, 200);
    stream.read_until("marker\n", WAIT).await;
    assert_eq!(stream.received_text(), "hello\nmarker\n");
}

/// With `--publish-token`, gripcontrol's `key` without `control_iss` is sent as
/// `Bearer <key>` and accepted; a different key is refused.
#[tokio::test]
async fn gripcontrol_bearer_token() {
    let (env, _origin) = start_standard(&["--publish-token", "py-token"]).await;
    let uri = format!("http://{}", env.publish());
    let mut stream = open_stream(env.edge(), "pytok").await;
    let (ok, out) = gripcontrol_publish(&[&uri, "pytok", "wrong\n", "--key", "other"]).await;
    assert!(!ok, "publish with a wrong token succeeded:\n{out}");
    let (ok, out) = gripcontrol_publish(&[&uri, "pytok", "bearer\n", "--key", "py-token"]).await;
    assert!(ok, "publish with the token failed:\n{out}");
    stream.read_until("bearer\n", WAIT).await;
    assert_eq!(stream.received_text(), "hello\nbearer\n");
}
