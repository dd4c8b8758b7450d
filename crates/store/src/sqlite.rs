//! [`SqliteStore`]: the embedded, single-node [`MessageStore`].
//!
//! One SQLite file (`messages.sqlite3`) in WAL mode with `synchronous=FULL`, so a commit has
//! reached the disk (fsync of the WAL) when it returns. Writes (appends and acks) go through a
//! bounded queue to ONE writer thread that owns the only write connection and does group
//! commit: it blocks for a first request, drains what else is queued (up to `max_batch`),
//! applies all of it in one transaction, commits, and only then answers each request. Reads run
//! on a small pool of read-only connections through `spawn_blocking`; WAL lets them read a
//! consistent snapshot while the writer commits. An in-memory filter of the users that may
//! have inbox entries ([`pending`]) answers `pull_offline` of everyone else without a read.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use longlink_sqlite::{
    Checkpointer, LockError, ReadError, ReadPool, WriterError, WriterHandle, bits_from_u64,
    u64_from_bits,
};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::{
    AckOutcome, AppendOutcome, Conversation, ConversationPage, Delivered, DeliveryState, Direction,
    MAX_ACK_IDS, MAX_UNREAD_COUNT, MessageStore, NewMessage, NewS2c, Page, ReadMark, S2cOutcome,
    StoreError, StoredMessage, UserKey, effective_limit, validate_id, validate_user,
};

mod pending;
use pending::PendingFilter;

/// File name of the database inside the store directory.
const DB_FILE: &str = "messages.sqlite3";
/// Lock file that keeps a second process (or a second `SqliteStore`) off the same directory:
/// two writers would each assign msgids from their own `last_msgid`.
const LOCK_FILE: &str = "messages.lock";
/// Schema version kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 3;
const SCHEMA_SQL: &str = include_str!("sqlite/schema.sql");
/// `UPGRADES[i]` turns schema version `i + 1` into `i + 2`.
const UPGRADES: [&str; 2] = [
    include_str!("sqlite/upgrade_2.sql"),
    include_str!("sqlite/upgrade_3.sql"),
];
/// Page size of a new database file (an existing one keeps its own): 1 KiB instead of
/// SQLite's 4 KiB. Each message dirties a leaf in several B-trees (inbox, histories,
/// idempotency key), and a WAL commit writes each dirty page whole, so the page size sets
/// the bytes (and the writer's checksum, copy and `pwrite` CPU) per message. Measured in the
/// c2c bench at 10,000 msg/s offered: 37 KB → 15 KB written per message, store writer CPU per
/// message −30% (docs/benchmarks.md, "After the store changes").
const PAGE_SIZE: u32 = 1024;

/// How long a write waits for room in a full write queue before `Unavailable`.
const WRITE_QUEUE_WAIT: Duration = Duration::from_secs(1);
/// How long a write waits for its commit. After that the outcome is unknown to the caller,
/// who retries with the same client message id.
const WRITE_REPLY_WAIT: Duration = Duration::from_secs(30);
/// How long a read waits for a pooled connection plus its query.
const READ_WAIT: Duration = Duration::from_secs(10);
/// How long `close` waits for the writer to drain.
const CLOSE_WAIT: Duration = Duration::from_secs(30);
/// msgid = max(last + 1, unix_ms << MSGID_TIME_SHIFT): about a million ids per millisecond.
const MSGID_TIME_SHIFT: u32 = 20;

/// Tuning of a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Capacity of the write queue in requests (appends and acks); default 4096.
    pub write_queue: usize,
    /// Most requests committed in one transaction; default 512.
    pub max_batch: usize,
    /// Read-only connections in the read pool; default 4.
    pub read_connections: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            write_queue: 4096,
            max_batch: 512,
            read_connections: 4,
        }
    }
}

/// Counters of the writer thread, for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions attempted (committed or failed).
    pub batches: u64,
    /// Write requests (appends and acks) in those transactions.
    pub requests: u64,
    /// Transactions that failed and were rolled back; their requests got `Unavailable`.
    pub failed_batches: u64,
}

#[derive(Debug, Default)]
struct WriterCounters {
    batches: AtomicU64,
    requests: AtomicU64,
    failed_batches: AtomicU64,
}

