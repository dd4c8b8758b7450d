//! Isolation (issue 8, item 7): nobody reads, acks or pulls another user's messages, and no API
//! key reaches another appcode's data — insecure direct object references are tried, not
//! assumed. Users: A = 129:alice, C = 129:carol (A's appcode), B = 130:bob, and
//! 130:alice (A's uid under another appcode: another user). Keys: `k129` covers 129 only,
//! `k130` 130 only; the development key covers 129–132 (the operator key).
//!
//! Every refusal is the documented one (docs/protocol.md §5.4, §5.9–5.11; docs/api.md) and no
//! answer carries the other user's content: each message text names its owner, and the
//! intruder's answers are searched for it.

mod raw_session;

use longlink_proto::{Cmd, ErrorCode, Frame, FrameType, wire};
use longlink_server::Config;
use longlink_server::config::{ApiKeySection, RouteSection};
use longlink_testkit::{ApiClient, TestServer, WAIT, error_of, wait_until};
use raw_session::{Conn, login_request, resume_request};
use serde_json::{Value, json};

const A: (u32, &str) = (129, "alice");
const C: (u32, &str) = (129, "carol");
const B: (u32, &str) = (130, "bob");
/// A's uid under appcode 130: a different user, who must see nothing of A's.
const B_ALICE: (u32, &str) = (130, "alice");

const K129: &str = "key-of-appcode-129-only";
const K130: &str = "key-of-appcode-130-only";

/// Two single-appcode keys, a topic fed by both appcodes, and one delivery attempt (a nack
/// dead-letters at once, so the dead-letter routes can be tried without waiting for leases).
fn isolation_config(config: &mut Config) {
    for (name, key, appcode) in [("k129", K129, 129), ("k130", K130, 130)] {
        config.api_keys.push(ApiKeySection {
            name: name.to_owned(),
            key: key.to_owned(),
            appcodes: vec![appcode],
        });
    }
    for appcode in [129, 130] {
        config.routes.push(RouteSection {
            appcode,
            msgtype: 5,
            topic: "mixed".to_owned(),
        });
    }
    config.bus.max_attempts = 1;
}

async fn start() -> TestServer {
    TestServer::start_with(isolation_config).await
}

async fn login(
    server: &TestServer,
    user: (u32, &str),
    device: &str,
) -> (Conn, wire::LoginResponse) {
    Conn::logged_in(
        server.gate_addr(),
        login_request(server, user.0, user.1, device),
    )
    .await
}

/// The answer's ERROR code, or `None` for a non-ERROR frame.
fn code(frame: &Frame) -> Option<ErrorCode> {
    error_of(frame).ok().map(|(code, _)| code)
}

/// The body of an answer as text (lossy), to look for content it must not carry.
fn text(frame: &Frame) -> String {
    String::from_utf8_lossy(&frame.body).into_owned()
}

/// A message text that names its owner, so a leak is visible in any answer.
fn secret(of: (u32, &str), n: usize) -> String {
    format!("secret-{}-{}-{n}", of.0, of.1)
}

/// MSG_ACK of `frame_type` (0 or 3) for `msgids`; returns the answer (a type-3 ack that
/// succeeds has none, so callers only use it where an ERROR is expected, or type 0).
async fn msg_ack(conn: &mut Conn, msgids: &[u64], frame_type: FrameType) -> Frame {
    let mut frame = Frame::request(
        Cmd::MsgAck,
        0,
        0,
        &wire::MsgAck {
            msgids: msgids.to_vec(),
        },
    );
    frame.header.frame_type = frame_type;
    conn.request(frame).await
}

async fn offline_pull(conn: &mut Conn, cursor: u64, page_size: u32) -> wire::OfflinePullResponse {
    let answer = conn
        .request(Frame::request(
            Cmd::OfflinePull,
            0,
            0,
            &wire::OfflinePullRequest { cursor, page_size },
        ))
        .await;
    assert_eq!(answer.cmd(), Some(Cmd::OfflinePull), "{:?}", code(&answer));
    answer.decode_body().expect("OfflinePullResponse")
}

async fn history(
    conn: &mut Conn,
    with: (u32, &str),
    cursor: u64,
    direction: wire::HistoryDirection,
) -> wire::HistoryPullResponse {
    let answer = conn
        .request(Frame::request(
            Cmd::HistoryPull,
            0,
            0,
            &wire::HistoryPullRequest {
                with: Some(wire::UserRef {
                    appcode: with.0,
                    uid: with.1.to_owned(),
                }),
                cursor,
                direction: direction as i32,
                page_size: 500,
            },
        ))
        .await;
    assert_eq!(answer.cmd(), Some(Cmd::HistoryPull), "{:?}", code(&answer));
    answer.decode_body().expect("HistoryPullResponse")
}

