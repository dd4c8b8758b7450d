//! PgStore and PgRevocations against a real, throwaway PostgreSQL: the shared behaviour suite,
//! then what only a shared database has (several processes' stores on one database, concurrent
//! migrations, a server that dies and comes back).
//!
//! The suite's tests share one server per test binary (kept while any test holds it); each
//! test gets a database of its own. Tests that kill their server start their own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use longlink_store::{MessageStore, NewMessage, StoreError, TokenRevocations, UserKey};
use longlink_store_pg::{PgOptions, PgRevocations, PgStore, migrate};
use longlink_testservers::PostgresServer;

static SERVER: Mutex<Weak<PostgresServer>> = Mutex::new(Weak::new());
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The shared server, started when no running test holds it.
async fn shared_server() -> Arc<PostgresServer> {
    let server = tokio::task::spawn_blocking(|| {
        let mut slot = SERVER.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(server) = slot.upgrade() {
            return server;
        }
        let server = Arc::new(PostgresServer::start().expect("start postgres"));
        *slot = Arc::downgrade(&server);
        server
    })
    .await
    .expect("start postgres");
    accepts_sessions(&server).await;
    server
}

/// Waits until the server accepts sessions: `PostgresServer` returns once its port is open,
/// but a starting server refuses sessions ("the database system is starting up") a little
/// longer.
async fn accepts_sessions(server: &PostgresServer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio_postgres::connect(&server.url(), tokio_postgres::NoTls).await {
            Ok(_) => return,
            Err(err) => assert!(
                tokio::time::Instant::now() < deadline,
                "postgres does not accept sessions: {err}"
            ),
        }
        tokio::task::yield_now().await;
    }
}

/// Creates an empty database on `server`; returns its URL.
async fn fresh_database(server: &PostgresServer) -> String {
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    let (client, connection) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls)
        .await
        .expect("connect to postgres");
    tokio::spawn(connection);
    // An identifier made here from digits, not a value: CREATE DATABASE takes no parameters.
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let base = server.url();
    let root = base
        .strip_suffix("/postgres")
        .expect("url ends with /postgres");
    format!("{root}/{name}")
}

fn options(node_id: u16) -> PgOptions {
    PgOptions {
        node_id,
        ..PgOptions::default()
    }
}

/// Keeps the shared server up for the test.
struct Guard {
    _server: Arc<PostgresServer>,
}

async fn new_store() -> (PgStore, Guard) {
    let server = shared_server().await;
    let url = fresh_database(&server).await;
    let store = PgStore::open(&url, options(1)).await.expect("open store");
    (store, Guard { _server: server })
}

mod suite {
    longlink_store::store_testsuite!(super::new_store);
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
        msgtype: 1,
        content_type: 0,
        content: Bytes::from(format!("{} {client_msg_id}", from.uid)),
        log_id: 1,
    }
}

/// Every msgid in owner's inbox, paged from the start.
async fn pull_all(store: &PgStore, owner: &UserKey) -> Vec<u64> {
    let mut cursor = 0;
    let mut all = Vec::new();
    loop {
        let page = store
            .pull_offline(owner, "d", cursor, 50)
            .await
            .expect("pull");
        all.extend(page.messages.iter().map(|m| m.msgid));
        cursor = page.next_cursor;
        if !page.more {
            return all;
        }
    }
}

/// Node id bits of a msgid (bits 10..20).
fn node_of(msgid: u64) -> u64 {
    (msgid >> 10) & 1023
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_append_concurrently_with_distinct_trend_increasing_msgids() {
    let server = shared_server().await;
    let url = fresh_database(&server).await;
    let stores = [
        Arc::new(PgStore::open(&url, options(1)).await.expect("open 1")),
        Arc::new(PgStore::open(&url, options(2)).await.expect("open 2")),
    ];
    let receivers: Vec<UserKey> = (0..3).map(|i| user(5, &format!("r{i}"))).collect();
    let mut tasks = Vec::new();
    for t in 0..32usize {
        let store = Arc::clone(&stores[t % 2]);
        let receivers = receivers.clone();
        tasks.push(tokio::spawn(async move {
            let from = user(5, &format!("s{t}"));
            let mut sent = Vec::new();
            for i in 0..10 {
                let to = receivers[(t + i) % receivers.len()].clone();
                let outcome = store
                    .append(message(&from, &to, &format!("{i}")))
                    .await
                    .expect("append");
                assert!(!outcome.duplicate);
                sent.push((to, outcome.msgid));
            }
            (t % 2, sent)
        }));
    }
    let mut all = BTreeSet::new();
    let mut expected: BTreeMap<UserKey, BTreeSet<u64>> = BTreeMap::new();
    for task in tasks {
        let (node, sent) = task.await.expect("task");
        let ids: Vec<u64> = sent.iter().map(|(_, id)| *id).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "one sender's sequential appends go up: {ids:?}"
        );
        for (to, id) in sent {
            assert!(all.insert(id), "msgid {id} handed out twice");
            assert_eq!(
                node_of(id),
                node as u64 + 1,
                "msgid {id} has its node's bits"
            );
            expected.entry(to).or_default().insert(id);
        }
    }
    assert_eq!(all.len(), 320);
    for (owner, ids) in expected {
        for store in &stores {
            assert_eq!(
                pull_all(store, &owner).await,
                ids.iter().copied().collect::<Vec<_>>(),
                "inbox of {owner:?}"
            );
        }
    }
}

