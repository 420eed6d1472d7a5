//! When to dial the bootstrap nodes.
//!
//! Design decision: this is a sans-IO state machine. The adapter tells it what happened
//! (connected, dial failed, disconnected) and the current time in milliseconds; it answers which
//! nodes are due for a dial. Delays double after each failed dial up to a cap, so a node that
//! is down costs little, and one that comes back is found again within the cap. The main type is
//! [`Dialer`].

use std::collections::BTreeMap;

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};

use crate::api::{ApiError, ErrorCode, MAX_ADDR_LEN, MAX_BOOTSTRAP_ADDRS};

/// Exponential backoff between dial attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial_ms: 500, max_ms: 30_000 }
    }
}

impl Backoff {
    pub fn new(initial_ms: u64, max_ms: u64) -> Self {
        Backoff { initial_ms: initial_ms.max(1), max_ms: max_ms.max(initial_ms.max(1)) }
    }

    /// Delay before the next attempt after `failures` consecutive failures (0 = first retry).
    pub fn delay_ms(&self, failures: u32) -> u64 {
        let factor = 1u64.checked_shl(failures.min(32)).unwrap_or(u64::MAX);
        self.initial_ms.saturating_mul(factor).min(self.max_ms)
    }
}

/// Where a bootstrap node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not connected; next dial at this time (ms).
    Waiting { next_at_ms: u64 },
    /// A dial is in flight.
    Dialing,
    /// At least one connection is open.
    Connected,
}

#[derive(Debug, Clone)]
struct Entry {
    addrs: Vec<Multiaddr>,
    state: State,
    failures: u32,
}

/// One bootstrap node as the popup shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub peer_id: String,
    pub addrs: Vec<String>,
    /// "connected", "dialing" or "waiting".
    pub state: &'static str,
    pub failures: u32,
}

/// Decides which bootstrap nodes to dial and when.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    backoff: Backoff,
    nodes: BTreeMap<PeerId, Entry>,
}

impl Dialer {
    pub fn new(backoff: Backoff) -> Self {
        Dialer { backoff, nodes: BTreeMap::new() }
    }

    /// Replace the configured nodes. Nodes that stay keep their state; new ones are due now.
    pub fn set_nodes(&mut self, nodes: Vec<(PeerId, Vec<Multiaddr>)>, now_ms: u64) {
        let mut next = BTreeMap::new();
        for (peer, addrs) in nodes {
            let entry = match self.nodes.remove(&peer) {
                Some(mut old) => {
                    old.addrs = addrs;
                    old
                }
                None => Entry { addrs, state: State::Waiting { next_at_ms: now_ms }, failures: 0 },
            };
            next.insert(peer, entry);
        }
        self.nodes = next;
    }

    pub fn is_bootstrap(&self, peer: &PeerId) -> bool {
        self.nodes.contains_key(peer)
    }

    pub fn addrs(&self, peer: &PeerId) -> Option<&[Multiaddr]> {
        self.nodes.get(peer).map(|e| e.addrs.as_slice())
    }

    /// Nodes to dial now; they are marked as dialing.
    pub fn due(&mut self, now_ms: u64) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mut out = Vec::new();
        for (peer, entry) in &mut self.nodes {
            if let State::Waiting { next_at_ms } = entry.state {
                if next_at_ms <= now_ms {
                    entry.state = State::Dialing;
                    out.push((*peer, entry.addrs.clone()));
                }
            }
        }
        out
    }

    /// Milliseconds until the next node is due, if any is waiting.
    pub fn next_due_in(&self, now_ms: u64) -> Option<u64> {
        self.nodes
            .values()
            .filter_map(|e| match e.state {
                State::Waiting { next_at_ms } => Some(next_at_ms.saturating_sub(now_ms)),
                _ => None,
            })
            .min()
    }

    pub fn on_connected(&mut self, peer: &PeerId) {
        if let Some(e) = self.nodes.get_mut(peer) {
            e.state = State::Connected;
            e.failures = 0;
        }
    }

    pub fn on_dial_failed(&mut self, peer: &PeerId, now_ms: u64) {
        if let Some(e) = self.nodes.get_mut(peer) {
            if e.state == State::Connected {
                return; // another dial already succeeded
            }
            e.state = State::Waiting { next_at_ms: now_ms + self.backoff.delay_ms(e.failures) };
            e.failures = e.failures.saturating_add(1);
        }
    }

    /// The last connection to `peer` closed.
    pub fn on_disconnected(&mut self, peer: &PeerId, now_ms: u64) {
        if let Some(e) = self.nodes.get_mut(peer) {
            e.state = State::Waiting { next_at_ms: now_ms + self.backoff.delay_ms(e.failures) };
        }
    }

    pub fn status(&self) -> Vec<NodeStatus> {
        self.nodes
            .iter()
            .map(|(peer, e)| NodeStatus {
                peer_id: peer.to_string(),
                addrs: e.addrs.iter().map(|a| a.to_string()).collect(),
                state: match e.state {
                    State::Connected => "connected",
                    State::Dialing => "dialing",
                    State::Waiting { .. } => "waiting",
                },
                failures: e.failures,
            })
            .collect()
    }
}

