//! The transports the bench's clients speak: plain TCP, or WebSocket (`ws://`, one longlink
//! frame per binary message; docs/protocol.md §1.1). Both carry the same frames, so a scenario
//! writes and reads frames through a [`Link`] (or its halves) and never sees the difference:
//! [`LinkWrite::send`] takes a buffer of frames back to back (one `write` over TCP, one binary
//! message per frame over WebSocket), [`LinkRead::read_buf`] appends what arrived (over
//! WebSocket, one message's payload) for `FrameCodec` to decode.
//!
//! The WebSocket client (tokio-tungstenite) reads into a small buffer (4 KiB instead of its
//! 128 KiB default), so a worker holding 10,000 idle connections stays small.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use longlink_proto::HEADER_LEN;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// A client's read buffer on WebSocket (tungstenite allocates it per connection, up front).
const WS_READ_BUFFER: usize = 4096;

/// How a bench client reaches the gate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Plain TCP: frames back to back on the stream (the gate's `listen`).
    #[default]
    Tcp,
    /// WebSocket over plain TCP: one frame per binary message (the gate's `ws_listen`).
    Ws,
}

impl Transport {
    /// `tcp` or `ws`, as on the command line.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

type Ws = WebSocketStream<TcpStream>;

/// One connection to the gate, after the transport's handshake (none for TCP).
pub(crate) enum Link {
    Tcp(TcpStream),
    Ws(Box<Ws>),
}

impl Link {
    /// Runs `transport`'s handshake on a connected socket (the WebSocket upgrade to
    /// `ws://<server>/`); the caller bounds the time.
    pub(crate) async fn establish(
        transport: Transport,
        stream: TcpStream,
        server: SocketAddr,
    ) -> io::Result<Link> {
        let _ = stream.set_nodelay(true);
        match transport {
            Transport::Tcp => Ok(Link::Tcp(stream)),
            Transport::Ws => {
                let config = WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER);
                let (ws, _) = tokio_tungstenite::client_async_with_config(
                    format!("ws://{server}/"),
                    stream,
                    Some(config),
                )
                .await
                .map_err(|err| io::Error::other(format!("WebSocket upgrade: {err}")))?;
                Ok(Link::Ws(Box::new(ws)))
            }
        }
    }

    /// The TCP socket under the link.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Link::Tcp(tcp) => tcp,
            Link::Ws(ws) => ws.get_ref(),
        }
    }

    /// Makes the next close a reset (RST, no TIME_WAIT left on this side).
    pub(crate) fn set_zero_linger(&self) {
        let _ = self.tcp().set_zero_linger();
    }

    /// The plain TCP stream, for clients that speak TCP only; the link back otherwise.
    pub(crate) fn into_tcp(self) -> Result<TcpStream, Link> {
        match self {
            Link::Tcp(tcp) => Ok(tcp),
            other => Err(other),
        }
    }

    /// Sends `frames` (whole encoded frames, back to back) and empties the buffer.
    pub(crate) async fn send(&mut self, frames: &mut BytesMut) -> io::Result<()> {
        match self {
            Link::Tcp(tcp) => {
                tcp.write_all(frames).await?;
                frames.clear();
                Ok(())
            }
            Link::Ws(ws) => send_messages(&mut **ws, frames).await,
        }
    }

    /// Waits for input and appends it to `buf`; `Ok(0)` when the peer closed.
    pub(crate) async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Link::Tcp(tcp) => tokio::io::AsyncReadExt::read_buf(tcp, buf).await,
            Link::Ws(ws) => read_message(&mut **ws, buf).await,
        }
    }

    /// The reading and the writing half, for tasks of their own.
    pub(crate) fn into_split(self) -> (LinkRead, LinkWrite) {
        match self {
            Link::Tcp(tcp) => {
                let (read, write) = tcp.into_split();
                (LinkRead::Tcp(read), LinkWrite::Tcp(write))
            }
            Link::Ws(ws) => {
                let (sink, stream) = (*ws).split();
                (LinkRead::Ws(stream), LinkWrite::Ws(sink))
            }
        }
    }
}

/// The reading half of a [`Link`].
pub(crate) enum LinkRead {
    Tcp(OwnedReadHalf),
    Ws(SplitStream<Ws>),
}

