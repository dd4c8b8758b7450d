//! SqliteStore: the shared suite, plus what only a file-backed store has (reopen, msgid
//! layout, batch failure, backpressure, the directory lock, query plans).

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use tempfile::TempDir;

use super::*;

async fn new_store() -> (SqliteStore, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open");
    (store, dir)
}

mod suite {
    crate::testsuite::store_testsuite!(super::new_store);
}

fn user(appcode: u32, uid: &str) -> UserKey {
    UserKey::new(appcode, uid)
}

fn message(from: &UserKey, to: &UserKey, client_msg_id: &str) -> NewMessage {
    NewMessage {
        from: from.clone(),
        from_device: "phone".to_owned(),
        client_msg_id: client_msg_id.to_owned(),
        to: to.clone(),
        msgtype: 3,
        content_type: 1,
        content: Bytes::from(format!("body of {client_msg_id}")),
        log_id: 42,
    }
}

fn reopen(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(dir.path(), SqliteOptions::default()).expect("reopen")
}

/// A plain connection to the store's file, for checks behind the store's back.
fn inspect(dir: &TempDir) -> Connection {
    Connection::open(dir.path().join(DB_FILE)).expect("inspect connection")
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |row| row.get(0)).expect("count")
}

#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = user(1, "a");
    let b = user(1, "b");
    let store = reopen(&dir);
    let m1 = store.append(message(&a, &b, "1")).await.expect("append");
    let m2 = store.append(message(&b, &a, "2")).await.expect("append");
    let m3 = store.append(message(&a, &b, "3")).await.expect("append");
    store.ack(&b, "phone", &[m1.msgid]).await.expect("ack");
    let inbox_before = store.pull_offline(&b, "web", 0, 50).await.expect("pull");
    let history_before = store
        .history(&a, &b, 0, Direction::Older, 50)
        .await
        .expect("history");
    drop(store);

    let store = reopen(&dir);
    let inbox_after = store.pull_offline(&b, "web", 0, 50).await.expect("pull");
    assert_eq!(inbox_after.messages, inbox_before.messages);
    assert_eq!(
        inbox_after
            .messages
            .iter()
            .map(|m| m.msgid)
            .collect::<Vec<_>>(),
        vec![m1.msgid, m3.msgid]
    );
    assert_eq!(inbox_after.messages[0].senddate_ms, m1.senddate_ms);
    assert_eq!(
        inbox_after.messages[0].content,
        message(&a, &b, "1").content
    );
    let history_after = store
        .history(&a, &b, 0, Direction::Older, 50)
        .await
        .expect("history");
    assert_eq!(history_after.messages, history_before.messages);
    assert_eq!(history_after.messages.len(), 3);
    assert_eq!(history_after.messages[1].msgid, m2.msgid);
    // The ack survived too.
    let phone = store.pull_offline(&b, "phone", 0, 50).await.expect("pull");
    assert_eq!(
        phone.messages.iter().map(|m| m.msgid).collect::<Vec<_>>(),
        vec![m3.msgid]
    );
}

#[tokio::test]
async fn idempotency_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = user(2, "a");
    let b = user(2, "b");
    let store = reopen(&dir);
    let first = store.append(message(&a, &b, "key")).await.expect("append");
    store.close().await.expect("close");
    drop(store);

    let store = reopen(&dir);
    let retry = store.append(message(&a, &b, "key")).await.expect("append");
    assert!(retry.duplicate);
    assert_eq!(retry.msgid, first.msgid);
    assert_eq!(retry.senddate_ms, first.senddate_ms);
    drop(store);
    let conn = inspect(&dir);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM messages"), 1);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM inbox"), 1);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM history"), 2);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM idempotency_keys"), 1);
}

#[tokio::test]
async fn msgid_layout_follows_the_clock() {
    let (store, _dir) = new_store().await;
    let before = unix_ms_now();
    let outcome = store
        .append(message(&user(3, "a"), &user(3, "b"), ""))
        .await
        .expect("append");
    let after = unix_ms_now();
    assert!((before..=after).contains(&outcome.senddate_ms));
    // On an empty store the clock term wins: msgid = unix_ms << 20.
    let ms = outcome.msgid >> MSGID_TIME_SHIFT;
    assert!(
        (before..=after).contains(&ms),
        "{ms} not in {before}..={after}"
    );
    assert_eq!(outcome.msgid & ((1 << MSGID_TIME_SHIFT) - 1), 0);
}