/// Parse and group configured bootstrap addresses by node. Every address must end in
/// `/p2p/<peer id>` so the connection is authenticated against the expected key.
pub fn parse_addrs(addrs: &[String]) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, ApiError> {
    if addrs.len() > MAX_BOOTSTRAP_ADDRS {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!("at most {MAX_BOOTSTRAP_ADDRS} bootstrap addresses"),
        ));
    }
    let mut grouped: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
    for text in addrs {
        let text = text.trim();
        if text.len() > MAX_ADDR_LEN {
            return Err(ApiError::new(
                ErrorCode::InvalidParams,
                format!("address longer than {MAX_ADDR_LEN} characters"),
            ));
        }
        let addr: Multiaddr = text.parse().map_err(|e| {
            ApiError::new(ErrorCode::InvalidParams, format!("invalid multiaddr {text:?}: {e}"))
        })?;
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            return Err(ApiError::new(
                ErrorCode::InvalidParams,
                format!("address {text:?} must end with /p2p/<peer id>"),
            ));
        };
        match grouped.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, list)) if !list.contains(&addr) => list.push(addr),
            Some(_) => {}
            None => grouped.push((peer, vec![addr])),
        }
    }
    Ok(grouped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::Keypair;

    fn node() -> (PeerId, Multiaddr) {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let addr: Multiaddr =
            format!("/ip4/127.0.0.1/tcp/4401/ws/p2p/{peer}").parse().expect("valid");
        (peer, addr)
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff::new(500, 30_000);
        let delays: Vec<u64> = (0..8).map(|n| b.delay_ms(n)).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        assert_eq!(b.delay_ms(u32::MAX), 30_000);
    }

    #[test]
    fn new_nodes_are_due_at_once_and_only_once() {
        let (peer, addr) = node();
        let mut d = Dialer::new(Backoff::new(500, 30_000));
        d.set_nodes(vec![(peer, vec![addr.clone()])], 1000);
        assert_eq!(d.due(1000), vec![(peer, vec![addr])]);
        assert!(d.due(1000).is_empty(), "a dial in flight is not repeated");
        assert_eq!(d.next_due_in(1000), None);
    }

    #[test]
    fn failed_dials_back_off_and_success_resets() {
        let (peer, addr) = node();
        let mut d = Dialer::new(Backoff::new(500, 30_000));
        d.set_nodes(vec![(peer, vec![addr])], 0);
        let mut now = 0;
        for expected in [500, 1000, 2000, 4000] {
            assert_eq!(d.due(now).len(), 1);
            d.on_dial_failed(&peer, now);
            assert_eq!(d.next_due_in(now), Some(expected));
            assert!(d.due(now + expected - 1).is_empty());
            now += expected;
        }
        assert_eq!(d.due(now).len(), 1);
        d.on_connected(&peer);
        assert_eq!(d.status()[0].state, "connected");
        d.on_disconnected(&peer, now);
        assert_eq!(d.next_due_in(now), Some(500), "a fresh disconnect retries quickly");
    }

    #[test]
    fn reconfiguring_keeps_state_of_remaining_nodes() {
        let (a, addr_a) = node();
        let (b, addr_b) = node();
        let mut d = Dialer::default();
        d.set_nodes(vec![(a, vec![addr_a.clone()])], 0);
        d.due(0);
        d.on_connected(&a);
        d.set_nodes(vec![(a, vec![addr_a]), (b, vec![addr_b])], 10);
        let due = d.due(10);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, b);
        assert!(d.is_bootstrap(&a) && d.is_bootstrap(&b));
    }

    #[test]
    fn parse_groups_by_peer_and_requires_p2p() {
        let (peer, ws) = node();
        let rtc = format!("/ip4/127.0.0.1/udp/4402/webrtc-direct/p2p/{peer}");
        let parsed = parse_addrs(&[ws.to_string(), rtc.clone(), ws.to_string()]).expect("valid");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].1.len(), 2);
        let err = parse_addrs(&["/ip4/127.0.0.1/tcp/1/ws".into()]).expect_err("no peer id");
        assert_eq!(err.code, ErrorCode::InvalidParams);
        assert!(parse_addrs(&["garbage".into()]).is_err());
        let many = vec![ws.to_string(); MAX_BOOTSTRAP_ADDRS + 1];
        assert_eq!(parse_addrs(&many).expect_err("too many").code, ErrorCode::LimitExceeded);
    }
}
