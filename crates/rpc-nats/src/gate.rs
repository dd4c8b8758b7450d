//! logic → gate: [`NatsGatePush`] (logic's side) and [`serve_gate`] (the gate's side).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use longlink_rpc::{GatePush, KickNotice, PushError, WriteReceipt};
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::messages::{
    GateAnswer, GateCall, KickMsg, Tracked, Written, gate_call::Call, push_error_code, push_result,
};
use crate::{MAX_IN_FLIGHT, gate_subject};

/// How long a tracked push waits for its write receipt before it is forgotten (the
/// connection died first, or the gate did): the receipt then never fires, as in-process.
const RECEIPT_TTL: Duration = Duration::from_secs(120);

type Receipts = Mutex<HashMap<u64, (Arc<dyn WriteReceipt>, u64, Instant)>>;

/// `GatePush` for a logic or API process: each call is a request to the gate that holds the
/// session, named by presence's gate id.
pub struct NatsGatePush {
    client: async_nats::Client,
    timeout: Duration,
    /// Where gates report written tracked frames: one subject per instance.
    receipt_subject: String,
    receipts: Arc<Receipts>,
    next_tag: AtomicU64,
}

impl std::fmt::Debug for NatsGatePush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsGatePush")
            .field("receipt_subject", &self.receipt_subject)
            .finish_non_exhaustive()
    }
}

impl NatsGatePush {
    /// Pushes over `client`, waiting at most `timeout` for each gate's answer; listens for
    /// write receipts until `shutdown`.
    ///
    /// # Errors
    /// The receipt subscription could not be made.
    pub async fn new(
        client: async_nats::Client,
        timeout: Duration,
        shutdown: CancellationToken,
    ) -> Result<Self, async_nats::SubscribeError> {
        let receipt_subject = format!("longlink.receipt.{}", client.new_inbox().replace('.', "-"));
        let mut written = client.subscribe(receipt_subject.clone()).await?;
        let receipts: Arc<Receipts> = Arc::default();
        let table = receipts.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => break,
                    message = written.next() => match message {
                        Some(message) => message,
                        None => break,
                    },
                };
                let Ok(Written { tag }) = Written::decode(message.payload) else {
                    continue;
                };
                let entry = table
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&tag);
                if let Some((receipt, caller_tag, _)) = entry {
                    receipt.written(caller_tag);
                }
            }
        });
        Ok(Self {
            client,
            timeout,
            receipt_subject,
            receipts,
            next_tag: AtomicU64::new(1),
        })
    }

    async fn call(&self, gate_id: &str, session_id: u64, call: Call) -> Result<(), PushError> {
        let payload = Bytes::from(
            GateCall {
                session_id,
                call: Some(call),
            }
            .encode_to_vec(),
        );
        let request = self.client.request(gate_subject(gate_id), payload);
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(message)) => match GateAnswer::decode(message.payload) {
                Ok(answer) => push_result(answer.outcome),
                Err(err) => {
                    tracing::warn!(gate_id, %err, "undecodable answer from a gate");
                    Err(PushError::NoSession)
                }
            },
            // No responders: that gate is gone, and so is the session. A timeout: the gate is
            // stuck; either way the message is in the store and arrives by pull/redelivery.
            Ok(Err(err)) => {
                tracing::debug!(gate_id, %err, "gate unreachable");
                Err(PushError::NoSession)
            }
            Err(_) => {
                tracing::warn!(gate_id, timeout = ?self.timeout, "gate did not answer a push");
                Err(PushError::NoSession)
            }
        }
    }

    /// Remembers `receipt` under a fresh tag; forgets entries older than [`RECEIPT_TTL`].
    fn remember(&self, receipt: Arc<dyn WriteReceipt>, caller_tag: u64) -> u64 {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut table = self.receipts.lock().unwrap_or_else(PoisonError::into_inner);
        if tag.is_multiple_of(1024) {
            table.retain(|_, (_, _, at)| now.duration_since(*at) < RECEIPT_TTL);
        }
        table.insert(tag, (receipt, caller_tag, now));
        tag
    }
}

#[async_trait]
impl GatePush for NatsGatePush {
    async fn push(&self, gate_id: &str, session_id: u64, frame: Bytes) -> Result<(), PushError> {
        self.call(gate_id, session_id, Call::Push(frame)).await
    }

