//! The behaviour suite every [`MessageStore`] backend must pass.
//!
//! `store_testsuite!(new_store)` expands, in the calling test module, to one `#[tokio::test]`
//! per case below. `new_store` is an `async fn() -> (S, G)` returning a fresh, empty store and a
//! guard kept alive for the test (a temp dir, a throwaway server). Backend-specific behaviour
//! (reopen, crash safety, msgid layout) is tested next to the backend.
//!
//! Other crates' backends use it through the `testsuite` feature:
//! `longlink_store::store_testsuite!(new_store);` (the calling crate needs tokio's macros).
#![allow(
    missing_docs,
    reason = "each case is documented by its name and its assertions"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;

use crate::{
    Direction, MAX_ACK_IDS, MAX_ID_BYTES, MAX_PAGE_LIMIT, MessageStore, NewMessage, Page,
    StoreError, StoredMessage, UserKey,
};

/// Generates the suite's `#[tokio::test]`s for a store constructor (see the module docs).
#[macro_export]
macro_rules! store_testsuite {
    ($new_store:path) => {
        $crate::store_testsuite!(@cases $new_store;
            append_then_pull_returns_all_fields,
            pull_pages_are_complete_ascending_without_repeats,
            last_full_page_has_more_false,
            pull_limit_defaults_and_clamps,
            cursors_past_i64_max_are_clamped,
            concurrent_appends_get_distinct_msgids_and_all_are_stored,
            an_acknowledged_append_is_readable_at_once,
            pull_while_appending_sees_every_message_once_in_order,
            idempotent_append_returns_original,
            concurrent_duplicates_store_one_message,
            empty_client_msg_id_is_not_idempotent,
            same_client_msg_id_from_other_device_or_user_is_a_new_message,
            ack_hides_from_that_device_only,
            ack_of_foreign_or_unknown_msgid_is_not_found_and_changes_nothing,
            pull_never_returns_other_users_messages,
            history_has_both_directions_for_both_owners,
            history_pages_older_and_newer,
            bad_arguments_are_rejected,
            random_operations_match_a_model,
            prev_msgid_links_each_conversation,
            delivery_state_moves_stored_pushed_acked_per_device,
            s2c_reaches_each_recipients_inbox_once_with_one_msgid,
            first_delivery_is_reported_once_and_history_shows_it,
            conversations_list_peers_with_unread_counts_and_read_marks,
        );
    };
    (@cases $new_store:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, _guard) = $new_store().await;
                $crate::testsuite::$case(store).await;
            }
        )*
    };
}
pub use crate::store_testsuite;

// ---------------------------------------------------------------------------------------------
// Helpers.

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
        content: Bytes::from(format!("{}->{} {client_msg_id}", from.uid, to.uid)),
        log_id: 7,
    }
}

async fn append_ok<S: MessageStore>(store: &S, msg: NewMessage) -> u64 {
    let outcome = store.append(msg).await.expect("append");
    assert!(
        !outcome.duplicate,
        "a fresh message must not be a duplicate"
    );
    outcome.msgid
}

/// Appends `msgs` from one task each, all at once; returns the msgids in `msgs` order.
async fn append_concurrently<S: MessageStore>(store: &Arc<S>, msgs: Vec<NewMessage>) -> Vec<u64> {
    let tasks: Vec<_> = msgs
        .into_iter()
        .map(|msg| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.append(msg).await })
        })
        .collect();
    let mut msgids = Vec::with_capacity(tasks.len());
    for task in tasks {
        let outcome = task.await.expect("append task").expect("append");
        assert!(!outcome.duplicate);
        msgids.push(outcome.msgid);
    }
    msgids
}

/// Pages through `owner`'s inbox for `device` from cursor 0, checking each page's invariants;
/// returns the msgids in order.
async fn pull_all<S: MessageStore>(
    store: &S,
    owner: &UserKey,
    device: &str,
    limit: u32,
) -> Vec<u64> {
    let mut cursor = 0;
    let mut all = Vec::new();
    loop {
        let page = store
            .pull_offline(owner, device, cursor, limit)
            .await
            .expect("pull");
        check_pull_page(&page, owner, cursor, limit);
        all.extend(page.messages.iter().map(|m| m.msgid));
        cursor = page.next_cursor;
        if !page.more {
            return all;
        }
    }
}

fn check_pull_page(page: &Page, owner: &UserKey, cursor: u64, limit: u32) {
    assert!(page.messages.len() <= limit as usize);
    if page.more {
        assert_eq!(
            page.messages.len(),
            limit as usize,
            "more=true on a short page"
        );
    }
    let ids = msgids(page);
    assert!(
        ids.iter().all(|&id| id > cursor),
        "page has msgid <= cursor"
    );
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "page not ascending: {ids:?}"
    );
    assert!(
        page.messages.iter().all(|m| &m.to == owner),
        "someone else's message"
    );
    assert_eq!(page.next_cursor, ids.last().copied().unwrap_or(cursor));
}

fn msgids(page: &Page) -> Vec<u64> {
    page.messages.iter().map(|m| m.msgid).collect()
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::InvalidArgument(_))),
        "{what}: expected InvalidArgument, got {result:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Cases.

