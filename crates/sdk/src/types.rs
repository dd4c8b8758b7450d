//! The SDK's plain data types: [`UserRef`], [`Content`], [`Message`], [`SendReceipt`],
//! [`PullPage`] and the [`Event`]s delivered by [`crate::Incoming`].

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use longlink_proto::wire;
use longlink_proto::{ContentType, ErrorCode, KickReason};

use crate::{MsgKind, ReceiptKind};

/// A user: an account system / client kind (`appcode`) and a user id within it.
///
/// Its text form is `"<appcode>:<uid>"`, e.g. `"129:alice"` ([`FromStr`] and [`fmt::Display`]).
/// The uid is everything after the first `:`, so it may itself contain colons.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserRef {
    /// The appcode (account system) the user belongs to.
    pub appcode: u32,
    /// The user id within that appcode.
    pub uid: String,
}

impl UserRef {
    /// A user reference.
    pub fn new(appcode: u32, uid: impl Into<String>) -> Self {
        Self {
            appcode,
            uid: uid.into(),
        }
    }
}

/// Why a string is not a `"<appcode>:<uid>"` user reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid user reference {input:?}: expected \"<appcode>:<uid>\", e.g. \"129:alice\"")]
pub struct ParseUserRefError {
    /// The rejected input.
    pub input: String,
}

impl FromStr for UserRef {
    type Err = ParseUserRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseUserRefError {
            input: s.to_owned(),
        };
        let (appcode, uid) = s.split_once(':').ok_or_else(err)?;
        let appcode = appcode.trim().parse::<u32>().map_err(|_| err())?;
        if uid.is_empty() {
            return Err(err());
        }
        Ok(UserRef::new(appcode, uid))
    }
}

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.appcode, self.uid)
    }
}

impl From<wire::UserRef> for UserRef {
    fn from(user: wire::UserRef) -> Self {
        UserRef::new(user.appcode, user.uid)
    }
}

impl From<UserRef> for wire::UserRef {
    fn from(user: UserRef) -> Self {
        wire::UserRef {
            appcode: user.appcode,
            uid: user.uid,
        }
    }
}

impl From<&UserRef> for wire::UserRef {
    fn from(user: &UserRef) -> Self {
        user.clone().into()
    }
}

/// A message's typed content: the wire triple `(content_type, msgtype, bytes)`.
///
/// [`Content::from_parts`] never fails and loses nothing: a known content type maps to its
/// variant only when the triple fits it exactly (TEXT / RICH: `msgtype` 0 and valid UTF-8;
/// TYPING: `msgtype` 0 and no bytes; BUSINESS: any msgtype); anything else (including content
/// types newer than this SDK) is kept as [`Content::Unknown`], which an application should
/// show as "unsupported message" or skip. So `from_parts(p).into_parts() == p` for every `p`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Content {
    /// UTF-8 plain text (TEXT, msgtype 0).
    Text(String),
    /// UTF-8 markup (RICH, msgtype 0): `<font size= color=>`, `<img url= />`, `<shake />`.
    Rich(String),
    /// A typing indicator (TYPING): pushed to online sessions only, never stored, msgid 0.
    Typing,
    /// Opaque business bytes whose meaning `msgtype` defines (BUSINESS).
    Business {
        /// The business sub-type.
        msgtype: u32,
        /// The payload.
        bytes: Bytes,
    },
    /// Anything this SDK does not model: kept verbatim.
    Unknown {
        /// The wire content type (a [`ContentType`] value or a newer one).
        content_type: i32,
        /// The business sub-type.
        msgtype: u32,
        /// The raw content bytes.
        bytes: Bytes,
    },
}

impl Content {
    /// Plain text content.
    pub fn text(text: impl Into<String>) -> Self {
        Content::Text(text.into())
    }

    /// Builds content from the wire triple (see the type's docs for the mapping).
    pub fn from_parts(content_type: i32, msgtype: u32, bytes: Bytes) -> Self {
        let unknown = |bytes| Content::Unknown {
            content_type,
            msgtype,
            bytes,
        };
        match ContentType::try_from(content_type) {
            Ok(ContentType::Text) if msgtype == 0 => match String::from_utf8(bytes.to_vec()) {
                Ok(text) => Content::Text(text),
                Err(_) => unknown(bytes),
            },
            Ok(ContentType::Rich) if msgtype == 0 => match String::from_utf8(bytes.to_vec()) {
                Ok(text) => Content::Rich(text),
                Err(_) => unknown(bytes),
            },
            Ok(ContentType::Typing) if msgtype == 0 && bytes.is_empty() => Content::Typing,
            Ok(ContentType::Business) => Content::Business { msgtype, bytes },
            _ => unknown(bytes),
        }
    }

