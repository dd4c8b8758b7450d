//! `SqliteQueue` against a real SQLite file in a temp dir: the `TopicQueue` contract
//! (leases, redelivery, nack, dead letters, replay, acks), durability across reopen,
//! backpressure and wake-ups. Waits are polls with a deadline, never fixed sleeps.

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
    // The argument rules common to every backend are in the shared suite (bus_testsuite!,
    // bad_arguments_are_refused); here: a lease of Duration::MAX is cut, not overflowed, and
    // the SQLite queue's own options.
    q.publish(message("orders", 0)).await.unwrap();
    let got = q
        .fetch("orders", usize::MAX, Duration::MAX, Duration::MAX)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
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
