//! [`SqliteQueue`]: the single-node durable bus, one SQLite file.
//!
//! What must survive a crash is small: which messages exist, with every field, and which of
//! them are dead-lettered. That goes to SQLite in WAL mode with `synchronous=FULL`, written by
//! ONE writer thread that owns the only write connection and does group commit (the same
//! design as the message store): callers queue requests on a bounded channel, the writer
//! takes a first one, drains what else is queued (up to `max_batch`), applies all of it in one
//! transaction, commits (one fsync) and only then answers each caller. So `publish` returns
//! after its message is on disk, and many concurrent publishes share one fsync.
//!
//! Everything that changes on every delivery lives in memory: per topic, the ids of the
//! ready messages (in id = publish order), the leases (id → deadline, attempt) and the nacked
//! messages waiting for their retry time, plus a [`Notify`] that wakes waiting fetchers. A
//! fetch leases ids under a short lock and reads the bodies on a read-only connection, so it
//! never waits behind a commit. Leases have no timer of their own: every call first moves
//! expired leases back to ready (or to the dead letters), and a waiting fetch sleeps until the
//! earliest lease or retry deadline of its topic (or a notification), never polling.
//!
//! Consequences, by design: delivery is at-least-once. After a restart every message that
//! was not acked and not dead-lettered is ready again with its attempt count back at 0 (a
//! lease held before the restart is void, so its message is delivered again). An ack deletes
//! the row before it returns; a dead-letter or replay is written right after the in-memory
//! change, and if that write fails or the process dies first the message comes back *ready*
//! after a restart, never lost. The writer re-reads the in-memory dead flag when it applies
//! such a write, so writes queued in any order still leave the last state on disk.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use longlink_sqlite::{
    Checkpointer, LockError, ReadError, ReadPool, WriterError, WriterHandle, bits_from_u64,
    u64_from_bits,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::{Bus, BusError, BusMessage, Leased, TopicQueue, TopicStats};

/// Most messages one `fetch` leases and one `dead_letters` call lists; larger requests are
/// cut to this.
pub const MAX_FETCH: usize = 1000;
/// Most ids in one `ack`, `nack` or `replay`; more is [`BusError::InvalidArgument`].
pub const MAX_IDS: usize = 10_000;
/// Longest `fetch` wait; longer waits are cut to this.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Longest lease and longest nack `retry_after`; longer ones are cut to this.
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);

/// Schema version kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;
/// `id` is AUTOINCREMENT so an id is never reused, not even after the newest message was
/// acked (deleted) and the process restarted: a late ack of an old id must not hit a new
/// message. `log_id` and `received_ms` keep the u64 bit pattern (SQLite integers are signed).
const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    topic         TEXT    NOT NULL,
    appcode       INTEGER NOT NULL,
    uid           TEXT    NOT NULL,
    device_id     TEXT    NOT NULL,
    msgtype       INTEGER NOT NULL,
    client_msg_id TEXT    NOT NULL,
    payload       BLOB    NOT NULL,
    log_id        INTEGER NOT NULL,
    received_ms   INTEGER NOT NULL,
    dead          INTEGER NOT NULL DEFAULT 0,  -- 1: in the topic's dead-letter list
    attempts      INTEGER NOT NULL DEFAULT 0   -- attempts made, kept for dead letters only
) STRICT;
";

/// How long a write waits for room in a full write queue before `Unavailable`.
const WRITE_QUEUE_WAIT: Duration = Duration::from_secs(1);
/// How long a write waits for its commit; after that its outcome is unknown to the caller.
const WRITE_REPLY_WAIT: Duration = Duration::from_secs(30);
/// How long a read waits for a pooled connection plus its query.
const READ_WAIT: Duration = Duration::from_secs(10);
/// How long `close` waits for the writer to drain.
const CLOSE_WAIT: Duration = Duration::from_secs(30);
/// Read-only connections in the read pool.
const READ_CONNECTIONS: usize = 4;

/// Tuning of a [`SqliteQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    /// Deliveries of a message before it is dead-lettered; default 5.
    pub max_attempts: u32,
    /// Most messages one topic holds (ready, in flight and dead-lettered); a publish beyond
    /// is refused with [`BusError::Full`]. Default 1,000,000.
    pub max_backlog: u64,
    /// Capacity of the channel to the writer thread, in requests; default 4096.
    pub write_queue: usize,
    /// Most requests committed in one transaction; default 512.
    pub max_batch: usize,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            max_backlog: 1_000_000,
            write_queue: 4096,
            max_batch: 512,
        }
    }
}

