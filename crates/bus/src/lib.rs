//! The bus: carries c2s messages from logic to business app-servers, by topic
//! `c2s.<appcode>.<msgtype>` (seed 003: appcode + msgtype → topic).
//!
//! [`Bus`] is the trait logic publishes to; [`TopicQueue`] is how business servers consume a
//! topic: leased deliveries with explicit ack, redelivery after the lease expires
//! (at-least-once), and a dead-letter list after too many attempts. [`Routes`] maps
//! (appcode, msgtype) to a topic (seed 003's routing table).
//!
//! Modules:
//! - [`sqlite`]: [`SqliteQueue`], the single-node durable bus (one SQLite file, group commit,
//!   leases in memory); it is both the [`Bus`] and the [`TopicQueue`].
//! - [`webhook`]: [`spawn_webhook`], a consumer of a [`TopicQueue`] that POSTs each message to
//!   a business server's URL, acking on 2xx and retrying with backoff otherwise.
//! - [`json`]: [`ConsumedMessage`], the JSON form of a message for consumers and webhooks.
//! - [`routes`]: [`Routes`], the (appcode, msgtype) → topic table.
//! - `testsuite` (cargo feature `testsuite`): `bus_testsuite!`, the behaviour suite every
//!   [`Bus`] + [`TopicQueue`] backend runs (this crate runs it for [`SqliteQueue`]).

use async_trait::async_trait;
use bytes::Bytes;

pub mod json;
pub mod routes;
pub mod sqlite;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;
pub mod webhook;

/// The shared suite over [`SqliteQueue`] in a temp dir.
#[cfg(test)]
mod suite_sqlite {
    use std::sync::Arc;

    use crate::testsuite::SuiteOptions;
    use crate::{QueueOptions, SqliteQueue};

    async fn new_queue(options: SuiteOptions) -> (Arc<SqliteQueue>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let queue = SqliteQueue::open(
            &dir.path().join("bus.sqlite"),
            QueueOptions {
                max_attempts: options.max_attempts,
                max_backlog: options.max_backlog,
                ..QueueOptions::default()
            },
        )
        .expect("open queue");
        (Arc::new(queue), dir)
    }

    crate::bus_testsuite!(new_queue);
}

pub use json::ConsumedMessage;
pub use routes::{Routes, Unrouted};
pub use sqlite::{QueueOptions, SqliteQueue};
pub use webhook::{WebhookConfig, spawn_webhook};

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

/// The per-type topic of a c2s message of `appcode` and `msgtype` (the default route).
pub fn c2s_topic(appcode: u32, msgtype: u32) -> String {
    format!("c2s.{appcode}.{msgtype}")
}

/// Refuses a topic name that is not 1..=[`routes::MAX_TOPIC_BYTES`] bytes of `[A-Za-z0-9._-]`
/// (the argument rule every backend applies before anything else).
///
/// # Errors
/// [`BusError::InvalidArgument`].
pub fn check_topic(topic: &str) -> Result<(), BusError> {
    if routes::valid_topic(topic) {
        Ok(())
    } else {
        Err(BusError::InvalidArgument(format!(
            "topic must be 1..={} bytes of [A-Za-z0-9._-]",
            routes::MAX_TOPIC_BYTES
        )))
    }
}

/// Refuses more than [`sqlite::MAX_IDS`] ids in one ack, nack or replay.
///
/// # Errors
/// [`BusError::InvalidArgument`].
pub fn check_ids(ids: &[u64]) -> Result<(), BusError> {
    if ids.len() > sqlite::MAX_IDS {
        Err(BusError::InvalidArgument(format!(
            "{} ids in one call, more than {}",
            ids.len(),
            sqlite::MAX_IDS
        )))
    } else {
        Ok(())
    }
}

/// The argument rules of [`TopicQueue::fetch`]: a valid topic, `max` ≥ 1, a lease > 0.
///
/// # Errors
/// [`BusError::InvalidArgument`].
pub fn check_fetch(topic: &str, max: usize, lease: std::time::Duration) -> Result<(), BusError> {
    check_topic(topic)?;
    if max == 0 {
        return Err(BusError::InvalidArgument(
            "max must be at least 1".to_owned(),
        ));
    }
    if lease.is_zero() {
        return Err(BusError::InvalidArgument(
            "lease must be longer than 0".to_owned(),
        ));
    }
    Ok(())
}

/// Bus failures.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The bus did not accept the message.
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// The topic holds its maximum backlog; the publisher retries later.
    #[error("topic {0} is full")]
    Full(String),
    /// A request argument is wrong (bad topic name, too many ids).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
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

/// A message handed to a consumer under a lease: it must be acked by `id` before the lease
/// ends, or it is delivered again (to this or another consumer of the topic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    /// Delivery id within the topic: unique and increasing in publish order.
    pub id: u64,
    /// 1 for the first delivery, 2 for the first redelivery, …
    pub attempt: u32,
    /// The message.
    pub message: BusMessage,
}

/// Counts of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicStats {
    /// The topic.
    pub topic: String,
    /// Waiting for a consumer.
    pub ready: u64,
    /// Leased, not acked yet.
    pub in_flight: u64,
    /// In the dead-letter list.
    pub dead: u64,
}

/// The consuming side of the bus: competing consumers of a topic, at-least-once.
///
/// A message stays until acked. `fetch` leases up to `max` messages for `lease`; a message
/// whose lease runs out is ready again with `attempt + 1`; a message that would start attempt
/// `max_attempts + 1` goes to the topic's dead-letter list instead, from where `replay` puts it
/// back (attempts start again at 1).
#[async_trait]
pub trait TopicQueue: Send + Sync + 'static {
    /// Leases up to `max` ready messages of `topic` in publish order, waiting up to `wait` for
    /// the first one. Returns an empty list when none came in time.
    ///
    /// # Errors
    /// [`BusError`].
    async fn fetch(
        &self,
        topic: &str,
        max: usize,
        wait: std::time::Duration,
        lease: std::time::Duration,
    ) -> Result<Vec<Leased>, BusError>;

    /// Acknowledges leased messages: they are removed for good. Returns how many of `ids`
    /// were leased (unknown or already acked ids are ignored: acks are idempotent).
    ///
    /// # Errors
    /// [`BusError`].
    async fn ack(&self, topic: &str, ids: &[u64]) -> Result<u64, BusError>;

    /// Gives leased messages back unprocessed: each is ready again after `retry_after` (its
    /// attempt counted), or goes to the dead-letter list if it used its last attempt.
    ///
    /// # Errors
    /// [`BusError`].
    async fn nack(
        &self,
        topic: &str,
        ids: &[u64],
        retry_after: std::time::Duration,
    ) -> Result<u64, BusError>;

    /// Up to `limit` dead-lettered messages of `topic` with id > `after`, in id order.
    ///
    /// # Errors
    /// [`BusError`].
    async fn dead_letters(
        &self,
        topic: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Leased>, BusError>;

    /// Puts dead-lettered messages back on the topic (`ids` empty = all of them); returns
    /// how many.
    ///
    /// # Errors
    /// [`BusError`].
    async fn replay(&self, topic: &str, ids: &[u64]) -> Result<u64, BusError>;

    /// Every topic that holds or held messages since start, with its counts.
    ///
    /// # Errors
    /// [`BusError`].
    async fn topics(&self) -> Result<Vec<TopicStats>, BusError>;
}
