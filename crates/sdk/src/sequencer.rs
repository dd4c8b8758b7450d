//! [`Sequencer`]: turns what the server sends (pushes, catch-up pulls after a login,
//! gap-filling history pages) into the application's view of incoming messages: each msgid
//! once, in msgid order per conversation. No I/O: it returns [`Step`]s for the driver.
//!
//! Per conversation (keyed by the peer: `from`, or `to` for a message this user sent from
//! another device) it keeps `floor` (the first msgid it accepted), `verified` (the highest
//! msgid up to which it has accepted every message of the conversation since `floor`, as far
//! as the server's `prev_msgid` chain lets it check) and `trusted` (whether that range really
//! was checked link by link). A message whose `prev_msgid` is above `verified` reveals a gap:
//! it is held, together with every later message of the conversation, while the driver
//! fetches HISTORY_PULL pages newer than `verified`; the missing messages are delivered in
//! order, then the held ones. `prev_msgid` 0 means "unknown predecessor": no gap filling, and
//! the conversation is no longer `trusted`.
//!
//! After every login the driver catches up with OFFLINE_PULL: pushes are buffered meanwhile,
//! and each pulled page releases, in msgid order, everything buffered up to the page's cursor.

use std::collections::{BTreeMap, HashMap};

use longlink_proto::wire;

use crate::UserRef;
use crate::dedup::Dedup;

/// Most messages held per conversation while a gap is being filled. Beyond it the highest
/// are dropped unacknowledged; the fill goes on through history until it has passed them.
pub(crate) const MAX_HELD: usize = 1024;
/// Most messages buffered while catching up after a login. Beyond it messages are dropped
/// unacknowledged and the pull starts again below the lowest one dropped.
pub(crate) const MAX_CATCH_UP_BUFFER: usize = 16_384;
/// Most conversations whose order state is kept; beyond it the least advanced quarter of
/// the idle ones is forgotten (their next message counts as a first message).
pub(crate) const MAX_CONVERSATIONS: usize = 65_536;
/// Attempts at a history page before a gap is given up (held messages then go out as they
/// are, and the conversation is no longer trusted).
pub(crate) const FILL_ATTEMPTS: u32 = 3;

/// What the driver must do next.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Hand this message to the application.
    Deliver(wire::Msg),
    /// A message already accepted for the application: acknowledge it again, but only once the
    /// application has taken the first copy (the first acknowledgement may have been lost).
    Duplicate { msgid: u64, ackable: bool },
    /// Acknowledge this message now without showing it: sent from this very device (the
    /// application has the receipt), or a repeat from long ago.
    Ack { msgid: u64 },
    /// Fetch the conversation with `peer` newer than `cursor` (HISTORY_PULL, NEWER) and hand
    /// the page to [`Sequencer::history_page`] (or the failure to [`Sequencer::history_failed`]).
    FetchHistory { peer: UserRef, cursor: u64 },
}

#[derive(Debug)]
struct Conversation {
    floor: u64,
    verified: u64,
    trusted: bool,
    /// Some while history pages are being fetched: the number of failed attempts.
    fill: Option<u32>,
    held: BTreeMap<u64, wire::Msg>,
    /// The highest msgid dropped because `held` was full (0 = none).
    overflow_max: u64,
}

impl Conversation {
    fn starting_at(msgid: u64) -> Self {
        Self {
            floor: msgid,
            verified: msgid,
            trusted: true,
            fill: None,
            held: BTreeMap::new(),
            overflow_max: 0,
        }
    }

    fn hold(&mut self, msg: wire::Msg) {
        let msgid = msg.msgid;
        if self.held.contains_key(&msgid) {
            return;
        }
        if self.held.len() >= MAX_HELD {
            let highest = self.held.keys().next_back().copied().unwrap_or(0);
            if msgid > highest {
                self.overflow_max = self.overflow_max.max(msgid);
                return;
            }
            if let Some((dropped, _)) = self.held.pop_last() {
                self.overflow_max = self.overflow_max.max(dropped);
            }
        }
        self.held.insert(msgid, msg);
    }
}