fn is(user: Option<&wire::UserRef>, who: (u32, &str)) -> bool {
    user.is_some_and(|u| u.appcode == who.0 && u.uid == who.1)
}

/// Cursors an intruder may craft from msgids it learnt or guessed: around each, the
/// extremes, and the first id past i64 (the store's bound).
fn crafted_cursors(known: &[u64]) -> Vec<u64> {
    let mut cursors = vec![0, 1, u64::MAX, i64::MAX as u64, i64::MAX as u64 + 1];
    for &m in known {
        cursors.extend([m - 1, m, m + 1]);
    }
    cursors
}

// -----------------------------------------------------------------------------------------
// The wire protocol

#[tokio::test]
async fn msg_ack_of_another_users_msgid_is_not_found_and_the_owner_keeps_it() {
    let server = start().await;
    let (mut a, _) = login(&server, A, "phone").await;
    let (mut c, _) = login(&server, C, "phone").await;
    let (mut b, _) = login(&server, B, "phone").await;
    let (mut b_alice, _) = login(&server, B_ALICE, "phone").await;

    // C writes to A; A has it pushed and does not ack it. C writes to B too (B's own message).
    let for_a = c.c2c(A, "to-a-1", &secret(A, 1)).await.msgid;
    assert_eq!(a.next_msg().await.msgid, for_a);
    let for_b = c.c2c(B, "to-b-1", &secret(B, 1)).await.msgid;
    assert_eq!(b.next_msg().await.msgid, for_b);

    // Another appcode (B), the same uid under another appcode (130:alice) and the sender itself
    // (C, same appcode): NOT_FOUND for type 0 and type 3 alike, the ERROR echoing the ack's
    // seq_id and naming only the msgids the intruder sent; the connection stays open.
    for (who, conn) in [("B", &mut b), ("130:alice", &mut b_alice), ("C", &mut c)] {
        for frame_type in [FrameType::Request, FrameType::Ack] {
            let answer = msg_ack(conn, &[for_a], frame_type).await;
            let (got, seq) = error_of(&answer).expect("an ERROR");
            assert_eq!(got, ErrorCode::NotFound, "{who} {frame_type:?}");
            assert_eq!(answer.header.frame_type, FrameType::Response);
            assert_ne!(seq, 0, "the ERROR echoes the ack's seq_id");
            let body = text(&answer);
            assert!(body.contains(&for_a.to_string()), "{body}");
            assert!(!body.contains("secret-"), "{body}");
        }
        conn.keepalive().await;
    }

    // A batch mixing B's own msgid with A's: NOT_FOUND (naming only A's), and B's own is acked
    // nonetheless, as §5.9 says.
    let answer = msg_ack(&mut b, &[for_b, for_a], FrameType::Request).await;
    assert_eq!(code(&answer), Some(ErrorCode::NotFound));
    assert!(!text(&answer).contains(&for_b.to_string()));
    assert!(offline_pull(&mut b, 0, 0).await.messages.is_empty());

    // A's message is still unacked for A: its pull returns it, and A (the owner) may ack it.
    let pulled = offline_pull(&mut a, 0, 0).await.messages;
    assert_eq!(pulled.iter().map(|m| m.msgid).collect::<Vec<_>>(), [for_a]);
    assert_eq!(a.ack_confirmed(&[for_a]).await, 1);
    assert!(offline_pull(&mut a, 0, 0).await.messages.is_empty());
}

#[tokio::test]
async fn push_msgids_are_acked_only_by_their_recipients() {
    let server = start().await;
    let api = server.api();
    let (mut a, _) = login(&server, A, "phone").await;
    let (mut b, _) = login(&server, B, "phone").await;
    let (mut c, _) = login(&server, C, "phone").await;

    // One persisted push and one online-only push to A alone.
    let mut pushed = Vec::new();
    for persist in [true, false] {
        let (status, accepted) = api
            .post(
                "/v1/push",
                &json!({"appcode": 129, "uids": ["alice"], "content": secret(A, 2),
                        "persist": persist}),
            )
            .await;
        assert_eq!(status, 202, "{accepted}");
        let push_id = accepted["push_id"].as_u64().expect("push_id");
        let msgid = a.next_msg().await.msgid;
        pushed.push((push_id, msgid));
    }

    // B (another appcode) and C (A's appcode, not a target) cannot ack either msgid.
    for (push_id, msgid) in &pushed {
        for conn in [&mut b, &mut c] {
            let answer = msg_ack(conn, &[*msgid], FrameType::Request).await;
            assert_eq!(code(&answer), Some(ErrorCode::NotFound), "push {push_id}");
        }
        // The statistics still show A's copy as written, not acked.
        let (status, stats) = api.get(&format!("/v1/push/{push_id}")).await;
        assert_eq!(status, 200);
        assert_eq!(stats["acked"], 0, "{stats}");
        assert_eq!(stats["recipients"][0]["uid"], "alice");
        assert_ne!(stats["recipients"][0]["state"], "acked", "{stats}");
    }

    // A may: both count, and the statistics follow.
    let msgids: Vec<u64> = pushed.iter().map(|(_, m)| *m).collect();
    assert_eq!(a.ack_confirmed(&msgids).await, 2);
    for (push_id, _) in &pushed {
        let path = format!("/v1/push/{push_id}");
        wait_until(WAIT, || async { api.get(&path).await.1["acked"] == 1 })
            .await
            .expect("A's ack counts");
    }
}

