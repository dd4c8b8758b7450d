//! s2c push (seed 003 "云到端") and its delivery statistics ("消息到达率统计").
//!
//! [`PushEngine::push`] validates a request, resolves its targets (a broadcast takes a snapshot
//! of the appcode's online users from presence), answers with a push id and queues it on its
//! appcode's FIFO. One worker per appcode takes the queued pushes, stores them together (one
//! group commit), then fans them out one after the other — so two pushes to the same user
//! arrive in the order they were accepted:
//!
//! 1. Store: a persisted push is committed first (one message, one inbox row per target), so a
//!    target that is offline — or whose session dies before it reads the frame — pulls it at its
//!    next login. An online-only push is stored as a record without inbox rows, only to get a
//!    msgid from the same generator (clients dedup by msgid).
//! 2. Deliver in waves of [`WAVE`] targets, yielding between waves so the gate's other work
//!    (logins, c2c) keeps going during a broadcast to every user. Each frame is pushed
//!    *tracked*: the gate reports when it reached the socket ("written").
//! 3. Account: every recipient has a set of flags (online, queued, written, acked, stored,
//!    expired, failed); a counter moves only when its flag is first set, so the statistics
//!    count users exactly once however many sessions or acks they have.
//!
//! A session presence lists but the gate no longer holds (the "unreachable" path of seed 004)
//! is removed from presence and counted in `stale_sessions`; its user follows the offline
//! path. Online-only pushes with a TTL wait in memory for targets that log in before the
//! deadline ([`PushEngine::session_ready`]), then count as expired.
//!
//! Statistics live in memory on the node that ran the push: the most recent [`MAX_PUSHES`]
//! pushes (and at most [`MAX_RETAINED_RECIPIENTS`] recipients over all of them) are kept.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use longlink_presence::Presence;
use longlink_proto::{Cmd, Frame, wire};
use longlink_rpc::push::{MAX_DETAILED_RECIPIENTS, MAX_PUSH_TARGETS};
use longlink_rpc::{
    DeliveryCounters, GatePush, PushAccepted, PushError, PushRefusal, PushRequest, PushStats,
    PushTargets, RecipientOutcome, RecipientState, SessionInfo, WriteReceipt,
};
use longlink_store::{MessageStore, NewS2c, UserKey};
use tokio::sync::mpsc;

use crate::Apps;
use crate::auth::MAX_ID_BYTES;
use crate::metrics::LogicMetrics;
use longlink_metrics::prometheus_client::collector::Collector;
use longlink_metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use longlink_metrics::prometheus_client::metrics::counter::ConstCounter;
use longlink_metrics::prometheus_client::metrics::gauge::ConstGauge;
use longlink_rpc::notify::{Notifications, NotifyCandidate};
use longlink_rpc::trace::{Ledger, MessageKind, Stage, Subject, TraceEvent, user_label};

/// Targets handled between two yields of a fan-out.
pub(crate) const WAVE: usize = 1024;
/// Pushes whose statistics are kept.
pub(crate) const MAX_PUSHES: usize = 10_000;
/// Recipients kept over all retained pushes (the oldest pushes are forgotten first).
pub(crate) const MAX_RETAINED_RECIPIENTS: usize = 4_000_000;
/// Pushes of one appcode accepted and not yet fanned out; more are refused as overloaded.
const PUSH_QUEUE: usize = 1024;
/// Queued pushes of one appcode stored together (one group commit) before their fan-outs.
const STORE_BATCH: usize = 64;
/// Longest TTL of an online-only push.
pub(crate) const MAX_TTL_SECS: u32 = 7 * 24 * 3600;

const ONLINE: u8 = 1;
const QUEUED: u8 = 2;
const WRITTEN: u8 = 4;
const ACKED: u8 = 8;
const STORED: u8 = 16;
const EXPIRED: u8 = 32;
const FAILED: u8 = 64;

#[derive(Debug, Default)]
struct Counters {
    pushes: AtomicU64,
    targets: AtomicU64,
    online: AtomicU64,
    written: AtomicU64,
    acked: AtomicU64,
    stored_offline: AtomicU64,
    expired: AtomicU64,
    failed: AtomicU64,
    stale_sessions: AtomicU64,
}

