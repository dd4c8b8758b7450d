//! The peers' clients behind one face: MQTT through `rumqttc` (QoS 0 or 1) and core NATS
//! through `async-nats`. A [`Subscriber`] is the peer's equivalent of a logged-in user (a
//! connection subscribed to its own topic, confirmed by the broker); a [`Publisher`] is the
//! backend that sends.
//!
//! Confirmed means: MQTT's SUBACK came back, or for NATS a PING/PONG round trip after the SUB
//! (`flush`), which the server answers only after it processed the SUB. Topics are used
//! verbatim as NATS subjects (`u/7` is a valid single-token subject).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Peer, PeerKind};
use crate::client::HoldEnd;

/// MQTT keep-alive, and NATS's ping interval: long enough that an idle run sends none.
const KEEPALIVE: Duration = Duration::from_secs(120);
/// Requests a client may queue before `publish` waits (bounded: rumqttc's request channel).
const MQTT_REQUEST_CAPACITY: usize = 1024;
/// QoS 1 publishes in flight per MQTT connection (rumqttc's default is 100).
const MQTT_INFLIGHT: u16 = 1000;
/// NATS read buffer per connection: async-nats defaults to 64 KiB, which for 15,000
/// connections in one worker would be ~1 GiB of client memory for nothing (messages are tiny).
const NATS_READ_BUFFER: u16 = 4096;
/// Messages a NATS subscription may queue in the client (bounded).
const NATS_SUBSCRIPTION_CAPACITY: usize = 4096;

fn qos(level: u8) -> QoS {
    if level == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

fn mqtt_options(id: &str, broker: SocketAddr, timeout: Duration) -> (AsyncClient, EventLoop) {
    let host = match broker.ip() {
        // Spread over the broker's loopback listeners by id (see `broker::MQTT_ADDRESSES`).
        IpAddr::V4(ip) if ip == std::net::Ipv4Addr::LOCALHOST => {
            let spread = id
                .bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
            let host = 1 + (spread % u32::from(super::broker::MQTT_ADDRESSES)) as u8;
            super::broker::mqtt_address(host).to_string()
        }
        other => other.to_string(),
    };
    let mut options = MqttOptions::new(id, host, broker.port());
    options
        .set_keep_alive(KEEPALIVE)
        .set_clean_session(true)
        .set_inflight(MQTT_INFLIGHT)
        .set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut events) = AsyncClient::new(options, MQTT_REQUEST_CAPACITY);
    let mut network = events.network_options();
    network.set_connection_timeout(timeout.as_secs().max(1));
    events.set_network_options(network);
    (client, events)
}

/// Polls `events` until CONNACK.
async fn mqtt_connack(events: &mut EventLoop) -> Result<(), String> {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                return if ack.code == rumqttc::ConnectReturnCode::Success {
                    Ok(())
                } else {
                    Err(format!("MQTT CONNACK {:?}", ack.code))
                };
            }
            Ok(_) => {}
            Err(err) => return Err(format!("MQTT connect: {err}")),
        }
    }
}

fn nats_options(timeout: Duration) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .connection_timeout(timeout)
        .ping_interval(KEEPALIVE)
        .read_buffer_capacity(NATS_READ_BUFFER)
        .subscription_capacity(NATS_SUBSCRIPTION_CAPACITY)
        .client_capacity(MQTT_REQUEST_CAPACITY)
        // A bench client that lost its connection is counted as dropped, not healed.
        .max_reconnects(Some(0))
}

/// One subscribed connection.
pub(crate) enum Subscriber {
    Mqtt {
        /// Kept so the request channel stays open (rumqttc ends the loop when it closes).
        _client: AsyncClient,
        /// Boxed: rumqttc's event loop is ~700 bytes, the NATS variant a few words.
        events: Box<EventLoop>,
    },
    Nats {
        _client: async_nats::Client,
        subscriptions: Vec<async_nats::Subscriber>,
    },
}

