//! `disot-node`: the native Disot Peer.
//!
//! It is the relay (circuit relay v2 server), bootstrap node (Kademlia server) and, later, the
//! pinning node for browser peers. Browsers reach it over WebSocket and WebRTC-direct; both
//! addresses stay the same across restarts because the identity key and the WebRTC certificate
//! live in the data directory.

mod cas;
mod datadir;
mod diskstore;
mod docs;
mod events;
mod exchange;
mod providers;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    connection_limits, gossipsub, identify, kad, noise, ping, relay, yamux, Multiaddr,
    StreamProtocol, Transport,
};

use crate::datadir::DataDir;
use crate::events::{Event, Output};

/// The native Disot Peer: relay, bootstrap and pinning node for browser peers.
///
/// On start it prints the multiaddrs a browser can dial (each ends in /p2p/<peer id>). Its
/// identity key and WebRTC certificate are kept in the data directory, so these addresses stay
/// the same across restarts as long as the ports do.
#[derive(Debug, Parser)]
#[command(name = "disot-node", version)]
struct Args {
    /// Directory for the identity key and WebRTC certificate [default: $XDG_DATA_HOME/disot-node
    /// or ~/.local/share/disot-node]
    #[arg(long, value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,

    /// IP address to listen on (0.0.0.0 for all interfaces)
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    listen_ip: IpAddr,

    /// TCP port for the WebSocket listener (0 picks a free port)
    #[arg(long, value_name = "PORT", default_value_t = 4401)]
    ws_port: u16,

    /// UDP port for the WebRTC-direct listener (0 picks a free port)
    #[arg(long, value_name = "PORT", default_value_t = 4402)]
    webrtc_port: u16,

    /// Do not listen on WebRTC-direct
    #[arg(long)]
    no_webrtc: bool,

    /// Address under which others reach this node (repeatable); by default the listen
    /// addresses are announced, which is right for loopback and LAN use
    #[arg(long = "external-addr", value_name = "MULTIADDR")]
    external_addrs: Vec<Multiaddr>,

    /// Longest life of one relayed connection (circuit), in seconds
    #[arg(long, value_name = "SECS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    relay_max_circuit_secs: u64,

    /// Most bytes one relayed connection (circuit) may carry, both ways together
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    relay_max_circuit_bytes: u64,

    /// Most relayed connections (circuits) at once, in all (4 per peer)
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    relay_max_circuits: u32,

    /// Most relay reservations (each makes a peer reachable through this node) at once; a
    /// peer holds at most 4
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    relay_max_reservations: u32,

    /// Most connections other peers may have open to this node at once; beyond it a new one
    /// is refused (so is a peer's fifth, and a handshake while 64 others are in progress)
    #[arg(long, value_name = "N", default_value_t = 512)]
    max_connections: u32,

    /// Keep and sync the shared documents (shares, collections) of this peer, trusting it at
    /// LEVEL (0–100, default 100; the sync thresholds are the browsers' defaults: 80 and up
    /// takes everything, 50 and up the documents). Repeatable. The node takes part in a
    /// document only as one of its participants: to have it pass a collection on while its
    /// owner is offline, make the node's DID an editor of it.
    #[arg(long = "trust", value_name = "DID[=LEVEL]", value_parser = docs::parse_trust)]
    trust: Vec<(String, u8)>,

    /// For tests: how long a Bitswap stream may go without a whole message, in ms
    #[arg(long, value_name = "MS", hide = true, default_value_t = exchange::STREAM_IDLE.as_millis() as u64)]
    debug_bitswap_idle_ms: u64,

    /// For tests: a peer's sync message about this document panics, as a bug would
    #[arg(long, value_name = "ID", hide = true)]
    debug_crash_on_document: Option<String>,

    /// Print events (and command results) as JSON lines on stdout instead of text
    #[arg(long, global = true)]
    json: bool,

    /// Without a command, the node runs.
    #[command(subcommand)]
    command: Option<cas::Command>,
}

