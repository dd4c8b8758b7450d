//! The durable message store of longlink: c2c messages, each receiver's offline inbox, each
//! user's conversation history, per-device delivery acks and the idempotency keys that make a
//! sender's retry return the original msgid.
//!
//! Everything else in longlink talks to it through the [`MessageStore`] trait; a message is
//! acknowledged to its sender only after [`MessageStore::append`] returns, which is after the
//! backend has committed it durably (DESIGN.md, "Delivery guarantees").
//!
//! Main types: [`MessageStore`] (the trait), [`NewMessage`] / [`StoredMessage`] / [`Page`]
//! (the domain), [`StoreError`], and [`SqliteStore`], the embedded single-node backend
//! (SQLite in WAL mode with `synchronous=FULL`, one writer thread doing group commit, a small
//! pool of read-only connections).
//!
//! Module map:
//! - `lib.rs`: the trait, domain types, errors and the paging rules every backend shares.
//! - `sqlite.rs`: [`SqliteStore`], [`SqliteOptions`], [`WriterStats`].
//! - `revocations.rs`: [`TokenRevocations`] (which users' tokens are revoked, issue 8),
//!   [`SqliteRevocations`] (`tokens.sqlite`), [`MemoryRevocations`].
//! - `testsuite.rs` (tests, and the `testsuite` feature for other backends' tests):
//!   `store_testsuite!`, the behaviour suite every backend runs.

mod revocations;
mod sqlite;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use revocations::{MemoryRevocations, SqliteRevocations, TokenRevocations};
pub use sqlite::{SqliteOptions, SqliteStore, WriterStats};

/// Page size used when a request asks for `limit == 0`.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
/// Largest page a single request can get; larger limits are clamped to this.
pub const MAX_PAGE_LIMIT: u32 = 500;
/// Longest accepted uid, device id or client message id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Most msgids accepted in one [`MessageStore::ack`] call.
pub const MAX_ACK_IDS: usize = 4096;

/// A user: the account system / client kind (`appcode`) and the user id inside it.
///
/// The same `uid` under two appcodes is two different users (cross-account chat).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey {
    /// Client kind and account system, e.g. 129 for customers, 130 for drivers.
    pub appcode: u32,
    /// User id inside the appcode's account system.
    pub uid: String,
}

impl UserKey {
    /// Builds a user key.
    pub fn new(appcode: u32, uid: impl Into<String>) -> Self {
        Self {
            appcode,
            uid: uid.into(),
        }
    }
}

/// A c2c message as the sender submitted it, before the store assigns its msgid.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Sender.
    pub from: UserKey,
    /// Sender's device id; part of the idempotency key.
    pub from_device: String,
    /// Sender-chosen id that makes retries idempotent; empty means "no idempotency".
    pub client_msg_id: String,
    /// Receiver.
    pub to: UserKey,
    /// Business message type.
    pub msgtype: u32,
    /// Content type (text, markup, typing, opaque bytes...), as defined by the protocol.
    pub content_type: i32,
    /// Message body, stored as is.
    pub content: bytes::Bytes,
    /// Trace id of the request that carried the message.
    pub log_id: u64,
}

/// A message as stored, with the msgid and send date the store assigned.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// Server message id: unique and trend-increasing.
    pub msgid: u64,
    /// Sender.
    pub from: UserKey,
    /// Sender's device id.
    pub from_device: String,
    /// Sender-chosen id (empty if the sender gave none).
    pub client_msg_id: String,
    /// Receiver.
    pub to: UserKey,
    /// Business message type.
    pub msgtype: u32,
    /// Content type.
    pub content_type: i32,
    /// Message body.
    pub content: bytes::Bytes,
    /// Server time when the message was stored, in Unix milliseconds.
    pub senddate_ms: u64,
    /// Trace id of the request that stored it.
    pub log_id: u64,
    /// The msgid of the conversation's previous message (0 = it was the first).
    pub prev_msgid: u64,
    /// At least one device of a receiver acknowledged it (MSG_ACK).
    pub delivered: bool,
}

