//! [`MemoryPresence`]: presence in a sharded in-process map, for a single node.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::{AppcodeCounts, Presence, PresenceError, SessionEntry};

const SHARDS: usize = 64;

type Key = (u32, String);

/// Single-node presence: `(appcode, uid) → sessions`, in 64 mutex-guarded shards so that
/// logins of different users rarely contend. Locks are never held across an `.await`.
#[derive(Debug)]
pub struct MemoryPresence {
    shards: Vec<Mutex<HashMap<Key, Vec<SessionEntry>>>>,
    hasher: RandomState,
    count: AtomicU64,
}

impl Default for MemoryPresence {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryPresence {
    /// An empty presence table.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            count: AtomicU64::new(0),
        }
    }

    fn shard(&self, appcode: u32, uid: &str) -> &Mutex<HashMap<Key, Vec<SessionEntry>>> {
        let index = self.hasher.hash_one((appcode, uid)) as usize % SHARDS;
        &self.shards[index]
    }

    fn with_shard<T>(
        &self,
        appcode: u32,
        uid: &str,
        f: impl FnOnce(&mut HashMap<Key, Vec<SessionEntry>>) -> T,
    ) -> Result<T, PresenceError> {
        let mut guard = self
            .shard(appcode, uid)
            .lock()
            .map_err(|_| PresenceError::Unavailable("presence shard poisoned".into()))?;
        Ok(f(&mut guard))
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn register(&self, entry: SessionEntry) -> Result<Vec<SessionEntry>, PresenceError> {
        let (appcode, uid) = (entry.appcode, entry.uid.clone());
        let replaced = self.with_shard(appcode, &uid, |map| {
            let sessions = map.entry((appcode, uid.clone())).or_default();
            let (replaced, kept): (Vec<_>, Vec<_>) = sessions
                .drain(..)
                .partition(|s| s.device_id == entry.device_id);
            *sessions = kept;
            sessions.push(entry);
            replaced
        })?;
        self.count.fetch_add(1, Ordering::Relaxed);
        self.count
            .fetch_sub(replaced.len() as u64, Ordering::Relaxed);
        Ok(replaced)
    }

    async fn unregister(
        &self,
        appcode: u32,
        uid: &str,
        session_id: u64,
    ) -> Result<bool, PresenceError> {
        let removed = self.with_shard(appcode, uid, |map| {
            let key = (appcode, uid.to_owned());
            let Some(sessions) = map.get_mut(&key) else {
                return false;
            };
            let before = sessions.len();
            sessions.retain(|s| s.session_id != session_id);
            let removed = sessions.len() != before;
            if sessions.is_empty() {
                map.remove(&key);
            }
            removed
        })?;
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(removed)
    }

    async fn sessions(&self, appcode: u32, uid: &str) -> Result<Vec<SessionEntry>, PresenceError> {
        self.with_shard(appcode, uid, |map| {
            map.get(&(appcode, uid.to_owned()))
                .cloned()
                .unwrap_or_default()
        })
    }

    async fn session_count(&self) -> Result<u64, PresenceError> {
        Ok(self.count.load(Ordering::Relaxed))
    }

    async fn appcode_counts(&self, appcode: u32) -> Result<AppcodeCounts, PresenceError> {
        let mut counts = AppcodeCounts::default();
        for shard in &self.shards {
            let guard = shard
                .lock()
                .map_err(|_| PresenceError::Unavailable("presence shard poisoned".into()))?;
            for ((code, _), sessions) in guard.iter() {
                if *code == appcode && !sessions.is_empty() {
                    counts.users += 1;
                    counts.sessions += sessions.len() as u64;
                }
            }
        }
        Ok(counts)
    }

    async fn online_uids(
        &self,
        appcode: u32,
        cursor: u64,
        limit: usize,
    ) -> Result<(Vec<String>, u64), PresenceError> {
        // The cursor is the next shard to read; whole shards are returned, so a user is seen
        // exactly once by a scan here.
        let mut shard_index = usize::try_from(cursor).unwrap_or(SHARDS);
        let mut out = Vec::new();
        while shard_index < SHARDS && out.len() < limit.max(1) {
            let guard = self.shards[shard_index]
                .lock()
                .map_err(|_| PresenceError::Unavailable("presence shard poisoned".into()))?;
            out.extend(
                guard
                    .iter()
                    .filter(|((code, _), sessions)| *code == appcode && !sessions.is_empty())
                    .map(|((_, uid), _)| uid.clone()),
            );
            shard_index += 1;
        }
        let next = if shard_index >= SHARDS {
            0
        } else {
            shard_index as u64
        };
        Ok((out, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uid: &str, device: &str, session_id: u64) -> SessionEntry {
        SessionEntry {
            appcode: 129,
            uid: uid.into(),
            device_id: device.into(),
            gate_id: "g1".into(),
            session_id,
            since_ms: 0,
        }
    }

    #[tokio::test]
    async fn same_device_replaces_other_devices_stay() {
        let p = MemoryPresence::new();
        assert!(p.register(entry("a", "phone", 1)).await.unwrap().is_empty());
        assert!(p.register(entry("a", "web", 2)).await.unwrap().is_empty());
        let replaced = p.register(entry("a", "phone", 3)).await.unwrap();
        assert_eq!(replaced, vec![entry("a", "phone", 1)]);
        let mut ids: Vec<u64> = p
            .sessions(129, "a")
            .await
            .unwrap()
            .iter()
            .map(|s| s.session_id)
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![2, 3]);
        assert_eq!(p.session_count().await.unwrap(), 2);
        // The replaced session's late unregister must not remove the newer one.
        assert!(!p.unregister(129, "a", 1).await.unwrap());
        assert!(p.unregister(129, "a", 3).await.unwrap());
        assert!(p.unregister(129, "a", 2).await.unwrap());
        assert!(p.sessions(129, "a").await.unwrap().is_empty());
        assert_eq!(p.session_count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_scan_sees_every_online_user_of_the_appcode_once() {
        let p = MemoryPresence::new();
        for i in 0..500 {
            p.register(entry(&format!("u{i}"), "phone", i))
                .await
                .unwrap();
        }
        p.register(entry("u0", "web", 1000)).await.unwrap();
        let mut other = entry("x", "phone", 2000);
        other.appcode = 130;
        p.register(other).await.unwrap();
        let counts = p.appcode_counts(129).await.unwrap();
        assert_eq!(
            counts,
            AppcodeCounts {
                users: 500,
                sessions: 501
            }
        );
        let (mut seen, mut cursor) = (Vec::new(), 0);
        loop {
            let (page, next) = p.online_uids(129, cursor, 50).await.unwrap();
            seen.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        seen.sort();
        let mut expected: Vec<String> = (0..500).map(|i| format!("u{i}")).collect();
        expected.sort();
        assert_eq!(seen, expected);
    }
}
