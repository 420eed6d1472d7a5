//! Trust credentials between peers (`/disot/trust/1.0.0`): when a peer we trust connects, and
//! whenever our assertions change, we send it the trust credentials we issued (one
//! length-prefixed JSON array on a new stream). What a peer sends us is kept only if it
//! verifies and was issued by that peer itself, the latest per (issuer, subject, context), so
//! the web of trust grows one hop per trusted peer and nobody can speak for another.
use std::rc::Rc;

use disot_core::bitswap::{read_frame_max, write_frame};
use disot_core::trust;
use futures::{AsyncWriteExt as _, StreamExt as _};
use libp2p::{PeerId, StreamProtocol};
use serde_json::Value;

use crate::store::Store;

pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/disot/trust/1.0.0");
/// Largest message accepted.
const MAX_MESSAGE: usize = 512 * 1024;
/// Most credentials in one message.
const MAX_CREDENTIALS: usize = 1000;
/// Most credentials kept from other peers.
const MAX_RECEIVED: usize = 10_000;

/// Keep a trust credential in the content store as well, as an object of its own (pinned,
/// visible to no page): content-addressed, so anyone can name and check it by its CID.
pub(crate) async fn store_credential(store: &Store, credential: &Value) -> Result<String, String> {
    use disot_core::store::BlockStore as _;
    let bytes = disot_core::entry::canonical(credential).map_err(|e| e.to_string())?;
    let layout = disot_core::unixfs::Preset::Helia.layout();
    let mut record =
        disot_core::store::add(store, layout, [bytes]).await.map_err(|e| e.to_string())?;
    record.name = Some("trust-credential.json".into());
    record.mime = Some("application/vc".into());
    store.put_object(&record).await.map_err(|e| e.to_string())?;
    Ok(record.cid)
}

/// The CID a credential has in the content store (see [`store_credential`]).
pub(crate) fn credential_cid(credential: &Value) -> Option<String> {
    let bytes = disot_core::entry::canonical(credential).ok()?;
    let (_, imported) =
        disot_core::unixfs::import(&bytes, disot_core::unixfs::Preset::Helia.layout());
    Some(imported.cid.to_string())
}

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// Whether our own credentials say we trust `did` (any context, level above 0).
fn trusts(mine: &[Value], did: &str) -> bool {
    mine.iter().any(|c| {
        c.pointer("/credentialSubject/id").and_then(Value::as_str) == Some(did)
            && c.pointer("/credentialSubject/trustLevel").and_then(Value::as_u64).unwrap_or(0) > 0
    })
}

/// Send `peer` (whose DID is `did`), if we trust it, our credentials and those we took from
/// others (each is signed by its issuer, so passing it on speaks for nobody): this is how
/// trust paths longer than one hop reach a peer.
pub(crate) async fn offer(
    mut control: libp2p_stream::Control,
    store: Rc<Store>,
    peer: PeerId,
    did: String,
) {
    let mine = match store.trust_credentials().await {
        Ok(mine) => mine,
        Err(e) => return tracing::warn!("reading trust credentials: {e}"),
    };
    if !trusts(&mine, &did) {
        return;
    }
    let received = store.received_trust().await.unwrap_or_default();
    // Ours first, then what others told us (not what the peer itself issued), as much as fits.
    let mut all: Vec<Value> = Vec::new();
    let mut size: usize = 2;
    for c in mine.into_iter().chain(
        received.into_iter().filter(|c| c.get("issuer").and_then(Value::as_str) != Some(&did)),
    ) {
        let len = serde_json::to_vec(&c).map_or(usize::MAX, |b| b.len() + 1);
        if all.len() >= MAX_CREDENTIALS || size.saturating_add(len) > MAX_MESSAGE {
            break;
        }
        size += len;
        all.push(c);
    }
    let message = match serde_json::to_vec(&all) {
        Ok(m) => m,
        Err(e) => return tracing::warn!("encoding trust credentials: {e}"),
    };
    // Several tries, further apart each time: the stream may land on a relayed connection
    // that closes for the direct one, or reach a receiver busy with others.
    for attempt in 0..6u32 {
        if attempt > 0 {
            futures_timer::Delay::new(std::time::Duration::from_millis(500 << attempt)).await;
        }
        match control.open_stream(peer, PROTOCOL).await {
            Ok(mut stream) => match delivered(&mut stream, &message).await {
                Ok(()) => {
                    let _ = stream.close().await;
                    return;
                }
                Err(e) => tracing::info!("trust credentials to {peer}: {e}"),
            },
            // Peers that do not speak it (a disot-node) are fine.
            Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => return,
            Err(e) => tracing::info!("trust credentials to {peer}: {e}"),
        }
    }
}

