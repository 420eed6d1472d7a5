//! A peer for tests that opens more streams than a browser peer should serve. For each line
//! `flood <n>` on stdin it opens `n` streams of each protocol the browser answers (Bitswap,
//! WebRTC signaling, the identity exchange, document sync) to the peer that connected last, begins a message
//! on each (a length prefix claiming the protocol's largest message, and part of it) and never
//! finishes it. Three seconds later it reports, per protocol, how many streams the other side
//! still holds open and how many it reset.
//!
//! For `connect <n>` it dials the address it was given `n` more times, and for `strangers <n>`
//! it has `n` peers of new identities dial it once each; after three seconds it reports how
//! many of those connections are still open.
//!
//! Prints JSON lines: `listening`, `connected`, `disconnected`, `flood` with `protocol`,
//! `opened`, `held` and `reset`, and `connections` with `kind` (`connect` or `strangers`),
//! `opened` and `held`.
//!
//! Usage: flood-peer <ws port> [address to dial]

use std::time::Duration;

use disot_core::{auth, bitswap, sync, webrtc};
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::io::AsyncBufReadExt as _;

#[path = "support/mod.rs"]
mod support;

/// The protocols flooded: name, largest message, bytes of it sent.
const PROTOCOLS: [(&str, usize, usize); 4] = [
    (bitswap::PROTOCOL, bitswap::MAX_MESSAGE_SIZE, 200 * 1024),
    (webrtc::SIGNALING_PROTOCOL, webrtc::MAX_SIGNAL, 1024),
    (auth::PROTOCOL, auth::MAX_MESSAGE, 100),
    (sync::PROTOCOL, sync::MAX_FRAME, 1024),
];

/// How long the streams are held before they are looked at.
const HOLD: Duration = Duration::from_secs(3);
/// How long after [`HOLD`] flooded streams are looked at at most (under the 10 s the node and
/// the browsers give an identity exchange).
const SETTLE: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), support::Error> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let mut swarm = support::swarm(libp2p::identity::Keypair::generate_ed25519(), port).await?;
    let target = std::env::args().nth(2).map(|a| a.parse::<Multiaddr>()).transpose()?;
    if let Some(addr) = &target {
        swarm.dial(addr.clone())?;
    }
    let control = swarm.behaviour().stream.new_control();
    let me = *swarm.local_peer_id();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut last: Option<PeerId> = None;
    // Connections of `connect` whose report is due: when, how many were opened.
    let mut counting: Option<(tokio::time::Instant, usize)> = None;
    loop {
        let due = counting.map(|(at, _)| at);
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { return Ok(()) };
                let (command, n) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                let Ok(n) = n.trim().parse::<usize>() else { continue };
                match (command, last, &target) {
                    ("flood", Some(peer), _) => {
                        for (name, max, sent) in PROTOCOLS {
                            tokio::spawn(flood(control.clone(), peer, name, max, sent, n));
                        }
                    }
                    ("connect", Some(peer), Some(addr)) => {
                        for _ in 0..n {
                            let again = DialOpts::peer_id(peer)
                                .addresses(vec![addr.clone()])
                                .condition(PeerCondition::Always)
                                .build();
                            swarm.dial(again)?;
                        }
                        counting = Some((tokio::time::Instant::now() + HOLD, n));
                    }
                    ("strangers", _, Some(addr)) => {
                        tokio::spawn(strangers(addr.clone(), n));
                    }
                    _ => {}
                }
            }
            _ = async { tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)).await }, if due.is_some() => {
                // Every connection it dialled is to the one peer, the first one included.
                let opened = counting.take().map_or(0, |(_, n)| n) + 1;
                let held = swarm.network_info().connection_counters().num_established_outgoing();
                support::emit(serde_json::json!({
                    "event": "connections", "kind": "connect", "opened": opened, "held": held,
                }));
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => support::emit(
                    serde_json::json!({"event": "listening", "addr": format!("{address}/p2p/{me}")}),
                ),
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    last = Some(peer_id);
                    support::emit(serde_json::json!({"event": "connected", "peer": peer_id.to_string()}));
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => support::emit(
                    serde_json::json!({"event": "disconnected", "peer": peer_id.to_string()}),
                ),
                _ => {}
            },
        }
    }
}

/// `n` peers of new identities dial `addr` at once; after [`HOLD`], report how many of them
/// are still connected.
async fn strangers(addr: Multiaddr, n: usize) {
    let dialling = (0..n).map(|_| {
        let addr = addr.clone();
        async move {
            let key = libp2p::identity::Keypair::generate_ed25519();
            let mut swarm = support::swarm(key, 0).await.ok()?;
            swarm.dial(addr).ok()?;
            let until = tokio::time::sleep(HOLD);
            tokio::pin!(until);
            loop {
                tokio::select! {
                    _ = &mut until => break,
                    _ = swarm.select_next_some() => {}
                }
            }
            Some(swarm.network_info().num_peers() > 0)
        }
    });
    let outcomes = futures::future::join_all(dialling).await;
    let held = outcomes.iter().filter(|o| **o == Some(true)).count();
    support::emit(serde_json::json!({
        "event": "connections", "kind": "strangers", "opened": n, "held": held,
    }));
}

/// The streams of `streams` still served: such a one gives nothing to read (it waits for the
/// rest of the message); a reset one ends or fails at once.
async fn still_open(streams: Vec<libp2p::Stream>) -> Vec<libp2p::Stream> {
    let looks = streams.into_iter().map(|mut stream| async move {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await {
            Err(_) | Ok(Ok(1..)) => Some(stream),
            Ok(Ok(0) | Err(_)) => None,
        }
    });
    futures::future::join_all(looks).await.into_iter().flatten().collect()
}

/// Open `n` streams of `protocol` to `peer`, each with `sent` bytes of a message claiming to
/// be `max` long; after [`HOLD`], once no more are being reset, report how many are still open.
async fn flood(
    control: libp2p_stream::Control,
    peer: PeerId,
    name: &'static str,
    max: usize,
    sent: usize,
    n: usize,
) {
    let opening = (0..n).map(|_| {
        let mut control = control.clone();
        let protocol = StreamProtocol::new(name);
        async move {
            let mut stream = control.open_stream(peer, protocol).await.ok()?;
            let mut begun = unsigned_varint::encode::usize_buffer();
            let mut message = unsigned_varint::encode::usize(max, &mut begun).to_vec();
            message.resize(message.len() + sent, 7);
            // A stream reset at once may fail here already.
            let _ = stream.write_all(&message).await;
            let _ = stream.flush().await;
            Some(stream)
        }
    });
    let mut kept: Vec<_> = futures::future::join_all(opening).await.into_iter().flatten().collect();
    let opened = kept.len();
    tokio::time::sleep(HOLD).await;
    // Looked at again each second until two looks in a row find none reset (a busy peer resets
    // what it refuses late), and no longer than SETTLE.
    let settle = tokio::time::Instant::now() + SETTLE;
    let mut unchanged = 0;
    loop {
        let before = kept.len();
        kept = still_open(kept).await;
        unchanged = if kept.len() == before { unchanged + 1 } else { 0 };
        if unchanged >= 2 || tokio::time::Instant::now() >= settle {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let held = kept.len();
    support::emit(serde_json::json!({
        "event": "flood", "protocol": name, "opened": opened, "held": held, "reset": opened - held,
    }));
    // The held streams stay open until the next flood's report has been made.
    tokio::time::sleep(HOLD * 2).await;
    drop(kept);
}
