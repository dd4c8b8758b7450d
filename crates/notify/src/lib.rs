//! Offline push notifications (issue 12, seed 002): an app in the background cannot hold a
//! long connection, so a message waiting in its inbox must reach it through the platform's
//! push channel. This crate implements [`longlink_rpc::notify::Notifications`]:
//!
//! - the device registry (push tokens per device, one per provider, and the device's class),
//! - the durable outbox (a notification survives a restart and is sent at most once per
//!   device and message),
//! - the [`provider`]s (APNs over HTTP/2 with ES256 JWTs, FCM HTTP v1 with service-account
//!   OAuth, a configurable HTTP channel for vendor push and SMS gateways),
//! - provider selection per device and device class by measured receipts (a bandit), with
//!   failover, retries, rate limits and a circuit breaker per provider.
//!
//! It is never in the way: logic only `offer`s candidates (no waiting), and everything after
//! that runs on the notifier's own tasks.

pub mod provider;

pub mod breaker;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod outbox;
pub mod registry;
pub mod render;
pub mod select;
pub mod stats;

pub use config::{NotifyConfig, RuleConfig, TemplateConfig};
pub use engine::{Notifier, ProviderEntry, StartError};
