//! The delivery ledger of a single node: [`MemoryLedger`] implements
//! [`longlink_rpc::trace::Ledger`] in memory.
//!
//! Traces are keyed by log_id, opened by an originating stage (accepted, stored) and kept for
//! a window (`trace.window_secs`) and up to a count (`trace.max_traces`); each keeps at most
//! `trace.max_events` events (a broadcast's per-recipient writes beyond that are counted, not
//! kept). A msgid → log_id index lets a MSG_ACK or a pulled page, which carry only msgids,
//! find their trace. Both maps are sharded by key so the gate's read and write paths of many
//! connections rarely meet on one lock.
//!
//! The ledger also measures what only it sees whole: the c2c delivery latency, from the
//! gate reading the sender's frame to the first MSG written to a receiver's socket
//! (`longlink_c2c_delivery_seconds`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use longlink_metrics::{Latency, Registry};
use longlink_rpc::trace::{
    Ledger, MessageKind, RecordedEvent, Stage, Subject, Trace, TraceBy, TraceEvent, now_us,
};

/// Shards of each map (a power of two).
const SHARDS: usize = 16;

/// Most msgids one trace lists (a push stores one message; c2c one).
const MAX_MSGIDS: usize = 16;

/// Bounds of the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerConfig {
    /// How long a trace is kept after it opens.
    pub window: Duration,
    /// Most traces kept (the oldest go first).
    pub max_traces: usize,
    /// Most events kept per trace.
    pub max_events: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            max_traces: 100_000,
            max_events: 64,
        }
    }
}

/// The in-memory ledger.
#[derive(Debug)]
pub struct MemoryLedger {
    node: Arc<str>,
    window_us: u64,
    per_shard: usize,
    max_events: usize,
    traces: Vec<Mutex<TraceShard>>,
    index: Vec<Mutex<IndexShard>>,
    c2c_delivery: Latency,
}

#[derive(Debug, Default)]
struct TraceShard {
    traces: HashMap<u64, Entry>,
    /// (log_id, opened_us) in opening order, for eviction.
    order: VecDeque<(u64, u64)>,
}

#[derive(Debug, Default)]
struct IndexShard {
    log_ids: HashMap<u64, u64>,
    order: VecDeque<(u64, u64)>,
}

#[derive(Debug)]
struct Entry {
    opened_us: u64,
    subject: Subject,
    msgids: Vec<u64>,
    events: Vec<RecordedEvent>,
    dropped: u32,
    accepted_us: Option<u64>,
    /// The first write to a receiver was measured, or the receiver was offline (then the
    /// first write happens at its next login, which says nothing about the platform's speed).
    delivered: bool,
}

impl MemoryLedger {
    /// A ledger for node `node` within `config`'s bounds.
    pub fn new(node: &str, config: &LedgerConfig) -> Self {
        Self {
            node: Arc::from(node),
            window_us: u64::try_from(config.window.as_micros()).unwrap_or(u64::MAX),
            per_shard: config.max_traces.div_ceil(SHARDS).max(1),
            max_events: config.max_events.max(1),
            traces: (0..SHARDS).map(|_| Mutex::default()).collect(),
            index: (0..SHARDS).map(|_| Mutex::default()).collect(),
            c2c_delivery: Latency::new(),
        }
    }

    /// Registers the ledger's metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        self.c2c_delivery.register(
            registry,
            "longlink_c2c_delivery",
            "c2c end to end: the gate read the sender's frame → the first MSG written to a receiver's socket",
        );
    }

    /// The c2c delivery latency (for the dashboard's percentiles).
    pub fn c2c_delivery(&self) -> &Latency {
        &self.c2c_delivery
    }

    fn shard(id: u64) -> usize {
        // log_ids from one gate are sequential: the low bits spread them.
        (id as usize) & (SHARDS - 1)
    }

    fn log_id_of(&self, msgid: u64) -> Option<u64> {
        let index = self.index[Self::shard(msgid)].lock().ok()?;
        index.log_ids.get(&msgid).copied()
    }

    fn index_msgid(&self, msgid: u64, log_id: u64, now: u64) {
        let Ok(mut index) = self.index[Self::shard(msgid)].lock() else {
            return;
        };
        while let Some(&(old, at)) = index.order.front() {
            if index.order.len() < self.per_shard && at.saturating_add(self.window_us) > now {
                break;
            }
            index.order.pop_front();
            index.log_ids.remove(&old);
        }
        if index.log_ids.insert(msgid, log_id).is_none() {
            index.order.push_back((msgid, now));
        }
    }

    fn expired(&self, opened_us: u64, now: u64) -> bool {
        opened_us.saturating_add(self.window_us) <= now
    }
}

