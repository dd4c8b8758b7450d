//! The cluster bus: [`NatsBus`] carries c2s messages through NATS JetStream, so every logic
//! process of a cluster publishes to the same place and business servers consume either
//! through longlink's consume API ([`TopicQueue`]: long-poll, SSE, ack, nack, dead letters,
//! replay) or with any NATS client, straight from the stream. It has the semantics of
//! `longlink_bus::SqliteQueue` (at-least-once, leases, attempts, dead letters, per-topic
//! backpressure) and passes the same behaviour suite; the differences are listed on
//! [`NatsBus`].
//!
//! Layout on the NATS server (see docs/api.md, "Consuming with a NATS client"):
//! - One work-queue stream [`WORK_STREAM`] (`LONGLINK_C2S`, file storage) over `c2s.>` and
//!   `longlink.topic.>`. A topic `c2s.<appcode>.<msgtype>` is its own subject; any other topic
//!   name (an explicit route such as `orders`) is `longlink.topic.<name>`, so the two kinds can
//!   never meet. One stream rather than one per appcode: appcodes come and go with the config,
//!   and one stream is one thing to size, watch and back up. Work-queue retention means an
//!   acked message is deleted, so the stream holds exactly the backlog, and the per-subject
//!   limit ([`NatsOptions::max_backlog`], discard-new per subject) is the topic's backlog:
//!   beyond it a publish is refused ([`BusError::Full`]) and the client retries — never a
//!   silent drop of something acknowledged.
//! - One durable pull consumer per topic, named after it with `.` → `_` (`c2s_130_1`,
//!   `orders`), filtered on the topic's subject: ack wait = the lease, explicit acks, no
//!   delivery limit of its own. Work-queue streams allow one consumer per subject, so longlink's
//!   API and NATS clients share it and compete for messages, as consumers of one queue should.
//! - Dead letters go to the stream [`DEAD_STREAM`] (`LONGLINK_C2S_DEAD`, limits retention) under
//!   `longlink.dead.<subject>`. The fetcher moves a message there when JetStream hands it out
//!   for attempt `max_attempts + 1` (or when it is nacked on its last attempt): copy to the dead
//!   stream (deduplicated by the original sequence), then ack in the work stream. A crash in
//!   between leaves the message in the work stream, so it is moved again, never lost.
//!   `replay` republishes a dead letter to its topic (a new id, attempts from 1) and only then
//!   deletes it from the dead stream.
//!
//! Publishing: the message's fields travel as headers, the payload as is. With a client
//! message id, `Nats-Msg-Id` is derived from (appcode, uid, device, client message id), so a
//! C2S retried within the stream's duplicate window ([`NatsOptions::duplicate_window`]) is
//! stored once. `publish` returns after JetStream acknowledged the message (stored in the
//! stream); note DESIGN.md: nats-server 2.9 acknowledges before its fsync, so the bus is not the
//! durable record of anything.
//!
//! Failures: every request is bounded by [`NatsOptions::timeout`]; a dead or restarting
//! nats-server gives [`BusError::Unavailable`] quickly. async-nats reconnects by itself; streams
//! and consumers that went missing are created again on the next call that needs them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, PullConsumer};
use async_nats::jetstream::message::{Acker, StreamMessage};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind, Context};
use async_nats::{HeaderMap, Subject};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use longlink_bus::routes::MAX_TOPIC_BYTES;
use longlink_bus::sqlite::{MAX_FETCH, MAX_LEASE, MAX_WAIT};
use longlink_bus::{Bus, BusError, BusMessage, Leased, TopicQueue, TopicStats};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use tokio::time::Instant;
use tracing::{debug, warn};

/// The work-queue stream holding every topic's messages until they are acked.
pub const WORK_STREAM: &str = "LONGLINK_C2S";
/// The stream holding dead letters.
pub const DEAD_STREAM: &str = "LONGLINK_C2S_DEAD";
/// Subject prefix of topics not named `c2s.…` (explicit routes).
pub const NAMED_TOPIC_PREFIX: &str = "longlink.topic.";
/// Subject prefix of dead letters: `longlink.dead.<the topic's subject>`.
pub const DEAD_PREFIX: &str = "longlink.dead.";

