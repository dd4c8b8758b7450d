//! Token rules (issue 8, docs/security.md "Tokens") over a real server: expired, forged and
//! foreign tokens are refused; RS256 and ES256 public keys verify; two keys of one appcode
//! are valid at once (rotation) and a removed key's tokens fail; a revocation kicks the
//! user's sessions, refuses their RESUME and the old tokens (also after a restart) but not a
//! token issued afterwards; failed logins are rate-limited per IP and per uid while other
//! users still log in.

mod raw_session;

use std::net::{IpAddr, SocketAddr};

use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use longlink_proto::{Cmd, ErrorCode, Frame, FrameCodec, FrameType, KickReason, wire};
use longlink_server::config::AppKeySection;
use longlink_testkit::{TestServer, WAIT};
use raw_session::{Conn, Refused, kicks, presence_sessions, reason, resume_request, wait_held};
use serde_json::json;
use tokio_util::codec::Framed;

/// The default config's secrets.
const SECRET_129: &str = "dev-secret-129-change-me";
const SECRET_130: &str = "dev-secret-130-change-me";

fn now() -> u64 {
    longlink_proto::unix_ms() / 1000
}

/// Claims of a token for `(appcode, uid)`, issued `age` seconds ago, valid for an hour.
fn claims(appcode: u32, uid: &str, iat: u64) -> serde_json::Value {
    json!({"sub": uid, "appcode": appcode, "iat": iat, "exp": now() + 3600})
}

/// `claims` signed with `key` under `alg`, naming `kid` when given.
fn sign(
    alg: Algorithm,
    kid: Option<&str>,
    key: &EncodingKey,
    claims: &serde_json::Value,
) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn hs(secret: &str, kid: Option<&str>, claims: &serde_json::Value) -> String {
    sign(
        Algorithm::HS256,
        kid,
        &EncodingKey::from_secret(secret.as_bytes()),
        claims,
    )
}

fn login_with(appcode: u32, token: &str, device: &str) -> wire::LoginRequest {
    wire::LoginRequest {
        token: token.to_owned(),
        appcode,
        device_id: device.to_owned(),
        resume_capable: true,
        ..Default::default()
    }
}

/// One LOGIN on a fresh connection: the response or the refusal.
async fn try_login(
    server: &TestServer,
    appcode: u32,
    token: &str,
) -> Result<wire::LoginResponse, Refused> {
    let mut conn = Conn::connect(server.gate_addr()).await;
    conn.login(login_with(appcode, token, "phone")).await
}

fn code(result: Result<wire::LoginResponse, Refused>) -> ErrorCode {
    match result {
        Ok(response) => panic!("login accepted for {:?}", response.uid),
        Err(refused) => refused.code,
    }
}

fn key(kid: &str, alg: &str, secret: &str, public_key: &str) -> AppKeySection {
    AppKeySection {
        kid: kid.to_owned(),
        alg: alg.to_owned(),
        secret: secret.to_owned(),
        public_key: public_key.to_owned(),
    }
}

