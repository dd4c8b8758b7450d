//! gate → logic: [`NatsLogic`] (the gate's side) and [`serve_logic`] (logic's side).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use longlink_proto::{ErrorCode, Frame, wire};
use longlink_rpc::{LogicService, LoginAccepted, Refusal, Reply, ResumeAccepted, SessionInfo};
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::messages::{
    FrameMsg, HandleCall, LogicAnswer, LogicCall, LoginCall, LoginOk, ReadyCall, ResumeCall,
    ResumeOk, SessionMsg, logic_answer::Answer, logic_call::Call,
};
use crate::{LOGIC_QUEUE, LOGIC_SUBJECT, MAX_IN_FLIGHT};

/// How long a client is told to wait when no logic process answered.
const RETRY_AFTER_MS: u32 = 1000;

/// `LogicService` for a gate process: each call is a NATS request to the logic queue group.
#[derive(Debug, Clone)]
pub struct NatsLogic {
    client: async_nats::Client,
    timeout: Duration,
}

impl NatsLogic {
    /// Calls logic over `client`, waiting at most `timeout` for each answer.
    pub fn new(client: async_nats::Client, timeout: Duration) -> Self {
        Self { client, timeout }
    }

    /// One request/answer round trip; `Err` carries why no answer came.
    async fn call(&self, call: Call) -> Result<Answer, String> {
        let payload = Bytes::from(LogicCall { call: Some(call) }.encode_to_vec());
        let request = self.client.request(LOGIC_SUBJECT, payload);
        let message = match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(message)) => message,
            Ok(Err(err)) => return Err(format!("logic unavailable: {err}")),
            Err(_) => return Err(format!("logic did not answer within {:?}", self.timeout)),
        };
        LogicAnswer::decode(message.payload)
            .map_err(|err| format!("undecodable answer from logic: {err}"))?
            .answer
            .ok_or_else(|| "empty answer from logic".to_owned())
    }
}

/// The refusal a client gets when logic could not be asked.
fn unavailable(why: String) -> Refusal {
    tracing::warn!(%why, "gate → logic call failed");
    Refusal::new(ErrorCode::Overloaded, why).retry_after(RETRY_AFTER_MS)
}

/// The refusal for an answer of the wrong kind (version skew or a bug).
fn unexpected(answer: &Answer) -> Refusal {
    let why = match answer {
        Answer::Failed(why) => why.clone(),
        other => format!("unexpected answer from logic: {other:?}"),
    };
    tracing::error!(%why, "gate → logic call");
    Refusal::new(ErrorCode::Internal, why)
}

#[async_trait]
impl LogicService for NatsLogic {
    async fn login(
        &self,
        gate_id: &str,
        session_id: u64,
        request: wire::LoginRequest,
        log_id: u64,
        peer: Option<std::net::IpAddr>,
    ) -> Result<LoginAccepted, Refusal> {
        let call = Call::Login(LoginCall {
            gate_id: gate_id.to_owned(),
            session_id,
            request: Some(request),
            log_id,
            peer: peer.map(|ip| ip.to_string()).unwrap_or_default(),
        });
        match self.call(call).await.map_err(unavailable)? {
            Answer::LoginOk(ok) => Ok(LoginAccepted {
                session: ok.session.unwrap_or_default().into(),
                response: ok.response.unwrap_or_default(),
            }),
            Answer::Refused(refusal) => Err(refusal.into()),
            other => Err(unexpected(&other)),
        }
    }

    async fn resume(
        &self,
        gate_id: &str,
        session_id: u64,
        request: wire::ResumeRequest,
        log_id: u64,
    ) -> Result<ResumeAccepted, Refusal> {
        let call = Call::Resume(ResumeCall {
            gate_id: gate_id.to_owned(),
            session_id,
            request: Some(request),
            log_id,
        });
        match self.call(call).await.map_err(unavailable)? {
            Answer::ResumeOk(ok) => Ok(ResumeAccepted {
                session: ok.session.unwrap_or_default().into(),
                response: ok.response.unwrap_or_default(),
            }),
            Answer::Refused(refusal) => Err(refusal.into()),
            other => Err(unexpected(&other)),
        }
    }

    async fn session_ready(&self, session: &SessionInfo, resumed: bool) {
        let call = Call::Ready(ReadyCall {
            session: Some(session.into()),
            resumed,
        });
        if let Err(why) = self.call(call).await {
            // The device's unacknowledged messages then wait for its pull or next login.
            tracing::warn!(%why, session_id = session.session_id, "session_ready not delivered");
        }
    }

