//! Opening connections: the durable write connection, its schema, read-only connections.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

/// SQLite busy handler timeout of every connection opened here: how long a statement waits
/// for a lock held by another connection (a checkpoint, a foreign process) before it fails
/// with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `PRAGMA journal_size_limit` of the write connection, in bytes: once a checkpoint has
/// copied the whole WAL and the writer restarts it from its start, the file is cut back to
/// this size (64 MiB) instead of keeping its largest size forever.
pub const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Opens (creating) the database at `path` as the durable write connection: busy timeout
/// [`BUSY_TIMEOUT`], `journal_mode=WAL` and `synchronous=FULL` (both read back and
/// required), `wal_autocheckpoint=0` (checkpoints are a [`crate::Checkpointer`]'s job, never a
/// commit's) and `journal_size_limit=`[`JOURNAL_SIZE_LIMIT`].
///
/// Per-backend settings (page cache, statement cache) and the schema
/// ([`ensure_schema`]) are the caller's.
///
/// # Errors
/// Any SQLite error opening or configuring the file; `InvalidParameterName` with a sentence
/// if the file cannot be put in WAL mode or `synchronous` does not read back as FULL.
pub fn open_writer(path: &Path) -> rusqlite::Result<Connection> {
    open_writer_with_page_size(path, None)
}

/// [`open_writer`], and a database file created by this call gets pages of `page_size`
/// bytes (a power of two, 512 to 65536) instead of SQLite's default 4096. An existing file
/// keeps the page size it was created with (changing it would need a `VACUUM` out of WAL
/// mode); `PRAGMA page_size` reads the one in effect.
///
/// Why a backend would want smaller pages: a WAL commit writes every page it dirtied, whole.
/// A write that touches one small row in each of several B-trees (a message's inbox and
/// history rows) dirties a page per tree, so the bytes written per commit, and the writer's
/// CPU for checksumming, copying and `pwrite`, grow with the page size, not the row size.
///
/// # Errors
/// As [`open_writer`].
pub fn open_writer_with_page_size(
    path: &Path,
    page_size: Option<u32>,
) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if let Some(page_size) = page_size {
        // Must come before `journal_mode=WAL`, which writes the header of a new file and
        // fixes its page size; on an existing file SQLite ignores it.
        conn.pragma_update(None, "page_size", page_size)?;
    }
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "journal_mode is {mode}, WAL is required"
        )));
    }
    // FULL: the WAL is fsync'd at every commit, so a returned commit survives power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |row| row.get(0))?;
    if synchronous != 2 {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "synchronous is {synchronous}, FULL (2) is required"
        )));
    }
    // Checkpoints run on their own thread (`Checkpointer`), never inside a commit: a
    // checkpoint fsyncs the database file, and on the commit path it stalled every commit
    // waiting on it (see the crate docs). The writer restarts the WAL from its start once a
    // checkpoint has copied all of it.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    Ok(conn)
}

/// Creates the schema of a new database, or checks that of an existing one, by its version
/// in `PRAGMA user_version`: 0 (a new file) runs `schema_sql` and sets the version to
/// `version` in one `BEGIN IMMEDIATE` transaction; `version` is left alone; any other
/// version is refused (this build does not know that schema).
///
/// # Errors
/// Any SQLite error of the statements (then nothing of the schema was written);
/// `InvalidParameterName` with a sentence for a version other than 0 and `version`.
pub fn ensure_schema(
    conn: &mut Connection,
    version: i64,
    schema_sql: &str,
) -> rusqlite::Result<()> {
    ensure_schema_upgrading(conn, version, schema_sql, &[])
}