#[tokio::test]
async fn offline_pull_with_any_cursor_returns_only_the_pullers_inbox() {
    let server = start().await;
    let (mut c, _) = login(&server, C, "phone").await;
    // A is offline: three messages wait in its inbox. B has one of its own.
    let mut for_a = Vec::new();
    for n in 0..3 {
        for_a.push(c.c2c(A, &format!("to-a-{n}"), &secret(A, n)).await.msgid);
    }
    let for_b = c.c2c(B, "to-b", &secret(B, 0)).await.msgid;

    let (mut b, _) = login(&server, B, "phone").await;
    let (mut b_alice, _) = login(&server, B_ALICE, "phone").await;
    // B's own message was redelivered at login; take it so only pulls are left.
    assert_eq!(b.next_msg().await.msgid, for_b);

    let mut known = for_a.clone();
    known.push(for_b);
    for cursor in crafted_cursors(&known) {
        for page_size in [0, 1, 500, u32::MAX] {
            let page = offline_pull(&mut b, cursor, page_size).await;
            for m in &page.messages {
                assert!(is(m.to.as_ref(), B), "B pulled {m:?} (cursor {cursor})");
                assert_eq!(m.msgid, for_b);
            }
            // Nobody but B's own message could ever show up: past it, nothing.
            if cursor >= for_b {
                assert!(page.messages.is_empty() && !page.more);
            }
            for m in &page.messages {
                assert!(!String::from_utf8_lossy(&m.content).contains("129-alice"));
            }
        }
        // The same uid under another appcode, and the sender, get nothing of A's.
        assert!(
            offline_pull(&mut b_alice, cursor, 500)
                .await
                .messages
                .is_empty()
        );
        assert!(offline_pull(&mut c, cursor, 500).await.messages.is_empty());
    }

    // The messages exist: A pulls all three.
    let (mut a, _) = login(&server, A, "tablet").await;
    let pulled: Vec<u64> = a.msgs(3).await.iter().map(|m| m.msgid).collect();
    assert_eq!(pulled, for_a, "redelivered at A's login");
    let pulled: Vec<u64> = offline_pull(&mut a, 0, 0)
        .await
        .messages
        .iter()
        .map(|m| m.msgid)
        .collect();
    assert_eq!(pulled, for_a);
}

#[tokio::test]
async fn history_pull_only_ever_returns_the_pullers_own_conversations() {
    let server = start().await;
    let (mut a, _) = login(&server, A, "phone").await;
    let (mut c, _) = login(&server, C, "phone").await;
    let (mut b, _) = login(&server, B, "phone").await;
    let (mut b_alice, _) = login(&server, B_ALICE, "phone").await;

    // A ↔ C, then B ↔ C.
    let a_c = [
        c.c2c(A, "c-to-a", &secret(A, 1)).await.msgid,
        a.c2c(C, "a-to-c", &secret(A, 2)).await.msgid,
    ];
    let b_c = c.c2c(B, "c-to-b", &secret(B, 1)).await.msgid;

    let mut known = a_c.to_vec();
    known.push(b_c);
    let peers = [A, C, B, B_ALICE, (129, "bob"), (131, "carol")];
    for direction in [wire::HistoryDirection::Older, wire::HistoryDirection::Newer] {
        for cursor in crafted_cursors(&known) {
            for with in peers {
                let page = history(&mut b, with, cursor, direction).await;
                for m in &page.messages {
                    assert!(
                        is(m.from.as_ref(), B) || is(m.to.as_ref(), B),
                        "B's history with {with:?} holds {m:?}"
                    );
                    assert_eq!(m.msgid, b_c);
                    assert!(!String::from_utf8_lossy(&m.content).contains("129-alice"));
                }
                if with != C {
                    assert!(
                        page.messages.is_empty(),
                        "B has no conversation with {with:?}"
                    );
                }
                // 130:alice shares A's uid, not A's conversations.
                let page = history(&mut b_alice, with, cursor, direction).await;
                assert!(
                    page.messages.is_empty(),
                    "130:alice with {with:?}: {page:?}"
                );
            }
        }
    }

    // The conversations exist: A sees its own (both directions), C sees both.
    let mine: Vec<u64> = history(&mut a, C, 0, wire::HistoryDirection::Newer)
        .await
        .messages
        .iter()
        .map(|m| m.msgid)
        .collect();
    assert_eq!(mine, a_c);
    assert_eq!(
        history(&mut c, B, 0, wire::HistoryDirection::Newer)
            .await
            .messages
            .len(),
        1
    );
}