impl StoredMessage {
    /// Whether this is an s2c push (no sender device; see [`NewS2c`]).
    pub fn is_s2c(&self) -> bool {
        self.from_device.is_empty()
    }
}

/// An s2c push as stored: one message row (msgid shared by every recipient, `to.uid` empty)
/// and one inbox row per recipient. An s2c message has an empty `from_device` (every c2c
/// message has one), which is how [`StoredMessage::is_s2c`] tells it apart; a pull fills `to`
/// with the owner.
#[derive(Debug, Clone)]
pub struct NewS2c {
    /// The receivers' appcode.
    pub appcode: u32,
    /// Sender label (stored as `from.uid`, with `from.appcode = appcode`).
    pub from: String,
    /// Business message type.
    pub msgtype: u32,
    /// Content type.
    pub content_type: i32,
    /// Message body.
    pub content: bytes::Bytes,
    /// Trace id of the push.
    pub log_id: u64,
    /// Users whose inbox gets it (empty: an online-only push, stored only as a record).
    pub recipients: Vec<String>,
}

/// Result of [`MessageStore::append_s2c`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S2cOutcome {
    /// The message's msgid (shared by all recipients).
    pub msgid: u64,
    /// Server time when it was stored, Unix ms.
    pub senddate_ms: u64,
}

/// Result of [`MessageStore::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The message's msgid (the original one for a duplicate).
    pub msgid: u64,
    /// The message's send date (the original one for a duplicate), Unix milliseconds.
    pub senddate_ms: u64,
    /// True when the idempotency key was already stored and nothing new was written.
    pub duplicate: bool,
    /// The msgid of the conversation's previous message (0 = this is the first).
    pub prev_msgid: u64,
}

/// One page of messages plus the cursor to continue from.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The messages, in the order the request asked for.
    pub messages: Vec<StoredMessage>,
    /// The msgid of the last message of the page, or the request's cursor if the page is empty.
    pub next_cursor: u64,
    /// True iff at least one more message exists past this page.
    pub more: bool,
}

impl Page {
    /// Builds a page from rows fetched with a limit of `limit + 1`: the extra row, if present,
    /// only proves that `more` is true and is dropped.
    pub fn from_overfetched(mut messages: Vec<StoredMessage>, limit: u32, cursor: u64) -> Self {
        let limit = limit as usize;
        let more = messages.len() > limit;
        messages.truncate(limit);
        let next_cursor = messages.last().map_or(cursor, |m| m.msgid);
        Self {
            messages,
            next_cursor,
            more,
        }
    }
}

/// Where one message stands for one receiver device: stored → pushed → acked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Durable in the receiver's inbox; not yet pushed to this device.
    Stored,
    /// Pushed to a session of this device at least once; not acknowledged yet.
    Pushed,
    /// The device acknowledged it (MSG_ACK); it no longer appears in its offline pulls.
    Acked,
}

/// Which way [`MessageStore::history`] pages from its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// msgid < cursor (cursor 0 = from the newest), newest first.
    Older,
    /// msgid > cursor, oldest first.
    Newer,
}

/// Result of [`MessageStore::ack`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckOutcome {
    /// How many distinct msgids of the owner's inbox are now acked by the device
    /// (acking an already acked message counts again, so a retried ack gets the same answer).
    pub acked: u32,
    /// The msgids that are not in the owner's inbox, in request order, without repeats.
    pub not_found: Vec<u64>,
    /// The c2c messages this ack delivered for the first time (no device of the receiver had
    /// acked them before), ascending by msgid: their senders get a delivery receipt.
    pub first_delivered: Vec<Delivered>,
}

/// A c2c message that was just delivered: see [`AckOutcome::first_delivered`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The message.
    pub msgid: u64,
    /// Its sender.
    pub from: UserKey,
}

/// One conversation of a user, as [`MessageStore::conversations`] lists it.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// The other user (the owner themself for notes to self).
    pub peer: UserKey,
    /// The newest message of the conversation.
    pub last: StoredMessage,
    /// Messages from the peer after `read_upto`, counted up to [`MAX_UNREAD_COUNT`].
    pub unread: u32,
    /// The owner's read mark in this conversation (0 = none).
    pub read_upto: u64,
    /// The peer's read mark in the same conversation (0 = none).
    pub peer_read_upto: u64,
}

