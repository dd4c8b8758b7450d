//! A connection's outgoing frames: the bounded [`WriteQueue`] every sender puts encoded frames
//! into, and the writers that take them to the socket.
//!
//! **Plain TCP writes directly.** A frame queued while nothing else is waiting is written at
//! once by the task that queues it (`try_write` under the queue's lock, which orders the
//! writers); only when the socket would block is the rest queued and a writer task spawned to
//! drain it, several frames per `writev`, and that task ends once the queue is empty. An idle
//! connection therefore has no writer task (a tokio task with its future cost ~0.8 KB per
//! connection), and a frame costs no cross-thread wake-up to reach the socket. TLS and
//! WebSocket, whose writes are async state machines, keep a writer task for the connection's
//! life ([`run`]).
//!
//! The queue is a mutex-guarded `VecDeque` plus two `Notify`s rather than a tokio `mpsc`: an
//! `mpsc` channel allocates its first 32-slot block (~1.5 KB with the channel) when created,
//! for every idle connection; an empty `VecDeque` allocates nothing. The mutex is held only
//! for a push, a non-blocking write or a drain, never across an `.await`.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use longlink_metrics::Gauge;
use longlink_proto::{Cmd, FrameType, HEADER_LEN, Header, KickReason, wire};
use longlink_rpc::WriteReceipt;
use longlink_rpc::trace::{Stage, TraceEvent};

use crate::close::{ConnShared, Kick};
use crate::compression::Outbound;
use crate::transport::WriteSide;
use crate::{CloseReason, GateShared};

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueError {
    /// The queue holds its capacity of frames.
    Full,
    /// The connection is closing; nothing more is written.
    Closed,
}

/// A queued frame, with the receipt to call once it is written (tracked pushes only).
pub(crate) struct Outgoing {
    pub(crate) frame: Bytes,
    receipt: Option<(Arc<dyn WriteReceipt>, u64)>,
}

impl AsRef<Bytes> for Outgoing {
    fn as_ref(&self) -> &Bytes {
        &self.frame
    }
}

impl Outgoing {
    /// A frame nobody waits for.
    pub(crate) fn plain(frame: Bytes) -> Self {
        Self {
            frame,
            receipt: None,
        }
    }

    /// A frame whose writing is reported to `receipt` with `tag`.
    pub(crate) fn tracked(frame: Bytes, receipt: Arc<dyn WriteReceipt>, tag: u64) -> Self {
        Self {
            frame,
            receipt: Some((receipt, tag)),
        }
    }
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("frame", &self.frame)
            .field("tracked", &self.receipt.is_some())
            .finish()
    }
}

#[derive(Debug, Default)]
struct QueueState {
    frames: VecDeque<Outgoing>,
    closed: bool,
    /// Direct mode: a writer task is draining `frames` (set whenever `frames` is non-empty).
    writing: bool,
    /// Direct mode: bytes of the first queued frame already written.
    head_written: usize,
}

/// A plain TCP socket written directly by whoever queues a frame (see the module doc), with
/// what the writer needs to count frames and close the connection.
struct Direct {
    socket: OwnedWriteHalf,
    conn: Arc<ConnShared>,
    gate: Arc<GateShared>,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").finish_non_exhaustive()
    }
}

/// What one non-blocking write did.
enum Wrote {
    /// The queue is empty now.
    Empty,
    /// Frames are left: wait until the socket can take more.
    More,
    /// The socket failed.
    Failed,
}

/// A bounded queue of encoded frames for one connection (capacity `write_queue_frames`).
#[derive(Debug)]
pub(crate) struct WriteQueue {
    state: Mutex<QueueState>,
    capacity: usize,
    /// The gate-wide count of queued frames (`longlink_gate_write_queue_frames`).
    queued: Gauge,
    /// Wakes the writer: frames were queued, or the queue was closed.
    ready: Notify,
    /// Wakes a sender waiting for room: the writer took frames.
    room: Notify,
    /// The compression agreed at LOGIN, applied to every frame queued after it is set
    /// (crate::compression); unset = frames go as they are.
    outbound: OnceLock<Outbound>,
    /// Plain TCP: the socket, written directly (set once, before the first frame).
    direct: OnceLock<Direct>,
}

