//! Presence: which sessions a user `(appcode, uid)` has online, and on which gate.
//!
//! [`Presence`] is the trait logic uses; [`MemoryPresence`] is the single-node backend (a
//! sharded in-process map). Presence is soft state: a session appears when its LOGIN is
//! accepted and disappears when its connection closes; nothing durable depends on it (a
//! message for a user who looks offline goes to the store and arrives by pull).
//!
//! Modules: [`memory`] (MemoryPresence).

use async_trait::async_trait;

pub mod memory;

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
    /// The gate holding the connection.
    pub gate_id: String,
    /// The session id on that gate.
    pub session_id: u64,
    /// Unix milliseconds when the session logged in.
    pub since_ms: u64,
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
    /// Adds `entry`; returns the entries it replaced: the user's other sessions on the same
    /// device (one session per (appcode, uid, device)), which the caller kicks.
    async fn register(&self, entry: SessionEntry) -> Result<Vec<SessionEntry>, PresenceError>;

    /// Removes the session `session_id` of the user; returns whether it was there. An entry
    /// that already belongs to a newer session is left alone.
    async fn unregister(
        &self,
        appcode: u32,
        uid: &str,
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
}

/// Online figures of one appcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppcodeCounts {
    /// Users with at least one session.
    pub users: u64,
    /// Sessions.
    pub sessions: u64,
}