#[tokio::test]
async fn msgids_increase_across_reopen_even_if_the_clock_went_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = user(4, "a");
    let b = user(4, "b");
    let store = reopen(&dir);
    let first = store.append(message(&a, &b, "1")).await.expect("append");
    drop(store);

    let store = reopen(&dir);
    let second = store.append(message(&a, &b, "2")).await.expect("append");
    assert!(second.msgid > first.msgid);
    drop(store);

    // Simulate a clock that was a day ahead when the last message was written: its msgid is
    // far beyond what today's clock gives.
    let future = ((unix_ms_now() + 86_400_000) << MSGID_TIME_SHIFT) as i64;
    inspect(&dir)
        .execute(
            "INSERT INTO messages (msgid, to_appcode, to_uid, from_appcode, from_uid, \
             from_device, client_msg_id, msgtype, content_type, senddate, msgcontent, log_id) \
             VALUES (?1, 4, 'x', 4, 'y', 'd', '', 0, 0, 0, x'', 0)",
            [future],
        )
        .expect("insert future row");

    let store = reopen(&dir);
    let third = store.append(message(&a, &b, "3")).await.expect("append");
    assert_eq!(third.msgid, future as u64 + 1);
    let fourth = store.append(message(&a, &b, "4")).await.expect("append");
    assert_eq!(fourth.msgid, future as u64 + 2);
}

#[test]
fn next_msgid_takes_the_larger_of_clock_and_last() {
    let now = 1_764_000_000_000_u64;
    let clock = (now << MSGID_TIME_SHIFT) as i64;
    assert_eq!(next_msgid(0, now).expect("msgid"), clock);
    assert_eq!(next_msgid(clock, now).expect("msgid"), clock + 1);
    assert_eq!(next_msgid(clock + 500, now).expect("msgid"), clock + 501);
    // Clock before the epoch or absurdly far ahead: fall back to counting.
    assert_eq!(next_msgid(7, 0).expect("msgid"), 8);
    assert_eq!(next_msgid(7, u64::MAX).expect("msgid"), 8);
    assert!(matches!(
        next_msgid(i64::MAX, now),
        Err(WriteError::MsgidExhausted)
    ));
}

#[test]
fn cursor_bounds_clamp_to_i64() {
    assert_eq!(lower_bound(0), 0);
    assert_eq!(lower_bound(5), 5);
    assert_eq!(lower_bound(u64::MAX), i64::MAX);
    assert_eq!(upper_bound_inclusive(0), i64::MAX);
    assert_eq!(upper_bound_inclusive(5), 4);
    assert_eq!(upper_bound_inclusive(i64::MAX as u64), i64::MAX - 1);
    assert_eq!(upper_bound_inclusive(i64::MAX as u64 + 1), i64::MAX);
    assert_eq!(upper_bound_inclusive(u64::MAX), i64::MAX);
    for value in [0, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        assert_eq!(u64_from_bits(bits_from_u64(value)), value);
    }
}

/// A writer over a fresh database in `dir`, driven directly (no thread), so a test decides
/// exactly what one batch holds.
fn bare_writer(dir: &TempDir) -> Writer {
    Writer {
        conn: open_writer_connection(&dir.path().join(DB_FILE)).expect("writer connection"),
        last_msgid: 0,
        counters: Arc::default(),
        pending: Arc::new(PendingFilter::new()),
    }
}

fn append_op(
    msg: NewMessage,
) -> (
    WriteOp,
    oneshot::Receiver<Result<AppendOutcome, StoreError>>,
) {
    let (reply, reply_rx) = oneshot::channel();
    let op = WriteOp::Append {
        msg,
        reply,
        outcome: None,
    };
    (op, reply_rx)
}

#[test]
fn duplicates_in_one_batch_store_one_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut writer = bare_writer(&dir);
    let a = user(5, "a");
    let b = user(5, "b");
    let (op1, rx1) = append_op(message(&a, &b, "same"));
    let (op2, rx2) = append_op(message(&a, &b, "same"));
    let (op3, rx3) = append_op(message(&a, &b, "other"));
    writer.commit_batch(vec![op1, op2, op3]);
    assert_eq!(writer.counters.batches.load(Ordering::Relaxed), 1);

    let first = rx1.blocking_recv().expect("reply").expect("append");
    let second = rx2.blocking_recv().expect("reply").expect("append");
    let third = rx3.blocking_recv().expect("reply").expect("append");
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(second.msgid, first.msgid);
    assert_eq!(second.senddate_ms, first.senddate_ms);
    assert!(!third.duplicate);
    assert_ne!(third.msgid, first.msgid);
    assert_eq!(count(&writer.conn, "SELECT COUNT(*) FROM messages"), 2);
}

