//! Where the lists live durably: [`BanStore`], with [`SqliteBanStore`] (the `bans` table of
//! `<data_dir>/guard.sqlite`) and [`MemoryBanStore`] (tests, embedded uses).
//!
//! Writes are rare (an operator's call), so the SQLite store keeps one write connection
//! behind a mutex and commits each change on its own, with `synchronous=FULL` (through
//! `longlink_sqlite::open_writer`): an answered `POST /v1/bans` survives a crash. Callers in
//! async code run these methods on a blocking thread ([`crate::Guard`] does).

use std::path::Path;
use std::sync::Mutex;

use longlink_sqlite::{bits_from_u64, u64_from_bits};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::GuardError;
use crate::rules::{Ban, ValidBan};

/// Durable storage of the list entries. One entry per (kind, action, appcode, value): adding
/// it again updates its reason and expiry and keeps its id.
pub trait BanStore: Send + Sync + 'static {
    /// Every entry still active at `now_ms` (expired ones are deleted on the way).
    ///
    /// # Errors
    /// [`GuardError::Store`].
    fn load(&self, now_ms: u64) -> Result<Vec<Ban>, GuardError>;

    /// Adds `ban` (or updates the entry with the same key): the stored entry, and whether it
    /// is new.
    ///
    /// # Errors
    /// [`GuardError::Store`].
    fn upsert(&self, ban: &ValidBan, now_ms: u64) -> Result<(Ban, bool), GuardError>;

    /// Removes entry `id`: the removed entry, or `None` if there was none.
    ///
    /// # Errors
    /// [`GuardError::Store`].
    fn remove(&self, id: u64) -> Result<Option<Ban>, GuardError>;
}

/// Entries in memory only (lost at exit).
#[derive(Debug, Default)]
pub struct MemoryBanStore {
    inner: Mutex<(u64, Vec<Ban>)>,
}

impl BanStore for MemoryBanStore {
    fn load(&self, now_ms: u64) -> Result<Vec<Ban>, GuardError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.1.retain(|b| b.is_active(now_ms));
        Ok(inner.1.clone())
    }

    fn upsert(&self, ban: &ValidBan, now_ms: u64) -> Result<(Ban, bool), GuardError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (next_id, bans) = &mut *inner;
        if let Some(existing) = bans.iter_mut().find(|b| same_key(b, ban)) {
            existing.reason.clone_from(&ban.reason);
            existing.expires_at_ms = ban.expires_at_ms;
            return Ok((existing.clone(), false));
        }
        *next_id += 1;
        let stored = stored(*next_id, ban, now_ms);
        bans.push(stored.clone());
        Ok((stored, true))
    }

    fn remove(&self, id: u64) -> Result<Option<Ban>, GuardError> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let position = inner.1.iter().position(|b| b.id == id);
        Ok(position.map(|i| inner.1.remove(i)))
    }
}

fn same_key(stored: &Ban, ban: &ValidBan) -> bool {
    stored.kind == ban.kind
        && stored.action == ban.action
        && stored.appcode == ban.appcode
        && stored.value == ban.value
}

fn stored(id: u64, ban: &ValidBan, now_ms: u64) -> Ban {
    Ban {
        id,
        kind: ban.kind,
        action: ban.action,
        appcode: ban.appcode,
        value: ban.value.clone(),
        reason: ban.reason.clone(),
        created_at_ms: now_ms,
        expires_at_ms: ban.expires_at_ms,
    }
}

const SCHEMA_VERSION: i64 = 1;

/// AUTOINCREMENT: ids are never reused, so removing by a stale id cannot hit a newer entry.
const SCHEMA: &str = "
CREATE TABLE bans (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT    NOT NULL,
    action        TEXT    NOT NULL,
    appcode       INTEGER NOT NULL,
    value         TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    UNIQUE (kind, action, appcode, value)
) STRICT;
";

const COLUMNS: &str = "id, kind, action, appcode, value, reason, created_at_ms, expires_at_ms";

/// The entries in an SQLite file (see the module docs).
#[derive(Debug)]
pub struct SqliteBanStore {
    conn: Mutex<Connection>,
}

