//! The JSON bodies and query strings of the HTTP API (docs/api.md), with their OpenAPI schemas.
//!
//! Requests refuse unknown fields (`deny_unknown_fields`) so a misspelt option is a 400, not a
//! silently ignored default. Several of these are also the inputs of the shared operations in
//! `ops`, which the gRPC surface fills from its protobuf messages.
//!
//! Numbers: ids that can exceed 2^53 (a stored msgid, a log_id, a session id) are decimal
//! strings, because a JSON number loses precision there in most clients; push ids and counters
//! stay numbers. Where a request takes such an id, it accepts a string or a number.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use longlink_bus::ConsumedMessage;

/// Error body of every failed call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// `invalid_argument`, `unauthenticated`, `permission_denied`, `not_found`,
    /// `payload_too_large`, `unsupported_media_type`, `unavailable` or `overloaded`.
    pub code: String,
    /// What went wrong, one line.
    pub message: String,
}

/// How the content of a push is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContentTypeName {
    /// UTF-8 plain text (the default).
    #[default]
    Text,
    /// UTF-8 markup.
    Rich,
    /// Opaque bytes whose meaning the msgtype defines.
    Business,
}

impl ContentTypeName {
    /// The wire value (`longlink_proto::ContentType` as i32).
    pub fn wire(self) -> i32 {
        use longlink_proto::ContentType;
        match self {
            ContentTypeName::Text => ContentType::Text as i32,
            ContentTypeName::Rich => ContentType::Rich as i32,
            ContentTypeName::Business => ContentType::Business as i32,
        }
    }
}

/// `POST /v1/push`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushBody {
    /// The receivers' appcode.
    pub appcode: u32,
    /// The receivers: 1..=100,000 uids of 1..=256 bytes (duplicates ignored). Exactly one of
    /// `uids` and `all: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uids: Option<Vec<String>>,
    /// `true`: every user of the appcode online when the push starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
    /// Business message type (default 0).
    #[serde(default)]
    pub msgtype: u32,
    /// The body as UTF-8 text (exactly one of `content` and `content_base64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The body as base64 (standard alphabet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
    /// How the body is to be read; default `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<ContentTypeName>,
    /// Stored for every target so offline users get it at their next login (default `true`);
    /// `false`: online only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist: Option<bool>,
    /// Online-only pushes: a user who logs in within this many seconds still gets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u32>,
    /// Sender label shown to the app as `from.uid` (default `"system"`), at most 256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Trace id to follow the push by (`GET /v1/trace/{log_id}`, `longlink trace`), a decimal
    /// string or a number; absent or 0: the server assigns one. Clients see it in the MSG
    /// frame's header.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "id_text::optional"
    )]
    #[schema(value_type = Option<String>)]
    pub log_id: Option<u64>,
}

/// `202 Accepted` answer to a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PushAcceptedBody {
    /// Id to read the statistics with (`GET /v1/push/{push_id}`).
    pub push_id: u64,
    /// Number of target users.
    pub targets: u64,
    /// The push's trace id (`GET /v1/trace/{log_id}`) as a decimal string: the one given,
    /// or one assigned.
    pub log_id: String,
}

/// Where one recipient's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecipientStateName {
    /// Not handled yet.
    Pending,
    /// Not reached online; in the inbox, arrives by pull at the next login.
    StoredOffline,
    /// Queued to at least one session.
    Queued,
    /// Written to at least one session's socket.
    Written,
    /// At least one device acknowledged it.
    Acked,
    /// Online-only and not reached within the TTL.
    Expired,
    /// Neither reached nor stored.
    Failed,
}

impl From<longlink_rpc::push::RecipientState> for RecipientStateName {
    fn from(state: longlink_rpc::push::RecipientState) -> Self {
        use longlink_rpc::push::RecipientState as S;
        match state {
            S::Pending => Self::Pending,
            S::StoredOffline => Self::StoredOffline,
            S::Queued => Self::Queued,
            S::Written => Self::Written,
            S::Acked => Self::Acked,
            S::Expired => Self::Expired,
            S::Failed => Self::Failed,
        }
    }
}