    /// The wire triple `(content_type, msgtype, bytes)`.
    pub fn into_parts(self) -> (i32, u32, Bytes) {
        match self {
            Content::Text(text) => (ContentType::Text as i32, 0, Bytes::from(text)),
            Content::Rich(text) => (ContentType::Rich as i32, 0, Bytes::from(text)),
            Content::Typing => (ContentType::Typing as i32, 0, Bytes::new()),
            Content::Business { msgtype, bytes } => (ContentType::Business as i32, msgtype, bytes),
            Content::Unknown {
                content_type,
                msgtype,
                bytes,
            } => (content_type, msgtype, bytes),
        }
    }

    /// The text of [`Content::Text`] or [`Content::Rich`].
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Content::Text(text) | Content::Rich(text) => Some(text),
            _ => None,
        }
    }
}

impl From<(i32, u32, Bytes)> for Content {
    fn from((content_type, msgtype, bytes): (i32, u32, Bytes)) -> Self {
        Content::from_parts(content_type, msgtype, bytes)
    }
}

impl From<Content> for (i32, u32, Bytes) {
    fn from(content: Content) -> Self {
        content.into_parts()
    }
}

impl From<&str> for Content {
    fn from(text: &str) -> Self {
        Content::Text(text.to_owned())
    }
}

impl From<String> for Content {
    fn from(text: String) -> Self {
        Content::Text(text)
    }
}

/// An incoming message (pushed, or returned by a pull or a history query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The server msgid: unique, trend-increasing; 0 for ephemeral content (typing).
    pub msgid: u64,
    /// The sender (for s2c pushes: whatever the business server set).
    pub from: UserRef,
    /// The receiver.
    pub to: UserRef,
    /// The content.
    pub content: Content,
    /// Server time (unix ms) the message was first stored.
    pub senddate_ms: u64,
    /// The sender's id for this message.
    pub client_msg_id: String,
    /// The sender's device.
    pub from_device: String,
    /// Trace id of the send (look it up with `longlink trace`).
    pub log_id: u64,
    /// c2c or s2c.
    pub kind: MsgKind,
    /// The msgid of the previous message of the same conversation, as the server saw it
    /// (0 = unknown). The client uses it to detect and fill gaps.
    pub prev_msgid: u64,
    /// History and conversation lists only: a device of the receiver acknowledged it (shown
    /// as "delivered" on the sender's side).
    pub delivered: bool,
}

impl From<wire::Msg> for Message {
    /// Missing users read as the default `0:""`, unknown kinds as `MSG_KIND_UNSPECIFIED`.
    fn from(msg: wire::Msg) -> Self {
        Message {
            msgid: msg.msgid,
            from: msg.from.map(UserRef::from).unwrap_or_default(),
            to: msg.to.map(UserRef::from).unwrap_or_default(),
            content: Content::from_parts(msg.content_type, msg.msgtype, msg.content),
            senddate_ms: msg.senddate_ms,
            client_msg_id: msg.client_msg_id,
            from_device: msg.from_device,
            log_id: msg.log_id,
            kind: MsgKind::try_from(msg.kind).unwrap_or(MsgKind::Unspecified),
            prev_msgid: msg.prev_msgid,
            delivered: msg.delivered,
        }
    }
}

impl From<Message> for wire::Msg {
    fn from(msg: Message) -> Self {
        let (content_type, msgtype, content) = msg.content.into_parts();
        wire::Msg {
            msgid: msg.msgid,
            from: Some(msg.from.into()),
            to: Some(msg.to.into()),
            msgtype,
            content_type,
            content,
            senddate_ms: msg.senddate_ms,
            client_msg_id: msg.client_msg_id,
            from_device: msg.from_device,
            log_id: msg.log_id,
            kind: msg.kind as i32,
            prev_msgid: msg.prev_msgid,
            delivered: msg.delivered,
        }
    }
}

/// The server's answer to a C2C send: the message is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReceipt {
    /// The server msgid (0 for ephemeral content: typing).
    pub msgid: u64,
    /// Server time (unix ms) the message was first stored.
    pub senddate_ms: u64,
    /// `true` when this client_msg_id had already been stored before the attempt that was
    /// answered: an earlier call, or an earlier attempt of this call whose answer was lost.
    pub duplicate: bool,
    /// The client message id the send used (generated by [`crate::Client::c2c`]).
    pub client_msg_id: String,
}