impl SqliteBanStore {
    /// Opens (creating) the database at `path`.
    ///
    /// # Errors
    /// [`GuardError::Store`] when the file cannot be opened, configured or migrated.
    pub fn open(path: &Path) -> Result<Self, GuardError> {
        let mut conn = longlink_sqlite::open_writer(path).map_err(store_error)?;
        longlink_sqlite::ensure_schema(&mut conn, SCHEMA_VERSION, SCHEMA).map_err(store_error)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn store_error(err: rusqlite::Error) -> GuardError {
    GuardError::Store(err.to_string())
}

fn ban_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Ban, GuardError>> {
    let id: i64 = row.get(0)?;
    let kind: String = row.get(1)?;
    let action: String = row.get(2)?;
    let appcode: i64 = row.get(3)?;
    let value: String = row.get(4)?;
    let reason: String = row.get(5)?;
    let created_at_ms: i64 = row.get(6)?;
    let expires_at_ms: i64 = row.get(7)?;
    let parse = || -> Result<Ban, GuardError> {
        Ok(Ban {
            id: u64_from_bits(id),
            kind: kind.parse()?,
            action: action.parse()?,
            appcode: u32::try_from(appcode)
                .map_err(|_| GuardError::Store(format!("appcode {appcode} out of range")))?,
            value,
            reason,
            created_at_ms: u64_from_bits(created_at_ms),
            expires_at_ms: u64_from_bits(expires_at_ms),
        })
    };
    Ok(parse())
}

/// Checkpoints after each change: writes are rare and nothing else checkpoints this file
/// (`open_writer` turns the automatic checkpoint off), so the WAL stays small.
fn checkpoint(conn: &Connection) {
    if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::debug!(error = %err, "guard checkpoint failed");
    }
}

impl BanStore for SqliteBanStore {
    fn load(&self, now_ms: u64) -> Result<Vec<Ban>, GuardError> {
        let conn = self.conn();
        let purged = conn
            .execute(
                "DELETE FROM bans WHERE expires_at_ms != 0 AND expires_at_ms <= ?1",
                params![bits_from_u64(now_ms)],
            )
            .map_err(store_error)?;
        if purged > 0 {
            checkpoint(&conn);
        }
        let mut statement = conn
            .prepare(&format!("SELECT {COLUMNS} FROM bans ORDER BY id"))
            .map_err(store_error)?;
        let rows = statement.query_map([], ban_from_row).map_err(store_error)?;
        let mut bans = Vec::new();
        for row in rows {
            match row.map_err(store_error)? {
                Ok(ban) => bans.push(ban),
                // A row this build cannot read is skipped, not fatal: the others still apply.
                Err(err) => tracing::warn!(error = %err, "skipping an unreadable ban row"),
            }
        }
        Ok(bans)
    }

    fn upsert(&self, ban: &ValidBan, now_ms: u64) -> Result<(Ban, bool), GuardError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_error)?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM bans WHERE kind = ?1 AND action = ?2 AND appcode = ?3 AND value = ?4",
                params![ban.kind.as_str(), ban.action.as_str(), i64::from(ban.appcode), ban.value],
                |row| row.get(0),
            )
            .optional()
            .map_err(store_error)?;
        let created = existing.is_none();
        let id = match existing {
            Some(id) => {
                tx.execute(
                    "UPDATE bans SET reason = ?2, expires_at_ms = ?3 WHERE id = ?1",
                    params![id, ban.reason, bits_from_u64(ban.expires_at_ms)],
                )
                .map_err(store_error)?;
                id
            }
            None => {
                tx.execute(
                    "INSERT INTO bans (kind, action, appcode, value, reason, created_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        ban.kind.as_str(),
                        ban.action.as_str(),
                        i64::from(ban.appcode),
                        ban.value,
                        ban.reason,
                        bits_from_u64(now_ms),
                        bits_from_u64(ban.expires_at_ms)
                    ],
                )
                .map_err(store_error)?;
                tx.last_insert_rowid()
            }
        };
        let stored = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM bans WHERE id = ?1"),
                params![id],
                ban_from_row,
            )
            .map_err(store_error)??;
        tx.commit().map_err(store_error)?;
        checkpoint(&conn);
        Ok((stored, created))
    }

    fn remove(&self, id: u64) -> Result<Option<Ban>, GuardError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_error)?;
        let found = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM bans WHERE id = ?1"),
                params![bits_from_u64(id)],
                ban_from_row,
            )
            .optional()
            .map_err(store_error)?
            .transpose()?;
        if found.is_some() {
            tx.execute("DELETE FROM bans WHERE id = ?1", params![bits_from_u64(id)])
                .map_err(store_error)?;
        }
        tx.commit().map_err(store_error)?;
        checkpoint(&conn);
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::NewBan;

    fn valid(kind: &str, appcode: u32, value: &str, ttl: Option<u64>) -> ValidBan {
        NewBan {
            kind: kind.into(),
            appcode,
            value: value.into(),
            reason: "spam".into(),
            ttl_secs: ttl,
            ..NewBan::default()
        }
        .validate(1_000)
        .unwrap()
    }

    fn suite(store: &dyn BanStore) {
        let (alice, created) = store
            .upsert(&valid("uid", 129, "alice", None), 1_000)
            .unwrap();
        assert!(created);
        let (again, created) = store
            .upsert(&valid("uid", 129, "alice", Some(60)), 2_000)
            .unwrap();
        assert!(!created, "same key: updated");
        assert_eq!(again.id, alice.id);
        assert_eq!(again.expires_at_ms, 61_000);
        let (net, _) = store
            .upsert(&valid("ip", 0, "10.0.0.0/8", None), 1_000)
            .unwrap();
        assert_ne!(net.id, alice.id);
        assert_eq!(store.load(1_000).unwrap().len(), 2);
        assert_eq!(
            store.load(61_000).unwrap(),
            vec![net.clone()],
            "expired: gone"
        );
        assert_eq!(store.remove(net.id).unwrap(), Some(net.clone()));
        assert_eq!(store.remove(net.id).unwrap(), None);
        let (next, _) = store.upsert(&valid("device", 0, "d", None), 1_000).unwrap();
        assert!(next.id > net.id, "ids are not reused");
    }

    #[test]
    fn memory_store_passes_the_suite() {
        suite(&MemoryBanStore::default());
    }

    #[test]
    fn sqlite_store_passes_the_suite_and_keeps_entries_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guard.sqlite");
        suite(&SqliteBanStore::open(&path).unwrap());
        let reopened = SqliteBanStore::open(&path).unwrap();
        let bans = reopened.load(1_000).unwrap();
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].value, "d");
        assert_eq!(bans[0].reason, "spam");
    }
}
