//! [`ReadPool`]: read-only connections for async callers.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::Semaphore;

/// Why a [`ReadPool::read`] returned no result.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The pool was closed ([`ReadPool::close`]).
    #[error("read pool closed")]
    Closed,
    /// The blocking task running the query failed (the query panicked).
    #[error("read task failed: {0}")]
    Task(tokio::task::JoinError),
    /// No connection became free and answered within the wait.
    #[error("read timed out")]
    TimedOut,
    /// A new connection could not be opened.
    #[error("sqlite open reader: {0}")]
    Open(rusqlite::Error),
    /// The query failed.
    #[error("sqlite read: {0}")]
    Query(rusqlite::Error),
}

/// Opens one connection of a [`ReadPool`]: [`crate::open_read_only`] plus the backend's own
/// settings (statement cache size, …).
pub type OpenReader = fn(&Path) -> rusqlite::Result<Connection>;

/// Read-only connections to one database, at most `size` in use at once, each query run in
/// tokio's blocking pool. A connection is used by one query at a time and goes back to the
/// pool after it; one lost to a panicking query is replaced by a new one when next needed.
#[derive(Debug)]
pub struct ReadPool {
    path: PathBuf,
    open: OpenReader,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    /// Opens `size` connections to the database at `path` with `open`.
    ///
    /// # Errors
    /// The first error of `open`.
    pub fn open(path: PathBuf, size: usize, open: OpenReader) -> rusqlite::Result<Self> {
        let idle = (0..size)
            .map(|_| open(&path))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Self {
            path,
            open,
            permits: Arc::new(Semaphore::new(size)),
            idle: Mutex::new(idle),
        })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses further reads ([`ReadError::Closed`]) and closes the idle connections; those
    /// in use are closed when their query ends.
    pub fn close(&self) {
        self.permits.close();
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Runs `query` on a pooled connection in the blocking pool. `wait` bounds the wait for
    /// a free connection plus the query; a query still running then goes on in the
    /// background, holding its connection.
    ///
    /// # Errors
    /// [`ReadError`]: closed pool, timeout, a panicking query, a failed query.
    pub async fn read<T, F>(self: Arc<Self>, wait: Duration, query: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let run = async move {
            let permit = Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(|_| ReadError::Closed)?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                self.run(query)
            })
            .await
            .map_err(ReadError::Task)?
        };
        tokio::time::timeout(wait, run)
            .await
            .map_err(|_| ReadError::TimedOut)?
    }

    /// Runs `query` on an idle connection (blocking). The caller holds a permit, so one is
    /// normally idle; if a query panicked earlier and lost its connection, a new one is
    /// opened. The connection goes back to the pool unless the pool was closed meanwhile.
    fn run<T>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, ReadError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => (self.open)(&self.path).map_err(ReadError::Open)?,
        };
        let result = query(&conn);
        if !self.permits.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
        }
        result.map_err(ReadError::Query)
    }
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::open_read_only;
    use crate::test_support::new_database;

    const WAIT: Duration = Duration::from_secs(10);

    /// A database with table `t` holding 1, 2, 3, and its writer.
    fn database(dir: &TempDir) -> (PathBuf, Connection) {
        new_database(
            dir,
            "read.sqlite3",
            "CREATE TABLE t (v INTEGER NOT NULL) STRICT; INSERT INTO t VALUES (1), (2), (3);",
        )
    }

    fn idle(pool: &ReadPool) -> usize {
        pool.idle.lock().expect("idle").len()
    }

    fn sum(conn: &Connection) -> rusqlite::Result<i64> {
        conn.query_row("SELECT SUM(v) FROM t", [], |row| row.get(0))
    }

    #[tokio::test]
    async fn reads_see_commits_and_give_connections_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, writer) = database(&dir);
        let pool = Arc::new(ReadPool::open(path.clone(), 2, open_read_only).expect("pool"));
        assert_eq!(pool.path(), path);
        assert_eq!(idle(&pool), 2);
        assert_eq!(Arc::clone(&pool).read(WAIT, sum).await.expect("read"), 6);
        writer
            .execute("INSERT INTO t VALUES (4)", [])
            .expect("insert");
        assert_eq!(Arc::clone(&pool).read(WAIT, sum).await.expect("read"), 10);
        assert_eq!(idle(&pool), 2);
        let err = Arc::clone(&pool)
            .read(WAIT, |conn| conn.execute("DELETE FROM t", []))
            .await
            .expect_err("read-only");
        assert!(matches!(err, ReadError::Query(_)), "got {err:?}");
        assert!(err.to_string().starts_with("sqlite read: "), "{err}");
        assert_eq!(idle(&pool), 2, "a failed query keeps its connection");
    }

    #[tokio::test]
    async fn a_panicking_query_loses_its_connection_and_the_next_read_opens_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _writer) = database(&dir);
        let pool = Arc::new(ReadPool::open(path, 1, open_read_only).expect("pool"));
        let err = Arc::clone(&pool)
            .read(WAIT, |_conn| -> rusqlite::Result<()> {
                panic!("query bug")
            })
            .await
            .expect_err("panicked");
        assert!(matches!(err, ReadError::Task(_)), "got {err:?}");
        assert_eq!(idle(&pool), 0);
        assert_eq!(Arc::clone(&pool).read(WAIT, sum).await.expect("read"), 6);
        assert_eq!(idle(&pool), 1);
    }

    #[tokio::test]
    async fn a_read_waits_at_most_its_wait_for_a_busy_pool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _writer) = database(&dir);
        let pool = Arc::new(ReadPool::open(path, 1, open_read_only).expect("pool"));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let slow = tokio::spawn(Arc::clone(&pool).read(WAIT, move |conn| {
            let _ = started_tx.send(());
            let _ = release_rx.recv();
            sum(conn)
        }));
        started_rx.await.expect("slow read started");
        let err = Arc::clone(&pool)
            .read(Duration::from_millis(50), sum)
            .await
            .expect_err("pool busy");
        assert!(matches!(err, ReadError::TimedOut), "got {err:?}");
        release_tx.send(()).expect("release");
        assert_eq!(slow.await.expect("task").expect("slow read"), 6);
        assert_eq!(Arc::clone(&pool).read(WAIT, sum).await.expect("read"), 6);
    }

    #[tokio::test]
    async fn a_closed_pool_refuses_reads_and_drops_its_connections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _writer) = database(&dir);
        let pool = Arc::new(ReadPool::open(path, 2, open_read_only).expect("pool"));
        pool.close();
        assert_eq!(idle(&pool), 0);
        let err = Arc::clone(&pool).read(WAIT, sum).await.expect_err("closed");
        assert!(matches!(err, ReadError::Closed), "got {err:?}");
    }

    #[test]
    fn opening_fails_when_a_connection_cannot_be_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.sqlite3");
        assert!(ReadPool::open(missing, 1, open_read_only).is_err());
    }

    #[tokio::test]
    async fn the_backend_opener_configures_every_connection() {
        fn small_cache(path: &Path) -> rusqlite::Result<Connection> {
            let conn = open_read_only(path)?;
            conn.pragma_update(None, "cache_size", 7)?;
            Ok(conn)
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _writer) = database(&dir);
        let pool = Arc::new(ReadPool::open(path, 1, small_cache).expect("pool"));
        let size: i64 = Arc::clone(&pool)
            .read(WAIT, |conn| {
                conn.pragma_query_value(None, "cache_size", |row| row.get(0))
            })
            .await
            .expect("read");
        assert_eq!(size, 7);
    }
}
