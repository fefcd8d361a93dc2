//! `gripmesh authz`: the auth sidecar (gRPC `Check` against the API gateway), following the
//! revocations bucket when it has NATS.

use super::follow::spawn_sidecar_revocations;
use crate::cli::AuthzArgs;
use crate::common::{self, Fatal};
use crate::process::Process;
use crate::status;

/// `gripmesh authz`.
pub async fn authz(args: AuthzArgs) -> Result<(), Fatal> {
    // The recorder first, so the sidecar's series exist at 0 from the start.
    let mut process = Process::start();
    let authorizer = common::authz_config(&args.gateway, &args.authz)?;
    let backend = match &args.nats {
        Some(urls) => {
            let backend =
                common::connect_bus(Some(urls), "gripmesh-authz", &args.nats_flags).await?;
            common::track_bus(&backend.bus, &process.health);
            common::track_state(&backend, &process.health);
            Some(backend)
        }
        None => None,
    };
    // Logging starts once NATS is checked, so a refusal (no JetStream) stays one line.
    common::init_logging(&args.common);
    let listener = common::listen("--listen", "authz", args.listen).await?;
    let admin_listener = common::listen("--admin-listen", "admin", args.admin_listen).await?;
    let revocations = backend
        .as_ref()
        .map(|b| status::Revocations::follow(b, process.stop_background.clone()));
    process.serve_admin(admin_listener, status::page("authz", None, revocations));
    if let Some(backend) = &backend {
        spawn_sidecar_revocations(
            &authorizer,
            backend,
            &process.health,
            &process.stop_background,
        );
    }
    let server = tokio::spawn({
        let stop = process.stop_accepting.clone();
        async move { authz::serve(authorizer, listener, stop).await }
    });
    // Readiness does not depend on the gateway: a gateway outage is the routes' fail policy's
    // business, not a reason to take the sidecar out of rotation.
    process
        .running(None, vec![server], Vec::new(), args.common.drain_timeout)
        .announce_and_wait("authz")
        .await
}
