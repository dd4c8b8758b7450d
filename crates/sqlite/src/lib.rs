//! Durable SQLite plumbing shared by the embedded message store (`longlink-store`'s
//! `SqliteStore`) and the embedded bus (`longlink-bus`'s `SqliteQueue`). Both keep what must
//! survive a crash in one SQLite file, written by ONE thread that owns the only write
//! connection and commits in groups, and read on a few read-only connections. Each backend
//! keeps its schema, its queries, its write operations and its error type; this crate has the
//! parts whose logic is the same in both.
//!
//! Why WAL with `synchronous=FULL`: the WAL is fsync'd at every commit, so a commit that has
//! returned survives a power loss, and a caller (a c2c sender, a c2s publisher) is answered
//! only after that. WAL also lets the read-only connections read a consistent snapshot while
//! the writer commits. [`open_writer`] checks that both settings took effect and refuses to
//! go on otherwise.
//!
//! Why checkpoints run off the commit path: a checkpoint copies the WAL into the database
//! file and fsyncs it. Inside a commit (SQLite's default auto-checkpoint) it holds up that
//! commit and every caller waiting on it: measured in the c2c bench at 1,000 msg/s, every ACK
//! was held up by 10–26 ms every ~1.6 s, and the ACK p99 was 24–55 ms; with
//! `wal_autocheckpoint=0` on the writer and a [`Checkpointer`] thread running
//! `PRAGMA wal_checkpoint(PASSIVE)` every second on its own connection it fell to 12 ms, with
//! no change of the store's append throughput (`crates/store/README.md`, "Measured").
//!
//! The pieces:
//! - [`open_writer`] ([`open_writer_with_page_size`]), [`ensure_schema`], [`open_read_only`]:
//!   opening connections
//!   ([`BUSY_TIMEOUT`], [`JOURNAL_SIZE_LIMIT`]).
//! - [`Checkpointer`]: the checkpoint thread ([`CHECKPOINT_EVERY`]).
//! - [`ReadPool`]: read-only connections used from async code ([`OpenReader`], [`ReadError`]).
//! - [`WriterHandle`], [`Command`], [`run_writer`], [`BatchWriter`]: the bounded queue to
//!   the writer thread, its group-commit loop and the close protocol ([`WriterError`]).
//! - [`lock_exclusive`]: the lock file that keeps a second process off a database
//!   ([`LockError`]).
//! - [`bits_from_u64`], [`u64_from_bits`]: u64 values in SQLite's signed integers.

mod checkpoint;
mod connection;
mod lock;
mod read_pool;
#[cfg(test)]
mod test_support;
mod writer;

pub use checkpoint::{CHECKPOINT_EVERY, Checkpointer};
pub use connection::{
    BUSY_TIMEOUT, JOURNAL_SIZE_LIMIT, ensure_schema, ensure_schema_upgrading, open_read_only,
    open_writer, open_writer_with_page_size,
};
pub use lock::{LockError, lock_exclusive};
pub use read_pool::{OpenReader, ReadError, ReadPool};
pub use writer::{BatchWriter, Command, WriterError, WriterHandle, run_writer};

/// A u64 (an opaque id, a timestamp) as the i64 with the same bits, to store it in an
/// SQLite integer (which is signed): values above `i64::MAX` become negative. The inverse
/// is [`u64_from_bits`].
#[must_use]
pub fn bits_from_u64(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// The u64 whose bits [`bits_from_u64`] stored.
#[must_use]
pub fn u64_from_bits(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_bits_round_trip_and_keep_their_pattern() {
        for value in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
            assert_eq!(u64_from_bits(bits_from_u64(value)), value);
        }
        assert_eq!(bits_from_u64(7), 7);
        assert_eq!(bits_from_u64(u64::MAX), -1);
        assert_eq!(bits_from_u64(1 << 63), i64::MIN);
    }

    #[test]
    fn u64_bits_survive_a_round_trip_through_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().expect("connection");
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL) STRICT")
            .expect("table");
        for value in [0, 42, i64::MAX as u64 + 1, u64::MAX] {
            let back: i64 = conn
                .query_row(
                    "INSERT INTO t (v) VALUES (?1) RETURNING v",
                    [bits_from_u64(value)],
                    |row| row.get(0),
                )
                .expect("insert");
            assert_eq!(u64_from_bits(back), value);
        }
    }
}
