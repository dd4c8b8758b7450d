//! Devices' push tokens and the push providers' statistics (issue 12) through both surfaces of
//! a real `serve()` (see `common`; the notifier is `MemoryNotifications`): what a business
//! server relies on — a PUT replaces the registration and reads back alike over HTTP and
//! gRPC, a token added keeps the others, removal by provider or whole, keys scoped to their
//! appcodes, the notifier's refusals as the spec's errors, the statistics by provider and
//! class, and the routes in `/openapi.json`.

mod common;

use common::{Fixture, assert_error, json};
use longlink_api::pb;
use longlink_api::pb::api_client::ApiClient;
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Code, Request};

fn put(api: &Fixture, path: &str, key: &str, body: serde_json::Value) -> reqwest::RequestBuilder {
    api.client.put(api.url(path)).bearer_auth(key).json(&body)
}

fn delete(api: &Fixture, path: &str, key: &str) -> reqwest::RequestBuilder {
    api.client.delete(api.url(path)).bearer_auth(key)
}

async fn grpc(api: &Fixture) -> ApiClient<Channel> {
    ApiClient::connect(format!("http://{}", api.grpc))
        .await
        .expect("gRPC connects")
}

fn with_key<T>(key: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_is_registered_read_and_removed_over_http() {
    let api = Fixture::start(5).await;
    let body = json!({
        "platform": "ios", "vendor": "apple", "app_version": "2.3",
        "tokens": [{"provider": "apns", "token": "a1b2"}, {"provider": "vendor", "token": "v-9"}]
    });
    let (status, device) = json(
        put(&api, "/v1/devices/129/alice/phone", "k129", body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{device}");
    assert_eq!(device["appcode"], 129);
    assert_eq!(device["uid"], "alice");
    assert_eq!(device["device"], "phone");
    assert_eq!(device["class"], "ios/apple/2.3");
    assert_eq!(
        device["tokens"],
        json!([{"provider": "apns", "token": "a1b2"}, {"provider": "vendor", "token": "v-9"}])
    );
    // What the notifier now holds is what was sent.
    let record = api.notifications.record(129, "alice", "phone").unwrap();
    assert_eq!(record.class.platform, "ios");
    assert_eq!(record.tokens.len(), 2);

    // A second device, with an unknown class: shown as `*`.
    let body = json!({"tokens": [{"provider": "fcm", "token": "f-1"}]});
    let (status, tablet) = json(
        put(&api, "/v1/devices/129/alice/tablet", "k129", body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{tablet}");
    assert_eq!(tablet["class"], "*/*/*");

    let (status, list) = json(
        api.get("/v1/devices/129/alice", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["phone", "tablet"]);
    let (status, one) = json(
        api.get("/v1/devices/129/alice/phone", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one, device);

    // Adding a token keeps the others; the same provider again replaces its token.
    let (status, added) = json(
        api.post(
            "/v1/devices/129/alice/phone/tokens",
            "k129",
            json!({"provider": "fcm", "token": "f-2", "platform": "ios", "vendor": "apple", "app_version": "2.4"}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["class"], "ios/apple/2.4");
    assert_eq!(added["tokens"].as_array().unwrap().len(), 3, "{added}");
    let (_, replaced) = json(
        api.post(
            "/v1/devices/129/alice/phone/tokens",
            "k129",
            json!({"provider": "apns", "token": "a-new", "platform": "ios"}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    let apns: Vec<&serde_json::Value> = replaced["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["provider"] == "apns")
        .collect();
    assert_eq!(apns.len(), 1, "{replaced}");
    assert_eq!(apns[0]["token"], "a-new");

    // Removing one provider's token, then the rest; removing again is idempotent.
    let (status, removed) = json(
        delete(&api, "/v1/devices/129/alice/phone?provider=vendor", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, removed), (200, json!({"removed": 1})));
    let (_, removed) = json(
        delete(&api, "/v1/devices/129/alice/phone", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(removed, json!({"removed": 2}));
    let (_, removed) = json(
        delete(&api, "/v1/devices/129/alice/phone", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(removed, json!({"removed": 0}));
    assert_error(
        api.get("/v1/devices/129/alice/phone", "k129")
            .send()
            .await
            .unwrap(),
        404,
        "not_found",
    )
    .await;

    // A PUT without tokens removes the registration.
    let (status, _) = json(
        put(
            &api,
            "/v1/devices/129/alice/tablet",
            "k129",
            json!({"tokens": []}),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (_, list) = json(
        api.get("/v1/devices/129/alice", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["devices"], json!([]));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_calls_are_scoped_and_refusals_are_the_spec_errors() {
    let api = Fixture::start(5).await;
    let good = json!({"tokens": [{"provider": "apns", "token": "t"}]});

    // Keys: none, another appcode's.
    let response = api
        .client
        .put(api.url("/v1/devices/129/alice/phone"))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "unauthenticated").await;
    for request in [
        put(&api, "/v1/devices/130/bob/phone", "k129", good.clone()),
        api.get("/v1/devices/130/bob", "k129"),
        api.get("/v1/devices/130/bob/phone", "k129"),
        delete(&api, "/v1/devices/130/bob/phone", "k129"),
        api.post(
            "/v1/devices/130/bob/phone/tokens",
            "k129",
            json!({"provider": "apns", "token": "t"}),
        ),
    ] {
        assert_error(request.send().await.unwrap(), 403, "permission_denied").await;
    }
    assert!(api.notifications.record(130, "bob", "phone").is_none());

    // Bad bodies and arguments: 400 before the notifier is asked.
    let long = "x".repeat(257);
    for (path, body) in [
        ("/v1/devices/129/alice/phone".to_owned(), json!({})),
        (
            "/v1/devices/129/alice/phone".to_owned(),
            json!({"tokens": [], "colour": "red"}),
        ),
        (
            "/v1/devices/129/alice/phone".to_owned(),
            json!({"tokens": [{"provider": "apns", "token": "a"}, {"provider": "apns", "token": "b"}]}),
        ),
        (
            "/v1/devices/129/alice/phone".to_owned(),
            json!({"tokens": [{"provider": "apns", "token": ""}]}),
        ),
        (
            "/v1/devices/129/alice/phone".to_owned(),
            json!({"tokens": (0..9).map(|i| json!({"provider": format!("p{i}"), "token": "t"})).collect::<Vec<_>>()}),
        ),
        (format!("/v1/devices/129/alice/{long}"), good.clone()),
        (format!("/v1/devices/129/{long}/phone"), good.clone()),
        ("/v1/devices/nope/alice/phone".to_owned(), good.clone()),
    ] {
        assert_error(
            put(&api, &path, "k129", body.clone()).send().await.unwrap(),
            400,
            "invalid_argument",
        )
        .await;
    }
    assert_error(
        delete(&api, "/v1/devices/129/alice/phone?provider=", "k129")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_argument",
    )
    .await;
    assert_error(
        delete(&api, "/v1/devices/129/alice/phone?colour=red", "k129")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_argument",
    )
    .await;

    // The notifier's refusals: a provider the node does not have, a registry that is down.
    let unknown = json!({"tokens": [{"provider": "carrier-pigeon", "token": "t"}]});
    let (status, body) = json(
        put(&api, "/v1/devices/129/alice/phone", "k129", unknown)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_argument");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("carrier-pigeon"),
        "{body}"
    );
    for request in [
        put(&api, "/v1/devices/131/carol/phone", "kall", good.clone()),
        api.get("/v1/devices/131/carol", "kall"),
        delete(&api, "/v1/devices/131/carol/phone", "kall"),
    ] {
        assert_error(request.send().await.unwrap(), 503, "unavailable").await;
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_stats_are_by_provider_and_class_for_any_key() {
    let api = Fixture::start(5).await;
    assert_error(
        api.client
            .get(api.url("/v1/push-providers/stats"))
            .send()
            .await
            .unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    // A key of one appcode reads them too: node-wide figures without uids or tokens.
    let (status, stats) = json(
        api.get("/v1/push-providers/stats", "k130")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{stats}");
    let providers = stats["providers"].as_array().unwrap();
    let names: Vec<&str> = providers
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["apns", "vendor"], "by name");
    let classes: Vec<&str> = providers[0]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["ios/apple/*", "ios/apple/2.3"], "by class");
    assert_eq!(
        providers[0]["classes"][1],
        json!({"class": "ios/apple/2.3", "sent": 100, "accepted": 99, "receipts": 95,
               "receipt_rate": 0.95, "p50_ms": 120, "p99_ms": 800,
               "errors": {"dead_token": 1}, "estimate": 0.94})
    );
    assert_eq!(providers[1]["kind"], "http");
    assert_eq!(providers[1]["breaker"], "open");
    assert_eq!(
        providers[1]["classes"][0]["errors"],
        json!({"rate_limited": 1, "unavailable": 5})
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_answers_as_http_does() {
    let api = Fixture::start(5).await;
    let mut client = grpc(&api).await;
    let put_request = pb::PutDeviceRequest {
        appcode: 129,
        uid: "alice".into(),
        device: "phone".into(),
        platform: "android".into(),
        vendor: "xiaomi".into(),
        app_version: String::new(),
        tokens: vec![pb::PushToken {
            provider: "vendor".into(),
            token: "x-1".into(),
        }],
    };
    let err = client
        .put_device(Request::new(put_request.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .put_device(with_key("k130", put_request.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let device = client
        .put_device(with_key("k129", put_request.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(device.class, "android/xiaomi/*");
    assert_eq!(device.tokens.len(), 1);

    let device = client
        .register_push_token(with_key(
            "k129",
            pb::RegisterPushTokenRequest {
                appcode: 129,
                uid: "alice".into(),
                device: "phone".into(),
                token: Some(pb::PushToken {
                    provider: "fcm".into(),
                    token: "f-1".into(),
                }),
                platform: "android".into(),
                vendor: "xiaomi".into(),
                app_version: "5.0".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(device.class, "android/xiaomi/5.0");
    let providers: Vec<&str> = device.tokens.iter().map(|t| t.provider.as_str()).collect();
    assert_eq!(providers, ["vendor", "fcm"]);
    let err = client
        .register_push_token(with_key(
            "k129",
            pb::RegisterPushTokenRequest {
                appcode: 129,
                uid: "alice".into(),
                device: "phone".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "no token");

    // The same device read over HTTP is the same record.
    let (_, http_device) = json(
        api.get("/v1/devices/129/alice/phone", "k129")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(http_device["updated_ms"], device.updated_ms);
    assert_eq!(http_device["tokens"][1]["token"], "f-1");

    let list = client
        .list_devices(with_key(
            "k129",
            pb::ListDevicesRequest {
                appcode: 129,
                uid: "alice".into(),
                device: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.devices, vec![device.clone()]);
    let err = client
        .list_devices(with_key(
            "k129",
            pb::ListDevicesRequest {
                appcode: 129,
                uid: "alice".into(),
                device: Some("watch".into()),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let err = client
        .put_device(with_key(
            "k129",
            pb::PutDeviceRequest {
                tokens: vec![pb::PushToken {
                    provider: "carrier-pigeon".into(),
                    token: "t".into(),
                }],
                ..put_request.clone()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .put_device(with_key(
            "kall",
            pb::PutDeviceRequest {
                appcode: 131,
                ..put_request.clone()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);

    let removed = client
        .remove_device(with_key(
            "k129",
            pb::RemoveDeviceRequest {
                appcode: 129,
                uid: "alice".into(),
                device: "phone".into(),
                provider: Some("fcm".into()),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.removed, 1);
    let record = api.notifications.record(129, "alice", "phone").unwrap();
    assert_eq!(record.tokens.len(), 1);
    assert_eq!(record.tokens[0].provider, "vendor");

    let stats = client
        .push_provider_stats(with_key("k130", pb::PushProviderStatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = stats.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["apns", "vendor"]);
    let class = &stats.providers[0].classes[1];
    assert_eq!(
        (
            class.class.as_str(),
            class.sent,
            class.receipts,
            class.p99_ms
        ),
        ("ios/apple/2.3", 100, 95, 800)
    );
    assert_eq!(class.errors.get("dead_token"), Some(&1));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_the_device_routes() {
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
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/devices/{appcode}/{uid}/{device}", "put"),
        ("/v1/devices/{appcode}/{uid}/{device}", "get"),
        ("/v1/devices/{appcode}/{uid}/{device}", "delete"),
        ("/v1/devices/{appcode}/{uid}/{device}/tokens", "post"),
        ("/v1/devices/{appcode}/{uid}", "get"),
        ("/v1/push-providers/stats", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} in the OpenAPI document"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "PutDeviceBody",
        "DeviceBody",
        "DevicesBody",
        "ProvidersBody",
    ] {
        assert!(schemas.contains_key(schema), "{schema}");
    }
    api.stop().await;
}
