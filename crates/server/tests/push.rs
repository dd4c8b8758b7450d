//! End to end: a business server pushes through the HTTP API to real clients over real
//! sockets, and reads exact delivery statistics back (seed 003 "消息到达率统计").

use std::time::Duration;

use longlink_sdk::{Content, Event, Incoming, Message, MsgKind, UserRef};
use longlink_testkit::{ApiClient, TestServer, WAIT};
use serde_json::{Value, json};

async fn next_message(incoming: &mut Incoming) -> Message {
    loop {
        match tokio::time::timeout(WAIT, incoming.next_event()).await {
            Ok(Some(Event::Message(message))) => return message,
            Ok(Some(Event::Error { .. } | Event::Receipt(_))) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

async fn push(api: &ApiClient, body: Value) -> u64 {
    let (status, answer) = api.post("/v1/push", &body).await;
    assert_eq!(status, 202, "{answer}");
    answer["push_id"].as_u64().expect("push_id")
}

async fn stats(api: &ApiClient, push_id: u64) -> Value {
    let (status, answer) = api.get(&format!("/v1/push/{push_id}")).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Waits until the push's statistics satisfy `done`, returns them.
async fn stats_when(api: &ApiClient, push_id: u64, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            last = stats(api, push_id).await;
            if done(&last) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "statistics never got there: {last}");
    last
}

fn states(stats: &Value) -> std::collections::BTreeMap<String, String> {
    stats["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| {
            (
                r["uid"].as_str().unwrap().to_owned(),
                r["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// TEXT content with a business msgtype (7): the SDK shows the exact wire triple.
fn order_text() -> Content {
    Content::from_parts(
        longlink_proto::ContentType::Text as i32,
        7,
        bytes::Bytes::from_static(b"order 42 is near you"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_to_1000_users_reports_exact_statistics() {
    let server = TestServer::start().await;
    let api = server.api();
    let uid = |i: usize| format!("driver-{i:04}");

    // 300 online: 200 take (and so ack) the message, 100 receive it but never ack.
    let mut readers = Vec::new();
    for i in 0..300 {
        let (client, incoming) = if i < 200 {
            server.client(130, &uid(i), "phone").await
        } else {
            server.client_without_auto_ack(130, &uid(i), "phone").await
        };
        readers.push((client, incoming));
    }
    let uids: Vec<String> = (0..1000).map(uid).collect();
    let push_id = push(
        &api,
        json!({"appcode": 130, "uids": uids, "msgtype": 7, "content": "order 42 is near you",
               "from": "order-service"}),
    )
    .await;

    for (i, (_client, incoming)) in readers.iter_mut().enumerate() {
        let message = next_message(incoming).await;
        assert_eq!(message.kind, MsgKind::S2c, "user {i}");
        assert_eq!(message.from, UserRef::new(130, "order-service"));
        assert_eq!(message.to, UserRef::new(130, uid(i)));
        assert_eq!(message.content, order_text());
    }
    let done = stats_when(&api, push_id, |s| {
        s["done"] == true && s["written"] == 300 && s["acked"] == 200
    })
    .await;
    assert_eq!(done["targets"], 1000);
    assert_eq!(done["online"], 300);
    assert_eq!(done["stored_offline"], 700);
    assert_eq!(done["expired"], 0);
    assert_eq!(done["failed"], 0);
    assert_eq!(done["stale_sessions"], 0);
    assert_eq!(done["appcode"], 130);
    assert_eq!(done["msgtype"], 7);
    let by_uid = states(&done);
    assert_eq!(by_uid.len(), 1000);
    for i in 0..1000 {
        let expected = match i {
            0..200 => "acked",
            200..300 => "written",
            _ => "stored_offline",
        };
        assert_eq!(by_uid[&uid(i)], expected, "{}", uid(i));
    }

    // An offline target logs in: the SDK pulls the push, takes it and so acks it.
    let (_late, mut late_in) = server.client(130, &uid(500), "phone").await;
    let message = next_message(&mut late_in).await;
    assert_eq!(message.kind, MsgKind::S2c);
    assert_eq!(message.content, order_text());
    let after = stats_when(&api, push_id, |s| s["acked"] == 201).await;
    assert_eq!(states(&after)[&uid(500)], "acked");
    assert_eq!(
        after["stored_offline"], 700,
        "counters count milestones, not moves"
    );

    // The per-(appcode, msgtype) counters add up the same way.
    let (status, counters) = api.get("/v1/stats/delivery?appcode=130").await;
    assert_eq!(status, 200, "{counters}");
    let row = counters["counters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["msgtype"] == 7)
        .cloned()
        .expect("a row for msgtype 7");
    assert_eq!(row["pushes"], 1);
    assert_eq!(row["targets"], 1000);
    assert_eq!(row["acked"], 201);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broadcast_reaches_every_online_user_of_the_appcode_once() {
    let server = TestServer::start().await;
    let api = server.api();
    let mut drivers = Vec::new();
    for i in 0..60 {
        drivers.push(server.client(130, &format!("d{i}"), "phone").await);
    }
    // A second device of one driver gets its own copy; other appcodes get nothing.
    let mut tablet = server.client(130, "d0", "tablet").await;
    let (_customer, mut customer_in) = server.client(129, "c1", "phone").await;

    let first = push(
        &api,
        json!({"appcode": 130, "all": true, "content": "surge pricing on", "persist": false}),
    )
    .await;
    let second = push(
        &api,
        json!({"appcode": 130, "all": true, "content": "surge pricing off", "persist": false}),
    )
    .await;
    // The msgid is known once the push is stored.
    let first_msgid = stats_when(&api, first, |s| s["msgid"] != "0").await["msgid"].clone();
    for (_client, incoming) in drivers.iter_mut().chain(std::iter::once(&mut tablet)) {
        // Exactly the two broadcasts, in order: no duplicate of the first in between.
        let a = next_message(incoming).await;
        let b = next_message(incoming).await;
        assert_eq!(a.content, Content::text("surge pricing on"));
        assert_eq!(a.msgid.to_string(), first_msgid.as_str().unwrap());
        assert_eq!(b.content, Content::text("surge pricing off"));
    }
    let done = stats_when(&api, first, |s| s["done"] == true && s["written"] == 60).await;
    assert_eq!(done["targets"], 60, "users, not sessions");
    assert_eq!(done["online"], 60);
    assert_eq!(done["stored_offline"], 0);
    stats_when(&api, second, |s| s["done"] == true && s["written"] == 60).await;

    // The customer app saw neither broadcast: the first message it gets is this one.
    push(
        &api,
        json!({"appcode": 129, "uids": ["c1"], "content": "marker"}),
    )
    .await;
    assert_eq!(
        next_message(&mut customer_in).await.content,
        Content::text("marker")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn online_only_pushes_expire_or_wait_for_a_login_within_their_ttl() {
    let server = TestServer::start().await;
    let api = server.api();

    // No TTL: an offline target is expired at once and never gets it.
    let gone = push(
        &api,
        json!({"appcode": 130, "uids": ["away"], "content": "offer 1", "persist": false}),
    )
    .await;
    let s = stats_when(&api, gone, |s| s["done"] == true).await;
    assert_eq!(s["expired"], 1);
    assert_eq!(s["stored_offline"], 0);

    // A TTL: the target logs in before it ends and gets the offer.
    let held = push(
        &api,
        json!({"appcode": 130, "uids": ["away"], "content": "offer 2", "persist": false,
               "ttl_secs": 600}),
    )
    .await;
    stats_when(&api, held, |s| s["done"] == true).await;
    let (_away, mut away_in) = server.client(130, "away", "phone").await;
    let message = next_message(&mut away_in).await;
    assert_eq!(message.content, Content::text("offer 2"), "offer 1 expired");
    let s = stats_when(&api, held, |s| s["acked"] == 1).await;
    assert_eq!(s["online"], 1);
    assert_eq!(s["expired"], 0);

    // A short TTL runs out for a target that never comes.
    let short = push(
        &api,
        json!({"appcode": 130, "uids": ["never"], "content": "offer 3", "persist": false,
               "ttl_secs": 1}),
    )
    .await;
    let s = stats_when(&api, short, |s| s["expired"] == 1).await;
    assert_eq!(states(&s)["never"], "expired");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_session_is_cleared_and_the_user_follows_the_offline_path() {
    let server = TestServer::start().await;
    let api = server.api();
    // Presence lists a session the gate does not have (its gate lost it without telling).
    server
        .server()
        .presence()
        .register(
            longlink_presence::SessionEntry {
                appcode: 129,
                uid: "ghost".into(),
                device_class: String::new(),
                epoch: 0,
                device_id: "phone".into(),
                gate_id: "gate-1".into(),
                session_id: 987_654_321,
                since_ms: 1,
            },
            &longlink_presence::LoginRule::default(),
        )
        .await
        .unwrap();
    let (_, before) = api.get("/v1/presence/129/ghost").await;
    assert_eq!(before["online"], true, "{before}");

    let push_id = push(
        &api,
        json!({"appcode": 129, "uids": ["ghost"], "content": "hi"}),
    )
    .await;
    let s = stats_when(&api, push_id, |s| s["done"] == true).await;
    assert_eq!(s["stale_sessions"], 1);
    assert_eq!(s["online"], 0);
    assert_eq!(s["stored_offline"], 1);
    let (_, after) = api.get("/v1/presence/129/ghost").await;
    assert_eq!(after["online"], false, "{after}");

    // The message waits in the inbox: the user gets it at the next login.
    let (_ghost, mut ghost_in) = server.client(129, "ghost", "phone").await;
    assert_eq!(
        next_message(&mut ghost_in).await.content,
        Content::text("hi")
    );
    server.stop().await;
}

#[tokio::test]
async fn presence_shows_sessions_devices_and_counts() {
    let server = TestServer::start().await;
    let api = server.api();
    let _phone = server.client(129, "alice", "phone").await;
    let _web = server.client(129, "alice", "web").await;
    let _bob = server.client(129, "bob", "phone").await;

    let (status, alice) = api.get("/v1/presence/129/alice").await;
    assert_eq!(status, 200, "{alice}");
    assert_eq!(alice["online"], true);
    let mut devices: Vec<&str> = alice["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["gate"], "gate-1");
            assert!(s["since_ms"].as_u64().unwrap() > 0);
            s["device"].as_str().unwrap()
        })
        .collect();
    devices.sort_unstable();
    assert_eq!(devices, vec!["phone", "web"]);

    let (status, batch) = api
        .post(
            "/v1/presence/query",
            &json!({"appcode": 129, "uids": ["alice", "bob", "carol"]}),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    let online: Vec<bool> = batch["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["online"].as_bool().unwrap())
        .collect();
    assert_eq!(online, vec![true, true, false]);

    let (status, counts) = api.get("/v1/presence/129").await;
    assert_eq!(status, 200, "{counts}");
    assert_eq!(counts["online_users"], 2);
    assert_eq!(counts["sessions"], 3);
    server.stop().await;
}

#[tokio::test]
async fn api_keys_are_scoped_to_appcodes_and_bad_requests_get_clear_4xx() {
    let server = TestServer::start_with(|config| {
        config
            .api_keys
            .push(longlink_server::config::ApiKeySection {
                name: "customers-only".into(),
                key: "customer-key-0123456789".into(),
                appcodes: vec![129],
            });
    })
    .await;
    let dev = server.api();
    let customers = dev.with_key(Some("customer-key-0123456789"));

    let code = |answer: &Value| answer["error"]["code"].as_str().unwrap_or("").to_owned();
    // Missing and unknown keys.
    let (status, answer) = dev.with_key(None).get("/v1/presence/129/a").await;
    assert_eq!((status, code(&answer).as_str()), (401, "unauthenticated"));
    let (status, answer) = dev
        .with_key(Some("nope-nope-nope-nope"))
        .get("/v1/presence/129/a")
        .await;
    assert_eq!((status, code(&answer).as_str()), (401, "unauthenticated"));

    // A key for 129 cannot push to, read presence of, or consume from 130.
    let (status, answer) = customers
        .post(
            "/v1/push",
            &json!({"appcode": 130, "uids": ["d1"], "content": "x"}),
        )
        .await;
    assert_eq!((status, code(&answer).as_str()), (403, "permission_denied"));
    let (status, answer) = customers.get("/v1/presence/130/d1").await;
    assert_eq!((status, code(&answer).as_str()), (403, "permission_denied"));
    let (status, answer) = customers
        .get("/v1/consume?appcode=130&msgtype=1&wait_secs=0")
        .await;
    assert_eq!((status, code(&answer).as_str()), (403, "permission_denied"));
    // Nor read the statistics of a 130 push.
    let push_id = push(
        &dev,
        json!({"appcode": 130, "uids": ["d1"], "content": "x"}),
    )
    .await;
    let (status, _) = customers.get(&format!("/v1/push/{push_id}")).await;
    assert!(status == 403 || status == 404, "got {status}");
    // Its own appcode works.
    push(
        &customers,
        json!({"appcode": 129, "uids": ["c1"], "content": "x"}),
    )
    .await;

    // Bad input.
    let (status, answer) = dev
        .post_raw("/v1/push", "application/json", b"{not json".to_vec())
        .await;
    assert_eq!((status, code(&answer).as_str()), (400, "invalid_argument"));
    let (status, answer) = dev
        .post(
            "/v1/push",
            &json!({"appcode": 129, "uids": ["a"], "content": "x", "colour": "red"}),
        )
        .await;
    assert_eq!((status, code(&answer).as_str()), (400, "invalid_argument"));
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{answer}"
    );
    let (status, answer) = dev
        .post(
            "/v1/push",
            &json!({"appcode": 129, "content": "no targets"}),
        )
        .await;
    assert_eq!((status, code(&answer).as_str()), (400, "invalid_argument"));
    let (status, answer) = dev.post_raw("/v1/push", "text/plain", b"{}".to_vec()).await;
    assert_eq!(
        (status, code(&answer).as_str()),
        (415, "unsupported_media_type")
    );
    let huge = vec![b' '; 5 * 1024 * 1024];
    let (status, answer) = dev.post_raw("/v1/push", "application/json", huge).await;
    assert_eq!((status, code(&answer).as_str()), (413, "payload_too_large"));
    let (status, answer) = dev
        .post(
            "/v1/push",
            &json!({"appcode": 129, "uids": ["a"], "content": "x".repeat(70_000)}),
        )
        .await;
    assert_eq!((status, code(&answer).as_str()), (400, "invalid_argument"));
    let (status, answer) = dev.get("/v1/push/12345").await;
    assert_eq!((status, code(&answer).as_str()), (404, "not_found"));
    let (status, answer) = dev
        .post(
            "/v1/push",
            &json!({"appcode": 999, "uids": ["a"], "content": "x"}),
        )
        .await;
    assert!(
        status == 403 || status == 400,
        "unknown appcode: {status} {answer}"
    );
    server.stop().await;
}