/// One recipient of a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecipientBody {
    /// The user.
    pub uid: String,
    /// Where its delivery stands.
    pub state: RecipientStateName,
    /// Sessions it had online when the push reached it.
    pub sessions: u32,
}

/// `GET /v1/push/{push_id}`: delivery statistics of one push. Counters count users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PushStatsBody {
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
    /// The stored message's msgid as a decimal string ("0" when not stored).
    pub msgid: String,
    /// Unix ms when the push was accepted.
    pub created_ms: u64,
    /// Unix ms when the fan-out finished (0 while running).
    pub finished_ms: u64,
    /// Whether the fan-out finished.
    pub done: bool,
    /// Target users.
    pub targets: u64,
    /// Targets with a session online when the push reached them.
    pub online: u64,
    /// Targets written to at least one socket.
    pub written: u64,
    /// Targets with at least one device's MSG_ACK.
    pub acked: u64,
    /// Targets not reached online whose inbox holds the message.
    pub stored_offline: u64,
    /// Online-only targets not reached within the TTL.
    pub expired: u64,
    /// Targets neither reached nor stored.
    pub failed: u64,
    /// Sessions presence listed but the gate no longer had.
    pub stale_sessions: u64,
    /// acked / targets (0 without targets).
    pub delivery_rate: f64,
    /// Per recipient, for pushes to at most 1,000 users (else empty).
    pub recipients: Vec<RecipientBody>,
}

/// Query of `GET /v1/stats/delivery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only this appcode (default: every appcode of the key).
    pub appcode: Option<u32>,
}

/// Delivery counters of one (appcode, msgtype), summed since the node started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryCounterBody {
    /// The receivers' appcode.
    pub appcode: u32,
    /// Business message type.
    pub msgtype: u32,
    /// Pushes.
    pub pushes: u64,
    /// Target users over all pushes.
    pub targets: u64,
    /// Summed as in the push statistics.
    pub online: u64,
    /// Summed as in the push statistics.
    pub written: u64,
    /// Summed as in the push statistics.
    pub acked: u64,
    /// Summed as in the push statistics.
    pub stored_offline: u64,
    /// Summed as in the push statistics.
    pub expired: u64,
    /// Summed as in the push statistics.
    pub failed: u64,
    /// acked / targets (0 without targets).
    pub delivery_rate: f64,
}

/// `GET /v1/stats/delivery`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeliveryCountersBody {
    /// One entry per (appcode, msgtype).
    pub counters: Vec<DeliveryCounterBody>,
}

/// One online session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionBody {
    /// The device.
    pub device: String,
    /// The gate holding the connection.
    pub gate: String,
    /// The session id on that gate, as a decimal string.
    pub session_id: String,
    /// Unix ms when the session logged in.
    pub since_ms: u64,
}

/// The presence of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserPresenceBody {
    /// The user's appcode.
    pub appcode: u32,
    /// The user.
    pub uid: String,
    /// Whether at least one session is online.
    pub online: bool,
    /// The online sessions.
    pub sessions: Vec<SessionBody>,
}

/// `POST /v1/presence/query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresenceQueryBody {
    /// The users' appcode.
    pub appcode: u32,
    /// 1..=1,000 uids.
    pub uids: Vec<String>,
}

/// Answer to `POST /v1/presence/query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PresenceUsersBody {
    /// One entry per requested uid, in request order.
    pub users: Vec<UserPresenceBody>,
}

/// `GET /v1/presence/{appcode}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OnlineCountBody {
    /// The appcode.
    pub appcode: u32,
    /// Users with at least one session.
    pub online_users: u64,
    /// Sessions.
    pub sessions: u64,
}

/// Query of `GET /v1/consume` (long-poll).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsumeQuery {
    /// The topic (or give `appcode` and `msgtype`).
    pub topic: Option<String>,
    /// With `msgtype`: the topic this pair is routed to.
    pub appcode: Option<u32>,
    /// With `appcode`.
    pub msgtype: Option<u32>,
    /// Most messages to lease, 1..=1000 (default 100).
    pub max: Option<u32>,
    /// Longest wait for the first message, 0..=60 s (default 20).
    pub wait_secs: Option<u32>,
    /// Lease of the messages, 1..=3600 s (default 30).
    pub lease_secs: Option<u32>,
}