impl WriteQueue {
    pub(crate) fn new(capacity: usize, queued: Gauge) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            capacity: capacity.max(1),
            queued,
            ready: Notify::new(),
            room: Notify::new(),
            outbound: OnceLock::new(),
            direct: OnceLock::new(),
        }
    }

    /// Plain TCP: frames queued from now on are written directly to `socket` (see the module
    /// doc) instead of by a writer task for the connection's life.
    pub(crate) fn write_directly(
        &self,
        socket: OwnedWriteHalf,
        conn: Arc<ConnShared>,
        gate: Arc<GateShared>,
        tracker: TaskTracker,
    ) {
        let _ = self.direct.set(Direct {
            socket,
            conn,
            gate,
            tracker,
        });
    }

    /// From now on, frames queued here are compressed as `outbound` says (set once, right
    /// after the LOGIN answer is queued: that answer and everything before it go plain).
    pub(crate) fn set_compression(&self, outbound: Outbound) {
        let _ = self.outbound.set(outbound);
    }

    /// The algorithm agreed for this connection, if any (also the one its client may use).
    pub(crate) fn compression(&self) -> Option<longlink_proto::Compression> {
        self.outbound.get().map(|outbound| outbound.algorithm)
    }

    /// `frame` as it goes on the wire: compressed when agreed and worth it. Runs in the
    /// caller's task, before the queue's lock is taken.
    fn encode(&self, frame: Bytes) -> Bytes {
        match self.outbound.get() {
            Some(outbound) => outbound.apply(frame),
            None => frame,
        }
    }

    /// Queues `frame` if there is room.
    pub(crate) fn try_push(self: &Arc<Self>, frame: Bytes) -> Result<(), QueueError> {
        self.try_push_outgoing(Outgoing::plain(frame))
    }

    /// Queues `frame` (maybe tracked) if there is room.
    pub(crate) fn try_push_outgoing(
        self: &Arc<Self>,
        mut frame: Outgoing,
    ) -> Result<(), QueueError> {
        frame.frame = self.encode(frame.frame);
        self.try_push_encoded(frame)
    }

    /// Queues a frame already in its wire form if there is room; in direct mode, writes it at
    /// once when nothing is waiting before it.
    fn try_push_encoded(self: &Arc<Self>, frame: Outgoing) -> Result<(), QueueError> {
        let direct = self.direct.get();
        {
            let mut state = self.state.lock().map_err(|_| QueueError::Closed)?;
            if state.closed {
                return Err(QueueError::Closed);
            }
            if state.frames.len() >= self.capacity {
                return Err(QueueError::Full);
            }
            if let Some(direct) = direct {
                // A connection closed from outside (kick, drain) takes nothing more, as its
                // writer task would refuse it.
                if direct.conn.is_closed() {
                    return Err(QueueError::Closed);
                }
                if !state.writing {
                    match direct.socket.try_write(&frame.frame) {
                        Ok(n) if n == frame.frame.len() => {
                            drop(state);
                            written(&direct.gate, &direct.conn, frame);
                            return Ok(());
                        }
                        Ok(n) => state.head_written = n,
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => {
                            // The link is gone: the reader sees it too and ends the session
                            // (what was not written takes the offline path, as with a writer).
                            drop(state);
                            direct.conn.close(CloseReason::Io);
                            return Err(QueueError::Closed);
                        }
                    }
                    // The socket is full: the rest waits for a writer task.
                    state.writing = true;
                    state.frames.push_back(frame);
                    drop(state);
                    self.queued.inc();
                    let queue = self.clone();
                    direct.tracker.spawn(direct_writer(queue));
                    return Ok(());
                }
            }
            state.frames.push_back(frame);
        }
        self.queued.inc();
        if direct.is_none() {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Queues `frame`, waiting at most `wait` for room.
    pub(crate) async fn push(
        self: &Arc<Self>,
        frame: Bytes,
        wait: Duration,
    ) -> Result<(), QueueError> {
        // Compressed once, not at every retry.
        let frame = self.encode(frame);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the attempt, so room made in between is not missed.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push_encoded(Outgoing::plain(frame.clone())) {
                Err(QueueError::Full) => {}
                other => return other,
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(QueueError::Full);
            }
        }
    }

    /// No more frames are accepted; the writer flushes what is queued, then closes (direct
    /// mode with nothing queued: the socket is shut down here).
    pub(crate) fn close(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.closed = true;
            if let Some(direct) = self.direct.get()
                && !state.writing
            {
                shutdown(&direct.socket);
            }
        }
        self.ready.notify_one();
    }

    /// Direct mode: writes what the socket takes now, as one `writev` of up to [`MAX_BATCH`]
    /// frames; counts and reports the frames written in full.
    fn write_queued(&self, direct: &Direct, done: &mut Vec<Outgoing>) -> Wrote {
        let Ok(mut state) = self.state.lock() else {
            return Wrote::Failed;
        };
        let result = {
            let mut slices = [IoSlice::new(&[]); MAX_BATCH];
            let mut n = 0;
            for (i, frame) in state.frames.iter().take(MAX_BATCH).enumerate() {
                let skip = if i == 0 { state.head_written } else { 0 };
                slices[i] = IoSlice::new(&frame.frame[skip..]);
                n = i + 1;
            }
            direct.socket.try_write_vectored(&slices[..n])
        };
        let mut wrote = match result {
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => return Wrote::More,
            Err(_) => return Wrote::Failed,
        };
        while let Some(front) = state.frames.front() {
            let left = front.frame.len() - state.head_written;
            if wrote < left {
                state.head_written += wrote;
                break;
            }
            wrote -= left;
            state.head_written = 0;
            if let Some(frame) = state.frames.pop_front() {
                done.push(frame);
            }
        }
        self.queued.dec_by(done.len() as i64);
        if !state.frames.is_empty() {
            return Wrote::More;
        }
        // Give memory back after a burst: an idle connection keeps no buffers.
        state.frames = VecDeque::new();
        state.writing = false;
        if state.closed {
            shutdown(&direct.socket);
        }
        Wrote::Empty
    }

    /// Moves up to `max` queued frames into `out` without waiting.
    fn drain_into(&self, out: &mut Vec<Outgoing>, max: usize) -> (usize, bool) {
        let Ok(mut state) = self.state.lock() else {
            return (0, true);
        };
        let n = state.frames.len().min(max.saturating_sub(out.len()));
        out.extend(state.frames.drain(..n));
        self.queued.dec_by(n as i64);
        if state.frames.is_empty() {
            // Give memory back: an idle connection keeps no buffers.
            state.frames = VecDeque::new();
        }
        (n, state.closed)
    }

    /// Waits for frames and moves up to `max` of them into `out`; `false` once the queue is
    /// closed and empty. Cancel-safe: frames are moved only when it returns.
    async fn next_batch(&self, out: &mut Vec<Outgoing>, max: usize) -> bool {
        loop {
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            let (n, closed) = self.drain_into(out, max);
            if n > 0 {
                self.room.notify_one();
                return true;
            }
            if closed {
                return false;
            }
            ready.await;
        }
    }
}

