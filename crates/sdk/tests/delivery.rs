//! Delivery guarantees against the scripted fake gate (see `common`): reconnects (and when
//! not to), sends retried with the same client_msg_id until answered, the catch-up after a
//! login, gap filling from history, and each message shown once, in order per conversation.

mod common;

use std::time::Duration;

use common::*;
use futures::FutureExt;
use longlink_proto::{Cmd, Frame, wire};
use longlink_sdk::{Client, ClientError, Content, ErrorCode, Event, KickReason, UserRef};

fn bob() -> UserRef {
    UserRef::new(130, "bob")
}

fn receipt(msgid: u64, duplicate: bool) -> wire::C2cResponse {
    wire::C2cResponse {
        msgid,
        senddate_ms: 1,
        duplicate,
    }
}

fn kick(reason: KickReason, backoff_ms: u32) -> Frame {
    Frame::push(
        Cmd::Kick,
        3,
        &wire::Kick {
            reason: reason as i32,
            message: "bye".into(),
            reconnect_to: String::new(),
            backoff_ms,
            by_device_id: String::new(),
        },
    )
}

async fn expect_disconnected(incoming: &mut longlink_sdk::Incoming) -> String {
    match next_non_message(incoming).await {
        (messages, Event::Disconnected { reason }) if messages.is_empty() => reason,
        other => panic!("expected Disconnected, got {other:?}"),
    }
}

