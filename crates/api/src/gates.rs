//! The node's gates as the API sees them: [`GateDirectory`] (implemented by the composition
//! root, `longlink-server`, over its `longlink_gate::Gate`s — the API never links the gate
//! crate), and [`dispatch_order`], the rule `GET /v1/dispatch` answers with.
//!
//! Dispatch (seed 004, docs/protocol.md §6.6): a client should reconnect where its session
//! lives — that gate holds it for a RESUME, and pushes reach it there — and otherwise to the
//! least loaded gate that is serving and not draining. A draining gate is never handed out,
//! not even to a user it still holds: it is about to kick that user anyway, and a RESUME on
//! another gate of the node takes the held session over.

use std::collections::HashSet;

/// One gate of the node, at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateStatus {
    /// The gate id (the one presence records for its sessions).
    pub id: String,
    /// The address clients use for it (`public_addr`, else the bound address).
    pub addr: String,
    /// Open client connections.
    pub connections: u64,
    /// Sessions held without a link, waiting for a RESUME.
    pub held: u64,
    /// Its accept loop runs.
    pub serving: bool,
    /// A drain started: it takes no new sessions and must not be dispatched.
    pub draining: bool,
}

impl GateStatus {
    /// Whether clients may be sent here: serving and not draining.
    pub fn dispatchable(&self) -> bool {
        self.serving && !self.draining
    }
}

/// What [`GateDirectory::start_drain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainStart {
    /// This call started the drain; it runs in the background.
    Started,
    /// A drain of that gate had already started (or finished): nothing more was done.
    AlreadyDraining,
    /// The node has no gate of that id.
    UnknownGate,
}

/// The node's gates: their status, and a way to drain one.
///
/// `start_drain` answers at once: a drain takes up to the gate's drain timeout, which an HTTP
/// call must not wait for, and the implementation owns the drain task so that a second call,
/// or the node's own shutdown, finds it instead of starting another.
pub trait GateDirectory: Send + Sync + 'static {
    /// Every gate of the node, in a stable order (the node's own: first gate first).
    fn gates(&self) -> Vec<GateStatus>;

    /// Starts draining gate `gate_id` in the background (its clients are moved to the other
    /// gates in waves, then it stops).
    fn start_drain(&self, gate_id: &str) -> DrainStart;
}

/// A node without gates (an API-only process): nothing to list, nothing to dispatch.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoGates;

impl GateDirectory for NoGates {
    fn gates(&self) -> Vec<GateStatus> {
        Vec::new()
    }

    fn start_drain(&self, _gate_id: &str) -> DrainStart {
        DrainStart::UnknownGate
    }
}

/// A gate in a dispatch answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchGate {
    /// The gate.
    pub status: GateStatus,
    /// It holds (or serves) a session of the user asked about.
    pub holding: bool,
}

/// The gates a client should try, in order: the dispatchable gates among `holding` (gate ids
/// of the user's sessions, most relevant first) in that order, then the other dispatchable
/// gates by fewest connections (ties by id, so the answer is stable). Draining or stopped
/// gates are left out; an empty answer means nothing is serving.
pub fn dispatch_order(gates: Vec<GateStatus>, holding: &[String]) -> Vec<DispatchGate> {
    let mut candidates: Vec<GateStatus> = gates.into_iter().filter(|g| g.dispatchable()).collect();
    let mut out = Vec::with_capacity(candidates.len());
    let mut seen = HashSet::new();
    for id in holding {
        if !seen.insert(id.as_str()) {
            continue;
        }
        if let Some(at) = candidates.iter().position(|g| &g.id == id) {
            out.push(DispatchGate {
                status: candidates.remove(at),
                holding: true,
            });
        }
    }
    candidates.sort_by(|a, b| a.connections.cmp(&b.connections).then(a.id.cmp(&b.id)));
    out.extend(candidates.into_iter().map(|status| DispatchGate {
        status,
        holding: false,
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(id: &str, connections: u64, serving: bool, draining: bool) -> GateStatus {
        GateStatus {
            id: id.to_owned(),
            addr: format!("{id}:7700"),
            connections,
            held: 0,
            serving,
            draining,
        }
    }

    fn ids(order: &[DispatchGate]) -> Vec<(&str, bool)> {
        order
            .iter()
            .map(|g| (g.status.id.as_str(), g.holding))
            .collect()
    }

    #[test]
    fn the_holding_gate_comes_first_then_the_least_loaded() {
        let gates = vec![
            gate("a", 5, true, false),
            gate("b", 9, true, false),
            gate("c", 1, true, false),
            gate("d", 1, true, false),
        ];
        assert_eq!(
            ids(&dispatch_order(gates.clone(), &["b".to_owned()])),
            [("b", true), ("c", false), ("d", false), ("a", false)]
        );
        assert_eq!(
            ids(&dispatch_order(gates, &[])),
            [("c", false), ("d", false), ("a", false), ("b", false)]
        );
    }

    #[test]
    fn draining_stopped_and_unknown_gates_are_never_handed_out() {
        let gates = vec![
            gate("a", 5, true, true),
            gate("b", 9, false, false),
            gate("c", 1, true, false),
        ];
        let holding = [
            "a".to_owned(),
            "zz".to_owned(),
            "c".to_owned(),
            "c".to_owned(),
        ];
        assert_eq!(ids(&dispatch_order(gates, &holding)), [("c", true)]);
        assert!(dispatch_order(vec![gate("a", 0, true, true)], &[]).is_empty());
        assert!(dispatch_order(Vec::new(), &[]).is_empty());
    }
}
