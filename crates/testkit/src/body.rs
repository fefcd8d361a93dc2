//! A body type usable both as a request body (client side) and a response body (origin side):
//! either a complete buffer or a channel fed by the test, which can also abort the body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// One item fed into a [`KitBody::Channel`].
#[derive(Debug, Clone)]
pub enum BodyChunk {
    /// A data chunk, sent as soon as it is received.
    Data(Bytes),
    /// Fail the body: the HTTP implementation aborts the connection mid-message.
    Abort,
}

/// A complete or streamed HTTP body.
#[derive(Debug)]
pub enum KitBody {
    /// A complete body (`None` once sent or when empty).
    Full(Option<Bytes>),
    /// A body streamed from a channel; it ends when the sender is dropped.
    Channel(mpsc::Receiver<BodyChunk>),
}

impl KitBody {
    /// A complete body; an empty buffer is an empty body.
    pub fn full(bytes: impl Into<Bytes>) -> KitBody {
        let bytes = bytes.into();
        if bytes.is_empty() {
            KitBody::Full(None)
        } else {
            KitBody::Full(Some(bytes))
        }
    }

    /// A streamed body and the sender that feeds it (capacity 64 chunks).
    pub fn channel() -> (mpsc::Sender<BodyChunk>, KitBody) {
        let (tx, rx) = mpsc::channel(64);
        (tx, KitBody::Channel(rx))
    }
}

/// Error raised when a streamed body is aborted on purpose.
#[derive(Debug)]
pub struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("body aborted by the test")
    }
}

impl std::error::Error for Aborted {}

impl Body for KitBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match &mut *self {
            KitBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            KitBody::Channel(rx) => match rx.poll_recv(cx) {
                Poll::Ready(Some(BodyChunk::Data(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(Some(BodyChunk::Abort)) => Poll::Ready(Some(Err(Aborted))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, KitBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            KitBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            KitBody::Full(None) => SizeHint::with_exact(0),
            KitBody::Channel(_) => SizeHint::default(),
        }
    }
}
