//! [`LocalBus`]: an in-process bus for a single node.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::{Bus, BusError, BusMessage};

/// Single-node bus: every published message goes to every live subscription whose topic
/// prefix matches. Each subscription is a bounded queue (`capacity` messages); a subscriber
/// that falls behind loses the oldest messages and is told how many (never unbounded memory).
#[derive(Debug, Clone)]
pub struct LocalBus {
    tx: broadcast::Sender<Arc<BusMessage>>,
}

impl LocalBus {
    /// A bus whose subscriptions each buffer at most `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    /// Subscribes to the topics starting with `topic_prefix` ("c2s." for all c2s).
    pub fn subscribe(&self, topic_prefix: impl Into<String>) -> BusSubscription {
        BusSubscription {
            rx: self.tx.subscribe(),
            prefix: topic_prefix.into(),
        }
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, message: BusMessage) -> Result<(), BusError> {
        // No subscriber is not an error: the local bus accepted the message.
        let _ = self.tx.send(Arc::new(message));
        Ok(())
    }
}

/// A live subscription to a [`LocalBus`].
#[derive(Debug)]
pub struct BusSubscription {
    rx: broadcast::Receiver<Arc<BusMessage>>,
    prefix: String,
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The next matching message.
    Message(Arc<BusMessage>),
    /// The subscriber fell behind and this many messages were dropped for it.
    Lagged(u64),
}

impl BusSubscription {
    /// The next matching message, or `None` when the bus is gone.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            match self.rx.recv().await {
                Ok(message) if message.topic.starts_with(&self.prefix) => {
                    return Some(Delivery::Message(message));
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => return Some(Delivery::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::c2s_topic;

    fn message(appcode: u32, msgtype: u32) -> BusMessage {
        BusMessage {
            topic: c2s_topic(appcode, msgtype),
            appcode,
            uid: "u".into(),
            device_id: "d".into(),
            msgtype,
            client_msg_id: "c1".into(),
            payload: bytes::Bytes::from_static(b"gps"),
            log_id: 7,
            received_ms: 0,
        }
    }

    #[tokio::test]
    async fn subscribers_get_matching_topics_only() {
        let bus = LocalBus::new(16);
        let mut gps = bus.subscribe("c2s.130.");
        bus.publish(message(129, 1)).await.unwrap();
        bus.publish(message(130, 2)).await.unwrap();
        match gps.next().await {
            Some(Delivery::Message(m)) => assert_eq!(m.topic, "c2s.130.2"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
