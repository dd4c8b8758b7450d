//! The push providers against local stand-ins that speak APNs', FCM's and a vendor
//! endpoint's documented contracts (crates/push-fakes): each test asserts exactly what
//! longlink sent — protocol version, headers, JWT claims and signature (verified with the
//! test key's public half), payload — and how each documented answer is classified.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use longlink_notify::provider::apns::apns_id;
use longlink_notify::provider::{
    ApnsConfig, ApnsProvider, Clock, FcmConfig, FcmProvider, HttpProviderConfig, Notification,
    Provider, SendError, build_providers,
};
use longlink_push_fakes::{FakeApns, FakeFcm, FakeHttp, Reply, TestApnsKey};
use serde_json::json;

/// A clock the test moves forward by hand: no sleeps to age a token.
fn test_clock() -> (Clock, Arc<AtomicU64>) {
    let offset = Arc::new(AtomicU64::new(0));
    let start = SystemTime::now();
    let o = offset.clone();
    let clock: Clock = Arc::new(move || start + Duration::from_secs(o.load(Ordering::SeqCst)));
    (clock, offset)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn notification() -> Notification {
    Notification {
        id: 0x0001_8f00_1234_5678,
        token: "a1b2c3d4e5f6".into(),
        title: "Alice".into(),
        body: "3 new messages".into(),
        badge: Some(3),
        collapse_id: "ll-app-bob".into(),
        ttl: Duration::from_secs(3600),
        high_priority: true,
        sound: "default".into(),
        data: vec![
            ("ll_nid".into(), "421".into()),
            ("ll_appcode".into(), "app".into()),
            ("ll_count".into(), "3".into()),
        ],
    }
}

// ---------------------------------------------------------------- APNs

struct Apns {
    fake: FakeApns,
    key: TestApnsKey,
    provider: ApnsProvider,
    offset: Arc<AtomicU64>,
    start: SystemTime,
    _dir: tempfile::TempDir,
}

async fn apns() -> Apns {
    let fake = FakeApns::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = TestApnsKey::generate("KEY1234567", "TEAM123456").unwrap();
    fake.verify_tokens_with(key.clone());
    let config = ApnsConfig {
        enabled: true,
        key_file: key.write_p8(dir.path()).unwrap().display().to_string(),
        key_id: key.key_id.clone(),
        team_id: key.team_id.clone(),
        topic: "com.example.chat".into(),
        endpoint: fake.url(),
        ca_file: fake
            .write_ca(dir.path(), "apns-ca.pem")
            .unwrap()
            .display()
            .to_string(),
        ..ApnsConfig::default()
    };
    let (clock, offset) = test_clock();
    let start = clock();
    let provider = ApnsProvider::new(&config).unwrap().with_clock(clock);
    Apns {
        fake,
        key,
        provider,
        offset,
        start,
        _dir: dir,
    }
}

#[tokio::test]
async fn apns_sends_over_http2_with_headers_jwt_and_payload() {
    let t = apns().await;
    let n = notification();
    t.provider.send(&n).await.unwrap();

    let reqs = t.fake.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.version, http::Version::HTTP_2);
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/3/device/a1b2c3d4e5f6");
    assert_eq!(r.header("apns-topic"), Some("com.example.chat"));
    assert_eq!(r.header("apns-push-type"), Some("alert"));
    assert_eq!(r.header("apns-priority"), Some("10"));
    let expiration = unix(t.start) + 3600;
    assert_eq!(
        r.header("apns-expiration"),
        Some(expiration.to_string().as_str())
    );
    assert_eq!(r.header("apns-collapse-id"), Some("ll-app-bob"));
    assert_eq!(r.header("apns-id"), Some(apns_id(n.id).as_str()));
    assert_eq!(apns_id(n.id), "6c6c6e69-0000-8000-0001-8f0012345678");
    assert_eq!(r.header("content-type"), Some("application/json"));

    let auth = r.header("authorization").unwrap();
    let jwt = auth.strip_prefix("bearer ").unwrap();
    let (header, claims) = t.key.verify(jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(header.kid.as_deref(), Some("KEY1234567"));
    assert_eq!(claims, json!({"iss": "TEAM123456", "iat": unix(t.start)}));

    assert_eq!(
        r.json(),
        json!({
            "aps": {
                "alert": {"title": "Alice", "body": "3 new messages"},
                "badge": 3,
                "sound": "default",
                "thread-id": "ll-app-bob",
                "mutable-content": 1,
            },
            "ll_nid": "421",
            "ll_appcode": "app",
            "ll_count": "3",
        })
    );
}

#[tokio::test]
async fn apns_normal_priority_no_ttl_no_badge_silent_long_collapse_id() {
    let t = apns().await;
    let n = Notification {
        title: String::new(),
        badge: None,
        sound: String::new(),
        ttl: Duration::ZERO,
        high_priority: false,
        collapse_id: "é".repeat(40), // 80 bytes: cut to 64 at a character boundary
        data: Vec::new(),
        ..notification()
    };
    t.provider.send(&n).await.unwrap();
    let r = &t.fake.requests()[0];
    assert_eq!(r.header("apns-priority"), Some("5"));
    assert_eq!(r.header("apns-expiration"), Some("0"));
    assert_eq!(r.header("apns-collapse-id"), Some("é".repeat(32).as_str()));
    assert_eq!(
        r.json(),
        json!({"aps": {
            "alert": {"body": "3 new messages"},
            "thread-id": "é".repeat(40),
            "mutable-content": 1,
        }})
    );
}

#[tokio::test]
async fn apns_reuses_the_jwt_and_refreshes_it_before_it_is_50_minutes_old() {
    let t = apns().await;
    let n = notification();
    let bearer = |i: usize| t.fake.requests()[i].bearer().unwrap().to_owned();

    t.provider.send(&n).await.unwrap();
    t.provider.send(&n).await.unwrap();
    assert_eq!(bearer(0), bearer(1), "the provider token is reused");

    t.offset.store(49 * 60, Ordering::SeqCst);
    t.provider.send(&n).await.unwrap();
    assert_eq!(bearer(2), bearer(0), "49 minutes old: still reused");

    t.offset.store(50 * 60, Ordering::SeqCst);
    t.provider.send(&n).await.unwrap();
    assert_ne!(bearer(3), bearer(0), "50 minutes old: replaced");
    let (_, claims) = t.key.verify(&bearer(3)).unwrap();
    assert_eq!(claims["iat"], unix(t.start) + 50 * 60);

    t.provider.send(&n).await.unwrap();
    assert_eq!(bearer(4), bearer(3));
}

#[tokio::test]
async fn apns_classifies_apples_answers() {
    let t = apns().await;
    let n = notification();
    let cases: Vec<(Reply, &str)> = vec![
        (Reply::apns_error(410, "Unregistered"), "dead_token"),
        (Reply::apns_error(400, "BadDeviceToken"), "dead_token"),
        (
            Reply::apns_error(400, "DeviceTokenNotForTopic"),
            "dead_token",
        ),
        (Reply::apns_error(400, "BadCollapseId"), "rejected"),
        (Reply::apns_error(413, "PayloadTooLarge"), "rejected"),
        (
            Reply::apns_error(403, "BadCertificateEnvironment"),
            "rejected",
        ),
        (Reply::apns_error(429, "TooManyRequests"), "rate_limited"),
        (Reply::apns_error(500, "InternalServerError"), "unavailable"),
        (Reply::apns_error(503, "ServiceUnavailable"), "unavailable"),
    ];
    for (reply, kind) in cases {
        let status = reply.status;
        t.fake.reply(reply);
        let e = t.provider.send(&n).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{status}: {e}");
    }
    let e = match t.provider.send(&n).await {
        Ok(()) => SendError::Rejected("ok".into()),
        Err(e) => e,
    };
    assert_eq!(
        e,
        SendError::Rejected("ok".into()),
        "the queue is used up: 200"
    );

    t.fake
        .reply(Reply::apns_error(429, "TooManyRequests").with_header("retry-after", "7"));
    assert_eq!(
        t.provider.send(&n).await.unwrap_err(),
        SendError::RateLimited {
            reason: "HTTP 429 TooManyRequests".into(),
            retry_after: Some(Duration::from_secs(7)),
        }
    );
    t.fake.reply(Reply::apns_error(410, "Unregistered"));
    assert_eq!(
        t.provider.send(&n).await.unwrap_err(),
        SendError::DeadToken("HTTP 410 Unregistered".into())
    );
}

#[tokio::test]
async fn apns_expired_provider_token_gets_a_new_jwt_and_one_retry() {
    let t = apns().await;
    let n = notification();
    t.provider.send(&n).await.unwrap();
    t.fake.clear();

    t.fake.reply(Reply::apns_error(403, "ExpiredProviderToken"));
    t.provider.send(&n).await.unwrap();
    let reqs = t.fake.requests();
    assert_eq!(reqs.len(), 2, "the refused request and its retry");
    let (first, second) = (reqs[0].bearer().unwrap(), reqs[1].bearer().unwrap());
    assert_ne!(first, second, "the retry carries a new provider token");
    t.key.verify(second).unwrap();
    assert_eq!(reqs[0].json(), reqs[1].json());
    assert_eq!(reqs[0].header("apns-id"), reqs[1].header("apns-id"));

    // The new token is the cached one now.
    t.provider.send(&n).await.unwrap();
    assert_eq!(t.fake.requests()[2].bearer().unwrap(), second);

    // Refused twice: rejected, no third attempt.
    t.fake.clear();
    t.fake.reply(Reply::apns_error(403, "InvalidProviderToken"));
    t.fake.reply(Reply::apns_error(403, "InvalidProviderToken"));
    let e = t.provider.send(&n).await.unwrap_err();
    assert_eq!(
        e,
        SendError::Rejected("HTTP 403 InvalidProviderToken".into())
    );
    assert_eq!(t.fake.requests().len(), 2);
}

#[tokio::test]
async fn fake_apns_refuses_http1_and_bad_tokens() {
    let t = apns().await;
    // The fake is HTTP/2 only, so the HTTP/2 assertion above means something.
    let ca = reqwest::Certificate::from_pem(t.fake.ca_pem().as_bytes()).unwrap();
    let h1 = reqwest::Client::builder()
        .http1_only()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let res = h1
        .post(format!("{}/3/device/abc", t.fake.url()))
        .body("{}")
        .send()
        .await;
    assert!(res.is_err(), "HTTP/1.1 must fail: {res:?}");

    // A provider signing with another key is refused (403 InvalidProviderToken, twice).
    let other = TestApnsKey::generate("KEY1234567", "TEAM123456").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = ApnsConfig {
        enabled: true,
        key_file: other.write_p8(dir.path()).unwrap().display().to_string(),
        key_id: other.key_id.clone(),
        team_id: other.team_id.clone(),
        topic: "com.example.chat".into(),
        endpoint: t.fake.url(),
        ca_file: t
            .fake
            .write_ca(dir.path(), "ca.pem")
            .unwrap()
            .display()
            .to_string(),
        ..ApnsConfig::default()
    };
    let wrong = ApnsProvider::new(&config).unwrap();
    let e = wrong.send(&notification()).await.unwrap_err();
    assert_eq!(
        e,
        SendError::Rejected("HTTP 403 InvalidProviderToken".into())
    );
}

// ---------------------------------------------------------------- FCM

struct Fcm {
    fake: FakeFcm,
    provider: FcmProvider,
    offset: Arc<AtomicU64>,
    start: SystemTime,
    _dir: tempfile::TempDir,
}

fn fcm_config(fake: &FakeFcm, dir: &Path) -> FcmConfig {
    FcmConfig {
        enabled: true,
        service_account_file: fake
            .account()
            .write_json(dir)
            .unwrap()
            .display()
            .to_string(),
        endpoint: fake.url(),
        ca_file: fake
            .write_ca(dir, "fcm-ca.pem")
            .unwrap()
            .display()
            .to_string(),
        ..FcmConfig::default()
    }
}

async fn fcm() -> Fcm {
    let fake = FakeFcm::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (clock, offset) = test_clock();
    let start = clock();
    let provider = FcmProvider::new(&fcm_config(&fake, dir.path()))
        .unwrap()
        .with_clock(clock);
    Fcm {
        fake,
        provider,
        offset,
        start,
        _dir: dir,
    }
}

#[tokio::test]
async fn fcm_exchanges_an_oauth_token_caches_it_and_sends_the_v1_body() {
    let t = fcm().await;
    let n = notification();
    t.provider.send(&n).await.unwrap();
    t.provider.send(&n).await.unwrap();

    let tokens = t.fake.token_requests();
    assert_eq!(tokens.len(), 1, "one exchange for two sends");
    let tr = &tokens[0];
    assert_eq!(tr.method, "POST");
    assert_eq!(
        tr.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let form = tr.form();
    assert_eq!(form.len(), 2, "{form:?}");
    assert_eq!(
        form[0],
        (
            "grant_type".into(),
            "urn:ietf:params:oauth:grant-type:jwt-bearer".into()
        )
    );
    assert_eq!(form[1].0, "assertion");
    let account = t.fake.account();
    let (header, claims) = account.verify(&form[1].1).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some(account.private_key_id.as_str()));
    let iat = unix(t.start);
    assert_eq!(
        claims,
        json!({
            "iss": account.client_email,
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "aud": t.fake.token_uri(),
            "iat": iat,
            "exp": iat + 3600,
        })
    );

    let sends = t.fake.send_requests();
    assert_eq!(sends.len(), 2);
    for s in &sends {
        assert_eq!(s.method, "POST");
        assert_eq!(s.path, "/v1/projects/longlink-test/messages:send");
        assert_eq!(s.header("authorization"), Some("Bearer ya29.fake-1"));
    }
    assert_eq!(
        sends[0].json(),
        json!({"message": {
            "token": "a1b2c3d4e5f6",
            "notification": {"title": "Alice", "body": "3 new messages"},
            "data": {"ll_nid": "421", "ll_appcode": "app", "ll_count": "3"},
            "android": {
                "collapse_key": "ll-app-bob",
                "priority": "HIGH",
                "ttl": "3600s",
                "notification": {"tag": "ll-app-bob", "notification_count": 3, "sound": "default"},
            },
            "apns": {
                "headers": {"apns-collapse-id": "ll-app-bob"},
                "payload": {"aps": {"badge": 3, "sound": "default"}},
            },
        }})
    );
    assert_eq!(t.fake.messages_accepted(), 2);
}

#[tokio::test]
async fn fcm_refreshes_the_access_token_60_seconds_before_it_expires() {
    let t = fcm().await;
    let n = notification();
    t.provider.send(&n).await.unwrap();
    // The fake's tokens live 3599 s: kept until 3539 s, replaced from 3540 s on.
    t.offset.store(3538, Ordering::SeqCst);
    t.provider.send(&n).await.unwrap();
    assert_eq!(t.fake.tokens_issued(), 1);
    t.offset.store(3540, Ordering::SeqCst);
    t.provider.send(&n).await.unwrap();
    assert_eq!(t.fake.tokens_issued(), 2);
    let sends = t.fake.send_requests();
    assert_eq!(sends[2].bearer(), Some("ya29.fake-2"));
    let (_, claims) = t
        .fake
        .account()
        .verify(&t.fake.token_requests()[1].form()[1].1)
        .unwrap();
    assert_eq!(claims["iat"], unix(t.start) + 3540);
}

#[tokio::test]
async fn fcm_concurrent_sends_share_one_exchange() {
    let t = fcm().await;
    let n = notification();
    let sends: Vec<_> = (0..8).map(|_| t.provider.send(&n)).collect();
    for r in futures::future::join_all(sends).await {
        r.unwrap();
    }
    assert_eq!(t.fake.tokens_issued(), 1);
    assert_eq!(t.fake.messages_accepted(), 8);
}

#[tokio::test]
async fn fcm_classifies_fcm_errors() {
    let t = fcm().await;
    let n = notification();
    let cases: Vec<(Reply, &str)> = vec![
        (
            Reply::fcm_error(404, "NOT_FOUND", "UNREGISTERED"),
            "dead_token",
        ),
        (
            Reply::fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
            "rejected",
        ),
        (
            Reply::fcm_error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
            "rejected",
        ),
        (
            Reply::fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
            "rate_limited",
        ),
        (
            Reply::fcm_error(503, "UNAVAILABLE", "UNAVAILABLE"),
            "unavailable",
        ),
        (Reply::fcm_error(500, "INTERNAL", "INTERNAL"), "unavailable"),
        (Reply::fcm_error(503, "UNAVAILABLE", ""), "unavailable"),
    ];
    for (reply, kind) in cases {
        let body = String::from_utf8_lossy(&reply.body).into_owned();
        t.fake.reply_send(reply);
        let e = t.provider.send(&n).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{body}: {e}");
    }
    t.fake.reply_send(
        Reply::fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")
            .with_header("Retry-After", "30"),
    );
    match t.provider.send(&n).await.unwrap_err() {
        SendError::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(30)));
        }
        e => panic!("{e:?}"),
    }
    t.fake
        .reply_send(Reply::fcm_error(404, "NOT_FOUND", "UNREGISTERED"));
    match t.provider.send(&n).await.unwrap_err() {
        SendError::DeadToken(text) => assert!(text.contains("UNREGISTERED"), "{text}"),
        e => panic!("{e:?}"),
    }
    t.provider.send(&n).await.unwrap();
}

