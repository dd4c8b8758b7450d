//! The notifier's behaviour with a real message store (`SqliteStore` in a tempdir) and a
//! recording provider: a test double standing where an HTTP endpoint would, so these tests
//! see exactly which notification the engine handed to which provider, and can make a
//! provider fail on command. (The providers' HTTP contracts are tested against local HTTPS
//! servers in `providers.rs`; the whole path through the server in the server's tests.)
//!
//! Tests run on a current-thread runtime: offers made back to back, without an await between
//! them, reach the outbox in one batch (same due time), which is what a burst looks like.
//! Every wait polls a condition under a deadline; nothing asserts on timing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use longlink_metrics::Registry;
use longlink_notify::provider::{Notification, Provider, SendError};
use longlink_notify::{Notifier, NotifyConfig, ProviderEntry, RuleConfig};
use longlink_rpc::notify::{DeviceClass, Notifications, NotifyCandidate, PushToken};
use longlink_store::{MessageStore, NewMessage, SqliteOptions, SqliteStore, UserKey};
use tokio_util::sync::CancellationToken;

const APP: u32 = 129;
const WAIT: Duration = Duration::from_secs(20);

/// A provider that records every notification and answers from a script (then `Ok`).
struct Recording {
    name: String,
    calls: Mutex<Vec<Notification>>,
    script: Mutex<VecDeque<Result<(), SendError>>>,
    /// When set, every call beyond the script fails this way.
    always: Mutex<Option<SendError>>,
}

impl Recording {
    fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            calls: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            always: Mutex::new(None),
        })
    }

    fn calls(&self) -> Vec<Notification> {
        self.calls.lock().expect("calls").clone()
    }

    fn script(&self, answers: impl IntoIterator<Item = Result<(), SendError>>) {
        self.script.lock().expect("script").extend(answers);
    }

    fn fail_always(&self, error: Option<SendError>) {
        *self.always.lock().expect("always") = error;
    }
}

#[async_trait]
impl Provider for Recording {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "http"
    }

    async fn send(&self, notification: &Notification) -> Result<(), SendError> {
        self.calls.lock().expect("calls").push(notification.clone());
        if let Some(answer) = self.script.lock().expect("script").pop_front() {
            return answer;
        }
        match self.always.lock().expect("always").clone() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

fn data<'a>(n: &'a Notification, key: &str) -> Option<&'a str> {
    n.data
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Polls `check` until it holds or [`WAIT`] passes.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Env {
    dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("store"), SqliteOptions::default()).expect("store"),
        );
        Self { dir, store }
    }

    fn start(&self, config: NotifyConfig, providers: &[Arc<Recording>]) -> Arc<Notifier> {
        let mut registry = Registry::default();
        self.start_with(config, providers, &mut registry)
    }

    fn start_with(
        &self,
        config: NotifyConfig,
        providers: &[Arc<Recording>],
        registry: &mut Registry,
    ) -> Arc<Notifier> {
        let entries = providers
            .iter()
            .map(|p| ProviderEntry::new(Arc::clone(p) as Arc<dyn Provider>))
            .collect();
        let store: Arc<dyn MessageStore> = Arc::clone(&self.store) as Arc<dyn MessageStore>;
        Notifier::start(
            config,
            entries,
            store,
            &self.dir.path().join("data"),
            registry,
            CancellationToken::new(),
        )
        .expect("notifier")
    }

    /// Stores a c2c text message and returns the candidate logic would offer.
    async fn message(&self, from: &str, to: &str, text: &str, msgtype: u32) -> NotifyCandidate {
        let outcome = self
            .store
            .append(NewMessage {
                from: UserKey::new(APP, from),
                from_device: "d-from".to_owned(),
                client_msg_id: String::new(),
                to: UserKey::new(APP, to),
                msgtype,
                content_type: 1,
                content: Bytes::from(text.to_owned()),
                log_id: 0,
            })
            .await
            .expect("append");
        NotifyCandidate {
            appcode: APP,
            uid: to.to_owned(),
            msgid: outcome.msgid,
            s2c: false,
            from: from.to_owned(),
            msgtype,
            content_type: 1,
            content: Bytes::from(text.to_owned()),
            reached_devices: Vec::new(),
            log_id: 0,
        }
    }
}

