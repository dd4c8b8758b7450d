//! `SqliteQueue` against a real SQLite file in a temp dir: the `TopicQueue` contract
//! (leases, redelivery, nack, dead letters, replay, acks), durability across reopen,
//! backpressure and wake-ups. Waits are polls with a deadline, never fixed sleeps.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use longlink_bus::{
    Bus, BusError, BusMessage, Leased, QueueOptions, SqliteQueue, TopicQueue, TopicStats,
};
use tempfile::TempDir;

const LONG: Duration = Duration::from_secs(30);
const SHORT_LEASE: Duration = Duration::from_millis(200);
/// How long a test waits for something that should happen well before.
const DEADLINE: Duration = Duration::from_secs(10);

fn message(topic: &str, n: u32) -> BusMessage {
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

struct Fixture {
    dir: TempDir,
    queue: Arc<SqliteQueue>,
}

impl Fixture {
    fn new(options: QueueOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(SqliteQueue::open(&db_path(&dir), options).unwrap());
        Self { dir, queue }
    }

    fn path(&self) -> PathBuf {
        db_path(&self.dir)
    }
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("bus").join("queue.sqlite3")
}

fn options(max_attempts: u32) -> QueueOptions {
    QueueOptions {
        max_attempts,
        ..QueueOptions::default()
    }
}

async fn fetch(queue: &SqliteQueue, topic: &str, max: usize, wait: Duration) -> Vec<Leased> {
    queue.fetch(topic, max, wait, LONG).await.unwrap()
}

async fn stats(queue: &SqliteQueue, topic: &str) -> TopicStats {
    queue
        .topics()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.topic == topic)
        .unwrap_or_default()
}

fn counts(ready: u64, in_flight: u64, dead: u64, topic: &str) -> TopicStats {
    TopicStats {
        topic: topic.to_owned(),
        ready,
        in_flight,
        dead,
    }
}

/// Awaits a fetch that waits [`LONG`] for a message due much sooner (published, or a lease
/// or retry time of 200 ms): it must be woken then, well before [`DEADLINE`], not at the end
/// of its own wait (where it would also find the message).
async fn woken<T>(fetch: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fetch)
        .await
        .expect("a waiting fetch was not woken when its message became ready")
}

/// Polls `check` until it returns `Some`, failing the test after [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
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
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn publish_fetch_ack_round_trip_keeps_every_field() {
    let f = Fixture::new(QueueOptions::default());
    let mut sent = message("c2s.130.1", 0);
    // Not UTF-8, and u64 values with the top bit set: stored as bit patterns.
    sent.payload = Bytes::from_static(&[0xff, 0x00, 0xfe, b'x']);
    sent.log_id = u64::MAX;
    sent.received_ms = u64::MAX - 1;
    sent.uid = "ünïcode-uid".to_owned();
    f.queue.publish(sent.clone()).await.unwrap();
    assert_eq!(
        stats(&f.queue, "c2s.130.1").await,
        counts(1, 0, 0, "c2s.130.1")
    );

    let got = fetch(&f.queue, "c2s.130.1", 10, LONG).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].attempt, 1);
    assert_eq!(got[0].message, sent);
    assert_eq!(
        stats(&f.queue, "c2s.130.1").await,
        counts(0, 1, 0, "c2s.130.1")
    );

    assert_eq!(f.queue.ack("c2s.130.1", &[got[0].id]).await.unwrap(), 1);
    assert_eq!(
        stats(&f.queue, "c2s.130.1").await,
        counts(0, 0, 0, "c2s.130.1")
    );
    assert!(
        fetch(&f.queue, "c2s.130.1", 10, Duration::ZERO)
            .await
            .is_empty()
    );
    // Other topics are not touched.
    assert!(
        fetch(&f.queue, "c2s.130.2", 10, Duration::ZERO)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn fetch_takes_in_publish_order_up_to_max() {
    let f = Fixture::new(QueueOptions::default());
    for n in 0..5 {
        f.queue.publish(message("orders", n)).await.unwrap();
    }
    let first = fetch(&f.queue, "orders", 3, Duration::ZERO).await;
    let second = fetch(&f.queue, "orders", 3, Duration::ZERO).await;
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

#[tokio::test]
async fn an_unacked_message_is_delivered_again_after_its_lease() {
    let f = Fixture::new(options(5));
    f.queue.publish(message("orders", 1)).await.unwrap();
    let first = f.queue.fetch("orders", 1, LONG, SHORT_LEASE).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].attempt, 1);
    // This fetch finds nothing ready; it must wake when the lease runs out, not at its
    // 30 s wait.
    let again = woken(fetch(&f.queue, "orders", 1, LONG)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, first[0].id);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].message, first[0].message);
    // The late ack of the first delivery still removes it (it was processed).
    assert_eq!(f.queue.ack("orders", &[first[0].id]).await.unwrap(), 1);
    assert_eq!(stats(&f.queue, "orders").await, counts(0, 0, 0, "orders"));
}

