//! How bytes reach the gate: plain TCP, TLS (rustls), WebSocket and WebSocket over TLS.
//!
//! Every transport carries the same longlink frames (docs/protocol.md "Transports"); the
//! connection code above sees only a [`ReadSide`] that appends received bytes to its buffer
//! and a [`WriteSide`] that writes batches of encoded frames. They are enums rather than
//! boxed `AsyncRead`/`AsyncWrite` trait objects so that plain TCP — the common case, and the
//! one the ≤2 KB/conn goal is about — keeps its readiness loop (`readable()` +
//! `try_read_buf`, no read buffer while idle) and pays one `match` per read, no allocation.
//!
//! - **TLS** (`tokio-rustls`, the aws-lc-rs provider): the stream is split with
//!   `tokio::io::split`; reads go through `poll_read` into a stack chunk, so an idle TLS
//!   connection keeps no longlink read buffer either (rustls keeps its own).
//! - **WebSocket** (`tokio-tungstenite`, tuned as DEPENDENCIES.md measured: 1 KiB read
//!   buffer, no write buffer): one longlink frame per binary message; pings are answered by
//!   tungstenite and count as activity; a text message is refused with close code 1003; the
//!   peer's close frame is an EOF, so the session is held exactly as after a TCP EOF.
//!
//! Handshakes (TLS, the WebSocket upgrade) run in the connection's task, bounded by the login
//! timeout; a failure is counted (`longlink_gate_handshake_failures{transport}`) and the
//! socket dropped.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use longlink_proto::ErrorCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::either::Either;

use crate::CloseReason;

/// Bytes read per readiness event; the buffer is freed again once fully decoded.
pub(crate) const READ_CHUNK: usize = 4096;

/// WebSocket read buffer: tungstenite allocates it up front per connection (its default,
/// 128 KiB, would cost ~137 KB per idle connection; 1 KiB costs ~3.7 KB — DEPENDENCIES.md).
const WS_READ_BUFFER: usize = 1024;

/// The transport of a listener, and of the connections accepted on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// WebSocket over plain TCP.
    Ws,
    /// WebSocket over TLS.
    Wss,
}

impl Transport {
    /// A short lowercase label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

/// Why a TLS certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file holds no usable PEM certificate.
    #[error("cannot read certificates from {path}: {why}")]
    Cert {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// The key file holds no usable PEM private key.
    #[error("cannot read a private key from {path}: {why}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("invalid certificate/key pair: {0}")]
    Config(String),
}

/// A TLS server configuration (certificate chain and key), shared by every TLS listener of a
/// node. Cloning is cheap.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1). The aws-lc-rs provider is named explicitly, so nothing depends on a
    /// process-wide default provider being installed.
    ///
    /// # Errors
    /// [`TlsError`] naming the file, or the pair rustls refused.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let certs = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|err| TlsError::Cert {
                path: cert.display().to_string(),
                why: err.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::Cert {
                path: cert.display().to_string(),
                why: "no CERTIFICATE block".into(),
            });
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|err| TlsError::Key {
            path: key.display().to_string(),
            why: err.to_string(),
        })?;
        Self::from_der(certs, key_der)
    }

    /// A configuration from DER certificates (leaf first) and a private key.
    ///
    /// # Errors
    /// [`TlsError::Config`] when rustls refuses the pair.
    pub fn from_der(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| TlsError::Config(err.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|err| TlsError::Config(err.to_string()))?;
        let config = Arc::new(config);
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::clone(&config)),
            config,
        })
    }

    /// The rustls configuration (the API serves its own listeners with a copy that adds
    /// ALPN for HTTP/2 and gRPC).
    pub fn rustls_config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.config)
    }
}

/// A bound listener and the transport its clients speak.
#[derive(Debug)]
pub struct GateListener {
    pub(crate) listener: TcpListener,
    pub(crate) transport: Transport,
    pub(crate) tls: Option<ServerTls>,
}

impl GateListener {
    /// Plain TCP (loopback and development; see docs/security.md).
    pub fn tcp(listener: TcpListener) -> Self {
        Self {
            listener,
            transport: Transport::Tcp,
            tls: None,
        }
    }

