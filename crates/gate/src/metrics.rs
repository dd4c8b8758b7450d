//! The gate's Prometheus metrics (`longlink_gate_*`), resolved once per gate so the read and
//! write paths only increment atomics. Labels are bounded: cmd (the protocol's commands plus
//! `other`), appcode (only of accepted logins, so only configured appcodes), close reason,
//! error code. Never a uid.

use std::time::Duration;

use longlink_metrics::{Counter, Family, Gauge, Histogram, Label, Latency, Registry, label};
use longlink_proto::{Cmd, ErrorCode};

/// Counters per command, indexed without a lookup.
#[derive(Debug, Clone)]
pub struct PerCmd {
    counters: Vec<Counter>,
}

/// Label value of each slot of [`PerCmd`]: the commands in [`Cmd::ALL`] order, then `other`.
fn cmd_names() -> impl Iterator<Item = &'static str> {
    Cmd::ALL
        .iter()
        .map(|cmd| cmd_label(*cmd as u16))
        .chain(std::iter::once("other"))
}

/// The lowercase label of a cmd id (`other` for ids the protocol does not define).
pub fn cmd_label(cmd: u16) -> &'static str {
    match Cmd::try_from(cmd) {
        Ok(Cmd::Login) => "login",
        Ok(Cmd::Logout) => "logout",
        Ok(Cmd::Keepalive) => "keepalive",
        Ok(Cmd::Resume) => "resume",
        Ok(Cmd::Kick) => "kick",
        Ok(Cmd::C2s) => "c2s",
        Ok(Cmd::C2c) => "c2c",
        Ok(Cmd::Msg) => "msg",
        Ok(Cmd::MsgAck) => "msg_ack",
        Ok(Cmd::OfflinePull) => "offline_pull",
        Ok(Cmd::HistoryPull) => "history_pull",
        Ok(Cmd::Receipt) => "receipt",
        Ok(Cmd::Conversations) => "conversations",
        Ok(Cmd::MarkRead) => "mark_read",
        Ok(Cmd::PushToken) => "push_token",
        Ok(Cmd::NotificationAck) => "notification_ack",
        Ok(Cmd::Error) => "error",
        Err(_) => "other",
    }
}

fn cmd_slot(cmd: u16) -> usize {
    Cmd::ALL
        .iter()
        .position(|c| *c as u16 == cmd)
        .unwrap_or(Cmd::ALL.len())
}

impl PerCmd {
    fn new(family: &Family<Label, Counter>) -> Self {
        Self {
            counters: cmd_names()
                .map(|name| family.get_or_create(&label("cmd", name)).clone())
                .collect(),
        }
    }

    /// Adds `n` for `cmd`.
    pub fn add(&self, cmd: u16, n: u64) {
        if let Some(counter) = self.counters.get(cmd_slot(cmd)) {
            counter.inc_by(n);
        }
    }

    /// The count of `cmd`.
    pub fn get(&self, cmd: Cmd) -> u64 {
        self.counters
            .get(cmd_slot(cmd as u16))
            .map_or(0, Counter::get)
    }

    /// The sum over every cmd.
    pub fn total(&self) -> u64 {
        self.counters.iter().map(Counter::get).sum()
    }
}

/// Every metric of one gate.
#[derive(Debug, Clone)]
pub struct GateMetrics {
    /// Open client connections.
    pub connections: Gauge,
    sessions: Family<Label, Gauge>,
    /// Accepted logins.
    pub logins: Counter,
    login_failures: Family<Label, Counter>,
    login_failures_total: Counter,
    /// Frames read, per cmd.
    pub frames_in: PerCmd,
    /// Bytes read (header + body), per cmd.
    pub bytes_in: PerCmd,
    /// Frames written, per cmd.
    pub frames_out: PerCmd,
    /// Bytes written, per cmd.
    pub bytes_out: PerCmd,
    closes: Family<Label, Counter>,
    errors: Family<Label, Counter>,
    errors_total: Counter,
    messages: Family<Label, Counter>,
    /// Frames waiting in the write queues of all connections.
    pub queued_frames: Gauge,
    request_histograms: Vec<Histogram>,
    /// C2C request read → its ACK queued (with recent percentiles for the dashboard).
    pub c2c_ack: Latency,
    /// Sessions held without a link, waiting for a RESUME.
    pub held: Gauge,
    /// Accepted RESUMEs.
    pub resumes: Counter,
    /// RESUMEs answered RESUME_REJECTED (the client logs in instead).
    pub resumes_rejected: Counter,
    /// Holds that ended without a RESUME (the session is then over).
    pub holds_expired: Counter,
    /// LOGINs refused by admission control (RATE_LIMITED with a retry-after).
    pub logins_throttled: Counter,
    /// 1 while the gate drains.
    pub draining: Gauge,
    /// TLS / WebSocket handshakes that failed or timed out, per transport.
    handshake_failures: Family<Label, Counter>,
    /// Frames refused by the per-connection rate of their class (RATE_LIMITED), in
    /// [`crate::Class::ALL`] order.
    frames_throttled: Vec<Counter>,
    /// Times a reader paused because its connection read beyond its bytes/s.
    pub read_pauses: Counter,
}

