//! [`Lists`]: an immutable, indexed snapshot of the active entries, rebuilt on every change and
//! read without locks held across calls (the guard swaps an `Arc<Lists>`).
//!
//! Lookups are hash lookups for uids, devices, appcodes and single IP addresses; CIDR
//! networks are scanned (operators keep few of them; thousands cost microseconds).

use std::collections::HashMap;
use std::net::IpAddr;

use longlink_proto::ErrorCode;
use longlink_rpc::Refusal;

use crate::rules::{Action, Ban, BanKind, IpNet};

/// Which check matched, for the refusal's message (the reason stays with the operators).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hit {
    Appcode,
    Uid,
    Device,
    Ip,
    NotAllowed,
}

impl Hit {
    fn message(self) -> &'static str {
        match self {
            Hit::Appcode => "this appcode is closed",
            Hit::Uid => "this user is banned",
            Hit::Device => "this device is banned",
            Hit::Ip => "this IP address is banned",
            Hit::NotAllowed => "this IP address is not on the allow list",
        }
    }
}

/// One entry's timing, as matching needs it.
#[derive(Debug, Clone, Copy)]
struct Timing {
    expires_at_ms: u64,
}

impl Timing {
    fn active(self, now_ms: u64) -> bool {
        self.expires_at_ms == 0 || now_ms < self.expires_at_ms
    }
}

/// IP entries of one scope (one appcode, or 0 = every connection).
#[derive(Debug, Default)]
struct IpScope {
    deny_hosts: HashMap<IpAddr, Timing>,
    deny_nets: Vec<(IpNet, Timing)>,
    allow: Vec<(IpNet, Timing)>,
}

impl IpScope {
    fn add(&mut self, net: IpNet, action: Action, timing: Timing) {
        match action {
            Action::Allow => self.allow.push((net, timing)),
            // One entry per value (the store's unique key), so a host is inserted once.
            Action::Deny if net.is_host() => {
                self.deny_hosts.insert(net.addr(), timing);
            }
            Action::Deny => self.deny_nets.push((net, timing)),
        }
    }

    /// The refusal for `ip` in this scope: denied, or allow entries exist and none matches.
    fn check(&self, ip: IpAddr, now_ms: u64) -> Option<(Hit, u64)> {
        if let Some(timing) = self.deny_hosts.get(&ip).filter(|t| t.active(now_ms)) {
            return Some((Hit::Ip, timing.expires_at_ms));
        }
        if let Some((_, timing)) = self
            .deny_nets
            .iter()
            .find(|(net, t)| t.active(now_ms) && net.contains(ip))
        {
            return Some((Hit::Ip, timing.expires_at_ms));
        }
        let mut any_allow = false;
        for (net, timing) in &self.allow {
            if timing.active(now_ms) {
                any_allow = true;
                if net.contains(ip) {
                    return None;
                }
            }
        }
        any_allow.then_some((Hit::NotAllowed, 0))
    }
}

/// The active entries, indexed for the checks of [`crate::Guard`].
#[derive(Debug, Default)]
pub struct Lists {
    bans: Vec<Ban>,
    appcodes: HashMap<u32, Timing>,
    uids: HashMap<(u32, String), Timing>,
    /// Keyed by (appcode, device id); appcode 0 = every appcode.
    devices: HashMap<(u32, String), Timing>,
    /// Keyed by appcode; 0 = every connection.
    ips: HashMap<u32, IpScope>,
}

