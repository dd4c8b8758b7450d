//! Opening a connection: the TCP connect and the LOGIN handshake, used by
//! [`crate::Client::connect`] and by the driver's reconnects.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use longlink_proto::{Cmd, Frame, FrameCodec, FrameType, wire};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::Framed;

use crate::{CLIENT_VERSION, ClientConfig, ClientError};

/// The socket with the longlink codec on it.
pub(crate) type Transport = Framed<TcpStream, FrameCodec>;

/// The seq_id of the LOGIN request; the driver numbers the following requests after it.
pub(crate) const LOGIN_SEQ: u32 = 1;

/// A random non-zero trace id.
pub(crate) fn random_log_id() -> u64 {
    rand::random::<u64>().max(1)
}

/// What a connection attempt needs (owned, so that the attempt borrows nothing).
#[derive(Debug, Clone)]
pub(crate) struct Dial {
    pub(crate) addr: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_body_bytes: u32,
    pub(crate) login: wire::LoginRequest,
}

impl Dial {
    /// A dial for `config` that logs in with `token`.
    pub(crate) fn new(config: &ClientConfig, token: String) -> Self {
        Self {
            addr: config.addr.clone(),
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            max_body_bytes: config.max_body_bytes,
            login: wire::LoginRequest {
                token,
                appcode: config.appcode,
                device_id: config.device_id.clone(),
                resume_capable: false,
                compression: Vec::new(),
                client_version: CLIENT_VERSION.to_owned(),
                device_class: String::new(),
                prior_epoch: 0,
            },
        }
    }
}

/// Connects over TCP (at most `connect_timeout`) and logs in (the answer within
/// `request_timeout`).
///
/// # Errors
/// [`ClientError::Connect`] when the TCP connection fails, [`ClientError::Server`] when the
/// server refuses the login, [`ClientError::Timeout`], [`ClientError::Closed`],
/// [`ClientError::Io`] or [`ClientError::Protocol`] otherwise.
pub(crate) async fn connect_and_login(
    dial: Dial,
) -> Result<(Transport, wire::LoginResponse), ClientError> {
    let tcp = match timeout(dial.connect_timeout, TcpStream::connect(&dial.addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(err)) => return Err(ClientError::Connect(err)),
        Err(_) => {
            return Err(ClientError::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "connecting to {} took longer than {:?}",
                    dial.addr, dial.connect_timeout
                ),
            )));
        }
    };
    // Latency matters more than packet count for a chat protocol.
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(%err, "could not set TCP_NODELAY");
    }
    let mut transport = Framed::new(tcp, FrameCodec::new(dial.max_body_bytes));
    let login = timeout(dial.request_timeout, login(&mut transport, dial.login))
        .await
        .map_err(|_| ClientError::Timeout)??;
    Ok((transport, login))
}

/// The LOGIN handshake on a fresh connection.
async fn login(
    transport: &mut Transport,
    body: wire::LoginRequest,
) -> Result<wire::LoginResponse, ClientError> {
    let frame = Frame::request(Cmd::Login, LOGIN_SEQ, random_log_id(), &body);
    transport
        .send(frame)
        .await
        .map_err(ClientError::from_codec)?;
    loop {
        let frame = match transport.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => return Err(ClientError::from_codec(err)),
            None => return Err(ClientError::Closed),
        };
        let cmd = frame.cmd();
        match frame.header.frame_type {
            FrameType::Response if frame.header.seq_id == LOGIN_SEQ => {
                return match cmd {
                    Some(Cmd::Login) => decode(&frame),
                    Some(Cmd::Error) => Err(ClientError::from_wire(decode(&frame)?)),
                    _ => Err(ClientError::Protocol(format!(
                        "LOGIN answered with cmd {}",
                        frame.header.cmd
                    ))),
                };
            }
            // A connection-level ERROR (e.g. LOGIN_TIMEOUT) may come as a push.
            FrameType::Push if cmd == Some(Cmd::Error) => {
                return Err(ClientError::from_wire(decode(&frame)?));
            }
            _ => tracing::debug!(
                cmd = frame.header.cmd,
                "ignoring a frame received before the LOGIN answer"
            ),
        }
    }
}

pub(crate) fn decode<M: prost::Message + Default>(frame: &Frame) -> Result<M, ClientError> {
    frame
        .decode_body::<M>()
        .map_err(|err| ClientError::Protocol(err.to_string()))
}
