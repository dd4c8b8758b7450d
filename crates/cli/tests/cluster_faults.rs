//! Cluster faults (issue 7) with real processes and engines (`longlink_testkit::cluster`):
//!
//! - RESUME across gates within the hold (seed 004): the session moves, the messages sent
//!   meanwhile come once, the old gate lets go of its hold;
//! - a login of the same device on another gate: the old gate sends KICK REPLACED;
//! - `kill -9` of the api process: chats through the gates go on; a restarted api pushes;
//! - a Redis restart that loses every key: logins meanwhile get an ERROR (no hang); then the
//!   gates re-register their sessions and a user who stayed connected is reachable again;
//! - a PostgreSQL restart: c2c meanwhile gets STORE_UNAVAILABLE; the SDK's retried send is
//!   ACKed once afterwards, with no manual step;
//! - a NATS restart: requests meanwhile fail fast; then gates and logic serve again.
//!
//! Every wait is a condition with a deadline; nothing sleeps for a fixed time.

use std::path::Path;
use std::time::{Duration, Instant};

use longlink_sdk::longlink_proto::{Cmd, ErrorCode, Frame, KickReason, wire};
use longlink_sdk::{Content, Event};
use longlink_testkit::cluster::{APPCODE, Cluster, next_message, online, token, user};
use longlink_testkit::{RawClient, WAIT, error_of, is_response, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_longlink");
/// How long a request may take to fail while an engine is down: never a hang.
const FAIL_FAST: Duration = Duration::from_secs(12);

/// A raw LOGIN of `uid` on `addr` (resume-capable); the connection and the answer frame.
async fn raw_login(addr: std::net::SocketAddr, uid: &str, device: &str) -> (RawClient, Frame) {
    let mut raw = RawClient::connect(addr).await.expect("connect");
    let request = wire::LoginRequest {
        token: token(uid),
        appcode: APPCODE,
        device_id: device.to_owned(),
        resume_capable: true,
        ..Default::default()
    };
    raw.send(Frame::request(Cmd::Login, 1, 0, &request))
        .await
        .expect("send LOGIN");
    let answer = raw.recv().await.expect("an answer to LOGIN");
    (raw, answer)
}

/// A raw C2C of text to `to`; the answer (pushes before it skipped), within `deadline`.
async fn raw_c2c(
    raw: &mut RawClient,
    seq: u32,
    to: &str,
    client_msg_id: &str,
    deadline: Duration,
) -> anyhow::Result<Frame> {
    let request = wire::C2cRequest {
        to: Some(wire::UserRef {
            appcode: APPCODE,
            uid: to.to_owned(),
        }),
        client_msg_id: client_msg_id.to_owned(),
        content: bytes::Bytes::from_static(b"raw"),
        ..Default::default()
    };
    raw.send(Frame::request(Cmd::C2c, seq, 0, &request)).await?;
    tokio::time::timeout(deadline, async {
        loop {
            let frame = raw.recv().await?;
            if frame.header.seq_id == seq
                && (frame.cmd() == Some(Cmd::Error) || is_response(&frame, Cmd::C2c))
            {
                return Ok(frame);
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer to C2C within {deadline:?}"))?
}

/// The next Msg push on a raw connection.
async fn raw_next_msg(raw: &mut RawClient) -> wire::Msg {
    loop {
        let frame = raw.recv().await.expect("a push");
        if frame.cmd() == Some(Cmd::Msg) {
            return frame.decode_body().expect("Msg");
        }
    }
}

/// `held` of gate `gate_id` in `/v1/gates` (reported first-hand by its own process's API).
async fn held(api: &longlink_testkit::ApiClient, gate_id: &str) -> u64 {
    let (status, body) = api.get("/v1/gates").await;
    assert_eq!(status, 200, "{body}");
    let gates = body["gates"].as_array().cloned().unwrap_or_default();
    gates
        .iter()
        .find(|g| g["id"] == gate_id)
        .and_then(|g| g["held"].as_u64())
        .unwrap_or_else(|| panic!("{gate_id} in /v1/gates: {body}"))
}

/// Whether the API says `uid` is online; `false` while it cannot tell (presence down).
async fn online_now(api: &longlink_testkit::ApiClient, uid: &str) -> bool {
    let (status, body) = api.get(&format!("/v1/presence/{APPCODE}/{uid}")).await;
    status == 200 && body["online"].as_bool() == Some(true)
}

/// The gate `uid`'s sessions are on, by the API.
async fn gates_of(api: &longlink_testkit::ApiClient, uid: &str) -> Vec<String> {
    let (status, body) = api.get(&format!("/v1/presence/{APPCODE}/{uid}")).await;
    assert_eq!(status, 200, "{body}");
    body["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| s["gate"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_on_another_gate_within_the_hold() {
    let mut cluster = Cluster::start(Path::new(BIN));
    cluster.spawn("logic-1", "logic").await;
    // Gate A with its own API: /v1/gates reports its holds first-hand.
    cluster.spawn("gate-a", "gate,api").await;
    cluster.spawn("gate-b", "gate").await;
    let api = cluster.api("gate-a");
    let (alice, _alice_in) = cluster.connect("gate-b", "alice", "phone").await;

    let (raw, answer) = raw_login(cluster.process("gate-a").gate_addr(), "bob", "phone").await;
    assert!(is_response(&answer, Cmd::Login), "bob logs in on gate A");
    let login: wire::LoginResponse = answer.decode_body().expect("LoginResponse");
    assert!(!login.resume_token.is_empty(), "a resume token");
    // The link is cut: gate A holds bob's session.
    drop(raw);
    wait_until(WAIT, || async { held(&api, "gate-a").await == 1 })
        .await
        .expect("gate A holds bob's session");

    let meanwhile = alice
        .c2c_with_id(
            user("bob"),
            "while-cut",
            Content::text("while your link was cut"),
        )
        .await
        .expect("ACKed while bob is held");

    let mut raw = RawClient::connect(cluster.process("gate-b").gate_addr())
        .await
        .expect("connect to gate B");
    let resume = wire::ResumeRequest {
        resume_token: login.resume_token.clone(),
        ..Default::default()
    };
    raw.send(Frame::request(Cmd::Resume, 2, 0, &resume))
        .await
        .expect("send RESUME");
    let answer = raw.recv().await.expect("an answer to RESUME");
    assert!(
        is_response(&answer, Cmd::Resume),
        "RESUME on gate B is accepted: {:?}",
        error_of(&answer)
    );
    let resumed: wire::ResumeResponse = answer.decode_body().expect("ResumeResponse");
    assert_eq!(resumed.epoch, login.epoch, "the same session (epoch kept)");
    let missed: Vec<u64> = resumed.messages.iter().map(|m| m.msgid).collect();
    assert_eq!(
        missed,
        vec![meanwhile.msgid],
        "the message sent meanwhile comes once, in the RESUME answer"
    );
    // Gate A let go of its hold; presence points at gate B.
    wait_until(WAIT, || async { held(&api, "gate-a").await == 0 })
        .await
        .expect("gate A no longer holds bob's session");
    assert_eq!(gates_of(&api, "bob").await, vec!["gate-b".to_owned()]);

    // Live again on gate B, and the earlier message is not pushed a second time.
    let next = alice
        .c2c_with_id(user("bob"), "after-resume", Content::text("welcome back"))
        .await
        .expect("ACKed after the resume");
    let pushed = raw_next_msg(&mut raw).await;
    assert_eq!(
        (pushed.msgid, pushed.client_msg_id.as_str()),
        (next.msgid, "after-resume"),
        "the next push is the new message (nothing repeated)"
    );
    alice.close().await;
    cluster.terminate_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_on_another_gate_kicks_the_old_session_replaced() {
    let mut cluster = Cluster::start(Path::new(BIN));
    cluster.spawn("logic-1", "logic").await;
    cluster.spawn("gate-a", "gate").await;
    cluster.spawn("gate-b", "gate,api").await;
    let api = cluster.api("gate-b");

    let (_old, mut old_in) = cluster.connect("gate-a", "bob", "phone").await;
    let (new, _new_in) = cluster.connect("gate-b", "bob", "phone").await;
    let kicked = tokio::time::timeout(WAIT, async {
        loop {
            match old_in.next_event().await {
                Some(Event::Kicked { reason, .. }) => return Some(reason),
                Some(_) => {}
                None => return None,
            }
        }
    })
    .await
    .expect("the old session hears from gate A in time");
    assert_eq!(
        kicked,
        Some(KickReason::Replaced),
        "gate A kicks the old session"
    );
    wait_until(WAIT, || async {
        gates_of(&api, "bob").await == vec!["gate-b".to_owned()]
    })
    .await
    .expect("presence holds the new session only");
    // The new session works.
    let (alice, _alice_in) = cluster.connect("gate-a", "alice", "phone").await;
    let sent = alice
        .c2c_with_id(user("bob"), "to-new", Content::text("hi"))
        .await
        .expect("ACKed");
    let mut new_in = _new_in;
    assert_eq!(next_message(&mut new_in).await.msgid, sent.msgid);
    alice.close().await;
    new.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_api_leaves_chats_alone_and_a_restarted_api_pushes() {
    let mut cluster = Cluster::start(Path::new(BIN));
    cluster.spawn("logic-1", "logic").await;
    cluster.spawn("gate-a", "gate").await;
    cluster.spawn("gate-b", "gate").await;
    cluster.spawn("api-1", "api").await;
    let (alice, _alice_in) = cluster.connect("gate-a", "alice", "phone").await;
    let (bob, mut bob_in) = cluster.connect("gate-b", "bob", "phone").await;

    cluster.kill9("api-1").await;
    for i in 0..5 {
        let sent = alice
            .c2c_with_id(
                user("bob"),
                &format!("no-api-{i}"),
                Content::text("still here"),
            )
            .await
            .expect("ACKed without the api process");
        assert_eq!(next_message(&mut bob_in).await.msgid, sent.msgid);
    }

    cluster.restart("api-1").await;
    let api = cluster.api("api-1");
    wait_until(WAIT, || async { online(&api, "bob").await })
        .await
        .expect("the restarted api sees bob");
    let (status, body) = api
        .post(
            "/v1/push",
            &serde_json::json!({"appcode": APPCODE, "uids": ["bob"], "content": "from the new api"}),
        )
        .await;
    assert!((200..300).contains(&status), "{status} {body}");
    let pushed = next_message(&mut bob_in).await;
    assert_eq!(pushed.content.as_text(), Some("from the new api"));
    alice.close().await;
    bob.close().await;
    cluster.terminate_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_is_rebuilt_after_redis_restarts_empty() {
    let mut cluster = Cluster::start(Path::new(BIN));
    cluster.spawn("logic-1", "logic").await;
    cluster.spawn("gate-a", "gate").await;
    cluster.spawn("gate-b", "gate,api").await;
    let api = cluster.api("gate-b");
    let (alice, _alice_in) = cluster.connect("gate-a", "alice", "phone").await;
    let (bob, mut bob_in) = cluster.connect("gate-b", "bob", "phone").await;
    assert!(online(&api, "bob").await);

    cluster.redis.kill();
    // A login while Redis is down: a clear ERROR, quickly.
    let started = Instant::now();
    let (_raw, answer) = tokio::time::timeout(
        FAIL_FAST,
        raw_login(cluster.process("gate-a").gate_addr(), "carol", "phone"),
    )
    .await
    .expect("the login is answered, not left hanging");
    let (code, _) = error_of(&answer).expect("an ERROR while presence is down");
    eprintln!(
        "login with redis down: {code:?} after {:?}",
        started.elapsed()
    );

    cluster.redis.restart().expect("redis restarts (empty)");
    // The gates notice that their heartbeats vanished and re-register their sessions.
    wait_until(WAIT, || async { online_now(&api, "bob").await })
        .await
        .expect("bob's session is back in presence without reconnecting");
    assert_eq!(gates_of(&api, "bob").await, vec!["gate-b".to_owned()]);
    if wait_until(WAIT, || async { online_now(&api, "alice").await })
        .await
        .is_err()
    {
        let (_, lines) = cluster.terminate("gate-a").await;
        panic!(
            "alice's session is back in presence too: {}",
            lines.join("\n")
        );
    }

    // bob, who stayed connected, gets a c2c live (not through a pull).
    let sent = alice
        .c2c_with_id(
            user("bob"),
            "after-redis",
            Content::text("presence is back"),
        )
        .await
        .expect("ACKed after the redis restart");
    assert_eq!(next_message(&mut bob_in).await.msgid, sent.msgid);
    // And a push through the API.
    let (status, body) = api
        .post(
            "/v1/push",
            &serde_json::json!({"appcode": APPCODE, "uids": ["bob"], "content": "pushed"}),
        )
        .await;
    assert!((200..300).contains(&status), "{status} {body}");
    assert_eq!(
        next_message(&mut bob_in).await.content.as_text(),
        Some("pushed")
    );
    // New logins work again.
    let (carol, _carol_in) = cluster.connect("gate-a", "carol", "phone").await;
    carol.close().await;
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_fails_c2c_clearly_then_recovers() {
    let mut cluster = Cluster::start(Path::new(BIN));
    cluster.spawn("logic-1", "logic").await;
    cluster.spawn("gate-a", "gate").await;
    cluster.spawn("gate-b", "gate").await;
    let (alice, _alice_in) = cluster.connect("gate-a", "alice", "phone").await;
    let (bob, mut bob_in) = cluster.connect("gate-b", "bob", "phone").await;
    let (mut raw, answer) = raw_login(cluster.process("gate-a").gate_addr(), "dave", "phone").await;
    assert!(is_response(&answer, Cmd::Login));

    cluster.postgres.kill();
    let started = Instant::now();
    let answer = raw_c2c(&mut raw, 2, "bob", "pg-down", FAIL_FAST)
        .await
        .expect("the c2c is answered, not left hanging");
    let (code, _) = error_of(&answer).expect("an ERROR while the store is down");
    eprintln!(
        "c2c with postgres down: {code:?} after {:?}",
        started.elapsed()
    );
    assert_eq!(
        code,
        ErrorCode::StoreUnavailable,
        "after {:?}",
        started.elapsed()
    );

    // The SDK keeps resending this one (same client_msg_id) through the outage.
    let alice = std::sync::Arc::new(alice);
    let retried = {
        let alice = alice.clone();
        tokio::spawn(async move {
            alice
                .c2c_with_id(
                    user("bob"),
                    "pg-retried",
                    Content::text("sent during the outage"),
                )
                .await
        })
    };
    // After a kill -9 the old postmaster's backends exit on their own shortly after; until
    // then the new postmaster refuses to start on the same data: try again for a while.
    let end = Instant::now() + WAIT;
    while let Err(err) = cluster.postgres.restart() {
        assert!(Instant::now() < end, "postgres restarts: {err:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let receipt = tokio::time::timeout(Duration::from_secs(90), retried)
        .await
        .expect("the retried send ends")
        .expect("task")
        .expect("ACKed once postgres is back, with no manual step");
    let got = next_message(&mut bob_in).await;
    assert_eq!(got.msgid, receipt.msgid);
    // Exactly once: the next message bob gets is the next one sent.
    let after = alice
        .c2c_with_id(user("bob"), "pg-after", Content::text("after"))
        .await
        .expect("ACKed");
    let got = next_message(&mut bob_in).await;
    assert_eq!(
        (got.msgid, got.client_msg_id.as_str()),
        (after.msgid, "pg-after"),
        "the retried message came once"
    );
    // What failed during the outage was not stored: dave's raw retry is a fresh store.
    let answer = raw_c2c(&mut raw, 3, "bob", "pg-down", WAIT)
        .await
        .expect("answered");
    assert!(is_response(&answer, Cmd::C2c), "{:?}", error_of(&answer));
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_restart_fails_requests_fast_then_gates_and_logic_are_back() {
    let mut cluster = Cluster::start(Path::new(BIN));
    cluster.spawn("logic-1", "logic").await;
    cluster.spawn("gate-a", "gate").await;
    cluster.spawn("gate-b", "gate").await;
    let (bob, mut bob_in) = cluster.connect("gate-b", "bob", "phone").await;
    let (mut raw, answer) = raw_login(cluster.process("gate-a").gate_addr(), "dave", "phone").await;
    assert!(is_response(&answer, Cmd::Login));

    cluster.nats.kill();
    let started = Instant::now();
    let answer = raw_c2c(&mut raw, 2, "bob", "nats-down", FAIL_FAST)
        .await
        .expect("the c2c is answered, not left hanging");
    let (code, _) = error_of(&answer).expect("an ERROR while nats is down");
    eprintln!("c2c with nats down: {code:?} after {:?}", started.elapsed());
    assert!(
        matches!(code, ErrorCode::Overloaded | ErrorCode::BusUnavailable),
        "{code:?} after {:?}",
        started.elapsed()
    );

    cluster.nats.restart().expect("nats restarts");
    // The gates' and logic's subscriptions come back: the send is retried with the same
    // client_msg_id, as the SDK does (an OVERLOADED call may still have been applied once the
    // NATS client flushed it after reconnecting: the id makes the retry idempotent).
    let end = Instant::now() + WAIT;
    let mut seq = 10;
    let msgid = loop {
        seq += 1;
        match raw_c2c(&mut raw, seq, "bob", "nats-down", Duration::from_secs(5)).await {
            Ok(frame) if is_response(&frame, Cmd::C2c) => {
                let response: wire::C2cResponse = frame.decode_body().expect("C2cResponse");
                break response.msgid;
            }
            other => {
                assert!(
                    Instant::now() < end,
                    "c2c works again after the nats restart: {:?}",
                    other.map(|f| error_of(&f).ok())
                );
                // The gate answered at once (no responders yet): ask again shortly.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let got = next_message(&mut bob_in).await;
    assert_eq!(
        (got.msgid, got.client_msg_id.as_str()),
        (msgid, "nats-down"),
        "delivered live through gate B's subject"
    );
    // And the SDK chat both ways; nothing of the outage comes twice.
    let (alice, mut alice_in) = cluster.connect("gate-a", "alice", "phone").await;
    let reply = bob
        .c2c_with_id(user("alice"), "reply", Content::text("back"))
        .await
        .expect("ACKed");
    assert_eq!(next_message(&mut alice_in).await.msgid, reply.msgid);
    let again = alice
        .c2c_with_id(user("bob"), "again", Content::text("and again"))
        .await
        .expect("ACKed");
    let got = next_message(&mut bob_in).await;
    assert_eq!(
        (got.msgid, got.client_msg_id.as_str()),
        (again.msgid, "again")
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_of_a_killed_gate_reconnect_to_another_gate_by_themselves() {
    let mut cluster = Cluster::start(Path::new(BIN));
    cluster.spawn("logic-1", "logic").await;
    cluster.spawn("gate-a", "gate").await;
    cluster.spawn("gate-b", "gate").await;
    let gate_b_addr = cluster.process("gate-b").gate_addr().to_string();
    // Gate A learns its peers from the heartbeats: log in once it tells clients about gate B.
    let end = Instant::now() + WAIT;
    let (bob, mut bob_in) = loop {
        let (bob, bob_in) = cluster.connect("gate-a", "bob", "phone").await;
        if bob.login_response().gates.contains(&gate_b_addr) {
            break (bob, bob_in);
        }
        bob.close().await;
        assert!(
            Instant::now() < end,
            "gate A tells its clients about gate B"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (alice, _alice_in) = cluster.connect("gate-b", "alice", "phone").await;

    cluster.kill9("gate-a").await;
    let during = alice
        .c2c_with_id(
            user("bob"),
            "gate-a-gone",
            Content::text("while your gate died"),
        )
        .await
        .expect("ACKed while bob's gate is dead");
    // bob's SDK reconnects by itself, to gate B (the only one left), and gets what it missed.
    let got = next_message(&mut bob_in).await;
    assert_eq!(got.msgid, during.msgid, "the ACKed message reaches bob");
    assert!(bob.is_connected(), "bob is connected again");
    let after = alice
        .c2c_with_id(user("bob"), "after", Content::text("and live again"))
        .await
        .expect("ACKed");
    let got = next_message(&mut bob_in).await;
    assert_eq!(
        (got.msgid, got.client_msg_id.as_str()),
        (after.msgid, "after"),
        "live on gate B, nothing repeated"
    );
    alice.close().await;
    bob.close().await;
}
