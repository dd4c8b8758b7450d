//! Black/white lists and flapping detection at the gate: the [`AccessGuard`] the node gives
//! [`crate::Gate::set_guard`], asked at accept and after each LOGIN/RESUME logic accepted, and
//! the sweep that kicks established sessions the lists now refuse
//! ([`crate::Gate::enforce_guard`]).
//!
//! The checks after LOGIN/RESUME run once logic has verified the token: only then is the uid
//! known (the gate never reads tokens). A refused session is ended at once (removed from the
//! table, unregistered from presence) before any response, so it never receives a frame.

use std::net::IpAddr;
use std::sync::Arc;

use longlink_proto::KickReason;
use longlink_rpc::{AccessGuard, Refusal, SessionInfo};

use crate::close::Kick;
use crate::{CloseReason, GateShared};

impl GateShared {
    fn guard(&self) -> Option<&Arc<dyn AccessGuard>> {
        self.guard.get()
    }

    /// A new connection from `ip` (no guard: everyone).
    pub(crate) fn admit_connection(&self, ip: IpAddr) -> Result<(), Refusal> {
        match self.guard() {
            Some(guard) => guard.admit_connection(ip),
            None => Ok(()),
        }
    }

    /// A LOGIN/RESUME logic accepted (no guard: everyone).
    pub(crate) fn admit_login(&self, session: &SessionInfo, ip: IpAddr) -> Result<(), Refusal> {
        match self.guard() {
            Some(guard) => guard.admit_login(session, ip),
            None => Ok(()),
        }
    }

    /// Kicks (KICK BLOCKED, then close) every attached session the lists now refuse; the
    /// number kicked. Held sessions have no link to kick: a RESUME of theirs is refused, and
    /// their hold runs out.
    pub(crate) fn enforce_guard(&self) -> usize {
        let Some(guard) = self.guard() else {
            return 0;
        };
        let mut kicked = 0;
        for (session_id, link) in self.sessions.links() {
            let Some(visitor) = link.conn.visitor.get() else {
                continue;
            };
            if let Err(refusal) = guard.check_session(&visitor.session, visitor.ip) {
                // A timed ban's end is the earliest a reconnect can succeed.
                let kick = Kick::new(
                    KickReason::Blocked,
                    &refusal.message,
                    refusal.retry_after_ms,
                );
                let _ = link.queue.try_push(kick.frame());
                link.conn.close(CloseReason::Kicked);
                kicked += 1;
                tracing::info!(session.id = session_id, appcode = visitor.session.appcode, uid = %visitor.session.uid, device = %visitor.session.device_id, ip = %visitor.ip, why = %refusal.message, "session kicked by the access lists");
            }
        }
        kicked
    }
}
