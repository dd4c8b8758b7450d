//! The gRPC surface against a real `serve()` (see `common`) with the generated tonic client:
//! auth and error codes, push and its statistics, presence, and a `Consume` stream acked
//! through `Ack`.

mod common;

use common::{BIG_MSGID, DEADLINE, FIRST_PUSH_ID, Fixture};
use longlink_api::pb;
use longlink_api::pb::api_client::ApiClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

async fn client(api: &Fixture) -> ApiClient<Channel> {
    ApiClient::connect(format!("http://{}", api.grpc))
        .await
        .expect("gRPC connects")
}

/// `message` with `key` in the `authorization` metadata.
fn with_key<T>(key: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

fn topic(name: &str) -> Option<pb::TopicSelector> {
    Some(pb::TopicSelector {
        topic: Some(name.to_owned()),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_is_authorised_and_reports_statistics() {
    let api = Fixture::start(5).await;
    let mut grpc = client(&api).await;
    let push = pb::PushRequest {
        appcode: 129,
        uids: vec!["alice".into(), "bob".into()],
        msgtype: 7,
        content: "on its way".into(),
        ..Default::default()
    };

    let err = grpc.push(Request::new(push.clone())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = grpc.push(with_key("k130", push.clone())).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.metadata().get("x-longlink-error").unwrap(),
        "permission_denied"
    );
    let err = grpc
        .push(with_key(
            "kall",
            pb::PushRequest {
                all: true,
                ..push.clone()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "uids and all");
    let err = grpc
        .push(with_key(
            "kall",
            pb::PushRequest {
                appcode: 131,
                ..push.clone()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "overloaded");

    // x-api-key metadata works too.
    let mut request = Request::new(push);
    request
        .metadata_mut()
        .insert("x-api-key", "k129".parse().unwrap());
    let reply = grpc.push(request).await.unwrap().into_inner();
    let sent = &api.push.requests()[0];
    assert_ne!(sent.log_id, 0, "a push without log_id gets one");
    assert_eq!(
        reply,
        pb::PushReply {
            push_id: FIRST_PUSH_ID,
            targets: 2,
            log_id: sent.log_id,
        }
    );
    assert!(sent.persist, "persist defaults to true");
    assert_eq!(sent.from, "system");
    assert_eq!(sent.content_type, longlink_proto::ContentType::Text as i32);

    let stats = grpc
        .push_stats(with_key(
            "k129",
            pb::PushStatsRequest {
                push_id: FIRST_PUSH_ID,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.msgid, BIG_MSGID);
    assert!(stats.done);
    assert_eq!(stats.delivery_rate, 0.5);
    assert_eq!(stats.recipients[0].state(), pb::RecipientState::Acked);
    assert_eq!(
        stats.recipients[1].state(),
        pb::RecipientState::StoredOffline
    );
    let err = grpc
        .push_stats(with_key(
            "k130",
            pb::PushStatsRequest {
                push_id: FIRST_PUSH_ID,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "another appcode's push looks unknown"
    );

    let counters = grpc
        .delivery_counters(with_key(
            "k129",
            pb::DeliveryCountersRequest { appcode: None },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counters.counters.len(), 1);
    assert_eq!(counters.counters[0].targets, 2);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_calls_mirror_http() {
    let api = Fixture::start(5).await;
    api.login(129, "alice", "phone", 42).await;
    let mut grpc = client(&api).await;
    let alice = grpc
        .presence(with_key(
            "k129",
            pb::PresenceRequest {
                appcode: 129,
                uid: "alice".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(alice.online);
    assert_eq!(alice.sessions[0].session_id, 42);
    assert_eq!(alice.sessions[0].gate, "gate-1");
    let users = grpc
        .presence_query(with_key(
            "k129",
            pb::PresenceQueryRequest {
                appcode: 129,
                uids: vec!["bob".into(), "alice".into()],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!((users[0].online, users[1].online), (false, true));
    let counts = grpc
        .online_count(with_key("k129", pb::OnlineCountRequest { appcode: 129 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((counts.online_users, counts.sessions), (1, 1));
    let err = grpc
        .presence_query(with_key(
            "k129",
            pb::PresenceQueryRequest {
                appcode: 129,
                uids: vec![],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = grpc
        .online_count(with_key("k129", pb::OnlineCountRequest { appcode: 130 }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_stream_delivers_and_ack_removes() {
    let api = Fixture::start(5).await;
    let mut grpc = client(&api).await;
    let err = grpc
        .consume(with_key(
            "k129",
            pb::ConsumeRequest {
                topic: topic("c2s.130.1"),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = grpc
        .consume(with_key("k130", pb::ConsumeRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "no topic");

    let mut stream = grpc
        .consume(with_key(
            "k130",
            pb::ConsumeRequest {
                topic: Some(pb::TopicSelector {
                    appcode: Some(130),
                    msgtype: Some(1),
                    topic: None,
                }),
                max_in_flight: 10,
                lease_secs: 30,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    api.publish("c2s.130.1", 130, 1, "31.2,121.5").await;
    let message = match tokio::time::timeout(DEADLINE, stream.message()).await {
        Ok(m) => m,
        Err(_) => {
            use longlink_bus::TopicQueue as _;
            panic!("no message in time; topics: {:?}", api.queue.topics().await);
        }
    }
    .unwrap()
    .expect("the stream is open");
    assert_eq!(message.topic, "c2s.130.1");
    assert_eq!(&message.body[..], b"31.2,121.5");
    assert_eq!(message.attempt, 1);
    assert_eq!(message.log_id, 0x075b_cd15);

    let acked = grpc
        .ack(with_key(
            "k130",
            pb::AckRequest {
                topic: topic("c2s.130.1"),
                ids: vec![message.id],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.acked, 1);
    let topics = grpc
        .topics(with_key("k130", pb::TopicsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .topics;
    assert_eq!(
        topics,
        vec![pb::TopicStats {
            topic: "c2s.130.1".into(),
            ready: 0,
            in_flight: 0,
            dead: 0
        }]
    );
    let dead = grpc
        .dead_letters(with_key(
            "k130",
            pb::DeadLettersRequest {
                topic: topic("c2s.130.1"),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(dead.messages.is_empty());

    // Shutdown ends the open stream and serve() returns (bounded inside stop()).
    let end = tokio::spawn(async move { stream.message().await });
    api.stop().await;
    let end = tokio::time::timeout(DEADLINE, end)
        .await
        .expect("the stream ends")
        .unwrap();
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
}
