//! One conformance suite, run against every [`Bus`] implementation: the in-memory bus and
//! NATS (a real `nats-server` per test, on free ports).
#![allow(clippy::unwrap_used)]

use bus::{Bus, BusState, MemoryBus, NatsBus, NatsOptions, Subscription};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use testkit::NatsServer;

/// A bus under test, with the server that backs it (if any).
struct Fixture {
    bus: Arc<dyn Bus>,
    nats: Option<NatsServer>,
}

async fn memory() -> Fixture {
    Fixture {
        bus: Arc::new(MemoryBus::new()),
        nats: None,
    }
}

async fn nats() -> Fixture {
    let server = NatsServer::start();
    let bus = NatsBus::connect(NatsOptions {
        urls: server.url(),
        name: "conformance".into(),
        subscription_capacity: 65_536,
        auth: Default::default(),
    })
    .await
    .unwrap();
    wait_state(&bus, BusState::Connected).await;
    Fixture {
        bus: Arc::new(bus),
        nats: Some(server),
    }
}

async fn wait_state(bus: &dyn Bus, want: BusState) {
    let mut rx = bus.state();
    tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|s| *s == want))
        .await
        .expect("bus state in time")
        .expect("state channel open");
}

async fn recv(sub: &mut Subscription) -> Bytes {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("message in time")
        .expect("subscription open")
}

async fn nothing(sub: &mut Subscription) {
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sub.next())
            .await
            .is_err(),
        "no message expected"
    );
}

async fn delivers_in_order_to_every_subscriber(f: Fixture) {
    let mut a = f.bus.subscribe("gm.t.a".into()).await.unwrap();
    let mut b = f.bus.subscribe("gm.t.a".into()).await.unwrap();
    let mut other = f.bus.subscribe("gm.t.b".into()).await.unwrap();
    for i in 0..1000u32 {
        f.bus
            .publish("gm.t.a".into(), Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
    }
    for i in 0..1000u32 {
        assert_eq!(recv(&mut a).await, Bytes::from(i.to_be_bytes().to_vec()));
        assert_eq!(recv(&mut b).await, Bytes::from(i.to_be_bytes().to_vec()));
    }
    nothing(&mut other).await;
}

async fn binary_payloads_arrive_intact(f: Fixture) {
    let mut s = f.bus.subscribe("gm.bin".into()).await.unwrap();
    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    f.bus
        .publish("gm.bin".into(), Bytes::from(payload.clone()))
        .await
        .unwrap();
    assert_eq!(recv(&mut s).await, Bytes::from(payload));
}

async fn channel_subjects_do_not_collide(f: Fixture) {
    // Channel names with NATS wildcards and separators must stay distinct subjects.
    let names = ["a.b", "a_2Eb", "*", ">", "a b", "ünï"];
    let mut subs = Vec::new();
    for n in names {
        subs.push(
            f.bus
                .subscribe(bus::subject::channel_subject(n))
                .await
                .unwrap(),
        );
    }
    for n in names {
        f.bus
            .publish(bus::subject::channel_subject(n), Bytes::from(n.to_owned()))
            .await
            .unwrap();
    }
    for (sub, n) in subs.iter_mut().zip(names) {
        assert_eq!(recv(sub).await, Bytes::from(n.to_owned()));
        nothing(sub).await;
    }
}

async fn dropping_a_subscription_unsubscribes(f: Fixture) {
    let s = f.bus.subscribe("gm.drop".into()).await.unwrap();
    if let Some(n) = &f.nats {
        // Confirmed on return: the server already has it.
        assert_eq!(n.client_subjects(Some("gm.")), vec!["gm.drop".to_owned()]);
    }
    drop(s);
    if let Some(n) = &f.nats {
        testkit_wait(|| n.client_subjects(Some("gm.")).is_empty()).await;
    }
    // Publishing to a subject nobody listens to is fine.
    f.bus.publish("gm.drop".into(), Bytes::new()).await.unwrap();
}

async fn testkit_wait(mut cond: impl FnMut() -> bool) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached");
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test]
                async fn memory() {
                    super::$case(super::memory().await).await;
                }
                #[tokio::test]
                async fn nats() {
                    super::$case(super::nats().await).await;
                }
            }
        )*
    };
}

conformance!(
    delivers_in_order_to_every_subscriber,
    binary_payloads_arrive_intact,
    channel_subjects_do_not_collide,
    dropping_a_subscription_unsubscribes,
);

#[tokio::test]
async fn nats_reconnects_and_keeps_subscriptions() {
    let mut f = nats().await;
    let mut s = f.bus.subscribe("gm.re".into()).await.unwrap();
    f.bus
        .publish("gm.re".into(), Bytes::from_static(b"1"))
        .await
        .unwrap();
    assert_eq!(recv(&mut s).await, Bytes::from_static(b"1"));
    let server = f.nats.as_mut().unwrap();
    server.kill();
    wait_state(f.bus.as_ref(), BusState::Disconnected).await;
    assert!(
        f.bus
            .publish("gm.re".into(), Bytes::from_static(b"lost"))
            .await
            .is_err(),
        "publishing while disconnected fails fast"
    );
    server.restart();
    wait_state(f.bus.as_ref(), BusState::Connected).await;
    // The subscription made before the outage works again without resubscribing.
    testkit_wait(|| !server.client_subjects(Some("gm.")).is_empty()).await;
    f.bus
        .publish("gm.re".into(), Bytes::from_static(b"2"))
        .await
        .unwrap();
    assert_eq!(recv(&mut s).await, Bytes::from_static(b"2"));
}

/// A subscription is registered on the server when `subscribe` returns, so a publish from
/// another connection right after it is delivered (no window in which it is lost).
#[tokio::test]
async fn nats_subscription_is_live_on_return() {
    let server = NatsServer::start();
    let options = |name: &str| NatsOptions {
        urls: server.url(),
        name: name.into(),
        subscription_capacity: 1024,
        auth: Default::default(),
    };
    let subscriber = NatsBus::connect(options("sub")).await.unwrap();
    let publisher = NatsBus::connect(options("pub")).await.unwrap();
    wait_state(&subscriber, BusState::Connected).await;
    wait_state(&publisher, BusState::Connected).await;
    for i in 0..200 {
        let subject = format!("gm.live.{i}");
        let mut sub = subscriber.subscribe(subject.clone()).await.unwrap();
        publisher
            .publish(subject, Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(recv(&mut sub).await, Bytes::from_static(b"x"), "round {i}");
    }
}

#[tokio::test]
async fn nats_rejects_bad_urls() {
    let err = NatsBus::connect(NatsOptions {
        urls: "not a url at all ::".into(),
        name: "x".into(),
        subscription_capacity: 16,
        auth: Default::default(),
    })
    .await;
    assert!(err.is_err());
}