#[test]
fn a_failing_request_rolls_back_and_fails_its_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut writer = bare_writer(&dir);
    // Make one particular message fail inside the transaction, as a full disk would.
    writer
        .conn
        .execute_batch(
            "CREATE TRIGGER fail_666 BEFORE INSERT ON messages WHEN NEW.msgtype = 666 \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .expect("trigger");
    let a = user(6, "a");
    let b = user(6, "b");
    let mut bad = message(&a, &b, "bad");
    bad.msgtype = 666;
    let (op1, rx1) = append_op(message(&a, &b, "good-1"));
    let (op2, rx2) = append_op(bad);
    let (op3, rx3) = append_op(message(&a, &b, "good-2"));
    writer.commit_batch(vec![op1, op2, op3]);
    for rx in [rx1, rx2, rx3] {
        let reply = rx.blocking_recv().expect("reply");
        assert!(
            matches!(reply, Err(StoreError::Unavailable(_))),
            "got {reply:?}"
        );
    }
    assert_eq!(writer.counters.failed_batches.load(Ordering::Relaxed), 1);
    for table in ["messages", "inbox", "history", "idempotency_keys"] {
        let n = count(&writer.conn, &format!("SELECT COUNT(*) FROM {table}"));
        assert_eq!(n, 0, "{table} kept rows of a failed batch");
    }

    // The writer keeps going, and a retry of a failed message is a fresh append.
    let (op, rx) = append_op(message(&a, &b, "good-1"));
    writer.commit_batch(vec![op]);
    let retried = rx.blocking_recv().expect("reply").expect("append");
    assert!(!retried.duplicate);
    assert_eq!(count(&writer.conn, "SELECT COUNT(*) FROM messages"), 1);
}