/// [`ensure_schema`] for a schema that grew: `upgrades[i]` turns version `i + 1` into `i + 2`
/// (so `upgrades.len()` must be `version - 1`). A database of an older known version runs the
/// missing upgrades in order, all in one `BEGIN IMMEDIATE` transaction, so a failed upgrade
/// leaves it at its old version; a new database runs `schema_sql` (the whole current schema).
///
/// # Errors
/// As [`ensure_schema`]; a version above `version`, or one no upgrade chain starts from, is
/// refused.
pub fn ensure_schema_upgrading(
    conn: &mut Connection,
    version: i64,
    schema_sql: &str,
    upgrades: &[&str],
) -> rusqlite::Result<()> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found == version {
        return Ok(());
    }
    let first_upgradable = version - i64::try_from(upgrades.len()).unwrap_or(0);
    if found != 0 && !(first_upgradable..version).contains(&found) {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "schema version {found} is not this build's {version}"
        )));
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if found == 0 {
        tx.execute_batch(schema_sql)?;
    } else {
        // found >= first_upgradable >= 1 here, so the index is in range.
        let start = usize::try_from(found - first_upgradable).unwrap_or(0);
        for upgrade in &upgrades[start..] {
            tx.execute_batch(upgrade)?;
        }
    }
    tx.pragma_update(None, "user_version", version)?;
    tx.commit()
}

