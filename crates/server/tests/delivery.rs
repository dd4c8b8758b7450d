//! c2c delivery guarantees over the real server: idempotent send (also across a restart),
//! redelivery of unacknowledged messages, multi-device, content types, paging under
//! concurrent inserts.

use std::collections::BTreeSet;

use longlink_proto::{Cmd, ContentType, Frame, FrameType, wire};
use longlink_sdk::{
    Client, ClientConfig, Content, Event, HistoryDirection, Incoming, Message, UserRef,
};
use longlink_testkit::{RawClient, TestServer, WAIT, is_response};

async fn next_message(incoming: &mut Incoming) -> Message {
    loop {
        match tokio::time::timeout(WAIT, incoming.next_event()).await {
            Ok(Some(Event::Message(message))) => return message,
            Ok(Some(Event::Error { .. } | Event::Receipt(_))) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// The MSG pushes a raw (never-acking) client receives until `want` have arrived.
async fn raw_pushes(raw: &mut RawClient, want: usize) -> Vec<wire::Msg> {
    let mut got = Vec::new();
    while got.len() < want {
        let frame = raw.recv().await.expect("a push");
        if frame.cmd() == Some(Cmd::Msg) && frame.header.frame_type == FrameType::Push {
            got.push(frame.decode_body::<wire::Msg>().unwrap());
        }
    }
    got
}

#[tokio::test]
async fn a_retry_with_the_same_client_msg_id_stores_nothing_new_even_after_a_restart() {
    let mut server = TestServer::start().await;
    let (alice, _a) = server.client(129, "alice", "phone").await;
    let first = alice
        .c2c_with_id(UserRef::new(130, "bob"), "cm-1", Content::text("once"))
        .await
        .unwrap();
    let again = alice
        .c2c_with_id(UserRef::new(130, "bob"), "cm-1", Content::text("once"))
        .await
        .unwrap();
    assert_eq!((again.msgid, again.duplicate), (first.msgid, true));
    alice.close().await;

    server.restart().await;

    let (alice, _a) = server.client(129, "alice", "phone").await;
    let after = alice
        .c2c_with_id(UserRef::new(130, "bob"), "cm-1", Content::text("once"))
        .await
        .unwrap();
    assert_eq!((after.msgid, after.duplicate), (first.msgid, true));
    // The same id from another device of alice is another message.
    let (alice_web, _w) = server.client(129, "alice", "web").await;
    let other = alice_web
        .c2c_with_id(UserRef::new(130, "bob"), "cm-1", Content::text("from web"))
        .await
        .unwrap();
    assert_ne!(other.msgid, first.msgid);
    let (bob, _b) = server.client_without_auto_ack(130, "bob", "phone").await;
    let ids: Vec<u64> = bob
        .pull_all_offline()
        .await
        .unwrap()
        .iter()
        .map(|m| m.msgid)
        .collect();
    assert_eq!(
        ids,
        vec![first.msgid, other.msgid],
        "one stored row per client message id"
    );
    server.stop().await;
}

#[tokio::test]
async fn unacked_messages_are_redelivered_at_the_next_login_of_that_device() {
    let server = TestServer::start().await;
    let token = server.token(130, "bob");
    // bob's phone receives two pushes but never acks them, then its link dies.
    let mut phone = RawClient::connect(server.gate_addr()).await.unwrap();
    assert!(is_response(
        &phone.login(130, &token, "phone").await.unwrap(),
        Cmd::Login
    ));
    let (alice, _a) = server.client(129, "alice", "phone").await;
    let m1 = alice
        .c2c(UserRef::new(130, "bob"), Content::text("one"))
        .await
        .unwrap();
    let m2 = alice
        .c2c(UserRef::new(130, "bob"), Content::text("two"))
        .await
        .unwrap();
    let pushed = raw_pushes(&mut phone, 2).await;
    assert_eq!(
        pushed.iter().map(|m| m.msgid).collect::<Vec<_>>(),
        vec![m1.msgid, m2.msgid]
    );
    drop(phone);

    // The same device logs in again: both come again, pushed, before anything else.
    let mut phone = RawClient::connect(server.gate_addr()).await.unwrap();
    assert!(is_response(
        &phone.login(130, &token, "phone").await.unwrap(),
        Cmd::Login
    ));
    let again = raw_pushes(&mut phone, 2).await;
    assert_eq!(
        again.iter().map(|m| m.msgid).collect::<Vec<_>>(),
        vec![m1.msgid, m2.msgid]
    );
    // Ack the first (batched type-3 ack), then ask with a request to be sure it was applied.
    phone
        .send(Frame::new(
            Cmd::MsgAck,
            FrameType::Ack,
            0,
            0,
            &wire::MsgAck {
                msgids: vec![m1.msgid],
            },
        ))
        .await
        .unwrap();
    phone
        .send(Frame::request(
            Cmd::MsgAck,
            21,
            0,
            &wire::MsgAck {
                msgids: vec![m1.msgid],
            },
        ))
        .await
        .unwrap();
    let answer = phone.recv().await.unwrap();
    assert!(is_response(&answer, Cmd::MsgAck), "{answer:?}");
    drop(phone);

    // Only the unacked one comes back, and a pull agrees.
    let mut phone = RawClient::connect(server.gate_addr()).await.unwrap();
    assert!(is_response(
        &phone.login(130, &token, "phone").await.unwrap(),
        Cmd::Login
    ));
    let third = raw_pushes(&mut phone, 1).await;
    assert_eq!(third[0].msgid, m2.msgid);
    phone
        .send(Frame::request(
            Cmd::OfflinePull,
            22,
            0,
            &wire::OfflinePullRequest::default(),
        ))
        .await
        .unwrap();
    let page = loop {
        let frame = phone.recv().await.unwrap();
        if is_response(&frame, Cmd::OfflinePull) {
            break frame.decode_body::<wire::OfflinePullResponse>().unwrap();
        }
    };
    assert_eq!(
        page.messages.iter().map(|m| m.msgid).collect::<Vec<_>>(),
        vec![m2.msgid]
    );
    assert!(!page.more);
    // Another device of bob still has both: acks are per device.
    let (tablet, _t) = server.client_without_auto_ack(130, "bob", "tablet").await;
    let ids: Vec<u64> = tablet
        .pull_all_offline()
        .await
        .unwrap()
        .iter()
        .map(|m| m.msgid)
        .collect();
    assert_eq!(ids, vec![m1.msgid, m2.msgid]);
    server.stop().await;
}

#[tokio::test]
async fn every_device_of_both_users_sees_the_conversation() {
    let server = TestServer::start().await;
    let (alice_phone, mut alice_phone_in) = server.client(129, "alice", "phone").await;
    let (_alice_web, mut alice_web_in) = server.client(129, "alice", "web").await;
    let (bob_phone, mut bob_phone_in) = server.client(130, "bob", "phone").await;
    let (_bob_web, mut bob_web_in) = server.client(130, "bob", "web").await;

    let sent = alice_phone
        .c2c(UserRef::new(130, "bob"), Content::text("to all of bob"))
        .await
        .unwrap();
    // Both of bob's devices get it, and alice's other device shows what she sent.
    for incoming in [&mut bob_phone_in, &mut bob_web_in, &mut alice_web_in] {
        let got = next_message(incoming).await;
        assert_eq!(got.msgid, sent.msgid);
        assert_eq!(got.from, UserRef::new(129, "alice"));
        assert_eq!(got.from_device, "phone");
    }
    let reply = bob_phone
        .c2c(UserRef::new(129, "alice"), Content::text("reply"))
        .await
        .unwrap();
    assert_eq!(next_message(&mut alice_phone_in).await.msgid, reply.msgid);
    assert_eq!(next_message(&mut alice_web_in).await.msgid, reply.msgid);
    assert_eq!(next_message(&mut bob_web_in).await.msgid, reply.msgid);

    // A device that logs in later sees the whole conversation in history, both ways.
    let (alice_tablet, _t) = server.client(129, "alice", "tablet").await;
    let newer = alice_tablet
        .history(UserRef::new(130, "bob"), 0, HistoryDirection::Newer, 0)
        .await
        .unwrap();
    assert_eq!(
        newer.messages.iter().map(|m| m.msgid).collect::<Vec<_>>(),
        vec![sent.msgid, reply.msgid]
    );
    let older = alice_tablet
        .history(UserRef::new(130, "bob"), 0, HistoryDirection::Older, 1)
        .await
        .unwrap();
    assert_eq!(
        older.messages.iter().map(|m| m.msgid).collect::<Vec<_>>(),
        vec![reply.msgid]
    );
    assert!(older.more);
    let older = alice_tablet
        .history(
            UserRef::new(130, "bob"),
            older.next_cursor,
            HistoryDirection::Older,
            1,
        )
        .await
        .unwrap();
    assert_eq!(
        older.messages.iter().map(|m| m.msgid).collect::<Vec<_>>(),
        vec![sent.msgid]
    );
    assert!(!older.more);
    server.stop().await;
}

#[tokio::test]
async fn content_types_rich_business_and_ephemeral_typing() {
    let server = TestServer::start().await;
    let (alice, _a) = server.client(129, "alice", "phone").await;
    let (bob, mut bob_in) = server.client(130, "bob", "phone").await;
    let rich =
        r#"<font size="12" color="red">hi</font><img url="https://pic.example/1.jpg" /><shake />"#;
    let contents = [
        Content::Rich(rich.to_owned()),
        Content::Business {
            msgtype: 42,
            bytes: bytes::Bytes::from_static(b"\x01\x02order"),
        },
        Content::Unknown {
            content_type: 99,
            msgtype: 0,
            bytes: bytes::Bytes::from_static(b"future"),
        },
    ];
    for content in contents.clone() {
        alice.c2c(UserRef::new(130, "bob"), content).await.unwrap();
    }
    for content in contents {
        assert_eq!(next_message(&mut bob_in).await.content, content);
    }
    // Typing: pushed to the online receiver with msgid 0, never stored.
    let receipt = alice
        .c2c(UserRef::new(130, "bob"), Content::Typing)
        .await
        .unwrap();
    assert_eq!(receipt.msgid, 0);
    let typing = next_message(&mut bob_in).await;
    assert_eq!((typing.msgid, typing.content), (0, Content::Typing));
    alice
        .c2c(UserRef::new(130, "offline-carol"), Content::Typing)
        .await
        .unwrap();
    let (carol, _c) = server.client(130, "offline-carol", "phone").await;
    assert!(
        carol.pull_all_offline().await.unwrap().is_empty(),
        "typing is never stored"
    );
    let history = bob
        .history(UserRef::new(129, "alice"), 0, HistoryDirection::Newer, 0)
        .await
        .unwrap();
    assert_eq!(history.messages.len(), 3, "typing is not in history");
    server.stop().await;
}

#[tokio::test]
async fn paging_under_concurrent_inserts_never_skips_or_repeats() {
    let server = TestServer::start().await;
    let total = 400usize;
    let mut senders = Vec::new();
    for s in 0..4 {
        let config = server.client_config(129, &format!("sender{s}"), "d");
        senders.push(tokio::spawn(async move {
            let (client, _in) = Client::connect(config).await.unwrap();
            let mut ids = Vec::new();
            for i in 0..total / 4 {
                let receipt = client
                    .c2c(
                        UserRef::new(130, "reader"),
                        Content::text(format!("{s}-{i}")),
                    )
                    .await
                    .unwrap();
                ids.push(receipt.msgid);
            }
            ids
        }));
    }
    // Page through while the senders write; auto-ack off so pages depend on the cursor only.
    let mut config: ClientConfig = server.client_config(130, "reader", "d");
    config.auto_ack = false;
    let (reader, _in) = Client::connect(config).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor = 0;
    let mut idle_rounds = 0;
    loop {
        let page = reader.pull_offline(cursor, 50).await.unwrap();
        for m in &page.messages {
            assert!(m.msgid > cursor, "ascending and past the cursor");
        }
        seen.extend(page.messages.iter().map(|m| m.msgid));
        cursor = page.next_cursor;
        if !page.more {
            if seen.len() == total {
                break;
            }
            idle_rounds += 1;
            assert!(idle_rounds < 100_000, "senders stalled");
            tokio::task::yield_now().await;
        }
    }
    let mut sent = BTreeSet::new();
    for sender in senders {
        sent.extend(sender.await.unwrap());
    }
    assert_eq!(seen.len(), total, "no repeats");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "strictly ascending");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), sent, "no skips");
    let _ = ContentType::Text;
    server.stop().await;
}