#[derive(Debug, Default)]
struct CatchUp {
    buffered: BTreeMap<u64, wire::Msg>,
    /// Everything at or below this msgid has been released to the conversations.
    released: u64,
    /// The lowest msgid dropped because the buffer was full.
    dropped_min: Option<u64>,
}

impl CatchUp {
    fn buffer(&mut self, msg: wire::Msg) {
        if self.buffered.contains_key(&msg.msgid) {
            return;
        }
        if self.buffered.len() >= MAX_CATCH_UP_BUFFER {
            let lowest = self.dropped_min.map_or(msg.msgid, |d| d.min(msg.msgid));
            self.dropped_min = Some(lowest);
            return;
        }
        self.buffered.insert(msg.msgid, msg);
    }
}

/// The exactly-once, per-conversation-ordered view of incoming messages (see the module docs).
#[derive(Debug)]
pub(crate) struct Sequencer {
    me: UserRef,
    device_id: String,
    /// msgids accepted for the application (or sent by it): never delivered again.
    accepted: Dedup,
    conversations: HashMap<UserRef, Conversation>,
    catch_up: Option<CatchUp>,
}

enum Placement {
    First,
    InOrder,
    Late,
    Repeat,
    Gap { cursor: u64 },
}

impl Sequencer {
    pub(crate) fn new(me: UserRef, device_id: String) -> Self {
        Self {
            me,
            device_id,
            accepted: Dedup::new(Dedup::DEFAULT_CAPACITY),
            conversations: HashMap::new(),
            catch_up: None,
        }
    }

    fn is_me(&self, user: Option<&wire::UserRef>) -> bool {
        user.is_some_and(|u| u.appcode == self.me.appcode && u.uid == self.me.uid)
    }

    /// Whether the server keeps `msg` in this user's inbox, i.e. whether a MSG_ACK for it is
    /// valid: everything except what this user sent to someone else (from another device).
    pub(crate) fn ackable(&self, msg: &wire::Msg) -> bool {
        !self.is_me(msg.from.as_ref()) || self.is_me(msg.to.as_ref())
    }

    fn sent_by_this_device(&self, msg: &wire::Msg) -> bool {
        self.is_me(msg.from.as_ref()) && msg.from_device == self.device_id
    }

    /// The conversation's key: the other user (this user for a note to self).
    fn peer_of(&self, msg: &wire::Msg) -> UserRef {
        let user = if self.is_me(msg.from.as_ref()) {
            msg.to.as_ref()
        } else {
            msg.from.as_ref()
        };
        user.map(|u| UserRef::new(u.appcode, u.uid.clone()))
            .unwrap_or_default()
    }

    fn duplicate(&self, msg: &wire::Msg) -> Step {
        Step::Duplicate {
            msgid: msg.msgid,
            ackable: self.ackable(msg),
        }
    }

    #[cfg(test)]
    pub(crate) fn is_catching_up(&self) -> bool {
        self.catch_up.is_some()
    }

    /// A MSG push. Ephemeral messages (msgid 0) bypass ordering and de-duplication.
    pub(crate) fn push(&mut self, msg: wire::Msg, out: &mut Vec<Step>) {
        if msg.msgid == 0 {
            out.push(Step::Deliver(msg));
            return;
        }
        if self.accepted.contains(msg.msgid) {
            out.push(self.duplicate(&msg));
            return;
        }
        if let Some(catch_up) = &mut self.catch_up
            && msg.msgid > catch_up.released
        {
            catch_up.buffer(msg);
            return;
        }
        self.offer(msg, out);
    }

    /// A login happened: buffer pushes until [`Sequencer::finish_catch_up`]. Fills in flight
    /// died with the old connection: their held messages join the buffer (as does what an
    /// unfinished catch-up of the old connection buffered).
    pub(crate) fn begin_catch_up(&mut self) {
        let mut catch_up = self.catch_up.take().unwrap_or_default();
        for conversation in self.conversations.values_mut() {
            conversation.fill = None;
            for msg in std::mem::take(&mut conversation.held).into_values() {
                catch_up.buffer(msg);
            }
        }
        self.catch_up = Some(catch_up);
    }

