//! gRPC server reflection on control's gRPC listener, driven by a generic
//! client that has no `.proto` files: Python `grpcio-reflection` (tests/py/reflection_client.py)
//! doing what `grpcurl list`, `grpcurl describe` and `grpcurl -d JSON ADDR METHOD` do.

use serde_json::Value;

use crate::common::{WAIT, open_stream, run_py, start_standard};

const SERVED: [&str; 3] = [
    "gripmesh.v1.Publisher",
    "gripmesh.v1.Revocation",
    "gripmesh.v1.RouteService",
];

/// `list` over v1alpha and v1 names the served services (not the sidecar's Authorization);
/// `describe` resolves a service's methods; a Publish built only from reflected descriptors
/// reaches a held stream.
#[tokio::test]
async fn reflection_lists_describes_and_drives_publish() {
    let (env, _origin) = start_standard(&[]).await;
    let grpc = env
        .gm
        .listener_addr("grpc")
        .expect("grpc listener")
        .to_string();

    for flags in [&[][..], &["--v1"][..]] {
        let mut args = vec!["list", grpc.as_str()];
        args.extend_from_slice(flags);
        let (ok, out, err) = run_py("reflection_client.py", &args).await;
        assert!(ok, "list {flags:?}: {out}{err}");
        let names: Vec<String> = serde_json::from_str(out.trim()).expect("JSON list");
        for s in SERVED {
            assert!(names.iter().any(|n| n == s), "{s} not listed: {names:?}");
        }
        assert!(
            names.iter().any(|n| n.starts_with("grpc.reflection.")),
            "reflection lists itself: {names:?}"
        );
        assert!(
            !names.iter().any(|n| n == "gripmesh.v1.Authorization"),
            "the sidecar's service is not served here: {names:?}"
        );
    }

    let (ok, out, err) = run_py(
        "reflection_client.py",
        &["describe", &grpc, "gripmesh.v1.Publisher"],
    )
    .await;
    assert!(ok, "describe: {out}{err}");
    let methods: Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(
        methods["Publish"][0], "gripmesh.v1.PublishRequest",
        "{methods}"
    );
    assert!(methods.get("PublishStream").is_some(), "{methods}");

    let mut stream = open_stream(env.edge(), "reflected").await;
    // `content` is bytes: base64 in the protobuf JSON mapping ("via reflection\n").
    let body =
        r#"{"items":[{"channel":"reflected","httpStream":{"content":"dmlhIHJlZmxlY3Rpb24K"}}]}"#;
    let (ok, out, err) = run_py(
        "reflection_client.py",
        &["call", &grpc, "gripmesh.v1.Publisher/Publish", body],
    )
    .await;
    assert!(ok, "call: {out}{err}");
    stream.read_until("via reflection\n", WAIT).await;
}
