//! [`SessionTable`]: session id → the session's link (its connection's write queue) or its
//! hold; implements [`GatePush`] so logic can push, kick and detach.
//!
//! A session outlives its link for the hold (seed 004): when a resume-capable client's link
//! drops, its entry stays, without a link, until a RESUME takes it over (logic then calls
//! [`GatePush::detach`]) or the hold ends. Pushes to a held session return
//! [`PushError::Unreachable`]: the message takes the offline path and presence is left alone.

use std::sync::{Arc, Mutex};

/// Session ids are the gate's own numbers, never a client's choice: FxHash (a multiply per
/// lookup) instead of SipHash, on the path of every delivery.
type HashMap<K, V> = rustc_hash::FxHashMap<K, V>;

use async_trait::async_trait;
use bytes::Bytes;
use longlink_rpc::{GatePush, KickNotice, PushError, WriteReceipt};
use tokio_util::sync::CancellationToken;

use crate::CloseReason;
use crate::close::{ConnShared, Kick};
use crate::write_queue::{Outgoing, QueueError, WriteQueue};

const SHARDS: usize = 64;

/// A session's connection: where its frames go and how to close it.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub(crate) queue: Arc<WriteQueue>,
    pub(crate) conn: Arc<ConnShared>,
}

#[derive(Debug, Clone)]
enum Entry {
    /// Logged in (or logging in) with a live link.
    Attached(Link),
    /// The link dropped; cancelled when the hold must end early (RESUME, kick, drain).
    Held(CancellationToken),
}

/// A session logged in on this gate ([`SessionTable::logged_in`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    /// Who, on which gate and session, with which epoch.
    pub session: longlink_rpc::SessionInfo,
    /// The device class its LOGIN named (empty after a RESUME: the gate is not told).
    pub device_class: String,
    /// Unix milliseconds when it logged in (or resumed) on this gate.
    pub since_ms: u64,
}

/// The gate's sessions, sharded so that pushes to different sessions rarely contend. Locks
/// are held only for a map operation, never across an `.await`.
#[derive(Debug)]
pub struct SessionTable {
    shards: Vec<Mutex<HashMap<u64, Entry>>>,
}

