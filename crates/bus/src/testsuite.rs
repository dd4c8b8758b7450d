//! The behaviour suite every [`Bus`] + [`TopicQueue`] backend must pass (behind the cargo
//! feature `testsuite`; the crate's own tests run it for [`crate::SqliteQueue`]).
//!
//! `longlink_bus::bus_testsuite!(new_queue)` expands, in the calling test module, to one
//! `#[tokio::test]` per case below. `new_queue` is an `async fn(SuiteOptions) -> (Arc<Q>, G)`
//! returning a fresh, empty backend with those options and a guard kept alive for the test (a
//! temp dir, a throwaway server).
//!
//! The suite holds what both the single-node queue and a broker-backed bus promise. Things a
//! backend may do differently are left out on purpose and tested next to the backend:
//! - a replayed dead letter may come back under a new id (a broker republishes it);
//! - one lease per topic in a test (a broker may keep the lease as a property of the topic's
//!   consumer rather than of each fetch);
//! - how nacked messages waiting for their retry time are counted (ready or in flight);
//! - whether a message whose last lease ran out is dead-lettered at once or by the next call
//!   that looks at the topic: the suite polls `fetch` with no wait until it shows up.
//!
//! Waits are polls with a deadline, never fixed sleeps; nothing asserts on timings.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::{Bus, BusError, BusMessage, Leased, TopicQueue, TopicStats};

/// What a test asks of the backend it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuiteOptions {
    /// Deliveries before a message is dead-lettered.
    pub max_attempts: u32,
    /// Most messages one topic holds before `publish` answers [`BusError::Full`].
    pub max_backlog: u64,
}

impl Default for SuiteOptions {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            max_backlog: 100_000,
        }
    }
}

/// Generates the suite's `#[tokio::test]`s for a backend constructor (see the module docs).
#[macro_export]
macro_rules! bus_testsuite {
    ($new_queue:path) => {
        $crate::bus_testsuite!(@cases $new_queue;
            publish_fetch_ack_round_trip_keeps_every_field,
            fetch_takes_in_publish_order_up_to_max,
            an_unacked_message_is_delivered_again_after_its_lease,
            nack_makes_a_message_ready_again,
            dead_letters_after_max_attempts_and_replay,
            acks_are_idempotent_and_unknown_ids_are_ignored,
            ids_of_another_topic_are_ignored,
            competing_fetchers_never_share_a_leased_message,
            many_concurrent_publishers_lose_nothing_and_keep_their_order,
            a_full_topic_refuses_publishes,
            a_waiting_fetch_returns_when_a_message_is_published,
            a_fetch_with_nothing_published_returns_empty_after_its_wait,
            topics_lists_every_topic_with_its_counts,
            bad_arguments_are_refused,
        );
    };
    (@cases $new_queue:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::testsuite::$case(|options| $new_queue(options)).await;
            }
        )*
    };
}

/// A long time: fetch waits and leases that must not run out during a test.
pub const LONG: Duration = Duration::from_secs(30);
/// A lease or retry time a test waits for.
pub const SHORT: Duration = Duration::from_millis(300);
/// How long a test waits for something that should happen well before.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A message of `topic`, different for each `n`.
pub fn message(topic: &str, n: u32) -> BusMessage {
    BusMessage {
        topic: topic.to_owned(),
        appcode: 130 + n,
        uid: format!("driver-{n}"),
        device_id: format!("phone-{n}"),
        msgtype: 1 + n,
        client_msg_id: format!("c-{n}"),
        payload: Bytes::from(format!("31.2,121.{n}")),
        log_id: 0x075b_cd15 + u64::from(n),
        received_ms: 1_763_900_000_000 + u64::from(n),
    }
}

async fn fetch<Q: TopicQueue>(queue: &Q, topic: &str, max: usize, wait: Duration) -> Vec<Leased> {
    queue.fetch(topic, max, wait, LONG).await.expect("fetch")
}

