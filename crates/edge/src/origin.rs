//! Origin targets as outbound endpoints (the client itself is `runtime::client`).

use routes::{Target, TargetAddr};
use runtime::client::Endpoint;
pub use runtime::client::{OriginClient, OriginError, OriginSender, strip_port};

/// The endpoint of a route target; `None` for the built-in `test` origin.
pub fn endpoint(target: &Target) -> Option<Endpoint> {
    match &target.addr {
        TargetAddr::Host { host, port } => Some(Endpoint {
            host: host.clone(),
            port: *port,
            tls: target.ssl,
            insecure: target.insecure,
            server_name: target.host.as_deref().map(|h| strip_port(h).to_owned()),
        }),
        TargetAddr::Test => None,
    }
}

/// Connects to a route target.
pub fn connect(
    client: &OriginClient,
    target: &Target,
) -> impl Future<Output = Result<OriginSender, OriginError>> + Send + 'static + use<> {
    let endpoint = endpoint(target);
    let fut = endpoint.as_ref().map(|e| client.connect(e));
    async move {
        match fut {
            Some(f) => f.await,
            None => Err(OriginError::Connect {
                addr: "test".into(),
                reason: "the built-in test origin has no address".into(),
            }),
        }
    }
}
