//! Offline push from the client's side (issue 12), against the scripted fake gate (see
//! `common`): push tokens are registered, listed and removed with PUSH_TOKEN carrying the
//! device class of the config; notification receipts go out at once when connected, and wait
//! (bounded, batched in one NOTIFICATION_ACK) for the next login when not — the receipts are
//! what the server's provider selection learns from, so losing them across a reconnect would
//! bias it. Every wait is on a frame or an event, bounded by `WAIT`.

mod common;

use common::*;
use longlink_proto::{Cmd, MAX_NOTIFICATION_ACK_IDS, wire};
use longlink_sdk::{ClientError, ErrorCode, Event, NotificationAck, PushTokenInfo};

fn token(provider: &str, token: &str) -> wire::PushTokenInfo {
    wire::PushTokenInfo {
        provider: provider.to_owned(),
        token: token.to_owned(),
    }
}

#[tokio::test]
async fn push_tokens_are_registered_listed_and_removed_with_the_device_class() {
    let gate = Gate::start().await;
    let mut config = gate.config();
    config.platform = "android".to_owned();
    config.vendor = "xiaomi".to_owned();
    config.app_version = "2.3.1".to_owned();
    let (client, _incoming, mut conn) = gate.connect_with(config).await;

    let script = async {
        let frame = conn.recv_request(Cmd::PushToken).await;
        let request: wire::PushTokenRequest = frame.decode_body().expect("PushTokenRequest");
        assert_eq!(request.op, wire::PushTokenOp::Register as i32);
        assert_eq!(
            (request.provider.as_str(), request.token.as_str()),
            ("xiaomi", "tok-1")
        );
        assert_eq!(
            (
                request.platform.as_str(),
                request.vendor.as_str(),
                request.app_version.as_str()
            ),
            ("android", "xiaomi", "2.3.1")
        );
        let tokens = vec![token("fcm", "f-0"), token("xiaomi", "tok-1")];
        conn.respond(&frame, &wire::PushTokenResponse { tokens })
            .await;
    };
    let (registered, ()) = tokio::join!(client.register_push_token("xiaomi", "tok-1"), script);
    let registered = registered.expect("registered");
    assert_eq!(
        registered,
        vec![
            PushTokenInfo {
                provider: "fcm".to_owned(),
                token: "f-0".to_owned()
            },
            PushTokenInfo {
                provider: "xiaomi".to_owned(),
                token: "tok-1".to_owned()
            },
        ]
    );

    let script = async {
        let frame = conn.recv_request(Cmd::PushToken).await;
        let request: wire::PushTokenRequest = frame.decode_body().expect("PushTokenRequest");
        assert_eq!(request.op, wire::PushTokenOp::List as i32);
        let tokens = vec![token("xiaomi", "tok-1")];
        conn.respond(&frame, &wire::PushTokenResponse { tokens })
            .await;
    };
    let (listed, ()) = tokio::join!(client.push_tokens(), script);
    assert_eq!(listed.expect("listed").len(), 1);

    let script = async {
        let frame = conn.recv_request(Cmd::PushToken).await;
        let request: wire::PushTokenRequest = frame.decode_body().expect("PushTokenRequest");
        assert_eq!(request.op, wire::PushTokenOp::Remove as i32);
        assert_eq!(request.provider, "fcm");
        conn.respond(&frame, &wire::PushTokenResponse { tokens: Vec::new() })
            .await;
        // `None` removes every token: an empty provider.
        let frame = conn.recv_request(Cmd::PushToken).await;
        let request: wire::PushTokenRequest = frame.decode_body().expect("PushTokenRequest");
        assert_eq!(request.op, wire::PushTokenOp::Remove as i32);
        assert_eq!(request.provider, "");
        conn.respond(&frame, &wire::PushTokenResponse { tokens: Vec::new() })
            .await;
    };
    let (removed, ()) = tokio::join!(
        async {
            let one = client.remove_push_token(Some("fcm")).await;
            let all = client.remove_push_token(None).await;
            (one, all)
        },
        script
    );
    assert_eq!(removed.0.expect("removed one"), Vec::new());
    assert_eq!(removed.1.expect("removed all"), Vec::new());
}

#[tokio::test]
async fn an_unknown_provider_is_a_server_error_and_the_client_stays_usable() {
    let gate = Gate::start().await;
    let (client, _incoming, mut conn) = gate.connect().await;
    let script = async {
        let frame = conn.recv_request(Cmd::PushToken).await;
        conn.respond_error(
            &frame,
            ErrorCode::InvalidArgument,
            "push provider \"nope\" is not configured",
        )
        .await;
        let frame = conn.recv_request(Cmd::Keepalive).await;
        conn.respond(&frame, &wire::KeepaliveResponse { server_time_ms: 9 })
            .await;
    };
    let (result, ()) = tokio::join!(
        async {
            let refused = client.register_push_token("nope", "t").await;
            (refused, client.keepalive().await)
        },
        script
    );
    let err = result.0.expect_err("refused");
    assert_eq!(err.server_code(), Some(ErrorCode::InvalidArgument), "{err}");
    assert_eq!(result.1.expect("still usable"), 9);
}

#[tokio::test]
async fn the_default_platform_is_the_os() {
    let gate = Gate::start().await;
    assert_eq!(gate.config().platform, std::env::consts::OS);
    assert_eq!(gate.config().vendor, "");
}