impl Ledger for MemoryLedger {
    fn claim(&self, log_id: u64, from: &str) -> bool {
        if log_id == 0 {
            return true;
        }
        let Ok(shard) = self.traces[Self::shard(log_id)].lock() else {
            return true;
        };
        match shard.traces.get(&log_id) {
            Some(entry) if !self.expired(entry.opened_us, now_us()) => entry
                .subject
                .from
                .as_deref()
                .is_none_or(|opener| opener == from),
            _ => true,
        }
    }

    fn record(&self, event: TraceEvent) {
        let log_id = match (event.log_id, event.msgid) {
            (0, 0) => return,
            (0, msgid) => match self.log_id_of(msgid) {
                Some(log_id) => log_id,
                None => return,
            },
            (log_id, _) => log_id,
        };
        let now = now_us();
        let mut new_msgid = None;
        let mut delivered_after = None;
        {
            let Ok(mut shard) = self.traces[Self::shard(log_id)].lock() else {
                return;
            };
            let open = shard
                .traces
                .get(&log_id)
                .is_some_and(|e| !self.expired(e.opened_us, now));
            if !open {
                if !event.stage.opens_trace() {
                    return;
                }
                // Make room: the oldest traces go, and any past the window.
                while let Some(&(old, opened)) = shard.order.front() {
                    if shard.order.len() < self.per_shard && !self.expired(opened, now) {
                        break;
                    }
                    shard.order.pop_front();
                    if shard
                        .traces
                        .get(&old)
                        .is_some_and(|e| e.opened_us == opened)
                    {
                        shard.traces.remove(&old);
                    }
                }
                shard.traces.insert(
                    log_id,
                    Entry {
                        opened_us: now,
                        subject: Subject::default(),
                        msgids: Vec::new(),
                        events: Vec::new(),
                        dropped: 0,
                        accepted_us: None,
                        delivered: false,
                    },
                );
                shard.order.push_back((log_id, now));
            }
            let Some(entry) = shard.traces.get_mut(&log_id) else {
                return;
            };
            if let Some(subject) = event.subject {
                merge_subject(&mut entry.subject, subject);
            }
            if event.msgid != 0
                && !entry.msgids.contains(&event.msgid)
                && entry.msgids.len() < MAX_MSGIDS
            {
                entry.msgids.push(event.msgid);
                new_msgid = Some(event.msgid);
            }
            match event.stage {
                Stage::Accepted => {
                    entry.accepted_us.get_or_insert(event.at_us);
                }
                Stage::Offline => entry.delivered = true,
                Stage::Written if !entry.delivered && entry.subject.kind == MessageKind::C2c => {
                    if let Some(accepted) = entry.accepted_us {
                        entry.delivered = true;
                        delivered_after = Some(event.at_us.saturating_sub(accepted));
                    }
                }
                _ => {}
            }
            if entry.events.len() < self.max_events {
                entry.events.push(RecordedEvent {
                    stage: event.stage,
                    at_us: event.at_us,
                    node: self.node.clone(),
                    msgid: event.msgid,
                    who: event.who,
                    detail: event.detail,
                });
            } else {
                entry.dropped = entry.dropped.saturating_add(1);
            }
        }
        if let Some(msgid) = new_msgid {
            self.index_msgid(msgid, log_id, now);
        }
        if let Some(micros) = delivered_after {
            self.c2c_delivery.observe(Duration::from_micros(micros));
        }
    }

    fn record_msgids(&self, msgids: &[u64], stage: Stage, who: Option<Arc<str>>) {
        for &msgid in msgids {
            let Some(log_id) = self.log_id_of(msgid) else {
                continue;
            };
            let mut event = TraceEvent::now(log_id, stage).msgid(msgid);
            event.who = who.clone();
            self.record(event);
        }
    }

    fn trace(&self, id: u64, by: TraceBy) -> Option<Trace> {
        let now = now_us();
        let read = |log_id: u64| -> Option<Trace> {
            let shard = self.traces[Self::shard(log_id)].lock().ok()?;
            let entry = shard.traces.get(&log_id)?;
            if self.expired(entry.opened_us, now) {
                return None;
            }
            let mut events = entry.events.clone();
            // Stable: events of one instant keep the order they were recorded in.
            events.sort_by_key(|e| e.at_us);
            Some(Trace {
                log_id,
                msgids: entry.msgids.clone(),
                subject: entry.subject.clone(),
                events,
                dropped_events: entry.dropped,
            })
        };
        match by {
            TraceBy::LogId => read(id),
            TraceBy::Msgid => read(self.log_id_of(id)?),
            TraceBy::Either => read(id).or_else(|| read(self.log_id_of(id)?)),
        }
    }
}

