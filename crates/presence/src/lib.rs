//! Presence: which sessions a user `(appcode, uid)` has online, and on which gate.
//!
//! It also decides logins atomically per user ([`Presence::register`]): which older sessions
//! a login replaces under the appcode's [`MultiLogin`] policy, and, through connection
//! epochs (increasing across all logins), that a client reconnecting on its own with a stale
//! epoch can never replace a session that logged in after it. A RESUME keeps its epoch and
//! only re-points the entry at the new connection ([`Presence::resume`]).
//!
//! [`Presence`] is the trait logic uses; [`MemoryPresence`] is the single-node backend (a
//! sharded in-process map). Presence is soft state: a session appears when its LOGIN is
//! accepted and disappears when its connection closes; nothing durable depends on it (a
//! message for a user who looks offline goes to the store and arrives by pull).
//!
//! It also serves the gate-detector (seed 003): gates heartbeat ([`Presence::gate_heartbeat`]),
//! [`Presence::live_gates`] lists those heard from within their ttl, and
//! [`Presence::purge_gate`] clears a dead gate's sessions. After a backend lost its data,
//! gates put their sessions back with [`Presence::restore_sessions`] (epochs kept, no
//! login policy).
//!
//! Modules: [`memory`] (MemoryPresence); `testsuite` (feature `testsuite`): the behaviour
//! suite every backend runs, [`presence_testsuite!`].

use std::time::Duration;

use async_trait::async_trait;

pub mod memory;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use memory::MemoryPresence;

/// One online session of a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionEntry {
    /// The user's appcode.
    pub appcode: u32,
    /// The user id.
    pub uid: String,
    /// The device of this session.
    pub device_id: String,
    /// The device class the multi-login policy applies to ("phone", "web"…); empty = the
    /// device id alone.
    pub device_class: String,
    /// The connection epoch of the login (assigned by [`Presence::register`]).
    pub epoch: u64,
    /// The gate holding the connection.
    pub gate_id: String,
    /// The session id on that gate.
    pub session_id: u64,
    /// Unix milliseconds when the session logged in.
    pub since_ms: u64,
}

impl SessionEntry {
    /// The key the `kick` policy keeps one session per: the class, or the device itself.
    pub fn class_key(&self) -> &str {
        if self.device_class.is_empty() {
            &self.device_id
        } else {
            &self.device_class
        }
    }
}

/// How many sessions of one user an appcode allows at once. Whatever the policy, a login
/// from the same device id replaces that device's older session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiLogin {
    /// One session per device class: a newer login on the same class replaces the older; and,
    /// because a client names its class itself, at most `max_sessions` sessions in all (a
    /// login beyond replaces the oldest), so invented classes cannot multiply sessions.
    Kick {
        /// Most sessions at once across classes (at least 1).
        max_sessions: usize,
    },
    /// Up to `max_sessions` sessions of any classes; a login beyond replaces the oldest.
    Allow {
        /// Most sessions at once (at least 1).
        max_sessions: usize,
    },
}

impl MultiLogin {
    /// The cap on sessions per user when none is configured.
    pub const DEFAULT_MAX_SESSIONS: usize = 5;
}

impl Default for MultiLogin {
    fn default() -> Self {
        MultiLogin::Kick {
            max_sessions: Self::DEFAULT_MAX_SESSIONS,
        }
    }
}

/// What a login asks of [`Presence::register`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoginRule {
    /// The appcode's policy.
    pub policy: MultiLogin,
    /// Non-zero for a reconnect the client made by itself: the epoch of its previous session.
    /// Such a login may not replace a session with a larger epoch.
    pub prior_epoch: u64,
}

/// The outcome of [`Presence::register`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Registered with this epoch; the caller kicks the replaced sessions.
    Accepted {
        /// The new session's epoch.
        epoch: u64,
        /// The sessions the login replaced.
        replaced: Vec<SessionEntry>,
    },
    /// Refused: the login carried a `prior_epoch` older than `by`, a session it would replace.
    Superseded {
        /// The newest session the login would have replaced.
        by: SessionEntry,
    },
}

/// The sessions `entry` replaces among `sessions` under `policy`: the same device, the same
/// class (`Kick`), then the oldest beyond the allowed count (both policies). Shared by the
/// backends so that they decide alike.
pub fn victims(sessions: &[SessionEntry], entry: &SessionEntry, policy: MultiLogin) -> Vec<usize> {
    let (per_class, max_sessions) = match policy {
        MultiLogin::Kick { max_sessions } => (true, max_sessions),
        MultiLogin::Allow { max_sessions } => (false, max_sessions),
    };
    let mut out: Vec<usize> = sessions
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.device_id == entry.device_id || (per_class && s.class_key() == entry.class_key())
        })
        .map(|(i, _)| i)
        .collect();
    let mut rest: Vec<usize> = (0..sessions.len()).filter(|i| !out.contains(i)).collect();
    rest.sort_by_key(|&i| sessions[i].epoch);
    let keep = max_sessions.max(1) - 1;
    let excess = rest.len().saturating_sub(keep);
    out.extend(rest.into_iter().take(excess));
    out
}

