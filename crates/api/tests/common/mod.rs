//! A real `longlink_api::serve` on 127.0.0.1:0 (HTTP and gRPC) over real backends:
//! `MemoryPresence`, `SqliteQueue` in a temp dir, and [`RecordingPush`], a small
//! `PushService` that records what it is asked and answers canned statistics.
//!
//! Keys: `k129` covers appcode 129, `k130` covers 130, `kall` covers 129, 130 and 131 (131
//! pushes are refused as overloaded). Routes: (129, 5) → `orders`, (129, 1) and (130, 2) →
//! `mixed`, everything else → `c2s.<appcode>.<msgtype>`. The node serves 129–131, so `kall` is
//! the operator key. Gates: [`FakeGates`], `gate-1` and `gate-2` until a test changes them.
//! Push tokens: [`MemoryNotifications`] (providers `apns`, `fcm`, `vendor`; appcode 131's
//! registry is down).

#![allow(dead_code)] // each test binary uses a part of the fixture

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use longlink_api::{
    ApiContext, ApiKeys, ApiLimits, DrainStart, GateDirectory, GateStatus, Stats, StatsSource,
};
use longlink_bus::{
    Bus, BusError, BusMessage, Leased, QueueOptions, Routes, SqliteQueue, TopicQueue, TopicStats,
    Unrouted,
};
use longlink_presence::{MemoryPresence, Presence, SessionEntry};
use longlink_rpc::notify::{
    DeviceClass, DeviceRecord, Notifications, NotifyCandidate, NotifyError, ProviderClassStats,
    ProviderStats, PushToken,
};
use longlink_rpc::push::{
    DeliveryCounters, PushAccepted, PushRefusal, PushRequest, PushService, PushStats, PushTargets,
    RecipientOutcome, RecipientState,
};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for something that should happen well before.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);
/// The body limit of the test server (small, so the oversized-body test stays quick).
pub(crate) const MAX_BODY: usize = 256 * 1024;
/// A msgid above 2^53, to check it travels as a string.
pub(crate) const BIG_MSGID: u64 = 1_849_123_456_789_012_345;
/// First push id the recorder hands out.
pub(crate) const FIRST_PUSH_ID: u64 = 1_763_900_000_123;

/// A `PushService` that records requests and reports every push as finished: the first uid
/// acked, the others stored offline.
#[derive(Default)]
pub(crate) struct RecordingPush {
    requests: Mutex<Vec<(u64, PushRequest)>>,
    next: AtomicU64,
}

impl RecordingPush {
    pub(crate) fn requests(&self) -> Vec<PushRequest> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    fn targets(request: &PushRequest) -> Vec<String> {
        match &request.targets {
            PushTargets::Users(uids) => uids
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            PushTargets::AllOnline => vec![],
        }
    }
}

#[async_trait]
impl PushService for RecordingPush {
    async fn push(&self, request: PushRequest) -> Result<PushAccepted, PushRefusal> {
        if request.appcode == 131 {
            return Err(PushRefusal::Overloaded(
                "too many pushes in progress".into(),
            ));
        }
        let push_id = FIRST_PUSH_ID + self.next.fetch_add(1, Ordering::Relaxed);
        let targets = Self::targets(&request).len() as u64;
        self.requests.lock().unwrap().push((push_id, request));
        Ok(PushAccepted { push_id, targets })
    }

    async fn push_stats(&self, push_id: u64) -> Option<PushStats> {
        let requests = self.requests.lock().unwrap();
        let (_, request) = requests.iter().find(|(id, _)| *id == push_id)?;
        let uids = Self::targets(request);
        let targets = uids.len() as u64;
        let recipients: Vec<RecipientOutcome> = uids
            .iter()
            .enumerate()
            .map(|(i, uid)| RecipientOutcome {
                uid: uid.clone(),
                state: if i == 0 {
                    RecipientState::Acked
                } else {
                    RecipientState::StoredOffline
                },
                sessions: u32::from(i == 0),
            })
            .collect();
        Some(PushStats {
            push_id,
            appcode: request.appcode,
            msgtype: request.msgtype,
            persist: request.persist,
            ttl_secs: request.ttl_secs,
            msgid: BIG_MSGID,
            created_ms: 1_763_900_000_000,
            finished_ms: 1_763_900_000_004,
            targets,
            online: targets.min(1),
            written: targets.min(1),
            acked: targets.min(1),
            stored_offline: targets.saturating_sub(1),
            expired: 0,
            failed: 0,
            stale_sessions: 0,
            recipients,
        })
    }

