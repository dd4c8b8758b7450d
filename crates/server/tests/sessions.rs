//! Multi-login policy and connection epochs (docs/protocol.md §6.3) and login admission
//! control (§6.6), over real sockets with raw frames.

mod raw_session;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use longlink_proto::{ErrorCode, KickReason, wire};
use longlink_server::config::MultiLoginPolicy;
use longlink_testkit::{TestServer, WAIT, wait_until};
use raw_session::{
    Conn, kicks, login_request, presence_sessions, reason, resume_request, wait_held,
};

const CAROL: (u32, &str) = (129, "carol");
const BOB: (u32, &str) = (130, "bob");

fn classed(server: &TestServer, device: &str, class: &str) -> wire::LoginRequest {
    wire::LoginRequest {
        device_class: class.to_owned(),
        ..login_request(server, CAROL.0, CAROL.1, device)
    }
}

/// Carol's devices presence lists, sorted.
async fn devices(server: &TestServer) -> Vec<String> {
    let mut out: Vec<String> = presence_sessions(server, CAROL.0, CAROL.1)
        .await
        .into_iter()
        .map(|s| s.device_id)
        .collect();
    out.sort();
    out
}

/// Expects `conn` to get exactly one KICK REPLACED by `by` and then the close.
async fn expect_replaced(conn: Conn, by: &str) {
    let frames = conn.until_closed().await;
    let kicks = kicks(&frames);
    assert_eq!(kicks.len(), 1, "one KICK, then the close: {frames:?}");
    assert_eq!(reason(&kicks[0]), KickReason::Replaced);
    assert_eq!(kicks[0].by_device_id, by);
    assert_eq!(kicks[0].backoff_ms, 0);
    assert_eq!(
        frames.last().and_then(|f| f.cmd()),
        Some(longlink_proto::Cmd::Kick),
        "the KICK is the last frame"
    );
}

fn allow(server_config: &mut longlink_server::Config, max_sessions: usize) {
    let app = server_config
        .apps
        .iter_mut()
        .find(|a| a.appcode == CAROL.0)
        .expect("appcode 129 is configured");
    app.multi_login = MultiLoginPolicy::Allow;
    app.max_sessions = max_sessions;
}

#[tokio::test]
async fn kick_policy_keeps_one_session_per_device_class() {
    let server = TestServer::start().await;
    let (p1, first) = Conn::logged_in(server.gate_addr(), classed(&server, "p1", "phone")).await;
    let (mut web, _) = Conn::logged_in(server.gate_addr(), classed(&server, "w1", "web")).await;
    let (mut p2, second) =
        Conn::logged_in(server.gate_addr(), classed(&server, "p2", "phone")).await;
    assert!(second.epoch > first.epoch);
    expect_replaced(p1, "p2").await;
    web.keepalive().await;
    assert_eq!(devices(&server).await, ["p2", "w1"]);
    assert_eq!(
        server.server().gates()[0].held_count(),
        0,
        "a replaced session is not held"
    );
    // A message reaches both remaining sessions.
    let (mut bob, _) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, BOB.0, BOB.1, "b"),
    )
    .await;
    let sent = bob.c2c(CAROL, "m1", "hi").await;
    assert_eq!(p2.next_msg().await.msgid, sent.msgid);
    assert_eq!(web.next_msg().await.msgid, sent.msgid);
    // The kicked session's token is dead.
    let mut probe = Conn::connect(server.gate_addr()).await;
    let refused = probe
        .resume(resume_request(&first.resume_token))
        .await
        .expect_err("refused");
    assert_eq!(refused.code, ErrorCode::ResumeRejected);
    server.stop().await;
}

#[tokio::test]
async fn allow_policy_keeps_max_sessions_and_kicks_the_oldest_beyond() {
    let server = TestServer::start_with(|c| allow(c, 2)).await;
    let (d1, _) = Conn::logged_in(server.gate_addr(), classed(&server, "d1", "phone")).await;
    let (mut d2, _) = Conn::logged_in(server.gate_addr(), classed(&server, "d2", "phone")).await;
    assert_eq!(
        devices(&server).await,
        ["d1", "d2"],
        "the same class is no conflict under allow"
    );
    let (mut d3, _) = Conn::logged_in(server.gate_addr(), classed(&server, "d3", "phone")).await;
    expect_replaced(d1, "d3").await;
    d2.keepalive().await;
    assert_eq!(devices(&server).await, ["d2", "d3"]);
    let (mut bob, _) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, BOB.0, BOB.1, "b"),
    )
    .await;
    let sent = bob.c2c(CAROL, "m1", "hi").await;
    assert_eq!(d2.next_msg().await.msgid, sent.msgid);
    assert_eq!(d3.next_msg().await.msgid, sent.msgid);
    // The same device always replaces itself, whatever the policy.
    let (mut d3_again, _) =
        Conn::logged_in(server.gate_addr(), classed(&server, "d3", "phone")).await;
    expect_replaced(d3, "d3").await;
    d2.keepalive().await;
    d3_again.keepalive().await;
    assert_eq!(devices(&server).await, ["d2", "d3"]);
    server.stop().await;
}

