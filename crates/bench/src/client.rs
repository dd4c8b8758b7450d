//! A lean wire-protocol client for load generation: a raw `TcpStream` (or a WebSocket on one,
//! see [`crate::link`]), [`FrameCodec`] on a small buffer that lives only while an answer is
//! awaited, HS256 tokens minted locally.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use longlink_proto::{Cmd, ErrorCode, Frame, FrameCodec, FrameType, wire};
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use crate::link::{Link, Transport};

/// Device id of every bench connection (one session per (appcode, uid, device)).
pub(crate) const DEVICE_ID: &str = "bench";

/// The claims `longlink token` puts in a token (logic's `auth::Claims`).
#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    appcode: u32,
    exp: u64,
    iat: u64,
}

/// Mints HS256 login tokens for one appcode.
pub(crate) struct Minter {
    appcode: u32,
    key: EncodingKey,
    header: Header,
}

impl Minter {
    pub(crate) fn new(appcode: u32, secret: &str) -> Self {
        Self {
            appcode,
            key: EncodingKey::from_secret(secret.as_bytes()),
            header: Header::new(Algorithm::HS256),
        }
    }

    /// A token for `uid`, valid for an hour.
    pub(crate) fn mint(&self, uid: &str) -> Result<String, String> {
        let now = longlink_proto::unix_ms() / 1000;
        let claims = Claims {
            sub: uid,
            appcode: self.appcode,
            exp: now + 3600,
            iat: now,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map_err(|err| format!("cannot mint a token: {err}"))
    }

    pub(crate) fn appcode(&self) -> u32 {
        self.appcode
    }
}

/// A logged-in connection.
pub(crate) struct Session {
    /// The connection (TCP, or a WebSocket on TCP).
    pub(crate) link: Link,
    /// The KEEPALIVE interval the server asked for at login.
    pub(crate) keepalive: Duration,
}

/// Connects to `server` over `transport` and logs `uid` in, all within `timeout`. The error is
/// one short line (an ERROR frame's code and message, or the I/O failure) fit to be counted by
/// kind.
pub(crate) async fn login(
    server: SocketAddr,
    transport: Transport,
    source: Option<&SourcePorts>,
    minter: &Minter,
    uid: &str,
    timeout: Duration,
) -> Result<Session, String> {
    let token = minter.mint(uid)?;
    let attempt = async {
        let stream = connect(server, source)
            .await
            .map_err(|err| format!("connect: {err}"))?;
        let mut link = Link::establish(transport, stream, server)
            .await
            .map_err(|err| err.to_string())?;
        let request = wire::LoginRequest {
            token,
            appcode: minter.appcode(),
            device_id: DEVICE_ID.to_owned(),
            client_version: concat!("longlink-bench/", env!("CARGO_PKG_VERSION")).to_owned(),
            ..Default::default()
        };
        let mut frame = BytesMut::new();
        Frame::request(Cmd::Login, 1, 0, &request).encode_to(&mut frame);
        link.send(&mut frame)
            .await
            .map_err(|err| format!("send LOGIN: {err}"))?;
        let answer = read_answer(&mut link, Cmd::Login).await?;
        let response: wire::LoginResponse = answer
            .decode_body()
            .map_err(|err| format!("bad LOGIN response: {err}"))?;
        let keepalive = Duration::from_secs(u64::from(response.keepalive_interval_secs.max(1)));
        Ok(Session { link, keepalive })
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no LOGIN response within {}s", timeout.as_secs())),
    }
}

/// Source addresses for many connections to one server: one IP, ports handed out in turn.
///
/// Left to itself, Linux's `connect` searches the ephemeral range for a free port, trying
/// even ports first; past ~14,000 connections from one address to one server (half of
/// 32768–60999) every `connect` scans the whole even half, and the load generator burns
/// seconds of CPU. Explicit (address, port) pairs make each `bind` one lookup.
///
/// Past port 65535 the ports start again from `first`: a client that reconnects (the
/// reconnect storm) needs more ports than it has connections, and the bench closes its
/// connections with RST, so an old port is free again; one still in use fails `bind` and the
/// next is tried.
#[derive(Debug)]
pub(crate) struct SourcePorts {
    ip: IpAddr,
    first: u16,
    next: AtomicU32,
}

impl SourcePorts {
    /// Ports from `first` upwards on `ip`.
    pub(crate) fn new(ip: IpAddr, first: u16) -> Self {
        Self {
            ip,
            first,
            next: AtomicU32::new(0),
        }
    }

    /// The source address.
    pub(crate) fn ip(&self) -> IpAddr {
        self.ip
    }

    fn take(&self) -> Option<SocketAddr> {
        let span = 65_536 - u32::from(self.first);
        let offset = self.next.fetch_add(1, Ordering::Relaxed) % span;
        let port = u16::try_from(u32::from(self.first) + offset).ok()?;
        Some(SocketAddr::new(self.ip, port))
    }
}

/// Most source ports tried for one connection (ports taken by other sockets are skipped).
const SOURCE_PORT_TRIES: usize = 64;

/// Connects to `server`, from the next of `source`'s ports when given.
pub(crate) async fn connect(
    server: SocketAddr,
    source: Option<&SourcePorts>,
) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(server).await;
    };
    let mut last_error = None;
    for _ in 0..SOURCE_PORT_TRIES {
        let local = source.take().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::AddrNotAvailable,
                format!("no source port left on {}", source.ip),
            )
        })?;
        let socket = if server.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        let connected = match socket.bind(local) {
            Ok(()) => socket.connect(server).await,
            Err(err) => Err(err),
        };
        match connected {
            Ok(stream) => return Ok(stream),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
                ) =>
            {
                last_error = Some(err);
            }
            Err(err) => return Err(err),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no source port")))
}

