//! One conformance suite for every [`HistoryStore`]: process memory and JetStream (a real
//! `nats-server -js` per test, on free ports).
#![allow(clippy::unwrap_used)]

use bus::history::{
    HistoryStore, JetStreamHistory, Limits, MemoryHistory, Receipt, Resume, StoreItem,
};
use bus::{BusState, NatsBus, NatsOptions};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use testkit::NatsServer;

const WIDE: Limits = Limits {
    size: 100,
    age: Duration::from_secs(300),
};

struct Fixture {
    store: Arc<dyn HistoryStore>,
    /// A second handle on the same history (a second control replica).
    other: Arc<dyn HistoryStore>,
    _nats: Option<NatsServer>,
}

fn memory() -> Fixture {
    let store = MemoryHistory::new();
    Fixture {
        store: Arc::new(store.clone()),
        other: Arc::new(store),
        _nats: None,
    }
}

async fn connect(server: &NatsServer) -> NatsBus {
    let bus = NatsBus::connect(NatsOptions {
        urls: server.url(),
        name: "history-conformance".into(),
        subscription_capacity: 1024,
        auth: Default::default(),
    })
    .await
    .unwrap();
    let mut state = bus::Bus::state(&bus);
    tokio::time::timeout(
        Duration::from_secs(15),
        state.wait_for(|s| *s == BusState::Connected),
    )
    .await
    .unwrap()
    .unwrap();
    bus
}

async fn jetstream() -> Fixture {
    let server = NatsServer::start_jetstream();
    let a = JetStreamHistory::new(&connect(&server).await);
    let b = JetStreamHistory::new(&connect(&server).await);
    a.ensure_stream(WIDE, 1).await.unwrap();
    Fixture {
        store: Arc::new(a),
        other: Arc::new(b),
        _nats: Some(server),
    }
}

fn item(channel: &str, id: Option<&str>, limits: Limits, body: &str) -> StoreItem {
    StoreItem {
        channel: channel.into(),
        id: id.map(Into::into),
        limits,
        payload: Bytes::from(body.to_owned()),
    }
}

async fn store_ids(
    store: &dyn HistoryStore,
    channel: &str,
    ids: &[&str],
    limits: Limits,
) -> Vec<Receipt> {
    let items = ids
        .iter()
        .map(|id| item(channel, Some(id), limits, &format!("body-{id}")))
        .collect();
    store.store(items).await.unwrap()
}

fn bodies(resume: &Resume) -> Vec<String> {
    match resume {
        Resume::Found { items, .. } => items
            .iter()
            .map(|s| String::from_utf8_lossy(&s.payload).into_owned())
            .collect(),
        Resume::NotFound => panic!("expected Found, got NotFound"),
    }
}

async fn replays_after_an_id_in_order(f: Fixture) {
    let receipts = store_ids(&*f.store, "c", &["1", "2", "3", "4"], WIDE).await;
    assert!(
        receipts.windows(2).all(|w| w[0].seq < w[1].seq),
        "{receipts:?}"
    );
    assert!(receipts.iter().all(|r| !r.duplicate));
    // Another channel's items never show up.
    store_ids(&*f.store, "other", &["x"], WIDE).await;
    let r = f.store.read_after("c", "2").await.unwrap();
    assert_eq!(bodies(&r), ["body-3", "body-4"]);
    match &r {
        Resume::Found { after_seq, items } => {
            assert_eq!(*after_seq, receipts[1].seq);
            assert_eq!(items[0].seq, receipts[2].seq);
        }
        Resume::NotFound => unreachable!(),
    }
    // The last id: found, nothing after it.
    assert!(bodies(&f.store.read_after("c", "4").await.unwrap()).is_empty());
    // Unknown id, unknown channel.
    assert_eq!(
        f.store.read_after("c", "nope").await.unwrap(),
        Resume::NotFound
    );
    assert_eq!(
        f.store.read_after("none", "1").await.unwrap(),
        Resume::NotFound
    );
    // Items without id are replayed too, but cannot be resumed from.
    f.store
        .store(vec![item("c", None, WIDE, "anon")])
        .await
        .unwrap();
    assert_eq!(
        bodies(&f.store.read_after("c", "4").await.unwrap()),
        ["anon"]
    );
}