/// Fast timings for tests: short grace, no collapse spacing, quick retries.
fn config() -> NotifyConfig {
    NotifyConfig {
        grace_ms: 100,
        collapse_secs: 0,
        backoff_ms: 5,
        seed: 42,
        ..NotifyConfig::default()
    }
}

fn ios() -> DeviceClass {
    DeviceClass {
        platform: "ios".to_owned(),
        vendor: "apple".to_owned(),
        app_version: "1.0".to_owned(),
    }
}

fn token(provider: &str, token: &str) -> PushToken {
    PushToken {
        provider: provider.to_owned(),
        token: token.to_owned(),
    }
}

async fn drained(notifier: &Notifier) -> bool {
    notifier.outbox_pending().await.expect("pending") == 0
}

#[tokio::test]
async fn an_offline_device_is_notified_once_and_a_reached_device_not_at_all() {
    let env = Env::new();
    let apns = Recording::new("apns");
    let notifier = env.start(config(), &[Arc::clone(&apns)]);
    notifier
        .register(APP, "bob", "phone", ios(), token("apns", "tok-phone"))
        .await
        .expect("register");
    notifier
        .register(APP, "bob", "tablet", ios(), token("apns", "tok-tablet"))
        .await
        .expect("register");
    assert!(notifier.wants(APP, "bob"));
    assert!(!notifier.wants(APP, "carol"));

    let mut candidate = env.message("alice", "bob", "hello bob", 1).await;
    candidate.reached_devices = vec!["tablet".to_owned()];
    notifier.offer(candidate.clone());
    // Logic's retry of the same message: at most once per device and message.
    notifier.offer(candidate.clone());

    eventually("one notification", async || apns.calls().len() == 1).await;
    eventually("outbox drained", || drained(&notifier)).await;
    // A second pass after a later message shows nothing else was queued for the first.
    let mut later = env.message("alice", "bob", "later", 1).await;
    later.reached_devices = vec!["tablet".to_owned()];
    notifier.offer(later.clone());
    eventually("second notification", async || apns.calls().len() == 2).await;
    eventually("outbox drained", || drained(&notifier)).await;

    let calls = apns.calls();
    let first = &calls[0];
    assert_eq!(
        first.token, "tok-phone",
        "the reached tablet is not notified"
    );
    assert_eq!(first.title, "alice");
    assert_eq!(first.body, "hello bob");
    assert_eq!(first.badge, Some(1), "one unread message");
    assert_eq!(first.collapse_id, format!("ll-{APP}-bob-alice"));
    assert_eq!(first.ttl, Duration::from_secs(86400));
    assert!(first.high_priority);
    assert_ne!(first.id, 0);
    assert_eq!(data(first, "ll_nid"), Some(first.id.to_string().as_str()));
    assert_eq!(
        data(first, "ll_msgid"),
        Some(candidate.msgid.to_string().as_str())
    );
    assert_eq!(data(first, "ll_count"), Some("1"));
    assert_eq!(data(first, "ll_uid"), Some("bob"));
    let second = &calls[1];
    assert_eq!(
        data(second, "ll_msgid"),
        Some(later.msgid.to_string().as_str())
    );
    assert_eq!(second.badge, Some(2), "two unread messages now");
    assert!(second.id > first.id);
    notifier.close().await;
}