/// Sends LOGOUT and waits (at most `timeout`) for the server to close the connection.
pub(crate) async fn logout(mut session: Session, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        let mut frame = BytesMut::new();
        Frame::request(Cmd::Logout, 2, 0, &wire::LogoutRequest {}).encode_to(&mut frame);
        session
            .link
            .send(&mut frame)
            .await
            .map_err(|err| format!("send LOGOUT: {err}"))?;
        read_answer(&mut session.link, Cmd::Logout).await?;
        let mut sink = BytesMut::new();
        while session
            .link
            .read_buf(&mut sink)
            .await
            .map_err(|err| err.to_string())?
            > 0
        {
            sink.clear();
        }
        Ok(())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err("no close after LOGOUT".to_owned()))
}

/// Reads frames until the response of `cmd` (or an ERROR) arrives; pushes are skipped.
async fn read_answer(link: &mut Link, cmd: Cmd) -> Result<Frame, String> {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::with_capacity(256);
    loop {
        while let Some(frame) = codec
            .decode(&mut buf)
            .map_err(|err| format!("bad frame: {err}"))?
        {
            match (frame.cmd(), frame.header.frame_type) {
                (Some(Cmd::Error), _) => return Err(describe_error(&frame)),
                (Some(got), FrameType::Response) if got == cmd => return Ok(frame),
                _ => {}
            }
        }
        let read = link
            .read_buf(&mut buf)
            .await
            .map_err(|err| format!("read: {err}"))?;
        if read == 0 {
            return Err(format!("closed by the server before the {cmd} response"));
        }
    }
}

/// An ERROR frame as one line: its code's name and message.
pub(crate) fn describe_error(frame: &Frame) -> String {
    match frame.decode_body::<wire::Error>() {
        Ok(error) => {
            let code = ErrorCode::try_from(error.code)
                .map_or_else(|_| error.code.to_string(), |c| c.as_str_name().to_owned());
            format!("ERROR {code}: {}", error.message)
        }
        Err(err) => format!("ERROR (undecodable: {err})"),
    }
}

/// Why a held connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HoldEnd {
    /// `stop` was cancelled: the bench is done.
    Stopped,
    /// The server closed the connection, or it failed.
    Dropped,
}

/// Keeps `session` open and idle until `stop`: sends a KEEPALIVE every interval the server
/// asked for (what a real idle client does) and discards what arrives (pongs). Holds no
/// buffer between events on TCP (a WebSocket keeps tungstenite's own). On `stop` the
/// connection is reset, leaving no TIME_WAIT behind.
pub(crate) async fn hold(session: Session, stop: CancellationToken) -> HoldEnd {
    let Session { link, keepalive } = session;
    match link.into_tcp() {
        Ok(stream) => hold_tcp(stream, keepalive, stop).await,
        Err(link) => hold_link(link, keepalive, stop).await,
    }
}

/// [`hold`] on plain TCP: a readiness loop with a stack buffer.
async fn hold_tcp(mut stream: TcpStream, keepalive: Duration, stop: CancellationToken) -> HoldEnd {
    let mut next_ping = Instant::now() + keepalive;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                // Close with RST: a FIN would leave this side in TIME_WAIT for a minute,
                // holding a loopback port that the next run needs.
                let _ = stream.set_zero_linger();
                return HoldEnd::Stopped;
            }
            ready = stream.readable() => {
                if ready.is_err() {
                    return HoldEnd::Dropped;
                }
                let mut sink = [0u8; 512];
                match stream.try_read(&mut sink) {
                    Ok(0) => return HoldEnd::Dropped,
                    Ok(_) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return HoldEnd::Dropped,
                }
            }
            _ = tokio::time::sleep_until(next_ping) => {
                let ping = keepalive_frame().to_bytes();
                let sent = tokio::time::timeout(keepalive, stream.write_all(&ping)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return HoldEnd::Dropped;
                }
                next_ping += keepalive;
            }
        }
    }
}

/// [`hold`] on any other link (WebSocket): what arrives is read and dropped.
async fn hold_link(mut link: Link, keepalive: Duration, stop: CancellationToken) -> HoldEnd {
    let mut next_ping = Instant::now() + keepalive;
    let mut buf = BytesMut::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => {
                link.set_zero_linger();
                return HoldEnd::Stopped;
            }
            read = link.read_buf(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return HoldEnd::Dropped;
                }
                buf = BytesMut::new();
            }
            _ = tokio::time::sleep_until(next_ping) => {
                let mut ping = BytesMut::new();
                keepalive_frame().encode_to(&mut ping);
                let sent = tokio::time::timeout(keepalive, link.send(&mut ping)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return HoldEnd::Dropped;
                }
                next_ping += keepalive;
            }
        }
    }
}

fn keepalive_frame() -> Frame {
    Frame::request(
        Cmd::Keepalive,
        3,
        0,
        &wire::KeepaliveRequest {
            client_time_ms: longlink_proto::unix_ms(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ports_wrap_around() {
        let ip = IpAddr::from([127, 0, 0, 2]);
        let ports = SourcePorts::new(ip, 65_534);
        let taken: Vec<u16> = (0..4)
            .filter_map(|_| ports.take().map(|addr| addr.port()))
            .collect();
        assert_eq!(taken, [65_534, 65_535, 65_534, 65_535]);
    }
}