    async fn delivery_counters(&self, appcodes: &[u32]) -> Vec<DeliveryCounters> {
        let mut out: Vec<DeliveryCounters> = Vec::new();
        for (_, request) in self.requests.lock().unwrap().iter() {
            if !appcodes.is_empty() && !appcodes.contains(&request.appcode) {
                continue;
            }
            let targets = Self::targets(request).len() as u64;
            let index = match out
                .iter()
                .position(|c| (c.appcode, c.msgtype) == (request.appcode, request.msgtype))
            {
                Some(index) => index,
                None => {
                    out.push(DeliveryCounters {
                        appcode: request.appcode,
                        msgtype: request.msgtype,
                        ..DeliveryCounters::default()
                    });
                    out.len() - 1
                }
            };
            let c = &mut out[index];
            c.pushes += 1;
            c.targets += targets;
            c.acked += targets.min(1);
            c.stored_offline += targets.saturating_sub(1);
        }
        out
    }
}

/// The `SqliteQueue` with a count of fetches in progress, so a test can wait until a
/// long-poll or stream is really waiting inside the queue (no guessed sleeps).
pub(crate) struct WatchedQueue {
    inner: Arc<SqliteQueue>,
    fetching: AtomicUsize,
}

impl WatchedQueue {
    /// Waits (bounded) until at least `n` fetches are waiting.
    pub(crate) async fn wait_for_fetches(&self, n: usize) {
        tokio::time::timeout(DEADLINE, async {
            while self.fetching.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("fetches in progress");
    }
}

/// Decrements the count when the fetch ends or is cancelled.
struct Fetching<'a>(&'a AtomicUsize);

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl TopicQueue for WatchedQueue {
    async fn fetch(
        &self,
        topic: &str,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Leased>, BusError> {
        self.fetching.fetch_add(1, Ordering::SeqCst);
        let _guard = Fetching(&self.fetching);
        self.inner.fetch(topic, max, wait, lease).await
    }

    async fn ack(&self, topic: &str, ids: &[u64]) -> Result<u64, BusError> {
        self.inner.ack(topic, ids).await
    }

    async fn nack(&self, topic: &str, ids: &[u64], retry_after: Duration) -> Result<u64, BusError> {
        self.inner.nack(topic, ids, retry_after).await
    }

    async fn dead_letters(
        &self,
        topic: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Leased>, BusError> {
        self.inner.dead_letters(topic, after, limit).await
    }

    async fn replay(&self, topic: &str, ids: &[u64]) -> Result<u64, BusError> {
        self.inner.replay(topic, ids).await
    }

    async fn topics(&self) -> Result<Vec<TopicStats>, BusError> {
        self.inner.topics().await
    }
}

struct FixedStats;

impl StatsSource for FixedStats {
    fn stats(&self) -> Stats {
        Stats {
            connections: 3,
            sessions: 2,
        }
    }

    fn summary(&self) -> longlink_api::model::SummaryBody {
        longlink_api::model::SummaryBody {
            connections: 3,
            sessions: 2,
            ..Default::default()
        }
    }
}

/// A [`GateDirectory`] whose gates a test sets; a drain only flips `draining` (and is
/// counted), as a real one would at its start.
pub(crate) struct FakeGates {
    pub(crate) gates: Mutex<Vec<GateStatus>>,
    pub(crate) drains_started: AtomicUsize,
}

impl FakeGates {
    fn two() -> Self {
        let gate = |id: &str, port: u16, connections: u64| GateStatus {
            id: id.to_owned(),
            addr: format!("127.0.0.1:{port}"),
            connections,
            held: 0,
            serving: true,
            draining: false,
        };
        Self {
            gates: Mutex::new(vec![gate("gate-1", 7700, 3), gate("gate-2", 7701, 5)]),
            drains_started: AtomicUsize::new(0),
        }
    }

    /// Replaces the gates.
    pub(crate) fn set(&self, gates: Vec<GateStatus>) {
        *self.gates.lock().unwrap() = gates;
    }
}

impl GateDirectory for FakeGates {
    fn gates(&self) -> Vec<GateStatus> {
        self.gates.lock().unwrap().clone()
    }

    fn start_drain(&self, gate_id: &str) -> DrainStart {
        let mut gates = self.gates.lock().unwrap();
        match gates.iter_mut().find(|g| g.id == gate_id) {
            None => DrainStart::UnknownGate,
            Some(g) if g.draining => DrainStart::AlreadyDraining,
            Some(g) => {
                g.draining = true;
                self.drains_started.fetch_add(1, Ordering::SeqCst);
                DrainStart::Started
            }
        }
    }
}

/// A `Notifications` keeping devices in memory, as the API's collaborator: it knows the
/// providers `apns`, `fcm` and `vendor` (others are an invalid argument, as the real notifier
/// answers for an unconfigured provider), its registry for appcode 131 is "down"
/// (unavailable), and its statistics are canned.
#[derive(Default)]
pub(crate) struct MemoryNotifications {
    devices: Mutex<BTreeMap<(u32, String, String), DeviceRecord>>,
    clock: AtomicU64,
}

impl MemoryNotifications {
    pub(crate) const PROVIDERS: [&'static str; 3] = ["apns", "fcm", "vendor"];

    fn check(appcode: u32, tokens: &[PushToken]) -> Result<(), NotifyError> {
        if appcode == 131 {
            return Err(NotifyError::Unavailable("registry is down".into()));
        }
        match tokens
            .iter()
            .find(|t| !Self::PROVIDERS.contains(&t.provider.as_str()))
        {
            Some(t) => Err(NotifyError::InvalidArgument(format!(
                "push provider {:?} is not configured",
                t.provider
            ))),
            None => Ok(()),
        }
    }

    fn now(&self) -> u64 {
        1_763_900_000_000 + self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// The stored record of a device, as a test checks it directly.
    pub(crate) fn record(&self, appcode: u32, uid: &str, device: &str) -> Option<DeviceRecord> {
        self.devices
            .lock()
            .unwrap()
            .get(&(appcode, uid.to_owned(), device.to_owned()))
            .cloned()
    }
}

#[async_trait]
impl Notifications for MemoryNotifications {
    fn wants(&self, appcode: u32, uid: &str) -> bool {
        self.devices
            .lock()
            .unwrap()
            .keys()
            .any(|(a, u, _)| *a == appcode && u == uid)
    }

    fn offer(&self, _candidate: NotifyCandidate) {}

    async fn register(
        &self,
        appcode: u32,
        uid: &str,
        device: &str,
        class: DeviceClass,
        token: PushToken,
    ) -> Result<DeviceRecord, NotifyError> {
        Self::check(appcode, std::slice::from_ref(&token))?;
        let updated_ms = self.now();
        let mut devices = self.devices.lock().unwrap();
        let record = devices
            .entry((appcode, uid.to_owned(), device.to_owned()))
            .or_insert_with(|| DeviceRecord {
                appcode,
                uid: uid.to_owned(),
                device: device.to_owned(),
                class: DeviceClass::default(),
                tokens: Vec::new(),
                updated_ms,
            });
        record.class = class;
        record.updated_ms = updated_ms;
        record.tokens.retain(|t| t.provider != token.provider);
        record.tokens.push(token);
        Ok(record.clone())
    }

    async fn put_device(
        &self,
        appcode: u32,
        uid: &str,
        device: &str,
        class: DeviceClass,
        tokens: Vec<PushToken>,
    ) -> Result<DeviceRecord, NotifyError> {
        Self::check(appcode, &tokens)?;
        let record = DeviceRecord {
            appcode,
            uid: uid.to_owned(),
            device: device.to_owned(),
            class,
            tokens,
            updated_ms: self.now(),
        };
        let key = (appcode, uid.to_owned(), device.to_owned());
        let mut devices = self.devices.lock().unwrap();
        if record.tokens.is_empty() {
            devices.remove(&key);
        } else {
            devices.insert(key, record.clone());
        }
        Ok(record)
    }

    async fn devices(
        &self,
        appcode: u32,
        uid: &str,
        device: Option<&str>,
    ) -> Result<Vec<DeviceRecord>, NotifyError> {
        Self::check(appcode, &[])?;
        Ok(self
            .devices
            .lock()
            .unwrap()
            .values()
            .filter(|r| r.appcode == appcode && r.uid == uid)
            .filter(|r| device.is_none_or(|d| r.device == d))
            .cloned()
            .collect())
    }

    async fn remove(
        &self,
        appcode: u32,
        uid: &str,
        device: &str,
        provider: Option<&str>,
    ) -> Result<u32, NotifyError> {
        Self::check(appcode, &[])?;
        let key = (appcode, uid.to_owned(), device.to_owned());
        let mut devices = self.devices.lock().unwrap();
        let Some(record) = devices.get_mut(&key) else {
            return Ok(0);
        };
        let before = record.tokens.len();
        record
            .tokens
            .retain(|t| provider.is_some_and(|p| t.provider != p));
        let removed = (before - record.tokens.len()) as u32;
        if record.tokens.is_empty() {
            devices.remove(&key);
        }
        Ok(removed)
    }

    async fn receipts(
        &self,
        _appcode: u32,
        _uid: &str,
        _device: &str,
        _ids: &[u64],
    ) -> Result<u32, NotifyError> {
        Ok(0)
    }

    async fn provider_stats(&self) -> Vec<ProviderStats> {
        // Out of order on purpose: the API answers by name and class.
        vec![
            ProviderStats {
                provider: "vendor".into(),
                kind: "http".into(),
                breaker: "open".into(),
                classes: vec![ProviderClassStats {
                    provider: "vendor".into(),
                    class: "android/xiaomi/*".into(),
                    sent: 10,
                    accepted: 4,
                    receipts: 2,
                    receipt_rate: 0.2,
                    p50_ms: 900,
                    p99_ms: 4000,
                    errors: vec![("rate_limited".into(), 1), ("unavailable".into(), 5)],
                    estimate: 0.25,
                }],
            },
            ProviderStats {
                provider: "apns".into(),
                kind: "apns".into(),
                breaker: "closed".into(),
                classes: vec![
                    ProviderClassStats {
                        provider: "apns".into(),
                        class: "ios/apple/2.3".into(),
                        sent: 100,
                        accepted: 99,
                        receipts: 95,
                        receipt_rate: 0.95,
                        p50_ms: 120,
                        p99_ms: 800,
                        errors: vec![("dead_token".into(), 1)],
                        estimate: 0.94,
                    },
                    ProviderClassStats {
                        provider: "apns".into(),
                        class: "ios/apple/*".into(),
                        ..ProviderClassStats::default()
                    },
                ],
            },
        ]
    }
}

/// A running API.
pub(crate) struct Fixture {
    pub(crate) http: SocketAddr,
    pub(crate) grpc: SocketAddr,
    pub(crate) push: Arc<RecordingPush>,
    pub(crate) presence: Arc<MemoryPresence>,
    pub(crate) queue: Arc<SqliteQueue>,
    pub(crate) watched: Arc<WatchedQueue>,
    pub(crate) gates: Arc<FakeGates>,
    pub(crate) notifications: Arc<MemoryNotifications>,
    pub(crate) client: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

impl Fixture {
    /// Starts the API; messages are dead-lettered after `max_attempts` deliveries.
    pub(crate) async fn start(max_attempts: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(
            SqliteQueue::open(
                &dir.path().join("bus.sqlite3"),
                QueueOptions {
                    max_attempts,
                    ..QueueOptions::default()
                },
            )
            .unwrap(),
        );
        let watched = Arc::new(WatchedQueue {
            inner: queue.clone(),
            fetching: AtomicUsize::new(0),
        });
        let push = Arc::new(RecordingPush::default());
        let presence = Arc::new(MemoryPresence::new());
        let routes = Routes::new(
            [
                (129, 5, "orders".to_owned()),
                (129, 1, "mixed".to_owned()),
                (130, 2, "mixed".to_owned()),
            ],
            Unrouted::PerType,
            [129, 130, 131],
        )
        .unwrap();
        let keys = ApiKeys::new([
            ("orders", "k129", vec![129]),
            ("drivers", "k130", vec![130]),
            ("ops", "kall", vec![129, 130, 131]),
        ])
        .unwrap()
        .with_node_appcodes([129, 130, 131]);
        let gates = Arc::new(FakeGates::two());
        let notifications = Arc::new(MemoryNotifications::default());
        let ctx = ApiContext {
            push: push.clone(),
            presence: presence.clone(),
            queue: watched.clone(),
            routes: Arc::new(routes),
            keys: Arc::new(keys),
            stats: Arc::new(FixedStats),
            ledger: Arc::new(longlink_rpc::trace::NoLedger),
            metrics: Arc::new(longlink_metrics::Registry::default()),
            gates: gates.clone(),
            bans: Arc::new(longlink_guard::Guard::in_memory(Default::default())),
            tokens: Arc::new(longlink_api::NoRevocations),
            notifications: notifications.clone(),
            limits: ApiLimits {
                max_body_bytes: MAX_BODY,
                ..ApiLimits::default()
            },
            chat: Default::default(),
        };
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (http, grpc) = (
            http_listener.local_addr().unwrap(),
            grpc_listener.local_addr().unwrap(),
        );
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(longlink_api::serve(
            http_listener,
            Some(grpc_listener),
            ctx,
            shutdown.clone(),
        ));
        Self {
            http,
            grpc,
            push,
            presence,
            queue,
            watched,
            gates,
            notifications,
            client: reqwest::Client::new(),
            shutdown,
            server: Some(server),
            _dir: dir,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `GET path` with `key` as a bearer token.
    pub(crate) fn get(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(key)
    }

    /// `POST path` with a JSON body and `key` as a bearer token.
    pub(crate) fn post(
        &self,
        path: &str,
        key: &str,
        body: serde_json::Value,
    ) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(path))
            .bearer_auth(key)
            .json(&body)
    }

    /// Publishes a c2s message of `(appcode, msgtype)` to `topic`.
    pub(crate) async fn publish(&self, topic: &str, appcode: u32, msgtype: u32, body: &str) {
        self.queue
            .publish(BusMessage {
                topic: topic.to_owned(),
                appcode,
                uid: "driver-7".to_owned(),
                device_id: "phone".to_owned(),
                msgtype,
                client_msg_id: format!("c-{body}"),
                payload: Bytes::from(body.to_owned()),
                log_id: 0x075b_cd15,
                received_ms: 1_763_900_000_000,
            })
            .await
            .unwrap();
    }

    /// Registers an online session on `gate-1`.
    pub(crate) async fn login(&self, appcode: u32, uid: &str, device: &str, session_id: u64) {
        self.login_on("gate-1", appcode, uid, device, session_id)
            .await;
    }

    /// Registers an online session on `gate`.
    pub(crate) async fn login_on(
        &self,
        gate: &str,
        appcode: u32,
        uid: &str,
        device: &str,
        session_id: u64,
    ) {
        self.presence
            .register(
                SessionEntry {
                    appcode,
                    uid: uid.to_owned(),
                    device_class: String::new(),
                    epoch: 0,
                    device_id: device.to_owned(),
                    gate_id: gate.to_owned(),
                    session_id,
                    since_ms: 1_763_900_000_000,
                },
                &longlink_presence::LoginRule::default(),
            )
            .await
            .unwrap();
    }

    /// Cancels the shutdown token and waits (bounded) for `serve` to return.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        let server = self.server.take().unwrap();
        tokio::time::timeout(DEADLINE, server)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
        self.queue.close().await.unwrap();
    }
}

/// The `(status, JSON body)` of a response.
pub(crate) async fn json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text:?} (status {status})"));
    (status, value)
}

/// Asserts `response` is the spec's error body with `status` and `code`.
pub(crate) async fn assert_error(response: reqwest::Response, status: u16, code: &str) {
    let (got_status, body) = json(response).await;
    assert_eq!(got_status, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty() && !m.contains('\n')),
        "{body}"
    );
}
