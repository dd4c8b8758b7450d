//! The [`Notifier`]: longlink's implementation of [`Notifications`]. It owns four tasks, so
//! nothing a provider does ever reaches the message path:
//!
//! - **ingest**: takes `offer`ed candidates from a bounded queue (a full queue drops the
//!   offer, never waits) and writes one outbox row per registered device the message did not
//!   reach, due after the grace period;
//! - **scheduler**: wakes at the next due time, asks the store whether each device got the
//!   message meanwhile (acked → skip; pushed → look once more after another grace), collapses
//!   a device's due rows into one notification, spaces a device's notifications by
//!   `collapse_secs`, renders it, ranks the device's providers (the bandit), marks the rows
//!   sent (the at-most-once step) and hands the notification to a send task;
//! - **send tasks** (bounded: a semaphore over all providers and one per provider, so a slow
//!   provider holds only its own share): rate limit, circuit breaker, retries with backoff,
//!   failover to the next ranked provider with the same notification id, dead tokens
//!   removed;
//! - **sweeper**: notifications without a receipt after `receipt_timeout_secs` count as lost
//!   for the bandit; old rows are pruned.
//!
//! Every wait has a timeout or ends with the shutdown token; nothing here panics on a
//! runtime path.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use longlink_metrics::Registry;
use longlink_rpc::notify::{
    DeviceClass, DeviceRecord, Notifications, NotifyCandidate, NotifyError, ProviderStats,
    PushToken, check_registration,
};
use longlink_store::{DeliveryState, MessageStore, UserKey};
use rand::Rng;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::breaker::Breaker;
use crate::config::{NotifyConfig, RuleConfig};
use crate::metrics::NotifyMetrics;
use crate::outbox::{self, Db, DueRow, NewRow, NotificationRow};
use crate::provider::{Notification, Provider, SendError};
use crate::registry::{self, Change};
use crate::render::{self, Pending};
use crate::select::{Selector, class_string};
use crate::stats::Stats;

/// Candidates written to the outbox per transaction.
const INGEST_BATCH: usize = 512;
/// Due rows the scheduler takes per pass.
const DUE_BATCH: usize = 1000;
/// The scheduler looks at the outbox at least this often (a missed wake-up costs this much).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How long one store call of the scheduler may take.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// Send results recorded per transaction.
const FINISH_BATCH: usize = 256;
/// Store reads of the scheduler in flight at once (delivery states, badges).
const STORE_CONCURRENCY: usize = 32;
/// How long one provider request may take (the providers have their own, shorter timeouts).
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest backoff, and the longest Retry-After honoured.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest wait for a rate limiter or a provider's in-flight slot before failing over.
const SLOT_WAIT: Duration = Duration::from_secs(1);
/// Receipts looked at per call; more ids are ignored.
const MAX_RECEIPT_IDS: usize = 1024;
/// Distinct device classes tracked; devices of further classes are counted as "other".
const MAX_CLASSES: usize = 1024;
/// Finished outbox rows and notifications are kept this long (then pruned).
const KEEP_MS: u64 = 7 * 24 * 3600 * 1000;
/// How often old rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How long `close` waits for the tasks and the sends in flight.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// A provider as the engine gets it: the channel and its rate limit.
#[derive(Clone)]
pub struct ProviderEntry {
    /// The channel.
    pub provider: Arc<dyn Provider>,
    /// Requests per second allowed (0 = 1000).
    pub rate_per_sec: u32,
    /// Requests allowed in a burst (0 = `rate_per_sec`).
    pub burst: u32,
}

impl std::fmt::Debug for ProviderEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderEntry")
            .field("name", &self.provider.name())
            .field("kind", &self.provider.kind())
            .field("rate_per_sec", &self.rate_per_sec)
            .field("burst", &self.burst)
            .finish()
    }
}

impl ProviderEntry {
    /// `provider` with the default rate limit (1000/s).
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Self {
            provider,
            rate_per_sec: 0,
            burst: 0,
        }
    }
}

/// Why the notifier did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration value is invalid, or two providers share a name.
    #[error("push config: {0}")]
    Config(String),
    /// `notify.sqlite` could not be opened.
    #[error("push database: {0}")]
    Database(String),
}

/// One provider and what guards it.
struct Slot {
    provider: Arc<dyn Provider>,
    limiter: DefaultDirectRateLimiter,
    breaker: Mutex<Breaker>,
    in_flight: Arc<Semaphore>,
}

/// A notification marked sent, on its way to a provider.
struct Job {
    id: u64,
    appcode: u32,
    uid: String,
    device: String,
    class: String,
    /// The selector's device key.
    device_key: String,
    /// (provider, token), best first.
    ranked: Vec<(String, String)>,
    rendered: render::Rendered,
}

/// How one provider attempt ended.
enum Attempt {
    Accepted,
    /// Not sent, or failed: try the next provider.
    Failed,
    /// The token is dead: removed; try the next provider.
    DeadToken,
}