/// Fills what `into` does not know yet from `from` (the gate knows the sender, logic the
/// receiver).
fn merge_subject(into: &mut Subject, from: Subject) {
    if into.kind == MessageKind::Unknown {
        into.kind = from.kind;
    }
    if into.from.is_none() {
        into.from = from.from;
    }
    if into.to.is_none() {
        into.to = from.to;
    }
    for appcode in from.appcodes {
        if !into.appcodes.contains(&appcode) {
            into.appcodes.push(appcode);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(max_traces: usize) -> MemoryLedger {
        MemoryLedger::new(
            "gate-1",
            &LedgerConfig {
                window: Duration::from_secs(60),
                max_traces,
                max_events: 4,
            },
        )
    }

    fn c2c_from_alice() -> Subject {
        Subject {
            kind: MessageKind::C2c,
            from: Some("129:alice".into()),
            to: None,
            appcodes: vec![129],
        }
    }

    #[test]
    fn a_c2c_trace_collects_stages_found_by_log_id_or_msgid() {
        let ledger = ledger(1000);
        ledger.record(TraceEvent::now(7, Stage::Accepted).subject(c2c_from_alice()));
        ledger.record(
            TraceEvent::now(7, Stage::Stored)
                .msgid(42)
                .subject(Subject {
                    kind: MessageKind::C2c,
                    from: None,
                    to: Some("130:bob".into()),
                    appcodes: vec![129, 130],
                }),
        );
        ledger.record(TraceEvent::now(7, Stage::Written).who(Arc::from("130:bob/phone")));
        ledger.record_msgids(&[42, 99], Stage::ReceiverAcked, None);

        let by_log = ledger.trace(7, TraceBy::LogId).expect("trace by log_id");
        let by_msgid = ledger.trace(42, TraceBy::Msgid).expect("trace by msgid");
        assert_eq!(by_log, by_msgid);
        let stages: Vec<Stage> = by_log.events.iter().map(|e| e.stage).collect();
        assert_eq!(
            stages,
            [
                Stage::Accepted,
                Stage::Stored,
                Stage::Written,
                Stage::ReceiverAcked
            ]
        );
        assert_eq!(by_log.msgids, [42]);
        assert_eq!(by_log.subject.from.as_deref(), Some("129:alice"));
        assert_eq!(by_log.subject.to.as_deref(), Some("130:bob"));
        assert_eq!(by_log.subject.appcodes, [129, 130]);
        assert_eq!(ledger.c2c_delivery().percentiles(60).count, 1);
        assert!(ledger.trace(99, TraceBy::Either).is_none());
    }

    #[test]
    fn a_receiver_offline_at_send_time_is_not_a_delivery_latency() {
        let ledger = ledger(1000);
        ledger.record(TraceEvent::now(8, Stage::Accepted).subject(c2c_from_alice()));
        ledger.record(TraceEvent::now(8, Stage::Offline));
        ledger.record(TraceEvent::now(8, Stage::Written));
        assert_eq!(ledger.c2c_delivery().percentiles(60).count, 0);
    }

    #[test]
    fn only_an_originating_stage_opens_a_trace_and_events_are_capped() {
        let ledger = ledger(1000);
        ledger.record(TraceEvent::now(5, Stage::Written));
        assert!(ledger.trace(5, TraceBy::LogId).is_none());
        ledger.record(TraceEvent::now(5, Stage::Accepted));
        for _ in 0..10 {
            ledger.record(TraceEvent::now(5, Stage::Written));
        }
        let trace = ledger.trace(5, TraceBy::LogId).expect("trace");
        assert_eq!(trace.events.len(), 4);
        assert_eq!(trace.dropped_events, 7);
    }

    #[test]
    fn the_oldest_traces_go_when_the_ledger_is_full() {
        let ledger = ledger(SHARDS * 2);
        // Same shard: ids differ by a multiple of SHARDS.
        for i in 0..3 {
            ledger.record(TraceEvent::now(1 + i * SHARDS as u64, Stage::Accepted));
        }
        assert!(ledger.trace(1, TraceBy::LogId).is_none());
        assert!(ledger.trace(1 + SHARDS as u64, TraceBy::LogId).is_some());
        assert!(
            ledger
                .trace(1 + 2 * SHARDS as u64, TraceBy::LogId)
                .is_some()
        );
    }
}
