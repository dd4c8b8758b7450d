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
    /// Capacity of each connection's write queue, in frames; a push to a full queue closes
    /// the connection as a slow consumer.
    pub write_queue_frames: usize,
    /// A batch that cannot be written within this closes the connection.
    pub write_timeout: Duration,
    /// Most connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            gate_id: "gate-1".into(),
            login_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_body_bytes: longlink_proto::DEFAULT_MAX_BODY_BYTES,
            write_queue_frames: 1024,
            write_timeout: Duration::from_secs(10),
            max_connections: 100_000,
        }
    }
}
