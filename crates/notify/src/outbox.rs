//! The durable outbox in `<data_dir>/notify.sqlite`: which device must be told about which
//! message and when, and every notification sent with its outcome.
//!
//! Why durable: a notification due in three seconds must survive a restart in between, and
//! must not be sent twice after one. The rule that makes it at most once: the outbox rows are
//! marked `sent` with the notification id, and the notification row is written, in ONE
//! transaction BEFORE the provider is called. A crash after that commit loses at most that
//! notification (the provider may or may not have got it); rows not yet marked are simply
//! sent after the restart. `INSERT OR IGNORE` on (appcode, uid, device, msgid) makes an offer
//! repeated by a redelivery or a retry a no-op.
//!
//! One connection behind a mutex, used from `spawn_blocking`: the notifier's writes are small
//! and few per message (one insert per device, one update per notification), far below what
//! would need the store's group-commit writer. WAL with `synchronous=FULL` (via
//! `longlink_sqlite::open_writer`), so a committed `sent` mark survives a power loss.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use longlink_rpc::notify::NotifyError;
use longlink_sqlite::{bits_from_u64, u64_from_bits};
use rusqlite::{Connection, OptionalExtension, params};

use crate::registry::DeviceCache;
use crate::render::Pending;

/// The database file in the data directory.
pub const DB_FILE: &str = "notify.sqlite";
/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;
/// How long one database call may take before the caller gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE devices (
    appcode INTEGER NOT NULL, uid TEXT NOT NULL, device TEXT NOT NULL,
    platform TEXT NOT NULL, vendor TEXT NOT NULL, app_version TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (appcode, uid, device)
) STRICT, WITHOUT ROWID;
CREATE TABLE tokens (
    appcode INTEGER NOT NULL, uid TEXT NOT NULL, device TEXT NOT NULL,
    provider TEXT NOT NULL, token TEXT NOT NULL, updated_ms INTEGER NOT NULL,
    PRIMARY KEY (appcode, uid, device, provider)
) STRICT, WITHOUT ROWID;
CREATE INDEX tokens_by_token ON tokens (appcode, provider, token);
CREATE TABLE outbox (
    appcode INTEGER NOT NULL, uid TEXT NOT NULL, device TEXT NOT NULL, msgid INTEGER NOT NULL,
    due_ms INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'skipped')),
    notif_id INTEGER NOT NULL DEFAULT 0,
    rechecked INTEGER NOT NULL DEFAULT 0,
    sender TEXT NOT NULL, msgtype INTEGER NOT NULL, content_type INTEGER NOT NULL,
    preview TEXT NOT NULL,
    PRIMARY KEY (appcode, uid, device, msgid)
) STRICT;
CREATE INDEX outbox_due ON outbox (due_ms) WHERE state = 'pending';
CREATE INDEX outbox_done ON outbox (due_ms) WHERE state != 'pending';
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    appcode INTEGER NOT NULL, uid TEXT NOT NULL, device TEXT NOT NULL,
    provider TEXT NOT NULL, class TEXT NOT NULL, sent_ms INTEGER NOT NULL,
    state TEXT NOT NULL
      CHECK (state IN ('sending', 'accepted', 'failed', 'receipted', 'expired')),
    receipt_ms INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX notifications_open ON notifications (sent_ms) WHERE state IN ('sending', 'accepted');
CREATE INDEX notifications_device ON notifications (appcode, uid, device, sent_ms);
";

/// The notifier's database: one connection and the device index, changed together.
#[derive(Debug)]
pub struct Db {
    conn: Mutex<Connection>,
    cache: DeviceCache,
    path: PathBuf,
}

