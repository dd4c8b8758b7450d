//! The gates of this node: [`GateSet`] fronts their session tables as one
//! [`GatePush`], routing each call by the gate id presence recorded for the session, so
//! logic pushes, kicks and detaches across gates (a RESUME on gate B takes over a session
//! held on gate A).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use longlink_gate::{Gate, SessionTable};
use longlink_rpc::{GatePush, KickNotice, PushError, WriteReceipt};

/// Session tables by gate id.
#[derive(Debug, Default)]
pub(crate) struct GateSet {
    tables: HashMap<String, Arc<SessionTable>>,
}

impl GateSet {
    pub(crate) fn new(gates: &[Gate]) -> Self {
        Self {
            tables: gates
                .iter()
                .map(|g| (g.id().to_owned(), g.sessions()))
                .collect(),
        }
    }

    fn table(&self, gate_id: &str) -> Result<&Arc<SessionTable>, PushError> {
        // A gate id this node does not run: the session is not reachable from here.
        self.tables.get(gate_id).ok_or(PushError::NoSession)
    }
}

#[async_trait]
impl GatePush for GateSet {
    async fn push(&self, gate_id: &str, session_id: u64, frame: Bytes) -> Result<(), PushError> {
        self.table(gate_id)?.push(gate_id, session_id, frame).await
    }

    async fn push_tracked(
        &self,
        gate_id: &str,
        session_id: u64,
        frame: Bytes,
        receipt: Arc<dyn WriteReceipt>,
        tag: u64,
    ) -> Result<(), PushError> {
        self.table(gate_id)?
            .push_tracked(gate_id, session_id, frame, receipt, tag)
            .await
    }

    async fn offer(&self, gate_id: &str, session_id: u64, frame: Bytes) -> Result<(), PushError> {
        self.table(gate_id)?.offer(gate_id, session_id, frame).await
    }

    async fn kick(&self, gate_id: &str, session_id: u64, notice: KickNotice) {
        if let Ok(table) = self.table(gate_id) {
            table.kick(gate_id, session_id, notice).await;
        }
    }

    async fn detach(&self, gate_id: &str, session_id: u64) {
        if let Ok(table) = self.table(gate_id) {
            table.detach(gate_id, session_id).await;
        }
    }
}
