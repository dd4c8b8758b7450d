//! The gRPC surface: service `longlink.api.v1.Api` (proto/api.proto) served by tonic.
//!
//! Each method reads the API key from metadata (`authorization: Bearer <key>` or
//! `x-api-key`), translates its protobuf request into the input of the operation in `ops`
//! that HTTP calls too, and translates the answer back; [`ApiError`]s become `Status`es with
//! the spec's codes (and the JSON code string in `x-longlink-error` metadata).

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt as _};
use longlink_bus::Leased;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::keys::KeyScope;
use longlink_rpc::push::RecipientState;

use crate::model::{
    self, AckBody, ContentTypeName, DeadLetterQuery, NackBody, PresenceQueryBody, ReplayBody,
    StreamQuery,
};
use crate::ops::{self, DeviceKey, Messages, PushCall, Shared};
use crate::pb;
use crate::pb::api_server::{Api, ApiServer};
use longlink_rpc::notify::{DeviceClass, PushToken};

/// The tonic service over the shared state.
struct GrpcApi {
    shared: Arc<Shared>,
}

/// Serves the gRPC API on `listener` until `stop` is cancelled; open `Consume` streams end
/// then (they watch the same token), so the drain completes.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let max_message = shared.ctx.limits.max_body_bytes;
    let service = ApiServer::new(GrpcApi { shared }).max_decoding_message_size(max_message);
    let router = tonic::transport::Server::builder().add_service(service);
    let done = stop.clone().cancelled_owned();
    match tls {
        Some(config) => {
            let incoming = crate::tls::TlsIncoming::new(listener, config, stop)?;
            router.serve_with_incoming_shutdown(incoming, done).await
        }
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            router.serve_with_incoming_shutdown(incoming, done).await
        }
    }
    .map_err(std::io::Error::other)
}

impl GrpcApi {
    fn scope<T>(&self, request: &Request<T>) -> Result<KeyScope, Status> {
        let metadata = request.metadata();
        // A value that is not ASCII counts as given but wrong (401), not as absent.
        let value = |name: &str| metadata.get(name).map(|v| v.to_str().unwrap_or_default());
        self.shared
            .ctx
            .keys
            .authorize_values(value("authorization"), value("x-api-key"))
            .cloned()
            .map_err(Status::from)
    }
}

/// `(topic, appcode, msgtype)` of an optional selector.
fn selector(topic: Option<pb::TopicSelector>) -> (Option<String>, Option<u32>, Option<u32>) {
    topic.map_or((None, None, None), |t| (t.topic, t.appcode, t.msgtype))
}

/// proto3 cannot tell 0 from absent: 0 means the default.
fn nonzero(value: u32) -> Option<u32> {
    (value != 0).then_some(value)
}

fn message(leased: Leased) -> pb::Message {
    let m = leased.message;
    pb::Message {
        id: leased.id,
        attempt: leased.attempt,
        topic: m.topic,
        appcode: m.appcode,
        uid: m.uid,
        device: m.device_id,
        msgtype: m.msgtype,
        client_msg_id: m.client_msg_id,
        log_id: m.log_id,
        received_ms: m.received_ms,
        body: m.payload,
    }
}

fn dead_letters_reply(messages: Messages) -> pb::DeadLettersReply {
    pb::DeadLettersReply {
        topic: messages.topic,
        messages: messages.messages.into_iter().map(message).collect(),
    }
}

fn user_presence(user: crate::model::UserPresence) -> pb::UserPresence {
    pb::UserPresence {
        appcode: user.appcode,
        online: !user.sessions.is_empty(),
        uid: user.uid,
        sessions: user
            .sessions
            .into_iter()
            .map(|s| pb::Session {
                device: s.device_id,
                gate: s.gate_id,
                session_id: s.session_id,
                since_ms: s.since_ms,
            })
            .collect(),
    }
}

fn recipient_state(state: RecipientState) -> pb::RecipientState {
    match state {
        RecipientState::Pending => pb::RecipientState::Pending,
        RecipientState::StoredOffline => pb::RecipientState::StoredOffline,
        RecipientState::Queued => pb::RecipientState::Queued,
        RecipientState::Written => pb::RecipientState::Written,
        RecipientState::Acked => pb::RecipientState::Acked,
        RecipientState::Expired => pb::RecipientState::Expired,
        RecipientState::Failed => pb::RecipientState::Failed,
    }
}

