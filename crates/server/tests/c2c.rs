//! End to end: two users chat over the real server and real sockets; offline messages arrive
//! by pull in pages; everything survives a restart.

use longlink_sdk::{Content, Event, HistoryDirection, Incoming, Message, UserRef};
use longlink_testkit::{TestServer, WAIT};

async fn next_message(incoming: &mut Incoming) -> Message {
    loop {
        match tokio::time::timeout(WAIT, incoming.next_event()).await {
            Ok(Some(Event::Message(message))) => return message,
            Ok(Some(Event::Error { .. } | Event::Receipt(_))) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn two_clients_chat_both_ways() {
    let server = TestServer::start().await;
    let (alice, mut alice_in) = server.client(129, "alice", "phone").await;
    let (bob, mut bob_in) = server.client(130, "bob", "phone").await;

    let receipt = alice
        .c2c(UserRef::new(130, "bob"), Content::text("hi bob"))
        .await
        .unwrap();
    assert!(receipt.msgid > 0);
    assert!(!receipt.duplicate);
    let got = next_message(&mut bob_in).await;
    assert_eq!(got.msgid, receipt.msgid);
    assert_eq!(got.from, UserRef::new(129, "alice"));
    assert_eq!(got.to, UserRef::new(130, "bob"));
    assert_eq!(got.content, Content::text("hi bob"));
    assert_eq!(got.client_msg_id, receipt.client_msg_id);

    let reply = bob
        .c2c(UserRef::new(129, "alice"), Content::text("hi alice"))
        .await
        .unwrap();
    assert!(reply.msgid > receipt.msgid, "msgids increase");
    let got = next_message(&mut alice_in).await;
    assert_eq!(got.msgid, reply.msgid);
    assert_eq!(got.content, Content::text("hi alice"));

    // Both users see the whole conversation in their history.
    for (client, peer) in [
        (&alice, UserRef::new(130, "bob")),
        (&bob, UserRef::new(129, "alice")),
    ] {
        let page = client
            .history(peer, 0, HistoryDirection::Newer, 0)
            .await
            .unwrap();
        let ids: Vec<u64> = page.messages.iter().map(|m| m.msgid).collect();
        assert_eq!(ids, vec![receipt.msgid, reply.msgid]);
    }
    server.stop().await;
}

#[tokio::test]
async fn offline_messages_arrive_by_pull_in_order_across_pages() {
    let server = TestServer::start().await;
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    let mut sent = Vec::new();
    for i in 0..137 {
        let receipt = alice
            .c2c(UserRef::new(130, "carol"), Content::text(format!("m{i}")))
            .await
            .unwrap();
        sent.push(receipt.msgid);
    }

    // auto_ack off: the redelivery pushed at login must not ack what this test pulls.
    let mut config = server.client_config(130, "carol", "phone");
    config.auto_ack = false;
    let (carol, _carol_in) = longlink_sdk::Client::connect(config).await.unwrap();
    let mut cursor = 0;
    let mut pages = 0;
    let mut got = Vec::new();
    loop {
        let page = carol.pull_offline(cursor, 0).await.unwrap();
        pages += 1;
        assert!(page.messages.len() <= 50, "default page is 50");
        got.extend(page.messages.iter().map(|m| (m.msgid, m.content.clone())));
        if !page.more {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(pages, 3);
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, sent, "complete, ascending, no repeats");
    assert_eq!(got[136].1, Content::text("m136"));
    server.stop().await;
}

#[tokio::test]
async fn messages_survive_a_restart() {
    let mut server = TestServer::start().await;
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    let first = alice
        .c2c(UserRef::new(130, "dave"), Content::text("before restart"))
        .await
        .unwrap();
    alice.close().await;

    server.restart().await;

    let (dave, _dave_in) = server.client_without_auto_ack(130, "dave", "phone").await;
    let pulled = dave.pull_all_offline().await.unwrap();
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].msgid, first.msgid);
    assert_eq!(pulled[0].content, Content::text("before restart"));

    // New msgids keep increasing after the restart.
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    let second = alice
        .c2c(UserRef::new(130, "dave"), Content::text("after restart"))
        .await
        .unwrap();
    assert!(second.msgid > first.msgid);
    server.stop().await;
}

#[tokio::test]
async fn a_newer_login_of_the_same_device_kicks_the_older() {
    let server = TestServer::start().await;
    let (_old, mut old_in) = server.client(129, "erin", "phone").await;
    let (_new, _new_in) = server.client(129, "erin", "phone").await;
    loop {
        match tokio::time::timeout(WAIT, old_in.next_event()).await {
            Ok(Some(Event::Kicked { reason, .. })) => {
                assert_eq!(reason, longlink_sdk::KickReason::Replaced);
                break;
            }
            Ok(Some(Event::Message(_) | Event::Error { .. } | Event::Receipt(_))) => continue,
            other => panic!("expected a KICK, got {other:?}"),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn c2s_lands_on_the_bus_topic_of_appcode_and_msgtype() {
    let server = TestServer::start().await;
    let (driver, _in) = server.client(130, "driver7", "phone").await;
    let topic = driver
        .c2s(7, bytes::Bytes::from_static(b"lat=31.2,lng=121.5"), "gps-1")
        .await
        .unwrap();
    assert_eq!(topic, "c2s.130.7");
    let leased = server
        .server()
        .bus()
        .fetch("c2s.130.7", 10, WAIT, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(leased.len(), 1, "{leased:?}");
    let message = &leased[0].message;
    assert_eq!(message.uid, "driver7");
    assert_eq!(message.client_msg_id, "gps-1");
    assert_eq!(&message.payload[..], b"lat=31.2,lng=121.5");
    server.stop().await;
}
