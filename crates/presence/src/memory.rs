//! [`MemoryPresence`]: presence in a sharded in-process map, for a single node.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::{
    AppcodeCounts, GateBeat, LoginRule, Presence, PresenceError, Registration, SessionEntry,
};

const SHARDS: usize = 64;

type Key = (u32, String);

/// Gate id → its latest heartbeat and the instant it stops counting.
type GateTable = HashMap<String, (GateBeat, Instant)>;

/// Single-node presence: `(appcode, uid) → sessions`, in 64 mutex-guarded shards so that
/// logins of different users rarely contend. Locks are never held across an `.await`.
#[derive(Debug)]
pub struct MemoryPresence {
    shards: Vec<Mutex<HashMap<Key, Vec<SessionEntry>>>>,
    hasher: RandomState,
    count: AtomicU64,
    /// The last epoch given out.
    epoch: AtomicU64,
    /// Gate id → its latest heartbeat and when that stops counting.
    gates: Mutex<GateTable>,
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
            epoch: AtomicU64::new(0),
            gates: Mutex::new(HashMap::new()),
        }
    }

    fn gates(&self) -> Result<std::sync::MutexGuard<'_, GateTable>, PresenceError> {
        self.gates
            .lock()
            .map_err(|_| PresenceError::Unavailable("gate table poisoned".into()))
    }

    /// The next epoch: larger than every one given out, and than any of an earlier run of
    /// this process (seeded from the clock, like msgids).
    fn next_epoch(&self) -> u64 {
        let now = unix_ms() << 20;
        let mut last = self.epoch.load(Ordering::Relaxed);
        loop {
            let next = (last + 1).max(now);
            match self
                .epoch
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
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
    async fn register(
        &self,
        mut entry: SessionEntry,
        rule: &LoginRule,
    ) -> Result<Registration, PresenceError> {
        let (appcode, uid) = (entry.appcode, entry.uid.clone());
        let outcome = self.with_shard(appcode, &uid, |map| {
            let sessions = map.entry((appcode, uid.clone())).or_default();
            let mut victims = crate::victims(sessions, &entry, rule.policy);
            victims.sort_unstable();
            // The newest session it would replace names the refusal (every backend alike).
            if rule.prior_epoch != 0
                && let Some(&newer) = victims
                    .iter()
                    .filter(|&&i| sessions[i].epoch > rule.prior_epoch)
                    .max_by_key(|&&i| sessions[i].epoch)
            {
                return Registration::Superseded {
                    by: sessions[newer].clone(),
                };
            }
            // Taken under the shard lock: the user's epochs grow in registration order.
            entry.epoch = self.next_epoch();
            let epoch = entry.epoch;
            let mut replaced = Vec::with_capacity(victims.len());
            for i in victims.into_iter().rev() {
                replaced.push(sessions.swap_remove(i));
            }
            if sessions.capacity() == 0 {
                // Most users have one session: room for one entry, not a `Vec`'s first four
                // (~0.4 KB per online user).
                sessions.reserve_exact(1);
            }
            sessions.push(entry);
            Registration::Accepted { epoch, replaced }
        })?;
        if let Registration::Accepted { replaced, .. } = &outcome {
            self.count.fetch_add(1, Ordering::Relaxed);
            self.count
                .fetch_sub(replaced.len() as u64, Ordering::Relaxed);
        }
        Ok(outcome)
    }

    async fn resume(
        &self,
        appcode: u32,
        uid: &str,
        device_id: &str,
        epoch: u64,
        gate_id: &str,
        session_id: u64,
    ) -> Result<Option<SessionEntry>, PresenceError> {
        self.with_shard(appcode, uid, |map| {
            let sessions = map.get_mut(&(appcode, uid.to_owned()))?;
            let entry = sessions
                .iter_mut()
                .find(|s| s.device_id == device_id && s.epoch == epoch)?;
            let before = entry.clone();
            entry.gate_id = gate_id.to_owned();
            entry.session_id = session_id;
            Some(before)
        })
    }

    async fn unregister(
        &self,
        appcode: u32,
        uid: &str,
        gate_id: &str,
        session_id: u64,
    ) -> Result<bool, PresenceError> {
        let removed = self.with_shard(appcode, uid, |map| {
            let key = (appcode, uid.to_owned());
            let Some(sessions) = map.get_mut(&key) else {
                return false;
            };
            let before = sessions.len();
            sessions.retain(|s| s.session_id != session_id || s.gate_id != gate_id);
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

    async fn gate_heartbeat(&self, mut beat: GateBeat, ttl: Duration) -> Result<(), PresenceError> {
        beat.last_seen_ms = unix_ms();
        beat.ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let until = Instant::now().checked_add(ttl).unwrap_or_else(far_future);
        let mut gates = self.gates()?;
        // Dead gates' beats are dropped here, so the table holds at most the gates heard from.
        let now = Instant::now();
        gates.retain(|_, (_, until)| *until > now);
        gates.insert(beat.gate_id.clone(), (beat, until));
        Ok(())
    }

    async fn live_gates(&self) -> Result<Vec<GateBeat>, PresenceError> {
        let now = Instant::now();
        let mut live: Vec<GateBeat> = self
            .gates()?
            .values()
            .filter(|(_, until)| *until > now)
            .map(|(beat, _)| beat.clone())
            .collect();
        live.sort_by(|a, b| a.gate_id.cmp(&b.gate_id));
        Ok(live)
    }

    async fn purge_gate(&self, gate_id: &str) -> Result<u64, PresenceError> {
        // In one process a walk over the shards is cheap (a node purges only its own gates),
        // so no per-gate index is kept here.
        let mut removed = 0u64;
        for shard in &self.shards {
            let mut guard = shard
                .lock()
                .map_err(|_| PresenceError::Unavailable("presence shard poisoned".into()))?;
            guard.retain(|_, sessions| {
                let before = sessions.len();
                sessions.retain(|s| s.gate_id != gate_id);
                removed += (before - sessions.len()) as u64;
                !sessions.is_empty()
            });
        }
        self.count.fetch_sub(removed, Ordering::Relaxed);
        self.gates()?.remove(gate_id);
        Ok(removed)
    }

    async fn restore_sessions(&self, entries: Vec<SessionEntry>) -> Result<u64, PresenceError> {
        let mut restored = 0u64;
        for entry in entries {
            // Later logins must get larger epochs than every restored one.
            self.epoch.fetch_max(entry.epoch, Ordering::AcqRel);
            let (appcode, uid) = (entry.appcode, entry.uid.clone());
            let (added, dropped) = self.with_shard(appcode, &uid, |map| {
                let sessions = map.entry((appcode, uid.clone())).or_default();
                if sessions
                    .iter()
                    .any(|s| s.device_id == entry.device_id && s.epoch >= entry.epoch)
                {
                    return (false, 0);
                }
                let before = sessions.len();
                sessions.retain(|s| s.device_id != entry.device_id);
                let dropped = before - sessions.len();
                sessions.push(entry);
                (true, dropped as u64)
            })?;
            if added {
                restored += 1;
                self.count.fetch_add(1, Ordering::Relaxed);
                self.count.fetch_sub(dropped, Ordering::Relaxed);
            }
        }
        Ok(restored)
    }
}

/// An instant no ttl reaches (a ttl too large to add to now).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// Unix milliseconds now.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn new_memory() -> (MemoryPresence, ()) {
        (MemoryPresence::new(), ())
    }

    crate::presence_testsuite!(new_memory);

    #[tokio::test]
    async fn epochs_are_unique_across_users_in_one_process() {
        let p = MemoryPresence::new();
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let e = crate::testsuite::entry(&format!("u{i}"), "phone", i);
            let (epoch, _) = crate::testsuite::login(&p, e, LoginRule::default()).await;
            assert!(seen.insert(epoch), "epoch {epoch} given twice");
        }
    }
}
