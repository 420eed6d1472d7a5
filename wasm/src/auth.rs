//! The identity exchange on connections (`/disot/identity/1.0.0`; the protocol and every
//! check are `disot_core::auth`). The side that dialled the first connection to a peer starts
//! it; the node records what each exchange proved (or why it was refused) in its peer table.
use std::time::Duration;

use disot_core::auth::{self, Local, Verified};
use disot_core::inbound::InboundLimit;
use futures::StreamExt as _;
use libp2p::{PeerId, StreamProtocol};

pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new(auth::PROTOCOL);
/// How long one exchange may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts when the stream fails (a relayed connection closed under it for a direct one).
const ATTEMPTS: usize = 3;
/// Exchanges answered at once for one peer (one per connection, and a retry), and in all.
const EXCHANGES_PER_PEER: usize = 4;
const EXCHANGES_TOTAL: usize = 32;

fn now() -> u64 {
    js_sys::Date::now() as u64
}

fn random() -> Result<[u8; auth::CHALLENGE_BYTES], auth::Error> {
    crate::store::random_bytes().map_err(auth::Error::Io)
}

async fn with_timeout<T>(
    work: impl std::future::Future<Output = Result<T, auth::Error>>,
) -> Result<T, auth::Error> {
    futures::pin_mut!(work);
    match futures::future::select(work, futures_timer::Delay::new(TIMEOUT)).await {
        futures::future::Either::Left((result, _)) => result,
        futures::future::Either::Right(_) => Err(auth::Error::Io("timed out".into())),
    }
}

/// Run the exchange with `peer` as its initiator, for as long as `connected` says the peer is
/// (opening a stream to a peer no longer connected would dial it again: after a hang-up, or a
/// peer gone away). `Ok(None)`: the peer does not speak the protocol (a `disot-node`, a
/// js-libp2p peer).
pub(crate) async fn initiate(
    mut control: libp2p_stream::Control,
    local: Local,
    peer: PeerId,
    connected: impl Fn() -> bool,
) -> Result<Option<Verified>, auth::Error> {
    let mut last = auth::Error::Io("not tried".into());
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            futures_timer::Delay::new(Duration::from_secs(1)).await;
        }
        if !connected() {
            return Err(auth::Error::Io(format!("no longer connected ({last})")));
        }
        let mut stream = match control.open_stream(peer, PROTOCOL).await {
            Ok(s) => s,
            Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => return Ok(None),
            Err(e) => {
                last = auth::Error::Io(e.to_string());
                continue;
            }
        };
        match with_timeout(auth::initiate(&mut stream, local.clone(), peer, random()?, now)).await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if e.is_refusal() => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Answer the exchanges peers start, for as long as the node runs (`local` gives this peer's
/// current profile, `None` once the node is gone); `done` takes each outcome.
pub(crate) fn accept(
    mut control: libp2p_stream::Control,
    local: impl Fn() -> Option<Local> + 'static,
    done: impl Fn(PeerId, Result<Verified, auth::Error>) + 'static,
) -> Result<(), String> {
    let mut incoming = control.accept(PROTOCOL).map_err(|e| e.to_string())?;
    let done = std::rc::Rc::new(done);
    let limit = InboundLimit::new(EXCHANGES_PER_PEER, EXCHANGES_TOTAL);
    wasm_bindgen_futures::spawn_local(async move {
        while let Some((peer, mut stream)) = incoming.next().await {
            let Some(local) = local() else { break };
            let Ok(admitted) = limit.admit(&peer).inspect_err(|e| {
                tracing::debug!("identity exchange from {peer} refused: {e}");
            }) else {
                continue;
            };
            let done = done.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let _admitted = admitted; // until this exchange is over
                let result = match random() {
                    Ok(r) => with_timeout(auth::respond(&mut stream, local, peer, r, now)).await,
                    Err(e) => Err(e),
                };
                done(peer, result);
            });
        }
    });
    Ok(())
}