/// Opens the existing database at `path` read-only (`SQLITE_OPEN_NO_MUTEX`: a connection
/// is used by one thread at a time), with busy timeout [`BUSY_TIMEOUT`]. In WAL mode it
/// reads a consistent snapshot while the writer commits. Statement cache and other settings
/// are the caller's.
///
/// # Errors
/// Any SQLite error, e.g. when the file does not exist (it is never created here).
pub fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use tempfile::TempDir;

    use super::*;
    use crate::test_support::query_i64;

    const SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL) STRICT;";

    fn db(dir: &TempDir) -> std::path::PathBuf {
        dir.path().join("test.sqlite3")
    }

    fn pragma_i64(conn: &Connection, name: &str) -> i64 {
        query_i64(conn, &format!("PRAGMA {name}"))
    }

    #[test]
    fn the_writer_is_durable_wal_without_autocheckpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open_writer(&db(&dir)).expect("open");
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");
        assert_eq!(pragma_i64(&conn, "synchronous"), 2, "FULL");
        assert_eq!(pragma_i64(&conn, "wal_autocheckpoint"), 0);
        assert_eq!(pragma_i64(&conn, "journal_size_limit"), JOURNAL_SIZE_LIMIT);
        assert_eq!(
            pragma_i64(&conn, "busy_timeout"),
            i64::try_from(BUSY_TIMEOUT.as_millis()).expect("ms")
        );
        // WAL mode is a property of the file: a later plain connection sees it too.
        drop(conn);
        let plain = Connection::open(db(&dir)).expect("plain");
        let mode: String = plain
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_new_file_gets_the_page_size_and_an_existing_one_keeps_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = open_writer_with_page_size(&db(&dir), Some(1024)).expect("open");
        ensure_schema(&mut conn, 1, SCHEMA).expect("schema");
        assert_eq!(pragma_i64(&conn, "page_size"), 1024);
        drop(conn);
        let conn = open_writer_with_page_size(&db(&dir), Some(8192)).expect("reopen");
        assert_eq!(pragma_i64(&conn, "page_size"), 1024, "kept");
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");
        let other = tempfile::tempdir().expect("tempdir");
        let mut conn = open_writer(&db(&other)).expect("default");
        ensure_schema(&mut conn, 1, SCHEMA).expect("schema");
        assert_eq!(pragma_i64(&conn, "page_size"), 4096, "SQLite's default");
    }

    #[test]
    fn the_writer_creates_missing_files_but_not_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(open_writer(&dir.path().join("missing").join("x.sqlite3")).is_err());
        open_writer(&db(&dir)).expect("open");
        assert!(db(&dir).exists());
    }

    #[test]
    fn a_new_database_gets_the_schema_and_its_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = open_writer(&db(&dir)).expect("open");
        ensure_schema(&mut conn, 3, SCHEMA).expect("schema");
        assert_eq!(pragma_i64(&conn, "user_version"), 3);
        conn.execute("INSERT INTO t (v) VALUES ('x')", [])
            .expect("table exists");
        // The same version again is a no-op (the schema is not run twice).
        ensure_schema(&mut conn, 3, SCHEMA).expect("same version");
        drop(conn);
        let mut conn = open_writer(&db(&dir)).expect("reopen");
        ensure_schema(&mut conn, 3, SCHEMA).expect("reopen, same version");
        assert_eq!(query_i64(&conn, "SELECT COUNT(*) FROM t"), 1);
    }

    #[test]
    fn an_older_version_is_upgraded_in_order_and_a_failed_upgrade_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = open_writer(&db(&dir)).expect("open");
        ensure_schema(&mut conn, 1, SCHEMA).expect("version 1");
        conn.execute("INSERT INTO t (v) VALUES ('kept')", [])
            .expect("row");
        let upgrades = [
            "CREATE TABLE u2 (v TEXT NOT NULL) STRICT;",
            "INSERT INTO u2 (v) SELECT v FROM t;",
        ];
        // A failing upgrade rolls back the ones before it: still version 1, no u2.
        let broken = [upgrades[0], "INSERT INTO nowhere VALUES (1);"];
        ensure_schema_upgrading(&mut conn, 3, SCHEMA, &broken).expect_err("broken upgrade");
        assert_eq!(pragma_i64(&conn, "user_version"), 1);
        assert_eq!(
            query_i64(
                &conn,
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'u2'"
            ),
            0
        );
        ensure_schema_upgrading(&mut conn, 3, SCHEMA, &upgrades).expect("upgrade 1 -> 3");
        assert_eq!(pragma_i64(&conn, "user_version"), 3);
        assert_eq!(query_i64(&conn, "SELECT COUNT(*) FROM u2"), 1);
        // A version newer than the build, or older than any upgrade chain, is refused.
        let err = ensure_schema_upgrading(&mut conn, 2, SCHEMA, &upgrades[..1]).expect_err("newer");
        assert!(
            err.to_string()
                .contains("schema version 3 is not this build's 2")
        );
        // A new database gets the whole current schema, no upgrades.
        let fresh_dir = tempfile::tempdir().expect("tempdir");
        let mut fresh = open_writer(&db(&fresh_dir)).expect("open");
        ensure_schema_upgrading(&mut fresh, 3, SCHEMA, &upgrades).expect("fresh");
        assert_eq!(pragma_i64(&fresh, "user_version"), 3);
        assert_eq!(query_i64(&fresh, "SELECT COUNT(*) FROM t"), 0);
    }

    #[test]
    fn another_schema_version_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = open_writer(&db(&dir)).expect("open");
        ensure_schema(&mut conn, 2, SCHEMA).expect("schema");
        for build in [1, 3] {
            let err = ensure_schema(&mut conn, build, SCHEMA).expect_err("other version");
            assert!(
                err.to_string()
                    .contains(&format!("schema version 2 is not this build's {build}")),
                "{err}"
            );
        }
        assert_eq!(pragma_i64(&conn, "user_version"), 2);
    }

    #[test]
    fn a_failing_schema_leaves_the_database_new() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = open_writer(&db(&dir)).expect("open");
        let broken = "CREATE TABLE a (x INTEGER) STRICT; CREATE TABLE oops (";
        assert!(ensure_schema(&mut conn, 1, broken).is_err());
        assert_eq!(pragma_i64(&conn, "user_version"), 0);
        assert_eq!(
            query_i64(&conn, "SELECT COUNT(*) FROM sqlite_schema"),
            0,
            "the first statement was rolled back"
        );
        ensure_schema(&mut conn, 1, SCHEMA).expect("a good schema afterwards");
    }

    #[test]
    fn a_read_only_connection_sees_commits_and_cannot_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(
            open_read_only(&db(&dir)).is_err(),
            "a missing file is not created"
        );
        let mut writer = open_writer(&db(&dir)).expect("open");
        ensure_schema(&mut writer, 1, SCHEMA).expect("schema");
        let reader = open_read_only(&db(&dir)).expect("reader");
        writer
            .execute("INSERT INTO t (v) VALUES ('committed')", [])
            .expect("insert");
        let v: String = reader
            .query_row("SELECT v FROM t", [], |row| row.get(0))
            .expect("read");
        assert_eq!(v, "committed");
        assert!(
            reader
                .execute("INSERT INTO t (v) VALUES ('no')", [])
                .is_err()
        );
        assert_eq!(
            pragma_i64(&reader, "busy_timeout"),
            i64::try_from(BUSY_TIMEOUT.as_millis()).expect("ms")
        );
    }
}
