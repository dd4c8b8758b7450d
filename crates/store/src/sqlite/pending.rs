//! [`PendingFilter`]: which users may have something in their inbox, kept in memory so that a
//! login's redelivery read (`pull_offline`) of a user with an empty inbox costs no hand-off to
//! the blocking pool. Profiled during 10,000 logins, that hand-off (a `spawn_blocking` there
//! and back, for a user who in the common case has nothing) was ~12% of the server's samples.
//!
//! What the filter promises: if it says "clean", owner has no inbox entry at all, so every
//! `pull_offline` of owner — any device, any cursor — is empty. It never says "clean" wrongly;
//! it may say "maybe" wrongly (a hash collision, a rolled-back batch), which only costs the
//! read it would have done anyway.
//!
//! Why the key is the user and not (user, device): an inbox entry is pending for every device
//! of its owner that has not acknowledged it, including a device that has never logged in yet
//! (its first pull returns everything). So a user with any entry has something pending for
//! some device as long as the entry exists, and entries are never deleted: a user, once
//! marked, stays marked (acks of one device or all known ones never clear it).
//!
//! How it stays true across threads and processes:
//! - the writer thread marks a user *before* committing the transaction that inserts their
//!   first entry, so any read that could see the entry (it starts after the commit) finds the
//!   mark: the mark's mutex release happens before the commit, which happens before the
//!   append's reply, which happens before any read a caller orders after it;
//! - at open the set is rebuilt from the database (every owner with an inbox row), before the
//!   writer or any reader runs, so a restart or a crash (the WAL replayed) loses nothing.
//!
//! Memory: one 64-bit hash per marked user in a `HashSet<u64>` (hashbrown: 8 bytes + 1
//! control byte per bucket, load between 7/16 and 7/8), so 10.3–20.6 bytes per user, ~15 on
//! average, plus 16 small shard headers. A million users with mail: ~15 MB.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};

/// Shards, so logins (readers) and the writer rarely wait on the same mutex.
const SHARDS: usize = 16;

/// ?1/?2 the previous owner: the next owner with an inbox row, by the primary key's order.
pub(super) const NEXT_OWNER_SQL: &str = "SELECT owner_appcode, owner_uid FROM inbox \
     WHERE (owner_appcode, owner_uid) > (?1, ?2) ORDER BY owner_appcode, owner_uid LIMIT 1";

/// Users that may have inbox entries, by a 64-bit hash of (appcode, uid).
pub(super) struct PendingFilter {
    /// Random per filter: nobody can pick uids that collide on purpose (a collision would only
    /// cost reads, but there is no reason to allow it).
    seed: RandomState,
    shards: [Mutex<HashSet<u64, BuildHasherDefault<IdentityHasher>>>; SHARDS],
}

impl std::fmt::Debug for PendingFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingFilter")
            .field("users", &self.len())
            .finish_non_exhaustive()
    }
}

impl PendingFilter {
    /// An empty filter: every user is clean.
    pub(super) fn new() -> Self {
        Self {
            seed: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::new(HashSet::default())),
        }
    }

    /// Every owner with at least one inbox row in the database behind `conn`. Any row kind
    /// counts (device rows only exist next to an entry; counting them is merely conservative).
    ///
    /// A skip scan of the inbox primary key: one `(appcode, uid) > previous` probe per owner,
    /// so its cost grows with the number of owners, not with the number of entries.
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let filter = Self::new();
        let mut next = conn.prepare(NEXT_OWNER_SQL)?;
        // Below every stored key: appcodes are u32, so never negative.
        let mut after: (i64, String) = (i64::MIN, String::new());
        while let Some(owner) = next
            .query_row(params![after.0, after.1], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })
            .optional()?
        {
            // A foreign appcode outside u32 cannot be asked for, so it needs no mark.
            if let Ok(appcode) = u32::try_from(owner.0) {
                filter.mark(appcode, &owner.1);
            }
            after = owner;
        }
        Ok(filter)
    }

    fn hash(&self, appcode: u32, uid: &str) -> u64 {
        self.seed.hash_one((appcode, uid))
    }

    fn shard(&self, hash: u64) -> &Mutex<HashSet<u64, BuildHasherDefault<IdentityHasher>>> {
        // Bits 32.. pick the shard; hashbrown takes the bucket from the low bits and its tag
        // from the top 7, so the three stay independent.
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    /// Owner may have entries from now on. Call before the commit that inserts them.
    pub(super) fn mark(&self, appcode: u32, uid: &str) {
        let hash = self.hash(appcode, uid);
        // A panic elsewhere while holding the lock cannot leave a set half-updated (insert
        // either happened or not), so a poisoned lock is still good to use.
        self.shard(hash)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(hash);
    }

    /// False only if owner certainly has no inbox entry.
    pub(super) fn may_have(&self, appcode: u32, uid: &str) -> bool {
        let hash = self.hash(appcode, uid);
        self.shard(hash)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&hash)
    }

    /// Users marked (distinct hashes).
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// The set's keys are already uniform 64-bit hashes: hashing them again would be wasted work.
#[derive(Default)]
pub(super) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; fold anything else rather than ignore it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