impl Db {
    /// Opens (creating) `<data_dir>/notify.sqlite` and loads the device index.
    ///
    /// # Errors
    /// A sentence when the directory or file cannot be created or opened, or has another
    /// schema.
    pub fn open(data_dir: &Path) -> Result<Arc<Self>, String> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let path = data_dir.join(DB_FILE);
        let mut conn = longlink_sqlite::open_writer(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // This file is small and written rarely; SQLite's own checkpoints are fine here
        // (open_writer turns them off for the store's hot path).
        conn.pragma_update(None, "wal_autocheckpoint", 1000)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        longlink_sqlite::ensure_schema(&mut conn, SCHEMA_VERSION, SCHEMA)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let cache = DeviceCache::default();
        cache
            .load(&conn)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Arc::new(Self {
            conn: Mutex::new(conn),
            cache,
            path,
        }))
    }

    /// The device index.
    pub fn cache(&self) -> &DeviceCache {
        &self.cache
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on a blocking thread, waiting at most 10 s.
    ///
    /// # Errors
    /// [`NotifyError::Unavailable`] when the call timed out or its thread failed; `f`'s own
    /// error otherwise.
    pub async fn call<R, F>(self: &Arc<Self>, f: F) -> Result<R, NotifyError>
    where
        F: FnOnce(&mut Connection, &DeviceCache) -> Result<R, NotifyError> + Send + 'static,
        R: Send + 'static,
    {
        let db = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            let mut conn = db.conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn, &db.cache)
        });
        match tokio::time::timeout(CALL_TIMEOUT, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(NotifyError::Unavailable(format!(
                "notify database task failed: {e}"
            ))),
            Err(_) => Err(NotifyError::Unavailable(
                "notify database did not answer within 10 s".to_owned(),
            )),
        }
    }
}

impl Db {
    /// [`Db::call`] for a closure that returns SQLite's errors.
    ///
    /// # Errors
    /// As [`Db::call`]; an SQLite error as [`NotifyError::Unavailable`].
    pub async fn call_sql<R, F>(self: &Arc<Self>, f: F) -> Result<R, NotifyError>
    where
        F: FnOnce(&mut Connection, &DeviceCache) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.call(move |conn, cache| f(conn, cache).map_err(crate::registry::unavailable))
            .await
    }
}

/// One outbox row to insert.
#[derive(Debug, Clone)]
pub struct NewRow {
    /// Receiver's appcode.
    pub appcode: u32,
    /// Receiver.
    pub uid: String,
    /// Receiver's device.
    pub device: String,
    /// When it is due (unix ms).
    pub due_ms: u64,
    /// The message.
    pub message: Pending,
}

/// Inserts rows (ignoring any already there); returns how many were new.
///
/// # Errors
/// Any SQLite error (then none were inserted).
pub fn insert(conn: &mut Connection, rows: &[NewRow]) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut inserted = 0;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO outbox (appcode, uid, device, msgid, due_ms, sender, msgtype,
               content_type, preview) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for row in rows {
            inserted += stmt.execute(params![
                row.appcode,
                row.uid,
                row.device,
                bits_from_u64(row.message.msgid),
                bits_from_u64(row.due_ms),
                row.message.from,
                row.message.msgtype,
                row.message.content_type,
                row.message.preview,
            ])?;
        }
    }
    tx.commit()?;
    Ok(inserted)
}

/// The earliest due time of a pending row.
///
/// # Errors
/// Any SQLite error.
pub fn next_due(conn: &Connection) -> rusqlite::Result<Option<u64>> {
    let due: Option<i64> = conn.query_row(
        "SELECT MIN(due_ms) FROM outbox WHERE state = 'pending'",
        [],
        |row| row.get(0),
    )?;
    Ok(due.map(u64_from_bits))
}