#[tokio::test]
async fn fcm_unauthenticated_drops_the_token_and_retries_once() {
    let t = fcm().await;
    let n = notification();
    t.provider.send(&n).await.unwrap();
    t.fake.revoke_tokens();
    t.provider.send(&n).await.unwrap();
    assert_eq!(t.fake.tokens_issued(), 2);
    let sends = t.fake.send_requests();
    assert_eq!(sends.len(), 3);
    assert_eq!(sends[1].bearer(), Some("ya29.fake-1"), "refused");
    assert_eq!(
        sends[2].bearer(),
        Some("ya29.fake-2"),
        "retried with a new token"
    );

    // Refused again after the refresh: rejected, not looped.
    t.fake
        .reply_send(Reply::fcm_error(401, "UNAUTHENTICATED", ""));
    t.fake.reply_send(Reply::fcm_error(
        401,
        "PERMISSION_DENIED",
        "THIRD_PARTY_AUTH_ERROR",
    ));
    let e = t.provider.send(&n).await.unwrap_err();
    assert_eq!(e.kind(), "rejected", "{e}");
    assert!(e.to_string().contains("THIRD_PARTY_AUTH_ERROR"), "{e}");
    assert_eq!(t.fake.tokens_issued(), 3);
    assert_eq!(t.fake.send_requests().len(), 5);
}