pub async fn append_then_pull_returns_all_fields<S: MessageStore>(store: S) {
    let alice = user(129, "alice");
    let bob = user(130, "bob");
    let msg = NewMessage {
        from: alice.clone(),
        from_device: "alice-phone".to_owned(),
        client_msg_id: "c-1".to_owned(),
        to: bob.clone(),
        msgtype: u32::MAX,
        content_type: -7,
        content: Bytes::from_static(b"\x00\xffnot utf-8\x80"),
        log_id: u64::MAX - 1,
    };
    let outcome = store.append(msg.clone()).await.expect("append");
    assert!(!outcome.duplicate);
    assert!(outcome.msgid > 0);

    let page = store
        .pull_offline(&bob, "bob-phone", 0, 10)
        .await
        .expect("pull");
    let expected = StoredMessage {
        msgid: outcome.msgid,
        from: alice.clone(),
        from_device: msg.from_device,
        client_msg_id: msg.client_msg_id,
        to: bob.clone(),
        msgtype: msg.msgtype,
        content_type: msg.content_type,
        content: msg.content,
        senddate_ms: outcome.senddate_ms,
        log_id: msg.log_id,
        prev_msgid: 0,
        delivered: false,
    };
    assert_eq!(page.messages, vec![expected.clone()]);
    assert_eq!(page.next_cursor, outcome.msgid);
    assert!(!page.more);

    // The sender's inbox does not get it; both histories do.
    let sender_page = store
        .pull_offline(&alice, "alice-phone", 0, 10)
        .await
        .expect("pull");
    assert!(sender_page.messages.is_empty());
    assert_eq!(sender_page.next_cursor, 0);
    for (owner, peer) in [(&alice, &bob), (&bob, &alice)] {
        let history = store
            .history(owner, peer, 0, Direction::Older, 10)
            .await
            .expect("history");
        assert_eq!(history.messages, vec![expected.clone()]);
    }
}

pub async fn pull_pages_are_complete_ascending_without_repeats<S: MessageStore>(store: S) {
    let sender = user(1, "sender");
    let owner = user(1, "owner");
    let mut sent = Vec::new();
    // Sequential appends: each returns before the next starts, so msgids must ascend.
    for i in 0..173 {
        sent.push(append_ok(&store, message(&sender, &owner, &format!("m{i}"))).await);
    }
    assert!(
        sent.windows(2).all(|w| w[0] < w[1]),
        "sequential appends must get increasing msgids"
    );

    let mut cursor = 0;
    let mut sizes = Vec::new();
    let mut mores = Vec::new();
    let mut got = Vec::new();
    for _ in 0..10 {
        let page = store
            .pull_offline(&owner, "d", cursor, 50)
            .await
            .expect("pull");
        check_pull_page(&page, &owner, cursor, 50);
        sizes.push(page.messages.len());
        mores.push(page.more);
        got.extend(msgids(&page));
        cursor = page.next_cursor;
        if !page.more {
            break;
        }
    }
    assert_eq!(sizes, vec![50, 50, 50, 23]);
    assert_eq!(mores, vec![true, true, true, false]);
    assert_eq!(got, sent);

    let past_end = store
        .pull_offline(&owner, "d", cursor, 50)
        .await
        .expect("pull");
    assert!(past_end.messages.is_empty());
    assert!(!past_end.more);
    assert_eq!(past_end.next_cursor, cursor);
}

pub async fn last_full_page_has_more_false<S: MessageStore>(store: S) {
    let store = Arc::new(store);
    let sender = user(1, "sender");
    let owner = user(1, "owner");
    let msgs = (0..100)
        .map(|i| message(&sender, &owner, &format!("m{i}")))
        .collect();
    let mut sent = append_concurrently(&store, msgs).await;
    sent.sort_unstable();

    let first = store.pull_offline(&owner, "d", 0, 50).await.expect("pull");
    assert_eq!(first.messages.len(), 50);
    assert!(first.more);
    let second = store
        .pull_offline(&owner, "d", first.next_cursor, 50)
        .await
        .expect("pull");
    assert_eq!(second.messages.len(), 50);
    assert!(
        !second.more,
        "exactly 100 messages: the second page of 50 is the last"
    );
    let got: Vec<u64> = msgids(&first).into_iter().chain(msgids(&second)).collect();
    assert_eq!(got, sent);
}

pub async fn pull_limit_defaults_and_clamps<S: MessageStore>(store: S) {
    let store = Arc::new(store);
    let sender = user(1, "sender");
    let owner = user(1, "owner");
    let count = MAX_PAGE_LIMIT as usize + 1;
    let msgs = (0..count)
        .map(|i| message(&sender, &owner, &format!("m{i}")))
        .collect();
    let mut sent = append_concurrently(&store, msgs).await;
    sent.sort_unstable();

    let default_page = store.pull_offline(&owner, "d", 0, 0).await.expect("pull");
    assert_eq!(msgids(&default_page), sent[..50]);
    assert!(default_page.more);

    let capped = store
        .pull_offline(&owner, "d", 0, u32::MAX)
        .await
        .expect("pull");
    assert_eq!(msgids(&capped), sent[..MAX_PAGE_LIMIT as usize]);
    assert!(capped.more);

    let rest = store
        .pull_offline(&owner, "d", capped.next_cursor, u32::MAX)
        .await
        .expect("pull");
    assert_eq!(msgids(&rest), sent[MAX_PAGE_LIMIT as usize..]);
    assert!(!rest.more);

    let peer = sender;
    let history = store
        .history(&owner, &peer, 0, Direction::Newer, u32::MAX)
        .await
        .expect("history");
    assert_eq!(history.messages.len(), MAX_PAGE_LIMIT as usize);
    assert!(history.more);
    let history = store
        .history(&owner, &peer, 0, Direction::Older, 0)
        .await
        .expect("history");
    let newest_first: Vec<u64> = sent.iter().rev().take(50).copied().collect();
    assert_eq!(msgids(&history), newest_first);
    assert!(history.more);
}

pub async fn cursors_past_i64_max_are_clamped<S: MessageStore>(store: S) {
    let a = user(1, "a");
    let b = user(1, "b");
    let m1 = append_ok(&store, message(&a, &b, "1")).await;
    let m2 = append_ok(&store, message(&b, &a, "2")).await;
    let past = i64::MAX as u64 + 1;
    for cursor in [u64::MAX, past, i64::MAX as u64] {
        let page = store.pull_offline(&b, "d", cursor, 10).await.expect("pull");
        assert!(page.messages.is_empty());
        assert!(!page.more);
        assert_eq!(page.next_cursor, cursor);

        let newer = store
            .history(&a, &b, cursor, Direction::Newer, 10)
            .await
            .expect("history");
        assert!(newer.messages.is_empty());
        assert!(!newer.more);
        assert_eq!(newer.next_cursor, cursor);

        // Older than a cursor past every msgid: everything, newest first.
        let older = store
            .history(&a, &b, cursor, Direction::Older, 10)
            .await
            .expect("history");
        assert_eq!(msgids(&older), vec![m2, m1]);
        assert!(!older.more);
    }
    let ack = store
        .ack(&b, "d", &[u64::MAX, past, m1])
        .await
        .expect("ack");
    assert_eq!(ack.acked, 1);
    assert_eq!(ack.not_found, vec![u64::MAX, past]);
}

