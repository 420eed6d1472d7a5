//! A peer for tests that publishes on the announcement topic and reports what it receives
//! there. It dials the address it was given and subscribes to `cas-updates`; for each line
//! on stdin it publishes:
//! - `announcement`: a well-formed announcement (a fresh nonce, no recipients);
//! - `junk`: bytes that are not an announcement;
//! - `later`: an announcement of a version this code does not read (a later one).
//!
//! Prints JSON lines: `listening`, `connected`, `subscribed` (a peer joined the topic, with
//! `peer`), `published` (with `kind` and `error` if it could not be sent) and `received`
//! (with `from`, the message's signer, and `data`, its bytes as text).
//!
//! Usage: gossip-peer <address to dial>

use std::time::Duration;

use disot_core::announce::{self, Announcement};
use futures::StreamExt as _;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{gossipsub, identify, noise, yamux, Multiaddr};
use tokio::io::AsyncBufReadExt as _;

// Only its error type and event lines are used here (this peer speaks gossipsub).
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    gossipsub: gossipsub::Behaviour,
}

#[tokio::main]
async fn main() -> Result<(), support::Error> {
    let target: Multiaddr =
        std::env::args().nth(1).ok_or("usage: gossip-peer <address to dial>")?.parse()?;
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_websocket(noise::Config::new, yamux::Config::default)
        .await?
        .with_behaviour(|key| {
            let config = gossipsub::ConfigBuilder::default()
                .max_transmit_size(announce::MAX_BYTES)
                .validation_mode(gossipsub::ValidationMode::Strict)
                .build()?;
            Ok(Behaviour {
                identify: identify::Behaviour::new(identify::Config::new(
                    "/disot/0.1.0".into(),
                    key.public(),
                )),
                gossipsub: gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    config,
                )?,
            })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    let topic = gossipsub::IdentTopic::new(announce::TOPIC);
    swarm.behaviour_mut().gossipsub.subscribe(&topic)?;
    swarm.listen_on("/ip4/127.0.0.1/tcp/0/ws".parse()?)?;
    swarm.dial(target)?;
    let me = *swarm.local_peer_id();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut sent: u64 = 0;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { return Ok(()) };
                let kind = line.trim();
                sent += 1;
                let data = match kind {
                    "announcement" => {
                        let nonce = format!("{sent:032x}");
                        Announcement { v: 1, nonce, tags: Vec::new() }.encode()
                    }
                    "junk" => format!("not an announcement {sent}").into_bytes(),
                    "later" => format!("{{\"v\":2,\"n\":{sent}}}").into_bytes(),
                    _ => continue,
                };
                let error = swarm.behaviour_mut().gossipsub.publish(topic.clone(), data).err();
                support::emit(serde_json::json!({
                    "event": "published", "kind": kind, "error": error.map(|e| e.to_string()),
                }));
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => support::emit(
                    serde_json::json!({"event": "listening", "addr": format!("{address}/p2p/{me}")}),
                ),
                SwarmEvent::ConnectionEstablished { peer_id, .. } => support::emit(
                    serde_json::json!({"event": "connected", "peer": peer_id.to_string()}),
                ),
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                    peer_id, ..
                })) => support::emit(
                    serde_json::json!({"event": "subscribed", "peer": peer_id.to_string()}),
                ),
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                    message, ..
                })) => support::emit(serde_json::json!({
                    "event": "received",
                    "from": message.source.map(|p| p.to_string()),
                    "data": String::from_utf8_lossy(&message.data),
                })),
                _ => {}
            },
        }
    }
}