/// The single-node durable bus: a [`Bus`] to publish c2s messages to and a [`TopicQueue`] to
/// consume them from, kept in one SQLite file. See the module docs for the design.
///
/// Details of this implementation of the [`TopicQueue`] contract:
/// - `publish` returns once the message is committed (fsync'd); [`BusError::Full`] when its
///   topic holds `max_backlog` messages, dead letters included (they take disk too).
/// - `ack` removes any held, not dead-lettered message of the topic by id, also one whose
///   lease already ran out (its consumer did finish it) or was leased before a restart;
///   dead letters are left alone (only `replay` takes them back).
/// - `nack` counts only messages currently leased.
/// - A fetch that is dropped before it returns gives its leases back uncounted.
/// - In [`TopicStats`], nacked messages waiting for their retry time count as `ready`.
/// - Limits: [`MAX_FETCH`], [`MAX_IDS`], [`MAX_WAIT`], [`MAX_LEASE`]; `max` and `lease` of a
///   fetch must not be 0.
///
/// Dropping the queue stops the writer after it has drained its queue and blocks until it
/// has; [`SqliteQueue::close`] does the same without blocking an async worker.
pub struct SqliteQueue {
    options: QueueOptions,
    topics: Arc<Mutex<Topics>>,
    /// The queue to the writer thread; stopped (drained and joined) on drop.
    writes: WriterHandle<WriteOp>,
    readers: Arc<ReadPool>,
    /// Stopped by `close` or on drop.
    checkpointer: Mutex<Option<Checkpointer>>,
    /// Held (locked) until closed: a second queue on the same file would hand out leases of
    /// its own.
    file_lock: Mutex<Option<File>>,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue")
            .field("path", &self.readers.path())
            .field("options", &self.options)
            .field("closed", &self.writes.is_closed())
            .finish_non_exhaustive()
    }
}