/// A page of [`MessageStore::conversations`].
#[derive(Debug, Clone, Default)]
pub struct ConversationPage {
    /// Most recent first (by the msgid of their last message).
    pub conversations: Vec<Conversation>,
    /// Older conversations follow.
    pub more: bool,
}

/// The answer of [`MessageStore::mark_read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadMark {
    /// The owner's read mark now (never lower than before).
    pub read_upto: u64,
    /// Messages from the peer still unread after it, counted up to [`MAX_UNREAD_COUNT`].
    pub unread: u32,
}

/// Unread counts stop at this number (a badge shows "1000+"), so counting stays cheap.
pub const MAX_UNREAD_COUNT: u32 = 1000;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed, is overloaded or did not answer in time. A write that failed this
    /// way may or may not have been stored (the message says which when it is known); retrying
    /// it with the same client message id is always safe.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store has been closed.
    #[error("store closed")]
    Closed,
    /// The request is malformed (empty uid, id too long, too many msgids...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// The durable message store.
///
/// Implementations: [`SqliteStore`] (embedded, single node). Every implementation passes the
/// shared behaviour suite (`testsuite.rs`).
#[async_trait::async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Stores a c2c message durably and returns only after it is committed and fsync'd.
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for an empty or oversized uid or id,
    /// [`StoreError::Unavailable`] when the write failed, the write queue stayed full or the
    /// commit did not answer in time (then the message may or may not be stored: retry with the
    /// same `client_msg_id`), [`StoreError::Closed`] after close.
    async fn append(&self, msg: NewMessage) -> Result<AppendOutcome, StoreError>;

    /// Stores an s2c push durably (one message, one inbox row per recipient) and returns only
    /// after the commit.
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for an empty or oversized recipient or label,
    /// [`StoreError::Unavailable`], [`StoreError::Closed`].
    async fn append_s2c(&self, msg: NewS2c) -> Result<S2cOutcome, StoreError>;

    /// Inbox of `owner`: messages to owner with msgid > cursor not yet acked by `device`,
    /// ascending, at most `limit` (0 → 50, capped at 500).
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for a bad owner or device,
    /// [`StoreError::Unavailable`] on a backend failure, [`StoreError::Closed`] after close.
    async fn pull_offline(
        &self,
        owner: &UserKey,
        device: &str,
        cursor: u64,
        limit: u32,
    ) -> Result<Page, StoreError>;

    /// Marks msgids as acked by (owner, device). Only msgids in owner's inbox count; others
    /// are returned in not_found and change nothing.
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for a bad owner or device or more than
    /// [`MAX_ACK_IDS`] msgids, [`StoreError::Unavailable`], [`StoreError::Closed`].
    async fn ack(
        &self,
        owner: &UserKey,
        device: &str,
        msgids: &[u64],
    ) -> Result<AckOutcome, StoreError>;

    /// The conversation between owner and peer, both directions. Older: msgid < cursor
    /// (cursor 0 = newest), newest first. Newer: msgid > cursor, oldest first.
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for a bad owner or peer,
    /// [`StoreError::Unavailable`], [`StoreError::Closed`].
    async fn history(
        &self,
        owner: &UserKey,
        peer: &UserKey,
        cursor: u64,
        direction: Direction,
        limit: u32,
    ) -> Result<Page, StoreError>;

    /// Records that `msgids` were pushed to a session of (owner, device): their state for that
    /// device moves from stored to pushed. Informational and not waited on: the write joins the
    /// next group commit, and a lost record changes no delivery (unacked stays unacked).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the write queue stays full, [`StoreError::Closed`].
    async fn record_pushed(
        &self,
        owner: &UserKey,
        device: &str,
        msgids: &[u64],
    ) -> Result<(), StoreError>;

    /// The delivery state of `msgid` for (owner, device), or `None` when the message is not in
    /// owner's inbox (absent, or not theirs).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Closed`].
    async fn delivery_state(
        &self,
        owner: &UserKey,
        device: &str,
        msgid: u64,
    ) -> Result<Option<DeliveryState>, StoreError>;

    /// Owner's conversations whose last message is older than `before_msgid` (0 = all), the
    /// most recent first, at most `limit` (0 → 50, capped at 500).
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for a bad owner, [`StoreError::Unavailable`],
    /// [`StoreError::Closed`].
    async fn conversations(
        &self,
        owner: &UserKey,
        before_msgid: u64,
        limit: u32,
    ) -> Result<ConversationPage, StoreError>;

    /// Moves owner's read mark in the conversation with `peer` forward to `msgid` (a mark
    /// already past it stays). `None` when `msgid` is not a message of that conversation.
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for a bad owner or peer, [`StoreError::Unavailable`],
    /// [`StoreError::Closed`].
    async fn mark_read(
        &self,
        owner: &UserKey,
        peer: &UserKey,
        msgid: u64,
    ) -> Result<Option<ReadMark>, StoreError>;
}

