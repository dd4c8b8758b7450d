//! The PostgreSQL backend of longlink's message store, for clusters: [`PgStore`] implements
//! [`longlink_store::MessageStore`] with the embedded store's semantics (the same behaviour
//! suite runs against both), and [`PgRevocations`] implements
//! [`longlink_store::TokenRevocations`] so every process sees every revocation. Many logic
//! processes share one database: each writes with its own node id ([`PgOptions::node_id`]), so
//! msgids stay unique without a central counter (`msgid.rs`), and a committed transaction
//! (`synchronous_commit` on) is what makes an append durable before it returns.
//!
//! Calls go through a bounded deadpool of tokio-postgres connections; every wait has a
//! deadline, so a dead or restarting server gives [`StoreError::Unavailable`] quickly and the
//! pool reconnects by itself when the server is back. The schema lives in versioned SQL files
//! under `migrations/`, applied by [`migrate`] (refinery, under an advisory lock so concurrent
//! processes are safe) — by `longlink migrate`, or at open.
//!
//! Module map: `store.rs` ([`PgStore`]), `msgid.rs` (the Snowflake-style generator),
//! `migrate.rs` ([`migrate`]), `revocations.rs` ([`PgRevocations`]), `pool.rs` (pool, timeouts,
//! connection hygiene).

mod migrate;
mod msgid;
mod pool;
mod revocations;
mod store;

use std::time::Duration;

pub use migrate::migrate;
pub use msgid::MAX_NODES;
pub use revocations::PgRevocations;
pub use store::PgStore;

use longlink_store::StoreError;

/// Settings of a [`PgStore`] (and of the pool behind a [`PgRevocations`]).
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// This process's node id, below [`MAX_NODES`] (1024): the middle bits of every msgid it
    /// assigns. Two processes writing at the same time must have different ids (the server
    /// leases one per process).
    pub node_id: u16,
    /// Most connections the pool opens; default 16.
    pub max_connections: usize,
    /// Deadline of one store call (waiting for a connection included); default 5 s. Past it
    /// the call is `Unavailable` (a write then may or may not have committed: retry with the
    /// same client message id).
    pub call_timeout: Duration,
    /// Deadline to open a new connection; default 2 s.
    pub connect_timeout: Duration,
    /// Run [`migrate`] at open; default true. Safe when many processes start at once.
    pub migrate_on_open: bool,
    /// Capacity of the queue of push records ([`longlink_store::MessageStore::record_pushed`]);
    /// default 4096. A record that finds it full is dropped (they are informational).
    pub push_queue: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            node_id: 0,
            max_connections: 16,
            call_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            migrate_on_open: true,
            push_queue: 4096,
        }
    }
}

/// `Unavailable` with what failed and the error with its causes (tokio-postgres keeps the
/// server's message in the source: "db error" alone says nothing).
fn unavailable(what: &str, err: impl std::error::Error) -> StoreError {
    let mut text = format!("postgres {what}: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    StoreError::Unavailable(text)
}
