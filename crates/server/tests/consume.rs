//! End to end: apps send C2S over real sockets; a test business server consumes the topics
//! through every path — HTTP long-poll, SSE, the gRPC stream and a webhook — and sees every
//! message at least once with the right fields, also after it failed to ack.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use longlink_server::config::{RouteSection, UnroutedPolicy, WebhookSection};
use longlink_testkit::{ApiClient, DEV_API_KEY, TestServer, WAIT};
use serde_json::{Value, json};

/// Long-polls `path` until `want` messages arrived (each id once, the latest copy kept).
async fn consume_until(api: &ApiClient, path: &str, want: usize) -> Vec<Value> {
    let mut got: std::collections::BTreeMap<u64, Value> = Default::default();
    let reached = tokio::time::timeout(WAIT * 2, async {
        while got.len() < want {
            let (status, answer) = api.get(path).await;
            assert_eq!(status, 200, "{answer}");
            for m in answer["messages"].as_array().unwrap() {
                got.insert(m["id"].as_u64().unwrap(), m.clone());
            }
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "only {} of {want} messages came",
        got.len()
    );
    got.into_values().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_poll_delivers_every_field_and_redelivers_until_acked() {
    let server = TestServer::start().await;
    let api = server.api();
    let (driver, _in) = server.client(130, "driver-7", "phone").await;
    for i in 0..3 {
        let topic = driver
            .c2s(1, Bytes::from(format!("31.2,121.{i}")), &format!("gps-{i}"))
            .await
            .unwrap();
        assert_eq!(topic, "c2s.130.1");
    }
    let path = "/v1/consume?appcode=130&msgtype=1&max=10&wait_secs=10&lease_secs=1";
    let first = consume_until(&api, path, 3).await;
    for (i, m) in first.iter().enumerate() {
        assert_eq!(m["topic"], "c2s.130.1");
        assert_eq!(m["appcode"], 130);
        assert_eq!(m["uid"], "driver-7");
        assert_eq!(m["device"], "phone");
        assert_eq!(m["msgtype"], 1);
        assert_eq!(m["client_msg_id"], format!("gps-{i}"));
        assert_eq!(m["body"], format!("31.2,121.{i}"));
        assert_eq!(m["attempt"], 1);
        let log_id: u64 = m["log_id"]
            .as_str()
            .unwrap()
            .parse()
            .expect("decimal log_id");
        assert_ne!(log_id, 0);
    }
    // Not acked: after the lease the same messages come again, as attempt 2.
    let again = consume_until(&api, path, 3).await;
    let ids = |ms: &[Value]| {
        ms.iter()
            .map(|m| m["id"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&again), ids(&first));
    assert!(again.iter().all(|m| m["attempt"].as_u64().unwrap() >= 2));

    let (status, acked) = api
        .post(
            "/v1/consume/ack",
            &json!({"topic": "c2s.130.1", "ids": ids(&again)}),
        )
        .await;
    assert_eq!(status, 200, "{acked}");
    assert_eq!(acked["acked"], 3);
    let (status, topics) = api.get("/v1/topics").await;
    assert_eq!(status, 200);
    let topic = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == "c2s.130.1")
        .cloned()
        .expect("the topic is listed");
    assert_eq!(
        (topic["ready"].clone(), topic["in_flight"].clone()),
        (json!(0), json!(0))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_c2s_acked_to_the_client_survives_a_restart_before_anyone_consumes() {
    let mut server = TestServer::start().await;
    let (driver, _in) = server.client(130, "driver-8", "phone").await;
    driver
        .c2s(2, Bytes::from_static(b"arrived"), "evt-1")
        .await
        .unwrap();
    driver.close().await;
    server.restart().await;
    let got = consume_until(&server.api(), "/v1/consume?topic=c2s.130.2&wait_secs=10", 1).await;
    assert_eq!(got[0]["body"], "arrived");
    assert_eq!(got[0]["client_msg_id"], "evt-1");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sse_streams_messages_as_they_are_sent() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let mut response = http
        .get(format!(
            "http://{}/v1/consume/sse?appcode=130&msgtype=5&max_in_flight=10",
            server.api_addr()
        ))
        .bearer_auth(DEV_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (driver, _in) = server.client(130, "driver-9", "phone").await;
    driver
        .c2s(5, Bytes::from_static(b"hello over sse"), "sse-1")
        .await
        .unwrap();
    let mut text = String::new();
    let event = tokio::time::timeout(WAIT, async {
        loop {
            let chunk = response.chunk().await.unwrap().expect("stream open");
            text.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(start) = text.find("event: message") {
                let data = text[start..]
                    .lines()
                    .find_map(|l| l.strip_prefix("data:"))
                    .map(str::trim);
                if let Some(data) = data
                    && let Ok(value) = serde_json::from_str::<Value>(data)
                {
                    return value;
                }
            }
        }
    })
    .await
    .expect("an SSE message event");
    assert_eq!(event["uid"], "driver-9");
    assert_eq!(event["body"], "hello over sse");
    let (status, acked) = server
        .api()
        .post(
            "/v1/consume/ack",
            &json!({"topic": "c2s.130.5", "ids": [event["id"]]}),
        )
        .await;
    assert_eq!((status, acked["acked"].clone()), (200, json!(1)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_grpc_stream_delivers_and_ack_removes() {
    use longlink_api::pb;
    let server = TestServer::start().await;
    let mut grpc = pb::api_client::ApiClient::connect(format!("http://{}", server.grpc_addr()))
        .await
        .unwrap();
    fn with_key<T>(body: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(body);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {DEV_API_KEY}").parse().unwrap(),
        );
        request
    }
    let selector = pb::TopicSelector {
        topic: None,
        appcode: Some(130),
        msgtype: Some(6),
    };
    let mut stream = grpc
        .consume(with_key(pb::ConsumeRequest {
            topic: Some(selector.clone()),
            max_in_flight: 10,
            lease_secs: 30,
        }))
        .await
        .unwrap()
        .into_inner();
    let (driver, _in) = server.client(130, "driver-10", "phone").await;
    driver
        .c2s(6, Bytes::from_static(b"grpc body"), "g-1")
        .await
        .unwrap();
    let message = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a message within the deadline")
        .unwrap()
        .expect("stream open");
    assert_eq!(message.uid, "driver-10");
    assert_eq!(message.device, "phone");
    assert_eq!(message.msgtype, 6);
    assert_eq!(message.client_msg_id, "g-1");
    assert_eq!(&message.body[..], b"grpc body");
    assert_ne!(message.log_id, 0);
    let acked = grpc
        .ack(with_key(pb::AckRequest {
            topic: Some(selector),
            ids: vec![message.id],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.acked, 1);

    // Without a key: UNAUTHENTICATED.
    let refused = grpc
        .online_count(tonic::Request::new(pb::OnlineCountRequest { appcode: 130 }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    server.stop().await;
}

#[derive(Clone, Default)]
struct Hook {
    /// (delivery id, attempt header, body) of every call.
    calls: Arc<Mutex<Vec<(u64, u32, Value)>>>,
    /// Calls answered 500 before the first 200 (u32::MAX: never succeed).
    failures: u32,
}

async fn hook_receiver(hook: Hook) -> String {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    async fn receive(
        State(hook): State<Hook>,
        headers: HeaderMap,
        axum::Json(body): axum::Json<Value>,
    ) -> StatusCode {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mut calls = hook.calls.lock().unwrap();
        calls.push((
            header("x-longlink-delivery"),
            u32::try_from(header("x-longlink-attempt")).unwrap_or(0),
            body,
        ));
        if calls.len() as u64 > u64::from(hook.failures) {
            StatusCode::OK
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(hook);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn webhook(topic: &str, url: String) -> WebhookSection {
    WebhookSection {
        topic: topic.into(),
        url,
        timeout_secs: 5,
        backoff_base_ms: 20,
        backoff_max_ms: 100,
        max_in_flight: 4,
    }
}

async fn topic_counts(api: &ApiClient, topic: &str) -> Value {
    let (_, topics) = api.get("/v1/topics").await;
    topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic"] == topic)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_is_retried_with_backoff_then_dead_lettered_and_replayable() {
    let flaky = Hook {
        failures: 2,
        ..Hook::default()
    };
    let broken = Hook {
        failures: u32::MAX,
        ..Hook::default()
    };
    let flaky_url = hook_receiver(flaky.clone()).await;
    let broken_url = hook_receiver(broken.clone()).await;
    let server = TestServer::start_with(|config| {
        config.bus.max_attempts = 3;
        config.webhooks = vec![
            webhook("c2s.130.3", flaky_url),
            webhook("c2s.130.4", broken_url),
        ];
    })
    .await;
    let api = server.api();
    let (driver, _in) = server.client(130, "driver-11", "phone").await;
    driver
        .c2s(3, Bytes::from_static(b"order accepted"), "w-1")
        .await
        .unwrap();
    driver
        .c2s(4, Bytes::from_static(b"nobody listens"), "w-2")
        .await
        .unwrap();

    // Flaky: two 500s, then a 200 — three calls for the same delivery, then acked.
    let settled = tokio::time::timeout(WAIT, async {
        loop {
            let counts = topic_counts(&api, "c2s.130.3").await;
            if flaky.calls.lock().unwrap().len() >= 3
                && counts["ready"] == 0
                && counts["in_flight"] == 0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(settled.is_ok(), "flaky webhook never settled");
    let calls = flaky.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "acked after the first 200: {calls:?}");
    assert!(calls.iter().all(|(id, _, _)| *id == calls[0].0));
    assert_eq!(
        calls
            .iter()
            .map(|(_, attempt, _)| *attempt)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(calls[2].2["body"], "order accepted");
    assert_eq!(calls[2].2["uid"], "driver-11");

    // Broken: after max_attempts (3) calls the message is dead-lettered.
    let dead = tokio::time::timeout(WAIT, async {
        loop {
            let (_, listed) = api.get("/v1/deadletter?topic=c2s.130.4").await;
            if listed["messages"].as_array().is_some_and(|m| !m.is_empty()) {
                return listed;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the message is dead-lettered");
    assert_eq!(dead["messages"][0]["body"], "nobody listens");
    assert_eq!(broken.calls.lock().unwrap().len(), 3);

    // Replay puts it back: the webhook is called again, from attempt 1.
    let (status, replayed) = api
        .post(
            "/v1/deadletter/replay",
            &json!({"topic": "c2s.130.4", "ids": []}),
        )
        .await;
    assert_eq!((status, replayed["replayed"].clone()), (200, json!(1)));
    let again = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(call) = broken.calls.lock().unwrap().get(3).cloned() {
                return call;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the replayed message is delivered again");
    assert_eq!(again.1, 1);
    server.stop().await;
}

#[tokio::test]
async fn the_routing_table_names_topics_and_can_refuse_unrouted_pairs() {
    let server = TestServer::start_with(|config| {
        config.routes = vec![RouteSection {
            appcode: 130,
            msgtype: 1,
            topic: "driver-gps".into(),
        }];
        config.bus.unrouted = UnroutedPolicy::Refuse;
    })
    .await;
    let (driver, _in) = server.client(130, "driver-12", "phone").await;
    let topic = driver
        .c2s(1, Bytes::from_static(b"31,121"), "r-1")
        .await
        .unwrap();
    assert_eq!(topic, "driver-gps");
    let refused = driver
        .c2s(9, Bytes::from_static(b"?"), "r-2")
        .await
        .unwrap_err();
    assert!(
        refused.to_string().to_lowercase().contains("route"),
        "{refused}"
    );
    let got = consume_until(
        &server.api(),
        "/v1/consume?appcode=130&msgtype=1&wait_secs=10",
        1,
    )
    .await;
    assert_eq!(got[0]["topic"], "driver-gps");
    server.stop().await;
}
