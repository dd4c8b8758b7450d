//! [`SessionTable`]: session id → the connection's write queue; implements
//! [`GatePush`] so logic can push and kick.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use longlink_proto::{Cmd, Frame, KickReason, wire};
use longlink_rpc::{GatePush, PushError, WriteReceipt};
use tokio_util::sync::CancellationToken;

use crate::CloseReason;
use crate::write_queue::{Outgoing, QueueError, WriteQueue};

const SHARDS: usize = 64;

/// What one connection shares between its reader, its writer and the session table.
#[derive(Debug)]
pub(crate) struct ConnShared {
    /// Cancelled to close the connection from outside its reader (kick, slow consumer).
    pub(crate) token: CancellationToken,
    reason: AtomicU8,
}

impl ConnShared {
    pub(crate) fn new() -> Self {
        Self {
            token: CancellationToken::new(),
            reason: AtomicU8::new(0),
        }
    }

    /// Closes the connection for `reason` (the first reason given wins).
    pub(crate) fn close(&self, reason: CloseReason) {
        let code = match reason {
            CloseReason::Kicked => 1,
            CloseReason::SlowConsumer => 2,
            _ => 3,
        };
        let _ = self
            .reason
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    /// Why [`ConnShared::close`] was called.
    pub(crate) fn reason(&self) -> CloseReason {
        match self.reason.load(Ordering::Acquire) {
            1 => CloseReason::Kicked,
            2 => CloseReason::SlowConsumer,
            _ => CloseReason::Io,
        }
    }
}

#[derive(Debug, Clone)]
struct SessionHandle {
    queue: Arc<WriteQueue>,
    conn: Arc<ConnShared>,
}

/// The gate's logged-in sessions, sharded so that pushes to different sessions rarely
/// contend. Locks are held only for a map operation, never across an `.await`.
#[derive(Debug)]
pub struct SessionTable {
    shards: Vec<Mutex<HashMap<u64, SessionHandle>>>,
}

impl Default for SessionTable {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionTable {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, session_id: u64) -> &Mutex<HashMap<u64, SessionHandle>> {
        &self.shards[(session_id % SHARDS as u64) as usize]
    }

    pub(crate) fn insert(&self, session_id: u64, queue: Arc<WriteQueue>, conn: Arc<ConnShared>) {
        if let Ok(mut shard) = self.shard(session_id).lock() {
            shard.insert(session_id, SessionHandle { queue, conn });
        }
    }

    pub(crate) fn remove(&self, session_id: u64) {
        if let Ok(mut shard) = self.shard(session_id).lock() {
            shard.remove(&session_id);
        }
    }

    fn get(&self, session_id: u64) -> Option<SessionHandle> {
        self.shard(session_id)
            .lock()
            .ok()
            .and_then(|shard| shard.get(&session_id).cloned())
    }

    /// Logged-in sessions on this gate.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
            .sum()
    }

    /// Whether no session is logged in.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `frame` for `session_id` without waiting.
    ///
    /// # Errors
    /// [`PushError::NoSession`], or [`PushError::SlowConsumer`] after which the session is closed.
    pub fn try_push(&self, session_id: u64, frame: Bytes) -> Result<(), PushError> {
        self.try_push_outgoing(session_id, Outgoing::plain(frame))
    }

    fn try_push_outgoing(&self, session_id: u64, frame: Outgoing) -> Result<(), PushError> {
        let handle = self.get(session_id).ok_or(PushError::NoSession)?;
        match handle.queue.try_push_outgoing(frame) {
            Ok(()) => Ok(()),
            Err(QueueError::Full) => {
                handle.conn.close(CloseReason::SlowConsumer);
                Err(PushError::SlowConsumer)
            }
            Err(QueueError::Closed) => Err(PushError::NoSession),
        }
    }
}

/// The KICK push for `reason`.
pub(crate) fn kick_frame(reason: KickReason, message: &str, backoff_ms: u32) -> Bytes {
    Frame::push(
        Cmd::Kick,
        0,
        &wire::Kick {
            reason: reason as i32,
            message: message.to_owned(),
            reconnect_to: String::new(),
            backoff_ms,
        },
    )
    .to_bytes()
}

#[async_trait]
impl GatePush for SessionTable {
    async fn push(&self, session_id: u64, frame: Bytes) -> Result<(), PushError> {
        self.try_push(session_id, frame)
    }

    async fn push_tracked(
        &self,
        session_id: u64,
        frame: Bytes,
        receipt: Arc<dyn WriteReceipt>,
        tag: u64,
    ) -> Result<(), PushError> {
        self.try_push_outgoing(session_id, Outgoing::tracked(frame, receipt, tag))
    }

    async fn offer(&self, session_id: u64, frame: Bytes) -> Result<(), PushError> {
        let handle = self.get(session_id).ok_or(PushError::NoSession)?;
        handle.queue.try_push(frame).map_err(|err| match err {
            QueueError::Full => PushError::SlowConsumer,
            QueueError::Closed => PushError::NoSession,
        })
    }

    async fn kick(&self, session_id: u64, reason: KickReason, message: &str) {
        if let Some(handle) = self.get(session_id) {
            // The writer drains what is queued (this KICK included) before it closes.
            let _ = handle.queue.try_push(kick_frame(reason, message, 0));
            handle.conn.close(CloseReason::Kicked);
        }
    }
}
