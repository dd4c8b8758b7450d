//! [`PgRevocations`]: token revocations shared by every process of a cluster.
//!
//! Like the embedded backend, each process keeps the whole set in memory
//! ([`TokenRevocations::revoked_before`] is a map lookup on every LOGIN) and writes through
//! before answering. What is new is that another process may revoke: the revoking statement
//! also sends `NOTIFY longlink_revocations` (delivered to listeners when its transaction
//! commits), and each process keeps one connection that LISTENs. After every (re)connect the
//! listener first LISTENs, then reloads the whole table, so a revocation made while it was
//! disconnected is found by the reload and one made after the LISTEN by the notification.
//! An entry only moves forward, so applying one twice or out of order changes nothing.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use deadpool_postgres::Pool;
use futures::StreamExt;
use longlink_store::{StoreError, TokenRevocations};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

use crate::pool::{Conn, RECONNECT_DELAY};
use crate::{PgOptions, unavailable};

type Entries = Arc<RwLock<HashMap<(u32, String), u64>>>;

/// Subscribes to the NOTIFY channel the revoking statement below sends on.
const LISTEN_SQL: &str = "LISTEN longlink_revocations";

/// Upserts (only forward) and notifies every listener: `appcode:before_ms:uid`.
const REVOKE_SQL: &str = "WITH up AS (INSERT INTO token_revocations (appcode, uid, before_ms) \
       VALUES ($1, $2, $3) ON CONFLICT (appcode, uid) \
       DO UPDATE SET before_ms = GREATEST(token_revocations.before_ms, excluded.before_ms) \
       RETURNING before_ms) \
     SELECT before_ms, pg_notify('longlink_revocations', \
       $1::text || ':' || before_ms::text || ':' || $2) FROM up";

/// Revocations in PostgreSQL, cached in memory and kept current by LISTEN/NOTIFY.
pub struct PgRevocations {
    entries: Entries,
    pool: Pool,
    call_timeout: std::time::Duration,
    listener: JoinHandle<()>,
}

impl std::fmt::Debug for PgRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users = self.entries.read().map_or(0, |e| e.len());
        f.debug_struct("PgRevocations")
            .field("users", &users)
            .finish_non_exhaustive()
    }
}

impl PgRevocations {
    /// Connects (migrating first when [`PgOptions::migrate_on_open`]), loads every revocation
    /// and starts listening for other processes' revocations. Uses `max_connections`,
    /// `call_timeout` and `connect_timeout` of `opts` (revocations are rare: a small pool
    /// does). Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`StoreError::InvalidArgument`] for a bad URL; [`StoreError::Unavailable`] when the
    /// migration fails or the first load does not finish within `call_timeout`.
    pub async fn open(url: &str, opts: PgOptions) -> Result<Self, StoreError> {
        let pool = crate::pool::build(url, &opts)?;
        if opts.migrate_on_open {
            crate::migrate(url).await?;
        }
        let config = crate::pool::client_config(url, &opts)?;
        let entries: Entries = Arc::default();
        let (loaded, first_load) = oneshot::channel();
        let listener = tokio::spawn(listen(config, Arc::clone(&entries), loaded));
        let first = tokio::time::timeout(opts.call_timeout, first_load).await;
        if !matches!(first, Ok(Ok(()))) {
            listener.abort();
            return Err(StoreError::Unavailable(format!(
                "postgres revocations: not loaded within {:?}",
                opts.call_timeout
            )));
        }
        Ok(Self {
            entries,
            pool,
            call_timeout: opts.call_timeout,
            listener,
        })
    }

    async fn write(&self, appcode: u32, uid: &str, before_ms: u64) -> Result<u64, StoreError> {
        let conn = Conn::get(&self.pool).await?;
        let client = conn.client();
        let statement = client
            .prepare_cached(REVOKE_SQL)
            .await
            .map_err(|e| unavailable("revoke", e))?;
        let appcode = i64::from(appcode);
        let before = i64::try_from(before_ms).unwrap_or(i64::MAX);
        let row = client
            .query_one(&statement, &[&appcode, &uid, &before])
            .await
            .map_err(|e| unavailable("revoke", e))?;
        let stored: i64 = row.try_get(0).map_err(|e| unavailable("revoke", e))?;
        Ok(u64::try_from(stored).unwrap_or(0))
    }
}

