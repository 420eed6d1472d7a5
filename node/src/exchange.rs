//! The node's Bitswap server: every block in its on-disk store is served to any peer. The node
//! holds what its operator added or pinned (`disot-node add`, `pin`), which is public by
//! design: a pinning node exists to serve.

use std::sync::Arc;

use cid::Cid;
use disot_core::bitswap::{self, Source};
use disot_core::inbound::InboundLimit;
use disot_core::store::BlockStore as _;
use futures::StreamExt as _;
use libp2p::{PeerId, StreamProtocol};

use crate::diskstore::DiskStore;

const PROTOCOL: StreamProtocol = StreamProtocol::new(bitswap::PROTOCOL);

struct Everything<'a>(&'a Arc<DiskStore>);

impl Source for Everything<'_> {
    async fn block(&self, _peer: &PeerId, cid: &Cid) -> Option<Vec<u8>> {
        // Reading and hashing a block of up to a few MiB takes milliseconds: on a thread of
        // its own, not on one of the few that carry every connection.
        let (store, wanted) = (self.0.clone(), *cid);
        match tokio::task::spawn_blocking(move || store.read_block(&wanted)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!("serving {cid}: {e}");
                None
            }
            Err(e) => {
                tracing::warn!("serving {cid}: the read stopped: {e}");
                None
            }
        }
    }

    async fn has(&self, _peer: &PeerId, cid: &Cid) -> bool {
        self.0.has(cid).await.unwrap_or(false)
    }
}

/// Inbound Bitswap streams answered at once for one peer, and for all (each holds at most one
/// message of up to `bitswap::MAX_MESSAGE_SIZE`).
const INBOUND_PER_PEER: usize = 4;
const INBOUND_TOTAL: usize = 128;

/// See [`bitswap::STREAM_IDLE_MS`] (here also for a peer that stops reading its answers).
pub const STREAM_IDLE: std::time::Duration =
    std::time::Duration::from_millis(bitswap::STREAM_IDLE_MS);

/// Accept Bitswap streams and answer their wants for as long as the node runs, as many at once
/// as [`INBOUND_PER_PEER`] and [`INBOUND_TOTAL`] allow (the others are reset), each for as long
/// as it is used (`idle`: see [`STREAM_IDLE`]).
pub fn serve(
    mut control: libp2p_stream::Control,
    store: DiskStore,
    idle: std::time::Duration,
) -> Result<(), String> {
    let mut incoming = control.accept(PROTOCOL).map_err(|e| e.to_string())?;
    let store = Arc::new(store);
    let limit = InboundLimit::new(INBOUND_PER_PEER, INBOUND_TOTAL);
    tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            let Ok(admitted) = limit.admit(&peer).inspect_err(|e| {
                tracing::debug!("bitswap stream from {peer} refused: {e}");
            }) else {
                continue;
            };
            let answering = answer(control.clone(), store.clone(), peer, stream, idle);
            tokio::spawn(async move {
                answering.await;
                drop(admitted);
            });
        }
    });
    Ok(())
}

/// Answer the wants that arrive on one inbound stream, on one outbound stream of our own (the
/// protocol's streams each carry one direction).
async fn answer(
    control: libp2p_stream::Control,
    store: Arc<DiskStore>,
    peer: PeerId,
    mut inbound: libp2p::Stream,
    idle: std::time::Duration,
) {
    let mut outbound = None;
    loop {
        let Ok(read) = tokio::time::timeout(idle, bitswap::read_frame(&mut inbound)).await else {
            tracing::debug!("bitswap from {peer}: no whole message for {idle:?}");
            return;
        };
        let incoming = match read {
            Ok(Some(bytes)) => match bitswap::decode(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    tracing::info!("bitswap from {peer}: {e}");
                    return;
                }
            },
            Ok(None) => return,
            Err(e) => {
                tracing::info!("bitswap from {peer}: {e}");
                return;
            }
        };
        // Each block goes out as soon as it is read, so a message of many wants never has all
        // its blocks in memory at once (and the asker's reading paces the reads); presences
        // go together at the end.
        // A stream is opened again (peers close idle ones) only for a message's first answer:
        // one that breaks in the middle of a message most likely went with its connection, and
        // a stream opened now could reach the same peer restarted, with blocks it never asked
        // for.
        let mut may_open = true;
        let mut presences = bitswap::Outgoing::default();
        for want in &incoming.wants {
            let mut out = bitswap::answer(&Everything(&store), &peer, want).await;
            presences.presences.append(&mut out.presences);
            if out.blocks.is_empty() {
                continue;
            }
            if !send(&control, peer, &mut outbound, out, may_open, idle).await {
                return;
            }
            may_open = false;
        }
        if !send(&control, peer, &mut outbound, presences, may_open, idle).await {
            return;
        }
    }
}

/// Send `out` to `peer` on our outbound stream (opened if there is none and `may_open`); false
/// if that failed.
async fn send(
    control: &libp2p_stream::Control,
    peer: PeerId,
    outbound: &mut Option<libp2p::Stream>,
    out: bitswap::Outgoing,
    may_open: bool,
    idle: std::time::Duration,
) -> bool {
    for frame in out.encode() {
        let open = || {
            let mut control = control.clone();
            async move {
                if !may_open {
                    return Err(libp2p_stream::OpenStreamError::Io(std::io::Error::other(
                        "the stream broke in the middle of an answer",
                    )));
                }
                control.open_stream(peer, PROTOCOL).await
            }
        };
        match tokio::time::timeout(idle, bitswap::send_frame(outbound, open, &frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::info!("bitswap to {peer}: {e}");
                return false;
            }
            Err(_) => {
                tracing::info!("bitswap to {peer}: a message not taken in {idle:?}");
                return false;
            }
        }
    }
    true
}
