//! Small blocks kept in memory, the least recently used given up first.
//!
//! A peer that serves a small object reads it from its store for every asker: for a block of a
//! few KiB that read is most of the time the asker waits (a store in IndexedDB answers each read
//! from another process). Blocks put here must have been checked against their CIDs already;
//! whoever keeps the cache decides when what it holds may no longer be handed out (and clears
//! it then).

use cid::Cid;
use hashlink::LinkedHashMap;

/// Blocks of at most `max_block` bytes, `max_bytes` in all.
#[derive(Debug)]
pub struct RecentBlocks {
    blocks: LinkedHashMap<Cid, Vec<u8>>,
    bytes: usize,
    max_block: usize,
    max_bytes: usize,
}

impl RecentBlocks {
    pub fn new(max_block: usize, max_bytes: usize) -> Self {
        RecentBlocks { blocks: LinkedHashMap::new(), bytes: 0, max_block, max_bytes }
    }

    /// Whether a block of `len` bytes would be kept.
    pub fn takes(&self, len: usize) -> bool {
        len <= self.max_block && len <= self.max_bytes
    }

    /// Keep `data`, verified to be block `cid`, if it is small enough; the least recently used
    /// go to make room.
    pub fn insert(&mut self, cid: Cid, data: Vec<u8>) {
        if !self.takes(data.len()) {
            return;
        }
        self.bytes += data.len();
        if let Some(old) = self.blocks.insert(cid, data) {
            self.bytes -= old.len();
        }
        while self.bytes > self.max_bytes {
            match self.blocks.pop_front() {
                Some((_, gone)) => self.bytes -= gone.len(),
                None => break,
            }
        }
    }

    /// Block `cid`'s bytes, if kept (it becomes the most recently used).
    pub fn get(&mut self, cid: &Cid) -> Option<Vec<u8>> {
        self.blocks.to_back(cid).map(|data| data.clone())
    }

    pub fn contains(&self, cid: &Cid) -> bool {
        self.blocks.contains_key(cid)
    }

    pub fn clear(&mut self) {
        self.blocks.clear();
        self.bytes = 0;
    }

    /// Bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use multihash_codetable::{Code, MultihashDigest};

    fn block(fill: u8, len: usize) -> (Cid, Vec<u8>) {
        let data = vec![fill; len];
        (Cid::new_v1(0x55, Code::Sha2_256.digest(&data)), data)
    }

    #[test]
    fn keeps_small_blocks_within_its_bytes_least_recently_used_first_out() {
        let mut cache = RecentBlocks::new(4, 10);
        let (a, b, c) = (block(1, 4), block(2, 4), block(3, 4));
        cache.insert(a.0, a.1.clone());
        cache.insert(b.0, b.1.clone());
        assert_eq!(cache.get(&a.0), Some(a.1.clone())); // a is now the most recent
        cache.insert(c.0, c.1.clone()); // 12 bytes: b goes
        assert!(!cache.contains(&b.0));
        assert_eq!(cache.get(&a.0), Some(a.1));
        assert_eq!(cache.get(&c.0), Some(c.1));
        assert_eq!(cache.bytes(), 8);
    }

    #[test]
    fn refuses_large_blocks_and_counts_a_block_put_twice_once() {
        let mut cache = RecentBlocks::new(4, 10);
        let big = block(1, 5);
        assert!(!cache.takes(5));
        cache.insert(big.0, big.1);
        assert!(!cache.contains(&big.0));
        let a = block(2, 3);
        cache.insert(a.0, a.1.clone());
        cache.insert(a.0, a.1);
        assert_eq!(cache.bytes(), 3);
        cache.clear();
        assert_eq!((cache.bytes(), cache.contains(&a.0)), (0, false));
    }
}