impl GateMetrics {
    /// Creates the metrics of gate `gate_id` and registers them in `registry`, each with a
    /// `gate` label.
    pub fn new(registry: &mut Registry, gate_id: &str) -> Self {
        let registry = registry.sub_registry_with_label(("gate".into(), gate_id.to_owned().into()));
        let connections = Gauge::default();
        let sessions = Family::<Label, Gauge>::default();
        let logins = Counter::default();
        let login_failures = Family::<Label, Counter>::default();
        let frames_in = Family::<Label, Counter>::default();
        let bytes_in = Family::<Label, Counter>::default();
        let frames_out = Family::<Label, Counter>::default();
        let bytes_out = Family::<Label, Counter>::default();
        let closes = Family::<Label, Counter>::default();
        let errors = Family::<Label, Counter>::default();
        let messages = Family::<Label, Counter>::default();
        let queued_frames = Gauge::default();
        let request_duration = Family::<Label, Histogram>::new_with_constructor(
            longlink_metrics::latency_histogram as fn() -> Histogram,
        );
        let c2c_ack = Latency::new();
        let held = Gauge::default();
        let resumes = Counter::default();
        let resumes_rejected = Counter::default();
        let holds_expired = Counter::default();
        let logins_throttled = Counter::default();
        let draining = Gauge::default();
        let handshake_failures = Family::<Label, Counter>::default();
        let frames_throttled = Family::<Label, Counter>::default();
        let read_pauses = Counter::default();
        registry.register(
            "longlink_gate_frames_throttled",
            "Frames refused with RATE_LIMITED by their connection's per-class frame rate, per class (send, pull, ack, other)",
            frames_throttled.clone(),
        );
        registry.register(
            "longlink_gate_read_pauses",
            "Times a connection's reader stopped reading because it exceeded its bytes/s (TCP backpressure, no error)",
            read_pauses.clone(),
        );
        registry.register(
            "longlink_gate_handshake_failures",
            "TLS and WebSocket handshakes that failed or ran past the login timeout, per transport",
            handshake_failures.clone(),
        );
        registry.register(
            "longlink_gate_held_sessions",
            "Sessions held without a link, waiting for a RESUME",
            held.clone(),
        );
        registry.register("longlink_gate_resumes", "Accepted RESUMEs", resumes.clone());
        registry.register(
            "longlink_gate_resumes_rejected",
            "RESUMEs rejected (token invalid or session ended); the client logs in",
            resumes_rejected.clone(),
        );
        registry.register(
            "longlink_gate_holds_expired",
            "Held sessions whose hold ended without a RESUME",
            holds_expired.clone(),
        );
        registry.register(
            "longlink_gate_logins_throttled",
            "LOGINs refused by admission control with a retry-after",
            logins_throttled.clone(),
        );
        registry.register(
            "longlink_gate_draining",
            "1 while the gate drains (not dispatched, not accepting)",
            draining.clone(),
        );

        registry.register(
            "longlink_gate_connections",
            "Open client connections",
            connections.clone(),
        );
        registry.register(
            "longlink_gate_sessions",
            "Logged-in sessions, per appcode",
            sessions.clone(),
        );
        registry.register("longlink_gate_logins", "Accepted logins", logins.clone());
        registry.register(
            "longlink_gate_login_failures",
            "Refused logins, by error code",
            login_failures.clone(),
        );
        registry.register(
            "longlink_gate_frames_received",
            "Frames read from clients, per cmd",
            frames_in.clone(),
        );
        registry.register(
            "longlink_gate_frames_sent",
            "Frames written to clients, per cmd",
            frames_out.clone(),
        );
        registry.register_with_unit(
            "longlink_gate_received",
            "Bytes read from clients (header + body), per cmd",
            longlink_metrics::prometheus_client::registry::Unit::Bytes,
            bytes_in.clone(),
        );
        registry.register_with_unit(
            "longlink_gate_sent",
            "Bytes written to clients (header + body), per cmd",
            longlink_metrics::prometheus_client::registry::Unit::Bytes,
            bytes_out.clone(),
        );
        registry.register(
            "longlink_gate_closes",
            "Closed connections, by reason",
            closes.clone(),
        );
        registry.register(
            "longlink_gate_errors",
            "ERROR frames sent to clients, by code",
            errors.clone(),
        );
        registry.register(
            "longlink_gate_messages",
            "c2c and c2s messages read from clients, per sender appcode",
            messages.clone(),
        );
        registry.register(
            "longlink_gate_write_queue_frames",
            "Frames waiting in the connections' write queues",
            queued_frames.clone(),
        );
        registry.register_with_unit(
            "longlink_gate_request_duration",
            "A request read → its answer queued, per cmd (c2c: the sender's ACK latency)",
            longlink_metrics::prometheus_client::registry::Unit::Seconds,
            request_duration.clone(),
        );
        c2c_ack.register(
            registry,
            "longlink_c2c_ack",
            "c2c: the gate read the sender's frame → its ACK queued (stored durably first)",
        );

        let request_histograms = cmd_names()
            .map(|name| request_duration.get_or_create(&label("cmd", name)).clone())
            .collect();
        Self {
            connections,
            sessions,
            logins,
            login_failures,
            login_failures_total: Counter::default(),
            frames_in: PerCmd::new(&frames_in),
            bytes_in: PerCmd::new(&bytes_in),
            frames_out: PerCmd::new(&frames_out),
            bytes_out: PerCmd::new(&bytes_out),
            closes,
            errors,
            errors_total: Counter::default(),
            messages,
            queued_frames,
            request_histograms,
            c2c_ack,
            held,
            resumes,
            resumes_rejected,
            holds_expired,
            logins_throttled,
            draining,
            handshake_failures,
            frames_throttled: crate::Class::ALL
                .iter()
                .map(|class| {
                    frames_throttled
                        .get_or_create(&label("class", class.label()))
                        .clone()
                })
                .collect(),
            read_pauses,
        }
    }

