//! Webhooks: longlink POSTs each message of a topic to a business server's URL.
//!
//! A webhook is just another consumer of a [`TopicQueue`], so it inherits its guarantees
//! instead of building its own: it leases messages (for the HTTP timeout plus a margin, so a
//! lease never runs out under a call still in progress), POSTs each one, acks it on a 2xx
//! answer and nacks it otherwise with an exponential `retry_after`. Retries, attempt counts
//! and dead-lettering after `max_attempts` are the queue's; a crash mid-call means the lease
//! runs out and the message is delivered again (at-least-once: receivers dedup by
//! `x-longlink-delivery` or `client_msg_id`). At most `max_in_flight` calls run at once: the
//! loop fetches only as many messages as it has free call slots, so nothing waits in memory
//! leased but unsent. Redirects are not followed (a 3xx is a failure), so a webhook cannot be
//! bounced to another host.

use std::sync::Arc;
use std::time::Duration;

use reqwest::redirect::Policy;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::routes::valid_topic;
use crate::{BusError, ConsumedMessage, Leased, TopicQueue};

/// Added to the HTTP timeout to make the lease of a message being delivered.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How long one fetch waits for messages (the loop fetches again right after).
const FETCH_WAIT: Duration = Duration::from_secs(20);

/// One webhook: the messages of `topic` are POSTed to `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The topic consumed.
    pub topic: String,
    /// `http://` or `https://` URL the messages are POSTed to.
    pub url: String,
    /// Longest wait for an answer (connecting included); no answer counts as a failure.
    pub timeout: Duration,
    /// Retry delay after the first failed attempt; doubled after each further one.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Most calls in progress at once.
    pub max_in_flight: usize,
}

impl WebhookConfig {
    /// A webhook of `topic` to `url` with the defaults: 10 s timeout, backoff from 1 s up to
    /// 5 min, 16 calls in flight.
    pub fn new(topic: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            url: url.into(),
            timeout: Duration::from_secs(10),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_in_flight: 16,
        }
    }

    /// Checks the topic name, the URL (http or https), and that `timeout` and
    /// `max_in_flight` are not 0.
    ///
    /// # Errors
    /// [`BusError::InvalidArgument`] naming the bad field.
    pub fn validate(&self) -> Result<(), BusError> {
        let invalid = |what: String| Err(BusError::InvalidArgument(what));
        if !valid_topic(&self.topic) {
            return invalid(format!(
                "webhook topic {:?} is not a valid topic",
                self.topic
            ));
        }
        match reqwest::Url::parse(&self.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            Ok(_) => return invalid(format!("webhook url {:?} is not http(s)", self.url)),
            Err(e) => return invalid(format!("webhook url {:?}: {e}", self.url)),
        }
        if self.timeout.is_zero() {
            return invalid("webhook timeout must be longer than 0".to_owned());
        }
        if self.max_in_flight == 0 {
            return invalid("webhook max_in_flight must be at least 1".to_owned());
        }
        Ok(())
    }

    /// The retry delay after a failed `attempt` (1-based): `backoff_base * 2^(attempt-1)`,
    /// at most `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(0);
        match self.backoff_base.checked_mul(factor) {
            Some(delay) if factor > 0 => delay.min(self.backoff_max),
            _ => self.backoff_max,
        }
    }
}

/// Starts the webhook of `config` on `queue`: it runs until `shutdown` is cancelled, then
/// abandons the calls in progress (their messages are delivered again once their lease runs
/// out) and ends. An invalid `config` is logged and the task ends at once.
pub fn spawn_webhook(
    queue: Arc<dyn TopicQueue>,
    config: WebhookConfig,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(run(queue, config, shutdown))
}

