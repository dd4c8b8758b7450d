//! Black/white lists and flapping detection (docs/security.md, "Black/white lists and
//! flapping"), end to end: the API changes the lists, the gate refuses and kicks, over real
//! sockets with raw frames. Clients from other source addresses bind 127.0.0.x before they
//! connect (the whole 127/8 is local on Linux).

mod raw_session;

use std::net::{IpAddr, SocketAddr};

use futures::{SinkExt, StreamExt};
use longlink_proto::{Cmd, ErrorCode, Frame, FrameCodec, KickReason, wire};
use longlink_server::config::ApiKeySection;
use longlink_testkit::{TestServer, WAIT, wait_until};
use raw_session::{Conn, Refused, kicks, login_request, reason};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::Framed;

const ALICE: (u32, &str) = (129, "alice");
const BOB: (u32, &str) = (130, "bob");

/// A key covering appcode 129 only (not an operator key).
const KEY_129: &str = "key-for-129-only";

fn with_small_limits(config: &mut longlink_server::Config) {
    config.api_keys.push(ApiKeySection {
        name: "app-129".into(),
        key: KEY_129.into(),
        appcodes: vec![129],
    });
}

async fn ban(server: &TestServer, body: Value) -> u64 {
    let (status, answer) = server.api().post("/v1/bans", &body).await;
    assert_eq!(status, 201, "{answer}");
    answer["id"].as_u64().expect("an id")
}

/// `DELETE path` with the development key (the testkit client has no DELETE).
async fn delete(server: &TestServer, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .delete(format!("http://{}{path}", server.api_addr()))
        .bearer_auth(longlink_server::DEV_API_KEY)
        .timeout(WAIT)
        .send()
        .await
        .expect("API answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Expects `conn` to get KICK BLOCKED as its last frame, then the close.
async fn expect_blocked(conn: Conn) {
    let frames = conn.until_closed().await;
    let kicks = kicks(&frames);
    assert_eq!(kicks.len(), 1, "one KICK, then the close: {frames:?}");
    assert_eq!(reason(&kicks[0]), KickReason::Blocked);
    assert_eq!(frames.last().and_then(|f| f.cmd()), Some(Cmd::Kick));
}

/// A LOGIN on a new connection that must be refused with `code`; the connection then closes.
async fn refused_login(server: &TestServer, who: (u32, &str), device: &str) -> Refused {
    let mut conn = Conn::connect(server.gate_addr()).await;
    let refused = conn
        .login(login_request(server, who.0, who.1, device))
        .await
        .expect_err("the login is refused");
    conn.until_closed().await;
    refused
}

/// A raw client whose socket is bound to `source` (e.g. 127.0.0.2) before it connects.
struct FromAddr {
    framed: Framed<TcpStream, FrameCodec>,
}

impl FromAddr {
    async fn connect(source: &str, gate: SocketAddr) -> FromAddr {
        let socket = TcpSocket::new_v4().expect("socket");
        let source: IpAddr = source.parse().expect("source ip");
        socket.bind(SocketAddr::new(source, 0)).expect("bind");
        let stream = tokio::time::timeout(WAIT, socket.connect(gate))
            .await
            .expect("connect in time")
            .expect("connect");
        FromAddr {
            framed: Framed::new(stream, FrameCodec::new(u32::MAX)),
        }
    }

    /// LOGIN; the answer (a response or an ERROR).
    async fn login(&mut self, request: wire::LoginRequest) -> Option<Frame> {
        self.framed
            .send(Frame::request(Cmd::Login, 1, 0, &request))
            .await
            .ok()?;
        self.next().await
    }

    async fn next(&mut self) -> Option<Frame> {
        match tokio::time::timeout(WAIT, self.framed.next()).await {
            Ok(Some(Ok(frame))) => Some(frame),
            Ok(_) => None,
            Err(_) => panic!("nothing from the server within {WAIT:?}"),
        }
    }

    /// The frames until the server closes the connection.
    async fn until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next().await {
            frames.push(frame);
        }
        frames
    }
}

/// The ERROR body of `frame`.
fn error_body(frame: &Frame) -> wire::Error {
    assert_eq!(frame.cmd(), Some(Cmd::Error), "an ERROR: {frame:?}");
    frame.decode_body().expect("Error body")
}

#[tokio::test]
async fn a_banned_uid_is_kicked_refused_and_let_back_in_by_unban() {
    let server = TestServer::start().await;
    let (alice, _) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, ALICE.0, ALICE.1, "phone"),
    )
    .await;
    let (mut bob, _) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, BOB.0, BOB.1, "van"),
    )
    .await;

    let id = ban(
        &server,
        json!({"kind": "uid", "appcode": 129, "value": "alice", "reason": "spam"}),
    )
    .await;
    expect_blocked(alice).await;
    let refused = refused_login(&server, ALICE, "phone").await;
    assert_eq!(refused.code, ErrorCode::Banned);
    assert_eq!(
        refused.retry_after_ms, 0,
        "a permanent ban: no retry by itself"
    );
    // Another device of alice, and the same uid under another appcode, are refused / not.
    assert_eq!(
        refused_login(&server, ALICE, "tablet").await.code,
        ErrorCode::Banned
    );
    let (_other_alice, _) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, 130, "alice", "phone"),
    )
    .await;
    bob.keepalive().await;

    let (status, list) = server.api().get("/v1/bans").await;
    assert_eq!(status, 200);
    assert_eq!(list["bans"][0]["id"], id);
    assert_eq!(list["bans"][0]["reason"], "spam");
    assert_eq!(list["bans"][0]["expires_at_ms"], 0);

    let (status, removed) = delete(&server, &format!("/v1/bans/{id}")).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["value"], "alice");
    Conn::logged_in(
        server.gate_addr(),
        login_request(&server, ALICE.0, ALICE.1, "phone"),
    )
    .await;
    assert_eq!(delete(&server, &format!("/v1/bans/{id}")).await.0, 404);
    assert_eq!(delete(&server, "/v1/bans/not-a-number").await.0, 400);
}