/// One offline push token of this device, as the server holds it after a PUSH_TOKEN request
/// ([`crate::Client::register_push_token`], [`crate::Client::remove_push_token`],
/// [`crate::Client::push_tokens`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PushTokenInfo {
    /// The provider: "apns", "fcm" or the name of a vendor channel the server configures.
    pub provider: String,
    /// The provider's device token.
    pub token: String,
}

impl From<longlink_proto::wire::PushTokenInfo> for PushTokenInfo {
    fn from(info: longlink_proto::wire::PushTokenInfo) -> Self {
        Self {
            provider: info.provider,
            token: info.token,
        }
    }
}

/// What [`crate::Client::ack_notification`] did with a notification receipt.
///
/// Non-exhaustive: keep a wildcard arm when matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotificationAck {
    /// The server has the receipt (with any receipts that were pending): `matched` of the ids
    /// sent were this device's notifications not acknowledged before.
    Sent {
        /// How many of the ids sent the server counted.
        matched: u32,
    },
    /// The receipt waits in the client (not connected, or the attempt failed for a reason
    /// that may pass, or another call is sending it right now); the client sends it right
    /// after its next successful LOGIN or RESUME.
    Pending,
}

/// One page of an offline pull or a history query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PullPage {
    /// The messages, in the order the server returned them.
    pub messages: Vec<Message>,
    /// The cursor for the next page.
    pub next_cursor: u64,
    /// Another page follows.
    pub more: bool,
}

/// Something the server sent without being asked, or a change of the connection, delivered
/// by [`crate::Incoming`].
///
/// Non-exhaustive: keep a wildcard arm when matching.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An incoming message: each msgid once, in msgid order per conversation (see the crate
    /// documentation for the exact guarantee). Acknowledged automatically with `auto_ack`
    /// when the application takes it from [`crate::Incoming`].
    Message(Message),
    /// The server closed this session. After REPLACED, LOGGED_OUT and BLOCKED,
    /// [`Event::Closed`] follows; after any other reason (RECONNECT from a draining gate,
    /// SERVER_SHUTDOWN, SLOW_CONSUMER) [`Event::Disconnected`] follows and the client
    /// reconnects — where and after how long the KICK says — (unless
    /// [`crate::ClientConfig::reconnect`] is `None`).
    Kicked {
        /// Why.
        reason: KickReason,
        /// The server's explanation.
        message: String,
    },
    /// An ERROR the server sent that answers no request this client is waiting for (an
    /// ERROR push, or an error about a MSG_ACK or a request that already timed out).
    Error {
        /// The status code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The connection dropped and the client is reconnecting (with jittered exponential
    /// backoff). Requests wait for the new connection, each within its own deadline.
    /// [`Event::Reconnected`] or [`Event::Closed`] follows.
    Disconnected {
        /// Why: "connection closed by server", "i/o error: …", "keepalive timeout",
        /// "kicked (SERVER_SHUTDOWN): …", "catch-up failed: …".
        reason: String,
    },
    /// The client is connected again: it resumed its held session (RESUME, seed 004 "fast
    /// reconnect": no re-authentication) or logged in again (same token unless
    /// [`crate::Client::set_token`] changed it, same device). The messages missed meanwhile
    /// follow as [`Event::Message`]s, each msgid once, in order.
    Reconnected {
        /// The new connection's session id.
        session_id: u64,
        /// `true`: the session was resumed; `false`: a fresh LOGIN (the hold had expired, the
        /// session was replaced, or resume is off).
        resumed: bool,
    },
    /// The client is done for good; the last event, after which the stream ends.
    Closed {
        /// Why: "closed by client", "logged out", "client dropped", "kicked (REPLACED): …",
        /// "login refused: …", "protocol error: …", or, without reconnect, why the
        /// connection dropped ("keepalive timeout", "connection closed by server",
        /// "i/o error: …").
        reason: String,
    },
    /// Messages this user sent were delivered to (acknowledged by) a device of the receiver,
    /// or the receiver read the conversation up to a msgid (RECEIPT push; online only — the
    /// same facts are in [`Message::delivered`] and [`Conversation::peer_read_upto`]).
    Receipt(Receipt),
}

