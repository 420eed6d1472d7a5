//! Bounds on the streams peers open to us. A peer may open as many streams as its transport
//! lets it, and each one served holds buffers and tasks (for `/webrtc-signaling`, a whole
//! `RTCPeerConnection`): every protocol we answer admits a stream only while fewer than its
//! limits are open, from that peer and from all peers, and drops (resets) the others.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// How many streams of one protocol may be open at once: `per_peer` from any one peer,
/// `total` from all of them. Clones share the count.
#[derive(Debug, Clone)]
pub struct InboundLimit<K: Hash + Eq + Clone> {
    per_peer: usize,
    total: usize,
    open: Arc<Mutex<Open<K>>>,
}

#[derive(Debug)]
struct Open<K> {
    total: usize,
    by_peer: HashMap<K, usize>,
}

/// Why a stream was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the peer already has {0} streams of this protocol open")]
    Peer(usize),
    #[error("{0} streams of this protocol are already open")]
    Total(usize),
}

/// An admitted stream's place; the place is given back when this is dropped.
#[derive(Debug)]
pub struct Admitted<K: Hash + Eq + Clone> {
    peer: K,
    open: Arc<Mutex<Open<K>>>,
}

impl<K: Hash + Eq + Clone> InboundLimit<K> {
    pub fn new(per_peer: usize, total: usize) -> Self {
        InboundLimit {
            per_peer,
            total,
            open: Arc::new(Mutex::new(Open { total: 0, by_peer: HashMap::new() })),
        }
    }

    /// A place for one more stream from `peer`, if the limits allow it.
    pub fn admit(&self, peer: &K) -> Result<Admitted<K>, Refused> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.total {
            return Err(Refused::Total(open.total));
        }
        let from_peer = open.by_peer.entry(peer.clone()).or_default();
        if *from_peer >= self.per_peer {
            return Err(Refused::Peer(*from_peer));
        }
        *from_peer += 1;
        open.total += 1;
        Ok(Admitted { peer: peer.clone(), open: self.open.clone() })
    }

    /// Streams open now, from all peers.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).total
    }

    /// Streams open now from `peer`.
    pub fn open_from(&self, peer: &K) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.by_peer.get(peer).copied().unwrap_or(0)
    }
}

impl<K: Hash + Eq + Clone> Drop for Admitted<K> {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_admitted_up_to_each_limit_and_places_come_back_when_dropped() {
        let limit = InboundLimit::new(2, 3);
        let a1 = limit.admit(&"a").expect("a's first");
        let a2 = limit.admit(&"a").expect("a's second");
        assert_eq!(limit.admit(&"a").err(), Some(Refused::Peer(2)));
        let b1 = limit.admit(&"b").expect("b's first");
        assert_eq!(limit.admit(&"c").err(), Some(Refused::Total(3)), "all peers together");
        assert_eq!(limit.open(), 3);
        drop(a1);
        assert_eq!(limit.open(), 2);
        assert_eq!(
            (limit.open_from(&"a"), limit.open_from(&"b"), limit.open_from(&"z")),
            (1, 1, 0)
        );
        let c1 = limit.admit(&"c").expect("a place came back");
        assert_eq!(limit.admit(&"b").err(), Some(Refused::Total(3)));
        drop((a2, b1, c1));
        assert_eq!(limit.open(), 0);
        // Nothing is left counted against a peer whose streams all closed.
        let again: Vec<_> = (0..2).map(|_| limit.admit(&"a").expect("a again")).collect();
        assert_eq!(again.len(), 2);
        assert_eq!(limit.open.lock().expect("lock").by_peer.len(), 1);
    }
}