/// Header names of a published message. Text values are percent-encoded (UTF-8, then `%XX`
/// for controls, non-ASCII bytes, space, `%` and `:`), numbers are decimal.
pub mod headers {
    /// The topic name.
    pub const TOPIC: &str = "Longlink-Topic";
    /// Sender's appcode.
    pub const APPCODE: &str = "Longlink-Appcode";
    /// Sender's uid (percent-encoded).
    pub const UID: &str = "Longlink-Uid";
    /// Sender's device (percent-encoded).
    pub const DEVICE: &str = "Longlink-Device";
    /// Business message type.
    pub const MSGTYPE: &str = "Longlink-Msgtype";
    /// The client's message id (percent-encoded; absent when the client gave none).
    pub const CLIENT_MSG_ID: &str = "Longlink-Client-Msg-Id";
    /// Trace id.
    pub const LOG_ID: &str = "Longlink-Log-Id";
    /// Unix ms when logic accepted it.
    pub const RECEIVED_MS: &str = "Longlink-Received-Ms";
    /// On a dead letter: the attempts it used.
    pub const ATTEMPTS: &str = "Longlink-Attempts";
    /// On a dead letter: its sequence in the work stream.
    pub const ORIGINAL_SEQ: &str = "Longlink-Original-Seq";
    /// JetStream's dedup id.
    pub const MSG_ID: &str = "Nats-Msg-Id";
}

/// What is escaped in header values: controls (CR/LF would end the header), space (header
/// values are trimmed), `%` (the escape itself) and `:` (the dedup id's separator); non-ASCII
/// is always escaped by `utf8_percent_encode`.
const HEADER_ESCAPES: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b':');

/// Longest time one server-side wait of a fetch lasts; a longer fetch issues several, so a
/// server that went away mid-wait is noticed within this (plus [`NatsOptions::timeout`]).
const WAIT_SLICE: Duration = Duration::from_secs(5);
/// The server-side wait of a fetch that does not wait (see `fetch`).
const REDELIVERY_PEEK: Duration = Duration::from_millis(20);
/// Requests in flight at once for a multi-id call (ack, replay).
const PARALLEL: usize = 32;

/// Tuning of a [`NatsBus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// Deliveries of a message before it is dead-lettered; default 5.
    pub max_attempts: u32,
    /// Most messages one topic holds in the work stream (ready and in flight); a publish
    /// beyond is refused with [`BusError::Full`]. Default 1,000,000.
    pub max_backlog: i64,
    /// Most bytes the work stream holds, all topics together (-1: no limit, the default);
    /// beyond, publishes are refused with [`BusError::Full`].
    pub max_bytes: i64,
    /// How long JetStream remembers a `Nats-Msg-Id`; default 2 minutes.
    pub duplicate_window: Duration,
    /// Bound on every request to the server; default 5 s.
    pub timeout: Duration,
    /// The lease (consumer ack wait) of a topic before any fetch set one; default 30 s.
    pub default_lease: Duration,
    /// Most unacked deliveries per topic (the consumer's max ack pending); default 20,000.
    pub max_in_flight: i64,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            max_backlog: 1_000_000,
            max_bytes: -1,
            duplicate_window: Duration::from_secs(120),
            timeout: Duration::from_secs(5),
            default_lease: Duration::from_secs(30),
            max_in_flight: 20_000,
        }
    }
}

/// The bus on NATS JetStream: a [`Bus`] and a [`TopicQueue`] (see the crate docs).
///
/// Differences from `SqliteQueue`, all consequences of JetStream doing the leasing:
/// - The lease is the topic consumer's ack wait: a fetch whose lease differs changes it for
///   the whole topic, including messages already in flight. Give a topic one lease.
/// - `nack` works on the process that fetched the message (it holds the delivery); elsewhere it
///   counts 0 and the message comes back when its lease ends. `ack` works from any process.
/// - A message whose last lease ran out is dead-lettered by the next fetch of its topic.
/// - A replayed dead letter gets a new id; dead letters have ids of their own (their sequence
///   in the dead stream), increasing in the order they died.
/// - In [`TopicStats`], nacked messages waiting for their retry and expired leases count as
///   in flight (JetStream's ack-pending) until delivered again.
/// - A fetch dropped before it returns does not give its leases back: they run out.
pub struct NatsBus {
    js: Context,
    options: NatsOptions,
    /// Consumers known to exist, by topic, with their ack wait.
    consumers: Mutex<HashMap<String, (PullConsumer, Duration)>>,
    /// Deliveries this process handed out and that are not acked or nacked: (topic, stream
    /// sequence) → the delivery's ack subject, attempt, lease end.
    leases: Mutex<HashMap<(String, u64), Lease>>,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct Lease {
    reply: Subject,
    attempt: u32,
    until: Instant,
}

impl NatsBus {
    /// Connects to `url` (`nats://host:port`, several comma-separated) and creates the
    /// streams if they do not exist.
    ///
    /// # Errors
    /// [`BusError::InvalidArgument`] for a zero option; [`BusError::Unavailable`] when the
    /// server cannot be reached or JetStream refuses the streams.
    pub async fn connect(url: &str, options: NatsOptions) -> Result<Self, BusError> {
        let client = tokio::time::timeout(
            options.timeout,
            async_nats::ConnectOptions::new()
                .connection_timeout(options.timeout)
                .request_timeout(Some(options.timeout))
                .connect(url),
        )
        .await
        .map_err(|_| unavailable("connect", "timed out"))?
        .map_err(|e| unavailable("connect", e))?;
        Self::with_client(client, options).await
    }