/// The counts of `topic` (all zero when it is not listed).
pub async fn stats<Q: TopicQueue>(queue: &Q, topic: &str) -> TopicStats {
    let found = queue
        .topics()
        .await
        .expect("topics")
        .into_iter()
        .find(|s| s.topic == topic);
    found.unwrap_or_else(|| counts(0, 0, 0, topic))
}

fn counts(ready: u64, in_flight: u64, dead: u64, topic: &str) -> TopicStats {
    TopicStats {
        topic: topic.to_owned(),
        ready,
        in_flight,
        dead,
    }
}

/// Awaits `fut`, failing the test if it takes longer than [`DEADLINE`] (a fetch waiting
/// [`LONG`] for a message due much sooner was not woken).
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {DEADLINE:?}"))
}

/// Polls `check` until it returns `Some`, failing the test after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids_and_attempts(leased: &[Leased]) -> Vec<(u64, u32)> {
    leased.iter().map(|l| (l.id, l.attempt)).collect()
}

// ---------------------------------------------------------------------------------------------
// Cases. Each takes the constructor and builds what it needs.

#[doc(hidden)]
pub async fn publish_fetch_ack_round_trip_keeps_every_field<Q, G, F, Fut>(new: F)
where
    Q: Bus + TopicQueue,
    F: Fn(SuiteOptions) -> Fut,
    Fut: Future<Output = (Arc<Q>, G)>,
{
    let (q, _guard) = new(SuiteOptions::default()).await;
    let mut sent = message("c2s.130.1", 0);
    // Not UTF-8, u64 values with the top bit set, non-ASCII and odd characters in strings.
    sent.payload = Bytes::from_static(&[0xff, 0x00, 0xfe, b'x', b'\r', b'\n']);
    sent.log_id = u64::MAX;
    sent.received_ms = u64::MAX - 1;
    sent.uid = "ünïcode uid: 100%\r\n".to_owned();
    sent.device_id = String::new();
    sent.client_msg_id = "id:with:colons".to_owned();
    q.publish(sent.clone()).await.unwrap();
    assert_eq!(stats(&*q, "c2s.130.1").await, counts(1, 0, 0, "c2s.130.1"));

    let got = fetch(&*q, "c2s.130.1", 10, LONG).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attempt, 1);
    assert_eq!(got[0].message, sent);
    assert_eq!(stats(&*q, "c2s.130.1").await, counts(0, 1, 0, "c2s.130.1"));

    assert_eq!(q.ack("c2s.130.1", &[got[0].id]).await.unwrap(), 1);
    assert_eq!(stats(&*q, "c2s.130.1").await, counts(0, 0, 0, "c2s.130.1"));
    assert!(fetch(&*q, "c2s.130.1", 10, Duration::ZERO).await.is_empty());
    // Other topics are not touched.
    assert!(fetch(&*q, "c2s.130.2", 10, Duration::ZERO).await.is_empty());
    // A named topic (an explicit route) works the same.
    q.publish(message("orders", 1)).await.unwrap();
    let got = fetch(&*q, "orders", 10, LONG).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, message("orders", 1));
}

