//! Fair turns at work that only so much of can run at once (fetches from peers). At most
//! `total` run, at most `per_key` of them for one key (an origin); what is asked beyond that
//! waits in a bounded queue of its key's and gets a turn key by key, in order (round robin),
//! so that a site asking for a hundred objects neither fails most of them nor keeps other
//! sites waiting behind them all. Sans-IO: a waiter is whatever wakes the one waiting (a
//! channel's sender in the browser node).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound::{Excluded, Unbounded};

/// Why a turn could not even be waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueFull {
    #[error("{0} requests of this site wait already")]
    Key(usize),
    #[error("{0} requests wait already")]
    Total(usize),
}

#[derive(Debug)]
pub struct Turns<K: Ord + Clone, W> {
    total: usize,
    per_key: usize,
    waiting_per_key: usize,
    waiting_total: usize,
    /// Turns taken, by key (keys with none are not kept).
    running: BTreeMap<K, usize>,
    running_total: usize,
    waiting: BTreeMap<K, VecDeque<W>>,
    waiting_now: usize,
    /// The key that had the last turn handed on: the next goes to a later one.
    last: Option<K>,
}

impl<K: Ord + Clone, W> Turns<K, W> {
    /// `total` turns at once, `per_key` of them for one key; up to `waiting_per_key` wait for
    /// one key, `waiting_total` for all.
    pub fn new(total: usize, per_key: usize, waiting_per_key: usize, waiting_total: usize) -> Self {
        Turns {
            total,
            per_key,
            waiting_per_key,
            waiting_total,
            running: BTreeMap::new(),
            running_total: 0,
            waiting: BTreeMap::new(),
            waiting_now: 0,
            last: None,
        }
    }

    /// A turn for `key` now, if one is free for it (it is counted: give it back with
    /// [`Turns::give_back`]).
    pub fn try_take(&mut self, key: &K) -> bool {
        if !self.room_for(key) {
            return false;
        }
        self.count(key.clone());
        true
    }

    /// Wait for a turn for `key` (after [`Turns::try_take`] said no): `waiter` is handed back
    /// by a later [`Turns::give_back`], its turn taken.
    pub fn queue(&mut self, key: K, waiter: W) -> Result<(), QueueFull> {
        if self.waiting_now >= self.waiting_total {
            return Err(QueueFull::Total(self.waiting_now));
        }
        let queue = self.waiting.entry(key).or_default();
        if queue.len() >= self.waiting_per_key {
            return Err(QueueFull::Key(queue.len()));
        }
        queue.push_back(waiter);
        self.waiting_now += 1;
        Ok(())
    }

    /// `key`'s turn is over: it goes to the next waiter whose key has room now (counted as
    /// that key's), which `hand` wakes. Should `hand` say the waiter is gone, that turn is over
    /// too, and goes on in the same way.
    pub fn give_back(&mut self, key: &K, mut hand: impl FnMut(W) -> bool) {
        let mut key = key.clone();
        while let Some((next, waiter)) = self.pass_on(&key) {
            if hand(waiter) {
                return;
            }
            key = next;
        }
    }

    /// `key`'s turn is over; the waiter it goes to (see [`Turns::give_back`]), if any.
    fn pass_on(&mut self, key: &K) -> Option<(K, W)> {
        if let Some(n) = self.running.get_mut(key) {
            *n -= 1;
            self.running_total -= 1;
            if *n == 0 {
                self.running.remove(key);
            }
        }
        if self.running_total >= self.total {
            return None;
        }
        // Keys after the last one served first, then from the start.
        let after = match &self.last {
            Some(last) => self.waiting.range((Excluded(last), Unbounded)),
            None => self.waiting.range::<K, _>(..),
        };
        let has_room = |k: &&K| self.running.get(*k).copied().unwrap_or(0) < self.per_key;
        let next = after
            .map(|(k, _)| k)
            .find(has_room)
            .or_else(|| self.waiting.keys().find(has_room))?
            .clone();
        let queue = self.waiting.get_mut(&next)?;
        let waiter = queue.pop_front()?;
        if queue.is_empty() {
            self.waiting.remove(&next);
        }
        self.waiting_now -= 1;
        self.count(next.clone());
        self.last = Some(next.clone());
        Some((next, waiter))
    }

