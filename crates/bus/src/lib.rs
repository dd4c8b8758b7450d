//! The bus: carries c2s messages from logic to business app-servers, by topic
//! `c2s.<appcode>.<msgtype>` (seed 003: appcode + msgtype → topic).
//!
//! [`Bus`] is the trait logic publishes to; [`LocalBus`] is the single-node backend, an
//! in-process broadcast with bounded subscriber queues. A real consumer path (consume API,
//! webhook, NATS JetStream) comes with its own backend behind the same trait.
//!
//! Modules: [`local`] (LocalBus).

use async_trait::async_trait;
use bytes::Bytes;

pub mod local;

pub use local::{BusSubscription, Delivery, LocalBus};

/// A c2s message on its way to a business server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    /// `c2s.<appcode>.<msgtype>`.
    pub topic: String,
    /// Sender's appcode.
    pub appcode: u32,
    /// Sender's uid.
    pub uid: String,
    /// Sender's device.
    pub device_id: String,
    /// Business message type.
    pub msgtype: u32,
    /// The sender's id for this message, for dedup downstream.
    pub client_msg_id: String,
    /// Opaque business payload.
    pub payload: Bytes,
    /// Trace id of the request.
    pub log_id: u64,
    /// Unix milliseconds when logic accepted it.
    pub received_ms: u64,
}

/// The topic of a c2s message of `appcode` and `msgtype`.
pub fn c2s_topic(appcode: u32, msgtype: u32) -> String {
    format!("c2s.{appcode}.{msgtype}")
}

/// Bus failures.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus did not accept the message.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
}

/// Where c2s messages go.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes `message`; returns once the bus holds it.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the bus did not take it (the client retries).
    async fn publish(&self, message: BusMessage) -> Result<(), BusError>;
}
