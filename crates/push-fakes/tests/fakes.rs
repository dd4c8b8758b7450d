//! The fakes themselves: TLS with their own CA, recording, scripted answers, the counting
//! mode, waits with deadlines, and that the test keys refuse what they did not sign.

use std::time::Duration;

use longlink_push_fakes::{FakeApns, FakeFcm, FakeHttp, Reply, TestApnsKey, TestServiceAccount};

fn client(ca_pem: &str, h2: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    let b = reqwest::Client::builder()
        .tls_certs_only([ca])
        .timeout(Duration::from_secs(10));
    let b = if h2 {
        b.http2_prior_knowledge()
    } else {
        b.http1_only()
    };
    b.build().unwrap()
}

#[tokio::test]
async fn fake_http_records_and_answers_the_script_then_the_default() {
    let fake = FakeHttp::start().await.unwrap();
    let c = client(fake.ca_pem(), false);
    fake.reply(Reply::text(503, "busy").with_header("retry-after", "3"));
    let r = c
        .post(format!("{}/a/b?x=1", fake.url()))
        .header("x-k", "v")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "3");
    assert_eq!(r.text().await.unwrap(), "busy");
    let r = c.get(format!("{}/", fake.url())).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"ok":true}"#);

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/a/b?x=1");
    assert_eq!(reqs[0].version, http::Version::HTTP_11);
    assert_eq!(reqs[0].header("X-K"), Some("v"));
    assert_eq!(reqs[0].body_text(), "hello");
    assert_eq!(reqs[1].method, "GET");
    assert_eq!(fake.count(), 2);
    fake.clear();
    assert!(fake.requests().is_empty());
    assert_eq!(fake.count(), 2);
}

#[tokio::test]
async fn counting_mode_counts_without_recording_and_waits_have_deadlines() {
    let fake = FakeHttp::start_counting().await.unwrap();
    let c = client(fake.ca_pem(), true);
    assert_eq!(
        fake.wait_count(1, Duration::from_millis(50)).await,
        Err(0),
        "nothing arrived: the wait ends at its deadline"
    );
    let url = fake.url();
    let sender = tokio::spawn(async move {
        for _ in 0..5 {
            c.post(&url).body("x").send().await.unwrap();
        }
    });
    assert_eq!(fake.wait_count(5, Duration::from_secs(10)).await, Ok(5));
    sender.await.unwrap();
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn fake_apns_speaks_http2_and_checks_requests() {
    let fake = FakeApns::start().await.unwrap();
    let c = client(fake.ca_pem(), true);
    let post = |path: &str| {
        c.post(format!("{}{path}", fake.url()))
            .header("authorization", "bearer x.y.z")
            .header("apns-topic", "com.example")
            .header("apns-id", "6c6c6e69-0000-8000-0000-000000000001")
            .body("{}")
    };
    let r = post("/3/device/abc").send().await.unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["apns-id"],
        "6c6c6e69-0000-8000-0000-000000000001"
    );
    let r = post("/2/device/abc").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), r#"{"reason":"BadPath"}"#);

    // With a key to verify against, a JWT it did not sign is refused.
    fake.verify_tokens_with(TestApnsKey::generate("K", "T").unwrap());
    let r = post("/3/device/abc").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"reason":"InvalidProviderToken"}"#
    );
}

#[tokio::test]
async fn fake_fcm_issues_tokens_only_for_its_account() {
    let fake = FakeFcm::start().await.unwrap();
    let c = client(fake.ca_pem(), false);
    // An assertion signed by another key: invalid_grant.
    let other = TestServiceAccount::generate("p", &fake.token_uri()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(other.private_key_id.clone());
    let claims = serde_json::json!({"iss": "x", "aud": fake.token_uri(), "scope": longlink_push_fakes::FCM_SCOPE, "iat": 1, "exp": 2});
    let forged = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(other.private_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let r = c
        .post(fake.token_uri())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={forged}"
        ))
        .send()
        .await
        .unwrap();
    // The process shares one RSA key, so the signature verifies; the claims do not.
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("invalid_grant"));
    assert_eq!(fake.tokens_issued(), 0);

    // A send without a token it issued: 401 UNAUTHENTICATED.
    let r = c
        .post(format!(
            "{}/v1/projects/longlink-test/messages:send",
            fake.url()
        ))
        .bearer_auth("made-up")
        .body(r#"{"message":{"token":"t"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
}

#[test]
fn test_keys_verify_their_own_jwts_only() {
    let key = TestApnsKey::generate("KID", "TEAM").unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("KID".into());
    let jwt = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"iss": "TEAM", "iat": 1}),
        &jsonwebtoken::EncodingKey::from_ec_pem(key.p8_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let (h, claims) = key.verify(&jwt).unwrap();
    assert_eq!(h.kid.as_deref(), Some("KID"));
    assert_eq!(claims["iss"], "TEAM");
    let other = TestApnsKey::generate("KID", "TEAM").unwrap();
    assert!(other.verify(&jwt).is_err());
    let mut tampered = jwt.clone();
    tampered.insert(jwt.find('.').unwrap() + 2, 'A');
    assert!(key.verify(&tampered).is_err());
    assert!(!format!("{key:?}").contains("PRIVATE"));
}
