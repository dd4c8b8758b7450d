//! The delivery ledger's contract (issue 9, seeds 003/004 "find one message's trail"): every
//! role records the stages a message passes, keyed by its log_id, and an operator reads them
//! back as one timeline (`longlink trace`, `GET /v1/trace/{id}`).
//!
//! Recording must be cheap and never block on I/O: the gate calls [`Ledger::record`] on its
//! read and write paths. On a single node the ledger is in memory (`longlink-ledger`); in a
//! cluster the same trait gets a shared implementation. A ledger keeps traces for a bounded
//! window and count; events about a message whose trace is gone (or was never opened by an
//! originating stage) are dropped.

use std::sync::Arc;

/// A stage of a message's life. The order of the variants is the usual order of a c2c.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// The gate read the sender's frame, or the API accepted a push. Opens the trace.
    Accepted,
    /// Committed to the store (msgid known). Opens the trace too (pushes stored in a batch).
    Stored,
    /// c2s: the bus holds it durably on a topic.
    Published,
    /// The sender's ACK (response) was written to its socket.
    AckedToSender,
    /// Presence was asked where the receiver is (detail: how many sessions).
    Routed,
    /// The receiver had no reachable session: the message waits in its inbox.
    Offline,
    /// A MSG frame carrying it was written to a receiver's socket.
    Written,
    /// Returned to a receiver device by OFFLINE_PULL.
    Pulled,
    /// A receiver device acknowledged it (MSG_ACK).
    ReceiverAcked,
    /// An online-only push found no session before its TTL ran out.
    Expired,
    /// c2s: a business server leased it from its topic (consume API; each attempt).
    Consumed,
    /// Refused with an ERROR (detail: the code).
    Refused,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 12] = [
        Stage::Accepted,
        Stage::Stored,
        Stage::Published,
        Stage::AckedToSender,
        Stage::Routed,
        Stage::Offline,
        Stage::Written,
        Stage::Pulled,
        Stage::ReceiverAcked,
        Stage::Expired,
        Stage::Consumed,
        Stage::Refused,
    ];

    /// The snake_case name used in JSON and by `longlink trace`.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Accepted => "accepted",
            Stage::Stored => "stored",
            Stage::Published => "published",
            Stage::AckedToSender => "acked_to_sender",
            Stage::Routed => "routed",
            Stage::Offline => "offline",
            Stage::Written => "written",
            Stage::Pulled => "pulled",
            Stage::ReceiverAcked => "receiver_acked",
            Stage::Expired => "expired",
            Stage::Consumed => "consumed",
            Stage::Refused => "refused",
        }
    }

    /// Whether this stage may open a trace (the others only add to an open one).
    pub fn opens_trace(self) -> bool {
        matches!(self, Stage::Accepted | Stage::Stored)
    }
}

/// What kind of message a trace follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageKind {
    /// App to app.
    C2c,
    /// App to business server.
    C2s,
    /// Business server to apps.
    S2c,
    /// Not said (yet).
    #[default]
    Unknown,
}

impl MessageKind {
    /// The lowercase name used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::C2c => "c2c",
            MessageKind::C2s => "c2s",
            MessageKind::S2c => "s2c",
            MessageKind::Unknown => "unknown",
        }
    }
}

/// Who a message is between; given by the stage that opens the trace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subject {
    /// c2c, c2s or s2c.
    pub kind: MessageKind,
    /// The sender, `appcode:uid` (for s2c the business server's label).
    pub from: Option<String>,
    /// The receiver, `appcode:uid`, a topic for c2s, or `appcode (N users)` for a push.
    pub to: Option<String>,
    /// The appcodes involved: an API key must cover one of them to read the trace.
    pub appcodes: Vec<u32>,
}

