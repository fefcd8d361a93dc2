//! Per-channel ordering and de-duplication, as Pushpin's sequencer does it.
//!
//! * An item whose `id` was seen on the channel within the de-dup window is dropped.
//! * An item whose `prev-id` is not the channel's last id is held back (at most
//!   [`MAX_PENDING`] per channel) until its predecessor arrives or [`Sequencer::wait`] passes.
//! * With no known last id, or without `prev-id`, an item goes out at once; its `id` (or the
//!   lack of one) becomes the channel's last id.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most items held back per channel; beyond it items go out unordered rather than be lost.
pub(crate) const MAX_PENDING: usize = 100;

/// Ordering metadata of an item.
pub(crate) trait Sequenced {
    /// Item id.
    fn id(&self) -> Option<&str>;
    /// Previous item id.
    fn prev_id(&self) -> Option<&str>;
    /// Skip sequencing.
    fn no_seq(&self) -> bool;
}

/// Sequencing state of one channel.
pub(crate) struct Sequencer<T> {
    dedup_window: Duration,
    wait: Duration,
    last_id: Option<String>,
    /// prev-id ⇒ (arrival, item).
    pending: HashMap<String, (Instant, T)>,
    /// Recently seen ids in arrival order, for expiry.
    seen_order: VecDeque<(Instant, String)>,
    seen: HashMap<String, Instant>,
}

impl<T: Sequenced> Sequencer<T> {
    /// A sequencer with the given de-dup window and out-of-order wait.
    pub(crate) fn new(dedup_window: Duration, wait: Duration) -> Sequencer<T> {
        Sequencer {
            dedup_window,
            wait,
            last_id: None,
            pending: HashMap::new(),
            seen_order: VecDeque::new(),
            seen: HashMap::new(),
        }
    }

    /// Takes one item; returns the items to deliver now, in order.
    pub(crate) fn offer(&mut self, item: T, now: Instant) -> Vec<T> {
        self.expire_seen(now);
        if let Some(id) = item.id() {
            if self.seen.contains_key(id) {
                return Vec::new();
            }
            self.seen.insert(id.to_owned(), now);
            self.seen_order.push_back((now, id.to_owned()));
        }
        let hold_back = !item.no_seq()
            && self.pending.len() < MAX_PENDING
            && match (item.prev_id(), &self.last_id) {
                (Some(prev), Some(last)) => prev != last && !self.pending.contains_key(prev),
                _ => false,
            };
        if hold_back {
            if let Some(prev) = item.prev_id().map(str::to_owned) {
                self.pending.insert(prev, (now, item));
            }
            return Vec::new();
        }
        let mut out = Vec::new();
        self.release(item, &mut out);
        out
    }

    /// Releases items that waited longer than the out-of-order wait, in arrival order.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<T> {
        let mut due: Vec<(Instant, String)> = self
            .pending
            .iter()
            .filter(|(_, (at, _))| now.duration_since(*at) >= self.wait)
            .map(|(prev, (at, _))| (*at, prev.clone()))
            .collect();
        due.sort();
        let mut out = Vec::new();
        for (_, prev) in due {
            if let Some((_, item)) = self.pending.remove(&prev) {
                self.release(item, &mut out);
            }
        }
        out
    }

    /// The id of the last item delivered (None after an item without id).
    pub(crate) fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// When the oldest held-back item is due, if any.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.pending.values().map(|(at, _)| *at + self.wait).min()
    }

    fn release(&mut self, item: T, out: &mut Vec<T>) {
        self.last_id = item.id().map(str::to_owned);
        out.push(item);
        // Anything waiting for the item just released can follow it.
        while let Some(last) = self.last_id.clone() {
            match self.pending.remove(&last) {
                Some((_, next)) => {
                    self.last_id = next.id().map(str::to_owned);
                    out.push(next);
                }
                None => break,
            }
        }
    }

    fn expire_seen(&mut self, now: Instant) {
        while let Some((at, _)) = self.seen_order.front() {
            if now.duration_since(*at) < self.dedup_window {
                break;
            }
            if let Some((at, id)) = self.seen_order.pop_front()
                && self.seen.get(&id) == Some(&at)
            {
                self.seen.remove(&id);
            }
        }
    }
}

impl Sequenced for grip::publish::PublishItem {
    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
    fn prev_id(&self) -> Option<&str> {
        self.prev_id.as_deref()
    }
    fn no_seq(&self) -> bool {
        self.no_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct It(Option<&'static str>, Option<&'static str>, bool);
    impl Sequenced for It {
        fn id(&self) -> Option<&str> {
            self.0
        }
        fn prev_id(&self) -> Option<&str> {
            self.1
        }
        fn no_seq(&self) -> bool {
            self.2
        }
    }

    fn ids(v: Vec<It>) -> Vec<&'static str> {
        v.into_iter().map(|i| i.0.unwrap_or("-")).collect()
    }

    fn seq() -> Sequencer<It> {
        Sequencer::new(Duration::from_secs(60), Duration::from_secs(5))
    }

    #[test]
    fn out_of_order_items_wait_for_their_predecessor() {
        let mut s = seq();
        let t = Instant::now();
        assert_eq!(ids(s.offer(It(Some("a"), None, false), t)), ["a"]);
        assert!(s.offer(It(Some("c"), Some("b"), false), t).is_empty());
        assert_eq!(ids(s.offer(It(Some("b"), Some("a"), false), t)), ["b", "c"]);
    }

    #[test]
    fn orphans_are_released_after_the_wait() {
        let mut s = seq();
        let t = Instant::now();
        s.offer(It(Some("a"), None, false), t);
        assert!(s.offer(It(Some("e"), Some("d"), false), t).is_empty());
        assert_eq!(s.next_expiry(), Some(t + Duration::from_secs(5)));
        assert!(s.expire(t + Duration::from_secs(4)).is_empty());
        assert_eq!(ids(s.expire(t + Duration::from_secs(5))), ["e"]);
        assert_eq!(s.next_expiry(), None);
    }

    #[test]
    fn unknown_last_id_or_no_seq_goes_out_at_once() {
        let mut s = seq();
        let t = Instant::now();
        assert_eq!(ids(s.offer(It(Some("x"), Some("w"), false), t)), ["x"]);
        assert_eq!(ids(s.offer(It(Some("z"), Some("y"), true), t)), ["z"]);
        // An item without id clears the last id: the next one goes out whatever its prev-id.
        assert_eq!(ids(s.offer(It(None, None, false), t)), ["-"]);
        assert_eq!(ids(s.offer(It(Some("q"), Some("p"), false), t)), ["q"]);
    }

    #[test]
    fn duplicates_within_the_window_are_dropped() {
        let mut s = seq();
        let t = Instant::now();
        assert_eq!(ids(s.offer(It(Some("b"), None, false), t)), ["b"]);
        assert!(
            s.offer(It(Some("b"), None, false), t + Duration::from_secs(59))
                .is_empty()
        );
        assert_eq!(
            ids(s.offer(It(Some("b"), None, false), t + Duration::from_secs(61))),
            ["b"]
        );
    }
}
