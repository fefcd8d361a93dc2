//! Subscription filters at delivery time (`grip::filter` does the evaluation).
//!
//! Filters run on the connection's own task, against the shared [`Delivery`]: the fan-out
//! stays one refcount bump per subscriber, and a subscription whose filters do not change
//! content keeps the shared rendered message. Only content filters (`build-id`, `var-subst`)
//! produce per-subscriber bytes, and only when the content actually changes.

use crate::delivery::Delivery;
use bytes::Bytes;
use grip::filter::{FilterContext, FilterKind, FilterOutcome, FilterSet};
use std::collections::{BTreeMap, HashMap};

/// What one subscriber gets from an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The shared content.
    Shared,
    /// Nothing: a filter dropped it (or the content filters do not match).
    Drop,
    /// This subscriber's own content.
    Own(Bytes),
}

/// The filters of one connection's subscriptions, its subscription meta and its channels.
#[derive(Debug, Default)]
pub(crate) struct ConnFilters {
    /// Filters per channel (full name); channels without filters are absent.
    by_channel: HashMap<String, FilterSet>,
    /// Subscription meta (`Grip-Set-Meta`, grip-instruct `meta`, WebSocket `set-meta`).
    pub(crate) meta: BTreeMap<String, String>,
    /// Every subscribed channel and the last id seen on it (for `require-sub`, `build-id`).
    channels: Vec<(String, Option<String>)>,
}

impl ConnFilters {
    /// Records a subscription (replacing its filters).
    pub(crate) fn subscribe(&mut self, channel: &str, names: &[String], prev_id: Option<String>) {
        let set = FilterSet::from_names(names);
        if set.is_empty() {
            self.by_channel.remove(channel);
        } else {
            self.by_channel.insert(channel.to_owned(), set);
        }
        match self.channels.iter_mut().find(|(c, _)| c == channel) {
            Some(entry) => entry.1 = prev_id,
            None => self.channels.push((channel.to_owned(), prev_id)),
        }
    }

    /// Forgets a subscription.
    pub(crate) fn unsubscribe(&mut self, channel: &str) {
        self.by_channel.remove(channel);
        self.channels.retain(|(c, _)| c != channel);
    }

    /// Sets (`Some`) or deletes (`None`) one meta value.
    pub(crate) fn set_meta(&mut self, name: String, value: Option<String>) {
        match value {
            Some(v) => {
                self.meta.insert(name, v);
            }
            None => {
                self.meta.remove(&name);
            }
        }
    }

    /// Notes the id of an item delivered on `channel` (the channel's new last id).
    pub(crate) fn delivered(&mut self, channel: &str, id: Option<&str>) {
        if let Some(id) = id
            && let Some(entry) = self.channels.iter_mut().find(|(c, _)| c == channel)
        {
            entry.1 = Some(id.to_owned());
        }
    }

    /// Runs the filters of the delivery's channel over `content`. `content_filters` is the
    /// format's published `content-filters` list.
    pub(crate) fn judge(
        &self,
        delivery: &Delivery,
        content_filters: Option<&[String]>,
        content: &Bytes,
    ) -> Verdict {
        let set = self.by_channel.get(&*delivery.channel);
        let empty = FilterSet::default();
        let set = set.unwrap_or(&empty);
        if !set.accepts_content_filters(content_filters) {
            return Verdict::Drop;
        }
        if set.is_empty() {
            return Verdict::Shared;
        }
        // The channel list is only built for the filters that read it.
        let needs_channels = set
            .kinds()
            .iter()
            .any(|k| matches!(k, FilterKind::RequireSub | FilterKind::BuildId));
        let channels: Vec<(&str, Option<&str>)> = if needs_channels {
            self.channels
                .iter()
                .map(|(c, id)| (c.as_str(), id.as_deref()))
                .collect()
        } else {
            Vec::new()
        };
        let ctx = FilterContext {
            sub_meta: &self.meta,
            pub_meta: &delivery.meta,
            channels: &channels,
        };
        match grip::filter::apply(set, &ctx, content) {
            Ok(FilterOutcome::Unchanged) => Verdict::Shared,
            Ok(FilterOutcome::Drop) => Verdict::Drop,
            Ok(FilterOutcome::Content(c)) => Verdict::Own(c),
            Err(err) => {
                // Pushpin drops the item for this subscriber (and closes it in debug mode).
                tracing::debug!(channel = %delivery.channel, error = %err, "filter failed; item dropped");
                crate::metrics::EdgeMetrics::dropped("filter_error");
                Verdict::Drop
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grip::publish::{ContentFilters, Formats, HttpStreamFormat, PublishItem};

    fn delivery(channel: &str, meta: &[(&str, &str)], filters: Option<Vec<String>>) -> Delivery {
        let item = PublishItem {
            channel: channel.into(),
            id: Some("5".into()),
            prev_id: None,
            meta: meta
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            no_seq: false,
            formats: Formats {
                http_stream: Some(HttpStreamFormat::Send(Bytes::from_static(b"hi %(user)s"))),
                content_filters: ContentFilters {
                    http_stream: filters,
                    ..ContentFilters::default()
                },
                ..Formats::default()
            },
        };
        Delivery::render(item, 0).expect("renders")
    }

    #[test]
    fn shared_unless_content_changes() {
        let mut f = ConnFilters::default();
        f.subscribe("a", &["skip-self".into()], None);
        f.subscribe("b", &["var-subst".into()], None);
        f.set_meta("user".into(), Some("al".into()));
        let content = Bytes::from_static(b"hi %(user)s");
        let d = delivery("a", &[("sender", "bo")], None);
        assert_eq!(f.judge(&d, None, &content), Verdict::Shared);
        let d = delivery("a", &[("sender", "al")], None);
        assert_eq!(f.judge(&d, None, &content), Verdict::Drop);
        let d = delivery("b", &[], None);
        assert_eq!(
            f.judge(&d, None, &content),
            Verdict::Own(Bytes::from_static(b"hi al"))
        );
        // A channel without filters shares, and content filters must match exactly.
        let d = delivery("c", &[("sender", "al")], None);
        assert_eq!(f.judge(&d, None, &content), Verdict::Shared);
        assert_eq!(f.judge(&d, Some(&[]), &content), Verdict::Shared);
        assert_eq!(
            f.judge(&d, Some(&["var-subst".into()]), &content),
            Verdict::Drop
        );
        let d = delivery("b", &[], None);
        assert_eq!(
            f.judge(&d, Some(&["var-subst".into()]), &content),
            Verdict::Own(Bytes::from_static(b"hi al"))
        );
        f.unsubscribe("b");
        assert_eq!(f.judge(&d, None, &content), Verdict::Shared);
    }

    #[test]
    fn require_sub_and_build_id_see_the_channels() {
        let mut f = ConnFilters::default();
        f.subscribe(
            "a",
            &["require-sub".into(), "build-id".into()],
            Some("1".into()),
        );
        f.subscribe("b", &[], None);
        f.set_meta("id_format".into(), Some("%(a)s".into()));
        let d = delivery("a", &[("require_sub", "b")], None);
        assert_eq!(
            f.judge(&d, None, &Bytes::from_static(b"id=%I")),
            Verdict::Own(Bytes::from_static(b"id=1"))
        );
        f.delivered("a", Some("2"));
        assert_eq!(
            f.judge(&d, None, &Bytes::from_static(b"id=%I")),
            Verdict::Own(Bytes::from_static(b"id=2"))
        );
        let d = delivery("a", &[("require_sub", "zz")], None);
        assert_eq!(f.judge(&d, None, &Bytes::from_static(b"x")), Verdict::Drop);
    }
}