/// Query of `GET /v1/consume/sse`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The topic (or give `appcode` and `msgtype`).
    pub topic: Option<String>,
    /// With `msgtype`: the topic this pair is routed to.
    pub appcode: Option<u32>,
    /// With `appcode`.
    pub msgtype: Option<u32>,
    /// Most messages sent and not yet acked, 1..=1000 (default 100).
    pub max_in_flight: Option<u32>,
    /// Lease of the messages, 1..=3600 s (default 30).
    pub lease_secs: Option<u32>,
}

/// Leased or dead-lettered messages of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessagesBody {
    /// The topic.
    pub topic: String,
    /// The messages, in id order.
    pub messages: Vec<ConsumedMessage>,
}

/// `POST /v1/consume/ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// The topic (or give `appcode` and `msgtype`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// With `msgtype`: the topic this pair is routed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appcode: Option<u32>,
    /// With `appcode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgtype: Option<u32>,
    /// Delivery ids (at most 10,000); ids not leased are ignored.
    pub ids: Vec<u64>,
}

/// Answer to an ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AckedBody {
    /// How many of the ids were leased (and are now gone).
    pub acked: u64,
}

/// `POST /v1/consume/nack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackBody {
    /// The topic (or give `appcode` and `msgtype`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// With `msgtype`: the topic this pair is routed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appcode: Option<u32>,
    /// With `appcode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgtype: Option<u32>,
    /// Delivery ids (at most 10,000).
    pub ids: Vec<u64>,
    /// Ready again after this many seconds, 0..=3600 (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u32>,
}

/// Answer to a nack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NackedBody {
    /// How many of the ids were leased (and are given back).
    pub nacked: u64,
}

/// Query of `GET /v1/deadletter`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// The topic (or give `appcode` and `msgtype`).
    pub topic: Option<String>,
    /// With `msgtype`: the topic this pair is routed to.
    pub appcode: Option<u32>,
    /// With `appcode`.
    pub msgtype: Option<u32>,
    /// Only ids above this one (default 0), to page through the list.
    pub after: Option<u64>,
    /// Most messages, 1..=1000 (default 100).
    pub limit: Option<u32>,
}

/// `POST /v1/deadletter/replay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// The topic (or give `appcode` and `msgtype`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// With `msgtype`: the topic this pair is routed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appcode: Option<u32>,
    /// With `appcode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msgtype: Option<u32>,
    /// Dead-lettered ids to put back (at most 10,000); empty = all of them.
    #[serde(default)]
    pub ids: Vec<u64>,
}

/// Answer to a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplayedBody {
    /// How many messages are back on the topic.
    pub replayed: u64,
}

/// Counts of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TopicBody {
    /// The topic.
    pub topic: String,
    /// Waiting for a consumer.
    pub ready: u64,
    /// Leased, not acked yet.
    pub in_flight: u64,
    /// In the dead-letter list.
    pub dead: u64,
}

/// `GET /v1/topics`: the topics the key may consume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TopicsBody {
    /// The topics.
    pub topics: Vec<TopicBody>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthBody {
    /// Always `"ok"`.
    pub status: String,
    /// The server's version.
    pub version: String,
    /// Open client connections.
    pub connections: u64,
    /// Logged-in sessions.
    pub sessions: u64,
}

impl From<longlink_rpc::push::PushStats> for PushStatsBody {
    fn from(stats: longlink_rpc::push::PushStats) -> Self {
        Self {
            push_id: stats.push_id,
            appcode: stats.appcode,
            msgtype: stats.msgtype,
            persist: stats.persist,
            ttl_secs: stats.ttl_secs,
            msgid: stats.msgid.to_string(),
            created_ms: stats.created_ms,
            finished_ms: stats.finished_ms,
            done: stats.finished_ms != 0,
            targets: stats.targets,
            online: stats.online,
            written: stats.written,
            acked: stats.acked,
            stored_offline: stats.stored_offline,
            expired: stats.expired,
            failed: stats.failed,
            stale_sessions: stats.stale_sessions,
            delivery_rate: rate(stats.acked, stats.targets),
            recipients: stats
                .recipients
                .into_iter()
                .map(|r| RecipientBody {
                    uid: r.uid,
                    state: r.state.into(),
                    sessions: r.sessions,
                })
                .collect(),
        }
    }
}