/// Pending rows.
///
/// # Errors
/// Any SQLite error.
pub fn pending_count(conn: &Connection) -> rusqlite::Result<u64> {
    let count: i64 = conn.query_row(
        "SELECT COUNT(*) FROM outbox WHERE state = 'pending'",
        [],
        |row| row.get(0),
    )?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// A due row.
#[derive(Debug, Clone)]
pub struct DueRow {
    /// Receiver's appcode.
    pub appcode: u32,
    /// Receiver.
    pub uid: String,
    /// Receiver's device.
    pub device: String,
    /// Whether the row was already postponed once because the message was pushed.
    pub rechecked: bool,
    /// The message.
    pub message: Pending,
}

/// The pending rows of the devices with a row due at `now_ms` (at most `limit` devices, by
/// due time; at most [`MAX_ROWS_PER_DEVICE`] × `limit` rows), by device then msgid. A device's rows that are not
/// due yet come along, so a burst collapses into one notification when its first message is
/// due rather than one per grace period; rows postponed for a re-check wait for their time.
///
/// # Errors
/// Any SQLite error.
pub fn due(conn: &Connection, now_ms: u64, limit: usize) -> rusqlite::Result<Vec<DueRow>> {
    // The devices with the earliest due rows (on outbox_due), then each one's pending rows
    // through the primary key's prefix (CROSS JOIN keeps that order of the loops; a row-value
    // IN over the devices made SQLite scan every row of the appcode).
    let mut stmt = conn.prepare_cached(
        "WITH d AS (SELECT DISTINCT appcode, uid, device FROM
             (SELECT appcode, uid, device FROM outbox WHERE state = 'pending' AND due_ms <= ?1
              ORDER BY due_ms LIMIT ?2))
         SELECT o.appcode, o.uid, o.device, o.msgid, o.rechecked, o.sender, o.msgtype,
                o.content_type, o.preview
         FROM d CROSS JOIN outbox o
           ON o.appcode = d.appcode AND o.uid = d.uid AND o.device = d.device
         WHERE o.state = 'pending' AND (o.due_ms <= ?1 OR o.rechecked = 0)
         ORDER BY o.appcode, o.uid, o.device, o.msgid
         LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![
            bits_from_u64(now_ms),
            i64::try_from(limit).unwrap_or(i64::MAX),
            i64::try_from(limit)
                .unwrap_or(i64::MAX)
                .saturating_mul(MAX_ROWS_PER_DEVICE)
        ],
        |row| {
            Ok(DueRow {
                appcode: row.get(0)?,
                uid: row.get(1)?,
                device: row.get(2)?,
                rechecked: row.get::<_, i64>(4)? != 0,
                message: Pending {
                    msgid: u64_from_bits(row.get(3)?),
                    from: row.get(5)?,
                    msgtype: row.get(6)?,
                    content_type: row.get(7)?,
                    preview: row.get(8)?,
                },
            })
        },
    )?;
    rows.collect()
}

/// Rows taken per due device on average, at most (the rest go into the next pass).
const MAX_ROWS_PER_DEVICE: i64 = 8;

/// The key of one outbox row.
pub type RowKey = (u32, String, String, u64);

/// Moves rows to `due_ms`, marking them rechecked when `recheck`. Run it inside the
/// caller's transaction.
///
/// # Errors
/// Any SQLite error.
pub fn postpone(
    conn: &Connection,
    rows: &[RowKey],
    due_ms: u64,
    recheck: bool,
) -> rusqlite::Result<()> {
    {
        let mut stmt = conn.prepare_cached(
            "UPDATE outbox SET due_ms = ?5, rechecked = rechecked OR ?6
             WHERE appcode = ?1 AND uid = ?2 AND device = ?3 AND msgid = ?4 AND state = 'pending'",
        )?;
        for (appcode, uid, device, msgid) in rows {
            stmt.execute(params![
                appcode,
                uid,
                device,
                bits_from_u64(*msgid),
                bits_from_u64(due_ms),
                recheck
            ])?;
        }
    }
    Ok(())
}