async fn expect_reconnected(incoming: &mut longlink_sdk::Incoming) -> u64 {
    match next_non_message(incoming).await {
        (messages, Event::Reconnected { session_id, .. }) if messages.is_empty() => session_id,
        other => panic!("expected Reconnected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_dropped_link_is_reopened_and_the_pending_c2c_resent_with_the_same_id() {
    let gate = Gate::start().await;
    let (client, mut incoming, mut conn) = gate.connect().await;
    let mut logins = 1;

    let send = client.c2c_with_id(bob(), "cm-1", Content::text("hi"));
    let script = async {
        let first = conn.recv_request(Cmd::C2c).await;
        let req: wire::C2cRequest = first.decode_body().expect("C2cRequest");
        assert_eq!(req.client_msg_id, "cm-1");
        // The link dies before the answer.
        drop(conn);
        let (mut conn, login) = gate.accept_login(SESSION_ID + 1).await;
        logins += 1;
        assert_eq!(
            (
                login.token.as_str(),
                login.device_id.as_str(),
                login.appcode
            ),
            ("token-abc", DEVICE, 129),
            "the same credentials and device"
        );
        conn.answer_catch_up(&[]).await;
        let again = conn.recv_request(Cmd::C2c).await;
        let req: wire::C2cRequest = again.decode_body().expect("C2cRequest");
        assert_eq!(req.client_msg_id, "cm-1", "the same client_msg_id");
        assert_eq!(&req.content[..], b"hi");
        assert_eq!(
            again.header.log_id, first.header.log_id,
            "one trace id per message"
        );
        conn.respond(&again, &receipt(77, true)).await;
        conn
    };
    let (sent, _conn) = tokio::join!(send, script);
    let sent = sent.expect("the send completes on the new connection");
    assert_eq!((sent.msgid, sent.duplicate), (77, true));
    assert_eq!(logins, 2);

    assert_eq!(
        expect_disconnected(&mut incoming).await,
        "connection closed by server"
    );
    assert_eq!(expect_reconnected(&mut incoming).await, SESSION_ID + 1);
    assert_eq!(client.session_id(), SESSION_ID + 1);
    assert!(client.is_connected());
}

#[tokio::test]
async fn requests_issued_while_disconnected_wait_for_the_new_connection() {
    let gate = Gate::start().await;
    let (client, mut incoming, conn) = gate.connect().await;
    drop(conn);
    expect_disconnected(&mut incoming).await;
    assert!(!client.is_connected());
    assert!(!client.is_closed());

    let script = async {
        let (mut conn, _) = gate.accept_login(SESSION_ID + 1).await;
        conn.answer_catch_up(&[]).await;
        let ping = conn.recv_request(Cmd::Keepalive).await;
        conn.respond(&ping, &wire::KeepaliveResponse { server_time_ms: 5 })
            .await;
        conn
    };
    let (now, _conn) = tokio::join!(client.keepalive(), script);
    assert_eq!(now.expect("answered on the new connection"), 5);
    expect_reconnected(&mut incoming).await;
}

#[tokio::test]
async fn no_reconnect_after_a_kick_for_replaced_logged_out_or_blocked() {
    for reason in [
        KickReason::Replaced,
        KickReason::LoggedOut,
        KickReason::Blocked,
    ] {
        let gate = Gate::start().await;
        let (client, mut incoming, mut conn) = gate.connect().await;
        conn.send(kick(reason, 0)).await;
        drop(conn);
        match next_event(&mut incoming).await {
            Event::Kicked { reason: got, .. } => assert_eq!(got, reason),
            other => panic!("expected the kick, got {other:?}"),
        }
        let closed = expect_closed(&mut incoming).await;
        assert_eq!(closed, format!("kicked ({}): bye", reason.as_str_name()));
        assert!(client.is_closed());
        // The driver is gone without having dialled again: nothing waits to be accepted.
        assert!(
            gate.listener.accept().now_or_never().is_none(),
            "no reconnect after {reason:?}"
        );
        assert!(matches!(client.keepalive().await, Err(ClientError::Closed)));
    }
}

#[tokio::test]
async fn a_shutdown_kick_is_followed_by_a_reconnect() {
    let gate = Gate::start().await;
    let (client, mut incoming, mut conn) = gate.connect().await;
    conn.send(kick(KickReason::ServerShutdown, 20)).await;
    drop(conn);
    match next_event(&mut incoming).await {
        Event::Kicked { reason, .. } => assert_eq!(reason, KickReason::ServerShutdown),
        other => panic!("expected the kick, got {other:?}"),
    }
    assert_eq!(
        expect_disconnected(&mut incoming).await,
        "kicked (SERVER_SHUTDOWN): bye"
    );
    let (_conn, _) = gate.accept().await;
    expect_reconnected(&mut incoming).await;
    assert!(client.is_connected());
}

#[tokio::test]
async fn a_keepalive_timeout_reconnects() {
    let gate = Gate::start().await;
    let mut config = gate.config();
    config.keepalive_interval = Some(Duration::from_millis(100));
    let (_client, mut incoming, mut silent) = gate.connect_with(config).await;
    // The server stops answering (the socket stays open) until the client drops the link.
    let drain = async { while futures::StreamExt::next(&mut silent.framed).await.is_some() {} };
    let (reason, ()) = tokio::join!(expect_disconnected(&mut incoming), drain);
    assert_eq!(reason, "keepalive timeout");
    let (_conn, _) = gate.accept().await;
    expect_reconnected(&mut incoming).await;
}

#[tokio::test]
async fn a_refused_relogin_ends_the_client_and_set_token_is_used() {
    let gate = Gate::start().await;
    let (client, mut incoming, conn) = gate.connect().await;
    client.set_token("token-new");
    drop(conn);
    expect_disconnected(&mut incoming).await;
    // A transient refusal: the client tries again.
    let (mut conn, login) = gate.accept_raw().await;
    let request: wire::LoginRequest = login.decode_body().expect("LoginRequest");
    assert_eq!(request.token, "token-new");
    conn.respond_error(&login, ErrorCode::ShuttingDown, "restarting")
        .await;
    drop(conn);
    // A refusal of the credentials: the client gives up.
    let (mut conn, login) = gate.accept_raw().await;
    conn.respond_error(&login, ErrorCode::BadToken, "token expired")
        .await;
    let reason = expect_closed(&mut incoming).await;
    assert!(reason.starts_with("login refused"), "{reason}");
    assert!(reason.contains("BAD_TOKEN"), "{reason}");
    assert!(client.is_closed());
}

#[tokio::test]
async fn close_while_reconnecting_ends_the_client() {
    let gate = Gate::start().await;
    let (client, mut incoming, conn) = gate.connect().await;
    drop(conn);
    expect_disconnected(&mut incoming).await;
    let pending = client.keepalive();
    let (result, ()) = tokio::join!(pending, client.clone().close());
    assert!(matches!(result, Err(ClientError::Closed)), "{result:?}");
    assert_eq!(expect_closed(&mut incoming).await, "closed by client");
}

#[tokio::test]
async fn a_lost_c2c_answer_is_retried_with_the_same_id_and_answered_once() {
    let gate = Gate::start().await;
    let mut config = gate.config();
    config.request_timeout = Duration::from_millis(300);
    let (client, mut incoming, mut conn) = gate.connect_with(config).await;

    let send = client.c2c_with_id(bob(), "cm-lost", Content::text("hello"));
    let script = async {
        // The first answer is lost (the gate swallows it).
        let first = conn.recv_request(Cmd::C2c).await;
        let second = conn.recv_request(Cmd::C2c).await;
        let (a, b): (wire::C2cRequest, wire::C2cRequest) = (
            first.decode_body().expect("first"),
            second.decode_body().expect("second"),
        );
        assert_eq!(a.client_msg_id, "cm-lost");
        assert_eq!(b.client_msg_id, "cm-lost");
        assert_ne!(first.header.seq_id, second.header.seq_id);
        conn.respond(&second, &receipt(9, true)).await;
        first
    };
    let (sent, first) = tokio::join!(send, script);
    let sent = sent.expect("the retry is answered");
    assert_eq!((sent.msgid, sent.client_msg_id.as_str()), (9, "cm-lost"));

    // The late answer to the first attempt changes nothing.
    conn.respond(&first, &receipt(9, false)).await;
    let script = async {
        let ping = conn.recv_request(Cmd::Keepalive).await;
        conn.respond(&ping, &wire::KeepaliveResponse { server_time_ms: 1 })
            .await;
    };
    let (now, ()) = tokio::join!(client.keepalive(), script);
    now.expect("keepalive");
    assert_eq!(
        incoming.try_next_event(),
        None,
        "no event about the late answer"
    );
}

#[tokio::test]
async fn refusals_fail_at_once_and_transient_errors_are_retried() {
    let gate = Gate::start().await;
    let (client, _incoming, mut conn) = gate.connect().await;

    let send = client.c2c_with_id(UserRef::new(999, "x"), "cm-a", Content::text("a"));
    let script = async {
        let frame = conn.recv_request(Cmd::C2c).await;
        conn.respond_error(&frame, ErrorCode::UnknownReceiverAppcode, "no such appcode")
            .await;
    };
    let (result, ()) = tokio::join!(send, script);
    let err = result.expect_err("refused");
    assert_eq!(err.server_code(), Some(ErrorCode::UnknownReceiverAppcode));

    let send = client.c2c_with_id(bob(), "cm-b", Content::text("b"));
    let script = async {
        // The refused send was not retried: the next request is this one.
        let frame = conn.recv_request(Cmd::C2c).await;
        let req: wire::C2cRequest = frame.decode_body().expect("C2cRequest");
        assert_eq!(req.client_msg_id, "cm-b");
        conn.respond_error(&frame, ErrorCode::Overloaded, "busy")
            .await;
        let frame = conn.recv_request(Cmd::C2c).await;
        let req: wire::C2cRequest = frame.decode_body().expect("C2cRequest");
        assert_eq!(req.client_msg_id, "cm-b");
        conn.respond_error(&frame, ErrorCode::StoreUnavailable, "disk")
            .await;
        let frame = conn.recv_request(Cmd::C2c).await;
        conn.respond(&frame, &receipt(5, false)).await;
    };
    let (result, ()) = tokio::join!(send, script);
    assert_eq!(result.expect("retried until stored").msgid, 5);

    // c2s gets the same treatment.
    let send = client.c2s(3, bytes::Bytes::from_static(b"gps"), "gps-9");
    let script = async {
        let frame = conn.recv_request(Cmd::C2s).await;
        conn.respond_error(&frame, ErrorCode::BusUnavailable, "bus")
            .await;
        let frame = conn.recv_request(Cmd::C2s).await;
        let req: wire::C2sRequest = frame.decode_body().expect("C2sRequest");
        assert_eq!(req.client_msg_id, "gps-9");
        conn.respond(
            &frame,
            &wire::C2sResponse {
                topic: "c2s.129.3".into(),
            },
        )
        .await;
    };
    let (result, ()) = tokio::join!(send, script);
    assert_eq!(result.expect("c2s retried"), "c2s.129.3");
}

#[tokio::test]
async fn a_send_gives_up_at_its_deadline() {
    let gate = Gate::start().await;
    let mut config = gate.config();
    config.request_timeout = Duration::from_millis(100);
    config.send_deadline = Duration::from_secs(1);
    let (client, _incoming, mut conn) = gate.connect_with(config).await;

    let send = tokio::spawn(async move {
        client
            .c2c_with_id(bob(), "cm-never", Content::text("x"))
            .await
    });
    for _ in 0..2 {
        let frame = conn.recv_request(Cmd::C2c).await;
        let req: wire::C2cRequest = frame.decode_body().expect("C2cRequest");
        assert_eq!(req.client_msg_id, "cm-never");
    }
    match send.await.expect("task") {
        Err(ClientError::DeadlineExceeded { attempts, last }) => {
            assert!(attempts >= 2, "{attempts}");
            assert!(matches!(*last, ClientError::Timeout), "{last:?}");
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unretryable_send_in_flight_when_the_link_drops_fails_with_disconnected() {
    let gate = Gate::start().await;
    let (client, _incoming, mut conn) = gate.connect().await;
    let send = client.c2c_with_id(bob(), "", Content::text("no id"));
    let script = async move {
        conn.recv_request(Cmd::C2c).await;
        drop(conn);
    };
    let (result, ()) = tokio::join!(send, script);
    assert!(
        matches!(result, Err(ClientError::Disconnected)),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_gap_is_filled_from_history_before_the_message_that_revealed_it() {
    let gate = Gate::start().await;
    let (_client, mut incoming, mut conn) = gate.connect().await;
    conn.push_msgs(&[msg_after(1, 0)]).await;
    assert_eq!(next_message_id(&mut incoming).await, 1);

    // M3 says its predecessor is M2, which this client never got.
    conn.push_msgs(&[msg_after(3, 2)]).await;
    let fill = conn.recv_request(Cmd::HistoryPull).await;
    let req: wire::HistoryPullRequest = fill.decode_body().expect("HistoryPullRequest");
    assert_eq!(req.with, Some(wire::UserRef::from(bob())));
    assert_eq!(req.cursor, 1, "newer than the last message shown");
    assert_eq!(req.direction, wire::HistoryDirection::Newer as i32);
    conn.respond(
        &fill,
        &wire::HistoryPullResponse {
            messages: vec![msg_after(2, 1), msg_after(3, 2)],
            next_cursor: 3,
            more: false,
        },
    )
    .await;
    assert_eq!(message_ids(&mut incoming, 2).await, vec![2, 3]);
    conn.recv_acks_until(&[1, 2, 3]).await;

    // The pushed M3 was held, not shown twice; the next message follows.
    conn.push_msgs(&[msg_after(4, 3)]).await;
    assert_eq!(next_message_id(&mut incoming).await, 4);
}

#[tokio::test]
async fn a_push_racing_the_catch_up_pull_is_delivered_in_order() {
    let gate = Gate::start().await;
    let (client, (mut conn, _)) = tokio::join!(
        Client::connect(gate.config()),
        gate.accept_login(SESSION_ID)
    );
    let (_client, mut incoming) = client.expect("login");

    let first = conn.recv_request(Cmd::OfflinePull).await;
    // While the pull is in flight: a new message, a repeat of an offline one, typing.
    conn.push_msgs(&[msg(7, "seven"), msg(6, "six"), typing()])
        .await;
    conn.respond(
        &first,
        &wire::OfflinePullResponse {
            messages: vec![msg(5, "five")],
            next_cursor: 5,
            more: true,
        },
    )
    .await;
    let second = conn.recv_request(Cmd::OfflinePull).await;
    let req: wire::OfflinePullRequest = second.decode_body().expect("OfflinePullRequest");
    assert_eq!(req.cursor, 5);
    conn.respond(
        &second,
        &wire::OfflinePullResponse {
            messages: vec![msg(6, "six")],
            next_cursor: 6,
            more: false,
        },
    )
    .await;
    // Typing is never held back; the rest comes merged, in msgid order, once.
    assert_eq!(message_ids(&mut incoming, 4).await, vec![0, 5, 6, 7]);
    let acked = conn.recv_acks_until(&[5, 6, 7]).await;
    assert!(!acked.contains(&0));
}

#[tokio::test]
async fn repeats_across_a_reconnect_are_shown_once_and_acked_again() {
    let gate = Gate::start().await;
    let (_client, mut incoming, mut conn) = gate.connect().await;
    conn.push_msgs(&[msg(1, "one"), msg(2, "two")]).await;
    assert_eq!(message_ids(&mut incoming, 2).await, vec![1, 2]);
    drop(conn);
    expect_disconnected(&mut incoming).await;

    // The server redelivers what it saw unacknowledged, and the pull returns it too.
    let (mut conn, _) = gate.accept_login(SESSION_ID + 1).await;
    conn.push_msgs(&[msg(1, "one"), msg(2, "two")]).await;
    conn.answer_catch_up(&[msg(2, "two"), msg(3, "three")])
        .await;
    expect_reconnected(&mut incoming).await;
    assert_eq!(next_message_id(&mut incoming).await, 3);
    conn.push_msgs(&[msg(3, "three"), msg(4, "four")]).await;
    assert_eq!(next_message_id(&mut incoming).await, 4);
    // The repeats are acknowledged again, so that the server stops redelivering them.
    conn.recv_acks_until(&[1, 2, 3, 4]).await;
}

#[tokio::test]
async fn own_messages_are_not_echoed_and_replies_to_them_are_checked() {
    let gate = Gate::start().await;
    let (client, mut incoming, mut conn) = gate.connect().await;

    let send = client.c2c(bob(), Content::text("mine"));
    let script = async {
        let frame = conn.recv_request(Cmd::C2c).await;
        conn.respond(&frame, &receipt(10, false)).await;
    };
    let (sent, ()) = tokio::join!(send, script);
    assert_eq!(sent.expect("sent").msgid, 10);
    // bob answers my 10: in order, no history needed.
    conn.push_msgs(&[msg_after(11, 10)]).await;
    assert_eq!(next_message_id(&mut incoming).await, 11);

    let send = client.c2c(bob(), Content::text("mine again"));
    let script = async {
        // Not a HISTORY_PULL: 11 needed none.
        let frame = conn.recv_request(Cmd::C2c).await;
        conn.respond(&frame, &receipt(12, false)).await;
    };
    let (sent, ()) = tokio::join!(send, script);
    assert_eq!(sent.expect("sent").msgid, 12);
    // bob answers my 12: whether something came between 11 and 12 is checked in history.
    conn.push_msgs(&[msg_after(13, 12)]).await;
    let fill = conn.recv_request(Cmd::HistoryPull).await;
    let req: wire::HistoryPullRequest = fill.decode_body().expect("HistoryPullRequest");
    assert_eq!(req.cursor, 11);
    conn.respond(
        &fill,
        &wire::HistoryPullResponse {
            messages: vec![mine(12, 11, DEVICE), msg_after(13, 12)],
            next_cursor: 13,
            more: false,
        },
    )
    .await;
    assert_eq!(next_message_id(&mut incoming).await, 13, "12 is not echoed");

    // What I sent from another device is shown, but not acked (not in my inbox).
    conn.push_msgs(&[mine(14, 13, "tablet"), msg_after(15, 14)])
        .await;
    match next_event(&mut incoming).await {
        Event::Message(message) => {
            assert_eq!(message.msgid, 14);
            assert_eq!(message.from.uid, UID);
            assert_eq!(message.from_device, "tablet");
        }
        other => panic!("expected my message from the tablet, got {other:?}"),
    }
    assert_eq!(next_message_id(&mut incoming).await, 15);
    let acked = conn.recv_acks_until(&[11, 13, 15]).await;
    assert!(!acked.contains(&14), "{acked:?}");
    assert!(!acked.contains(&10) && !acked.contains(&12), "{acked:?}");
}

#[tokio::test]
async fn a_message_is_acked_only_once_the_app_takes_it() {
    let gate = Gate::start().await;
    let (_client, mut incoming, mut conn) = gate.connect().await;
    conn.push_msgs(&[msg(1, "one"), msg(2, "two")]).await;
    assert_eq!(next_message_id(&mut incoming).await, 1);
    // Only 1 was taken so far: 2 is not acknowledged with it.
    let acked = conn.recv_acks_until(&[1]).await;
    assert!(!acked.contains(&2), "{acked:?}");
    assert_eq!(next_message_id(&mut incoming).await, 2);
    conn.recv_acks_until(&[2]).await;
}
