//! Per-connection rate limits (issue 8, item 4): frames per second per command class, and
//! bytes per second read. Both are governor GCRA limiters (DEPENDENCIES.md note 11: no
//! hand-written token buckets).
//!
//! - **Frames/s per class** ([`Class`]): a frame beyond its class's rate is not handled — the
//!   client gets ERROR `RATE_LIMITED` with `retry_after_ms` and the connection stays open.
//!   A client that keeps sending without waiting `retry_after_ms` — more than
//!   `flood_refusals` refusals in a row, each arriving before the previous one's
//!   `retry_after_ms` ran out (so no frame of the connection could pass in between) — is
//!   flooding: its last refusal is followed by a close ([`crate::CloseReason::Flooding`]).
//!   That is a pipelined burst of more than `flood_refusals` frames beyond the bucket, or a
//!   sustained rate above about `flood_refusals + 1` times the limit.
//! - **Bytes/s**: the reader charges what it read; beyond the rate it stops reading until the
//!   bucket refills. No error: the kernel's receive buffer fills and TCP flow control slows the
//!   sender down (backpressure).
//!
//! Memory: most gate connections are idle, so nothing is allocated up front. Each class's
//! limiter (40 bytes: governor's `InMemoryState`, its GCRA parameters and a start instant) is
//! boxed the first time a frame of that class arrives, and the byte limiter only once the
//! connection has read more than one burst in total (until then every read would conform
//! anyway). [`ConnLimits`] itself is 72 bytes inline in the connection's task.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use longlink_proto::Cmd;

/// A direct GCRA limiter on the std monotonic clock: the clock is zero-sized, so the limiter is
/// its state (8 bytes), its GCRA parameters (16) and its start instant (16).
type Limiter = RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<Instant>>;

/// A rate and a burst; `per_sec` 0 turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Cells (frames or bytes) per second, sustained; 0 = no limit.
    pub per_sec: u32,
    /// Cells allowed at once (the bucket size); 0 = `per_sec`.
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const OFF: Rate = Rate {
        per_sec: 0,
        burst: 0,
    };

    /// `per_sec` sustained, `burst` at once.
    pub const fn new(per_sec: u32, burst: u32) -> Rate {
        Rate { per_sec, burst }
    }

    fn quota(self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.per_sec)?;
        let burst = NonZeroU32::new(self.burst).unwrap_or(rate);
        Some(Quota::per_second(rate).allow_burst(burst))
    }

    fn burst_cells(self) -> u32 {
        if self.burst == 0 {
            self.per_sec
        } else {
            self.burst
        }
    }
}

/// The command classes limited separately: a client catching up (pulls) must not eat the
/// budget of its sends, nor a burst of acks that of its pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// C2C, C2S: each costs a durable write.
    Send = 0,
    /// OFFLINE_PULL, HISTORY_PULL: each costs a store read of up to a page.
    Pull = 1,
    /// MSG_ACK, MARK_READ, NOTIFICATION_ACK: a store write, but batched by clients.
    Ack = 2,
    /// Everything else: KEEPALIVE, LOGIN, RESUME, LOGOUT, PUSH_TOKEN (rare: once per app
    /// start or token refresh), unknown or server-only cmds.
    Other = 3,
}

impl Class {
    /// Every class, in index order.
    pub const ALL: [Class; 4] = [Class::Send, Class::Pull, Class::Ack, Class::Other];

    /// The class of a frame's cmd id.
    pub fn of(cmd: u16) -> Class {
        match Cmd::try_from(cmd) {
            Ok(Cmd::C2c | Cmd::C2s) => Class::Send,
            Ok(Cmd::OfflinePull | Cmd::HistoryPull | Cmd::Conversations) => Class::Pull,
            Ok(Cmd::MsgAck | Cmd::MarkRead | Cmd::NotificationAck) => Class::Ack,
            _ => Class::Other,
        }
    }

    /// The metric label (`class`).
    pub fn label(self) -> &'static str {
        match self {
            Class::Send => "send",
            Class::Pull => "pull",
            Class::Ack => "ack",
            Class::Other => "other",
        }
    }
}