    /// Turns taken now, by all keys.
    pub fn running(&self) -> usize {
        self.running_total
    }

    /// Requests waiting now, for all keys.
    pub fn waiting(&self) -> usize {
        self.waiting_now
    }

    fn room_for(&self, key: &K) -> bool {
        self.running_total < self.total
            && self.running.get(key).copied().unwrap_or(0) < self.per_key
            // Those waiting for this key go first.
            && !self.waiting.contains_key(key)
    }

    fn count(&mut self, key: K) {
        *self.running.entry(key).or_default() += 1;
        self.running_total += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Give `key`'s turn back; the waiter woken, if any.
    fn back(turns: &mut Turns<&'static str, u32>, key: &'static str) -> Option<u32> {
        let mut woken = None;
        turns.give_back(&key, |w| {
            woken = Some(w);
            true
        });
        woken
    }

    #[test]
    fn one_key_cannot_take_every_turn_and_waiters_get_theirs_key_by_key() {
        let mut turns: Turns<&str, u32> = Turns::new(4, 3, 2, 3);
        assert!((0..3).all(|_| turns.try_take(&"a")), "a takes its three");
        assert!(!turns.try_take(&"a"), "no more than three for one key");
        assert!(turns.try_take(&"b"), "the fourth is b's");
        assert!(!turns.try_take(&"c"), "all four taken");
        assert_eq!(turns.queue("a", 1), Ok(()));
        assert_eq!(turns.queue("a", 2), Ok(()));
        assert_eq!(turns.queue("a", 3), Err(QueueFull::Key(2)));
        assert_eq!(turns.queue("c", 10), Ok(()));
        assert_eq!(turns.queue("d", 20), Err(QueueFull::Total(3)));
        assert_eq!((turns.running(), turns.waiting()), (4, 3));
        // b is done: a is at its three, so c goes first though a asked before it.
        assert_eq!(back(&mut turns, "b"), Some(10));
        assert!(!turns.try_take(&"b"), "all four taken again");
        // One of a's is done: its first waiter takes the turn.
        assert_eq!(back(&mut turns, "a"), Some(1));
        // c is done, and nobody but a waits, which is at its three.
        assert_eq!(back(&mut turns, "c"), None);
        assert_eq!(back(&mut turns, "a"), Some(2));
        assert_eq!((turns.running(), turns.waiting()), (3, 0));
        for _ in 0..3 {
            assert_eq!(back(&mut turns, "a"), None);
        }
        assert_eq!(turns.running(), 0);
        assert!(turns.running.is_empty() && turns.waiting.is_empty(), "nothing left counted");
    }

    #[test]
    fn turns_go_round_the_keys_that_wait() {
        let mut turns: Turns<&str, u32> = Turns::new(1, 1, 8, 16);
        assert!(turns.try_take(&"x"));
        for (key, n) in [("a", 1), ("a", 2), ("b", 3), ("b", 4), ("c", 5)] {
            turns.queue(key, n).expect("room to wait");
        }
        assert!(!turns.try_take(&"d"));
        let mut order = Vec::new();
        let mut key = "x";
        while let Some((next, n)) = turns.pass_on(&key) {
            order.push(n);
            key = next;
        }
        assert_eq!(order, [1, 3, 5, 2, 4]);
    }

    #[test]
    fn a_turn_handed_to_a_waiter_that_is_gone_goes_on_to_the_next() {
        let mut turns: Turns<&str, u32> = Turns::new(2, 2, 8, 16);
        assert!(turns.try_take(&"a") && turns.try_take(&"b"));
        turns.queue("a", 1).expect("room to wait");
        assert_eq!(back(&mut turns, "b"), Some(1));
        assert!(!turns.try_take(&"a"), "a has both");
        assert!(!turns.try_take(&"c"), "and c waits behind");
        turns.queue("b", 2).expect("room to wait");
        turns.queue("c", 3).expect("room to wait");
        // b's waiter is gone: its turn goes on to c's.
        let mut tried = Vec::new();
        turns.give_back(&"a", |w| {
            tried.push(w);
            w != 2
        });
        assert_eq!(tried, [2, 3]);
        assert_eq!((turns.running(), turns.waiting()), (2, 0), "a's one and c's");
        assert_eq!(back(&mut turns, "c"), None);
        assert!(turns.try_take(&"d"), "a freed turn is anyone's");
    }
}