impl From<UserPresence> for UserPresenceBody {
    fn from(user: UserPresence) -> Self {
        Self {
            appcode: user.appcode,
            uid: user.uid,
            online: !user.sessions.is_empty(),
            sessions: user
                .sessions
                .into_iter()
                .map(|s| SessionBody {
                    device: s.device_id,
                    gate: s.gate_id,
                    session_id: s.session_id.to_string(),
                    since_ms: s.since_ms,
                })
                .collect(),
        }
    }
}

/// `delivery_rate`: acked / targets, 0 without targets.
pub(crate) fn rate(acked: u64, targets: u64) -> f64 {
    if targets == 0 {
        0.0
    } else {
        acked as f64 / targets as f64
    }
}

/// The sessions of one user, as both surfaces render them.
#[derive(Debug)]
pub(crate) struct UserPresence {
    pub(crate) appcode: u32,
    pub(crate) uid: String,
    pub(crate) sessions: Vec<longlink_presence::SessionEntry>,
}

// ---------------------------------------------------------------------------------------------
// Observability: the node summary (dashboard, `longlink top`) and message traces.

/// Percentiles of a latency over the last minute, in milliseconds (`null` when `count` is 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PercentilesBody {
    /// Observations in the window.
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

/// Latencies of the summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LatencyBody {
    /// c2c: the gate read the sender's frame → its ACK queued (stored durably first).
    pub c2c_ack: PercentilesBody,
    /// c2c: the gate read the sender's frame → the MSG written to a receiver's socket.
    pub c2c_e2e: PercentilesBody,
}

/// Counters since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TotalsBody {
    /// c2c and c2s messages read from clients plus s2c pushes accepted.
    pub messages: u64,
    /// MSG frames written to client sockets.
    pub deliveries: u64,
    /// Msgids acknowledged by receiver devices.
    pub receiver_acks: u64,
    /// Accepted logins.
    pub logins: u64,
    /// Refused logins.
    pub login_failures: u64,
    /// ERROR frames sent.
    pub errors: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
}

/// One configured appcode in the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AppcodeSummaryBody {
    /// The appcode.
    pub appcode: u32,
    /// Its configured name.
    pub name: String,
    /// Logged-in sessions.
    pub sessions: u64,
    /// c2c and c2s messages its users sent since the node started.
    pub messages: u64,
}

/// One gate in the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GateSummaryBody {
    /// The gate id.
    pub id: String,
    /// The address clients connect to.
    pub addr: String,
    /// Open connections.
    pub connections: u64,
    /// Logged-in sessions.
    pub sessions: u64,
    /// Accepting connections.
    pub healthy: bool,
    /// Moving its clients away before it stops.
    pub draining: bool,
    /// When the gate last reported (ms since the epoch).
    pub last_seen_ms: u64,
}

/// One sample per second, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SeriesBody {
    /// Seconds between samples.
    pub interval_secs: u32,
    /// When each sample was taken (ms since the epoch).
    pub at_ms: Vec<u64>,
    /// Open connections.
    pub connections: Vec<u64>,
    /// Messages accepted per second.
    pub messages_per_sec: Vec<f64>,
    /// MSG frames written per second.
    pub deliveries_per_sec: Vec<f64>,
    /// c2c end-to-end p99 of that second (`null`: none delivered).
    pub c2c_e2e_p99_ms: Vec<Option<f64>>,
}