impl SqliteQueue {
    /// Opens (creating) the database file at `path` and starts the writer thread. Every
    /// message on disk that is not dead-lettered is ready, with attempt count 0.
    ///
    /// Also creates `<path>.lock`, locked while the queue is open.
    ///
    /// # Errors
    /// [`BusError::InvalidArgument`] if an option is 0; [`BusError::Unavailable`] if the file
    /// is in use by another open queue, or cannot be created, opened or put in WAL mode, or
    /// has a newer schema.
    pub fn open(path: &Path, options: QueueOptions) -> Result<Self, BusError> {
        for (name, zero) in [
            ("max_attempts", options.max_attempts == 0),
            ("max_backlog", options.max_backlog == 0),
            ("write_queue", options.write_queue == 0),
            ("max_batch", options.max_batch == 0),
        ] {
            if zero {
                return Err(BusError::InvalidArgument(format!(
                    "{name} must be at least 1"
                )));
            }
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                BusError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let file_lock = lock_file(path)?;
        let conn = open_writer_connection(path).map_err(|e| sqlite_unavailable("open", &e))?;
        let topics = load_topics(&conn).map_err(|e| sqlite_unavailable("load", &e))?;
        let topics = Arc::new(Mutex::new(topics));
        let checkpointer = Checkpointer::spawn(path, "longlink-bus-checkpoint")
            .map_err(|e| sqlite_unavailable("open checkpointer", &e))?;
        let readers = ReadPool::open(path.to_path_buf(), READ_CONNECTIONS, open_reader_connection)
            .map_err(|e| sqlite_unavailable("open reader", &e))?;
        let readers = Arc::new(readers);
        let writer = Writer {
            conn,
            topics: Arc::clone(&topics),
        };
        let max_batch = options.max_batch;
        let writes = WriterHandle::spawn("longlink-bus-writer", options.write_queue, move |rx| {
            writer.run(rx, max_batch);
        })
        .map_err(|e| BusError::Unavailable(format!("cannot start writer thread: {e}")))?;
        Ok(Self {
            options,
            topics,
            writes,
            readers,
            checkpointer: Mutex::new(Some(checkpointer)),
            file_lock: Mutex::new(Some(file_lock)),
        })
    }

    /// Stops accepting requests, lets the writer commit everything queued before this call,
    /// and returns when the writer thread has closed its connection; then releases the file,
    /// which another `open` may take. Waiting fetches return [`BusError::Unavailable`]. Later
    /// calls return `Ok(())` at once; every other method then returns `Unavailable`.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] if the writer did not finish within 30 s.
    pub async fn close(&self) -> Result<(), BusError> {
        if !self.writes.mark_closed() {
            return Ok(());
        }
        let notifies: Vec<Arc<Notify>> = lock(&self.topics)
            .values()
            .map(|t| Arc::clone(&t.notify))
            .collect();
        notifies.iter().for_each(|n| n.notify_waiters());
        self.writes.drain(CLOSE_WAIT).await.map_err(writer_error)?;
        let checkpointer = self
            .checkpointer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(checkpointer) = checkpointer {
            // Joining waits for at most one running PASSIVE checkpoint.
            let _ = tokio::task::spawn_blocking(move || checkpointer.stop()).await;
        }
        self.readers.close();
        drop(
            self.file_lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        Ok(())
    }

    fn check_open(&self) -> Result<(), BusError> {
        self.writes.check_open().map_err(writer_error)
    }

    /// Queues a write op, waiting at most [`WRITE_QUEUE_WAIT`] for room.
    async fn submit(&self, op: WriteOp) -> Result<(), BusError> {
        self.writes
            .submit(op, WRITE_QUEUE_WAIT)
            .await
            .map_err(writer_error)
    }

    /// Waits for the writer's answer, at most [`WRITE_REPLY_WAIT`].
    async fn await_reply(&self, reply_rx: Reply) -> Result<(), BusError> {
        self.writes
            .await_reply(reply_rx, WRITE_REPLY_WAIT)
            .await
            .map_err(writer_error)?
    }

    /// Queues `op` built around a fresh reply channel and waits for its commit.
    async fn write(&self, op: impl FnOnce(ReplyTx) -> WriteOp) -> Result<(), BusError> {
        let (reply, reply_rx) = oneshot::channel();
        self.submit(op(reply)).await?;
        self.await_reply(reply_rx).await
    }

    /// Writes the in-memory dead flag (and attempts) of `ids` of `topic` to disk.
    async fn persist_dead(&self, topic: &str, ids: &[u64]) -> Result<(), BusError> {
        for chunk in ids.chunks(MAX_IDS) {
            self.write(|reply| WriteOp::SyncDead {
                topic: topic.to_owned(),
                ids: chunk.to_vec(),
                reply,
            })
            .await?;
        }
        Ok(())
    }

    /// [`Self::persist_dead`] for messages that expired into the dead letters on the way;
    /// a failure is logged (the message would come back ready after a restart).
    async fn persist_expired(&self, topic: &str, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        debug!(
            topic,
            count = ids.len(),
            "leases expired into the dead letters"
        );
        if let Err(err) = self.persist_dead(topic, ids).await {
            warn!(topic, error = %err, "could not persist dead letters");
        }
    }

    /// Runs `query` on a pooled read-only connection in the blocking pool.
    async fn read<T, F>(&self, query: F) -> Result<T, BusError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.check_open()?;
        Arc::clone(&self.readers)
            .read(READ_WAIT, query)
            .await
            .map_err(|e| match e {
                ReadError::Closed => closed_error(),
                other => BusError::Unavailable(other.to_string()),
            })
    }

    /// The messages of `ids` ((id, attempt)), in that order. Ids whose row is gone (acked
    /// meanwhile) are left out, and dropped from memory if still there.
    async fn read_messages(
        &self,
        topic: &str,
        ids: Vec<(u64, u32)>,
    ) -> Result<Vec<Leased>, BusError> {
        let wanted: Vec<u64> = ids.iter().map(|(id, _)| *id).collect();
        let found = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(SELECT_MESSAGE_SQL)?;
                let mut out = Vec::with_capacity(ids.len());
                for (id, attempt) in ids {
                    let Ok(key) = i64::try_from(id) else { continue };
                    if let Some(message) = stmt.query_row([key], read_message).optional()? {
                        out.push(Leased {
                            id,
                            attempt,
                            message,
                        });
                    }
                }
                Ok(out)
            })
            .await?;
        if found.len() < wanted.len() {
            let found_ids: BTreeSet<u64> = found.iter().map(|l| l.id).collect();
            let mut topics = lock(&self.topics);
            if let Some(t) = topics.get_mut(topic) {
                for id in wanted.iter().filter(|id| !found_ids.contains(id)) {
                    if t.remove(*id).is_some() {
                        warn!(topic, id, "message row missing, dropped from the queue");
                    }
                }
            }
        }
        Ok(found)
    }
}

impl Drop for SqliteQueue {
    fn drop(&mut self) {
        // Ends the writer's loop once the queue is drained, and joins it.
        self.writes.stop();
        let checkpointer = self
            .checkpointer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(checkpointer) = checkpointer {
            checkpointer.stop();
        }
    }
}

#[async_trait]
impl Bus for SqliteQueue {
    async fn publish(&self, message: BusMessage) -> Result<(), BusError> {
        crate::check_topic(&message.topic)?;
        self.check_open()?;
        let mut reservation = Reservation::new(
            &self.topics,
            message.topic.clone(),
            self.options.max_backlog,
        )?;
        let (reply, reply_rx) = oneshot::channel();
        self.submit(WriteOp::Publish {
            message,
            reply,
            id: None,
        })
        .await?;
        // The writer releases the reservation from here on, committed or not.
        reservation.disarm();
        self.await_reply(reply_rx).await
    }
}