    pub(crate) fn frame_throttled(&self, class: crate::Class) {
        if let Some(counter) = self.frames_throttled.get(class as usize) {
            counter.inc();
        }
    }

    /// Frames of `class` refused by the per-connection frame rate.
    pub fn frames_throttled(&self, class: crate::Class) -> u64 {
        self.frames_throttled
            .get(class as usize)
            .map_or(0, Counter::get)
    }

    /// The sessions gauge of `appcode` (resolved once per login).
    pub(crate) fn sessions_of(&self, appcode: u32) -> Gauge {
        self.sessions
            .get_or_create(&label("appcode", appcode.to_string()))
            .clone()
    }

    /// Logged-in sessions of `appcode` on this gate.
    pub fn sessions(&self, appcode: u32) -> i64 {
        self.sessions
            .get(&label("appcode", appcode.to_string()))
            .map_or(0, |g| g.get())
    }

    /// The message counter of sender `appcode` (resolved once per login).
    pub(crate) fn messages_of(&self, appcode: u32) -> Counter {
        self.messages
            .get_or_create(&label("appcode", appcode.to_string()))
            .clone()
    }

    /// c2c and c2s messages read from users of `appcode`.
    pub fn messages(&self, appcode: u32) -> u64 {
        self.messages
            .get(&label("appcode", appcode.to_string()))
            .map_or(0, |c| c.get())
    }

    pub(crate) fn login_failed(&self, code: ErrorCode) {
        self.login_failures
            .get_or_create(&label("reason", code.as_str_name().to_ascii_lowercase()))
            .inc();
        self.login_failures_total.inc();
    }

    /// Refused logins, every reason.
    pub fn login_failures_total(&self) -> u64 {
        self.login_failures_total.get()
    }

    pub(crate) fn error_sent(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&label("code", code.as_str_name().to_ascii_lowercase()))
            .inc();
        self.errors_total.inc();
    }

    /// ERROR frames sent, every code.
    pub fn errors_total(&self) -> u64 {
        self.errors_total.get()
    }

    pub(crate) fn handshake_failed(&self, transport: &'static str) {
        self.handshake_failures
            .get_or_create(&label("transport", transport))
            .inc();
    }

    /// Failed TLS / WebSocket handshakes on `transport` (`tls`, `ws`, `wss`).
    pub fn handshake_failures(&self, transport: &str) -> u64 {
        self.handshake_failures
            .get(&label("transport", transport.to_owned()))
            .map_or(0, |c| c.get())
    }

    pub(crate) fn closed(&self, reason: &str) {
        self.closes.get_or_create(&label("reason", reason)).inc();
    }

    /// Connections closed for `reason` (a [`crate::CloseReason::label`]).
    pub fn closes(&self, reason: &str) -> u64 {
        self.closes
            .get(&label("reason", reason.to_owned()))
            .map_or(0, |c| c.get())
    }

    pub(crate) fn request_done(&self, cmd: u16, elapsed: Duration) {
        if let Some(histogram) = self.request_histograms.get(cmd_slot(cmd)) {
            histogram.observe(elapsed.as_secs_f64());
        }
        if cmd == Cmd::C2c as u16 {
            self.c2c_ack.observe(elapsed);
        }
    }
}
