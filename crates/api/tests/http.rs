//! The HTTP/JSON surface against a real `serve()` on 127.0.0.1 (see `common`): keys and
//! scopes, the spec's JSON errors, push and its statistics, presence, long-poll, SSE, acks,
//! nacks, dead letters, `/openapi.json` and graceful shutdown.

mod common;

use common::{BIG_MSGID, DEADLINE, FIRST_PUSH_ID, Fixture, MAX_BODY, assert_error, json};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_and_health_is_open() {
    let api = Fixture::start(5).await;
    // No key, an unknown key, a malformed header: 401 with the JSON body.
    let response = api.client.get(api.url("/v1/topics")).send().await.unwrap();
    assert_error(response, 401, "unauthenticated").await;
    assert_error(
        api.get("/v1/topics", "nope").send().await.unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    let response = api
        .client
        .get(api.url("/v1/topics"))
        .header("authorization", "Basic kall")
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "unauthenticated").await;
    // Missing key wins over a bad body.
    let response = api
        .client
        .post(api.url("/v1/push"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "unauthenticated").await;
    // x-api-key works too.
    let response = api
        .client
        .get(api.url("/v1/topics"))
        .header("x-api-key", "kall")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let (status, health) = json(api.client.get(api.url("/healthz")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["connections"], 3);
    assert_eq!(health["sessions"], 2);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_only_reach_their_appcodes_and_topics() {
    let api = Fixture::start(5).await;
    let push = json!({"appcode": 130, "uids": ["bob"], "msgtype": 7, "content": "hi"});
    assert_error(
        api.post("/v1/push", "k129", push).send().await.unwrap(),
        403,
        "permission_denied",
    )
    .await;
    assert!(api.push.requests().is_empty(), "nothing reached logic");
    // A topic fed by 130, by name and by (appcode, msgtype).
    for path in [
        "/v1/consume?topic=c2s.130.1&wait_secs=0",
        "/v1/consume?appcode=130&msgtype=1&wait_secs=0",
        // fed by 129 and 130
        "/v1/consume?topic=mixed&wait_secs=0",
        "/v1/deadletter?topic=c2s.130.1",
    ] {
        assert_error(
            api.get(path, "k129").send().await.unwrap(),
            403,
            "permission_denied",
        )
        .await;
    }
    let ack = json!({"topic": "c2s.130.1", "ids": [1]});
    assert_error(
        api.post("/v1/consume/ack", "k129", ack)
            .send()
            .await
            .unwrap(),
        403,
        "permission_denied",
    )
    .await;
    // No appcode is routed to these: unknown topics.
    for path in [
        "/v1/consume?topic=nothing&wait_secs=0",
        "/v1/consume?topic=c2s.999.1&wait_secs=0",
    ] {
        assert_error(
            api.get(path, "kall").send().await.unwrap(),
            404,
            "not_found",
        )
        .await;
    }
    // Presence and statistics of another appcode.
    for path in [
        "/v1/presence/130/bob",
        "/v1/presence/130",
        "/v1/stats/delivery?appcode=130",
    ] {
        assert_error(
            api.get(path, "k129").send().await.unwrap(),
            403,
            "permission_denied",
        )
        .await;
    }
    // The wide key reaches the mixed topic; the narrow one its own.
    let (status, body) = json(
        api.get("/v1/consume?topic=mixed&wait_secs=0", "kall")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["topic"].as_str()), (200, Some("mixed")));
    let (status, body) = json(
        api.get("/v1/consume?appcode=129&msgtype=5&wait_secs=0", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["topic"].as_str()), (200, Some("orders")));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_spec_errors() {
    let api = Fixture::start(5).await;
    let raw = |body: &'static str, content_type: Option<&str>| {
        let mut request = api
            .client
            .post(api.url("/v1/push"))
            .bearer_auth("kall")
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request
    };
    // Bad JSON.
    assert_error(
        raw("{\"appcode\": ", Some("application/json"))
            .send()
            .await
            .unwrap(),
        400,
        "invalid_argument",
    )
    .await;
    // Unknown field.
    assert_error(
        api.post(
            "/v1/push",
            "kall",
            json!({"appcode": 129, "uids": ["a"], "msgtype": 1, "content": "x", "priority": 9}),
        )
        .send()
        .await
        .unwrap(),
        400,
        "invalid_argument",
    )
    .await;
    // Missing field.
    assert_error(
        api.post(
            "/v1/push",
            "kall",
            json!({"uids": ["a"], "msgtype": 1, "content": "x"}),
        )
        .send()
        .await
        .unwrap(),
        400,
        "invalid_argument",
    )
    .await;
    // Wrong or missing content type.
    let body = r#"{"appcode":129,"uids":["a"],"msgtype":1,"content":"x"}"#;
    assert_error(
        raw(body, Some("text/plain")).send().await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    assert_error(
        raw(body, None).send().await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    // charset parameter is fine.
    let response = raw(body, Some("application/json; charset=utf-8"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    // Oversized body.
    let big =
        json!({"appcode": 129, "uids": ["a"], "msgtype": 1, "content": "x".repeat(MAX_BODY + 1)});
    assert_error(
        api.post("/v1/push", "kall", big).send().await.unwrap(),
        413,
        "payload_too_large",
    )
    .await;
    // Values out of range.
    for bad in [
        json!({"appcode": 129, "uids": ["a"], "all": true, "msgtype": 1, "content": "x"}),
        json!({"appcode": 129, "msgtype": 1, "content": "x"}),
        json!({"appcode": 129, "uids": [], "msgtype": 1, "content": "x"}),
        json!({"appcode": 129, "uids": [""], "msgtype": 1, "content": "x"}),
        json!({"appcode": 129, "uids": ["x".repeat(257)], "msgtype": 1, "content": "x"}),
        json!({"appcode": 129, "uids": ["a"], "msgtype": 1, "content": "x", "content_base64": "eA=="}),
        json!({"appcode": 129, "uids": ["a"], "msgtype": 1}),
        json!({"appcode": 129, "uids": ["a"], "msgtype": 1, "content_base64": "not base64!"}),
        json!({"appcode": 129, "uids": ["a"], "msgtype": 1, "content": "x".repeat(61_441)}),
        json!({"appcode": 129, "uids": ["a"], "msgtype": 1, "content": "x", "content_type": "typing"}),
    ] {
        let response = api
            .post("/v1/push", "kall", bad.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        assert_error(response, 400, "invalid_argument").await;
    }
    for path in [
        "/v1/consume?topic=orders&max=0",
        "/v1/consume?topic=orders&max=1001",
        "/v1/consume?topic=orders&wait_secs=61",
        "/v1/consume?topic=orders&lease_secs=0",
        "/v1/consume?topic=orders&lease_secs=3601",
        "/v1/consume?topic=orders&colour=red",
        "/v1/consume?topic=bad%20name",
        "/v1/consume?topic=orders&appcode=129&msgtype=5",
        "/v1/consume?appcode=129",
        "/v1/consume",
        "/v1/consume/sse?topic=orders&max_in_flight=0",
        "/v1/deadletter?topic=orders&limit=0",
        "/v1/push/abc",
        "/v1/presence/abc",
    ] {
        assert_error(
            api.get(path, "kall").send().await.unwrap(),
            400,
            "invalid_argument",
        )
        .await;
    }
    let too_many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    assert_error(
        api.post(
            "/v1/presence/query",
            "kall",
            json!({"appcode": 129, "uids": too_many}),
        )
        .send()
        .await
        .unwrap(),
        400,
        "invalid_argument",
    )
    .await;
    // Unknown routes and methods.
    assert_error(
        api.get("/v1/nothing", "kall").send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_error(
        api.get("/v1/push", "kall").send().await.unwrap(),
        404,
        "not_found",
    )
    .await;
    // A refused push maps to the spec's code.
    assert_error(
        api.post(
            "/v1/push",
            "kall",
            json!({"appcode": 131, "all": true, "msgtype": 1, "content": "x"}),
        )
        .send()
        .await
        .unwrap(),
        503,
        "overloaded",
    )
    .await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_is_accepted_and_reports_statistics() {
    let api = Fixture::start(5).await;
    let (status, accepted) = json(
        api.post(
            "/v1/push",
            "k129",
            json!({"appcode": 129, "uids": ["alice", "bob", "alice"], "msgtype": 7,
                   "content": "your order is on its way", "from": "order-service",
                   "log_id": "4242"}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(
        accepted,
        json!({"push_id": FIRST_PUSH_ID, "targets": 2, "log_id": "4242"})
    );
    assert_eq!(
        api.push.requests()[0].log_id,
        4242,
        "the caller's log_id is kept"
    );
    let (status, _) = json(
        api.post(
            "/v1/push",
            "k129",
            json!({"appcode": 129, "all": true, "msgtype": 8, "content_base64": "AAEC",
                   "content_type": "business", "persist": false, "ttl_secs": 60}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 202);

    let requests = api.push.requests();
    assert_eq!(requests.len(), 2);
    let (first, second) = (&requests[0], &requests[1]);
    assert_eq!(first.appcode, 129);
    assert_eq!(first.msgtype, 7);
    assert_eq!(&first.content[..], b"your order is on its way");
    assert_eq!(first.content_type, longlink_proto::ContentType::Text as i32);
    assert!(first.persist, "persist defaults to true");
    assert_eq!(first.from, "order-service");
    assert_eq!(second.targets, longlink_rpc::push::PushTargets::AllOnline);
    assert_eq!(&second.content[..], &[0, 1, 2]);
    assert_eq!(
        second.content_type,
        longlink_proto::ContentType::Business as i32
    );
    assert!(!second.persist);
    assert_eq!(second.ttl_secs, 60);
    assert_eq!(second.from, "system", "from defaults to system");
    assert_ne!(first.log_id, second.log_id);

    let (status, stats) = json(
        api.get(&format!("/v1/push/{FIRST_PUSH_ID}"), "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        stats,
        json!({"push_id": FIRST_PUSH_ID, "appcode": 129, "msgtype": 7, "persist": true,
               "ttl_secs": 0, "msgid": BIG_MSGID.to_string(), "created_ms": 1_763_900_000_000u64,
               "finished_ms": 1_763_900_000_004u64, "done": true, "targets": 2, "online": 1,
               "written": 1, "acked": 1, "stored_offline": 1, "expired": 0, "failed": 0,
               "stale_sessions": 0, "delivery_rate": 0.5,
               "recipients": [{"uid": "alice", "state": "acked", "sessions": 1},
                              {"uid": "bob", "state": "stored_offline", "sessions": 0}]})
    );
    // A broadcast with no targets has rate 0, not NaN.
    let (_, stats) = json(
        api.get(&format!("/v1/push/{}", FIRST_PUSH_ID + 1), "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(stats["delivery_rate"], 0.0);
    // Another appcode's key, and an unknown id: 404 alike.
    assert_error(
        api.get(&format!("/v1/push/{FIRST_PUSH_ID}"), "k130")
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_error(
        api.get("/v1/push/42", "k129").send().await.unwrap(),
        404,
        "not_found",
    )
    .await;

    let (status, counters) =
        json(api.get("/v1/stats/delivery", "k129").send().await.unwrap()).await;
    assert_eq!(status, 200);
    let counters = counters["counters"].as_array().unwrap();
    assert_eq!(counters.len(), 2);
    let seven = counters.iter().find(|c| c["msgtype"] == 7).unwrap();
    assert_eq!(seven["pushes"], 1);
    assert_eq!(seven["targets"], 2);
    assert_eq!(seven["delivery_rate"], 0.5);
    let (_, counters) = json(api.get("/v1/stats/delivery", "k130").send().await.unwrap()).await;
    assert_eq!(counters, json!({"counters": []}));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_single_batch_and_counts() {
    let api = Fixture::start(5).await;
    api.login(129, "alice", "phone", 42).await;
    api.login(129, "alice", "web", 43).await;
    api.login(129, "carol", "phone", 44).await;
    api.login(130, "alice", "phone", 45).await;

    let (status, alice) = json(
        api.get("/v1/presence/129/alice", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(alice["online"], true);
    assert_eq!(alice["uid"], "alice");
    let mut sessions = alice["sessions"].as_array().unwrap().clone();
    sessions.sort_by_key(|s| s["session_id"].as_str().unwrap().to_owned());
    assert_eq!(
        sessions[0],
        json!({"device": "phone", "gate": "gate-1", "session_id": "42", "since_ms": 1_763_900_000_000u64})
    );
    assert_eq!(sessions.len(), 2);

    let (status, batch) = json(
        api.post(
            "/v1/presence/query",
            "k129",
            json!({"appcode": 129, "uids": ["bob", "alice"]}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let users = batch["users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(
        users[0],
        json!({"appcode": 129, "uid": "bob", "online": false, "sessions": []})
    );
    assert_eq!(users[1]["uid"], "alice");
    assert_eq!(users[1]["sessions"].as_array().unwrap().len(), 2);

    let (status, counts) = json(api.get("/v1/presence/129", "k129").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(
        counts,
        json!({"appcode": 129, "online_users": 2, "sessions": 3})
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_a_message_and_ack_removes_it() {
    let api = Fixture::start(5).await;
    // The poll waits; the message published meanwhile answers it.
    let poll = api
        .get(
            "/v1/consume?topic=c2s.130.1&wait_secs=10&lease_secs=30",
            "k130",
        )
        .send();
    let publisher = async {
        api.watched.wait_for_fetches(1).await;
        api.publish("c2s.130.1", 130, 1, "31.2,121.5").await;
    };
    let (response, ()) = tokio::join!(poll, publisher);
    let (status, body) = json(response.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["topic"], "c2s.130.1");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message["attempt"], 1);
    assert_eq!(message["uid"], "driver-7");
    assert_eq!(message["body"], "31.2,121.5");
    assert_eq!(message["body_base64"], "MzEuMiwxMjEuNQ==");
    assert_eq!(message["log_id"], "123456789");
    let id = message["id"].as_u64().unwrap();

    let (_, topics) = json(api.get("/v1/topics", "k130").send().await.unwrap()).await;
    assert_eq!(
        topics,
        json!({"topics": [{"topic": "c2s.130.1", "ready": 0, "in_flight": 1, "dead": 0}]})
    );
    // A key that may not consume the topic does not see it.
    let (_, topics) = json(api.get("/v1/topics", "k129").send().await.unwrap()).await;
    assert_eq!(topics, json!({"topics": []}));

    let (status, acked) = json(
        api.post(
            "/v1/consume/ack",
            "k130",
            json!({"topic": "c2s.130.1", "ids": [id, id + 100]}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, acked), (200, json!({"acked": 1})));
    let (_, topics) = json(api.get("/v1/topics", "k130").send().await.unwrap()).await;
    assert_eq!(topics["topics"][0]["in_flight"], 0);
    assert_eq!(topics["topics"][0]["ready"], 0);
    // Nothing left: an empty answer after the wait.
    let (status, body) = json(
        api.get("/v1/consume?appcode=130&msgtype=1&wait_secs=0", "k130")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({"topic": "c2s.130.1", "messages": []}))
    );
    api.stop().await;
}

async fn fetch_orders(api: &Fixture) -> Vec<Value> {
    let (status, body) = json(
        api.get("/v1/consume?topic=orders&wait_secs=5", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["messages"].as_array().unwrap().clone()
}

async fn nack_order(api: &Fixture, id: u64) {
    let (status, body) = json(
        api.post(
            "/v1/consume/nack",
            "k129",
            json!({"topic": "orders", "ids": [id], "retry_after_secs": 0}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, body), (200, json!({"nacked": 1})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_redelivers_then_dead_letters_and_replay_restores() {
    let api = Fixture::start(2).await;
    api.publish("orders", 129, 5, "order-1").await;
    let first = fetch_orders(&api).await;
    assert_eq!(first[0]["attempt"], 1);
    let id = first[0]["id"].as_u64().unwrap();
    nack_order(&api, id).await;
    let second = fetch_orders(&api).await;
    assert_eq!(
        (second[0]["id"].as_u64(), second[0]["attempt"].as_u64()),
        (Some(id), Some(2))
    );
    nack_order(&api, id).await; // its last attempt: dead-lettered

    let (status, dead) = json(
        api.get("/v1/deadletter?topic=orders", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(dead["messages"][0]["id"].as_u64(), Some(id));
    assert_eq!(dead["messages"][0]["body"], "order-1");
    let (status, replayed) = json(
        api.post(
            "/v1/deadletter/replay",
            "k129",
            json!({"topic": "orders", "ids": []}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, replayed), (200, json!({"replayed": 1})));
    let again = fetch_orders(&api).await;
    assert_eq!(
        (again[0]["id"].as_u64(), again[0]["attempt"].as_u64()),
        (Some(id), Some(1))
    );
    api.stop().await;
}

/// Reads SSE `message` events from `response` until `count` arrived.
async fn sse_messages(
    response: &mut reqwest::Response,
    buffer: &mut String,
    count: usize,
) -> Vec<Value> {
    tokio::time::timeout(DEADLINE, async {
        let mut events = Vec::new();
        loop {
            // Complete events end with a blank line.
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if event.lines().any(|l| l == "event: message") {
                    let data = event
                        .lines()
                        .find_map(|l| l.strip_prefix("data: "))
                        .expect("a data line");
                    events.push(serde_json::from_str::<Value>(data).unwrap());
                    if events.len() == count {
                        return events;
                    }
                }
            }
            let chunk = response
                .chunk()
                .await
                .unwrap()
                .expect("the stream stays open");
            buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .expect("SSE message events in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_messages_and_respects_max_in_flight() {
    let api = Fixture::start(5).await;
    let mut response = api
        .get("/v1/consume/sse?topic=c2s.130.1&max_in_flight=1", "k130")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    api.publish("c2s.130.1", 130, 1, "first").await;
    api.publish("c2s.130.1", 130, 1, "second").await;
    let mut buffer = String::new();
    let first = sse_messages(&mut response, &mut buffer, 1).await;
    assert_eq!(first[0]["body"], "first");
    // One in flight: the second stays ready until the first is acked.
    let (_, topics) = json(api.get("/v1/topics", "k130").send().await.unwrap()).await;
    assert_eq!(
        (
            topics["topics"][0]["ready"].as_u64(),
            topics["topics"][0]["in_flight"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let (_, acked) = json(
        api.post(
            "/v1/consume/ack",
            "k130",
            json!({"topic": "c2s.130.1", "ids": [first[0]["id"]]}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(acked, json!({"acked": 1}));
    let second = sse_messages(&mut response, &mut buffer, 1).await;
    assert_eq!(second[0]["body"], "second");
    drop(response);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_and_long_polls() {
    let api = Fixture::start(5).await;
    let mut sse = api
        .get("/v1/consume/sse?topic=orders", "k129")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let poll = tokio::spawn(
        api.get("/v1/consume?topic=orders&wait_secs=60", "k129")
            .send(),
    );
    api.watched.wait_for_fetches(2).await;
    api.stop().await; // bounded: serve() returns within the deadline
    // The long-poll was answered (empty) and the SSE body ended.
    let (status, body) = json(poll.await.unwrap().unwrap()).await;
    assert_eq!(
        (status, body),
        (200, json!({"topic": "orders", "messages": []}))
    );
    let end = tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(_)) = sse.chunk().await {}
    })
    .await;
    assert!(end.is_ok(), "the SSE stream ends at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_every_route() {
    let api = Fixture::start(5).await;
    let (status, doc) = json(
        api.client
            .get(api.url("/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/healthz", "get"),
        ("/v1/push", "post"),
        ("/v1/push/{push_id}", "get"),
        ("/v1/stats/delivery", "get"),
        ("/v1/presence/{appcode}/{uid}", "get"),
        ("/v1/presence/query", "post"),
        ("/v1/presence/{appcode}", "get"),
        ("/v1/consume", "get"),
        ("/v1/consume/sse", "get"),
        ("/v1/consume/ack", "post"),
        ("/v1/consume/nack", "post"),
        ("/v1/deadletter", "get"),
        ("/v1/deadletter/replay", "post"),
        ("/v1/topics", "get"),
        ("/v1/dispatch", "get"),
        ("/v1/gates", "get"),
        ("/v1/gates/{id}/drain", "post"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is documented"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "PushBody",
        "PushStatsBody",
        "ConsumedMessage",
        "ErrorBody",
        "MessagesBody",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // The same document as the library function.
    assert_eq!(doc, serde_json::to_value(longlink_api::openapi()).unwrap());
    api.stop().await;
}