    /// One OFFLINE_PULL page of the catch-up; releases everything buffered up to `reached`
    /// (the page's cursor: every unacknowledged message at or below it has been pulled).
    pub(crate) fn catch_up_page(
        &mut self,
        messages: Vec<wire::Msg>,
        reached: u64,
        out: &mut Vec<Step>,
    ) {
        for msg in messages {
            if msg.msgid == 0 {
                continue;
            }
            if self.accepted.contains(msg.msgid) {
                out.push(self.duplicate(&msg));
            } else if let Some(catch_up) = &mut self.catch_up {
                catch_up.buffer(msg);
            } else {
                self.offer(msg, out);
            }
        }
        self.release(reached, out);
    }

    /// The cursor the catch-up pull must start again from because buffered messages had to be
    /// dropped, if any (and forgets the drop).
    pub(crate) fn take_catch_up_restart(&mut self) -> Option<u64> {
        let dropped = self.catch_up.as_mut()?.dropped_min.take()?;
        Some(dropped.saturating_sub(1))
    }

    /// The catch-up pull is complete: release everything buffered and go live.
    pub(crate) fn finish_catch_up(&mut self, out: &mut Vec<Step>) {
        self.release(u64::MAX, out);
        self.catch_up = None;
    }

    fn release(&mut self, upto: u64, out: &mut Vec<Step>) {
        let Some(catch_up) = &mut self.catch_up else {
            return;
        };
        catch_up.released = catch_up.released.max(upto);
        let ready = match upto.checked_add(1) {
            Some(bound) => {
                let rest = catch_up.buffered.split_off(&bound);
                std::mem::replace(&mut catch_up.buffered, rest)
            }
            None => std::mem::take(&mut catch_up.buffered),
        };
        for msg in ready.into_values() {
            self.offer(msg, out);
        }
    }

    /// The application pulled these msgids itself (OFFLINE_PULL): never deliver them again.
    pub(crate) fn pulled_by_app(&mut self, msgids: &[u64]) {
        for &msgid in msgids {
            self.accepted.insert(msgid);
        }
    }

    /// This client sent `msgid` to `to` (the C2C receipt): never deliver it, and let it
    /// anchor the order of a conversation not seen before.
    pub(crate) fn own_sent(&mut self, to: &UserRef, msgid: u64) {
        if msgid == 0 {
            return;
        }
        self.accepted.insert(msgid);
        if !self.conversations.contains_key(to) {
            self.insert_conversation(to.clone(), msgid);
        }
    }

    fn offer(&mut self, msg: wire::Msg, out: &mut Vec<Step>) {
        if self.accepted.contains(msg.msgid) {
            out.push(self.duplicate(&msg));
            return;
        }
        let peer = self.peer_of(&msg);
        match self.conversations.get_mut(&peer) {
            Some(conversation) if conversation.fill.is_some() => conversation.hold(msg),
            _ => self.place(peer, msg, false, out),
        }
    }

