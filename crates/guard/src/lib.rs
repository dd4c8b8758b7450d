//! Black/white lists and flapping detection (issue 8, item 5): who may connect and log in.
//!
//! [`Guard`] owns the lists — entries by uid (`appcode` + uid), device id, IP address or CIDR
//! network (IPv4 and IPv6) and appcode, each with an optional expiry and a reason — kept
//! durably in a [`BanStore`] ([`SqliteBanStore`]: `<data_dir>/guard.sqlite`) and served from
//! an in-memory snapshot ([`Lists`]) swapped on every change, so the checks on the accept and
//! login paths take no lock held across calls and never touch the disk. IP entries may also
//! be *allow* entries: once any exists for a scope (every connection, or one appcode's
//! logins), only matching IPs get in there. A change is effective at once: new checks see the
//! new snapshot, and [`Guard::subscribe`] tells the node to re-check its open sessions (the
//! gate kicks those refused with KICK BLOCKED).
//!
//! Flapping detection ([`FlapDetector`]): a device (`appcode`, uid, device id) that logs in or
//! resumes more than N times within a window, or an IP address (an IPv6 client by its /64)
//! that connects more than M times, is refused (RATE_LIMITED with `retry_after_ms`) for a
//! penalty. The defaults ([`GuardConfig::default`]) are far above what a client reconnecting
//! with the SDK's backoff does.
//!
//! The gate sees all this only as [`longlink_rpc::AccessGuard`], which [`Guard`] implements.
//!
//! Modules: [`rules`] (Ban, NewBan, IpNet and validation), [`lists`] (the indexed snapshot),
//! [`flapping`] (FlapDetector), [`store`] (BanStore, SqliteBanStore, MemoryBanStore).

pub mod flapping;
pub mod lists;
pub mod rules;
pub mod store;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use longlink_proto::ErrorCode;
use longlink_rpc::{AccessGuard, Refusal, SessionInfo};
use tokio::sync::watch;

pub use flapping::{FlapDetector, FlapRule};
pub use lists::Lists;
pub use rules::{Action, Ban, BanKind, IpNet, NewBan, ValidBan};
pub use store::{BanStore, MemoryBanStore, SqliteBanStore};

/// The file of the lists under the data directory.
pub const GUARD_FILE: &str = "guard.sqlite";

/// Why a list operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The entry asked for is not valid (one line saying why).
    #[error("{0}")]
    Invalid(String),
    /// The durable store failed.
    #[error("ban store: {0}")]
    Store(String),
}

impl GuardError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        GuardError::Invalid(message.into())
    }
}

/// Flapping thresholds (`[guard]` in the server's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// LOGINs + RESUMEs per (appcode, uid, device).
    pub device: FlapRule,
    /// Connections per source IP (an IPv6 address by its /64).
    pub ip: FlapRule,
    /// Most keys each detector tracks (memory bound).
    pub max_tracked: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            // A client reconnecting with backoff does a handful a minute; 30 is a loop.
            device: FlapRule {
                max: 30,
                window: Duration::from_secs(60),
                penalty: Duration::from_secs(60),
            },
            // Generous: many users can share an address (carrier NAT, offices).
            ip: FlapRule {
                max: 600,
                window: Duration::from_secs(10),
                penalty: Duration::from_secs(30),
            },
            max_tracked: 200_000,
        }
    }
}

type DeviceKey = (u32, String, String);

/// The lists and the flapping detectors of a node; see the crate docs.
pub struct Guard {
    store: Arc<dyn BanStore>,
    lists: RwLock<Arc<Lists>>,
    /// Serialises changes: store write, then snapshot swap, in the same order.
    writes: tokio::sync::Mutex<()>,
    devices: FlapDetector<DeviceKey>,
    ips: FlapDetector<IpAddr>,
    changes: watch::Sender<u64>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("entries", &self.lists().bans().len())
            .finish_non_exhaustive()
    }
}

/// The wall clock in unix ms (entries expire by it, so expiry survives restarts).
fn now_ms() -> u64 {
    longlink_proto::unix_ms()
}

impl Guard {
    /// A guard over `store`, loading its entries.
    ///
    /// # Errors
    /// [`GuardError::Store`] when the entries cannot be read.
    pub fn open(store: Arc<dyn BanStore>, config: GuardConfig) -> Result<Self, GuardError> {
        let bans = store.load(now_ms())?;
        let (changes, _) = watch::channel(0);
        Ok(Self {
            store,
            lists: RwLock::new(Arc::new(Lists::new(bans))),
            writes: tokio::sync::Mutex::new(()),
            devices: FlapDetector::new(config.device, config.max_tracked),
            ips: FlapDetector::new(config.ip, config.max_tracked),
            changes,
        })
    }

    /// A guard whose lists live in memory only.
    pub fn in_memory(config: GuardConfig) -> Self {
        match Self::open(Arc::new(MemoryBanStore::default()), config) {
            Ok(guard) => guard,
            // A fresh memory store has nothing to fail on.
            Err(err) => unreachable!("memory ban store failed: {err}"),
        }
    }

