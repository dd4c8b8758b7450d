//! [`Shared`]: the little state the driver task, the [`crate::Client`] handles and
//! [`crate::Incoming`] share. Locks are held for a map or vector operation only, never across
//! an `.await`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::dedup::Dedup;
use crate::{Message, UserRef};

#[derive(Debug)]
pub(crate) struct Shared {
    me: UserRef,
    auto_ack: bool,
    /// msgids the application has taken (from [`crate::Incoming`] or an offline pull).
    handed: Mutex<Dedup>,
    /// msgids the application has taken and the driver has not acknowledged yet.
    acks: Mutex<Vec<u64>>,
    /// Wakes the driver when `acks` has something.
    pub(crate) acks_ready: Notify,
    session_id: AtomicU64,
    connected: AtomicBool,
    /// The token for the next (re)login.
    token: Mutex<String>,
    /// Notification receipts not yet taken by the server, oldest first, each once, at most
    /// [`longlink_proto::MAX_NOTIFICATION_ACK_IDS`]: one NOTIFICATION_ACK carries them all.
    notification_acks: Mutex<VecDeque<u64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here can be left half-updated by a panic: keep going.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(me: UserRef, auto_ack: bool, token: String, session_id: u64) -> Self {
        Self {
            me,
            auto_ack,
            handed: Mutex::new(Dedup::new(Dedup::DEFAULT_CAPACITY)),
            acks: Mutex::new(Vec::new()),
            acks_ready: Notify::new(),
            session_id: AtomicU64::new(session_id),
            connected: AtomicBool::new(true),
            token: Mutex::new(token),
            notification_acks: Mutex::new(VecDeque::new()),
        }
    }

    /// Called for each message [`crate::Incoming`] is about to return: `false` when the
    /// application already has it (it pulled it itself), so it is skipped. With auto_ack the
    /// message is queued for acknowledgement.
    pub(crate) fn hand_over(&self, message: &Message) -> bool {
        if message.msgid == 0 {
            return true;
        }
        if !lock(&self.handed).insert(message.msgid) {
            return false;
        }
        // What this user sent from another device is not in its inbox: nothing to ack.
        let ackable = message.from != self.me || message.to == self.me;
        if self.auto_ack && ackable {
            lock(&self.acks).push(message.msgid);
            self.acks_ready.notify_one();
        }
        true
    }

    pub(crate) fn was_handed(&self, msgid: u64) -> bool {
        lock(&self.handed).contains(msgid)
    }

    pub(crate) fn record_handed(&self, msgids: &[u64]) {
        let mut handed = lock(&self.handed);
        for &msgid in msgids {
            handed.insert(msgid);
        }
    }

    pub(crate) fn take_acks(&self) -> Vec<u64> {
        std::mem::take(&mut *lock(&self.acks))
    }

    /// Keeps notification receipts for the next NOTIFICATION_ACK. Beyond the bound the oldest
    /// are dropped: a receipt that old no longer counts as a delivery for the server either
    /// (its receipt timeout is minutes), and an app offline for long must not grow memory.
    pub(crate) fn queue_notification_acks(&self, ids: &[u64]) {
        let mut pending = lock(&self.notification_acks);
        for &id in ids {
            if id == 0 || pending.contains(&id) {
                continue;
            }
            if pending.len() >= longlink_proto::MAX_NOTIFICATION_ACK_IDS {
                let dropped = pending.pop_front();
                tracing::debug!(?dropped, "notification receipts full: dropping the oldest");
            }
            pending.push_back(id);
        }
    }

    /// Takes every pending notification receipt (at most one NOTIFICATION_ACK's worth).
    pub(crate) fn take_notification_acks(&self) -> Vec<u64> {
        lock(&self.notification_acks).drain(..).collect()
    }

    pub(crate) fn pending_notification_acks(&self) -> usize {
        lock(&self.notification_acks).len()
    }

    pub(crate) fn token(&self) -> String {
        lock(&self.token).clone()
    }

    pub(crate) fn set_token(&self, token: String) {
        *lock(&self.token) = token;
    }

    pub(crate) fn session_id(&self) -> u64 {
        self.session_id.load(Ordering::Acquire)
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub(crate) fn set_connected(&self, session_id: u64) {
        self.session_id.store(session_id, Ordering::Release);
        self.connected.store(true, Ordering::Release);
    }

    pub(crate) fn set_disconnected(&self) {
        self.connected.store(false, Ordering::Release);
    }
}
