//! Graceful drain: move every client to another gate without losing anything acknowledged.
//!
//! The gate stops accepting and refuses new sessions (SHUTTING_DOWN with a retry-after), then
//! kicks its sessions in waves — KICK(RECONNECT, `reconnect_to`, jittered `backoff_ms`) — so
//! that the other gates see a steady stream of reconnects rather than a spike. Each kicked
//! connection flushes what was queued before the KICK (responses to requests already handled,
//! so an ACKed message's sender got its ACK) and closes; its session is held, so the client
//! RESUMEs on the gate it was sent to (that gate's RESUME detaches the hold here), and
//! undelivered messages wait in the store. Once no link is left, the gate gives the held
//! sessions a grace to be resumed elsewhere (none when there is nowhere to go), ends the rest,
//! then stops.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use longlink_proto::KickReason;
use tokio::time::Instant;

use crate::close::Kick;
use crate::{CloseReason, GateShared};

/// What a drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Sessions sent KICK(RECONNECT).
    pub kicked: usize,
    /// Waves sent.
    pub waves: usize,
    /// Sessions still open when the timeout ended the wait (0 = a clean drain).
    pub left_open: u64,
    /// Kicked sessions that were resumed on another gate before the drain ended (at most).
    pub resumed_elsewhere: usize,
}

/// Extra time held sessions get to be resumed elsewhere, beyond the advised backoffs.
const HOLD_GRACE: Duration = Duration::from_secs(2);

pub(crate) async fn run(
    gate: &Arc<GateShared>,
    targets: &[String],
    timeout: Duration,
) -> DrainReport {
    let deadline = Instant::now() + timeout;
    let config = &gate.config;
    gate.draining.store(true, Ordering::Release);
    gate.metrics.draining.set(1);
    gate.stop_accepting.cancel();
    tracing::info!(gate = %config.gate_id, targets = ?targets, "draining");
    let backoff = u32::try_from(config.drain_backoff.as_millis()).unwrap_or(u32::MAX);
    let mut report = DrainReport::default();
    // Sessions that logged in while a wave went out are caught by the next pass; a kicked
    // session stays attached until its reader closes it, and is not kicked again.
    let mut kicked = std::collections::HashSet::new();
    loop {
        let links: Vec<_> = gate
            .sessions
            .links()
            .into_iter()
            .filter(|(session_id, _)| !kicked.contains(session_id))
            .collect();
        if links.is_empty() || Instant::now() >= deadline {
            break;
        }
        for wave in links.chunks(config.drain_wave_size.max(1)) {
            for (session_id, link) in wave {
                kicked.insert(*session_id);
                let mut kick = Kick::new(
                    KickReason::Reconnect,
                    "this gate is draining: reconnect",
                    backoff.saturating_add(rand::random_range(0..=backoff)),
                );
                if !targets.is_empty() {
                    kick.reconnect_to = targets[report.kicked % targets.len()].clone();
                }
                let _ = link.queue.try_push(kick.frame());
                link.conn.close(CloseReason::Drained);
                report.kicked += 1;
            }
            report.waves += 1;
            tokio::time::sleep(config.drain_wave_interval).await;
        }
    }
    // Each kicked connection turns into a hold once its writer flushed and it closed.
    while !gate.sessions.links().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.left_open = gate.sessions.links().len() as u64;
    if !targets.is_empty() {
        // Kicked clients wait up to 2 × drain_backoff, then RESUME on their target.
        let grace = Instant::now() + config.drain_backoff * 2 + config.reconnect_max + HOLD_GRACE;
        while !gate.sessions.is_empty() && Instant::now() < grace.min(deadline) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    report.resumed_elsewhere = report.kicked.saturating_sub(gate.sessions.len());
    gate.sessions.release_holds();
    // Connections that never logged in get the shutdown KICK; serve() returns once all ended.
    if let Some(stop) = gate.stop.get() {
        stop.cancel();
    }
    tracing::info!(gate = %config.gate_id, kicked = report.kicked, waves = report.waves,
        left_open = report.left_open, resumed_elsewhere = report.resumed_elsewhere, "drained");
    report
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use longlink_metrics::Gauge;

    use crate::close::ConnShared;
    use crate::session_table::Link;
    use crate::write_queue::WriteQueue;
    use crate::{Gate, GateConfig};

    /// A connection whose reader does not get to close it (busy, or slow to be scheduled)
    /// stays attached across waves: it must still be kicked once, not once per wave.
    #[tokio::test]
    async fn a_session_slow_to_close_is_kicked_once() {
        let config = GateConfig {
            drain_wave_interval: Duration::from_millis(5),
            ..GateConfig::default()
        };
        let mut registry = longlink_metrics::Registry::default();
        let gate = Gate::new(
            config,
            Arc::new(longlink_rpc::trace::NoLedger),
            &mut registry,
        );
        let queued = Gauge::default();
        let link = Link {
            queue: Arc::new(WriteQueue::new(64, queued.clone())),
            conn: Arc::new(ConnShared::new()),
        };
        gate.shared.sessions.insert(1, link.clone());
        let report = gate
            .drain(&["127.0.0.1:2".to_owned()], Duration::from_millis(200))
            .await;
        assert_eq!(report.kicked, 1, "{report:?}");
        assert_eq!(queued.get(), 1, "one KICK queued");
        assert_eq!(report.left_open, 1, "it never closed");
        assert_eq!(report.resumed_elsewhere, 0, "nor went anywhere");
        assert!(link.conn.is_closed());
    }
}