/// The embedded, single-node [`MessageStore`]: SQLite, one writer thread with group commit,
/// a pool of read-only connections.
///
/// Dropping the store stops the writer after it has drained its queue, and blocks until it
/// has; [`SqliteStore::close`] does the same without blocking an async worker.
pub struct SqliteStore {
    /// The queue to the writer thread; stopped (drained and joined) on drop.
    writes: WriterHandle<WriteOp>,
    readers: Arc<ReadPool>,
    counters: Arc<WriterCounters>,
    /// Stopped and joined on drop.
    checkpointer: Option<Checkpointer>,
    /// Users who may have inbox entries; shared with the writer, which marks them.
    pending: Arc<PendingFilter>,
    /// Held (locked) for the store's whole life.
    _dir_lock: File,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.readers.path())
            .field("closed", &self.writes.is_closed())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating) `dir/messages.sqlite3`; starts the writer thread.
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] if an option is 0; [`StoreError::Unavailable`] if the
    /// directory cannot be created, is used by another open store, or the database cannot be
    /// opened, has a newer schema, or cannot be put in WAL mode.
    pub fn open(dir: &Path, opts: SqliteOptions) -> Result<Self, StoreError> {
        for (name, value) in [
            ("write_queue", opts.write_queue),
            ("max_batch", opts.max_batch),
            ("read_connections", opts.read_connections),
        ] {
            if value == 0 {
                return Err(StoreError::InvalidArgument(format!(
                    "{name} must be at least 1"
                )));
            }
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let dir_lock = lock_dir(dir)?;
        let path = dir.join(DB_FILE);
        let conn = open_writer_connection(&path).map_err(|e| sqlite_unavailable("open", &e))?;
        let last_msgid: i64 = conn
            .query_row("SELECT COALESCE(MAX(msgid), 0) FROM messages", [], |row| {
                row.get(0)
            })
            .map_err(|e| sqlite_unavailable("read last msgid", &e))?;
        // Before the writer or any reader runs: nothing can insert an entry meanwhile.
        let pending = Arc::new(
            PendingFilter::load(&conn).map_err(|e| sqlite_unavailable("load inbox owners", &e))?,
        );
        debug!(users = pending.len(), "inbox owners loaded");

        let checkpointer = Checkpointer::spawn(&path, "longlink-store-checkpoint")
            .map_err(|e| sqlite_unavailable("open checkpointer", &e))?;
        let readers = ReadPool::open(path, opts.read_connections, open_reader_connection)
            .map_err(|e| sqlite_unavailable("open reader", &e))?;
        let readers = Arc::new(readers);
        let counters = Arc::new(WriterCounters::default());
        let writer = Writer {
            conn,
            last_msgid,
            counters: Arc::clone(&counters),
            pending: Arc::clone(&pending),
        };
        let max_batch = opts.max_batch;
        let writes = WriterHandle::spawn("longlink-store-writer", opts.write_queue, move |rx| {
            writer.run(rx, max_batch);
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot start writer thread: {e}")))?;

        Ok(Self {
            writes,
            readers,
            counters,
            checkpointer: Some(checkpointer),
            pending,
            _dir_lock: dir_lock,
        })
    }

    /// Stops accepting requests, lets the writer commit everything queued before this call,
    /// and returns when the writer thread has closed its connection. Later calls return
    /// `Ok(())` at once; every other method then returns [`StoreError::Closed`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the writer did not finish within 30 s.
    pub async fn close(&self) -> Result<(), StoreError> {
        if !self.writes.mark_closed() {
            return Ok(());
        }
        self.writes.drain(CLOSE_WAIT).await.map_err(writer_error)
    }

    /// Counters of the writer thread since open.
    pub fn writer_stats(&self) -> WriterStats {
        WriterStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
            failed_batches: self.counters.failed_batches.load(Ordering::Relaxed),
        }
    }

    /// Users the in-memory filter says may have inbox entries (about 15 bytes each): every
    /// user who has ever been sent a message, since entries stay for devices yet to ack them.
    pub fn pending_users(&self) -> usize {
        self.pending.len()
    }

    fn check_open(&self) -> Result<(), StoreError> {
        self.writes.check_open().map_err(writer_error)
    }

    /// Queues a write op, waiting at most [`WRITE_QUEUE_WAIT`] for room.
    async fn submit(&self, op: WriteOp) -> Result<(), StoreError> {
        self.writes
            .submit(op, WRITE_QUEUE_WAIT)
            .await
            .map_err(writer_error)
    }

    /// Waits for the writer's answer, at most [`WRITE_REPLY_WAIT`].
    async fn await_reply<T>(
        &self,
        reply_rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.writes
            .await_reply(reply_rx, WRITE_REPLY_WAIT)
            .await
            .map_err(writer_error)?
    }

    /// Runs `query` on a pooled read-only connection in the blocking pool.
    async fn read<T, F>(&self, query: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.check_open()?;
        Arc::clone(&self.readers)
            .read(READ_WAIT, query)
            .await
            .map_err(|e| match e {
                ReadError::Closed => StoreError::Closed,
                other => StoreError::Unavailable(other.to_string()),
            })
    }
}

/// The store's error for a writer queue error: `Closed`, or `Unavailable` with its text.
fn writer_error(e: WriterError) -> StoreError {
    match e {
        WriterError::Closed => StoreError::Closed,
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Ends the writer's loop once the queue is drained, and joins it.
        self.writes.stop();
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.stop();
        }
    }
}

#[async_trait::async_trait]
impl MessageStore for SqliteStore {
    async fn append(&self, msg: NewMessage) -> Result<AppendOutcome, StoreError> {
        validate_user(&msg.from, "from")?;
        validate_user(&msg.to, "to")?;
        validate_id(&msg.from_device, "from_device")?;
        validate_id(&msg.client_msg_id, "client_msg_id")?;
        let (reply, reply_rx) = oneshot::channel();
        self.submit(WriteOp::Append {
            msg,
            reply,
            outcome: None,
        })
        .await?;
        self.await_reply(reply_rx).await
    }

    async fn append_s2c(&self, msg: NewS2c) -> Result<S2cOutcome, StoreError> {
        validate_user(&UserKey::new(msg.appcode, msg.from.as_str()), "from")?;
        for uid in &msg.recipients {
            validate_user(&UserKey::new(msg.appcode, uid.as_str()), "recipient")?;
        }
        let (reply, reply_rx) = oneshot::channel();
        self.submit(WriteOp::AppendS2c {
            msg,
            reply,
            outcome: None,
        })
        .await?;
        self.await_reply(reply_rx).await
    }

