//! The SDK against a scripted fake gate (see `common`): login, requests and responses,
//! pushes, acknowledgements, keepalive, closing. Reconnects, retries and ordering are in
//! `delivery.rs`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use longlink_proto::{Cmd, Frame, FrameType, wire};
use longlink_sdk::{
    Client, ClientConfig, ClientError, Content, ErrorCode, Event, HistoryDirection, KickReason,
    MsgKind, UserRef,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

#[tokio::test]
async fn login_handshake_sends_credentials_and_reads_the_session() {
    let gate = Gate::start().await;
    let (client, _incoming, _conn) = {
        let (client, (conn, login)) = tokio::join!(Client::connect(gate.config()), gate.accept());
        assert_eq!(login.token, "token-abc");
        assert_eq!(login.appcode, 129);
        assert_eq!(login.device_id, "phone-1");
        assert!(login.client_version.starts_with("longlink-sdk/"));
        let (client, incoming) = client.expect("login");
        (client, incoming, conn)
    };
    assert_eq!(client.session_id(), SESSION_ID);
    assert_eq!(client.uid(), UID);
    assert!(!client.is_closed());
}

#[tokio::test]
async fn refused_login_is_a_server_error() {
    let gate = Gate::start().await;
    let script = async {
        let (mut conn, login) = gate.accept_raw().await;
        conn.respond_error(&login, ErrorCode::BadToken, "token expired")
            .await;
        conn
    };
    let (result, _conn) = tokio::join!(Client::connect(gate.config()), script);
    match result {
        Err(ClientError::Server { code, message, .. }) => {
            assert_eq!(code, ErrorCode::BadToken);
            assert_eq!(message, "token expired");
        }
        other => panic!("expected a BAD_TOKEN server error, got {other:?}"),
    }
}

#[tokio::test]
async fn unanswered_login_times_out_and_closed_login_is_closed() {
    let gate = Gate::start().await;
    let mut config = gate.config();
    config.request_timeout = Duration::from_millis(200);
    let (result, (_conn, _login)) =
        tokio::join!(Client::connect(config.clone()), gate.accept_raw());
    assert!(matches!(result, Err(ClientError::Timeout)), "{result:?}");

    let (result, ()) = tokio::join!(Client::connect(config), async {
        let (conn, _login) = gate.accept_raw().await;
        drop(conn);
    });
    assert!(matches!(result, Err(ClientError::Closed)), "{result:?}");
}

#[tokio::test]
async fn refused_tcp_connect_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    drop(listener);
    let result = Client::connect(ClientConfig::new(addr, 1, "t", "d")).await;
    match result {
        Err(err @ ClientError::Connect(_)) => assert!(err.is_retryable()),
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[tokio::test]
async fn c2c_returns_the_receipt_and_retries_reuse_the_id() {
    let gate = Gate::start().await;
    let (client, _incoming, mut conn) = gate.connect().await;
    let bob = UserRef::new(130, "bob");

    let send = client.c2c(bob.clone(), Content::text("hi bob"));
    let script = async {
        let frame = conn.recv_request(Cmd::C2c).await;
        let req: wire::C2cRequest = frame.decode_body().expect("C2cRequest");
        assert_eq!(req.to, Some(wire::UserRef::from(bob.clone())));
        assert_eq!(req.content_type, longlink_proto::ContentType::Text as i32);
        assert_eq!(req.msgtype, 0);
        assert_eq!(&req.content[..], b"hi bob");
        assert_eq!(req.client_msg_id.len(), 16);
        assert!(req.client_msg_id.chars().all(|c| c.is_ascii_hexdigit()));
        conn.respond(
            &frame,
            &wire::C2cResponse {
                msgid: 1001,
                senddate_ms: 55,
                duplicate: false,
            },
        )
        .await;
        req.client_msg_id
    };
    let (receipt, sent_id) = tokio::join!(send, script);
    let receipt = receipt.expect("c2c");
    assert_eq!(receipt.msgid, 1001);
    assert_eq!(receipt.senddate_ms, 55);
    assert!(!receipt.duplicate);
    assert_eq!(receipt.client_msg_id, sent_id);

    let retry = client.c2c_with_id(
        bob.clone(),
        &sent_id,
        Content::Business {
            msgtype: 7,
            bytes: Bytes::from_static(b"\x01\x02"),
        },
    );
    let script = async {
        let frame = conn.recv_request(Cmd::C2c).await;
        let req: wire::C2cRequest = frame.decode_body().expect("C2cRequest");
        assert_eq!(req.client_msg_id, sent_id);
        assert_eq!(
            req.content_type,
            longlink_proto::ContentType::Business as i32
        );
        assert_eq!(req.msgtype, 7);
        conn.respond(
            &frame,
            &wire::C2cResponse {
                msgid: 1001,
                senddate_ms: 55,
                duplicate: true,
            },
        )
        .await;
    };
    let (receipt, ()) = tokio::join!(retry, script);
    assert!(receipt.expect("retry").duplicate);
}

#[tokio::test]
async fn c2s_and_history_map_their_fields() {
    let gate = Gate::start().await;
    let (client, _incoming, mut conn) = gate.connect().await;

    let c2s = client.c2s(3, Bytes::from_static(b"{\"lat\":1}"), "gps-1");
    let script = async {
        let frame = conn.recv_request(Cmd::C2s).await;
        let req: wire::C2sRequest = frame.decode_body().expect("C2sRequest");
        assert_eq!(req.msgtype, 3);
        assert_eq!(&req.payload[..], b"{\"lat\":1}");
        assert_eq!(req.client_msg_id, "gps-1");
        conn.respond(
            &frame,
            &wire::C2sResponse {
                topic: "c2s.129.3".into(),
            },
        )
        .await;
    };
    let (topic, ()) = tokio::join!(c2s, script);
    assert_eq!(topic.expect("c2s"), "c2s.129.3");

    let history = client.history(UserRef::new(130, "bob"), 900, HistoryDirection::Older, 20);
    let script = async {
        let frame = conn.recv_request(Cmd::HistoryPull).await;
        let req: wire::HistoryPullRequest = frame.decode_body().expect("HistoryPullRequest");
        assert_eq!(
            req.with,
            Some(wire::UserRef {
                appcode: 130,
                uid: "bob".into()
            })
        );
        assert_eq!(req.cursor, 900);
        assert_eq!(req.direction, HistoryDirection::Older as i32);
        assert_eq!(req.page_size, 20);
        conn.respond(
            &frame,
            &wire::HistoryPullResponse {
                messages: vec![msg(800, "older"), msg(700, "oldest")],
                next_cursor: 700,
                more: true,
            },
        )
        .await;
    };
    let (page, ()) = tokio::join!(history, script);
    let page = page.expect("history");
    assert_eq!(page.next_cursor, 700);
    assert!(page.more);
    let first = &page.messages[0];
    assert_eq!(first.msgid, 800);
    assert_eq!(first.from, UserRef::new(130, "bob"));
    assert_eq!(first.to, UserRef::new(129, UID));
    assert_eq!(first.content, Content::text("older"));
    assert_eq!(first.client_msg_id, "c800");
    assert_eq!(first.from_device, "bob-phone");
    assert_eq!(first.kind, MsgKind::C2c);

    // History is not acknowledged: the next frame the gate sees is the next request.
    let keepalive = client.keepalive();
    let script = async {
        let frame = conn.recv().await;
        assert_eq!(frame.cmd(), Some(Cmd::Keepalive), "no MSG_ACK for history");
        conn.respond(&frame, &wire::KeepaliveResponse { server_time_ms: 77 })
            .await;
    };
    let (now, ()) = tokio::join!(keepalive, script);
    assert_eq!(now.expect("keepalive"), 77);
}

#[tokio::test]
async fn pushes_are_delivered_once_and_acked() {
    let gate = Gate::start().await;
    let (_client, mut incoming, mut conn) = gate.connect().await;

    conn.push_msgs(&[msg(1, "one"), msg(2, "two"), msg(1, "one again"), typing()])
        .await;
    match next_event(&mut incoming).await {
        Event::Message(m) => {
            assert_eq!(m.msgid, 1);
            assert_eq!(m.content, Content::text("one"));
            assert_eq!(m.from, UserRef::new(130, "bob"));
        }
        other => panic!("expected msg 1, got {other:?}"),
    }
    assert_eq!(next_message_id(&mut incoming).await, 2);
    match next_event(&mut incoming).await {
        Event::Message(m) => {
            assert_eq!(m.msgid, 0);
            assert_eq!(m.content, Content::Typing);
        }
        other => panic!("expected the typing indicator (the duplicate is dropped), got {other:?}"),
    }
    let acked = conn.recv_acks_until(&[1, 2]).await;
    assert!(
        !acked.contains(&0),
        "typing (msgid 0) is never acked: {acked:?}"
    );

    // The duplicate never reaches the application: the next event is msg 3.
    conn.push_msgs(&[msg(3, "three")]).await;
    assert_eq!(next_message_id(&mut incoming).await, 3);
    let acked = conn.recv_acks_until(&[3]).await;
    assert!(acked.iter().all(|id| [1, 2, 3].contains(id)), "{acked:?}");
}

#[tokio::test]
async fn without_auto_ack_nothing_is_acked_until_asked() {
    let gate = Gate::start().await;
    let mut config = gate.config();
    config.auto_ack = false;
    let (client, mut incoming, mut conn) = gate.connect_with(config).await;

    conn.push_msgs(&[msg(5, "five")]).await;
    assert_eq!(next_message_id(&mut incoming).await, 5);
    let ack = client.ack(&[5]);
    let script = async {
        // The first frame after the push is the explicit request: no automatic ack.
        let frame = conn.recv().await;
        assert_eq!(frame.cmd(), Some(Cmd::MsgAck));
        assert_eq!(frame.header.frame_type, FrameType::Request);
        let req: wire::MsgAck = frame.decode_body().expect("MsgAck");
        assert_eq!(req.msgids, vec![5]);
        conn.respond(&frame, &wire::MsgAckResponse { acked: 1 })
            .await;
    };
    let (acked, ()) = tokio::join!(ack, script);
    assert_eq!(acked.expect("ack"), 1);
}

#[tokio::test]
async fn pulled_messages_are_returned_recorded_and_acked() {
    let gate = Gate::start().await;
    let (client, mut incoming, mut conn) = gate.connect().await;

    // msg 10 was already pushed; the pull still returns it (the app asked for the page).
    conn.push_msgs(&[msg(10, "ten")]).await;
    assert_eq!(next_message_id(&mut incoming).await, 10);
    conn.recv_acks_until(&[10]).await;

    let pull = client.pull_offline(0, 50);
    let script = async {
        let frame = conn.recv_request(Cmd::OfflinePull).await;
        let req: wire::OfflinePullRequest = frame.decode_body().expect("OfflinePullRequest");
        assert_eq!((req.cursor, req.page_size), (0, 50));
        conn.respond(
            &frame,
            &wire::OfflinePullResponse {
                messages: vec![msg(10, "ten"), msg(11, "eleven")],
                next_cursor: 11,
                more: false,
            },
        )
        .await;
    };
    let (page, ()) = tokio::join!(pull, script);
    let page = page.expect("pull");
    let ids: Vec<u64> = page.messages.iter().map(|m| m.msgid).collect();
    assert_eq!(ids, vec![10, 11]);
    assert_eq!(page.next_cursor, 11);
    assert!(!page.more);
    conn.recv_acks_until(&[10, 11]).await;

    // A later push of a pulled msgid is dropped; a new one comes through.
    conn.push_msgs(&[msg(11, "eleven"), msg(12, "twelve")])
        .await;
    assert_eq!(next_message_id(&mut incoming).await, 12);
}

#[tokio::test]
async fn pull_all_offline_pages_until_done() {
    let gate = Gate::start().await;
    let (client, _incoming, mut conn) = gate.connect().await;

    let pull = client.pull_all_offline();
    let script = async {
        let frame = conn.recv_request(Cmd::OfflinePull).await;
        let req: wire::OfflinePullRequest = frame.decode_body().expect("req");
        assert_eq!(req.cursor, 0);
        conn.respond(
            &frame,
            &wire::OfflinePullResponse {
                messages: vec![msg(1, "a"), msg(2, "b")],
                next_cursor: 2,
                more: true,
            },
        )
        .await;
        let frame = conn.recv_request(Cmd::OfflinePull).await;
        let req: wire::OfflinePullRequest = frame.decode_body().expect("req");
        assert_eq!(req.cursor, 2);
        conn.respond(
            &frame,
            &wire::OfflinePullResponse {
                messages: vec![msg(3, "c")],
                next_cursor: 3,
                more: false,
            },
        )
        .await;
        conn.recv_acks_until(&[1, 2, 3]).await
    };
    let (all, acked) = tokio::join!(pull, script);
    let ids: Vec<u64> = all.expect("pull all").iter().map(|m| m.msgid).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(acked, BTreeSet::from([1, 2, 3]));
}

#[tokio::test]
async fn error_answers_surface_as_server_errors() {
    let gate = Gate::start().await;
    let (client, _incoming, mut conn) = gate.connect().await;

    let ack = client.ack(&[999]);
    let script = async {
        let frame = conn.recv_request(Cmd::MsgAck).await;
        conn.respond_error(&frame, ErrorCode::NotFound, "no such message")
            .await;
    };
    let (result, ()) = tokio::join!(ack, script);
    match result {
        Err(err @ ClientError::Server { .. }) => {
            assert_eq!(err.server_code(), Some(ErrorCode::NotFound));
            assert!(!err.is_retryable());
        }
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }

    // The connection stays usable.
    let ack = client.ack(&[1, 2]);
    let script = async {
        let frame = conn.recv_request(Cmd::MsgAck).await;
        conn.respond(&frame, &wire::MsgAckResponse { acked: 2 })
            .await;
    };
    let (acked, ()) = tokio::join!(ack, script);
    assert_eq!(acked.expect("ack"), 2);
}

#[tokio::test]
async fn concurrent_requests_are_matched_by_seq_id() {
    let gate = Gate::start().await;
    let (client, _incoming, mut conn) = gate.connect().await;

    let first = client.c2s(1, Bytes::new(), "a");
    let second = client.c2s(2, Bytes::new(), "b");
    let script = async {
        let a = conn.recv_request(Cmd::C2s).await;
        let b = conn.recv_request(Cmd::C2s).await;
        assert_ne!(a.header.seq_id, b.header.seq_id);
        // Answer in reverse order, each with its own request's msgtype in the topic.
        for frame in [&b, &a] {
            let req: wire::C2sRequest = frame.decode_body().expect("req");
            let topic = format!("c2s.129.{}", req.msgtype);
            conn.respond(frame, &wire::C2sResponse { topic }).await;
        }
    };
    let (first, second, ()) = tokio::join!(first, second, script);
    assert_eq!(first.expect("first"), "c2s.129.1");
    assert_eq!(second.expect("second"), "c2s.129.2");
}

#[tokio::test]
async fn unanswered_request_times_out_and_a_late_answer_is_ignored() {
    let gate = Gate::start().await;
    let mut config = gate.config();
    config.request_timeout = Duration::from_millis(300);
    let (client, _incoming, mut conn) = gate.connect_with(config).await;

    let (result, lost) = tokio::join!(client.keepalive(), conn.recv_request(Cmd::Keepalive));
    assert!(matches!(result, Err(ClientError::Timeout)), "{result:?}");
    assert!(ClientError::Timeout.is_retryable());

    // The late answer to the timed-out request must not satisfy the next one.
    conn.respond(&lost, &wire::KeepaliveResponse { server_time_ms: 1 })
        .await;
    let script = async {
        let frame = conn.recv_request(Cmd::Keepalive).await;
        assert_ne!(frame.header.seq_id, lost.header.seq_id);
        conn.respond(&frame, &wire::KeepaliveResponse { server_time_ms: 2 })
            .await;
    };
    let (now, ()) = tokio::join!(client.keepalive(), script);
    assert_eq!(now.expect("keepalive"), 2);
}

#[tokio::test]
async fn without_reconnect_a_dropped_link_fails_pending_requests_and_closes_incoming() {
    let gate = Gate::start().await;
    let mut config = gate.config();
    config.reconnect = None;
    let (client, mut incoming, mut conn) = gate.connect_with(config).await;

    let script = async move {
        conn.recv_request(Cmd::C2s).await;
        drop(conn);
    };
    let (result, ()) = tokio::join!(client.c2s(1, Bytes::new(), "x"), script);
    assert!(matches!(result, Err(ClientError::Closed)), "{result:?}");
    assert_eq!(
        expect_closed(&mut incoming).await,
        "connection closed by server"
    );
    assert!(client.is_closed());
    let result = client.keepalive().await;
    assert!(matches!(result, Err(ClientError::Closed)), "{result:?}");
}

#[tokio::test]
async fn kick_is_an_event_then_the_stream_closes() {
    let gate = Gate::start().await;
    let (_client, mut incoming, mut conn) = gate.connect().await;

    conn.send(Frame::push(
        Cmd::Kick,
        3,
        &wire::Kick {
            reason: KickReason::Replaced as i32,
            message: "logged in on another phone".into(),
            reconnect_to: String::new(),
            backoff_ms: 0,
            by_device_id: String::new(),
        },
    ))
    .await;
    drop(conn);
    match next_event(&mut incoming).await {
        Event::Kicked { reason, message } => {
            assert_eq!(reason, KickReason::Replaced);
            assert_eq!(message, "logged in on another phone");
        }
        other => panic!("expected a kick, got {other:?}"),
    }
    let reason = expect_closed(&mut incoming).await;
    assert!(reason.starts_with("kicked (REPLACED)"), "{reason}");
}

#[tokio::test]
async fn error_push_is_an_event() {
    let gate = Gate::start().await;
    let (_client, mut incoming, mut conn) = gate.connect().await;

    conn.send(Frame::error(None, 0, ErrorCode::Overloaded, "slow down"))
        .await;
    match next_event(&mut incoming).await {
        Event::Error { code, message } => {
            assert_eq!(code, ErrorCode::Overloaded);
            assert_eq!(message, "slow down");
        }
        other => panic!("expected an error event, got {other:?}"),
    }
}

#[tokio::test]
async fn automatic_keepalive_then_liveness_timeout() {
    let gate = Gate::start().await;
    let mut config = gate.config();
    config.keepalive_interval = Some(Duration::from_millis(250));
    config.reconnect = None;
    let (client, mut incoming, mut conn) = gate.connect_with(config).await;
    assert_eq!(
        client.keepalive_interval(),
        Some(Duration::from_millis(250))
    );

    // The driver pings on its own; answer a couple of pings.
    for _ in 0..2 {
        let ping = conn.recv_request(Cmd::Keepalive).await;
        conn.respond(&ping, &wire::KeepaliveResponse { server_time_ms: 9 })
            .await;
    }
    // Then the server goes silent (the socket stays open): the client gives up.
    let silent = async {
        loop {
            if conn.framed.next().await.is_none() {
                return;
            }
        }
    };
    let (reason, ()) = tokio::join!(expect_closed(&mut incoming), silent);
    assert_eq!(reason, "keepalive timeout");
}

#[tokio::test]
async fn server_keepalive_interval_is_used_by_default() {
    let gate = Gate::start().await;
    let mut config = gate.config();
    config.keepalive_interval = None;
    let (client, _incoming, _conn) = gate.connect_with(config).await;
    assert_eq!(client.keepalive_interval(), Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn a_full_incoming_queue_applies_backpressure_without_loss() {
    let gate = Gate::start().await;
    let mut config = gate.config();
    config.incoming_capacity = 2;
    let (_client, mut incoming, mut conn) = gate.connect_with(config).await;

    let msgs: Vec<wire::Msg> = (1..=200).map(|id| msg(id, "x")).collect();
    let all: Vec<u64> = (1..=200).collect();
    let read = async {
        let mut seen = Vec::new();
        while seen.len() < 200 {
            seen.push(next_message_id(&mut incoming).await);
        }
        seen
    };
    let script = async {
        conn.push_msgs(&msgs).await;
        conn.recv_acks_until(&all).await
    };
    let (seen, acked) = tokio::join!(read, script);
    assert_eq!(seen, all);
    assert_eq!(acked, all.iter().copied().collect::<BTreeSet<_>>());
}

#[tokio::test]
async fn close_drops_the_link_without_logout() {
    let gate = Gate::start().await;
    let (client, mut incoming, mut conn) = gate.connect().await;
    let clone = client.clone();

    client.close().await;
    conn.expect_eof().await;
    assert_eq!(expect_closed(&mut incoming).await, "closed by client");
    assert!(clone.is_closed());
    assert!(matches!(clone.keepalive().await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn logout_sends_logout_then_closes() {
    let gate = Gate::start().await;
    let (client, mut incoming, mut conn) = gate.connect().await;

    let script = async move {
        let frame = conn.recv_request(Cmd::Logout).await;
        conn.respond(&frame, &wire::LogoutResponse {}).await;
        conn.expect_eof().await;
    };
    let (result, ()) = tokio::join!(client.logout(), script);
    result.expect("logout");
    assert_eq!(expect_closed(&mut incoming).await, "logged out");
}

#[tokio::test]
async fn dropping_every_client_handle_closes_the_connection() {
    let gate = Gate::start().await;
    let (client, mut incoming, mut conn) = gate.connect().await;
    drop(client);
    conn.expect_eof().await;
    assert_eq!(expect_closed(&mut incoming).await, "client dropped");
}

#[tokio::test]
async fn garbage_from_the_server_closes_without_panic() {
    let gate = Gate::start().await;
    let (client, mut incoming, conn) = gate.connect().await;

    let mut tcp = conn.framed.into_inner();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: nope\r\n\r\n")
        .await
        .expect("write garbage");
    let reason = expect_closed(&mut incoming).await;
    assert!(reason.starts_with("protocol error"), "{reason}");
    assert!(matches!(client.keepalive().await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn undecodable_and_unknown_pushes_are_skipped() {
    let gate = Gate::start().await;
    let (_client, mut incoming, mut conn) = gate.connect().await;

    // A MSG whose body is not a Msg, a push of an unknown cmd, then a good message.
    let mut bad = Frame::push(Cmd::Msg, 1, &wire::MsgAck { msgids: vec![] });
    bad.body = Bytes::from_static(b"\xff\xff\xff");
    bad.header.body_len = 3;
    conn.send(bad).await;
    let mut unknown = Frame::push(Cmd::Msg, 1, &wire::MsgAck { msgids: vec![] });
    unknown.header.cmd = 77;
    conn.send(unknown).await;
    conn.push_msgs(&[msg(8, "ok")]).await;
    assert_eq!(next_message_id(&mut incoming).await, 8);
    let acked = conn.recv_acks_until(&[8]).await;
    assert_eq!(acked, BTreeSet::from([8]));
}