/// How long the receiver has to acknowledge a message.
const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The receiver's acknowledgement: without it a message written to a connection that was
/// closing (a relayed one, for the direct one) would be lost unnoticed.
const ACK: &[u8] = b"ok";

/// Write `message` and wait for the receiver's acknowledgement.
async fn delivered(stream: &mut libp2p::Stream, message: &[u8]) -> Result<(), String> {
    write_frame(stream, message).await.map_err(|e| e.to_string())?;
    let ack = read_frame_max(stream, ACK.len());
    futures::pin_mut!(ack);
    match futures::future::select(ack, futures_timer::Delay::new(ACK_TIMEOUT)).await {
        futures::future::Either::Left((Ok(Some(a)), _)) if a == ACK => Ok(()),
        futures::future::Either::Left((Ok(_), _)) => Err("no acknowledgement".into()),
        futures::future::Either::Left((Err(e), _)) => Err(e.to_string()),
        futures::future::Either::Right(_) => Err("acknowledgement timed out".into()),
    }
}

/// Take the credentials peers send us, for as long as the node runs; `refused` hears of each
/// credential (or message) refused, and why; `changed` is called when what we know changed
/// (so that it reaches the peers that trust us in turn).
pub(crate) fn accept(
    mut control: libp2p_stream::Control,
    store: Rc<Store>,
    me: String,
    did_of: fn(&PeerId) -> Option<String>,
    refused: impl Fn(PeerId, String) + 'static,
    changed: impl Fn() + 'static,
) -> Result<(), String> {
    let mut incoming = control.accept(PROTOCOL).map_err(|e| e.to_string())?;
    let context = Rc::new(Receiver {
        store,
        me,
        did_of,
        refused: Box::new(refused),
        changed: Box::new(changed),
        taking: futures::lock::Mutex::new(()),
        in_flight: std::cell::Cell::new(0),
    });
    wasm_bindgen_futures::spawn_local(async move {
        // Each stream is read in a task of its own: the stream behaviour drops a stream that
        // arrives while the previous one is still being taken, so a sequential loop would lose
        // messages whenever two peers (or two changes) come close together.
        while let Some((peer, stream)) = incoming.next().await {
            if context.in_flight.get() >= MAX_IN_FLIGHT {
                tracing::info!("trust credentials from {peer}: too many messages at once");
                continue; // dropped: the sender is not acknowledged and tries again
            }
            context.in_flight.set(context.in_flight.get() + 1);
            let context = context.clone();
            wasm_bindgen_futures::spawn_local(async move {
                context.receive(peer, stream).await;
                context.in_flight.set(context.in_flight.get() - 1);
            });
        }
    });
    Ok(())
}

/// Most messages being read or taken at once.
const MAX_IN_FLIGHT: usize = 16;
/// How long a sender has to deliver its message once it opened the stream.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

struct Receiver {
    store: Rc<Store>,
    me: String,
    did_of: fn(&PeerId) -> Option<String>,
    refused: Box<dyn Fn(PeerId, String)>,
    changed: Box<dyn Fn()>,
    /// One message is taken at a time: taking reads and rewrites what we received.
    taking: futures::lock::Mutex<()>,
    in_flight: std::cell::Cell<usize>,
}