#[tokio::test]
async fn a_banned_device_is_kicked_and_refused_for_any_user() {
    let server = TestServer::start().await;
    let (stolen, _) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, ALICE.0, ALICE.1, "stolen"),
    )
    .await;
    let (mut good, _) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, ALICE.0, ALICE.1, "good"),
    )
    .await;
    ban(&server, json!({"kind": "device", "value": "stolen"})).await;
    expect_blocked(stolen).await;
    good.keepalive().await;
    assert_eq!(
        refused_login(&server, BOB, "stolen").await.code,
        ErrorCode::Banned,
        "a device entry of appcode 0 holds under every appcode"
    );
}

#[tokio::test]
async fn a_banned_ip_or_network_is_refused_at_accept_while_others_connect() {
    let server = TestServer::start().await;
    let gate = server.gate_addr();
    let mut from_2 = FromAddr::connect("127.0.0.2", gate).await;
    let answer = from_2
        .login(login_request(&server, ALICE.0, ALICE.1, "phone"))
        .await
        .expect("an answer");
    assert_eq!(answer.cmd(), Some(Cmd::Login), "logged in before the ban");

    ban(&server, json!({"kind": "ip", "value": "127.0.0.2"})).await;
    let frames = from_2.until_closed().await;
    let kick: wire::Kick = frames
        .last()
        .filter(|f| f.cmd() == Some(Cmd::Kick))
        .expect("a KICK last")
        .decode_body()
        .expect("Kick");
    assert_eq!(kick.reason, KickReason::Blocked as i32);

    // A new connection from there gets an ERROR push before it sends anything, then the close.
    let mut again = FromAddr::connect("127.0.0.2", gate).await;
    let frames = again.until_closed().await;
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(error_body(&frames[0]).code, ErrorCode::Banned as i32);
    assert_eq!(frames[0].header.seq_id, 0, "a push: no request was read");

    // A CIDR network: 127.0.0.4/30 is .4 to .7.
    ban(&server, json!({"kind": "ip", "value": "127.0.0.4/30"})).await;
    let frames = FromAddr::connect("127.0.0.6", gate)
        .await
        .until_closed()
        .await;
    assert_eq!(error_body(&frames[0]).code, ErrorCode::Banned as i32);
    let mut from_8 = FromAddr::connect("127.0.0.8", gate).await;
    let answer = from_8
        .login(login_request(&server, BOB.0, BOB.1, "van"))
        .await
        .expect("an answer");
    assert_eq!(answer.cmd(), Some(Cmd::Login), "outside the network");
    // And 127.0.0.1 is unaffected.
    Conn::logged_in(gate, login_request(&server, ALICE.0, ALICE.1, "phone")).await;
}