/// The page size a request gets: 0 → [`DEFAULT_PAGE_LIMIT`], at most [`MAX_PAGE_LIMIT`].
/// Shared by every backend, so they page alike.
pub fn effective_limit(limit: u32) -> u32 {
    match limit {
        0 => DEFAULT_PAGE_LIMIT,
        n => n.min(MAX_PAGE_LIMIT),
    }
}

/// Checks a user key at the API boundary (every backend does, alike).
///
/// # Errors
/// [`StoreError::InvalidArgument`] for an empty or oversized uid.
pub fn validate_user(user: &UserKey, what: &str) -> Result<(), StoreError> {
    if user.uid.is_empty() {
        return Err(StoreError::InvalidArgument(format!("{what}.uid is empty")));
    }
    validate_id(&user.uid, what)
}

/// Checks the length of a uid, device id or client message id.
///
/// # Errors
/// [`StoreError::InvalidArgument`] above [`MAX_ID_BYTES`].
pub fn validate_id(id: &str, what: &str) -> Result<(), StoreError> {
    if id.len() > MAX_ID_BYTES {
        return Err(StoreError::InvalidArgument(format!(
            "{what} is {} bytes, more than {MAX_ID_BYTES}",
            id.len()
        )));
    }
    Ok(())
}

/// The checks of [`MessageStore::ack`]'s arguments, shared by every backend.
///
/// # Errors
/// [`StoreError::InvalidArgument`] for a bad owner or device, or more than [`MAX_ACK_IDS`]
/// msgids.
pub fn validate_ack(owner: &UserKey, device: &str, msgids: &[u64]) -> Result<(), StoreError> {
    validate_user(owner, "owner")?;
    validate_id(device, "device")?;
    if msgids.len() > MAX_ACK_IDS {
        return Err(StoreError::InvalidArgument(format!(
            "{} msgids in one ack, more than {MAX_ACK_IDS}",
            msgids.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_limit_defaults_and_clamps() {
        assert_eq!(effective_limit(0), DEFAULT_PAGE_LIMIT);
        assert_eq!(effective_limit(1), 1);
        assert_eq!(effective_limit(MAX_PAGE_LIMIT), MAX_PAGE_LIMIT);
        assert_eq!(effective_limit(MAX_PAGE_LIMIT + 1), MAX_PAGE_LIMIT);
        assert_eq!(effective_limit(u32::MAX), MAX_PAGE_LIMIT);
    }

    #[test]
    fn validation_rejects_empty_and_oversized_ids() {
        assert!(validate_user(&UserKey::new(1, ""), "to").is_err());
        assert!(validate_user(&UserKey::new(1, "x".repeat(MAX_ID_BYTES + 1)), "to").is_err());
        assert!(validate_user(&UserKey::new(1, "x".repeat(MAX_ID_BYTES)), "to").is_ok());
        assert!(validate_id("", "device").is_ok());
    }
}
