//! The async Rust client that apps embed to talk to a longlink gate over wire protocol v1.
//!
//! This crate owns the client side of a connection: the TCP connect and LOGIN handshake,
//! requests matched to responses by seq_id with a deadline on every wait, reconnection with
//! jittered exponential backoff, sends retried with the same client message id until they
//! are acknowledged, incoming messages turned into a stream of [`Event`]s (each msgid once,
//! in msgid order per conversation) with backpressure, automatic (batched) MSG_ACKs, and
//! automatic keepalive with a liveness check. It depends on `longlink-proto` only. Main
//! types: [`ClientConfig`] and [`ReconnectPolicy`], [`Client`] (a cheap, cloneable handle;
//! a driver task owns the socket), [`Incoming`] (the event stream), [`Event`], [`Message`],
//! [`Content`], [`UserRef`], [`SendReceipt`], [`PushTokenInfo`], [`NotificationAck`] and
//! [`ClientError`].
//!
//! Modules: `config` ([`ClientConfig`], [`ReconnectPolicy`]), `client` ([`Client`],
//! [`Incoming`], send retries), `handshake` (TCP connect + RESUME or LOGIN), `driver` (the task that
//! owns the socket: pending requests, pushes, acks, keepalive, catch-up, reconnects),
//! `sequencer` (exactly-once, ordered delivery), `dedup` (a bounded set of msgids), `shared`
//! (state shared by the handles, the stream and the driver), `types` (the data types),
//! `error` ([`ClientError`]).
//!
//! # Connection life
//!
//! [`Client::connect`] connects and logs in once (an error there is returned, not retried).
//! When the connection later drops (I/O error, EOF, keepalive timeout, or a KICK for
//! RECONNECT / SERVER_SHUTDOWN / SLOW_CONSUMER), the client emits [`Event::Disconnected`] and
//! reconnects (seed 004 "fast reconnect", protocol §6.5–6.6):
//!
//! - **when**: after jittered exponential backoff ([`ReconnectPolicy`]; the range the server
//!   advised at login replaces its steps), and never sooner than a KICK's `backoff_ms` or a
//!   refusal's `retry_after_ms` (RATE_LIMITED during a reconnect storm, SHUTTING_DOWN);
//! - **where**: the gate a KICK names (`reconnect_to`, a draining gate), else the gate used
//!   last, then the node's other gates (`LoginResponse.gates`), then the configured address;
//! - **how**: within the server's hold (`hold_secs`) it sends RESUME with its resume token,
//!   the newest msgid it saw and its latest acknowledgements: one round trip, no
//!   re-authentication, and the answer carries what was missed (a pull follows only when the
//!   answer says it is not `gap_free`). A rejected RESUME (hold expired, replaced, logged
//!   out), or a reconnect after the hold, logs in again on the same connection with the same
//!   device, the current token ([`Client::set_token`]) and its last connection epoch as
//!   `prior_epoch`, so that it can never replace a newer session of the same device class
//!   (`SESSION_REPLACED` ends the client instead), then catches up (below).
//!
//! Then it emits [`Event::Reconnected`] (`resumed` tells which). Requests issued meanwhile,
//! and requests whose answer the drop swallowed, are sent on the new connection, each within
//! its own deadline (except a C2C / C2S with an empty client message id, which could be
//! stored twice: it fails with [`ClientError::Disconnected`]). It does not reconnect after a
//! KICK for REPLACED / LOGGED_OUT / BLOCKED, after [`Client::close`] / [`Client::logout`],
//! after a protocol error, or when the new login is refused for its credentials (BAD_TOKEN,
//! UNKNOWN_APPCODE, APPCODE_MISMATCH, SESSION_REPLACED): then [`Event::Closed`] ends the
//! stream. With `reconnect: None` every drop ends the client, as before.
//!
//! # Sends
//!
//! [`Client::c2c`], [`Client::c2c_with_id`] and [`Client::c2s`] return a per-message
//! result: the receipt (msgid), or a typed failure. Until then they retry with the same
//! client message id (the server stores the message once and answers a repeat with the same
//! msgid, `duplicate: true`): after an attempt timed out ([`ClientConfig::request_timeout`]),
//! after the link dropped, or after a transient refusal (RATE_LIMITED, STORE_UNAVAILABLE,
//! BUS_UNAVAILABLE, OVERLOADED, SHUTTING_DOWN), with jittered backoff, until
//! [`ClientConfig::send_deadline`] passes ([`ClientError::DeadlineExceeded`]). A refusal
//! retrying cannot fix (INVALID_ARGUMENT, UNKNOWN_RECEIVER_APPCODE, INTERNAL, …) fails at
//! once with [`ClientError::Server`].
//!
//! # What the application sees: each message once, in order per conversation
//!
//! The server pushes at least once (unacknowledged messages are pushed again at a login, a
//! push can race a pull) and keeps what this device has not acknowledged for a pull.
//! The client turns that into this guarantee for the [`Event::Message`]s of [`Incoming`]:
//!
//! - **Complete.** After every login (the first one included) the client pulls every
//!   unacknowledged offline message (OFFLINE_PULL pages; after a RESUME the answer's
//!   messages are the first page, and with `gap_free` the only one) and delivers them
//!   through the same path as pushes, so a message pushed to a connection that died is not lost, whether or
//!   not the server redelivers it. A message is acknowledged (with `auto_ack`) only when the
//!   application takes it from [`Incoming`], so what was queued but not taken comes again.
//! - **Once.** A msgid is delivered at most once per [`Client`] (across reconnects): the
//!   client remembers the last 65,536 msgids it delivered, and, per conversation, the range
//!   it has checked link by link (below), so older repeats are recognized too. Repeats are
//!   still acknowledged, so the server stops redelivering them. A message the application
//!   pulled itself ([`Client::pull_offline`]) is not delivered again.
//! - **In order per conversation.** A conversation is the unordered pair of users: a
//!   message's `from`, or its `to` for a message this user sent from another device (those
//!   are delivered too; messages sent through this very device — same `device_id` — are not,
//!   the application has their receipts). Within a conversation, messages are delivered in
//!   strictly increasing msgid order as long as the server fills in `prev_msgid`:
//!   - the first message of a conversation this client sees is delivered as is: its
//!     predecessors are history ([`Client::history`]) and are not fetched;
//!   - after a login, pushes are held until the catch-up pull has reached them, then merged
//!     with the pulled messages in msgid order;
//!   - a message whose `prev_msgid` is newer than the last message delivered (or sent) in
//!     its conversation reveals a gap: it and every later message of that conversation are
//!     held (at most 1,024; more are fetched again) while the client fetches HISTORY_PULL
//!     pages newer than the last delivered message; the missing messages are delivered in
//!     order, then the held ones. Other conversations are not held up. If history keeps
//!     failing (three attempts) the held messages are delivered anyway;
//!   - `prev_msgid` 0 means "unknown predecessor": no gap is detected, messages go out in
//!     arrival order. A message older than the last one delivered in its conversation that
//!     has not been delivered yet (possible only then, or after a failed fill, or when it
//!     predates the first message seen) is delivered late rather than dropped.
//!
//!   Typing indicators (msgid 0) bypass ordering and de-duplication and are never
//!   acknowledged. Across conversations there is no order.
//!
//! # Offline push notifications
//!
//! When no session of this device can take a message, the server may notify the device
//! through APNs, FCM or a vendor channel (docs/push.md). [`Client::register_push_token`]
//! gives the server this device's token of a provider (with the device class from
//! [`ClientConfig::platform`], [`ClientConfig::vendor`], [`ClientConfig::app_version`]),
//! [`Client::remove_push_token`] and [`Client::push_tokens`] manage them; [`Client::logout`]
//! removes them on the server. The app's notification handler calls
//! [`Client::ack_notification`] with the payload's `ll_nid`: those receipts are how the
//! server learns which provider really reaches this kind of device, so a receipt made while
//! offline is kept (up to 256) and sent right after the next LOGIN or RESUME.
//!
//! ```no_run
//! use longlink_sdk::{Client, ClientConfig, Content, Event, UserRef};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::new("127.0.0.1:7700", 129, "<token>", "phone-1");
//! let (client, mut incoming) = Client::connect(config).await?;
//! let receipt = client
//!     .c2c("130:bob".parse::<UserRef>()?, Content::text("hello"))
//!     .await?;
//! println!("stored as msgid {}", receipt.msgid);
//! // Offline messages, then live ones, each once, in order per conversation.
//! while let Some(event) = incoming.next_event().await {
//!     match event {
//!         Event::Message(message) => println!("{}: {:?}", message.from, message.content),
//!         Event::Disconnected { reason } => println!("reconnecting ({reason})"),
//!         Event::Closed { reason } => println!("closed: {reason}"),
//!         other => println!("{other:?}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod client;
mod config;
mod dedup;
mod driver;
mod error;
mod handshake;
mod sequencer;
mod shared;
mod tls;
mod types;

pub use client::{CLIENT_VERSION, Client, Incoming};
pub use config::{ClientConfig, Jitter, ReconnectPolicy};
pub use error::ClientError;
pub use tls::{TlsConfig, TlsRoots};
pub use types::{
    Content, Conversation, Event, Message, NotificationAck, ParseUserRefError, PullPage,
    PushTokenInfo, Receipt, SendReceipt, UserRef,
};

pub use longlink_proto;
pub use longlink_proto::wire::{HistoryDirection, MsgKind, ReceiptKind};
pub use longlink_proto::{Compression, ContentType, ErrorCode, KickReason};