#[tokio::test]
async fn pages_of_large_messages_are_cut_to_fit_a_frame_and_stay_complete() {
    let server = TestServer::start().await;
    let (alice, _a) = server.client(129, "alice", "phone").await;
    let big = "x".repeat(3000);
    let mut sent = Vec::new();
    for i in 0..60 {
        let receipt = alice
            .c2c(
                UserRef::new(130, "bob"),
                Content::text(format!("{i}:{big}")),
            )
            .await
            .unwrap();
        sent.push(receipt.msgid);
    }
    let (bob, _b) = server.client_without_auto_ack(130, "bob", "phone").await;
    let first = bob.pull_offline(0, 50).await.unwrap();
    assert!(
        first.messages.len() < 50,
        "60 × 3 KB cannot fit one 64 KiB frame"
    );
    assert!(first.more);
    let all: Vec<u64> = bob
        .pull_all_offline()
        .await
        .unwrap()
        .iter()
        .map(|m| m.msgid)
        .collect();
    assert_eq!(all, sent);
    server.stop().await;
}

#[tokio::test]
async fn each_device_moves_from_stored_to_pushed_to_acked() {
    use longlink_store::{DeliveryState, UserKey};
    let server = TestServer::start().await;
    let store = server.server().store();
    let bob = UserKey::new(130, "bob");
    let (alice, _a) = server.client(129, "alice", "phone").await;
    // bob's phone is online and never acks (raw client); his tablet is offline.
    let mut phone = RawClient::connect(server.gate_addr()).await.unwrap();
    assert!(is_response(
        &phone
            .login(130, &server.token(130, "bob"), "phone")
            .await
            .unwrap(),
        Cmd::Login
    ));
    let sent = alice
        .c2c(UserRef::new(130, "bob"), Content::text("track me"))
        .await
        .unwrap();
    raw_pushes(&mut phone, 1).await;
    longlink_testkit::wait_until(WAIT, || {
        let store = store.clone();
        let bob = bob.clone();
        async move {
            store
                .delivery_state(&bob, "phone", sent.msgid)
                .await
                .ok()
                .flatten()
                == Some(DeliveryState::Pushed)
        }
    })
    .await
    .expect("the push to the phone is recorded");
    assert_eq!(
        store
            .delivery_state(&bob, "tablet", sent.msgid)
            .await
            .unwrap(),
        Some(DeliveryState::Stored)
    );
    phone
        .send(Frame::request(
            Cmd::MsgAck,
            5,
            0,
            &wire::MsgAck {
                msgids: vec![sent.msgid],
            },
        ))
        .await
        .unwrap();
    assert!(is_response(&phone.recv().await.unwrap(), Cmd::MsgAck));
    assert_eq!(
        store
            .delivery_state(&bob, "phone", sent.msgid)
            .await
            .unwrap(),
        Some(DeliveryState::Acked)
    );
    assert_eq!(
        store
            .delivery_state(&bob, "tablet", sent.msgid)
            .await
            .unwrap(),
        Some(DeliveryState::Stored)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_receiver_that_does_not_read_is_closed_and_loses_nothing() {
    let server = TestServer::start_with(|config| {
        config.gate.write_queue_frames = 4;
        config.gate.write_timeout_secs = 1;
    })
    .await;
    // bob's phone logs in and then never reads.
    let mut phone = RawClient::connect(server.gate_addr()).await.unwrap();
    assert!(is_response(
        &phone
            .login(130, &server.token(130, "bob"), "phone")
            .await
            .unwrap(),
        Cmd::Login
    ));
    let (alice, _a) = server.client(129, "alice", "phone").await;
    let body = "y".repeat(50_000);
    let mut sent = Vec::new();
    // Enough to fill the socket buffers and the 4-frame queue many times over.
    for i in 0..300 {
        let receipt = alice
            .c2c(
                UserRef::new(130, "bob"),
                Content::text(format!("{i}{body}")),
            )
            .await
            .expect("the sender is never held up by a slow receiver");
        sent.push(receipt.msgid);
    }
    // The gate closed the phone's connection instead of buffering without bound.
    phone
        .until_closed()
        .await
        .expect("the slow consumer is disconnected");
    // Everything is still there for the next login.
    let (bob, _b) = server.client_without_auto_ack(130, "bob", "phone").await;
    let ids: Vec<u64> = bob
        .pull_all_offline()
        .await
        .unwrap()
        .iter()
        .map(|m| m.msgid)
        .collect();
    assert_eq!(ids, sent);
    server.stop().await;
}
