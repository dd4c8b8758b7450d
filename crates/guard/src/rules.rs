//! The list entries: [`Ban`] (stored), [`NewBan`] (asked for, validated into a
//! [`ValidBan`]) and [`IpNet`] (an IPv4 or IPv6 network in CIDR notation).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::GuardError;

/// Longest uid, device id or reason accepted (uids and device ids are limited to 128 bytes on
/// the wire too, docs/protocol.md §5).
pub const MAX_VALUE_BYTES: usize = 128;
/// Longest reason accepted, in bytes.
pub const MAX_REASON_BYTES: usize = 512;
/// Longest ban: ten years (a longer one is a permanent ban: omit the ttl).
pub const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

/// What an entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BanKind {
    /// A user: `(appcode, uid)`; the appcode is required.
    Uid,
    /// A device id; appcode 0 = under every appcode.
    Device,
    /// An IP address or CIDR network; appcode 0 = every connection (checked at accept),
    /// otherwise logins to that appcode.
    Ip,
    /// A whole appcode (no value).
    Appcode,
}

impl BanKind {
    /// The lowercase name stored and shown (`uid`, `device`, `ip`, `appcode`).
    pub fn as_str(self) -> &'static str {
        match self {
            BanKind::Uid => "uid",
            BanKind::Device => "device",
            BanKind::Ip => "ip",
            BanKind::Appcode => "appcode",
        }
    }
}

impl FromStr for BanKind {
    type Err = GuardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "uid" => Ok(BanKind::Uid),
            "device" => Ok(BanKind::Device),
            "ip" => Ok(BanKind::Ip),
            "appcode" => Ok(BanKind::Appcode),
            other => Err(GuardError::invalid(format!(
                "kind {other:?} is not one of uid, device, ip, appcode"
            ))),
        }
    }
}

/// Blacklist (`deny`) or whitelist (`allow`, IP entries only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Refuse what matches.
    #[default]
    Deny,
    /// Once any allow entry exists for a scope, only matching IPs get in there.
    Allow,
}

impl Action {
    /// `deny` or `allow`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deny => "deny",
            Action::Allow => "allow",
        }
    }
}

impl FromStr for Action {
    type Err = GuardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deny" => Ok(Action::Deny),
            "allow" => Ok(Action::Allow),
            other => Err(GuardError::invalid(format!(
                "action {other:?} is not deny or allow"
            ))),
        }
    }
}

/// A list entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    /// Never reused, so a stale `DELETE` cannot remove a newer entry.
    pub id: u64,
    /// What it matches.
    pub kind: BanKind,
    /// Deny or allow.
    pub action: Action,
    /// The appcode it applies to; 0 = every appcode (device and IP entries).
    pub appcode: u32,
    /// The uid, device id or canonical CIDR (`10.0.0.0/8`, `2001:db8::/32`); empty for an
    /// appcode entry.
    pub value: String,
    /// Why, for operators (never sent to clients).
    pub reason: String,
    /// When it was created (unix ms).
    pub created_at_ms: u64,
    /// When it stops applying (unix ms); 0 = never.
    pub expires_at_ms: u64,
}

impl Ban {
    /// Whether it applies at `now_ms`.
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.expires_at_ms == 0 || now_ms < self.expires_at_ms
    }
}

/// An entry asked for (API, CLI), before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewBan {
    /// `uid`, `device`, `ip` or `appcode`.
    pub kind: String,
    /// `deny` (default when empty) or `allow`.
    pub action: String,
    /// The appcode (required for uid and appcode entries; 0 = every appcode otherwise).
    pub appcode: u32,
    /// The uid, device id, IP or CIDR; empty for an appcode entry.
    pub value: String,
    /// Why (at most [`MAX_REASON_BYTES`]).
    pub reason: String,
    /// Lifetime in seconds; `None` = until removed.
    pub ttl_secs: Option<u64>,
}

/// A validated [`NewBan`]: canonical value, absolute expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidBan {
    /// What it matches.
    pub kind: BanKind,
    /// Deny or allow.
    pub action: Action,
    /// 0 = every appcode.
    pub appcode: u32,
    /// Canonical value (a CIDR is masked and always carries its prefix length).
    pub value: String,
    /// Why.
    pub reason: String,
    /// Unix ms; 0 = never.
    pub expires_at_ms: u64,
}