    async fn pull_offline(
        &self,
        owner: &UserKey,
        device: &str,
        cursor: u64,
        limit: u32,
    ) -> Result<Page, StoreError> {
        validate_user(owner, "owner")?;
        validate_id(device, "device")?;
        let limit = effective_limit(limit);
        if !self.pending.may_have(owner.appcode, &owner.uid) {
            // No entry at all, so nothing for any device past any cursor: the common answer
            // to a login's redelivery, given without the blocking pool's thread hand-off.
            self.check_open()?;
            return Ok(Page::from_overfetched(Vec::new(), limit, cursor));
        }
        let owner = owner.clone();
        let device = device.to_owned();
        let messages = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(PULL_OFFLINE_SQL)?;
                let rows = stmt.query_map(
                    params![
                        owner.appcode,
                        owner.uid,
                        lower_bound(cursor),
                        device,
                        i64::from(limit) + 1
                    ],
                    read_message,
                )?;
                rows.map(|row| {
                    row.map(|mut message| {
                        if message.is_s2c() {
                            // One s2c row serves every recipient: this copy is the owner's.
                            message.to.uid.clone_from(&owner.uid);
                        }
                        message
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(Page::from_overfetched(messages, limit, cursor))
    }

    async fn ack(
        &self,
        owner: &UserKey,
        device: &str,
        msgids: &[u64],
    ) -> Result<AckOutcome, StoreError> {
        crate::validate_ack(owner, device, msgids)?;
        if msgids.is_empty() {
            self.check_open()?;
            return Ok(AckOutcome::default());
        }
        let (reply, reply_rx) = oneshot::channel();
        self.submit(WriteOp::Ack {
            owner: owner.clone(),
            device: device.to_owned(),
            msgids: msgids.to_vec(),
            reply,
            outcome: None,
        })
        .await?;
        self.await_reply(reply_rx).await
    }

    async fn history(
        &self,
        owner: &UserKey,
        peer: &UserKey,
        cursor: u64,
        direction: Direction,
        limit: u32,
    ) -> Result<Page, StoreError> {
        validate_user(owner, "owner")?;
        validate_user(peer, "peer")?;
        let limit = effective_limit(limit);
        let owner = owner.clone();
        let peer = peer.clone();
        let messages = self
            .read(move |conn| {
                let (sql, bound) = match direction {
                    Direction::Older => (HISTORY_OLDER_SQL, upper_bound_inclusive(cursor)),
                    Direction::Newer => (HISTORY_NEWER_SQL, lower_bound(cursor)),
                };
                let mut stmt = conn.prepare_cached(sql)?;
                let rows = stmt.query_map(
                    params![
                        owner.appcode,
                        owner.uid,
                        peer.appcode,
                        peer.uid,
                        bound,
                        i64::from(limit) + 1
                    ],
                    read_message,
                )?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(Page::from_overfetched(messages, limit, cursor))
    }

    async fn record_pushed(
        &self,
        owner: &UserKey,
        device: &str,
        msgids: &[u64],
    ) -> Result<(), StoreError> {
        validate_user(owner, "owner")?;
        validate_id(device, "device")?;
        if msgids.is_empty() || msgids.len() > MAX_ACK_IDS {
            return Ok(());
        }
        self.submit(WriteOp::Pushed {
            owner: owner.clone(),
            device: device.to_owned(),
            msgids: msgids.to_vec(),
        })
        .await
    }

    async fn delivery_state(
        &self,
        owner: &UserKey,
        device: &str,
        msgid: u64,
    ) -> Result<Option<DeliveryState>, StoreError> {
        validate_user(owner, "owner")?;
        validate_id(device, "device")?;
        let Ok(id) = i64::try_from(msgid) else {
            return Ok(None);
        };
        let owner = owner.clone();
        let device = device.to_owned();
        self.read(move |conn| {
            let in_inbox =
                conn.prepare_cached(IN_INBOX_SQL)?
                    .exists(params![owner.appcode, owner.uid, id])?;
            if !in_inbox {
                return Ok(None);
            }
            let state: Option<i64> = conn
                .prepare_cached(
                    "SELECT state FROM inbox WHERE owner_appcode = ?1 AND owner_uid = ?2 \
                     AND msgid = ?3 AND kind = 1 AND device = ?4",
                )?
                .query_row(params![owner.appcode, owner.uid, id, device], |row| {
                    row.get(0)
                })
                .optional()?;
            Ok(Some(match state {
                Some(STATE_ACKED) => DeliveryState::Acked,
                Some(_) => DeliveryState::Pushed,
                None => DeliveryState::Stored,
            }))
        })
        .await
    }

    async fn conversations(
        &self,
        owner: &UserKey,
        before_msgid: u64,
        limit: u32,
    ) -> Result<ConversationPage, StoreError> {
        validate_user(owner, "owner")?;
        let limit = effective_limit(limit);
        let owner = owner.clone();
        self.read(move |conn| {
            // One pass over owner's history rows (its primary key), grouped by peer.
            let mut stmt = conn.prepare_cached(
                "SELECT peer_appcode, peer_uid, MAX(msgid) AS last FROM history \
                 WHERE owner_appcode = ?1 AND owner_uid = ?2 \
                 GROUP BY peer_appcode, peer_uid HAVING last < ?3 \
                 ORDER BY last DESC LIMIT ?4",
            )?;
            let peers = stmt
                .query_map(
                    params![
                        owner.appcode,
                        owner.uid,
                        upper_bound_inclusive(before_msgid).saturating_add(1),
                        i64::from(limit) + 1
                    ],
                    |row| {
                        Ok((
                            UserKey {
                                appcode: row.get(0)?,
                                uid: row.get(1)?,
                            },
                            row.get::<_, i64>(2)?,
                        ))
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let more = peers.len() > limit as usize;
            let mut message = conn.prepare_cached(MESSAGE_BY_ID_SQL)?;
            let mut conversations = Vec::with_capacity(peers.len().min(limit as usize));
            for (peer, last_msgid) in peers.into_iter().take(limit as usize) {
                let last = message.query_row(params![last_msgid], read_message)?;
                let read_upto = read_mark(conn, &owner, &peer)?;
                let peer_read_upto = read_mark(conn, &peer, &owner)?;
                let unread = unread_count(conn, &owner, &peer, read_upto)?;
                conversations.push(Conversation {
                    peer,
                    last,
                    unread,
                    read_upto,
                    peer_read_upto,
                });
            }
            Ok(ConversationPage {
                conversations,
                more,
            })
        })
        .await
    }

    async fn mark_read(
        &self,
        owner: &UserKey,
        peer: &UserKey,
        msgid: u64,
    ) -> Result<Option<ReadMark>, StoreError> {
        validate_user(owner, "owner")?;
        validate_user(peer, "peer")?;
        let (reply, reply_rx) = oneshot::channel();
        self.submit(WriteOp::MarkRead {
            owner: owner.clone(),
            peer: peer.clone(),
            msgid,
            reply,
            outcome: None,
        })
        .await?;
        self.await_reply(reply_rx).await
    }
}

// ---------------------------------------------------------------------------------------------
// Queries. Each is one range scan of a primary key plus one rowid lookup per row in
// `messages` (CROSS JOIN fixes the join order); `explain_query_plans_are_range_scans` checks it.

/// Columns read by [`read_message`], in this order.
macro_rules! message_columns {
    () => {
        "m.msgid, m.from_appcode, m.from_uid, m.from_device, m.client_msg_id, m.to_appcode, \
         m.to_uid, m.msgtype, m.content_type, m.msgcontent, m.senddate, m.log_id, m.prev_msgid, \
         m.state"
    };
}

/// `inbox.state` of a kind 1 row: the device acknowledged the message (1: it was pushed it).
const STATE_ACKED: i64 = 2;

/// ?1 owner appcode, ?2 owner uid, ?3 msgid: the inbox entry (kind 0) exists.
const IN_INBOX_SQL: &str = "SELECT 1 FROM inbox WHERE owner_appcode = ?1 AND owner_uid = ?2 \
     AND msgid = ?3 AND kind = 0 AND device = ''";

/// ?1 owner appcode, ?2 owner uid, ?3 exclusive lower msgid, ?4 device, ?5 row limit. The
/// device's ack, if any, is the kind 1 row right after the entry in the same range.
const PULL_OFFLINE_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM inbox AS i CROSS JOIN messages AS m ON m.msgid = i.msgid \
     WHERE i.owner_appcode = ?1 AND i.owner_uid = ?2 AND i.msgid > ?3 AND i.kind = 0 \
       AND NOT EXISTS (SELECT 1 FROM inbox AS a WHERE a.owner_appcode = ?1 \
           AND a.owner_uid = ?2 AND a.msgid = i.msgid AND a.kind = 1 AND a.device = ?4 \
           AND a.state = 2) \
     ORDER BY i.msgid ASC LIMIT ?5"
);

/// ?1/?2 owner, ?3/?4 peer, ?5 inclusive upper msgid, ?6 row limit.
const HISTORY_OLDER_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM history AS h CROSS JOIN messages AS m ON m.msgid = h.msgid \
     WHERE h.owner_appcode = ?1 AND h.owner_uid = ?2 AND h.peer_appcode = ?3 \
       AND h.peer_uid = ?4 AND h.msgid <= ?5 \
     ORDER BY h.msgid DESC LIMIT ?6"
);

/// ?1/?2 owner, ?3/?4 peer, ?5 exclusive lower msgid, ?6 row limit.
const HISTORY_NEWER_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM history AS h CROSS JOIN messages AS m ON m.msgid = h.msgid \
     WHERE h.owner_appcode = ?1 AND h.owner_uid = ?2 AND h.peer_appcode = ?3 \
       AND h.peer_uid = ?4 AND h.msgid > ?5 \
     ORDER BY h.msgid ASC LIMIT ?6"
);

/// ?1 msgid.
const MESSAGE_BY_ID_SQL: &str = concat!(
    "SELECT ",
    message_columns!(),
    " FROM messages AS m WHERE m.msgid = ?1"
);

/// `msgid > cursor` as an i64 bound: a cursor past i64::MAX matches nothing, like i64::MAX.
fn lower_bound(cursor: u64) -> i64 {
    i64::try_from(cursor).unwrap_or(i64::MAX)
}

/// `msgid < cursor` (0 = no bound) as an inclusive i64 bound.
fn upper_bound_inclusive(cursor: u64) -> i64 {
    match i64::try_from(cursor) {
        Ok(0) | Err(_) => i64::MAX,
        Ok(c) => c - 1,
    }
}

/// Maps a row of [`message_columns!`] to a message. Out-of-range values (a corrupt or foreign
/// database) become errors, never panics.
fn read_message(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        msgid: non_negative(row, 0)?,
        from: UserKey {
            appcode: row.get(1)?,
            uid: row.get(2)?,
        },
        from_device: row.get(3)?,
        client_msg_id: row.get(4)?,
        to: UserKey {
            appcode: row.get(5)?,
            uid: row.get(6)?,
        },
        msgtype: row.get(7)?,
        content_type: row.get(8)?,
        content: bytes::Bytes::from(row.get::<_, Vec<u8>>(9)?),
        senddate_ms: non_negative(row, 10)?,
        log_id: u64_from_bits(row.get(11)?),
        prev_msgid: u64::try_from(row.get::<_, i64>(12)?).unwrap_or(0),
        delivered: row.get::<_, i64>(13)? != 0,
    })
}

fn non_negative(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    let value: i64 = row.get(idx)?;
    u64::try_from(value).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(idx, value))
}

fn sqlite_unavailable(what: &str, e: &rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite {what}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Connections.

fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    longlink_sqlite::lock_exclusive(&dir.join(LOCK_FILE)).map_err(|e| match e {
        LockError::InUse { .. } => {
            StoreError::Unavailable(format!("{} is in use by another open store", dir.display()))
        }
        other => StoreError::Unavailable(other.to_string()),
    })
}

/// Opens the write connection ([`longlink_sqlite::open_writer`]: WAL, `synchronous=FULL`,
/// checkpoints off the commit path) with the store's caches; schema created or checked.
fn open_writer_connection(path: &Path) -> Result<Connection, rusqlite::Error> {
    let mut conn = longlink_sqlite::open_writer_with_page_size(path, Some(PAGE_SIZE))?;
    // Each append dirties a random leaf in three or four B-trees (inbox, both histories,
    // idempotency key), so commits are page-heavy: a 64 MiB page cache gave ~1.5x the
    // appends/s of the defaults in store_bench (measured together with a checkpoint per 64 MiB
    // of WAL instead of per 4 MiB, before checkpoints moved off the commit path).
    conn.pragma_update(None, "cache_size", -64 * 1024)?;
    disable_reprepare_on_bind(&conn)?;
    conn.set_prepared_statement_cache_capacity(32);
    longlink_sqlite::ensure_schema_upgrading(&mut conn, SCHEMA_VERSION, SCHEMA_SQL, &UPGRADES)?;
    Ok(conn)
}

/// Opens a connection of the read pool ([`longlink_sqlite::open_read_only`]).
fn open_reader_connection(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = longlink_sqlite::open_read_only(path)?;
    disable_reprepare_on_bind(&conn)?;
    conn.set_prepared_statement_cache_capacity(8);
    Ok(conn)
}

/// Turns on the query planner stability guarantee. Without it, the bundled SQLite (built with
/// STAT4) marks statements whose plan could depend on a bound value (our cursors and LIMITs)
/// as "re-prepare on bind", and rusqlite's statement cache clears bindings on every return,
/// so each cached query was parsed and planned again: measured 118 µs per pull page before,
/// 42 µs after. Our plans are fixed by the primary keys (and checked by a test) anyway.
fn disable_reprepare_on_bind(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The writer thread.

type Command = longlink_sqlite::Command<WriteOp>;

/// A queued write. `outcome` is filled inside the transaction and sent only after the commit.
enum WriteOp {
    Append {
        msg: NewMessage,
        reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
        outcome: Option<AppendOutcome>,
    },
    AppendS2c {
        msg: NewS2c,
        reply: oneshot::Sender<Result<S2cOutcome, StoreError>>,
        outcome: Option<S2cOutcome>,
    },
    Ack {
        owner: UserKey,
        device: String,
        msgids: Vec<u64>,
        reply: oneshot::Sender<Result<AckOutcome, StoreError>>,
        outcome: Option<AckOutcome>,
    },
    MarkRead {
        owner: UserKey,
        peer: UserKey,
        msgid: u64,
        reply: oneshot::Sender<Result<Option<ReadMark>, StoreError>>,
        outcome: Option<Option<ReadMark>>,
    },
    /// Fire and forget: nobody waits for it.
    Pushed {
        owner: UserKey,
        device: String,
        msgids: Vec<u64>,
    },
}

impl WriteOp {
    /// Sends the committed outcome. A caller that gave up waiting is not an error: its write
    /// is durable and a retry finds it by idempotency key.
    fn reply_committed(self) {
        let missing = || StoreError::Unavailable("internal: no outcome recorded".to_owned());
        match self {
            Self::Append {
                msg,
                reply,
                outcome,
            } => {
                if let Some(o) = &outcome {
                    debug!(
                        log_id = msg.log_id,
                        msgid = o.msgid,
                        duplicate = o.duplicate,
                        "message stored"
                    );
                }
                let _ = reply.send(outcome.ok_or_else(missing));
            }
            Self::AppendS2c { reply, outcome, .. } => {
                let _ = reply.send(outcome.ok_or_else(missing));
            }
            Self::Ack { reply, outcome, .. } => {
                let _ = reply.send(outcome.ok_or_else(missing));
            }
            Self::MarkRead { reply, outcome, .. } => {
                let _ = reply.send(outcome.ok_or_else(missing));
            }
            Self::Pushed { .. } => {}
        }
    }

    fn reply_error(self, err: StoreError) {
        match self {
            Self::Append { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Self::AppendS2c { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Self::Ack { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Self::MarkRead { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Self::Pushed { .. } => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("msgid space exhausted")]
    MsgidExhausted,
    #[error("stored msgid or senddate is negative")]
    Corrupt,
}

struct Writer {
    conn: Connection,
    /// Highest msgid ever handed out (or found on disk at open).
    last_msgid: i64,
    counters: Arc<WriterCounters>,
    /// Marked before the commit that inserts a user's entry (see [`pending`]).
    pending: Arc<PendingFilter>,
}

impl longlink_sqlite::BatchWriter for Writer {
    type Op = WriteOp;

    fn commit(&mut self, batch: Vec<WriteOp>) {
        self.commit_batch(batch);
    }

    /// Queued after a close: `Closed`, nothing of them was written.
    fn refuse(&mut self, refused: Vec<WriteOp>) {
        for op in refused {
            op.reply_error(StoreError::Closed);
        }
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

    /// Applies `batch` in one transaction; answers every op after the commit, or every op with
    /// `Unavailable` if anything failed (the transaction is then rolled back as a whole).
    fn commit_batch(&mut self, mut batch: Vec<WriteOp>) {
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        match self.apply_batch(&mut batch) {
            Ok(()) => batch.into_iter().for_each(WriteOp::reply_committed),
            Err(e) => {
                self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, requests = batch.len(), "store batch rolled back");
                for op in batch {
                    op.reply_error(StoreError::Unavailable(format!("write failed: {e}")));
                }
            }
        }
    }

    fn apply_batch(&mut self, batch: &mut [WriteOp]) -> Result<(), WriteError> {
        let now_ms = unix_ms_now();
        // `last_msgid` advances even if the batch then fails: ids are never handed out twice,
        // even when a failed commit turns out to have reached the disk.
        let last_msgid = &mut self.last_msgid;
        let pending = &*self.pending;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for op in batch.iter_mut() {
            match op {
                WriteOp::Append { msg, outcome, .. } => {
                    *outcome = Some(append_in_tx(&tx, msg, last_msgid, now_ms, pending)?);
                }
                WriteOp::AppendS2c { msg, outcome, .. } => {
                    *outcome = Some(append_s2c_in_tx(&tx, msg, last_msgid, now_ms, pending)?);
                }
                WriteOp::Ack {
                    owner,
                    device,
                    msgids,
                    outcome,
                    ..
                } => {
                    *outcome = Some(ack_in_tx(&tx, owner, device, msgids)?);
                }
                WriteOp::MarkRead {
                    owner,
                    peer,
                    msgid,
                    outcome,
                    ..
                } => {
                    *outcome = Some(mark_read_in_tx(&tx, owner, peer, *msgid)?);
                }
                WriteOp::Pushed {
                    owner,
                    device,
                    msgids,
                } => pushed_in_tx(&tx, owner, device, msgids)?,
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `max(last + 1, unix_ms << 20)`: unique and trend-increasing, and still increasing when the
/// clock steps back (then it counts up from `last`).
fn next_msgid(last: i64, now_ms: u64) -> Result<i64, WriteError> {
    let after_last = last.checked_add(1).ok_or(WriteError::MsgidExhausted)?;
    let from_clock = now_ms
        .checked_mul(1 << MSGID_TIME_SHIFT)
        .and_then(|v| i64::try_from(v).ok())
        .unwrap_or(0);
    Ok(after_last.max(from_clock))
}

fn append_in_tx(
    tx: &Transaction<'_>,
    msg: &NewMessage,
    last_msgid: &mut i64,
    now_ms: u64,
    pending: &PendingFilter,
) -> Result<AppendOutcome, WriteError> {
    let keyed = !msg.client_msg_id.is_empty();
    if keyed {
        // Sees keys written earlier in this same transaction too, so two copies in one batch
        // store one message.
        let existing: Option<(i64, i64, i64)> = tx
            .prepare_cached(
                "SELECT k.msgid, k.senddate, COALESCE(m.prev_msgid, 0) FROM idempotency_keys AS k \
                 LEFT JOIN messages AS m ON m.msgid = k.msgid \
                 WHERE k.from_appcode = ?1 AND k.from_uid = ?2 AND k.from_device = ?3 \
                   AND k.client_msg_id = ?4",
            )?
            .query_row(
                params![
                    msg.from.appcode,
                    msg.from.uid,
                    msg.from_device,
                    msg.client_msg_id
                ],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()?;
        if let Some((msgid, senddate, prev_msgid)) = existing {
            return Ok(AppendOutcome {
                msgid: u64::try_from(msgid).map_err(|_| WriteError::Corrupt)?,
                senddate_ms: u64::try_from(senddate).map_err(|_| WriteError::Corrupt)?,
                duplicate: true,
                prev_msgid: u64::try_from(prev_msgid).unwrap_or(0),
            });
        }
    }

    let msgid = next_msgid(*last_msgid, now_ms)?;
    *last_msgid = msgid;
    // The conversation's previous message (either direction): the sender's history with the
    // receiver holds both directions. Lets clients detect a gap (Msg.prev_msgid).
    let prev_msgid: i64 = tx
        .prepare_cached(
            "SELECT COALESCE(MAX(msgid), 0) FROM history \
             WHERE owner_appcode = ?1 AND owner_uid = ?2 AND peer_appcode = ?3 AND peer_uid = ?4",
        )?
        .query_row(
            params![msg.from.appcode, msg.from.uid, msg.to.appcode, msg.to.uid],
            |row| row.get(0),
        )?;
    let senddate = i64::try_from(now_ms).unwrap_or(i64::MAX);
    tx.prepare_cached(
        "INSERT INTO messages (msgid, to_appcode, to_uid, from_appcode, from_uid, from_device, \
         client_msg_id, msgtype, content_type, senddate, state, msgcontent, log_id, prev_msgid) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, ?12, ?13)",
    )?
    .execute(params![
        msgid,
        msg.to.appcode,
        msg.to.uid,
        msg.from.appcode,
        msg.from.uid,
        msg.from_device,
        msg.client_msg_id,
        msg.msgtype,
        msg.content_type,
        senddate,
        &msg.content[..],
        bits_from_u64(msg.log_id),
        prev_msgid,
    ])?;
    // Marked before the insert, so even an error between the two cannot leave an unmarked
    // entry behind; the commit comes later still.
    pending.mark(msg.to.appcode, &msg.to.uid);
    tx.prepare_cached(
        "INSERT INTO inbox (owner_appcode, owner_uid, msgid, kind, device, state) \
         VALUES (?1, ?2, ?3, 0, '', 0)",
    )?
    .execute(params![msg.to.appcode, msg.to.uid, msgid])?;
    // Both users' history; OR IGNORE makes a message to oneself one row.
    let mut history = tx.prepare_cached(
        "INSERT OR IGNORE INTO history (owner_appcode, owner_uid, peer_appcode, peer_uid, msgid) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    history.execute(params![
        msg.from.appcode,
        msg.from.uid,
        msg.to.appcode,
        msg.to.uid,
        msgid
    ])?;
    history.execute(params![
        msg.to.appcode,
        msg.to.uid,
        msg.from.appcode,
        msg.from.uid,
        msgid
    ])?;
    if keyed {
        tx.prepare_cached(
            "INSERT INTO idempotency_keys \
             (from_appcode, from_uid, from_device, client_msg_id, msgid, senddate) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            msg.from.appcode,
            msg.from.uid,
            msg.from_device,
            msg.client_msg_id,
            msgid,
            senddate
        ])?;
    }
    Ok(AppendOutcome {
        msgid: u64::try_from(msgid).map_err(|_| WriteError::Corrupt)?,
        senddate_ms: now_ms,
        duplicate: false,
        prev_msgid: u64::try_from(prev_msgid).unwrap_or(0),
    })
}

fn pushed_in_tx(
    tx: &Transaction<'_>,
    owner: &UserKey,
    device: &str,
    msgids: &[u64],
) -> Result<(), WriteError> {
    // An acked device stays acked (DO NOTHING keeps state 2).
    let mut insert = tx.prepare_cached(
        "INSERT INTO inbox (owner_appcode, owner_uid, msgid, kind, device, state) \
         SELECT ?1, ?2, ?4, 1, ?3, 1 WHERE EXISTS \
           (SELECT 1 FROM inbox WHERE owner_appcode = ?1 AND owner_uid = ?2 AND msgid = ?4 \
              AND kind = 0 AND device = '') \
         ON CONFLICT DO NOTHING",
    )?;
    for &msgid in msgids {
        if let Ok(id) = i64::try_from(msgid) {
            insert.execute(params![owner.appcode, owner.uid, device, id])?;
        }
    }
    Ok(())
}

/// One message row (empty `to_uid` marks s2c) and one inbox row per distinct recipient.
fn append_s2c_in_tx(
    tx: &Transaction<'_>,
    msg: &NewS2c,
    last_msgid: &mut i64,
    now_ms: u64,
    pending: &PendingFilter,
) -> Result<S2cOutcome, WriteError> {
    let msgid = next_msgid(*last_msgid, now_ms)?;
    *last_msgid = msgid;
    let senddate = i64::try_from(now_ms).unwrap_or(i64::MAX);
    tx.prepare_cached(
        "INSERT INTO messages (msgid, to_appcode, to_uid, from_appcode, from_uid, from_device, \
         client_msg_id, msgtype, content_type, senddate, state, msgcontent, log_id, prev_msgid) \
         VALUES (?1, ?2, '', ?2, ?3, '', '', ?4, ?5, ?6, 0, ?7, ?8, 0)",
    )?
    .execute(params![
        msgid,
        msg.appcode,
        msg.from,
        msg.msgtype,
        msg.content_type,
        senddate,
        &msg.content[..],
        bits_from_u64(msg.log_id),
    ])?;
    let mut inbox = tx.prepare_cached(
        "INSERT OR IGNORE INTO inbox (owner_appcode, owner_uid, msgid, kind, device, state) \
         VALUES (?1, ?2, ?3, 0, '', 0)",
    )?;
    for uid in &msg.recipients {
        // Before the commit (see append_in_tx).
        pending.mark(msg.appcode, uid);
        inbox.execute(params![msg.appcode, uid, msgid])?;
    }
    Ok(S2cOutcome {
        msgid: u64::try_from(msgid).map_err(|_| WriteError::Corrupt)?,
        senddate_ms: now_ms,
    })
}

fn ack_in_tx(
    tx: &Transaction<'_>,
    owner: &UserKey,
    device: &str,
    msgids: &[u64],
) -> Result<AckOutcome, WriteError> {
    let mut in_inbox = tx.prepare_cached(IN_INBOX_SQL)?;
    // A push record of the device becomes its ack; an ack stays as it is (no page write).
    let mut insert_ack = tx.prepare_cached(
        "INSERT INTO inbox (owner_appcode, owner_uid, msgid, kind, device, state) \
         VALUES (?1, ?2, ?4, 1, ?3, 2) \
         ON CONFLICT DO UPDATE SET state = 2 WHERE state <> 2",
    )?;
    // Returns the sender only when this ack is the message's first delivery.
    let mut mark_acked = tx.prepare_cached(
        "UPDATE messages SET state = 1 WHERE msgid = ?1 AND state = 0 \
         RETURNING from_appcode, from_uid, from_device",
    )?;
    let mut seen = HashSet::with_capacity(msgids.len());
    let mut outcome = AckOutcome::default();
    for &msgid in msgids {
        if !seen.insert(msgid) {
            continue;
        }
        // A msgid past i64::MAX cannot exist.
        let Ok(id) = i64::try_from(msgid) else {
            outcome.not_found.push(msgid);
            continue;
        };
        if in_inbox.exists(params![owner.appcode, owner.uid, id])? {
            insert_ack.execute(params![owner.appcode, owner.uid, device, id])?;
            let mut rows = mark_acked.query(params![id])?;
            if let Some(row) = rows.next()? {
                let from_device: String = row.get(2)?;
                // s2c pushes (no sender device) have no sender to tell.
                if !from_device.is_empty() {
                    outcome.first_delivered.push(Delivered {
                        msgid,
                        from: UserKey {
                            appcode: row.get(0)?,
                            uid: row.get(1)?,
                        },
                    });
                }
            }
            outcome.acked = outcome.acked.saturating_add(1);
        } else {
            outcome.not_found.push(msgid);
        }
    }
    outcome.first_delivered.sort_by_key(|d| d.msgid);
    Ok(outcome)
}

/// MARK_READ inside the batch: `None` when msgid is not in owner's conversation with peer.
fn mark_read_in_tx(
    tx: &Transaction<'_>,
    owner: &UserKey,
    peer: &UserKey,
    msgid: u64,
) -> Result<Option<ReadMark>, WriteError> {
    let Ok(id) = i64::try_from(msgid) else {
        return Ok(None);
    };
    let in_conversation = tx
        .prepare_cached(
            "SELECT 1 FROM history WHERE owner_appcode = ?1 AND owner_uid = ?2 \
             AND peer_appcode = ?3 AND peer_uid = ?4 AND msgid = ?5",
        )?
        .exists(params![
            owner.appcode,
            owner.uid,
            peer.appcode,
            peer.uid,
            id
        ])?;
    if !in_conversation {
        return Ok(None);
    }
    tx.prepare_cached(
        "INSERT INTO read_marks (owner_appcode, owner_uid, peer_appcode, peer_uid, msgid) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT DO UPDATE SET msgid = MAX(msgid, excluded.msgid)",
    )?
    .execute(params![
        owner.appcode,
        owner.uid,
        peer.appcode,
        peer.uid,
        id
    ])?;
    let read_upto = read_mark(tx, owner, peer)?;
    let unread = unread_count(tx, owner, peer, read_upto)?;
    Ok(Some(ReadMark { read_upto, unread }))
}

/// Owner's read mark in the conversation with peer (0 = none).
fn read_mark(conn: &Connection, owner: &UserKey, peer: &UserKey) -> rusqlite::Result<u64> {
    let mark: Option<i64> = conn
        .prepare_cached(
            "SELECT msgid FROM read_marks WHERE owner_appcode = ?1 AND owner_uid = ?2 \
             AND peer_appcode = ?3 AND peer_uid = ?4",
        )?
        .query_row(
            params![owner.appcode, owner.uid, peer.appcode, peer.uid],
            |row| row.get(0),
        )
        .optional()?;
    Ok(mark.and_then(|m| u64::try_from(m).ok()).unwrap_or(0))
}

/// Messages from peer to owner after `read_upto`, up to [`MAX_UNREAD_COUNT`]: a range scan of
/// owner's history with peer past the mark (bounded by the LIMIT) plus one rowid lookup each.
fn unread_count(
    conn: &Connection,
    owner: &UserKey,
    peer: &UserKey,
    read_upto: u64,
) -> rusqlite::Result<u32> {
    let count: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM (SELECT 1 FROM history AS h \
               CROSS JOIN messages AS m ON m.msgid = h.msgid \
             WHERE h.owner_appcode = ?1 AND h.owner_uid = ?2 AND h.peer_appcode = ?3 \
               AND h.peer_uid = ?4 AND h.msgid > ?5 \
               AND m.from_appcode = ?3 AND m.from_uid = ?4 LIMIT ?6)",
        )?
        .query_row(
            params![
                owner.appcode,
                owner.uid,
                peer.appcode,
                peer.uid,
                lower_bound(read_upto),
                i64::from(MAX_UNREAD_COUNT)
            ],
            |row| row.get(0),
        )?;
    Ok(u32::try_from(count).unwrap_or(MAX_UNREAD_COUNT))
}

#[cfg(test)]
mod tests;
