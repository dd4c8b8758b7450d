//! The contracts across a real nats-server: what one side sends arrives whole on the other,
//! answers come back unchanged, several logic processes share the load, and a missing peer
//! or a NATS restart is an error within the deadline, then works again.
//!
//! The two ends here are small recording implementations of the traits: what is under test
//! is the transport (the real gate and logic run over it in crates/server's cluster tests).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use longlink_proto::{Cmd, ErrorCode, Frame, FrameType, KickReason, wire};
use longlink_rpc::{
    GatePush, KickNotice, LogicService, LoginAccepted, PushError, Refusal, Reply, ResumeAccepted,
    SessionInfo, WriteReceipt,
};
use longlink_rpc_nats::{NatsGatePush, NatsLogic, serve_gate, serve_logic};
use longlink_testservers::NatsServer;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// A logic that answers from its inputs, so the test can check every field made the trip.
#[derive(Default)]
struct EchoLogic {
    name: &'static str,
    calls: AtomicUsize,
    closed: Mutex<Vec<SessionInfo>>,
}

fn session(gate_id: &str, session_id: u64) -> SessionInfo {
    SessionInfo {
        gate_id: gate_id.to_owned(),
        session_id,
        appcode: 129,
        uid: "alice".to_owned(),
        device_id: "phone".to_owned(),
        epoch: 77,
    }
}

#[async_trait]
impl LogicService for EchoLogic {
    async fn login(
        &self,
        gate_id: &str,
        session_id: u64,
        request: wire::LoginRequest,
        log_id: u64,
        peer: Option<std::net::IpAddr>,
    ) -> Result<LoginAccepted, Refusal> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if request.token == "bad" {
            return Err(Refusal::new(ErrorCode::BadToken, "bad signature").retry_after(5));
        }
        Ok(LoginAccepted {
            session: session(gate_id, session_id),
            response: wire::LoginResponse {
                session_id,
                uid: format!(
                    "{}|{}|{log_id}|{peer:?}|{}",
                    request.token, request.device_id, self.name
                ),
                epoch: 77,
                ..Default::default()
            },
        })
    }

    async fn resume(
        &self,
        gate_id: &str,
        session_id: u64,
        request: wire::ResumeRequest,
        _log_id: u64,
    ) -> Result<ResumeAccepted, Refusal> {
        Ok(ResumeAccepted {
            session: session(gate_id, session_id),
            response: wire::ResumeResponse {
                session_id,
                gap_free: request.last_msgid == 5,
                resume_token: request.resume_token,
                ..Default::default()
            },
        })
    }

    async fn session_ready(&self, _session: &SessionInfo, _resumed: bool) {}

    async fn handle(&self, session: &SessionInfo, frame: Frame) -> Reply {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match frame.cmd() {
            Some(Cmd::Logout) => {
                Reply::FrameThenClose(Frame::response(&frame.header, &wire::LogoutResponse {}))
            }
            Some(Cmd::MsgAck) => Reply::Nothing,
            _ => Reply::Frame(Frame::response(
                &frame.header,
                &wire::C2sResponse {
                    topic: format!("{}:{}:{}", session.uid, session.session_id, self.name),
                },
            )),
        }
    }

    async fn session_closed(&self, session: &SessionInfo) {
        self.closed.lock().unwrap().push(session.clone());
    }
}

/// A gate that records what it was asked and answers by session id.
#[derive(Default)]
struct RecordingGate {
    seen: Mutex<Vec<String>>,
}

#[async_trait]
impl GatePush for RecordingGate {
    async fn push(&self, gate_id: &str, session_id: u64, frame: Bytes) -> Result<(), PushError> {
        self.seen
            .lock()
            .unwrap()
            .push(format!("push {gate_id} {session_id} {}", frame.len()));
        match session_id {
            1 => Ok(()),
            2 => Err(PushError::SlowConsumer),
            3 => Err(PushError::Unreachable),
            _ => Err(PushError::NoSession),
        }
    }