impl Lists {
    /// Indexes `bans` (entries that no longer parse are skipped with a warning: the lists
    /// must load whatever the file holds).
    pub fn new(mut bans: Vec<Ban>) -> Self {
        bans.sort_by_key(|b| b.id);
        let mut lists = Lists::default();
        for ban in &bans {
            let timing = Timing {
                expires_at_ms: ban.expires_at_ms,
            };
            match ban.kind {
                BanKind::Appcode => {
                    lists.appcodes.insert(ban.appcode, timing);
                }
                BanKind::Uid => {
                    lists.uids.insert((ban.appcode, ban.value.clone()), timing);
                }
                BanKind::Device => {
                    lists
                        .devices
                        .insert((ban.appcode, ban.value.clone()), timing);
                }
                BanKind::Ip => match ban.value.parse::<IpNet>() {
                    Ok(net) => lists
                        .ips
                        .entry(ban.appcode)
                        .or_default()
                        .add(net, ban.action, timing),
                    Err(err) => {
                        tracing::warn!(id = ban.id, value = %ban.value, error = %err, "skipping an ip entry that does not parse")
                    }
                },
            }
        }
        lists.bans = bans;
        lists
    }

    /// Every entry (active or not), by id.
    pub fn bans(&self) -> &[Ban] {
        &self.bans
    }

    /// The IP entries of every connection (appcode 0), at accept.
    pub(crate) fn check_connection(&self, ip: IpAddr, now_ms: u64) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        match self.ips.get(&0).and_then(|scope| scope.check(ip, now_ms)) {
            Some((hit, expires)) => Err(refusal(hit, expires, now_ms)),
            None => Ok(()),
        }
    }

    /// Every list for a session of `(appcode, uid, device)` from `ip`.
    pub(crate) fn check_session(
        &self,
        appcode: u32,
        uid: &str,
        device_id: &str,
        ip: IpAddr,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let active = |t: &&Timing| t.active(now_ms);
        let found = if let Some(t) = self.appcodes.get(&appcode).filter(active) {
            Some((Hit::Appcode, t.expires_at_ms))
        } else if let Some(t) = self.uids.get(&(appcode, uid.to_owned())).filter(active) {
            Some((Hit::Uid, t.expires_at_ms))
        } else if let Some(t) = [appcode, 0].iter().find_map(|scope| {
            self.devices
                .get(&(*scope, device_id.to_owned()))
                .filter(active)
        }) {
            Some((Hit::Device, t.expires_at_ms))
        } else {
            // The connection's own scope (0) was checked at accept, but an entry added since
            // must hold for a LOGIN on a connection accepted before it.
            let ip = ip.to_canonical();
            [0, appcode]
                .iter()
                .filter_map(|scope| self.ips.get(scope))
                .find_map(|scope| scope.check(ip, now_ms))
        };
        match found {
            Some((hit, expires)) => Err(refusal(hit, expires, now_ms)),
            None => Ok(()),
        }
    }
}