#[tokio::test]
async fn a_message_acked_within_the_grace_is_not_notified() {
    let env = Env::new();
    let apns = Recording::new("apns");
    let mut registry = Registry::default();
    let notifier = env.start_with(config(), &[Arc::clone(&apns)], &mut registry);
    notifier
        .register(APP, "bob", "phone", ios(), token("apns", "t"))
        .await
        .expect("register");
    let acked = env.message("alice", "bob", "seen", 1).await;
    // The device reconnected and acked before the grace ran out.
    env.store
        .ack(&UserKey::new(APP, "bob"), "phone", &[acked.msgid])
        .await
        .expect("ack");
    notifier.offer(acked);
    eventually("row skipped as acked", async || {
        longlink_metrics::encode_text(&registry)
            .expect("encode")
            .contains("longlink_notifications_skipped_total{reason=\"acked\"} 1")
    })
    .await;
    assert!(drained(&notifier).await);
    assert!(
        apns.calls().is_empty(),
        "an acked message is never notified"
    );
    notifier.close().await;
}

#[tokio::test]
async fn a_burst_collapses_into_one_notification_with_its_count() {
    let env = Env::new();
    let apns = Recording::new("apns");
    let notifier = env.start(config(), &[Arc::clone(&apns)]);
    notifier
        .register(APP, "bob", "phone", ios(), token("apns", "t"))
        .await
        .expect("register");
    let a = env.message("alice", "bob", "one", 1).await;
    let b = env.message("carol", "bob", "two", 1).await;
    let c = env.message("alice", "bob", "three", 1).await;
    // Back to back on this thread: one ingest batch, one due time.
    notifier.offer(a);
    notifier.offer(b);
    notifier.offer(c.clone());
    eventually("a notification", async || !apns.calls().is_empty()).await;
    eventually("outbox drained", || drained(&notifier)).await;
    let calls = apns.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].body, "3 new messages");
    assert_eq!(data(&calls[0], "ll_count"), Some("3"));
    assert_eq!(
        data(&calls[0], "ll_msgid"),
        Some(c.msgid.to_string().as_str())
    );
    assert_eq!(calls[0].collapse_id, format!("ll-{APP}-bob"), "two senders");
    assert_eq!(calls[0].badge, Some(3));
    notifier.close().await;
}

#[tokio::test]
async fn collapse_spacing_joins_what_arrives_meanwhile() {
    let env = Env::new();
    let apns = Recording::new("apns");
    let notifier = env.start(
        NotifyConfig {
            collapse_secs: 1,
            ..config()
        },
        &[Arc::clone(&apns)],
    );
    notifier
        .register(APP, "bob", "phone", ios(), token("apns", "t"))
        .await
        .expect("register");
    let first = env.message("alice", "bob", "one", 1).await;
    notifier.offer(first);
    eventually("first notification", async || apns.calls().len() == 1).await;
    let b = env.message("alice", "bob", "two", 1).await;
    notifier.offer(b);
    let c = env.message("alice", "bob", "three", 1).await;
    notifier.offer(c);
    eventually("second notification", async || apns.calls().len() >= 2).await;
    eventually("outbox drained", || drained(&notifier)).await;
    let calls = apns.calls();
    // The two later messages waited out the spacing together (or, on a slow machine, the
    // third arrived after the second was sent: then a third notification, never more).
    assert!(calls.len() <= 3, "{calls:?}");
    if calls.len() == 2 {
        assert_eq!(data(&calls[1], "ll_count"), Some("2"));
    }
    notifier.close().await;
}