    /// The current snapshot.
    pub fn lists(&self) -> Arc<Lists> {
        self.lists.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The active entries, by id.
    pub fn bans(&self) -> Vec<Ban> {
        let now = now_ms();
        self.lists()
            .bans()
            .iter()
            .filter(|b| b.is_active(now))
            .cloned()
            .collect()
    }

    /// A receiver that changes whenever the lists do (the node re-checks its sessions).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Adds an entry (or updates the one with the same kind, action, appcode and value):
    /// durable once this returns, and effective at once. Returns it and whether it is new.
    ///
    /// # Errors
    /// [`GuardError::Invalid`] for a bad entry, [`GuardError::Store`] if it could not be
    /// stored (then nothing changed).
    pub async fn ban(&self, new: NewBan) -> Result<(Ban, bool), GuardError> {
        let valid = new.validate(now_ms())?;
        let _write = self.writes.lock().await;
        let store = self.store.clone();
        let (ban, created) = run_blocking(move || store.upsert(&valid, now_ms())).await?;
        self.reload().await?;
        tracing::info!(id = ban.id, kind = ban.kind.as_str(), action = ban.action.as_str(), appcode = ban.appcode, value = %ban.value, expires_at_ms = ban.expires_at_ms, created, "access list entry set");
        Ok((ban, created))
    }

    /// Removes entry `id`: the removed entry, or `None` if there is none.
    ///
    /// # Errors
    /// [`GuardError::Store`].
    pub async fn unban(&self, id: u64) -> Result<Option<Ban>, GuardError> {
        let _write = self.writes.lock().await;
        let store = self.store.clone();
        let removed = run_blocking(move || store.remove(id)).await?;
        if removed.is_some() {
            self.reload().await?;
            tracing::info!(id, "access list entry removed");
        }
        Ok(removed)
    }

    /// Re-reads the store into a new snapshot and tells the subscribers.
    async fn reload(&self) -> Result<(), GuardError> {
        let store = self.store.clone();
        let bans = run_blocking(move || store.load(now_ms())).await?;
        *self.lists.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Lists::new(bans));
        self.changes.send_modify(|generation| *generation += 1);
        Ok(())
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, GuardError> + Send + 'static,
) -> Result<T, GuardError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|err| Err(GuardError::Store(format!("ban store task failed: {err}"))))
}

/// The flapping key of an address: an IPv6 client controls its whole /64, so that is one key.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

fn flapping(wait: Duration, what: &str) -> Refusal {
    let ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1);
    Refusal::new(
        ErrorCode::RateLimited,
        format!("{what} too often: retry after retry_after_ms"),
    )
    .retry_after(ms)
}

impl AccessGuard for Guard {
    fn admit_connection(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.lists().check_connection(ip, now_ms())?;
        self.ips
            .hit(ip_key(ip), Instant::now())
            .map_err(|wait| flapping(wait, "connecting"))
    }

    fn admit_login(&self, session: &SessionInfo, ip: IpAddr) -> Result<(), Refusal> {
        self.check_session(session, ip)?;
        let key = (
            session.appcode,
            session.uid.clone(),
            session.device_id.clone(),
        );
        self.devices
            .hit(key, Instant::now())
            .map_err(|wait| flapping(wait, "logging in"))
    }

    fn check_session(&self, session: &SessionInfo, ip: IpAddr) -> Result<(), Refusal> {
        self.lists().check_session(
            session.appcode,
            &session.uid,
            &session.device_id,
            ip,
            now_ms(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(appcode: u32, uid: &str, device: &str) -> SessionInfo {
        SessionInfo {
            gate_id: "g".into(),
            session_id: 1,
            appcode,
            uid: uid.into(),
            device_id: device.into(),
            epoch: 1,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn entry(kind: &str, appcode: u32, value: &str) -> NewBan {
        NewBan {
            kind: kind.into(),
            appcode,
            value: value.into(),
            ..NewBan::default()
        }
    }

    #[tokio::test]
    async fn a_ban_is_effective_at_once_and_announced() {
        let guard = Guard::in_memory(GuardConfig::default());
        let mut changes = guard.subscribe();
        let alice = session(129, "alice", "p1");
        assert!(guard.admit_login(&alice, ip("127.0.0.1")).is_ok());
        let (ban, created) = guard.ban(entry("uid", 129, "alice")).await.unwrap();
        assert!(created);
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        let refused = guard.check_session(&alice, ip("127.0.0.1")).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Banned);
        assert_eq!(guard.bans(), vec![ban.clone()]);
        assert_eq!(guard.unban(ban.id).await.unwrap(), Some(ban.clone()));
        assert!(changes.has_changed().unwrap());
        assert!(guard.check_session(&alice, ip("127.0.0.1")).is_ok());
        assert_eq!(guard.unban(ban.id).await.unwrap(), None);
        assert!(matches!(
            guard.ban(entry("uid", 0, "alice")).await,
            Err(GuardError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn flapping_devices_and_ips_are_refused_with_a_retry_after() {
        let guard = Guard::in_memory(GuardConfig {
            device: FlapRule {
                max: 2,
                window: Duration::from_secs(60),
                penalty: Duration::from_secs(5),
            },
            ip: FlapRule {
                max: 3,
                window: Duration::from_secs(60),
                penalty: Duration::from_secs(7),
            },
            max_tracked: 100,
        });
        let flappy = session(129, "alice", "p1");
        let here = ip("127.0.0.1");
        assert!(guard.admit_login(&flappy, here).is_ok());
        assert!(guard.admit_login(&flappy, here).is_ok());
        let refused = guard.admit_login(&flappy, here).unwrap_err();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert!(refused.retry_after_ms > 0 && refused.retry_after_ms <= 5_000);
        assert!(
            guard
                .admit_login(&session(129, "alice", "p2"), here)
                .is_ok()
        );
        // IPv6 clients count by /64.
        for host in ["2001:db8::1", "2001:db8::2", "2001:db8::3"] {
            assert!(guard.admit_connection(ip(host)).is_ok());
        }
        let refused = guard.admit_connection(ip("2001:db8::ffff")).unwrap_err();
        assert!(refused.retry_after_ms > 5_000 && refused.retry_after_ms <= 7_000);
        assert!(guard.admit_connection(ip("2001:db9::1")).is_ok());
    }
}