/// base64url without padding (JWT segments), so tests can tamper with a token's claims.
mod b64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub(crate) fn encode(bytes: &[u8]) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    pub(crate) fn decode(text: &str) -> Vec<u8> {
        let values: Vec<u32> = text
            .bytes()
            .map(|c| ALPHABET.iter().position(|a| *a == c).expect("base64url") as u32)
            .collect();
        let mut out = Vec::new();
        for chunk in values.chunks(4) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, v)| n | v << (18 - 6 * i));
            for i in 0..chunk.len() - 1 {
                out.push((n >> (16 - 8 * i)) as u8);
            }
        }
        out
    }
}

/// `token` with its claims changed by `edit` and the original signature kept.
fn tampered(token: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut parts = token.split('.');
    let (header, payload, signature) = (
        parts.next().expect("header"),
        parts.next().expect("payload"),
        parts.next().expect("signature"),
    );
    let mut claims: Value = serde_json::from_slice(&b64::decode(payload)).expect("claims");
    edit(claims.as_object_mut().expect("an object"));
    let payload = b64::encode(&serde_json::to_vec(&claims).expect("json"));
    format!("{header}.{payload}.{signature}")
}

#[tokio::test]
async fn a_resume_token_resumes_only_its_own_session() {
    let server = start().await;
    let (mut a, login_a) = login(&server, A, "phone").await;
    let (mut b, login_b) = login(&server, B, "phone").await;
    let (mut c, _) = login(&server, C, "phone").await;
    let token_a = login_a.resume_token.clone();
    let token_b = login_b.resume_token.clone();
    assert!(!token_a.is_empty() && !token_b.is_empty());
    // The test's base64url codec reads a real token's claims back exactly (so a refusal below
    // is the server's, not a garbled token's).
    let payload = token_a.split('.').nth(1).expect("a JWT payload");
    assert_eq!(b64::encode(&b64::decode(payload)), payload);
    let claims: Value = serde_json::from_slice(&b64::decode(payload)).expect("claims");
    assert_eq!(
        (&claims["sub"], &claims["appcode"]),
        (&json!("alice"), &json!(129))
    );

    // B's claims (or one of them) grafted onto A's signature, B's signature on A's claims, A's
    // LOGIN token: all RESUME_REJECTED, and the connection stays open for a LOGIN.
    let mut forged = vec![
        (
            "uid",
            tampered(&token_a, |c| {
                c.insert("sub".into(), json!("bob"));
            }),
        ),
        (
            "appcode",
            tampered(&token_a, |c| {
                c.insert("appcode".into(), json!(130));
            }),
        ),
        (
            "uid+appcode",
            tampered(&token_a, |c| {
                c.insert("sub".into(), json!("bob"));
                c.insert("appcode".into(), json!(130));
            }),
        ),
        (
            "device",
            tampered(&token_a, |c| {
                c.insert("dev".into(), json!("tablet"));
            }),
        ),
        (
            "epoch",
            tampered(&token_a, |c| {
                let epoch = c["epoch"].as_u64().expect("epoch") + 1;
                c.insert("epoch".into(), json!(epoch));
            }),
        ),
        ("login token", server.token(A.0, A.1)),
    ];
    let (head_a, _) = token_a.rsplit_once('.').expect("a JWT");
    let (_, sig_b) = token_b.rsplit_once('.').expect("a JWT");
    forged.push(("spliced", format!("{head_a}.{sig_b}")));
    for (what, token) in forged {
        let mut intruder = Conn::connect(server.gate_addr()).await;
        let refused = intruder
            .resume(resume_request(&token))
            .await
            .expect_err(what);
        assert_eq!(refused.code, ErrorCode::ResumeRejected, "{what}");
        intruder.keepalive().await;
    }

    // RESUME on B's logged-in connection with A's real token: ALREADY_LOGGED_IN; B stays B.
    let refused = b
        .resume(resume_request(&token_a))
        .await
        .expect_err("logged in");
    assert_eq!(refused.code, ErrorCode::AlreadyLoggedIn);
    b.keepalive().await;

    // A resume token is no LOGIN token.
    let mut intruder = Conn::connect(server.gate_addr()).await;
    let mut request = login_request(&server, A.0, A.1, "phone");
    request.token = token_a.clone();
    let refused = intruder
        .login(request)
        .await
        .expect_err("not a login token");
    assert_eq!(refused.code, ErrorCode::BadToken);

    // A's session was never touched: C's message still reaches A's connection, not B's.
    let m = c.c2c(A, "still-a", &secret(A, 1)).await.msgid;
    assert_eq!(a.next_msg().await.msgid, m);
    let m_b = c.c2c(B, "marker-b", &secret(B, 1)).await.msgid;
    assert_eq!(b.next_msg().await.msgid, m_b, "B got nothing of A's before");

    // acked_msgids of another user's messages are ignored by a RESUME: A's own resume carrying
    // B's msgid leaves it unacked for B.
    drop(a);
    raw_session::wait_held(&server, 0, 1).await;
    let mut a = Conn::connect(server.gate_addr()).await;
    let resumed = a
        .resume(wire::ResumeRequest {
            resume_token: token_a.clone(),
            last_msgid: m,
            acked_msgids: vec![m_b],
            ..Default::default()
        })
        .await
        .expect("A resumes");
    assert_eq!(resumed.uid, A.1);
    assert!(resumed.messages.iter().all(|msg| is(msg.to.as_ref(), A)));
    let pending: Vec<u64> = offline_pull(&mut b, 0, 0)
        .await
        .messages
        .iter()
        .map(|msg| msg.msgid)
        .collect();
    assert_eq!(pending, [m_b], "B's message is still B's to ack");

    // Once A's session is replaced by a new login, its tokens resume nothing.
    let (_a2, _) = login(&server, A, "phone").await;
    for token in [token_a, resumed.resume_token] {
        let mut late = Conn::connect(server.gate_addr()).await;
        let refused = late
            .resume(resume_request(&token))
            .await
            .expect_err("ended");
        assert_eq!(refused.code, ErrorCode::ResumeRejected);
    }
}

