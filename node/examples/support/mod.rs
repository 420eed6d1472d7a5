//! What the test peers in `node/examples` share: a swarm that speaks identify, ping and
//! stream protocols over a WebSocket on loopback, and JSON-line events on stdout.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{identify, noise, ping, yamux, Multiaddr, Swarm};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub stream: libp2p_stream::Behaviour,
}

/// A swarm with `key`, listening on `127.0.0.1:<port>` (0: any) over WebSocket.
pub async fn swarm(key: Keypair, port: u16) -> Result<Swarm<Behaviour>, Error> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
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
    Ok(swarm)
}

/// One event line on stdout.
pub fn emit(event: serde_json::Value) {
    println!("{event}");
}
