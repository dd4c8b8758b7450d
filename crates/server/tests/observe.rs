//! Observability end to end (issue 9): a message's trace shows its stages in order, found by
//! log_id or msgid; `/metrics` moves as scripted traffic says (parsed as Prometheus parses
//! it, not by string matching), with bounded labels; `/v1/stats/summary` agrees.

use std::collections::BTreeMap;
use std::time::Duration;

use longlink_proto::{Cmd, Frame, wire};
use longlink_sdk::{Content, Event, Incoming, Message, UserRef};
use longlink_testkit::{ApiClient, RawClient, TestServer, WAIT};
use serde_json::{Value, json};

async fn next_message(incoming: &mut Incoming) -> Message {
    loop {
        match tokio::time::timeout(WAIT, incoming.next_event()).await {
            Ok(Some(Event::Message(message))) => return message,
            Ok(Some(_)) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// The trace of `id` once it has every stage in `stages` (waits for the receiver's ACK etc.).
async fn trace_with(api: &ApiClient, id: u64, stages: &[&str]) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = api.get(&format!("/v1/trace/{id}")).await;
        if status == 200 {
            let have = stage_names(&body);
            if stages.iter().all(|s| have.iter().any(|h| h == s)) {
                return body;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "trace {id} never had {stages:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stage_names(trace: &Value) -> Vec<String> {
    trace["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["stage"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Index of the first event of `stage`.
fn at(trace: &Value, stage: &str) -> usize {
    stage_names(trace)
        .iter()
        .position(|s| s == stage)
        .unwrap_or_else(|| panic!("no {stage} in {trace}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c2c_trace_shows_every_stage_in_order_by_log_id_and_by_msgid() {
    let server = TestServer::start().await;
    let api = server.api();
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    let (_bob, mut bob_in) = server.client(130, "bob", "phone").await;

    let receipt = alice
        .c2c(UserRef::new(130, "bob"), Content::text("where are you?"))
        .await
        .expect("sent");
    let received = next_message(&mut bob_in).await;
    assert_eq!(received.msgid, receipt.msgid);

    let trace = trace_with(
        &api,
        receipt.msgid,
        &[
            "accepted",
            "stored",
            "routed",
            "written",
            "acked_to_sender",
            "receiver_acked",
        ],
    )
    .await;
    assert_eq!(trace["kind"], "c2c");
    assert_eq!(trace["from"], "129:alice");
    assert_eq!(trace["to"], "130:bob");
    assert_eq!(trace["msgids"], json!([receipt.msgid.to_string()]));
    // The order a c2c must follow (seed 001): read, stored before anything else, routed, the
    // receiver's copy written before its ACK came back.
    assert!(at(&trace, "accepted") < at(&trace, "stored"));
    assert!(at(&trace, "stored") < at(&trace, "routed"));
    assert!(at(&trace, "stored") < at(&trace, "acked_to_sender"));
    assert!(at(&trace, "stored") < at(&trace, "written"));
    assert!(at(&trace, "written") < at(&trace, "receiver_acked"));
    let events = trace["events"].as_array().expect("events");
    let written = &events[at(&trace, "written")];
    assert_eq!(written["who"], "130:bob/phone");
    assert_eq!(events[at(&trace, "accepted")]["who"], "129:alice/phone");
    let offsets: Vec<f64> = events
        .iter()
        .map(|e| e["offset_ms"].as_f64().unwrap())
        .collect();
    assert!(
        offsets.windows(2).all(|w| w[0] <= w[1]),
        "time order: {offsets:?}"
    );

    // The same trace by its log_id, and by msgid explicitly.
    let log_id: u64 = trace["log_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("log_id");
    let (status, by_log) = api.get(&format!("/v1/trace/{log_id}?by=log_id")).await;
    assert_eq!(status, 200);
    assert_eq!(by_log["msgids"], trace["msgids"]);
    let (status, _) = api
        .get(&format!("/v1/trace/{}?by=msgid", receipt.msgid))
        .await;
    assert_eq!(status, 200);

    // gRPC `Trace` answers the same trail.
    use longlink_api::pb;
    let mut grpc = pb::api_client::ApiClient::connect(format!("http://{}", server.grpc_addr()))
        .await
        .expect("grpc");
    let with_key = |body: pb::TraceRequest| {
        let mut request = tonic::Request::new(body);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", longlink_testkit::DEV_API_KEY)
                .parse()
                .expect("metadata"),
        );
        request
    };
    let reply = grpc
        .trace(with_key(pb::TraceRequest {
            id: receipt.msgid,
            by: pb::TraceBy::Msgid as i32,
        }))
        .await
        .expect("trace")
        .into_inner();
    assert_eq!(reply.log_id, log_id);
    assert_eq!(reply.msgids, [receipt.msgid]);
    assert_eq!(reply.kind, "c2c");
    let grpc_stages: Vec<&str> = reply.events.iter().map(|e| e.stage.as_str()).collect();
    let http_stages = stage_names(&by_log);
    assert!(
        grpc_stages.len() >= http_stages.len()
            && grpc_stages[..http_stages.len()] == http_stages[..],
        "{grpc_stages:?} vs {http_stages:?}"
    );
    let status = grpc
        .trace(with_key(pb::TraceRequest {
            id: 123_456_789,
            by: pb::TraceBy::Either as i32,
        }))
        .await
        .expect_err("unknown id");
    assert_eq!(status.code(), tonic::Code::NotFound);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_of_offline_delivery_and_pushes_and_their_errors() {
    let server = TestServer::start().await;
    let api = server.api();
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;

    // Receiver offline: the trace says so, then shows the pull and the ACK of its next login.
    let receipt = alice
        .c2c(UserRef::new(130, "carol"), Content::text("call me"))
        .await
        .expect("sent");
    let trace = trace_with(&api, receipt.msgid, &["offline", "acked_to_sender"]).await;
    assert!(at(&trace, "stored") < at(&trace, "offline"));
    let (_carol, mut carol_in) = server.client(130, "carol", "tablet").await;
    assert_eq!(next_message(&mut carol_in).await.msgid, receipt.msgid);
    let trace = trace_with(&api, receipt.msgid, &["written", "receiver_acked"]).await;
    assert!(at(&trace, "offline") < at(&trace, "written"));

    // A push with the caller's log_id: found by it, kind s2c, written and acked.
    let (status, accepted) = api
        .post(
            "/v1/push",
            &json!({"appcode": 130, "uids": ["carol"], "content": "your ride is here",
                    "log_id": "777000111"}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["log_id"], "777000111");
    assert_eq!(
        next_message(&mut carol_in).await.content,
        Content::text("your ride is here")
    );
    let trace = trace_with(
        &api,
        777_000_111,
        &["accepted", "stored", "written", "receiver_acked"],
    )
    .await;
    assert_eq!(trace["kind"], "s2c");
    assert_eq!(trace["to"], "130 (1 users)");

    // A c2s, then leased by a business server: the consumed message names its log_id.
    let topic = alice
        .c2s(1, bytes::Bytes::from_static(b"31.2,121.5"), "gps-7")
        .await
        .expect("c2s");
    let (status, consumed) = api
        .get(&format!("/v1/consume?topic={topic}&wait_secs=5"))
        .await;
    assert_eq!(status, 200, "{consumed}");
    let log_id: u64 = consumed["messages"][0]["log_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a decimal log_id in {consumed}"));
    let trace = trace_with(
        &api,
        log_id,
        &["accepted", "published", "acked_to_sender", "consumed"],
    )
    .await;
    assert_eq!(trace["kind"], "c2s");
    assert_eq!(trace["to"], format!("topic {topic}"));
    assert!(at(&trace, "published") < at(&trace, "consumed"));

    // Errors: no key, a key that covers neither appcode, an unknown id, a bad `by`.
    let (status, _) = api
        .with_key(None)
        .get(&format!("/v1/trace/{}", receipt.msgid))
        .await;
    assert_eq!(status, 401);
    let (status, body) = api.get("/v1/trace/123456789").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = api.get("/v1/trace/1?by=uid").await;
    assert_eq!(status, 400);
    server.stop().await;

    let server = TestServer::start_with(|config| {
        config
            .api_keys
            .push(longlink_server::config::ApiKeySection {
                name: "merchants".into(),
                key: "merchant-key-0123456789".into(),
                appcodes: vec![131],
            });
    })
    .await;
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    let receipt = alice
        .c2c(UserRef::new(130, "bob"), Content::text("hi"))
        .await
        .expect("sent");
    let merchants = server.api().with_key(Some("merchant-key-0123456789"));
    let (status, _) = merchants.get(&format!("/v1/trace/{}", receipt.msgid)).await;
    assert_eq!(status, 404, "a key for 131 cannot see a 129 → 130 message");
    server.stop().await;
}

/// Every sample of `/metrics`, parsed by a Prometheus text parser.
async fn scrape(api: &ApiClient) -> Vec<prometheus_parse::Sample> {
    let response = reqwest::get(format!("{}/metrics", api.base()))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("body");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines)
        .expect("valid Prometheus text")
        .samples
}

/// The value of `name` with exactly `labels` (plus the gate label where it applies).
fn value(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_the_summary_move_with_scripted_traffic() {
    let server = TestServer::start().await;
    let api = server.api();
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    // Alice's second device gets a copy of what she sends: no ACK is due for it, so it must
    // not lower the delivery rate.
    let (_alice_tablet, _alice_tablet_in) = server.client(129, "alice", "tablet").await;
    let (bob, mut bob_in) = server.client(130, "bob", "phone").await;
    // The gate reads bob's next frame only after his login's redelivery ran: one round trip
    // first, so that redelivery cannot push alice's first message a second time (at least
    // once allows it, and the exact delivery count below would be off by one).
    bob.keepalive().await.expect("keepalive");
    const SENT: usize = 5;
    for i in 0..SENT {
        alice
            .c2c(UserRef::new(130, "bob"), Content::text(format!("m{i}")))
            .await
            .expect("sent");
        next_message(&mut bob_in).await;
    }
    // A c2s: waits on its topic until a business server consumes it.
    let topic = alice
        .c2s(1, bytes::Bytes::from_static(b"31.2,121.5"), "gps-1")
        .await
        .expect("c2s");
    // One refused login and one refused request.
    let mut raw = RawClient::connect(server.gate_addr())
        .await
        .expect("connect");
    raw.login(129, "not-a-token", "d").await.expect("answer");
    let mut raw = RawClient::connect(server.gate_addr())
        .await
        .expect("connect");
    raw.login(129, &server.token(129, "dave"), "d")
        .await
        .expect("login");
    let c2c = wire::C2cRequest {
        to: Some(wire::UserRef {
            appcode: 999,
            uid: "nobody".into(),
        }),
        content: b"x".to_vec().into(),
        ..Default::default()
    };
    raw.send(Frame::request(Cmd::C2c, 2, 0, &c2c))
        .await
        .expect("send");
    raw.recv().await.expect("error frame");
    // A push to bob, acked by his SDK.
    let (status, _) = api
        .post(
            "/v1/push",
            &json!({"appcode": 130, "uids": ["bob"], "msgtype": 7, "content": "hi"}),
        )
        .await;
    assert_eq!(status, 202);
    next_message(&mut bob_in).await;

    // Acks arrive asynchronously: wait for the counters, then check the whole scrape.
    let mut samples = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        samples = scrape(&api).await;
        if value(&samples, "longlink_receiver_acks_total", &[]) >= (SENT + 1) as f64
            && value(
                &samples,
                "longlink_bus_messages",
                &[("topic", topic.as_str()), ("state", "ready")],
            ) >= 1.0
            && value(
                &samples,
                "longlink_push_acked_total",
                &[("appcode", "130"), ("msgtype", "7")],
            ) >= 1.0
            // The refused login's connection is closed by the gate after its ERROR went out,
            // and the writer records a write just after the bytes left: both may trail what
            // the clients saw.
            && value(&samples, "longlink_gate_connections", &[("gate", "gate-1")]) == 4.0
            && value(&samples, "longlink_c2c_delivery_seconds_count", &[]) >= SENT as f64
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gate = ("gate", "gate-1");
    assert_eq!(value(&samples, "longlink_gate_connections", &[gate]), 4.0);
    assert_eq!(
        value(
            &samples,
            "longlink_gate_sessions",
            &[gate, ("appcode", "130")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "longlink_gate_sessions",
            &[gate, ("appcode", "129")]
        ),
        3.0
    );
    assert_eq!(value(&samples, "longlink_gate_logins_total", &[gate]), 4.0);
    assert_eq!(
        value(
            &samples,
            "longlink_gate_login_failures_total",
            &[gate, ("reason", "bad_token")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "longlink_gate_frames_received_total",
            &[gate, ("cmd", "c2c")]
        ),
        (SENT + 1) as f64
    );
    assert!(
        value(
            &samples,
            "longlink_gate_frames_sent_total",
            &[gate, ("cmd", "msg")]
        ) >= (SENT + 1) as f64
    );
    assert!(
        value(
            &samples,
            "longlink_gate_received_bytes_total",
            &[gate, ("cmd", "c2c")]
        ) > 0.0
    );
    assert_eq!(
        value(
            &samples,
            "longlink_gate_errors_total",
            &[gate, ("code", "unknown_receiver_appcode")]
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "longlink_c2c_ack_seconds_count", &[gate]),
        (SENT + 1) as f64
    );
    assert_eq!(
        value(&samples, "longlink_c2c_delivery_seconds_count", &[]),
        SENT as f64
    );
    assert!(
        value(
            &samples,
            "longlink_store_op_duration_seconds_count",
            &[("op", "append")]
        ) >= SENT as f64
    );
    // bob's c2c copies and the push expect an ACK; alice's tablet copies do not.
    assert_eq!(
        value(&samples, "longlink_receiver_deliveries_total", &[]),
        (SENT + 1) as f64
    );
    assert_eq!(
        value(
            &samples,
            "longlink_push_targets_total",
            &[("appcode", "130"), ("msgtype", "7")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "longlink_push_delivery_ratio",
            &[("appcode", "130"), ("msgtype", "7")]
        ),
        1.0
    );
    assert!(
        value(
            &samples,
            "longlink_gate_closes_total",
            &[gate, ("reason", "protocol_error")]
        ) >= 1.0
    );

    assert_eq!(
        value(
            &samples,
            "longlink_bus_messages",
            &[("topic", topic.as_str()), ("state", "ready")]
        ),
        1.0,
        "the c2s waits on {topic}"
    );

    // Bounded cardinality: only these label names, never a uid or a device.
    let allowed = [
        "gate",
        "appcode",
        "cmd",
        "reason",
        "code",
        "op",
        "msgtype",
        "topic",
        "state",
        "le",
        "quantile",
        "class",
        "transport",
    ];
    for sample in &samples {
        for (name, value) in sample.labels.iter() {
            assert!(
                allowed.contains(&name.as_str()),
                "label {name} on {}",
                sample.metric
            );
            assert!(
                !["alice", "bob", "dave"].contains(&value.as_str()),
                "a uid as a label value on {}",
                sample.metric
            );
        }
    }

    // The summary agrees (the dashboard and `longlink top` draw it).
    let (status, summary) = api.get("/v1/stats/summary").await;
    assert_eq!(status, 200);
    assert_eq!(summary["connections"], 4);
    assert_eq!(summary["sessions"], 4);
    assert_eq!(summary["delivery_rate"], 1.0, "every receiver acked");
    assert_eq!(
        summary["totals"]["messages"],
        SENT + 3,
        "c2c, c2s and the push"
    );
    assert_eq!(summary["latency_ms"]["c2c_e2e"]["count"], SENT);
    assert!(summary["latency_ms"]["c2c_ack"]["p99"].as_f64().is_some());
    let appcodes: BTreeMap<u64, u64> = summary["appcodes"]
        .as_array()
        .expect("appcodes")
        .iter()
        .map(|a| {
            (
                a["appcode"].as_u64().unwrap(),
                a["sessions"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(appcodes.get(&129), Some(&3));
    assert_eq!(appcodes.get(&130), Some(&1));
    assert_eq!(
        summary["appcodes"][0]["appcode"], 129,
        "most sessions first"
    );
    assert_eq!(summary["gates"][0]["healthy"], true);
    assert_eq!(summary["gates"][0]["id"], "gate-1");
    server.stop().await;
}
