//! The contract of black/white lists and flapping detection as the gate sees it:
//! [`AccessGuard`], consulted at accept and after each LOGIN or RESUME.
//!
//! The gate never imports the implementation (`longlink-guard`); `longlink-server` wires it.
//! Every call is synchronous and cheap (an in-memory snapshot of the lists and a sharded
//! counter map), because it sits on the accept and login paths of every client.

use std::net::IpAddr;

use crate::{Refusal, SessionInfo};

/// Decides who may connect and log in. A refusal carries the ERROR the client gets: BANNED
/// (a black/white list) or RATE_LIMITED with `retry_after_ms` (flapping).
pub trait AccessGuard: Send + Sync + std::fmt::Debug + 'static {
    /// A new connection from `ip`, before any frame is read: the IP lists that apply to every
    /// appcode, and the per-IP connection count (flapping). Counts the connection.
    ///
    /// # Errors
    /// The refusal to send (as an ERROR push) before closing.
    fn admit_connection(&self, ip: IpAddr) -> Result<(), Refusal>;

    /// A LOGIN or RESUME that logic accepted for `session`, on a connection from `ip`: every
    /// list (appcode, uid, device, IP) and the per-device login count (flapping). Counts the
    /// login.
    ///
    /// # Errors
    /// The refusal to answer the LOGIN/RESUME with; the gate then ends the session.
    fn admit_login(&self, session: &SessionInfo, ip: IpAddr) -> Result<(), Refusal>;

    /// Whether the lists (not the flapping counts) still allow an established `session` from
    /// `ip`: the gate asks this of each of its sessions when the lists change, and kicks
    /// (KICK BLOCKED) those refused. Counts nothing.
    ///
    /// # Errors
    /// The refusal whose message goes into the KICK.
    fn check_session(&self, session: &SessionInfo, ip: IpAddr) -> Result<(), Refusal>;
}

/// Admits everyone: a gate without lists (tests, embedded uses).
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmitAll;

impl AccessGuard for AdmitAll {
    fn admit_connection(&self, _ip: IpAddr) -> Result<(), Refusal> {
        Ok(())
    }

    fn admit_login(&self, _session: &SessionInfo, _ip: IpAddr) -> Result<(), Refusal> {
        Ok(())
    }

    fn check_session(&self, _session: &SessionInfo, _ip: IpAddr) -> Result<(), Refusal> {
        Ok(())
    }
}