/// `GET /v1/stats/summary`: the node at a glance (the dashboard and `longlink top` draw it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SummaryBody {
    /// This node's gate id.
    pub node: String,
    /// The server's version.
    pub version: String,
    /// When the node started (ms since the epoch).
    pub started_ms: u64,
    /// Now (ms since the epoch).
    pub now_ms: u64,
    /// Open client connections, all gates.
    pub connections: u64,
    /// Logged-in sessions, all gates.
    pub sessions: u64,
    /// Messages accepted in the last second (c2c + c2s + s2c pushes).
    pub messages_per_sec: f64,
    /// MSG frames written in the last second.
    pub deliveries_per_sec: f64,
    /// Receiver ACKs / MSGs queued to receivers over the last minute, at most 1 (`null`: none).
    pub delivery_rate: Option<f64>,
    /// Latency percentiles over the last minute.
    pub latency_ms: LatencyBody,
    /// Counters since the node started.
    pub totals: TotalsBody,
    /// Every configured appcode, most sessions first.
    pub appcodes: Vec<AppcodeSummaryBody>,
    /// The gates.
    pub gates: Vec<GateSummaryBody>,
    /// The last two minutes, a sample per second.
    pub series: SeriesBody,
}

/// One event of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TraceEventBody {
    /// accepted, stored, published, acked_to_sender, routed, offline, written, pulled,
    /// receiver_acked, expired, consumed or refused.
    pub stage: String,
    /// When (µs since the epoch).
    pub at_us: u64,
    /// Milliseconds since the first event.
    pub offset_ms: f64,
    /// Milliseconds since the previous event.
    pub delta_ms: f64,
    /// The node that recorded it.
    pub node: String,
    /// The msgid (decimal string), when the event concerns a stored message.
    pub msgid: Option<String>,
    /// The session or user concerned (`appcode:uid/device`).
    pub who: Option<String>,
    /// Free text (an error code, a topic, how many sessions).
    pub detail: Option<String>,
}

/// `GET /v1/trace/{id}`: a message's trail through the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TraceBody {
    /// The trace id (decimal string).
    pub log_id: String,
    /// The msgids it was stored under (decimal strings).
    pub msgids: Vec<String>,
    /// c2c, c2s, s2c or unknown.
    pub kind: String,
    /// The sender (`appcode:uid`, or a push's label).
    pub from: Option<String>,
    /// The receiver (`appcode:uid`, a topic, or `appcode (N users)`).
    pub to: Option<String>,
    /// The appcodes involved.
    pub appcodes: Vec<u32>,
    /// When the first event happened (ms since the epoch).
    pub started_ms: u64,
    /// What happened, in time order.
    pub events: Vec<TraceEventBody>,
    /// Events not kept (a broadcast's per-recipient events beyond the cap).
    pub dropped_events: u32,
}

/// Query of `GET /v1/trace/{id}`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
pub struct TraceQuery {
    /// `log_id` or `msgid`; absent: the id is tried as a log_id, then as a msgid.
    pub by: Option<String>,
}

impl From<longlink_rpc::trace::Trace> for TraceBody {
    fn from(trace: longlink_rpc::trace::Trace) -> Self {
        let first = trace.events.first().map_or(0, |e| e.at_us);
        let mut previous = first;
        let ms = |micros: u64| micros as f64 / 1000.0;
        let events = trace
            .events
            .into_iter()
            .map(|e| {
                let body = TraceEventBody {
                    stage: e.stage.name().to_owned(),
                    at_us: e.at_us,
                    offset_ms: ms(e.at_us.saturating_sub(first)),
                    delta_ms: ms(e.at_us.saturating_sub(previous)),
                    node: e.node.to_string(),
                    msgid: (e.msgid != 0).then(|| e.msgid.to_string()),
                    who: e.who.map(|w| w.to_string()),
                    detail: e.detail,
                };
                previous = e.at_us;
                body
            })
            .collect();
        Self {
            log_id: trace.log_id.to_string(),
            msgids: trace.msgids.iter().map(u64::to_string).collect(),
            kind: trace.subject.kind.name().to_owned(),
            from: trace.subject.from,
            to: trace.subject.to,
            appcodes: trace.subject.appcodes,
            started_ms: first / 1000,
            events,
            dropped_events: trace.dropped_events,
        }
    }
}

/// Request ids that may exceed 2^53: a decimal string or a JSON number.
mod id_text {
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Number(u64),
        Text(String),
    }

    pub(super) fn optional<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
        match Option::<Id>::deserialize(de)? {
            None => Ok(None),
            Some(Id::Number(n)) => Ok(Some(n)),
            Some(Id::Text(text)) => text
                .parse()
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a decimal u64"))),
        }
    }
}

