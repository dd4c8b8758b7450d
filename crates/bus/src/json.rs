//! [`ConsumedMessage`]: the JSON form of a leased c2s message, the same for the HTTP consume
//! API (long-poll and SSE), the dead-letter list and webhook calls.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::Leased;

/// A c2s message as business servers receive it in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumedMessage {
    /// Delivery id within the topic: ack it with this.
    pub id: u64,
    /// 1 for the first delivery, more for redeliveries.
    pub attempt: u32,
    /// The topic.
    pub topic: String,
    /// Sender's appcode.
    pub appcode: u32,
    /// Sender's uid.
    pub uid: String,
    /// Sender's device.
    pub device: String,
    /// Business message type.
    pub msgtype: u32,
    /// The sender's id for the message, for dedup (may be empty).
    pub client_msg_id: String,
    /// Trace id as a decimal string (`longlink trace`, `GET /v1/trace/{log_id}`).
    pub log_id: String,
    /// Unix ms when longlink accepted it.
    pub received_ms: u64,
    /// The payload as text when it is valid UTF-8, else null.
    pub body: Option<String>,
    /// The payload, base64 (standard alphabet, padded).
    pub body_base64: String,
}

impl From<&Leased> for ConsumedMessage {
    fn from(leased: &Leased) -> Self {
        let m = &leased.message;
        Self {
            id: leased.id,
            attempt: leased.attempt,
            topic: m.topic.clone(),
            appcode: m.appcode,
            uid: m.uid.clone(),
            device: m.device_id.clone(),
            msgtype: m.msgtype,
            client_msg_id: m.client_msg_id.clone(),
            log_id: m.log_id.to_string(),
            received_ms: m.received_ms,
            body: std::str::from_utf8(&m.payload).ok().map(str::to_owned),
            body_base64: base64::engine::general_purpose::STANDARD.encode(&m.payload),
        }
    }
}