/// The per-connection limits of a gate ([`crate::GateConfig::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimitsConfig {
    /// Frames/s of C2C and C2S.
    pub send: Rate,
    /// Frames/s of OFFLINE_PULL and HISTORY_PULL.
    pub pull: Rate,
    /// Frames/s of MSG_ACK, MARK_READ and NOTIFICATION_ACK.
    pub ack: Rate,
    /// Frames/s of every other cmd (KEEPALIVE, LOGIN, RESUME, LOGOUT, PUSH_TOKEN, unknown cmds).
    pub other: Rate,
    /// More refusals than this in a row, each sent before the previous `retry_after_ms` ran
    /// out, close the connection (flooding); 0 = never close, only refuse.
    pub flood_refusals: u32,
    /// Bytes/s read from the connection (header + body); beyond it the reader pauses.
    pub read_bytes: Rate,
}

impl Default for ConnLimitsConfig {
    /// Far above what an honest client does (the SDK, every `longlink bench` scenario: e.g.
    /// `bench c2c --rate 10000` over 64 senders is ~160 sends/s per connection), so only a
    /// flood trips them.
    fn default() -> Self {
        Self {
            send: Rate::new(500, 1000),
            pull: Rate::new(200, 400),
            ack: Rate::new(1000, 2000),
            other: Rate::new(50, 100),
            flood_refusals: 50,
            read_bytes: Rate::new(1 << 20, 1 << 20),
        }
    }
}

impl ConnLimitsConfig {
    /// The rate of `class`.
    pub fn rate(&self, class: Class) -> Rate {
        match class {
            Class::Send => self.send,
            Class::Pull => self.pull,
            Class::Ack => self.ack,
            Class::Other => self.other,
        }
    }
}

/// What a frame's class limiter says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Handle the frame.
    Pass,
    /// Refuse it: RATE_LIMITED with this `retry_after_ms`; the connection stays open.
    Refuse(u32),
    /// Refuse it and close the connection: the client does not wait.
    Flood(u32),
}

/// One connection's limiter state (see the module doc for its memory cost).
#[derive(Debug, Default)]
pub(crate) struct ConnLimits {
    classes: [Option<Box<Limiter>>; 4],
    bytes: Option<Box<Limiter>>,
    /// Bytes read before the byte limiter existed (they conformed: the bucket starts full).
    unmetered: u32,
    /// Bytes read but not yet charged: the reader reads nothing more until they are.
    debt: u32,
    /// Refusals in a row that came before the previous one's retry-after ran out.
    streak: u32,
    /// When the last refusal's `retry_after_ms` runs out.
    quiet_until: Option<Instant>,
}

impl ConnLimits {
    /// Charges one frame of `class`.
    pub(crate) fn check_frame(&mut self, config: &ConnLimitsConfig, class: Class) -> Verdict {
        let Some(quota) = config.rate(class).quota() else {
            return Verdict::Pass;
        };
        let Some(slot) = self.classes.get_mut(class as usize) else {
            return Verdict::Pass;
        };
        let limiter =
            slot.get_or_insert_with(|| Box::new(Limiter::direct_with_clock(quota, MonotonicClock)));
        let now = Instant::now();
        let wait = match limiter.check() {
            Ok(()) => return Verdict::Pass,
            Err(not_until) => not_until.wait_time_from(now),
        };
        // A client that waited the previous retry-after starts a new streak; one that did not
        // (a flood, or many requests pipelined at once) extends it.
        self.streak = match self.quiet_until {
            Some(quiet) if now < quiet => self.streak.saturating_add(1),
            _ => 1,
        };
        self.quiet_until = Some(now + wait);
        let retry_after_ms = retry_ms(wait);
        if config.flood_refusals > 0 && self.streak > config.flood_refusals {
            Verdict::Flood(retry_after_ms)
        } else {
            Verdict::Refuse(retry_after_ms)
        }
    }

    /// Records `n` bytes just read; [`ConnLimits::read_paused_until`] says whether to wait
    /// before reading more.
    pub(crate) fn bytes_read(&mut self, config: &ConnLimitsConfig, n: usize) {
        let Some(quota) = config.read_bytes.quota() else {
            return;
        };
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        if self.bytes.is_none() {
            self.unmetered = self.unmetered.saturating_add(n);
            if self.unmetered <= config.read_bytes.burst_cells() {
                return;
            }
            // Created full, and charged with everything read so far: as if it had existed
            // from the start without refilling (a little stricter, never looser).
            self.bytes = Some(Box::new(Limiter::direct_with_clock(quota, MonotonicClock)));
            self.debt = self.debt.saturating_add(self.unmetered);
            return;
        }
        self.debt = self.debt.saturating_add(n);
    }