fn push_call(request: pb::PushRequest) -> Result<PushCall, ApiError> {
    let content_type = match pb::ContentType::try_from(request.content_type) {
        Ok(pb::ContentType::Unspecified | pb::ContentType::Text) => ContentTypeName::Text,
        Ok(pb::ContentType::Rich) => ContentTypeName::Rich,
        Ok(pb::ContentType::Business) => ContentTypeName::Business,
        Err(_) => {
            return Err(ApiError::invalid_argument(format!(
                "unknown content_type {}",
                request.content_type
            )));
        }
    };
    Ok(PushCall {
        appcode: request.appcode,
        // An empty repeated field is indistinguishable from an absent one.
        uids: (!request.uids.is_empty()).then_some(request.uids),
        all: request.all,
        msgtype: request.msgtype,
        content: request.content,
        content_type: content_type.wire(),
        persist: request.persist.unwrap_or(true),
        ttl_secs: request.ttl_secs,
        from: (!request.from.is_empty()).then_some(request.from),
        log_id: (request.log_id != 0).then_some(request.log_id),
    })
}

fn device(record: longlink_rpc::notify::DeviceRecord) -> pb::Device {
    let body = model::DeviceBody::from(record);
    pb::Device {
        appcode: body.appcode,
        uid: body.uid,
        device: body.device,
        platform: body.platform,
        vendor: body.vendor,
        app_version: body.app_version,
        class: body.class,
        tokens: body
            .tokens
            .into_iter()
            .map(|t| pb::PushToken {
                provider: t.provider,
                token: t.token,
            })
            .collect(),
        updated_ms: body.updated_ms,
    }
}

fn push_token(token: pb::PushToken) -> PushToken {
    PushToken {
        provider: token.provider,
        token: token.token,
    }
}

fn provider_stats(stats: longlink_rpc::notify::ProviderStats) -> pb::ProviderStats {
    let body = model::ProviderBody::from(stats);
    pb::ProviderStats {
        name: body.name,
        kind: body.kind,
        breaker: body.breaker,
        classes: body
            .classes
            .into_iter()
            .map(|c| pb::ProviderClassStats {
                class: c.class,
                sent: c.sent,
                accepted: c.accepted,
                receipts: c.receipts,
                receipt_rate: c.receipt_rate,
                p50_ms: c.p50_ms,
                p99_ms: c.p99_ms,
                errors: c.errors.into_iter().collect(),
                estimate: c.estimate,
            })
            .collect(),
    }
}

