//! What every endpoint of the HTTP listener checks before acting: method, publish auth,
//! `Accept`, and the bounded body read.

use crate::Inner;
use crate::error::ApiError;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// `Accept` values Pushpin answers (text/plain, application/json and their wildcards).
/// Returns `Some(json)` when acceptable.
fn negotiate(accept: Option<&HeaderValue>) -> Option<bool> {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return Some(false);
    };
    let types: Vec<String> = accept
        .split(',')
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|t| !t.is_empty())
        .collect();
    if types.is_empty() {
        return Some(false);
    }
    for t in &types {
        match t.as_str() {
            "text/plain" | "text/*" | "*/*" => return Some(false),
            "application/json" | "application/*" => return Some(true),
            _ => {}
        }
    }
    None
}

/// `405` unless the method is POST.
pub(super) fn require_post(req: &Request<Incoming>) -> Result<(), ApiError> {
    if req.method() == Method::POST {
        return Ok(());
    }
    Err(ApiError::MethodNotAllowed {
        method: req.method().clone(),
        allow: "POST",
    })
}

/// `401` unless the request carries the publish credentials.
pub(super) fn require_auth(inner: &Inner, req: &Request<Incoming>) -> Result<(), ApiError> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if inner.config.auth.allows(authorization) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// `406` unless `Accept` allows text or JSON; `Ok(true)` for JSON.
pub(super) fn require_acceptable(req: &Request<Incoming>) -> Result<bool, ApiError> {
    negotiate(req.headers().get(header::ACCEPT)).ok_or(ApiError::NotAcceptable)
}

/// Most of an over-limit body read (and dropped) before its 413 is sent, so a client still
/// sending can read the answer instead of losing it to the reset that closing a socket with
/// unread data causes (nginx's lingering close). Beyond it, or after [`DRAIN_TIME`], the
/// connection is just closed.
const DRAIN_OVER_LIMIT: usize = 32 << 20;
/// Longest time spent draining an over-limit body.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// The whole body, at most `max` bytes (`413` beyond, declared or actual; `408` when it
/// stalls for `--client-body-timeout`; `400` when malformed or cut short).
pub(super) async fn read_body(req: Request<Incoming>, max: usize) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = runtime::body::client_body(req).into_body();
    let faults = body.faults();
    if declared.is_some_and(|n| n > max as u64) {
        runtime::body::drain(&mut body, DRAIN_OVER_LIMIT, DRAIN_TIME).await;
        return Err(ApiError::TooLarge);
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            let fault = faults.get().unwrap_or(runtime::body::BodyFault::Malformed);
            return Err(ApiError::Body(fault));
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                runtime::body::drain(&mut body, DRAIN_OVER_LIMIT, DRAIN_TIME).await;
                return Err(ApiError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// A small JSON body (revoke, refresh): at most 64 KiB, and JSON.
pub(super) async fn read_json(req: Request<Incoming>) -> Result<serde_json::Value, ApiError> {
    let body = read_body(req, 64 * 1024).await?;
    serde_json::from_slice(&body).map_err(|_| ApiError::NotJson)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(negotiate(None), Some(false));
        assert_eq!(negotiate(Some(&v("application/json"))), Some(true));
        assert_eq!(negotiate(Some(&v("text/html, */*;q=0.1"))), Some(false));
        assert_eq!(negotiate(Some(&v("text/html"))), None);
    }
}