/// Query of `GET /v1/dispatch`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DispatchQuery {
    /// The user's appcode (required).
    pub appcode: Option<u32>,
    /// The user (1..=256 bytes). Absent: no session is looked up; the least loaded gates.
    pub uid: Option<String>,
    /// One device of the user: only its session puts a gate first.
    pub device: Option<String>,
}

/// One gate of a dispatch answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DispatchGateBody {
    /// The gate id.
    pub id: String,
    /// The address to connect to (`host:port`).
    pub addr: String,
    /// Open connections on the gate.
    pub connections: u64,
    /// The gate holds or serves a session of this user (RESUME there first).
    pub holding: bool,
}

/// `GET /v1/dispatch`: the gates to try, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DispatchBody {
    /// The gate holding the user's session first, then the others by fewest connections;
    /// never a draining or stopped gate. Never empty (no serving gate is a 503).
    pub gates: Vec<DispatchGateBody>,
}

/// One gate of `GET /v1/gates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GateBody {
    /// The gate id (as presence and `POST /v1/gates/{id}/drain` name it).
    pub id: String,
    /// The address clients use for it.
    pub addr: String,
    /// Open connections.
    pub connections: u64,
    /// Sessions held without a link, waiting for a RESUME.
    pub held: u64,
    /// Its accept loop runs.
    pub serving: bool,
    /// A drain started (it stays `true` once the drain has ended and the gate stopped).
    pub draining: bool,
}

impl From<crate::gates::GateStatus> for GateBody {
    fn from(g: crate::gates::GateStatus) -> Self {
        Self {
            id: g.id,
            addr: g.addr,
            connections: g.connections,
            held: g.held,
            serving: g.serving,
            draining: g.draining,
        }
    }
}

/// `GET /v1/gates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GatesBody {
    /// Every gate of the node, first gate first.
    pub gates: Vec<GateBody>,
}

/// `POST /v1/gates/{id}/drain` (202).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DrainAcceptedBody {
    /// The gate id.
    pub gate: String,
    /// Always `true`: the gate is draining (or drained).
    pub draining: bool,
    /// `true` when this call started the drain, `false` when one had already started.
    pub started: bool,
}

// ---------------------------------------------------------------------------------------------
// Offline push notifications: devices' push tokens and the providers' statistics (issue 12).

/// One push token of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushTokenBody {
    /// The provider's configured name: `apns`, `fcm` or a `[[push.http]]` name.
    pub provider: String,
    /// The provider's device token.
    pub token: String,
}

/// `PUT /v1/devices/{appcode}/{uid}/{device}`: the device's whole registration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutDeviceBody {
    /// `ios`, `android`, `web`, … (default "": unknown).
    #[serde(default)]
    pub platform: String,
    /// The maker's push ecosystem: `apple`, `google`, `huawei`, `xiaomi`, … (default "").
    #[serde(default)]
    pub vendor: String,
    /// The app's version (default "").
    #[serde(default)]
    pub app_version: String,
    /// Every token of the device, at most one per provider (at most 8); `[]` removes them
    /// all. Required, so a body that forgot it does not wipe the device.
    pub tokens: Vec<PushTokenBody>,
}

/// `POST /v1/devices/{appcode}/{uid}/{device}/tokens`: adds (or replaces) one token, keeping
/// the device's other providers' tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterTokenBody {
    /// The provider's configured name.
    pub provider: String,
    /// The provider's device token.
    pub token: String,
    /// The device's platform (default "").
    #[serde(default)]
    pub platform: String,
    /// The device's vendor (default "").
    #[serde(default)]
    pub vendor: String,
    /// The app's version (default "").
    #[serde(default)]
    pub app_version: String,
}

/// A device and its push tokens, as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeviceBody {
    /// The user's appcode.
    pub appcode: u32,
    /// The user.
    pub uid: String,
    /// The device id (the LOGIN `device_id`).
    pub device: String,
    /// Its platform ("" = unknown).
    pub platform: String,
    /// Its vendor ("" = unknown).
    pub vendor: String,
    /// The app's version ("" = unknown).
    pub app_version: String,
    /// The device class provider selection measures it in: `platform/vendor/app_version`,
    /// an unknown part shown as `*`.
    pub class: String,
    /// Its tokens, one per provider.
    pub tokens: Vec<PushTokenBody>,
    /// When it last registered or changed (unix ms).
    pub updated_ms: u64,
}

