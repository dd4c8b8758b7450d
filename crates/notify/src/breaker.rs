//! A circuit breaker per provider: a provider that keeps failing (5xx, 429, transport) is
//! not asked again for a while, so notifications fail over to the next provider at once
//! instead of each waiting out its own retries against a dead endpoint. After the open
//! period one trial request (half-open) decides whether it closes again.
//!
//! The clock is a parameter (`now`), so the states can be tested without waiting.

use std::time::{Duration, Instant};

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests pass; counting consecutive failures.
    Closed,
    /// Requests are refused until the open period ends.
    Open,
    /// One trial request is allowed; its outcome closes or reopens the breaker.
    HalfOpen,
}

impl BreakerState {
    /// "closed", "open" or "half_open", as the statistics show it.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// One provider's breaker (not synchronised: the engine keeps it behind a mutex).
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    consecutive: u32,
    open_until: Option<Instant>,
    trial_in_flight: bool,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` consecutive failures, for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            consecutive: 0,
            open_until: None,
            trial_in_flight: false,
        }
    }

    /// The state at `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a request may go now. In half-open state only one trial at a time is let
    /// through; its [`Breaker::success`] or [`Breaker::failure`] decides.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                if self.trial_in_flight {
                    false
                } else {
                    self.trial_in_flight = true;
                    true
                }
            }
        }
    }

    /// A request succeeded: the breaker closes.
    pub fn success(&mut self) {
        self.consecutive = 0;
        self.open_until = None;
        self.trial_in_flight = false;
    }

    /// A request failed with a retryable error: counted; the threshold (or a failed trial)
    /// opens the breaker.
    pub fn failure(&mut self, now: Instant) {
        self.consecutive = self.consecutive.saturating_add(1);
        let trial_failed = self.trial_in_flight;
        self.trial_in_flight = false;
        if trial_failed || self.consecutive >= self.threshold {
            self.open_until = Some(now + self.open_for);
        }
    }

    /// A request ended in a way that says nothing about the provider's health (a dead token,
    /// a rejected payload): a half-open trial is released without deciding.
    pub fn neutral(&mut self) {
        self.trial_in_flight = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_then_half_opens_one_trial() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(3, Duration::from_secs(30));
        for _ in 0..2 {
            assert!(breaker.allow(t0));
            breaker.failure(t0);
        }
        assert_eq!(breaker.state(t0), BreakerState::Closed);
        breaker.failure(t0);
        assert_eq!(breaker.state(t0), BreakerState::Open);
        assert!(!breaker.allow(t0 + Duration::from_secs(29)));
        let later = t0 + Duration::from_secs(30);
        assert_eq!(breaker.state(later), BreakerState::HalfOpen);
        assert!(breaker.allow(later));
        assert!(!breaker.allow(later), "one trial at a time");
        breaker.failure(later);
        assert_eq!(breaker.state(later), BreakerState::Open);
        let later = later + Duration::from_secs(30);
        assert!(breaker.allow(later));
        breaker.success();
        assert_eq!(breaker.state(later), BreakerState::Closed);
        assert!(breaker.allow(later));
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut breaker = Breaker::new(2, Duration::from_secs(1));
        breaker.failure(t0);
        breaker.success();
        breaker.failure(t0);
        assert_eq!(breaker.state(t0), BreakerState::Closed);
    }
}