    /// TLS: every connection starts with a TLS handshake.
    pub fn tls(listener: TcpListener, tls: ServerTls) -> Self {
        Self {
            listener,
            transport: Transport::Tls,
            tls: Some(tls),
        }
    }

    /// WebSocket; over TLS (wss) when `tls` is given.
    pub fn ws(listener: TcpListener, tls: Option<ServerTls>) -> Self {
        let transport = if tls.is_some() {
            Transport::Wss
        } else {
            Transport::Ws
        };
        Self {
            listener,
            transport,
            tls,
        }
    }

    /// The bound address.
    ///
    /// # Errors
    /// The socket's address cannot be read.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The transport of this listener's connections.
    pub fn transport(&self) -> Transport {
        self.transport
    }
}

type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The byte stream under a WebSocket: TCP, or TLS for wss (tokio-util's `Either` forwards
/// reads and writes to whichever it holds).
pub(crate) type WsIo = Either<TcpStream, Box<TlsStream>>;

type Ws = WebSocketStream<WsIo>;

/// An established connection, after its handshakes.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream>),
    Ws(Box<Ws>),
}

/// The WebSocket close frame a connection ends with: set by the reader (a text message, an
/// oversized message, or the close reason), sent by the writer; the first one set wins.
type WsClose = Arc<OnceLock<(CloseCode, &'static str)>>;

/// The WebSocket config: small eager read buffer, no write buffering (each frame is written
/// as it is queued; the writer batches anyway), and messages no larger than one frame.
fn ws_config(max_body_bytes: u32) -> WebSocketConfig {
    let max_message = longlink_proto::HEADER_LEN + max_body_bytes as usize;
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        // A frame that cannot be written stays here until the next write; room for two
        // frames keeps the buffer bounded without failing a write that is merely slow.
        .max_write_buffer_size(2 * (max_message + 16))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Runs the handshakes of `transport` on an accepted socket (the caller bounds the time).
pub(crate) async fn establish(
    tcp: TcpStream,
    transport: Transport,
    tls: Option<&ServerTls>,
    max_body_bytes: u32,
) -> io::Result<Stream> {
    // Latency matters more than packet count for a chat protocol.
    let _ = tcp.set_nodelay(true);
    let no_tls = || io::Error::other("TLS listener without a TLS config");
    match transport {
        Transport::Tcp => Ok(Stream::Tcp(tcp)),
        Transport::Tls => {
            let tls = tls.ok_or_else(no_tls)?;
            Ok(Stream::Tls(Box::new(tls.acceptor.accept(tcp).await?)))
        }
        Transport::Ws | Transport::Wss => {
            let io = match (transport, tls) {
                (Transport::Wss, Some(tls)) => {
                    Either::Right(Box::new(tls.acceptor.accept(tcp).await?))
                }
                (Transport::Wss, None) => return Err(no_tls()),
                _ => Either::Left(tcp),
            };
            let ws =
                tokio_tungstenite::accept_async_with_config(io, Some(ws_config(max_body_bytes)))
                    .await
                    .map_err(io::Error::other)?;
            Ok(Stream::Ws(Box::new(ws)))
        }
    }
}

impl Stream {
    /// The read and write halves: the reader task keeps one, the writer task the other.
    pub(crate) fn split(self) -> (ReadSide, WriteSide) {
        match self {
            Stream::Tcp(tcp) => {
                let (read, write) = tcp.into_split();
                (ReadSide::Tcp(read), WriteSide::Tcp(write))
            }
            Stream::Tls(tls) => {
                let (read, write) = tokio::io::split(*tls);
                (ReadSide::Tls(read), WriteSide::Tls(write))
            }
            Stream::Ws(ws) => {
                let (sink, stream) = (*ws).split();
                let close = WsClose::default();
                (
                    ReadSide::Ws {
                        stream,
                        close: close.clone(),
                    },
                    WriteSide::Ws { sink, close },
                )
            }
        }
    }
}

/// What one read produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// Bytes were appended to the buffer (for WebSocket: exactly one binary message).
    Data,
    /// The peer is alive but sent no data (a WebSocket ping or pong).
    Activity,
    /// The peer closed (EOF, TLS close_notify or a truncated TLS stream, a WebSocket close).
    Closed,
    /// The peer broke the transport's rules; an ERROR with this code goes out, then a close.
    Refused(ErrorCode, &'static str),
}

/// The reading half of a connection.
pub(crate) enum ReadSide {
    Tcp(OwnedReadHalf),
    Tls(ReadHalf<TlsStream>),
    Ws {
        stream: SplitStream<Ws>,
        close: WsClose,
    },
}

impl ReadSide {
    /// Whether every read is one whole message that must hold exactly one frame.
    pub(crate) fn message_based(&self) -> bool {
        matches!(self, ReadSide::Ws { .. })
    }

    /// Waits for the next input and appends its bytes to `buf`. Cancel-safe: nothing is lost
    /// when the future is dropped before it completes.
    pub(crate) async fn read(&mut self, buf: &mut BytesMut) -> io::Result<Received> {
        match self {
            ReadSide::Tcp(read) => loop {
                // `poll_read_ready` keeps its waker in the socket's registration; the
                // `readable()` future would carry a ~170-byte waiter in every idle
                // connection's future. Only this reader waits for read readiness.
                std::future::poll_fn(|cx| read.as_ref().poll_read_ready(cx)).await?;
                if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                    buf.reserve(READ_CHUNK);
                }
                match read.try_read_buf(buf) {
                    Ok(0) => return Ok(Received::Closed),
                    Ok(_) => return Ok(Received::Data),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        // A spurious wake-up (readiness is cleared only by WouldBlock): an
                        // idle connection must not keep the buffer reserved above.
                        if buf.is_empty() {
                            *buf = BytesMut::new();
                        }
                    }
                    Err(err) => return Err(err),
                }
            },
            ReadSide::Tls(read) => {
                std::future::poll_fn(|cx| poll_read_chunk(Pin::new(&mut *read), cx, buf)).await
            }
            ReadSide::Ws { stream, close } => {
                let next = stream.next().await;
                Ok(ws_received(next, buf, close))
            }
        }
    }

    /// Reads what has already arrived, without waiting (a kicked session's last MSG_ACKs).
    pub(crate) fn read_available(&mut self, buf: &mut BytesMut) -> io::Result<Received> {
        match self {
            ReadSide::Tcp(read) => {
                buf.reserve(READ_CHUNK);
                match read.try_read_buf(buf) {
                    Ok(0) => Ok(Received::Closed),
                    Ok(_) => Ok(Received::Data),
                    Err(err) => Err(err),
                }
            }
            // One poll with a no-op waker: ready input is taken, nothing is waited for.
            _ => {
                use futures::FutureExt as _;
                self.read(buf)
                    .now_or_never()
                    .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))
            }
        }
    }

    /// Records how a WebSocket connection ends (the writer sends the close frame).
    pub(crate) fn closing(&self, reason: CloseReason) {
        if let ReadSide::Ws { close, .. } = self {
            let _ = close.set(ws_close_for(reason));
        }
    }
}

