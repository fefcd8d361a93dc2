//! The publish path HTTP and gRPC share: a validated batch is stored (channels with
//! history) and handed to the publish queue.

use crate::Inner;
use crate::error::ApiError;
use bytes::Bytes;
use grip::publish::PublishItem;
use std::time::{SystemTime, UNIX_EPOCH};

/// Index of the first item whose channel is longer than `--max-channel-length` (the batch is
/// refused whole: such a name could make a bus subject the bus refuses; docs/protocol.md, "Limits").
pub(crate) fn overlong_channel(inner: &Inner, items: &[PublishItem]) -> Option<usize> {
    items
        .iter()
        .position(|i| i.channel.len() > inner.config.max_channel_length)
}

/// Publishes a validated batch in order and returns each item's history position (`None`
/// for channels without history).
///
/// The batch is handed to the publish queue ([`crate::outbox`]) and the call returns: it
/// never waits on the bus or on delivery. Items of channels with history are stored first
/// (the whole batch, pipelined), and such a batch waits until it is on the bus and flushed,
/// so "stored" also means "sent live"; a stored item's live copy carries its `seq`, so edges
/// can close the seam between a replay and live delivery. An item the store already had
/// (same `id` within the de-dup window, through any replica) is published live again with the
/// first copy's `seq`: edges drop it as a duplicate, and an acknowledged item is never left
/// unpublished.
pub(crate) async fn publish_items(
    inner: &Inner,
    items: &[PublishItem],
) -> Result<Vec<Option<u64>>, ApiError> {
    let accepted = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let payloads: Vec<Bytes> = items
        .iter()
        .map(|item| bus::payload::encode(item, accepted))
        .collect();
    let mut seqs: Vec<Option<u64>> = vec![None; items.len()];
    if let Some(history) = &inner.config.history {
        let mut stored_at = Vec::new();
        let mut batch = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(limits) = history.policy.lookup(&item.channel) {
                stored_at.push(i);
                batch.push(bus::history::StoreItem {
                    channel: item.channel.clone(),
                    id: item.id.clone(),
                    limits,
                    payload: payloads[i].clone(),
                });
            }
        }
        if !batch.is_empty() {
            let receipts = history.store.store(batch).await?;
            for (i, receipt) in stored_at.into_iter().zip(receipts) {
                seqs[i] = Some(receipt.seq);
            }
        }
    }
    let stored = seqs.iter().any(Option::is_some);
    let live: Vec<(String, Bytes)> = items
        .iter()
        .zip(payloads)
        .zip(&seqs)
        .map(|((item, payload), seq)| {
            let payload = match seq {
                Some(seq) => bus::payload::with_seq(&payload, *seq),
                None => payload,
            };
            (bus::subject::channel_subject(&item.channel), payload)
        })
        .collect();
    let sent = inner.outbox.push(live, stored)?;
    if let Some(sent) = sent {
        // "Stored" must also mean "sent live": a control killed right after answering must
        // not leave connected clients without an item they will never resume for.
        sent.wait().await?;
        inner.bus.flush().await?;
    }
    Ok(seqs)
}