impl LinkRead {
    /// Waits for input and appends it to `buf`; `Ok(0)` when the peer closed. Cancel-safe.
    pub(crate) async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            LinkRead::Tcp(read) => tokio::io::AsyncReadExt::read_buf(read, buf).await,
            LinkRead::Ws(stream) => read_message(stream, buf).await,
        }
    }
}

/// The writing half of a [`Link`].
pub(crate) enum LinkWrite {
    Tcp(OwnedWriteHalf),
    Ws(SplitSink<Ws, Message>),
}

impl LinkWrite {
    /// Sends `frames` (whole encoded frames, back to back) and empties the buffer.
    pub(crate) async fn send(&mut self, frames: &mut BytesMut) -> io::Result<()> {
        match self {
            LinkWrite::Tcp(write) => {
                write.write_all(frames).await?;
                frames.clear();
                Ok(())
            }
            LinkWrite::Ws(sink) => send_messages(sink, frames).await,
        }
    }

    /// Ends the sending side: TCP FIN, or a WebSocket close frame.
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            LinkWrite::Tcp(write) => write.shutdown().await,
            LinkWrite::Ws(sink) => sink.close().await.map_err(ws_io),
        }
    }
}

/// Splits `frames` into whole frames, queues each as one binary message and flushes them
/// together (tungstenite's write buffer makes that one `write` when they fit).
async fn send_messages<S>(sink: &mut S, frames: &mut BytesMut) -> io::Result<()>
where
    S: futures::Sink<Message, Error = WsError> + Unpin,
{
    while !frames.is_empty() {
        let len = frame_len(frames)?;
        let frame: Bytes = frames.split_to(len).freeze();
        sink.feed(Message::Binary(frame)).await.map_err(ws_io)?;
    }
    sink.flush().await.map_err(ws_io)
}

/// The length of the whole frame at the start of `frames` (header + body_len).
fn frame_len(frames: &BytesMut) -> io::Result<usize> {
    let Some(mut len_bytes) = frames.get(HEADER_LEN - 4..HEADER_LEN) else {
        return Err(io::Error::other("half a frame header to send"));
    };
    let len = HEADER_LEN + len_bytes.get_u32() as usize;
    if len > frames.len() {
        return Err(io::Error::other("half a frame to send"));
    }
    Ok(len)
}

/// Reads WebSocket messages until a binary one arrives and appends its payload to `buf`;
/// `Ok(0)` on a close frame or the end of the stream. Pings are answered by tungstenite.
/// Cancel-safe (a message is either taken whole or left in tungstenite's buffer).
async fn read_message<S>(stream: &mut S, buf: &mut BytesMut) -> io::Result<usize>
where
    S: futures::Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(Message::Binary(data))) if !data.is_empty() => {
                buf.extend_from_slice(&data);
                return Ok(data.len());
            }
            Some(Ok(Message::Text(_))) => {
                return Err(io::Error::other("the server sent a text message"));
            }
            Some(Ok(Message::Close(_))) | None => return Ok(0),
            Some(Ok(_)) => {}
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return Ok(0),
            Some(Err(err)) => return Err(ws_io(err)),
        }
    }
}

fn ws_io(err: WsError) -> io::Error {
    match err {
        WsError::Io(err) => err,
        other => io::Error::other(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use longlink_proto::{Cmd, Frame, wire};

    #[test]
    fn frames_are_split_whole() {
        let mut buf = BytesMut::new();
        let ping = Frame::request(
            Cmd::Keepalive,
            7,
            0,
            &wire::KeepaliveRequest { client_time_ms: 1 },
        );
        ping.encode_to(&mut buf);
        let first = buf.len();
        Frame::request(Cmd::Logout, 8, 0, &wire::LogoutRequest {}).encode_to(&mut buf);
        assert_eq!(frame_len(&buf).unwrap(), first);
        let _ = buf.split_to(first);
        assert_eq!(frame_len(&buf).unwrap(), buf.len());
        ping.encode_to(&mut buf);
        buf.truncate(buf.len() - 1);
        let _ = buf.split_to(HEADER_LEN);
        assert!(frame_len(&buf).is_err(), "half a frame");
        assert!(frame_len(&BytesMut::from(&b"LL"[..])).is_err());
    }
}