impl Drop for PgRevocations {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

#[async_trait::async_trait]
impl TokenRevocations for PgRevocations {
    fn revoked_before(&self, appcode: u32, uid: &str) -> Option<u64> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        if entries.is_empty() {
            return None;
        }
        entries.get(&(appcode, uid.to_owned())).copied()
    }

    async fn revoke(&self, appcode: u32, uid: &str, before_ms: u64) -> Result<u64, StoreError> {
        if uid.is_empty() || uid.len() > longlink_store::MAX_ID_BYTES {
            return Err(StoreError::InvalidArgument(format!(
                "uid must be 1..={} bytes",
                longlink_store::MAX_ID_BYTES
            )));
        }
        let stored = tokio::time::timeout(self.call_timeout, self.write(appcode, uid, before_ms))
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "postgres revoke: no answer within {:?}",
                    self.call_timeout
                ))
            })??;
        // Only after the commit: a revocation never takes effect without being durable.
        Ok(remember(&self.entries, appcode, uid, stored))
    }
}

fn remember(entries: &Entries, appcode: u32, uid: &str, before_ms: u64) -> u64 {
    let mut entries = entries.write().unwrap_or_else(|p| p.into_inner());
    let slot = entries.entry((appcode, uid.to_owned())).or_insert(0);
    *slot = (*slot).max(before_ms);
    *slot
}

/// The listener: connect, LISTEN, reload, apply notifications until the connection ends;
/// again after a short delay, for as long as the [`PgRevocations`] lives (it aborts this).
async fn listen(config: tokio_postgres::Config, entries: Entries, loaded: oneshot::Sender<()>) {
    let mut loaded = Some(loaded);
    loop {
        match listen_once(&config, &entries, &mut loaded).await {
            Ok(()) => tracing::info!("revocation listener disconnected; reconnecting"),
            Err(err) => tracing::warn!(error = %err, "revocation listener failed; retrying"),
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    entries: &Entries,
    loaded: &mut Option<oneshot::Sender<()>>,
) -> Result<(), StoreError> {
    let (client, mut connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| unavailable("revocation listener connect", e))?;
    // The connection's messages (notifications among them) arrive through its own poll; this
    // task drives it and forwards the payloads.
    let (payloads, mut received) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(note) = message
                && payloads.send(note.payload().to_owned()).is_err()
            {
                break;
            }
        }
    });
    let result = async {
        client
            .batch_execute(LISTEN_SQL)
            .await
            .map_err(|e| unavailable("LISTEN", e))?;
        let rows = client
            .query("SELECT appcode, uid, before_ms FROM token_revocations", &[])
            .await
            .map_err(|e| unavailable("load revocations", e))?;
        for row in &rows {
            let appcode: i64 = row.try_get(0).map_err(|e| unavailable("row", e))?;
            let uid: String = row.try_get(1).map_err(|e| unavailable("row", e))?;
            let before: i64 = row.try_get(2).map_err(|e| unavailable("row", e))?;
            if let (Ok(appcode), Ok(before)) = (u32::try_from(appcode), u64::try_from(before)) {
                remember(entries, appcode, &uid, before);
            }
        }
        if let Some(loaded) = loaded.take() {
            let _ = loaded.send(());
        }
        // Ends when the connection does (the driver drops its sender).
        while let Some(payload) = received.recv().await {
            apply(entries, &payload);
        }
        Ok(())
    }
    .await;
    drop(client);
    driver.abort();
    result
}

/// Applies a notification `appcode:before_ms:uid` (the uid may contain ':').
fn apply(entries: &Entries, payload: &str) {
    let mut parts = payload.splitn(3, ':');
    let parsed = (|| {
        let appcode = parts.next()?.parse::<u32>().ok()?;
        let before = parts.next()?.parse::<u64>().ok()?;
        Some((appcode, before, parts.next()?))
    })();
    match parsed {
        Some((appcode, before, uid)) => {
            remember(entries, appcode, uid, before);
        }
        None => tracing::warn!(payload, "malformed revocation notification ignored"),
    }
}