#[tokio::test]
async fn c2c_and_c2s_carry_the_senders_identity_not_a_chosen_one() {
    let server = start().await;
    let (mut a, _) = login(&server, A, "phone").await;
    let (mut b, _) = login(&server, B, "phone").await;
    // The C2C body has no sender field: the MSG names the session's user.
    let m = b.c2c(A, "from-b", &secret(B, 1)).await.msgid;
    let msg = a.next_msg().await;
    assert_eq!(msg.msgid, m);
    assert!(is(msg.from.as_ref(), B) && msg.from_device == "phone");
    // A C2S of B lands on B's appcode's topic with B's uid: the body names no sender.
    assert_eq!(c2s(&mut b, 1, &secret(B, 2)).await, "c2s.130.1");
    let (status, leased) = ApiClient::new(server.api_addr(), K130)
        .get("/v1/consume?topic=c2s.130.1&wait_secs=10")
        .await;
    assert_eq!(status, 200);
    assert_eq!(leased["messages"][0]["appcode"], 130);
    assert_eq!(leased["messages"][0]["uid"], "bob");
}

// -----------------------------------------------------------------------------------------
// The business API

/// `(status, body)` of a refusal, checked to be `status`/`code` and to hold none of `never`.
fn refused(what: &str, answer: &(u16, Value), status: u16, code: &str, never: &[&str]) {
    assert_eq!(answer.0, status, "{what}: {}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{what}: {}", answer.1);
    let body = answer.1.to_string();
    for word in never {
        assert!(!body.contains(word), "{what} leaks {word:?}: {body}");
    }
}

/// Waits until B's next MSG is a marker sent now, proving nothing else reached B first.
async fn nothing_else_reached(b: &mut Conn, via: &mut Conn) {
    let marker = via
        .c2c(B, &format!("marker-{}", rand_id()), "marker")
        .await
        .msgid;
    let next = b.next_msg().await;
    assert_eq!(next.msgid, marker, "B received {next:?}");
}

fn rand_id() -> u64 {
    longlink_proto::unix_ms() ^ u64::from(std::process::id())
}

