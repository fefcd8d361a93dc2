//! One conformance suite for the state store, run against the in-memory store and JetStream
//! (a real `nats-server -js` per test), plus the cluster-state types built on it and the NATS
//! credential options against a server that requires them.
#![allow(clippy::unwrap_used)]

use bus::cluster_state::{
    RevocationSet, RevocationsBucket, RoutesBucket, StoredRoutes, revocations_bucket, routes_bucket,
};
use bus::kv::{BucketConfig, JetStreamState, KvError, MemoryState, StateStore, WatchFrom};
use bus::records::{ClusterKey, RecordCodec};
use bus::{Bus, BusState, NatsAuth, NatsBus, NatsOptions};
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use testkit::{NatsServer, NatsServerOptions};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    store: Arc<dyn StateStore>,
    _nats: Option<NatsServer>,
}

async fn connect(url: String, auth: NatsAuth) -> NatsBus {
    let bus = NatsBus::connect(NatsOptions {
        urls: url,
        name: "kv-conformance".into(),
        subscription_capacity: 1024,
        auth,
    })
    .await
    .unwrap();
    let mut rx = bus.state();
    tokio::time::timeout(WAIT, rx.wait_for(|s| *s == BusState::Connected))
        .await
        .expect("connected in time")
        .unwrap();
    bus
}

fn memory() -> Fixture {
    Fixture {
        store: Arc::new(MemoryState::new()),
        _nats: None,
    }
}

async fn jetstream() -> Fixture {
    let server = NatsServer::start();
    let bus = connect(server.url(), NatsAuth::default()).await;
    Fixture {
        store: Arc::new(JetStreamState::new(bus.client().clone())),
        _nats: Some(server),
    }
}

fn config(name: &str) -> BucketConfig {
    BucketConfig {
        name: name.into(),
        description: "test".into(),
        history: 1,
        max_age: Duration::ZERO,
        replicas: 1,
    }
}

async fn suite(fx: Fixture) {
    let store = fx.store;
    store.check().await.unwrap();
    assert!(matches!(
        store.open(&config("b"), false).await.err(),
        Some(KvError::NoBucket(_))
    ));
    let b = store.open(&config("b"), true).await.unwrap();
    let again = store.open(&config("b"), false).await.unwrap();
    assert_eq!(b.entry("k").await.unwrap(), None);

    // Revisions come from the store and grow with every write to the bucket.
    let r1 = b.create("k", Bytes::from_static(b"1")).await.unwrap();
    assert_eq!(
        b.create("k", Bytes::from_static(b"x")).await,
        Err(KvError::WrongRevision)
    );
    let r2 = b.put("other", Bytes::from_static(b"o")).await.unwrap();
    assert!(r2 > r1);
    assert_eq!(
        b.update("k", Bytes::from_static(b"x"), r2).await,
        Err(KvError::WrongRevision),
        "update needs the key's own last revision"
    );
    let r3 = b.update("k", Bytes::from_static(b"2"), r1).await.unwrap();
    assert!(r3 > r2);
    let e = again.entry("k").await.unwrap().unwrap();
    assert_eq!(
        (e.value.as_ref(), e.revision, e.deleted),
        (&b"2"[..], r3, false)
    );
    assert_eq!(
        b.put("bad key", Bytes::new()).await,
        Err(KvError::InvalidKey)
    );

    // Watch from the current state: the latest value of the key, then changes.
    let mut w = b.watch("k", WatchFrom::Current).await.unwrap();
    let first = next(&mut w).await;
    assert_eq!((first.value.as_ref(), first.revision), (&b"2"[..], r3));
    let r4 = b.put("k", Bytes::from_static(b"3")).await.unwrap();
    b.put("other", Bytes::from_static(b"p")).await.unwrap();
    let second = next(&mut w).await;
    assert_eq!((second.value.as_ref(), second.revision), (&b"3"[..], r4));

    // Watch everything from a revision: later changes of every key, in order.
    let mut all = b.watch(">", WatchFrom::Revision(r4)).await.unwrap();
    let a = next(&mut all).await;
    let c = next(&mut all).await;
    assert_eq!((a.key.as_str(), c.key.as_str()), ("k", "other"));
    assert!(c.revision > a.revision);

    b.delete("k").await.unwrap();
    assert_eq!(b.entry("k").await.unwrap(), None);
    let gone = next(&mut w).await;
    assert!(gone.deleted);
    // A deleted key can be created again.
    b.create("k", Bytes::from_static(b"4")).await.unwrap();
}

