//! The web of trust between peers. Each peer publishes its trust assertions in a trust
//! document of its own (`disot_core::sync::trust_id`), synced like shares and collections and
//! read by the peers it trusts: the credentials it issued, and those it took from others (each
//! signed by its issuer, so passing it on speaks for nobody; this is how trust paths longer
//! than one hop reach a peer). What arrives in another peer's document is kept only if it
//! verifies and was issued by that peer itself or by someone we already trust closely enough,
//! the latest per (issuer, subject, context).
use std::collections::{BTreeMap, BTreeSet};

use disot_core::trust;
use serde_json::Value;

use crate::store::Store;

/// Most credentials kept from other peers.
const MAX_RECEIVED: usize = 10_000;

/// Keep a trust credential in the content store as well, as an object of its own (pinned,
/// visible to no page): content-addressed, so anyone can name and check it by its CID.
pub(crate) async fn store_credential(store: &Store, credential: &Value) -> Result<String, String> {
    let bytes = disot_core::entry::canonical(credential).map_err(|e| e.to_string())?;
    let (blocks, imported) =
        disot_core::unixfs::import(&bytes, disot_core::unixfs::Preset::Helia.layout());
    let record = disot_core::store::ObjectRecord {
        name: Some("trust-credential.json".into()),
        mime: Some("application/vc".into()),
        ..disot_core::store::ObjectRecord::new(&imported)
    };
    // Its blocks and its record in one transaction (joined to a record stored before): a
    // clean-up running between the two could otherwise take a block the record then names.
    store.put_fetched(&blocks, &record).await.map_err(|e| e.to_string())?;
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

/// What this peer publishes: its readers (the peers it trusts, in any context) and the
/// credentials, ours first and then those we took from others, as many as a trust document
/// holds, each by a key naming what it asserts.
pub(crate) async fn published(
    store: &Store,
) -> Result<(BTreeSet<String>, BTreeMap<String, String>), String> {
    let mine = store.trust_credentials().await.map_err(|e| e.to_string())?;
    let received = store.received_trust().await.map_err(|e| e.to_string())?;
    let readers: BTreeSet<String> = mine
        .iter()
        .filter_map(|c| trust::read_form(c).ok())
        .filter(|a| a.level > 0)
        .map(|a| a.subject)
        .collect();
    let mut credentials = BTreeMap::new();
    for c in mine.iter().chain(&received) {
        if credentials.len() >= disot_core::sync::MAX_TRUST_CREDENTIALS {
            break;
        }
        let (Ok(a), Ok(text)) = (trust::read_form(c), disot_core::entry::canonical(c)) else {
            continue;
        };
        let Ok(text) = String::from_utf8(text) else { continue };
        let key = format!("{}|{}|{}", a.issuer, a.subject, a.context);
        if text.len() <= disot_core::sync::MAX_CREDENTIAL && key.len() <= disot_core::sync::MAX_TEXT
        {
            credentials.entry(key).or_insert(text);
        }
    }
    Ok((readers, credentials))
}

/// Keep what verifies of what a peer publishes (credentials it issued, and credentials it
/// passes on) from issuers we already trust closely enough for their assertions to end a path
/// of at most [`trust::MAX_DEPTH`] hops. Returns why each other credential was refused, and
/// whether anything new was kept.
pub(crate) async fn take(
    store: &Store,
    me: &str,
    texts: &[String],
) -> Result<(Vec<String>, bool), String> {
    let mut refusals = Vec::new();
    let mut offered = Vec::new();
    for text in texts {
        match serde_json::from_str::<Value>(text) {
            Ok(c) => offered.push(c),
            Err(e) => refusals.push(format!("not a credential: {e}")),
        }
    }
    let now = now_ms();
    let mut received = store.received_trust().await.map_err(|e| e.to_string())?;
    let mut graph = trust::TrustGraph::new();
    for c in store.trust_credentials().await.map_err(|e| e.to_string())?.iter().chain(&received) {
        if let Ok(a) = trust::read_form(c) {
            graph.insert(a);
        }
    }
    // What each says it is, read without checking it yet: checking a signature is costly
    // (JSON-LD canonicalisation), and only credentials whose issuer is close enough are kept,
    // so that is all that is checked (a stranger's credentials never are).
    let mut waiting = Vec::new();
    for credential in offered {
        if received.contains(&credential) {
            continue; // known already (peers pass on what they know, again and again)
        }
        match trust::read_form(&credential) {
            Ok(a) if a.issuer == me => {} // ours: we hold the originals
            Ok(a) => waiting.push((a, credential)),
            Err(e) => refusals.push(e.to_string()),
        }
    }
    // Round by round, those whose issuer is now close enough (the sender's own too: what a
    // peer this peer does not trust asserts counts for nothing here, and kept it would only
    // crowd out what trusted peers said).
    let mut changed = false;
    loop {
        let (ready, rest): (Vec<_>, Vec<_>) = waiting.into_iter().partition(|(a, _)| {
            graph
                .score(me, &a.issuer, &a.context, now)
                .is_some_and(|s| s.path.len() < trust::MAX_DEPTH + 1)
        });
        waiting = rest;
        if ready.is_empty() {
            break;
        }
        for (said, credential) in ready {
            let same = |c: &Value| {
                trust::read_form(c).is_ok_and(|b| {
                    b.issuer == said.issuer
                        && b.subject == said.subject
                        && b.context == said.context
                })
            };
            let older = received.iter().position(same);
            // One no newer than the one kept is let go unchecked.
            if older.is_some_and(|at| {
                trust::read_form(&received[at]).is_ok_and(|b| b.issued_ms >= said.issued_ms)
            }) {
                continue;
            }
            let a = match trust::verify(&credential, now).await {
                Ok(a) => a,
                Err(e) => {
                    refusals.push(e.to_string());
                    continue;
                }
            };
            if let Some(at) = older {
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
