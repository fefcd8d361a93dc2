//! Commands for every edge of the cluster, sent by control on [`bus::payload::COMMAND_SUBJECT`]:
//!
//! * `recover` (Pushpin's `POST /recover`, `handlerengine.cpp` `recoverCommand`): forget the
//!   last ids, re-request every response hold from its origin, and make every stream hold with
//!   a next link fetch it now;
//! * `refresh` (Pushpin's `refresh` command, `refreshworker.cpp`): one WebSocket-over-HTTP
//!   request now for the connection with a `Connection-Id`, or for every WebSocket connection
//!   subscribed to a channel.
//!
//! Each is delivered through the connection's own queue, as a synthetic item, so the
//! connection acts on it in order with everything else it receives.

use crate::EdgeInner;
use crate::delivery::Transport;
use crate::delivery::{Delivery, StreamOut, WsOut};
use bus::payload::EdgeCommand;
use grip::publish::{HttpResponseFormat, ResponseAction};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Applies commands from `bus` until `shutdown`.
pub(crate) async fn follow(
    edge: Arc<EdgeInner>,
    bus: Arc<dyn bus::Bus>,
    shutdown: CancellationToken,
) {
    bus::follow(
        bus.as_ref(),
        bus::payload::COMMAND_SUBJECT,
        &shutdown,
        |payload| match EdgeCommand::decode_payload(payload) {
            Ok(cmd) => apply(&edge, &cmd),
            Err(err) => tracing::warn!(error = %err, "dropping undecodable edge command"),
        },
    )
    .await;
}

fn apply(edge: &EdgeInner, cmd: &EdgeCommand) {
    if cmd.recover {
        let n = recover(edge);
        tracing::info!(connections = n, "recover applied");
    }
    if let Some(cid) = &cmd.refresh_cid
        && let Some(conn) = edge.ws_by_cid.get(cid)
    {
        conn.offer(&refresh_item(""));
    }
    if let Some(channel) = &cmd.refresh_channel {
        let item = refresh_item(channel);
        for conn in edge.registry.subscribers(channel) {
            if conn.transport == Transport::Ws {
                conn.offer(&item);
            }
        }
    }
}

fn synthetic(channel: &str) -> Delivery {
    Delivery {
        stream: None,
        response: None,
        ws: None,
        accepted_unix_nanos: 0,
        channel: Arc::from(channel),
        prev_id: None,
        seq: 0,
        id: None,
        meta: Default::default(),
        content_filters: Default::default(),
    }
}

fn refresh_item(channel: &str) -> Arc<Delivery> {
    Arc::new(Delivery {
        ws: Some(WsOut::Refresh),
        ..synthetic(channel)
    })
}

/// Clears the last ids and asks every HTTP hold to update. Returns how many were asked.
fn recover(edge: &EdgeInner) -> usize {
    edge.registry.clear_last_ids();
    let hint = Arc::new(Delivery {
        stream: Some(StreamOut::Hint),
        response: Some(HttpResponseFormat {
            action: ResponseAction::Hint,
            code: 200,
            reason: None,
            headers: Vec::new(),
            body: bytes::Bytes::new(),
        }),
        ..synthetic("")
    });
    let held: Vec<_> = edge.held.iter().map(|e| e.value().clone()).collect();
    let mut n = 0;
    for conn in held {
        if conn.transport != Transport::Ws {
            conn.offer(&hint);
            n += 1;
        }
    }
    n
}
