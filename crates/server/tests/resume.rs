//! Session hold and RESUME (docs/protocol.md §6.5), over real sockets with raw frames: a
//! dropped link is held, what arrives meanwhile waits in the store and comes back in the RESUME
//! response; a token is useless once its session ended; a half-open link is taken over; an
//! expired hold loses nothing; LOGOUT ends the session.

mod raw_session;

use longlink_proto::{ErrorCode, wire};
use longlink_testkit::{TestServer, WAIT, wait_until};
use raw_session::{Conn, login_request, presence_sessions, resume_request, texts, wait_held};

const A: (u32, &str) = (129, "alice");
const B: (u32, &str) = (130, "bob");

/// Sends `texts` from `sender` to `to`; returns the msgids the server acknowledged.
async fn send_all(sender: &mut Conn, to: (u32, &str), prefix: &str, n: usize) -> Vec<u64> {
    let mut msgids = Vec::new();
    for i in 0..n {
        let ack = sender
            .c2c(to, &format!("{prefix}-{i}"), &format!("{prefix} {i}"))
            .await;
        assert!(ack.msgid > 0 && !ack.duplicate);
        msgids.push(ack.msgid);
    }
    msgids
}

#[tokio::test]
async fn resume_after_a_cut_returns_what_was_missed_in_order_and_keeps_the_epoch() {
    let server = TestServer::start().await;
    let gate = &server.server().gates()[0];
    let (a, login) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, A.0, A.1, "phone"),
    )
    .await;
    assert!(
        !login.resume_token.is_empty(),
        "resume_capable gets a token"
    );
    assert!(login.hold_secs > 0);
    assert!(login.epoch > 0);
    let (mut b, _) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, B.0, B.1, "phone"),
    )
    .await;
    let logins_before = gate.metrics().logins.get();
    let resumes_before = gate.metrics().resumes.get();

    // The link is cut: the session is held, still in presence.
    drop(a);
    wait_held(&server, 0, 1).await;
    assert_eq!(
        presence_sessions(&server, A.0, A.1).await.len(),
        1,
        "a held session stays in presence"
    );
    let sent = send_all(&mut b, A, "missed", 5).await;

    let mut a = Conn::connect(server.gate_addr()).await;
    let resumed = a
        .resume(wire::ResumeRequest {
            resume_token: login.resume_token.clone(),
            last_msgid: 0,
            acked_msgids: Vec::new(),
            ..Default::default()
        })
        .await
        .expect("RESUME accepted");
    let got: Vec<u64> = resumed.messages.iter().map(|m| m.msgid).collect();
    assert_eq!(got, sent, "every missed message, in msgid order");
    assert_eq!(
        texts(&resumed.messages),
        (0..5).map(|i| format!("missed {i}")).collect::<Vec<_>>()
    );
    assert!(resumed.gap_free);
    assert_eq!(resumed.epoch, login.epoch, "a RESUME is not a new login");
    assert_eq!(resumed.uid, A.1);
    assert!(!resumed.resume_token.is_empty());
    assert!(resumed.hold_secs > 0);
    assert_ne!(
        resumed.session_id, login.session_id,
        "a new connection, a new session id"
    );
    assert_eq!(
        a.pending_pushes(),
        0,
        "no redelivery pushes besides the response"
    );

    // Live again: the sixth message is pushed to the new connection.
    let sixth = b.c2c(A, "live-0", "live").await;
    let msg = a.next_msg().await;
    assert_eq!(
        (msg.msgid, msg.content.as_ref()),
        (sixth.msgid, b"live".as_ref())
    );
    let sessions = presence_sessions(&server, A.0, A.1).await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        sessions[0].session_id, resumed.session_id,
        "presence points at the new session"
    );
    assert_eq!(sessions[0].epoch, login.epoch);
    // The hold task ends on its own once the RESUME released it.
    wait_held(&server, 0, 0).await;
    assert_eq!(
        gate.metrics().logins.get(),
        logins_before,
        "a RESUME is not counted as a LOGIN"
    );
    assert_eq!(gate.metrics().resumes.get(), resumes_before + 1);

    // The new token works for the next cut; what was acked is not sent again.
    let mut all: Vec<u64> = sent.clone();
    all.push(sixth.msgid);
    a.ack_confirmed(&all[..3]).await;
    drop(a);
    wait_held(&server, 0, 1).await;
    let mut a = Conn::connect(server.gate_addr()).await;
    let again = a
        .resume(wire::ResumeRequest {
            resume_token: resumed.resume_token.clone(),
            last_msgid: sixth.msgid,
            // The ack of these may have been lost with the link: acknowledged first.
            acked_msgids: all[3..5].to_vec(),
            ..Default::default()
        })
        .await
        .expect("the token of the last RESUME works");
    assert_eq!(
        again.messages.iter().map(|m| m.msgid).collect::<Vec<_>>(),
        vec![sixth.msgid]
    );
    assert!(again.gap_free);
    assert_eq!(again.epoch, login.epoch);
    server.stop().await;
}