    /// Decides a message of a conversation that is not filling a gap. `after_fill`: the
    /// message was held during a fill that is over, so a remaining gap is not filled again.
    fn place(&mut self, peer: UserRef, msg: wire::Msg, after_fill: bool, out: &mut Vec<Step>) {
        let msgid = msg.msgid;
        let placement = match self.conversations.get_mut(&peer) {
            None => Placement::First,
            Some(conversation) if msgid <= conversation.verified => {
                if conversation.trusted && msgid >= conversation.floor {
                    // Inside the checked range: accepted before, and forgotten by the window.
                    Placement::Repeat
                } else {
                    // Older than what this client has checked: shown late rather than lost.
                    Placement::Late
                }
            }
            Some(conversation) => {
                if msg.prev_msgid > conversation.verified && !after_fill {
                    conversation.fill = Some(0);
                    Placement::Gap {
                        cursor: conversation.verified,
                    }
                } else {
                    if msg.prev_msgid != conversation.verified {
                        // Unknown predecessor (0), a gap that history could not fill, or a
                        // chain that contradicts itself: order is no longer checked.
                        conversation.trusted = false;
                    }
                    conversation.verified = msgid;
                    Placement::InOrder
                }
            }
        };
        match placement {
            Placement::First => {
                self.insert_conversation(peer, msgid);
                self.accept(msg, out);
            }
            Placement::InOrder | Placement::Late => self.accept(msg, out),
            Placement::Repeat => {
                self.accepted.insert(msgid);
                if self.ackable(&msg) {
                    out.push(Step::Ack { msgid });
                }
            }
            Placement::Gap { cursor } => {
                if let Some(conversation) = self.conversations.get_mut(&peer) {
                    conversation.hold(msg);
                }
                out.push(Step::FetchHistory { peer, cursor });
            }
        }
    }

    fn accept(&mut self, msg: wire::Msg, out: &mut Vec<Step>) {
        self.accepted.insert(msg.msgid);
        if self.sent_by_this_device(&msg) {
            if self.ackable(&msg) {
                out.push(Step::Ack { msgid: msg.msgid });
            }
            return;
        }
        out.push(Step::Deliver(msg));
    }

    fn insert_conversation(&mut self, peer: UserRef, msgid: u64) {
        if self.conversations.len() >= MAX_CONVERSATIONS {
            let mut idle: Vec<(u64, UserRef)> = self
                .conversations
                .iter()
                .filter(|(_, c)| c.fill.is_none())
                .map(|(peer, c)| (c.verified, peer.clone()))
                .collect();
            idle.sort_unstable();
            for (_, peer) in idle.into_iter().take(MAX_CONVERSATIONS / 4) {
                self.conversations.remove(&peer);
            }
        }
        self.conversations
            .insert(peer, Conversation::starting_at(msgid));
    }

    /// A history page (NEWER than `cursor`) of the conversation with `peer`, fetched for a gap.
    pub(crate) fn history_page(
        &mut self,
        peer: &UserRef,
        cursor: u64,
        mut messages: Vec<wire::Msg>,
        more: bool,
        next_cursor: u64,
        out: &mut Vec<Step>,
    ) {
        match self.conversations.get(peer) {
            Some(c) if c.fill.is_some() && cursor <= c.verified => {}
            // The fill ended meanwhile (a login reset it): nothing to do.
            _ => return,
        }
        messages.sort_unstable_by_key(|m| m.msgid);
        for msg in messages {
            let msgid = msg.msgid;
            let Some(conversation) = self.conversations.get_mut(peer) else {
                return;
            };
            if msgid == 0 || msgid <= conversation.verified {
                continue;
            }
            // History is complete and ascending: the conversation is checked up to here.
            conversation.held.remove(&msgid);
            conversation.verified = msgid;
            if !self.accepted.contains(msgid) {
                self.accept(msg, out);
            }
        }
        let Some(conversation) = self.conversations.get_mut(peer) else {
            return;
        };
        let target = conversation
            .held
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(conversation.overflow_max);
        if more && next_cursor > cursor && conversation.verified < target {
            conversation.fill = Some(0);
            out.push(Step::FetchHistory {
                peer: peer.clone(),
                cursor: conversation.verified,
            });
            return;
        }
        let complete = conversation.verified >= conversation.overflow_max;
        self.end_fill(peer, complete, out);
    }

    /// A history page for `peer` failed; `give_up`: retrying cannot help.
    pub(crate) fn history_failed(&mut self, peer: &UserRef, give_up: bool, out: &mut Vec<Step>) {
        let Some(conversation) = self.conversations.get_mut(peer) else {
            return;
        };
        let Some(attempts) = &mut conversation.fill else {
            return;
        };
        *attempts += 1;
        if !give_up && *attempts < FILL_ATTEMPTS {
            out.push(Step::FetchHistory {
                peer: peer.clone(),
                cursor: conversation.verified,
            });
            return;
        }
        self.end_fill(peer, false, out);
    }