async fn an_id_is_stored_once_through_any_replica(f: Fixture) {
    let first = store_ids(&*f.store, "c", &["a"], WIDE).await[0];
    let again = store_ids(&*f.other, "c", &["a"], WIDE).await[0];
    assert!(!first.duplicate);
    assert_eq!(
        again,
        Receipt {
            seq: first.seq,
            duplicate: true
        }
    );
    // The same id on another channel is another item.
    assert!(!store_ids(&*f.other, "d", &["a"], WIDE).await[0].duplicate);
    store_ids(&*f.store, "c", &["b"], WIDE).await;
    assert_eq!(
        bodies(&f.store.read_after("c", "a").await.unwrap()),
        ["body-b"]
    );
}

async fn a_channel_keeps_its_own_size(f: Fixture) {
    let small = Limits {
        size: 3,
        age: Duration::from_secs(300),
    };
    store_ids(&*f.store, "s", &["1", "2", "3", "4", "5"], small).await;
    // 1 and 2 fell out of the channel's three items.
    assert_eq!(
        f.store.read_after("s", "1").await.unwrap(),
        Resume::NotFound
    );
    assert_eq!(
        f.store.read_after("s", "2").await.unwrap(),
        Resume::NotFound
    );
    assert_eq!(
        bodies(&f.store.read_after("s", "3").await.unwrap()),
        ["body-4", "body-5"]
    );
}

async fn items_older_than_the_age_are_gone(f: Fixture) {
    let short = Limits {
        size: 100,
        age: Duration::from_secs(1),
    };
    store_ids(&*f.store, "t", &["1", "2"], short).await;
    assert_eq!(
        bodies(&f.store.read_after("t", "1").await.unwrap()),
        ["body-2"]
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        f.store.read_after("t", "1").await.unwrap(),
        Resume::NotFound
    );
}

async fn replays_after_a_position(f: Fixture) {
    let first = store_ids(&*f.store, "c", &["1", "2"], WIDE).await;
    // Another channel's item between them: positions are shared, reads are not.
    let other = store_ids(&*f.store, "other", &["x"], WIDE).await;
    f.store
        .store(vec![item("c", None, WIDE, "anon")])
        .await
        .unwrap();
    store_ids(&*f.store, "c", &["3"], WIDE).await;
    let r = f.store.read_after_seq("c", first[0].seq).await.unwrap();
    assert_eq!(bodies(&r), ["body-2", "anon", "body-3"]);
    match &r {
        Resume::Found { after_seq, .. } => assert_eq!(*after_seq, first[0].seq),
        Resume::NotFound => unreachable!(),
    }
    assert_eq!(
        bodies(&f.store.read_after_seq("c", first[1].seq).await.unwrap()),
        ["anon", "body-3"]
    );
    // A position that is not this channel's, or that no item has: not found.
    for seq in [other[0].seq, 0, u64::MAX] {
        assert_eq!(
            f.store.read_after_seq("c", seq).await.unwrap(),
            Resume::NotFound,
            "seq {seq}"
        );
    }
    // A position that fell out of the channel's size is not found either: what came after
    // it may be incomplete.
    let small = Limits {
        size: 2,
        age: Duration::from_secs(300),
    };
    let s = store_ids(&*f.store, "s", &["1", "2", "3"], small).await;
    assert_eq!(
        f.store.read_after_seq("s", s[0].seq).await.unwrap(),
        Resume::NotFound
    );
    assert_eq!(
        bodies(&f.store.read_after_seq("s", s[1].seq).await.unwrap()),
        ["body-3"]
    );
}

macro_rules! suite {
    ($($name:ident),*) => {
        mod memory_store {
            $(#[tokio::test] async fn $name() { super::$name(super::memory()).await; })*
        }
        mod jetstream_store {
            $(#[tokio::test] async fn $name() { super::$name(super::jetstream().await).await; })*
        }
    };
}

suite!(
    replays_after_an_id_in_order,
    replays_after_a_position,
    an_id_is_stored_once_through_any_replica,
    a_channel_keeps_its_own_size,
    items_older_than_the_age_are_gone
);

#[tokio::test]
async fn jetstream_without_a_history_stream_is_disabled() {
    let server = NatsServer::start_jetstream();
    let store = JetStreamHistory::new(&connect(&server).await);
    assert!(matches!(
        store.read_after("c", "1").await,
        Err(bus::history::HistoryError::Disabled)
    ));
}
