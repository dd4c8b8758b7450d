//! Schema migrations: the versioned SQL files in `migrations/` (`V<n>__<name>.sql`), embedded
//! in the binary and applied in order by refinery, which records each applied version and its
//! checksum in `longlink_schema_history` (an edited, already applied file is an error, not a
//! silent drift).
//!
//! refinery takes no lock of its own, so two processes migrating at once (every logic process
//! of a cluster starting together, or `longlink migrate` next to a starting server) would both
//! try to apply version 1. [`migrate`] therefore holds a session-level advisory lock around the
//! run: the second process waits, then finds everything applied and does nothing.

use std::time::Duration;

use longlink_store::StoreError;

use crate::{PgOptions, unavailable};

// Expands to `mod migrations` with the files of `migrations/`, read at compile time.
refinery::embed_migrations!("migrations");

/// The advisory lock key that serialises migrations ("longlink" in ASCII).
const MIGRATION_LOCK: i64 = 0x6c6f_6e67_6c69_6e6b;
/// How long a migration waits for another process's migration to finish.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(120);
/// The table where refinery records applied versions.
const HISTORY_TABLE: &str = "longlink_schema_history";

/// Applies the store's pending migrations to the database at `url` (a PostgreSQL URL such as
/// `postgres://user@host:5432/db`); returns how many were applied. Idempotent, and safe to run
/// from several processes at once.
///
/// # Errors
/// [`StoreError::InvalidArgument`] for a bad URL; [`StoreError::Unavailable`] when the server
/// cannot be reached, another migration holds the lock past two minutes, the database records
/// a version this binary does not know or an applied file that changed since, or a migration
/// fails (each version is applied in its own transaction: a failed one leaves the earlier ones).
pub async fn migrate(url: &str) -> Result<usize, StoreError> {
    let opts = PgOptions::default();
    let mut config = crate::pool::client_config(url, &opts)?;
    // No statement timeout here: a migration of a large table may take long. Lock waits stay
    // bounded.
    config.options(format!(
        "-c lock_timeout={}",
        MIGRATION_LOCK_WAIT.as_millis()
    ));
    let (mut client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| unavailable("connect for migration", e))?;
    let driver = tokio::spawn(connection);
    let result = run_locked(&mut client).await;
    drop(client);
    let _ = driver.await;
    result
}

async fn run_locked(client: &mut tokio_postgres::Client) -> Result<usize, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| unavailable("migration lock", e))?;
    let mut runner = migrations::runner();
    runner.set_migration_table_name(HISTORY_TABLE);
    let report = runner.run_async(client).await;
    // Released with the session too; unlocking here lets a waiter go on at once.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let report = report.map_err(|e| unavailable("migration", e))?;
    let applied = report.applied_migrations().len();
    if applied > 0 {
        tracing::info!(applied, "postgres store migrated");
    }
    Ok(applied)
}