#[tokio::test]
async fn expired_forged_and_foreign_tokens_are_refused() {
    let server = TestServer::start().await;
    let t = now();
    let expired = hs(
        SECRET_129,
        None,
        &json!({"sub": "ann", "appcode": 129, "iat": t - 600, "exp": t - 120}),
    );
    assert_eq!(
        code(try_login(&server, 129, &expired).await),
        ErrorCode::BadToken
    );
    // Within the 60 s leeway an expired token still passes (clock skew).
    let barely = hs(
        SECRET_129,
        None,
        &json!({"sub": "ann", "appcode": 129, "iat": t - 600, "exp": t - 10}),
    );
    assert!(try_login(&server, 129, &barely).await.is_ok());
    // A token without exp, or not valid yet (nbf), or issued in the future.
    for claims in [
        json!({"sub": "ann", "appcode": 129, "iat": t}),
        json!({"sub": "ann", "appcode": 129, "iat": t, "exp": t + 600, "nbf": t + 300}),
        json!({"sub": "ann", "appcode": 129, "iat": t + 300, "exp": t + 600}),
    ] {
        let token = hs(SECRET_129, None, &claims);
        assert_eq!(
            code(try_login(&server, 129, &token).await),
            ErrorCode::BadToken,
            "{claims}"
        );
    }
    // Forged: signed with a key that is not 129's, or a signature altered.
    let forged = hs("guessed-secret", None, &claims(129, "ann", t));
    assert_eq!(
        code(try_login(&server, 129, &forged).await),
        ErrorCode::BadToken
    );
    let mut altered = server.token(129, "ann");
    let last = altered.pop().expect("non-empty");
    altered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        code(try_login(&server, 129, &altered).await),
        ErrorCode::BadToken
    );
    // A token of 130 logging in as 129: APPCODE_MISMATCH.
    let of_130 = server.token(130, "ann");
    assert_eq!(
        code(try_login(&server, 129, &of_130).await),
        ErrorCode::AppcodeMismatch
    );
    // Signed with 130's key but claiming 129: no key of 129 verifies it.
    let cross = hs(SECRET_130, None, &claims(129, "ann", t));
    assert_eq!(
        code(try_login(&server, 129, &cross).await),
        ErrorCode::BadToken
    );
    // An alg the appcode has no key for (RS256 header over an HMAC): refused.
    let header_swap = {
        let good = server.token(129, "ann");
        let mut parts: Vec<&str> = good.split('.').collect();
        let rs_header = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"; // {"alg":"RS256","typ":"JWT"}
        parts[0] = rs_header;
        parts.join(".")
    };
    assert_eq!(
        code(try_login(&server, 129, &header_swap).await),
        ErrorCode::BadToken
    );
    // And the right token still works.
    let ok = try_login(&server, 129, &server.token(129, "ann"))
        .await
        .expect("valid token");
    assert_eq!(ok.uid, "ann");
    server.stop().await;
}

