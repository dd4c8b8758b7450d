//! PUSH_TOKEN (cmd 25) and NOTIFICATION_ACK (cmd 26) end to end over real sockets (issue 12):
//! the client side of offline push notifications. A refused token or a bad receipt is a
//! request-level ERROR — the connection stays, since a device with a stale provider name must
//! still chat — receipts for notifications that are not the device's match nothing, and a
//! client that knows neither command (every client before issue 12) is unaffected.
//!
//! The first tests hold on a server without `[push]` providers (it refuses every
//! registration); those in `with_a_provider` configure one `[[push.http]]` vendor channel
//! (never called: no message goes to an offline user there) for register, list, remove and
//! "a logout removes the device's tokens".

use longlink_proto::{Cmd, ErrorCode, Frame, MAX_NOTIFICATION_ACK_IDS, wire};
use longlink_sdk::{ClientError, NotificationAck};
use longlink_testkit::{RawClient, TestServer, WAIT, error_of, is_response};

fn server_code(err: &ClientError) -> Option<ErrorCode> {
    err.server_code()
}

/// A raw client logged in as `(appcode, uid)` on `device`.
async fn raw_login(server: &TestServer, appcode: u32, uid: &str, device: &str) -> RawClient {
    let mut raw = RawClient::connect(server.gate_addr())
        .await
        .expect("connect");
    let answer = raw
        .login(appcode, &server.token(appcode, uid), device)
        .await
        .expect("login answer");
    assert!(
        is_response(&answer, Cmd::Login),
        "login refused: {answer:?}"
    );
    raw
}

/// Sends `frame` (a request made with [`Frame::request`]) and returns the answer with its
/// seq_id (pushes in between are skipped).
async fn request(raw: &mut RawClient, frame: Frame) -> Frame {
    let seq_id = frame.header.seq_id;
    raw.send(frame).await.expect("send");
    loop {
        let frame = tokio::time::timeout(WAIT, raw.recv())
            .await
            .expect("an answer within the wait")
            .expect("the connection stays open");
        if frame.header.seq_id == seq_id {
            return frame;
        }
    }
}

/// The connection still serves requests: a KEEPALIVE round trip.
async fn still_open(raw: &mut RawClient, seq_id: u32) {
    let pong = request(
        raw,
        Frame::request(
            Cmd::Keepalive,
            seq_id,
            7,
            &wire::KeepaliveRequest { client_time_ms: 1 },
        ),
    )
    .await;
    assert!(is_response(&pong, Cmd::Keepalive), "{pong:?}");
}

#[tokio::test]
async fn an_unknown_provider_is_invalid_argument_and_the_session_stays() {
    let server = TestServer::start().await;
    let (client, _incoming) = server.client(129, "alice", "phone").await;
    let err = client
        .register_push_token("no-such-provider", "token-1")
        .await
        .expect_err("no provider is configured");
    assert_eq!(server_code(&err), Some(ErrorCode::InvalidArgument), "{err}");
    assert!(client.is_connected());
    // Nothing was registered; the same connection answers the next request.
    assert_eq!(client.push_tokens().await.expect("list"), Vec::new());
    assert_eq!(
        client.remove_push_token(None).await.expect("remove all"),
        Vec::new()
    );
    client.keepalive().await.expect("still served");
}

#[tokio::test]
async fn receipts_of_unknown_notifications_match_nothing() {
    let server = TestServer::start().await;
    let (client, _incoming) = server.client(129, "alice", "phone").await;
    let outcome = client.ack_notification(424_242).await.expect("answered");
    assert_eq!(outcome, NotificationAck::Sent { matched: 0 });
    assert_eq!(client.pending_notification_acks(), 0);

    // The raw command: several ids, and an empty list.
    let mut raw = raw_login(&server, 129, "bob", "tablet").await;
    let ids = vec![1, 2, 3, u64::MAX];
    let answer = request(
        &mut raw,
        Frame::request(Cmd::NotificationAck, 2, 7, &wire::NotificationAck { ids }),
    )
    .await;
    assert!(is_response(&answer, Cmd::NotificationAck), "{answer:?}");
    let body: wire::NotificationAckResponse = answer.decode_body().expect("body");
    assert_eq!(body.matched, 0);
    let empty = wire::NotificationAck { ids: Vec::new() };
    let answer = request(&mut raw, Frame::request(Cmd::NotificationAck, 3, 7, &empty)).await;
    let body: wire::NotificationAckResponse = answer.decode_body().expect("body");
    assert_eq!(body.matched, 0);
}