/// Marks rows skipped (acked meanwhile, no provider). Run it inside the caller's
/// transaction.
///
/// # Errors
/// Any SQLite error.
pub fn skip(conn: &Connection, rows: &[RowKey]) -> rusqlite::Result<()> {
    {
        let mut stmt = conn.prepare_cached(
            "UPDATE outbox SET state = 'skipped'
             WHERE appcode = ?1 AND uid = ?2 AND device = ?3 AND msgid = ?4 AND state = 'pending'",
        )?;
        for (appcode, uid, device, msgid) in rows {
            stmt.execute(params![appcode, uid, device, bits_from_u64(*msgid)])?;
        }
    }
    Ok(())
}

/// A notification about to be sent.
#[derive(Debug, Clone)]
pub struct NotificationRow {
    /// Its id.
    pub id: u64,
    /// Receiver's appcode.
    pub appcode: u32,
    /// Receiver.
    pub uid: String,
    /// Receiver's device.
    pub device: String,
    /// The first provider tried.
    pub provider: String,
    /// The device's class.
    pub class: String,
    /// When it is sent (unix ms).
    pub sent_ms: u64,
}

/// The at-most-once step: marks `rows` sent as notification `n.id` and writes the
/// notification row (state `sending`). Run it inside the caller's transaction, committed
/// before the notification is handed to a provider. Returns how many rows it marked (0 =
/// another pass got them first: do not send).
///
/// # Errors
/// Any SQLite error (the caller's transaction then commits nothing).
pub fn mark_sent(
    conn: &Connection,
    n: &NotificationRow,
    rows: &[RowKey],
) -> rusqlite::Result<usize> {
    let mut marked = 0;
    {
        let mut stmt = conn.prepare_cached(
            "UPDATE outbox SET state = 'sent', notif_id = ?5
             WHERE appcode = ?1 AND uid = ?2 AND device = ?3 AND msgid = ?4 AND state = 'pending'",
        )?;
        for (appcode, uid, device, msgid) in rows {
            marked += stmt.execute(params![
                appcode,
                uid,
                device,
                bits_from_u64(*msgid),
                bits_from_u64(n.id)
            ])?;
        }
    }
    if marked == 0 {
        return Ok(0);
    }
    conn.execute(
        "INSERT INTO notifications (id, appcode, uid, device, provider, class, sent_ms, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'sending')",
        params![
            bits_from_u64(n.id),
            n.appcode,
            n.uid,
            n.device,
            n.provider,
            n.class,
            bits_from_u64(n.sent_ms)
        ],
    )?;
    Ok(marked)
}

/// Records how a send ended: `accepted` by `provider`, or `failed`.
///
/// # Errors
/// Any SQLite error.
pub fn finish(conn: &Connection, id: u64, provider: &str, accepted: bool) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE notifications SET provider = ?2, state = ?3 WHERE id = ?1 AND state = 'sending'",
        params![
            bits_from_u64(id),
            provider,
            if accepted { "accepted" } else { "failed" }
        ],
    )?;
    Ok(())
}

/// [`finish`] for many sends, in one transaction.
///
/// # Errors
/// Any SQLite error (then nothing changed).
pub fn finish_many(conn: &mut Connection, ends: &[(u64, String, bool)]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for (id, provider, accepted) in ends {
        finish(&tx, *id, provider, *accepted)?;
    }
    tx.commit()
}

/// When the device was last notified (unix ms), if ever.
///
/// # Errors
/// Any SQLite error.
pub fn last_sent(
    conn: &Connection,
    appcode: u32,
    uid: &str,
    device: &str,
) -> rusqlite::Result<Option<u64>> {
    let last: Option<i64> = conn.query_row(
        "SELECT MAX(sent_ms) FROM notifications WHERE appcode = ?1 AND uid = ?2 AND device = ?3",
        params![appcode, uid, device],
        |row| row.get(0),
    )?;
    Ok(last.map(u64_from_bits))
}