async fn next(w: &mut bus::kv::KvWatch) -> bus::kv::KvEntry {
    tokio::time::timeout(WAIT, w.next())
        .await
        .expect("an entry in time")
        .expect("watch open")
        .expect("no watch error")
}

#[tokio::test]
async fn kv_conformance_memory() {
    suite(memory()).await;
}

#[tokio::test]
async fn kv_conformance_jetstream() {
    suite(jetstream().await).await;
}

fn signed() -> RecordCodec {
    RecordCodec::new(Some(
        ClusterKey::parse("a-cluster-key-of-enough-bytes").unwrap(),
    ))
}

async fn routes_suite(fx: Fixture) {
    let kv = fx.store.open(&routes_bucket(1), true).await.unwrap();
    let routes = RoutesBucket::new(kv.clone(), signed());
    assert_eq!(routes.current().await.unwrap(), None);
    routes.seed("* seed:1\n").await.unwrap();
    routes.seed("* other:1\n").await.unwrap();
    let first = routes.current().await.unwrap().unwrap();
    assert_eq!(
        first.text, "* seed:1\n",
        "seed writes only into an empty bucket"
    );

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<StoredRoutes>();
    let stop = CancellationToken::new();
    let follower = routes.clone();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { follower.follow(&stop, |t| drop(tx.send(t))).await }
    });
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, first);

    let put = routes.put("* b:1\n", false).await.unwrap();
    assert!(put.revision > first.revision && put.seq > first.seq);
    let same = routes.put("* b:1\n", true).await.unwrap();
    assert_eq!(same, put, "an unchanged table is not written again");
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, put);

    // A forged record written straight into the bucket is refused; so is a replayed one.
    kv.put(
        "table",
        RecordCodec::new(None).seal(
            "gripmesh_routes",
            "table",
            &bus::records::RoutesRecord {
                text: "* evil:1\n".into(),
                seq: u64::MAX,
            },
        ),
    )
    .await
    .unwrap();
    let replay = signed().seal(
        "gripmesh_routes",
        "table",
        &bus::records::RoutesRecord {
            text: first.text.clone(),
            seq: first.seq,
        },
    );
    kv.put("table", replay).await.unwrap();
    assert!(
        routes.current().await.is_ok(),
        "a replay has a valid signature"
    );
    let later = routes.put("* c:1\n", false).await.unwrap();
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, later, "only the legitimate later table is applied");
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn routes_bucket_memory() {
    routes_suite(memory()).await;
}

#[tokio::test]
async fn routes_bucket_jetstream() {
    routes_suite(jetstream().await).await;
}

async fn revocations_suite(fx: Fixture) {
    let cfg = revocations_bucket(Duration::from_secs(60), 1);
    let kv = fx.store.open(&cfg, true).await.unwrap();
    let revs = RevocationsBucket::new(kv.clone(), signed());
    let h1 = "a".repeat(64);
    let h2 = "b".repeat(64);
    revs.revoke(&h1, Duration::from_secs(60)).await.unwrap();
    revs.revoke(&h2, Duration::ZERO).await.unwrap();
    assert_eq!(
        revs.revoke("nothex", Duration::from_secs(1)).await,
        Err(KvError::InvalidKey)
    );
    // A forged (unsigned) revocation is refused.
    let h3 = "c".repeat(64);
    kv.put(
        &h3,
        RecordCodec::new(None).seal(
            "gripmesh_revocations",
            &h3,
            &bus::records::RevocationRecord {
                expires_unix_ms: u64::MAX,
            },
        ),
    )
    .await
    .unwrap();

    // A follower started after the revocations knows the live ones.
    let set = RevocationSet::new();
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (revs, set, stop) = (revs.clone(), set.clone(), stop.clone());
        async move {
            revs.follow(&stop, bus::cluster_state::CaughtUp::new(|| {}), |h, exp| {
                set.insert(h, exp)
            })
            .await
        }
    });
    testkit::wait_until(WAIT, "the live revocation is known", || {
        let set = set.clone();
        let h1 = h1.clone();
        async move { set.contains(&h1) }
    })
    .await;
    let h4 = "d".repeat(64);
    revs.revoke(&h4, Duration::from_secs(60)).await.unwrap();
    testkit::wait_until(WAIT, "a later revocation is known", || {
        let set = set.clone();
        let h4 = h4.clone();
        async move { set.contains(&h4) }
    })
    .await;
    assert!(!set.contains(&h2), "a lapsed revocation is not applied");
    assert!(!set.contains(&h3), "a forged revocation is refused");
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn revocations_bucket_memory() {
    revocations_suite(memory()).await;
}