    async fn push_tracked(
        &self,
        gate_id: &str,
        session_id: u64,
        frame: Bytes,
        receipt: Arc<dyn WriteReceipt>,
        tag: u64,
    ) -> Result<(), PushError> {
        self.push(gate_id, session_id, frame).await?;
        receipt.written(tag);
        Ok(())
    }

    async fn offer(&self, gate_id: &str, session_id: u64, _frame: Bytes) -> Result<(), PushError> {
        self.seen
            .lock()
            .unwrap()
            .push(format!("offer {gate_id} {session_id}"));
        Ok(())
    }

    async fn kick(&self, gate_id: &str, session_id: u64, notice: KickNotice) {
        self.seen.lock().unwrap().push(format!(
            "kick {gate_id} {session_id} {:?} {} {}",
            notice.reason, notice.message, notice.by_device_id
        ));
    }

    async fn detach(&self, gate_id: &str, session_id: u64) {
        self.seen
            .lock()
            .unwrap()
            .push(format!("detach {gate_id} {session_id}"));
    }
}

async fn connect(nats: &NatsServer) -> async_nats::Client {
    async_nats::connect(nats.url())
        .await
        .expect("connect to nats")
}

/// Starts `serve_logic` and waits until a request is answered (the subscription is live).
async fn start_logic(
    nats: &NatsServer,
    logic: Arc<EchoLogic>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let client = connect(nats).await;
    let task = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            serve_logic(client, logic, shutdown).await.expect("serve");
        })
    };
    (shutdown, task)
}

fn login_request(token: &str) -> wire::LoginRequest {
    wire::LoginRequest {
        token: token.to_owned(),
        appcode: 129,
        device_id: "phone".to_owned(),
        ..Default::default()
    }
}

/// Retries a login until the serving side's subscription is live (no responders until then).
async fn login_when_served(gate: &NatsLogic, token: &str) -> Result<LoginAccepted, Refusal> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let result = gate
            .login(
                "gate-1",
                9,
                login_request(token),
                42,
                Some([10, 0, 0, 7].into()),
            )
            .await;
        match &result {
            Err(refusal)
                if refusal.code == ErrorCode::Overloaded
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::task::yield_now().await;
            }
            _ => return result,
        }
    }
}

#[tokio::test]
async fn logic_calls_and_answers_make_the_round_trip_whole() {
    let nats = NatsServer::start().expect("nats");
    let logic = Arc::new(EchoLogic {
        name: "L1",
        ..Default::default()
    });
    let (shutdown, _task) = start_logic(&nats, logic.clone()).await;
    let gate = NatsLogic::new(connect(&nats).await, WAIT);

    let ok = login_when_served(&gate, "tok").await.expect("login");
    assert_eq!(ok.session, session("gate-1", 9));
    assert_eq!(ok.response.uid, "tok|phone|42|Some(10.0.0.7)|L1");
    let refused = gate
        .login("gate-1", 9, login_request("bad"), 1, None)
        .await
        .expect_err("refused");
    assert_eq!(
        (
            refused.code,
            refused.message.as_str(),
            refused.retry_after_ms
        ),
        (ErrorCode::BadToken, "bad signature", 5)
    );
    let resumed = gate
        .resume(
            "gate-2",
            11,
            wire::ResumeRequest {
                resume_token: "rt".into(),
                last_msgid: 5,
                ..Default::default()
            },
            3,
        )
        .await
        .expect("resume");
    assert_eq!(resumed.session.gate_id, "gate-2");
    assert!(resumed.response.gap_free);
    assert_eq!(resumed.response.resume_token, "rt");

    // Every Reply variant, and the frame header fields.
    let me = session("gate-1", 9);
    let request = Frame::request(
        Cmd::C2s,
        31,
        0xDEAD_BEEF_0000_0001,
        &wire::C2sRequest::default(),
    );
    match gate.handle(&me, request).await {
        Reply::Frame(frame) => {
            assert_eq!(frame.header.seq_id, 31);
            assert_eq!(frame.header.log_id, 0xDEAD_BEEF_0000_0001);
            assert_eq!(frame.header.frame_type, FrameType::Response);
            let body: wire::C2sResponse = frame.decode_body().unwrap();
            assert_eq!(body.topic, "alice:9:L1");
        }
        other => panic!("expected a frame, got {other:?}"),
    }
    let logout = Frame::request(Cmd::Logout, 32, 7, &wire::LogoutRequest {});
    assert!(
        matches!(gate.handle(&me, logout).await, Reply::FrameThenClose(f) if f.header.seq_id == 32)
    );
    let mut ack = Frame::request(Cmd::MsgAck, 33, 7, &wire::MsgAck { msgids: vec![1] });
    ack.header.frame_type = FrameType::Ack;
    assert_eq!(gate.handle(&me, ack).await, Reply::Nothing);
    gate.session_closed(&me).await;
    assert_eq!(logic.closed.lock().unwrap().clone(), vec![me]);
    shutdown.cancel();
}