impl Subscriber {
    /// Connects to `broker` as `id` (from `source`, where the client library lets us choose)
    /// and subscribes to `topics`, waiting for the broker to confirm; all within `timeout`.
    pub(crate) async fn connect(
        peer: Peer,
        broker: SocketAddr,
        id: &str,
        source: Option<IpAddr>,
        topics: &[String],
        timeout: Duration,
    ) -> Result<Subscriber, String> {
        let connecting = async {
            match peer.kind {
                PeerKind::Mosquitto => {
                    // rumqttc cannot bind a source address: the kernel picks it (127.0.0.1);
                    // the destinations are spread instead (`mqtt_options`).
                    let (client, mut events) = mqtt_options(id, broker, timeout);
                    mqtt_connack(&mut events).await?;
                    for topic in topics {
                        client
                            .subscribe(topic.as_str(), qos(peer.qos))
                            .await
                            .map_err(|err| format!("MQTT subscribe: {err}"))?;
                    }
                    let mut pending = topics.len();
                    while pending > 0 {
                        match events.poll().await {
                            Ok(Event::Incoming(Packet::SubAck(_))) => pending -= 1,
                            Ok(_) => {}
                            Err(err) => return Err(format!("MQTT subscribe: {err}")),
                        }
                    }
                    Ok(Subscriber::Mqtt {
                        _client: client,
                        events: Box::new(events),
                    })
                }
                PeerKind::Nats => {
                    let mut options = nats_options(timeout).name(id);
                    if let Some(ip) = source {
                        options = options.local_address(SocketAddr::new(ip, 0));
                    }
                    let client = options
                        .connect(format!("nats://{broker}"))
                        .await
                        .map_err(|err| format!("NATS connect: {err}"))?;
                    let mut subscriptions = Vec::with_capacity(topics.len());
                    for topic in topics {
                        subscriptions.push(
                            client
                                .subscribe(topic.clone())
                                .await
                                .map_err(|err| format!("NATS subscribe: {err}"))?,
                        );
                    }
                    client
                        .flush()
                        .await
                        .map_err(|err| format!("NATS flush: {err}"))?;
                    Ok(Subscriber::Nats {
                        _client: client,
                        subscriptions,
                    })
                }
            }
        };
        tokio::time::timeout(timeout, connecting)
            .await
            .unwrap_or_else(|_| Err(format!("no connect + subscribe within {timeout:?}")))
    }

    /// Receives until `stop`, handing each message's payload to `on_message`; QoS 1 messages
    /// are acknowledged (rumqttc sends the PUBACK) and also reported to `on_ack`. Returns
    /// [`HoldEnd::Dropped`] when the connection ended first.
    pub(crate) async fn receive(
        self,
        stop: CancellationToken,
        mut on_message: impl FnMut(&[u8]),
        mut on_ack: impl FnMut(),
    ) -> HoldEnd {
        match self {
            Subscriber::Mqtt {
                _client,
                mut events,
            } => loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return HoldEnd::Stopped,
                    event = events.poll() => match event {
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            on_message(&publish.payload);
                            if publish.qos != QoS::AtMostOnce {
                                on_ack();
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return HoldEnd::Dropped,
                    },
                }
            },
            Subscriber::Nats {
                _client,
                subscriptions,
            } => {
                let mut messages = futures::stream::select_all(subscriptions);
                loop {
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return HoldEnd::Stopped,
                        message = messages.next() => match message {
                            Some(message) => on_message(&message.payload),
                            None => return HoldEnd::Dropped,
                        },
                    }
                }
            }
        }
    }
}

/// A publishing connection.
pub(crate) enum Publisher {
    Mqtt {
        client: AsyncClient,
        qos: QoS,
        /// Drives the connection (writes, PUBACKs); ends when the connection fails.
        driver: JoinHandle<()>,
    },
    Nats {
        client: async_nats::Client,
    },
}

impl Publisher {
    /// Connects a publisher to `broker` as `id`, within `timeout`.
    pub(crate) async fn connect(
        peer: Peer,
        broker: SocketAddr,
        id: &str,
        timeout: Duration,
    ) -> Result<Publisher, String> {
        let connecting = async {
            match peer.kind {
                PeerKind::Mosquitto => {
                    let (client, mut events) = mqtt_options(id, broker, timeout);
                    mqtt_connack(&mut events).await?;
                    let driver = tokio::spawn(async move { while events.poll().await.is_ok() {} });
                    Ok(Publisher::Mqtt {
                        client,
                        qos: qos(peer.qos),
                        driver,
                    })
                }
                PeerKind::Nats => {
                    let client = nats_options(timeout)
                        .name(id)
                        .connect(format!("nats://{broker}"))
                        .await
                        .map_err(|err| format!("NATS connect: {err}"))?;
                    Ok(Publisher::Nats { client })
                }
            }
        };
        tokio::time::timeout(timeout, connecting)
            .await
            .unwrap_or_else(|_| Err(format!("no connect within {timeout:?}")))
    }

    /// Queues one message to `topic` (it is written as soon as the connection can: MQTT QoS 1
    /// waits for a free in-flight slot).
    pub(crate) async fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), String> {
        match self {
            Publisher::Mqtt {
                client,
                qos,
                driver,
            } => {
                if driver.is_finished() {
                    return Err("MQTT publisher connection lost".to_owned());
                }
                client
                    .publish(topic, *qos, false, payload)
                    .await
                    .map_err(|err| format!("MQTT publish: {err}"))
            }
            Publisher::Nats { client } => client
                .publish(topic.to_owned(), Bytes::from(payload))
                .await
                .map_err(|err| format!("NATS publish: {err}")),
        }
    }

    /// Pushes out what is queued (NATS buffers writes in the client).
    pub(crate) async fn flush(&self) {
        if let Publisher::Nats { client } = self {
            let _ = client.flush().await;
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Publisher::Mqtt { driver, .. } = self {
            driver.abort();
        }
    }
}
