//! A WebSocket-over-HTTP origin ([`WohOrigin`], on top of [`Origin`]) whose handler sees the
//! decoded events of each request, and the standard GRIP echo behaviour ([`echo_reply`]).

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::events::{WsEvent, decode_events, grip_events_response};
use crate::origin::{Origin, OriginResponse, RecordedRequest};
use crate::wait::wait_until;

/// A WebSocket-over-HTTP request as the origin received it, with its decoded events.
#[derive(Debug, Clone)]
pub struct WohRequest {
    /// The raw request.
    pub request: RecordedRequest,
    /// The decoded events (empty when the body is empty or could not be decoded).
    pub events: Vec<WsEvent>,
    /// Why the body could not be decoded, if it could not.
    pub decode_error: Option<String>,
}

impl WohRequest {
    /// Decodes `request`'s body.
    pub fn new(request: RecordedRequest) -> WohRequest {
        let (events, decode_error) = match decode_events(&request.body) {
            Ok(events) => (events, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        WohRequest {
            request,
            events,
            decode_error,
        }
    }

    /// The `Connection-Id` header.
    pub fn connection_id(&self) -> Option<String> {
        self.request.header("connection-id")
    }

    /// Whether this is the OPEN request of a connection.
    pub fn is_open(&self) -> bool {
        self.events.first() == Some(&WsEvent::Open)
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.request.header(name)
    }

    /// A query parameter of the request target (not percent-decoded).
    pub fn query(&self, name: &str) -> Option<String> {
        self.request.query(name)
    }
}

/// The standard GRIP echo origin's answer to one request (a building block for custom
/// handlers):
/// - `OPEN` ⇒ `OPEN`, then a `subscribe` control message for each comma-separated channel in
///   the `channel` query parameter;
/// - `TEXT t` ⇒ `TEXT m:t`; `BINARY b` ⇒ `BINARY m:b` (the GRIP prefix applies to both);
/// - `CLOSE` ⇒ the same `CLOSE` back;
/// - anything else (and an empty keep-alive body) ⇒ nothing.
///
/// Always answered with `Sec-WebSocket-Extensions: grip`.
pub fn echo_reply(req: &WohRequest) -> OriginResponse {
    grip_events_response(&echo_events(req))
}

/// The events of [`echo_reply`].
pub fn echo_events(req: &WohRequest) -> Vec<WsEvent> {
    let mut out = Vec::new();
    for event in &req.events {
        match event {
            WsEvent::Open => {
                out.push(WsEvent::Open);
                if let Some(channels) = req.query("channel") {
                    for channel in channels.split(',').filter(|c| !c.is_empty()) {
                        out.push(WsEvent::subscribe(channel));
                    }
                }
            }
            WsEvent::Text(t) => {
                let mut m = b"m:".to_vec();
                m.extend_from_slice(t);
                out.push(WsEvent::Text(Bytes::from(m)));
            }
            WsEvent::Binary(b) => {
                let mut m = b"m:".to_vec();
                m.extend_from_slice(b);
                out.push(WsEvent::Binary(Bytes::from(m)));
            }
            WsEvent::Close(p) => out.push(WsEvent::Close(p.clone())),
            WsEvent::Ping(_) | WsEvent::Pong(_) | WsEvent::Disconnect => {}
        }
    }
    out
}

/// A fake WebSocket-over-HTTP origin: an [`Origin`] whose handler gets each request with its
/// decoded events. Every request is recorded; requests are grouped by `Connection-Id`.
#[derive(Debug)]
pub struct WohOrigin {
    origin: Origin,
}

impl WohOrigin {
    /// Starts an origin answering every request with `handler(request)`.
    pub async fn start<F>(handler: F) -> WohOrigin
    where
        F: Fn(&WohRequest) -> OriginResponse + Send + Sync + 'static,
    {
        let origin = Origin::start(move |req| handler(&WohRequest::new(req))).await;
        WohOrigin { origin }
    }

    /// Starts the standard GRIP echo origin ([`echo_reply`]).
    pub async fn echo() -> WohOrigin {
        WohOrigin::start(echo_reply).await
    }

    /// The underlying HTTP origin.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// `127.0.0.1:PORT` as used in a routes file target (add `,over_http`).
    pub fn target(&self) -> String {
        self.origin.target()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<WohRequest> {
        self.origin
            .requests()
            .into_iter()
            .map(WohRequest::new)
            .collect()
    }

    /// The requests of one connection, in arrival order.
    pub fn requests_of(&self, connection_id: &str) -> Vec<WohRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.connection_id().as_deref() == Some(connection_id))
            .collect()
    }

    /// Every event the origin received from one connection, in order, over all its requests.
    pub fn events_of(&self, connection_id: &str) -> Vec<WsEvent> {
        self.requests_of(connection_id)
            .into_iter()
            .flat_map(|r| r.events)
            .collect()
    }

    /// Waits for a request matching `pred`; returns the first such request.
    pub async fn wait_request(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&WohRequest) -> bool,
    ) -> WohRequest {
        let found = Mutex::new(None);
        wait_until(timeout, what, || {
            let hit = self.requests().into_iter().find(|r| pred(r));
            let done = hit.is_some();
            if done {
                *found.lock().unwrap_or_else(|p| p.into_inner()) = hit;
            }
            async move { done }
        })
        .await;
        found
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .expect("wait_until returned, so a request matched")
    }

    /// Waits for the OPEN request whose target (path and query) is `uri`; returns it (its
    /// `Connection-Id` identifies the connection in later requests).
    pub async fn wait_open(&self, uri: &str, timeout: Duration) -> WohRequest {
        self.wait_request(timeout, &format!("OPEN request for {uri}"), |r| {
            r.is_open() && r.request.uri == uri
        })
        .await
    }

    /// The `Connection-Id` of the OPEN request for `uri` (waits for it).
    pub async fn connection_id(&self, uri: &str, timeout: Duration) -> String {
        let open = self.wait_open(uri, timeout).await;
        open.connection_id()
            .unwrap_or_else(|| panic!("OPEN request for {uri} has no Connection-Id"))
    }

    /// Waits until the events received from `connection_id` satisfy `pred`; returns them all.
    pub async fn wait_events(
        &self,
        connection_id: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[WsEvent]) -> bool,
    ) -> Vec<WsEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events_of(connection_id);
            if pred(&events) {
                return events;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for: {what} (connection {connection_id}); \
                     events so far: {events:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until `connection_id` has sent `event`; returns all its events.
    pub async fn wait_event(
        &self,
        connection_id: &str,
        event: &WsEvent,
        timeout: Duration,
    ) -> Vec<WsEvent> {
        self.wait_events(connection_id, timeout, &format!("event {event:?}"), |evs| {
            evs.contains(event)
        })
        .await
    }
}