#[test]
fn the_writer_drains_before_close_and_refuses_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = user(9, "a");
    let b = user(9, "b");
    let (tx, rx) = mpsc::channel(16);
    let (op1, rx1) = append_op(message(&a, &b, "1"));
    let (op2, rx2) = append_op(message(&a, &b, "2"));
    let (op3, rx3) = append_op(message(&a, &b, "3"));
    let (done_tx, done_rx) = oneshot::channel();
    for command in [
        Command::Write(op1),
        Command::Write(op2),
        Command::Close(done_tx),
        Command::Write(op3),
    ] {
        tx.try_send(command).map_err(|_| "queue").expect("queue");
    }
    // Run the writer loop on this thread; it returns after the close.
    bare_writer(&dir).run(rx, 512);
    done_rx.blocking_recv().expect("close signalled");
    let m1 = rx1.blocking_recv().expect("reply").expect("committed");
    let m2 = rx2.blocking_recv().expect("reply").expect("committed");
    assert!(m2.msgid > m1.msgid);
    let refused = rx3.blocking_recv().expect("reply");
    assert!(
        matches!(refused, Err(StoreError::Closed)),
        "got {refused:?}"
    );
    assert!(tx.is_closed());
    assert_eq!(count(&inspect(&dir), "SELECT COUNT(*) FROM messages"), 2);

    // Dropping every sender (the store's Drop) also drains the queue first.
    let (tx, rx) = mpsc::channel(16);
    let (op4, rx4) = append_op(message(&a, &b, "4"));
    tx.try_send(Command::Write(op4))
        .map_err(|_| "queue")
        .expect("queue");
    drop(tx);
    let mut writer = bare_writer(&dir);
    writer.last_msgid = i64::try_from(m2.msgid).expect("msgid");
    writer.run(rx, 512);
    let m4 = rx4.blocking_recv().expect("reply").expect("committed");
    assert!(m4.msgid > m2.msgid);
    assert_eq!(count(&inspect(&dir), "SELECT COUNT(*) FROM messages"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_write_queue_answers_unavailable_and_then_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = SqliteOptions {
        write_queue: 1,
        max_batch: 1,
        read_connections: 1,
    };
    let store = Arc::new(SqliteStore::open(dir.path(), opts).expect("open"));
    // Another connection holds the write lock, so the writer stalls in BEGIN IMMEDIATE (for up
    // to its busy timeout) and the queue of one fills up.
    let blocker = inspect(&dir);
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take write lock");

    let (result_tx, mut result_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..3 {
        let store = Arc::clone(&store);
        let result_tx = result_tx.clone();
        tokio::spawn(async move {
            let msg = message(&user(7, "a"), &user(7, "b"), &format!("{i}"));
            let _ = result_tx.send(store.append(msg).await);
        });
    }
    drop(result_tx);
    // Nothing can commit while the lock is held, so the first answer must be the refusal.
    let first = result_rx.recv().await.expect("a result");
    match first {
        Err(StoreError::Unavailable(reason)) => assert_eq!(reason, "write queue full"),
        other => panic!("expected write queue full, got {other:?}"),
    }
    blocker
        .execute_batch("ROLLBACK")
        .expect("release write lock");

    let mut stored = 0;
    while let Some(result) = result_rx.recv().await {
        match result {
            Ok(_) => stored += 1,
            Err(StoreError::Unavailable(reason)) => assert_eq!(reason, "write queue full"),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(stored >= 1, "requests accepted into the queue must commit");
    let page = store
        .pull_offline(&user(7, "b"), "d", 0, 50)
        .await
        .expect("pull");
    assert_eq!(page.messages.len(), stored);
    let after = store
        .append(message(&user(7, "a"), &user(7, "b"), "after"))
        .await
        .expect("append after recovery");
    assert!(!after.duplicate);
}

#[tokio::test]
async fn close_commits_what_was_queued_and_refuses_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(reopen(&dir));
    let a = user(8, "a");
    let b = user(8, "b");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = Arc::clone(&store);
            let msg = message(&a, &b, &format!("{i}"));
            tokio::spawn(async move { store.append(msg).await })
        })
        .collect();
    store.close().await.expect("close");
    store.close().await.expect("second close is a no-op");

    let mut acked = BTreeSet::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(outcome) => {
                acked.insert(outcome.msgid);
            }
            Err(StoreError::Closed) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(matches!(
        store.append(message(&a, &b, "late")).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        store.pull_offline(&b, "d", 0, 10).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        store.ack(&b, "d", &[1]).await,
        Err(StoreError::Closed)
    ));
    drop(store);

    // Every append that was answered Ok is on disk, and nothing else is.
    let store = reopen(&dir);
    let mut cursor = 0;
    let mut on_disk = BTreeSet::new();
    loop {
        let page = store
            .pull_offline(&b, "d", cursor, 500)
            .await
            .expect("pull");
        on_disk.extend(page.messages.iter().map(|m| m.msgid));
        cursor = page.next_cursor;
        if !page.more {
            break;
        }
    }
    assert_eq!(on_disk, acked);
}

#[tokio::test]
async fn a_directory_is_opened_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = reopen(&dir);
    let second = SqliteStore::open(dir.path(), SqliteOptions::default());
    assert!(
        matches!(second, Err(StoreError::Unavailable(_))),
        "got {second:?}"
    );
    drop(first);
    let third = SqliteStore::open(dir.path(), SqliteOptions::default());
    assert!(third.is_ok(), "got {third:?}");
}

#[test]
fn zero_options_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    for opts in [
        SqliteOptions {
            write_queue: 0,
            ..SqliteOptions::default()
        },
        SqliteOptions {
            max_batch: 0,
            ..SqliteOptions::default()
        },
        SqliteOptions {
            read_connections: 0,
            ..SqliteOptions::default()
        },
    ] {
        let result = SqliteStore::open(dir.path(), opts);
        assert!(matches!(result, Err(StoreError::InvalidArgument(_))));
    }
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open"));
    inspect(&dir)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("bump version");
    let result = SqliteStore::open(dir.path(), SqliteOptions::default());
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "got {result:?}"
    );
}

#[test]
fn the_file_is_in_wal_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open");
    let mode: String = inspect(&dir)
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
}

