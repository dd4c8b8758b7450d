//! The writer task: the only place that writes to a connection's socket.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use longlink_proto::KickReason;

use crate::CloseReason;
use crate::session_table::{ConnShared, kick_frame};

/// Backoff suggested to a client closed as a slow consumer.
const SLOW_CONSUMER_BACKOFF_MS: u32 = 1000;

/// Most frames written with one syscall.
const MAX_BATCH: usize = 64;

/// Drains `rx` in batches (up to [`MAX_BATCH`] frames, one write each) until every sender is
/// gone or the connection is closed from outside; then flushes what is queued and shuts the
/// socket down. A batch that takes longer than `write_timeout` closes the connection.
pub(crate) async fn run(
    mut write: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    conn: Arc<ConnShared>,
    write_timeout: Duration,
) {
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        let closing = tokio::select! {
            // Queued frames first: a KICK queued just before the close must still go out.
            biased;
            n = rx.recv_many(&mut batch, MAX_BATCH) => n == 0,
            _ = conn.token.cancelled() => {
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(frame) => batch.push(frame),
                        Err(_) => break,
                    }
                }
                if conn.reason() == CloseReason::SlowConsumer {
                    // The queue was full, so the KICK could not be queued: it goes last, here.
                    batch.push(kick_frame(
                        KickReason::SlowConsumer,
                        "write queue full: the client does not read fast enough",
                        SLOW_CONSUMER_BACKOFF_MS,
                    ));
                }
                true
            }
        };
        if !batch.is_empty() {
            let written =
                tokio::time::timeout(write_timeout, write_batch(&mut write, &batch)).await;
            batch.clear();
            if !matches!(written, Ok(Ok(()))) {
                conn.close(CloseReason::Io);
                return;
            }
        }
        if closing {
            let _ = tokio::time::timeout(write_timeout, write.shutdown()).await;
            return;
        }
        if batch.capacity() > MAX_BATCH {
            // Give memory back after a burst: an idle connection keeps no buffers.
            batch = Vec::new();
        }
    }
}

async fn write_batch(write: &mut OwnedWriteHalf, batch: &[Bytes]) -> std::io::Result<()> {
    if let [only] = batch {
        return write.write_all(only).await;
    }
    let mut out = BytesMut::with_capacity(batch.iter().map(Bytes::len).sum());
    for frame in batch {
        out.extend_from_slice(frame);
    }
    write.write_all(&out).await
}
