//! `NatsBus` against a throwaway `nats-server -js` (one per test, on a free port): the shared
//! bus suite, then what only NATS has — dedup of retried publishes, consumption by a plain NATS
//! client, and a server restart. Waits are polls with a deadline, never fixed sleeps.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use longlink_bus::testsuite::{DEADLINE, LONG, SuiteOptions, eventually, message, within};
use longlink_bus::{Bus, BusError, TopicQueue};
use longlink_bus_nats::{NatsBus, NatsOptions, WORK_STREAM, consumer_name, headers};
use longlink_testservers::NatsServer;

fn options(suite: SuiteOptions) -> NatsOptions {
    NatsOptions {
        max_attempts: suite.max_attempts,
        max_backlog: i64::try_from(suite.max_backlog).unwrap(),
        // Short, so a test with the server down fails fast; a healthy local server answers
        // in well under this.
        timeout: Duration::from_secs(2),
        ..NatsOptions::default()
    }
}

async fn new_bus(suite: SuiteOptions) -> (Arc<NatsBus>, NatsServer) {
    let server = NatsServer::start().expect("nats-server");
    let bus = NatsBus::connect(&server.url(), options(suite))
        .await
        .expect("connect");
    (Arc::new(bus), server)
}

mod suite {
    longlink_bus::bus_testsuite!(super::new_bus);
}

#[tokio::test]
async fn a_retried_publish_with_the_same_client_msg_id_is_stored_once() {
    let (bus, _server) = new_bus(SuiteOptions::default()).await;
    let first = message("c2s.130.1", 1);
    bus.publish(first.clone()).await.unwrap();
    // The client's retry: same ids, maybe another trace id and time.
    let mut retry = first.clone();
    retry.log_id += 1;
    retry.received_ms += 5;
    bus.publish(retry).await.unwrap();
    // Same client_msg_id from another device is another message; so is an empty one, twice.
    let mut other_device = first.clone();
    other_device.device_id = "tablet".to_owned();
    bus.publish(other_device.clone()).await.unwrap();
    let mut anonymous = message("c2s.130.1", 2);
    anonymous.client_msg_id.clear();
    bus.publish(anonymous.clone()).await.unwrap();
    bus.publish(anonymous.clone()).await.unwrap();

    let got = bus
        .fetch("c2s.130.1", 10, Duration::ZERO, LONG)
        .await
        .unwrap();
    let messages: Vec<_> = got.into_iter().map(|l| l.message).collect();
    assert_eq!(
        messages,
        [first, other_device, anonymous.clone(), anonymous]
    );
}

#[tokio::test]
async fn a_plain_nats_client_consumes_what_longlink_published() {
    let (bus, server) = new_bus(SuiteOptions::default()).await;
    let mut sent = message("c2s.130.1", 7);
    sent.uid = "ünï cöde:%".to_owned();
    bus.publish(sent.clone()).await.unwrap();
    bus.publish(message("orders", 8)).await.unwrap();

    // What a business server does: its own connection, bind to the topic's durable consumer
    // (created by longlink on first use; a business server may create it the same way),
    // pull, read headers, ack.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let stream = js.get_stream(WORK_STREAM).await.unwrap();
    let config = jetstream::consumer::pull::Config {
        durable_name: Some(consumer_name("c2s.130.1")),
        filter_subject: "c2s.130.1".to_owned(),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ..Default::default()
    };
    let consumer = stream
        .get_or_create_consumer("c2s_130_1", config)
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(10).messages().await.unwrap();
    let delivered = within("a pull", batch.next()).await.unwrap().unwrap();
    assert!(within("the end of the batch", batch.next()).await.is_none());
    assert_eq!(delivered.subject.as_str(), "c2s.130.1");
    assert_eq!(delivered.payload, sent.payload);
    let h = delivered.headers.clone().unwrap();
    assert_eq!(
        h.get(headers::UID).unwrap().as_str(),
        "%C3%BCn%C3%AF%20c%C3%B6de%3A%25"
    );
    assert_eq!(h.get(headers::APPCODE).unwrap().as_str(), "137");
    assert_eq!(h.get(headers::MSGTYPE).unwrap().as_str(), "8");
    assert_eq!(h.get(headers::CLIENT_MSG_ID).unwrap().as_str(), "c-7");
    assert_eq!(
        h.get(headers::LOG_ID).unwrap().as_str(),
        sent.log_id.to_string()
    );
    delivered.double_ack().await.unwrap();

    // Acked through NATS: longlink sees it gone; the named topic is untouched.
    assert!(
        bus.fetch("c2s.130.1", 10, Duration::ZERO, LONG)
            .await
            .unwrap()
            .is_empty()
    );
    let named = bus.fetch("orders", 10, Duration::ZERO, LONG).await.unwrap();
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].message, message("orders", 8));
    // Its subject is longlink.topic.orders.
    let raw = stream.get_raw_message(named[0].id).await.unwrap();
    assert_eq!(raw.subject.as_str(), "longlink.topic.orders");
}