#[tokio::test]
async fn an_api_key_cannot_push_to_look_up_or_trace_another_appcodes_users() {
    let server = start().await;
    let k129 = ApiClient::new(server.api_addr(), K129);
    let k130 = ApiClient::new(server.api_addr(), K130);
    let (mut a, _) = login(&server, A, "phone").await;
    let (mut b, _) = login(&server, B, "phone").await;
    let (mut c, _) = login(&server, C, "phone").await;
    let b_secret = secret(B, 1);
    let never = ["bob", b_secret.as_str(), "gate-1"];

    // A push of k130 to B, and a c2c inside appcode 130 (B to 130:dave): 130's data.
    let (status, push_b) = k130
        .post(
            "/v1/push",
            &json!({"appcode": 130, "uids": ["bob"], "content": b_secret}),
        )
        .await;
    assert_eq!(status, 202);
    let push_b_id = push_b["push_id"].as_u64().expect("push_id");
    let push_b_log = push_b["log_id"].as_str().expect("log_id").to_owned();
    let push_b_msgid = b.next_msg().await.msgid;
    let dave = b
        .request(Frame::request(
            Cmd::C2c,
            0,
            0,
            &wire::C2cRequest {
                to: Some(wire::UserRef {
                    appcode: 130,
                    uid: "dave".to_owned(),
                }),
                client_msg_id: "to-dave".to_owned(),
                content_type: wire::ContentType::Text as i32,
                msgtype: 0,
                content: bytes::Bytes::from(secret(B, 2)),
            },
        ))
        .await;
    let dave_log = dave.header.log_id;
    let dave_msgid = dave
        .decode_body::<wire::C2cResponse>()
        .expect("C2cResponse")
        .msgid;

    // Push: to 130's users, to all of 130, with any option — 403 permission_denied.
    for body in [
        json!({"appcode": 130, "uids": ["bob"], "content": "x"}),
        json!({"appcode": 130, "all": true, "content": "x"}),
        json!({"appcode": 130, "uids": ["bob"], "content": "x", "persist": false, "ttl_secs": 60}),
    ] {
        refused(
            "push",
            &k129.post("/v1/push", &body).await,
            403,
            "permission_denied",
            &never,
        );
    }
    // 129:bob is another user than 130:bob: a push to it is fine and never reaches B.
    let (status, push_129_bob) = k129
        .post(
            "/v1/push",
            &json!({"appcode": 129, "uids": ["bob"], "content": "for 129:bob"}),
        )
        .await;
    assert_eq!(status, 202);
    let path = format!("/v1/push/{}", push_129_bob["push_id"]);
    wait_until(WAIT, || async { k129.get(&path).await.1["done"] == true })
        .await
        .expect("the push finishes");
    assert_eq!(
        k129.get(&path).await.1["online"],
        0,
        "129:bob is not online"
    );
    nothing_else_reached(&mut b, &mut c).await;

    // Push statistics of k130's push: 404 for k129, like an unknown id; k130 reads them.
    let stats_path = format!("/v1/push/{push_b_id}");
    refused(
        "push stats",
        &k129.get(&stats_path).await,
        404,
        "not_found",
        &never,
    );
    assert_eq!(k130.get(&stats_path).await.0, 200);
    refused(
        "unknown push id",
        &k129
            .get(&format!("/v1/push/{}", push_b_id + 1_000_000))
            .await,
        404,
        "not_found",
        &[],
    );

    // Delivery counters: 130's are refused by name and absent from the key's own list.
    refused(
        "delivery counters",
        &k129.get("/v1/stats/delivery?appcode=130").await,
        403,
        "permission_denied",
        &never,
    );
    let (status, counters) = k129.get("/v1/stats/delivery").await;
    assert_eq!(status, 200);
    for counter in counters["counters"].as_array().expect("counters") {
        assert_eq!(counter["appcode"], 129, "{counters}");
    }

    // Presence and dispatch of 130's users: 403. 129:bob (same uid) is offline, and dispatch
    // for it does not reveal B's gate as "holding".
    for path in [
        "/v1/presence/130/bob",
        "/v1/presence/130",
        "/v1/dispatch?appcode=130&uid=bob",
    ] {
        refused(
            path,
            &k129.get(path).await,
            403,
            "permission_denied",
            &never,
        );
    }
    refused(
        "presence query",
        &k129
            .post(
                "/v1/presence/query",
                &json!({"appcode": 130, "uids": ["bob"]}),
            )
            .await,
        403,
        "permission_denied",
        &never,
    );
    let (status, presence) = k129.get("/v1/presence/129/bob").await;
    assert_eq!(
        (status, &presence["online"]),
        (200, &json!(false)),
        "{presence}"
    );
    let (status, dispatch) = k129.get("/v1/dispatch?appcode=129&uid=bob").await;
    assert_eq!(status, 200);
    assert!(
        dispatch["gates"]
            .as_array()
            .expect("gates")
            .iter()
            .all(|g| g["holding"] == false),
        "{dispatch}"
    );
    let (status, presence) = k130.get("/v1/presence/130/bob").await;
    assert_eq!((status, &presence["online"]), (200, &json!(true)));

    // Traces of 130-only messages (the push, the c2c to dave), by log_id and by msgid: 404
    // for k129, like an unknown id; k130 reads them.
    let traces = [
        format!("/v1/trace/{push_b_log}"),
        format!("/v1/trace/{push_b_log}?by=log_id"),
        format!("/v1/trace/{push_b_msgid}?by=msgid"),
        format!("/v1/trace/{dave_log}"),
        format!("/v1/trace/{dave_msgid}"),
        format!("/v1/trace/{dave_msgid}?by=msgid"),
    ];
    for path in &traces {
        wait_until(WAIT, || async { k130.get(path).await.0 == 200 })
            .await
            .unwrap_or_else(|_| panic!("k130 reads {path}"));
        refused(path, &k129.get(path).await, 404, "not_found", &never);
    }
    // A c2c between the appcodes (A to B) is both sides' to trace (docs/api.md).
    let cross = a.c2c(B, "a-to-b", &secret(A, 1)).await.msgid;
    let path = format!("/v1/trace/{cross}?by=msgid");
    for key in [&k129, &k130] {
        wait_until(WAIT, || async { key.get(&path).await.0 == 200 })
            .await
            .expect("both appcodes trace a c2c between them");
    }

    // Operating the node takes a key covering every appcode.
    refused(
        "gates",
        &k129.get("/v1/gates").await,
        403,
        "permission_denied",
        &[],
    );
    refused(
        "drain",
        &k129.post("/v1/gates/gate-1/drain", &json!({})).await,
        403,
        "permission_denied",
        &[],
    );
    assert_eq!(server.api().get("/v1/gates").await.0, 200);
    b.keepalive().await;

    // The keyless pages hold no uid and no content.
    for path in ["/v1/stats/summary", "/healthz"] {
        let body = ApiClient::new(server.api_addr(), "none")
            .with_key(None)
            .get(path)
            .await
            .1;
        let body = body.to_string();
        for word in ["alice", "bob", "carol", "dave", "secret-"] {
            assert!(!body.contains(word), "{path} leaks {word}: {body}");
        }
    }
}