#[tokio::test]
async fn fcm_oauth_failures() {
    let t = fcm().await;
    let n = notification();
    t.fake.reply_token(Reply::json(
        400,
        &json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
    ));
    let e = t.provider.send(&n).await.unwrap_err();
    assert_eq!(
        e,
        SendError::Rejected("oauth: HTTP 400 invalid_grant Invalid JWT Signature.".into())
    );
    t.fake.reply_token(Reply::status(503));
    assert_eq!(t.provider.send(&n).await.unwrap_err().kind(), "unavailable");
    assert!(t.fake.send_requests().is_empty(), "no send without a token");
    t.provider.send(&n).await.unwrap();
}

// ---------------------------------------------------------------- HTTP

async fn http_provider(
    fake: &FakeHttp,
    dir: &Path,
    edit: impl FnOnce(&mut HttpProviderConfig),
) -> Arc<dyn Provider> {
    let mut config = HttpProviderConfig {
        name: "huawei".into(),
        url: format!("{}/push/{{{{token}}}}?nid={{{{id}}}}", fake.url()),
        headers: [
            ("authorization".to_owned(), "Bearer s3cret".to_owned()),
            ("x-collapse".to_owned(), "{{collapse_id}}".to_owned()),
        ]
        .into(),
        body: r#"{
            "message": {
                "token": ["{{token}}"],
                "android": {"notification": {"title": "{{title}}", "body": "» {{body}} «"}},
                "badge": "{{badge}}",
                "ttl": "{{ttl_secs}}",
                "data": "{{data_json}}",
                "data_text": "{{data_json}}!",
                "id": "{{id}}",
                "{{collapse_id}}": true,
                "fixed": [1, null, false]
            }
        }"#
        .into(),
        ca_file: fake
            .write_ca(dir, "http-ca.pem")
            .unwrap()
            .display()
            .to_string(),
        dead_token_body: "80300007".into(),
        ..HttpProviderConfig::default()
    };
    edit(&mut config);
    let mut built = build_providers(
        &ApnsConfig::default(),
        &FcmConfig::default(),
        std::slice::from_ref(&config),
    )
    .unwrap();
    assert_eq!(built.len(), 1);
    assert_eq!((built[0].rate_per_sec, built[0].burst), (1000, 100));
    built.remove(0).provider
}

