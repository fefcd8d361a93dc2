//! The body of a stream hold: the origin's initial body, then every published chunk (joined
//! when several are queued), keep-alives and next-link answers in between, until a `close`
//! publish, a drain or an overflow ends it.

use super::filters::filter_stream;
use super::next_link::{Fetched, NextFetcher};
use crate::conn::{CloseReason, ConnQueue, Transport};
use crate::delivery::{Delivery, StreamOut};
use crate::filtering::ConnFilters;
use crate::hold::HoldGuard;
use bytes::{Bytes, BytesMut};
use grip::instruct::{KeepAlive, KeepAliveMode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use runtime::server::{Body, BoxError};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// What one poll of the body yields.
type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

struct KeepAliveTimer {
    content: Bytes,
    period: Duration,
    mode: KeepAliveMode,
    sleep: Pin<Box<Sleep>>,
}

impl KeepAliveTimer {
    fn new(ka: &KeepAlive) -> KeepAliveTimer {
        let period = Duration::from_secs(ka.timeout_secs.max(1));
        KeepAliveTimer {
            content: ka.content.clone(),
            period,
            mode: ka.mode,
            sleep: Box::pin(tokio::time::sleep(jittered(period))),
        }
    }

    fn restart(&mut self) {
        self.sleep
            .as_mut()
            .reset(Instant::now() + jittered(self.period));
    }
}

/// Pushpin shortens each keep-alive period by up to 999 ms so that many streams opened
/// together do not all wake at once.
fn jittered(period: Duration) -> Duration {
    let jitter = Duration::from_millis(fastrand::u64(0..1000));
    period
        .checked_sub(jitter)
        .filter(|d| !d.is_zero())
        .unwrap_or(period)
}

/// Next-link state of a stream hold.
struct NextState {
    fetcher: Arc<NextFetcher>,
    link: grip::instruct::NextLink,
    /// Fires after `link.timeout_secs` without channel activity.
    deadline: Pin<Box<Sleep>>,
    in_flight: Option<futures_util::future::BoxFuture<'static, Fetched>>,
}

impl NextState {
    fn idle_period(&self) -> Duration {
        Duration::from_secs(self.link.timeout_secs.max(1))
    }

    fn activity(&mut self) {
        let period = self.idle_period();
        self.deadline.as_mut().reset(Instant::now() + period);
    }

    fn start(&mut self) {
        if self.in_flight.is_none() {
            self.in_flight = Some(self.fetcher.fetch(self.link.clone()));
        }
    }
}

/// Most queued deliveries joined into one body chunk.
const MAX_COALESCE: usize = 64;
/// A chunk stops growing past this many bytes.
const MAX_COALESCE_BYTES: usize = 16 * 1024;

/// The body of a stream hold: the initial body, then every published chunk, keep-alives in
/// between; ends cleanly on a `close` publish or drain, aborts on overflow.
///
/// Deliveries already queued when the body is polled leave as one chunk (one write for the
/// batch instead of one per message); a lone delivery is passed on without a copy.
pub(super) struct StreamBody {
    initial: Option<Body>,
    rx: ConnQueue,
    /// A `close` or `hint` taken from the queue while joining data; acted on next.
    pending: Option<Arc<Delivery>>,
    keep_alive: Option<KeepAliveTimer>,
    next: Option<NextState>,
    /// Subscription filters, when any channel has some or any publish may name content filters.
    filters: Option<Box<ConnFilters>>,
    guard: HoldGuard,
    done: bool,
    /// HTTP/1.1 chunked body: usage bytes include the chunk framing.
    chunked: bool,
}

impl StreamBody {
    /// Builds the body; `guard` must already be subscribed.
    pub(super) fn new(
        initial: Body,
        rx: ConnQueue,
        keep_alive: Option<&KeepAlive>,
        guard: HoldGuard,
        next: Option<(Arc<NextFetcher>, grip::instruct::NextLink)>,
        chunked: bool,
        filters: Option<Box<ConnFilters>>,
    ) -> StreamBody {
        StreamBody {
            initial: Some(initial),
            rx,
            pending: None,
            keep_alive: keep_alive.map(KeepAliveTimer::new),
            next: next.map(|(fetcher, link)| {
                let period = Duration::from_secs(link.timeout_secs.max(1));
                NextState {
                    fetcher,
                    link,
                    deadline: Box::pin(tokio::time::sleep(period)),
                    in_flight: None,
                }
            }),
            filters,
            guard,
            done: false,
            chunked,
        }
    }

    /// Fetches the next link at once with `Grip-Last` headers (a resume history could not
    /// serve). No-op without a next link.
    pub(super) fn fetch_next_now(&mut self, grip_last: Vec<(String, String)>) {
        if let Some(next) = self.next.as_mut()
            && next.in_flight.is_none()
        {
            next.in_flight = Some(next.fetcher.fetch_with_last(next.link.clone(), grip_last));
        }
    }

    /// `first` plus the data deliveries queued behind it, as one chunk, and how many
    /// deliveries it holds. A `close` or `hint` met on the way is kept in `pending`.
    fn join_queued(&mut self, first: &Bytes, first_accepted: u64) -> (Bytes, u64) {
        let metrics = &self.guard.edge().metrics;
        metrics.record_latency(first_accepted);
        let rx = &mut self.rx;
        let filters = &mut self.filters;
        let joined = join_stream_data(
            first,
            || rx.try_recv(),
            |d, data| filter_stream(filters, d, data),
            |d| {
                metrics.record_latency(d.accepted_unix_nanos);
            },
        );
        self.pending = joined.pending;
        (joined.data, joined.count)
    }

    fn wrote(&mut self) {
        if let Some(ka) = &mut self.keep_alive
            && ka.mode == KeepAliveMode::Idle
        {
            ka.restart();
        }
    }
}

/// Data deliveries joined into one stream chunk.
struct Joined {
    data: Bytes,
    count: u64,
    /// A `close` or `hint` that ended the batch; it is acted on after `data`.
    pending: Option<Arc<Delivery>>,
}

/// Joins `first` with the data deliveries `next` yields, up to [`MAX_COALESCE`] deliveries
/// or [`MAX_COALESCE_BYTES`]; `filter` gives each delivery's bytes for this subscriber
/// (`None`: skipped), `on_joined` sees each delivery added after `first`. A lone delivery is
/// returned as is (no copy).
fn join_stream_data(
    first: &Bytes,
    mut next: impl FnMut() -> Option<Arc<Delivery>>,
    mut filter: impl FnMut(&Delivery, &Bytes) -> Option<Bytes>,
    mut on_joined: impl FnMut(&Delivery),
) -> Joined {
    let mut joined: Option<BytesMut> = None;
    let mut count = 1u64;
    let mut len = first.len();
    let mut pending = None;
    while count < MAX_COALESCE as u64 && len < MAX_COALESCE_BYTES {
        let Some(d) = next() else { break };
        match &d.stream {
            Some(StreamOut::Data(more)) => {
                let Some(more) = filter(&d, more) else {
                    continue;
                };
                let more = &more;
                let buf = joined.get_or_insert_with(|| {
                    let mut b = BytesMut::with_capacity(MAX_COALESCE_BYTES.min(len * 8));
                    b.extend_from_slice(first);
                    b
                });
                buf.extend_from_slice(more);
                len += more.len();
                count += 1;
                on_joined(&d);
            }
            Some(StreamOut::Close | StreamOut::Hint) => {
                pending = Some(d);
                break;
            }
            // Nothing for stream holds in this item.
            None => {}
        }
    }
    Joined {
        data: joined.map_or_else(|| first.clone(), BytesMut::freeze),
        count,
        pending,
    }
}

impl StreamBody {
    /// A close asked of the connection ends the body: cleanly, or (slow consumer) with an
    /// error so the client knows data is missing.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Option<Polled> {
        let Poll::Ready(reason) = self.guard.conn.poll_closed(cx) else {
            return None;
        };
        self.done = true;
        Some(Poll::Ready(match reason {
            // A clean end: the client sees the terminating chunk.
            CloseReason::Drain
            | CloseReason::Revoked
            | CloseReason::Expired
            | CloseReason::QuotaExceeded => None,
            // Abort without the terminating chunk, so the client knows data is missing.
            CloseReason::SlowConsumer => Some(Err("send queue overflow".into())),
        }))
    }

    /// The origin's initial body goes out first, whole, before any published data.
    fn poll_initial(&mut self, cx: &mut Context<'_>) -> Option<Polled> {
        let initial = self.initial.as_mut()?;
        match Pin::new(initial).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    self.wrote();
                    return Some(Poll::Ready(Some(Ok(Frame::data(data)))));
                }
                // Trailers from the origin are dropped: the stream goes on.
                cx.waker().wake_by_ref();
                Some(Poll::Pending)
            }
            Poll::Ready(Some(Err(err))) => {
                self.done = true;
                Some(Poll::Ready(Some(Err(err))))
            }
            Poll::Ready(None) => {
                self.initial = None;
                None
            }
            Poll::Pending => Some(Poll::Pending),
        }
    }

    /// The next queued delivery (or the one kept back while joining data), acted on.
    fn poll_queue(&mut self, cx: &mut Context<'_>) -> Option<Polled> {
        let polled = match self.pending.take() {
            Some(d) => Poll::Ready(Some(d)),
            None => self.rx.poll_recv(cx),
        };
        match polled {
            Poll::Ready(Some(delivery)) => Some(self.deliver(&delivery, cx)),
            Poll::Ready(None) => {
                self.done = true;
                Some(Poll::Ready(None))
            }
            Poll::Pending => None,
        }
    }

    /// One delivery taken from the queue: data (joined with what is queued behind it), the
    /// end of the stream, or a hint to fetch the next link.
    fn deliver(&mut self, delivery: &Arc<Delivery>, cx: &mut Context<'_>) -> Polled {
        match &delivery.stream {
            Some(StreamOut::Data(data)) => {
                let Some(data) = filter_stream(&mut self.filters, delivery, data) else {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                };
                let (data, n) = self.join_queued(&data, delivery.accepted_unix_nanos);
                self.count_sent(&data, n);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(StreamOut::Close) => {
                self.done = true;
                if let Some(u) = self.guard.usage() {
                    u.ended(crate::usage::EndReason::Origin);
                }
                Poll::Ready(None)
            }
            Some(StreamOut::Hint) => {
                if let Some(next) = self.next.as_mut() {
                    next.start();
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            None => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    /// Books `n` deliveries joined into `data` about to be written: channel activity (for
    /// the next link), the sent counter, usage and the idle keep-alive.
    fn count_sent(&mut self, data: &Bytes, n: u64) {
        if let Some(next) = self.next.as_mut() {
            next.activity();
        }
        self.guard
            .edge()
            .metrics
            .transport(Transport::HttpStream)
            .sent
            .increment(n);
        if let Some(u) = self.guard.usage() {
            let wire = if self.chunked {
                crate::usage::chunk_len(data.len())
            } else {
                data.len() as u64
            };
            u.add(n, wire);
        }
        self.wrote();
    }

    /// Starts the next-link fetch when the channels were idle for its timeout, and appends
    /// its answer once it arrives (a failed fetch is retried after the timeout).
    fn poll_next_link(&mut self, cx: &mut Context<'_>) -> Option<Polled> {
        let next = self.next.as_mut()?;
        if next.in_flight.is_none() && next.deadline.as_mut().poll(cx).is_ready() {
            next.start();
        }
        let fut = next.in_flight.as_mut()?;
        let Poll::Ready(result) = fut.as_mut().poll(cx) else {
            return None;
        };
        next.in_flight = None;
        match result {
            Ok((body, link)) => {
                next.link = link;
                next.activity();
                let _ = next.deadline.as_mut().poll(cx);
                if !body.is_empty() {
                    return Some(Poll::Ready(Some(Ok(Frame::data(body)))));
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "next link fetch failed; retrying after the timeout");
                next.activity();
                let _ = next.deadline.as_mut().poll(cx);
            }
        }
        None
    }

    /// A keep-alive when its timer fired.
    fn poll_keep_alive(&mut self, cx: &mut Context<'_>) -> Option<Polled> {
        let ka = self.keep_alive.as_mut()?;
        if ka.sleep.as_mut().poll(cx).is_pending() {
            return None;
        }
        ka.restart();
        let data = ka.content.clone();
        // Register the new deadline with this task before returning.
        let _ = ka.sleep.as_mut().poll(cx);
        Some(Poll::Ready(Some(Ok(Frame::data(data)))))
    }
}

impl HttpBody for StreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Polled {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        // In order: a close asked, the initial body, queued deliveries, the next link, a
        // keep-alive; the first with something to say answers.
        this.poll_close(cx)
            .or_else(|| this.poll_initial(cx))
            .or_else(|| this.poll_queue(cx))
            .or_else(|| this.poll_next_link(cx))
            .or_else(|| this.poll_keep_alive(cx))
            .unwrap_or(Poll::Pending)
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn delivery(stream: Option<StreamOut>) -> Arc<Delivery> {
        Arc::new(Delivery {
            stream,
            response: None,
            ws: None,
            accepted_unix_nanos: 0,
            channel: Arc::from("c"),
            prev_id: None,
            seq: 0,
            id: None,
            meta: Default::default(),
            content_filters: Default::default(),
        })
    }

    fn data(s: &'static str) -> Arc<Delivery> {
        delivery(Some(StreamOut::Data(Bytes::from_static(s.as_bytes()))))
    }

    #[test]
    fn queued_data_leaves_as_one_chunk_up_to_a_close() {
        let mut queue: VecDeque<_> = [
            data("b\n"),
            delivery(None),
            data("c\n"),
            delivery(Some(StreamOut::Close)),
            data("after close\n"),
        ]
        .into();
        let mut seen = 0;
        let first = Bytes::from_static(b"a\n");
        let j = join_stream_data(
            &first,
            || queue.pop_front(),
            |_, b| Some(b.clone()),
            |_| seen += 1,
        );
        assert_eq!(j.data, Bytes::from_static(b"a\nb\nc\n"));
        assert_eq!((j.count, seen), (3, 2));
        assert_eq!(
            j.pending.as_ref().and_then(|d| d.stream.clone()),
            Some(StreamOut::Close)
        );
        assert_eq!(queue.len(), 1, "nothing is taken past the close");
    }

    #[test]
    fn a_lone_delivery_is_not_copied_and_batches_are_bounded() {
        let first = Bytes::from_static(b"only\n");
        let j = join_stream_data(&first, || None, |_, b| Some(b.clone()), |_| {});
        assert_eq!(j.data.as_ptr(), first.as_ptr());
        assert_eq!(j.count, 1);

        let mut queue: VecDeque<_> = (0..200).map(|_| data("x")).collect();
        let j = join_stream_data(
            &Bytes::from_static(b"x"),
            || queue.pop_front(),
            |_, b| Some(b.clone()),
            |_| {},
        );
        assert_eq!(j.count, MAX_COALESCE as u64);
        assert_eq!(j.data.len(), MAX_COALESCE);
        assert_eq!(queue.len(), 200 - (MAX_COALESCE - 1));

        let big = Bytes::from(vec![b'y'; MAX_COALESCE_BYTES / 2]);
        let mut queue: VecDeque<_> = (0..10)
            .map(|_| delivery(Some(StreamOut::Data(big.clone()))))
            .collect();
        let j = join_stream_data(&big, || queue.pop_front(), |_, b| Some(b.clone()), |_| {});
        assert_eq!(j.count, 2, "stops once the chunk reaches the byte limit");
    }
}
