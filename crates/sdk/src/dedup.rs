//! [`Dedup`]: a bounded set of msgids (FIFO eviction), used for the msgids accepted for the
//! application and for those it has taken.

use std::collections::{HashSet, VecDeque};

/// Remembers the last `capacity` msgids inserted (FIFO eviction).
#[derive(Debug)]
pub(crate) struct Dedup {
    capacity: usize,
    seen: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Dedup {
    /// How many msgids a client remembers (per set): at 16 bytes of set and queue per id,
    /// about 1.5 MiB when full. Per-conversation high-water marks (`sequencer`) cover what
    /// falls out of the window.
    pub(crate) const DEFAULT_CAPACITY: usize = 65_536;

    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // Grown on demand: an idle connection should not pay for 65,536 slots up front.
        Self {
            capacity,
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    pub(crate) fn contains(&self, msgid: u64) -> bool {
        self.seen.contains(&msgid)
    }

    /// Records `msgid`; returns `false` when it was already known. msgid 0 (ephemeral) is
    /// never recorded.
    pub(crate) fn insert(&mut self, msgid: u64) -> bool {
        if msgid == 0 {
            return true;
        }
        if !self.seen.insert(msgid) {
            return false;
        }
        self.order.push_back(msgid);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_fifo() {
        let mut dedup = Dedup::new(3);
        assert!(dedup.insert(1));
        assert!(!dedup.insert(1));
        assert!(dedup.insert(2));
        assert!(dedup.insert(3));
        assert!(dedup.insert(4));
        assert!(!dedup.contains(1), "oldest evicted");
        assert!(dedup.contains(2) && dedup.contains(4));
        assert!(dedup.insert(0) && dedup.insert(0) && !dedup.contains(0));
    }
}
