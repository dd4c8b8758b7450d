//! The operations of the API, one function each, shared by the HTTP and gRPC surfaces.
//!
//! Every check that gives an operation its meaning lives here: argument ranges, authorization
//! of the appcode or topic, the call to the backend and the shape of the answer. The surfaces
//! only translate their syntax (JSON/query strings, protobuf) into these inputs and the
//! [`ApiError`] out of them, so HTTP and gRPC cannot drift apart.
//!
//! Consuming as a stream ([`consume_stream`], for SSE and the gRPC `Consume` call) runs in a
//! task that keeps at most `max_in_flight` messages unacked: it remembers the ids it sent with
//! their lease deadline and forgets an id when it is acked or nacked through this node's API
//! (both surfaces report settled ids on [`Shared::settled`]) or when its lease runs out (the
//! queue then delivers it again). Acks that reach the queue another way are therefore noticed
//! only at the lease's end, which bounds the stall to one lease.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use longlink_bus::Leased;
use longlink_bus::routes::valid_topic;
use longlink_rpc::notify::{
    DeviceClass, DeviceRecord, MAX_FIELD_BYTES, ProviderStats, PushToken, check_registration,
};
use longlink_rpc::push::{DeliveryCounters, MAX_PUSH_TARGETS, PushRequest, PushStats, PushTargets};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ApiContext;
use crate::error::ApiError;
use crate::keys::KeyScope;
use crate::model::{
    AckBody, AckedBody, ConsumeQuery, DeadLetterQuery, DeliveryCounterBody, DeliveryCountersBody,
    DispatchBody, DispatchGateBody, DispatchQuery, DrainAcceptedBody, GatesBody, NackBody,
    NackedBody, OnlineCountBody, PresenceQueryBody, PushAcceptedBody, ReplayBody, ReplayedBody,
    StreamQuery, TopicBody, TopicsBody,
};

/// Longest uid (and `from` label), in bytes.
pub(crate) const MAX_UID_BYTES: usize = 256;
/// Most uids in one presence query.
pub(crate) const MAX_PRESENCE_UIDS: usize = 1_000;
/// Most messages leased by one long-poll, listed by one dead-letter page, or in flight on one
/// stream.
pub(crate) const MAX_BATCH: u32 = 1_000;
/// Default of `max`, `max_in_flight` and the dead-letter `limit`.
pub(crate) const DEFAULT_BATCH: u32 = 100;
/// Longest long-poll wait, in seconds.
pub(crate) const MAX_WAIT_SECS: u32 = 60;
/// Default long-poll wait, in seconds.
pub(crate) const DEFAULT_WAIT_SECS: u32 = 20;
/// Longest lease (and nack delay), in seconds.
pub(crate) const MAX_LEASE_SECS: u32 = 3_600;
/// Most ids in one ack, nack or replay.
pub(crate) const MAX_IDS: usize = 10_000;
/// How long one fetch of a stream waits for messages before it looks around again.
const STREAM_FETCH_WAIT: Duration = Duration::from_secs(20);

/// What both surfaces share: the context, the shutdown signal, the settled-ids board and the
/// trace-id counter.
pub(crate) struct Shared {
    pub(crate) ctx: ApiContext,
    pub(crate) shutdown: CancellationToken,
    /// Ids acked or nacked through this API, so open streams can free their in-flight slots.
    pub(crate) settled: broadcast::Sender<Arc<Settled>>,
    next_log_id: AtomicU64,
}

/// Ids of a topic that are no longer in flight.
#[derive(Debug)]
pub(crate) struct Settled {
    topic: String,
    ids: Vec<u64>,
}

impl Shared {
    pub(crate) fn new(ctx: ApiContext, shutdown: CancellationToken) -> Self {
        let (settled, _) = broadcast::channel(1024);
        Self {
            ctx,
            shutdown,
            settled,
            // Seeding with the clock keeps trace ids unique across restarts (as the gate does).
            next_log_id: AtomicU64::new(longlink_proto::unix_ms() << 20),
        }
    }

    fn next_log_id(&self) -> u64 {
        self.next_log_id.fetch_add(1, Ordering::Relaxed)
    }

