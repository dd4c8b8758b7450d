//! [`GateConfig`]: the gate's limits and timeouts.

use std::time::Duration;

/// The gate's limits and timeouts. Every queue is bounded by a named field.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// This gate's id in presence.
    pub gate_id: String,
    /// A connection must LOGIN within this, or it is closed.
    pub login_timeout: Duration,
    /// A logged-in connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Frames with a larger body_len are refused before allocation.
    pub max_body_bytes: u32,
    /// Compression algorithms this gate agrees to at LOGIN, best first (the first one the
    /// client offers wins); empty = never compress (`[gate] compression`).
    pub compression: Vec<longlink_proto::Compression>,
    /// Frame bodies shorter than this are never compressed (`[gate] compression_min_bytes`).
    pub compression_min_bytes: u32,
    /// Most bytes a compressed client frame may decompress to; more is refused as a
    /// decompression bomb (BODY_TOO_LARGE, close). `[gate] max_decompressed_bytes`, by default
    /// `max_body_bytes`.
    pub max_decompressed_bytes: u32,
    /// Capacity of each connection's write queue, in frames; a push to a full queue closes
    /// the connection as a slow consumer.
    pub write_queue_frames: usize,
    /// A batch that cannot be written within this closes the connection.
    pub write_timeout: Duration,
    /// Most connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// The address clients are told to use for this gate (dispatch, KICK `reconnect_to`,
    /// `LoginResponse.gates`); empty = the bound listen address.
    pub public_addr: String,
    /// How long a resume-capable session is held after its link drops; zero = no hold, no
    /// RESUME.
    pub hold: Duration,
    /// Reconnect backoff advised to clients at login: the first step and the cap.
    pub reconnect_min: Duration,
    /// See [`GateConfig::reconnect_min`].
    pub reconnect_max: Duration,
    /// Fresh LOGINs admitted per second (admission control for reconnect storms); 0 = no
    /// limit. RESUMEs are not limited.
    pub login_rate_per_sec: u32,
    /// LOGINs admitted at once beyond the rate (the bucket size).
    pub login_burst: u32,
    /// A drain kicks this many sessions per wave.
    pub drain_wave_size: usize,
    /// Pause between drain waves.
    pub drain_wave_interval: Duration,
    /// `backoff_ms` of the drain KICK: clients wait this long (plus jitter up to the same
    /// again, so that a wave does not come back in lockstep) before reconnecting.
    pub drain_backoff: Duration,
    /// Per-connection rate limits: frames/s per command class, bytes/s read
    /// ([`crate::limits`]).
    pub limits: crate::limits::ConnLimitsConfig,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            gate_id: "gate-1".into(),
            login_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_body_bytes: longlink_proto::DEFAULT_MAX_BODY_BYTES,
            compression: longlink_proto::Compression::ALL.to_vec(),
            compression_min_bytes: longlink_proto::compress::DEFAULT_MIN_BYTES,
            max_decompressed_bytes: longlink_proto::DEFAULT_MAX_BODY_BYTES,
            write_queue_frames: 1024,
            write_timeout: Duration::from_secs(10),
            max_connections: 100_000,
            public_addr: String::new(),
            hold: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            login_rate_per_sec: 5000,
            login_burst: 1000,
            drain_wave_size: 500,
            drain_wave_interval: Duration::from_millis(100),
            drain_backoff: Duration::from_millis(200),
            limits: crate::limits::ConnLimitsConfig::default(),
        }
    }
}