    /// The bus over an existing connection.
    ///
    /// # Errors
    /// As [`NatsBus::connect`].
    pub async fn with_client(
        client: async_nats::Client,
        options: NatsOptions,
    ) -> Result<Self, BusError> {
        for (name, zero) in [
            ("max_attempts", options.max_attempts == 0),
            ("max_backlog", options.max_backlog <= 0),
            ("max_bytes", options.max_bytes == 0),
            ("timeout", options.timeout.is_zero()),
            ("default_lease", options.default_lease.is_zero()),
            ("max_in_flight", options.max_in_flight <= 0),
        ] {
            if zero {
                return Err(BusError::InvalidArgument(format!(
                    "{name} must be at least 1"
                )));
            }
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(options.timeout)
            .build(client);
        let bus = Self {
            js,
            options,
            consumers: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
        };
        bus.ensure_streams().await?;
        Ok(bus)
    }

    /// The JetStream context (for tests and tools).
    pub fn jetstream(&self) -> &Context {
        &self.js
    }

    /// Creates both streams, or updates their limits to the options.
    async fn ensure_streams(&self) -> Result<(), BusError> {
        let work = stream::Config {
            name: WORK_STREAM.to_owned(),
            description: Some("longlink c2s topics, until acked".to_owned()),
            subjects: vec!["c2s.>".to_owned(), format!("{NAMED_TOPIC_PREFIX}>")],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            max_messages_per_subject: self.options.max_backlog,
            max_bytes: self.options.max_bytes,
            discard: DiscardPolicy::New,
            discard_new_per_subject: true,
            duplicate_window: self.options.duplicate_window,
            ..stream::Config::default()
        };
        let dead = stream::Config {
            name: DEAD_STREAM.to_owned(),
            description: Some("longlink c2s dead letters, until replayed".to_owned()),
            subjects: vec![format!("{DEAD_PREFIX}>")],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            duplicate_window: self.options.duplicate_window,
            ..stream::Config::default()
        };
        for config in [work, dead] {
            let name = config.name.clone();
            self.bounded("create stream", self.js.create_or_update_stream(config))
                .await?
                .map_err(|e| unavailable(&format!("create stream {name}"), e))?;
        }
        Ok(())
    }

    /// `fut` bounded by the timeout.
    async fn bounded<T>(&self, what: &str, fut: impl Future<Output = T>) -> Result<T, BusError> {
        tokio::time::timeout(self.options.timeout, fut)
            .await
            .map_err(|_| unavailable(what, "timed out"))
    }

    /// The topic's consumer, created (or its ack wait set to `lease`) when needed.
    async fn consumer(
        &self,
        topic: &str,
        lease: Option<Duration>,
    ) -> Result<PullConsumer, BusError> {
        if let Some((consumer, ack_wait)) = lock(&self.consumers).get(topic)
            && lease.is_none_or(|l| l == *ack_wait)
        {
            return Ok(consumer.clone());
        }
        let name = consumer_name(topic);
        let subject = subject_of(topic);
        let ack_wait = match lease {
            Some(lease) => lease,
            // Keep the lease a fetch (maybe of another process) gave the consumer.
            None => match self.existing_consumer(&name).await? {
                Some(info) => info.config.ack_wait,
                None => self.options.default_lease,
            },
        };
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("longlink topic {topic}")),
            filter_subject: subject.clone(),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait,
            // Unlimited: the fetcher dead-letters at attempt max_attempts + 1, and must see
            // that delivery (a limit would leave the message stuck in ack-pending on 2.9).
            max_deliver: -1,
            max_ack_pending: self.options.max_in_flight,
            ..consumer::pull::Config::default()
        };
        let consumer = match self.create_consumer(config.clone()).await {
            Err(e) if is_stream_missing(&e) => {
                self.ensure_streams().await?;
                self.create_consumer(config).await
            }
            other => other,
        }
        .map_err(|e| unavailable(&format!("create consumer {name}"), e))?;
        if consumer.cached_info().config.filter_subject != subject {
            return Err(BusError::InvalidArgument(format!(
                "topic {topic}: its consumer name {name} is taken by another topic"
            )));
        }
        lock(&self.consumers).insert(topic.to_owned(), (consumer.clone(), ack_wait));
        Ok(consumer)
    }

