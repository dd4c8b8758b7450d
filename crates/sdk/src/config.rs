//! [`ClientConfig`]: where to connect, who to log in as, and the client's limits;
//! [`ReconnectPolicy`]: how the client backs off between reconnects and send retries.

use std::time::Duration;

/// Everything [`crate::Client::connect`] needs. Build it with [`ClientConfig::new`] and
/// adjust the public fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The gate's TCP address, e.g. `"127.0.0.1:7700"` (a TLS address when
    /// [`ClientConfig::tls`] is set).
    pub addr: String,
    /// The appcode (client kind / account system) to log in to.
    pub appcode: u32,
    /// The login token (a JWT minted for this appcode and uid, e.g. by `longlink token`).
    pub token: String,
    /// This device's id: the server keeps one session per (appcode, uid, device_id).
    pub device_id: String,
    /// This device's class (`"phone"`, `"web"`, `"pad"`…): the appcode's multi-login policy
    /// applies per class (a newer login on the same class may replace this session). Empty
    /// (the default): the device id alone is the class.
    pub device_class: String,
    /// After a drop, take the held session over with RESUME (one round trip, no
    /// re-authentication, the missed messages in the answer) while the server still holds it;
    /// LOGIN otherwise. Default `true`; `false` always logs in again.
    pub resume: bool,
    /// How long one attempt of any request (LOGIN included) waits for its answer. Default
    /// 10 s. A request issued while the client is reconnecting waits for the new connection
    /// within this same bound.
    pub request_timeout: Duration,
    /// How long [`crate::Client::c2c`], [`crate::Client::c2c_with_id`] and
    /// [`crate::Client::c2s`] keep retrying (each attempt bounded by
    /// [`ClientConfig::request_timeout`], the same client_msg_id every time) before they give
    /// up with [`crate::ClientError::DeadlineExceeded`]. Default 30 s.
    pub send_deadline: Duration,
    /// Whether and how to reconnect when the connection drops (I/O error, EOF, keepalive
    /// timeout, a KICK other than REPLACED / LOGGED_OUT / BLOCKED). `None`: the client ends
    /// with [`crate::Event::Closed`] instead. Default `Some(ReconnectPolicy::default())`.
    pub reconnect: Option<ReconnectPolicy>,
    /// How long the TCP connect may take (and then the TLS handshake, again). Default 5 s.
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
    /// Largest frame body accepted from the server — for a compressed frame, its decompressed
    /// body too. Default
    /// [`longlink_proto::DEFAULT_MAX_BODY_BYTES`] (64 KiB).
    pub max_body_bytes: u32,
    /// Speak TLS to the gate (every address dialed, reconnects included), trusting these CA
    /// certificates. Default `None`: plain TCP.
    pub tls: Option<crate::TlsConfig>,
    /// Compression algorithms offered at LOGIN, best first (docs/protocol.md §2.2). The server
    /// picks one by its own preference (default: zstd, then lz4) or none; then frames with
    /// bodies of 512 bytes or more are compressed both ways, and incoming ones are
    /// decompressed to at most [`ClientConfig::max_body_bytes`]. Default empty: nothing is
    /// offered (opt in: it costs CPU on both ends and pays off for large messages and pull
    /// pages on slow links). A RESUMEd connection is never compressed.
    pub compression: Vec<longlink_proto::Compression>,
    /// This device's platform for offline push notifications ("ios", "android", "linux"…),
    /// sent with [`crate::Client::register_push_token`]: the server measures each push
    /// provider's delivery per device class (platform, vendor, app version) and picks the best
    /// one for it. Default [`std::env::consts::OS`]; "" = unknown.
    pub platform: String,
    /// The device maker's push ecosystem ("apple", "google", "huawei", "xiaomi"…), part of the
    /// device class like [`ClientConfig::platform`]. Default "" (unknown).
    pub vendor: String,
    /// The app's version, part of the device class like [`ClientConfig::platform`] (a release
    /// that breaks its notification handler shows up as its own class). Default "" (unknown).
    pub app_version: String,
}

impl ClientConfig {
    /// Default [`ClientConfig::request_timeout`].
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default [`ClientConfig::send_deadline`].
    pub const DEFAULT_SEND_DEADLINE: Duration = Duration::from_secs(30);
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
            device_class: String::new(),
            resume: true,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            send_deadline: Self::DEFAULT_SEND_DEADLINE,
            reconnect: Some(ReconnectPolicy::default()),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            keepalive_interval: None,
            auto_ack: true,
            incoming_capacity: Self::DEFAULT_INCOMING_CAPACITY,
            max_body_bytes: longlink_proto::DEFAULT_MAX_BODY_BYTES,
            tls: None,
            compression: Vec::new(),
            platform: std::env::consts::OS.to_owned(),
            vendor: String::new(),
            app_version: String::new(),
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

/// How random the pause between two attempts is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// No randomness: exactly the exponential step.
    None,
    /// "Full jitter": uniformly random between zero and the exponential step, so that many
    /// clients dropped at once (a server restart) do not come back in lockstep.
    #[default]
    Full,
}

/// Exponential backoff between reconnect attempts (and between retries of a send): the
/// step for attempt `n` (0-based) is `initial_backoff * 2^n`, capped at `max_backoff`, then
/// randomized by `jitter`. A KICK that asks for a longer wait (`backoff_ms`) and an ERROR's
/// `retry_after_ms` are honoured; when the server advises a range at login
/// (`LoginResponse.reconnect_min_ms` / `reconnect_max_ms`), reconnects use it instead of
/// `initial_backoff` / `max_backoff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// The first step. Default 100 ms.
    pub initial_backoff: Duration,
    /// The largest step. Default 5 s.
    pub max_backoff: Duration,
    /// Randomization of each step. Default [`Jitter::Full`].
    pub jitter: Jitter,
}

impl ReconnectPolicy {
    /// Default [`ReconnectPolicy::initial_backoff`].
    pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
    /// Default [`ReconnectPolicy::max_backoff`].
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);

    /// This policy with the server's advised range (milliseconds; 0 = no advice for that end).
    pub(crate) fn advised(&self, min_ms: u32, max_ms: u32) -> Self {
        let mut policy = self.clone();
        if min_ms > 0 {
            policy.initial_backoff = Duration::from_millis(u64::from(min_ms));
        }
        if max_ms > 0 {
            policy.max_backoff = Duration::from_millis(u64::from(max_ms));
        }
        policy.max_backoff = policy.max_backoff.max(policy.initial_backoff);
        policy
    }

    /// The pause before attempt `attempt` (0 = the first retry).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let step = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        match self.jitter {
            Jitter::None => step,
            Jitter::Full => {
                let nanos = u64::try_from(step.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(rand::random_range(0..=nanos))
            }
        }
    }
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Self::DEFAULT_INITIAL_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
            jitter: Jitter::Full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let policy = ReconnectPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            jitter: Jitter::None,
        };
        let steps: Vec<u128> = (0..8).map(|n| policy.backoff(n).as_millis()).collect();
        assert_eq!(steps, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(5));
        let jittered = ReconnectPolicy::default();
        for attempt in [0, 3, 40] {
            let cap = ReconnectPolicy {
                jitter: Jitter::None,
                ..jittered.clone()
            }
            .backoff(attempt);
            assert!(jittered.backoff(attempt) <= cap);
        }
    }
}