#[test]
fn query_plans_are_primary_key_range_scans() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open"));
    let conn = inspect(&dir);
    // The outer loop must be a range scan of the owner's slice of the primary key.
    for (name, sql, outer_search, params) in [
        (
            "pull",
            PULL_OFFLINE_SQL,
            "SEARCH i USING PRIMARY KEY (owner_appcode=? AND owner_uid=? AND msgid>?)",
            rusqlite::params![1, "u", 0, "d", 51],
        ),
        (
            "history older",
            HISTORY_OLDER_SQL,
            "SEARCH h USING PRIMARY KEY (owner_appcode=? AND owner_uid=? AND peer_appcode=? AND peer_uid=? AND msgid<?)",
            rusqlite::params![1, "u", 1, "p", i64::MAX, 51],
        ),
        (
            "history newer",
            HISTORY_NEWER_SQL,
            "SEARCH h USING PRIMARY KEY (owner_appcode=? AND owner_uid=? AND peer_appcode=? AND peer_uid=? AND msgid>?)",
            rusqlite::params![1, "u", 1, "p", 0, 51],
        ),
    ] {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        let plan: Vec<String> = stmt
            .query_map(params, |row| row.get::<_, String>(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("plan rows");
        let text = plan.join(" | ");
        let outer = plan.first().map(String::as_str).unwrap_or_default();
        assert_eq!(outer, outer_search, "{name}: {text}");
        assert!(
            plan.iter()
                .any(|step| step.contains("SEARCH m USING INTEGER PRIMARY KEY")),
            "{name}: messages not looked up by msgid: {text}"
        );
        assert!(
            !plan
                .iter()
                .any(|step| step.starts_with("SCAN") || step.contains("TEMP B-TREE")),
            "{name}: full scan or sort: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_checkpointer_copies_the_wal_into_the_database() {
    let (store, dir) = new_store().await;
    let db = dir.path().join(DB_FILE);
    let before = std::fs::metadata(&db).expect("db file").len();
    let store = Arc::new(store);
    let a = user(1, "a");
    for i in 0..500 {
        store
            .append(message(
                &a,
                &user(1, &format!("r{}", i % 50)),
                &format!("ck{i}"),
            ))
            .await
            .expect("append");
    }
    // Commits only write the WAL (autocheckpoint is off); the database file grows once the
    // checkpoint thread has copied the pages.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = std::fs::metadata(&db).expect("db file").len();
        if now > before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint reached the database file"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The whole schema of version 2, as a build of that version created it.
const SCHEMA_V2_SQL: &str = include_str!("schema_v2.sql");

/// Creates `dir`'s database as a version 2 build left it (4 KiB pages, WAL), with a v2 build's
/// rows for messages `(msgid, from, to, client_msg_id)`; returns the connection.
fn version_2_database(dir: &TempDir, messages: &[(i64, &UserKey, &UserKey, &str)]) -> Connection {
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("create");
    conn.execute_batch("PRAGMA journal_mode = WAL;")
        .expect("wal");
    conn.execute_batch(SCHEMA_V2_SQL).expect("v2 schema");
    conn.execute_batch("PRAGMA user_version = 2;")
        .expect("version");
    for &(msgid, from, to, key) in messages {
        conn.execute(
            "INSERT INTO messages (msgid, to_appcode, to_uid, from_appcode, from_uid, \
             from_device, client_msg_id, msgtype, content_type, senddate, state, msgcontent, \
             log_id, prev_msgid) VALUES (?1, ?2, ?3, ?4, ?5, 'dev', ?6, 1, 0, 1000, 0, x'68', 7, 0)",
            rusqlite::params![msgid, to.appcode, to.uid, from.appcode, from.uid, key],
        )
        .expect("message");
        conn.execute(
            "INSERT INTO inbox (owner_appcode, owner_uid, msgid) VALUES (?1, ?2, ?3)",
            rusqlite::params![to.appcode, to.uid, msgid],
        )
        .expect("inbox");
        for (owner, peer) in [(from, to), (to, from)] {
            conn.execute(
                "INSERT INTO history (owner_appcode, owner_uid, peer_appcode, peer_uid, msgid) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![owner.appcode, owner.uid, peer.appcode, peer.uid, msgid],
            )
            .expect("history");
        }
        conn.execute(
            "INSERT INTO idempotency_keys (from_appcode, from_uid, from_device, client_msg_id, \
             msgid, senddate) VALUES (?1, ?2, 'dev', ?3, ?4, 1000)",
            rusqlite::params![from.appcode, from.uid, key, msgid],
        )
        .expect("key");
    }
    conn
}

#[tokio::test]
async fn a_version_2_database_is_upgraded_and_keeps_its_inbox_pushes_and_acks() {
    use crate::DeliveryState;
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (user(1, "a"), user(1, "b"));
    let (m1, m2) = (1_i64 << 40, (1_i64 << 40) + 1);
    let conn = version_2_database(&dir, &[(m1, &a, &b, "k1"), (m2, &a, &b, "k2")]);
    conn.execute_batch(&format!(
        "INSERT INTO pushes VALUES (1, 'b', 'phone', {m1}), (1, 'b', 'phone', {m2}), \
                                   (1, 'b', 'tablet', {m2}); \
         INSERT INTO acks VALUES (1, 'b', 'phone', {m1}), (1, 'b', 'tablet', {m2}); \
         UPDATE messages SET state = 1;"
    ))
    .expect("v2 delivery rows");
    drop(conn);

    let store = reopen(&dir);
    let conn = inspect(&dir);
    assert_eq!(count(&conn, "PRAGMA user_version"), SCHEMA_VERSION);
    assert_eq!(
        count(&conn, "PRAGMA page_size"),
        4096,
        "an old file keeps its pages"
    );
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM sqlite_schema WHERE name IN ('pushes', 'acks', 'inbox_v2')"
        ),
        0
    );
    let (m1, m2) = (m1 as u64, m2 as u64);
    let ids = |page: Page| page.messages.iter().map(|m| m.msgid).collect::<Vec<_>>();
    assert_eq!(
        ids(store.pull_offline(&b, "phone", 0, 0).await.expect("pull")),
        [m2]
    );
    assert_eq!(
        ids(store.pull_offline(&b, "tablet", 0, 0).await.expect("pull")),
        [m1]
    );
    assert_eq!(
        ids(store.pull_offline(&b, "web", 0, 0).await.expect("pull")),
        [m1, m2]
    );
    for (device, msgid, state) in [
        ("phone", m1, DeliveryState::Acked),
        ("phone", m2, DeliveryState::Pushed),
        ("tablet", m1, DeliveryState::Stored),
        ("tablet", m2, DeliveryState::Acked),
    ] {
        assert_eq!(
            store
                .delivery_state(&b, device, msgid)
                .await
                .expect("state"),
            Some(state),
            "{device} {msgid}"
        );
    }
    let mut retry = message(&a, &b, "k1");
    retry.from_device = "dev".to_owned();
    let retry = store.append(retry).await.expect("retry");
    assert!(retry.duplicate);
    assert_eq!(retry.msgid, m1);
    let later = store.append(message(&a, &b, "k3")).await.expect("append");
    assert!(later.msgid > m2);
    assert_eq!(later.prev_msgid, m2);
    let acked = store
        .ack(&b, "phone", &[m2, later.msgid])
        .await
        .expect("ack");
    assert_eq!(acked.acked, 2);
    assert_eq!(
        ids(store.pull_offline(&b, "phone", 0, 0).await.expect("pull")),
        Vec::<u64>::new()
    );
    let history = store
        .history(&b, &a, 0, Direction::Newer, 0)
        .await
        .expect("history");
    assert_eq!(ids(history), [m1, m2, later.msgid]);
}

#[tokio::test]
async fn a_version_1_database_is_upgraded_and_keeps_its_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (user(1, "a"), user(1, "b"));
    let m1 = 1_i64 << 40;
    // What a build with schema version 1 left behind: version 2 without read marks.
    let conn = version_2_database(&dir, &[(m1, &b, &a, "1")]);
    conn.execute_batch("DROP TABLE read_marks; PRAGMA user_version = 1;")
        .expect("downgrade");
    drop(conn);

    let store = reopen(&dir);
    assert_eq!(count(&inspect(&dir), "PRAGMA user_version"), SCHEMA_VERSION);
    let m1 = m1 as u64;
    let page = store.conversations(&a, 0, 0).await.expect("list");
    assert_eq!(page.conversations.len(), 1);
    assert_eq!(page.conversations[0].last.msgid, m1);
    assert_eq!(page.conversations[0].unread, 1);
    let mark = store.mark_read(&a, &b, m1).await.expect("mark");
    assert_eq!(mark.map(|m| m.unread), Some(0));
    let inbox = store.pull_offline(&a, "phone", 0, 0).await.expect("pull");
    assert_eq!(inbox.messages.len(), 1);
}

#[test]
fn a_new_database_has_small_pages() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open"));
    assert_eq!(
        count(&inspect(&dir), "PRAGMA page_size"),
        i64::from(PAGE_SIZE)
    );
}