#[tokio::test]
async fn nack_makes_a_message_ready_after_retry_after() {
    let f = Fixture::new(options(5));
    for n in 0..3 {
        f.queue.publish(message("orders", n)).await.unwrap();
    }
    let leased = fetch(&f.queue, "orders", 3, Duration::ZERO).await;
    let [a, b, c] = [leased[0].id, leased[1].id, leased[2].id];

    // Far in the future: counted as ready (waiting), but not fetchable now.
    assert_eq!(f.queue.nack("orders", &[a], LONG).await.unwrap(), 1);
    assert_eq!(stats(&f.queue, "orders").await, counts(1, 2, 0, "orders"));
    assert!(
        fetch(&f.queue, "orders", 10, Duration::ZERO)
            .await
            .is_empty()
    );

    // Right away.
    assert_eq!(
        f.queue.nack("orders", &[b], Duration::ZERO).await.unwrap(),
        1
    );
    let got = fetch(&f.queue, "orders", 10, Duration::ZERO).await;
    assert_eq!(
        got.iter().map(|l| (l.id, l.attempt)).collect::<Vec<_>>(),
        [(b, 2)]
    );

    // Shortly: a waiting fetch wakes at the retry time.
    assert_eq!(
        f.queue
            .nack("orders", &[c], Duration::from_millis(200))
            .await
            .unwrap(),
        1
    );
    let got = woken(fetch(&f.queue, "orders", 10, LONG)).await;
    assert_eq!(
        got.iter().map(|l| (l.id, l.attempt)).collect::<Vec<_>>(),
        [(c, 2)]
    );

    // Not leased any more (a is waiting, unknown id): nothing to nack.
    assert_eq!(
        f.queue
            .nack("orders", &[a, 999_999], Duration::ZERO)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        f.queue.nack("nothing", &[a], Duration::ZERO).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn dead_letters_after_max_attempts_and_replay() {
    let f = Fixture::new(options(3));
    f.queue.publish(message("orders", 1)).await.unwrap();
    f.queue.publish(message("orders", 2)).await.unwrap();

    // Message 1: nacked on every attempt.
    let mut nacked_id = None;
    for attempt in 1..=3 {
        let got = f.queue.fetch("orders", 1, LONG, LONG).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].attempt, attempt);
        assert_eq!(got[0].message, message("orders", 1));
        nacked_id = Some(got[0].id);
        f.queue
            .nack("orders", &[got[0].id], Duration::ZERO)
            .await
            .unwrap();
    }
    let nacked_id = nacked_id.unwrap();

    // Message 2: its lease runs out on every attempt.
    let mut expired_id = None;
    for attempt in 1..=3 {
        let got = woken(f.queue.fetch("orders", 1, LONG, SHORT_LEASE))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].attempt, attempt);
        assert_eq!(got[0].message, message("orders", 2));
        expired_id = Some(got[0].id);
    }
    let expired_id = expired_id.unwrap();

    let dead = eventually("both dead-lettered", || async {
        let dead = f.queue.dead_letters("orders", 0, 10).await.unwrap();
        (dead.len() == 2).then_some(dead)
    })
    .await;
    assert_eq!(
        dead.iter().map(|l| (l.id, l.attempt)).collect::<Vec<_>>(),
        [(nacked_id, 3), (expired_id, 3)]
    );
    assert_eq!(dead[0].message, message("orders", 1));
    assert_eq!(dead[1].message, message("orders", 2));
    assert_eq!(stats(&f.queue, "orders").await, counts(0, 0, 2, "orders"));
    // Not delivered any more, and acks do not touch dead letters.
    assert!(
        fetch(&f.queue, "orders", 10, Duration::ZERO)
            .await
            .is_empty()
    );
    assert_eq!(f.queue.ack("orders", &[nacked_id]).await.unwrap(), 0);
    // Paging by id.
    let page = f.queue.dead_letters("orders", nacked_id, 10).await.unwrap();
    assert_eq!(page.iter().map(|l| l.id).collect::<Vec<_>>(), [expired_id]);
    assert_eq!(f.queue.dead_letters("orders", 0, 1).await.unwrap().len(), 1);

    // Replay one by id, then the rest with an empty list.
    assert_eq!(
        f.queue
            .replay("orders", &[expired_id, 12345])
            .await
            .unwrap(),
        1
    );
    assert_eq!(f.queue.replay("orders", &[]).await.unwrap(), 1);
    assert_eq!(f.queue.replay("orders", &[]).await.unwrap(), 0);
    let got = fetch(&f.queue, "orders", 10, Duration::ZERO).await;
    assert_eq!(
        got.iter().map(|l| (l.id, l.attempt)).collect::<Vec<_>>(),
        [(nacked_id, 1), (expired_id, 1)]
    );
    assert!(
        f.queue
            .dead_letters("orders", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn dead_letters_and_acks_survive_a_reopen() {
    let f = Fixture::new(options(1));
    for n in 0..3 {
        f.queue.publish(message("orders", n)).await.unwrap();
    }
    let got = fetch(&f.queue, "orders", 3, Duration::ZERO).await;
    let ids: Vec<u64> = got.iter().map(|l| l.id).collect();
    // 0 acked, 1 dead-lettered (its only attempt nacked), 2 left leased.
    assert_eq!(f.queue.ack("orders", &[ids[0]]).await.unwrap(), 1);
    assert_eq!(
        f.queue
            .nack("orders", &[ids[1]], Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    f.queue.close().await.unwrap();
    drop(f.queue);

    let queue = SqliteQueue::open(&db_path(&f.dir), options(1)).unwrap();
    let dead = queue.dead_letters("orders", 0, 10).await.unwrap();
    assert_eq!(
        dead.iter().map(|l| (l.id, l.attempt)).collect::<Vec<_>>(),
        [(ids[1], 1)]
    );
    // The lease held before the restart is void: delivered again, attempt counting anew.
    let got = fetch(&queue, "orders", 10, Duration::ZERO).await;
    assert_eq!(
        got.iter().map(|l| (l.id, l.attempt)).collect::<Vec<_>>(),
        [(ids[2], 1)]
    );
    assert_eq!(got[0].message, message("orders", 2));
    assert_eq!(queue.replay("orders", &[]).await.unwrap(), 1);
    queue.close().await.unwrap();
    drop(queue);

    let queue = SqliteQueue::open(&db_path(&f.dir), options(1)).unwrap();
    assert!(
        queue
            .dead_letters("orders", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let got = fetch(&queue, "orders", 10, Duration::ZERO).await;
    assert_eq!(
        got.iter().map(|l| l.id).collect::<Vec<_>>(),
        [ids[1], ids[2]]
    );
}

#[tokio::test]
async fn messages_survive_close_and_reopen() {
    let f = Fixture::new(QueueOptions::default());
    for n in 0..50 {
        f.queue.publish(message("c2s.130.1", n)).await.unwrap();
    }
    f.queue.publish(message("c2s.131.1", 99)).await.unwrap();
    let path = f.path();
    f.queue.close().await.unwrap();
    assert!(matches!(
        f.queue.publish(message("c2s.130.1", 0)).await,
        Err(BusError::Unavailable(_))
    ));
    drop(f.queue);

    let queue = SqliteQueue::open(&path, QueueOptions::default()).unwrap();
    let topics = queue.topics().await.unwrap();
    assert_eq!(
        topics,
        [counts(50, 0, 0, "c2s.130.1"), counts(1, 0, 0, "c2s.131.1")]
    );
    let got = fetch(&queue, "c2s.130.1", 100, Duration::ZERO).await;
    assert_eq!(
        got.iter().map(|l| l.message.clone()).collect::<Vec<_>>(),
        (0..50).map(|n| message("c2s.130.1", n)).collect::<Vec<_>>()
    );
    assert!(got.iter().all(|l| l.attempt == 1));
    let last_id = got.last().unwrap().id;
    // Ack the newest, reopen: a new message never gets an id used before.
    assert_eq!(queue.ack("c2s.130.1", &[last_id]).await.unwrap(), 1);
    drop(queue);
    let queue = SqliteQueue::open(&path, QueueOptions::default()).unwrap();
    queue.publish(message("c2s.130.1", 7)).await.unwrap();
    let got = fetch(&queue, "c2s.130.1", 100, Duration::ZERO).await;
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|l| l.id != last_id));
    assert!(got.last().unwrap().id > last_id);
}

#[tokio::test]
async fn a_second_open_of_the_same_file_is_refused_until_close() {
    let f = Fixture::new(QueueOptions::default());
    assert!(matches!(
        SqliteQueue::open(&f.path(), QueueOptions::default()),
        Err(BusError::Unavailable(_))
    ));
    f.queue.close().await.unwrap();
    // close releases the file even while the value lives on.
    let again = SqliteQueue::open(&f.path(), QueueOptions::default()).unwrap();
    again.close().await.unwrap();
}

#[tokio::test]
async fn acks_are_idempotent_and_unknown_ids_are_ignored() {
    let f = Fixture::new(QueueOptions::default());
    f.queue.publish(message("orders", 1)).await.unwrap();
    f.queue.publish(message("orders", 2)).await.unwrap();
    let got = fetch(&f.queue, "orders", 10, Duration::ZERO).await;
    let (a, b) = (got[0].id, got[1].id);
    assert_eq!(
        f.queue
            .ack("orders", &[a, a, 999_999, u64::MAX])
            .await
            .unwrap(),
        1
    );
    assert_eq!(f.queue.ack("orders", &[a]).await.unwrap(), 0);
    assert_eq!(f.queue.ack("orders", &[]).await.unwrap(), 0);
    // An id of another topic is unknown here.
    assert_eq!(f.queue.ack("other", &[b]).await.unwrap(), 0);
    assert_eq!(stats(&f.queue, "orders").await, counts(0, 1, 0, "orders"));
    assert_eq!(f.queue.ack("orders", &[b]).await.unwrap(), 1);
    assert_eq!(stats(&f.queue, "orders").await, counts(0, 0, 0, "orders"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_fetchers_never_share_a_leased_message() {
    let f = Fixture::new(QueueOptions::default());
    let total = 300u32;
    for n in 0..total {
        f.queue.publish(message("orders", n)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let queue = Arc::clone(&f.queue);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = queue
                    .fetch("orders", 7, Duration::ZERO, LONG)
                    .await
                    .unwrap();
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
    assert_eq!(stats(&f.queue, "orders").await, counts(0, 300, 0, "orders"));
}

#[tokio::test]
async fn a_full_topic_refuses_publishes() {
    let f = Fixture::new(QueueOptions {
        max_backlog: 3,
        ..QueueOptions::default()
    });
    for n in 0..3 {
        f.queue.publish(message("orders", n)).await.unwrap();
    }
    assert!(matches!(
        f.queue.publish(message("orders", 3)).await,
        Err(BusError::Full(topic)) if topic == "orders"
    ));
    // Per topic.
    f.queue.publish(message("other", 0)).await.unwrap();
    // Room again once one is acked.
    let got = fetch(&f.queue, "orders", 1, Duration::ZERO).await;
    f.queue.ack("orders", &[got[0].id]).await.unwrap();
    f.queue.publish(message("orders", 3)).await.unwrap();
    assert!(matches!(
        f.queue.publish(message("orders", 4)).await,
        Err(BusError::Full(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_respect_the_backlog() {
    let f = Fixture::new(QueueOptions {
        max_backlog: 10,
        ..QueueOptions::default()
    });
    let mut tasks = Vec::new();
    for n in 0..40 {
        let queue = Arc::clone(&f.queue);
        tasks.push(tokio::spawn(async move {
            queue.publish(message("orders", n)).await
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => accepted += 1,
            Err(BusError::Full(_)) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted, 10);
    assert_eq!(stats(&f.queue, "orders").await, counts(10, 0, 0, "orders"));
}

#[tokio::test]
async fn a_waiting_fetch_returns_when_a_message_is_published() {
    let f = Fixture::new(QueueOptions::default());
    let queue = Arc::clone(&f.queue);
    // Waits up to 30 s; the publish must wake it (the message arrives well before).
    let fetcher = tokio::spawn(async move { queue.fetch("orders", 10, LONG, LONG).await });
    let queue = Arc::clone(&f.queue);
    let publisher = tokio::spawn(async move { queue.publish(message("orders", 1)).await });
    publisher.await.unwrap().unwrap();
    let got = woken(fetcher).await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, message("orders", 1));
}

#[tokio::test]
async fn a_fetch_with_nothing_published_returns_empty_after_its_wait() {
    let f = Fixture::new(QueueOptions::default());
    let got = f
        .queue
        .fetch("orders", 10, Duration::from_millis(50), LONG)
        .await
        .unwrap();
    assert!(got.is_empty());
    // A fetch alone does not make a topic.
    assert!(f.queue.topics().await.unwrap().is_empty());
}

#[tokio::test]
async fn close_ends_waiting_fetches_and_refuses_further_calls() {
    let f = Fixture::new(QueueOptions::default());
    f.queue.publish(message("orders", 1)).await.unwrap();
    let queue = Arc::clone(&f.queue);
    let fetcher = tokio::spawn(async move { queue.fetch("empty", 10, LONG, LONG).await });
    // Let the fetcher start waiting (it is fine if it has not: it then sees the close).
    tokio::task::yield_now().await;
    f.queue.close().await.unwrap();
    let result = tokio::time::timeout(DEADLINE, fetcher)
        .await
        .expect("fetch still waiting after close")
        .unwrap();
    assert!(
        matches!(result, Err(BusError::Unavailable(_))),
        "{result:?}"
    );
    assert!(matches!(
        f.queue.fetch("orders", 1, Duration::ZERO, LONG).await,
        Err(BusError::Unavailable(_))
    ));
    assert!(matches!(
        f.queue.ack("orders", &[1]).await,
        Err(BusError::Unavailable(_))
    ));
    assert!(matches!(
        f.queue.topics().await,
        Err(BusError::Unavailable(_))
    ));
    // close again is fine.
    f.queue.close().await.unwrap();
}

#[tokio::test]
async fn bad_arguments_are_refused() {
    let f = Fixture::new(QueueOptions::default());
    let q = &f.queue;
    for topic in ["", "bad topic", "x/y", &"a".repeat(201)] {
        let invalid = |r: Result<_, BusError>| matches!(r, Err(BusError::InvalidArgument(_)));
        assert!(
            invalid(q.publish(message(topic, 0)).await.map(|_| 0)),
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
    assert!(matches!(
        q.fetch("orders", 0, Duration::ZERO, LONG).await,
        Err(BusError::InvalidArgument(_))
    ));
    assert!(matches!(
        q.fetch("orders", 1, Duration::ZERO, Duration::ZERO).await,
        Err(BusError::InvalidArgument(_))
    ));
    let too_many = vec![1u64; longlink_bus::sqlite::MAX_IDS + 1];
    assert!(matches!(
        q.ack("orders", &too_many).await,
        Err(BusError::InvalidArgument(_))
    ));
    // Huge durations and counts are cut, not overflowed.
    q.publish(message("orders", 0)).await.unwrap();
    let got = q
        .fetch("orders", usize::MAX, Duration::MAX, Duration::MAX)
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
    for zero in [
        QueueOptions {
            max_attempts: 0,
            ..QueueOptions::default()
        },
        QueueOptions {
            max_backlog: 0,
            ..QueueOptions::default()
        },
        QueueOptions {
            write_queue: 0,
            ..QueueOptions::default()
        },
        QueueOptions {
            max_batch: 0,
            ..QueueOptions::default()
        },
    ] {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            SqliteQueue::open(&db_path(&dir), zero),
            Err(BusError::InvalidArgument(_))
        ));
    }
}

#[tokio::test]
async fn a_publish_is_committed_when_it_returns() {
    let f = Fixture::new(QueueOptions::default());
    f.queue.publish(message("orders", 1)).await.unwrap();
    // Another connection (as after a crash) sees the row: it was committed, not just queued.
    let conn = rusqlite::Connection::open(f.path()).unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM messages WHERE topic = 'orders' AND dead = 0",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn a_fetch_dropped_before_it_returns_gives_its_leases_back() {
    let f = Fixture::new(QueueOptions::default());
    let mut dropped_mid_fetch = false;
    for n in 0..10 {
        f.queue.publish(message("orders", n)).await.unwrap();
        // Polled once: it leases the message and then waits for the read of its body.
        let outcome = tokio::select! {
            biased;
            got = f.queue.fetch("orders", 10, Duration::ZERO, LONG) => Some(got.unwrap()),
            () = std::future::ready(()) => None,
        };
        match outcome {
            // The read finished within the first poll (rare): try again with a new message.
            Some(got) => {
                assert_eq!(f.queue.ack("orders", &[got[0].id]).await.unwrap(), 1);
            }
            None => {
                dropped_mid_fetch = true;
                break;
            }
        }
    }
    assert!(dropped_mid_fetch, "never caught a fetch mid-read");
    assert_eq!(stats(&f.queue, "orders").await, counts(1, 0, 0, "orders"));
    let got = fetch(&f.queue, "orders", 10, Duration::ZERO).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].attempt, 1,
        "the dropped fetch's attempt is not counted"
    );
}
