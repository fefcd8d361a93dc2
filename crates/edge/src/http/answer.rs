//! The origin's answer to a proxied request: relayed as is, or read as GRIP instructions
//! (headers, or an `application/grip-instruct` body) with the channels they name.

use crate::EdgeInner;
use crate::error::ProxyError;
use crate::headers;
use bytes::Bytes;
use grip::instruct::Instruct;
use http::{Response, StatusCode};
use routes::{Route, Target};
use runtime::server::Body;

/// An origin answer carrying GRIP instructions.
pub(super) struct GripAnswer {
    pub(super) parts: http::response::Parts,
    pub(super) instruct: Instruct,
    /// The answer's own body; `None` when the instructions were the body.
    pub(super) body: Option<Body>,
}

/// Reads the instructions of a GRIP answer (a body of instructions at most `max` bytes).
pub(super) async fn read_grip(resp: Response<Body>, max: usize) -> Result<GripAnswer, ProxyError> {
    let (parts, body) = resp.into_parts();
    if headers::content_type_is(&parts.headers, "application/grip-instruct") {
        if parts.status != StatusCode::OK {
            return Err(ProxyError::BadGateway(format!(
                "grip-instruct answer with status {}",
                parts.status
            )));
        }
        let bytes = read_limited(body, max).await?;
        let instruct = grip::instruct::parse_json(&bytes)
            .map_err(|e| ProxyError::BadGateway(e.to_string()))?;
        return Ok(GripAnswer {
            parts,
            instruct,
            body: None,
        });
    }
    let instruct = grip::instruct::parse_headers(&parts.headers)
        .map_err(|e| ProxyError::BadGateway(e.to_string()))?;
    Ok(GripAnswer {
        parts,
        instruct,
        body: Some(body),
    })
}

/// Relays an origin response unchanged but for hop-by-hop (and, for GRIP, `Grip-*`) headers.
pub(super) fn relay(resp: Response<Body>, strip_grip: bool) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    parts.headers = headers::to_client(&parts.headers, strip_grip);
    Response::from_parts(parts, body)
}

/// The channels a hold subscribes: the instruction's and the target's `sub`, with the route's
/// prefix, without repeats, at most `max_channels_per_connection`.
pub(super) fn channels_for(
    edge: &EdgeInner,
    route: &Route,
    target: &Target,
    instruct: &Instruct,
) -> Vec<String> {
    let prefix = route.prefix.as_deref().unwrap_or("");
    let mut out: Vec<String> = Vec::new();
    let names = instruct
        .channels
        .iter()
        .map(|c| c.name.as_str())
        .chain(target.sub.iter().map(String::as_str));
    for name in names {
        let full = format!("{prefix}{name}");
        if !out.contains(&full) {
            out.push(full);
        }
    }
    let max = edge.config.max_channels_per_connection;
    if out.len() > max {
        tracing::debug!(route = %route.id, dropped = out.len() - max, "channels over the per-connection limit ignored");
        out.truncate(max);
    }
    out
}

/// An origin body, at most `max` bytes (more is the origin's fault).
pub(super) async fn read_limited(body: Body, max: usize) -> Result<Bytes, ProxyError> {
    crate::origin::collect_limited(body, max)
        .await
        .map_err(|e| ProxyError::BadGateway(format!("origin body: {e}")))
}
