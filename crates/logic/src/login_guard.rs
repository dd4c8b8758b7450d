//! Failed-login limits (issue 8): after `max_failures` token failures (BAD_TOKEN,
//! APPCODE_MISMATCH) within a window from one IP, or for one user, further LOGINs from that
//! IP / for that user get RATE_LIMITED with `retry_after_ms` until a lockout ends. It makes
//! guessing tokens, and spraying stolen ones, slow and visible, and it keeps the CPU cost of
//! signature checks (RSA) an attacker can cause bounded.
//!
//! Counting is governor's GCRA per key (a burst of `max_failures`, refilled one per
//! `window / max_failures`): failures at a human rate never trip it, a burst does. A key that
//! trips is locked for `lockout`; the lock is checked before the token is even parsed, so a
//! locked attacker costs a map lookup. A successful login does not reset the count: the
//! count forgets by itself.
//!
//! The per-user key is the token's *unverified* `sub` (a failed token has no verified one),
//! so anyone can lock a user out for `lockout` by sending bad tokens naming it. That is the
//! price of limiting guesses per account; keep `lockout` short, or set the per-uid limit to
//! 0 to turn it off. Memory is bounded: keys that are back to a fresh state are dropped when
//! a map grows past [`MAX_TRACKED`], and locks past it are not recorded (fail open: the
//! per-IP limit still holds).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota};
use longlink_proto::ErrorCode;
use longlink_rpc::Refusal;

/// Most keys each limiter and each lock map holds before pruning.
pub const MAX_TRACKED: usize = 100_000;

/// The limits; a `max_failures_*` of 0 turns that limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Token failures from one IP tolerated within `window`.
    pub max_failures_per_ip: u32,
    /// Token failures for one (appcode, uid) tolerated within `window`.
    pub max_failures_per_uid: u32,
    /// The window the counts refer to.
    pub window: Duration,
    /// How long a key that went over stays refused.
    pub lockout: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            max_failures_per_ip: 20,
            max_failures_per_uid: 10,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
        }
    }
}

/// One limit: failure counts and the keys locked out.
struct Limit<K: Hash + Eq + Clone> {
    failures: DefaultKeyedRateLimiter<K>,
    locked: Mutex<HashMap<K, Instant>>,
    lockout: Duration,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    fn new(max_failures: u32, window: Duration, lockout: Duration) -> Option<Self> {
        let burst = NonZeroU32::new(max_failures)?;
        // One failure "refills" every window / max_failures.
        let period = (window / max_failures).max(Duration::from_millis(1));
        let quota = Quota::with_period(period)?.allow_burst(burst);
        Some(Self {
            failures: DefaultKeyedRateLimiter::keyed(quota),
            locked: Mutex::new(HashMap::new()),
            lockout: lockout.max(Duration::from_millis(1)),
        })
    }

    /// How long `key` stays locked, if it is.
    fn locked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        let mut locked = self.locked.lock().unwrap_or_else(|p| p.into_inner());
        let until = *locked.get(key)?;
        if until <= now {
            locked.remove(key);
            return None;
        }
        Some(until - now)
    }

    /// Counts a failure of `key`; locks it when that was one too many.
    fn failed(&self, key: &K, now: Instant) -> bool {
        if self.failures.len() > MAX_TRACKED {
            self.failures.retain_recent();
        }
        if self.failures.check_key(key).is_ok() {
            return false;
        }
        let mut locked = self.locked.lock().unwrap_or_else(|p| p.into_inner());
        if locked.len() >= MAX_TRACKED {
            locked.retain(|_, until| *until > now);
        }
        if locked.len() < MAX_TRACKED {
            locked.insert(key.clone(), now + self.lockout);
        }
        true
    }
}

/// The per-IP and per-user failed-login limits of one logic instance.
pub(crate) struct LoginGuard {
    per_ip: Option<Limit<IpAddr>>,
    per_uid: Option<Limit<(u32, String)>>,
}

impl std::fmt::Debug for LoginGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginGuard")
            .field("per_ip", &self.per_ip.is_some())
            .field("per_uid", &self.per_uid.is_some())
            .finish()
    }
}

