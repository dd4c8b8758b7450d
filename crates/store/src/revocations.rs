//! Token revocations (issue 8, "revocation of a uid's tokens"): for each user, the instant
//! before which its login tokens were revoked. Logic refuses a LOGIN whose token was issued
//! (`iat`) before it and a RESUME of a session that logged in before it.
//!
//! The set is read on every LOGIN and RESUME and written only by an operator's revocation,
//! so every backend keeps the whole set in memory ([`TokenRevocations::revoked_before`] is a
//! map lookup, never I/O) and writes through to durable storage before answering. A user's
//! entry only moves forward: revoking again with an earlier instant changes nothing.
//!
//! [`SqliteRevocations`] is the single-node backend (`<data_dir>/tokens.sqlite`, WAL,
//! `synchronous=FULL`): a revocation survives a crash once [`TokenRevocations::revoke`]
//! returned. [`MemoryRevocations`] keeps them for the process only (tests, tools).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use crate::StoreError;

/// Where revocations live.
#[async_trait::async_trait]
pub trait TokenRevocations: Send + Sync + 'static {
    /// Tokens of `(appcode, uid)` issued before this instant (unix ms) are revoked; `None`
    /// when the user has no revocation. From memory: cheap enough for every LOGIN.
    fn revoked_before(&self, appcode: u32, uid: &str) -> Option<u64>;

    /// Revokes the tokens of `(appcode, uid)` issued before `before_ms` (unix ms), durably,
    /// and returns the user's revocation instant afterwards (the later of the old and new).
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for an empty uid, [`StoreError::Unavailable`] when the
    /// write failed (nothing changed then).
    async fn revoke(&self, appcode: u32, uid: &str, before_ms: u64) -> Result<u64, StoreError>;
}

type Entries = RwLock<HashMap<(u32, String), u64>>;

fn lookup(entries: &Entries, appcode: u32, uid: &str) -> Option<u64> {
    let entries = entries.read().unwrap_or_else(|p| p.into_inner());
    // The key owns its uid; build it only when there is anything to find.
    if entries.is_empty() {
        return None;
    }
    entries.get(&(appcode, uid.to_owned())).copied()
}

fn remember(entries: &Entries, appcode: u32, uid: &str, before_ms: u64) -> u64 {
    let mut entries = entries.write().unwrap_or_else(|p| p.into_inner());
    let slot = entries.entry((appcode, uid.to_owned())).or_insert(0);
    *slot = (*slot).max(before_ms);
    *slot
}

fn check_uid(uid: &str) -> Result<(), StoreError> {
    if uid.is_empty() || uid.len() > crate::MAX_ID_BYTES {
        return Err(StoreError::InvalidArgument(format!(
            "uid must be 1..={} bytes",
            crate::MAX_ID_BYTES
        )));
    }
    Ok(())
}

/// Revocations kept in memory only (lost with the process).
#[derive(Debug, Default)]
pub struct MemoryRevocations {
    entries: Entries,
}

impl MemoryRevocations {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl TokenRevocations for MemoryRevocations {
    fn revoked_before(&self, appcode: u32, uid: &str) -> Option<u64> {
        lookup(&self.entries, appcode, uid)
    }

    async fn revoke(&self, appcode: u32, uid: &str, before_ms: u64) -> Result<u64, StoreError> {
        check_uid(uid)?;
        Ok(remember(&self.entries, appcode, uid, before_ms))
    }
}

const SCHEMA_VERSION: i64 = 1;
const SCHEMA: &str = "CREATE TABLE token_revocations (
    appcode INTEGER NOT NULL,
    uid TEXT NOT NULL,
    before_ms INTEGER NOT NULL,
    PRIMARY KEY (appcode, uid)
) STRICT, WITHOUT ROWID;";

/// Revocations in an SQLite file (one writer connection; revocations are rare, so no group
/// commit), all loaded into memory at open.
pub struct SqliteRevocations {
    entries: Entries,
    conn: Arc<Mutex<rusqlite::Connection>>,
}