#[tokio::test]
async fn rules_filter_msgtypes_and_privacy_hides_content() {
    let env = Env::new();
    let apns = Recording::new("apns");
    let notifier = env.start(
        NotifyConfig {
            rules: vec![RuleConfig {
                appcode: APP,
                msgtypes: vec![1],
                privacy: true,
                badge: false,
                ttl_secs: 60,
                high_priority: false,
                ..RuleConfig::default()
            }],
            ..config()
        },
        &[Arc::clone(&apns)],
    );
    notifier
        .register(APP, "bob", "phone", ios(), token("apns", "t"))
        .await
        .expect("register");
    let silent = env.message("alice", "bob", "typing-ish", 2).await;
    notifier.offer(silent);
    assert_eq!(
        notifier.outbox_pending().await.expect("pending"),
        0,
        "msgtype 2 does not notify"
    );
    let secret = env.message("alice", "bob", "the secret plan", 1).await;
    notifier.offer(secret.clone());
    eventually("notification", async || apns.calls().len() == 1).await;
    eventually("outbox drained", || drained(&notifier)).await;
    let call = &apns.calls()[0];
    assert_eq!(call.title, "New message");
    assert_eq!(call.body, "You have a new message");
    assert!(!call.title.contains("alice") && !call.body.contains("secret"));
    assert!(call.data.iter().all(|(_, v)| !v.contains("secret")));
    assert_eq!(call.badge, None);
    assert_eq!(call.ttl, Duration::from_secs(60));
    assert!(!call.high_priority);
    assert_eq!(call.collapse_id, format!("ll-{APP}-bob"));
    assert_eq!(
        data(call, "ll_msgid"),
        Some(secret.msgid.to_string().as_str())
    );
    notifier.close().await;
}

#[tokio::test]
async fn a_failing_provider_fails_over_to_the_next_with_the_same_id() {
    let env = Env::new();
    let bad = Recording::new("bad");
    let good = Recording::new("good");
    bad.fail_always(Some(SendError::Rejected("bad topic".to_owned())));
    let notifier = env.start(config(), &[Arc::clone(&bad), Arc::clone(&good)]);
    // Eight devices of eight classes: without evidence each ranks the two providers at
    // random, so some notifications try "bad" first.
    for i in 0..8 {
        let class = DeviceClass {
            platform: "android".to_owned(),
            vendor: format!("v{i}"),
            app_version: String::new(),
        };
        notifier
            .put_device(
                APP,
                "bob",
                &format!("d{i}"),
                class,
                vec![
                    token("bad", &format!("b{i}")),
                    token("good", &format!("g{i}")),
                ],
            )
            .await
            .expect("put");
    }
    let msg = env.message("alice", "bob", "hi", 1).await;
    notifier.offer(msg);
    eventually("every device notified", async || good.calls().len() == 8).await;
    eventually("outbox drained", || drained(&notifier)).await;
    let bad_calls = bad.calls();
    let good_calls = good.calls();
    assert!(
        !bad_calls.is_empty(),
        "some notification tried the bad provider first"
    );
    for call in &bad_calls {
        let retried = good_calls
            .iter()
            .find(|g| g.id == call.id)
            .expect("the same notification id went to the next provider");
        assert_eq!(retried.body, call.body);
        assert_eq!(
            retried.token.trim_start_matches('g'),
            call.token.trim_start_matches('b')
        );
    }
    let stats = notifier.provider_stats().await;
    let bad_stats = stats.iter().find(|s| s.provider == "bad").expect("bad");
    let rejected: u64 = bad_stats
        .classes
        .iter()
        .flat_map(|c| c.errors.iter())
        .filter(|(kind, _)| kind == "rejected")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(rejected, bad_calls.len() as u64);
    notifier.close().await;
}

