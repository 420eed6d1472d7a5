//! A hostile peer for tests: it speaks Bitswap 1.2.0 and claims to have every block, but
//! answers each want-block with other bytes under the wanted CID's prefix. Prints JSON lines:
//! `listening` (its address), `forged` (the CID asked for and the CID of what it sent),
//! `connected` and `disconnected`.
//!
//! Usage: hostile-peer <ws port>

use std::time::Duration;

use disot_core::bitswap::{self, Outgoing, Presence, WantType};
use futures::StreamExt as _;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, ping, yamux, Multiaddr, StreamProtocol};
use sha2::Digest as _;

const PROTOCOL: StreamProtocol = StreamProtocol::new(bitswap::PROTOCOL);

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_websocket(noise::Config::new, yamux::Config::default)
        .await?
        .with_behaviour(|key| Behaviour {
            identify: identify::Behaviour::new(identify::Config::new(
                "/disot/0.1.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::new(ping::Config::new()),
            stream: libp2p_stream::Behaviour::new(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}/ws").parse()?;
    swarm.listen_on(addr)?;
    let mut control = swarm.behaviour().stream.new_control();
    let mut incoming = control.accept(PROTOCOL)?;
    tokio::spawn(async move {
        while let Some((peer, mut inbound)) = incoming.next().await {
            let mut control = control.clone();
            tokio::spawn(async move {
                let Ok(mut out) = control.open_stream(peer, PROTOCOL).await else { return };
                while let Ok(Some(bytes)) = bitswap::read_frame(&mut inbound).await {
                    let Ok(msg) = bitswap::decode(&bytes) else { return };
                    let mut reply = Outgoing::default();
                    for want in msg.wants.iter().filter(|w| !w.cancel) {
                        match want.want_type {
                            WantType::Have => reply.presences.push((want.cid, Presence::Have)),
                            WantType::Block => {
                                let junk = format!("not the block {}", want.cid).into_bytes();
                                let digest = sha2::Sha256::digest(&junk);
                                let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest)
                                    .expect("32-byte digest");
                                let forged = cid::Cid::new_v1(want.cid.codec(), mh);
                                println!(
                                    "{}",
                                    serde_json::json!({"event": "forged", "wanted": want.cid.to_string(), "sent": forged.to_string()})
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
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => {
                println!(
                    "{}",
                    serde_json::json!({"event": "listening", "addr": format!("{address}/p2p/{me}")})
                );
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                println!(
                    "{}",
                    serde_json::json!({"event": "connected", "peer": peer_id.to_string()})
                );
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                println!(
                    "{}",
                    serde_json::json!({"event": "disconnected", "peer": peer_id.to_string()})
                );
            }
            _ => {}
        }
    }
}