type MessageStream = Pin<Box<dyn Stream<Item = Result<pb::Message, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Api for GrpcApi {
    async fn push(
        &self,
        request: Request<pb::PushRequest>,
    ) -> Result<Response<pb::PushReply>, Status> {
        let scope = self.scope(&request)?;
        let call = push_call(request.into_inner())?;
        let accepted = ops::push(&self.shared, &scope, call).await?;
        Ok(Response::new(pb::PushReply {
            push_id: accepted.push_id,
            targets: accepted.targets,
            log_id: accepted.log_id.parse().unwrap_or_default(),
        }))
    }

    async fn push_stats(
        &self,
        request: Request<pb::PushStatsRequest>,
    ) -> Result<Response<pb::PushStatsReply>, Status> {
        let scope = self.scope(&request)?;
        let s = ops::push_stats(&self.shared, &scope, request.into_inner().push_id).await?;
        Ok(Response::new(pb::PushStatsReply {
            push_id: s.push_id,
            appcode: s.appcode,
            msgtype: s.msgtype,
            persist: s.persist,
            ttl_secs: s.ttl_secs,
            msgid: s.msgid,
            created_ms: s.created_ms,
            finished_ms: s.finished_ms,
            done: s.finished_ms != 0,
            targets: s.targets,
            online: s.online,
            written: s.written,
            acked: s.acked,
            stored_offline: s.stored_offline,
            expired: s.expired,
            failed: s.failed,
            stale_sessions: s.stale_sessions,
            delivery_rate: crate::model::rate(s.acked, s.targets),
            recipients: s
                .recipients
                .into_iter()
                .map(|r| pb::Recipient {
                    uid: r.uid,
                    state: recipient_state(r.state).into(),
                    sessions: r.sessions,
                })
                .collect(),
        }))
    }

    async fn delivery_counters(
        &self,
        request: Request<pb::DeliveryCountersRequest>,
    ) -> Result<Response<pb::DeliveryCountersReply>, Status> {
        let scope = self.scope(&request)?;
        let body =
            ops::delivery_counters(&self.shared, &scope, request.into_inner().appcode).await?;
        Ok(Response::new(pb::DeliveryCountersReply {
            counters: body
                .counters
                .into_iter()
                .map(|c| pb::DeliveryCounter {
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
                    delivery_rate: c.delivery_rate,
                })
                .collect(),
        }))
    }

    async fn presence(
        &self,
        request: Request<pb::PresenceRequest>,
    ) -> Result<Response<pb::UserPresence>, Status> {
        let scope = self.scope(&request)?;
        let pb::PresenceRequest { appcode, uid } = request.into_inner();
        let user = ops::presence(&self.shared, &scope, appcode, uid).await?;
        Ok(Response::new(user_presence(user)))
    }

    async fn presence_query(
        &self,
        request: Request<pb::PresenceQueryRequest>,
    ) -> Result<Response<pb::PresenceQueryReply>, Status> {
        let scope = self.scope(&request)?;
        let pb::PresenceQueryRequest { appcode, uids } = request.into_inner();
        let users =
            ops::presence_query(&self.shared, &scope, PresenceQueryBody { appcode, uids }).await?;
        Ok(Response::new(pb::PresenceQueryReply {
            users: users.into_iter().map(user_presence).collect(),
        }))
    }

    async fn online_count(
        &self,
        request: Request<pb::OnlineCountRequest>,
    ) -> Result<Response<pb::OnlineCountReply>, Status> {
        let scope = self.scope(&request)?;
        let counts = ops::online_count(&self.shared, &scope, request.into_inner().appcode).await?;
        Ok(Response::new(pb::OnlineCountReply {
            appcode: counts.appcode,
            online_users: counts.online_users,
            sessions: counts.sessions,
        }))
    }

    type ConsumeStream = MessageStream;

    async fn consume(
        &self,
        request: Request<pb::ConsumeRequest>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        let scope = self.scope(&request)?;
        let request = request.into_inner();
        let (topic, appcode, msgtype) = selector(request.topic);
        let query = StreamQuery {
            topic,
            appcode,
            msgtype,
            max_in_flight: nonzero(request.max_in_flight),
            lease_secs: nonzero(request.lease_secs),
        };
        let stream = ops::consume_stream(&self.shared, &scope, query)?;
        let messages =
            ReceiverStream::new(stream).map(|item| item.map(message).map_err(Status::from));
        Ok(Response::new(Box::pin(messages)))
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckReply>, Status> {
        let scope = self.scope(&request)?;
        let request = request.into_inner();
        let (topic, appcode, msgtype) = selector(request.topic);
        let body = AckBody {
            topic,
            appcode,
            msgtype,
            ids: request.ids,
        };
        let acked = ops::ack(&self.shared, &scope, body).await?;
        Ok(Response::new(pb::AckReply { acked: acked.acked }))
    }

    async fn nack(
        &self,
        request: Request<pb::NackRequest>,
    ) -> Result<Response<pb::NackReply>, Status> {
        let scope = self.scope(&request)?;
        let request = request.into_inner();
        let (topic, appcode, msgtype) = selector(request.topic);
        let body = NackBody {
            topic,
            appcode,
            msgtype,
            ids: request.ids,
            retry_after_secs: Some(request.retry_after_secs),
        };
        let nacked = ops::nack(&self.shared, &scope, body).await?;
        Ok(Response::new(pb::NackReply {
            nacked: nacked.nacked,
        }))
    }

    async fn dead_letters(
        &self,
        request: Request<pb::DeadLettersRequest>,
    ) -> Result<Response<pb::DeadLettersReply>, Status> {
        let scope = self.scope(&request)?;
        let request = request.into_inner();
        let (topic, appcode, msgtype) = selector(request.topic);
        let query = DeadLetterQuery {
            topic,
            appcode,
            msgtype,
            after: Some(request.after),
            limit: nonzero(request.limit),
        };
        let messages = ops::dead_letters(&self.shared, &scope, query).await?;
        Ok(Response::new(dead_letters_reply(messages)))
    }

    async fn replay(
        &self,
        request: Request<pb::ReplayRequest>,
    ) -> Result<Response<pb::ReplayReply>, Status> {
        let scope = self.scope(&request)?;
        let request = request.into_inner();
        let (topic, appcode, msgtype) = selector(request.topic);
        let body = ReplayBody {
            topic,
            appcode,
            msgtype,
            ids: request.ids,
        };
        let replayed = ops::replay(&self.shared, &scope, body).await?;
        Ok(Response::new(pb::ReplayReply {
            replayed: replayed.replayed,
        }))
    }

    async fn topics(
        &self,
        request: Request<pb::TopicsRequest>,
    ) -> Result<Response<pb::TopicsReply>, Status> {
        let scope = self.scope(&request)?;
        let body: model::TopicsBody = ops::topics(&self.shared, &scope).await?;
        Ok(Response::new(pb::TopicsReply {
            topics: body
                .topics
                .into_iter()
                .map(|t| pb::TopicStats {
                    topic: t.topic,
                    ready: t.ready,
                    in_flight: t.in_flight,
                    dead: t.dead,
                })
                .collect(),
        }))
    }

    async fn trace(
        &self,
        request: Request<pb::TraceRequest>,
    ) -> Result<Response<pb::TraceReply>, Status> {
        let scope = self.scope(&request)?;
        let request = request.into_inner();
        use longlink_rpc::trace::TraceBy;
        let by = match pb::TraceBy::try_from(request.by) {
            Ok(pb::TraceBy::Either) => TraceBy::Either,
            Ok(pb::TraceBy::LogId) => TraceBy::LogId,
            Ok(pb::TraceBy::Msgid) => TraceBy::Msgid,
            Err(value) => {
                return Err(ApiError::invalid_argument(format!("unknown TraceBy {value}")).into());
            }
        };
        let trace = ops::trace(&self.shared, &scope, request.id, by)?;
        Ok(Response::new(pb::TraceReply {
            log_id: trace.log_id,
            msgids: trace.msgids,
            kind: trace.subject.kind.name().to_owned(),
            from: trace.subject.from.unwrap_or_default(),
            to: trace.subject.to.unwrap_or_default(),
            appcodes: trace.subject.appcodes,
            events: trace
                .events
                .into_iter()
                .map(|e| pb::TraceEvent {
                    stage: e.stage.name().to_owned(),
                    at_us: e.at_us,
                    node: e.node.to_string(),
                    msgid: e.msgid,
                    who: e.who.map(|w| w.to_string()).unwrap_or_default(),
                    detail: e.detail.unwrap_or_default(),
                })
                .collect(),
            dropped_events: trace.dropped_events,
        }))
    }

    async fn put_device(
        &self,
        request: Request<pb::PutDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        let key = DeviceKey {
            appcode: r.appcode,
            uid: r.uid,
            device: r.device,
        };
        let class = DeviceClass {
            platform: r.platform,
            vendor: r.vendor,
            app_version: r.app_version,
        };
        let tokens = r.tokens.into_iter().map(push_token).collect();
        let record = ops::put_device(&self.shared, &scope, key, class, tokens).await?;
        Ok(Response::new(device(record)))
    }

    async fn register_push_token(
        &self,
        request: Request<pb::RegisterPushTokenRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        let token = r
            .token
            .map(push_token)
            .ok_or_else(|| ApiError::invalid_argument("token is required"))?;
        let key = DeviceKey {
            appcode: r.appcode,
            uid: r.uid,
            device: r.device,
        };
        let class = DeviceClass {
            platform: r.platform,
            vendor: r.vendor,
            app_version: r.app_version,
        };
        let record = ops::register_token(&self.shared, &scope, key, class, token).await?;
        Ok(Response::new(device(record)))
    }

    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        let records =
            ops::devices(&self.shared, &scope, r.appcode, &r.uid, r.device.as_deref()).await?;
        Ok(Response::new(pb::ListDevicesReply {
            devices: records.into_iter().map(device).collect(),
        }))
    }

    async fn remove_device(
        &self,
        request: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceReply>, Status> {
        let scope = self.scope(&request)?;
        let r = request.into_inner();
        let key = DeviceKey {
            appcode: r.appcode,
            uid: r.uid,
            device: r.device,
        };
        let removed = ops::remove_device(&self.shared, &scope, key, r.provider.as_deref()).await?;
        Ok(Response::new(pb::RemoveDeviceReply { removed }))
    }

    async fn push_provider_stats(
        &self,
        request: Request<pb::PushProviderStatsRequest>,
    ) -> Result<Response<pb::PushProviderStatsReply>, Status> {
        let scope = self.scope(&request)?;
        let providers = ops::provider_stats(&self.shared, &scope).await;
        Ok(Response::new(pb::PushProviderStatsReply {
            providers: providers.into_iter().map(provider_stats).collect(),
        }))
    }
}
