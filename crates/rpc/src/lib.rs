//! Contracts between longlink's roles: what the gate asks of logic, and what logic asks of a gate.
//!
//! The gate owns connections and nothing else; it sees logic only through [`LogicService`].
//! Logic is stateless; it reaches the connections it must push to only through [`GatePush`].
//! On a single node both are plain in-process calls (the gate's `SessionTable` implements
//! `GatePush`, `longlink_logic::Logic` implements `LogicService`); in a cluster the same traits
//! get remote implementations, chosen by `longlink-server` alone. This crate depends only on
//! `longlink-proto`, so neither side depends on the other.
//!
//! [`trace`] holds the delivery ledger's contract ([`trace::Ledger`]: stages per log_id).
//! [`push`] holds the contract of s2c pushes ([`PushService`], implemented by logic, called by
//! the API) and their delivery statistics.
//! [`notify`] holds the contract of offline push notifications ([`notify::Notifications`],
//! implemented by `longlink-notify`, called by logic and the API).
//! [`access`] holds the contract of black/white lists and flapping detection
//! ([`AccessGuard`], implemented by `longlink-guard`, consulted by the gate).

pub mod access;
pub mod notify;
pub mod push;
pub mod trace;

pub use access::{AccessGuard, AdmitAll};
pub use push::{
    DeliveryCounters, PushAccepted, PushRefusal, PushRequest, PushService, PushStats, PushTargets,
    RecipientOutcome, RecipientState,
};

use async_trait::async_trait;
use bytes::Bytes;
use longlink_proto::{ErrorCode, Frame, KickReason, wire};

/// Identifies a logged-in session on a gate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionInfo {
    /// The gate holding the connection.
    pub gate_id: String,
    /// Unique per gate (and across gate restarts).
    pub session_id: u64,
    /// The user's account system / client kind.
    pub appcode: u32,
    /// The user id within the appcode.
    pub uid: String,
    /// The device the session belongs to.
    pub device_id: String,
    /// The connection epoch of the login that opened the session (a RESUME keeps it).
    pub epoch: u64,
}

/// A refused request: the code and message of the ERROR frame the client gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Refusal {
    /// The wire error code.
    pub code: ErrorCode,
    /// Human-readable detail (lowercase, no trailing period).
    pub message: String,
    /// Wait at least this long before retrying (admission control); 0 = the client's own
    /// backoff.
    pub retry_after_ms: u32,
}

impl Refusal {
    /// A refusal with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: 0,
        }
    }

    /// The same refusal, telling the client to wait `ms` before it retries.
    pub fn retry_after(mut self, ms: u32) -> Self {
        self.retry_after_ms = ms;
        self
    }

    /// The ERROR frame of this refusal: a response to `seq_id`, or a push without one.
    pub fn frame(&self, seq_id: Option<u32>, log_id: u64) -> Frame {
        Frame::error_body(
            seq_id,
            log_id,
            &wire::Error {
                code: self.code as i32,
                message: self.message.clone(),
                retry_after_ms: self.retry_after_ms,
            },
        )
    }

    /// Whether the gate must close the connection after sending this refusal.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::BadMagic
                | ErrorCode::UnsupportedVersion
                | ErrorCode::BodyTooLarge
                | ErrorCode::BadBody
                | ErrorCode::BadFrameType
                | ErrorCode::BadFlags
                | ErrorCode::NotLoggedIn
                | ErrorCode::BadToken
                | ErrorCode::UnknownAppcode
                | ErrorCode::AppcodeMismatch
                | ErrorCode::LoginTimeout
                | ErrorCode::IdleTimeout
                | ErrorCode::SessionReplaced
                | ErrorCode::Banned
        )
    }
}

/// What logic answers to an accepted LOGIN.
#[derive(Debug, Clone)]
pub struct LoginAccepted {
    /// The session as registered in presence.
    pub session: SessionInfo,
    /// The LOGIN response body for the client.
    pub response: wire::LoginResponse,
}

/// What logic answers to an accepted RESUME.
#[derive(Debug, Clone)]
pub struct ResumeAccepted {
    /// The session, now on the new connection (same epoch, new session id).
    pub session: SessionInfo,
    /// The RESUME response body: what the device missed, and whether that is all of it.
    pub response: wire::ResumeResponse,
}

/// What a handled request produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Send this frame to the client (a response or an ERROR).
    Frame(Frame),
    /// Nothing to send (e.g. MSG_ACK of type 3).
    Nothing,
    /// Send this frame, then close the connection (LOGOUT).
    FrameThenClose(Frame),
}