    fn report_settled(&self, topic: &str, ids: &[u64]) {
        if self.settled.receiver_count() > 0 && !ids.is_empty() {
            // No receiver left between the check and the send is fine: nobody to tell.
            let _ = self.settled.send(Arc::new(Settled {
                topic: topic.to_owned(),
                ids: ids.to_vec(),
            }));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Argument checks

fn check_uid(uid: &str) -> Result<(), ApiError> {
    if uid.is_empty() || uid.len() > MAX_UID_BYTES {
        return Err(ApiError::invalid_argument(format!(
            "a uid must be 1..={MAX_UID_BYTES} bytes"
        )));
    }
    Ok(())
}

/// `value` (default `default`) within `min..=max`.
fn in_range(
    name: &str,
    value: Option<u32>,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, ApiError> {
    let value = value.unwrap_or(default);
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid_argument(format!(
            "{name} must be {min}..={max}, got {value}"
        )))
    }
}

fn lease(ctx: &ApiContext, lease_secs: Option<u32>) -> Result<Duration, ApiError> {
    let default = ctx
        .limits
        .default_lease
        .as_secs()
        .clamp(1, u64::from(MAX_LEASE_SECS)) as u32;
    let secs = in_range("lease_secs", lease_secs, default, 1, MAX_LEASE_SECS)?;
    Ok(Duration::from_secs(u64::from(secs)))
}

fn check_ids(ids: &[u64]) -> Result<(), ApiError> {
    if ids.len() > MAX_IDS {
        return Err(ApiError::invalid_argument(format!(
            "at most {MAX_IDS} ids per call, got {}",
            ids.len()
        )));
    }
    Ok(())
}

/// The topic a consume call names (`topic`, or `appcode` + `msgtype` through the routing
/// table), once the key is allowed to consume it.
///
/// # Errors
/// 400 when neither or both forms are given or the name is invalid; 403 / 404 as
/// [`KeyScope::check_topic`]; 404 when the pair is not routed (`bus.unrouted = "refuse"`).
pub(crate) fn select_topic(
    ctx: &ApiContext,
    scope: &KeyScope,
    topic: Option<&str>,
    appcode: Option<u32>,
    msgtype: Option<u32>,
) -> Result<String, ApiError> {
    let topic = match (topic, appcode, msgtype) {
        (Some(topic), None, None) => {
            if !valid_topic(topic) {
                return Err(ApiError::invalid_argument(format!(
                    "topic {topic:?} must be 1..=200 bytes of [A-Za-z0-9._-]"
                )));
            }
            topic.to_owned()
        }
        (None, Some(appcode), Some(msgtype)) => {
            // The key's own scope first: a clearer 403 than one about the resolved topic.
            scope.check_appcode(appcode)?;
            ctx.routes.topic_for(appcode, msgtype).ok_or_else(|| {
                ApiError::not_found(format!(
                    "messages of appcode {appcode} msgtype {msgtype} are not routed to any topic"
                ))
            })?
        }
        _ => {
            return Err(ApiError::invalid_argument(
                "name the topic with either `topic` or both `appcode` and `msgtype`",
            ));
        }
    };
    scope.check_topic(&ctx.routes, &topic)?;
    Ok(topic)
}

// ---------------------------------------------------------------------------------------------
// Push

/// A push as both surfaces hand it over: the body already decoded to bytes and the content
/// type resolved; everything else is checked by [`push`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushCall {
    pub(crate) appcode: u32,
    /// `None` when the request gave no uid list.
    pub(crate) uids: Option<Vec<String>>,
    pub(crate) all: bool,
    pub(crate) msgtype: u32,
    pub(crate) content: Bytes,
    /// `longlink_proto::ContentType` as i32.
    pub(crate) content_type: i32,
    pub(crate) persist: bool,
    pub(crate) ttl_secs: u32,
    /// `None` = "system".
    pub(crate) from: Option<String>,
    /// `None`: assign one.
    pub(crate) log_id: Option<u64>,
}

/// `POST /v1/push`, gRPC `Push`.
pub(crate) async fn push(
    shared: &Shared,
    scope: &KeyScope,
    call: PushCall,
) -> Result<PushAcceptedBody, ApiError> {
    let ctx = &shared.ctx;
    scope.check_appcode(call.appcode)?;
    let targets = match (call.uids, call.all) {
        (Some(_), true) => {
            return Err(ApiError::invalid_argument(
                "give either `uids` or `all: true`, not both",
            ));
        }
        (None, false) => {
            return Err(ApiError::invalid_argument(
                "give the targets: `uids` or `all: true`",
            ));
        }
        (None, true) => PushTargets::AllOnline,
        (Some(uids), false) => {
            if uids.is_empty() || uids.len() > MAX_PUSH_TARGETS {
                return Err(ApiError::invalid_argument(format!(
                    "uids must hold 1..={MAX_PUSH_TARGETS} uids, got {}",
                    uids.len()
                )));
            }
            uids.iter().try_for_each(|uid| check_uid(uid))?;
            PushTargets::Users(uids)
        }
    };
    if call.content.len() > ctx.limits.max_content_bytes {
        return Err(ApiError::invalid_argument(format!(
            "content is {} bytes, at most {} are allowed",
            call.content.len(),
            ctx.limits.max_content_bytes
        )));
    }
    let from = call.from.unwrap_or_else(|| "system".to_owned());
    if from.len() > MAX_UID_BYTES {
        return Err(ApiError::invalid_argument(format!(
            "from must be at most {MAX_UID_BYTES} bytes"
        )));
    }
    let request = PushRequest {
        appcode: call.appcode,
        targets,
        msgtype: call.msgtype,
        content_type: call.content_type,
        content: call.content,
        persist: call.persist,
        ttl_secs: call.ttl_secs,
        from,
        log_id: push_log_id(shared, call.log_id),
    };
    let log_id = request.log_id;
    let accepted = ctx.push.push(request).await?;
    tracing::debug!(
        key = %scope.name,
        push_id = accepted.push_id,
        targets = accepted.targets,
        log_id,
        "push accepted"
    );
    Ok(PushAcceptedBody {
        push_id: accepted.push_id,
        targets: accepted.targets,
        log_id: log_id.to_string(),
    })
}

/// How `GET /v1/trace/{id}?by=` reads its id: `log_id`, `msgid`, or absent (either).
///
/// # Errors
/// 400 for another value.
pub(crate) fn trace_by(by: Option<&str>) -> Result<longlink_rpc::trace::TraceBy, ApiError> {
    use longlink_rpc::trace::TraceBy;
    match by {
        None => Ok(TraceBy::Either),
        Some("log_id") => Ok(TraceBy::LogId),
        Some("msgid") => Ok(TraceBy::Msgid),
        Some(other) => Err(ApiError::invalid_argument(format!(
            "by must be `log_id` or `msgid`, not {other:?}"
        ))),
    }
}

/// The log_id of a new push: the caller's if it names no traced message, else (or without
/// one) a fresh id that names none either. A caller-chosen id naming another message's open
/// trace would merge the push into it and widen who may read that trace (docs/security.md
/// "Isolation"); the answer says which id was used.
fn push_log_id(shared: &Shared, wanted: Option<u64>) -> u64 {
    // "" is no sender's label: only ids without an open trace pass.
    let ledger = &shared.ctx.ledger;
    if let Some(id) = wanted.filter(|id| *id != 0 && ledger.claim(*id, "")) {
        return id;
    }
    let mut id = shared.next_log_id();
    for _ in 0..8 {
        if ledger.claim(id, "") {
            break;
        }
        id = shared.next_log_id();
    }
    id
}

/// `GET /v1/trace/{id}`, gRPC `Trace`: a message's trail from the ledger, read as `by` says.
///
/// A trace whose appcodes the key does not cover answers 404 like an unknown id.
///
/// # Errors
/// 404 when the ledger has no such message (or the key may not see it).
pub(crate) fn trace(
    shared: &Shared,
    scope: &KeyScope,
    id: u64,
    by: longlink_rpc::trace::TraceBy,
) -> Result<longlink_rpc::trace::Trace, ApiError> {
    let unknown = || {
        ApiError::not_found(format!(
            "no message with log_id or msgid {id} in the ledger (it may be older than the trace window)"
        ))
    };
    let trace = shared.ctx.ledger.trace(id, by).ok_or_else(unknown)?;
    if !trace.subject.appcodes.iter().any(|a| scope.allows(*a)) {
        return Err(unknown());
    }
    Ok(trace)
}

/// `GET /v1/push/{push_id}`, gRPC `PushStats`: the statistics, once authorised.
///
/// A push of an appcode outside the key's scope answers 404 like an unknown id, so a key
/// cannot learn which push ids exist for other appcodes.
pub(crate) async fn push_stats(
    shared: &Shared,
    scope: &KeyScope,
    push_id: u64,
) -> Result<PushStats, ApiError> {
    let unknown = || ApiError::not_found(format!("unknown push id {push_id}"));
    let stats = shared
        .ctx
        .push
        .push_stats(push_id)
        .await
        .ok_or_else(unknown)?;
    if !scope.allows(stats.appcode) {
        return Err(unknown());
    }
    Ok(stats)
}

/// `GET /v1/stats/delivery`, gRPC `DeliveryCounters`.
pub(crate) async fn delivery_counters(
    shared: &Shared,
    scope: &KeyScope,
    appcode: Option<u32>,
) -> Result<DeliveryCountersBody, ApiError> {
    let appcodes: Vec<u32> = match appcode {
        Some(appcode) => {
            scope.check_appcode(appcode)?;
            vec![appcode]
        }
        None => scope.appcodes.iter().copied().collect(),
    };
    // An empty list asks the service for every appcode: a key without appcodes sees nothing.
    if appcodes.is_empty() {
        return Ok(DeliveryCountersBody { counters: vec![] });
    }
    let counters = shared.ctx.push.delivery_counters(&appcodes).await;
    Ok(DeliveryCountersBody {
        counters: counters
            .into_iter()
            .filter(|c| appcodes.contains(&c.appcode))
            .map(|c: DeliveryCounters| DeliveryCounterBody {
                appcode: c.appcode,
                msgtype: c.msgtype,
                pushes: c.pushes,
                targets: c.targets,
                online: c.online,
                written: c.written,
                acked: c.acked,
                stored_offline: c.stored_offline,
                expired: c.expired,
                failed: c.failed,
                delivery_rate: crate::model::rate(c.acked, c.targets),
            })
            .collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Presence

/// `GET /v1/presence/{appcode}/{uid}`, gRPC `Presence`.
pub(crate) async fn presence(
    shared: &Shared,
    scope: &KeyScope,
    appcode: u32,
    uid: String,
) -> Result<crate::model::UserPresence, ApiError> {
    scope.check_appcode(appcode)?;
    check_uid(&uid)?;
    let sessions = shared.ctx.presence.sessions(appcode, &uid).await?;
    Ok(crate::model::UserPresence {
        appcode,
        uid,
        sessions,
    })
}

/// `POST /v1/presence/query`, gRPC `PresenceQuery`.
pub(crate) async fn presence_query(
    shared: &Shared,
    scope: &KeyScope,
    query: PresenceQueryBody,
) -> Result<Vec<crate::model::UserPresence>, ApiError> {
    scope.check_appcode(query.appcode)?;
    if query.uids.is_empty() || query.uids.len() > MAX_PRESENCE_UIDS {
        return Err(ApiError::invalid_argument(format!(
            "uids must hold 1..={MAX_PRESENCE_UIDS} uids, got {}",
            query.uids.len()
        )));
    }
    query.uids.iter().try_for_each(|uid| check_uid(uid))?;
    let presence = &shared.ctx.presence;
    let appcode = query.appcode;
    // A few lookups at a time: quick for an in-process table, bounded for a remote one.
    futures::stream::iter(query.uids)
        .map(|uid| async move {
            let sessions = presence.sessions(appcode, &uid).await?;
            Ok::<_, ApiError>(crate::model::UserPresence {
                appcode,
                uid,
                sessions,
            })
        })
        .buffered(16)
        .try_collect()
        .await
}

/// `GET /v1/presence/{appcode}`, gRPC `OnlineCount`.
pub(crate) async fn online_count(
    shared: &Shared,
    scope: &KeyScope,
    appcode: u32,
) -> Result<OnlineCountBody, ApiError> {
    scope.check_appcode(appcode)?;
    let counts = shared.ctx.presence.appcode_counts(appcode).await?;
    Ok(OnlineCountBody {
        appcode,
        online_users: counts.users,
        sessions: counts.sessions,
    })
}

// ---------------------------------------------------------------------------------------------
// Consume

/// Messages of one topic, as both surfaces render them.
#[derive(Debug)]
pub(crate) struct Messages {
    pub(crate) topic: String,
    pub(crate) messages: Vec<Leased>,
}

/// `GET /v1/consume` (long-poll). Answers as soon as a message is leased, after `wait_secs`
/// with none, or with none at once when the server shuts down.
pub(crate) async fn consume(
    shared: &Shared,
    scope: &KeyScope,
    query: ConsumeQuery,
) -> Result<Messages, ApiError> {
    let ctx = &shared.ctx;
    let max = in_range("max", query.max, DEFAULT_BATCH, 1, MAX_BATCH)?;
    let wait = in_range(
        "wait_secs",
        query.wait_secs,
        DEFAULT_WAIT_SECS,
        0,
        MAX_WAIT_SECS,
    )?;
    let lease = lease(ctx, query.lease_secs)?;
    let topic = select_topic(
        ctx,
        scope,
        query.topic.as_deref(),
        query.appcode,
        query.msgtype,
    )?;
    let fetched = tokio::select! {
        // Cancelling the fetch at most leaves messages leased and unsent; they come back when
        // the lease ends.
        () = shared.shutdown.cancelled() => Vec::new(),
        fetched = ctx.queue.fetch(&topic, max as usize, Duration::from_secs(u64::from(wait)), lease) => fetched?,
    };
    record_leased(shared, &topic, &fetched);
    Ok(Messages {
        topic,
        messages: fetched,
    })
}

/// The ledger's `consumed` stage: a business server leased these c2s messages.
fn record_leased(shared: &Shared, topic: &str, batch: &[longlink_bus::Leased]) {
    for leased in batch {
        shared.ctx.ledger.record(
            longlink_rpc::trace::TraceEvent::now(
                leased.message.log_id,
                longlink_rpc::trace::Stage::Consumed,
            )
            .detail(format!(
                "leased from {topic} (attempt {}, bus id {})",
                leased.attempt, leased.id
            )),
        );
    }
}

/// `GET /v1/consume/sse`, gRPC `Consume`: starts the leasing task (see the module docs) and
/// returns the messages it leases. The channel closes when the server shuts down or after an
/// error item; dropping the receiver stops the task.
pub(crate) fn consume_stream(
    shared: &Arc<Shared>,
    scope: &KeyScope,
    query: StreamQuery,
) -> Result<mpsc::Receiver<Result<Leased, ApiError>>, ApiError> {
    let ctx = &shared.ctx;
    let max_in_flight = in_range(
        "max_in_flight",
        query.max_in_flight,
        DEFAULT_BATCH,
        1,
        MAX_BATCH,
    )?;
    let lease = lease(ctx, query.lease_secs)?;
    let topic = select_topic(
        ctx,
        scope,
        query.topic.as_deref(),
        query.appcode,
        query.msgtype,
    )?;
    tracing::debug!(key = %scope.name, %topic, max_in_flight, "consume stream opened");
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(stream_task(
        Arc::clone(shared),
        topic,
        max_in_flight as usize,
        lease,
        tx,
    ));
    Ok(rx)
}

/// Applies one settled-ids notice to the in-flight set.
fn apply_settled(
    in_flight: &mut HashMap<u64, Instant>,
    topic: &str,
    notice: Result<Arc<Settled>, broadcast::error::RecvError>,
) {
    match notice {
        Ok(settled) if settled.topic == topic => {
            for id in &settled.ids {
                in_flight.remove(id);
            }
        }
        Ok(_) | Err(broadcast::error::RecvError::Closed) => {}
        // Notices were lost: which ids were acked is unknown. Forgetting them all keeps the
        // stream moving (at worst briefly above max_in_flight) instead of stalling a lease.
        Err(broadcast::error::RecvError::Lagged(_)) => in_flight.clear(),
    }
}

async fn stream_task(
    shared: Arc<Shared>,
    topic: String,
    max_in_flight: usize,
    lease: Duration,
    tx: mpsc::Sender<Result<Leased, ApiError>>,
) {
    let mut settled = shared.settled.subscribe();
    // id → when its lease ends (a little after the queue's own deadline: it started earlier).
    let mut in_flight: HashMap<u64, Instant> = HashMap::new();
    loop {
        loop {
            match settled.try_recv() {
                Ok(notice) => apply_settled(&mut in_flight, &topic, Ok(notice)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => apply_settled(
                    &mut in_flight,
                    &topic,
                    Err(broadcast::error::RecvError::Lagged(n)),
                ),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        in_flight.retain(|_, deadline| *deadline > now);
        let room = max_in_flight.saturating_sub(in_flight.len());
        if room == 0 {
            let earliest = in_flight.values().min().copied().unwrap_or(now);
            tokio::select! {
                () = shared.shutdown.cancelled() => return,
                () = tx.closed() => return,
                () = tokio::time::sleep_until(earliest) => {}
                notice = settled.recv() => apply_settled(&mut in_flight, &topic, notice),
            }
            continue;
        }
        let fetched = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = tx.closed() => return,
            fetched = shared.ctx.queue.fetch(&topic, room, STREAM_FETCH_WAIT, lease) => fetched,
        };
        match fetched {
            Ok(batch) => {
                let deadline = Instant::now() + lease;
                record_leased(&shared, &topic, &batch);
                for leased in batch {
                    in_flight.insert(leased.id, deadline);
                    if tx.send(Ok(leased)).await.is_err() {
                        return;
                    }
                }
            }
            Err(err) => {
                let _ = tx.send(Err(err.into())).await;
                return;
            }
        }
    }
}

/// `POST /v1/consume/ack`, gRPC `Ack`.
pub(crate) async fn ack(
    shared: &Shared,
    scope: &KeyScope,
    body: AckBody,
) -> Result<AckedBody, ApiError> {
    let topic = select_topic(
        &shared.ctx,
        scope,
        body.topic.as_deref(),
        body.appcode,
        body.msgtype,
    )?;
    check_ids(&body.ids)?;
    let acked = shared.ctx.queue.ack(&topic, &body.ids).await?;
    shared.report_settled(&topic, &body.ids);
    Ok(AckedBody { acked })
}

/// `POST /v1/consume/nack`, gRPC `Nack`.
pub(crate) async fn nack(
    shared: &Shared,
    scope: &KeyScope,
    body: NackBody,
) -> Result<NackedBody, ApiError> {
    let topic = select_topic(
        &shared.ctx,
        scope,
        body.topic.as_deref(),
        body.appcode,
        body.msgtype,
    )?;
    check_ids(&body.ids)?;
    let retry_after = in_range(
        "retry_after_secs",
        body.retry_after_secs,
        0,
        0,
        MAX_LEASE_SECS,
    )?;
    let nacked = shared
        .ctx
        .queue
        .nack(
            &topic,
            &body.ids,
            Duration::from_secs(u64::from(retry_after)),
        )
        .await?;
    shared.report_settled(&topic, &body.ids);
    Ok(NackedBody { nacked })
}

/// `GET /v1/deadletter`, gRPC `DeadLetters`.
pub(crate) async fn dead_letters(
    shared: &Shared,
    scope: &KeyScope,
    query: DeadLetterQuery,
) -> Result<Messages, ApiError> {
    let limit = in_range("limit", query.limit, DEFAULT_BATCH, 1, MAX_BATCH)?;
    let topic = select_topic(
        &shared.ctx,
        scope,
        query.topic.as_deref(),
        query.appcode,
        query.msgtype,
    )?;
    let messages = shared
        .ctx
        .queue
        .dead_letters(&topic, query.after.unwrap_or(0), limit as usize)
        .await?;
    Ok(Messages { topic, messages })
}

/// `POST /v1/deadletter/replay`, gRPC `Replay`.
pub(crate) async fn replay(
    shared: &Shared,
    scope: &KeyScope,
    body: ReplayBody,
) -> Result<ReplayedBody, ApiError> {
    let topic = select_topic(
        &shared.ctx,
        scope,
        body.topic.as_deref(),
        body.appcode,
        body.msgtype,
    )?;
    check_ids(&body.ids)?;
    let replayed = shared.ctx.queue.replay(&topic, &body.ids).await?;
    Ok(ReplayedBody { replayed })
}

/// `GET /v1/topics`, gRPC `Topics`: the topics the key may consume.
pub(crate) async fn topics(shared: &Shared, scope: &KeyScope) -> Result<TopicsBody, ApiError> {
    let topics = shared.ctx.queue.topics().await?;
    Ok(TopicsBody {
        topics: topics
            .into_iter()
            .filter(|t| scope.may_consume(&shared.ctx.routes, &t.topic))
            .map(|t| TopicBody {
                topic: t.topic,
                ready: t.ready,
                in_flight: t.in_flight,
                dead: t.dead,
            })
            .collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Gates: dispatch, list, drain

/// `GET /v1/dispatch`: the gates a client of `appcode:uid` should try, in order
/// ([`crate::gates::dispatch_order`]).
///
/// # Errors
/// 400 when the appcode is missing or the uid/device invalid; 403 when the key does not cover
/// the appcode; 503 when no gate is serving.
pub(crate) async fn dispatch(
    shared: &Shared,
    scope: &KeyScope,
    query: DispatchQuery,
) -> Result<DispatchBody, ApiError> {
    let appcode = query
        .appcode
        .ok_or_else(|| ApiError::invalid_argument("appcode is required"))?;
    scope.check_appcode(appcode)?;
    if let Some(uid) = &query.uid {
        check_uid(uid)?;
    }
    if let Some(device) = &query.device {
        if query.uid.is_none() {
            return Err(ApiError::invalid_argument("device needs a uid"));
        }
        check_device(device)?;
    }
    let holding = match &query.uid {
        None => Vec::new(),
        Some(uid) => match shared.ctx.presence.sessions(appcode, uid).await {
            Ok(mut sessions) => {
                sessions.retain(|s| query.device.as_ref().is_none_or(|d| &s.device_id == d));
                // The newest session first: the device most likely asking.
                sessions.sort_by_key(|s| std::cmp::Reverse(s.since_ms));
                sessions.into_iter().map(|s| s.gate_id).collect()
            }
            Err(err) => {
                // Dispatch must keep working when presence does not: without the holding
                // gate the client merely logs in afresh instead of resuming.
                tracing::warn!(error = %err, appcode, "dispatch without presence");
                Vec::new()
            }
        },
    };
    let order = crate::gates::dispatch_order(shared.ctx.gates.gates(), &holding);
    if order.is_empty() {
        return Err(ApiError::unavailable(
            "no gate is serving (every gate is draining or stopped)",
        ));
    }
    Ok(DispatchBody {
        gates: order
            .into_iter()
            .map(|g| DispatchGateBody {
                id: g.status.id,
                addr: g.status.addr,
                connections: g.status.connections,
                holding: g.holding,
            })
            .collect(),
    })
}

/// `GET /v1/gates` (an operator key).
pub(crate) fn gates(shared: &Shared, scope: &KeyScope) -> Result<GatesBody, ApiError> {
    shared.ctx.keys.check_operator(scope)?;
    Ok(GatesBody {
        gates: shared
            .ctx
            .gates
            .gates()
            .into_iter()
            .map(Into::into)
            .collect(),
    })
}

/// `POST /v1/gates/{id}/drain` (an operator key): starts the drain in the background.
/// Idempotent: a gate already draining (or drained) is answered alike, with `started: false`.
///
/// # Errors
/// 403 for a non-operator key; 404 for a gate the node does not have.
pub(crate) fn drain_gate(
    shared: &Shared,
    scope: &KeyScope,
    gate_id: &str,
) -> Result<DrainAcceptedBody, ApiError> {
    shared.ctx.keys.check_operator(scope)?;
    let started = match shared.ctx.gates.start_drain(gate_id) {
        crate::gates::DrainStart::Started => true,
        crate::gates::DrainStart::AlreadyDraining => false,
        crate::gates::DrainStart::UnknownGate => {
            return Err(ApiError::not_found(format!("unknown gate {gate_id:?}")));
        }
    };
    tracing::info!(gate = gate_id, key = %scope.name, started, "gate drain requested");
    Ok(DrainAcceptedBody {
        gate: gate_id.to_owned(),
        draining: true,
        started,
    })
}

/// `POST /v1/tokens/revoke`: a key covering the appcode (an operator key covers all) revokes
/// the user's tokens issued before now or `before_ms`.
///
/// # Errors
/// 403 when the key does not cover the appcode; 400 for a bad uid or instant; 404 for an
/// unknown appcode; 503 when the revocation could not be stored.
pub(crate) async fn revoke_tokens(
    shared: &Shared,
    scope: &KeyScope,
    body: crate::tokens::RevokeBody,
) -> Result<crate::tokens::RevokedBody, ApiError> {
    use crate::tokens::RevokeFailure;
    scope.check_appcode(body.appcode)?;
    if body.uid.is_empty() || body.uid.len() > MAX_UID_BYTES {
        return Err(ApiError::invalid_argument(format!(
            "uid must be 1..={MAX_UID_BYTES} bytes"
        )));
    }
    let outcome = shared
        .ctx
        .tokens
        .revoke(body.appcode, &body.uid, body.before_ms)
        .await
        .map_err(|failure| match failure {
            RevokeFailure::UnknownAppcode => {
                ApiError::not_found(format!("unknown appcode {}", body.appcode))
            }
            RevokeFailure::InvalidArgument(message) => ApiError::invalid_argument(message),
            RevokeFailure::Unavailable(message) => ApiError::unavailable(message),
        })?;
    tracing::info!(key = %scope.name, app.code = body.appcode, uid = %body.uid,
        before_ms = outcome.before_ms, kicked = outcome.kicked, "tokens revoked");
    Ok(crate::tokens::RevokedBody {
        appcode: body.appcode,
        uid: body.uid,
        before_ms: outcome.before_ms,
        kicked: outcome.kicked as u64,
    })
}

// ---------------------------------------------------------------------------------------------
// Devices' push tokens and the push providers (offline notifications, issue 12)

/// A device id as the registry takes it: the LOGIN `device_id`, 1..=256 bytes.
fn check_device(device: &str) -> Result<(), ApiError> {
    if device.is_empty() || device.len() > MAX_UID_BYTES {
        return Err(ApiError::invalid_argument(format!(
            "a device must be 1..={MAX_UID_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The key covers the appcode, and uid and device are well-formed: the checks of every
/// device call.
fn check_device_call(
    scope: &KeyScope,
    appcode: u32,
    uid: &str,
    device: Option<&str>,
) -> Result<(), ApiError> {
    scope.check_appcode(appcode)?;
    check_uid(uid)?;
    device.map_or(Ok(()), check_device)
}

/// A device's identity in an API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceKey {
    pub(crate) appcode: u32,
    pub(crate) uid: String,
    pub(crate) device: String,
}

/// `PUT /v1/devices/{appcode}/{uid}/{device}`, gRPC `PutDevice`: replaces the device's
/// registration (class and every token; no token removes them all).
///
/// # Errors
/// 403 outside the key's scope; 400 for a bad field, more than `MAX_TOKENS_PER_DEVICE`
/// tokens, two tokens of one provider or a provider the node does not have; 503 when the
/// registry failed.
pub(crate) async fn put_device(
    shared: &Shared,
    scope: &KeyScope,
    key: DeviceKey,
    class: DeviceClass,
    tokens: Vec<PushToken>,
) -> Result<DeviceRecord, ApiError> {
    check_device_call(scope, key.appcode, &key.uid, Some(&key.device))?;
    check_registration(&class, &tokens)?;
    let record = shared
        .ctx
        .notifications
        .put_device(key.appcode, &key.uid, &key.device, class, tokens)
        .await?;
    tracing::debug!(key = %scope.name, app.code = key.appcode, uid = %key.uid,
        device = %key.device, tokens = record.tokens.len(), "device registration replaced");
    Ok(record)
}

/// `POST /v1/devices/{appcode}/{uid}/{device}/tokens`, gRPC `RegisterPushToken`: adds the
/// token of one provider (replacing that provider's previous one) and sets the class; the
/// device's other tokens stay. One call, so it cannot lose a token an app registered
/// meanwhile (as a read, merge and `PUT` could).
///
/// # Errors
/// As [`put_device`].
pub(crate) async fn register_token(
    shared: &Shared,
    scope: &KeyScope,
    key: DeviceKey,
    class: DeviceClass,
    token: PushToken,
) -> Result<DeviceRecord, ApiError> {
    check_device_call(scope, key.appcode, &key.uid, Some(&key.device))?;
    check_registration(&class, std::slice::from_ref(&token))?;
    let provider = token.provider.clone();
    let record = shared
        .ctx
        .notifications
        .register(key.appcode, &key.uid, &key.device, class, token)
        .await?;
    tracing::debug!(key = %scope.name, app.code = key.appcode, uid = %key.uid,
        device = %key.device, %provider, "push token registered");
    Ok(record)
}

/// `GET /v1/devices/{appcode}/{uid}[/{device}]`, gRPC `ListDevices`: the user's devices, or
/// the one named.
///
/// # Errors
/// 403 outside the key's scope; 400 for a bad uid or device; 404 when the device named has
/// no registration; 503 when the registry failed.
pub(crate) async fn devices(
    shared: &Shared,
    scope: &KeyScope,
    appcode: u32,
    uid: &str,
    device: Option<&str>,
) -> Result<Vec<DeviceRecord>, ApiError> {
    check_device_call(scope, appcode, uid, device)?;
    let mut records = shared
        .ctx
        .notifications
        .devices(appcode, uid, device)
        .await?;
    if let Some(device) = device {
        // Only the one asked for, whatever the service answered.
        records.retain(|r| r.device == device);
        if records.is_empty() {
            return Err(ApiError::not_found(format!(
                "device {device:?} of {appcode}:{uid} has no push registration"
            )));
        }
    }
    records.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(records)
}

/// `DELETE /v1/devices/{appcode}/{uid}/{device}[?provider=]`, gRPC `RemoveDevice`: removes
/// one provider's token or all of the device's; how many went. Idempotent: nothing to
/// remove answers 0.
///
/// # Errors
/// 403 outside the key's scope; 400 for a bad uid, device or provider; 503 when the registry
/// failed.
pub(crate) async fn remove_device(
    shared: &Shared,
    scope: &KeyScope,
    key: DeviceKey,
    provider: Option<&str>,
) -> Result<u32, ApiError> {
    check_device_call(scope, key.appcode, &key.uid, Some(&key.device))?;
    if let Some(provider) = provider
        && (provider.is_empty() || provider.len() > MAX_FIELD_BYTES)
    {
        return Err(ApiError::invalid_argument(format!(
            "provider must be 1 to {MAX_FIELD_BYTES} bytes"
        )));
    }
    let removed = shared
        .ctx
        .notifications
        .remove(key.appcode, &key.uid, &key.device, provider)
        .await?;
    tracing::debug!(key = %scope.name, app.code = key.appcode, uid = %key.uid,
        device = %key.device, provider = provider.unwrap_or("*"), removed, "push tokens removed");
    Ok(removed)
}

/// `GET /v1/push-providers/stats`, gRPC `PushProviderStats`: per provider and device class.
///
/// Any valid key may read it: the figures are node-wide counts and latencies per provider
/// and device class, with no uid, token or content in them (the `/v1/stats/summary` kind of
/// figure), and a business server judging its notification delivery needs them.
pub(crate) async fn provider_stats(shared: &Shared, scope: &KeyScope) -> Vec<ProviderStats> {
    tracing::trace!(key = %scope.name, "push provider stats");
    let mut stats = shared.ctx.notifications.provider_stats().await;
    stats.sort_by(|a, b| a.provider.cmp(&b.provider));
    for provider in &mut stats {
        provider.classes.sort_by(|a, b| a.class.cmp(&b.class));
    }
    stats
}