/// The cross-process ordering promise: while two nodes append to one inbox, a reader paging
/// by cursor never has a message commit behind its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_misses_nothing_while_two_nodes_append_to_one_inbox() {
    let server = shared_server().await;
    let url = fresh_database(&server).await;
    // Node 2 first, so node 1's ids of the same millisecond sort below node 2's: only the
    // floor read under the inbox lock keeps them in commit order.
    let stores = [
        Arc::new(PgStore::open(&url, options(2)).await.expect("open 2")),
        Arc::new(PgStore::open(&url, options(1)).await.expect("open 1")),
    ];
    let owner = user(6, "owner");
    let writers: Vec<_> = (0..8usize)
        .map(|w| {
            let store = Arc::clone(&stores[w % 2]);
            let owner = owner.clone();
            tokio::spawn(async move {
                let from = user(6, &format!("w{w}"));
                let mut ids = Vec::new();
                for i in 0..30 {
                    let outcome = store
                        .append(message(&from, &owner, &format!("{i}")))
                        .await
                        .expect("append");
                    ids.push(outcome.msgid);
                }
                ids
            })
        })
        .collect();
    let reader = Arc::clone(&stores[0]);
    let mut seen = Vec::new();
    let mut cursor = 0;
    while !writers.iter().all(|w| w.is_finished()) {
        let page = reader
            .pull_offline(&owner, "d", cursor, 5)
            .await
            .expect("pull");
        seen.extend(page.messages.iter().map(|m| m.msgid));
        cursor = page.next_cursor;
        tokio::task::yield_now().await;
    }
    let mut everything = BTreeSet::new();
    for writer in writers {
        everything.extend(writer.await.expect("writer"));
    }
    loop {
        let page = reader
            .pull_offline(&owner, "d", cursor, 5)
            .await
            .expect("pull");
        seen.extend(page.messages.iter().map(|m| m.msgid));
        cursor = page.next_cursor;
        if !page.more {
            break;
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "pages repeat or go back"
    );
    assert_eq!(
        seen,
        everything.into_iter().collect::<Vec<_>>(),
        "a message landed behind the cursor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_sent_through_two_nodes_at_once_is_stored_once() {
    let server = shared_server().await;
    let url = fresh_database(&server).await;
    let stores = [
        Arc::new(PgStore::open(&url, options(1)).await.expect("open 1")),
        Arc::new(PgStore::open(&url, options(2)).await.expect("open 2")),
    ];
    let (a, b) = (user(7, "a"), user(7, "b"));
    for round in 0..5 {
        let key = format!("same-{round}");
        let tasks: Vec<_> = (0..16usize)
            .map(|i| {
                let store = Arc::clone(&stores[i % 2]);
                let msg = message(&a, &b, &key);
                tokio::spawn(async move { store.append(msg).await })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.expect("task").expect("append"));
        }
        assert_eq!(
            outcomes.iter().filter(|o| !o.duplicate).count(),
            1,
            "round {round}: exactly one stores it"
        );
        assert!(outcomes.iter().all(|o| o.msgid == outcomes[0].msgid));
    }
    assert_eq!(pull_all(&stores[0], &b).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrating_twice_or_concurrently_is_harmless() {
    let server = shared_server().await;
    let url = fresh_database(&server).await;
    let runs = futures::future::join_all((0..4).map(|_| migrate(&url))).await;
    let applied: usize = runs
        .into_iter()
        .map(|r| r.expect("concurrent migrate"))
        .sum();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .expect("migrations dir")
        .count();
    assert_eq!(applied, files, "each migration applied exactly once");
    assert_eq!(migrate(&url).await.expect("again"), 0);
    // A store opened on it (migrating again at open) works.
    let store = PgStore::open(&url, options(3)).await.expect("open");
    let outcome = store
        .append(message(&user(1, "a"), &user(1, "b"), "m"))
        .await
        .expect("append");
    assert_eq!(node_of(outcome.msgid), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_and_urls_are_refused() {
    let bad_node = PgStore::open(
        "postgres://longlink@127.0.0.1:1/x",
        PgOptions {
            node_id: 1024,
            ..PgOptions::default()
        },
    )
    .await;
    assert!(
        matches!(bad_node, Err(StoreError::InvalidArgument(_))),
        "{bad_node:?}"
    );
    let bad_url = PgStore::open("not a url", options(1)).await;
    assert!(
        matches!(bad_url, Err(StoreError::InvalidArgument(_))),
        "{bad_url:?}"
    );
    assert!(matches!(
        migrate("not a url").await,
        Err(StoreError::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_are_shared_by_every_process_and_only_move_forward() {
    let server = shared_server().await;
    let url = fresh_database(&server).await;
    let first = PgRevocations::open(&url, options(1)).await.expect("open 1");
    let second = PgRevocations::open(&url, options(2)).await.expect("open 2");
    assert_eq!(first.revoked_before(129, "alice"), None);
    assert_eq!(
        first.revoke(129, "alice:x", 2000).await.expect("revoke"),
        2000
    );
    assert_eq!(
        first.revoke(129, "alice:x", 1000).await.expect("earlier"),
        2000
    );
    assert_eq!(first.revoked_before(129, "alice:x"), Some(2000));
    assert!(matches!(
        first.revoke(129, "", 1).await,
        Err(StoreError::InvalidArgument(_))
    ));
    // The other process learns it by notification.
    wait_until("the second process sees the revocation", || {
        second.revoked_before(129, "alice:x") == Some(2000)
    })
    .await;
    assert_eq!(second.revoked_before(130, "alice:x"), None);
    // And a process started later loads it.
    let third = PgRevocations::open(&url, options(3)).await.expect("open 3");
    assert_eq!(third.revoked_before(129, "alice:x"), Some(2000));
}

/// Polls `done` until it holds; fails the test after 30 s.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A store call that hangs past this fails the test (the store's own deadline is 2 s here).
const HANG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_server_gives_unavailable_and_the_store_recovers_when_it_is_back() {
    let mut server = tokio::task::spawn_blocking(|| PostgresServer::start().expect("postgres"))
        .await
        .expect("start");
    accepts_sessions(&server).await;
    let opts = PgOptions {
        node_id: 4,
        call_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
        ..PgOptions::default()
    };
    let store = PgStore::open(&server.url(), opts.clone())
        .await
        .expect("open");
    let revocations = PgRevocations::open(&server.url(), opts)
        .await
        .expect("revocations");
    let (a, b) = (user(8, "a"), user(8, "b"));
    let before = store
        .append(message(&a, &b, "before"))
        .await
        .expect("append");

    server.kill();
    // A backend that was idle when its postmaster died may still answer a query sent at that
    // moment; then every kind of call fails with Unavailable, and none hangs.
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let append = tokio::time::timeout(HANG, store.append(message(&a, &b, "during")))
            .await
            .expect("append hung on a dead server");
        if matches!(append, Err(StoreError::Unavailable(_))) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "appends still succeed: {append:?}"
        );
        tokio::task::yield_now().await;
    }
    for i in 0..3 {
        let append = tokio::time::timeout(HANG, store.append(message(&a, &b, "during")))
            .await
            .expect("append hung on a dead server");
        assert!(
            matches!(append, Err(StoreError::Unavailable(_))),
            "{i}: {append:?}"
        );
        let pull = tokio::time::timeout(HANG, store.pull_offline(&b, "d", 0, 10))
            .await
            .expect("pull hung on a dead server");
        assert!(
            matches!(pull, Err(StoreError::Unavailable(_))),
            "{i}: {pull:?}"
        );
        let ack = tokio::time::timeout(HANG, store.ack(&b, "d", &[before.msgid]))
            .await
            .expect("ack hung on a dead server");
        assert!(
            matches!(ack, Err(StoreError::Unavailable(_))),
            "{i}: {ack:?}"
        );
    }
    let revoke = tokio::time::timeout(HANG, revocations.revoke(8, "a", 5))
        .await
        .expect("revoke hung on a dead server");
    assert!(
        matches!(revoke, Err(StoreError::Unavailable(_))),
        "{revoke:?}"
    );

    let server = tokio::task::spawn_blocking(move || {
        server.restart().expect("restart postgres");
        server
    })
    .await
    .expect("restart");
    // The same store, not reopened: calls succeed again once its pool has reconnected.
    let deadline = tokio::time::Instant::now() + HANG;
    let retried = loop {
        match store.append(message(&a, &b, "during")).await {
            Ok(outcome) => break outcome,
            Err(StoreError::Unavailable(err)) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the store did not recover: {err}"
                );
                tokio::task::yield_now().await;
            }
            Err(other) => panic!("unexpected error after the restart: {other:?}"),
        }
    };
    assert!(retried.msgid > before.msgid);
    let inbox = pull_all(&store, &b).await;
    assert_eq!(
        inbox,
        vec![before.msgid, retried.msgid],
        "committed before the crash, and after"
    );
    assert_eq!(
        revocations
            .revoke(8, "a", 5)
            .await
            .expect("revoke after the restart"),
        5
    );
    drop(server);
}
