//! A client's request body with a progress timeout, that remembers how it failed.
//!
//! nginx's `client_body_timeout`: a body must keep moving — at most `timeout` between two
//! reads that yield data — or the request fails with 408 instead of holding its connection
//! (and, through the edge, an origin connection) for ever. Any other error of the body
//! (broken chunked encoding, a connection closed before `Content-Length` bytes) is the
//! client's fault too: 400, never 502. Whoever consumes the body — the handler, or the origin
//! request it is streamed into — fails; the handler asks [`BodyFaults`] what happened to
//! answer the client correctly.

use bytes::Bytes;
use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Why a client's body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// No byte for the body timeout (408).
    Timeout,
    /// Malformed or cut short (400).
    Malformed,
}

impl BodyFault {
    /// The status the client gets.
    pub fn status(self) -> http::StatusCode {
        match self {
            BodyFault::Timeout => http::StatusCode::REQUEST_TIMEOUT,
            BodyFault::Malformed => http::StatusCode::BAD_REQUEST,
        }
    }

    /// The text the client gets (the answer's body, without its newline).
    pub fn text(self) -> &'static str {
        match self {
            BodyFault::Timeout => "Request body timed out.",
            BodyFault::Malformed => "Malformed request body.",
        }
    }

    /// A plain-text answer for the client.
    pub fn response(self) -> http::Response<crate::server::Body> {
        let mut resp = crate::server::text(self.status(), format!("{}\n", self.text()));
        // The rest of the request cannot be found in the stream: do not reuse the connection.
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        resp
    }
}

/// The error a [`ClientBody`] yields.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// No byte for this long.
    #[error("request body timed out after {0:?} without data")]
    Timeout(Duration),
    /// hyper's read error (bad chunk, early close).
    #[error("request body: {0}")]
    Malformed(#[from] hyper::Error),
}

/// Shared view of how a [`ClientBody`] failed, if it did (it may have been moved into an
/// origin request by then).
#[derive(Debug, Clone, Default)]
pub struct BodyFaults(Arc<OnceLock<BodyFault>>);

impl BodyFaults {
    /// The body's failure, once it failed.
    pub fn get(&self) -> Option<BodyFault> {
        self.0.get().copied()
    }

    fn set(&self, fault: BodyFault) {
        let _ = self.0.set(fault);
    }
}

/// A request body that fails after `timeout` without data, and records why it failed.
#[derive(Debug)]
pub struct ClientBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
    faults: BodyFaults,
}

impl ClientBody {
    /// Wraps `inner`; the clock starts now.
    pub fn new(inner: Incoming, timeout: Duration) -> ClientBody {
        ClientBody {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            faults: BodyFaults::default(),
        }
    }

    /// The handle that tells how this body failed.
    pub fn faults(&self) -> BodyFaults {
        self.faults.clone()
    }
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let timeout = this.timeout;
                this.deadline.as_mut().reset(Instant::now() + timeout);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.faults.set(BodyFault::Malformed);
                Poll::Ready(Some(Err(ClientBodyError::Malformed(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.faults.set(BodyFault::Timeout);
                    Poll::Ready(Some(Err(ClientBodyError::Timeout(this.timeout))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request with its body wrapped in a [`ClientBody`], using the connection's
/// `--client-body-timeout` (from [`crate::server::ConnInfo`]; the default when absent).
pub fn client_body(req: Request<Incoming>) -> Request<ClientBody> {
    let timeout = req
        .extensions()
        .get::<crate::server::ConnInfo>()
        .map_or(crate::server::DEFAULT_BODY_TIMEOUT, |c| c.body_timeout);
    req.map(|b| ClientBody::new(b, timeout))
}

/// Reads and discards what is left of a body — at most `max_bytes` and for at most
/// `max_time`, and never past its timeout — so an early answer (413) reaches a client that is
/// still sending instead of being lost to the reset a close with unread data causes (nginx's
/// lingering close). Returns whether the body was read to its end.
pub async fn drain(body: &mut ClientBody, max_bytes: usize, max_time: Duration) -> bool {
    use http_body_util::BodyExt;
    let read_rest = async {
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Ok(data) = frame.into_data() {
                seen = seen.saturating_add(data.len());
                if seen > max_bytes {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(max_time, read_rest)
        .await
        .unwrap_or(false)
}
