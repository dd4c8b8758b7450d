//! Outgoing frame compression for sessions that agreed on an algorithm at LOGIN.
//!
//! Where: frames are compressed when they are **queued** for a connection
//! ([`crate::write_queue::WriteQueue`]), in the caller's task, never in the writer — the writer
//! sends whatever bytes it is given, possibly shared between sessions.
//!
//! Cost: a MSG push is encoded once by logic and the same `Bytes` is queued to every
//! recipient (both sides of a c2c, each device, a broadcast of thousands). Compressing per
//! recipient would cost one compression per session; [`FrameCache`] keeps the last few
//! compressed pushes per algorithm, keyed by the identity of the encoded frame (its pointer
//! and length, with the original kept alive in the entry so the memory cannot be reused for
//! another frame meanwhile), so a fan-out compresses once per algorithm. Responses answer one
//! request and are compressed directly, without touching the cache. The cache holds at most
//! [`CACHE_ENTRIES`] frames per algorithm (with default limits under ~2 MB in all).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use longlink_proto::compress::compress_encoded;
use longlink_proto::{Compression, FrameType, HEADER_LEN};

/// Compressed pushes remembered per algorithm: a fan-out queues one frame to all its
/// recipients in a row, so a handful suffices even with several fan-outs interleaved.
pub(crate) const CACHE_ENTRIES: usize = 8;

/// One remembered frame: the original (kept alive, so its address stays its own) and its
/// compressed form (`None`: not worth compressing, sent as it is).
type Entry = (Bytes, Option<Bytes>);

/// The gate-wide cache of compressed pushes, one small list per algorithm.
#[derive(Debug, Default)]
pub(crate) struct FrameCache {
    zstd: Mutex<VecDeque<Entry>>,
    lz4: Mutex<VecDeque<Entry>>,
}

impl FrameCache {
    fn list(&self, algorithm: Compression) -> &Mutex<VecDeque<Entry>> {
        match algorithm {
            Compression::Zstd => &self.zstd,
            Compression::Lz4 => &self.lz4,
        }
    }

    fn get(&self, algorithm: Compression, frame: &Bytes) -> Option<Option<Bytes>> {
        let list = self.list(algorithm).lock().ok()?;
        list.iter()
            .find(|(original, _)| same(original, frame))
            .map(|(_, packed)| packed.clone())
    }

    fn put(&self, algorithm: Compression, frame: Bytes, packed: Option<Bytes>) {
        if let Ok(mut list) = self.list(algorithm).lock() {
            if list.len() >= CACHE_ENTRIES {
                list.pop_front();
            }
            list.push_back((frame, packed));
        }
    }
}

/// The same encoded frame: same memory, same length. Sound because the cache keeps its
/// original alive, so no other frame can be allocated at that address meanwhile, and `Bytes`
/// are immutable.
fn same(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

/// A connection's outgoing compression, set once its LOGIN agreed on an algorithm.
#[derive(Debug, Clone)]
pub(crate) struct Outbound {
    pub(crate) algorithm: Compression,
    min_bytes: u32,
    cache: Arc<FrameCache>,
}

impl Outbound {
    pub(crate) fn new(algorithm: Compression, min_bytes: u32, cache: Arc<FrameCache>) -> Self {
        Self {
            algorithm,
            min_bytes,
            cache,
        }
    }

    /// The bytes to queue for `frame`: compressed (flag bit 0 set) when it is worth it,
    /// else `frame` itself.
    pub(crate) fn apply(&self, frame: Bytes) -> Bytes {
        // Cheap checks first: most frames (acks, keepalives, small messages) stop here.
        if frame.len() < HEADER_LEN + self.min_bytes as usize {
            return frame;
        }
        let push = frame.get(18) == Some(&(FrameType::Push as u8));
        if !push {
            return compress_encoded(&frame, self.algorithm, self.min_bytes).unwrap_or(frame);
        }
        if let Some(cached) = self.cache.get(self.algorithm, &frame) {
            return cached.unwrap_or(frame);
        }
        let packed = compress_encoded(&frame, self.algorithm, self.min_bytes);
        self.cache
            .put(self.algorithm, frame.clone(), packed.clone());
        packed.unwrap_or(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use longlink_proto::{Cmd, FLAG_COMPRESSED, Frame, wire};

    fn msg(len: usize) -> Bytes {
        Frame::push(
            Cmd::Msg,
            7,
            &wire::Msg {
                content: vec![b'x'; len].into(),
                ..Default::default()
            },
        )
        .to_bytes()
    }

    #[test]
    fn a_shared_push_is_compressed_once_per_algorithm() {
        let cache = Arc::new(FrameCache::default());
        let zstd = Outbound::new(Compression::Zstd, 512, cache.clone());
        let lz4 = Outbound::new(Compression::Lz4, 512, cache.clone());
        let frame = msg(4000);
        let a = zstd.apply(frame.clone());
        let b = zstd.apply(frame.clone());
        assert_eq!(a[3], FLAG_COMPRESSED);
        assert!(a.len() < frame.len());
        assert!(same(&a, &b), "the second recipient gets the cached bytes");
        let c = lz4.apply(frame.clone());
        assert_eq!(c[3], FLAG_COMPRESSED);
        assert!(!same(&a, &c));
        // An equal but distinct frame is not mistaken for the cached one.
        let other = msg(4000);
        assert!(!same(&zstd.apply(other), &a));
        // Small frames go as they are.
        let small = msg(10);
        assert!(same(&zstd.apply(small.clone()), &small));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = Arc::new(FrameCache::default());
        let zstd = Outbound::new(Compression::Zstd, 0, cache.clone());
        for _ in 0..50 {
            zstd.apply(msg(1000));
        }
        assert_eq!(cache.zstd.lock().unwrap().len(), CACHE_ENTRIES);
    }
}