    /// Pays what can be paid of the read debt; `Some(instant)`: read nothing before it.
    pub(crate) fn read_paused_until(&mut self, config: &ConnLimitsConfig) -> Option<Instant> {
        let limiter = self.bytes.as_ref()?;
        let burst = config.read_bytes.burst_cells().max(1);
        while self.debt > 0 {
            // At most one burst per check: more never conforms (InsufficientCapacity).
            let piece = self.debt.min(burst);
            let Some(cells) = NonZeroU32::new(piece) else {
                break;
            };
            match limiter.check_n(cells) {
                Ok(Ok(())) => self.debt -= piece,
                Ok(Err(not_until)) => return Some(not_until.earliest_possible()),
                // Cannot happen (piece ≤ burst); forgive the debt rather than stall forever.
                Err(_) => self.debt = 0,
            }
        }
        None
    }
}

/// A wait as whole milliseconds, rounded up and at least 1 (0 would mean "do not retry").
fn retry_ms(wait: Duration) -> u32 {
    let ms = wait.as_nanos().div_ceil(1_000_000).max(1);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(send: Rate, flood_refusals: u32) -> ConnLimitsConfig {
        ConnLimitsConfig {
            send,
            flood_refusals,
            ..ConnLimitsConfig::default()
        }
    }

    /// The per-connection cost the module doc states, kept true.
    #[test]
    fn per_connection_memory_is_small() {
        assert_eq!(std::mem::size_of::<Limiter>(), 40);
        assert_eq!(std::mem::size_of::<ConnLimits>(), 72);
        let idle = ConnLimits::default();
        assert!(idle.classes.iter().all(Option::is_none) && idle.bytes.is_none());
    }

    #[test]
    fn classes_of_commands() {
        assert_eq!(Class::of(Cmd::C2c as u16), Class::Send);
        assert_eq!(Class::of(Cmd::C2s as u16), Class::Send);
        assert_eq!(Class::of(Cmd::OfflinePull as u16), Class::Pull);
        assert_eq!(Class::of(Cmd::HistoryPull as u16), Class::Pull);
        assert_eq!(Class::of(Cmd::MsgAck as u16), Class::Ack);
        assert_eq!(Class::of(Cmd::NotificationAck as u16), Class::Ack);
        assert_eq!(Class::of(Cmd::Keepalive as u16), Class::Other);
        assert_eq!(Class::of(Cmd::PushToken as u16), Class::Other);
        assert_eq!(Class::of(4242), Class::Other);
    }

    #[test]
    fn a_burst_passes_then_refusals_carry_a_retry_after_then_a_flood_closes() {
        // 1 per second, burst 5: the refill within this test is negligible.
        let config = config(Rate::new(1, 5), 3);
        let mut limits = ConnLimits::default();
        for _ in 0..5 {
            assert_eq!(limits.check_frame(&config, Class::Send), Verdict::Pass);
        }
        for _ in 0..3 {
            match limits.check_frame(&config, Class::Send) {
                Verdict::Refuse(ms) => assert!(ms > 0 && ms <= 1000, "{ms}"),
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        assert!(matches!(
            limits.check_frame(&config, Class::Send),
            Verdict::Flood(_)
        ));
        // Other classes have budgets of their own.
        assert_eq!(limits.check_frame(&config, Class::Pull), Verdict::Pass);
        assert!(
            limits.classes[Class::Ack as usize].is_none(),
            "created lazily"
        );
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let config = config(Rate::OFF, 1);
        let mut limits = ConnLimits::default();
        for _ in 0..10_000 {
            assert_eq!(limits.check_frame(&config, Class::Send), Verdict::Pass);
        }
        assert!(limits.classes[Class::Send as usize].is_none());
        let config = ConnLimitsConfig {
            read_bytes: Rate::OFF,
            ..config
        };
        limits.bytes_read(&config, 1 << 30);
        assert_eq!(limits.read_paused_until(&config), None);
    }

    #[test]
    fn bytes_beyond_the_burst_pause_the_reader() {
        let config = ConnLimitsConfig {
            read_bytes: Rate::new(1000, 4000),
            ..ConnLimitsConfig::default()
        };
        let mut limits = ConnLimits::default();
        limits.bytes_read(&config, 4000);
        assert!(
            limits.bytes.is_none(),
            "within the first burst nothing is allocated"
        );
        assert_eq!(limits.read_paused_until(&config), None);
        limits.bytes_read(&config, 3000);
        let until = limits
            .read_paused_until(&config)
            .expect("7000 bytes at once with a 4000 burst");
        let wait = until.saturating_duration_since(Instant::now());
        assert!(wait > Duration::from_millis(2000) && wait <= Duration::from_secs(3));
        assert!(limits.debt > 0);
    }
}
