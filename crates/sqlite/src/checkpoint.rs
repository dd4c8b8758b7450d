//! [`Checkpointer`]: WAL checkpoints on a thread of their own.

use std::path::Path;
use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tracing::{error, warn};

use crate::BUSY_TIMEOUT;

/// How often a [`Checkpointer`] copies committed WAL pages into the database file.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(1000);

/// A thread with its own connection that runs `PRAGMA wal_checkpoint(PASSIVE)` every
/// [`CHECKPOINT_EVERY`], for a database whose writer has `wal_autocheckpoint=0`
/// ([`crate::open_writer`]). PASSIVE never waits for the writer or readers, so commits are
/// never held up by a checkpoint; whatever a checkpoint cannot copy yet, the next one does.
/// A failed checkpoint is logged and tried again at the next tick.
///
/// [`Checkpointer::stop`] ends and joins the thread. Dropped without `stop`, the thread
/// ends by itself at its next tick, unjoined.
#[derive(Debug)]
pub struct Checkpointer {
    stop_tx: SyncSender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Opens a connection to the database at `path` and starts the checkpoint thread, named
    /// `thread_name` (e.g. `longlink-store-checkpoint`).
    ///
    /// # Errors
    /// Any SQLite error opening the connection; `InvalidParameterName` with a sentence if
    /// the thread cannot be started.
    pub fn spawn(path: &Path, thread_name: &str) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let (stop_tx, stop_rx) = sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stop_rx.recv_timeout(CHECKPOINT_EVERY) {
                    if let Err(err) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        warn!(error = %err, "wal checkpoint failed; retrying");
                    }
                }
            })
            .map_err(|e| {
                rusqlite::Error::InvalidParameterName(format!("checkpoint thread: {e}"))
            })?;
        Ok(Self { stop_tx, thread })
    }

    /// Stops the thread and joins it: blocks for at most one running PASSIVE checkpoint.
    pub fn stop(self) {
        let _ = self.stop_tx.try_send(());
        let name = self
            .thread
            .thread()
            .name()
            .unwrap_or("checkpoint")
            .to_owned();
        if self.thread.join().is_err() {
            error!(thread = %name, "checkpoint thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::test_support::{new_database, query_i64};

    #[test]
    fn commits_reach_the_database_file_and_stop_joins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, writer) = new_database(
            &dir,
            "ck.sqlite3",
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL) STRICT;",
        );
        let checkpointer = Checkpointer::spawn(&path, "test-checkpoint").expect("spawn");
        let before = std::fs::metadata(&path).expect("db file").len();
        for i in 0..200 {
            writer
                .execute("INSERT INTO t (v) VALUES (zeroblob(?1))", [1000 + i])
                .expect("insert");
        }
        // Autocheckpoint is off: only the checkpoint thread grows the database file.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&path).expect("db file").len() <= before {
            assert!(Instant::now() < deadline, "no checkpoint reached the file");
            std::thread::sleep(Duration::from_millis(20));
        }
        let started = Instant::now();
        checkpointer.stop();
        assert!(
            started.elapsed() < CHECKPOINT_EVERY,
            "stop waited for a tick"
        );
        // The writer goes on without it.
        writer
            .execute("INSERT INTO t (v) VALUES (x'00')", [])
            .expect("insert");
        assert_eq!(query_i64(&writer, "SELECT COUNT(*) FROM t"), 201);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Checkpointer::spawn(&dir.path().join("no").join("db"), "test-checkpoint");
        assert!(err.is_err());
    }
}
