//! A hostile peer for tests: it speaks Bitswap 1.2.0 and claims to have every block, but
//! answers each want-block with other bytes under the wanted CID's prefix. Prints JSON lines:
//! `listening` (its address), `wanted` (each CID asked for, and how: `have` or `block`),
//! `forged` (the CID asked for and the CID of what it sent), `cancelled` (each want the peer
//! took back), `connected` and `disconnected`.
//!
//! It asks too: `want <cid>` on stdin sends the peer that connected last a want-block for it on
//! a new stream and reports `asked`; each block that peer sends (verified against its CID) is
//! reported as `received`, and the stream being reset or closed by it as `reset`.
//!
//! `stall` makes it answer no want-block from then on (a peer that says it has a block and never
//! sends it), so that a fetch from it waits until the peer goes; it reports `stalling`.
//!
//! `dial <multiaddr>` connects to a peer (which is then the one that connected last).
//!
//! `sync <document id>` opens a sync session (`/disot/sync/1.0.0`) with that peer and sends one
//! message about that document, which is not a sync message (a test build of the browser node
//! panics on the document `collection-deadbeefdeadbeefdeadbeefdeadbeef` before reading it): `sync-sent` once it is written,
//! `sync-ended` when the peer closes or resets the stream, `sync-refused` if it cannot be opened.
//!
//! Usage: hostile-peer <ws port>

use disot_core::bitswap::{self, Outgoing, Presence, WantType};
use futures::StreamExt as _;
use libp2p::swarm::SwarmEvent;
use libp2p::StreamProtocol;
use sha2::Digest as _;
use tokio::io::AsyncBufReadExt as _;

const PROTOCOL: StreamProtocol = StreamProtocol::new(bitswap::PROTOCOL);
const SYNC: StreamProtocol = StreamProtocol::new(disot_core::sync::PROTOCOL);

#[path = "support/mod.rs"]
mod support;

