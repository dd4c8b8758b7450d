//! The connection pool and the hygiene around it.
//!
//! - Every wait is bounded: connecting (`connect_timeout`), waiting for a free connection and
//!   for a recycle check (deadpool), each whole call (`call_timeout`, in `store.rs`), and on the
//!   server side a statement, a lock wait and an idle transaction (session settings below), so
//!   a backend whose client gave up cannot keep holding locks.
//! - A connection that leaves a call in an unknown state (a transaction opened and not
//!   finished, because the call failed or its future was dropped at the deadline) is never
//!   returned to the pool: [`Conn`] detaches it and dropping it closes the socket, which makes
//!   the server roll back.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use longlink_store::StoreError;
use tokio_postgres::NoTls;

use crate::{PgOptions, unavailable};

/// Builds the pool for `url` (no connection is opened yet).
pub(crate) fn build(url: &str, opts: &PgOptions) -> Result<Pool, StoreError> {
    let config = client_config(url, opts)?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // A closed connection (server restarted) is dropped when taken from the pool;
            // one that breaks mid-call fails that call and is detached by `Conn`.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(opts.max_connections.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(opts.call_timeout))
        .create_timeout(Some(opts.connect_timeout))
        .recycle_timeout(Some(opts.connect_timeout))
        .build()
        .map_err(|e| StoreError::InvalidArgument(format!("postgres pool: {e}")))
}

/// The connection settings: the URL's, plus timeouts on both sides.
pub(crate) fn client_config(
    url: &str,
    opts: &PgOptions,
) -> Result<tokio_postgres::Config, StoreError> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| StoreError::InvalidArgument(format!("postgres url: {e}")))?;
    let call_ms = opts.call_timeout.as_millis().max(1);
    // Server side: nothing a call started outlives the call's deadline by much, and a backend
    // notices a client that went away even while it waits for a lock.
    let options = format!(
        "-c statement_timeout={call_ms} -c lock_timeout={call_ms} \
         -c idle_in_transaction_session_timeout={} -c client_connection_check_interval=1000",
        call_ms * 2
    );
    config
        .options(&options)
        .application_name("longlink")
        .connect_timeout(opts.connect_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .tcp_user_timeout(opts.call_timeout * 2);
    Ok(config)
}

/// A pooled connection that goes back to the pool only when it is known to be idle.
pub(crate) struct Conn {
    client: Option<Object>,
    /// Set while a transaction may be open.
    dirty: bool,
}

impl Conn {
    /// Takes a connection from the pool (bounded by the pool's timeouts).
    pub(crate) async fn get(pool: &Pool) -> Result<Self, StoreError> {
        let client = pool.get().await.map_err(|e| unavailable("connection", e))?;
        Ok(Self {
            client: Some(client),
            dirty: false,
        })
    }

    /// The client, marked dirty until [`Conn::clean`]: use it for transactions.
    pub(crate) fn begin(&mut self) -> &Object {
        self.dirty = true;
        self.client()
    }

    /// The transaction ended (COMMIT or ROLLBACK answered): back to the pool when dropped.
    pub(crate) fn clean(&mut self) {
        self.dirty = false;
    }

    pub(crate) fn client(&self) -> &Object {
        // Only `Drop` takes it.
        self.client.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.dirty
            && let Some(client) = self.client.take()
        {
            // Detached from the pool; dropping the client closes the connection and the
            // server rolls back whatever was open.
            drop(Object::take(client));
        }
    }
}

/// How long to wait before connecting again after a failure (listener loops).
pub(crate) const RECONNECT_DELAY: Duration = Duration::from_millis(200);