/// Reads once from a TLS stream into a stack chunk and appends what came to `buf`: no read
/// buffer is held between reads.
fn poll_read_chunk(
    read: Pin<&mut ReadHalf<TlsStream>>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<Received>> {
    let mut chunk = [0u8; READ_CHUNK];
    let mut chunk = ReadBuf::new(&mut chunk);
    match read.poll_read(cx, &mut chunk) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Ok(())) if chunk.filled().is_empty() => Poll::Ready(Ok(Received::Closed)),
        Poll::Ready(Ok(())) => {
            buf.extend_from_slice(chunk.filled());
            Poll::Ready(Ok(Received::Data))
        }
        // A TCP EOF without close_notify: for the session it is the same as a TCP EOF.
        Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::UnexpectedEof => {
            Poll::Ready(Ok(Received::Closed))
        }
        Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
    }
}

/// Maps one WebSocket stream item onto what the reader needs.
fn ws_received(
    next: Option<Result<Message, WsError>>,
    buf: &mut BytesMut,
    close: &WsClose,
) -> Received {
    match next {
        Some(Ok(Message::Binary(data))) => {
            buf.extend_from_slice(&data);
            Received::Data
        }
        // tungstenite queues the pong itself and sends it with the next read or write.
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Received::Activity,
        Some(Ok(Message::Text(_))) => {
            let _ = close.set((
                CloseCode::Unsupported,
                "text messages are not accepted: send each longlink frame as one binary message",
            ));
            Received::Refused(
                ErrorCode::BadFrameType,
                "text WebSocket message: send each frame as one binary message",
            )
        }
        Some(Ok(Message::Close(_))) | None => Received::Closed,
        Some(Err(WsError::Capacity(_))) => {
            let _ = close.set((CloseCode::Size, "message larger than one longlink frame"));
            Received::Refused(
                ErrorCode::BodyTooLarge,
                "WebSocket message larger than header + max body",
            )
        }
        Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => Received::Closed,
        Some(Err(WsError::Io(err))) if err.kind() == io::ErrorKind::UnexpectedEof => {
            Received::Closed
        }
        Some(Err(err)) => {
            tracing::debug!(error = %err, "websocket read failed");
            let _ = close.set((CloseCode::Protocol, "websocket protocol error"));
            Received::Closed
        }
    }
}