impl LoginGuard {
    pub(crate) fn new(limits: &LoginLimits) -> Self {
        Self {
            per_ip: Limit::new(limits.max_failures_per_ip, limits.window, limits.lockout),
            per_uid: Limit::new(limits.max_failures_per_uid, limits.window, limits.lockout),
        }
    }

    /// `Ok` unless `peer` or `(appcode, uid)` is locked out: then RATE_LIMITED with the
    /// time left as `retry_after_ms`.
    pub(crate) fn check(
        &self,
        peer: Option<IpAddr>,
        appcode: u32,
        uid: Option<&str>,
    ) -> Result<(), Refusal> {
        let now = Instant::now();
        if let (Some(limit), Some(ip)) = (&self.per_ip, peer)
            && let Some(left) = limit.locked_for(&ip, now)
        {
            return Err(limited("too many failed logins from this address", left));
        }
        if let (Some(limit), Some(uid)) = (&self.per_uid, uid)
            && let Some(left) = limit.locked_for(&(appcode, uid.to_owned()), now)
        {
            return Err(limited("too many failed logins for this user", left));
        }
        Ok(())
    }

    /// Counts a token failure; true when it locked the IP or the user out.
    pub(crate) fn failed(&self, peer: Option<IpAddr>, appcode: u32, uid: Option<&str>) -> bool {
        let now = Instant::now();
        let mut locked = false;
        if let (Some(limit), Some(ip)) = (&self.per_ip, peer) {
            locked |= limit.failed(&ip, now);
        }
        if let (Some(limit), Some(uid)) = (&self.per_uid, uid) {
            locked |= limit.failed(&(appcode, uid.to_owned()), now);
        }
        locked
    }
}

fn limited(why: &str, left: Duration) -> Refusal {
    let ms = u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1);
    Refusal::new(
        ErrorCode::RateLimited,
        format!("{why}: retry after retry_after_ms"),
    )
    .retry_after(ms)
}

/// Whether a refused LOGIN counts as a token failure.
pub(crate) fn counts(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::BadToken | ErrorCode::AppcodeMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_the_limit_lock_the_ip_or_the_user() {
        let guard = LoginGuard::new(&LoginLimits {
            max_failures_per_ip: 3,
            max_failures_per_uid: 2,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(30),
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        // The user: two failures pass, the third locks it (from any IP).
        assert!(!guard.failed(Some(ip), 129, Some("alice")));
        assert!(!guard.failed(Some(other), 129, Some("alice")));
        assert!(guard.failed(Some(other), 129, Some("alice")));
        let refusal = guard.check(None, 129, Some("alice")).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::RateLimited);
        assert!((1..=30_000).contains(&refusal.retry_after_ms));
        // Another user, or the same uid in another appcode, is not affected.
        assert!(guard.check(Some(ip), 129, Some("bob")).is_ok());
        assert!(guard.check(None, 130, Some("alice")).is_ok());
        // The IP: its fourth failure (garbage tokens, no uid) locks it.
        assert!(!guard.failed(Some(ip), 129, None));
        assert!(!guard.failed(Some(ip), 129, None));
        assert!(guard.failed(Some(ip), 129, None));
        assert_eq!(
            guard.check(Some(ip), 129, Some("bob")).unwrap_err().code,
            ErrorCode::RateLimited
        );
        assert!(guard.check(Some(other), 129, Some("bob")).is_ok());
    }

    #[test]
    fn zero_turns_a_limit_off_and_locks_end() {
        let guard = LoginGuard::new(&LoginLimits {
            max_failures_per_ip: 0,
            max_failures_per_uid: 1,
            window: Duration::from_secs(60),
            lockout: Duration::from_millis(1),
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..10 {
            guard.failed(Some(ip), 1, None);
        }
        assert!(guard.check(Some(ip), 1, None).is_ok());
        assert!(guard.failed(Some(ip), 1, Some("u")) || guard.failed(Some(ip), 1, Some("u")));
        // A 1 ms lockout is over once a little time passed.
        let limit = guard.per_uid.as_ref().unwrap();
        let later = Instant::now() + Duration::from_millis(5);
        assert_eq!(limit.locked_for(&(1, "u".to_owned()), later), None);
    }
}