/// The gate's view of logic: every request of a logged-in session goes through here.
#[async_trait]
pub trait LogicService: Send + Sync + 'static {
    /// Verifies a LOGIN for the new session `session_id` on gate `gate_id`, registers the
    /// session in presence and kicks an older session of the same (appcode, uid, device).
    /// `peer` is the client's IP as the gate sees it (`None` when it has none, e.g. an
    /// in-process caller): logic rate-limits failed logins per IP with it (issue 8).
    ///
    /// # Errors
    /// A [`Refusal`] with BAD_TOKEN, UNKNOWN_APPCODE, APPCODE_MISMATCH, INVALID_ARGUMENT or
    /// RATE_LIMITED (too many failed logins from this IP or for this uid).
    async fn login(
        &self,
        gate_id: &str,
        session_id: u64,
        request: wire::LoginRequest,
        log_id: u64,
        peer: Option<std::net::IpAddr>,
    ) -> Result<LoginAccepted, Refusal>;

    /// Takes over the session a RESUME token names (held after its link dropped, or still
    /// attached to a link the client gave up on) for the new connection `session_id` on gate
    /// `gate_id`, without re-authenticating and without a new epoch.
    ///
    /// # Errors
    /// A [`Refusal`] with RESUME_REJECTED (bad token, or the session ended), INVALID_ARGUMENT
    /// or INTERNAL.
    async fn resume(
        &self,
        gate_id: &str,
        session_id: u64,
        request: wire::ResumeRequest,
        log_id: u64,
    ) -> Result<ResumeAccepted, Refusal>;

    /// Called once the LOGIN (or RESUME) response is queued: the session can receive pushes
    /// now (after a LOGIN, redelivery of what this device has not acknowledged; after a
    /// RESUME that already came in the response).
    async fn session_ready(&self, session: &SessionInfo, resumed: bool);

    /// Handles one request frame of a logged-in session (any cmd but LOGIN).
    async fn handle(&self, session: &SessionInfo, frame: Frame) -> Reply;

    /// The session is over (its connection closed and no hold keeps it, or its hold
    /// expired): unregister it from presence.
    async fn session_closed(&self, session: &SessionInfo);
}

/// Why a push could not be queued for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The gate has no such session (it closed meanwhile).
    #[error("no such session")]
    NoSession,
    /// The session's write queue is full; the gate closes it as a slow consumer.
    #[error("slow consumer")]
    SlowConsumer,
    /// The session is held (its link dropped, a RESUME may come): nothing is queued, the
    /// message takes the offline path, and presence is left alone.
    #[error("session held without a link")]
    Unreachable,
}

/// Why logic closes a session through [`GatePush::kick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KickNotice {
    /// The KICK's reason.
    pub reason: KickReason,
    /// Human-readable detail.
    pub message: String,
    /// REPLACED: the device whose login replaced the session.
    pub by_device_id: String,
}

/// Told when a tracked frame (see [`GatePush::push_tracked`]) reached the socket.
pub trait WriteReceipt: Send + Sync + 'static {
    /// The frame pushed with `tag` was written to the session's socket.
    fn written(&self, tag: u64);
}

/// Logic's view of the gates: queue frames for sessions, or kick them. Every call names the
/// gate holding the session (presence's `gate_id`), so one implementation can front several
/// gates (a node running more than one, or a cluster).
#[async_trait]
pub trait GatePush: Send + Sync + 'static {
    /// Queues an encoded frame (header + body) for `session_id` on gate `gate_id`, without
    /// waiting.
    ///
    /// # Errors
    /// [`PushError::NoSession`] or [`PushError::SlowConsumer`] (the session is then closed).
    async fn push(&self, gate_id: &str, session_id: u64, frame: Bytes) -> Result<(), PushError>;

    /// Like [`GatePush::push`], and once the frame is written to the socket the gate calls
    /// `receipt.written(tag)` (never if the connection dies first).
    ///
    /// # Errors
    /// As [`GatePush::push`].
    async fn push_tracked(
        &self,
        gate_id: &str,
        session_id: u64,
        frame: Bytes,
        receipt: std::sync::Arc<dyn WriteReceipt>,
        tag: u64,
    ) -> Result<(), PushError>;

    /// Queues `frame` only if the session's queue has room; never closes the session. For
    /// best-effort pushes (redelivery at login) whose messages the client also pulls.
    ///
    /// # Errors
    /// [`PushError::NoSession`], or [`PushError::SlowConsumer`] meaning "full, not queued".
    async fn offer(&self, gate_id: &str, session_id: u64, frame: Bytes) -> Result<(), PushError>;

    /// Sends KICK to `session_id` and closes it (a held session just ends). Unknown sessions
    /// are ignored.
    async fn kick(&self, gate_id: &str, session_id: u64, notice: KickNotice);

    /// The session was resumed on another connection: close its old link without a frame
    /// (the client already gave up on it) or end its hold, and do not report it closed.
    /// Unknown sessions are ignored.
    async fn detach(&self, gate_id: &str, session_id: u64);
}