// ---------------------------------------------------------------------------------------------
// The pending filter: pull_offline of a user without entries skips the read pool, and never
// misses an entry.

fn s2c(appcode: u32, recipients: &[&str]) -> NewS2c {
    NewS2c {
        appcode,
        from: "order-service".to_owned(),
        msgtype: 7,
        content_type: 0,
        content: Bytes::from_static(b"order 42"),
        log_id: 7,
        recipients: recipients.iter().map(|&uid| uid.to_owned()).collect(),
    }
}

async fn pulled(store: &SqliteStore, owner: &UserKey, device: &str) -> Vec<u64> {
    let page = store
        .pull_offline(owner, device, 0, 200)
        .await
        .expect("pull");
    page.messages.iter().map(|m| m.msgid).collect()
}

#[tokio::test]
async fn a_user_with_nothing_pending_is_answered_from_the_filter() {
    let (store, _dir) = new_store().await;
    let (a, b, clean) = (user(1, "a"), user(1, "b"), user(1, "clean"));
    store.append(message(&a, &b, "1")).await.expect("append");
    // The sender gets history rows, not an inbox entry.
    for owner in [&a, &clean, &user(2, "b")] {
        assert!(
            !store.pending.may_have(owner.appcode, &owner.uid),
            "{owner:?}"
        );
        for cursor in [0, 77, u64::MAX] {
            let page = store
                .pull_offline(owner, "phone", cursor, 0)
                .await
                .expect("pull");
            assert!(page.messages.is_empty());
            assert!(!page.more);
            assert_eq!(page.next_cursor, cursor);
        }
    }
    assert!(store.pending.may_have(b.appcode, &b.uid));
    assert_eq!(store.pending_users(), 1);
    // The fast path keeps the trait's argument checks and its Closed after close.
    assert_invalid(store.pull_offline(&user(1, ""), "phone", 0, 0).await);
    assert_invalid(store.pull_offline(&clean, &"d".repeat(1000), 0, 0).await);
    store.close().await.expect("close");
    let closed = store.pull_offline(&clean, "phone", 0, 0).await;
    assert!(matches!(closed, Err(StoreError::Closed)), "got {closed:?}");
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::InvalidArgument(_))),
        "got {result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_acknowledged_append_is_found_by_a_pull_on_another_task() {
    let (store, _dir) = new_store().await;
    let store = Arc::new(store);
    let sender = user(3, "sender");
    let mut tasks = Vec::new();
    for i in 0..64 {
        let writer = Arc::clone(&store);
        let reader = Arc::clone(&store);
        let sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let to = user(3, &format!("to-{i}"));
            let (msgid, recipient) = if i % 4 == 0 {
                let outcome = writer
                    .append_s2c(s2c(3, &[&format!("to-{i}")]))
                    .await
                    .expect("append_s2c");
                (outcome.msgid, to)
            } else {
                let outcome = writer
                    .append(message(&sender, &to, &format!("m{i}")))
                    .await
                    .expect("append");
                (outcome.msgid, to)
            };
            // The pull runs on another task (maybe another worker thread) after the reply.
            let found = tokio::spawn(async move { pulled(&reader, &recipient, "phone").await })
                .await
                .expect("reader task");
            assert_eq!(found, vec![msgid]);
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("task within 30 s")
            .expect("task");
    }
    assert_eq!(store.pending_users(), 64);
}