struct Inner {
    config: NotifyConfig,
    default_rule: RuleConfig,
    db: Arc<Db>,
    store: Arc<dyn MessageStore>,
    slots: HashMap<String, Slot>,
    /// Provider names in configuration order.
    names: Vec<String>,
    selector: Mutex<Selector>,
    stats: Mutex<Stats>,
    metrics: NotifyMetrics,
    last_id: AtomicU64,
    wake: Notify,
    in_flight: Arc<Semaphore>,
    classes: Mutex<HashSet<String>>,
    stop: CancellationToken,
    /// How sends ended, to the finisher (which records them in batches).
    ends: mpsc::Sender<(u64, String, bool)>,
}

/// The notification service: device registry, durable outbox, provider selection and
/// sending. See the module docs for its tasks.
pub struct Notifier {
    inner: Arc<Inner>,
    offers: mpsc::Sender<NotifyCandidate>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The finisher outlives the other tasks: it records the sends still in flight at close.
    finisher: Mutex<Option<(JoinHandle<()>, CancellationToken)>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("db", &self.inner.db.path())
            .field("providers", &self.inner.names)
            .finish_non_exhaustive()
    }
}

/// Unix time in ms.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Notifier {
    /// Opens `<data_dir>/notify.sqlite`, registers the metrics in `registry` and starts the
    /// notifier's tasks (call it inside a Tokio runtime). Pending outbox rows of a previous
    /// run are scheduled again; rows it marked sent are never sent again. The tasks stop
    /// when `shutdown` is cancelled or [`Notifier::close`] is called.
    ///
    /// # Errors
    /// [`StartError::Config`] for an invalid config or two providers of one name,
    /// [`StartError::Database`] when the database cannot be opened.
    pub fn start(
        config: NotifyConfig,
        providers: Vec<ProviderEntry>,
        store: Arc<dyn MessageStore>,
        data_dir: &Path,
        registry: &mut Registry,
        shutdown: CancellationToken,
    ) -> Result<Arc<Notifier>, StartError> {
        config.validate().map_err(StartError::Config)?;
        let mut slots = HashMap::new();
        let mut names = Vec::new();
        for entry in providers {
            let name = entry.provider.name().to_owned();
            let rate =
                NonZeroU32::new(entry.rate_per_sec).unwrap_or(NonZeroU32::MIN.saturating_add(999));
            let burst = NonZeroU32::new(entry.burst).unwrap_or(rate);
            let slot = Slot {
                provider: entry.provider,
                limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
                breaker: Mutex::new(Breaker::new(
                    config.breaker_failures,
                    Duration::from_secs(config.breaker_open_secs),
                )),
                in_flight: Arc::new(Semaphore::new(config.max_in_flight_per_provider)),
            };
            if slots.insert(name.clone(), slot).is_some() {
                return Err(StartError::Config(format!(
                    "two push providers are named {name:?}"
                )));
            }
            names.push(name);
        }
        let db = Db::open(data_dir).map_err(StartError::Database)?;
        let last_id = {
            let conn_db = Arc::clone(&db);
            // At start, before any task: a direct read is fine (no runtime thread is blocked
            // for long: one indexed MAX).
            let path = conn_db.path().to_owned();
            let conn = longlink_sqlite::open_read_only(&path)
                .map_err(|e| StartError::Database(format!("{}: {e}", path.display())))?;
            outbox::max_id(&conn)
                .map_err(|e| StartError::Database(format!("{}: {e}", path.display())))?
        };
        let metrics = NotifyMetrics::new(registry);
        let stop = shutdown.child_token();
        let (offers, rx) = mpsc::channel(config.queue);
        let (ends, ends_rx) = mpsc::channel(config.max_in_flight.max(FINISH_BATCH));
        let inner = Arc::new(Inner {
            default_rule: RuleConfig::default(),
            selector: Mutex::new(Selector::new(config.discount, config.seed)),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            db,
            store,
            slots,
            names,
            stats: Mutex::new(Stats::default()),
            metrics,
            last_id: AtomicU64::new(last_id),
            wake: Notify::new(),
            classes: Mutex::new(HashSet::new()),
            stop,
            ends,
        });
        info!(
            providers = ?inner.names,
            db = %inner.db.path().display(),
            "push notifications started"
        );
        let tasks = vec![
            tokio::spawn(ingest(Arc::clone(&inner), rx)),
            tokio::spawn(schedule(Arc::clone(&inner))),
            tokio::spawn(sweep(Arc::clone(&inner))),
        ];
        let finish_stop = CancellationToken::new();
        let finisher = tokio::spawn(finisher(
            Arc::clone(&inner.db),
            ends_rx,
            finish_stop.clone(),
        ));
        Ok(Arc::new(Notifier {
            inner,
            offers,
            tasks: Mutex::new(tasks),
            finisher: Mutex::new(Some((finisher, finish_stop))),
        }))
    }

    /// Stops the tasks: offers still queued are written to the outbox, sends in flight get
    /// up to 10 s to finish. Pending rows stay in the outbox for the next start. Later calls
    /// return at once.
    pub async fn close(&self) {
        self.inner.stop.cancel();
        let tasks: Vec<JoinHandle<()>> = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            tasks.drain(..).collect()
        };
        let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
        for task in tasks {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                warn!("a push notification task did not stop within 10 s");
            }
        }
        let all = u32::try_from(self.inner.config.max_in_flight).unwrap_or(u32::MAX);
        if tokio::time::timeout_at(deadline, self.inner.in_flight.acquire_many(all))
            .await
            .is_err()
        {
            warn!("push notifications still in flight at close");
        }
        let finisher = self
            .finisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((task, stop)) = finisher {
            stop.cancel();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                warn!("push notification results not all recorded within 10 s");
            }
        }
    }

    /// The configured provider names, in configuration order.
    pub fn providers(&self) -> &[String] {
        &self.inner.names
    }

    /// Outbox rows waiting to be notified.
    ///
    /// # Errors
    /// [`NotifyError::Unavailable`] when the database fails.
    pub async fn outbox_pending(&self) -> Result<u64, NotifyError> {
        self.inner
            .db
            .call(|conn, _| outbox::pending_count(conn).map_err(registry::unavailable))
            .await
    }

    fn rule(&self, appcode: u32) -> &RuleConfig {
        self.inner.rule(appcode)
    }
}