    async fn create_consumer(
        &self,
        config: consumer::pull::Config,
    ) -> Result<PullConsumer, async_nats::Error> {
        let fut = self.js.create_consumer_on_stream(config, WORK_STREAM);
        match tokio::time::timeout(self.options.timeout, fut).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err("timed out".into()),
        }
    }

    async fn existing_consumer(&self, name: &str) -> Result<Option<consumer::Info>, BusError> {
        let stream = self.stream(WORK_STREAM).await?;
        match self
            .bounded("consumer info", stream.consumer_info(name))
            .await?
        {
            Ok(info) => Ok(Some(info)),
            // 404: no such consumer (or stream); creating it will tell which.
            Err(e) => match e.kind() {
                jetstream::context::ConsumerInfoErrorKind::JetStream(js) if js.code() == 404 => {
                    Ok(None)
                }
                _ => Err(unavailable("consumer info", e)),
            },
        }
    }

    /// Forgets the cached consumer of `topic` (after an error that may mean it is gone).
    fn forget_consumer(&self, topic: &str) {
        lock(&self.consumers).remove(topic);
    }

    /// A handle on a stream (no request).
    async fn stream(&self, name: &str) -> Result<stream::Stream<()>, BusError> {
        self.js
            .get_stream_no_info(name)
            .await
            .map_err(|e| unavailable("stream", e))
    }

    /// A message of `stream_name` by sequence, `None` when there is none.
    async fn get_message(
        &self,
        stream_name: &str,
        seq: u64,
    ) -> Result<Option<StreamMessage>, BusError> {
        let stream = self.stream(stream_name).await?;
        found(
            self.bounded("get message", stream.get_raw_message(seq))
                .await?,
        )
    }

    /// The first message of `stream_name` on `subject` with sequence ≥ `seq`.
    async fn next_message(
        &self,
        stream_name: &str,
        subject: &str,
        seq: u64,
    ) -> Result<Option<StreamMessage>, BusError> {
        let stream = self.stream(stream_name).await?;
        let get = stream.get_first_raw_message_by_subject(subject, seq);
        found(self.bounded("get message", get).await?)
    }

    /// Publishes to the JetStream subject and waits for the stream's ack; maps a full stream
    /// to [`BusError::Full`] and a missing stream to re-creating it (once).
    async fn publish_raw(
        &self,
        topic: &str,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<jetstream::publish::PublishAck, BusError> {
        let mut recreated = false;
        loop {
            let attempt = async {
                let ack = self
                    .js
                    .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                    .await?;
                ack.await
            };
            match self.bounded("publish", attempt).await? {
                Ok(ack) => return Ok(ack),
                Err(e) => {
                    let text = e.to_string();
                    if text.contains("maximum") {
                        // 10077: "maximum messages (per subject) exceeded", "maximum bytes…".
                        return Err(BusError::Full(topic.to_owned()));
                    }
                    if !recreated
                        && e.kind() == jetstream::context::PublishErrorKind::StreamNotFound
                    {
                        recreated = true;
                        self.ensure_streams().await?;
                        continue;
                    }
                    return Err(unavailable("publish", e));
                }
            }
        }
    }

    /// Moves a delivered message to the dead letters: copy (deduplicated by its work-stream
    /// sequence), then ack in the work stream, which deletes it there.
    async fn dead_letter(
        &self,
        topic: &str,
        seq: u64,
        attempts: u32,
        reply: Subject,
    ) -> Result<(), BusError> {
        if let Some(raw) = self.get_message(WORK_STREAM, seq).await? {
            let mut headers = copy_headers(&raw, &[headers::MSG_ID, headers::ATTEMPTS]);
            headers.insert(headers::ATTEMPTS, attempts.to_string().as_str());
            headers.insert(headers::ORIGINAL_SEQ, seq.to_string().as_str());
            headers.insert(headers::MSG_ID, format!("longlink-dead-{seq}").as_str());
            let payload = raw.payload.clone();
            self.publish_raw(topic, dead_subject_of(topic), headers, payload)
                .await?;
        }
        self.ack_reply(reply).await?;
        debug!(topic, seq, attempts, "c2s message dead-lettered");
        Ok(())
    }

    /// Acks a delivery by its ack subject and waits for the server to confirm.
    async fn ack_reply(&self, reply: Subject) -> Result<(), BusError> {
        let acker = Acker::new(self.js.clone(), Some(reply));
        self.bounded("ack", acker.double_ack())
            .await?
            .map_err(|e| unavailable("ack", e))
    }

    /// The ack subject of `seq` for a delivery this process does not hold. The server finds
    /// the delivery by the stream sequence; the other tokens do not matter for an ack.
    fn crafted_reply(topic: &str, seq: u64) -> Subject {
        Subject::from(format!(
            "$JS.ACK.{WORK_STREAM}.{}.1.{seq}.1.0.0",
            consumer_name(topic)
        ))
    }

    /// One pull: up to `max` messages, waiting up to `wait` (0: only what is there now).
    async fn pull(
        &self,
        topic: &str,
        consumer: &PullConsumer,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<jetstream::Message>, BusError> {
        let batch = async {
            let batch = if wait.is_zero() {
                consumer.fetch().max_messages(max).messages().await
            } else {
                consumer
                    .batch()
                    .max_messages(max)
                    .expires(wait)
                    .messages()
                    .await
            };
            let batch = batch.map_err(|e| unavailable("fetch", e))?;
            batch
                .map_err(|e| unavailable("fetch", e))
                .try_collect::<Vec<_>>()
                .await
        };
        match tokio::time::timeout(wait + self.options.timeout, batch).await {
            Ok(Ok(messages)) => Ok(messages),
            Ok(Err(e)) => {
                self.forget_consumer(topic);
                Err(e)
            }
            Err(_) => {
                self.forget_consumer(topic);
                Err(unavailable("fetch", "timed out"))
            }
        }
    }

    /// Turns pulled messages into leases; dead-letters those past their last attempt.
    async fn take(
        &self,
        topic: &str,
        messages: Vec<jetstream::Message>,
        lease: Duration,
    ) -> Result<Vec<Leased>, BusError> {
        let mut out = Vec::with_capacity(messages.len());
        let until = Instant::now() + lease;
        for message in messages {
            let (seq, delivered) = match message.info() {
                Ok(info) => (info.stream_sequence, info.delivered),
                Err(e) => {
                    warn!(topic, error = %e, "a delivery without JetStream metadata");
                    continue;
                }
            };
            let Some(reply) = message.reply.clone() else {
                continue;
            };
            let attempt = u32::try_from(delivered.max(1)).unwrap_or(u32::MAX);
            if attempt > self.options.max_attempts {
                self.dead_letter(topic, seq, attempt - 1, reply).await?;
                continue;
            }
            let bus_message = decode(topic, message.headers.as_ref(), message.payload.clone());
            lock(&self.leases).insert(
                (topic.to_owned(), seq),
                Lease {
                    reply,
                    attempt,
                    until,
                },
            );
            out.push(Leased {
                id: seq,
                attempt,
                message: bus_message,
            });
        }
        Ok(out)
    }

    /// Drops leases that ran out (their deliveries are JetStream's again).
    fn prune_leases(&self) {
        let now = Instant::now();
        lock(&self.leases).retain(|_, lease| lease.until > now);
    }

    async fn dead_letter_list(
        &self,
        topic: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, StreamMessage)>, BusError> {
        let subject = dead_subject_of(topic);
        let mut out = Vec::new();
        let mut next = after.saturating_add(1);
        while out.len() < limit && after < u64::MAX {
            let Some(raw) = self.next_message(DEAD_STREAM, &subject, next).await? else {
                break;
            };
            next = raw.sequence.saturating_add(1);
            out.push((raw.sequence, raw));
            if next == u64::MAX {
                break;
            }
        }
        Ok(out)
    }

    /// Messages per subject in a stream (subjects holding none are not listed). Asked with our
    /// own STREAM.INFO request: async-nats keeps the subject map private, and its pager asks
    /// nats-server 2.9 (which does not page it) for further pages.
    async fn subject_counts(&self, stream_name: &str) -> Result<BTreeMap<String, u64>, BusError> {
        let request = SubjectsRequest {
            subjects_filter: ">",
        };
        let api = format!("STREAM.INFO.{stream_name}");
        let response: jetstream::response::Response<SubjectsInfo> = self
            .bounded("stream info", self.js.request(api, &request))
            .await?
            .map_err(|e| unavailable("stream info", e))?;
        match response {
            jetstream::response::Response::Ok(info) => Ok(info
                .state
                .subjects
                .unwrap_or_default()
                .into_iter()
                .collect()),
            jetstream::response::Response::Err { error } => Err(unavailable("stream info", error)),
        }
    }
}

#[derive(serde::Serialize)]
struct SubjectsRequest {
    subjects_filter: &'static str,
}

#[derive(serde::Deserialize)]
struct SubjectsInfo {
    state: SubjectsState,
}

#[derive(serde::Deserialize)]
struct SubjectsState {
    #[serde(default)]
    subjects: Option<HashMap<String, u64>>,
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, message: BusMessage) -> Result<(), BusError> {
        check_topic(&message.topic)?;
        let subject = subject_of(&message.topic);
        let mut headers = encode(&message);
        if !message.client_msg_id.is_empty() {
            headers.insert(headers::MSG_ID, dedup_id(&message).as_str());
        }
        let ack = self
            .publish_raw(&message.topic, subject, headers, message.payload.clone())
            .await?;
        debug!(
            log_id = message.log_id,
            topic = %message.topic,
            seq = ack.sequence,
            duplicate = ack.duplicate,
            "c2s message on the bus"
        );
        Ok(())
    }
}