    /// Ends a fill and places what was held, in msgid order, without filling again.
    fn end_fill(&mut self, peer: &UserRef, complete: bool, out: &mut Vec<Step>) {
        let Some(conversation) = self.conversations.get_mut(peer) else {
            return;
        };
        conversation.fill = None;
        conversation.overflow_max = 0;
        if !complete {
            conversation.trusted = false;
        }
        let held = std::mem::take(&mut conversation.held);
        for msg in held.into_values() {
            if self.accepted.contains(msg.msgid) {
                out.push(self.duplicate(&msg));
            } else {
                self.place(peer.clone(), msg, true, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: (u32, &str) = (129, "alice");
    const DEVICE: &str = "phone";

    fn sequencer() -> Sequencer {
        Sequencer::new(UserRef::new(ME.0, ME.1), DEVICE.to_owned())
    }

    fn user(appcode: u32, uid: &str) -> Option<wire::UserRef> {
        Some(wire::UserRef {
            appcode,
            uid: uid.to_owned(),
        })
    }

    /// A message from `peer` (uid, appcode 130) to me.
    fn from(peer: &str, msgid: u64, prev: u64) -> wire::Msg {
        wire::Msg {
            msgid,
            prev_msgid: prev,
            from: user(130, peer),
            to: user(ME.0, ME.1),
            from_device: "d".into(),
            ..Default::default()
        }
    }

    /// A message I sent to `peer` from `device`.
    fn mine(peer: &str, msgid: u64, prev: u64, device: &str) -> wire::Msg {
        wire::Msg {
            msgid,
            prev_msgid: prev,
            from: user(ME.0, ME.1),
            to: user(130, peer),
            from_device: device.into(),
            ..Default::default()
        }
    }

    fn delivered(steps: &[Step]) -> Vec<u64> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Deliver(m) => Some(m.msgid),
                _ => None,
            })
            .collect()
    }

    fn fetches(steps: &[Step]) -> Vec<(String, u64)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::FetchHistory { peer, cursor } => Some((peer.uid.clone(), *cursor)),
                _ => None,
            })
            .collect()
    }

    fn live() -> Sequencer {
        let mut s = sequencer();
        s.begin_catch_up();
        s.finish_catch_up(&mut Vec::new());
        s
    }

    #[test]
    fn in_order_pushes_pass_and_repeats_are_dropped() {
        let mut s = live();
        let mut out = Vec::new();
        s.push(from("bob", 1, 0), &mut out);
        s.push(from("bob", 2, 1), &mut out);
        s.push(from("bob", 1, 0), &mut out);
        s.push(wire::Msg::default(), &mut out); // typing: msgid 0
        s.push(wire::Msg::default(), &mut out);
        assert_eq!(delivered(&out), vec![1, 2, 0, 0]);
        assert!(out.contains(&Step::Duplicate {
            msgid: 1,
            ackable: true
        }));
        assert!(fetches(&out).is_empty());
    }

    #[test]
    fn a_gap_is_filled_from_history_before_the_message() {
        let mut s = live();
        let mut out = Vec::new();
        s.push(from("bob", 1, 0), &mut out);
        s.push(from("bob", 3, 2), &mut out);
        assert_eq!(delivered(&out), vec![1]);
        assert_eq!(fetches(&out), vec![("bob".to_owned(), 1)]);
        // A push of the same conversation waits behind the fill; another conversation does not.
        let mut out = Vec::new();
        s.push(from("bob", 4, 3), &mut out);
        s.push(from("carol", 5, 0), &mut out);
        assert_eq!(delivered(&out), vec![5]);
        let mut out = Vec::new();
        let peer = UserRef::new(130, "bob");
        s.history_page(
            &peer,
            1,
            vec![from("bob", 2, 1), from("bob", 3, 2)],
            false,
            3,
            &mut out,
        );
        assert_eq!(delivered(&out), vec![2, 3, 4]);
        // The held copy of 3 is not delivered twice; later pushes of it are duplicates.
        let mut out = Vec::new();
        s.push(from("bob", 3, 2), &mut out);
        s.push(from("bob", 2, 1), &mut out);
        assert!(delivered(&out).is_empty());
    }

    #[test]
    fn prev_zero_means_unknown_and_is_never_filled() {
        let mut s = live();
        let mut out = Vec::new();
        s.push(from("bob", 10, 0), &mut out);
        s.push(from("bob", 20, 0), &mut out);
        // An older message arriving late is shown (not lost): the range was never checked.
        s.push(from("bob", 15, 0), &mut out);
        assert_eq!(delivered(&out), vec![10, 20, 15]);
        assert!(fetches(&out).is_empty());
    }

    #[test]
    fn a_checked_range_recognizes_repeats_beyond_the_dedup_window() {
        let mut s = live();
        let mut out = Vec::new();
        s.push(from("bob", 10, 0), &mut out);
        s.push(from("bob", 11, 10), &mut out);
        s.push(from("bob", 12, 11), &mut out);
        // Forget 11 from the window: the chain 10 → 11 → 12 still says it was shown.
        s.accepted = Dedup::new(1);
        s.accepted.insert(12);
        let mut out = Vec::new();
        s.push(from("bob", 11, 10), &mut out);
        assert_eq!(out, vec![Step::Ack { msgid: 11 }]);
    }

    #[test]
    fn catch_up_buffers_pushes_and_releases_them_merged_in_order() {
        let mut s = sequencer();
        s.begin_catch_up();
        let mut out = Vec::new();
        s.push(from("bob", 7, 6), &mut out);
        s.push(wire::Msg::default(), &mut out); // typing is not held back
        assert_eq!(delivered(&out), vec![0]);
        let mut out = Vec::new();
        s.catch_up_page(vec![from("bob", 5, 0), from("bob", 6, 5)], 6, &mut out);
        assert_eq!(delivered(&out), vec![5, 6]);
        // A push at or below the released cursor goes straight through (here: a repeat).
        let mut out = Vec::new();
        s.push(from("bob", 6, 5), &mut out);
        assert!(delivered(&out).is_empty());
        s.catch_up_page(vec![from("carol", 8, 0)], 8, &mut out);
        s.finish_catch_up(&mut out);
        assert_eq!(delivered(&out), vec![7, 8]);
        assert!(!s.is_catching_up());
    }

    #[test]
    fn a_full_catch_up_buffer_restarts_the_pull_below_what_it_dropped() {
        let mut s = sequencer();
        s.begin_catch_up();
        let mut out = Vec::new();
        for msgid in 1..=MAX_CATCH_UP_BUFFER as u64 + 2 {
            s.push(from("bob", msgid + 100, 0), &mut out);
        }
        assert_eq!(
            s.take_catch_up_restart(),
            Some(MAX_CATCH_UP_BUFFER as u64 + 100)
        );
        assert_eq!(s.take_catch_up_restart(), None);
        s.finish_catch_up(&mut out);
        assert_eq!(delivered(&out).len(), MAX_CATCH_UP_BUFFER);
    }

    #[test]
    fn own_sends_are_not_shown_and_anchor_the_conversation() {
        let mut s = live();
        let bob = UserRef::new(130, "bob");
        let mut out = Vec::new();
        s.own_sent(&bob, 10);
        s.push(from("bob", 11, 10), &mut out);
        assert_eq!(delivered(&out), vec![11]);
        assert!(fetches(&out).is_empty(), "no gap: 11 follows my 10");
        // My next message is not known to precede nothing else: the reply to it is checked.
        s.own_sent(&bob, 12);
        let mut out = Vec::new();
        s.push(from("bob", 13, 12), &mut out);
        assert_eq!(fetches(&out), vec![("bob".to_owned(), 11)]);
        let mut out = Vec::new();
        s.history_page(
            &bob,
            11,
            vec![mine("bob", 12, 11, DEVICE), from("bob", 13, 12)],
            false,
            13,
            &mut out,
        );
        assert_eq!(delivered(&out), vec![13]);
    }

    #[test]
    fn messages_sent_by_this_device_are_acked_not_shown_and_other_devices_are_shown() {
        let mut s = live();
        let mut out = Vec::new();
        s.push(mine("bob", 1, 0, "tablet"), &mut out);
        s.push(mine("bob", 2, 1, DEVICE), &mut out);
        assert_eq!(delivered(&out), vec![1]);
        assert!(
            !out.iter().any(|s| matches!(s, Step::Ack { .. })),
            "not in my inbox"
        );
        assert!(!s.ackable(&mine("bob", 1, 0, "tablet")));
        // A note to self is in my own inbox.
        let note = wire::Msg {
            to: user(ME.0, ME.1),
            ..mine("x", 3, 0, DEVICE)
        };
        assert!(s.ackable(&note));
        let mut out = Vec::new();
        s.push(note, &mut out);
        assert_eq!(out, vec![Step::Ack { msgid: 3 }]);
    }

    #[test]
    fn a_failing_fill_is_retried_then_given_up_without_losing_the_held() {
        let mut s = live();
        let bob = UserRef::new(130, "bob");
        let mut out = Vec::new();
        s.push(from("bob", 1, 0), &mut out);
        s.push(from("bob", 3, 2), &mut out);
        let mut out = Vec::new();
        s.history_failed(&bob, false, &mut out);
        assert_eq!(fetches(&out), vec![("bob".to_owned(), 1)]);
        s.history_failed(&bob, false, &mut out);
        s.history_failed(&bob, false, &mut out);
        assert_eq!(delivered(&out), vec![3]);
        // Untrusted now: a late 2 is shown rather than dropped.
        let mut out = Vec::new();
        s.push(from("bob", 2, 1), &mut out);
        assert_eq!(delivered(&out), vec![2]);
    }

    #[test]
    fn an_overflowing_hold_is_recovered_through_further_history_pages() {
        let mut s = live();
        let bob = UserRef::new(130, "bob");
        let mut out = Vec::new();
        s.push(from("bob", 1, 0), &mut out);
        s.push(from("bob", 3, 2), &mut out);
        let last = 3 + MAX_HELD as u64 + 5;
        for msgid in 4..=last {
            s.push(from("bob", msgid, msgid - 1), &mut out);
        }
        let mut out = Vec::new();
        let page: Vec<wire::Msg> = (2..=500).map(|id| from("bob", id, id - 1)).collect();
        s.history_page(&bob, 1, page, true, 500, &mut out);
        assert_eq!(fetches(&out), vec![("bob".to_owned(), 500)]);
        let page: Vec<wire::Msg> = (501..=last).map(|id| from("bob", id, id - 1)).collect();
        s.history_page(&bob, 500, page, false, last, &mut out);
        let shown = delivered(&out);
        assert_eq!(shown, (2..=last).collect::<Vec<_>>());
    }

    #[test]
    fn held_messages_move_to_the_catch_up_of_the_next_login() {
        let mut s = live();
        let mut out = Vec::new();
        s.push(from("bob", 1, 0), &mut out);
        s.push(from("bob", 3, 2), &mut out);
        s.begin_catch_up();
        let mut out = Vec::new();
        s.catch_up_page(vec![from("bob", 2, 1)], 3, &mut out);
        assert_eq!(delivered(&out), vec![2, 3]);
        // A page of the old fill arriving now is ignored.
        let mut out = Vec::new();
        s.history_page(
            &UserRef::new(130, "bob"),
            1,
            vec![from("bob", 2, 1)],
            false,
            2,
            &mut out,
        );
        assert!(out.is_empty());
    }
}