pub async fn concurrent_appends_get_distinct_msgids_and_all_are_stored<S: MessageStore>(store: S) {
    let store = Arc::new(store);
    let receivers: Vec<UserKey> = (0..4).map(|i| user(2, &format!("r{i}"))).collect();
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let store = Arc::clone(&store);
            let receivers = receivers.clone();
            tokio::spawn(async move {
                let sender = user(2, &format!("s{t}"));
                let mut sent = Vec::new();
                for i in 0..8 {
                    let to = &receivers[(t + i) % receivers.len()];
                    let msgid = append_ok(&*store, message(&sender, to, &format!("{i}"))).await;
                    sent.push((to.clone(), msgid));
                }
                sent
            })
        })
        .collect();
    let mut expected: BTreeMap<UserKey, BTreeSet<u64>> = BTreeMap::new();
    let mut all = BTreeSet::new();
    for task in tasks {
        for (to, msgid) in task.await.expect("task") {
            assert!(all.insert(msgid), "msgid {msgid} handed out twice");
            expected.entry(to).or_default().insert(msgid);
        }
    }
    assert_eq!(all.len(), 64 * 8);
    for (owner, ids) in expected {
        let got = pull_all(&*store, &owner, "d", 50).await;
        assert_eq!(
            got,
            ids.into_iter().collect::<Vec<_>>(),
            "inbox of {owner:?}"
        );
    }
}