impl std::fmt::Debug for SqliteRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.entries.read().map_or(0, |e| e.len());
        f.debug_struct("SqliteRevocations")
            .field("users", &count)
            .finish_non_exhaustive()
    }
}

impl SqliteRevocations {
    /// Opens (or creates) the file at `path` and loads every revocation.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be opened, is not this schema, or
    /// WAL / `synchronous=FULL` cannot be set.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let unavailable = |err: rusqlite::Error| {
            StoreError::Unavailable(format!("token revocations {}: {err}", path.display()))
        };
        let mut conn = longlink_sqlite::open_writer(path).map_err(unavailable)?;
        // The writer turns automatic checkpoints off (the store's checkpointer thread runs
        // them); with a handful of writes a checkpoint after each one costs nothing.
        longlink_sqlite::ensure_schema(&mut conn, SCHEMA_VERSION, SCHEMA).map_err(unavailable)?;
        let mut loaded = HashMap::new();
        {
            let mut statement = conn
                .prepare("SELECT appcode, uid, before_ms FROM token_revocations")
                .map_err(unavailable)?;
            let rows = statement
                .query_map([], |row| {
                    Ok((
                        row.get::<_, u32>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .map_err(unavailable)?;
            for row in rows {
                let (appcode, uid, before) = row.map_err(unavailable)?;
                loaded.insert((appcode, uid), longlink_sqlite::u64_from_bits(before));
            }
        }
        Ok(Self {
            entries: RwLock::new(loaded),
            conn: Arc::new(Mutex::new(conn)),
        })
    }
}

#[async_trait::async_trait]
impl TokenRevocations for SqliteRevocations {
    fn revoked_before(&self, appcode: u32, uid: &str) -> Option<u64> {
        lookup(&self.entries, appcode, uid)
    }

    async fn revoke(&self, appcode: u32, uid: &str, before_ms: u64) -> Result<u64, StoreError> {
        check_uid(uid)?;
        let conn = self.conn.clone();
        let owned_uid = uid.to_owned();
        // A blocking fsync: off the async workers.
        let stored = tokio::task::spawn_blocking(move || -> rusqlite::Result<i64> {
            let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            let stored = conn.query_row(
                "INSERT INTO token_revocations (appcode, uid, before_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (appcode, uid) DO UPDATE SET before_ms = max(before_ms, excluded.before_ms)
                 RETURNING before_ms",
                rusqlite::params![
                    appcode,
                    owned_uid,
                    longlink_sqlite::bits_from_u64(before_ms)
                ],
                |row| row.get(0),
            )?;
            // Keep the WAL short: this connection never checkpoints by itself.
            let _ = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
            Ok(stored)
        })
        .await
        .map_err(|err| StoreError::Unavailable(format!("revocation writer failed: {err}")))?
        .map_err(|err| StoreError::Unavailable(format!("revocation not stored: {err}")))?;
        // Only after the commit: a revocation never takes effect without being durable.
        Ok(remember(
            &self.entries,
            appcode,
            uid,
            longlink_sqlite::u64_from_bits(stored),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn revocations_move_forward_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tokens.sqlite");
        {
            let revocations = SqliteRevocations::open(&path).expect("open");
            assert_eq!(revocations.revoked_before(129, "alice"), None);
            assert_eq!(revocations.revoke(129, "alice", 2000).await.unwrap(), 2000);
            // Earlier: no change.
            assert_eq!(revocations.revoke(129, "alice", 1000).await.unwrap(), 2000);
            assert_eq!(revocations.revoked_before(129, "alice"), Some(2000));
            assert_eq!(revocations.revoked_before(130, "alice"), None);
            assert!(revocations.revoke(129, "", 1).await.is_err());
        }
        let reopened = SqliteRevocations::open(&path).expect("reopen");
        assert_eq!(reopened.revoked_before(129, "alice"), Some(2000));
        let memory = MemoryRevocations::new();
        assert_eq!(memory.revoke(1, "u", 5).await.unwrap(), 5);
        assert_eq!(memory.revoked_before(1, "u"), Some(5));
    }
}