#[tokio::test]
async fn rs256_es256_and_two_hs256_keys_verify_and_a_removed_key_fails() {
    let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .expect("RSA key");
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("EC key");
    let other_rsa =
        rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .expect("RSA key");
    let dir = tempfile::tempdir().expect("dir");
    let ec_file = dir.path().join("ec.pub.pem");
    std::fs::write(&ec_file, ec.public_key_pem()).expect("write");
    let rsa_public = rsa.public_key_pem();
    let ec_path = ec_file.display().to_string();
    let with_keys = |old: bool| {
        let rsa_public = rsa_public.clone();
        let ec_path = ec_path.clone();
        move |config: &mut longlink_server::Config| {
            let app129 = config
                .apps
                .iter_mut()
                .find(|a| a.appcode == 129)
                .expect("129");
            app129.secret.clear();
            app129.keys = vec![key("new", "HS256", "new-secret-129", "")];
            if old {
                app129.keys.push(key("old", "HS256", "old-secret-129", ""));
            }
            // Inline PEM.
            app129.keys.push(key("rsa", "RS256", "", &rsa_public));
            let app130 = config
                .apps
                .iter_mut()
                .find(|a| a.appcode == 130)
                .expect("130");
            // A PEM file, next to the original secret.
            app130.keys = vec![key("ec", "ES256", "", &ec_path)];
        }
    };
    let server = TestServer::start_with(with_keys(true)).await;
    let t = now();
    let rsa_key = EncodingKey::from_rsa_pem(rsa.serialize_pem().as_bytes()).expect("rsa pem");
    let ec_key = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("ec pem");
    let rs_token = sign(
        Algorithm::RS256,
        Some("rsa"),
        &rsa_key,
        &claims(129, "rita", t),
    );
    assert_eq!(
        try_login(&server, 129, &rs_token).await.expect("RS256").uid,
        "rita"
    );
    let rs_no_kid = sign(Algorithm::RS256, None, &rsa_key, &claims(129, "rita", t));
    assert_eq!(
        try_login(&server, 129, &rs_no_kid)
            .await
            .expect("RS256, no kid")
            .uid,
        "rita"
    );
    for kid in [Some("ec"), None] {
        let es_token = sign(Algorithm::ES256, kid, &ec_key, &claims(130, "eli", t));
        assert_eq!(
            try_login(&server, 130, &es_token).await.expect("ES256").uid,
            "eli"
        );
    }
    // The original secret of 130 still works beside its ES256 key.
    let legacy = hs(SECRET_130, None, &claims(130, "eli", t));
    assert!(try_login(&server, 130, &legacy).await.is_ok());
    // Another RSA key claiming kid "rsa": refused; the ES256 key of 130 for 129: refused.
    let impostor_key =
        EncodingKey::from_rsa_pem(other_rsa.serialize_pem().as_bytes()).expect("rsa pem");
    let impostor = sign(
        Algorithm::RS256,
        Some("rsa"),
        &impostor_key,
        &claims(129, "rita", t),
    );
    assert_eq!(
        code(try_login(&server, 129, &impostor).await),
        ErrorCode::BadToken
    );
    let es_for_129 = sign(
        Algorithm::ES256,
        Some("ec"),
        &ec_key,
        &claims(129, "rita", t),
    );
    assert_eq!(
        code(try_login(&server, 129, &es_for_129).await),
        ErrorCode::BadToken
    );
    // The removed legacy secret of 129 no longer verifies.
    let legacy_129 = hs(SECRET_129, None, &claims(129, "rita", t));
    assert_eq!(
        code(try_login(&server, 129, &legacy_129).await),
        ErrorCode::BadToken
    );

    // Rotation: old and new both valid, with or without kid.
    let old_token = hs("old-secret-129", Some("old"), &claims(129, "otto", t));
    let new_token = hs("new-secret-129", Some("new"), &claims(129, "otto", t));
    let old_no_kid = hs("old-secret-129", None, &claims(129, "otto", t));
    for token in [&old_token, &new_token, &old_no_kid] {
        assert_eq!(
            try_login(&server, 129, token).await.expect("both keys").uid,
            "otto"
        );
    }
    // The testkit mints with the first HS256 key: "new".
    let minted = server.token(129, "otto");
    assert_eq!(
        jsonwebtoken::decode_header(&minted)
            .expect("header")
            .kid
            .as_deref(),
        Some("new")
    );
    server.stop().await;

    // The old key removed: its tokens fail, the new key's still pass.
    let server = TestServer::start_with(with_keys(false)).await;
    assert_eq!(
        code(try_login(&server, 129, &old_token).await),
        ErrorCode::BadToken
    );
    assert_eq!(
        code(try_login(&server, 129, &old_no_kid).await),
        ErrorCode::BadToken
    );
    assert!(try_login(&server, 129, &new_token).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn a_bad_key_config_is_refused_naming_the_key() {
    let mut config = longlink_server::Config::default();
    let app = config
        .apps
        .iter_mut()
        .find(|a| a.appcode == 129)
        .expect("129");
    app.keys = vec![key("k", "RS256", "", "/nonexistent/key.pem")];
    let text = toml_of(&config);
    let err = longlink_server::Config::from_toml(&text, &Default::default())
        .expect_err("unreadable key file");
    assert!(err.to_string().contains("kid=\"k\""), "{err}");
    let text = longlink_server::DEFAULT_CONFIG.replace(
        "secret = \"dev-secret-129-change-me\"",
        "secret = \"dev-secret-129-change-me\"\n[[apps.keys]]\nkid = \"x\"\nalg = \"ES256\"\nsecret = \"a-secret-for-ec\"",
    );
    let err = longlink_server::Config::from_toml(&text, &Default::default())
        .expect_err("a secret for an EC key");
    assert!(err.to_string().contains("public_key"), "{err}");
}

/// The default config with 129's keys replaced by `[[apps.keys]]` (the rest as shipped).
fn toml_of(config: &longlink_server::Config) -> String {
    let app = config.apps.iter().find(|a| a.appcode == 129).expect("129");
    let keys: String = app
        .keys
        .iter()
        .map(|k| {
            format!(
                "[[apps.keys]]\nkid = {:?}\nalg = {:?}\npublic_key = {:?}\n",
                k.kid, k.alg, k.public_key
            )
        })
        .collect();
    longlink_server::DEFAULT_CONFIG.replace(
        "secret = \"dev-secret-129-change-me\"",
        &format!("secret = \"dev-secret-129-change-me\"\n{keys}"),
    )
}

#[tokio::test]
async fn revocation_kicks_refuses_resume_and_old_tokens_but_not_new_ones() {
    let mut server = TestServer::start_with(|config| {
        config
            .api_keys
            .push(longlink_server::config::ApiKeySection {
                name: "drivers".into(),
                key: "drivers-key".into(),
                appcodes: vec![130],
            });
    })
    .await;
    // alice's tokens, issued a little while ago; her phone online, her pad held.
    let old = hs(SECRET_129, None, &claims(129, "alice", now() - 5));
    let (mut phone, phone_login) =
        Conn::logged_in(server.gate_addr(), login_with(129, &old, "phone")).await;
    let (pad, pad_login) = Conn::logged_in(server.gate_addr(), login_with(129, &old, "pad")).await;
    drop(pad);
    wait_held(&server, 0, 1).await;
    let (mut bob, _) = Conn::logged_in(
        server.gate_addr(),
        login_with(130, &server.token(130, "bob"), "phone"),
    )
    .await;
    phone.keepalive().await;

    let api = server.api();
    // A key must cover the appcode; arguments are checked.
    let (status, _) = api
        .with_key(Some("drivers-key"))
        .post(
            "/v1/tokens/revoke",
            &json!({"appcode": 129, "uid": "alice"}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = api
        .post("/v1/tokens/revoke", &json!({"appcode": 129, "uid": ""}))
        .await;
    assert_eq!(status, 400);
    let future = longlink_proto::unix_ms() + 3_600_000;
    let (status, _) = api
        .post(
            "/v1/tokens/revoke",
            &json!({"appcode": 129, "uid": "alice", "before_ms": future}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        presence_sessions(&server, 129, "alice").await.len(),
        2,
        "nothing revoked yet"
    );

    let (status, body) = api
        .post(
            "/v1/tokens/revoke",
            &json!({"appcode": 129, "uid": "alice"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kicked"], 2, "{body}");
    let before_ms = body["before_ms"].as_u64().expect("before_ms");

    // The online session is kicked (LOGGED_OUT) and closed; the held one ended.
    let frames = phone.until_closed().await;
    let kicked = kicks(&frames);
    assert_eq!(kicked.len(), 1, "{frames:?}");
    assert_eq!(reason(&kicked[0]), KickReason::LoggedOut);
    wait_held(&server, 0, 0).await;
    // Neither session can come back by RESUME.
    for token in [&phone_login.resume_token, &pad_login.resume_token] {
        let mut conn = Conn::connect(server.gate_addr()).await;
        let refused = conn
            .resume(resume_request(token))
            .await
            .expect_err("revoked");
        assert_eq!(refused.code, ErrorCode::ResumeRejected);
    }
    // The old token is refused; one issued after the revocation works; bob never noticed.
    assert_eq!(
        code(try_login(&server, 129, &old).await),
        ErrorCode::BadToken
    );
    let fresh = hs(
        SECRET_129,
        None,
        &claims(129, "alice", before_ms.div_ceil(1000)),
    );
    assert!(try_login(&server, 129, &fresh).await.is_ok());
    bob.keepalive().await;
    assert_eq!(presence_sessions(&server, 130, "bob").await.len(), 1);

    // Durable: after a restart the old token is still refused, the fresh one accepted.
    drop(bob);
    server.restart().await;
    assert_eq!(
        code(try_login(&server, 129, &old).await),
        ErrorCode::BadToken
    );
    assert!(try_login(&server, 129, &fresh).await.is_ok());
    // Revoking again with an earlier instant does not move it back.
    let (status, body) = server
        .api()
        .post(
            "/v1/tokens/revoke",
            &json!({"appcode": 129, "uid": "alice", "before_ms": 1000}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["before_ms"].as_u64(), Some(before_ms));
    server.stop().await;
}

/// A raw connection from `source` (any 127.0.0.0/8 address is loopback on Linux), so the
/// gate sees distinct client IPs.
async fn connect_from(
    source: IpAddr,
    gate: SocketAddr,
) -> Framed<tokio::net::TcpStream, FrameCodec> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind source");
    let stream = tokio::time::timeout(WAIT, socket.connect(gate))
        .await
        .expect("connect in time")
        .expect("connect");
    Framed::new(stream, FrameCodec::new(u32::MAX))
}

/// LOGIN from `source`: Ok(uid) or the refusal's code and retry_after_ms.
async fn login_from(
    source: &str,
    server: &TestServer,
    appcode: u32,
    token: &str,
) -> Result<String, (ErrorCode, u32)> {
    let mut framed = connect_from(source.parse().expect("ip"), server.gate_addr()).await;
    framed
        .send(Frame::request(
            Cmd::Login,
            1,
            0,
            &login_with(appcode, token, "phone"),
        ))
        .await
        .expect("send");
    let answer = tokio::time::timeout(WAIT, framed.next())
        .await
        .expect("an answer in time")
        .expect("an answer")
        .expect("a frame");
    assert_eq!(answer.header.frame_type, FrameType::Response);
    if answer.cmd() == Some(Cmd::Login) {
        let response: wire::LoginResponse = answer.decode_body().expect("LoginResponse");
        return Ok(response.uid);
    }
    let error: wire::Error = answer.decode_body().expect("Error");
    Err((
        ErrorCode::try_from(error.code).expect("known code"),
        error.retry_after_ms,
    ))
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_ip_and_per_uid() {
    let server = TestServer::start_with(|config| {
        config.logic.login_failures_per_ip = 4;
        config.logic.login_failures_per_uid = 2;
        config.logic.login_failure_window_secs = 600;
        config.logic.login_lockout_secs = 600;
    })
    .await;
    let t = now();
    // Per uid: three bad tokens naming mallory, from two addresses (each under its IP limit).
    let bad_mallory = hs("guessed-secret", None, &claims(129, "mallory", t));
    for source in ["127.0.0.2", "127.0.0.3", "127.0.0.2"] {
        let refused = login_from(source, &server, 129, &bad_mallory)
            .await
            .unwrap_err();
        assert_eq!(refused.0, ErrorCode::BadToken);
    }
    // Now even mallory's valid token is refused, from anywhere, with a retry_after_ms...
    let good_mallory = server.token(129, "mallory");
    let (code, retry_after_ms) = login_from("127.0.0.5", &server, 129, &good_mallory)
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(
        retry_after_ms > 0 && retry_after_ms <= 600_000,
        "{retry_after_ms}"
    );
    // ...while other users log in from the same addresses, and mallory of appcode 130 too.
    assert_eq!(
        login_from("127.0.0.2", &server, 129, &server.token(129, "carol")).await,
        Ok("carol".to_owned())
    );
    assert_eq!(
        login_from("127.0.0.3", &server, 130, &server.token(130, "mallory")).await,
        Ok("mallory".to_owned())
    );

    // Per IP: garbage from 127.0.0.4 (no uid to blame) trips its limit after 4 failures.
    for _ in 0..5 {
        let refused = login_from("127.0.0.4", &server, 129, "not-a-token")
            .await
            .unwrap_err();
        assert_eq!(refused.0, ErrorCode::BadToken);
    }
    let (code, retry_after_ms) = login_from("127.0.0.4", &server, 129, &server.token(129, "dave"))
        .await
        .unwrap_err();
    assert_eq!(code, ErrorCode::RateLimited);
    assert!(retry_after_ms > 0, "{retry_after_ms}");
    // dave logs in from elsewhere; the SDK on 127.0.0.1 too.
    assert_eq!(
        login_from("127.0.0.6", &server, 129, &server.token(129, "dave")).await,
        Ok("dave".to_owned())
    );
    let (client, _incoming) = server.client(129, "erin", "phone").await;
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn an_app_dispatches_with_its_own_login_token_for_itself_only() {
    let server = TestServer::start().await;
    let token = server.token(129, "alice");
    let app = server.api().with_key(Some(&token));
    let (status, body) = app.get("/v1/dispatch?appcode=129").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["gates"][0]["addr"],
        server.gate_addr().to_string(),
        "{body}"
    );
    assert_eq!(app.get("/v1/dispatch?appcode=129&uid=alice").await.0, 200);
    // Another uid, another appcode, garbage: refused.
    assert_eq!(app.get("/v1/dispatch?appcode=129&uid=bob").await.0, 403);
    assert_eq!(app.get("/v1/dispatch?appcode=130").await.0, 401);
    let garbage = server.api().with_key(Some("not-a-token"));
    assert_eq!(garbage.get("/v1/dispatch?appcode=129").await.0, 401);
    // A login token opens nothing else.
    assert_eq!(app.get("/v1/presence/129/alice").await.0, 401);
    // Revoked: refused like at LOGIN.
    let (status, _) = server
        .api()
        .post(
            "/v1/tokens/revoke",
            &json!({"appcode": 129, "uid": "alice"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(app.get("/v1/dispatch?appcode=129").await.0, 401);
    server.stop().await;
}