#[tokio::test]
async fn too_many_receipts_or_an_unknown_op_are_invalid_argument_not_a_close() {
    let server = TestServer::start().await;
    let mut raw = raw_login(&server, 129, "alice", "phone").await;

    let ids: Vec<u64> = (1..=MAX_NOTIFICATION_ACK_IDS as u64 + 1).collect();
    let answer = request(
        &mut raw,
        Frame::request(Cmd::NotificationAck, 2, 7, &wire::NotificationAck { ids }),
    )
    .await;
    let (code, _) = error_of(&answer).expect("an ERROR");
    assert_eq!(code, ErrorCode::InvalidArgument);
    // Exactly the limit is fine.
    let ids: Vec<u64> = (1..=MAX_NOTIFICATION_ACK_IDS as u64).collect();
    let answer = request(
        &mut raw,
        Frame::request(Cmd::NotificationAck, 3, 7, &wire::NotificationAck { ids }),
    )
    .await;
    assert!(is_response(&answer, Cmd::NotificationAck), "{answer:?}");

    // An op from a future protocol version.
    let unknown_op = wire::PushTokenRequest {
        op: 9,
        provider: "fcm".to_owned(),
        ..Default::default()
    };
    let answer = request(&mut raw, Frame::request(Cmd::PushToken, 4, 7, &unknown_op)).await;
    let (code, _) = error_of(&answer).expect("an ERROR");
    assert_eq!(code, ErrorCode::InvalidArgument);
    // REGISTER without a provider or token.
    let answer = request(
        &mut raw,
        Frame::request(Cmd::PushToken, 5, 7, &wire::PushTokenRequest::default()),
    )
    .await;
    let (code, _) = error_of(&answer).expect("an ERROR");
    assert_eq!(code, ErrorCode::InvalidArgument);
    // LIST answers this device's tokens: none.
    let list = wire::PushTokenRequest {
        op: wire::PushTokenOp::List as i32,
        ..Default::default()
    };
    let answer = request(&mut raw, Frame::request(Cmd::PushToken, 6, 7, &list)).await;
    let body: wire::PushTokenResponse = answer.decode_body().expect("PushTokenResponse");
    assert!(body.tokens.is_empty());
    still_open(&mut raw, 7).await;
}

#[tokio::test]
async fn a_client_that_knows_neither_command_is_unaffected() {
    let server = TestServer::start().await;
    // A new client registers (refused here) and acknowledges notifications…
    let (alice, _alice_in) = server.client(129, "alice", "phone").await;
    let _ = alice.register_push_token("apns", "t").await;
    alice.ack_notification(1).await.expect("answered");
    // …while an old one, speaking only the commands it always knew, chats as before.
    let mut bob = raw_login(&server, 130, "bob", "old-phone").await;
    let c2c = wire::C2cRequest {
        to: Some(wire::UserRef {
            appcode: 129,
            uid: "alice".to_owned(),
        }),
        client_msg_id: "old-1".to_owned(),
        content_type: wire::ContentType::Text as i32,
        content: "hi from an old client".into(),
        ..Default::default()
    };
    let answer = request(&mut bob, Frame::request(Cmd::C2c, 2, 7, &c2c)).await;
    assert!(is_response(&answer, Cmd::C2c), "{answer:?}");
    let stored: wire::C2cResponse = answer.decode_body().expect("C2cResponse");
    assert_ne!(stored.msgid, 0);
    let pull = wire::OfflinePullRequest::default();
    let answer = request(&mut bob, Frame::request(Cmd::OfflinePull, 3, 7, &pull)).await;
    assert!(is_response(&answer, Cmd::OfflinePull), "{answer:?}");
    still_open(&mut bob, 4).await;
    server.assert_others_unaffected().await;
}

mod with_a_provider {
    use longlink_proto::ErrorCode;
    use longlink_sdk::PushTokenInfo;
    use longlink_testkit::TestServer;