/// `GET /v1/devices/{appcode}/{uid}`: the user's registered devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DevicesBody {
    /// The user's appcode.
    pub appcode: u32,
    /// The user.
    pub uid: String,
    /// The devices with push tokens (empty when none).
    pub devices: Vec<DeviceBody>,
}

/// Query of `DELETE /v1/devices/{appcode}/{uid}/{device}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RemoveDeviceQuery {
    /// Only this provider's token (default: every token of the device).
    pub provider: Option<String>,
}

/// Answer to `DELETE /v1/devices/{appcode}/{uid}/{device}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RemovedBody {
    /// How many tokens were removed (0: there was none; the call is idempotent).
    pub removed: u32,
}

/// One provider's figures for one device class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProviderClassBody {
    /// The device class (`ios/apple/2.3`, `android/xiaomi/*`).
    pub class: String,
    /// Notifications handed to the provider.
    pub sent: u64,
    /// Accepted by the provider (2xx).
    pub accepted: u64,
    /// Receipts the devices reported (`ack_notification`).
    pub receipts: u64,
    /// receipts / sent (0 when nothing was sent).
    pub receipt_rate: f64,
    /// Median latency from send to receipt, ms (0: no receipt yet).
    pub p50_ms: u64,
    /// 99th percentile latency from send to receipt, ms (0: no receipt yet).
    pub p99_ms: u64,
    /// Failures by kind: `dead_token`, `rate_limited`, `unavailable`, `rejected`,
    /// `transport`, `breaker_open`, `no_receipt`.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// The selector's current estimate of the receipt rate (posterior mean).
    pub estimate: f64,
}

/// One push provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProviderBody {
    /// Its configured name (`apns`, `fcm`, a `[[push.http]]` name).
    pub name: String,
    /// `apns`, `fcm` or `http`.
    pub kind: String,
    /// Its circuit breaker: `closed`, `open` or `half_open`.
    pub breaker: String,
    /// Its figures per device class.
    pub classes: Vec<ProviderClassBody>,
}

/// `GET /v1/push-providers/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProvidersBody {
    /// Every configured provider (empty when the node has none).
    pub providers: Vec<ProviderBody>,
}

/// The device class string: `platform/vendor/app_version`, "" shown as `*`.
pub(crate) fn device_class(class: &longlink_rpc::notify::DeviceClass) -> String {
    let part = |s: &str| {
        if s.is_empty() {
            "*".to_owned()
        } else {
            s.to_owned()
        }
    };
    format!(
        "{}/{}/{}",
        part(&class.platform),
        part(&class.vendor),
        part(&class.app_version)
    )
}

impl From<longlink_rpc::notify::DeviceRecord> for DeviceBody {
    fn from(record: longlink_rpc::notify::DeviceRecord) -> Self {
        Self {
            appcode: record.appcode,
            uid: record.uid,
            device: record.device,
            class: device_class(&record.class),
            platform: record.class.platform,
            vendor: record.class.vendor,
            app_version: record.class.app_version,
            tokens: record
                .tokens
                .into_iter()
                .map(|t| PushTokenBody {
                    provider: t.provider,
                    token: t.token,
                })
                .collect(),
            updated_ms: record.updated_ms,
        }
    }
}

impl From<longlink_rpc::notify::ProviderStats> for ProviderBody {
    fn from(stats: longlink_rpc::notify::ProviderStats) -> Self {
        Self {
            name: stats.provider,
            kind: stats.kind,
            breaker: stats.breaker,
            classes: stats
                .classes
                .into_iter()
                .map(|c| ProviderClassBody {
                    class: c.class,
                    sent: c.sent,
                    accepted: c.accepted,
                    receipts: c.receipts,
                    receipt_rate: c.receipt_rate,
                    p50_ms: c.p50_ms,
                    p99_ms: c.p99_ms,
                    errors: c.errors.into_iter().collect(),
                    estimate: c.estimate,
                })
                .collect(),
        }
    }
}