#[tokio::test]
async fn http_fills_the_templates_and_escapes_values() {
    let fake = FakeHttp::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = http_provider(&fake, dir.path(), |_| {}).await;
    assert_eq!((p.name(), p.kind()), ("huawei", "http"));
    let n = Notification {
        token: "tok/en?&=x".into(),
        title: "He said \"hi\" \\ {{token}}".into(),
        body: "line1\nline2\t\u{1}".into(),
        data: vec![("ll_nid".into(), "4\"2".into())],
        ..notification()
    };
    p.send(&n).await.unwrap();
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/push/tok%2Fen%3F%26%3Dx?nid={}", n.id));
    assert_eq!(r.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(r.header("x-collapse"), Some("ll-app-bob"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("valid JSON");
    assert_eq!(
        body,
        json!({"message": {
            "token": ["tok/en?&=x"],
            "android": {"notification": {
                "title": "He said \"hi\" \\ {{token}}",
                "body": "» line1\nline2\t\u{1} «",
            }},
            "badge": 3,
            "ttl": 3600,
            "data": {"ll_nid": "4\"2"},
            "data_text": "{\"ll_nid\":\"4\\\"2\"}!",
            "id": n.id.to_string(),
            "ll-app-bob": true,
            "fixed": [1, null, false],
        }})
    );

    // No badge: the whole-value placeholder becomes null.
    p.send(&Notification {
        badge: None,
        ..notification()
    })
    .await
    .unwrap();
    assert_eq!(fake.requests()[1].json()["message"]["badge"], json!(null));
}

#[tokio::test]
async fn http_classifies_answers_and_dead_tokens() {
    let fake = FakeHttp::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = http_provider(&fake, dir.path(), |c| c.method = "put".into()).await;
    let n = notification();
    let cases: Vec<(Reply, &str)> = vec![
        (Reply::status(410), "dead_token"),
        (Reply::status(404), "dead_token"),
        (
            Reply::json(
                200,
                &json!({"code": "80300007", "msg": "all the tokens are invalid"}),
            ),
            "dead_token",
        ),
        (
            Reply::json(200, &json!({"code": "80000000", "msg": "Success"})),
            "ok",
        ),
        (Reply::status(204), "ok"),
        (Reply::status(429), "rate_limited"),
        (Reply::status(502), "unavailable"),
        (Reply::text(400, "bad request"), "rejected"),
        (Reply::status(401), "rejected"),
    ];
    for (reply, kind) in cases {
        let status = reply.status;
        fake.reply(reply);
        let got = match p.send(&n).await {
            Ok(()) => "ok",
            Err(e) => e.kind(),
        };
        assert_eq!(got, kind, "{status}");
    }
    assert!(fake.requests().iter().all(|r| r.method == "PUT"));
    fake.reply(Reply::status(429).with_header("retry-after", "12"));
    assert_eq!(
        p.send(&n).await.unwrap_err(),
        SendError::RateLimited {
            reason: "HTTP 429".into(),
            retry_after: Some(Duration::from_secs(12)),
        }
    );
    fake.reply(Reply::text(400, "invalid \"token\""));
    assert_eq!(
        p.send(&n).await.unwrap_err(),
        SendError::Rejected("HTTP 400 invalid \"token\"".into())
    );

    // Statuses are configurable: with none, a 404 is merely rejected.
    let strict = http_provider(&fake, dir.path(), |c| {
        c.name = "sms".into();
        c.dead_token_statuses = Vec::new();
        c.dead_token_body = String::new();
    })
    .await;
    fake.reply(Reply::status(404));
    assert_eq!(strict.send(&n).await.unwrap_err().kind(), "rejected");
}

// ---------------------------------------------------------------- build_providers

#[tokio::test]
async fn build_providers_builds_the_enabled_ones_and_names_bad_settings() {
    let apns_fake = FakeApns::start().await.unwrap();
    let fcm_fake = FakeFcm::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = TestApnsKey::generate("KEY1234567", "TEAM123456").unwrap();
    let apns = ApnsConfig {
        enabled: true,
        key_file: key.write_p8(dir.path()).unwrap().display().to_string(),
        key_id: key.key_id.clone(),
        team_id: key.team_id.clone(),
        topic: "com.example.chat".into(),
        endpoint: apns_fake.url(),
        ca_file: apns_fake
            .write_ca(dir.path(), "a.pem")
            .unwrap()
            .display()
            .to_string(),
        rate_per_sec: 50,
        burst: 5,
        ..ApnsConfig::default()
    };
    let fcm = fcm_config(&fcm_fake, dir.path());
    let http = vec![HttpProviderConfig {
        name: "xiaomi".into(),
        url: "https://example.invalid/push".into(),
        ..HttpProviderConfig::default()
    }];

    let built = build_providers(&apns, &fcm, &http).unwrap();
    let names: Vec<_> = built.iter().map(|b| b.provider.name()).collect();
    assert_eq!(names, ["apns", "fcm", "xiaomi"]);
    assert_eq!((built[0].rate_per_sec, built[0].burst), (50, 5));
    assert!(
        build_providers(&ApnsConfig::default(), &FcmConfig::default(), &[])
            .unwrap()
            .is_empty(),
        "disabled by default"
    );

    // Sends through what build_providers made.
    built[0].provider.send(&notification()).await.unwrap();
    built[1].provider.send(&notification()).await.unwrap();
    assert_eq!(apns_fake.count(), 1);
    assert_eq!(fcm_fake.messages_accepted(), 1);

    let err = |apns: &ApnsConfig, fcm: &FcmConfig, http: &[HttpProviderConfig]| {
        build_providers(apns, fcm, http).unwrap_err()
    };
    let off = FcmConfig::default();
    let e = err(
        &ApnsConfig {
            key_file: "/nonexistent/AuthKey.p8".into(),
            ..apns.clone()
        },
        &off,
        &[],
    );
    assert_eq!(
        (e.provider.as_str(), e.field.as_str()),
        ("apns", "key_file")
    );
    assert!(e.to_string().contains("/nonexistent/AuthKey.p8"), "{e}");

    let garbage = dir.path().join("garbage.p8");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let e = err(
        &ApnsConfig {
            key_file: garbage.display().to_string(),
            ..apns.clone()
        },
        &off,
        &[],
    );
    assert_eq!(e.field, "key_file", "{e}");
    assert!(
        !e.to_string().contains("AAAA"),
        "no key material in errors: {e}"
    );

    for field in ["key_id", "team_id", "topic"] {
        let mut c = apns.clone();
        match field {
            "key_id" => c.key_id.clear(),
            "team_id" => c.team_id.clear(),
            _ => c.topic.clear(),
        }
        assert_eq!(err(&c, &off, &[]).field, field);
    }

    // The RSA key is not an EC key.
    let rsa = dir.path().join("rsa.p8");
    std::fs::write(&rsa, fcm_fake.account().private_pem()).unwrap();
    let e = err(
        &ApnsConfig {
            key_file: rsa.display().to_string(),
            ..apns.clone()
        },
        &off,
        &[],
    );
    assert_eq!(e.field, "key_file", "{e}");

    let not_json = dir.path().join("sa.json");
    std::fs::write(&not_json, "{\"project_id\": 1}").unwrap();
    let e = err(
        &ApnsConfig::default(),
        &FcmConfig {
            service_account_file: not_json.display().to_string(),
            ..fcm.clone()
        },
        &[],
    );
    assert_eq!(
        (e.provider.as_str(), e.field.as_str()),
        ("fcm", "service_account_file")
    );

    let a = ApnsConfig::default();
    let dup = vec![http[0].clone(), http[0].clone()];
    assert_eq!(err(&a, &off, &dup).field, "name");
    let reserved = vec![HttpProviderConfig {
        name: "apns".into(),
        ..http[0].clone()
    }];
    assert_eq!(err(&a, &off, &reserved).field, "name");
    let unnamed = vec![HttpProviderConfig {
        name: String::new(),
        ..http[0].clone()
    }];
    let e = err(&a, &off, &unnamed);
    assert_eq!((e.provider.as_str(), e.field.as_str()), ("http[0]", "name"));
    let bad_placeholder = vec![HttpProviderConfig {
        body: r#"{"to": "{{tokne}}"}"#.into(),
        ..http[0].clone()
    }];
    let e = err(&a, &off, &bad_placeholder);
    assert_eq!(e.field, "body");
    assert!(e.message.contains("tokne"), "{e}");
    let bad_json = vec![HttpProviderConfig {
        body: r#"{"to": "{{token}}""#.into(),
        ..http[0].clone()
    }];
    assert_eq!(err(&a, &off, &bad_json).field, "body");
    let zero_rate = vec![HttpProviderConfig {
        rate_per_sec: 0,
        ..http[0].clone()
    }];
    assert_eq!(err(&a, &off, &zero_rate).field, "rate_per_sec");
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let config = HttpProviderConfig {
        name: "sms".into(),
        url: "https://sms.example/send?apikey=s3cret".into(),
        headers: [("authorization".to_owned(), "Bearer s3cret".to_owned())].into(),
        body: r#"{"key": "s3cret"}"#.into(),
        ..HttpProviderConfig::default()
    };
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(debug.contains("authorization"), "{debug}");

    let key = TestApnsKey::generate("KEY1234567", "TEAM123456").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = ApnsProvider::new(&ApnsConfig {
        enabled: true,
        key_file: key.write_p8(dir.path()).unwrap().display().to_string(),
        key_id: "KEY1234567".into(),
        team_id: "TEAM123456".into(),
        topic: "t".into(),
        ..ApnsConfig::default()
    })
    .unwrap();
    let debug = format!("{p:?}");
    let body_line = key.p8_pem().lines().nth(1).unwrap();
    assert!(!debug.contains(body_line), "{debug}");
    assert!(debug.contains("api.push.apple.com"), "{debug}");
}

#[test]
fn configs_deserialize_with_defaults_and_refuse_unknown_fields() {
    let apns: ApnsConfig =
        serde_json::from_value(json!({"enabled": true, "sandbox": true})).unwrap();
    assert_eq!(
        apns.effective_endpoint(),
        "https://api.sandbox.push.apple.com"
    );
    assert_eq!(apns.push_type, "alert");
    assert_eq!(
        ApnsConfig::default().effective_endpoint(),
        "https://api.push.apple.com"
    );
    assert!(serde_json::from_value::<ApnsConfig>(json!({"key": "x"})).is_err());
    let fcm: FcmConfig = serde_json::from_value(json!({})).unwrap();
    assert_eq!(fcm.endpoint, "https://fcm.googleapis.com");
    let http: HttpProviderConfig = serde_json::from_value(json!({"name": "vivo"})).unwrap();
    assert_eq!(http.method, "POST");
    assert_eq!(http.dead_token_statuses, [404, 410]);
    assert!(serde_json::from_value::<HttpProviderConfig>(json!({"nmae": "vivo"})).is_err());
}