#[tokio::test]
async fn a_stale_reconnect_cannot_kick_a_fresher_session() {
    let server = TestServer::start().await;
    let (old, stale) =
        Conn::logged_in(server.gate_addr(), classed(&server, "phone-1", "phone")).await;
    let (mut fresh, fresh_login) =
        Conn::logged_in(server.gate_addr(), classed(&server, "phone-2", "phone")).await;
    expect_replaced(old, "phone-2").await;

    // phone-1 reconnects by itself with the epoch of its old session: refused, and it closes.
    let mut retry = Conn::connect(server.gate_addr()).await;
    let refused = retry
        .login(wire::LoginRequest {
            prior_epoch: stale.epoch,
            ..classed(&server, "phone-1", "phone")
        })
        .await
        .expect_err("a stale reconnect is refused");
    assert_eq!(refused.code, ErrorCode::SessionReplaced);
    assert!(
        retry.until_closed().await.is_empty(),
        "SESSION_REPLACED closes"
    );
    // The fresh session was not touched.
    fresh.keepalive().await;
    let sessions = presence_sessions(&server, CAROL.0, CAROL.1).await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        (sessions[0].device_id.as_str(), sessions[0].epoch),
        ("phone-2", fresh_login.epoch)
    );
    let (mut bob, _) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, BOB.0, BOB.1, "b"),
    )
    .await;
    let sent = bob.c2c(CAROL, "m1", "to the fresh one").await;
    assert_eq!(fresh.next_msg().await.msgid, sent.msgid);

    // A reconnect carrying its own (current) epoch replaces its own held session.
    drop(fresh);
    wait_held(&server, 0, 1).await;
    let (mut back, back_login) = Conn::logged_in(
        server.gate_addr(),
        wire::LoginRequest {
            prior_epoch: fresh_login.epoch,
            ..classed(&server, "phone-2", "phone")
        },
    )
    .await;
    assert!(back_login.epoch > fresh_login.epoch);
    assert_eq!(
        back.next_msg().await.msgid,
        sent.msgid,
        "unacked: redelivered at login"
    );
    wait_held(&server, 0, 0).await;
    // The stale phone-1 still cannot come back over it…
    let mut retry = Conn::connect(server.gate_addr()).await;
    let refused = retry
        .login(wire::LoginRequest {
            prior_epoch: stale.epoch,
            ..classed(&server, "phone-1", "phone")
        })
        .await
        .expect_err("still stale");
    assert_eq!(refused.code, ErrorCode::SessionReplaced);
    back.keepalive().await;
    // …but a login the user asked for (prior_epoch 0) always wins.
    let (mut user, _) =
        Conn::logged_in(server.gate_addr(), classed(&server, "phone-1", "phone")).await;
    expect_replaced(back, "phone-1").await;
    user.keepalive().await;
    server.stop().await;
}