#[tokio::test]
async fn a_receipt_goes_out_at_once_when_connected() {
    let gate = Gate::start().await;
    let (client, _incoming, mut conn) = gate.connect().await;
    let script = async {
        let frame = conn.recv_request(Cmd::NotificationAck).await;
        let ack: wire::NotificationAck = frame.decode_body().expect("NotificationAck");
        assert_eq!(ack.ids, vec![77]);
        conn.respond(&frame, &wire::NotificationAckResponse { matched: 1 })
            .await;
    };
    let (outcome, ()) = tokio::join!(client.ack_notification(77), script);
    assert_eq!(outcome.expect("sent"), NotificationAck::Sent { matched: 1 });
    assert_eq!(client.pending_notification_acks(), 0);
}

#[tokio::test]
async fn receipts_wait_while_disconnected_and_go_out_in_one_frame_after_the_next_login() {
    let gate = Gate::start().await;
    let (client, mut incoming, conn) = gate.connect().await;
    drop(conn);
    let (_, event) = next_non_message(&mut incoming).await;
    assert!(matches!(event, Event::Disconnected { .. }), "{event:?}");

    // Offline: every receipt waits, the oldest dropped beyond the bound.
    let total = MAX_NOTIFICATION_ACK_IDS as u64 + 44;
    for id in 1..=total {
        let outcome = client.ack_notification(id).await.expect("kept");
        assert_eq!(outcome, NotificationAck::Pending);
    }
    // A repeat is kept once.
    client.ack_notification(total).await.expect("kept");
    assert_eq!(client.pending_notification_acks(), MAX_NOTIFICATION_ACK_IDS);

    // The reconnect's login (and its catch-up pull), then the receipts, all in one frame.
    let (mut conn, _) = gate.accept().await;
    let frame = conn.recv_request(Cmd::NotificationAck).await;
    let ack: wire::NotificationAck = frame.decode_body().expect("NotificationAck");
    let want: Vec<u64> = (total - MAX_NOTIFICATION_ACK_IDS as u64 + 1..=total).collect();
    assert_eq!(
        ack.ids, want,
        "the newest receipts, oldest first, once each"
    );
    conn.respond(&frame, &wire::NotificationAckResponse { matched: 3 })
        .await;
    let (_, event) = next_non_message(&mut incoming).await;
    assert!(matches!(event, Event::Reconnected { .. }), "{event:?}");
    assert_eq!(client.pending_notification_acks(), 0);
}

#[tokio::test]
async fn a_transient_refusal_keeps_the_receipt_for_the_next_login() {
    let gate = Gate::start().await;
    let (client, mut incoming, mut conn) = gate.connect().await;
    let script = async {
        let frame = conn.recv_request(Cmd::NotificationAck).await;
        conn.respond_error(&frame, ErrorCode::StoreUnavailable, "registry down")
            .await;
    };
    let (outcome, ()) = tokio::join!(client.ack_notification(5), script);
    assert_eq!(outcome.expect("kept"), NotificationAck::Pending);
    assert_eq!(client.pending_notification_acks(), 1);

    // The next call carries the earlier receipt too.
    let script = async {
        let frame = conn.recv_request(Cmd::NotificationAck).await;
        let ack: wire::NotificationAck = frame.decode_body().expect("NotificationAck");
        assert_eq!(ack.ids, vec![5, 6]);
        conn.respond_error(&frame, ErrorCode::StoreUnavailable, "still down")
            .await;
    };
    let (outcome, ()) = tokio::join!(client.ack_notification(6), script);
    assert_eq!(outcome.expect("kept"), NotificationAck::Pending);

    // A new connection sends both.
    drop(conn);
    let (_, event) = next_non_message(&mut incoming).await;
    assert!(matches!(event, Event::Disconnected { .. }), "{event:?}");
    let (mut conn, _) = gate.accept().await;
    let frame = conn.recv_request(Cmd::NotificationAck).await;
    let ack: wire::NotificationAck = frame.decode_body().expect("NotificationAck");
    assert_eq!(ack.ids, vec![5, 6]);
    conn.respond(&frame, &wire::NotificationAckResponse { matched: 2 })
        .await;
}

#[tokio::test]
async fn a_refusal_retrying_cannot_fix_is_an_error_and_drops_the_receipt() {
    let gate = Gate::start().await;
    let (client, _incoming, mut conn) = gate.connect().await;
    let script = async {
        let frame = conn.recv_request(Cmd::NotificationAck).await;
        conn.respond_error(&frame, ErrorCode::InvalidArgument, "too many ids")
            .await;
    };
    let (outcome, ()) = tokio::join!(client.ack_notification(5), script);
    let err = outcome.expect_err("refused");
    assert!(
        matches!(
            err,
            ClientError::Server {
                code: ErrorCode::InvalidArgument,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(client.pending_notification_acks(), 0);
}

#[tokio::test]
async fn a_closed_client_refuses_receipts() {
    let gate = Gate::start().await;
    let (client, _incoming, _conn) = gate.connect().await;
    let other = client.clone();
    client.close().await;
    let err = other.ack_notification(1).await.expect_err("closed");
    assert!(matches!(err, ClientError::Closed), "{err}");
}