#[tokio::test]
async fn the_breaker_opens_after_repeated_failures_and_recovers() {
    let env = Env::new();
    let apns = Recording::new("apns");
    let notifier = env.start(
        NotifyConfig {
            breaker_failures: 3,
            breaker_open_secs: 1,
            max_retries: 2,
            ..config()
        },
        &[Arc::clone(&apns)],
    );
    notifier
        .register(APP, "bob", "phone", ios(), token("apns", "t"))
        .await
        .expect("register");
    apns.script((0..3).map(|_| Err(SendError::Unavailable("503".to_owned()))));
    let breaker = |notifier: Arc<Notifier>| async move {
        notifier
            .provider_stats()
            .await
            .into_iter()
            .find(|s| s.provider == "apns")
            .map(|s| s.breaker)
            .unwrap_or_default()
    };
    let errors = |notifier: Arc<Notifier>, kind: &'static str| async move {
        notifier
            .provider_stats()
            .await
            .into_iter()
            .flat_map(|s| s.classes)
            .flat_map(|c| c.errors)
            .filter(|(k, _)| k == kind)
            .map(|(_, n)| n)
            .sum::<u64>()
    };

    notifier.offer(env.message("alice", "bob", "one", 1).await);
    eventually("three attempts", async || apns.calls().len() == 3).await;
    eventually("breaker open", || {
        let n = Arc::clone(&notifier);
        async move { breaker(n).await == "open" }
    })
    .await;

    // While open, the provider is not asked.
    notifier.offer(env.message("alice", "bob", "two", 1).await);
    eventually("refused by the open breaker", || {
        let n = Arc::clone(&notifier);
        async move { errors(n, "breaker_open").await >= 1 }
    })
    .await;
    assert_eq!(apns.calls().len(), 3);

    // After the open period one trial goes through and closes it.
    eventually("breaker half-open", || {
        let n = Arc::clone(&notifier);
        async move { breaker(n).await == "half_open" }
    })
    .await;
    notifier.offer(env.message("alice", "bob", "three", 1).await);
    eventually("trial sent", async || apns.calls().len() == 4).await;
    eventually("breaker closed", || {
        let n = Arc::clone(&notifier);
        async move { breaker(n).await == "closed" }
    })
    .await;
    assert_eq!(errors(Arc::clone(&notifier), "unavailable").await, 3);
    notifier.close().await;
}

#[tokio::test]
async fn a_dead_token_is_removed() {
    let env = Env::new();
    let apns = Recording::new("apns");
    let notifier = env.start(config(), &[Arc::clone(&apns)]);
    notifier
        .register(APP, "bob", "phone", ios(), token("apns", "gone"))
        .await
        .expect("register");
    apns.script([Err(SendError::DeadToken("Unregistered".to_owned()))]);
    notifier.offer(env.message("alice", "bob", "hi", 1).await);
    eventually("token removed", async || {
        notifier
            .devices(APP, "bob", None)
            .await
            .expect("devices")
            .is_empty()
    })
    .await;
    assert_eq!(apns.calls().len(), 1, "a dead token is not retried");
    assert!(!notifier.wants(APP, "bob"));
    notifier.close().await;
}

#[tokio::test]
async fn after_a_restart_pending_rows_are_sent_once_and_sent_ones_never_again() {
    let env = Env::new();
    let slow = NotifyConfig {
        grace_ms: 2500,
        ..config()
    };
    let before = Recording::new("apns");
    let notifier = env.start(slow.clone(), &[Arc::clone(&before)]);
    notifier
        .register(APP, "bob", "phone", ios(), token("apns", "t"))
        .await
        .expect("register");
    let sent = env.message("alice", "bob", "before", 1).await;
    notifier.offer(sent.clone());
    eventually("first notification", async || before.calls().len() == 1).await;
    eventually("outbox drained", || drained(&notifier)).await;
    let pending = env.message("alice", "bob", "during", 1).await;
    notifier.offer(pending.clone());
    eventually("row queued", async || {
        notifier.outbox_pending().await.expect("pending") == 1
    })
    .await;
    notifier.close().await;
    assert_eq!(before.calls().len(), 1, "closed before the second was due");

    let after = Recording::new("apns");
    let reopened = env.start(slow, &[Arc::clone(&after)]);
    assert!(
        reopened.wants(APP, "bob"),
        "registrations survive the restart"
    );
    eventually("pending row sent", async || after.calls().len() == 1).await;
    eventually("outbox drained", || drained(&reopened)).await;
    let calls = after.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        data(&calls[0], "ll_msgid"),
        Some(pending.msgid.to_string().as_str())
    );
    assert!(
        calls[0].id > before.calls()[0].id,
        "ids continue above the last run's"
    );
    // An offer repeated after the restart (a redelivery) changes nothing.
    reopened.offer(sent);
    reopened.offer(pending);
    assert_eq!(reopened.outbox_pending().await.expect("pending"), 0);
    reopened.close().await;
    assert_eq!(after.calls().len(), 1);
}