/// C2S of `payload` on `msgtype`: the topic it went to.
async fn c2s(conn: &mut Conn, msgtype: u32, payload: &str) -> String {
    let answer = conn
        .request(Frame::request(
            Cmd::C2s,
            0,
            0,
            &wire::C2sRequest {
                msgtype,
                payload: bytes::Bytes::from(payload.to_owned()),
                client_msg_id: format!("c2s-{msgtype}-{payload}"),
            },
        ))
        .await;
    assert_eq!(answer.cmd(), Some(Cmd::C2s), "{:?}", code(&answer));
    answer
        .decode_body::<wire::C2sResponse>()
        .expect("C2sResponse")
        .topic
}

#[tokio::test]
async fn an_api_key_cannot_consume_ack_or_replay_another_appcodes_topics() {
    let server = start().await;
    let k129 = ApiClient::new(server.api_addr(), K129);
    let k130 = ApiClient::new(server.api_addr(), K130);
    let (mut a, _) = login(&server, A, "phone").await;
    let (mut b, _) = login(&server, B, "phone").await;
    let b_secret = secret(B, 1);
    let never = ["bob", b_secret.as_str()];

    // One c2s each of A and B on msgtype 1 (per-appcode topics), and one of B on "mixed".
    assert_eq!(c2s(&mut a, 1, &secret(A, 1)).await, "c2s.129.1");
    assert_eq!(c2s(&mut b, 1, &b_secret).await, "c2s.130.1");
    assert_eq!(c2s(&mut b, 5, &b_secret).await, "mixed");

    // Every consume route naming 130's topic (by name, by appcode+msgtype) or the topic 129
    // shares with 130: 403.
    let selectors = [
        json!({"topic": "c2s.130.1"}),
        json!({"appcode": 130, "msgtype": 1}),
        json!({"topic": "mixed"}),
        json!({"appcode": 129, "msgtype": 5}),
    ];
    for selector in &selectors {
        let query = selector
            .as_object()
            .expect("object")
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                )
            })
            .collect::<Vec<_>>()
            .join("&");
        for path in [
            format!("/v1/consume?{query}&wait_secs=0"),
            format!("/v1/consume/sse?{query}"),
            format!("/v1/deadletter?{query}"),
        ] {
            refused(
                &path,
                &k129.get(&path).await,
                403,
                "permission_denied",
                &never,
            );
        }
        let mut ids = selector.clone();
        ids["ids"] = json!([1, 2, 3]);
        for path in [
            "/v1/consume/ack",
            "/v1/consume/nack",
            "/v1/deadletter/replay",
        ] {
            refused(
                &format!("{path} {selector}"),
                &k129.post(path, &ids).await,
                403,
                "permission_denied",
                &never,
            );
        }
    }
    // The topic list shows only what the key may consume.
    let (status, topics) = k129.get("/v1/topics").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = topics["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .filter_map(|t| t["topic"].as_str())
        .collect();
    assert_eq!(names, ["c2s.129.1"], "{topics}");

    // k130 leases B's message; k129 naming that id on its own topic acks, nacks and replays
    // nothing (ids are per topic), and k130 still holds the lease.
    let (status, leased) = k130.get("/v1/consume?topic=c2s.130.1&wait_secs=10").await;
    assert_eq!(status, 200);
    let id = leased["messages"][0]["id"].as_u64().expect("an id");
    let own = json!({"topic": "c2s.129.1", "ids": [id]});
    assert_eq!(k129.post("/v1/consume/ack", &own).await.1["acked"], 0);
    assert_eq!(k129.post("/v1/consume/nack", &own).await.1["nacked"], 0);
    // k130 nacks it: with one attempt allowed it is dead-lettered on 130's topic.
    let theirs = json!({"topic": "c2s.130.1", "ids": [id]});
    assert_eq!(k130.post("/v1/consume/nack", &theirs).await.1["nacked"], 1);
    assert_eq!(
        k129.post("/v1/deadletter/replay", &own).await.1["replayed"],
        0
    );
    assert_eq!(
        k129.post(
            "/v1/deadletter/replay",
            &json!({"topic": "c2s.129.1", "ids": []})
        )
        .await
        .1["replayed"],
        0,
        "replay-all of 129's topic holds none of 130's dead letters"
    );
    let (status, dead) = k129.get("/v1/deadletter?topic=c2s.129.1").await;
    assert_eq!(status, 200);
    assert!(!dead.to_string().contains(&b_secret), "{dead}");
    let (_, dead) = k130.get("/v1/deadletter?topic=c2s.130.1").await;
    assert_eq!(dead["messages"][0]["id"], id, "still 130's dead letter");
    assert_eq!(
        k130.post("/v1/deadletter/replay", &theirs).await.1["replayed"],
        1
    );

    // k129's own topic holds A's message only.
    let (status, mine) = k129.get("/v1/consume?topic=c2s.129.1&wait_secs=10").await;
    assert_eq!(status, 200);
    let messages = mine["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["uid"], "alice");
    assert!(!mine.to_string().contains(&b_secret));
}

/// A client chooses its frames' log_id (docs/protocol.md §2) and the ledger merges every event
/// of one log_id into one trace, adding the sender's appcode to the trace's appcodes. A 130
/// client reusing a 129-only log_id (gate-assigned ids are sequential, so a neighbour of its
/// own is a good guess) must not make that trace readable with a 130 key: the gate gives its
/// message a fresh log_id (echoed in the answer), and the API does the same for a push.
#[tokio::test]
async fn a_reused_log_id_does_not_open_another_appcodes_trace() {
    let server = start().await;
    let k130 = ApiClient::new(server.api_addr(), K130);
    let (mut c, _) = login(&server, C, "phone").await;
    let (mut b, _) = login(&server, B, "phone").await;
    let answer = c
        .request(Frame::request(
            Cmd::C2c,
            0,
            0,
            &wire::C2cRequest {
                to: Some(wire::UserRef {
                    appcode: A.0,
                    uid: A.1.to_owned(),
                }),
                client_msg_id: "c-to-a".to_owned(),
                content_type: wire::ContentType::Text as i32,
                msgtype: 0,
                content: bytes::Bytes::from(secret(A, 1)),
            },
        ))
        .await;
    let log_id = answer.header.log_id;
    let path = format!("/v1/trace/{log_id}?by=log_id");
    refused("129's trace", &k130.get(&path).await, 404, "not_found", &[]);
    // B sends a message inside 130 under the same log_id.
    let answer = b
        .request(Frame::request(
            Cmd::C2c,
            0,
            log_id,
            &wire::C2cRequest {
                to: Some(wire::UserRef {
                    appcode: 130,
                    uid: "dave".to_owned(),
                }),
                client_msg_id: "b-to-dave".to_owned(),
                content_type: wire::ContentType::Text as i32,
                msgtype: 0,
                content: bytes::Bytes::from_static(b"x"),
            },
        ))
        .await;
    assert_eq!(answer.cmd(), Some(Cmd::C2c));
    assert_ne!(
        answer.header.log_id, log_id,
        "the reused log_id was replaced"
    );
    let (status, body) = k130.get(&path).await;
    assert!(
        status == 404 || !body.to_string().contains("129:carol"),
        "k130 reads 129's trace: {body}"
    );
    // B's message has a trace of its own, which k130 reads.
    let own = format!("/v1/trace/{}?by=log_id", answer.header.log_id);
    assert_eq!(k130.get(&own).await.0, 200);
    // A push through the API naming 129's log_id gets a fresh one too.
    let (status, body) = k130
        .post(
            "/v1/push",
            &serde_json::json!({
                "appcode": 130,
                "uids": ["dave"],
                "content": "hi",
                "log_id": log_id.to_string(),
            }),
        )
        .await;
    assert!(status == 200 || status == 202, "{status} {body}");
    assert_ne!(body["log_id"], serde_json::json!(log_id.to_string()));
    let (status, body) = k130.get(&path).await;
    assert!(
        status == 404 || !body.to_string().contains("129:carol"),
        "k130 reads 129's trace after a push: {body}"
    );
}
