//! End to end over real sockets: delivery receipts (a receiver's ACK reaches the sender live
//! and shows in history), the conversation list with unread counts, and read marks shared by
//! a user's devices (MARK_READ, read receipts).

use longlink_sdk::{
    ClientError, Content, ErrorCode, Event, HistoryDirection, Incoming, Message, Receipt,
    ReceiptKind, UserRef,
};
use longlink_testkit::{TestServer, WAIT};

async fn next_message(incoming: &mut Incoming) -> Message {
    loop {
        match tokio::time::timeout(WAIT, incoming.next_event()).await {
            Ok(Some(Event::Message(message))) => return message,
            Ok(Some(Event::Receipt(_) | Event::Error { .. })) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Collects receipts of `kind` until `done` says enough (messages and other events are skipped).
async fn receipts_until(
    incoming: &mut Incoming,
    kind: ReceiptKind,
    mut done: impl FnMut(&[Receipt]) -> bool,
) -> Vec<Receipt> {
    let mut got = Vec::new();
    while !done(&got) {
        match tokio::time::timeout(WAIT, incoming.next_event()).await {
            Ok(Some(Event::Receipt(receipt))) if receipt.kind == kind => got.push(receipt),
            Ok(Some(Event::Receipt(_) | Event::Message(_) | Event::Error { .. })) => {}
            other => panic!("expected a {kind:?} receipt, got {other:?} after {got:?}"),
        }
    }
    got
}

fn server_code(err: &ClientError) -> Option<ErrorCode> {
    match err {
        ClientError::Server { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn the_sender_learns_of_delivery_live_and_from_history() {
    let server = TestServer::start().await;
    let bob_ref = UserRef::new(130, "bob");
    let (alice, mut alice_in) = server.client(129, "alice", "phone").await;
    // Sent while bob is offline: stored, not delivered.
    let offline = alice
        .c2c(bob_ref.clone(), Content::text("first"))
        .await
        .unwrap();
    let page = alice
        .history(bob_ref.clone(), 0, HistoryDirection::Newer, 0)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    assert!(!page.messages[0].delivered, "nobody acked it yet");

    // Bob logs in on two devices; the first ack of each message is the delivery.
    let (_bob, mut bob_in) = server.client(130, "bob", "phone").await;
    let (_bob_pad, mut bob_pad_in) = server.client(130, "bob", "pad").await;
    assert_eq!(next_message(&mut bob_in).await.msgid, offline.msgid);
    let online = alice
        .c2c(bob_ref.clone(), Content::text("second"))
        .await
        .unwrap();
    assert_eq!(next_message(&mut bob_in).await.msgid, online.msgid);
    let receipts = receipts_until(&mut alice_in, ReceiptKind::Delivered, |got| {
        got.iter().map(|r| r.msgids.len()).sum::<usize>() >= 2
    })
    .await;
    let mut delivered: Vec<u64> = receipts.iter().flat_map(|r| r.msgids.clone()).collect();
    delivered.sort_unstable();
    assert_eq!(delivered, vec![offline.msgid, online.msgid]);
    for receipt in &receipts {
        assert_eq!(receipt.by, bob_ref);
        assert_eq!(receipt.by_device, "phone");
    }
    // The pad's acks of the same messages are not news: no second receipt. Prove it with a
    // third message the pad acks first — its receipt is the next one alice sees.
    assert_eq!(next_message(&mut bob_pad_in).await.msgid, offline.msgid);
    assert_eq!(next_message(&mut bob_pad_in).await.msgid, online.msgid);
    let third = alice
        .c2c(bob_ref.clone(), Content::text("third"))
        .await
        .unwrap();
    assert_eq!(next_message(&mut bob_pad_in).await.msgid, third.msgid);
    let next = receipts_until(&mut alice_in, ReceiptKind::Delivered, |got| !got.is_empty()).await;
    assert_eq!(next[0].msgids, vec![third.msgid], "{next:?}");

    // History shows the state to any device of alice, also one that was not online.
    let (alice_web, _alice_web_in) = server.client(129, "alice", "web").await;
    let page = alice_web
        .history(bob_ref, 0, HistoryDirection::Newer, 0)
        .await
        .unwrap();
    let states: Vec<(u64, bool)> = page
        .messages
        .iter()
        .map(|m| (m.msgid, m.delivered))
        .collect();
    assert_eq!(
        states,
        vec![
            (offline.msgid, true),
            (online.msgid, true),
            (third.msgid, true)
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn conversations_show_unread_counts_and_read_marks_travel_to_the_peer() {
    let server = TestServer::start().await;
    let (alice_ref, bob_ref, carol_ref) = (
        UserRef::new(129, "alice"),
        UserRef::new(130, "bob"),
        UserRef::new(129, "carol"),
    );
    let (bob, mut bob_in) = server.client(130, "bob", "phone").await;
    let (carol, _carol_in) = server.client(129, "carol", "phone").await;
    let mut from_bob = Vec::new();
    for i in 0..3 {
        let sent = bob
            .c2c(alice_ref.clone(), Content::text(format!("b{i}")))
            .await
            .unwrap();
        from_bob.push(sent.msgid);
    }
    let from_carol = carol
        .c2c(alice_ref.clone(), Content::text("hello from carol"))
        .await
        .unwrap();

    // Alice was offline for all of it; her phone pulls, acks — and still has them unread.
    let (alice, mut alice_in) = server.client(129, "alice", "phone").await;
    for _ in 0..4 {
        next_message(&mut alice_in).await;
    }
    let (list, more) = alice.conversations(0, 0).await.unwrap();
    assert!(!more);
    let rows: Vec<(UserRef, u64, u32)> = list
        .iter()
        .map(|c| {
            (
                c.with.clone(),
                c.last.as_ref().map_or(0, |m| m.msgid),
                c.unread,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (carol_ref.clone(), from_carol.msgid, 1),
            (bob_ref.clone(), from_bob[2], 3)
        ]
    );
    assert_eq!(
        list[0].last.as_ref().map(|m| m.content.clone()),
        Some(Content::text("hello from carol"))
    );
    // Paging by the last entry's msgid.
    let (first, more) = alice.conversations(0, 1).await.unwrap();
    assert!(more);
    let (second, more) = alice.conversations(from_carol.msgid, 1).await.unwrap();
    assert!(!more);
    assert_eq!(
        (first[0].with.clone(), second[0].with.clone()),
        (carol_ref, bob_ref.clone())
    );

    // Alice reads bob's first two on her phone: bob sees it live, her pad sees the count.
    let (read_upto, unread) = alice.mark_read(bob_ref.clone(), from_bob[1]).await.unwrap();
    assert_eq!((read_upto, unread), (from_bob[1], 1));
    let read = receipts_until(&mut bob_in, ReceiptKind::Read, |got| !got.is_empty()).await;
    assert_eq!(read[0].by, alice_ref);
    assert_eq!(read[0].by_device, "phone");
    assert_eq!(read[0].read_upto, from_bob[1]);
    let (alice_pad, _alice_pad_in) = server.client(129, "alice", "pad").await;
    let (list, _) = alice_pad.conversations(0, 0).await.unwrap();
    let with_bob = list.iter().find(|c| c.with == bob_ref).expect("bob listed");
    assert_eq!((with_bob.unread, with_bob.read_upto), (1, from_bob[1]));
    let (list, _) = bob.conversations(0, 0).await.unwrap();
    let with_alice = list
        .iter()
        .find(|c| c.with == alice_ref)
        .expect("alice listed");
    assert_eq!(with_alice.peer_read_upto, from_bob[1]);
    // Marks never move back.
    let (read_upto, _) = alice.mark_read(bob_ref.clone(), from_bob[0]).await.unwrap();
    assert_eq!(read_upto, from_bob[1]);

    // Someone else's msgid, an absent one, and no msgid are refused and change nothing.
    let foreign = alice
        .mark_read(bob_ref.clone(), from_carol.msgid)
        .await
        .unwrap_err();
    assert_eq!(
        server_code(&foreign),
        Some(ErrorCode::NotFound),
        "{foreign:?}"
    );
    let absent = alice
        .mark_read(bob_ref.clone(), u64::MAX >> 1)
        .await
        .unwrap_err();
    assert_eq!(
        server_code(&absent),
        Some(ErrorCode::NotFound),
        "{absent:?}"
    );
    let zero = alice.mark_read(bob_ref.clone(), 0).await.unwrap_err();
    assert_eq!(
        server_code(&zero),
        Some(ErrorCode::InvalidArgument),
        "{zero:?}"
    );
    let (list, _) = alice.conversations(0, 0).await.unwrap();
    let with_bob = list.iter().find(|c| c.with == bob_ref).expect("bob listed");
    assert_eq!((with_bob.unread, with_bob.read_upto), (1, from_bob[1]));
    server.stop().await;
}