impl Inner {
    fn rule(&self, appcode: u32) -> &RuleConfig {
        self.config.rule(appcode).unwrap_or(&self.default_rule)
    }

    /// A new notification id: (unix ms << 16) | counter, always above the last one.
    fn next_id(&self) -> u64 {
        let floor = now_ms() << 16;
        let mut last = self.last_id.load(Ordering::Relaxed);
        loop {
            let id = floor.max(last.saturating_add(1)).max(1);
            match self
                .last_id
                .compare_exchange(last, id, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return id,
                Err(seen) => last = seen,
            }
        }
    }

    /// The class string of a device, or "other" past [`MAX_CLASSES`] distinct ones (the
    /// class is client-supplied text: its variety must not grow memory without bound).
    fn class_of(&self, class: &DeviceClass) -> String {
        let name = class_string(&class.platform, &class.vendor, &class.app_version);
        let mut classes = self.classes.lock().unwrap_or_else(|e| e.into_inner());
        if classes.contains(&name) {
            return name;
        }
        if classes.len() >= MAX_CLASSES {
            return "other".to_owned();
        }
        classes.insert(name.clone());
        name
    }

    fn failed(&self, provider: &str, class: &str, kind: &str) {
        self.metrics.failed(provider, kind);
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .error(provider, class, kind);
    }
}

/// The selector's key of a device (unit separators: uids may contain '/').
fn device_key(appcode: u32, uid: &str, device: &str) -> String {
    format!("{appcode}\u{1f}{uid}\u{1f}{device}")
}

// ---------------------------------------------------------------------------------------
// ingest

