//! s2c push (seed 003 "云到端"): what the API asks of logic, and the delivery statistics it
//! reads back ("消息到达率统计").
//!
//! A push names one appcode and its targets (a list of uids, or every online user); logic
//! answers at once with a push id and fans out in the background. Each recipient ends in one
//! [`RecipientState`]; [`PushStats`] counts them.

use async_trait::async_trait;
use bytes::Bytes;

/// Most uids in one push request.
pub const MAX_PUSH_TARGETS: usize = 100_000;

/// Pushes to at most this many targets keep (and report) the outcome of every recipient.
pub const MAX_DETAILED_RECIPIENTS: usize = 1_000;

/// Who a push goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushTargets {
    /// These users of the push's appcode (deduplicated by logic).
    Users(Vec<String>),
    /// Every user of the appcode online when the push starts (broadcast, sent in waves).
    AllOnline,
}

/// A push as the API hands it to logic (already authorised for `appcode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRequest {
    /// The receivers' appcode.
    pub appcode: u32,
    /// The receivers.
    pub targets: PushTargets,
    /// Business message type.
    pub msgtype: u32,
    /// Content type (`longlink_proto::ContentType` as i32).
    pub content_type: i32,
    /// Message body.
    pub content: Bytes,
    /// `true`: stored for every target, so offline users pull it later (the default).
    /// `false`: online only; held for `ttl_secs` for users who come online meanwhile.
    pub persist: bool,
    /// For online-only pushes: how long an undelivered push stays deliverable (0 = only the
    /// sessions online now). Ignored when `persist`.
    pub ttl_secs: u32,
    /// Sender label shown as `from.uid` (e.g. "order-service"); empty = "system".
    pub from: String,
    /// Trace id of the API request.
    pub log_id: u64,
}

/// What logic answers at once to an accepted push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushAccepted {
    /// Id to read the statistics with.
    pub push_id: u64,
    /// Number of targets (for a broadcast: the users online when it started).
    pub targets: u64,
}

/// Why a push was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushRefusal {
    /// A field is missing, empty or too long.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The appcode is not configured.
    #[error("unknown appcode {0}")]
    UnknownAppcode(u32),
    /// The store or presence failed; nothing was sent.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Too many pushes in progress; retry later.
    #[error("overloaded: {0}")]
    Overloaded(String),
}

/// Where one recipient's delivery stands. Ordered roughly by progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecipientState {
    /// Not handled yet (the fan-out is still running).
    Pending,
    /// Offline (or every push to its sessions failed) and the message is stored: it arrives by
    /// pull at the next login.
    StoredOffline,
    /// Queued to at least one session; not written yet.
    Queued,
    /// Written to at least one session's socket.
    Written,
    /// At least one device acknowledged it (MSG_ACK).
    Acked,
    /// Online-only push that reached no session within its TTL.
    Expired,
    /// Could not be delivered nor stored.
    Failed,
}

impl RecipientState {
    /// The lowercase name used by the API (`"stored_offline"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Pending => "pending",
            RecipientState::StoredOffline => "stored_offline",
            RecipientState::Queued => "queued",
            RecipientState::Written => "written",
            RecipientState::Acked => "acked",
            RecipientState::Expired => "expired",
            RecipientState::Failed => "failed",
        }
    }
}

/// One recipient's outcome (pushes to at most [`MAX_DETAILED_RECIPIENTS`] users).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientOutcome {
    /// The recipient.
    pub uid: String,
    /// Where its delivery stands.
    pub state: RecipientState,
    /// Sessions it had online when the push reached it.
    pub sessions: u32,
}

/// Delivery statistics of one push. Counters count recipients (users), not sessions, so
/// `written <= online <= targets`; `acked` counts recipients with at least one device's ACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushStats {
    /// The push.
    pub push_id: u64,
    /// The receivers' appcode.
    pub appcode: u32,
    /// Business message type.
    pub msgtype: u32,
    /// Stored for offline users.
    pub persist: bool,
    /// TTL of an online-only push.
    pub ttl_secs: u32,
    /// The stored message's msgid (one msgid for every recipient), 0 when not stored.
    pub msgid: u64,
    /// Unix ms when the push was accepted.
    pub created_ms: u64,
    /// Unix ms when the fan-out finished (0 while running).
    pub finished_ms: u64,
    /// Number of target users.
    pub targets: u64,
    /// Targets with at least one session online when the push reached them.
    pub online: u64,
    /// Targets whose message was written to at least one session's socket.
    pub written: u64,
    /// Targets with at least one device's MSG_ACK.
    pub acked: u64,
    /// Targets that were not reached online and have the message in their inbox.
    pub stored_offline: u64,
    /// Online-only targets not reached within the TTL.
    pub expired: u64,
    /// Targets neither reached nor stored.
    pub failed: u64,
    /// Sessions presence listed but the gate no longer had (cleared from presence; the
    /// recipient followed the offline path) — seed 004's "unreachable" callback.
    pub stale_sessions: u64,
    /// Per recipient, for pushes to at most [`MAX_DETAILED_RECIPIENTS`] users (else empty).
    pub recipients: Vec<RecipientOutcome>,
}

/// Delivery counters of one (appcode, msgtype), summed over pushes since the node started.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryCounters {
    /// The receivers' appcode.
    pub appcode: u32,
    /// Business message type.
    pub msgtype: u32,
    /// Pushes.
    pub pushes: u64,
    /// Target users over all pushes.
    pub targets: u64,
    /// As in [`PushStats`], summed.
    pub online: u64,
    /// As in [`PushStats`], summed.
    pub written: u64,
    /// As in [`PushStats`], summed.
    pub acked: u64,
    /// As in [`PushStats`], summed.
    pub stored_offline: u64,
    /// As in [`PushStats`], summed.
    pub expired: u64,
    /// As in [`PushStats`], summed.
    pub failed: u64,
}

/// The push side of logic, as the API sees it (in-process on a single node).
#[async_trait]
pub trait PushService: Send + Sync + 'static {
    /// Accepts a push and starts its fan-out; returns at once.
    ///
    /// # Errors
    /// [`PushRefusal`]; nothing was sent.
    async fn push(&self, request: PushRequest) -> Result<PushAccepted, PushRefusal>;

    /// The statistics of a push, or `None` when unknown (or forgotten: the node keeps the
    /// most recent pushes only).
    async fn push_stats(&self, push_id: u64) -> Option<PushStats>;

    /// Delivery counters per (appcode, msgtype), for `appcodes` (empty = all).
    async fn delivery_counters(&self, appcodes: &[u32]) -> Vec<DeliveryCounters>;
}
