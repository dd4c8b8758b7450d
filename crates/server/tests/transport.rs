//! The gate's transports over a real node: TLS (SDK clients with a CA made here by rcgen), the
//! plain TCP listener next to it, and WebSocket (a tokio-tungstenite client sending raw
//! longlink frames, one per binary message) — each chatting with the others; and the API's
//! HTTPS and gRPC-over-TLS listeners.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use longlink_proto::{Cmd, ErrorCode, Frame, FrameCodec, FrameType, wire};
use longlink_sdk::{ClientError, Content, Event, Incoming, TlsConfig, UserRef};
use longlink_testkit::{RawClient, TestServer, WAIT, error_of, is_response, wait_until};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::codec::Decoder;

/// A development CA and a server certificate for 127.0.0.1 / localhost it signed, written
/// to `dir`: (ca.pem, server.pem, server-key.pem).
fn write_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server-key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// A node whose gate speaks TLS on `gate.listen` (and wss on `ws_listen`), with a plain TCP
/// listener on loopback; returns it with the CA file clients trust.
async fn tls_node(dir: &Path) -> (TestServer, PathBuf) {
    let (ca, cert, key) = write_certs(dir);
    let server = TestServer::start_with(|config| {
        config.gate.tls_cert = cert;
        config.gate.tls_key = key;
        config.gate.plain_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    (server, ca)
}

fn plain_addr(server: &TestServer) -> SocketAddr {
    server.server().plain_addr().expect("plain listener")
}

fn ws_addr(server: &TestServer) -> SocketAddr {
    server.server().ws_addr().expect("ws listener")
}

/// The next message event, within [`WAIT`].
async fn next_message(incoming: &mut Incoming) -> longlink_sdk::Message {
    loop {
        match tokio::time::timeout(WAIT, incoming.next_event()).await {
            Ok(Some(Event::Message(message))) => return message,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("client ended"),
            Err(_) => panic!("no message within {WAIT:?}"),
        }
    }
}

fn text_of(message: &longlink_sdk::Message) -> &str {
    match &message.content {
        Content::Text(text) => text,
        other => panic!("not text: {other:?}"),
    }
}

#[tokio::test]
async fn a_tls_client_and_a_plain_tcp_client_chat_with_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = tls_node(dir.path()).await;

    let mut tls_config = server.client_config(129, "alice", "phone");
    tls_config.tls = Some(TlsConfig::ca_file(&ca));
    let (alice, mut alice_in) = longlink_sdk::Client::connect(tls_config)
        .await
        .expect("TLS client logs in");
    let mut plain_config = server.client_config(130, "bob", "phone");
    plain_config.addr = plain_addr(&server).to_string();
    let (bob, mut bob_in) = longlink_sdk::Client::connect(plain_config)
        .await
        .expect("plain client logs in on the loopback listener");

    alice
        .c2c(UserRef::new(130, "bob"), Content::text("over tls"))
        .await
        .unwrap();
    assert_eq!(text_of(&next_message(&mut bob_in).await), "over tls");
    bob.c2c(UserRef::new(129, "alice"), Content::text("over tcp"))
        .await
        .unwrap();
    assert_eq!(text_of(&next_message(&mut alice_in).await), "over tcp");

    // A client that trusts another CA does not get in: the handshake fails cleanly.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = write_certs(other.path());
    let mut config = server.client_config(129, "mallory", "phone");
    config.tls = Some(TlsConfig::ca_file(&other_ca));
    config.reconnect = None;
    let refused = longlink_sdk::Client::connect(config).await.err();
    assert!(
        matches!(refused, Some(ClientError::Connect(_))),
        "{refused:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_plain_tcp_client_on_the_tls_port_fails_cleanly_and_the_gate_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = tls_node(dir.path()).await;

    let mut raw = RawClient::connect(server.gate_addr()).await.unwrap();
    // A LOGIN in clear is no TLS ClientHello: the gate drops the connection, and at most
    // sends a TLS alert — never a longlink frame.
    raw.send(Frame::request(
        Cmd::Login,
        1,
        0,
        &wire::LoginRequest::default(),
    ))
    .await
    .unwrap();
    let frames = raw.until_closed().await;
    assert!(
        frames.as_ref().map_or(true, |f| f.is_empty()),
        "no frame over a failed handshake: {frames:?}"
    );
    let gate = server.server().gates()[0].clone();
    wait_until(WAIT, || {
        let gate = gate.clone();
        async move { gate.metrics().handshake_failures("tls") >= 1 }
    })
    .await
    .expect("the failed handshake is counted");

    // The gate still serves TLS clients.
    let mut config = server.client_config(129, "alice", "phone");
    config.tls = Some(TlsConfig::ca_file(&ca));
    let (alice, _incoming) = longlink_sdk::Client::connect(config)
        .await
        .expect("a TLS client still logs in");
    alice.keepalive().await.unwrap();
    server.stop().await;
}

/// A WebSocket client speaking raw longlink frames.
struct WsClient<S> {
    ws: tokio_tungstenite::WebSocketStream<S>,
    codec: FrameCodec,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> WsClient<S> {
    async fn over(stream: S, url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
            .await
            .expect("upgrade in time")
            .expect("WebSocket upgrade");
        Self {
            ws,
            codec: FrameCodec::new(u32::MAX),
        }
    }

    async fn send(&mut self, frame: Frame) {
        self.ws
            .send(Message::Binary(frame.to_bytes()))
            .await
            .unwrap();
    }

    /// The next WebSocket message, within [`WAIT`].
    async fn next_message(&mut self) -> Option<Message> {
        tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("a message in time")
            .map(|m| m.expect("a WebSocket message"))
    }

    /// The next longlink frame: exactly one per binary message.
    /// The next frame, skipping RECEIPT pushes (they arrive whenever a peer acks).
    async fn recv(&mut self) -> Frame {
        loop {
            match self.next_message().await {
                Some(Message::Binary(data)) => {
                    let frame = self.decode_one(&data);
                    if frame.cmd() != Some(Cmd::Receipt) {
                        return frame;
                    }
                }
                Some(Message::Ping(_) | Message::Pong(_)) => continue,
                other => panic!("expected a binary message, got {other:?}"),
            }
        }
    }

    fn decode_one(&mut self, data: &Bytes) -> Frame {
        let mut buf = BytesMut::from(&data[..]);
        let frame = self
            .codec
            .decode(&mut buf)
            .expect("a valid frame")
            .expect("a whole frame");
        assert!(buf.is_empty(), "one frame per binary message");
        frame
    }

    async fn login(&mut self, appcode: u32, token: &str, device: &str) -> Frame {
        let request = wire::LoginRequest {
            token: token.to_owned(),
            appcode,
            device_id: device.to_owned(),
            ..Default::default()
        };
        self.send(Frame::request(Cmd::Login, 1, 0, &request)).await;
        self.recv().await
    }
}

async fn ws_client(server: &TestServer) -> WsClient<TcpStream> {
    let addr = ws_addr(server);
    let tcp = TcpStream::connect(addr).await.unwrap();
    WsClient::over(tcp, &format!("ws://{addr}/")).await
}

#[tokio::test]
async fn a_websocket_client_chats_with_a_tcp_client_and_acks_a_push() {
    let server = TestServer::start().await;
    let mut ws = ws_client(&server).await;
    let answer = ws.login(129, &server.token(129, "alice"), "browser").await;
    assert!(is_response(&answer, Cmd::Login), "{answer:?}");
    let (bob, mut bob_in) = server.client(130, "bob", "phone").await;

    // WS → TCP.
    let c2c = wire::C2cRequest {
        to: Some(wire::UserRef {
            appcode: 130,
            uid: "bob".into(),
        }),
        client_msg_id: "ws-1".into(),
        content_type: wire::ContentType::Text as i32,
        msgtype: 0,
        content: Bytes::from_static(b"from the browser"),
    };
    ws.send(Frame::request(Cmd::C2c, 2, 0, &c2c)).await;
    let answer = ws.recv().await;
    assert!(is_response(&answer, Cmd::C2c), "{answer:?}");
    assert_eq!(
        text_of(&next_message(&mut bob_in).await),
        "from the browser"
    );

    // TCP → WS: a MSG push, then the browser acks it (type 3) and asks (type 0) to be sure.
    let sent = bob
        .c2c(UserRef::new(129, "alice"), Content::text("to the browser"))
        .await
        .unwrap();
    let push = ws.recv().await;
    assert_eq!(push.cmd(), Some(Cmd::Msg));
    assert_eq!(push.header.frame_type, FrameType::Push);
    let msg: wire::Msg = push.decode_body().unwrap();
    assert_eq!(msg.msgid, sent.msgid);
    assert_eq!(&msg.content[..], b"to the browser");
    let ack = wire::MsgAck {
        msgids: vec![msg.msgid],
    };
    ws.send(Frame::new(Cmd::MsgAck, FrameType::Ack, 0, 0, &ack))
        .await;
    ws.send(Frame::request(Cmd::MsgAck, 3, 0, &ack)).await;
    let answer = ws.recv().await;
    assert!(is_response(&answer, Cmd::MsgAck), "{answer:?}");

    // A WebSocket ping is answered (tungstenite) and keeps the session alive.
    ws.ws
        .send(Message::Ping(Bytes::from_static(b"hi")))
        .await
        .unwrap();
    match ws.next_message().await {
        Some(Message::Pong(data)) => assert_eq!(&data[..], b"hi"),
        other => panic!("expected a pong, got {other:?}"),
    }

    // KEEPALIVE works as a frame too.
    ws.send(Frame::request(
        Cmd::Keepalive,
        4,
        0,
        &wire::KeepaliveRequest::default(),
    ))
    .await;
    assert!(is_response(&ws.recv().await, Cmd::Keepalive));
    server.stop().await;
}

#[tokio::test]
async fn a_websocket_text_message_is_closed_with_a_reason() {
    let server = TestServer::start().await;
    let mut ws = ws_client(&server).await;
    ws.ws
        .send(Message::text("{\"cmd\":\"login\"}"))
        .await
        .unwrap();
    // First the ERROR frame (a binary message), then the close frame with the reason.
    let error = ws.recv().await;
    let (code, _) = error_of(&error).unwrap();
    assert_eq!(code, ErrorCode::BadFrameType);
    match ws.next_message().await {
        Some(Message::Close(Some(close))) => {
            assert_eq!(close.code, CloseCode::Unsupported);
            assert!(close.reason.contains("binary"), "{close:?}");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    // The gate stays up for everyone else.
    let mut ws = ws_client(&server).await;
    let answer = ws.login(129, &server.token(129, "alice"), "browser").await;
    assert!(is_response(&answer, Cmd::Login), "{answer:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_websocket_message_with_a_partial_frame_is_refused() {
    let server = TestServer::start().await;
    let mut ws = ws_client(&server).await;
    let login = Frame::request(Cmd::Login, 1, 0, &wire::LoginRequest::default()).to_bytes();
    // Half a frame: over TCP the gate would wait for the rest; a message must be whole.
    ws.ws
        .send(Message::Binary(login.slice(..login.len() / 2)))
        .await
        .unwrap();
    let (code, _) = error_of(&ws.recv().await).unwrap();
    assert_eq!(code, ErrorCode::BadBody);
    server.stop().await;
}

#[tokio::test]
async fn a_wss_client_logs_in_with_the_gate_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = tls_node(dir.path()).await;
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_file_iter(&ca)
            .unwrap()
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let addr = ws_addr(&server);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake on the wss listener");
    let mut wss = WsClient::over(stream, &format!("wss://localhost:{}/", addr.port())).await;
    let answer = wss.login(129, &server.token(129, "alice"), "browser").await;
    assert!(is_response(&answer, Cmd::Login), "{answer:?}");

    // Plain ws on the wss port fails the handshake; the failure is counted.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let upgrade = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp),
    )
    .await
    .expect("the gate answers in time");
    assert!(upgrade.is_err(), "no WebSocket without TLS on the wss port");
    let gate = server.server().gates()[0].clone();
    wait_until(WAIT, || {
        let gate = gate.clone();
        async move { gate.metrics().handshake_failures("wss") >= 1 }
    })
    .await
    .expect("the failed handshake is counted");
    server.stop().await;
}

#[tokio::test]
async fn the_api_speaks_tls_for_http_and_grpc_when_configured() {
    use longlink_api::pb;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};

    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certs(dir.path());
    let server = TestServer::start_with(|config| {
        config.api.tls_cert = cert;
        config.api.tls_key = key;
    })
    .await;
    let ca_pem = std::fs::read(&ca).unwrap();

    // HTTPS with the CA: /healthz answers (over HTTP/2 when negotiated, or HTTP/1.1).
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).unwrap())
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/healthz", server.api_addr().port());
    let response = https.get(&url).send().await.expect("https answers");
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().contains("\"connections\""));

    // Plain HTTP to the TLS port gets no HTTP answer; a client that does not trust the CA
    // fails its handshake; the API keeps serving.
    let plain = reqwest::Client::new();
    let url_plain = format!("http://127.0.0.1:{}/healthz", server.api_addr().port());
    assert!(
        plain.get(&url_plain).send().await.is_err(),
        "plain HTTP refused"
    );
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([])
        .build()
        .unwrap();
    assert!(
        untrusting.get(&url).send().await.is_err(),
        "unknown CA refused"
    );
    assert_eq!(https.get(&url).send().await.unwrap().status(), 200);

    // gRPC over TLS.
    let channel = Channel::from_shared(format!("https://localhost:{}", server.grpc_addr().port()))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca_pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .expect("grpc over tls connects");
    let mut grpc = pb::api_client::ApiClient::new(channel);
    let mut request = tonic::Request::new(pb::OnlineCountRequest { appcode: 129 });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", longlink_testkit::DEV_API_KEY)
            .parse()
            .unwrap(),
    );
    grpc.online_count(request)
        .await
        .expect("grpc answers over tls");
    server.stop().await;
}