#[tokio::test]
async fn a_resume_token_is_useless_when_forged_or_once_its_session_ended() {
    let server = TestServer::start().await;
    let gate = &server.server().gates()[0];

    // Garbage: RESUME_REJECTED, the connection stays open and LOGIN works on it.
    let mut conn = Conn::connect(server.gate_addr()).await;
    for token in ["", "garbage", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"] {
        let refused = conn
            .resume(resume_request(token))
            .await
            .expect_err("refused");
        assert_eq!(refused.code, ErrorCode::ResumeRejected, "token {token:?}");
    }
    // A login token of the user is not a resume token either.
    let refused = conn
        .resume(resume_request(&server.token(A.0, A.1)))
        .await
        .expect_err("refused");
    assert_eq!(refused.code, ErrorCode::ResumeRejected);
    let login = conn
        .login(login_request(&server, A.0, A.1, "phone"))
        .await
        .expect("LOGIN on the same connection");
    conn.keepalive().await;

    // Replaced: the same device logged in again; the first session's token is dead.
    let (mut second, second_login) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, A.0, A.1, "phone"),
    )
    .await;
    assert!(second_login.epoch > login.epoch);
    conn.until_closed().await;
    let mut probe = Conn::connect(server.gate_addr()).await;
    let refused = probe
        .resume(resume_request(&login.resume_token))
        .await
        .expect_err("refused");
    assert_eq!(
        refused.code,
        ErrorCode::ResumeRejected,
        "the token of a replaced session"
    );
    second.keepalive().await;
    assert_eq!(
        presence_sessions(&server, A.0, A.1).await[0].epoch,
        second_login.epoch,
        "the rejected RESUME changed nothing"
    );
    let rejected_before = gate.metrics().resumes_rejected.get();

    // Logged out: that token is dead too (the probe connection is still usable).
    second.logout().await;
    let refused = probe
        .resume(resume_request(&second_login.resume_token))
        .await
        .expect_err("refused");
    assert_eq!(
        refused.code,
        ErrorCode::ResumeRejected,
        "the token of a logged-out session"
    );
    assert_eq!(gate.metrics().resumes_rejected.get(), rejected_before + 1);
    assert!(presence_sessions(&server, A.0, A.1).await.is_empty());
    probe
        .login(login_request(&server, A.0, A.1, "phone"))
        .await
        .expect("LOGIN after the rejection");
    server.stop().await;
}