#[tokio::test]
async fn every_device_keeps_its_pending_entries_across_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, clean) = (user(4, "a"), user(4, "b"), user(4, "clean"));
    let store = reopen(&dir);
    let m1 = store.append(message(&a, &b, "1")).await.expect("append");
    let m2 = store.append_s2c(s2c(4, &["b"])).await.expect("append_s2c");
    // The phone acks everything; the web (and any device not seen yet) still has both.
    let acked = store
        .ack(&b, "phone", &[m1.msgid, m2.msgid])
        .await
        .expect("ack");
    assert_eq!(acked.acked, 2);
    let both = vec![m1.msgid, m2.msgid];
    assert_eq!(pulled(&store, &b, "phone").await, Vec::<u64>::new());
    assert_eq!(pulled(&store, &b, "web").await, both);
    // Acks by every known device never make the user clean: a new device sees everything.
    store
        .ack(&b, "web", &[m1.msgid, m2.msgid])
        .await
        .expect("ack");
    assert!(store.pending.may_have(b.appcode, &b.uid));
    assert_eq!(pulled(&store, &b, "tablet").await, both);
    store.close().await.expect("close");
    drop(store);

    // Rebuilt from disk.
    let store = reopen(&dir);
    assert!(store.pending.may_have(b.appcode, &b.uid));
    assert!(!store.pending.may_have(clean.appcode, &clean.uid));
    assert!(!store.pending.may_have(a.appcode, &a.uid));
    assert_eq!(pulled(&store, &b, "phone").await, Vec::<u64>::new());
    assert_eq!(pulled(&store, &b, "web").await, Vec::<u64>::new());
    assert_eq!(pulled(&store, &b, "tablet").await, both);
    assert_eq!(pulled(&store, &b, "watch").await, both);
    // A user's first message after the reopen is marked as well.
    let m3 = store.append(message(&b, &a, "3")).await.expect("append");
    assert_eq!(pulled(&store, &a, "phone").await, vec![m3.msgid]);
}

