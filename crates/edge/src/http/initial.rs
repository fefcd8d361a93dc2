//! The first answer of a GRIP hold: the status, headers and body a stream starts with (or a
//! response hold answers on timeout), and the response built from them.

use crate::error::ProxyError;
use crate::headers;
use bytes::Bytes;
use grip::instruct::{Instruct, StatusOverride};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use runtime::server::Body;

/// Status, headers and body the client gets first (stream) or on timeout (response hold).
pub(super) fn initial_response(
    parts: &http::response::Parts,
    instruct: &Instruct,
    origin_body: Bytes,
) -> (u16, HeaderMap, Bytes) {
    let (status, mut hdrs, body) = match &instruct.response {
        Some(r) => {
            let mut h = HeaderMap::new();
            for (k, v) in &r.headers {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.as_bytes()),
                    HeaderValue::from_str(v),
                ) {
                    h.append(k, v);
                }
            }
            (r.code, h, r.body.clone())
        }
        None => (parts.status.as_u16(), parts.headers.clone(), origin_body),
    };
    hdrs = headers::to_client(&hdrs, true);
    for name in [header::CONTENT_LENGTH, header::CONTENT_ENCODING] {
        hdrs.remove(name);
    }
    if let Some(expose) = &instruct.expose_headers {
        let keep: Vec<String> = expose.iter().map(|n| n.to_ascii_lowercase()).collect();
        let names: Vec<HeaderName> = hdrs.keys().cloned().collect();
        for name in names {
            if !keep.iter().any(|k| k == name.as_str()) {
                hdrs.remove(&name);
            }
        }
    }
    (status, hdrs, body)
}

/// A response with `code` (or the instruction's status override, reason phrase included).
pub(super) fn build_response(
    code: u16,
    status_override: &Option<StatusOverride>,
    hdrs: HeaderMap,
    body: Body,
) -> Result<Response<Body>, ProxyError> {
    let (code, reason) = match status_override {
        Some(o) => (o.code, o.reason.clone()),
        None => (code, None),
    };
    let status = StatusCode::from_u16(code)
        .map_err(|_| ProxyError::BadGateway(format!("status code {code} cannot be sent")))?;
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = hdrs;
    if let Some(reason) = reason
        && let Ok(r) = hyper::ext::ReasonPhrase::try_from(Bytes::from(reason))
    {
        resp.extensions_mut().insert(r);
    }
    Ok(resp)
}
