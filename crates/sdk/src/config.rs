//! [`ClientConfig`]: where to connect, who to log in as, and the client's limits.

use std::time::Duration;

/// Everything [`crate::Client::connect`] needs. Build it with [`ClientConfig::new`] and
/// adjust the public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The gate's TCP address, e.g. `"127.0.0.1:7700"`.
    pub addr: String,
    /// The appcode (client kind / account system) to log in to.
    pub appcode: u32,
    /// The login token (a JWT minted for this appcode and uid, e.g. by `longlink token`).
    pub token: String,
    /// This device's id: the server keeps one session per (appcode, uid, device_id).
    pub device_id: String,
    /// How long any request (LOGIN included) waits for its answer. Default 10 s.
    pub request_timeout: Duration,
    /// How long the TCP connect may take. Default 5 s.
    pub connect_timeout: Duration,
    /// How often the client sends KEEPALIVE. `None` (the default) uses the interval the server
    /// announces in its `LoginResponse` (30 s if it announces 0); `Some(Duration::ZERO)`
    /// disables automatic keepalives and the liveness check that goes with them.
    pub keepalive_interval: Option<Duration>,
    /// Acknowledge (MSG_ACK, type 3, batched) every message handed to the application,
    /// pushed or pulled. Default `true`. With `false` the application calls
    /// [`crate::Client::ack`] itself.
    pub auto_ack: bool,
    /// Capacity of the queue of incoming events. When it is full the client stops reading
    /// the socket until the application drains [`crate::Incoming`] (backpressure). Default 1024
    /// (0 counts as 1).
    pub incoming_capacity: usize,
    /// Largest frame body accepted from the server. Default
    /// [`longlink_proto::DEFAULT_MAX_BODY_BYTES`] (64 KiB).
    pub max_body_bytes: u32,
}

impl ClientConfig {
    /// Default [`ClientConfig::request_timeout`].
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default [`ClientConfig::connect_timeout`].
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default [`ClientConfig::incoming_capacity`].
    pub const DEFAULT_INCOMING_CAPACITY: usize = 1024;
    /// Keepalive interval used when the server announces none and the config sets none.
    pub const FALLBACK_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

    /// A config with the defaults above.
    pub fn new(
        addr: impl Into<String>,
        appcode: u32,
        token: impl Into<String>,
        device_id: impl Into<String>,
    ) -> Self {
        Self {
            addr: addr.into(),
            appcode,
            token: token.into(),
            device_id: device_id.into(),
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            keepalive_interval: None,
            auto_ack: true,
            incoming_capacity: Self::DEFAULT_INCOMING_CAPACITY,
            max_body_bytes: longlink_proto::DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// The keepalive period to use given the server's announcement; `None` = no automatic
    /// keepalive.
    pub(crate) fn effective_keepalive(&self, server_secs: u32) -> Option<Duration> {
        match self.keepalive_interval {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None if server_secs == 0 => Some(Self::FALLBACK_KEEPALIVE_INTERVAL),
            None => Some(Duration::from_secs(u64::from(server_secs))),
        }
    }
}