/// One thing that happened to a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// The message's log_id; 0 means "find it by `msgid`".
    pub log_id: u64,
    /// The msgid, once stored (0 = none).
    pub msgid: u64,
    /// What happened.
    pub stage: Stage,
    /// When, in microseconds since the Unix epoch (wall clock: comparable across nodes).
    pub at_us: u64,
    /// The session or device concerned, e.g. `130:bob/phone`.
    pub who: Option<Arc<str>>,
    /// Free text, e.g. the error code or the number of sessions.
    pub detail: Option<String>,
    /// Who the message is between (on the opening stage).
    pub subject: Option<Subject>,
}

impl TraceEvent {
    /// An event of `stage` for `log_id`, now.
    pub fn now(log_id: u64, stage: Stage) -> Self {
        Self {
            log_id,
            msgid: 0,
            stage,
            at_us: now_us(),
            who: None,
            detail: None,
            subject: None,
        }
    }

    /// With the msgid.
    #[must_use]
    pub fn msgid(mut self, msgid: u64) -> Self {
        self.msgid = msgid;
        self
    }

    /// With the session or device concerned.
    #[must_use]
    pub fn who(mut self, who: Arc<str>) -> Self {
        self.who = Some(who);
        self
    }

    /// With a detail.
    #[must_use]
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// With the subject.
    #[must_use]
    pub fn subject(mut self, subject: Subject) -> Self {
        self.subject = Some(subject);
        self
    }
}

/// An event as the ledger kept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// What happened.
    pub stage: Stage,
    /// When (µs since the epoch).
    pub at_us: u64,
    /// The node that recorded it.
    pub node: Arc<str>,
    /// The msgid, when known (0 = none).
    pub msgid: u64,
    /// The session or device concerned.
    pub who: Option<Arc<str>>,
    /// Free text.
    pub detail: Option<String>,
}

/// A message's trail, events in time order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    /// The log_id.
    pub log_id: u64,
    /// The msgids it was stored under (a push stores one message).
    pub msgids: Vec<u64>,
    /// Who it is between.
    pub subject: Subject,
    /// What happened, in time order.
    pub events: Vec<RecordedEvent>,
    /// Events not kept because the trace reached its cap (a broadcast has many).
    pub dropped_events: u32,
}

/// How [`Ledger::trace`] reads its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceBy {
    /// As a log_id.
    LogId,
    /// As a msgid.
    Msgid,
    /// As a log_id first, then as a msgid.
    Either,
}

/// Where stages are recorded and traces read.
pub trait Ledger: Send + Sync + std::fmt::Debug + 'static {
    /// Records one event. Cheap; never blocks on I/O.
    fn record(&self, event: TraceEvent);

    /// Records `stage` for each of `msgids` (e.g. a MSG_ACK or a pulled page), resolving their
    /// log_ids; msgids the ledger does not know are skipped.
    fn record_msgids(&self, msgids: &[u64], stage: Stage, who: Option<Arc<str>>);

    /// The trace of `id`.
    fn trace(&self, id: u64, by: TraceBy) -> Option<Trace>;

    /// Whether a new message from `from` (`appcode:uid`, or the API's label for a push) may
    /// carry `log_id`: false when an open trace of that id was opened by someone else. Clients
    /// and API callers pick log_ids; one naming another sender's trace would merge into it and
    /// let the newcomer read it (docs/security.md "Isolation"), so callers replace such an id.
    fn claim(&self, log_id: u64, from: &str) -> bool {
        let _ = (log_id, from);
        true
    }
}

/// A ledger that keeps nothing (tracing disabled).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLedger;

impl Ledger for NoLedger {
    fn record(&self, _event: TraceEvent) {}

    fn record_msgids(&self, _msgids: &[u64], _stage: Stage, _who: Option<Arc<str>>) {}

    fn trace(&self, _id: u64, _by: TraceBy) -> Option<Trace> {
        None
    }
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `appcode:uid`, how traces name a user (a subject's `from`/`to`, a recipient's `who`).
pub fn user_label(appcode: u32, uid: &str) -> String {
    format!("{appcode}:{uid}")
}

/// `appcode:uid/device`, the `who` of a session's events.
pub fn session_label(appcode: u32, uid: &str, device_id: &str) -> Arc<str> {
    Arc::from(format!("{}/{device_id}", user_label(appcode, uid)))
}