impl NewBan {
    /// Checks the entry and puts it in canonical form, relative to `now_ms`.
    ///
    /// # Errors
    /// [`GuardError::Invalid`] with a one-line reason.
    pub fn validate(&self, now_ms: u64) -> Result<ValidBan, GuardError> {
        let kind: BanKind = self.kind.parse()?;
        let action: Action = if self.action.is_empty() {
            Action::Deny
        } else {
            self.action.parse()?
        };
        if action == Action::Allow && kind != BanKind::Ip {
            return Err(GuardError::invalid(
                "allow entries (whitelists) exist for ip only",
            ));
        }
        if self.reason.len() > MAX_REASON_BYTES {
            return Err(GuardError::invalid(format!(
                "reason is longer than {MAX_REASON_BYTES} bytes"
            )));
        }
        let value = match kind {
            BanKind::Uid | BanKind::Device => {
                if kind == BanKind::Uid && self.appcode == 0 {
                    return Err(GuardError::invalid("a uid entry needs its appcode"));
                }
                if self.value.is_empty() || self.value.len() > MAX_VALUE_BYTES {
                    return Err(GuardError::invalid(format!(
                        "{} must be 1..={MAX_VALUE_BYTES} bytes",
                        kind.as_str()
                    )));
                }
                self.value.clone()
            }
            BanKind::Ip => self.value.parse::<IpNet>()?.to_string(),
            BanKind::Appcode => {
                if self.appcode == 0 {
                    return Err(GuardError::invalid("an appcode entry needs its appcode"));
                }
                if !self.value.is_empty() {
                    return Err(GuardError::invalid(
                        "an appcode entry has no value: give the appcode alone",
                    ));
                }
                String::new()
            }
        };
        let expires_at_ms = match self.ttl_secs {
            None => 0,
            Some(0) => return Err(GuardError::invalid("ttl_secs must be at least 1")),
            Some(ttl) if ttl > MAX_TTL_SECS => {
                return Err(GuardError::invalid(format!(
                    "ttl_secs is above {MAX_TTL_SECS} (ten years): omit it for a permanent entry"
                )));
            }
            Some(ttl) => now_ms.saturating_add(ttl * 1000),
        };
        Ok(ValidBan {
            kind,
            action,
            appcode: self.appcode,
            value,
            reason: self.reason.clone(),
            expires_at_ms,
        })
    }
}

/// An IPv4 or IPv6 network: its address with the host bits cleared, and its prefix length.
/// A bare address is a /32 (IPv4) or /128 (IPv6) network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The network of `addr` with `prefix` bits (host bits cleared).
    ///
    /// # Errors
    /// [`GuardError::Invalid`] when `prefix` is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, GuardError> {
        // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is the IPv4 address it carries: that is
        // how a dual-stack listener reports IPv4 clients.
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(GuardError::invalid(format!(
                "prefix /{prefix} is longer than the address ({max} bits)"
            )));
        }
        Ok(Self {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }

    /// Whether the network is one address (/32, /128).
    pub fn is_host(&self) -> bool {
        self.prefix == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & mask))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    }
}

impl FromStr for IpNet {
    type Err = GuardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || GuardError::invalid(format!("{s:?} is not an IP address or CIDR network"));
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.parse().map_err(|_| bad())?;
                let prefix: u8 = prefix.parse().map_err(|_| bad())?;
                (addr, prefix)
            }
            None => {
                let addr: IpAddr = s.parse().map_err(|_| bad())?;
                let addr = addr.to_canonical();
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        IpNet::new(addr, prefix)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_matching_covers_ipv4_ipv6_and_mapped_addresses() {
        let net: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8", "host bits are cleared");
        assert!(net.contains(ip("10.255.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(
            net.contains(ip("::ffff:10.9.9.9")),
            "a dual-stack listener's IPv4 client"
        );
        let host: IpNet = "127.0.0.2".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.2/32");
        assert!(host.is_host());
        assert!(host.contains(ip("127.0.0.2")) && !host.contains(ip("127.0.0.1")));
        let v6: IpNet = "2001:db8::1/32".parse().unwrap();
        assert_eq!(v6.to_string(), "2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")), "families never match");
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::1")));
        let all6: IpNet = "::/0".parse().unwrap();
        assert!(all6.contains(ip("::1")));
    }

    #[test]
    fn malformed_networks_are_errors_not_panics() {
        for bad in [
            "",
            "/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x",
            "10.0.0.0/-1",
            "1.2.3.4/8/8",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?} is refused");
        }
    }

    fn new(kind: &str, appcode: u32, value: &str) -> NewBan {
        NewBan {
            kind: kind.into(),
            appcode,
            value: value.into(),
            ..NewBan::default()
        }
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let now = 1_000_000;
        assert!(
            new("uid", 0, "alice").validate(now).is_err(),
            "appcode needed"
        );
        assert!(new("uid", 129, "").validate(now).is_err());
        assert!(new("uid", 129, &"x".repeat(129)).validate(now).is_err());
        assert!(new("appcode", 129, "x").validate(now).is_err());
        assert!(new("appcode", 0, "").validate(now).is_err());
        assert!(new("host", 129, "x").validate(now).is_err());
        let mut allow_uid = new("uid", 129, "alice");
        allow_uid.action = "allow".into();
        assert!(allow_uid.validate(now).is_err(), "whitelists are for IPs");
        let mut zero_ttl = new("device", 0, "d1");
        zero_ttl.ttl_secs = Some(0);
        assert!(zero_ttl.validate(now).is_err());
        let mut timed = new("ip", 0, "127.0.0.2");
        timed.ttl_secs = Some(60);
        let valid = timed.validate(now).unwrap();
        assert_eq!(valid.value, "127.0.0.2/32");
        assert_eq!(valid.expires_at_ms, now + 60_000);
        assert_eq!(valid.action, Action::Deny);
    }
}