impl Counters {
    fn of_flag(&self, flag: u8) -> Option<&AtomicU64> {
        match flag {
            ONLINE => Some(&self.online),
            WRITTEN => Some(&self.written),
            ACKED => Some(&self.acked),
            STORED => Some(&self.stored_offline),
            EXPIRED => Some(&self.expired),
            FAILED => Some(&self.failed),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Recipient {
    uid: String,
    flags: AtomicU8,
    sessions: AtomicU32,
}

/// One push: what it sends, to whom, and how far each recipient got.
#[derive(Debug)]
pub(crate) struct PushRecord {
    id: u64,
    appcode: u32,
    msgtype: u32,
    content_type: i32,
    content: Bytes,
    from: String,
    persist: bool,
    ttl_secs: u32,
    log_id: u64,
    created_ms: u64,
    msgid: AtomicU64,
    senddate_ms: AtomicU64,
    finished_ms: AtomicU64,
    /// Sorted by uid (binary search on MSG_ACK); a recipient's index is its write tag.
    recipients: Vec<Recipient>,
    counters: Counters,
    totals: Arc<Counters>,
}

impl PushRecord {
    /// Sets `flag` for recipient `index`; counts it (here and in the totals) the first time.
    fn mark(&self, index: usize, flag: u8) {
        let Some(recipient) = self.recipients.get(index) else {
            return;
        };
        let before = recipient.flags.fetch_or(flag, Ordering::AcqRel);
        if before & flag == 0 {
            if let Some(counter) = self.counters.of_flag(flag) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(counter) = self.totals.of_flag(flag) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Recipient `index`'s frame was queued to one of its sessions.
    fn queued_to_session(&self, index: usize) {
        if let Some(recipient) = self.recipients.get(index) {
            recipient.sessions.fetch_add(1, Ordering::Relaxed);
        }
        self.mark(index, ONLINE);
        self.mark(index, QUEUED);
    }

    fn index_of(&self, uid: &str) -> Option<usize> {
        self.recipients
            .binary_search_by(|r| r.uid.as_str().cmp(uid))
            .ok()
    }

    /// The MSG frame for recipient `uid`.
    fn frame(&self, uid: &str) -> Bytes {
        let msg = wire::Msg {
            delivered: false,
            msgid: self.msgid.load(Ordering::Acquire),
            from: Some(wire::UserRef {
                appcode: self.appcode,
                uid: self.from.clone(),
            }),
            to: Some(wire::UserRef {
                appcode: self.appcode,
                uid: uid.to_owned(),
            }),
            msgtype: self.msgtype,
            content_type: self.content_type,
            content: self.content.clone(),
            senddate_ms: self.senddate_ms.load(Ordering::Acquire),
            client_msg_id: String::new(),
            from_device: String::new(),
            log_id: self.log_id,
            kind: wire::MsgKind::S2c as i32,
            prev_msgid: 0,
        };
        Frame::push(Cmd::Msg, self.log_id, &msg).to_bytes()
    }

    fn stats(&self) -> PushStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let recipients = if self.recipients.len() <= MAX_DETAILED_RECIPIENTS {
            self.recipients
                .iter()
                .map(|r| RecipientOutcome {
                    uid: r.uid.clone(),
                    state: state_of(r.flags.load(Ordering::Acquire)),
                    sessions: r.sessions.load(Ordering::Relaxed),
                })
                .collect()
        } else {
            Vec::new()
        };
        PushStats {
            push_id: self.id,
            appcode: self.appcode,
            msgtype: self.msgtype,
            persist: self.persist,
            ttl_secs: self.ttl_secs,
            msgid: self.msgid.load(Ordering::Acquire),
            created_ms: self.created_ms,
            finished_ms: self.finished_ms.load(Ordering::Acquire),
            targets: self.recipients.len() as u64,
            online: load(&self.counters.online),
            written: load(&self.counters.written),
            acked: load(&self.counters.acked),
            stored_offline: load(&self.counters.stored_offline),
            expired: load(&self.counters.expired),
            failed: load(&self.counters.failed),
            stale_sessions: load(&self.counters.stale_sessions),
            recipients,
        }
    }
}

impl WriteReceipt for PushRecord {
    fn written(&self, tag: u64) {
        if let Ok(index) = usize::try_from(tag) {
            self.mark(index, WRITTEN);
        }
    }
}

/// The most advanced state a recipient's flags show.
fn state_of(flags: u8) -> RecipientState {
    if flags & ACKED != 0 {
        RecipientState::Acked
    } else if flags & WRITTEN != 0 {
        RecipientState::Written
    } else if flags & QUEUED != 0 {
        RecipientState::Queued
    } else if flags & STORED != 0 {
        RecipientState::StoredOffline
    } else if flags & EXPIRED != 0 {
        RecipientState::Expired
    } else if flags & FAILED != 0 {
        RecipientState::Failed
    } else {
        RecipientState::Pending
    }
}

#[derive(Debug, Default)]
struct Retained {
    order: VecDeque<u64>,
    by_id: HashMap<u64, Arc<PushRecord>>,
    by_msgid: HashMap<u64, Weak<PushRecord>>,
    recipients: usize,
}

impl Retained {
    /// Drops a push that was never queued.
    fn forget(&mut self, id: u64) {
        if let Some(record) = self.by_id.remove(&id) {
            self.recipients -= record.recipients.len();
            self.order.retain(|&queued| queued != id);
        }
    }

    fn insert(&mut self, record: Arc<PushRecord>) {
        self.recipients += record.recipients.len();
        self.order.push_back(record.id);
        self.by_id.insert(record.id, record);
        while self.order.len() > MAX_PUSHES
            || (self.recipients > MAX_RETAINED_RECIPIENTS && self.order.len() > 1)
        {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.by_id.remove(&oldest) {
                self.recipients -= old.recipients.len();
                self.by_msgid.remove(&old.msgid.load(Ordering::Acquire));
            }
        }
    }
}

/// Most (push, recipient) pairs held for a login at once; beyond, an offline target of an
/// online-only push expires at once (memory stays bounded whatever TTLs callers choose).
pub(crate) const MAX_WAITING: usize = 1_000_000;

/// A push and the index of one of its recipients.
type Held = (Arc<PushRecord>, usize);

/// Online-only pushes waiting for targets to log in, by (appcode, uid).
#[derive(Debug, Default)]
struct Waiting {
    by_user: HashMap<(u32, String), Vec<Held>>,
    len: usize,
}

struct EngineInner {
    apps: Arc<Apps>,
    presence: Arc<dyn Presence>,
    store: Arc<dyn MessageStore>,
    gate: Arc<dyn GatePush>,
    max_content_bytes: usize,
    next_id: AtomicU64,
    /// One FIFO (and one worker task) per appcode: pushes to an appcode reach each user in
    /// the order they were accepted.
    queues: Mutex<HashMap<u32, mpsc::Sender<Arc<PushRecord>>>>,
    retained: Mutex<Retained>,
    totals: Mutex<HashMap<(u32, u32), Arc<Counters>>>,
    waiting: Mutex<Waiting>,
    ledger: Arc<dyn Ledger>,
    metrics: LogicMetrics,
    /// Offline push notifications (issue 12), set once by `Logic::with_notifications`.
    notifications: std::sync::OnceLock<Arc<dyn Notifications>>,
}

/// s2c fan-out and statistics; cheap to clone.
#[derive(Clone)]
pub(crate) struct PushEngine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for PushEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushEngine").finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> PushRefusal {
    PushRefusal::InvalidArgument(message.into())
}

impl PushEngine {
    pub(crate) fn new(
        apps: Arc<Apps>,
        presence: Arc<dyn Presence>,
        store: Arc<dyn MessageStore>,
        gate: Arc<dyn GatePush>,
        max_content_bytes: usize,
        ledger: Arc<dyn Ledger>,
        metrics: LogicMetrics,
    ) -> Self {
        Self {
            inner: Arc::new(EngineInner {
                apps,
                presence,
                store,
                gate,
                max_content_bytes,
                // Unique across restarts of a node unless it made 1,000 pushes per ms, and
                // below 2^53, so JSON clients read it exactly.
                next_id: AtomicU64::new(longlink_proto::unix_ms().saturating_mul(1000)),
                queues: Mutex::new(HashMap::new()),
                retained: Mutex::new(Retained::default()),
                totals: Mutex::new(HashMap::new()),
                waiting: Mutex::new(Waiting::default()),
                ledger,
                metrics,
                notifications: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Persisted pushes offer their recipients' unreached devices to `notifications`.
    pub(crate) fn set_notifications(&self, notifications: Arc<dyn Notifications>) {
        // Set once while logic is assembled; a second call keeps the first.
        let _ = self.inner.notifications.set(notifications);
    }

    /// The notification service if this recipient of a persisted push could be notified.
    fn notifier_for(&self, record: &PushRecord, uid: &str) -> Option<&Arc<dyn Notifications>> {
        let notifications = self.inner.notifications.get()?;
        (record.persist && notifications.wants(record.appcode, uid)).then_some(notifications)
    }

    /// Validates and accepts `request`; the fan-out runs in a spawned task.
    pub(crate) async fn push(&self, request: PushRequest) -> Result<PushAccepted, PushRefusal> {
        let inner = &self.inner;
        if !inner.apps.contains(request.appcode) {
            return Err(PushRefusal::UnknownAppcode(request.appcode));
        }
        if request.content.len() > inner.max_content_bytes {
            return Err(invalid(format!(
                "content is {} bytes, more than {}",
                request.content.len(),
                inner.max_content_bytes
            )));
        }
        if request.from.len() > MAX_ID_BYTES {
            return Err(invalid(format!(
                "from must be at most {MAX_ID_BYTES} bytes"
            )));
        }
        if !request.persist && request.ttl_secs > MAX_TTL_SECS {
            return Err(invalid(format!("ttl_secs must be at most {MAX_TTL_SECS}")));
        }
        let uids = match request.targets {
            PushTargets::Users(uids) => {
                if uids.is_empty() || uids.len() > MAX_PUSH_TARGETS {
                    return Err(invalid(format!(
                        "uids must hold 1..={MAX_PUSH_TARGETS} users"
                    )));
                }
                if let Some(bad) = uids.iter().find(|u| u.is_empty() || u.len() > MAX_ID_BYTES) {
                    return Err(invalid(format!(
                        "uid {bad:?} must be 1..={MAX_ID_BYTES} bytes"
                    )));
                }
                uids
            }
            PushTargets::AllOnline => self.online_snapshot(request.appcode).await?,
        };
        let mut uids = uids;
        uids.sort_unstable();
        uids.dedup();
        let totals = {
            let mut totals = inner.totals.lock().unwrap_or_else(|p| p.into_inner());
            totals
                .entry((request.appcode, request.msgtype))
                .or_default()
                .clone()
        };
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let record = Arc::new(PushRecord {
            id,
            appcode: request.appcode,
            msgtype: request.msgtype,
            content_type: request.content_type,
            content: request.content,
            from: if request.from.is_empty() {
                "system".to_owned()
            } else {
                request.from
            },
            persist: request.persist,
            ttl_secs: if request.persist { 0 } else { request.ttl_secs },
            log_id: request.log_id,
            created_ms: longlink_proto::unix_ms(),
            msgid: AtomicU64::new(0),
            senddate_ms: AtomicU64::new(0),
            finished_ms: AtomicU64::new(0),
            recipients: uids
                .into_iter()
                .map(|uid| Recipient {
                    uid,
                    flags: AtomicU8::new(0),
                    sessions: AtomicU32::new(0),
                })
                .collect(),
            counters: Counters::default(),
            totals,
        });
        let accepted = PushAccepted {
            push_id: id,
            targets: record.recipients.len() as u64,
        };
        // Retained before it is queued, so its statistics can be read as soon as the id is.
        inner
            .retained
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.clone());
        if self
            .queue_of(record.appcode)
            .try_send(record.clone())
            .is_err()
        {
            inner
                .retained
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .forget(id);
            return Err(PushRefusal::Overloaded(format!(
                "{PUSH_QUEUE} pushes to appcode {} are waiting",
                record.appcode
            )));
        }
        record.totals.pushes.fetch_add(1, Ordering::Relaxed);
        inner.metrics.pushes.inc();
        inner.ledger.record(
            TraceEvent::now(record.log_id, Stage::Accepted)
                .detail(format!("s2c push {id}"))
                .subject(Subject {
                    kind: MessageKind::S2c,
                    from: Some(record.from.clone()),
                    to: Some(format!(
                        "{} ({} users)",
                        record.appcode,
                        record.recipients.len()
                    )),
                    appcodes: vec![record.appcode],
                }),
        );
        record
            .totals
            .targets
            .fetch_add(accepted.targets, Ordering::Relaxed);
        tracing::info!(
            log_id = record.log_id,
            push_id = id,
            appcode = record.appcode,
            msgtype = record.msgtype,
            targets = accepted.targets,
            persist = record.persist,
            "push accepted"
        );
        Ok(accepted)
    }

    /// The FIFO of `appcode`'s pushes, starting its worker on first use.
    fn queue_of(&self, appcode: u32) -> mpsc::Sender<Arc<PushRecord>> {
        let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues
            .entry(appcode)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(PUSH_QUEUE);
                tokio::spawn(self.clone().work(rx));
                tx
            })
            .clone()
    }

    /// One appcode's worker: stores the queued pushes together (they share a group commit),
    /// then fans them out one after the other, in the order they were accepted.
    async fn work(self, mut rx: mpsc::Receiver<Arc<PushRecord>>) {
        let mut batch = Vec::with_capacity(STORE_BATCH);
        while rx.recv_many(&mut batch, STORE_BATCH).await > 0 {
            let stored =
                futures::future::join_all(batch.iter().map(|record| self.store(record))).await;
            for (record, stored) in batch.drain(..).zip(stored) {
                if stored {
                    self.fan_out(&record).await;
                }
                record
                    .finished_ms
                    .store(longlink_proto::unix_ms(), Ordering::Release);
                tracing::info!(
                    log_id = record.log_id,
                    push_id = record.id,
                    online = record.counters.online.load(Ordering::Relaxed),
                    stored_offline = record.counters.stored_offline.load(Ordering::Relaxed),
                    "push fanned out"
                );
            }
        }
    }

    async fn online_snapshot(&self, appcode: u32) -> Result<Vec<String>, PushRefusal> {
        let mut seen = HashSet::new();
        let mut cursor = 0;
        loop {
            let (page, next) = self
                .inner
                .presence
                .online_uids(appcode, cursor, WAVE)
                .await
                .map_err(|err| PushRefusal::Unavailable(err.to_string()))?;
            seen.extend(page);
            if seen.len() > MAX_PUSH_TARGETS * 10 {
                return Err(PushRefusal::Overloaded(
                    "too many online users for one broadcast".into(),
                ));
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(seen.into_iter().collect())
    }

    /// Commits the push (see the module docs); on failure every recipient is failed.
    async fn store(&self, record: &Arc<PushRecord>) -> bool {
        let inner = &self.inner;
        let started = std::time::Instant::now();
        let stored = inner
            .store
            .append_s2c(NewS2c {
                appcode: record.appcode,
                from: record.from.clone(),
                msgtype: record.msgtype,
                content_type: record.content_type,
                content: record.content.clone(),
                log_id: record.log_id,
                recipients: if record.persist {
                    record.recipients.iter().map(|r| r.uid.clone()).collect()
                } else {
                    Vec::new()
                },
            })
            .await;
        inner
            .metrics
            .store_op(crate::metrics::StoreOp::AppendS2c, started.elapsed());
        let outcome = match stored {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::warn!(log_id = record.log_id, push_id = record.id, error = %err, "push not stored; nothing sent");
                for index in 0..record.recipients.len() {
                    record.mark(index, FAILED);
                }
                return false;
            }
        };
        record.msgid.store(outcome.msgid, Ordering::Release);
        inner.ledger.record(
            TraceEvent::now(record.log_id, Stage::Stored)
                .msgid(outcome.msgid)
                .detail(if record.persist {
                    format!("inbox rows for {} users", record.recipients.len())
                } else {
                    "online only: no inbox rows".to_owned()
                }),
        );
        record
            .senddate_ms
            .store(outcome.senddate_ms, Ordering::Release);
        inner
            .retained
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_msgid
            .insert(outcome.msgid, Arc::downgrade(record));
        true
    }

    /// Delivers a stored push in waves. A push to more than one wave of recipients is split
    /// into contiguous parts delivered by one task per runtime worker at once: a gate's write
    /// is a syscall in the pushing task, so one task would leave the other cores idle during
    /// a broadcast. All parts end before the next push of the appcode starts, so a user's
    /// pushes still arrive in the order they were accepted.
    async fn fan_out(&self, record: &Arc<PushRecord>) {
        let recipients = record.recipients.len();
        let workers = tokio::runtime::Handle::current()
            .metrics()
            .num_workers()
            .max(1);
        let parts = recipients.div_ceil(WAVE).min(workers);
        if parts > 1 {
            let per_part = recipients.div_ceil(parts);
            let mut tasks = tokio::task::JoinSet::new();
            for start in (0..recipients).step_by(per_part) {
                let (engine, record) = (self.clone(), record.clone());
                let end = (start + per_part).min(recipients);
                tasks.spawn(async move { engine.deliver_range(&record, start..end).await });
            }
            while tasks.join_next().await.is_some() {}
        } else {
            self.deliver_range(record, 0..recipients).await;
        }
        if !record.persist && record.ttl_secs > 0 {
            let engine = self.clone();
            let record = record.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(u64::from(record.ttl_secs))).await;
                engine.expire(&record);
            });
        }
    }

    /// Delivers to recipients `range` of `record`, online or else offline, in waves.
    async fn deliver_range(&self, record: &Arc<PushRecord>, range: std::ops::Range<usize>) {
        let receipt: Arc<dyn WriteReceipt> = record.clone();
        for wave_start in range.clone().step_by(WAVE) {
            let wave_end = (wave_start + WAVE).min(range.end);
            for index in wave_start..wave_end {
                let uid = &record.recipients[index].uid;
                let notifier = self.notifier_for(record, uid);
                let mut devices = Vec::new();
                let reached = self
                    .deliver_online(record, &receipt, index, notifier.map(|_| &mut devices))
                    .await;
                if !reached {
                    self.offline(record, index).await;
                }
                if let Some(notifier) = notifier {
                    notifier.offer(NotifyCandidate {
                        appcode: record.appcode,
                        uid: uid.clone(),
                        msgid: record.msgid.load(Ordering::Acquire),
                        s2c: true,
                        from: record.from.clone(),
                        msgtype: record.msgtype,
                        content_type: record.content_type,
                        content: record.content.clone(),
                        reached_devices: devices,
                        log_id: record.log_id,
                    });
                }
            }
            // Let the gate's own work (reads, logins, other pushes) run between waves.
            tokio::task::yield_now().await;
        }
    }

    /// Pushes to every online session of recipient `index`; whether at least one took it.
    /// With `reached_devices`, the devices whose sessions took it are added there.
    async fn deliver_online(
        &self,
        record: &PushRecord,
        receipt: &Arc<dyn WriteReceipt>,
        index: usize,
        mut reached_devices: Option<&mut Vec<String>>,
    ) -> bool {
        let inner = &self.inner;
        let uid = &record.recipients[index].uid;
        let sessions = match inner.presence.sessions(record.appcode, uid).await {
            Ok(sessions) => sessions,
            Err(err) => {
                tracing::warn!(log_id = record.log_id, error = %err, "presence lookup failed; treated as offline");
                return false;
            }
        };
        if sessions.is_empty() {
            return false;
        }
        let frame = record.frame(uid);
        let mut reached = false;
        for entry in sessions {
            match inner
                .gate
                .push_tracked(
                    &entry.gate_id,
                    entry.session_id,
                    frame.clone(),
                    receipt.clone(),
                    index as u64,
                )
                .await
            {
                Ok(()) => {
                    reached = true;
                    record.queued_to_session(index);
                    inner.metrics.receiver_deliveries.inc();
                    if let Some(devices) = reached_devices.as_deref_mut() {
                        devices.push(entry.device_id.clone());
                    }
                }
                Err(PushError::NoSession) => {
                    record
                        .counters
                        .stale_sessions
                        .fetch_add(1, Ordering::Relaxed);
                    crate::clear_stale_session(inner.presence.as_ref(), &entry, record.log_id)
                        .await;
                }
                Err(PushError::SlowConsumer) => {
                    tracing::info!(
                        log_id = record.log_id,
                        session.id = entry.session_id,
                        "slow consumer; push not queued"
                    );
                }
                Err(PushError::Unreachable) => {
                    tracing::debug!(
                        log_id = record.log_id,
                        session.id = entry.session_id,
                        "session held without a link; the recipient takes the offline path"
                    );
                }
            }
        }
        reached
    }

    /// Recipient `index` was not reached online: stored, waiting for a login, or expired.
    async fn offline(&self, record: &Arc<PushRecord>, index: usize) {
        if record.persist {
            record.mark(index, STORED);
            self.trace_recipient(record, index, Stage::Offline, "waits in the inbox");
            return;
        }
        if record.ttl_secs == 0 {
            record.mark(index, EXPIRED);
            self.trace_recipient(record, index, Stage::Expired, "not online; no ttl");
            return;
        }
        let key = (record.appcode, record.recipients[index].uid.clone());
        {
            let mut waiting = self.inner.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if waiting.len >= MAX_WAITING {
                drop(waiting);
                record.mark(index, EXPIRED);
                return;
            }
            waiting.len += 1;
            waiting
                .by_user
                .entry(key.clone())
                .or_default()
                .push((record.clone(), index));
        }
        // The user may have logged in between the lookup and the line above; a login after
        // it finds the entry (session_ready), one before it is caught here.
        if let Ok(sessions) = self.inner.presence.sessions(key.0, &key.1).await
            && let Some(entry) = sessions.first()
            && self.take_waiting(&key, record.id).is_some()
        {
            self.deliver_waiting_one(record, index, &entry.gate_id, entry.session_id)
                .await;
        }
    }

    /// Records `stage` of recipient `index` in the ledger.
    fn trace_recipient(&self, record: &PushRecord, index: usize, stage: Stage, detail: &str) {
        let who: Arc<str> = Arc::from(user_label(record.appcode, &record.recipients[index].uid));
        self.inner.ledger.record(
            TraceEvent::now(record.log_id, stage)
                .msgid(record.msgid.load(Ordering::Acquire))
                .who(who)
                .detail(detail),
        );
    }

    fn take_waiting(&self, key: &(u32, String), push_id: u64) -> Option<Held> {
        let mut waiting = self.inner.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let list = waiting.by_user.get_mut(key)?;
        let position = list.iter().position(|(r, _)| r.id == push_id)?;
        let taken = list.swap_remove(position);
        if list.is_empty() {
            waiting.by_user.remove(key);
        }
        waiting.len -= 1;
        Some(taken)
    }

    /// Delivers a held online-only push to the session that just came online.
    async fn deliver_waiting_one(
        &self,
        record: &Arc<PushRecord>,
        index: usize,
        gate_id: &str,
        session_id: u64,
    ) {
        let frame = record.frame(&record.recipients[index].uid);
        let receipt: Arc<dyn WriteReceipt> = record.clone();
        match self
            .inner
            .gate
            .push_tracked(gate_id, session_id, frame, receipt, index as u64)
            .await
        {
            Ok(()) => {
                record.queued_to_session(index);
                self.inner.metrics.receiver_deliveries.inc();
            }
            Err(PushError::Unreachable) => {
                // Held without a link: wait on (the RESUME or the next login takes it, or
                // the TTL runs out).
                let key = (record.appcode, record.recipients[index].uid.clone());
                let mut waiting = self.inner.waiting.lock().unwrap_or_else(|p| p.into_inner());
                waiting.len += 1;
                waiting
                    .by_user
                    .entry(key)
                    .or_default()
                    .push((record.clone(), index));
            }
            Err(_) => record.mark(index, EXPIRED),
        }
    }

    /// The TTL of `record` ran out: whoever still waits for it expires. Looks up only this
    /// push's own recipients that were never queued, not the whole waiting table.
    fn expire(&self, record: &Arc<PushRecord>) {
        for (index, recipient) in record.recipients.iter().enumerate() {
            if recipient.flags.load(Ordering::Acquire) & (QUEUED | EXPIRED | STORED) != 0 {
                continue;
            }
            let key = (record.appcode, recipient.uid.clone());
            if self.take_waiting(&key, record.id).is_some() {
                record.mark(index, EXPIRED);
                self.trace_recipient(record, index, Stage::Expired, "ttl ran out");
            }
        }
    }

    /// A session logged in: online-only pushes waiting for its user are delivered now.
    pub(crate) async fn session_ready(&self, session: &SessionInfo) {
        let key = (session.appcode, session.uid.clone());
        let list = {
            let mut waiting = self.inner.waiting.lock().unwrap_or_else(|p| p.into_inner());
            let Some(list) = waiting.by_user.remove(&key) else {
                return;
            };
            waiting.len -= list.len();
            list
        };
        for (record, index) in list {
            self.deliver_waiting_one(&record, index, &session.gate_id, session.session_id)
                .await;
        }
    }

    /// A device acked `msgids`: recipients of pushes among them count as acked. Returns the
    /// msgids of online-only pushes (they have no inbox row for the store to ack).
    pub(crate) fn acked(&self, owner: &UserKey, msgids: &[u64]) -> Vec<u64> {
        let records: Vec<Arc<PushRecord>> = {
            let retained = self
                .inner
                .retained
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if retained.by_msgid.is_empty() {
                return Vec::new();
            }
            msgids
                .iter()
                .filter_map(|m| retained.by_msgid.get(m).and_then(Weak::upgrade))
                .collect()
        };
        let mut online_only = Vec::new();
        for record in records {
            if record.appcode != owner.appcode {
                continue;
            }
            if let Some(index) = record.index_of(&owner.uid) {
                record.mark(index, ACKED);
                if !record.persist {
                    online_only.push(record.msgid.load(Ordering::Acquire));
                }
            }
        }
        online_only
    }

    pub(crate) fn stats(&self, push_id: u64) -> Option<PushStats> {
        let retained = self
            .inner
            .retained
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        retained.by_id.get(&push_id).map(|r| r.stats())
    }

    pub(crate) fn counters(&self, appcodes: &[u32]) -> Vec<DeliveryCounters> {
        let totals = self.inner.totals.lock().unwrap_or_else(|p| p.into_inner());
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out: Vec<DeliveryCounters> = totals
            .iter()
            .filter(|((appcode, _), _)| appcodes.is_empty() || appcodes.contains(appcode))
            .map(|(&(appcode, msgtype), c)| DeliveryCounters {
                appcode,
                msgtype,
                pushes: load(&c.pushes),
                targets: load(&c.targets),
                online: load(&c.online),
                written: load(&c.written),
                acked: load(&c.acked),
                stored_offline: load(&c.stored_offline),
                expired: load(&c.expired),
                failed: load(&c.failed),
            })
            .collect();
        out.sort_by_key(|c| (c.appcode, c.msgtype));
        out
    }
}

#[async_trait]
impl longlink_rpc::PushService for crate::Logic {
    async fn push(&self, request: PushRequest) -> Result<PushAccepted, PushRefusal> {
        self.pushes.push(request).await
    }

    async fn push_stats(&self, push_id: u64) -> Option<PushStats> {
        self.pushes.stats(push_id)
    }

    async fn delivery_counters(&self, appcodes: &[u32]) -> Vec<DeliveryCounters> {
        self.pushes.counters(appcodes)
    }
}

/// Most (appcode, msgtype) series exported; the rest are summed under `msgtype="other"`, so
/// a business server inventing msgtypes cannot blow up the scrape.
const MAX_PUSH_SERIES: usize = 256;

/// One exported series: its labels and the eight counters, in the order of `names` below.
type PushSeries = ([(&'static str, String); 2], [u64; 8]);

/// Exports the push engine's delivery counters per (appcode, msgtype) at scrape time.
pub(crate) struct PushCollector {
    pub(crate) engine: PushEngine,
}

impl std::fmt::Debug for PushCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushCollector").finish_non_exhaustive()
    }
}

impl Collector for PushCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut series: Vec<PushSeries> = Vec::new();
        let mut other: std::collections::BTreeMap<u32, [u64; 8]> = Default::default();
        for c in self.engine.counters(&[]) {
            let values = [
                c.pushes,
                c.targets,
                c.online,
                c.written,
                c.acked,
                c.stored_offline,
                c.expired,
                c.failed,
            ];
            if series.len() < MAX_PUSH_SERIES {
                series.push((
                    [
                        ("appcode", c.appcode.to_string()),
                        ("msgtype", c.msgtype.to_string()),
                    ],
                    values,
                ));
            } else {
                let sum = other.entry(c.appcode).or_default();
                for (s, v) in sum.iter_mut().zip(values) {
                    *s += v;
                }
            }
        }
        for (appcode, values) in other {
            series.push((
                [
                    ("appcode", appcode.to_string()),
                    ("msgtype", "other".to_owned()),
                ],
                values,
            ));
        }
        let names = [
            ("longlink_push", "s2c pushes"),
            ("longlink_push_targets", "s2c target users"),
            (
                "longlink_push_online",
                "s2c target users online when the push reached them",
            ),
            (
                "longlink_push_written",
                "s2c target users with the MSG written to a socket",
            ),
            (
                "longlink_push_acked",
                "s2c target users whose device acknowledged the MSG",
            ),
            (
                "longlink_push_stored_offline",
                "s2c target users not online: stored for their next login",
            ),
            (
                "longlink_push_expired",
                "s2c online-only target users not reached within the TTL",
            ),
            (
                "longlink_push_failed",
                "s2c target users neither reached nor stored",
            ),
        ];
        for (slot, (name, help)) in names.iter().enumerate() {
            let counter = ConstCounter::new(0u64);
            let mut metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for (labels, values) in &series {
                let family = metric.encode_family(labels)?;
                ConstCounter::new(values[slot]).encode(family)?;
            }
        }
        let gauge = ConstGauge::new(0.0f64);
        let mut metric = encoder.encode_descriptor(
            "longlink_push_delivery_ratio",
            "s2c delivery rate: acked target users / target users",
            None,
            gauge.metric_type(),
        )?;
        for (labels, values) in &series {
            if values[1] == 0 {
                continue;
            }
            let family = metric.encode_family(labels)?;
            ConstGauge::new(values[4] as f64 / values[1] as f64).encode(family)?;
        }
        Ok(())
    }
}