#[tokio::test]
async fn an_ack_from_another_process_counts() {
    let (bus, server) = new_bus(SuiteOptions::default()).await;
    bus.publish(message("orders", 1)).await.unwrap();
    let got = bus.fetch("orders", 1, Duration::ZERO, LONG).await.unwrap();
    // Another API process behind a load balancer: its own connection, no lease of its own.
    let other = NatsBus::connect(&server.url(), options(SuiteOptions::default()))
        .await
        .unwrap();
    assert_eq!(other.ack("orders", &[got[0].id]).await.unwrap(), 1);
    assert_eq!(other.ack("orders", &[got[0].id]).await.unwrap(), 0);
    assert!(
        bus.fetch("orders", 1, Duration::ZERO, LONG)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_restarted_server_loses_no_acknowledged_message() {
    let (bus, mut server) = new_bus(SuiteOptions::default()).await;
    let mut acknowledged = Vec::new();
    for n in 0..20 {
        let m = message("c2s.130.1", n);
        bus.publish(m.clone()).await.unwrap();
        acknowledged.push(m);
    }
    // Some in flight when the server goes: they come back (as redeliveries) after.
    let leased = bus
        .fetch("c2s.130.1", 5, Duration::ZERO, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(leased.len(), 5);

    server.stop();
    // Down: errors, each within the bound (no hang, no panic).
    let down = within("publish while down", bus.publish(message("c2s.130.1", 99))).await;
    assert!(matches!(down, Err(BusError::Unavailable(_))), "{down:?}");
    let fetch_down = within(
        "fetch while down",
        bus.fetch("c2s.130.1", 10, Duration::ZERO, Duration::from_secs(1)),
    )
    .await;
    assert!(
        matches!(fetch_down, Err(BusError::Unavailable(_))),
        "{fetch_down:?}"
    );
    assert!(matches!(
        within("topics while down", bus.topics()).await,
        Err(BusError::Unavailable(_))
    ));

    server.restart().expect("restart");
    // Back by itself: publishes succeed again once async-nats reconnected.
    let after = message("c2s.130.1", 100);
    eventually("a publish after the restart", || {
        let bus = Arc::clone(&bus);
        let after = after.clone();
        async move { bus.publish(after).await.ok() }
    })
    .await;
    acknowledged.push(after);

    // Everything acknowledged is there, every message at least once (the one published
    // while down may be there too: its outcome was unknown to the caller).
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while got.len() < acknowledged.len() {
        assert!(tokio::time::Instant::now() < deadline, "got {}", got.len());
        let page = bus
            .fetch(
                "c2s.130.1",
                100,
                Duration::from_secs(1),
                Duration::from_secs(1),
            )
            .await
            .unwrap_or_default();
        let ids: Vec<u64> = page.iter().map(|l| l.id).collect();
        got.extend(page.into_iter().map(|l| l.message));
        if !ids.is_empty() {
            bus.ack("c2s.130.1", &ids).await.unwrap();
        }
        got.sort_by_key(|m| m.log_id);
        got.dedup();
        got.retain(|m| m.log_id != message("c2s.130.1", 99).log_id);
    }
    let mut want = acknowledged;
    want.sort_by_key(|m| m.log_id);
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_dead_server_at_connect_is_an_error_not_a_hang() {
    let mut server = NatsServer::start().unwrap();
    let url = server.url();
    server.kill();
    let result = within(
        "connect to a dead server",
        NatsBus::connect(&url, options(SuiteOptions::default())),
    )
    .await;
    assert!(
        matches!(result, Err(BusError::Unavailable(_))),
        "{result:?}"
    );
}