#[tokio::test]
async fn an_ip_whitelist_lets_only_its_addresses_in() {
    let server = TestServer::start().await;
    let gate = server.gate_addr();
    ban(
        &server,
        json!({"kind": "ip", "action": "allow", "value": "127.0.0.1/32"}),
    )
    .await;
    let frames = FromAddr::connect("127.0.0.9", gate)
        .await
        .until_closed()
        .await;
    let error = error_body(&frames[0]);
    assert_eq!(error.code, ErrorCode::Banned as i32);
    assert!(error.message.contains("allow list"), "{}", error.message);
    Conn::logged_in(gate, login_request(&server, ALICE.0, ALICE.1, "phone")).await;
}

#[tokio::test]
async fn a_ban_survives_a_restart() {
    let mut server = TestServer::start().await;
    ban(
        &server,
        json!({"kind": "uid", "appcode": 130, "value": "bob"}),
    )
    .await;
    server.restart().await;
    assert!(server.data_dir().join("guard.sqlite").exists());
    assert_eq!(
        refused_login(&server, BOB, "van").await.code,
        ErrorCode::Banned
    );
    let (_, list) = server.api().get("/v1/bans").await;
    assert_eq!(list["bans"].as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test]
async fn a_timed_ban_ends_by_itself() {
    let server = TestServer::start().await;
    let (status, entry) = server
        .api()
        .post(
            "/v1/bans",
            &json!({"kind": "uid", "appcode": 129, "value": "alice", "ttl_secs": 1}),
        )
        .await;
    assert_eq!(status, 201, "{entry}");
    assert!(entry["expires_at_ms"].as_u64().unwrap_or(0) > 0);
    let refused = refused_login(&server, ALICE, "phone").await;
    assert_eq!(refused.code, ErrorCode::Banned);
    assert!(
        refused.retry_after_ms > 0 && refused.retry_after_ms <= 1_000,
        "retry_after_ms says when it ends: {}",
        refused.retry_after_ms
    );
    wait_until(WAIT, || async {
        let mut conn = Conn::connect(server.gate_addr()).await;
        conn.login(login_request(&server, ALICE.0, ALICE.1, "phone"))
            .await
            .is_ok()
    })
    .await
    .expect("the ban ends");
    let (_, list) = server.api().get("/v1/bans").await;
    assert_eq!(list["bans"], json!([]), "an expired entry is not listed");
}

#[tokio::test]
async fn a_flapping_device_is_refused_for_a_while_and_others_are_not() {
    let server = TestServer::start_with(|config| {
        config.guard.device_max_logins = 3;
        config.guard.device_window_secs = 60;
        config.guard.device_penalty_secs = 2;
    })
    .await;
    let gate = server.gate_addr();
    // Three logins of one device within the window pass (each replaces the previous one).
    let mut last = None;
    for _ in 0..3 {
        let mut conn = FromAddr::connect("127.0.0.1", gate).await;
        let answer = conn
            .login(login_request(&server, ALICE.0, ALICE.1, "loop"))
            .await
            .expect("an answer");
        assert_eq!(answer.cmd(), Some(Cmd::Login));
        last = Some(conn);
    }
    let mut conn = Conn::connect(gate).await;
    let refused = conn
        .login(login_request(&server, ALICE.0, ALICE.1, "loop"))
        .await
        .expect_err("the fourth is refused");
    assert_eq!(refused.code, ErrorCode::RateLimited);
    assert!(
        refused.retry_after_ms > 0 && refused.retry_after_ms <= 2_000,
        "{}",
        refused.retry_after_ms
    );
    conn.until_closed().await;
    drop(last);
    // Other devices and users are unaffected.
    Conn::logged_in(gate, login_request(&server, ALICE.0, ALICE.1, "other")).await;
    Conn::logged_in(gate, login_request(&server, BOB.0, BOB.1, "van")).await;
    // After the penalty the device gets back in.
    wait_until(WAIT, || async {
        let mut conn = Conn::connect(gate).await;
        conn.login(login_request(&server, ALICE.0, ALICE.1, "loop"))
            .await
            .is_ok()
    })
    .await
    .expect("back in after the penalty");
}

#[tokio::test]
async fn an_ip_connecting_too_often_is_refused_at_accept_and_others_are_not() {
    let server = TestServer::start_with(|config| {
        config.guard.ip_max_connects = 3;
        config.guard.ip_window_secs = 60;
        config.guard.ip_penalty_secs = 60;
    })
    .await;
    let gate = server.gate_addr();
    // 127.0.0.3 connects three times, the fourth connection is refused at accept.
    for _ in 0..3 {
        let mut conn = FromAddr::connect("127.0.0.3", gate).await;
        let answer = conn
            .login(login_request(&server, BOB.0, BOB.1, "van-3"))
            .await
            .expect("an answer");
        assert_eq!(answer.cmd(), Some(Cmd::Login));
    }
    let frames = FromAddr::connect("127.0.0.3", gate)
        .await
        .until_closed()
        .await;
    let error = error_body(&frames[0]);
    assert_eq!(error.code, ErrorCode::RateLimited as i32);
    assert!(error.retry_after_ms > 0 && error.retry_after_ms <= 60_000);
    Conn::logged_in(gate, login_request(&server, BOB.0, BOB.1, "van")).await;
}

#[tokio::test]
async fn the_api_checks_entries_and_key_scopes() {
    let server = TestServer::start_with(with_small_limits).await;
    let api = server.api();
    let app_key = api.with_key(Some(KEY_129));
    for bad in [
        json!({"kind": "host", "value": "x"}),
        json!({"kind": "uid", "value": "alice"}),
        json!({"kind": "ip", "value": "10.0.0.0/33"}),
        json!({"kind": "uid", "appcode": 129, "value": "alice", "action": "allow"}),
        json!({"kind": "uid", "appcode": 129, "value": "alice", "ttl_secs": 0}),
        json!({"kind": "uid", "appcode": 129, "value": "alice", "extra": 1}),
    ] {
        let (status, answer) = api.post("/v1/bans", &bad).await;
        assert_eq!(status, 400, "{bad} → {answer}");
        assert_eq!(answer["error"]["code"], "invalid_argument");
    }
    // A key of appcode 129 manages 129's entries, not the node's nor another appcode's.
    let (status, _) = app_key
        .post("/v1/bans", &json!({"kind": "ip", "value": "10.0.0.1"}))
        .await;
    assert_eq!(status, 403);
    let (status, _) = app_key
        .post(
            "/v1/bans",
            &json!({"kind": "uid", "appcode": 130, "value": "bob"}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, own) = app_key
        .post(
            "/v1/bans",
            &json!({"kind": "uid", "appcode": 129, "value": "mallory"}),
        )
        .await;
    assert_eq!(status, 201);
    // The same entry again updates it: same id, 200.
    let (status, again) = app_key
        .post(
            "/v1/bans",
            &json!({"kind": "uid", "appcode": 129, "value": "mallory", "reason": "again"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], own["id"]);
    ban(&server, json!({"kind": "device", "value": "d-1"})).await;
    let (_, mine) = app_key.get("/v1/bans").await;
    assert_eq!(mine["bans"].as_array().map(Vec::len), Some(1), "{mine}");
    let (_, all) = api.get("/v1/bans").await;
    assert_eq!(all["bans"].as_array().map(Vec::len), Some(2), "{all}");
    assert_eq!(api.with_key(None).get("/v1/bans").await.0, 401);
}

#[tokio::test]
async fn a_held_session_of_a_banned_uid_cannot_resume() {
    let server = TestServer::start().await;
    let (alice, login) = Conn::logged_in(
        server.gate_addr(),
        login_request(&server, ALICE.0, ALICE.1, "phone"),
    )
    .await;
    drop(alice);
    raw_session::wait_held(&server, 0, 1).await;
    ban(
        &server,
        json!({"kind": "uid", "appcode": 129, "value": "alice"}),
    )
    .await;
    let mut conn = Conn::connect(server.gate_addr()).await;
    let refused = conn
        .resume(raw_session::resume_request(&login.resume_token))
        .await
        .expect_err("the RESUME is refused");
    assert_eq!(refused.code, ErrorCode::Banned);
    conn.until_closed().await;
}