/// A delivery or read receipt: see [`Event::Receipt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// `Delivered` or `Read`.
    pub kind: ReceiptKind,
    /// The receiver (the peer of the conversation).
    pub by: UserRef,
    /// The receiver's device that acknowledged / marked read.
    pub by_device: String,
    /// Delivered: the messages now delivered, ascending.
    pub msgids: Vec<u64>,
    /// Read: every message of the conversation up to this msgid is read.
    pub read_upto: u64,
}

impl From<wire::Receipt> for Receipt {
    fn from(receipt: wire::Receipt) -> Self {
        Receipt {
            kind: ReceiptKind::try_from(receipt.kind).unwrap_or(ReceiptKind::Unspecified),
            by: receipt.by.map(UserRef::from).unwrap_or_default(),
            by_device: receipt.by_device,
            msgids: receipt.msgids,
            read_upto: receipt.read_upto,
        }
    }
}

/// One entry of [`crate::Client::conversations`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// The other user.
    pub with: UserRef,
    /// The newest message (with [`Message::delivered`]); `None` only from a non-conforming server.
    pub last: Option<Message>,
    /// Messages from `with` after `read_upto` (counted up to 1000).
    pub unread: u32,
    /// This user's read mark (shared by all its devices), 0 = none.
    pub read_upto: u64,
    /// The peer's read mark: this user's messages up to it were read.
    pub peer_read_upto: u64,
}

impl From<wire::Conversation> for Conversation {
    fn from(c: wire::Conversation) -> Self {
        Conversation {
            with: c.with.map(UserRef::from).unwrap_or_default(),
            last: c.last.map(Message::from),
            unread: c.unread,
            read_upto: c.read_upto,
            peer_read_upto: c.peer_read_upto,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ref_text_form() {
        let user: UserRef = "129:alice".parse().expect("parses");
        assert_eq!(user, UserRef::new(129, "alice"));
        assert_eq!(user.to_string(), "129:alice");
        let user: UserRef = "7:a:b".parse().expect("parses");
        assert_eq!(user.uid, "a:b");
        for bad in [
            "",
            "alice",
            "x:alice",
            "129:",
            ":alice",
            "-1:a",
            "4294967296:a",
        ] {
            assert!(bad.parse::<UserRef>().is_err(), "{bad:?} should not parse");
        }
        let wire_user: wire::UserRef = user.clone().into();
        assert_eq!(UserRef::from(wire_user), user);
    }

    #[test]
    fn content_parts_are_lossless() {
        let cases = [
            (ContentType::Text as i32, 0, Bytes::from_static(b"hi")),
            (ContentType::Text as i32, 3, Bytes::from_static(b"hi")),
            (ContentType::Text as i32, 0, Bytes::from_static(b"\xff\xfe")),
            (
                ContentType::Rich as i32,
                0,
                Bytes::from_static(b"<shake />"),
            ),
            (ContentType::Typing as i32, 0, Bytes::new()),
            (ContentType::Typing as i32, 0, Bytes::from_static(b"x")),
            (
                ContentType::Business as i32,
                42,
                Bytes::from_static(b"\x00\x01"),
            ),
            (ContentType::Unspecified as i32, 0, Bytes::from_static(b"?")),
            (99, 5, Bytes::from_static(b"future")),
            (-3, 0, Bytes::new()),
        ];
        for parts in cases {
            assert_eq!(Content::from(parts.clone()).into_parts(), parts);
        }
        assert_eq!(
            Content::from_parts(1, 0, Bytes::from_static(b"hi")),
            Content::text("hi")
        );
        assert_eq!(Content::from_parts(3, 0, Bytes::new()), Content::Typing);
        assert!(matches!(
            Content::from_parts(99, 0, Bytes::new()),
            Content::Unknown {
                content_type: 99,
                ..
            }
        ));
        for content in [
            Content::text("hello"),
            Content::Rich("<b>".into()),
            Content::Typing,
            Content::Business {
                msgtype: 9,
                bytes: Bytes::from_static(b"\x01"),
            },
        ] {
            assert_eq!(Content::from(content.clone().into_parts()), content);
        }
    }

    #[test]
    fn message_from_wire_tolerates_missing_and_unknown_fields() {
        let msg = Message::from(wire::Msg {
            msgid: 5,
            kind: 77,
            content_type: 1,
            content: Bytes::from_static(b"yo"),
            ..Default::default()
        });
        assert_eq!(msg.from, UserRef::default());
        assert_eq!(msg.kind, MsgKind::Unspecified);
        assert_eq!(msg.content, Content::text("yo"));
        let back = wire::Msg::from(msg.clone());
        assert_eq!(Message::from(back), msg);
    }
}
