//! Serving the tiers' listeners until their stop token: the edge's client listener and
//! control's publish and gRPC listeners (in standalone on a runtime of their own).

use crate::common::Fatal;
use control::Control;
use edge::Edge;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Serves control's HTTP publish API and gRPC API until `stop`.
pub(crate) fn serve_control(
    control: &Control,
    publish: tokio::net::TcpListener,
    grpc: tokio::net::TcpListener,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let publish_task = tokio::spawn({
        let (control, stop) = (control.clone(), stop.clone());
        async move { control.serve_publish(publish, stop).await }
    });
    let grpc_task = tokio::spawn({
        let (control, stop) = (control.clone(), stop.clone());
        async move { control.serve_grpc(grpc, stop).await }
    });
    tokio::spawn({
        let (control, stop) = (control.clone(), stop.clone());
        async move { control.track_routes_version(stop).await }
    });
    vec![publish_task, grpc_task]
}

/// [`serve_control`] on a Tokio runtime of its own (one thread): in `standalone` the edge's
/// fan-out keeps the main runtime's workers busy, and a publish call must not queue behind
/// it (a publisher never waits on delivery). The listeners move to that runtime, so their
/// readiness is driven there too. The returned handle ends when the servers have.
pub(crate) fn serve_control_apart(
    control: &Control,
    publish: tokio::net::TcpListener,
    grpc: tokio::net::TcpListener,
    stop: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>, Fatal> {
    let fatal = |e: std::io::Error| Fatal::Runtime(format!("control listeners: {e}"));
    let publish = publish.into_std().map_err(fatal)?;
    let grpc = grpc.into_std().map_err(fatal)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fatal::Runtime(format!("control runtime: {e}")))?;
    let (control, stop) = (control.clone(), stop.clone());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("gripmesh-control".into())
        .spawn(move || {
            rt.block_on(async move {
                let listeners = tokio::net::TcpListener::from_std(publish)
                    .and_then(|p| Ok((p, tokio::net::TcpListener::from_std(grpc)?)));
                let (publish, grpc) = match listeners {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "control listeners unusable");
                        return;
                    }
                };
                for server in serve_control(&control, publish, grpc, &stop) {
                    let _ = server.await;
                }
            });
            drop(done_tx);
        })
        .map_err(|e| Fatal::Runtime(format!("control thread: {e}")))?;
    Ok(vec![tokio::spawn(async move {
        let _ = done_rx.await;
    })])
}

/// Serves clients on the edge listener until `stop`.
pub(crate) fn serve_edge(
    edge: &Edge,
    listener: tokio::net::TcpListener,
    stop: &CancellationToken,
) -> JoinHandle<()> {
    let (edge, stop) = (edge.clone(), stop.clone());
    tokio::spawn(async move { edge.serve(listener, stop).await })
}
