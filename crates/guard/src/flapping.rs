//! [`FlapDetector`]: "more than `max` events of one key within `window` → refused for
//! `penalty`", over a sharded, bounded map.
//!
//! A fixed window per key (it starts at the key's first event and restarts once `window` has
//! passed): at most one `Instant` and two integers per key, no per-event history. Attempts
//! while refused are not counted, so a client that waits `retry_after_ms` gets back in. The
//! map is bounded by `max_keys`: when a shard is full, entries whose window and penalty are
//! over are pruned (at most once a second per shard, so a flood of new keys cannot make every
//! call a scan); if it is still full, new keys pass untracked (fail open — the per-IP limit and
//! the gate's connection cap still hold).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

/// One rule: `max` events per `window`, else `penalty`. `max == 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapRule {
    /// Events allowed per window (0 = no limit).
    pub max: u32,
    /// The window.
    pub window: Duration,
    /// How long a key that went over is refused.
    pub penalty: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Track {
    window_start: Instant,
    count: u32,
    blocked_until: Option<Instant>,
}

#[derive(Debug)]
struct Shard<K> {
    map: HashMap<K, Track>,
    last_prune: Option<Instant>,
}

/// Counts events per key; see the module docs.
#[derive(Debug)]
pub struct FlapDetector<K> {
    rule: FlapRule,
    per_shard: usize,
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<Mutex<Shard<K>>>,
}

impl<K: Hash + Eq> FlapDetector<K> {
    /// A detector applying `rule`, tracking at most about `max_keys` keys.
    pub fn new(rule: FlapRule, max_keys: usize) -> Self {
        Self {
            rule,
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: std::collections::hash_map::RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        last_prune: None,
                    })
                })
                .collect(),
        }
    }

    /// Records one event of `key` at `now`.
    ///
    /// # Errors
    /// The key is refused: how long it still is.
    pub fn hit(&self, key: K, now: Instant) -> Result<(), Duration> {
        let rule = self.rule;
        if rule.max == 0 {
            return Ok(());
        }
        let index = (self.hasher.hash_one(&key) % SHARDS as u64) as usize;
        let mut shard = self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !shard.map.contains_key(&key) && shard.map.len() >= self.per_shard {
            let due = shard
                .last_prune
                .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
            if due {
                shard.last_prune = Some(now);
                shard.map.retain(|_, t| live(t, &rule, now));
            }
            if shard.map.len() >= self.per_shard {
                return Ok(());
            }
        }
        let track = shard.map.entry(key).or_insert(Track {
            window_start: now,
            count: 0,
            blocked_until: None,
        });
        if let Some(until) = track.blocked_until {
            if now < until {
                return Err(until - now);
            }
            *track = Track {
                window_start: now,
                count: 0,
                blocked_until: None,
            };
        }
        if now.saturating_duration_since(track.window_start) >= rule.window {
            track.window_start = now;
            track.count = 0;
        }
        track.count = track.count.saturating_add(1);
        if track.count > rule.max {
            track.blocked_until = Some(now + rule.penalty);
            return Err(rule.penalty);
        }
        Ok(())
    }

    /// Keys tracked right now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.map.len()).unwrap_or(0))
            .sum()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a track still matters: its window or its penalty is not over.
fn live(track: &Track, rule: &FlapRule, now: Instant) -> bool {
    track.blocked_until.is_some_and(|until| now < until)
        || now.saturating_duration_since(track.window_start) < rule.window
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(max: u32) -> FlapRule {
        FlapRule {
            max,
            window: Duration::from_secs(10),
            penalty: Duration::from_secs(30),
        }
    }

    #[test]
    fn more_than_max_in_a_window_is_refused_for_the_penalty() {
        let flaps = FlapDetector::new(rule(3), 100);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(flaps.hit("a", t0 + Duration::from_secs(i)), Ok(()));
        }
        assert_eq!(
            flaps.hit("a", t0 + Duration::from_secs(3)),
            Err(Duration::from_secs(30))
        );
        assert_eq!(flaps.hit("b", t0), Ok(()), "other keys are unaffected");
        assert_eq!(
            flaps.hit("a", t0 + Duration::from_secs(13)),
            Err(Duration::from_secs(20)),
            "refused until the penalty ends, and told how long"
        );
        assert_eq!(
            flaps.hit("a", t0 + Duration::from_secs(33)),
            Ok(()),
            "back in once it is over"
        );
    }

    #[test]
    fn a_new_window_starts_the_count_again() {
        let flaps = FlapDetector::new(rule(2), 100);
        let t0 = Instant::now();
        assert!(flaps.hit(1u32, t0).is_ok());
        assert!(flaps.hit(1, t0 + Duration::from_secs(1)).is_ok());
        assert!(flaps.hit(1, t0 + Duration::from_secs(10)).is_ok());
        assert!(flaps.hit(1, t0 + Duration::from_secs(11)).is_ok());
        assert!(flaps.hit(1, t0 + Duration::from_secs(12)).is_err());
    }

    #[test]
    fn zero_max_is_off_and_the_map_stays_bounded() {
        let off = FlapDetector::new(rule(0), 10);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(off.hit("a", t0).is_ok());
        }
        assert!(off.is_empty());
        let flaps = FlapDetector::new(rule(1), 32);
        for key in 0..10_000u32 {
            assert!(flaps.hit(key, t0).is_ok());
        }
        assert!(flaps.len() <= 32, "bounded: {}", flaps.len());
        // Once the windows are over, pruning makes room for new keys.
        let later = t0 + Duration::from_secs(60);
        for key in 20_000..20_016u32 {
            assert!(flaps.hit(key, later).is_ok());
        }
        assert!(
            flaps.hit(20_000, later).is_err(),
            "tracked again after the prune"
        );
    }
}
