//! Snowflake-style msgids: `(unix_ms << 20) | (node_id << 10) | seq`.
//!
//! The high bits are the embedded store's (`unix_ms << 20`, crates/store/src/sqlite.rs), so
//! msgids of both backends compare by time. The low 20 bits split into a node id (10 bits, one
//! per logic process, leased by the server) and a per-millisecond sequence (10 bits): two nodes
//! never collide without talking to each other, and each node hands out 1024 ids per ms.
//!
//! A node never goes backwards: it keeps the last id it handed out and counts up from it when
//! the clock steps back or the sequence of a millisecond runs out (borrowing the next
//! millisecond; the clock catches up). [`MsgidGen::next_above`] also takes a floor — the
//! largest msgid committed so far, read under the transaction's locks — so a node whose clock
//! is behind still gives an inbox a msgid above the ones already in it (see `store.rs`).

use std::sync::Mutex;

/// Bits below the millisecond (the embedded store's shift).
pub(crate) const TIME_SHIFT: u32 = 20;
/// Bits of the per-millisecond sequence.
const SEQ_BITS: u32 = 10;
/// Largest node id + 1.
pub const MAX_NODES: u16 = 1 << (TIME_SHIFT - SEQ_BITS);
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
const NODE_MASK: u64 = (MAX_NODES as u64) - 1;

/// Hands out this node's msgids.
#[derive(Debug)]
pub(crate) struct MsgidGen {
    node: u64,
    /// The last id handed out (0 = none yet).
    last: Mutex<u64>,
}

impl MsgidGen {
    /// `node` must be below [`MAX_NODES`] (checked by `PgStore::open`).
    pub(crate) fn new(node: u16) -> Self {
        Self {
            node: u64::from(node) & NODE_MASK,
            last: Mutex::new(0),
        }
    }

    /// The next id of this node: above `floor`, above every id it handed out before, and at
    /// least the clock's `now_ms << 20` with this node's bits. `None` only when the 63-bit
    /// space is exhausted.
    pub(crate) fn next_above(&self, floor: u64, now_ms: u64) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let base = (*last).max(floor);
        let from_clock = now_ms
            .checked_mul(1 << TIME_SHIFT)
            .map(|v| v | (self.node << SEQ_BITS))
            .filter(|&v| v <= i64::MAX as u64);
        let id = self.smallest_above(base)?.max(from_clock.unwrap_or(0));
        if id > i64::MAX as u64 {
            return None;
        }
        *last = id;
        Some(id)
    }

    /// The smallest id with this node's bits that is greater than `base`.
    fn smallest_above(&self, base: u64) -> Option<u64> {
        let ms = base >> TIME_SHIFT;
        let node = (base >> SEQ_BITS) & NODE_MASK;
        let seq = base & SEQ_MASK;
        let (ms, seq) = if node < self.node {
            (ms, 0)
        } else if node == self.node && seq < SEQ_MASK {
            (ms, seq + 1)
        } else {
            (ms.checked_add(1)?, 0)
        };
        Some(ms.checked_mul(1 << TIME_SHIFT)? | (self.node << SEQ_BITS) | seq)
    }
}

/// The node id in a msgid.
#[cfg(test)]
pub(crate) fn node_of(msgid: u64) -> u64 {
    (msgid >> SEQ_BITS) & NODE_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_780_000_000_000;

    #[test]
    fn layout_is_time_node_sequence() {
        let ids = MsgidGen::new(5);
        let first = ids.next_above(0, NOW).unwrap();
        assert_eq!(first, (NOW << 20) | (5 << 10));
        let second = ids.next_above(0, NOW).unwrap();
        assert_eq!(second, first + 1, "same ms: the sequence counts");
        assert_eq!(node_of(second), 5);
        let later = ids.next_above(0, NOW + 3).unwrap();
        assert_eq!(later, ((NOW + 3) << 20) | (5 << 10));
    }

    #[test]
    fn never_goes_back_when_the_clock_does() {
        let ids = MsgidGen::new(7);
        let a = ids.next_above(0, NOW).unwrap();
        let b = ids.next_above(0, NOW - 10_000).unwrap();
        let c = ids.next_above(0, NOW - 20_000).unwrap();
        assert!(a < b && b < c, "{a} {b} {c}");
        assert!([b, c].iter().all(|&id| node_of(id) == 7));
    }

    #[test]
    fn a_full_millisecond_borrows_the_next_one() {
        let ids = MsgidGen::new(1);
        let got: Vec<u64> = (0..2000).map(|_| ids.next_above(0, NOW).unwrap()).collect();
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        assert!(got.iter().all(|&id| node_of(id) == 1));
        assert_eq!(got[1023] >> 20, NOW);
        assert_eq!(got[1024] >> 20, NOW + 1);
    }

    #[test]
    fn the_floor_lifts_a_node_whose_clock_is_behind() {
        let ahead = MsgidGen::new(900);
        let behind = MsgidGen::new(3);
        let high = ahead.next_above(0, NOW + 5_000).unwrap();
        let next = behind.next_above(high, NOW).unwrap();
        assert!(next > high);
        assert_eq!(node_of(next), 3);
        assert_eq!(
            next >> 20,
            (high >> 20) + 1,
            "node 3 < node 900: the next ms"
        );
        // A floor of this node's own id with a full sequence moves to the next ms too.
        let own_full = (NOW << 20) | (3 << 10) | SEQ_MASK;
        let after = MsgidGen::new(3).next_above(own_full, NOW).unwrap();
        assert_eq!(after, ((NOW + 1) << 20) | (3 << 10));
        // A lower node's id in the same ms: same ms, this node's first id.
        let low = (NOW << 20) | (1 << 10) | 77;
        assert_eq!(
            MsgidGen::new(2).next_above(low, NOW).unwrap(),
            (NOW << 20) | (2 << 10)
        );
    }

    #[test]
    fn two_nodes_never_collide() {
        let (a, b) = (MsgidGen::new(1), MsgidGen::new(2));
        let mut seen = std::collections::HashSet::new();
        for i in 0..5000u64 {
            let now = NOW + i / 700;
            assert!(seen.insert(a.next_above(0, now).unwrap()));
            assert!(seen.insert(b.next_above(0, now).unwrap()));
        }
    }

    #[test]
    fn exhaustion_is_none_not_a_panic() {
        let ids = MsgidGen::new(1);
        assert_eq!(ids.next_above(i64::MAX as u64, NOW), None);
        assert_eq!(ids.next_above(u64::MAX, NOW), None);
        assert!(
            ids.next_above(0, u64::MAX).is_some(),
            "an absurd clock is ignored"
        );
    }
}