/// The close frame for a connection ending for `reason`.
fn ws_close_for(reason: CloseReason) -> (CloseCode, &'static str) {
    match reason {
        CloseReason::ServerShutdown | CloseReason::Drained => (CloseCode::Away, reason.label()),
        CloseReason::ProtocolError(ErrorCode::BodyTooLarge) => (CloseCode::Size, reason.label()),
        CloseReason::ProtocolError(_) => (CloseCode::Protocol, reason.label()),
        CloseReason::SlowConsumer | CloseReason::NotAdmitted => (CloseCode::Again, reason.label()),
        _ => (CloseCode::Normal, reason.label()),
    }
}

/// The writing half of a connection (owned by the writer task).
pub(crate) enum WriteSide {
    Tcp(OwnedWriteHalf),
    Tls(WriteHalf<TlsStream>),
    Ws {
        sink: SplitSink<Ws, Message>,
        close: WsClose,
    },
}

impl WriteSide {
    /// Writes encoded frames: on a byte stream as one write (TLS: then flushed, since rustls
    /// may hold the last record); on a WebSocket as one binary message per frame.
    pub(crate) async fn write_frames<F: AsRef<Bytes>>(&mut self, frames: &[F]) -> io::Result<()> {
        match self {
            WriteSide::Tcp(write) => write_joined(write, frames).await,
            WriteSide::Tls(write) => {
                write_joined(write, frames).await?;
                write.flush().await
            }
            WriteSide::Ws { sink, .. } => {
                for sent in frames {
                    sink.feed(Message::Binary(sent.as_ref().clone()))
                        .await
                        .map_err(ws_io)?;
                }
                sink.flush().await.map_err(ws_io)
            }
        }
    }

    /// Ends the connection: TCP FIN, TLS close_notify, or a WebSocket close frame (the
    /// reader's, else one for `reason`).
    pub(crate) async fn shutdown(&mut self, reason: CloseReason) {
        match self {
            WriteSide::Tcp(write) => {
                let _ = write.shutdown().await;
            }
            WriteSide::Tls(write) => {
                let _ = write.shutdown().await;
            }
            WriteSide::Ws { sink, close } => {
                let (code, why) = close.get().copied().unwrap_or_else(|| ws_close_for(reason));
                let frame = CloseFrame {
                    code,
                    reason: why.into(),
                };
                // The peer may have closed first (tungstenite answered it): nothing to do.
                let _ = sink.send(Message::Close(Some(frame))).await;
            }
        }
    }
}

async fn write_joined<W: AsyncWrite + Unpin, F: AsRef<Bytes>>(
    write: &mut W,
    frames: &[F],
) -> io::Result<()> {
    if let [only] = frames {
        return write.write_all(only.as_ref()).await;
    }
    let mut out = BytesMut::with_capacity(frames.iter().map(|o| o.as_ref().len()).sum());
    for sent in frames {
        out.extend_from_slice(sent.as_ref());
    }
    write.write_all(&out).await
}

fn ws_io(err: WsError) -> io::Error {
    match err {
        WsError::Io(err) => err,
        other => io::Error::other(other),
    }
}