/// Two gates of one node: a session's end on one gate must not unregister the user's session
/// on the other (session ids are unique per gate only).
#[tokio::test]
async fn closing_a_session_on_one_gate_leaves_the_users_session_on_the_other() {
    let server = TestServer::start_with(|c| {
        c.gate.extra_listen = vec!["127.0.0.1:0".parse().unwrap()];
        allow(c, 5);
    })
    .await;
    let gates = server.server().gates();
    let gate2: std::net::SocketAddr = gates[1].public_addr().parse().unwrap();
    let not_resumable = |device: &str| wire::LoginRequest {
        resume_capable: false,
        ..classed(&server, device, "phone")
    };
    let (mut d1, one) = Conn::logged_in(server.gate_addr(), not_resumable("d1")).await;
    let (mut d2, two) = Conn::logged_in(gate2, not_resumable("d2")).await;
    assert_eq!(devices(&server).await, ["d1", "d2"]);
    // What d2 sends shows on carol's other device, whatever the session ids.
    let echo = d2.c2c(BOB, "from-d2", "from d2").await;
    assert_eq!(
        d1.next_msg().await.msgid,
        echo.msgid,
        "d1 (session {} on gate 1) gets d2's (session {} on gate 2) message",
        one.session_id,
        two.session_id
    );
    drop(d1);
    wait_until(WAIT, || async { gates[0].connection_count() == 0 })
        .await
        .expect("gate 1 closes d1");
    wait_until(WAIT, || async {
        !devices(&server).await.contains(&"d1".to_owned())
    })
    .await
    .expect("d1 leaves presence");
    assert_eq!(
        devices(&server).await,
        ["d2"],
        "d2 (session {} on gate 2) must survive d1 (session {} on gate 1) closing",
        two.session_id,
        one.session_id
    );
    let (mut bob, _) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, BOB.0, BOB.1, "b"),
    )
    .await;
    let sent = bob.c2c(CAROL, "m1", "live to d2").await;
    assert_eq!(d2.next_msg().await.msgid, sent.msgid);

    // The same across a kick: d3 on gate 1 replaces d2 on gate 2 (same device id).
    let (mut d2_on_gate1, _) = Conn::logged_in(server.gate_addr(), not_resumable("d2")).await;
    expect_replaced(d2, "d2").await;
    wait_until(WAIT, || async { gates[1].connection_count() == 0 })
        .await
        .expect("gate 2 closes the replaced session");
    assert_eq!(
        devices(&server).await,
        ["d2"],
        "the replaced session's close leaves its successor"
    );
    let sent = bob.c2c(CAROL, "m2", "live to d2 on gate 1").await;
    let msg = d2_on_gate1.next_msg().await;
    let msg = if msg.msgid != sent.msgid {
        // The first message came again at login (redelivery of what d2 never acked).
        d2_on_gate1.next_msg().await
    } else {
        msg
    };
    assert_eq!(msg.msgid, sent.msgid);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_is_throttled_while_sessions_and_resumes_are_served() {
    const STORM: usize = 40;
    let server = TestServer::start_with(|c| {
        c.gate.login_rate_per_sec = 5;
        c.gate.login_burst = 5;
    })
    .await;
    let addr = server.gate_addr();
    let gate = &server.server().gates()[0];
    // Three logins of the burst of five: S and P chat; R drops its link and will RESUME.
    let (mut s, _) = Conn::logged_in(addr, login_request(&server, CAROL.0, CAROL.1, "s")).await;
    let (mut p, _) = Conn::logged_in(addr, login_request(&server, BOB.0, BOB.1, "p")).await;
    let (r, r_login) = Conn::logged_in(addr, login_request(&server, 131, "rita", "r")).await;
    drop(r);
    wait_held(&server, 0, 1).await;

    let throttled_seen = Arc::new(tokio::sync::Notify::new());
    let first = Arc::new(AtomicBool::new(true));
    let storm: Vec<_> = (0..STORM)
        .map(|i| {
            let request = login_request(&server, 129, &format!("storm-{i}"), "d");
            let (throttled_seen, first) = (throttled_seen.clone(), first.clone());
            tokio::spawn(async move {
                let mut conn = Conn::connect(addr).await;
                match conn.login(request).await {
                    Ok(_) => Ok(conn),
                    Err(refused) => {
                        if refused.code == ErrorCode::RateLimited
                            && first.swap(false, Ordering::AcqRel)
                        {
                            throttled_seen.notify_one();
                        }
                        let frames = conn.until_closed().await;
                        assert!(frames.is_empty(), "RATE_LIMITED closes the connection");
                        Err(refused)
                    }
                }
            })
        })
        .collect();
    // While the storm is on: a RESUME (sent right after a LOGIN was throttled, so the bucket is
    // empty) and a c2c round trip of the established session.
    let resume = async {
        throttled_seen.notified().await;
        let mut conn = Conn::connect(addr).await;
        let resumed = conn.resume(resume_request(&r_login.resume_token)).await;
        (conn, resumed)
    };
    let chat = async {
        let sent = s.c2c(BOB, "during-storm", "still here").await;
        assert_eq!(p.next_msg().await.msgid, sent.msgid);
    };
    let ((mut r, resumed), ()) = tokio::time::timeout(WAIT, async { tokio::join!(resume, chat) })
        .await
        .expect("the RESUME and the chat are served during the storm");
    let resumed = resumed.expect("a RESUME is not subject to the login rate");
    assert_eq!(resumed.epoch, r_login.epoch);
    r.keepalive().await;

    let mut admitted = Vec::new();
    let mut throttled = 0u64;
    for task in storm {
        match task.await.expect("storm task") {
            Ok(conn) => admitted.push(conn),
            Err(refused) => {
                assert_eq!(
                    refused.code,
                    ErrorCode::RateLimited,
                    "only RATE_LIMITED refuses a valid LOGIN"
                );
                assert!(
                    refused.retry_after_ms > 0,
                    "a refusal says when to come back"
                );
                throttled += 1;
            }
        }
    }
    assert!(!admitted.is_empty(), "some of the storm gets in");
    assert!(throttled > 0, "the rest is throttled");
    assert_eq!(admitted.len() as u64 + throttled, STORM as u64);
    assert_eq!(gate.metrics().logins_throttled.get(), throttled);
    for conn in &mut admitted {
        conn.keepalive().await;
    }
    // After the storm: both directions still work.
    let sent = p.c2c(CAROL, "after-storm", "pong").await;
    assert_eq!(s.next_msg().await.msgid, sent.msgid);
    let sent = s.c2c(BOB, "after-storm-2", "ping").await;
    assert_eq!(p.next_msg().await.msgid, sent.msgid);
    server.stop().await;
}
