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

/// Where one address of a bootstrap node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not connected; next dial at this time (ms).
    Waiting { next_at_ms: u64 },
    /// A dial started at this time is in flight.
    Dialing { since_ms: u64 },
    /// The node is connected (through this or another address).
    Connected,
}

#[derive(Debug, Clone)]
struct Addr {
    addr: Multiaddr,
    state: State,
    failures: u32,
}

#[derive(Debug, Clone)]
struct Entry {
    addrs: Vec<Addr>,
    connected: bool,
    /// When it last connected (ms).
    connected_at: u64,
}

/// One bootstrap node as the popup shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub peer_id: String,
    pub addrs: Vec<String>,
    /// "connected", "dialing" or "waiting".
    pub state: &'static str,
    /// Failed dials since the last connection, over all addresses.
    pub failures: u32,
}

/// Decides which bootstrap addresses to dial and when.
///
/// Each address has its own backoff, so a transport whose dials hang (a WebRTC dial to a dead
/// UDP port takes seconds to fail) does not hold back one that fails or succeeds at once. The
/// addresses of one node are tried in the configured order, happy-eyeballs style: the next one
/// starts when the earlier ones have failed or have been in flight for [`Dialer::STAGGER_MS`].
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    backoff: Backoff,
    nodes: BTreeMap<PeerId, Entry>,
}

impl Dialer {
    /// How long a dial may be in flight before the node's next address is tried beside it.
    pub const STAGGER_MS: u64 = 2_000;
    /// A connection that closes sooner than this counts as a failed dial: a node at its
    /// connection limit closes new ones at once, and being dialled again at once, by every
    /// browser, is the last thing it needs.
    pub const SHORT_LIVED_MS: u64 = 5_000;

    pub fn new(backoff: Backoff) -> Self {
        Dialer { backoff, nodes: BTreeMap::new() }
    }

    /// Replace the configured nodes. Addresses that stay keep their state; new ones are due now.
    pub fn set_nodes(&mut self, nodes: Vec<(PeerId, Vec<Multiaddr>)>, now_ms: u64) {
        let mut next = BTreeMap::new();
        for (peer, addrs) in nodes {
            let old = self.nodes.remove(&peer);
            let connected = old.as_ref().is_some_and(|e| e.connected);
            let addrs = addrs
                .into_iter()
                .map(|addr| {
                    old.as_ref()
                        .and_then(|e| e.addrs.iter().find(|a| a.addr == addr).cloned())
                        .unwrap_or(Addr {
                            addr,
                            state: if connected {
                                State::Connected
                            } else {
                                State::Waiting { next_at_ms: now_ms }
                            },
                            failures: 0,
                        })
                })
                .collect();
            let connected_at = old.as_ref().map_or(0, |e| e.connected_at);
            next.insert(peer, Entry { addrs, connected, connected_at });
        }
        self.nodes = next;
    }

