//! What each tier adds to the admin status page (`GET /`, `GET /status.json` on the admin
//! listener): its route table and the most recent revocations.

use arc_swap::ArcSwap;
use control::RouteStore;
use routes::RouteTable;
use runtime::admin::{StatusExtras, StatusPage};
use serde_json::{Map, Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Revocations kept for the page.
const RECENT_REVOCATIONS: usize = 20;

/// The last [`RECENT_REVOCATIONS`] revocations seen on the bus: credential hash and unix time.
#[derive(Default)]
pub(crate) struct Revocations(Mutex<VecDeque<(String, u64)>>);

impl Revocations {
    /// Follows the revocations bucket until `shutdown`.
    pub(crate) fn follow(
        backend: &crate::common::Backend,
        shutdown: CancellationToken,
    ) -> Arc<Revocations> {
        let recent = Arc::new(Revocations::default());
        let sink = recent.clone();
        let (state, codec) = (backend.state.clone(), backend.codec.clone());
        tokio::spawn(async move {
            bus::cluster_state::follow_revocations(
                state.as_ref(),
                codec,
                &shutdown,
                bus::cluster_state::CaughtUp::new(|| {}),
                |hash, _expires| sink.push(hash.to_owned()),
            )
            .await;
        });
        recent
    }

    fn push(&self, hash: String) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == RECENT_REVOCATIONS {
            q.pop_back();
        }
        q.push_front((hash, at));
    }

    fn json(&self) -> Value {
        let q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        q.iter()
            .map(|(hash, at)| json!({"credential_hash": hash, "at": at}))
            .collect()
    }
}

/// Where a tier's route table comes from.
pub(crate) enum RoutesSource {
    /// Control's store (standalone, control, demo): version and text.
    Store(RouteStore),
    /// An edge's table (version on `gripmesh_edge_routes_version`): the routes by id.
    Table(Arc<ArcSwap<RouteTable>>),
}

/// Hides `sig_key=` values: the page is read-only but the admin listener is not secret.
pub(crate) fn redact(routes_text: &str) -> String {
    let mut out = routes_text
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(|section| {
                    section
                        .split(',')
                        .map(|prop| match prop.split_once('=') {
                            Some(("sig_key", _)) => "sig_key=<redacted>".to_owned(),
                            _ => prop.to_owned(),
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n");
    if routes_text.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// The status page of `tier`.
pub(crate) fn page(
    tier: &'static str,
    routes: Option<RoutesSource>,
    revocations: Option<Arc<Revocations>>,
) -> StatusPage {
    let extras: StatusExtras = Arc::new(move || {
        let mut out = Map::new();
        match &routes {
            Some(RoutesSource::Store(store)) => {
                let cur = store.latest();
                out.insert(
                    "routes".into(),
                    json!({"version": cur.version, "text": redact(&cur.text)}),
                );
            }
            Some(RoutesSource::Table(table)) => {
                let text: Vec<String> = table
                    .load()
                    .routes()
                    .iter()
                    .map(|r| format!("{}  (line {})", r.id, r.line))
                    .collect();
                out.insert(
                    "routes".into(),
                    json!({"version": null, "text": text.join("\n")}),
                );
            }
            None => {}
        }
        if let Some(r) = &revocations {
            out.insert("revocations".into(), r.json());
        }
        out
    });
    StatusPage::new(tier, Some(extras))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_keys_are_redacted() {
        assert_eq!(
            redact("*,sig_key=s3cret,aco  a:1\n# c\nh,sig_iss=x b:2,sub=c"),
            "*,sig_key=<redacted>,aco a:1\n# c\nh,sig_iss=x b:2,sub=c"
        );
    }

    #[test]
    fn revocations_are_bounded_newest_first() {
        let r = Revocations::default();
        for i in 0..30 {
            r.push(format!("h{i}"));
        }
        let v = r.json();
        let list = v.as_array().expect("array");
        assert_eq!(list.len(), RECENT_REVOCATIONS);
        assert_eq!(list[0]["credential_hash"], "h29");
    }
}