/// BANNED; a timed entry tells the client when it ends (`retry_after_ms`), a permanent one
/// says 0 ("not by itself").
fn refusal(hit: Hit, expires_at_ms: u64, now_ms: u64) -> Refusal {
    let retry_after = if expires_at_ms == 0 {
        0
    } else {
        u32::try_from(expires_at_ms.saturating_sub(now_ms)).unwrap_or(u32::MAX)
    };
    Refusal::new(ErrorCode::Banned, hit.message()).retry_after(retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(id: u64, kind: BanKind, action: Action, appcode: u32, value: &str, exp: u64) -> Ban {
        Ban {
            id,
            kind,
            action,
            appcode,
            value: value.into(),
            reason: String::new(),
            created_at_ms: 0,
            expires_at_ms: exp,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const NOW: u64 = 1_000_000;

    #[test]
    fn each_kind_matches_only_what_it_names() {
        let lists = Lists::new(vec![
            ban(1, BanKind::Uid, Action::Deny, 129, "alice", 0),
            ban(2, BanKind::Device, Action::Deny, 0, "bad-phone", 0),
            ban(3, BanKind::Device, Action::Deny, 130, "van-7", 0),
            ban(4, BanKind::Appcode, Action::Deny, 132, "", 0),
            ban(5, BanKind::Ip, Action::Deny, 0, "10.0.0.0/8", 0),
            ban(6, BanKind::Ip, Action::Deny, 131, "192.168.1.1/32", 0),
        ]);
        let ok = ip("127.0.0.1");
        let code = |r: Result<(), Refusal>| r.err().map(|r| r.message);
        assert_eq!(
            code(lists.check_session(129, "alice", "p", ok, NOW)).as_deref(),
            Some("this user is banned")
        );
        assert!(
            lists.check_session(130, "alice", "p", ok, NOW).is_ok(),
            "another appcode's alice"
        );
        assert!(
            lists
                .check_session(129, "bob", "bad-phone", ok, NOW)
                .is_err()
        );
        assert!(
            lists
                .check_session(131, "bob", "bad-phone", ok, NOW)
                .is_err(),
            "device of every appcode"
        );
        assert!(lists.check_session(130, "bob", "van-7", ok, NOW).is_err());
        assert!(
            lists.check_session(129, "bob", "van-7", ok, NOW).is_ok(),
            "scoped to 130"
        );
        assert!(lists.check_session(132, "anyone", "p", ok, NOW).is_err());
        assert!(lists.check_connection(ip("10.2.3.4"), NOW).is_err());
        assert!(
            lists.check_connection(ip("192.168.1.1"), NOW).is_ok(),
            "scoped to 131 logins"
        );
        assert!(
            lists
                .check_session(131, "bob", "p", ip("192.168.1.1"), NOW)
                .is_err()
        );
        assert!(
            lists
                .check_session(129, "bob", "p", ip("192.168.1.1"), NOW)
                .is_ok()
        );
        assert_eq!(
            lists
                .check_connection(ip("10.0.0.1"), NOW)
                .unwrap_err()
                .code,
            ErrorCode::Banned
        );
    }

    #[test]
    fn an_allow_entry_turns_its_scope_into_a_whitelist() {
        let lists = Lists::new(vec![ban(
            1,
            BanKind::Ip,
            Action::Allow,
            0,
            "127.0.0.0/8",
            0,
        )]);
        assert!(lists.check_connection(ip("127.0.0.9"), NOW).is_ok());
        let refused = lists.check_connection(ip("8.8.8.8"), NOW).unwrap_err();
        assert_eq!(refused.message, "this IP address is not on the allow list");
        // A deny entry inside the allowed range still wins.
        let lists = Lists::new(vec![
            ban(1, BanKind::Ip, Action::Allow, 0, "127.0.0.0/8", 0),
            ban(2, BanKind::Ip, Action::Deny, 0, "127.0.0.2/32", 0),
        ]);
        assert!(lists.check_connection(ip("127.0.0.2"), NOW).is_err());
        assert!(lists.check_connection(ip("127.0.0.1"), NOW).is_ok());
        // An expired allow entry no longer makes a whitelist.
        let lists = Lists::new(vec![ban(
            1,
            BanKind::Ip,
            Action::Allow,
            0,
            "127.0.0.0/8",
            NOW,
        )]);
        assert!(lists.check_connection(ip("8.8.8.8"), NOW).is_ok());
    }

    #[test]
    fn a_timed_entry_ends_by_itself_and_says_when() {
        let lists = Lists::new(vec![ban(
            1,
            BanKind::Uid,
            Action::Deny,
            129,
            "alice",
            NOW + 5_000,
        )]);
        let refused = lists
            .check_session(129, "alice", "p", ip("::1"), NOW)
            .unwrap_err();
        assert_eq!(refused.retry_after_ms, 5_000);
        assert!(
            lists
                .check_session(129, "alice", "p", ip("::1"), NOW + 5_000)
                .is_ok()
        );
        let permanent = Lists::new(vec![ban(1, BanKind::Uid, Action::Deny, 129, "alice", 0)]);
        assert_eq!(
            permanent
                .check_session(129, "alice", "p", ip("::1"), NOW)
                .unwrap_err()
                .retry_after_ms,
            0
        );
    }
}