    async fn push_tracked(
        &self,
        gate_id: &str,
        session_id: u64,
        frame: Bytes,
        receipt: Arc<dyn WriteReceipt>,
        tag: u64,
    ) -> Result<(), PushError> {
        let own_tag = self.remember(receipt, tag);
        let call = Call::Tracked(Tracked {
            frame,
            receipt_subject: self.receipt_subject.clone(),
            tag: own_tag,
        });
        let result = self.call(gate_id, session_id, call).await;
        if result.is_err() {
            self.receipts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&own_tag);
        }
        result
    }

    async fn offer(&self, gate_id: &str, session_id: u64, frame: Bytes) -> Result<(), PushError> {
        self.call(gate_id, session_id, Call::Offer(frame)).await
    }

    async fn kick(&self, gate_id: &str, session_id: u64, notice: KickNotice) {
        let _ = self
            .call(gate_id, session_id, Call::Kick(KickMsg::from(&notice)))
            .await;
    }

    async fn detach(&self, gate_id: &str, session_id: u64) {
        let _ = self.call(gate_id, session_id, Call::Detach(true)).await;
    }
}

/// Reports a written tracked frame back to the logic process that pushed it.
struct RemoteReceipt {
    client: async_nats::Client,
    subject: String,
}

impl WriteReceipt for RemoteReceipt {
    fn written(&self, tag: u64) {
        let (client, subject) = (self.client.clone(), self.subject.clone());
        // Called from the gate's writer: never block it.
        tokio::spawn(async move {
            let payload = Bytes::from(Written { tag }.encode_to_vec());
            if let Err(err) = client.publish(subject, payload).await {
                tracing::debug!(%err, "write receipt not sent");
            }
        });
    }
}

/// Serves pushes for gate `gate_id` (whose sessions `gate` holds) on its subject
/// ([`gate_subject`]) until `shutdown`, at most [`MAX_IN_FLIGHT`] at once.
///
/// # Errors
/// The subscription could not be made.
pub async fn serve_gate(
    client: async_nats::Client,
    gate_id: String,
    gate: Arc<dyn GatePush>,
    shutdown: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let mut calls = client.subscribe(gate_subject(&gate_id)).await?;
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut draining = false;
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled(), if !draining => {
                // Stop being routed new calls, but answer every one already on its way to us:
                // dropping them would leave their callers waiting for the timeout.
                draining = true;
                if calls.drain().await.is_err() {
                    break;
                }
                continue;
            }
            message = calls.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (client, gate, gate_id) = (client.clone(), gate.clone(), gate_id.clone());
        tokio::spawn(async move {
            let outcome = match GateCall::decode(message.payload) {
                Ok(call) => serve_call(&client, gate.as_ref(), &gate_id, call).await,
                Err(err) => {
                    tracing::warn!(%err, "undecodable gate call");
                    Err(PushError::NoSession)
                }
            };
            if let Some(reply_to) = message.reply {
                let answer = GateAnswer {
                    outcome: push_error_code(outcome),
                };
                if let Err(err) = client
                    .publish(reply_to, Bytes::from(answer.encode_to_vec()))
                    .await
                {
                    tracing::debug!(%err, "gate answer not sent");
                }
            }
            drop(permit);
        });
    }
    Ok(())
}

async fn serve_call(
    client: &async_nats::Client,
    gate: &dyn GatePush,
    gate_id: &str,
    call: GateCall,
) -> Result<(), PushError> {
    let session_id = call.session_id;
    match call.call {
        Some(Call::Push(frame)) => gate.push(gate_id, session_id, frame).await,
        Some(Call::Offer(frame)) => gate.offer(gate_id, session_id, frame).await,
        Some(Call::Tracked(t)) => {
            let receipt = Arc::new(RemoteReceipt {
                client: client.clone(),
                subject: t.receipt_subject,
            });
            gate.push_tracked(gate_id, session_id, t.frame, receipt, t.tag)
                .await
        }
        Some(Call::Kick(kick)) => {
            gate.kick(gate_id, session_id, kick.into()).await;
            Ok(())
        }
        Some(Call::Detach(_)) => {
            gate.detach(gate_id, session_id).await;
            Ok(())
        }
        None => Err(PushError::NoSession),
    }
}
