//! Helpers of this crate's unit tests.

use std::path::PathBuf;

use rusqlite::Connection;
use tempfile::TempDir;

use crate::{ensure_schema, open_writer};

/// A new database file `name` in `dir` with `schema` (version 1), and its write connection
/// ([`open_writer`]).
pub(crate) fn new_database(dir: &TempDir, name: &str, schema: &str) -> (PathBuf, Connection) {
    let path = dir.path().join(name);
    let mut conn = open_writer(&path).expect("open writer");
    ensure_schema(&mut conn, 1, schema).expect("schema");
    (path, conn)
}

/// The one integer `sql` returns (a count, a pragma).
pub(crate) fn query_i64(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |row| row.get(0)).expect(sql)
}
