//! Opening a connection: the TCP connect (then TLS when configured) and the LOGIN handshake — or, after a drop, the
//! RESUME that takes the held session over (LOGIN on the same connection when it is
//! rejected) — used by [`crate::Client::connect`] and by the driver's reconnects.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use longlink_proto::{Cmd, ErrorCode, Frame, FrameCodec, FrameType, wire};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::Framed;

use crate::tls::Stream;
use crate::{CLIENT_VERSION, ClientConfig, ClientError, TlsConfig};
use tokio_util::either::Either;

/// The socket (TCP or TLS) with the longlink codec on it.
pub(crate) type Transport = Framed<Stream, FrameCodec>;

/// The seq_id of the LOGIN request; the driver numbers the following requests after it.
pub(crate) const LOGIN_SEQ: u32 = 1;

/// A random non-zero trace id.
pub(crate) fn random_log_id() -> u64 {
    rand::random::<u64>().max(1)
}

/// Most frames kept when they arrive before the answer to LOGIN / RESUME (pushes the server
/// routed to the new session while the answer was being computed); beyond it they are dropped
/// unacknowledged, and the catch-up pull or the next redelivery brings them.
const MAX_EARLY_FRAMES: usize = 1024;

/// What a connection attempt needs (owned, so that the attempt borrows nothing).
#[derive(Debug, Clone)]
pub(crate) struct Dial {
    pub(crate) addr: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_body_bytes: u32,
    pub(crate) tls: Option<TlsConfig>,
    pub(crate) login: wire::LoginRequest,
    /// Try to take the previous session over with RESUME first (LOGIN on the same connection
    /// if the server rejects it).
    pub(crate) resume: Option<wire::ResumeRequest>,
}

impl Dial {
    /// A dial for `config` that logs in with `token`.
    pub(crate) fn new(config: &ClientConfig, token: String) -> Self {
        Self {
            addr: config.addr.clone(),
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            max_body_bytes: config.max_body_bytes,
            tls: config.tls.clone(),
            login: wire::LoginRequest {
                token,
                appcode: config.appcode,
                device_id: config.device_id.clone(),
                resume_capable: config.resume,
                compression: config
                    .compression
                    .iter()
                    .map(|algorithm| algorithm.name().to_owned())
                    .collect(),
                client_version: CLIENT_VERSION.to_owned(),
                device_class: config.device_class.clone(),
                prior_epoch: 0,
            },
            resume: None,
        }
    }
}

/// A connection that is logged in (or resumed).
#[derive(Debug)]
pub(crate) struct Opened {
    /// The session: for a RESUME, the fields of the `ResumeResponse` that a `LoginResponse`
    /// also has (the rest, e.g. the gate list, stay as the last LOGIN announced them: zero).
    pub(crate) login: wire::LoginResponse,
    /// `Some` when the session was resumed: what the device missed.
    pub(crate) resumed: Option<Resumed>,
    /// Frames that arrived before the answer (pushes to the new session), in order.
    pub(crate) early: Vec<Frame>,
}

/// What a RESUME brought back.
#[derive(Debug)]
pub(crate) struct Resumed {
    /// The device's unacknowledged messages, ascending by msgid.
    pub(crate) messages: Vec<wire::Msg>,
    /// `true`: that is all of them; `false`: pull the rest from the last one's msgid.
    pub(crate) gap_free: bool,
}

