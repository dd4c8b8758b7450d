//! The role contracts of `longlink-rpc` across processes, over NATS request/reply: in a
//! cluster a gate reaches logic, and logic reaches the gate holding a session, through the
//! same NATS servers that carry the bus (DESIGN.md "cluster").
//!
//! - gate → logic: [`NatsLogic`] implements `LogicService` for a gate process; every call is a
//!   request on [`LOGIC_SUBJECT`], answered by whichever logic process [`serve_logic`] runs in
//!   the queue group [`LOGIC_QUEUE`] (NATS balances them; logic is stateless, so any one will
//!   do, and a killed one just stops taking requests).
//! - logic → gate: [`NatsGatePush`] implements `GatePush` for a logic (or API) process; each
//!   call is a request on the subject of the gate presence names ([`gate_subject`]), served
//!   by [`serve_gate`] in that gate's process. Write receipts of tracked pushes come back on a
//!   subject of the caller's own.
//!
//! Failure is an answer, never a hang: every request has a deadline; an unreachable logic
//! makes the gate answer the client OVERLOADED with a `retry_after_ms` (retrying a C2C with
//! its client_msg_id is safe), and an unreachable gate makes a push report `NoSession` (the
//! message is already in the store and arrives by pull or redelivery).
//!
//! Modules: `messages` (the internal protobuf messages), `logic` (both ends of gate → logic),
//! `gate` (both ends of logic → gate).

mod gate;
mod logic;
mod messages;

use std::time::Duration;

pub use gate::{NatsGatePush, serve_gate};
pub use logic::{NatsLogic, serve_logic};

/// The subject of every gate → logic call.
pub const LOGIC_SUBJECT: &str = "longlink.logic";
/// The queue group logic processes serve [`LOGIC_SUBJECT`] in.
pub const LOGIC_QUEUE: &str = "longlink-logic";
/// How long a caller waits for an answer by default. Above the store's slowest write wait a
/// caller gives up, answers an error, and the client retries with the same ids.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most calls one process serves at once; more wait in NATS's buffer (backpressure).
pub const MAX_IN_FLIGHT: usize = 4096;

/// The subject a gate serves: `longlink.gate.<id>`, with any character outside
/// `[A-Za-z0-9_-]` written as `~XX` (hex) so an id can never add tokens or wildcards.
pub fn gate_subject(gate_id: &str) -> String {
    let mut subject = String::from("longlink.gate.");
    for byte in gate_id.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            subject.push(char::from(byte));
        } else {
            subject.push_str(&format!("~{byte:02X}"));
        }
    }
    subject
}

#[cfg(test)]
mod tests {
    use super::gate_subject;

    #[test]
    fn gate_subjects_are_one_token_without_wildcards() {
        assert_eq!(gate_subject("gate-1"), "longlink.gate.gate-1");
        assert_eq!(gate_subject("a.b*>c d"), "longlink.gate.a~2Eb~2A~3Ec~20d");
        assert_ne!(
            gate_subject("a.b"),
            gate_subject("a~2Eb"),
            "escapes stay distinct"
        );
    }
}
