//! Offline push notifications end to end (issue 12): the real server, real clients over TCP,
//! the real API, and local HTTPS stand-ins for the providers (`longlink-push-fakes`: APNs over
//! HTTP/2 only, FCM with its OAuth token endpoint, a vendor endpoint) that record exactly what
//! longlink sent. No fixed sleeps: every wait is for a condition, with a deadline.

use std::time::Duration;

use longlink_proto::{Cmd, Frame, wire};
use longlink_push_fakes::{FakeApns, FakeFcm, FakeHttp, Recorded, Reply, TestApnsKey};
use longlink_sdk::{Content, Event, UserRef};
use longlink_server::config::Config;
use longlink_testkit::{ApiClient, RawClient, TestServer, wait_until};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// A `[[push.http]]` provider named `vendor` posting to `fake`, with every placeholder in
/// its body so the tests can read what longlink rendered.
fn vendor(
    fake: &FakeHttp,
    dir: &std::path::Path,
) -> longlink_notify::provider::http::HttpProviderConfig {
    let ca = fake.write_ca(dir, "vendor-ca.pem").expect("ca file");
    longlink_notify::provider::http::HttpProviderConfig {
        name: "vendor".to_owned(),
        url: format!("{}/push", fake.url()),
        body: r#"{"token": "{{token}}", "title": "{{title}}", "body": "{{body}}",
            "id": "{{id}}", "badge": "{{badge}}", "collapse": "{{collapse_id}}",
            "data": "{{data_json}}"}"#
            .to_owned(),
        ca_file: ca.display().to_string(),
        ..Default::default()
    }
}

/// A node with the `vendor` provider on a fresh fake endpoint (`adjust` changes the rest of
/// the config), and bob's phone registered with the token `tok-bob`.
async fn vendor_node(
    adjust: impl FnOnce(&mut Config),
) -> (tempfile::TempDir, FakeHttp, TestServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = FakeHttp::start().await.expect("fake vendor");
    let provider = vendor(&fake, dir.path());
    let server = TestServer::start_with(|c: &mut Config| {
        c.push.http = vec![provider];
        adjust(c);
    })
    .await;
    register(&server.api(), "bob", "phone", &[("vendor", "tok-bob")]).await;
    (dir, fake, server)
}

/// Registers `device` of 129:`uid` with `tokens` through the API.
async fn register(api: &ApiClient, uid: &str, device: &str, tokens: &[(&str, &str)]) {
    let tokens: Vec<_> = tokens
        .iter()
        .map(|(provider, token)| json!({"provider": provider, "token": token}))
        .collect();
    let (status, body) = api
        .put(
            &format!("/v1/devices/129/{uid}/{device}"),
            &json!({"platform": "android", "vendor": "xiaomi", "app_version": "2.1", "tokens": tokens}),
        )
        .await;
    assert_eq!(status, 200, "register: {body}");
}