#[doc(hidden)]
pub async fn fetch_takes_in_publish_order_up_to_max<Q, G, F, Fut>(new: F)
where
    Q: Bus + TopicQueue,
    F: Fn(SuiteOptions) -> Fut,
    Fut: Future<Output = (Arc<Q>, G)>,
{
    let (q, _guard) = new(SuiteOptions::default()).await;
    for n in 0..5 {
        q.publish(message("orders", n)).await.unwrap();
    }
    let first = fetch(&*q, "orders", 3, Duration::ZERO).await;
    let second = fetch(&*q, "orders", 3, Duration::ZERO).await;
    assert_eq!(first.len(), 3);
    assert_eq!(second.len(), 2);
    let ids: Vec<u64> = first.iter().chain(&second).map(|l| l.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let sent: Vec<BusMessage> = first
        .iter()
        .chain(&second)
        .map(|l| l.message.clone())
        .collect();
    assert_eq!(
        sent,
        (0..5).map(|n| message("orders", n)).collect::<Vec<_>>()
    );
}

#[doc(hidden)]
pub async fn an_unacked_message_is_delivered_again_after_its_lease<Q, G, F, Fut>(new: F)
where
    Q: Bus + TopicQueue,
    F: Fn(SuiteOptions) -> Fut,
    Fut: Future<Output = (Arc<Q>, G)>,
{
    let (q, _guard) = new(SuiteOptions::default()).await;
    q.publish(message("orders", 1)).await.unwrap();
    let first = q.fetch("orders", 1, LONG, SHORT).await.unwrap();
    assert_eq!(ids_and_attempts(&first).len(), 1);
    assert_eq!(first[0].attempt, 1);
    // Waits up to 30 s: it must get the message when the lease runs out.
    let again = within(
        "redelivery after the lease",
        q.fetch("orders", 1, LONG, SHORT),
    )
    .await
    .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, first[0].id);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].message, first[0].message);
    // The late ack of the first delivery still removes it (it was processed).
    assert_eq!(q.ack("orders", &[first[0].id]).await.unwrap(), 1);
    assert_eq!(stats(&*q, "orders").await, counts(0, 0, 0, "orders"));
}

#[doc(hidden)]
pub async fn nack_makes_a_message_ready_again<Q, G, F, Fut>(new: F)
where
    Q: Bus + TopicQueue,
    F: Fn(SuiteOptions) -> Fut,
    Fut: Future<Output = (Arc<Q>, G)>,
{
    let (q, _guard) = new(SuiteOptions::default()).await;
    for n in 0..3 {
        q.publish(message("orders", n)).await.unwrap();
    }
    let leased = fetch(&*q, "orders", 3, Duration::ZERO).await;
    assert_eq!(leased.len(), 3);
    let [a, b, c] = [leased[0].id, leased[1].id, leased[2].id];

    // Far in the future: not fetchable now.
    assert_eq!(q.nack("orders", &[a], LONG).await.unwrap(), 1);
    assert!(fetch(&*q, "orders", 10, Duration::ZERO).await.is_empty());

    // Right away.
    assert_eq!(q.nack("orders", &[b], Duration::ZERO).await.unwrap(), 1);
    let got = within("a nacked message", fetch(&*q, "orders", 10, LONG)).await;
    assert_eq!(ids_and_attempts(&got), [(b, 2)]);
    assert_eq!(got[0].message, message("orders", 1));

    // Shortly: a waiting fetch gets it at the retry time.
    assert_eq!(q.nack("orders", &[c], SHORT).await.unwrap(), 1);
    let got = within("a nacked message", fetch(&*q, "orders", 10, LONG)).await;
    assert_eq!(ids_and_attempts(&got), [(c, 2)]);

    // Not leased any more (a waits for its retry), unknown ids: nothing to nack.
    assert_eq!(
        q.nack("orders", &[a, 999_999], Duration::ZERO)
            .await
            .unwrap(),
        0
    );
    assert_eq!(q.nack("nothing", &[a], Duration::ZERO).await.unwrap(), 0);
}