#[tokio::test]
async fn a_crash_copy_of_the_files_rebuilds_every_owner() {
    let (store, dir) = new_store().await;
    let sender = user(5, "sender");
    // Owners that sort around each other in the primary key: the load's skip scan must step
    // from each to the next (appcode first, then uid; a uid that is a prefix of another).
    let owners = [
        user(5, "b"),
        user(5, "bb"),
        user(5, "b\u{0}"),
        user(6, "a"),
        user(u32::MAX, "m"),
        user(0, "z"),
    ];
    let mut expected = Vec::new();
    for (i, owner) in owners.iter().enumerate() {
        let outcome = store
            .append(message(&sender, owner, &format!("c{i}")))
            .await
            .expect("append");
        expected.push((owner.clone(), vec![outcome.msgid]));
    }
    let outcome = store
        .append_s2c(s2c(7, &["x", "y"]))
        .await
        .expect("append_s2c");
    expected.push((user(7, "x"), vec![outcome.msgid]));
    expected.push((user(7, "y"), vec![outcome.msgid]));

    // What a crash leaves: the database file and its WAL as they are on disk while the store
    // is open (every commit above was fsync'd to the WAL; nothing wrote since, so the checkpoint
    // thread can only have copied WAL pages that the WAL still holds).
    let crashed = tempfile::tempdir().expect("tempdir");
    for suffix in ["", "-wal"] {
        let from = dir.path().join(format!("{DB_FILE}{suffix}"));
        if from.exists() {
            std::fs::copy(&from, crashed.path().join(format!("{DB_FILE}{suffix}"))).expect("copy");
        }
    }
    let recovered = reopen(&crashed);
    assert_eq!(recovered.pending_users(), expected.len());
    for (owner, msgids) in &expected {
        assert!(
            recovered.pending.may_have(owner.appcode, &owner.uid),
            "{owner:?}"
        );
        assert_eq!(
            &pulled(&recovered, owner, "phone").await,
            msgids,
            "{owner:?}"
        );
    }
    assert!(!recovered.pending.may_have(sender.appcode, &sender.uid));
    drop(store);
}

#[test]
fn a_rolled_back_batch_leaves_at_most_a_false_positive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut writer = bare_writer(&dir);
    writer
        .conn
        .execute_batch(
            "CREATE TRIGGER fail_666 BEFORE INSERT ON messages WHEN NEW.msgtype = 666 \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
        )
        .expect("trigger");
    let (a, b, c) = (user(8, "a"), user(8, "b"), user(8, "c"));
    let mut bad = message(&a, &c, "bad");
    bad.msgtype = 666;
    let (op1, rx1) = append_op(message(&a, &b, "good"));
    let (op2, rx2) = append_op(bad);
    writer.commit_batch(vec![op1, op2]);
    for rx in [rx1, rx2] {
        assert!(rx.blocking_recv().expect("reply").is_err());
    }
    // b was marked before the failed commit (harmless: one read too many); c's insert never
    // ran. Reloading from the file drops both.
    assert!(writer.pending.may_have(b.appcode, &b.uid));
    let reloaded = PendingFilter::load(&writer.conn).expect("load");
    assert_eq!(reloaded.len(), 0);
}

#[test]
fn loading_the_filter_probes_the_primary_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open"));
    let conn = inspect(&dir);
    let plan: Vec<String> = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {}", pending::NEXT_OWNER_SQL))
        .expect("explain")
        .query_map(rusqlite::params![1, "u"], |row| row.get::<_, String>(3))
        .expect("plan")
        .collect::<Result<_, _>>()
        .expect("plan rows");
    assert_eq!(
        plan,
        vec!["SEARCH inbox USING PRIMARY KEY ((owner_appcode,owner_uid)>(?,?))".to_owned()],
        "{plan:?}"
    );
}