async fn run(queue: Arc<dyn TopicQueue>, config: WebhookConfig, shutdown: CancellationToken) {
    if let Err(err) = config.validate() {
        error!(topic = %config.topic, error = %err, "webhook not started");
        return;
    }
    let client = match reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .redirect(Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            error!(topic = %config.topic, error = %err, "webhook not started: http client");
            return;
        }
    };
    info!(topic = %config.topic, url = %config.url, "webhook started");
    let config = Arc::new(config);
    let lease = config.timeout.saturating_add(LEASE_MARGIN);
    let slots = Arc::new(Semaphore::new(config.max_in_flight));
    let mut calls = JoinSet::new();
    let mut fetch_failures: u32 = 0;
    loop {
        while calls.try_join_next().is_some() {}
        // Wait for a free call slot, then lease as many messages as there are free slots.
        let first = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let room = slots.available_permits() + 1;
        let fetched = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            fetched = queue.fetch(&config.topic, room, FETCH_WAIT, lease) => fetched,
        };
        let messages = match fetched {
            Ok(messages) => {
                fetch_failures = 0;
                messages
            }
            Err(err) => {
                fetch_failures = fetch_failures.saturating_add(1);
                let delay = config.backoff(fetch_failures);
                warn!(topic = %config.topic, error = %err, retry_in = ?delay, "webhook fetch failed");
                drop(first);
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        };
        let mut first = Some(first);
        for leased in messages {
            // Only this loop takes slots, so `room` of them are free: this never waits.
            let slot = match first.take() {
                Some(slot) => slot,
                None => match Arc::clone(&slots).acquire_owned().await {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let (client, queue, config) = (client.clone(), Arc::clone(&queue), Arc::clone(&config));
            calls.spawn(async move {
                deliver(&client, queue.as_ref(), &config, &leased).await;
                drop(slot);
            });
        }
    }
    calls.shutdown().await;
    info!(topic = %config.topic, "webhook stopped");
}

/// One call: POST, then ack on 2xx or nack with backoff.
async fn deliver(
    client: &reqwest::Client,
    queue: &dyn TopicQueue,
    config: &WebhookConfig,
    leased: &Leased,
) {
    let body = ConsumedMessage::from(leased);
    let log_id = body.log_id.clone();
    let result = client
        .post(&config.url)
        .header("x-longlink-topic", &config.topic)
        .header("x-longlink-delivery", leased.id)
        .header("x-longlink-attempt", leased.attempt)
        .header("x-longlink-log-id", &log_id)
        .json(&body)
        .send()
        .await;
    let failure = match result {
        Ok(response) if response.status().is_success() => {
            debug!(
                log_id,
                topic = %config.topic,
                id = leased.id,
                attempt = leased.attempt,
                status = response.status().as_u16(),
                "webhook delivered"
            );
            if let Err(err) = queue.ack(&config.topic, &[leased.id]).await {
                warn!(log_id, topic = %config.topic, id = leased.id, error = %err,
                    "webhook ack failed; the message will be delivered again");
            }
            return;
        }
        Ok(response) => format!("status {}", response.status().as_u16()),
        Err(err) => err.to_string(),
    };
    let retry_after = config.backoff(leased.attempt);
    warn!(
        log_id,
        topic = %config.topic,
        id = leased.id,
        attempt = leased.attempt,
        failure,
        retry_in = ?retry_after,
        "webhook call failed"
    );
    if let Err(err) = queue.nack(&config.topic, &[leased.id], retry_after).await {
        warn!(log_id, topic = %config.topic, id = leased.id, error = %err,
            "webhook nack failed; the message comes back when its lease ends");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_never_overflows() {
        let mut config = WebhookConfig::new("orders", "http://127.0.0.1:9/hook");
        config.backoff_base = Duration::from_millis(100);
        config.backoff_max = Duration::from_secs(1);
        assert_eq!(config.backoff(0), Duration::from_millis(100));
        assert_eq!(config.backoff(1), Duration::from_millis(100));
        assert_eq!(config.backoff(2), Duration::from_millis(200));
        assert_eq!(config.backoff(4), Duration::from_millis(800));
        assert_eq!(config.backoff(5), Duration::from_secs(1));
        assert_eq!(config.backoff(40), Duration::from_secs(1));
        assert_eq!(config.backoff(u32::MAX), Duration::from_secs(1));
        config.backoff_base = Duration::MAX;
        assert_eq!(config.backoff(3), Duration::from_secs(1));
    }

    #[test]
    fn bad_configs_are_refused() {
        let good = WebhookConfig::new("orders", "https://example.com/hook");
        assert!(good.validate().is_ok());
        let bad = [
            WebhookConfig::new("bad topic", "http://127.0.0.1/hook"),
            WebhookConfig::new("", "http://127.0.0.1/hook"),
            WebhookConfig::new("orders", "ftp://127.0.0.1/hook"),
            WebhookConfig::new("orders", "not a url"),
            WebhookConfig {
                timeout: Duration::ZERO,
                ..good.clone()
            },
            WebhookConfig {
                max_in_flight: 0,
                ..good.clone()
            },
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(BusError::InvalidArgument(_))),
                "{config:?}"
            );
        }
    }
}