#[tokio::test]
async fn without_logic_the_gate_answers_overloaded_at_once_and_logic_processes_share_the_load() {
    let nats = NatsServer::start().expect("nats");
    let gate = NatsLogic::new(connect(&nats).await, WAIT);
    let me = session("gate-1", 9);

    // Nobody serves: no responders, an answer right away (not after the timeout).
    let started = tokio::time::Instant::now();
    let refused = gate
        .login("gate-1", 9, login_request("tok"), 1, None)
        .await
        .expect_err("no logic");
    assert_eq!(refused.code, ErrorCode::Overloaded);
    assert!(refused.retry_after_ms > 0);
    assert!(started.elapsed() < WAIT, "answered before the deadline");
    let request = Frame::request(Cmd::C2s, 8, 99, &wire::C2sRequest::default());
    match gate.handle(&me, request).await {
        Reply::Frame(frame) => {
            assert_eq!(frame.header.cmd, Cmd::Error as u16);
            assert_eq!(frame.header.seq_id, 8, "the ERROR answers the request");
            assert_eq!(frame.header.log_id, 99);
        }
        other => panic!("expected an ERROR frame, got {other:?}"),
    }

    // Two logic processes: both take requests; with one stopped, the other takes them all.
    let l1 = Arc::new(EchoLogic {
        name: "L1",
        ..Default::default()
    });
    let l2 = Arc::new(EchoLogic {
        name: "L2",
        ..Default::default()
    });
    let (stop1, task1) = start_logic(&nats, l1.clone()).await;
    let (stop2, _task2) = start_logic(&nats, l2.clone()).await;
    login_when_served(&gate, "warm").await.expect("served");
    let deadline = tokio::time::Instant::now() + WAIT;
    while l1.calls.load(Ordering::SeqCst) == 0 || l2.calls.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "both logic processes take requests"
        );
        let request = Frame::request(Cmd::C2s, 1, 1, &wire::C2sRequest::default());
        assert!(
            matches!(gate.handle(&me, request).await, Reply::Frame(f) if f.header.cmd == Cmd::C2s as u16)
        );
    }
    stop1.cancel();
    task1.await.expect("l1 stopped");
    let before = l1.calls.load(Ordering::SeqCst);
    for seq in 0..50 {
        let request = Frame::request(Cmd::C2s, seq, 1, &wire::C2sRequest::default());
        match gate.handle(&me, request).await {
            Reply::Frame(frame) => {
                let body: wire::C2sResponse = frame.decode_body().unwrap();
                assert!(body.topic.ends_with(":L2"), "{}", body.topic);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(l1.calls.load(Ordering::SeqCst), before);
    stop2.cancel();
}

struct Counter(Arc<Mutex<Vec<u64>>>);

impl WriteReceipt for Counter {
    fn written(&self, tag: u64) {
        self.0.lock().unwrap().push(tag);
    }
}

#[tokio::test]
async fn pushes_reach_the_named_gate_with_their_outcomes_and_receipts() {
    let nats = NatsServer::start().expect("nats");
    let shutdown = CancellationToken::new();
    let recording = Arc::new(RecordingGate::default());
    tokio::spawn(serve_gate(
        connect(&nats).await,
        "gate.7 x".to_owned(),
        recording.clone(),
        shutdown.clone(),
    ));
    let logic = NatsGatePush::new(connect(&nats).await, WAIT, shutdown.clone())
        .await
        .expect("gate push");
    let frame = Bytes::from_static(b"0123456789");
    // Until the gate's subscription is live, pushes find no session.
    let deadline = tokio::time::Instant::now() + WAIT;
    while logic.push("gate.7 x", 1, frame.clone()).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "gate never served");
    }
    assert_eq!(
        logic.push("gate.7 x", 2, frame.clone()).await,
        Err(PushError::SlowConsumer)
    );
    assert_eq!(
        logic.push("gate.7 x", 3, frame.clone()).await,
        Err(PushError::Unreachable)
    );
    assert_eq!(
        logic.push("gate.7 x", 4, frame.clone()).await,
        Err(PushError::NoSession)
    );
    assert_eq!(logic.offer("gate.7 x", 5, frame.clone()).await, Ok(()));
    logic
        .kick(
            "gate.7 x",
            6,
            KickNotice {
                reason: KickReason::Replaced,
                message: "newer login".into(),
                by_device_id: "pad".into(),
            },
        )
        .await;
    logic.detach("gate.7 x", 8).await;
    // A gate nobody serves: no session, at once.
    assert_eq!(
        logic.push("gate-gone", 1, frame.clone()).await,
        Err(PushError::NoSession)
    );

    let written = Arc::new(Mutex::new(Vec::new()));
    logic
        .push_tracked(
            "gate.7 x",
            1,
            frame.clone(),
            Arc::new(Counter(written.clone())),
            4242,
        )
        .await
        .expect("tracked");
    let deadline = tokio::time::Instant::now() + WAIT;
    while written.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no write receipt");
        tokio::task::yield_now().await;
    }
    assert_eq!(written.lock().unwrap().clone(), vec![4242]);
    let seen = recording.seen.lock().unwrap().clone();
    let tail: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .skip_while(|s| !s.starts_with("push gate.7 x 2"))
        .collect();
    assert_eq!(
        tail,
        vec![
            "push gate.7 x 2 10",
            "push gate.7 x 3 10",
            "push gate.7 x 4 10",
            "offer gate.7 x 5",
            "kick gate.7 x 6 Replaced newer login pad",
            "detach gate.7 x 8",
            "push gate.7 x 1 10",
        ]
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_nats_restart_is_an_error_while_it_lasts_then_calls_work_again() {
    let mut nats = NatsServer::start().expect("nats");
    let logic = Arc::new(EchoLogic {
        name: "L1",
        ..Default::default()
    });
    let (shutdown, _task) = start_logic(&nats, logic).await;
    let gate = NatsLogic::new(connect(&nats).await, Duration::from_secs(2));
    login_when_served(&gate, "before")
        .await
        .expect("login before");

    nats.kill();
    let refused = gate
        .login("gate-1", 9, login_request("during"), 1, None)
        .await
        .expect_err("nats is down");
    assert_eq!(refused.code, ErrorCode::Overloaded, "{refused:?}");

    nats.restart().expect("restart");
    // Both clients reconnect by themselves and the logic subscription comes back.
    let ok = login_when_served(&gate, "after")
        .await
        .expect("login after the restart");
    assert!(ok.response.uid.starts_with("after|"));
    shutdown.cancel();
}