async fn ingest(inner: Arc<Inner>, mut rx: mpsc::Receiver<NotifyCandidate>) {
    loop {
        let first = tokio::select! {
            () = inner.stop.cancelled() => break,
            candidate = rx.recv() => match candidate {
                Some(candidate) => candidate,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < INGEST_BATCH {
            match rx.try_recv() {
                Ok(candidate) => batch.push(candidate),
                Err(_) => break,
            }
        }
        write_offers(&inner, batch).await;
    }
    // Stopping: what was already offered goes to the outbox, for the next start.
    rx.close();
    let mut rest = Vec::new();
    while let Ok(candidate) = rx.try_recv() {
        rest.push(candidate);
        if rest.len() >= INGEST_BATCH {
            write_offers(&inner, std::mem::take(&mut rest)).await;
        }
    }
    if !rest.is_empty() {
        write_offers(&inner, rest).await;
    }
}

async fn write_offers(inner: &Arc<Inner>, batch: Vec<NotifyCandidate>) {
    let due_ms = now_ms().saturating_add(inner.config.grace_ms);
    let mut rows = Vec::new();
    for candidate in batch {
        let devices = inner.db.cache().devices(candidate.appcode, &candidate.uid);
        let devices = registry::unreached(devices, &candidate.reached_devices);
        if devices.is_empty() {
            continue;
        }
        let rule = inner.rule(candidate.appcode);
        // Privacy: the content is never written to the outbox at all.
        let preview = if rule.privacy {
            String::new()
        } else {
            render::preview(candidate.content_type, &candidate.content)
        };
        let message = Pending {
            msgid: candidate.msgid,
            from: candidate.from,
            msgtype: candidate.msgtype,
            content_type: candidate.content_type,
            preview,
        };
        for device in devices {
            rows.push(NewRow {
                appcode: candidate.appcode,
                uid: candidate.uid.clone(),
                device,
                due_ms,
                message: message.clone(),
            });
        }
    }
    if rows.is_empty() {
        return;
    }
    let count = rows.len() as u64;
    match inner
        .db
        .call(move |conn, _| outbox::insert(conn, &rows).map_err(registry::unavailable))
        .await
    {
        Ok(inserted) => {
            if inserted > 0 {
                inner.wake.notify_one();
            }
        }
        Err(e) => {
            warn!(error = %e, rows = count, "push outbox write failed; offers dropped");
            inner.metrics.skipped("dropped", count);
        }
    }
}

// ---------------------------------------------------------------------------------------
// scheduler

async fn schedule(inner: Arc<Inner>) {
    while !inner.stop.is_cancelled() {
        let now = now_ms();
        let due = inner
            .db
            .call(move |conn, _| outbox::due(conn, now, DUE_BATCH).map_err(registry::unavailable))
            .await;
        let wait = match due {
            Ok(rows) if !rows.is_empty() => {
                let full = rows.len() >= DUE_BATCH;
                process_due(&inner, rows).await;
                if full {
                    continue;
                }
                next_wait(&inner).await
            }
            Ok(_) => next_wait(&inner).await,
            Err(e) => {
                warn!(error = %e, "push outbox read failed");
                IDLE_POLL
            }
        };
        tokio::select! {
            () = inner.stop.cancelled() => break,
            () = inner.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// How long until the next row is due (at most [`IDLE_POLL`]); refreshes the pending gauge.
async fn next_wait(inner: &Arc<Inner>) -> Duration {
    let found = inner
        .db
        .call_sql(|conn, _| {
            let next = outbox::next_due(conn)?;
            let pending = outbox::pending_count(conn)?;
            Ok((next, pending))
        })
        .await;
    match found {
        Ok((next, pending)) => {
            inner
                .metrics
                .outbox_pending
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
            next.map_or(IDLE_POLL, |due| {
                Duration::from_millis(due.saturating_sub(now_ms())).min(IDLE_POLL)
            })
        }
        Err(_) => IDLE_POLL,
    }
}

/// One device's due rows, split by where each message stands for that device.
struct Checked {
    appcode: u32,
    uid: String,
    device: String,
    acked: Vec<DueRow>,
    recheck: Vec<DueRow>,
    notify: Vec<DueRow>,
}

/// A device that gets a notification in this pass.
struct Planned {
    checked: Checked,
    class: String,
    device_key: String,
    ranked: Vec<(String, String)>,
}

/// Handles one pass of due rows in phases, so that a pass costs a few transactions, not a
/// few per device: the store's answers (concurrently), one transaction for skips, re-checks
/// and the devices' registrations, the decisions in memory, the badges (concurrently), then
/// one transaction that marks every notification of the pass sent before any is handed to a
/// send task (the at-most-once step).
async fn process_due(inner: &Arc<Inner>, rows: Vec<DueRow>) {
    use futures::StreamExt as _;

    // Rows come sorted by device: one group per device.
    let mut groups: Vec<Vec<DueRow>> = Vec::new();
    for row in rows {
        match groups.last_mut() {
            Some(group)
                if group.first().is_some_and(|g| {
                    g.appcode == row.appcode && g.uid == row.uid && g.device == row.device
                }) =>
            {
                group.push(row);
            }
            _ => groups.push(vec![row]),
        }
    }
    // 1. Where each message stands for its device.
    let checked: Vec<Checked> = futures::stream::iter(groups)
        .map(|group| check_device(inner, group))
        .buffer_unordered(STORE_CONCURRENCY)
        .collect()
        .await;
    if inner.stop.is_cancelled() {
        return;
    }

    // 2. Skips and re-checks, and what the devices to notify need: their last notification
    //    and their registration.
    let now = now_ms();
    let recheck_at = now.saturating_add(inner.config.grace_ms.max(1));
    let acked: Vec<outbox::RowKey> = checked
        .iter()
        .flat_map(|c| outbox::keys(&c.acked))
        .collect();
    let recheck: Vec<outbox::RowKey> = checked
        .iter()
        .flat_map(|c| outbox::keys(&c.recheck))
        .collect();
    let lookups: Vec<(u32, String, String)> = checked
        .iter()
        .filter(|c| !c.notify.is_empty())
        .map(|c| (c.appcode, c.uid.clone(), c.device.clone()))
        .collect();
    let acked_count = acked.len() as u64;
    let found = inner
        .db
        .call_sql(move |conn, _| {
            let tx = conn.transaction()?;
            outbox::skip(&tx, &acked)?;
            outbox::postpone(&tx, &recheck, recheck_at, true)?;
            let mut found = Vec::with_capacity(lookups.len());
            for (appcode, uid, device) in &lookups {
                let last = outbox::last_sent(&tx, *appcode, uid, device)?;
                let record = registry::device(&tx, *appcode, uid, device)?;
                found.push((last, record));
            }
            tx.commit()?;
            Ok(found)
        })
        .await;
    if acked_count > 0 {
        inner.metrics.skipped("acked", acked_count);
    }
    let found = match found {
        Ok(found) => found,
        Err(e) => {
            warn!(error = %e, "push outbox update failed");
            return;
        }
    };

    // 3. Per device: wait (spacing), nothing to send through (no provider), or notify.
    let collapse_ms = inner.config.collapse_secs.saturating_mul(1000);
    let mut spaced: Vec<(outbox::RowKey, u64)> = Vec::new();
    let mut unsendable: Vec<outbox::RowKey> = Vec::new();
    let mut planned: Vec<Planned> = Vec::new();
    let to_notify = checked.into_iter().filter(|c| !c.notify.is_empty());
    for (checked, (last, record)) in to_notify.zip(found) {
        if let Some(last) = last
            && collapse_ms > 0
            && now < last.saturating_add(collapse_ms)
        {
            let at = last.saturating_add(collapse_ms);
            spaced.extend(outbox::keys(&checked.notify).into_iter().map(|k| (k, at)));
            continue;
        }
        let tokens: Vec<PushToken> = record
            .as_ref()
            .map(|r| {
                r.tokens
                    .iter()
                    .filter(|t| inner.slots.contains_key(&t.provider))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if tokens.is_empty() {
            unsendable.extend(outbox::keys(&checked.notify));
            continue;
        }
        let class = inner.class_of(&record.map(|r| r.class).unwrap_or_default());
        let device_key = device_key(checked.appcode, &checked.uid, &checked.device);
        let names: Vec<String> = tokens.iter().map(|t| t.provider.clone()).collect();
        let ranked_names = inner
            .selector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rank(&class, &device_key, &names);
        let ranked = ranked_names
            .into_iter()
            .filter_map(|name| {
                tokens
                    .iter()
                    .find(|t| t.provider == name)
                    .map(|t| (name, t.token.clone()))
            })
            .collect();
        planned.push(Planned {
            checked,
            class,
            device_key,
            ranked,
        });
    }
    if !unsendable.is_empty() {
        inner
            .metrics
            .skipped("no_provider", unsendable.len() as u64);
    }

    // 4. Badges (the device's unread count), then the notifications.
    let devices: Vec<(u32, String, String)> = planned
        .iter()
        .map(|p| {
            (
                p.checked.appcode,
                p.checked.uid.clone(),
                p.checked.device.clone(),
            )
        })
        .collect();
    let badges: Vec<Option<u32>> = futures::stream::iter(devices)
        .map(|(appcode, uid, device)| badge_of(Arc::clone(inner), appcode, uid, device))
        .buffered(STORE_CONCURRENCY)
        .collect()
        .await;
    let mut jobs = Vec::with_capacity(planned.len());
    let mut marks = Vec::with_capacity(planned.len());
    for (plan, badge) in planned.into_iter().zip(badges) {
        let Planned {
            checked,
            class,
            device_key,
            ranked,
        } = plan;
        let rule = inner.rule(checked.appcode);
        let keys = outbox::keys(&checked.notify);
        let messages: Vec<Pending> = checked.notify.into_iter().map(|r| r.message).collect();
        let rendered = render::render(rule, checked.appcode, &checked.uid, &messages, badge);
        let id = inner.next_id();
        let provider = ranked
            .first()
            .map(|(p, _): &(String, String)| p.clone())
            .unwrap_or_default();
        marks.push((
            NotificationRow {
                id,
                appcode: checked.appcode,
                uid: checked.uid.clone(),
                device: checked.device.clone(),
                provider,
                class: class.clone(),
                sent_ms: now,
            },
            keys,
        ));
        jobs.push(Job {
            id,
            appcode: checked.appcode,
            uid: checked.uid,
            device: checked.device,
            class,
            device_key,
            ranked,
            rendered,
        });
    }

    // 5. One transaction: spacing, no provider, and every notification marked sent.
    let marked = inner
        .db
        .call_sql(move |conn, _| {
            let tx = conn.transaction()?;
            for (key, at) in &spaced {
                outbox::postpone(&tx, std::slice::from_ref(key), *at, false)?;
            }
            outbox::skip(&tx, &unsendable)?;
            let mut marked = Vec::with_capacity(marks.len());
            for (row, keys) in &marks {
                marked.push(outbox::mark_sent(&tx, row, keys)? > 0);
            }
            tx.commit()?;
            Ok(marked)
        })
        .await;
    let marked = match marked {
        Ok(marked) => marked,
        Err(e) => {
            warn!(error = %e, "push outbox update failed");
            return;
        }
    };

    // 6. Hand them to send tasks (bounded: the scheduler may wait here, the message path
    //    never does).
    for (job, marked) in jobs.into_iter().zip(marked) {
        if !marked {
            continue;
        }
        let permit = tokio::select! {
            () = inner.stop.cancelled() => return,
            permit = Arc::clone(&inner.in_flight).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        tokio::spawn(send(Arc::clone(inner), job, permit));
    }
}

/// Asks the store where each of a device's due messages stands for that device.
async fn check_device(inner: &Arc<Inner>, rows: Vec<DueRow>) -> Checked {
    let (appcode, uid, device) = rows
        .first()
        .map(|r| (r.appcode, r.uid.clone(), r.device.clone()))
        .unwrap_or_default();
    let owner = UserKey::new(appcode, uid.clone());
    let mut checked = Checked {
        appcode,
        uid,
        device,
        acked: Vec::new(),
        recheck: Vec::new(),
        notify: Vec::new(),
    };
    for row in rows {
        let state = tokio::time::timeout(
            STORE_TIMEOUT,
            inner
                .store
                .delivery_state(&owner, &checked.device, row.message.msgid),
        )
        .await;
        match state {
            Ok(Ok(Some(DeliveryState::Acked))) => checked.acked.push(row),
            Ok(Ok(Some(DeliveryState::Pushed))) if !row.rechecked => checked.recheck.push(row),
            // Stored, not in the inbox, or the store did not answer: notify (a redundant
            // notification is better than a missed one).
            Ok(Ok(_)) => checked.notify.push(row),
            Ok(Err(e)) => {
                debug!(error = %e, "delivery state unknown; notifying");
                checked.notify.push(row);
            }
            Err(_) => {
                debug!("delivery state timed out; notifying");
                checked.notify.push(row);
            }
        }
    }
    checked
}

/// The badge of a device under its appcode's rule: its unacked messages, at most 99.
async fn badge_of(inner: Arc<Inner>, appcode: u32, uid: String, device: String) -> Option<u32> {
    if !inner.rule(appcode).badge {
        return None;
    }
    let owner = UserKey::new(appcode, uid);
    match tokio::time::timeout(
        STORE_TIMEOUT,
        inner.store.pull_offline(&owner, &device, 0, 100),
    )
    .await
    {
        Ok(Ok(page)) => Some(u32::try_from(page.messages.len()).unwrap_or(99).min(99)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// sending

async fn send(inner: Arc<Inner>, job: Job, _permit: OwnedSemaphorePermit) {
    let mut accepted_by = None;
    let mut last_tried = String::new();
    for (provider, token) in &job.ranked {
        let Some(slot) = inner.slots.get(provider) else {
            continue;
        };
        last_tried.clone_from(provider);
        let mut data = job.rendered.data.clone();
        data.insert(0, ("ll_nid".to_owned(), job.id.to_string()));
        let notification = Notification {
            id: job.id,
            token: token.clone(),
            title: job.rendered.title.clone(),
            body: job.rendered.body.clone(),
            badge: job.rendered.badge,
            collapse_id: job.rendered.collapse_id.clone(),
            ttl: job.rendered.ttl,
            high_priority: job.rendered.high_priority,
            sound: job.rendered.sound.clone(),
            data,
        };
        match attempt(&inner, slot, provider, &notification, &job).await {
            Attempt::Accepted => {
                accepted_by = Some(provider.clone());
                break;
            }
            Attempt::DeadToken => {
                let dead = PushToken {
                    provider: provider.clone(),
                    token: token.clone(),
                };
                let (appcode, uid, device) = (job.appcode, job.uid.clone(), job.device.clone());
                let removed = inner
                    .db
                    .call(move |conn, cache| {
                        registry::remove_dead(conn, cache, appcode, &uid, &device, &dead)
                            .map_err(registry::unavailable)
                    })
                    .await;
                match removed {
                    Ok(true) => info!(provider = %provider, "dead push token removed"),
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "dead push token not removed"),
                }
            }
            Attempt::Failed => {}
        }
        if inner.stop.is_cancelled() {
            break;
        }
    }
    let accepted = accepted_by.is_some();
    let provider = accepted_by.unwrap_or(last_tried);
    if accepted {
        inner
            .selector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sent(job.id, &job.class, &job.device_key, &provider, now_ms());
    }
    // Recorded in batches by the finisher; waiting for room keeps the record (the channel
    // holds as many as there are sends in flight).
    if inner.ends.send((job.id, provider, accepted)).await.is_err() {
        warn!(
            id = job.id,
            "push notification state not recorded: the notifier is closed"
        );
    }
}

/// Records how sends ended, many per transaction, until `stop` (then what is queued).
async fn finisher(
    db: Arc<Db>,
    mut ends: mpsc::Receiver<(u64, String, bool)>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(FINISH_BATCH);
    loop {
        let got = tokio::select! {
            got = ends.recv_many(&mut batch, FINISH_BATCH) => got,
            () = stop.cancelled() => 0,
        };
        if got == 0 {
            while batch.len() < FINISH_BATCH * 64 {
                match ends.try_recv() {
                    Ok(end) => batch.push(end),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                record_ends(&db, std::mem::take(&mut batch)).await;
            }
            return;
        }
        record_ends(&db, std::mem::take(&mut batch)).await;
    }
}

async fn record_ends(db: &Arc<Db>, ends: Vec<(u64, String, bool)>) {
    let count = ends.len();
    let result = db
        .call_sql(move |conn, _| outbox::finish_many(conn, &ends))
        .await;
    if let Err(e) = result {
        warn!(error = %e, count, "push notification states not recorded");
    }
}

/// Exponential backoff with jitter: `base × 2^retry`, capped, times 0.5–1.0.
fn backoff(base_ms: u64, retry: u32) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << retry.min(20));
    let capped = Duration::from_millis(exp).min(MAX_BACKOFF);
    capped.mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// One provider: breaker, rate limit, in-flight slot, then the request with retries.
async fn attempt(
    inner: &Arc<Inner>,
    slot: &Slot,
    provider: &str,
    notification: &Notification,
    job: &Job,
) -> Attempt {
    let class = job.class.as_str();
    let allowed = slot
        .breaker
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .allow(Instant::now());
    if !allowed {
        inner.failed(provider, class, "breaker_open");
        return Attempt::Failed;
    }
    // A provider whose rate limit or in-flight share is exhausted is skipped for this
    // notification rather than waited on: the next provider may be free.
    let ready = tokio::time::timeout(SLOT_WAIT, async {
        let permit = Arc::clone(&slot.in_flight).acquire_owned().await.ok();
        slot.limiter.until_ready().await;
        permit
    })
    .await;
    let _permit = match ready {
        Ok(Some(permit)) => permit,
        _ => {
            slot.breaker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .neutral();
            inner.failed(provider, class, "rate_limited");
            return Attempt::Failed;
        }
    };
    inner
        .stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .sent(provider, class);
    let mut retry = 0;
    loop {
        let result =
            match tokio::time::timeout(SEND_TIMEOUT, slot.provider.send(notification)).await {
                Ok(result) => result,
                Err(_) => Err(SendError::Transport("no answer within 30 s".to_owned())),
            };
        let error = match result {
            Ok(()) => {
                slot.breaker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .success();
                inner.metrics.sent(provider);
                inner
                    .stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .accepted(provider, class);
                return Attempt::Accepted;
            }
            Err(error) => error,
        };
        inner.failed(provider, class, error.kind());
        debug!(provider, id = notification.id, error = %error, "push send failed");
        if let SendError::DeadToken(_) = error {
            slot.breaker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .neutral();
            return Attempt::DeadToken;
        }
        if !error.retryable() {
            slot.breaker
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .neutral();
            break;
        }
        let still_allowed = {
            let mut breaker = slot.breaker.lock().unwrap_or_else(|e| e.into_inner());
            breaker.failure(Instant::now());
            retry < inner.config.max_retries && breaker.allow(Instant::now())
        };
        if !still_allowed {
            break;
        }
        let wait = match &error {
            SendError::RateLimited {
                retry_after: Some(after),
                ..
            } => (*after).min(MAX_BACKOFF),
            _ => backoff(inner.config.backoff_ms, retry),
        };
        retry += 1;
        tokio::select! {
            () = inner.stop.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    // The provider failed this notification: evidence against it for this class/device.
    inner
        .selector
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .observe(class, &job.device_key, provider, false);
    Attempt::Failed
}

// ---------------------------------------------------------------------------------------
// receipts and expiry

async fn sweep(inner: Arc<Inner>) {
    let timeout_ms = inner.config.receipt_timeout_secs.saturating_mul(1000);
    let every = Duration::from_millis((timeout_ms / 4).clamp(100, 5000));
    let mut last_prune = Instant::now();
    loop {
        tokio::select! {
            () = inner.stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = now_ms();
        // The bandit learns from its own record of what it sent (sent by this process).
        inner
            .selector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expire(now, timeout_ms);
        // Stats and metrics from the durable record (also what a previous run sent).
        let cutoff = now.saturating_sub(timeout_ms);
        let prune = last_prune.elapsed() >= PRUNE_EVERY;
        if prune {
            last_prune = Instant::now();
        }
        let expired = inner
            .db
            .call_sql(move |conn, _| {
                let expired = outbox::expire(conn, cutoff)?;
                if prune {
                    outbox::prune(conn, now.saturating_sub(KEEP_MS))?;
                }
                Ok(expired)
            })
            .await;
        match expired {
            Ok(expired) => {
                for (_, provider, class) in expired {
                    inner.failed(&provider, &class, "no_receipt");
                }
            }
            Err(e) => warn!(error = %e, "push expiry sweep failed"),
        }
    }
}

#[async_trait]
impl Notifications for Notifier {
    fn wants(&self, appcode: u32, uid: &str) -> bool {
        self.inner.config.enabled && self.inner.db.cache().wants(appcode, uid)
    }

    fn offer(&self, candidate: NotifyCandidate) {
        if !self.wants(candidate.appcode, &candidate.uid) {
            return;
        }
        if !self.rule(candidate.appcode).notifies(candidate.msgtype) {
            self.inner.metrics.skipped("rule", 1);
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.offers.try_send(candidate) {
            self.inner.metrics.skipped("dropped", 1);
        }
    }

    async fn register(
        &self,
        appcode: u32,
        uid: &str,
        device: &str,
        class: DeviceClass,
        token: PushToken,
    ) -> Result<DeviceRecord, NotifyError> {
        registry::validate_ids(uid, device)?;
        check_registration(&class, std::slice::from_ref(&token))?;
        registry::check_providers(std::slice::from_ref(&token), &self.inner.names)?;
        let (uid, device) = (uid.to_owned(), device.to_owned());
        let now = now_ms();
        self.inner
            .db
            .call(move |conn, cache| {
                registry::apply(
                    conn,
                    cache,
                    appcode,
                    &uid,
                    &device,
                    &class,
                    Change::Register(token),
                    now,
                )
            })
            .await?
            .ok_or_else(|| NotifyError::Unavailable("device vanished after register".to_owned()))
    }

    async fn put_device(
        &self,
        appcode: u32,
        uid: &str,
        device: &str,
        class: DeviceClass,
        tokens: Vec<PushToken>,
    ) -> Result<DeviceRecord, NotifyError> {
        registry::validate_ids(uid, device)?;
        check_registration(&class, &tokens)?;
        registry::check_providers(&tokens, &self.inner.names)?;
        let (uid_owned, device_owned) = (uid.to_owned(), device.to_owned());
        let now = now_ms();
        let record_class = class.clone();
        let record = self
            .inner
            .db
            .call(move |conn, cache| {
                registry::apply(
                    conn,
                    cache,
                    appcode,
                    &uid_owned,
                    &device_owned,
                    &class,
                    Change::Put(tokens),
                    now,
                )
            })
            .await?;
        // A device put without tokens is not kept (nothing could reach it): answer with
        // what was asked, empty.
        Ok(record.unwrap_or_else(|| DeviceRecord {
            appcode,
            uid: uid.to_owned(),
            device: device.to_owned(),
            class: record_class,
            tokens: Vec::new(),
            updated_ms: now,
        }))
    }

    async fn devices(
        &self,
        appcode: u32,
        uid: &str,
        device: Option<&str>,
    ) -> Result<Vec<DeviceRecord>, NotifyError> {
        if uid.is_empty() || uid.len() > registry::MAX_ID_BYTES {
            return Ok(Vec::new());
        }
        let uid = uid.to_owned();
        let device = device.map(str::to_owned);
        self.inner
            .db
            .call(move |conn, _| {
                registry::list(conn, appcode, &uid, device.as_deref())
                    .map_err(registry::unavailable)
            })
            .await
    }

    async fn remove(
        &self,
        appcode: u32,
        uid: &str,
        device: &str,
        provider: Option<&str>,
    ) -> Result<u32, NotifyError> {
        if registry::validate_ids(uid, device).is_err() {
            return Ok(0);
        }
        let (uid, device) = (uid.to_owned(), device.to_owned());
        let provider = provider.map(str::to_owned);
        self.inner
            .db
            .call(move |conn, cache| {
                registry::remove(conn, cache, appcode, &uid, &device, provider.as_deref())
            })
            .await
    }

    async fn receipts(
        &self,
        appcode: u32,
        uid: &str,
        device: &str,
        ids: &[u64],
    ) -> Result<u32, NotifyError> {
        if ids.is_empty() || registry::validate_ids(uid, device).is_err() {
            return Ok(0);
        }
        let ids: Vec<u64> = ids.iter().copied().take(MAX_RECEIPT_IDS).collect();
        let (uid, device) = (uid.to_owned(), device.to_owned());
        let now = now_ms();
        let key = device_key(appcode, &uid, &device);
        let found = self
            .inner
            .db
            .call(move |conn, _| {
                outbox::receipts(conn, appcode, &uid, &device, &ids, now)
                    .map_err(registry::unavailable)
            })
            .await?;
        for receipt in &found {
            let latency = if receipt.late {
                None
            } else {
                let mut selector = self
                    .inner
                    .selector
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                match selector.receipt(receipt.id, now) {
                    Some(outcome) => outcome.latency_ms,
                    None => {
                        // Sent by a previous run: the bandit still learns the success.
                        selector.observe(&receipt.class, &key, &receipt.provider, true);
                        Some(now.saturating_sub(receipt.sent_ms))
                    }
                }
            };
            self.inner
                .stats
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .receipt(&receipt.provider, &receipt.class, latency);
            self.inner.metrics.receipted(&receipt.provider);
        }
        Ok(u32::try_from(found.len()).unwrap_or(u32::MAX))
    }

    async fn provider_stats(&self) -> Vec<ProviderStats> {
        let now = Instant::now();
        let stats = self.inner.stats.lock().unwrap_or_else(|e| e.into_inner());
        let selector = self
            .inner
            .selector
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.inner
            .names
            .iter()
            .filter_map(|name| {
                let slot = self.inner.slots.get(name)?;
                let breaker = slot
                    .breaker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .state(now);
                let mut classes = stats.classes(name);
                for class in &mut classes {
                    class.estimate = selector.estimate(&class.class, name);
                }
                Some(ProviderStats {
                    provider: name.clone(),
                    kind: slot.provider.kind().to_owned(),
                    breaker: breaker.as_str().to_owned(),
                    classes,
                })
            })
            .collect()
    }
}