#[tokio::main]
async fn main() -> Result<(), support::Error> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let mut swarm = support::swarm(libp2p::identity::Keypair::generate_ed25519(), port).await?;
    let mut control = swarm.behaviour().stream.new_control();
    let mut incoming = control.accept(PROTOCOL)?;
    let stalling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stall = stalling.clone();
    tokio::spawn(async move {
        while let Some((peer, mut inbound)) = incoming.next().await {
            let mut control = control.clone();
            let stalling = stalling.clone();
            tokio::spawn(async move {
                let Ok(mut out) = control.open_stream(peer, PROTOCOL).await else { return };
                while let Ok(Some(bytes)) = bitswap::read_frame(&mut inbound).await {
                    let Ok(msg) = bitswap::decode(&bytes) else { return };
                    for (cid, _) in &msg.blocks {
                        support::emit(
                            serde_json::json!({"event": "received", "cid": cid.to_string()}),
                        );
                    }
                    for want in msg.wants.iter().filter(|w| w.cancel) {
                        support::emit(
                            serde_json::json!({"event": "cancelled", "cid": want.cid.to_string()}),
                        );
                    }
                    let mut reply = Outgoing::default();
                    for want in msg.wants.iter().filter(|w| !w.cancel) {
                        let how = if want.want_type == WantType::Have { "have" } else { "block" };
                        support::emit(
                            serde_json::json!({"event": "wanted", "cid": want.cid.to_string(), "how": how}),
                        );
                        match want.want_type {
                            WantType::Have => reply.presences.push((want.cid, Presence::Have)),
                            WantType::Block
                                if stalling.load(std::sync::atomic::Ordering::Relaxed) => {}
                            WantType::Block => {
                                let junk = format!("not the block {}", want.cid).into_bytes();
                                let digest = sha2::Sha256::digest(&junk);
                                let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest)
                                    .expect("32-byte digest");
                                let forged = cid::Cid::new_v1(want.cid.codec(), mh);
                                support::emit(
                                    serde_json::json!({"event": "forged", "wanted": want.cid.to_string(), "sent": forged.to_string()}),
                                );
                                reply.blocks.push((want.cid, junk));
                            }
                        }
                    }
                    for frame in reply.encode() {
                        if bitswap::write_frame(&mut out, &frame).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let me = *swarm.local_peer_id();
    let asking = swarm.behaviour().stream.new_control();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut last = None;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { return Ok(()) };
                let cid = line.strip_prefix("want ").and_then(|c| c.trim().parse::<cid::Cid>().ok());
                if let (Some(cid), Some(peer)) = (cid, last) {
                    tokio::spawn(ask(asking.clone(), peer, cid));
                }
                if line.trim() == "stall" {
                    stall.store(true, std::sync::atomic::Ordering::Relaxed);
                    support::emit(serde_json::json!({"event": "stalling"}));
                }
                if let (Some(id), Some(peer)) = (line.strip_prefix("sync "), last) {
                    tokio::spawn(sync(asking.clone(), peer, id.trim().to_owned()));
                }
                if let Some(addr) = line.strip_prefix("dial ") {
                    let dialled = addr.trim().parse::<libp2p::Multiaddr>().map_err(|e| e.to_string())
                        .and_then(|addr| swarm.dial(addr).map_err(|e| e.to_string()));
                    if let Err(reason) = dialled {
                        support::emit(serde_json::json!({"event": "dial-failed", "reason": reason}));
                    }
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    support::emit(serde_json::json!({
                        "event": "listening",
                        "addr": format!("{address}/p2p/{me}"),
                        "did": disot_core::identity::did_of_peer(&me),
                    }));
                }
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    last = Some(peer_id);
                    support::emit(
                        serde_json::json!({"event": "connected", "peer": peer_id.to_string()}),
                    );
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    support::emit(
                        serde_json::json!({"event": "disconnected", "peer": peer_id.to_string()}),
                    );
                }
                _ => {}
            },
        }
    }
}

/// Send `peer` a want-block for `cid` on a stream of its own, and report whether the peer
/// resets or closes that stream (a peer serving it keeps it open and answers on its own).
async fn ask(mut control: libp2p_stream::Control, peer: libp2p::PeerId, cid: cid::Cid) {
    let want =
        bitswap::Want { cid, want_type: WantType::Block, cancel: false, send_dont_have: true };
    let message = Outgoing { wants: vec![want], ..Outgoing::default() };
    let Ok(mut out) = control.open_stream(peer, PROTOCOL).await else {
        support::emit(serde_json::json!({"event": "reset", "cid": cid.to_string()}));
        return;
    };
    for frame in message.encode() {
        if bitswap::write_frame(&mut out, &frame).await.is_err() {
            support::emit(serde_json::json!({"event": "reset", "cid": cid.to_string()}));
            return;
        }
    }
    support::emit(serde_json::json!({"event": "asked", "cid": cid.to_string()}));
    // Nothing comes back on this stream: a read ends only when the peer resets or closes it.
    let mut byte = [0u8; 1];
    let _ = futures::AsyncReadExt::read(&mut out, &mut byte).await;
    support::emit(serde_json::json!({"event": "reset", "cid": cid.to_string()}));
}

/// Send `peer` one sync message about document `id` (not a real one), and report how the
/// stream ends.
async fn sync(mut control: libp2p_stream::Control, peer: libp2p::PeerId, id: String) {
    let Ok(mut out) = control.open_stream(peer, SYNC).await else {
        support::emit(serde_json::json!({"event": "sync-refused", "id": id}));
        return;
    };
    // The message, then the empty frame that ends a batch.
    for frame in [disot_core::sync::frame(&id, b"not a sync message"), Vec::new()] {
        if bitswap::write_frame(&mut out, &frame).await.is_err() {
            support::emit(serde_json::json!({"event": "sync-ended", "id": id}));
            return;
        }
    }
    support::emit(serde_json::json!({"event": "sync-sent", "id": id}));
    let mut byte = [0u8; 1];
    let _ = futures::AsyncReadExt::read(&mut out, &mut byte).await;
    support::emit(serde_json::json!({"event": "sync-ended", "id": id}));
}
