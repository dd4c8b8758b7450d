//! [`SessionTable`]: session id → the connection's write queue; implements
//! [`GatePush`] so logic can push and kick.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use longlink_proto::KickReason;
use longlink_rpc::{GatePush, PushError, WriteReceipt};

use crate::CloseReason;
use crate::close::{ConnShared, kick_frame};
use crate::write_queue::{Outgoing, QueueError, WriteQueue};

const SHARDS: usize = 64;

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