impl Drop for WriteQueue {
    fn drop(&mut self) {
        // Frames never written (the connection died) leave the gate-wide count too.
        if let Ok(state) = self.state.get_mut() {
            self.queued.dec_by(state.frames.len() as i64);
        }
    }
}

/// Backoff suggested to a client closed as a slow consumer.
const SLOW_CONSUMER_BACKOFF_MS: u32 = 1000;

/// Most frames written with one syscall.
const MAX_BATCH: usize = 64;

/// Drains `queue` in batches (up to [`MAX_BATCH`] frames, one write each) until it is closed
/// or the connection is closed from outside; then flushes what is queued and shuts the socket
/// down. A batch that takes longer than `write_timeout` closes the connection.
pub(crate) async fn run(
    mut write: WriteSide,
    queue: Arc<WriteQueue>,
    conn: Arc<ConnShared>,
    write_timeout: Duration,
    gate: Arc<GateShared>,
) {
    let mut batch: Vec<Outgoing> = Vec::new();
    loop {
        let closing = tokio::select! {
            // Queued frames first: a KICK queued just before the close must still go out.
            biased;
            more = queue.next_batch(&mut batch, MAX_BATCH) => !more,
            () = conn.closed() => {
                queue.close();
                queue.drain_into(&mut batch, MAX_BATCH);
                if conn.reason() == CloseReason::SlowConsumer {
                    // The queue was full, so the KICK could not be queued: it goes last, here.
                    batch.push(Outgoing::plain(slow_consumer_kick()));
                }
                true
            }
        };
        if !batch.is_empty() {
            let result = tokio::time::timeout(write_timeout, write_batch(&mut write, &batch)).await;
            if !matches!(result, Ok(Ok(()))) {
                conn.close(CloseReason::Io);
                return;
            }
            for sent in batch.drain(..) {
                written(&gate, &conn, sent);
            }
        }
        if closing {
            let _ = tokio::time::timeout(write_timeout, write.shutdown(conn.reason())).await;
            return;
        }
        if batch.capacity() > MAX_BATCH {
            // Give memory back after a burst: an idle connection keeps no buffers.
            batch = Vec::new();
        }
    }
}