/// A receipted notification.
#[derive(Debug, Clone)]
pub struct Receipted {
    /// Its id.
    pub id: u64,
    /// The provider that delivered it.
    pub provider: String,
    /// The device's class.
    pub class: String,
    /// When it was sent.
    pub sent_ms: u64,
    /// Whether it had already expired (a late receipt).
    pub late: bool,
}

/// Marks the device's notifications `ids` receipted at `now_ms` (only those of this device
/// not receipted before).
///
/// # Errors
/// Any SQLite error.
pub fn receipts(
    conn: &mut Connection,
    appcode: u32,
    uid: &str,
    device: &str,
    ids: &[u64],
    now_ms: u64,
) -> rusqlite::Result<Vec<Receipted>> {
    let tx = conn.transaction()?;
    let mut out = Vec::new();
    {
        let mut find = tx.prepare_cached(
            "SELECT provider, class, sent_ms, state FROM notifications
             WHERE id = ?1 AND appcode = ?2 AND uid = ?3 AND device = ?4
               AND state IN ('sending', 'accepted', 'expired')",
        )?;
        let mut mark = tx.prepare_cached(
            "UPDATE notifications SET state = 'receipted', receipt_ms = ?2 WHERE id = ?1",
        )?;
        for id in ids {
            let found = find
                .query_row(params![bits_from_u64(*id), appcode, uid, device], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                })
                .optional()?;
            if let Some((provider, class, sent_ms, state)) = found {
                mark.execute(params![bits_from_u64(*id), bits_from_u64(now_ms)])?;
                out.push(Receipted {
                    id: *id,
                    provider,
                    class,
                    sent_ms: u64_from_bits(sent_ms),
                    late: state == "expired",
                });
            }
        }
    }
    tx.commit()?;
    Ok(out)
}

/// Marks accepted notifications sent at or before `cutoff_ms` without a receipt as expired.
/// Returns (provider, class) of each.
///
/// # Errors
/// Any SQLite error.
pub fn expire(conn: &Connection, cutoff_ms: u64) -> rusqlite::Result<Vec<(u64, String, String)>> {
    let mut stmt = conn.prepare_cached(
        "UPDATE notifications SET state = 'expired'
         WHERE id IN (SELECT id FROM notifications
                      WHERE state IN ('sending', 'accepted') AND sent_ms <= ?1 LIMIT 10000)
         RETURNING id, provider, class",
    )?;
    let rows = stmt.query_map(params![bits_from_u64(cutoff_ms)], |row| {
        Ok((u64_from_bits(row.get(0)?), row.get(1)?, row.get(2)?))
    })?;
    rows.collect()
}

/// Deletes finished outbox rows and notifications older than `cutoff_ms`, so the file stays
/// bounded.
///
/// # Errors
/// Any SQLite error.
pub fn prune(conn: &Connection, cutoff_ms: u64) -> rusqlite::Result<usize> {
    let rows = conn.execute(
        "DELETE FROM outbox WHERE state != 'pending' AND due_ms < ?1",
        params![bits_from_u64(cutoff_ms)],
    )?;
    let notifications = conn.execute(
        "DELETE FROM notifications WHERE sent_ms < ?1 AND state NOT IN ('sending', 'accepted')",
        params![bits_from_u64(cutoff_ms)],
    )?;
    Ok(rows + notifications)
}

/// The highest notification id stored (0 = none): ids continue above it after a restart.
///
/// # Errors
/// Any SQLite error.
pub fn max_id(conn: &Connection) -> rusqlite::Result<u64> {
    let id: Option<i64> =
        conn.query_row("SELECT MAX(id) FROM notifications", [], |row| row.get(0))?;
    Ok(id.map_or(0, u64_from_bits))
}

/// Row keys of due rows.
pub fn keys(rows: &[DueRow]) -> Vec<RowKey> {
    rows.iter()
        .map(|r| (r.appcode, r.uid.clone(), r.device.clone(), r.message.msgid))
        .collect()
}
