//! [`MemoryPresence`]: presence in a sharded in-process map, for a single node.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::{AppcodeCounts, LoginRule, Presence, PresenceError, Registration, SessionEntry};

const SHARDS: usize = 64;

type Key = (u32, String);

/// Single-node presence: `(appcode, uid) → sessions`, in 64 mutex-guarded shards so that
/// logins of different users rarely contend. Locks are never held across an `.await`.
#[derive(Debug)]
pub struct MemoryPresence {
    shards: Vec<Mutex<HashMap<Key, Vec<SessionEntry>>>>,
    hasher: RandomState,
    count: AtomicU64,
    /// The last epoch given out.
    epoch: AtomicU64,
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
        }
    }

    /// The next epoch: larger than every one given out, and than any of an earlier run of
    /// this process (seeded from the clock, like msgids).
    fn next_epoch(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
            << 20;
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
            if rule.prior_epoch != 0
                && let Some(&newer) = victims
                    .iter()
                    .find(|&&i| sessions[i].epoch > rule.prior_epoch)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MultiLogin;

    fn entry(uid: &str, device: &str, session_id: u64) -> SessionEntry {
        SessionEntry {
            appcode: 129,
            uid: uid.into(),
            device_id: device.into(),
            device_class: String::new(),
            epoch: 0,
            gate_id: "g1".into(),
            session_id,
            since_ms: 0,
        }
    }

    fn classed(uid: &str, device: &str, class: &str, session_id: u64) -> SessionEntry {
        SessionEntry {
            device_class: class.into(),
            ..entry(uid, device, session_id)
        }
    }

    /// Registers with the default rule; returns (epoch, replaced session ids).
    async fn login(p: &MemoryPresence, e: SessionEntry, rule: LoginRule) -> (u64, Vec<u64>) {
        match p.register(e, &rule).await.unwrap() {
            Registration::Accepted { epoch, replaced } => {
                let mut ids: Vec<u64> = replaced.iter().map(|s| s.session_id).collect();
                ids.sort_unstable();
                (epoch, ids)
            }
            other => panic!("refused: {other:?}"),
        }
    }

    async fn ids(p: &MemoryPresence, uid: &str) -> Vec<u64> {
        let mut ids: Vec<u64> = p
            .sessions(129, uid)
            .await
            .unwrap()
            .iter()
            .map(|s| s.session_id)
            .collect();
        ids.sort_unstable();
        ids
    }

    #[tokio::test]
    async fn same_device_replaces_other_devices_stay() {
        let p = MemoryPresence::new();
        let rule = LoginRule::default();
        let (e1, none) = login(&p, entry("a", "phone", 1), rule).await;
        assert!(none.is_empty());
        let (e2, none) = login(&p, entry("a", "web", 2), rule).await;
        assert!(none.is_empty());
        let (e3, replaced) = login(&p, entry("a", "phone", 3), rule).await;
        assert_eq!(replaced, vec![1]);
        assert!(e1 < e2 && e2 < e3, "epochs grow: {e1} {e2} {e3}");
        assert_eq!(ids(&p, "a").await, vec![2, 3]);
        assert_eq!(p.session_count().await.unwrap(), 2);
        // The replaced session's late unregister must not remove the newer one.
        assert!(!p.unregister(129, "a", "g1", 1).await.unwrap());
        assert!(p.unregister(129, "a", "g1", 3).await.unwrap());
        assert!(p.unregister(129, "a", "g1", 2).await.unwrap());
        assert!(p.sessions(129, "a").await.unwrap().is_empty());
        assert_eq!(p.session_count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn kick_policy_keeps_one_session_per_class_allow_keeps_n() {
        let p = MemoryPresence::new();
        let kick = LoginRule::default();
        login(&p, classed("a", "phone-1", "phone", 1), kick).await;
        login(&p, classed("a", "web-1", "web", 2), kick).await;
        let (_, replaced) = login(&p, classed("a", "phone-2", "phone", 3), kick).await;
        assert_eq!(replaced, vec![1], "a newer phone replaces the older phone");
        assert_eq!(ids(&p, "a").await, vec![2, 3]);

        let allow2 = LoginRule {
            policy: MultiLogin::Allow { max_sessions: 2 },
            prior_epoch: 0,
        };
        login(&p, classed("b", "p1", "phone", 10), allow2).await;
        let (_, none) = login(&p, classed("b", "p2", "phone", 11), allow2).await;
        assert!(none.is_empty(), "two phones are allowed");
        let (_, replaced) = login(&p, classed("b", "p3", "phone", 12), allow2).await;
        assert_eq!(replaced, vec![10], "the third replaces the oldest");
        let (_, replaced) = login(&p, classed("b", "p3", "phone", 13), allow2).await;
        assert_eq!(replaced, vec![12], "the same device replaces itself only");
        assert_eq!(ids(&p, "b").await, vec![11, 13]);

        // Under kick, invented classes cannot multiply sessions: the cap replaces the oldest.
        let kick2 = LoginRule {
            policy: MultiLogin::Kick { max_sessions: 2 },
            prior_epoch: 0,
        };
        login(&p, classed("c", "d1", "x1", 20), kick2).await;
        login(&p, classed("c", "d2", "x2", 21), kick2).await;
        let (_, replaced) = login(&p, classed("c", "d3", "x3", 22), kick2).await;
        assert_eq!(replaced, vec![20], "beyond max_sessions the oldest goes");
        assert_eq!(ids(&p, "c").await, vec![21, 22]);
    }

    #[tokio::test]
    async fn a_stale_reconnect_cannot_replace_a_fresher_session() {
        let p = MemoryPresence::new();
        let fresh = LoginRule::default();
        let (old_epoch, _) = login(&p, classed("a", "phone-1", "phone", 1), fresh).await;
        // phone-2 logs in: phone-1 is replaced.
        let (new_epoch, replaced) = login(&p, classed("a", "phone-2", "phone", 2), fresh).await;
        assert_eq!(replaced, vec![1]);
        // phone-1 reconnects by itself with its old epoch: refused, phone-2 stays.
        let stale = LoginRule {
            prior_epoch: old_epoch,
            ..fresh
        };
        match p
            .register(classed("a", "phone-1", "phone", 3), &stale)
            .await
            .unwrap()
        {
            Registration::Superseded { by } => {
                assert_eq!((by.session_id, by.epoch), (2, new_epoch));
            }
            other => panic!("a stale login was accepted: {other:?}"),
        }
        assert_eq!(ids(&p, "a").await, vec![2]);
        // The same device reconnecting with its own current epoch replaces itself.
        let own = LoginRule {
            prior_epoch: new_epoch,
            ..fresh
        };
        let (_, replaced) = login(&p, classed("a", "phone-2", "phone", 4), own).await;
        assert_eq!(replaced, vec![2]);
        // A login the user asked for (no prior epoch) always wins.
        let (_, replaced) = login(&p, classed("a", "phone-1", "phone", 5), fresh).await;
        assert_eq!(replaced, vec![4]);
    }

    #[tokio::test]
    async fn resume_repoints_the_session_only_while_its_epoch_is_current() {
        let p = MemoryPresence::new();
        let (epoch, _) = login(&p, entry("a", "phone", 1), LoginRule::default()).await;
        let before = p
            .resume(129, "a", "phone", epoch, "g2", 7)
            .await
            .unwrap()
            .expect("the session is there");
        assert_eq!((before.gate_id.as_str(), before.session_id), ("g1", 1));
        let now = p.sessions(129, "a").await.unwrap();
        assert_eq!(
            (now[0].gate_id.as_str(), now[0].session_id, now[0].epoch),
            ("g2", 7, epoch)
        );
        // The old connection's late unregister leaves the resumed session alone.
        assert!(!p.unregister(129, "a", "g1", 1).await.unwrap());
        assert!(
            p.resume(129, "a", "phone", epoch + 1, "g2", 8)
                .await
                .unwrap()
                .is_none(),
            "another epoch is not this session"
        );
        login(&p, entry("a", "phone", 9), LoginRule::default()).await;
        assert!(
            p.resume(129, "a", "phone", epoch, "g2", 10)
                .await
                .unwrap()
                .is_none(),
            "a replaced session cannot be resumed"
        );
    }

    #[tokio::test]
    async fn unregister_names_the_gate_as_session_ids_are_unique_per_gate_only() {
        let p = MemoryPresence::new();
        let rule = LoginRule {
            policy: MultiLogin::Allow { max_sessions: 5 },
            prior_epoch: 0,
        };
        login(&p, entry("a", "phone", 1), rule).await;
        let on_g2 = SessionEntry {
            gate_id: "g2".into(),
            ..entry("a", "web", 1)
        };
        login(&p, on_g2, rule).await;
        assert!(!p.unregister(129, "a", "g3", 1).await.unwrap());
        assert!(p.unregister(129, "a", "g1", 1).await.unwrap());
        let left = p.sessions(129, "a").await.unwrap();
        assert_eq!(left.len(), 1, "session 1 of g2 is another session");
        assert_eq!(
            (left[0].gate_id.as_str(), left[0].device_id.as_str()),
            ("g2", "web")
        );
        assert_eq!(p.session_count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_scan_sees_every_online_user_of_the_appcode_once() {
        let p = MemoryPresence::new();
        let rule = LoginRule::default();
        for i in 0..500 {
            p.register(entry(&format!("u{i}"), "phone", i), &rule)
                .await
                .unwrap();
        }
        p.register(entry("u0", "web", 1000), &rule).await.unwrap();
        let mut other = entry("x", "phone", 2000);
        other.appcode = 130;
        p.register(other, &rule).await.unwrap();
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