#[doc(hidden)]
pub async fn dead_letters_after_max_attempts_and_replay<Q, G, F, Fut>(new: F)
where
    Q: Bus + TopicQueue,
    F: Fn(SuiteOptions) -> Fut,
    Fut: Future<Output = (Arc<Q>, G)>,
{
    let (q, _guard) = new(SuiteOptions {
        max_attempts: 3,
        ..SuiteOptions::default()
    })
    .await;
    q.publish(message("orders", 1)).await.unwrap();
    q.publish(message("orders", 2)).await.unwrap();

    // Message 1: nacked on every attempt; the last nack dead-letters it.
    let mut nacked_id = None;
    for attempt in 1..=3 {
        let got = within("message 1", q.fetch("orders", 1, LONG, SHORT))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].attempt, attempt);
        assert_eq!(got[0].message, message("orders", 1));
        nacked_id = Some(got[0].id);
        assert_eq!(
            q.nack("orders", &[got[0].id], Duration::ZERO)
                .await
                .unwrap(),
            1
        );
    }
    let nacked_id = nacked_id.unwrap();

    // Message 2: its lease runs out on every attempt.
    for attempt in 1..=3 {
        let got = within("message 2", q.fetch("orders", 1, LONG, SHORT))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].attempt, attempt);
        assert_eq!(got[0].message, message("orders", 2));
    }

    // Not delivered a fourth time; dead-lettered (by now, or by a call that looks).
    let dead = eventually("both dead-lettered", || async {
        // The topic's lease stays SHORT (see the module docs).
        let again = q.fetch("orders", 10, Duration::ZERO, SHORT).await.unwrap();
        assert!(again.is_empty(), "delivered again: {again:?}");
        let dead = q.dead_letters("orders", 0, 10).await.unwrap();
        (dead.len() == 2).then_some(dead)
    })
    .await;
    assert_eq!(
        dead.iter()
            .map(|l| (l.attempt, &l.message))
            .collect::<Vec<_>>(),
        [(3, &message("orders", 1)), (3, &message("orders", 2))]
    );
    assert!(dead[0].id < dead[1].id);
    assert_eq!(stats(&*q, "orders").await, counts(0, 0, 2, "orders"));
    assert!(fetch(&*q, "orders", 10, Duration::ZERO).await.is_empty());
    // Acks do not touch dead letters.
    assert_eq!(q.ack("orders", &[nacked_id]).await.unwrap(), 0);
    assert_eq!(q.dead_letters("orders", 0, 10).await.unwrap().len(), 2);
    // Paging by id.
    let page = q.dead_letters("orders", dead[0].id, 10).await.unwrap();
    assert_eq!(page.iter().map(|l| l.id).collect::<Vec<_>>(), [dead[1].id]);
    assert_eq!(q.dead_letters("orders", 0, 1).await.unwrap().len(), 1);
    assert!(q.dead_letters("other", 0, 10).await.unwrap().is_empty());

    // Replay one by id (unknown ids ignored), then the rest with an empty list.
    assert_eq!(q.replay("orders", &[dead[1].id, 12345]).await.unwrap(), 1);
    assert_eq!(q.replay("orders", &[]).await.unwrap(), 1);
    assert_eq!(q.replay("orders", &[]).await.unwrap(), 0);
    assert!(q.dead_letters("orders", 0, 10).await.unwrap().is_empty());
    // Both are back, attempts from 1, every field kept.
    let got = within("replayed messages", async {
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend(fetch(&*q, "orders", 10, LONG).await);
        }
        got
    })
    .await;
    let mut back: Vec<(u32, BusMessage)> =
        got.iter().map(|l| (l.attempt, l.message.clone())).collect();
    back.sort_by_key(|(_, m)| m.log_id);
    assert_eq!(back, [(1, message("orders", 1)), (1, message("orders", 2))]);
    let ids: Vec<u64> = got.iter().map(|l| l.id).collect();
    assert_eq!(q.ack("orders", &ids).await.unwrap(), 2);
    assert_eq!(stats(&*q, "orders").await, counts(0, 0, 0, "orders"));
}