impl Receiver {
    async fn receive(&self, peer: PeerId, mut stream: libp2p::Stream) {
        let Some(sender) = (self.did_of)(&peer) else { return };
        let read = {
            let read = read_frame_max(&mut stream, MAX_MESSAGE);
            futures::pin_mut!(read);
            match futures::future::select(read, futures_timer::Delay::new(READ_TIMEOUT)).await {
                futures::future::Either::Left((result, _)) => Some(result),
                futures::future::Either::Right(_) => None,
            }
        };
        let message = match read {
            Some(Ok(Some(m))) => m,
            Some(Ok(None)) => return,
            Some(Err(e @ disot_core::bitswap::Error::TooLarge(_))) => {
                return (self.refused)(peer, e.to_string());
            }
            // The stream failed or stalled: nothing was said; the sender tries again.
            Some(Err(e)) => return tracing::info!("trust credentials from {peer}: {e}"),
            None => {
                return tracing::info!("trust credentials from {peer}: timed out reading");
            }
        };
        let _ = write_frame(&mut stream, ACK).await;
        let _ = stream.close().await;
        let result = {
            let _one = self.taking.lock().await;
            take(&self.store, &self.me, &sender, &message).await
        };
        match result {
            Ok((reasons, new)) => {
                reasons.into_iter().for_each(|r| (self.refused)(peer, r));
                if new {
                    (self.changed)();
                }
            }
            Err(e) => (self.refused)(peer, e),
        }
    }
}

/// Keep what verifies of one message: credentials the sender issued, and credentials it passes
/// on from issuers we already trust closely enough for their assertions to end a path of at
/// most [`trust::MAX_DEPTH`] hops. Returns why each other credential was refused, and whether
/// anything new was kept.
async fn take(
    store: &Store,
    me: &str,
    sender: &str,
    message: &[u8],
) -> Result<(Vec<String>, bool), String> {
    let offered: Vec<Value> = serde_json::from_slice(message).map_err(|e| e.to_string())?;
    if offered.len() > MAX_CREDENTIALS {
        return Err(format!("more than {MAX_CREDENTIALS} credentials"));
    }
    let now = now_ms();
    let mut received = store.received_trust().await.map_err(|e| e.to_string())?;
    let mut graph = trust::TrustGraph::new();
    for c in store.trust_credentials().await.map_err(|e| e.to_string())?.iter().chain(&received) {
        if let Ok(a) = trust::read_form(c) {
            graph.insert(a);
        }
    }
    let mut refusals = Vec::new();
    let mut waiting = Vec::new();
    for credential in offered {
        if received.contains(&credential) {
            continue; // known already (peers pass on what they know, again and again)
        }
        match trust::verify(&credential, now).await {
            Ok(a) if a.issuer == me => {} // ours: we hold the originals
            Ok(a) => waiting.push((a, credential)),
            Err(e) => refusals.push(e.to_string()),
        }
    }
    // The sender's own first; then, round by round, those whose issuer is now close enough.
    let mut changed = false;
    loop {
        let (ready, rest): (Vec<_>, Vec<_>) = waiting.into_iter().partition(|(a, _)| {
            a.issuer == sender
                || graph
                    .score(me, &a.issuer, &a.context, now)
                    .is_some_and(|s| s.path.len() < trust::MAX_DEPTH + 1)
        });
        waiting = rest;
        if ready.is_empty() {
            break;
        }
        for (a, credential) in ready {
            let same = |c: &Value| {
                trust::read_form(c).is_ok_and(|b| {
                    b.issuer == a.issuer && b.subject == a.subject && b.context == a.context
                })
            };
            if let Some(at) = received.iter().position(same) {
                if trust::read_form(&received[at]).is_ok_and(|b| b.issued_ms >= a.issued_ms) {
                    continue;
                }
                received.remove(at);
            }
            if received.len() >= MAX_RECEIVED {
                received.remove(0);
            }
            if let Err(e) = store_credential(store, &credential).await {
                return Err(format!("keeping a trust credential: {e}"));
            }
            received.push(credential);
            graph.insert(a);
            changed = true;
        }
    }
    for (a, _) in waiting {
        refusals
            .push(format!("a credential issued by {}, whom this peer does not trust", a.issuer));
    }
    if changed {
        store.set_received_trust(&received).await.map_err(|e| e.to_string())?;
    }
    Ok((refusals, changed))
}
