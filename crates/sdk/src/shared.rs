//! [`Shared`]: the little state the driver task, the [`crate::Client`] handles and
//! [`crate::Incoming`] share. Locks are held for a map or vector operation only, never across
//! an `.await`.

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