#[async_trait]
impl TopicQueue for SqliteQueue {
    async fn fetch(
        &self,
        topic: &str,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Leased>, BusError> {
        crate::check_fetch(topic, max, lease)?;
        self.check_open()?;
        let max = max.min(MAX_FETCH);
        let lease = lease.min(MAX_LEASE);
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        let waiting = Waiting::new(&self.topics, topic);
        loop {
            let notified = waiting.notify.notified();
            tokio::pin!(notified);
            // Registered before looking at the state, so a publish right after is not missed.
            notified.as_mut().enable();
            self.check_open()?;
            let now = Instant::now();
            let lease_until = now + lease;
            let (taken, expired, next_due) = {
                let mut topics = lock(&self.topics);
                let t = topics.entry(topic.to_owned()).or_default();
                let expired = t.promote(now, self.options.max_attempts);
                let taken = t.take(max, lease_until);
                if !taken.is_empty() {
                    // Other waiters recompute their wake-up time with the new lease deadline.
                    t.notify.notify_waiters();
                }
                (taken, expired, t.next_due())
            };
            // Given back if this fetch does not return them (read failed, or dropped).
            let mut giveback = Taken {
                topics: &self.topics,
                topic,
                until: lease_until,
                ids: taken.iter().map(|(id, _)| *id).collect(),
            };
            self.persist_expired(topic, &expired).await;
            if !taken.is_empty() {
                let found = self.read_messages(topic, taken).await?;
                // Ids not found were acked meanwhile (and are out of memory now).
                giveback.ids.clear();
                if !found.is_empty() {
                    return Ok(found);
                }
                continue;
            }
            if now >= deadline {
                return Ok(Vec::new());
            }
            let until = next_due.map_or(deadline, |due| due.min(deadline));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, topic: &str, ids: &[u64]) -> Result<u64, BusError> {
        crate::check_topic(topic)?;
        crate::check_ids(ids)?;
        self.check_open()?;
        // Out of memory first, so nobody leases them while the delete commits; back in (as
        // ready) if the delete fails or this call is dropped before it is through.
        let mut removed = Removed {
            topics: &self.topics,
            topic,
            entries: Vec::new(),
        };
        {
            let mut topics = lock(&self.topics);
            let Some(t) = topics.get_mut(topic) else {
                return Ok(0);
            };
            for &id in ids {
                if t.entries.get(&id).is_some_and(|e| e.status != Status::Dead)
                    && let Some(entry) = t.remove(id)
                {
                    removed.entries.push((id, entry));
                }
            }
        }
        if removed.entries.is_empty() {
            return Ok(0);
        }
        let delete: Vec<u64> = removed.entries.iter().map(|(id, _)| *id).collect();
        self.write(|reply| WriteOp::Delete { ids: delete, reply })
            .await?;
        let count = removed.entries.len() as u64;
        removed.entries.clear();
        Ok(count)
    }

    async fn nack(&self, topic: &str, ids: &[u64], retry_after: Duration) -> Result<u64, BusError> {
        crate::check_topic(topic)?;
        crate::check_ids(ids)?;
        self.check_open()?;
        let now = Instant::now();
        let retry_after = retry_after.min(MAX_LEASE);
        let (count, mut dead) = {
            let mut topics = lock(&self.topics);
            let Some(t) = topics.get_mut(topic) else {
                return Ok(0);
            };
            let mut dead = t.promote(now, self.options.max_attempts);
            let mut count = 0;
            for &id in ids {
                let Some(entry) = t.entries.get(&id) else {
                    continue;
                };
                if !matches!(entry.status, Status::Leased(_)) {
                    continue;
                }
                count += 1;
                let status = if entry.attempt >= self.options.max_attempts {
                    dead.push(id);
                    Status::Dead
                } else if retry_after.is_zero() {
                    Status::Ready
                } else {
                    Status::Delayed(now + retry_after)
                };
                t.set_status(id, status);
            }
            if count > 0 {
                t.notify.notify_waiters();
            }
            (count, dead)
        };
        dead.sort_unstable();
        dead.dedup();
        self.persist_expired(topic, &dead).await;
        Ok(count)
    }

    async fn dead_letters(
        &self,
        topic: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Leased>, BusError> {
        crate::check_topic(topic)?;
        self.check_open()?;
        let limit = limit.min(MAX_FETCH);
        let (wanted, expired) = {
            let mut topics = lock(&self.topics);
            let Some(t) = topics.get_mut(topic) else {
                return Ok(Vec::new());
            };
            let expired = t.promote(Instant::now(), self.options.max_attempts);
            let wanted: Vec<(u64, u32)> = t
                .dead
                .range((Bound::Excluded(after), Bound::Unbounded))
                .take(limit)
                .map(|id| (*id, t.entries.get(id).map_or(0, |e| e.attempt)))
                .collect();
            (wanted, expired)
        };
        self.persist_expired(topic, &expired).await;
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        self.read_messages(topic, wanted).await
    }

    async fn replay(&self, topic: &str, ids: &[u64]) -> Result<u64, BusError> {
        crate::check_topic(topic)?;
        crate::check_ids(ids)?;
        self.check_open()?;
        let (replayed, expired) = {
            let mut topics = lock(&self.topics);
            let Some(t) = topics.get_mut(topic) else {
                return Ok(0);
            };
            let expired = t.promote(Instant::now(), self.options.max_attempts);
            let candidates: Vec<u64> = if ids.is_empty() {
                t.dead.iter().copied().collect()
            } else {
                ids.iter()
                    .copied()
                    .filter(|id| t.dead.contains(id))
                    .collect()
            };
            let mut replayed = Vec::with_capacity(candidates.len());
            for id in candidates {
                if let Some(entry) = t.entries.get_mut(&id)
                    && entry.status == Status::Dead
                {
                    entry.attempt = 0;
                    t.set_status(id, Status::Ready);
                    replayed.push(id);
                }
            }
            if !replayed.is_empty() {
                t.notify.notify_waiters();
            }
            (replayed, expired)
        };
        self.persist_expired(topic, &expired).await;
        self.persist_dead(topic, &replayed).await?;
        Ok(replayed.len() as u64)
    }

    async fn topics(&self) -> Result<Vec<TopicStats>, BusError> {
        self.check_open()?;
        let now = Instant::now();
        let (mut stats, expired) = {
            let mut topics = lock(&self.topics);
            let mut stats = Vec::new();
            let mut expired = Vec::new();
            for (name, t) in topics.iter_mut() {
                let dead = t.promote(now, self.options.max_attempts);
                if !dead.is_empty() {
                    expired.push((name.clone(), dead));
                }
                if t.held {
                    stats.push(TopicStats {
                        topic: name.clone(),
                        ready: (t.ready.len() + t.delayed.len()) as u64,
                        in_flight: t.leases.len() as u64,
                        dead: t.dead.len() as u64,
                    });
                }
            }
            (stats, expired)
        };
        for (topic, ids) in expired {
            self.persist_expired(&topic, &ids).await;
        }
        stats.sort_by(|a, b| a.topic.cmp(&b.topic));
        Ok(stats)
    }
}

fn closed_error() -> BusError {
    BusError::Unavailable("bus closed".to_owned())
}

/// The bus's error for a writer queue error: all are `Unavailable`.
fn writer_error(e: WriterError) -> BusError {
    match e {
        WriterError::Closed => closed_error(),
        WriterError::WriterStopped => BusError::Unavailable("bus writer stopped".to_owned()),
        other => BusError::Unavailable(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// In-memory state.

type Topics = HashMap<String, TopicState>;

fn lock(topics: &Mutex<Topics>) -> MutexGuard<'_, Topics> {
    topics.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a held message is. `Ready` and `Delayed` are "ready" in [`TopicStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Can be leased now.
    Ready,
    /// Nacked; ready again at this time.
    Delayed(Instant),
    /// Leased until this time.
    Leased(Instant),
    /// In the dead-letter list.
    Dead,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Deliveries so far (since open or replay).
    attempt: u32,
    status: Status,
}

/// One topic: every held message by id, indexed by status.
#[derive(Debug, Default)]
struct TopicState {
    /// Woken on anything that may let a waiting fetch lease or change its wake-up time.
    notify: Arc<Notify>,
    /// Holds or held a message since open (listed by `topics`).
    held: bool,
    entries: HashMap<u64, Entry>,
    ready: BTreeSet<u64>,
    delayed: BTreeSet<(Instant, u64)>,
    leases: BTreeSet<(Instant, u64)>,
    dead: BTreeSet<u64>,
    /// Publishes counted against the backlog, not committed yet.
    pending: u64,
}

impl TopicState {
    fn index(&mut self, id: u64, status: Status) {
        match status {
            Status::Ready => self.ready.insert(id),
            Status::Delayed(at) => self.delayed.insert((at, id)),
            Status::Leased(until) => self.leases.insert((until, id)),
            Status::Dead => self.dead.insert(id),
        };
    }

    fn unindex(&mut self, id: u64, status: Status) {
        match status {
            Status::Ready => self.ready.remove(&id),
            Status::Delayed(at) => self.delayed.remove(&(at, id)),
            Status::Leased(until) => self.leases.remove(&(until, id)),
            Status::Dead => self.dead.remove(&id),
        };
    }

    fn insert(&mut self, id: u64, entry: Entry) {
        if let Some(old) = self.entries.insert(id, entry) {
            self.unindex(id, old.status);
        }
        self.index(id, entry.status);
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.entries.remove(&id)?;
        self.unindex(id, entry.status);
        Some(entry)
    }

    /// Moves a held message to `status` (nothing if it is not held).
    fn set_status(&mut self, id: u64, status: Status) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut entry.status, status);
        self.unindex(id, old);
        self.index(id, status);
    }

    /// Expired leases go back to ready, or to the dead letters when they used the last
    /// attempt; nacked messages whose time has come are ready. Returns the newly dead ids.
    fn promote(&mut self, now: Instant, max_attempts: u32) -> Vec<u64> {
        let mut dead = Vec::new();
        while let Some(&(until, id)) = self.leases.first() {
            if until > now {
                break;
            }
            let attempt = self.entries.get(&id).map_or(0, |e| e.attempt);
            if attempt >= max_attempts {
                self.set_status(id, Status::Dead);
                dead.push(id);
            } else {
                self.set_status(id, Status::Ready);
            }
            // A lease without an entry cannot happen; never loop on it anyway.
            self.leases.remove(&(until, id));
        }
        while let Some(&(at, id)) = self.delayed.first() {
            if at > now {
                break;
            }
            self.set_status(id, Status::Ready);
            self.delayed.remove(&(at, id));
        }
        dead
    }

    /// Leases up to `max` ready messages (lowest ids first) until `until`; returns
    /// (id, attempt) of each.
    fn take(&mut self, max: usize, until: Instant) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(id) = self.ready.pop_first() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            entry.attempt = entry.attempt.saturating_add(1);
            entry.status = Status::Leased(until);
            self.leases.insert((until, id));
            out.push((id, entry.attempt));
        }
        out
    }

    /// The earliest lease end or retry time: when something may become ready.
    fn next_due(&self) -> Option<Instant> {
        let lease = self.leases.first().map(|(t, _)| *t);
        let delayed = self.delayed.first().map(|(t, _)| *t);
        match (lease, delayed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Nothing held, nothing coming: the entry exists only for a waiting fetch.
    fn is_unused(&self) -> bool {
        !self.held && self.entries.is_empty() && self.pending == 0
    }
}

/// A publish counted against its topic's backlog until the writer takes over.
struct Reservation<'a> {
    topics: &'a Mutex<Topics>,
    topic: String,
    armed: bool,
}

impl<'a> Reservation<'a> {
    fn new(topics: &'a Mutex<Topics>, topic: String, max_backlog: u64) -> Result<Self, BusError> {
        let mut guard = lock(topics);
        let t = guard.entry(topic.clone()).or_default();
        if t.entries.len() as u64 + t.pending >= max_backlog {
            return Err(BusError::Full(topic));
        }
        t.pending += 1;
        Ok(Self {
            topics,
            topic,
            armed: true,
        })
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Some(t) = lock(self.topics).get_mut(&self.topic)
        {
            t.pending = t.pending.saturating_sub(1);
        }
    }
}

/// Acked entries taken out of memory; put back as ready on drop unless cleared.
struct Removed<'a> {
    topics: &'a Mutex<Topics>,
    topic: &'a str,
    entries: Vec<(u64, Entry)>,
}

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        if self.entries.is_empty() {
            return;
        }
        let mut topics = lock(self.topics);
        let t = topics.entry(self.topic.to_owned()).or_default();
        for (id, entry) in self.entries.drain(..) {
            t.insert(
                id,
                Entry {
                    attempt: entry.attempt,
                    status: Status::Ready,
                },
            );
        }
        t.notify.notify_waiters();
    }
}

/// Leases taken by a fetch, given back on drop unless cleared: ready again, the attempt not
/// counted (only those still under this very lease).
struct Taken<'a> {
    topics: &'a Mutex<Topics>,
    topic: &'a str,
    until: Instant,
    ids: Vec<u64>,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut topics = lock(self.topics);
        let Some(t) = topics.get_mut(self.topic) else {
            return;
        };
        let mut given_back = false;
        for &id in &self.ids {
            let ours = match t.entries.get_mut(&id) {
                Some(entry) if entry.status == Status::Leased(self.until) => {
                    entry.attempt = entry.attempt.saturating_sub(1);
                    true
                }
                _ => false,
            };
            if ours {
                t.set_status(id, Status::Ready);
                given_back = true;
            }
        }
        if given_back {
            t.notify.notify_waiters();
        }
    }
}

/// A fetch's hold on its topic's [`Notify`]. On drop, removes the topic's entry if it was
/// made only for waiting fetches and no other fetch waits on it, so fetches on topics that
/// never get a message do not pile up entries.
struct Waiting<'a> {
    topics: &'a Mutex<Topics>,
    topic: &'a str,
    notify: Arc<Notify>,
}

impl<'a> Waiting<'a> {
    fn new(topics: &'a Mutex<Topics>, topic: &'a str) -> Self {
        let notify = Arc::clone(&lock(topics).entry(topic.to_owned()).or_default().notify);
        Self {
            topics,
            topic,
            notify,
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut topics = lock(self.topics);
        // 2 = the map's and ours. Other holders only make it larger (the entry stays), and
        // every live `Waiting` holds one, so an entry someone waits on is never removed.
        if topics.get(self.topic).is_some_and(|t| {
            t.is_unused()
                && Arc::ptr_eq(&t.notify, &self.notify)
                && Arc::strong_count(&t.notify) == 2
        }) {
            topics.remove(self.topic);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite.

const SELECT_MESSAGE_SQL: &str = "SELECT topic, appcode, uid, device_id, msgtype, client_msg_id, \
     payload, log_id, received_ms FROM messages WHERE id = ?1";

const INSERT_MESSAGE_SQL: &str = "INSERT INTO messages (topic, appcode, uid, device_id, msgtype, \
     client_msg_id, payload, log_id, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// Maps a row of [`SELECT_MESSAGE_SQL`]; out-of-range values become errors, never panics.
fn read_message(row: &rusqlite::Row<'_>) -> rusqlite::Result<BusMessage> {
    Ok(BusMessage {
        topic: row.get(0)?,
        appcode: row.get(1)?,
        uid: row.get(2)?,
        device_id: row.get(3)?,
        msgtype: row.get(4)?,
        client_msg_id: row.get(5)?,
        payload: Bytes::from(row.get::<_, Vec<u8>>(6)?),
        log_id: u64_from_bits(row.get(7)?),
        received_ms: u64_from_bits(row.get(8)?),
    })
}

fn sqlite_unavailable(what: &str, e: &rusqlite::Error) -> BusError {
    BusError::Unavailable(format!("sqlite {what}: {e}"))
}

/// Every message on disk: non-dead ones ready with attempt 0, dead ones dead.
fn load_topics(conn: &Connection) -> rusqlite::Result<Topics> {
    let mut topics = Topics::new();
    let mut stmt = conn.prepare("SELECT id, topic, dead, attempts FROM messages ORDER BY id")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let id = u64::try_from(id).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, id))?;
        let topic: String = row.get(1)?;
        let dead: bool = row.get::<_, i64>(2)? != 0;
        let attempts: i64 = row.get(3)?;
        let t = topics.entry(topic).or_default();
        t.held = true;
        t.insert(
            id,
            if dead {
                Entry {
                    attempt: u32::try_from(attempts).unwrap_or(0),
                    status: Status::Dead,
                }
            } else {
                Entry {
                    attempt: 0,
                    status: Status::Ready,
                }
            },
        );
    }
    Ok(topics)
}

fn lock_file(path: &Path) -> Result<File, BusError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    longlink_sqlite::lock_exclusive(&PathBuf::from(name)).map_err(|e| match e {
        LockError::InUse { .. } => BusError::Unavailable(format!(
            "{} is in use by another open queue",
            path.display()
        )),
        other => BusError::Unavailable(other.to_string()),
    })
}

/// Opens the write connection ([`longlink_sqlite::open_writer`]: WAL, `synchronous=FULL`,
/// checkpoints off the commit path, so none stalls a publish waiting on its commit); schema
/// created or checked.
fn open_writer_connection(path: &Path) -> Result<Connection, rusqlite::Error> {
    let mut conn = longlink_sqlite::open_writer(path)?;
    conn.set_prepared_statement_cache_capacity(16);
    longlink_sqlite::ensure_schema(&mut conn, SCHEMA_VERSION, SCHEMA_SQL)?;
    Ok(conn)
}

/// Opens a connection of the read pool ([`longlink_sqlite::open_read_only`]).
fn open_reader_connection(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = longlink_sqlite::open_read_only(path)?;
    conn.set_prepared_statement_cache_capacity(4);
    Ok(conn)
}

// ---------------------------------------------------------------------------------------------
// The writer thread.

type ReplyTx = oneshot::Sender<Result<(), BusError>>;
type Reply = oneshot::Receiver<Result<(), BusError>>;

type Command = longlink_sqlite::Command<WriteOp>;

/// A queued write, answered only after its transaction committed.
enum WriteOp {
    /// Insert; after the commit the writer adds the id to the topic's ready set.
    Publish {
        message: BusMessage,
        reply: ReplyTx,
        /// Filled inside the transaction.
        id: Option<u64>,
    },
    /// Acked: delete the rows.
    Delete { ids: Vec<u64>, reply: ReplyTx },
    /// Write the current in-memory dead flag and attempts of these messages.
    SyncDead {
        topic: String,
        ids: Vec<u64>,
        reply: ReplyTx,
    },
}

impl WriteOp {
    fn reply(self, result: Result<(), BusError>) {
        let reply = match self {
            Self::Publish { reply, .. }
            | Self::Delete { reply, .. }
            | Self::SyncDead { reply, .. } => reply,
        };
        // A caller that gave up waiting is not an error.
        let _ = reply.send(result);
    }
}

struct Writer {
    conn: Connection,
    topics: Arc<Mutex<Topics>>,
}

impl longlink_sqlite::BatchWriter for Writer {
    type Op = WriteOp;

    fn commit(&mut self, batch: Vec<WriteOp>) {
        self.commit_batch(batch);
    }

    /// Queued after a close: "bus closed", nothing of them was written; the backlog
    /// reservations of refused publishes are released.
    fn refuse(&mut self, refused: Vec<WriteOp>) {
        self.release_publishes(&refused);
        refused
            .into_iter()
            .for_each(|op| op.reply(Err(closed_error())));
    }

    fn into_connection(self) -> Connection {
        self.conn
    }
}

impl Writer {
    /// The writer thread ([`longlink_sqlite::run_writer`]).
    fn run(self, rx: mpsc::Receiver<Command>, max_batch: usize) {
        longlink_sqlite::run_writer(self, rx, max_batch);
    }

    /// Applies `batch` in one transaction; answers every op after the commit, or every op
    /// with `Unavailable` if anything failed (the transaction is rolled back as a whole).
    fn commit_batch(&mut self, mut batch: Vec<WriteOp>) {
        match self.apply_batch(&mut batch) {
            Ok(()) => {
                self.publish_committed(&batch);
                batch.into_iter().for_each(|op| op.reply(Ok(())));
            }
            Err(e) => {
                warn!(error = %e, requests = batch.len(), "bus batch rolled back");
                self.release_publishes(&batch);
                for op in batch {
                    op.reply(Err(BusError::Unavailable(format!("write failed: {e}"))));
                }
            }
        }
    }

    fn apply_batch(&mut self, batch: &mut [WriteOp]) -> rusqlite::Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for op in batch.iter_mut() {
            match op {
                WriteOp::Publish { message, id, .. } => {
                    tx.prepare_cached(INSERT_MESSAGE_SQL)?.execute(params![
                        message.topic,
                        message.appcode,
                        message.uid,
                        message.device_id,
                        message.msgtype,
                        message.client_msg_id,
                        message.payload.as_ref(),
                        bits_from_u64(message.log_id),
                        bits_from_u64(message.received_ms),
                    ])?;
                    let rowid = tx.last_insert_rowid();
                    *id = Some(
                        u64::try_from(rowid)
                            .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, rowid))?,
                    );
                }
                WriteOp::Delete { ids, .. } => {
                    let mut stmt = tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
                    for id in ids.iter().filter_map(|id| i64::try_from(*id).ok()) {
                        stmt.execute([id])?;
                    }
                }
                WriteOp::SyncDead { topic, ids, .. } => {
                    // The state now, not when the op was queued: the last write wins on disk
                    // whatever order the ops were queued in.
                    let states: Vec<(i64, bool, u32)> = {
                        let topics = lock(&self.topics);
                        let Some(t) = topics.get(topic.as_str()) else {
                            continue;
                        };
                        ids.iter()
                            .filter_map(|id| {
                                let entry = t.entries.get(id)?;
                                Some((
                                    i64::try_from(*id).ok()?,
                                    entry.status == Status::Dead,
                                    entry.attempt,
                                ))
                            })
                            .collect()
                    };
                    let mut stmt = tx.prepare_cached(
                        "UPDATE messages SET dead = ?2, attempts = ?3 WHERE id = ?1",
                    )?;
                    for (id, dead, attempts) in states {
                        stmt.execute(params![id, dead, attempts])?;
                    }
                }
            }
        }
        tx.commit()
    }

    /// Makes committed publishes visible to fetchers, in id order, and wakes them.
    fn publish_committed(&self, batch: &[WriteOp]) {
        let mut notifies: Vec<Arc<Notify>> = Vec::new();
        {
            let mut topics = lock(&self.topics);
            for op in batch {
                if let WriteOp::Publish {
                    message,
                    id: Some(id),
                    ..
                } = op
                {
                    let t = topics.entry(message.topic.clone()).or_default();
                    t.pending = t.pending.saturating_sub(1);
                    t.held = true;
                    t.insert(
                        *id,
                        Entry {
                            attempt: 0,
                            status: Status::Ready,
                        },
                    );
                    if !notifies.iter().any(|n| Arc::ptr_eq(n, &t.notify)) {
                        notifies.push(Arc::clone(&t.notify));
                    }
                    debug!(
                        log_id = message.log_id,
                        topic = %message.topic,
                        id,
                        "c2s message queued"
                    );
                }
            }
        }
        notifies.iter().for_each(|n| n.notify_waiters());
    }

    /// Releases the backlog reservations of publishes that were not committed.
    fn release_publishes(&self, ops: &[WriteOp]) {
        let mut topics = lock(&self.topics);
        for op in ops {
            if let WriteOp::Publish { message, .. } = op
                && let Some(t) = topics.get_mut(message.topic.as_str())
            {
                t.pending = t.pending.saturating_sub(1);
            }
        }
    }
}
