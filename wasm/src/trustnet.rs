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

/// Send our credentials to `peer` (whose DID is `did`) if we trust it.
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
    let message = match serde_json::to_vec(&mine) {
        Ok(m) if m.len() <= MAX_MESSAGE => m,
        _ => return tracing::warn!("our trust credentials do not fit in one message"),
    };
    // A few tries: the stream may land on a relayed connection that closes for the direct one.
    for attempt in 0..3 {
        if attempt > 0 {
            futures_timer::Delay::new(std::time::Duration::from_secs(1)).await;
        }
        match control.open_stream(peer, PROTOCOL).await {
            Ok(mut stream) => match write_frame(&mut stream, &message).await {
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

/// Take the credentials peers send us, for as long as the node runs; `refused` hears of each
/// credential (or message) refused, and why.
pub(crate) fn accept(
    mut control: libp2p_stream::Control,
    store: Rc<Store>,
    did_of: fn(&PeerId) -> Option<String>,
    refused: impl Fn(PeerId, String) + 'static,
) -> Result<(), String> {
    let mut incoming = control.accept(PROTOCOL).map_err(|e| e.to_string())?;
    wasm_bindgen_futures::spawn_local(async move {
        while let Some((peer, mut stream)) = incoming.next().await {
            let Some(sender) = did_of(&peer) else { continue };
            let message = match read_frame_max(&mut stream, MAX_MESSAGE).await {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    refused(peer, e.to_string());
                    continue;
                }
            };
            match take(&store, &sender, &message).await {
                Ok(reasons) => reasons.into_iter().for_each(|r| refused(peer, r)),
                Err(e) => refused(peer, e),
            }
        }
    });
    Ok(())
}

/// Keep what verifies of one message; returns why each other credential was refused.
async fn take(store: &Store, sender: &str, message: &[u8]) -> Result<Vec<String>, String> {
    let offered: Vec<Value> = serde_json::from_slice(message).map_err(|e| e.to_string())?;
    if offered.len() > MAX_CREDENTIALS {
        return Err(format!("more than {MAX_CREDENTIALS} credentials"));
    }
    let now = now_ms();
    let mut received = store.received_trust().await.map_err(|e| e.to_string())?;
    let mut changed = false;
    let mut refusals = Vec::new();
    for credential in offered {
        let a = match trust::verify(&credential, now).await {
            Ok(a) if a.issuer == sender => a,
            Ok(a) => {
                // A peer speaks for itself only.
                refusals.push(format!("a credential issued by {}, not by the sender", a.issuer));
                continue;
            }
            Err(e) => {
                refusals.push(e.to_string());
                continue;
            }
        };
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
        changed = true;
    }
    if changed {
        store.set_received_trust(&received).await.map_err(|e| e.to_string())?;
    }
    Ok(refusals)
}