/// Most connections one peer may have open to the node (a browser has one or two: WebSocket,
/// WebRTC-direct).
const PER_PEER_CONNECTIONS: u32 = 4;
/// Most incoming connections still in their handshake at once.
const PENDING_CONNECTIONS: u32 = 64;

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// First: a connection over the limits is refused before the others learn of it.
    limits: connection_limits::Behaviour,
    relay: relay::Behaviour,
    kad: kad::Behaviour<providers::Providers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
    /// `cas-updates`: the node relays browsers' announcements (it is in every mesh) and reads
    /// none of them.
    gossipsub: gossipsub::Behaviour,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,libp2p_kad=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Without this the first WebRTC-direct (DTLS) handshake panics: rustls sees two crypto
    // backends compiled in and will not choose.
    if rustls::crypto::ring::default_provider().install_default().is_err() {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    let out = Output::new(args.json);
    let result = match args.command {
        Some(ref command) => {
            let dir = args.data_dir.clone().unwrap_or_else(datadir::default_dir);
            cas::run(command, &dir, args.json)
        }
        None => run(args, &out).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("disot-node: error: {e}");
            ExitCode::from(2)
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run(args: Args, out: &Output) -> Result<(), BoxError> {
    let dir = args.data_dir.clone().unwrap_or_else(datadir::default_dir);
    let data = DataDir::open(&dir)?;
    data.check_writable()?;
    let _running = data.lock(datadir::Hold::Node)?;
    let key = data.identity()?;
    let cert = data.certificate()?;
    let local_peer = key.public().to_peer_id();
    let did = disot_core::identity::did_from_public_key(&key.public())?;

    // Circuits carry browser-to-browser traffic until a direct connection is up; their limits
    // bound what a relayed transfer may cost this node.
    let relay_config = relay::Config {
        max_circuit_duration: Duration::from_secs(args.relay_max_circuit_secs),
        max_circuit_bytes: args.relay_max_circuit_bytes,
        max_circuits: args.relay_max_circuits as usize,
        max_reservations: args.relay_max_reservations as usize,
        ..relay::Config::default()
    };
    let docs_key = key.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| {
            libp2p_webrtc::tokio::Transport::new(key.clone(), cert)
                .map(|(peer, conn), _| (peer, StreamMuxerBox::new(conn)))
        })?
        .with_dns()?
        .with_websocket(noise::Config::new, yamux::Config::default)
        .await?
        .with_behaviour(|key| {
            let peer = key.public().to_peer_id();
            let mut kad_config = kad::Config::new(StreamProtocol::new("/ipfs/kad/1.0.0"));
            // The node is a bootstrap server: it learns peers from those who dial it, and has
            // no one to bootstrap from itself.
            kad_config.set_periodic_bootstrap_interval(None);
            // Provider records of every browser that uses this node, bounded (see providers.rs).
            let mut kad =
                kad::Behaviour::with_config(peer, providers::Providers::new(peer), kad_config);
            kad.set_mode(Some(kad::Mode::Server));
            let gossip_config = gossipsub::ConfigBuilder::default()
                .max_transmit_size(disot_core::announce::MAX_BYTES)
                .validation_mode(gossipsub::ValidationMode::Strict)
                // Passed on only once read as an announcement (see the Message event).
                .validate_messages()
                .build()?;
            let mut gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )?;
            gossipsub.subscribe(&gossipsub::IdentTopic::new(disot_core::announce::TOPIC))?;
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_established_incoming(Some(args.max_connections))
                .with_max_established_per_peer(Some(PER_PEER_CONNECTIONS))
                .with_max_pending_incoming(Some(PENDING_CONNECTIONS));
            Ok::<_, BoxError>(Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                relay: relay::Behaviour::new(peer, relay_config),
                kad,
                identify: identify::Behaviour::new(
                    identify::Config::new("/disot/0.1.0".into(), key.public())
                        .with_agent_version(format!("disot-node/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::new(ping::Config::new()),
                stream: libp2p_stream::Behaviour::new(),
                gossipsub,
            })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    let store = diskstore::DiskStore::open(data.path())?;
    exchange::serve(
        swarm.behaviour().stream.new_control(),
        store,
        Duration::from_millis(args.debug_bitswap_idle_ms),
    )?;
    // Without peers to keep documents for, the node takes part in no sync (and answers no
    // identity exchange, which only sync needs).
    let docs = if args.trust.is_empty() {
        None
    } else {
        Some(docs::start(
            swarm.behaviour().stream.new_control(),
            docs_key,
            data.path(),
            args.trust.iter().cloned().collect(),
            args.json,
            args.debug_crash_on_document.clone(),
        )?)
    };

    let ws: Multiaddr = Multiaddr::from(args.listen_ip)
        .with(Protocol::Tcp(args.ws_port))
        .with(Protocol::Ws("/".into()));
    swarm.listen_on(ws.clone()).map_err(|e| format!("cannot listen on {ws}: {e}"))?;
    if !args.no_webrtc {
        let rtc = Multiaddr::from(args.listen_ip)
            .with(Protocol::Udp(args.webrtc_port))
            .with(Protocol::WebRTCDirect);
        swarm.listen_on(rtc.clone()).map_err(|e| format!("cannot listen on {rtc}: {e}"))?;
    }
    for addr in &args.external_addrs {
        swarm.add_external_address(addr.clone());
    }
    out.emit(&Event::Started {
        peer_id: local_peer.to_string(),
        did,
        data_dir: data.path().display().to_string(),
    });

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let event = tokio::select! {
            ev = swarm.select_next_some() => ev,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                if args.external_addrs.is_empty() {
                    swarm.add_external_address(address.clone());
                }
                let full = address.with_p2p(local_peer).unwrap_or_else(|a| a);
                out.emit(&Event::Listening { addr: full.to_string() });
            }
            SwarmEvent::ListenerError { error, .. } => {
                out.emit(&Event::Warning { message: format!("listener error: {error}") });
            }
            SwarmEvent::ListenerClosed { addresses, reason: Err(e), .. } => {
                return Err(format!("listener on {addresses:?} failed: {e}").into());
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                out.emit(&Event::Connected {
                    peer: peer_id.to_string(),
                    addr: endpoint.get_remote_address().to_string(),
                    connections: num_established.get(),
                });
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, cause, .. } => {
                if let (0, Some(docs)) = (num_established, &docs) {
                    docs.peer_gone(peer_id);
                }
                out.emit(&Event::Disconnected {
                    peer: peer_id.to_string(),
                    remaining: num_established,
                    cause: cause.map(|c| c.to_string()),
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Relay(ev)) => match ev {
                relay::Event::ReservationReqAccepted { src_peer_id, renewed } => {
                    out.emit(&Event::Reservation { peer: src_peer_id.to_string(), renewed });
                }
                relay::Event::ReservationTimedOut { src_peer_id } => {
                    out.emit(&Event::ReservationEnded { peer: src_peer_id.to_string() });
                }
                relay::Event::CircuitReqAccepted { src_peer_id, dst_peer_id } => {
                    out.emit(&Event::Circuit {
                        src: src_peer_id.to_string(),
                        dst: dst_peer_id.to_string(),
                    });
                }
                _ => {}
            },
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                out.emit(&Event::Identified {
                    peer: peer_id.to_string(),
                    agent: info.agent_version,
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                // Only what reads as an announcement goes on to the browsers (each of which
                // would otherwise check every piece of junk sent to the topic).
                // (A version this node does not know yet is passed on unread: browsers newer
                // than the node may use it.)
                let readable = match disot_core::announce::Announcement::decode(&message.data) {
                    Ok(_) => true,
                    Err(_) => disot_core::announce::is_other_version(&message.data),
                };
                let verdict = if readable {
                    gossipsub::MessageAcceptance::Accept
                } else {
                    gossipsub::MessageAcceptance::Reject
                };
                swarm.behaviour_mut().gossipsub.report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    verdict,
                );
                if readable {
                    out.emit(&Event::Announcement {
                        via: propagation_source.to_string(),
                        from: message.source.map(|p| p.to_string()),
                        bytes: message.data.len(),
                    });
                }
            }
            _ => {}
        }
    }
    out.emit(&Event::Stopped);
    Ok(())
}