/// A gate's heartbeat, as the gate-detector sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GateBeat {
    /// The gate id (the one its sessions are registered with).
    pub gate_id: String,
    /// The addresses clients use for it (TCP, WebSocket…).
    pub addrs: Vec<String>,
    /// Open client connections.
    pub connections: u64,
    /// The gate's own load figure (0.0 idle … 1.0 full; the gate decides what it measures).
    pub load: f64,
    /// A drain started: it must not be dispatched.
    pub draining: bool,
    /// Unix milliseconds when presence recorded the beat: set by the backend (from its own
    /// clock, so that gates' clocks do not matter); ignored in [`Presence::gate_heartbeat`].
    pub last_seen_ms: u64,
    /// How long after `last_seen_ms` the beat counts as live: set from the `ttl` of
    /// [`Presence::gate_heartbeat`]; ignored there.
    pub ttl_ms: u64,
}

/// Presence backend failures.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The backend cannot be reached.
    #[error("presence unavailable: {0}")]
    Unavailable(String),
}

/// Who is online where.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// Adds `entry` with a fresh epoch (its `epoch` field is ignored) and removes the
    /// sessions it replaces under `rule` (see [`victims`]), atomically for the user; or
    /// refuses it when `rule.prior_epoch` is older than a session it would replace.
    async fn register(
        &self,
        entry: SessionEntry,
        rule: &LoginRule,
    ) -> Result<Registration, PresenceError>;

    /// A RESUME: if the user's session of `device_id` with `epoch` is still registered,
    /// re-points it at `(gate_id, session_id)` and returns it as it was (its old gate and
    /// session id); `None` when that session ended (replaced, logged out, hold expired).
    async fn resume(
        &self,
        appcode: u32,
        uid: &str,
        device_id: &str,
        epoch: u64,
        gate_id: &str,
        session_id: u64,
    ) -> Result<Option<SessionEntry>, PresenceError>;

    /// Removes the user's session `session_id` on gate `gate_id` (session ids are unique per
    /// gate only: two gates of a node may hand out the same one); returns whether it was
    /// there. An entry that already belongs to a newer session is left alone.
    async fn unregister(
        &self,
        appcode: u32,
        uid: &str,
        gate_id: &str,
        session_id: u64,
    ) -> Result<bool, PresenceError>;

    /// The user's online sessions.
    async fn sessions(&self, appcode: u32, uid: &str) -> Result<Vec<SessionEntry>, PresenceError>;

    /// Number of online sessions (all users).
    async fn session_count(&self) -> Result<u64, PresenceError>;

    /// Online users and sessions of `appcode`.
    async fn appcode_counts(&self, appcode: u32) -> Result<AppcodeCounts, PresenceError>;

    /// The uids of `appcode` with at least one online session, for a broadcast, as a scan in
    /// the manner of Redis `SCAN`: start with cursor 0, pass back the returned cursor, stop when
    /// it is 0. A page holds about `limit` uids (it may hold more, or none while the scan
    /// goes on); a user online during the whole scan appears at least once (callers dedup).
    async fn online_uids(
        &self,
        appcode: u32,
        cursor: u64,
        limit: usize,
    ) -> Result<(Vec<String>, u64), PresenceError>;

    /// Records a gate's heartbeat (replacing its previous one); it counts as live for `ttl`.
    async fn gate_heartbeat(&self, beat: GateBeat, ttl: Duration) -> Result<(), PresenceError>;

    /// The gates whose latest heartbeat is within its ttl, by gate id.
    async fn live_gates(&self) -> Result<Vec<GateBeat>, PresenceError>;

    /// Removes every session registered on `gate_id` (a dead gate) and its heartbeat; returns
    /// how many sessions were removed. A session that moved to another gate by RESUME stays.
    async fn purge_gate(&self, gate_id: &str) -> Result<u64, PresenceError>;

    /// Puts back known sessions with their epochs, without the login policy: presence being
    /// rebuilt after the backend lost its data (each gate re-registers what it holds). An
    /// entry is skipped when its device already has a session with an epoch at least as large
    /// (a newer login won meanwhile); older sessions of its device are replaced. Later logins
    /// get larger epochs than the restored ones. Returns how many entries were put back.
    async fn restore_sessions(&self, entries: Vec<SessionEntry>) -> Result<u64, PresenceError>;
}

/// Online figures of one appcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppcodeCounts {
    /// Users with at least one session.
    pub users: u64,
    /// Sessions.
    pub sessions: u64,
}