/// An `Ok` from append means committed: a read on another connection, started right after,
/// must see it. (A reply sent before the commit shows up here as a missing message.)
pub async fn an_acknowledged_append_is_readable_at_once<S: MessageStore>(store: S) {
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let from = user(15, &format!("s{t}"));
                let to = user(15, &format!("r{}", t % 8));
                for i in 0..5 {
                    let msgid = append_ok(&*store, message(&from, &to, &format!("{i}"))).await;
                    let page = store
                        .pull_offline(&to, "d", msgid - 1, 1)
                        .await
                        .expect("pull");
                    assert_eq!(
                        msgids(&page),
                        vec![msgid],
                        "acked message {msgid} not readable"
                    );
                    let history = store
                        .history(&from, &to, msgid + 1, Direction::Older, 1)
                        .await
                        .expect("history");
                    assert_eq!(msgids(&history), vec![msgid]);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
}

pub async fn pull_while_appending_sees_every_message_once_in_order<S: MessageStore>(store: S) {
    let store = Arc::new(store);
    let owner = user(3, "owner");
    let sender = user(3, "sender");
    let before: Vec<NewMessage> = (0..120)
        .map(|i| message(&sender, &owner, &format!("b{i}")))
        .collect();
    let committed_before: BTreeSet<u64> = append_concurrently(&store, before)
        .await
        .into_iter()
        .collect();

    // Writers keep appending to the same inbox while the reader pages through it.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = Arc::clone(&store);
            let owner = owner.clone();
            tokio::spawn(async move {
                let sender = user(3, &format!("w{w}"));
                let mut ids = Vec::new();
                for i in 0..25 {
                    ids.push(append_ok(&*store, message(&sender, &owner, &format!("{i}"))).await);
                }
                ids
            })
        })
        .collect();

    let mut seen = Vec::new();
    let mut cursor = 0;
    loop {
        let page = store
            .pull_offline(&owner, "d", cursor, 7)
            .await
            .expect("pull");
        check_pull_page(&page, &owner, cursor, 7);
        seen.extend(msgids(&page));
        cursor = page.next_cursor;
        if !page.more {
            break;
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "pages repeat or go back"
    );
    let seen_set: BTreeSet<u64> = seen.iter().copied().collect();
    assert!(
        committed_before.is_subset(&seen_set),
        "a message committed before the pull started was skipped"
    );

    // After the writers finish, continuing from the last cursor completes the inbox exactly:
    // nothing committed during the paging landed behind the reader's cursor.
    let mut everything = committed_before;
    for writer in writers {
        everything.extend(writer.await.expect("writer"));
    }
    loop {
        let page = store
            .pull_offline(&owner, "d", cursor, 7)
            .await
            .expect("pull");
        check_pull_page(&page, &owner, cursor, 7);
        seen.extend(msgids(&page));
        cursor = page.next_cursor;
        if !page.more {
            break;
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(seen, everything.into_iter().collect::<Vec<_>>());
}

pub async fn idempotent_append_returns_original<S: MessageStore>(store: S) {
    let a = user(4, "a");
    let b = user(4, "b");
    let first = store
        .append(message(&a, &b, "retry-me"))
        .await
        .expect("append");
    assert!(!first.duplicate);
    let mut retry = message(&a, &b, "retry-me");
    // A retry is recognised by its key alone, even if the body differs.
    retry.content = Bytes::from_static(b"changed");
    let second = store.append(retry).await.expect("append");
    assert!(second.duplicate);
    assert_eq!(second.msgid, first.msgid);
    assert_eq!(second.senddate_ms, first.senddate_ms);

    let page = store.pull_offline(&b, "d", 0, 50).await.expect("pull");
    assert_eq!(msgids(&page), vec![first.msgid]);
    assert_eq!(
        page.messages[0].content,
        message(&a, &b, "retry-me").content
    );
    let history = store
        .history(&a, &b, 0, Direction::Newer, 50)
        .await
        .expect("history");
    assert_eq!(msgids(&history), vec![first.msgid]);
}

pub async fn concurrent_duplicates_store_one_message<S: MessageStore>(store: S) {
    let store = Arc::new(store);
    let a = user(4, "a");
    let b = user(4, "b");
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let store = Arc::clone(&store);
            let msg = message(&a, &b, "same");
            tokio::spawn(async move { store.append(msg).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task").expect("append"));
    }
    let originals = outcomes.iter().filter(|o| !o.duplicate).count();
    assert_eq!(originals, 1, "exactly one append stores the message");
    assert!(outcomes.iter().all(|o| o.msgid == outcomes[0].msgid));
    assert!(
        outcomes
            .iter()
            .all(|o| o.senddate_ms == outcomes[0].senddate_ms)
    );
    assert_eq!(
        pull_all(&*store, &b, "d", 50).await,
        vec![outcomes[0].msgid]
    );
}

pub async fn empty_client_msg_id_is_not_idempotent<S: MessageStore>(store: S) {
    let a = user(5, "a");
    let b = user(5, "b");
    let m1 = append_ok(&store, message(&a, &b, "")).await;
    let m2 = append_ok(&store, message(&a, &b, "")).await;
    assert_ne!(m1, m2);
    assert_eq!(pull_all(&store, &b, "d", 50).await, vec![m1, m2]);
}

pub async fn same_client_msg_id_from_other_device_or_user_is_a_new_message<S: MessageStore>(
    store: S,
) {
    let a = user(6, "a");
    let to = user(6, "to");
    let phone = message(&a, &to, "c-1");
    let mut web = phone.clone();
    web.from_device = "web".to_owned();
    let other_user = message(&user(6, "a2"), &to, "c-1");
    let other_appcode = message(&user(7, "a"), &to, "c-1");
    let mut ids = Vec::new();
    for msg in [phone, web, other_user, other_appcode] {
        ids.push(append_ok(&store, msg).await);
    }
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), 4);
    assert_eq!(pull_all(&store, &to, "d", 50).await, ids);
}

pub async fn ack_hides_from_that_device_only<S: MessageStore>(store: S) {
    let a = user(8, "a");
    let b = user(8, "b");
    let m1 = append_ok(&store, message(&a, &b, "1")).await;
    let m2 = append_ok(&store, message(&a, &b, "2")).await;
    let m3 = append_ok(&store, message(&a, &b, "3")).await;

    let ack = store.ack(&b, "phone", &[m1, m3]).await.expect("ack");
    assert_eq!(ack.acked, 2);
    assert!(ack.not_found.is_empty());
    assert_eq!(pull_all(&store, &b, "phone", 50).await, vec![m2]);
    assert_eq!(pull_all(&store, &b, "web", 50).await, vec![m1, m2, m3]);

    // Acking again (a retried MSG_ACK) gives the same answer and changes nothing.
    let again = store.ack(&b, "phone", &[m1, m3, m1]).await.expect("ack");
    assert_eq!(again.acked, 2);
    assert!(again.not_found.is_empty());
    assert_eq!(pull_all(&store, &b, "phone", 50).await, vec![m2]);

    // Acked messages stay in history.
    let history = store
        .history(&b, &a, 0, Direction::Newer, 50)
        .await
        .expect("history");
    assert_eq!(msgids(&history), vec![m1, m2, m3]);

    let empty = store.ack(&b, "phone", &[]).await.expect("ack");
    assert_eq!(empty, crate::AckOutcome::default());
}

pub async fn ack_of_foreign_or_unknown_msgid_is_not_found_and_changes_nothing<S: MessageStore>(
    store: S,
) {
    let a = user(9, "a");
    let b = user(9, "b");
    let eve = user(9, "eve");
    let b_other_tenant = user(10, "b");
    let m = append_ok(&store, message(&a, &b, "1")).await;
    let unknown = m + 1_000_000;

    for (who, device) in [(&eve, "phone"), (&a, "phone"), (&b_other_tenant, "phone")] {
        let ack = store.ack(who, device, &[m, unknown]).await.expect("ack");
        assert_eq!(ack.acked, 0, "{who:?} acked a message not in its inbox");
        assert_eq!(ack.not_found, vec![m, unknown]);
    }
    // The receiver still sees it on every device, including one named like the attacker's.
    assert_eq!(pull_all(&store, &b, "phone", 50).await, vec![m]);
    assert_eq!(pull_all(&store, &b, "web", 50).await, vec![m]);

    let mixed = store
        .ack(&b, "phone", &[unknown, m, unknown])
        .await
        .expect("ack");
    assert_eq!(mixed.acked, 1);
    assert_eq!(mixed.not_found, vec![unknown]);
    assert!(pull_all(&store, &b, "phone", 50).await.is_empty());
}

pub async fn pull_never_returns_other_users_messages<S: MessageStore>(store: S) {
    // Same uid under two appcodes, and uids that are prefixes of each other.
    let owners = [
        user(129, "u1"),
        user(130, "u1"),
        user(129, "u10"),
        user(129, "u"),
    ];
    let sender = user(1, "sender");
    let mut expected: HashMap<UserKey, Vec<u64>> = HashMap::new();
    for round in 0..3 {
        for (i, owner) in owners.iter().enumerate() {
            if round < i + 1 {
                let id = append_ok(&store, message(&sender, owner, &format!("{round}-{i}"))).await;
                expected.entry(owner.clone()).or_default().push(id);
            }
        }
    }
    for owner in &owners {
        let got = pull_all(&store, owner, "d", 2).await;
        assert_eq!(got, expected[owner], "inbox of {owner:?}");
    }
    assert!(pull_all(&store, &user(131, "u1"), "d", 2).await.is_empty());
    assert!(pull_all(&store, &sender, "d", 2).await.is_empty());
}

pub async fn history_has_both_directions_for_both_owners<S: MessageStore>(store: S) {
    let a = user(11, "a");
    let b = user(11, "b");
    let c = user(11, "c");
    let b_other_tenant = user(12, "b");
    let m1 = append_ok(&store, message(&a, &b, "1")).await;
    let m2 = append_ok(&store, message(&b, &a, "2")).await;
    let m3 = append_ok(&store, message(&a, &b, "3")).await;
    let m4 = append_ok(&store, message(&a, &c, "4")).await;
    let m5 = append_ok(&store, message(&c, &b, "5")).await;
    let m6 = append_ok(&store, message(&a, &a, "6")).await;
    let m7 = append_ok(&store, message(&a, &b_other_tenant, "7")).await;

    let newer = |owner: UserKey, peer: UserKey| {
        let store = &store;
        async move {
            let page = store
                .history(&owner, &peer, 0, Direction::Newer, 50)
                .await
                .expect("history");
            assert!(!page.more);
            msgids(&page)
        }
    };
    assert_eq!(newer(a.clone(), b.clone()).await, vec![m1, m2, m3]);
    assert_eq!(newer(b.clone(), a.clone()).await, vec![m1, m2, m3]);
    assert_eq!(newer(a.clone(), c.clone()).await, vec![m4]);
    assert_eq!(newer(c.clone(), a.clone()).await, vec![m4]);
    assert_eq!(newer(b.clone(), c.clone()).await, vec![m5]);
    assert_eq!(
        newer(a.clone(), a.clone()).await,
        vec![m6],
        "a note to self is listed once"
    );
    assert_eq!(newer(a.clone(), b_other_tenant.clone()).await, vec![m7]);
    assert_eq!(newer(b_other_tenant.clone(), a.clone()).await, vec![m7]);
    assert!(newer(b.clone(), b_other_tenant).await.is_empty());

    let older = store
        .history(&b, &a, 0, Direction::Older, 50)
        .await
        .expect("history");
    assert_eq!(msgids(&older), vec![m3, m2, m1]);
    assert!(!older.more);
    assert_eq!(older.next_cursor, m1);
    // Each side's rows carry the true sender and receiver.
    assert_eq!(older.messages[1].from, b);
    assert_eq!(older.messages[1].to, a);
}

pub async fn history_pages_older_and_newer<S: MessageStore>(store: S) {
    let a = user(13, "a");
    let b = user(13, "b");
    let mut ids = Vec::new();
    for i in 0..7 {
        let (from, to) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        ids.push(append_ok(&store, message(from, to, &format!("{i}"))).await);
    }

    // Older from the newest, pages of 3: [7 6 5] [4 3 2] [1].
    let mut cursor = 0;
    let mut pages = Vec::new();
    loop {
        let page = store
            .history(&a, &b, cursor, Direction::Older, 3)
            .await
            .expect("history");
        let got = msgids(&page);
        assert_eq!(page.next_cursor, got.last().copied().unwrap_or(cursor));
        pages.push((got, page.more));
        cursor = page.next_cursor;
        if !page.more {
            break;
        }
    }
    let rev: Vec<u64> = ids.iter().rev().copied().collect();
    assert_eq!(
        pages,
        vec![
            (rev[0..3].to_vec(), true),
            (rev[3..6].to_vec(), true),
            (rev[6..].to_vec(), false)
        ]
    );
    let before_first = store
        .history(&a, &b, ids[0], Direction::Older, 3)
        .await
        .expect("history");
    assert!(before_first.messages.is_empty());
    assert!(!before_first.more);
    assert_eq!(before_first.next_cursor, ids[0]);

    // Newer from the start, pages of 3: [1 2 3] [4 5 6] [7].
    let mut cursor = 0;
    let mut pages = Vec::new();
    loop {
        let page = store
            .history(&b, &a, cursor, Direction::Newer, 3)
            .await
            .expect("history");
        pages.push((msgids(&page), page.more));
        cursor = page.next_cursor;
        if !page.more {
            break;
        }
    }
    assert_eq!(
        pages,
        vec![
            (ids[0..3].to_vec(), true),
            (ids[3..6].to_vec(), true),
            (ids[6..].to_vec(), false)
        ]
    );
    let after_last = store
        .history(&b, &a, cursor, Direction::Newer, 3)
        .await
        .expect("history");
    assert!(after_last.messages.is_empty());
    assert_eq!(after_last.next_cursor, ids[6]);

    // A cursor in the middle, both ways (exclusive).
    let mid = ids[3];
    let older = store
        .history(&a, &b, mid, Direction::Older, 50)
        .await
        .expect("history");
    assert_eq!(msgids(&older), vec![ids[2], ids[1], ids[0]]);
    let newer = store
        .history(&a, &b, mid, Direction::Newer, 50)
        .await
        .expect("history");
    assert_eq!(msgids(&newer), ids[4..].to_vec());
}

pub async fn bad_arguments_are_rejected<S: MessageStore>(store: S) {
    let ok = user(14, "ok");
    let empty = user(14, "");
    let long = user(14, &"x".repeat(MAX_ID_BYTES + 1));
    assert_invalid(store.append(message(&ok, &empty, "1")).await, "empty to");
    assert_invalid(store.append(message(&empty, &ok, "1")).await, "empty from");
    assert_invalid(store.append(message(&ok, &long, "1")).await, "long to");
    let mut long_device = message(&ok, &ok, "1");
    long_device.from_device = "d".repeat(MAX_ID_BYTES + 1);
    assert_invalid(store.append(long_device).await, "long device");
    assert_invalid(
        store
            .append(message(&ok, &ok, &"c".repeat(MAX_ID_BYTES + 1)))
            .await,
        "long client_msg_id",
    );
    assert_invalid(
        store.pull_offline(&empty, "d", 0, 10).await,
        "pull empty owner",
    );
    assert_invalid(
        store.history(&ok, &empty, 0, Direction::Older, 10).await,
        "history empty peer",
    );
    assert_invalid(store.ack(&empty, "d", &[1]).await, "ack empty owner");
    let too_many: Vec<u64> = (1..=MAX_ACK_IDS as u64 + 1).collect();
    assert_invalid(store.ack(&ok, "d", &too_many).await, "too many acks");
    // Nothing was stored by the rejected calls.
    assert!(pull_all(&store, &ok, "d", 50).await.is_empty());
    let self_history = store
        .history(&ok, &ok, 0, Direction::Older, 50)
        .await
        .expect("history");
    assert!(self_history.messages.is_empty());
}

/// Deterministic xorshift, so the model test needs no RNG dependency and always replays.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Random appends (with retried keys), acks (own and foreign msgids), pulls and history pages,
/// each checked against an in-memory model of the semantics.
pub async fn random_operations_match_a_model<S: MessageStore>(store: S) {
    let users = [user(20, "a"), user(20, "b"), user(21, "a"), user(20, "c")];
    let devices = ["phone", "web"];
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    // The model: every message, the keys seen, and acks per (owner, device).
    let mut messages: BTreeMap<u64, (UserKey, UserKey)> = BTreeMap::new();
    let mut keys: HashMap<(UserKey, String, String), u64> = HashMap::new();
    let mut acked: BTreeSet<(UserKey, &str, u64)> = BTreeSet::new();
    let mut last_msgid = 0;

    for step in 0..400 {
        match rng.below(10) {
            0..=3 => {
                let from = users[rng.below(users.len())].clone();
                let to = users[rng.below(users.len())].clone();
                let device = devices[rng.below(2)];
                // A small key space makes retries (duplicates) common; "" is never a key.
                let client_msg_id = match rng.below(4) {
                    0 => String::new(),
                    _ => format!("k{}", rng.below(40)),
                };
                let mut msg = message(&from, &to, &client_msg_id);
                msg.from_device = device.to_owned();
                let outcome = store.append(msg).await.expect("append");
                let key = (from.clone(), device.to_owned(), client_msg_id.clone());
                match keys.get(&key).filter(|_| !client_msg_id.is_empty()) {
                    Some(&original) => {
                        assert!(outcome.duplicate, "step {step}: retry not recognised");
                        assert_eq!(outcome.msgid, original, "step {step}");
                    }
                    None => {
                        assert!(
                            !outcome.duplicate,
                            "step {step}: fresh message called duplicate"
                        );
                        assert!(outcome.msgid > last_msgid, "step {step}: msgid went back");
                        last_msgid = outcome.msgid;
                        messages.insert(outcome.msgid, (from, to));
                        if !client_msg_id.is_empty() {
                            keys.insert(key, outcome.msgid);
                        }
                    }
                }
            }
            4 | 5 => {
                let owner = users[rng.below(users.len())].clone();
                let device = devices[rng.below(2)];
                let all: Vec<u64> = messages.keys().copied().collect();
                let picks: Vec<u64> = if all.is_empty() {
                    Vec::new()
                } else {
                    (0..rng.below(5))
                        .map(|_| all[rng.below(all.len())])
                        .collect()
                };
                let outcome = store.ack(&owner, device, &picks).await.expect("ack");
                let mut distinct = BTreeSet::new();
                let mut expected_acked = 0;
                let mut expected_not_found = Vec::new();
                for &id in &picks {
                    if !distinct.insert(id) {
                        continue;
                    }
                    if messages[&id].1 == owner {
                        expected_acked += 1;
                        acked.insert((owner.clone(), device, id));
                    } else {
                        expected_not_found.push(id);
                    }
                }
                assert_eq!(outcome.acked, expected_acked, "step {step}");
                assert_eq!(outcome.not_found, expected_not_found, "step {step}");
            }
            6..=8 => {
                let owner = users[rng.below(users.len())].clone();
                let device = devices[rng.below(2)];
                let limit = 1 + rng.below(6) as u32;
                let inbox: Vec<u64> = messages
                    .iter()
                    .filter(|(id, (_, to))| {
                        *to == owner && !acked.contains(&(owner.clone(), device, **id))
                    })
                    .map(|(id, _)| *id)
                    .collect();
                let cursor = match rng.below(3) {
                    0 => 0,
                    _ if inbox.is_empty() => 0,
                    _ => inbox[rng.below(inbox.len())],
                };
                let page = store
                    .pull_offline(&owner, device, cursor, limit)
                    .await
                    .expect("pull");
                let rest: Vec<u64> = inbox.into_iter().filter(|&id| id > cursor).collect();
                let expected: Vec<u64> = rest.iter().take(limit as usize).copied().collect();
                assert_eq!(msgids(&page), expected, "step {step}: pull page");
                assert_eq!(page.more, rest.len() > limit as usize, "step {step}: more");
                check_pull_page(&page, &owner, cursor, limit);
            }
            _ => {
                let owner = users[rng.below(users.len())].clone();
                let peer = users[rng.below(users.len())].clone();
                let limit = 1 + rng.below(6) as u32;
                let conversation: Vec<u64> = messages
                    .iter()
                    .filter(|(_, (f, t))| {
                        (*f == owner && *t == peer) || (*f == peer && *t == owner)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                let cursor = if conversation.is_empty() || rng.below(3) == 0 {
                    0
                } else {
                    conversation[rng.below(conversation.len())]
                };
                let direction = if rng.below(2) == 0 {
                    Direction::Older
                } else {
                    Direction::Newer
                };
                let page = store
                    .history(&owner, &peer, cursor, direction, limit)
                    .await
                    .expect("history");
                let rest: Vec<u64> = match direction {
                    Direction::Older => conversation
                        .iter()
                        .rev()
                        .filter(|&&id| cursor == 0 || id < cursor)
                        .copied()
                        .collect(),
                    Direction::Newer => conversation
                        .iter()
                        .filter(|&&id| id > cursor)
                        .copied()
                        .collect(),
                };
                let expected: Vec<u64> = rest.iter().take(limit as usize).copied().collect();
                assert_eq!(
                    msgids(&page),
                    expected,
                    "step {step}: history {direction:?}"
                );
                assert_eq!(page.more, rest.len() > limit as usize, "step {step}: more");
                assert_eq!(page.next_cursor, expected.last().copied().unwrap_or(cursor));
            }
        }
    }
    assert!(
        messages.len() > 50,
        "the model run should store a fair number of messages"
    );
    assert!(!acked.is_empty(), "the model run should ack something");
}

pub async fn prev_msgid_links_each_conversation<S: MessageStore>(store: S) {
    let a = user(11, "a");
    let b = user(11, "b");
    let c = user(11, "c");
    let first = store.append(message(&a, &b, "p1")).await.expect("append");
    assert_eq!(
        first.prev_msgid, 0,
        "the first message of a conversation has no predecessor"
    );
    let other = store.append(message(&a, &c, "p2")).await.expect("append");
    assert_eq!(
        other.prev_msgid, 0,
        "another conversation starts its own chain"
    );
    let reply = store.append(message(&b, &a, "p3")).await.expect("append");
    assert_eq!(
        reply.prev_msgid, first.msgid,
        "either direction continues the chain"
    );
    let third = store.append(message(&a, &b, "p4")).await.expect("append");
    assert_eq!(third.prev_msgid, reply.msgid);
    let retry = store.append(message(&a, &b, "p4")).await.expect("append");
    assert_eq!((retry.duplicate, retry.prev_msgid), (true, reply.msgid));
    let page = store.pull_offline(&b, "d", 0, 50).await.expect("pull");
    let prevs: Vec<(u64, u64)> = page
        .messages
        .iter()
        .map(|m| (m.msgid, m.prev_msgid))
        .collect();
    assert_eq!(prevs, vec![(first.msgid, 0), (third.msgid, reply.msgid)]);
}

pub async fn delivery_state_moves_stored_pushed_acked_per_device<S: MessageStore>(store: S) {
    use crate::DeliveryState;
    let a = user(11, "a");
    let b = user(11, "b");
    let m1 = append_ok(&store, message(&a, &b, "d1")).await;
    let m2 = append_ok(&store, message(&a, &b, "d2")).await;
    assert_eq!(
        store.delivery_state(&b, "phone", m1).await.unwrap(),
        Some(DeliveryState::Stored)
    );
    store.record_pushed(&b, "phone", &[m1]).await.unwrap();
    // Writes are applied in order: once this ack is committed, the push record is too.
    store.ack(&b, "phone", &[m2]).await.unwrap();
    assert_eq!(
        store.delivery_state(&b, "phone", m1).await.unwrap(),
        Some(DeliveryState::Pushed)
    );
    assert_eq!(
        store.delivery_state(&b, "tablet", m1).await.unwrap(),
        Some(DeliveryState::Stored)
    );
    assert_eq!(
        store.delivery_state(&b, "phone", m2).await.unwrap(),
        Some(DeliveryState::Acked)
    );
    store.ack(&b, "phone", &[m1]).await.unwrap();
    assert_eq!(
        store.delivery_state(&b, "phone", m1).await.unwrap(),
        Some(DeliveryState::Acked)
    );
    // Not in the asker's inbox: no state (the same answer for absent and not yours).
    assert_eq!(store.delivery_state(&a, "phone", m1).await.unwrap(), None);
    assert_eq!(
        store.delivery_state(&b, "phone", 12345).await.unwrap(),
        None
    );
    // Recording a push of someone else's message changes nothing.
    store.record_pushed(&a, "phone", &[m1]).await.unwrap();
    store.ack(&b, "phone", &[m2]).await.unwrap();
    assert_eq!(store.delivery_state(&a, "phone", m1).await.unwrap(), None);
}

pub async fn s2c_reaches_each_recipients_inbox_once_with_one_msgid<S: MessageStore>(store: S) {
    let (alice, bob, carol) = (user(11, "alice"), user(11, "bob"), user(11, "carol"));
    let outcome = store
        .append_s2c(crate::NewS2c {
            appcode: 11,
            from: "order-service".to_owned(),
            msgtype: 7,
            content_type: 0,
            content: Bytes::from_static(b"order 42 is near you"),
            log_id: 99,
            recipients: vec!["alice".into(), "bob".into(), "alice".into()],
        })
        .await
        .expect("append_s2c");
    for owner in [&alice, &bob] {
        let page = store
            .pull_offline(owner, "phone", 0, 50)
            .await
            .expect("pull");
        assert_eq!(msgids(&page), vec![outcome.msgid], "{owner:?}");
        let m = &page.messages[0];
        assert!(m.is_s2c());
        assert_eq!(m.from, user(11, "order-service"));
        assert_eq!(&m.to, owner);
        assert_eq!(m.msgtype, 7);
        assert_eq!(&m.content[..], b"order 42 is near you");
        assert_eq!(m.log_id, 99);
        assert_eq!(m.senddate_ms, outcome.senddate_ms);
    }
    assert!(pull_all(&store, &carol, "phone", 50).await.is_empty());
    // Each recipient acks for itself; the other still has it.
    let ack = store
        .ack(&alice, "phone", &[outcome.msgid])
        .await
        .expect("ack");
    assert_eq!(ack.acked, 1);
    assert!(
        ack.first_delivered.is_empty(),
        "an s2c push has no sender to tell: {:?}",
        ack.first_delivered
    );
    assert!(pull_all(&store, &alice, "phone", 50).await.is_empty());
    assert_eq!(
        pull_all(&store, &bob, "phone", 50).await,
        vec![outcome.msgid]
    );
    // Carol is not a recipient: her ack finds nothing.
    let ack = store
        .ack(&carol, "phone", &[outcome.msgid])
        .await
        .expect("ack");
    assert_eq!(ack.not_found, vec![outcome.msgid]);

    // Online-only: a record with a fresh, larger msgid and no inbox rows.
    let online_only = store
        .append_s2c(crate::NewS2c {
            recipients: Vec::new(),
            ..crate::NewS2c {
                appcode: 11,
                from: "system".to_owned(),
                msgtype: 8,
                content_type: 0,
                content: Bytes::from_static(b"offer"),
                log_id: 100,
                recipients: Vec::new(),
            }
        })
        .await
        .expect("append_s2c");
    assert!(online_only.msgid > outcome.msgid);
    assert_eq!(
        pull_all(&store, &bob, "phone", 50).await,
        vec![outcome.msgid]
    );

    let bad = store
        .append_s2c(crate::NewS2c {
            appcode: 11,
            from: "system".to_owned(),
            msgtype: 1,
            content_type: 0,
            content: Bytes::new(),
            log_id: 0,
            recipients: vec![String::new()],
        })
        .await;
    assert!(
        matches!(bad, Err(StoreError::InvalidArgument(_))),
        "{bad:?}"
    );
}

pub async fn first_delivery_is_reported_once_and_history_shows_it<S: MessageStore>(store: S) {
    let (alice, bob) = (user(12, "alice"), user(12, "bob"));
    let m1 = append_ok(&store, message(&alice, &bob, "d1")).await;
    let m2 = append_ok(&store, message(&alice, &bob, "d2")).await;
    let delivered = |page: &Page| -> Vec<(u64, bool)> {
        page.messages
            .iter()
            .map(|m| (m.msgid, m.delivered))
            .collect()
    };
    let history = store
        .history(&alice, &bob, 0, Direction::Newer, 50)
        .await
        .expect("history");
    assert_eq!(delivered(&history), vec![(m1, false), (m2, false)]);

    // The first device to ack m1 delivers it; the sender is named.
    let ack = store.ack(&bob, "phone", &[m1]).await.expect("ack");
    assert_eq!(
        ack.first_delivered,
        vec![crate::Delivered {
            msgid: m1,
            from: alice.clone()
        }]
    );
    // Another device acking both delivers only m2 for the first time; a repeat delivers none.
    let ack = store.ack(&bob, "pad", &[m2, m1]).await.expect("ack");
    assert_eq!(ack.acked, 2);
    assert_eq!(
        ack.first_delivered,
        vec![crate::Delivered {
            msgid: m2,
            from: alice.clone()
        }]
    );
    let again = store.ack(&bob, "phone", &[m1, m2]).await.expect("ack");
    assert!(again.first_delivered.is_empty(), "{again:?}");
    // Alice cannot ack her own message into "delivered" (it is not in her inbox).
    let m3 = append_ok(&store, message(&alice, &bob, "d3")).await;
    let foreign = store.ack(&alice, "phone", &[m3]).await.expect("ack");
    assert_eq!(foreign.not_found, vec![m3]);
    assert!(foreign.first_delivered.is_empty());
    // Both owners' histories show the state.
    for (owner, peer) in [(&alice, &bob), (&bob, &alice)] {
        let history = store
            .history(owner, peer, 0, Direction::Newer, 50)
            .await
            .expect("history");
        assert_eq!(
            delivered(&history),
            vec![(m1, true), (m2, true), (m3, false)],
            "{owner:?}"
        );
    }
}

pub async fn conversations_list_peers_with_unread_counts_and_read_marks<S: MessageStore>(store: S) {
    let (alice, bob, carol) = (user(13, "alice"), user(14, "bob"), user(13, "carol"));
    let b1 = append_ok(&store, message(&bob, &alice, "b1")).await;
    let b2 = append_ok(&store, message(&bob, &alice, "b2")).await;
    let a1 = append_ok(&store, message(&alice, &bob, "a1")).await;
    let b3 = append_ok(&store, message(&bob, &alice, "b3")).await;
    let c1 = append_ok(&store, message(&carol, &alice, "c1")).await;
    // Noise: a conversation alice is not part of.
    let other = append_ok(&store, message(&bob, &carol, "x1")).await;

    let page = store.conversations(&alice, 0, 0).await.expect("list");
    assert!(!page.more);
    let summary: Vec<(UserKey, u64, u32, u64, u64)> = page
        .conversations
        .iter()
        .map(|c| {
            (
                c.peer.clone(),
                c.last.msgid,
                c.unread,
                c.read_upto,
                c.peer_read_upto,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![(carol.clone(), c1, 1, 0, 0), (bob.clone(), b3, 3, 0, 0)],
        "most recent first; unread counts only the peer's messages"
    );
    assert_eq!(page.conversations[0].last.from, carol);
    assert_eq!(&page.conversations[1].last.content[..], b"bob->alice b3");

    // Paging: one at a time, by the last msgid of the previous page.
    let first = store.conversations(&alice, 0, 1).await.expect("page 1");
    assert!(first.more);
    assert_eq!(first.conversations[0].peer, carol);
    let second = store.conversations(&alice, c1, 1).await.expect("page 2");
    assert!(!second.more);
    assert_eq!(second.conversations[0].peer, bob);

    // Reading moves forward only, and only to messages of that conversation.
    let mark = store.mark_read(&alice, &bob, b2).await.expect("mark");
    assert_eq!(
        mark,
        Some(crate::ReadMark {
            read_upto: b2,
            unread: 1
        })
    );
    let stays = store.mark_read(&alice, &bob, b1).await.expect("older mark");
    assert_eq!(stays.map(|m| m.read_upto), Some(b2));
    assert_eq!(
        store.mark_read(&alice, &bob, c1).await.expect("wrong"),
        None
    );
    assert_eq!(
        store.mark_read(&alice, &bob, other).await.expect("foreign"),
        None
    );
    assert_eq!(
        store
            .mark_read(&alice, &bob, u64::MAX)
            .await
            .expect("absent"),
        None
    );
    // Alice's own message counts as read-through too (she may mark up to any message).
    let mark = store
        .mark_read(&alice, &bob, a1)
        .await
        .expect("own message");
    assert_eq!(mark.map(|m| (m.read_upto, m.unread)), Some((a1, 1)));

    let page = store.conversations(&alice, 0, 0).await.expect("list");
    let bob_row = &page.conversations[1];
    assert_eq!((bob_row.unread, bob_row.read_upto), (1, a1));
    // Bob sees alice's mark as the peer's; his own unread count is about alice's messages.
    let page = store.conversations(&bob, 0, 0).await.expect("bob's list");
    let with_alice = page
        .conversations
        .iter()
        .find(|c| c.peer == alice)
        .expect("bob has alice");
    assert_eq!(
        (
            with_alice.peer_read_upto,
            with_alice.unread,
            with_alice.last.msgid
        ),
        (a1, 1, b3)
    );
    let mark = store.mark_read(&alice, &bob, b3).await.expect("all read");
    assert_eq!(mark.map(|m| m.unread), Some(0));
}