#[tokio::test]
async fn a_resume_takes_over_a_half_open_link_which_closes_without_a_kick() {
    let server = TestServer::start().await;
    let (old, login) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, A.0, A.1, "phone"),
    )
    .await;
    let (mut b, _) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, B.0, B.1, "phone"),
    )
    .await;
    // The old link is still open as far as the server knows (the client gave up on it).
    let mut new = Conn::connect(server.gate_addr()).await;
    let resumed = new
        .resume(resume_request(&login.resume_token))
        .await
        .expect("RESUME accepted");
    assert!(resumed.messages.is_empty() && resumed.gap_free);
    assert_eq!(resumed.epoch, login.epoch);
    let frames = old.until_closed().await;
    assert!(
        frames.is_empty(),
        "the old link is closed without a frame: {:?}",
        frames.iter().map(|f| f.header).collect::<Vec<_>>()
    );
    let sent = b.c2c(A, "after-takeover", "to the new link").await;
    let msg = new.next_msg().await;
    assert_eq!(msg.msgid, sent.msgid);
    new.keepalive().await;
    assert_eq!(new.pending_pushes(), 0, "no KICK on the new connection");
    let sessions = presence_sessions(&server, A.0, A.1).await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].session_id, resumed.session_id);
    assert_eq!(
        server.server().gates()[0].held_count(),
        0,
        "the taken-over link is not held"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_expired_hold_loses_nothing_and_its_token_is_rejected() {
    let server = TestServer::start_with(|config| config.gate.hold_secs = 1).await;
    let gate = &server.server().gates()[0];
    let (a, login) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, A.0, A.1, "phone"),
    )
    .await;
    assert_eq!(login.hold_secs, 1);
    let (mut b, _) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, B.0, B.1, "phone"),
    )
    .await;
    drop(a);
    wait_held(&server, 0, 1).await;
    // During the hold: stored, not pushed anywhere.
    let mut sent = send_all(&mut b, A, "held", 3).await;
    // The hold runs out: the session is over.
    wait_until(WAIT, || async {
        presence_sessions(&server, A.0, A.1).await.is_empty()
    })
    .await
    .expect("presence forgets the session when its hold expires");
    assert_eq!(gate.held_count(), 0);
    assert_eq!(gate.metrics().holds_expired.get(), 1);
    // After it: offline at once.
    sent.extend(send_all(&mut b, A, "after", 3).await);

    let mut a = Conn::connect(server.gate_addr()).await;
    let refused = a
        .resume(resume_request(&login.resume_token))
        .await
        .expect_err("refused");
    assert_eq!(refused.code, ErrorCode::ResumeRejected);
    let relogin = wire::LoginRequest {
        prior_epoch: login.epoch,
        ..login_request(&server, A.0, A.1, "phone")
    };
    let second = a
        .login(relogin)
        .await
        .expect("LOGIN with prior_epoch after the hold");
    assert!(second.epoch > login.epoch);
    let redelivered: Vec<u64> = a.msgs(sent.len()).await.iter().map(|m| m.msgid).collect();
    assert_eq!(redelivered, sent, "redelivered at login, in order");
    let pulled: Vec<u64> = a.pull_all().await.iter().map(|m| m.msgid).collect();
    assert_eq!(pulled, sent, "and all of them by OFFLINE_PULL");
    server.stop().await;
}

#[tokio::test]
async fn logout_ends_the_session_messages_go_offline_and_the_token_dies() {
    let server = TestServer::start().await;
    let gate = &server.server().gates()[0];
    let (a, login) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, A.0, A.1, "phone"),
    )
    .await;
    let (mut b, _) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, B.0, B.1, "phone"),
    )
    .await;
    a.logout().await;
    assert!(
        presence_sessions(&server, A.0, A.1).await.is_empty(),
        "LOGOUT leaves presence"
    );
    assert_eq!(
        gate.held_count(),
        0,
        "LOGOUT is not a link failure: nothing is held"
    );
    let sent = send_all(&mut b, A, "offline", 3).await;

    let mut a = Conn::connect(server.gate_addr()).await;
    let refused = a
        .resume(resume_request(&login.resume_token))
        .await
        .expect_err("refused");
    assert_eq!(refused.code, ErrorCode::ResumeRejected);
    a.login(login_request(&server, A.0, A.1, "phone"))
        .await
        .expect("LOGIN");
    let redelivered: Vec<u64> = a.msgs(sent.len()).await.iter().map(|m| m.msgid).collect();
    assert_eq!(redelivered, sent);
    let pulled: Vec<u64> = a.pull_all().await.iter().map(|m| m.msgid).collect();
    assert_eq!(pulled, sent, "what arrived after LOGOUT waits in the inbox");
    // Another device of the same user is not affected by a LOGOUT.
    let (mut tablet, _) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, A.0, A.1, "tablet"),
    )
    .await;
    let _ = tablet.msgs(sent.len()).await;
    a.logout().await;
    let live = b.c2c(A, "to-tablet", "tablet still here").await;
    assert_eq!(tablet.next_msg().await.msgid, live.msgid);
    server.stop().await;
}