/// Direct mode's writer: spawned when the socket would block, it writes what is queued as the
/// socket takes it and ends when the queue is empty. A socket that takes nothing for the
/// write timeout closes the connection; a close from outside (kick, slow consumer) flushes
/// what is queued (a slow consumer's KICK last), within the write timeout, and shuts down.
async fn direct_writer(queue: Arc<WriteQueue>) {
    let Some(direct) = queue.direct.get() else {
        return;
    };
    let write_timeout = direct.gate.config.write_timeout;
    let mut done: Vec<Outgoing> = Vec::new();
    // Set once the connection is closed from outside: the flush must end by then.
    let mut flush_by: Option<tokio::time::Instant> = None;
    loop {
        let by = flush_by.unwrap_or_else(|| tokio::time::Instant::now() + write_timeout);
        let cancelled = tokio::select! {
            biased;
            writable = tokio::time::timeout_at(by, direct.socket.as_ref().writable()) => {
                if !matches!(writable, Ok(Ok(()))) {
                    direct.conn.close(CloseReason::Io);
                    queue.abandon(&direct.socket);
                    return;
                }
                false
            }
            () = direct.conn.closed(), if flush_by.is_none() => true,
        };
        if cancelled {
            flush_by = Some(tokio::time::Instant::now() + write_timeout);
            queue.close_for(direct);
            continue;
        }
        let wrote = queue.write_queued(direct, &mut done);
        for frame in done.drain(..) {
            written(&direct.gate, &direct.conn, frame);
        }
        queue.room.notify_waiters();
        match wrote {
            Wrote::Empty => return,
            Wrote::More => {}
            Wrote::Failed => {
                direct.conn.close(CloseReason::Io);
                queue.abandon(&direct.socket);
                return;
            }
        }
    }
}

impl WriteQueue {
    /// Direct mode, closed from outside while frames wait: nothing more is accepted; a slow
    /// consumer's KICK goes after what is queued (the full queue had no room for it).
    fn close_for(&self, direct: &Direct) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        state.closed = true;
        if direct.conn.reason() == CloseReason::SlowConsumer {
            state
                .frames
                .push_back(Outgoing::plain(slow_consumer_kick()));
            self.queued.inc();
        }
    }

    /// Direct mode, the socket failed or timed out: what is queued is dropped (the reader
    /// sees the failure too and ends or holds the session) and the socket is shut down.
    fn abandon(&self, socket: &OwnedWriteHalf) {
        if let Ok(mut state) = self.state.lock() {
            self.queued.dec_by(state.frames.len() as i64);
            state.frames = VecDeque::new();
            state.closed = true;
            state.writing = false;
        }
        shutdown(socket);
    }
}

/// Sends the TCP FIN now (the socket's halves may live on a little in other tasks' hands).
fn shutdown(socket: &OwnedWriteHalf) {
    let _ = socket2::SockRef::from(socket.as_ref()).shutdown(std::net::Shutdown::Write);
}

/// The KICK a slow consumer gets last.
fn slow_consumer_kick() -> Bytes {
    Kick::new(
        KickReason::SlowConsumer,
        "write queue full: the client does not read fast enough",
        SLOW_CONSUMER_BACKOFF_MS,
    )
    .frame()
}