    /// A server with one vendor channel named "vendor" (its URL is never called here).
    async fn server() -> TestServer {
        TestServer::start_with(|config| {
            config.push.enabled = true;
            config.push.http.push(Default::default());
            if let Some(vendor) = config.push.http.last_mut() {
                vendor.name = "vendor".to_owned();
                vendor.url = "http://127.0.0.1:9/push".to_owned();
            }
        })
        .await
    }

    fn info(provider: &str, token: &str) -> PushTokenInfo {
        PushTokenInfo {
            provider: provider.to_owned(),
            token: token.to_owned(),
        }
    }

    #[tokio::test]
    async fn a_device_registers_replaces_lists_and_removes_its_token() {
        let server = server().await;
        let (phone, _phone_in) = server.client(129, "alice", "phone").await;
        let tokens = phone
            .register_push_token("vendor", "tok-1")
            .await
            .expect("registered");
        assert_eq!(tokens, vec![info("vendor", "tok-1")]);
        // The provider rotated the token: one token per provider, the newest.
        let tokens = phone
            .register_push_token("vendor", "tok-2")
            .await
            .expect("replaced");
        assert_eq!(tokens, vec![info("vendor", "tok-2")]);
        assert_eq!(phone.push_tokens().await.expect("listed"), tokens);
        // Still refused: a provider this server does not configure.
        let err = phone
            .register_push_token("apns", "a")
            .await
            .expect_err("apns is not configured");
        assert_eq!(err.server_code(), Some(ErrorCode::InvalidArgument), "{err}");

        // Scoped to the device: the user's other device, and another user, see none of it.
        let (tablet, _tablet_in) = server.client(129, "alice", "tablet").await;
        assert_eq!(tablet.push_tokens().await.expect("listed"), Vec::new());
        let (bob, _bob_in) = server.client(129, "bob", "phone").await;
        assert_eq!(bob.push_tokens().await.expect("listed"), Vec::new());
        assert_eq!(
            bob.remove_push_token(None).await.expect("nothing"),
            Vec::new()
        );
        assert_eq!(phone.push_tokens().await.expect("listed"), tokens);

        assert_eq!(
            phone
                .remove_push_token(Some("vendor"))
                .await
                .expect("removed"),
            Vec::new()
        );
        assert_eq!(phone.push_tokens().await.expect("listed"), Vec::new());
    }

    #[tokio::test]
    async fn a_logout_removes_the_device_tokens_and_a_dropped_link_does_not() {
        let server = server().await;
        let (phone, _phone_in) = server.client(129, "carol", "phone").await;
        phone
            .register_push_token("vendor", "tok-c")
            .await
            .expect("registered");
        // A dropped link (the app went to the background): the token stays.
        phone.close().await;
        let (phone, _phone_in) = server.client(129, "carol", "phone").await;
        assert_eq!(
            phone.push_tokens().await.expect("listed"),
            vec![info("vendor", "tok-c")]
        );
        // A logout: the device must not be notified of the next user's messages.
        phone.logout().await.expect("logged out");
        let (phone, _phone_in) = server.client(129, "carol", "phone").await;
        assert_eq!(phone.push_tokens().await.expect("listed"), Vec::new());
    }
}

/// The whole client surface through a real notification: the SDK registers its token, the
/// device is unreachable when a message comes, the vendor channel gets the notification, the
/// app reports its receipt while still offline, and the SDK delivers that receipt by itself
/// after it reconnects — the server counts it for the provider.
mod a_receipt_made_offline {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use longlink_push_fakes::FakeHttp;
    use longlink_sdk::{Content, NotificationAck, ReconnectPolicy, UserRef};
    use longlink_testkit::{TestServer, wait_until};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::sync::CancellationToken;

    const WAIT: Duration = Duration::from_secs(20);

    /// A TCP forwarder to the gate that can be closed (links cut, new connections dropped at
    /// once) and opened again: a phone without network, then with.
    struct Link {
        addr: SocketAddr,
        open: Arc<AtomicBool>,
        cut: Arc<std::sync::Mutex<CancellationToken>>,
        stop: CancellationToken,
    }