#[doc(hidden)]
pub async fn acks_are_idempotent_and_unknown_ids_are_ignored<Q, G, F, Fut>(new: F)
where
    Q: Bus + TopicQueue,
    F: Fn(SuiteOptions) -> Fut,
    Fut: Future<Output = (Arc<Q>, G)>,
{
    let (q, _guard) = new(SuiteOptions::default()).await;
    q.publish(message("orders", 1)).await.unwrap();
    q.publish(message("orders", 2)).await.unwrap();
    let got = fetch(&*q, "orders", 10, Duration::ZERO).await;
    assert_eq!(got.len(), 2);
    let (a, b) = (got[0].id, got[1].id);
    assert_eq!(
        q.ack("orders", &[a, a, 999_999, u64::MAX]).await.unwrap(),
        1
    );
    assert_eq!(q.ack("orders", &[a]).await.unwrap(), 0);
    assert_eq!(q.ack("orders", &[]).await.unwrap(), 0);
    assert_eq!(stats(&*q, "orders").await, counts(0, 1, 0, "orders"));
    assert_eq!(q.ack("orders", &[b]).await.unwrap(), 1);
    assert_eq!(stats(&*q, "orders").await, counts(0, 0, 0, "orders"));
    // Acked for good: nothing comes back.
    assert!(fetch(&*q, "orders", 10, Duration::ZERO).await.is_empty());
}

#[doc(hidden)]
pub async fn ids_of_another_topic_are_ignored<Q, G, F, Fut>(new: F)
where
    Q: Bus + TopicQueue,
    F: Fn(SuiteOptions) -> Fut,
    Fut: Future<Output = (Arc<Q>, G)>,
{
    let (q, _guard) = new(SuiteOptions::default()).await;
    q.publish(message("c2s.130.1", 1)).await.unwrap();
    q.publish(message("c2s.130.2", 2)).await.unwrap();
    let one = fetch(&*q, "c2s.130.1", 10, Duration::ZERO).await;
    let two = fetch(&*q, "c2s.130.2", 10, Duration::ZERO).await;
    let (id1, id2) = (one[0].id, two[0].id);
    assert_eq!(q.ack("c2s.130.2", &[id1]).await.unwrap(), 0);
    assert_eq!(
        q.nack("c2s.130.2", &[id1], Duration::ZERO).await.unwrap(),
        0
    );
    assert_eq!(q.replay("c2s.130.2", &[id1]).await.unwrap(), 0);
    assert_eq!(stats(&*q, "c2s.130.1").await, counts(0, 1, 0, "c2s.130.1"));
    assert_eq!(q.ack("c2s.130.1", &[id1]).await.unwrap(), 1);
    assert_eq!(q.ack("c2s.130.2", &[id2]).await.unwrap(), 1);
}

#[doc(hidden)]
pub async fn competing_fetchers_never_share_a_leased_message<Q, G, F, Fut>(new: F)
where
    Q: Bus + TopicQueue,
    F: Fn(SuiteOptions) -> Fut,
    Fut: Future<Output = (Arc<Q>, G)>,
{
    let (q, _guard) = new(SuiteOptions::default()).await;
    let total = 200u32;
    for n in 0..total {
        q.publish(message("orders", n)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let q = Arc::clone(&q);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = q.fetch("orders", 7, Duration::ZERO, LONG).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|l| (l.id, l.attempt)));
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert_eq!(all.len(), total as usize, "each message exactly once");
    assert!(all.iter().all(|(_, attempt)| *attempt == 1));
    let unique: BTreeSet<u64> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(unique.len(), total as usize);
    assert_eq!(stats(&*q, "orders").await, counts(0, 200, 0, "orders"));
}