/// The value of metric `name` with `labels` in the node's /metrics (0 when absent).
async fn metric(api: &ApiClient, name: &str, labels: &[(&str, &str)]) -> f64 {
    let response = reqwest::get(format!("{}/metrics", api.base()))
        .await
        .expect("metrics");
    let text = response.text().await.expect("metrics body");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map_or(0.0, |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// Waits until the outbox holds nothing and `sent` notifications went out (this process).
async fn settled(api: &ApiClient, sent: f64) {
    wait_until(WAIT, || async {
        metric(api, "longlink_notify_outbox_pending", &[]).await == 0.0
            && sent_total(api).await == sent
    })
    .await
    .unwrap_or_else(|_| panic!("outbox did not settle at {sent} sent"));
}

async fn sent_total(api: &ApiClient) -> f64 {
    let response = reqwest::get(format!("{}/metrics", api.base()))
        .await
        .expect("metrics");
    let text = response.text().await.expect("metrics body");
    text.lines()
        .filter(|l| l.starts_with("longlink_notifications_sent_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_requests(fake: &longlink_push_fakes::FakeServer, n: u64) -> Vec<Recorded> {
    fake.wait_count(n, WAIT)
        .await
        .unwrap_or_else(|got| panic!("expected {n} provider requests, got {got}"));
    fake.requests()
}

/// A string field of the vendor request's rendered JSON body.
fn field(request: &Recorded, name: &str) -> String {
    match &request.json()[name] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn data(request: &Recorded, key: &str) -> String {
    request.json()["data"][key]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_gets_one_notification_and_its_receipt_counts() {
    let (_dir, fake, server) = vendor_node(|c| {
        c.push.grace_ms = 300;
    })
    .await;
    let api = server.api();

    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    let sent = alice
        .c2c(UserRef::new(129, "bob"), Content::text("hello bob"))
        .await
        .expect("c2c");
    let requests = wait_requests(&fake, 1).await;
    settled(&api, 1.0).await;
    assert_eq!(fake.count(), 1, "one message, one device: one notification");
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(field(request, "token"), "tok-bob");
    assert_eq!(field(request, "title"), "alice");
    assert_eq!(field(request, "body"), "hello bob");
    assert_eq!(field(request, "badge"), "1", "one unread message");
    assert_eq!(data(request, "ll_msgid"), sent.msgid.to_string());
    assert_eq!(data(request, "ll_count"), "1");
    let nid: u64 = data(request, "ll_nid").parse().expect("notification id");
    assert_eq!(field(request, "id"), nid.to_string());

    // bob's app shows it and reports the receipt when it connects.
    let mut raw = RawClient::connect(server.gate_addr())
        .await
        .expect("connect");
    raw.login(129, &server.token(129, "bob"), "phone")
        .await
        .expect("login");
    raw.send(Frame::request(
        Cmd::NotificationAck,
        7,
        0,
        &wire::NotificationAck {
            ids: vec![nid, nid + 1_000_000],
        },
    ))
    .await
    .expect("send ack");
    let answer = loop {
        let frame = raw.recv().await.expect("answer");
        if frame.cmd() == Some(Cmd::NotificationAck) {
            break frame;
        }
    };
    let matched: wire::NotificationAckResponse = answer.decode_body().expect("body");
    assert_eq!(matched.matched, 1, "only bob's own notification counts");
    let (status, stats) = api.get("/v1/push-providers/stats").await;
    assert_eq!(status, 200, "{stats}");
    let vendor = &stats["providers"][0];
    assert_eq!(vendor["name"], "vendor");
    let class = &vendor["classes"][0];
    assert_eq!(class["class"], "android/xiaomi/2.1");
    assert_eq!(class["sent"], 1);
    assert_eq!(class["accepted"], 1);
    assert_eq!(class["receipts"], 1);
    assert_eq!(
        metric(
            &api,
            "longlink_notifications_receipted_total",
            &[("provider", "vendor")]
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_reconnects_within_the_grace_is_not_notified() {
    let (_dir, fake, server) = vendor_node(|c| {
        c.push.grace_ms = 4000;
    })
    .await;
    let api = server.api();
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    let sent = alice
        .c2c(UserRef::new(129, "bob"), Content::text("are you there"))
        .await
        .expect("c2c");
    // bob comes back at once: the login redelivers the message and his SDK acks it.
    let (_bob, mut bob_in) = server.client(129, "bob", "phone").await;
    loop {
        match tokio::time::timeout(WAIT, bob_in.next_event()).await {
            Ok(Some(Event::Message(message))) if message.msgid == sent.msgid => break,
            Ok(Some(_)) => {}
            other => panic!("expected the redelivered message, got {other:?}"),
        }
    }
    wait_until(WAIT, || async {
        metric(
            &api,
            "longlink_notifications_skipped_total",
            &[("reason", "acked")],
        )
        .await
            >= 1.0
            && metric(&api, "longlink_notify_outbox_pending", &[]).await == 0.0
    })
    .await
    .expect("the outbox row is skipped once the grace is over");
    assert_eq!(
        fake.count(),
        0,
        "a device that got the message is not notified"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_collapses_into_one_notification() {
    let (_dir, fake, server) = vendor_node(|c| {
        c.push.grace_ms = 2000;
    })
    .await;
    let api = server.api();
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    let mut last = 0;
    for i in 0..5 {
        last = alice
            .c2c(UserRef::new(129, "bob"), Content::text(format!("part {i}")))
            .await
            .expect("c2c")
            .msgid;
    }
    let requests = wait_requests(&fake, 1).await;
    settled(&api, 1.0).await;
    assert_eq!(fake.count(), 1, "five messages, one notification");
    let request = &requests[0];
    assert_eq!(field(request, "body"), "5 new messages");
    assert_eq!(field(request, "badge"), "5");
    assert_eq!(data(request, "ll_count"), "5");
    assert_eq!(data(request, "ll_msgid"), last.to_string());
    assert_eq!(field(request, "collapse"), "ll-129-bob-alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_gets_an_http2_request_with_a_valid_provider_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let apns = FakeApns::start().await.expect("fake apns");
    let key = TestApnsKey::generate("KEY1234567", "TEAM123456").expect("key");
    apns.verify_tokens_with(key.clone());
    let key_file = key.write_p8(dir.path()).expect("p8");
    let ca = apns.write_ca(dir.path(), "apns-ca.pem").expect("ca");
    let endpoint = apns.url();
    let server = TestServer::start_with(|c: &mut Config| {
        c.push.grace_ms = 200;
        c.push.apns.enabled = true;
        c.push.apns.key_file = key_file.display().to_string();
        c.push.apns.key_id = "KEY1234567".to_owned();
        c.push.apns.team_id = "TEAM123456".to_owned();
        c.push.apns.topic = "com.example.rider".to_owned();
        c.push.apns.endpoint = endpoint;
        c.push.apns.ca_file = ca.display().to_string();
    })
    .await;
    let api = server.api();
    register(&api, "bob", "iphone", &[("apns", "a1b2c3d4")]).await;
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    let sent = alice
        .c2c(UserRef::new(129, "bob"), Content::text("pick-up at gate 4"))
        .await
        .expect("c2c");
    let requests = wait_requests(&apns, 1).await;
    let request = &requests[0];
    assert_eq!(request.version, http::Version::HTTP_2);
    assert_eq!(request.path, "/3/device/a1b2c3d4");
    assert_eq!(request.header("apns-topic"), Some("com.example.rider"));
    assert_eq!(request.header("apns-push-type"), Some("alert"));
    assert_eq!(request.header("apns-priority"), Some("10"));
    assert_eq!(request.header("apns-collapse-id"), Some("ll-129-bob-alice"));
    let jwt = request.bearer().expect("bearer token");
    let (header, claims) = key.verify(jwt).expect("signed with the team's key");
    assert_eq!(header.kid.as_deref(), Some("KEY1234567"));
    assert_eq!(claims["iss"], "TEAM123456");
    let payload = request.json();
    assert_eq!(payload["aps"]["alert"]["title"], "alice");
    assert_eq!(payload["aps"]["alert"]["body"], "pick-up at gate 4");
    assert_eq!(payload["aps"]["badge"], 1);
    assert_eq!(payload["ll_msgid"], sent.msgid.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_fcm_reports_unregistered_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fcm = FakeFcm::start().await.expect("fake fcm");
    fcm.reply_send(Reply::fcm_error(404, "NOT_FOUND", "UNREGISTERED"));
    let account = fcm
        .account()
        .write_json(dir.path())
        .expect("service account");
    let ca = fcm.write_ca(dir.path(), "fcm-ca.pem").expect("ca");
    let endpoint = fcm.url();
    let token_uri = fcm.token_uri();
    let server = TestServer::start_with(|c: &mut Config| {
        c.push.grace_ms = 200;
        c.push.fcm.enabled = true;
        c.push.fcm.service_account_file = account.display().to_string();
        c.push.fcm.endpoint = endpoint;
        c.push.fcm.token_uri = token_uri;
        c.push.fcm.ca_file = ca.display().to_string();
    })
    .await;
    let api = server.api();
    register(&api, "bob", "pixel", &[("fcm", "fcm-token-bob")]).await;
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    alice
        .c2c(UserRef::new(129, "bob"), Content::text("hi"))
        .await
        .expect("c2c");
    wait_until(WAIT, || async {
        let (_, body) = api.get("/v1/devices/129/bob").await;
        body["devices"].as_array().is_some_and(|d| {
            d.iter()
                .all(|d| d["tokens"].as_array().is_none_or(Vec::is_empty))
        })
    })
    .await
    .expect("the dead token is removed");
    let sends = fcm.send_requests();
    assert_eq!(sends.len(), 1, "a dead token is not retried");
    assert_eq!(sends[0].json()["message"]["token"], "fcm-token-bob");
    assert_eq!(fcm.token_requests().len(), 1, "one OAuth exchange");
    assert_eq!(
        metric(
            &api,
            "longlink_notifications_failed_total",
            &[("provider", "fcm"), ("kind", "dead_token")]
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_trips_its_breaker_and_the_next_provider_delivers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let apns = FakeApns::start().await.expect("fake apns");
    apns.respond_with(Some(std::sync::Arc::new(|_| {
        Reply::apns_error(503, "ServiceUnavailable")
    })));
    let key = TestApnsKey::generate("KEY1234567", "TEAM123456").expect("key");
    let key_file = key.write_p8(dir.path()).expect("p8");
    let ca = apns.write_ca(dir.path(), "apns-ca.pem").expect("ca");
    let endpoint = apns.url();
    let fake = FakeHttp::start().await.expect("fake vendor");
    let provider = vendor(&fake, dir.path());
    let server = TestServer::start_with(|c: &mut Config| {
        c.push.grace_ms = 200;
        c.push.collapse_secs = 0;
        c.push.max_retries = 1;
        c.push.backoff_ms = 10;
        c.push.breaker_failures = 2;
        c.push.breaker_open_secs = 3600;
        c.push.apns.enabled = true;
        c.push.apns.key_file = key_file.display().to_string();
        c.push.apns.key_id = "KEY1234567".to_owned();
        c.push.apns.team_id = "TEAM123456".to_owned();
        c.push.apns.topic = "com.example.rider".to_owned();
        c.push.apns.endpoint = endpoint;
        c.push.apns.ca_file = ca.display().to_string();
        c.push.http = vec![provider];
    })
    .await;
    let api = server.api();
    // Only APNs first: its 503s (a try and a retry) open the breaker.
    register(&api, "bob", "phone", &[("apns", "a1b2c3d4")]).await;
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    alice
        .c2c(UserRef::new(129, "bob"), Content::text("first"))
        .await
        .expect("c2c");
    wait_requests(&apns, 2).await;
    wait_until(WAIT, || async {
        let (_, stats) = api.get("/v1/push-providers/stats").await;
        stats["providers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == "apns" && p["breaker"] == "open")
    })
    .await
    .expect("the breaker opens after two failures in a row");
    // Now the device also has a vendor token: the open breaker sends everything there.
    register(
        &api,
        "bob",
        "phone",
        &[("apns", "a1b2c3d4"), ("vendor", "tok-bob")],
    )
    .await;
    let apns_before = apns.count();
    alice
        .c2c(UserRef::new(129, "bob"), Content::text("second"))
        .await
        .expect("c2c");
    let requests = wait_requests(&fake, 1).await;
    assert_eq!(field(&requests[0], "body"), "second");
    assert_eq!(field(&requests[0], "token"), "tok-bob");
    settled(&api, 1.0).await;
    assert_eq!(apns.count(), apns_before, "an open breaker sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_outbox_loses_nothing_and_sends_nothing_twice() {
    let (_dir, fake, mut server) = vendor_node(|c| {
        c.push.grace_ms = 5000;
        c.push.collapse_secs = 0;
    })
    .await;
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    let first = alice
        .c2c(
            UserRef::new(129, "bob"),
            Content::text("before the restart"),
        )
        .await
        .expect("c2c")
        .msgid;
    let api = server.api();
    wait_until(WAIT, || async {
        metric(&api, "longlink_notify_outbox_pending", &[]).await == 1.0
    })
    .await
    .expect("the notification waits in the outbox");
    alice.close().await;
    server.restart().await;
    // The restarted process sends what the outbox held.
    let api = server.api();
    let requests = wait_requests(&fake, 1).await;
    assert_eq!(data(&requests[0], "ll_msgid"), first.to_string());
    settled(&api, 1.0).await;

    // Once sent, never again: after another restart only the new message is notified.
    server.restart().await;
    let api = server.api();
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    let second = alice
        .c2c(UserRef::new(129, "bob"), Content::text("after the restart"))
        .await
        .expect("c2c")
        .msgid;
    let requests = wait_requests(&fake, 2).await;
    settled(&api, 1.0).await;
    assert_eq!(fake.count(), 2);
    let msgids: Vec<String> = requests.iter().map(|r| data(r, "ll_msgid")).collect();
    assert_eq!(msgids, [first.to_string(), second.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persisted_s2c_push_notifies_and_an_online_only_one_never_does() {
    let (_dir, fake, server) = vendor_node(|c| {
        c.push.grace_ms = 300;
    })
    .await;
    let api = server.api();
    let (status, body) = api
        .post(
            "/v1/push",
            &json!({"appcode": 129, "uids": ["bob"], "msgtype": 3, "content": "online only",
                    "persist": false, "ttl_secs": 60}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = api
        .post(
            "/v1/push",
            &json!({"appcode": 129, "uids": ["bob"], "msgtype": 3, "content": "your order shipped",
                    "from": "order-service"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let requests = wait_requests(&fake, 1).await;
    settled(&api, 1.0).await;
    assert_eq!(fake.count(), 1, "only the persisted push notifies");
    assert_eq!(field(&requests[0], "body"), "your order shipped");
    assert_eq!(field(&requests[0], "title"), "order-service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_session_whose_link_is_gone_is_notified_after_the_grace() {
    let (_dir, fake, server) = vendor_node(|c| {
        c.push.grace_ms = 300;
        // The hold outlasts the test: bob's session stays in presence without a link.
        c.gate.hold_secs = 600;
    })
    .await;
    let api = server.api();
    // bob's app logs in able to RESUME, then its link dies (no LOGOUT): the gate holds it.
    let mut raw = RawClient::connect(server.gate_addr())
        .await
        .expect("connect");
    raw.send(Frame::request(
        Cmd::Login,
        1,
        0,
        &wire::LoginRequest {
            token: server.token(129, "bob"),
            appcode: 129,
            device_id: "phone".to_owned(),
            resume_capable: true,
            ..Default::default()
        },
    ))
    .await
    .expect("login");
    let login: wire::LoginResponse = raw
        .recv()
        .await
        .expect("answer")
        .decode_body()
        .expect("body");
    assert!(!login.resume_token.is_empty(), "the server offers RESUME");
    drop(raw);
    // Once the gate saw the link go (no connection left), a push finds the session held.
    wait_until(WAIT, || async {
        metric(&api, "longlink_gate_connections", &[("gate", "gate-1")]).await == 0.0
    })
    .await
    .expect("the gate notices the dead link");
    let (_, presence) = api.get("/v1/presence/129/bob").await;
    assert!(
        presence.to_string().contains("phone"),
        "held, still present: {presence}"
    );

    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    let sent = alice
        .c2c(UserRef::new(129, "bob"), Content::text("still there?"))
        .await
        .expect("c2c");
    let requests = wait_requests(&fake, 1).await;
    assert_eq!(data(&requests[0], "ll_msgid"), sent.msgid.to_string());
    assert_eq!(field(&requests[0], "token"), "tok-bob");
}