    impl Link {
        async fn start(target: SocketAddr) -> Link {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let open = Arc::new(AtomicBool::new(true));
            let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
            let stop = CancellationToken::new();
            let (is_open, links, done) = (open.clone(), cut.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        () = done.cancelled() => return,
                        accepted = listener.accept() => accepted,
                    };
                    let Ok((client, _)) = accepted else { return };
                    if !is_open.load(Ordering::Acquire) {
                        continue; // dropped: the client sees the connection end at once
                    }
                    let cut = links.lock().expect("lock").clone();
                    tokio::spawn(forward(client, target, cut));
                }
            });
            Link {
                addr,
                open,
                cut,
                stop,
            }
        }

        fn close(&self) {
            self.open.store(false, Ordering::Release);
            let old = std::mem::replace(
                &mut *self.cut.lock().expect("lock"),
                CancellationToken::new(),
            );
            old.cancel();
        }

        fn reopen(&self) {
            self.open.store(true, Ordering::Release);
        }
    }

    impl Drop for Link {
        fn drop(&mut self) {
            self.stop.cancel();
            self.close();
        }
    }

    async fn forward(mut client: TcpStream, target: SocketAddr, cut: CancellationToken) {
        let Ok(mut server) = TcpStream::connect(target).await else {
            return;
        };
        tokio::select! {
            () = cut.cancelled() => {}
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn is_sent_after_the_reconnect_and_counts_for_the_provider() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = FakeHttp::start().await.expect("fake vendor");
        let ca = fake.write_ca(dir.path(), "vendor-ca.pem").expect("ca file");
        let server = TestServer::start_with(|config| {
            config.push.grace_ms = 200;
            config.push.http.push(Default::default());
            if let Some(vendor) = config.push.http.last_mut() {
                vendor.name = "vendor".to_owned();
                vendor.url = format!("{}/push", fake.url());
                vendor.body = r#"{"token": "{{token}}", "data": "{{data_json}}"}"#.to_owned();
                vendor.ca_file = ca.display().to_string();
            }
        })
        .await;
        let link = Link::start(server.gate_addr()).await;
        let mut config = server.client_config(129, "bob", "phone");
        config.addr = link.addr.to_string();
        config.platform = "android".to_owned();
        config.vendor = "xiaomi".to_owned();
        config.reconnect = Some(ReconnectPolicy {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..ReconnectPolicy::default()
        });
        let (bob, _bob_in) = longlink_sdk::Client::connect(config)
            .await
            .expect("bob connects");
        bob.register_push_token("vendor", "tok-bob")
            .await
            .expect("registered");

        // The phone loses its network; a message comes.
        link.close();
        wait_until(WAIT, || async { !bob.is_connected() })
            .await
            .expect("bob notices the drop");
        let (alice, _alice_in) = server.client(129, "alice", "phone").await;
        alice
            .c2c(UserRef::new(129, "bob"), Content::text("are you there?"))
            .await
            .expect("stored");
        fake.wait_count(1, WAIT)
            .await
            .unwrap_or_else(|got| panic!("expected a notification, got {got} requests"));
        let request = &fake.requests()[0];
        assert_eq!(request.json()["token"], "tok-bob");
        let nid: u64 = request.json()["data"]["ll_nid"]
            .as_str()
            .and_then(|nid| nid.parse().ok())
            .expect("ll_nid in the payload");

        // The notification handler runs while the app is still offline: the receipt waits.
        assert!(!bob.is_connected());
        let outcome = bob.ack_notification(nid).await.expect("kept");
        assert_eq!(outcome, NotificationAck::Pending);
        assert_eq!(bob.pending_notification_acks(), 1);

        // The network is back: the SDK reconnects and sends the receipt by itself.
        link.reopen();
        let api = server.api();
        wait_until(WAIT, || async {
            let (status, stats) = api.get("/v1/push-providers/stats").await;
            status == 200 && stats["providers"][0]["classes"][0]["receipts"] == 1
        })
        .await
        .expect("the server counted the receipt");
        assert_eq!(bob.pending_notification_acks(), 0);
        // Counted for the device class the SDK registered with (config platform and vendor).
        let (_, stats) = api.get("/v1/push-providers/stats").await;
        assert_eq!(
            stats["providers"][0]["classes"][0]["class"],
            "android/xiaomi/*"
        );
        // Repeating it is harmless: nothing more matches.
        assert_eq!(
            bob.ack_notification(nid).await.expect("answered"),
            NotificationAck::Sent { matched: 0 }
        );
    }
}