#[async_trait]
impl TopicQueue for NatsBus {
    async fn fetch(
        &self,
        topic: &str,
        max: usize,
        wait: Duration,
        lease: Duration,
    ) -> Result<Vec<Leased>, BusError> {
        longlink_bus::check_fetch(topic, max, lease)?;
        check_subject_tokens(topic)?;
        let max = max.min(MAX_FETCH);
        // JetStream keeps ack waits in whole nanoseconds, compared exactly on reuse.
        let lease = lease.min(MAX_LEASE);
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        self.prune_leases();
        let consumer = self.consumer(topic, Some(lease)).await?;
        loop {
            // What is there now, up to max; else wait (in slices) for the first one, then
            // take what else is there: an answer as soon as one message is leased.
            let mut messages = self.pull(topic, &consumer, max, Duration::ZERO).await?;
            if messages.is_empty() {
                // Even a fetch that does not wait makes one short server-side wait: nats-server
                // 2.9 answers a no-wait pull "nothing" while redeliveries are due.
                let left = deadline.saturating_duration_since(Instant::now());
                let slice = left.min(WAIT_SLICE).max(REDELIVERY_PEEK);
                messages = self.pull(topic, &consumer, 1, slice).await?;
                if !messages.is_empty() && max > 1 {
                    messages.extend(self.pull(topic, &consumer, max - 1, Duration::ZERO).await?);
                }
            }
            let leased = self.take(topic, messages, lease).await?;
            if !leased.is_empty() {
                return Ok(leased);
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&self, topic: &str, ids: &[u64]) -> Result<u64, BusError> {
        check_topic(topic)?;
        longlink_bus::check_ids(ids)?;
        let mut unique = ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        if unique.is_empty() {
            return Ok(0);
        }
        // The consumer must exist for the server to take the ack.
        self.consumer(topic, None).await?;
        let subject = subject_of(topic);
        let counted = futures::stream::iter(unique)
            .map(|seq| {
                let subject = subject.as_str();
                async move {
                    // Counted only if it is in the work stream under this topic: ids of other
                    // topics, dead letters and acked messages are not.
                    let Some(raw) = self.get_message(WORK_STREAM, seq).await? else {
                        return Ok(0u64);
                    };
                    if raw.subject.as_str() != subject {
                        return Ok(0);
                    }
                    let held = lock(&self.leases).remove(&(topic.to_owned(), seq));
                    let reply = held.map_or_else(|| Self::crafted_reply(topic, seq), |l| l.reply);
                    self.ack_reply(reply).await?;
                    Ok::<u64, BusError>(1)
                }
            })
            .buffer_unordered(PARALLEL)
            .try_fold(0u64, |sum, n| async move { Ok(sum + n) })
            .await?;
        Ok(counted)
    }

    async fn nack(&self, topic: &str, ids: &[u64], retry_after: Duration) -> Result<u64, BusError> {
        check_topic(topic)?;
        longlink_bus::check_ids(ids)?;
        let retry_after = retry_after.min(MAX_LEASE);
        let now = Instant::now();
        let mut count = 0;
        for &seq in ids {
            let held = {
                let mut leases = lock(&self.leases);
                match leases.remove(&(topic.to_owned(), seq)) {
                    Some(lease) if lease.until > now => Some(lease),
                    _ => None,
                }
            };
            let Some(lease) = held else { continue };
            count += 1;
            if lease.attempt >= self.options.max_attempts {
                self.dead_letter(topic, seq, lease.attempt, lease.reply)
                    .await?;
                continue;
            }
            let kind = if retry_after.is_zero() {
                AckKind::Nak(None)
            } else {
                AckKind::Nak(Some(retry_after))
            };
            let acker = Acker::new(self.js.clone(), Some(lease.reply));
            self.bounded("nack", acker.double_ack_with(kind))
                .await?
                .map_err(|e| unavailable("nack", e))?;
        }
        Ok(count)
    }

    async fn dead_letters(
        &self,
        topic: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Leased>, BusError> {
        check_topic(topic)?;
        let limit = limit.min(MAX_FETCH);
        let list = self.dead_letter_list(topic, after, limit).await?;
        Ok(list
            .into_iter()
            .map(|(seq, raw)| {
                let attempt = header(Some(&raw.headers), headers::ATTEMPTS)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let payload = raw.payload.clone();
                Leased {
                    id: seq,
                    attempt,
                    message: decode(topic, Some(&raw.headers), payload),
                }
            })
            .collect())
    }

    async fn replay(&self, topic: &str, ids: &[u64]) -> Result<u64, BusError> {
        check_topic(topic)?;
        longlink_bus::check_ids(ids)?;
        let dead_subject = dead_subject_of(topic);
        let candidates: Vec<(u64, StreamMessage)> = if ids.is_empty() {
            let mut all = Vec::new();
            let mut after = 0;
            loop {
                let page = self.dead_letter_list(topic, after, MAX_FETCH).await?;
                let Some((last, _)) = page.last() else { break };
                after = *last;
                all.extend(page);
            }
            all
        } else {
            let mut unique = ids.to_vec();
            unique.sort_unstable();
            unique.dedup();
            let mut found = Vec::new();
            for seq in unique {
                if let Some(raw) = self.get_message(DEAD_STREAM, seq).await?
                    && raw.subject.as_str() == dead_subject
                {
                    found.push((seq, raw));
                }
            }
            found
        };
        let dead_stream = self.stream(DEAD_STREAM).await?;
        let mut count = 0;
        for (seq, raw) in candidates {
            let mut headers = copy_headers(
                &raw,
                &[headers::MSG_ID, headers::ATTEMPTS, headers::ORIGINAL_SEQ],
            );
            // Deduplicated by the dead letter, so a replay retried after a failed delete does
            // not put the message back twice.
            headers.insert(headers::MSG_ID, format!("longlink-replay-{seq}").as_str());
            let payload = raw.payload.clone();
            self.publish_raw(topic, subject_of(topic), headers, payload)
                .await?;
            // Back on the topic first, then gone from the dead letters: a failure in between
            // leaves a copy in both, never in neither.
            let deleted = self
                .bounded("delete dead letter", dead_stream.delete_message(seq))
                .await?;
            match deleted {
                Ok(_) => count += 1,
                Err(e) if e.to_string().contains("no message found") => {}
                Err(e) => return Err(unavailable("delete dead letter", e)),
            }
        }
        Ok(count)
    }

    async fn topics(&self) -> Result<Vec<TopicStats>, BusError> {
        let mut stats: BTreeMap<String, TopicStats> = BTreeMap::new();
        let held = self.subject_counts(WORK_STREAM).await?;
        for (subject, count) in held {
            let topic = topic_of(&subject);
            stats.insert(
                topic.clone(),
                TopicStats {
                    topic,
                    ready: count,
                    ..TopicStats::default()
                },
            );
        }
        let consumers = async {
            let stream = self.stream(WORK_STREAM).await?;
            stream
                .consumers()
                .map_err(|e| unavailable("consumers", e))
                .try_collect::<Vec<_>>()
                .await
        };
        for info in self.bounded("consumers", consumers).await?? {
            let topic = topic_of(&info.config.filter_subject);
            if info.config.filter_subject.is_empty() || consumer_name(&topic) != info.name {
                continue;
            }
            let entry = stats.entry(topic.clone()).or_insert_with(|| TopicStats {
                topic,
                ..TopicStats::default()
            });
            entry.ready = info.num_pending;
            entry.in_flight = info.num_ack_pending as u64;
        }
        for (subject, count) in self.subject_counts(DEAD_STREAM).await? {
            let Some(work_subject) = subject.strip_prefix(DEAD_PREFIX) else {
                continue;
            };
            let topic = topic_of(work_subject);
            stats
                .entry(topic.clone())
                .or_insert_with(|| TopicStats {
                    topic,
                    ..TopicStats::default()
                })
                .dead = count;
        }
        Ok(stats.into_values().collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Names.

/// The JetStream subject of `topic`: `c2s.…` topics are their own subject, other names live
/// under [`NAMED_TOPIC_PREFIX`] (the two never collide: that prefix does not start with `c2s.`).
pub fn subject_of(topic: &str) -> String {
    if topic.starts_with("c2s.") {
        topic.to_owned()
    } else {
        format!("{NAMED_TOPIC_PREFIX}{topic}")
    }
}

/// The subject of `topic`'s dead letters in [`DEAD_STREAM`].
pub fn dead_subject_of(topic: &str) -> String {
    format!("{DEAD_PREFIX}{}", subject_of(topic))
}

/// The topic of a work-stream subject (the inverse of [`subject_of`]).
pub fn topic_of(subject: &str) -> String {
    subject
        .strip_prefix(NAMED_TOPIC_PREFIX)
        .unwrap_or(subject)
        .to_owned()
}

/// The durable consumer of `topic` on [`WORK_STREAM`]: the topic with `.` → `_` (consumer
/// names cannot hold dots). Two topics that map to one name (`a.b`, `a_b`) cannot both be
/// consumed: the second gets [`BusError::InvalidArgument`].
pub fn consumer_name(topic: &str) -> String {
    topic.replace('.', "_")
}

/// The `Nats-Msg-Id` of a message with a client message id: stable over retries of one C2S.
/// The topic is part of it: the same client id on another topic (another msgtype) is not a
/// retry, and treating it as one would acknowledge a message that is then dropped.
pub fn dedup_id(message: &BusMessage) -> String {
    format!(
        "c2s:{}:{}:{}:{}:{}",
        message.topic,
        message.appcode,
        escape(&message.uid),
        escape(&message.device_id),
        escape(&message.client_msg_id)
    )
}

/// The shared topic rule, plus NATS's own ([`check_subject_tokens`]).
fn check_topic(topic: &str) -> Result<(), BusError> {
    longlink_bus::check_topic(topic)?;
    check_subject_tokens(topic)
}

/// On NATS, dots separate subject tokens, which must not be empty.
fn check_subject_tokens(topic: &str) -> Result<(), BusError> {
    if topic.split('.').all(|token| !token.is_empty()) {
        Ok(())
    } else {
        Err(BusError::InvalidArgument(format!(
            "topic must be 1..={MAX_TOPIC_BYTES} bytes of [A-Za-z0-9._-], without empty \
             dot-separated parts"
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding.

fn escape(value: &str) -> String {
    utf8_percent_encode(value, HEADER_ESCAPES).to_string()
}

fn unescape(value: &str) -> String {
    percent_decode_str(value).decode_utf8_lossy().into_owned()
}

fn encode(message: &BusMessage) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(headers::TOPIC, message.topic.as_str());
    headers.insert(headers::APPCODE, message.appcode.to_string().as_str());
    headers.insert(headers::UID, escape(&message.uid).as_str());
    headers.insert(headers::DEVICE, escape(&message.device_id).as_str());
    headers.insert(headers::MSGTYPE, message.msgtype.to_string().as_str());
    if !message.client_msg_id.is_empty() {
        headers.insert(
            headers::CLIENT_MSG_ID,
            escape(&message.client_msg_id).as_str(),
        );
    }
    headers.insert(headers::LOG_ID, message.log_id.to_string().as_str());
    headers.insert(
        headers::RECEIVED_MS,
        message.received_ms.to_string().as_str(),
    );
    headers
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers?.get(name).map(|v| v.as_str())
}

/// A [`BusMessage`] from headers and payload; a message published by a plain NATS client
/// (no longlink headers) still decodes, with what its subject tells (appcode and msgtype of a
/// `c2s.<appcode>.<msgtype>` topic).
fn decode(topic: &str, headers: Option<&HeaderMap>, payload: Bytes) -> BusMessage {
    let from_subject = topic
        .strip_prefix("c2s.")
        .and_then(|rest| rest.split_once('.'))
        .map(|(a, t)| (a.parse().unwrap_or(0), t.parse().unwrap_or(0)));
    let number = |name: &str| header(headers, name).and_then(|v| v.parse::<u64>().ok());
    let text = |name: &str| header(headers, name).map(unescape).unwrap_or_default();
    BusMessage {
        topic: topic.to_owned(),
        appcode: number(headers::APPCODE)
            .and_then(|v| u32::try_from(v).ok())
            .or(from_subject.map(|(a, _)| a))
            .unwrap_or(0),
        uid: text(headers::UID),
        device_id: text(headers::DEVICE),
        msgtype: number(headers::MSGTYPE)
            .and_then(|v| u32::try_from(v).ok())
            .or(from_subject.map(|(_, t)| t))
            .unwrap_or(0),
        client_msg_id: text(headers::CLIENT_MSG_ID),
        payload,
        log_id: number(headers::LOG_ID).unwrap_or(0),
        received_ms: number(headers::RECEIVED_MS).unwrap_or(0),
    }
}

/// A stored message's headers minus `skip`.
fn copy_headers(raw: &StreamMessage, skip: &[&str]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, values) in raw.headers.iter() {
        if skip.iter().any(|s| s.eq_ignore_ascii_case(name.as_ref())) {
            continue;
        }
        for value in values {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// `None` for "no message found" (also when the stream itself is gone: nothing is in it).
fn found(
    result: Result<StreamMessage, stream::RawMessageError>,
) -> Result<Option<StreamMessage>, BusError> {
    match result {
        Ok(message) => Ok(Some(message)),
        Err(e) => match e.kind() {
            stream::RawMessageErrorKind::NoMessageFound => Ok(None),
            stream::RawMessageErrorKind::JetStream(js) if js.code() == 404 => Ok(None),
            _ => Err(unavailable("get message", e)),
        },
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> BusError {
    BusError::Unavailable(format!("nats {what}: {e}"))
}

fn is_stream_missing(e: &async_nats::Error) -> bool {
    e.to_string().contains("stream not found")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