#[doc(hidden)]
pub async fn many_concurrent_publishers_lose_nothing_and_keep_their_order<Q, G, F, Fut>(new: F)
where
    Q: Bus + TopicQueue,
    F: Fn(SuiteOptions) -> Fut,
    Fut: Future<Output = (Arc<Q>, G)>,
{
    let (q, _guard) = new(SuiteOptions::default()).await;
    let publishers = 16u32;
    let each = 25u32;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let q = Arc::clone(&q);
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                let topic = if p % 2 == 0 { "c2s.130.1" } else { "c2s.130.2" };
                let mut m = message(topic, p);
                m.client_msg_id = format!("p{p}-{i}");
                m.log_id = u64::from(i);
                q.publish(m).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for topic in ["c2s.130.1", "c2s.130.2"] {
        let mut got = Vec::new();
        loop {
            let page = fetch(&*q, topic, 100, Duration::ZERO).await;
            if page.is_empty() {
                break;
            }
            got.extend(page);
        }
        assert_eq!(got.len(), (publishers / 2 * each) as usize, "{topic}");
        assert!(got.windows(2).all(|w| w[0].id < w[1].id), "ids ascend");
        // Per publisher, its messages in the order it published them.
        let mut per_publisher: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for l in &got {
            assert_eq!(l.message.topic, topic);
            per_publisher
                .entry(l.message.uid.clone())
                .or_default()
                .push(l.message.log_id);
        }
        assert_eq!(per_publisher.len(), (publishers / 2) as usize);
        for (uid, order) in per_publisher {
            assert_eq!(order, (0..u64::from(each)).collect::<Vec<_>>(), "{uid}");
        }
        let ids: Vec<u64> = got.iter().map(|l| l.id).collect();
        assert_eq!(q.ack(topic, &ids).await.unwrap(), ids.len() as u64);
    }
}

#[doc(hidden)]
pub async fn a_full_topic_refuses_publishes<Q, G, F, Fut>(new: F)
where
    Q: Bus + TopicQueue,
    F: Fn(SuiteOptions) -> Fut,
    Fut: Future<Output = (Arc<Q>, G)>,
{
    let (q, _guard) = new(SuiteOptions {
        max_backlog: 3,
        ..SuiteOptions::default()
    })
    .await;
    for n in 0..3 {
        q.publish(message("orders", n)).await.unwrap();
    }
    let refused = q.publish(message("orders", 3)).await;
    assert!(
        matches!(&refused, Err(BusError::Full(topic)) if topic == "orders"),
        "{refused:?}"
    );
    // Per topic.
    q.publish(message("other", 0)).await.unwrap();
    // Room again once one is acked; what was refused was not kept.
    let got = fetch(&*q, "orders", 1, Duration::ZERO).await;
    assert_eq!(q.ack("orders", &[got[0].id]).await.unwrap(), 1);
    q.publish(message("orders", 4)).await.unwrap();
    assert!(matches!(
        q.publish(message("orders", 5)).await,
        Err(BusError::Full(_))
    ));
    let rest = fetch(&*q, "orders", 10, Duration::ZERO).await;
    let sent: Vec<BusMessage> = rest.into_iter().map(|l| l.message).collect();
    assert_eq!(
        sent,
        [1, 2, 4]
            .into_iter()
            .map(|n| message("orders", n))
            .collect::<Vec<_>>()
    );
}

#[doc(hidden)]
pub async fn a_waiting_fetch_returns_when_a_message_is_published<Q, G, F, Fut>(new: F)
where
    Q: Bus + TopicQueue,
    F: Fn(SuiteOptions) -> Fut,
    Fut: Future<Output = (Arc<Q>, G)>,
{
    let (q, _guard) = new(SuiteOptions::default()).await;
    let fetcher = {
        let q = Arc::clone(&q);
        // Waits up to 30 s; the publish must end it well before.
        tokio::spawn(async move { q.fetch("orders", 10, LONG, LONG).await })
    };
    let publisher = {
        let q = Arc::clone(&q);
        tokio::spawn(async move { q.publish(message("orders", 1)).await })
    };
    publisher.await.unwrap().unwrap();
    let got = within("the waiting fetch", fetcher).await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, message("orders", 1));
}

