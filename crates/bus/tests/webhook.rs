//! Webhooks against a real HTTP receiver (axum on 127.0.0.1:0) and a real `SqliteQueue`:
//! retries until a 2xx then ack, dead-lettering when the receiver keeps failing, timeouts,
//! the in-flight limit, and shutdown. Waits are polls with a deadline, never fixed sleeps.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use longlink_bus::{
    Bus, BusMessage, ConsumedMessage, Leased, QueueOptions, SqliteQueue, TopicQueue, TopicStats,
    WebhookConfig, spawn_webhook,
};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(15);
const TOPIC: &str = "orders";

/// What the receiver saw of one call.
#[derive(Debug, Clone)]
struct Call {
    topic: String,
    delivery: String,
    attempt: String,
    log_id: String,
    content_type: String,
    body: Bytes,
}

type Answer = Arc<dyn Fn(usize) -> Behaviour + Send + Sync>;

#[derive(Clone, Copy)]
enum Behaviour {
    Status(StatusCode),
    /// Never answers (the call must time out).
    Hang,
    /// Answers 200 once `n` calls have been in progress together (or after 2 s).
    OkWhenConcurrent(usize),
}

struct Receiver {
    calls: Mutex<Vec<Call>>,
    answer: Answer,
    in_flight: tokio::sync::watch::Sender<usize>,
    max_in_flight: AtomicUsize,
}