impl Default for SessionTable {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionTable {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        }
    }

    fn with_shard<T>(&self, session_id: u64, f: impl FnOnce(&mut HashMap<u64, Entry>) -> T) -> T {
        let mut shard = self.shards[(session_id % SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut shard)
    }

    pub(crate) fn insert(&self, session_id: u64, link: Link) {
        self.with_shard(session_id, |map| {
            map.insert(session_id, Entry::Attached(link))
        });
    }

    /// Removes the session; whether it was there (attached or held). The one who removes it
    /// reports it closed.
    pub(crate) fn remove(&self, session_id: u64) -> bool {
        self.with_shard(session_id, |map| match map.remove(&session_id) {
            Some(Entry::Held(release)) => {
                release.cancel();
                true
            }
            Some(Entry::Attached(_)) => true,
            None => false,
        })
    }

    /// The session's link dropped: keep it held. Returns the token cancelled when the hold
    /// ends early, or `None` if the session is no longer here (detached meanwhile).
    pub(crate) fn hold(&self, session_id: u64) -> Option<CancellationToken> {
        self.with_shard(session_id, |map| {
            let entry = map.get_mut(&session_id)?;
            let release = CancellationToken::new();
            *entry = Entry::Held(release.clone());
            Some(release)
        })
    }

    /// The hold ran out: removes the session if it is still held (not resumed, not kicked).
    pub(crate) fn end_hold(&self, session_id: u64) -> bool {
        self.with_shard(session_id, |map| {
            if matches!(map.get(&session_id), Some(Entry::Held(_))) {
                map.remove(&session_id);
                true
            } else {
                false
            }
        })
    }

    fn link(&self, session_id: u64) -> Result<Link, PushError> {
        self.with_shard(session_id, |map| match map.get(&session_id) {
            Some(Entry::Attached(link)) => Ok(link.clone()),
            Some(Entry::Held(_)) => Err(PushError::Unreachable),
            None => Err(PushError::NoSession),
        })
    }

    /// The links of every attached session (for a drain).
    pub(crate) fn links(&self) -> Vec<(u64, Link)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(shard.iter().filter_map(|(id, entry)| match entry {
                Entry::Attached(link) => Some((*id, link.clone())),
                Entry::Held(_) => None,
            }));
        }
        out
    }

    /// The sessions logged in with a live link (held ones and logins still in progress are
    /// left out), as presence lists them: what a cluster gate re-registers when presence lost
    /// its data.
    pub fn logged_in(&self) -> Vec<LoggedIn> {
        self.links()
            .into_iter()
            .filter_map(|(_, link)| {
                let visitor = link.conn.visitor.get()?;
                Some(LoggedIn {
                    session: visitor.session.clone(),
                    device_class: link.conn.device_class.get().cloned().unwrap_or_default(),
                    since_ms: link.conn.since_ms.get().copied().unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Ends every hold now (a drain or a shutdown: the sessions are over).
    pub(crate) fn release_holds(&self) {
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for entry in shard.values() {
                if let Entry::Held(release) = entry {
                    release.cancel();
                }
            }
        }
    }

    /// Sessions on this gate, attached or held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.len()).unwrap_or(0))
            .sum()
    }

    /// Whether the gate has no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `frame` for `session_id` without waiting.
    ///
    /// # Errors
    /// [`PushError::NoSession`], [`PushError::Unreachable`] (held), or
    /// [`PushError::SlowConsumer`] after which the session is closed.
    pub fn try_push(&self, session_id: u64, frame: Bytes) -> Result<(), PushError> {
        self.try_push_outgoing(session_id, Outgoing::plain(frame))
    }

    fn try_push_outgoing(&self, session_id: u64, frame: Outgoing) -> Result<(), PushError> {
        let link = self.link(session_id)?;
        match link.queue.try_push_outgoing(frame) {
            Ok(()) => Ok(()),
            Err(QueueError::Full) => {
                link.conn.close(CloseReason::SlowConsumer);
                Err(PushError::SlowConsumer)
            }
            Err(QueueError::Closed) => Err(PushError::Unreachable),
        }
    }
}

/// One gate's table answers for its own sessions; the `gate_id` is its caller's routing key.
#[async_trait]
impl GatePush for SessionTable {
    async fn push(&self, _gate_id: &str, session_id: u64, frame: Bytes) -> Result<(), PushError> {
        self.try_push(session_id, frame)
    }

    async fn push_tracked(
        &self,
        _gate_id: &str,
        session_id: u64,
        frame: Bytes,
        receipt: Arc<dyn WriteReceipt>,
        tag: u64,
    ) -> Result<(), PushError> {
        self.try_push_outgoing(session_id, Outgoing::tracked(frame, receipt, tag))
    }

    async fn offer(&self, _gate_id: &str, session_id: u64, frame: Bytes) -> Result<(), PushError> {
        let link = self.link(session_id)?;
        link.queue.try_push(frame).map_err(|err| match err {
            QueueError::Full => PushError::SlowConsumer,
            QueueError::Closed => PushError::Unreachable,
        })
    }

    async fn kick(&self, _gate_id: &str, session_id: u64, notice: KickNotice) {
        match self.link(session_id) {
            Ok(link) => {
                // The writer drains what is queued (this KICK included) before it closes.
                let mut kick = Kick::new(notice.reason, &notice.message, 0);
                kick.by_device_id = notice.by_device_id;
                let _ = link.queue.try_push(kick.frame());
                link.conn.close(CloseReason::Kicked);
            }
            Err(PushError::Unreachable) => {
                // Held: the session just ends (presence already moved on).
                self.remove(session_id);
            }
            Err(_) => {}
        }
    }

    async fn detach(&self, _gate_id: &str, session_id: u64) {
        let removed = self.with_shard(session_id, |map| map.remove(&session_id));
        match removed {
            Some(Entry::Attached(link)) => link.conn.close(CloseReason::Resumed),
            Some(Entry::Held(release)) => release.cancel(),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use longlink_metrics::Gauge;
    use longlink_proto::KickReason;

    fn link() -> Link {
        queued_link().0
    }

    /// A link and the gauge of the frames queued on it.
    fn queued_link() -> (Link, Gauge) {
        let queued = Gauge::default();
        let link = Link {
            queue: Arc::new(WriteQueue::new(4, queued.clone())),
            conn: Arc::new(ConnShared::new()),
        };
        (link, queued)
    }

    fn notice() -> KickNotice {
        KickNotice {
            reason: KickReason::Replaced,
            message: "replaced".into(),
            by_device_id: "phone-2".into(),
        }
    }

    #[tokio::test]
    async fn a_held_session_is_unreachable_until_its_hold_ends() {
        let table = SessionTable::new();
        table.insert(1, link());
        assert_eq!(table.try_push(1, Bytes::from_static(b"x")), Ok(()));
        let release = table.hold(1).expect("the session is there");
        assert_eq!(
            table.try_push(1, Bytes::from_static(b"x")),
            Err(PushError::Unreachable),
            "a push to a held session takes the offline path"
        );
        assert_eq!(
            table.offer("g", 1, Bytes::from_static(b"x")).await,
            Err(PushError::Unreachable)
        );
        assert!(!release.is_cancelled());
        assert!(table.end_hold(1), "the hold ran out: the session ends");
        assert!(table.is_empty());
        assert_eq!(
            table.try_push(1, Bytes::from_static(b"x")),
            Err(PushError::NoSession)
        );
    }

    #[tokio::test]
    async fn detach_ends_a_hold_or_closes_a_half_open_link_without_reporting_it() {
        let table = SessionTable::new();
        table.insert(1, link());
        let release = table.hold(1).unwrap();
        table.detach("g", 1).await;
        assert!(release.is_cancelled(), "the hold task wakes up");
        assert!(!table.end_hold(1), "nothing left to close: it was resumed");

        let (half_open, queued) = queued_link();
        table.insert(2, half_open.clone());
        table.detach("g", 2).await;
        assert!(half_open.conn.is_closed());
        assert_eq!(half_open.conn.reason(), CloseReason::Resumed);
        assert_eq!(queued.get(), 0, "no KICK: the client already left");
        assert!(table.hold(2).is_none(), "its late close cannot hold it");
    }

    #[tokio::test]
    async fn kicking_a_held_session_ends_it_and_a_live_one_gets_a_kick() {
        let table = SessionTable::new();
        table.insert(1, link());
        let release = table.hold(1).unwrap();
        table.kick("g", 1, notice()).await;
        assert!(release.is_cancelled());
        assert!(table.is_empty());

        let (live, queued) = queued_link();
        table.insert(2, live.clone());
        table.kick("g", 2, notice()).await;
        assert_eq!(live.conn.reason(), CloseReason::Kicked);
        assert_eq!(queued.get(), 1, "the KICK is queued before the close");
    }
}