/// A frame that reached the socket: counted, and its receipt (if tracked) called.
fn written(gate: &GateShared, conn: &ConnShared, sent: Outgoing) {
    observe_written(gate, conn, &sent.frame);
    if let Some((receipt, tag)) = sent.receipt {
        receipt.written(tag);
    }
}

/// Counts a frame that reached the socket and records the ledger stage it completes: a MSG
/// written to a receiver, a C2C/C2S answer (the sender's ACK), or an ERROR.
fn observe_written(gate: &GateShared, conn: &ConnShared, frame: &Bytes) {
    // Frames here were encoded by this server: the header always decodes.
    let Some(header) = frame
        .first_chunk::<HEADER_LEN>()
        .and_then(|raw| Header::decode(raw, u32::MAX).ok())
    else {
        return;
    };
    let metrics = &gate.metrics;
    metrics.frames_out.add(header.cmd, 1);
    metrics.bytes_out.add(header.cmd, frame.len() as u64);
    let stage = match Cmd::try_from(header.cmd) {
        Ok(Cmd::Msg) if header.frame_type == FrameType::Push => Stage::Written,
        Ok(Cmd::C2c | Cmd::C2s) if header.frame_type == FrameType::Response => Stage::AckedToSender,
        Ok(Cmd::Error) => {
            let code = <wire::Error as prost::Message>::decode(&frame[HEADER_LEN..])
                .ok()
                .and_then(|e| longlink_proto::ErrorCode::try_from(e.code).ok());
            if let Some(code) = code {
                metrics.error_sent(code);
                if header.log_id != 0 {
                    let mut event = TraceEvent::now(header.log_id, Stage::Refused)
                        .detail(code.as_str_name().to_ascii_lowercase());
                    event.who = conn.label.get().cloned();
                    gate.ledger.record(event);
                }
            }
            return;
        }
        _ => return,
    };
    if header.log_id == 0 {
        return;
    }
    let mut event = TraceEvent::now(header.log_id, stage);
    event.who = conn.label.get().cloned();
    gate.ledger.record(event);
}

async fn write_batch(write: &mut WriteSide, batch: &[Outgoing]) -> std::io::Result<()> {
    write.write_frames(batch).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    fn frames(out: &[Outgoing]) -> Vec<Bytes> {
        out.iter().map(|o| o.frame.clone()).collect()
    }

    #[tokio::test]
    async fn bounded_fifo_that_refuses_after_close() {
        let queue = Arc::new(WriteQueue::new(2, Gauge::default()));
        queue.try_push(frame(1)).unwrap();
        queue.try_push(frame(2)).unwrap();
        assert_eq!(queue.try_push(frame(3)), Err(QueueError::Full));
        let mut out = Vec::new();
        assert!(queue.next_batch(&mut out, 64).await);
        assert_eq!(frames(&out), vec![frame(1), frame(2)]);
        queue.try_push(frame(4)).unwrap();
        queue.close();
        assert_eq!(queue.try_push(frame(5)), Err(QueueError::Closed));
        // What was queued before the close is still handed out, then the end.
        out.clear();
        assert!(queue.next_batch(&mut out, 64).await);
        assert_eq!(frames(&out), vec![frame(4)]);
        out.clear();
        assert!(!queue.next_batch(&mut out, 64).await);
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_room_when_the_writer_drains() {
        let queue = Arc::new(WriteQueue::new(1, Gauge::default()));
        queue.try_push(frame(1)).unwrap();
        let sender = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.push(frame(2), Duration::from_secs(20)).await })
        };
        let mut out = Vec::new();
        assert!(queue.next_batch(&mut out, 64).await);
        assert_eq!(sender.await.unwrap(), Ok(()));
        assert!(queue.next_batch(&mut out, 64).await);
        assert_eq!(frames(&out), vec![frame(1), frame(2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_gives_up_when_the_queue_stays_full() {
        let queue = Arc::new(WriteQueue::new(1, Gauge::default()));
        queue.try_push(frame(1)).unwrap();
        assert_eq!(
            queue.push(frame(2), Duration::from_secs(5)).await,
            Err(QueueError::Full)
        );
    }
}