/// Connects over TCP (at most `connect_timeout`) and resumes or logs in (each answer within
/// `request_timeout`).
///
/// # Errors
/// [`ClientError::Connect`] when the TCP connection or the TLS handshake fails,
/// [`ClientError::Tls`] when the TLS settings are unusable, [`ClientError::Server`] when the
/// server refuses the login, [`ClientError::Timeout`], [`ClientError::Closed`],
/// [`ClientError::Io`] or [`ClientError::Protocol`] otherwise.
pub(crate) async fn connect_and_login(dial: Dial) -> Result<(Transport, Opened), ClientError> {
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
    let stream = match &dial.tls {
        None => Either::Left(tcp),
        Some(tls) => {
            let (connector, name) = tls.connector(&dial.addr)?;
            match timeout(dial.connect_timeout, connector.connect(name, tcp)).await {
                Ok(Ok(tls)) => Either::Right(Box::new(tls)),
                Ok(Err(err)) => return Err(ClientError::Connect(err)),
                Err(_) => {
                    return Err(ClientError::Connect(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "the TLS handshake with {} took longer than {:?}",
                            dial.addr, dial.connect_timeout
                        ),
                    )));
                }
            }
        }
    };
    let mut transport = Framed::new(stream, FrameCodec::new(dial.max_body_bytes));
    let mut early = Vec::new();
    if let Some(resume) = dial.resume {
        let frame = Frame::request(Cmd::Resume, LOGIN_SEQ, random_log_id(), &resume);
        let answer = timeout(
            dial.request_timeout,
            exchange(&mut transport, frame, &mut early),
        )
        .await
        .map_err(|_| ClientError::Timeout)??;
        match answer.cmd() {
            Some(Cmd::Resume) => {
                let resumed: wire::ResumeResponse = decode(&answer)?;
                let login = wire::LoginResponse {
                    session_id: resumed.session_id,
                    resume_token: resumed.resume_token,
                    server_time_ms: resumed.server_time_ms,
                    keepalive_interval_secs: resumed.keepalive_interval_secs,
                    uid: resumed.uid,
                    epoch: resumed.epoch,
                    hold_secs: resumed.hold_secs,
                    compression: resumed.compression,
                    ..Default::default()
                };
                let resumed = Resumed {
                    messages: resumed.messages,
                    gap_free: resumed.gap_free,
                };
                return Ok((
                    transport,
                    Opened {
                        login,
                        resumed: Some(resumed),
                        early,
                    },
                ));
            }
            Some(Cmd::Error) => {
                let err = ClientError::from_wire(decode(&answer)?);
                if err.server_code() != Some(ErrorCode::ResumeRejected) {
                    return Err(err);
                }
                // The session is over (hold expired, replaced, logged out): log in on the
                // same connection, as a reconnect (`prior_epoch` is in the dial).
                tracing::debug!(%err, "resume rejected; logging in");
            }
            _ => {
                return Err(ClientError::Protocol(format!(
                    "RESUME answered with cmd {}",
                    answer.header.cmd
                )));
            }
        }
    }
    let frame = Frame::request(Cmd::Login, LOGIN_SEQ, random_log_id(), &dial.login);
    let answer = timeout(
        dial.request_timeout,
        exchange(&mut transport, frame, &mut early),
    )
    .await
    .map_err(|_| ClientError::Timeout)??;
    let login = match answer.cmd() {
        Some(Cmd::Login) => decode(&answer)?,
        Some(Cmd::Error) => return Err(ClientError::from_wire(decode(&answer)?)),
        _ => {
            return Err(ClientError::Protocol(format!(
                "LOGIN answered with cmd {}",
                answer.header.cmd
            )));
        }
    };
    Ok((
        transport,
        Opened {
            login,
            resumed: None,
            early,
        },
    ))
}

/// Sends `request` (LOGIN or RESUME) and returns its answer (a response, or an ERROR push).
/// Pushes that arrive first are kept in `early` for the driver.
async fn exchange(
    transport: &mut Transport,
    request: Frame,
    early: &mut Vec<Frame>,
) -> Result<Frame, ClientError> {
    let seq_id = request.header.seq_id;
    transport
        .send(request)
        .await
        .map_err(ClientError::from_codec)?;
    loop {
        let frame = match transport.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => return Err(ClientError::from_codec(err)),
            None => return Err(ClientError::Closed),
        };
        match frame.header.frame_type {
            FrameType::Response if frame.header.seq_id == seq_id => return Ok(frame),
            // A connection-level ERROR (e.g. LOGIN_TIMEOUT) may come as a push.
            FrameType::Push if frame.cmd() == Some(Cmd::Error) => return Ok(frame),
            FrameType::Push if early.len() < MAX_EARLY_FRAMES => early.push(frame),
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