    pub fn is_bootstrap(&self, peer: &PeerId) -> bool {
        self.nodes.contains_key(peer)
    }

    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.nodes.get(peer).is_some_and(|e| e.connected)
    }

    /// The configured addresses of a node, in order.
    pub fn addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.nodes
            .get(peer)
            .map(|e| e.addrs.iter().map(|a| a.addr.clone()).collect())
            .unwrap_or_default()
    }

    /// Addresses to dial now; they are marked as dialing.
    pub fn due(&mut self, now_ms: u64) -> Vec<(PeerId, Multiaddr)> {
        let mut out = Vec::new();
        for (peer, entry) in &mut self.nodes {
            if entry.connected {
                continue;
            }
            for a in &mut entry.addrs {
                match a.state {
                    // An earlier address still has its chance: wait for it.
                    State::Dialing { since_ms } if now_ms < since_ms + Self::STAGGER_MS => break,
                    State::Waiting { next_at_ms } if next_at_ms <= now_ms => {
                        a.state = State::Dialing { since_ms: now_ms };
                        out.push((*peer, a.addr.clone()));
                        break;
                    }
                    _ => {}
                }
            }
        }
        out
    }

    /// Milliseconds until the next address is due, if any is waiting.
    pub fn next_due_in(&self, now_ms: u64) -> Option<u64> {
        self.nodes
            .values()
            .filter(|e| !e.connected)
            .flat_map(|e| e.addrs.iter())
            .filter_map(|a| match a.state {
                State::Waiting { next_at_ms } => Some(next_at_ms.saturating_sub(now_ms)),
                _ => None,
            })
            .min()
    }

    pub fn on_connected(&mut self, peer: &PeerId, now_ms: u64) {
        if let Some(e) = self.nodes.get_mut(peer) {
            if !e.connected {
                e.connected = true;
                e.connected_at = now_ms;
            }
            for a in &mut e.addrs {
                // A dial still in flight through another address finishes on its own; whatever
                // it ends in, the node is connected and nothing is due. (The failures count
                // on until the connection proves to last: see `on_disconnected`.)
                a.state = State::Connected;
            }
        }
    }

    /// A dial of `addr` failed (or a peer condition stopped it).
    pub fn on_dial_failed(&mut self, peer: &PeerId, addr: &Multiaddr, now_ms: u64) {
        let Some(e) = self.nodes.get_mut(peer) else { return };
        let connected = e.connected;
        if let Some(a) = e.addrs.iter_mut().find(|a| &a.addr == addr) {
            if connected {
                a.state = State::Connected;
                return;
            }
            a.state = State::Waiting { next_at_ms: now_ms + self.backoff.delay_ms(a.failures) };
            a.failures = a.failures.saturating_add(1);
        }
    }

    /// The last connection to `peer` closed: after a connection that lasted, the node is
    /// dialled again soon; after one that did not ([`Dialer::SHORT_LIVED_MS`]), as after a
    /// failed dial.
    pub fn on_disconnected(&mut self, peer: &PeerId, now_ms: u64) {
        if let Some(e) = self.nodes.get_mut(peer) {
            e.connected = false;
            let lasted = now_ms.saturating_sub(e.connected_at) >= Self::SHORT_LIVED_MS;
            for a in &mut e.addrs {
                if lasted {
                    a.failures = 0;
                }
                a.state = State::Waiting { next_at_ms: now_ms + self.backoff.delay_ms(a.failures) };
                if !lasted {
                    a.failures = a.failures.saturating_add(1);
                }
            }
        }
    }

    pub fn status(&self) -> Vec<NodeStatus> {
        self.nodes
            .iter()
            .map(|(peer, e)| NodeStatus {
                peer_id: peer.to_string(),
                addrs: e.addrs.iter().map(|a| a.addr.to_string()).collect(),
                state: if e.connected {
                    "connected"
                } else if e.addrs.iter().any(|a| matches!(a.state, State::Dialing { .. })) {
                    "dialing"
                } else {
                    "waiting"
                },
                failures: if e.connected { 0 } else { e.addrs.iter().map(|a| a.failures).sum() },
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

    fn rtc(peer: &PeerId) -> Multiaddr {
        format!("/ip4/127.0.0.1/udp/4402/webrtc-direct/p2p/{peer}").parse().expect("valid")
    }

    #[test]
    fn new_nodes_are_due_at_once_and_only_once() {
        let (peer, addr) = node();
        let mut d = Dialer::new(Backoff::new(500, 30_000));
        d.set_nodes(vec![(peer, vec![addr.clone()])], 1000);
        assert_eq!(d.due(1000), vec![(peer, addr)]);
        assert!(d.due(1000).is_empty(), "a dial in flight is not repeated");
        assert_eq!(d.next_due_in(1000), None);
        assert_eq!(d.status()[0].state, "dialing");
    }

    /// Four attempts of `d` at its one node, each ended by `end` (which returns when the end
    /// is seen): each is dialled when due and waits the next step of the back-off after.
    /// Returns when the fifth is due.
    fn four_attempts(d: &mut Dialer, mut end: impl FnMut(&mut Dialer, u64) -> u64) -> u64 {
        let mut now = 0;
        for expected in [500, 1000, 2000, 4000] {
            assert_eq!(d.due(now).len(), 1);
            let seen = end(d, now);
            assert_eq!(d.next_due_in(seen), Some(expected));
            assert!(d.due(seen + expected - 1).is_empty());
            now = seen + expected;
        }
        now
    }

    #[test]
    fn failed_dials_back_off_and_success_resets() {
        let (peer, addr) = node();
        let mut d = Dialer::new(Backoff::new(500, 30_000));
        d.set_nodes(vec![(peer, vec![addr.clone()])], 0);
        let mut now = four_attempts(&mut d, |d, now| {
            d.on_dial_failed(&peer, &addr, now);
            now
        });
        assert_eq!(d.status()[0].failures, 4);
        assert_eq!(d.due(now).len(), 1);
        d.on_connected(&peer, now);
        assert_eq!(d.status()[0].state, "connected");
        assert!(d.due(now + 100_000).is_empty(), "a connected node is not dialled");
        now += Dialer::SHORT_LIVED_MS;
        d.on_disconnected(&peer, now);
        assert_eq!(d.next_due_in(now), Some(500), "after a connection that lasted, soon");
    }

    /// A node that closes each connection at once (at its limit) is dialled less and less.
    #[test]
    fn connections_that_do_not_last_back_off_as_failed_dials() {
        let (peer, addr) = node();
        let mut d = Dialer::new(Backoff::new(500, 30_000));
        d.set_nodes(vec![(peer, vec![addr])], 0);
        four_attempts(&mut d, |d, now| {
            d.on_connected(&peer, now);
            d.on_disconnected(&peer, now + 10);
            now + 10
        });
    }

    #[test]
    fn addresses_are_tried_in_order_with_a_stagger() {
        let (peer, ws) = node();
        let rtc = rtc(&peer);
        let mut d = Dialer::new(Backoff::new(500, 30_000));
        d.set_nodes(vec![(peer, vec![ws.clone(), rtc.clone()])], 0);
        assert_eq!(d.due(0), vec![(peer, ws.clone())], "first address first");
        assert!(d.due(Dialer::STAGGER_MS - 1).is_empty(), "the second waits for the first");
        assert_eq!(d.due(Dialer::STAGGER_MS), vec![(peer, rtc.clone())], "then starts beside it");
        // The first fails at once: it is retried on its own schedule while the second hangs.
        d.on_dial_failed(&peer, &ws, 2_100);
        assert_eq!(d.due(2_600), vec![(peer, ws.clone())]);
        // A success through either address stops all retries.
        d.on_connected(&peer, 8_000);
        d.on_dial_failed(&peer, &rtc, 9_000);
        assert!(d.due(100_000).is_empty());
        assert_eq!(d.status()[0].state, "connected");
    }

    #[test]
    fn a_fast_failure_lets_the_next_address_start_at_once() {
        let (peer, ws) = node();
        let rtc = rtc(&peer);
        let mut d = Dialer::new(Backoff::new(500, 30_000));
        d.set_nodes(vec![(peer, vec![ws.clone(), rtc.clone()])], 0);
        assert_eq!(d.due(0), vec![(peer, ws.clone())]);
        d.on_dial_failed(&peer, &ws, 10);
        assert_eq!(d.due(10), vec![(peer, rtc)]);
    }

    #[test]
    fn reconfiguring_keeps_state_of_remaining_nodes() {
        let (a, addr_a) = node();
        let (b, addr_b) = node();
        let mut d = Dialer::default();
        d.set_nodes(vec![(a, vec![addr_a.clone()])], 0);
        d.due(0);
        d.on_connected(&a, 0);
        d.set_nodes(vec![(a, vec![addr_a]), (b, vec![addr_b])], 10);
        let due = d.due(10);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, b);
        assert!(d.is_bootstrap(&a) && d.is_bootstrap(&b) && d.is_connected(&a));
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