#[tokio::test]
async fn revocations_bucket_jetstream() {
    revocations_suite(jetstream().await).await;
}

#[tokio::test]
async fn jetstream_missing_is_named() {
    let server = NatsServer::start_with(NatsServerOptions {
        jetstream: false,
        ..Default::default()
    });
    let bus = connect(server.url(), NatsAuth::default()).await;
    let store = JetStreamState::new(bus.client().clone());
    assert!(matches!(store.check().await, Err(KvError::NoJetStream(_))));
}

/// User/password and token in the URL reach a server that requires them; without them the
/// client never connects.
#[tokio::test]
async fn nats_credentials_in_the_url() {
    for options in [
        NatsServerOptions {
            user: Some(("gm".into(), "s3cret".into())),
            ..Default::default()
        },
        NatsServerOptions {
            token: Some("t0ken".into()),
            ..Default::default()
        },
    ] {
        let server = NatsServer::start_with(options);
        let bus = connect(server.auth_url(), NatsAuth::default()).await;
        bus.publish("x".into(), Bytes::new()).await.unwrap();
        let state = JetStreamState::new(bus.client().clone());
        state.check().await.unwrap();

        let anonymous = NatsBus::connect(NatsOptions {
            urls: server.url(),
            name: "anon".into(),
            subscription_capacity: 16,
            auth: NatsAuth::default(),
        })
        .await
        .unwrap();
        let mut rx = anonymous.state();
        assert!(
            tokio::time::timeout(
                Duration::from_secs(2),
                rx.wait_for(|s| *s == BusState::Connected)
            )
            .await
            .is_err(),
            "a client without credentials must not connect"
        );
    }
}

/// TLS to NATS: with the test CA given (`--nats-tls-ca`) the bus connects over TLS (with a
/// user/password in the `tls://` URL) and JetStream answers; without it the server's
/// certificate is not trusted and the client never connects.
#[tokio::test]
async fn nats_tls_with_a_ca() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "gripmesh test NATS CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let dir = testkit::TempDir::new();
    let ca_file = dir.write("ca.crt", &ca.pem());
    let cert = dir.write("server.crt", &leaf.pem());
    let key = dir.write("server.key", &leaf_key.serialize_pem());

    let server = NatsServer::start_with(NatsServerOptions {
        user: Some(("gm".into(), "tls-pass".into())),
        tls: Some((cert, key)),
        ..Default::default()
    });
    let bus = connect(
        server.auth_url(),
        NatsAuth {
            tls_ca: Some(ca_file),
            ..NatsAuth::default()
        },
    )
    .await;
    JetStreamState::new(bus.client().clone())
        .check()
        .await
        .unwrap();

    let untrusting = NatsBus::connect(NatsOptions {
        urls: server.auth_url(),
        name: "no-ca".into(),
        subscription_capacity: 16,
        auth: NatsAuth::default(),
    })
    .await
    .unwrap();
    let mut rx = untrusting.state();
    assert!(
        tokio::time::timeout(
            Duration::from_secs(2),
            rx.wait_for(|s| *s == BusState::Connected)
        )
        .await
        .is_err(),
        "a server certificate from an unknown CA must not be accepted"
    );
}