    async fn handle(&self, session: &SessionInfo, frame: Frame) -> Reply {
        let (seq_id, log_id) = (frame.header.seq_id, frame.header.log_id);
        let call = Call::Handle(HandleCall {
            session: Some(session.into()),
            frame: Some(FrameMsg::from(&frame)),
        });
        let refused = |refusal: Refusal| Reply::Frame(refusal.frame(Some(seq_id), log_id));
        match self.call(call).await {
            Ok(Answer::Frame(f)) => Frame::try_from(f).map_or_else(
                |why| refused(unexpected(&Answer::Failed(why))),
                Reply::Frame,
            ),
            Ok(Answer::FrameThenClose(f)) => Frame::try_from(f).map_or_else(
                |why| refused(unexpected(&Answer::Failed(why))),
                Reply::FrameThenClose,
            ),
            Ok(Answer::Done(_)) => Reply::Nothing,
            Ok(Answer::Refused(refusal)) => refused(refusal.into()),
            Ok(other) => refused(unexpected(&other)),
            Err(why) => refused(unavailable(why)),
        }
    }

    async fn session_closed(&self, session: &SessionInfo) {
        if let Err(why) = self.call(Call::Closed(session.into())).await {
            // Presence keeps a stale entry until the gate-detector purges it or the user logs
            // in again; a push to it finds no session and takes the offline path.
            tracing::warn!(%why, session_id = session.session_id, "session_closed not delivered");
        }
    }
}

/// Serves `logic` to every gate of the cluster: answers requests on [`LOGIC_SUBJECT`] in the
/// queue group [`LOGIC_QUEUE`] until `shutdown`, at most [`MAX_IN_FLIGHT`] at once.
///
/// # Errors
/// The subscription could not be made.
pub async fn serve_logic(
    client: async_nats::Client,
    logic: Arc<dyn LogicService>,
    shutdown: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let mut requests = client
        .queue_subscribe(LOGIC_SUBJECT, LOGIC_QUEUE.to_owned())
        .await?;
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut draining = false;
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled(), if !draining => {
                // Stop being routed new calls, but answer every one already on its way to us:
                // dropping them would leave their callers waiting for the timeout.
                draining = true;
                if requests.drain().await.is_err() {
                    break;
                }
                continue;
            }
            message = requests.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let Some(reply_to) = message.reply.clone() else {
            continue;
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (client, logic) = (client.clone(), logic.clone());
        tokio::spawn(async move {
            let answer = answer(logic.as_ref(), message.payload).await;
            if let Err(err) = client
                .publish(
                    reply_to,
                    Bytes::from(
                        LogicAnswer {
                            answer: Some(answer),
                        }
                        .encode_to_vec(),
                    ),
                )
                .await
            {
                tracing::warn!(%err, "logic answer not sent");
            }
            drop(permit);
        });
    }
    // The ones in flight finish on their own tasks.
    Ok(())
}

/// Runs one call against `logic`.
async fn answer(logic: &dyn LogicService, payload: Bytes) -> Answer {
    let call = match LogicCall::decode(payload) {
        Ok(LogicCall { call: Some(call) }) => call,
        Ok(LogicCall { call: None }) => return Answer::Failed("empty call".to_owned()),
        Err(err) => return Answer::Failed(format!("undecodable call: {err}")),
    };
    let session_of = |s: Option<SessionMsg>| -> SessionInfo { s.unwrap_or_default().into() };
    match call {
        Call::Login(c) => {
            let peer = c.peer.parse().ok();
            match logic
                .login(
                    &c.gate_id,
                    c.session_id,
                    c.request.unwrap_or_default(),
                    c.log_id,
                    peer,
                )
                .await
            {
                Ok(ok) => Answer::LoginOk(LoginOk {
                    session: Some((&ok.session).into()),
                    response: Some(ok.response),
                }),
                Err(refusal) => Answer::Refused((&refusal).into()),
            }
        }
        Call::Resume(c) => {
            match logic
                .resume(
                    &c.gate_id,
                    c.session_id,
                    c.request.unwrap_or_default(),
                    c.log_id,
                )
                .await
            {
                Ok(ok) => Answer::ResumeOk(ResumeOk {
                    session: Some((&ok.session).into()),
                    response: Some(ok.response),
                }),
                Err(refusal) => Answer::Refused((&refusal).into()),
            }
        }
        Call::Ready(c) => {
            logic.session_ready(&session_of(c.session), c.resumed).await;
            Answer::Done(true)
        }
        Call::Handle(c) => {
            let frame = match c.frame.map(Frame::try_from) {
                Some(Ok(frame)) => frame,
                Some(Err(why)) => return Answer::Failed(why),
                None => return Answer::Failed("handle without a frame".to_owned()),
            };
            match logic.handle(&session_of(c.session), frame).await {
                Reply::Frame(f) => Answer::Frame(FrameMsg::from(&f)),
                Reply::FrameThenClose(f) => Answer::FrameThenClose(FrameMsg::from(&f)),
                Reply::Nothing => Answer::Done(true),
            }
        }
        Call::Closed(s) => {
            logic.session_closed(&s.into()).await;
            Answer::Done(true)
        }
    }
}