#[tokio::test]
async fn receipts_update_the_statistics_and_metrics() {
    let env = Env::new();
    let apns = Recording::new("apns");
    let mut registry = Registry::default();
    let notifier = env.start_with(config(), &[Arc::clone(&apns)], &mut registry);
    notifier
        .register(APP, "bob", "phone", ios(), token("apns", "t"))
        .await
        .expect("register");
    notifier.offer(env.message("alice", "bob", "hi", 1).await);
    eventually("notification", async || apns.calls().len() == 1).await;
    let id = apns.calls()[0].id;
    eventually("accepted", async || {
        notifier
            .provider_stats()
            .await
            .iter()
            .flat_map(|s| s.classes.iter())
            .any(|c| c.accepted == 1)
    })
    .await;
    assert_eq!(
        notifier
            .receipts(APP, "bob", "tablet", &[id])
            .await
            .expect("receipts"),
        0,
        "another device's receipt changes nothing"
    );
    assert_eq!(
        notifier
            .receipts(APP, "bob", "phone", &[id, 999])
            .await
            .expect("receipts"),
        1
    );
    assert_eq!(
        notifier
            .receipts(APP, "bob", "phone", &[id])
            .await
            .expect("receipts"),
        0,
        "receipted once"
    );
    let stats = notifier.provider_stats().await;
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].provider, "apns");
    assert_eq!(stats[0].kind, "http");
    assert_eq!(stats[0].breaker, "closed");
    let class = &stats[0].classes[0];
    assert_eq!(class.class, "ios/apple/1.0");
    assert_eq!((class.sent, class.accepted, class.receipts), (1, 1, 1));
    assert!((class.receipt_rate - 1.0).abs() < 1e-9);
    assert!(class.estimate > 0.5, "a receipt raises the estimate");
    assert!(class.errors.is_empty());
    let text = longlink_metrics::encode_text(&registry).expect("encode");
    assert!(
        text.contains("longlink_notifications_sent_total{provider=\"apns\"} 1"),
        "{text}"
    );
    assert!(text.contains("longlink_notifications_receipted_total{provider=\"apns\"} 1"));
    assert!(text.contains("longlink_notify_outbox_pending"));
    notifier.close().await;
}

#[tokio::test]
async fn registration_validates_moves_tokens_and_removes() {
    let env = Env::new();
    let apns = Recording::new("apns");
    let notifier = env.start(config(), &[Arc::clone(&apns)]);
    assert!(
        notifier
            .register(APP, "bob", "phone", ios(), token("fcm", "t"))
            .await
            .is_err(),
        "fcm is not configured"
    );
    assert!(
        notifier
            .register(APP, "", "phone", ios(), token("apns", "t"))
            .await
            .is_err()
    );
    let record = notifier
        .register(APP, "bob", "phone", ios(), token("apns", "shared"))
        .await
        .expect("register");
    assert_eq!(record.tokens, vec![token("apns", "shared")]);
    assert_eq!(record.class, ios());
    // The phone changed hands: the token now belongs to carol's device only.
    notifier
        .register(APP, "carol", "phone2", ios(), token("apns", "shared"))
        .await
        .expect("register");
    assert!(!notifier.wants(APP, "bob"));
    assert!(notifier.wants(APP, "carol"));
    assert!(
        notifier
            .devices(APP, "bob", None)
            .await
            .expect("devices")
            .is_empty()
    );
    assert_eq!(
        notifier
            .remove(APP, "carol", "phone2", Some("apns"))
            .await
            .expect("remove"),
        1
    );
    assert!(!notifier.wants(APP, "carol"));
    assert_eq!(
        notifier
            .remove(APP, "carol", "phone2", None)
            .await
            .expect("remove"),
        0
    );
    notifier.close().await;
}