#[doc(hidden)]
pub async fn a_fetch_with_nothing_published_returns_empty_after_its_wait<Q, G, F, Fut>(new: F)
where
    Q: Bus + TopicQueue,
    F: Fn(SuiteOptions) -> Fut,
    Fut: Future<Output = (Arc<Q>, G)>,
{
    let (q, _guard) = new(SuiteOptions::default()).await;
    let got = within(
        "a fetch of an empty topic",
        q.fetch("orders", 10, Duration::from_millis(100), LONG),
    )
    .await
    .unwrap();
    assert!(got.is_empty());
    assert_eq!(stats(&*q, "orders").await, counts(0, 0, 0, "orders"));
}

#[doc(hidden)]
pub async fn topics_lists_every_topic_with_its_counts<Q, G, F, Fut>(new: F)
where
    Q: Bus + TopicQueue,
    F: Fn(SuiteOptions) -> Fut,
    Fut: Future<Output = (Arc<Q>, G)>,
{
    let (q, _guard) = new(SuiteOptions {
        max_attempts: 1,
        ..SuiteOptions::default()
    })
    .await;
    for n in 0..3 {
        q.publish(message("c2s.130.1", n)).await.unwrap();
    }
    q.publish(message("orders", 0)).await.unwrap();
    // c2s.130.1: one in flight, one dead (nacked on its only attempt), one ready.
    let got = fetch(&*q, "c2s.130.1", 2, Duration::ZERO).await;
    assert_eq!(got.len(), 2);
    assert_eq!(
        q.nack("c2s.130.1", &[got[1].id], Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    let topics = q.topics().await.unwrap();
    let names: Vec<&str> = topics.iter().map(|t| t.topic.as_str()).collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted: {names:?}");
    assert!(topics.contains(&counts(1, 1, 1, "c2s.130.1")), "{topics:?}");
    assert!(topics.contains(&counts(1, 0, 0, "orders")), "{topics:?}");
}

#[doc(hidden)]
pub async fn bad_arguments_are_refused<Q, G, F, Fut>(new: F)
where
    Q: Bus + TopicQueue,
    F: Fn(SuiteOptions) -> Fut,
    Fut: Future<Output = (Arc<Q>, G)>,
{
    let (q, _guard) = new(SuiteOptions::default()).await;
    let invalid = |r: Result<u64, BusError>| matches!(r, Err(BusError::InvalidArgument(_)));
    for topic in ["", "bad topic", "x/y", "a*", "a>", &"a".repeat(201)] {
        assert!(
            invalid(q.publish(message(topic, 0)).await.map(|()| 0)),
            "{topic:?}"
        );
        assert!(invalid(
            q.fetch(topic, 1, Duration::ZERO, LONG).await.map(|_| 0)
        ));
        assert!(invalid(q.ack(topic, &[1]).await));
        assert!(invalid(q.nack(topic, &[1], Duration::ZERO).await));
        assert!(invalid(q.dead_letters(topic, 0, 10).await.map(|_| 0)));
        assert!(invalid(q.replay(topic, &[]).await));
    }
    assert!(invalid(
        q.fetch("orders", 0, Duration::ZERO, LONG).await.map(|_| 0)
    ));
    assert!(invalid(
        q.fetch("orders", 1, Duration::ZERO, Duration::ZERO)
            .await
            .map(|_| 0)
    ));
    let too_many = vec![1u64; crate::sqlite::MAX_IDS + 1];
    assert!(invalid(q.ack("orders", &too_many).await));
    assert!(invalid(q.nack("orders", &too_many, Duration::ZERO).await));
    assert!(invalid(q.replay("orders", &too_many).await));
    // Huge durations and counts are cut, not overflowed.
    q.publish(message("orders", 0)).await.unwrap();
    let got = within(
        "a fetch with huge arguments",
        q.fetch("orders", usize::MAX, Duration::MAX, LONG),
    )
    .await
    .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        q.nack("orders", &[got[0].id], Duration::MAX).await.unwrap(),
        1
    );
    assert!(
        q.dead_letters("orders", u64::MAX, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
}