impl Receiver {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

async fn hook(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let n = {
        let mut calls = rx.calls.lock().unwrap();
        calls.push(Call {
            topic: header("x-longlink-topic"),
            delivery: header("x-longlink-delivery"),
            attempt: header("x-longlink-attempt"),
            log_id: header("x-longlink-log-id"),
            content_type: header("content-type"),
            body,
        });
        calls.len()
    };
    // The maximum is updated before watchers are woken.
    rx.in_flight.send_modify(|c| {
        *c += 1;
        rx.max_in_flight.fetch_max(*c, Ordering::SeqCst);
    });
    let status = match (rx.answer)(n) {
        Behaviour::Status(status) => status,
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
        Behaviour::OkWhenConcurrent(want) => {
            let mut watch = rx.in_flight.subscribe();
            let reached = |_: &usize| rx.max_in_flight.load(Ordering::SeqCst) >= want;
            // Shorter than the webhook's timeout: a call never fails here.
            let _ = tokio::time::timeout(Duration::from_secs(2), watch.wait_for(reached)).await;
            StatusCode::OK
        }
    };
    rx.in_flight.send_modify(|c| *c -= 1);
    status
}

/// Starts a receiver answering call `n` (1-based) with `answer(n)`; returns it and its URL.
async fn receiver(
    answer: impl Fn(usize) -> Behaviour + Send + Sync + 'static,
) -> (Arc<Receiver>, String) {
    let rx = Arc::new(Receiver {
        calls: Mutex::new(Vec::new()),
        answer: Arc::new(answer),
        in_flight: tokio::sync::watch::channel(0).0,
        max_in_flight: AtomicUsize::new(0),
    });
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(Arc::clone(&rx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (rx, url)
}

fn queue(max_attempts: u32) -> (TempDir, Arc<SqliteQueue>) {
    let dir = tempfile::tempdir().unwrap();
    let queue = SqliteQueue::open(
        &dir.path().join("bus.sqlite3"),
        QueueOptions {
            max_attempts,
            ..QueueOptions::default()
        },
    )
    .unwrap();
    (dir, Arc::new(queue))
}

fn config(url: &str) -> WebhookConfig {
    WebhookConfig {
        topic: TOPIC.to_owned(),
        url: url.to_owned(),
        timeout: Duration::from_secs(5),
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        max_in_flight: 4,
    }
}

fn message(n: u32) -> BusMessage {
    BusMessage {
        topic: TOPIC.to_owned(),
        appcode: 130,
        uid: "driver-7".to_owned(),
        device_id: "phone".to_owned(),
        msgtype: 1,
        client_msg_id: format!("c-{n}"),
        payload: Bytes::from(format!("31.2,121.{n}")),
        log_id: 123_456_789 + u64::from(n),
        received_ms: 1_763_900_000_000,
    }
}

async fn stats(queue: &SqliteQueue) -> TopicStats {
    queue
        .topics()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.topic == TOPIC)
        .unwrap_or_default()
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

async fn stop(shutdown: &CancellationToken, handle: tokio::task::JoinHandle<()>) {
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, handle)
        .await
        .expect("webhook did not stop")
        .unwrap();
}

#[tokio::test]
async fn failures_are_retried_until_a_2xx_then_the_message_is_acked() {
    let (rx, url) = receiver(|n| {
        Behaviour::Status(if n <= 2 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        })
    })
    .await;
    let (_dir, queue) = queue(5);
    queue.publish(message(1)).await.unwrap();
    let shutdown = CancellationToken::new();
    let handle = spawn_webhook(queue.clone(), config(&url), shutdown.clone());

    eventually("3 calls and the message acked", || async {
        (rx.calls().len() >= 3 && stats(&queue).await == counts_zero()).then_some(())
    })
    .await;
    // Acked: gone from the queue, so nobody can fetch it again.
    assert!(
        queue
            .fetch(TOPIC, 10, Duration::ZERO, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    stop(&shutdown, handle).await;

    let calls = rx.calls();
    assert_eq!(calls.len(), 3, "delivered exactly 3 times: {calls:?}");
    let id: u64 = calls[0].delivery.parse().unwrap();
    for (i, call) in calls.iter().enumerate() {
        let attempt = u32::try_from(i + 1).unwrap();
        assert_eq!(call.topic, TOPIC);
        assert_eq!(call.delivery, id.to_string());
        assert_eq!(call.attempt, attempt.to_string());
        assert_eq!(call.log_id, message(1).log_id.to_string());
        assert_eq!(call.content_type, "application/json");
        let body: ConsumedMessage = serde_json::from_slice(&call.body).unwrap();
        let expected = ConsumedMessage::from(&Leased {
            id,
            attempt,
            message: message(1),
        });
        assert_eq!(body, expected);
    }
}

fn counts_zero() -> TopicStats {
    TopicStats {
        topic: TOPIC.to_owned(),
        ..TopicStats::default()
    }
}

#[tokio::test]
async fn a_receiver_that_always_fails_gets_the_message_dead_lettered() {
    let (rx, url) = receiver(|_| Behaviour::Status(StatusCode::SERVICE_UNAVAILABLE)).await;
    let (_dir, queue) = queue(3);
    queue.publish(message(1)).await.unwrap();
    let shutdown = CancellationToken::new();
    let handle = spawn_webhook(queue.clone(), config(&url), shutdown.clone());

    let dead = eventually("the message dead-lettered", || async {
        let dead = queue.dead_letters(TOPIC, 0, 10).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    stop(&shutdown, handle).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempt, 3);
    assert_eq!(dead[0].message, message(1));
    let attempts: Vec<String> = rx.calls().into_iter().map(|c| c.attempt).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert_eq!(
        stats(&queue).await,
        TopicStats {
            dead: 1,
            ..counts_zero()
        }
    );
}

#[tokio::test]
async fn a_call_without_an_answer_in_time_is_retried() {
    let (rx, url) = receiver(|n| {
        if n == 1 {
            Behaviour::Hang
        } else {
            Behaviour::Status(StatusCode::NO_CONTENT)
        }
    })
    .await;
    let (_dir, queue) = queue(5);
    queue.publish(message(1)).await.unwrap();
    let shutdown = CancellationToken::new();
    let mut config = config(&url);
    config.timeout = Duration::from_millis(300);
    let handle = spawn_webhook(queue.clone(), config, shutdown.clone());

    eventually("the second call acked", || async {
        (rx.calls().len() >= 2 && stats(&queue).await == counts_zero()).then_some(())
    })
    .await;
    stop(&shutdown, handle).await;
    let attempts: Vec<String> = rx.calls().into_iter().map(|c| c.attempt).collect();
    assert_eq!(attempts, ["1", "2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_in_flight_calls_run_at_once() {
    let (rx, url) = receiver(|_| Behaviour::OkWhenConcurrent(3)).await;
    let (_dir, queue) = queue(5);
    for n in 0..9 {
        queue.publish(message(n)).await.unwrap();
    }
    let shutdown = CancellationToken::new();
    let mut config = config(&url);
    config.max_in_flight = 3;
    let handle = spawn_webhook(queue.clone(), config, shutdown.clone());

    eventually("all 9 acked", || async {
        (stats(&queue).await == counts_zero()).then_some(())
    })
    .await;
    stop(&shutdown, handle).await;
    // The first fetch had 9 ready and 3 slots: 3 calls ran together, never more.
    assert_eq!(rx.max_in_flight.load(Ordering::SeqCst), 3);
    let mut delivered: Vec<String> = rx
        .calls()
        .into_iter()
        .map(|c| {
            serde_json::from_slice::<ConsumedMessage>(&c.body)
                .unwrap()
                .client_msg_id
        })
        .collect();
    delivered.sort();
    assert_eq!(
        delivered,
        (0..9).map(|n| format!("c-{n}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn shutdown_stops_the_webhook_promptly_even_mid_call() {
    let (rx, url) = receiver(|_| Behaviour::Hang).await;
    let (_dir, queue) = queue(5);
    let shutdown = CancellationToken::new();
    // Idle: waiting in fetch.
    let handle = spawn_webhook(queue.clone(), config(&url), shutdown.clone());
    stop(&shutdown, handle).await;

    // Busy: a call hangs (timeout 5 s, lease 10 s).
    queue.publish(message(1)).await.unwrap();
    let shutdown = CancellationToken::new();
    let handle = spawn_webhook(queue.clone(), config(&url), shutdown.clone());
    eventually("the call started", || async {
        (!rx.calls().is_empty()).then_some(())
    })
    .await;
    stop(&shutdown, handle).await;
    // The abandoned message is still held (leased), to be delivered again.
    assert_eq!(
        stats(&queue).await,
        TopicStats {
            in_flight: 1,
            ..counts_zero()
        }
    );
}

#[tokio::test]
async fn an_invalid_config_ends_the_task_at_once() {
    let (_dir, queue) = queue(5);
    let shutdown = CancellationToken::new();
    let handle = spawn_webhook(
        queue,
        WebhookConfig::new("bad topic", "http://127.0.0.1:9/hook"),
        shutdown,
    );
    tokio::time::timeout(DEADLINE, handle)
        .await
        .expect("an invalid webhook kept running")
        .unwrap();
}
