//! A test peer for the identity exchange (`/disot/identity/1.0.0`) and the trust documents
//! peers publish (synced over `/disot/sync/1.0.0`). A browser dials it; it answers the
//! browser's hello as its mode says:
//!
//! - `honest`: a correct profile named "Test peer".
//! - `other-did`: a profile claiming another peer's DID (signed with that DID's document but
//!   this peer's key, since it does not have the other key).
//! - `forged`: a correct profile whose display name is changed after signing.
//! - `replay`: the first exchange is honest and the peer then hangs up; every later exchange
//!   is answered with that first profile again (bytes captured from the first exchange).
//! - `credentials`: an honest profile, then a sync session bringing the browser this peer's
//!   trust document, read by the browser, with four credentials: one good (about `good`), one
//!   changed after signing (about `forged`), one expired (about `expired`) and one issued by
//!   another DID (about `foreign`); the subjects' DIDs are printed.
//!
//! Prints JSON lines: `listening` (its address and DID, and an invite to it naming first an
//! address where nothing answers, then that one), `subjects`, `connected`,
//! `disconnected`, `answered` (the mode's answer was sent) and `browser-profile` (the
//! browser's profile as received, with every byte the browser sent, for key-leak scans) and
//! `browser-credentials` (the credentials in the browser's trust document, as it synced it to
//! this peer, as text).
//!
//! Usage: impostor-peer <mode> [ws port]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use disot_core::auth::{self, Local, Message};
use disot_core::bitswap::{read_frame_max, write_frame};
use disot_core::sync::{self as core_sync, Level, Library};
use disot_core::trust;
use futures::{AsyncWriteExt as _, StreamExt as _};
use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, StreamProtocol};
use serde_json::{json, Value};

const IDENTITY: StreamProtocol = StreamProtocol::new(auth::PROTOCOL);
const SYNC: StreamProtocol = StreamProtocol::new(core_sync::PROTOCOL);

#[path = "support/mod.rs"]
mod support;
use support::{emit, Error};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn did_of(key: &Keypair) -> Result<String, Error> {
    Ok(disot_core::identity::did_from_public_key(&key.public())?)
}

/// Our answer to a hello, as the mode says, and the challenge it carries; `first` is the
/// first profile this peer sent.
fn answer(
    mode: &str,
    key: &Keypair,
    other: &Keypair,
    browser: &PeerId,
    hello: &Message,
    first: &mut Option<Vec<u8>>,
) -> Result<(Vec<u8>, String), Error> {
    let Message::Hello { challenge } = hello else { return Err("expected a hello".into()) };
    let audience = disot_core::identity::did_from_public_key(
        &libp2p::identity::PublicKey::try_decode_protobuf(browser.as_ref().digest())?,
    )?;
    if mode == "replay" {
        if let Some(bytes) = first {
            return Ok((bytes.clone(), String::new()));
        }
    }
    let mine = auth::challenge(rand::random());
    let local = Local::new(key.clone(), "Test peer")?;
    let mut profile = local.profile(&audience, challenge, Some(mine.clone()), now())?;
    match mode {
        "other-did" => {
            let did = did_of(other)?;
            profile.did_document = auth::did_document(&did)?;
            profile.did = did;
            profile.sign(key)?; // our key: we do not have the other one
        }
        "forged" => profile.display_name = "Someone else".into(),
        _ => {}
    }
    let bytes = Message::Profile(profile).encode();
    if first.is_none() {
        *first = Some(bytes.clone());
    }
    Ok((bytes, mine))
}

/// The credentials of the `credentials` mode, and the subjects they name.
async fn credentials(key: &Keypair, other: &Keypair) -> Result<(Vec<Value>, Value), Error> {
    let me = did_of(key)?;
    let subject = || did_of(&Keypair::generate_ed25519());
    let (good, forged, expired, foreign) = (subject()?, subject()?, subject()?, subject()?);
    let assertion = |subject: &str, issuer: &str, issued_ms: u64, expires_ms| trust::Assertion {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
        level: 50,
        context: "content".into(),
        issued_ms,
        expires_ms,
    };
    let t = now();
    let good_vc = trust::issue(key, &assertion(&good, &me, t, None)).await?;
    let mut forged_vc = trust::issue(key, &assertion(&forged, &me, t, None)).await?;
    forged_vc["credentialSubject"]["trustLevel"] = json!(100);
    let expired_vc =
        trust::issue(key, &assertion(&expired, &me, t - 7_200_000, Some(t - 3_600_000))).await?;
    let foreign_vc = trust::issue(other, &assertion(&foreign, &did_of(other)?, t, None)).await?;
    let subjects = json!({"good": good, "forged": forged, "expired": expired, "foreign": foreign});
    Ok((vec![good_vc, forged_vc, expired_vc, foreign_vc], subjects))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    // Sync sessions share one library, which is not `Send`: they run on this thread.
    tokio::task::LocalSet::new().run_until(run()).await
}

/// Sync with the browsers: answer their sessions (and print what their trust documents hold,
/// once), and, in the `credentials` mode, start one with each browser that `publish` names,
/// to bring it our trust document.
async fn sync(
    mut control: libp2p_stream::Control,
    me: String,
    credentials: Vec<Value>,
    mut publish: tokio::sync::mpsc::Receiver<PeerId>,
) -> Result<(), Error> {
    let lib = Rc::new(RefCell::new(Library::new(&me)));
    let mut incoming = control.accept(SYNC)?;
    let printed = Rc::new(std::cell::Cell::new(false));
    let credentials: BTreeMap<String, String> = credentials
        .iter()
        .enumerate()
        .map(|(i, c)| Ok((i.to_string(), String::from_utf8(disot_core::entry::canonical(c)?)?)))
        .collect::<Result<_, Error>>()?;
    loop {
        tokio::select! {
            Some((peer, stream)) = incoming.next() => {
                let session = session(lib.clone(), printed.clone(), peer, stream, false);
                tokio::task::spawn_local(async move {
                    if let Err(e) = session.await {
                        emit(json!({"event": "error", "message": format!("sync: {e}")}));
                    }
                });
            }
            Some(browser) = publish.recv() => {
                let did = disot_core::identity::did_of_peer(&browser).ok_or("no DID")?;
                lib.borrow_mut().publish_trust(&[did].into(), &credentials)?;
                let (lib, printed, mut control) = (lib.clone(), printed.clone(), control.clone());
                tokio::task::spawn_local(async move {
                    let result = async {
                        let stream = control.open_stream(browser, SYNC).await?;
                        session(lib, printed, browser, stream, true).await
                    };
                    match result.await {
                        Ok(()) => emit(json!({"event": "credentials-sent"})),
                        Err(e) => emit(json!({"event": "error", "message": format!("sync: {e}")})),
                    }
                });
            }
            else => return Ok(()),
        }
    }
}

/// One sync session with `peer`; the first time the browser's trust document is here, what
/// it holds is printed.
async fn session(
    lib: Rc<RefCell<Library>>,
    printed: Rc<std::cell::Cell<bool>>,
    peer: PeerId,
    mut stream: libp2p::Stream,
    initiator: bool,
) -> Result<(), Error> {
    let did = disot_core::identity::did_of_peer(&peer).ok_or("no DID")?;
    let result = core_sync::session(&mut stream, &lib, &did, Level::Full, initiator, |_| {}).await;
    let _ = stream.close().await;
    result?;
    let theirs = lib.borrow_mut().trust_of(&did).filter(|_| !printed.get());
    if let Some((_, theirs)) = theirs {
        printed.set(true);
        let parsed: Vec<Value> =
            theirs.iter().filter_map(|c| serde_json::from_str(c).ok()).collect();
        emit(json!({"event": "browser-credentials", "sent": serde_json::to_string(&parsed)?}));
    }
    Ok(())
}

async fn run() -> Result<(), Error> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "honest".into());
    if !["honest", "other-did", "forged", "replay", "credentials"].contains(&mode.as_str()) {
        return Err(format!("unknown mode {mode}").into());
    }
    let port: u16 = std::env::args().nth(2).and_then(|p| p.parse().ok()).unwrap_or(0);
    let key = Keypair::generate_ed25519();
    let other = Keypair::generate_ed25519();
    let (creds, subjects) = credentials(&key, &other).await?;
    emit(json!({"event": "subjects", "subjects": subjects}));

    let mut swarm = support::swarm(key.clone(), port).await?;

    let (hang_up, mut hang_ups) = tokio::sync::mpsc::channel::<PeerId>(4);
    let mut control = swarm.behaviour().stream.new_control();
    let mut incoming = control.accept(IDENTITY)?;
    let (publish, to_publish) = tokio::sync::mpsc::channel::<PeerId>(4);
    let (sync_control, me) = (control.clone(), did_of(&key)?);
    tokio::task::spawn_local(async move {
        if let Err(e) = sync(sync_control, me, creds, to_publish).await {
            emit(json!({"event": "error", "message": format!("sync: {e}")}));
        }
    });
    let mode2 = mode.clone();
    let key2 = key.clone();
    tokio::spawn(async move {
        let mut first: Option<Vec<u8>> = None;
        while let Some((browser, mut stream)) = incoming.next().await {
            let result: Result<(), Error> = async {
                let hello = read_frame_max(&mut stream, auth::MAX_MESSAGE)
                    .await?
                    .ok_or("closed before the hello")?;
                let hello = Message::decode(&hello)?;
                let was_first = first.is_none();
                let (reply, mine) = answer(&mode2, &key2, &other, &browser, &hello, &mut first)?;
                write_frame(&mut stream, &reply).await?;
                emit(json!({"event": "answered", "mode": mode2, "peer": browser.to_string()}));
                if let Ok(Some(theirs)) = read_frame_max(&mut stream, auth::MAX_MESSAGE).await {
                    let text = String::from_utf8_lossy(&theirs).into_owned();
                    let checked = Message::decode(&theirs).and_then(|m| match m {
                        Message::Profile(p) => Ok(p),
                        _ => Err(auth::Error::Unexpected("hello")),
                    });
                    if let Ok(profile) = checked {
                        emit(json!({
                            "event": "browser-profile",
                            "did": profile.did,
                            "answersOurs": profile.answers == mine,
                            "sent": [hello_text(&hello), text],
                        }));
                    }
                }
                let _ = stream.close().await;
                if mode2 == "credentials" {
                    publish.send(browser).await?;
                }
                if mode2 == "replay" && was_first {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let _ = hang_up.send(browser).await;
                }
                Ok(())
            }
            .await;
            if let Err(e) = result {
                emit(json!({"event": "error", "message": e.to_string()}));
            }
        }
    });

    let me = *swarm.local_peer_id();
    let did = did_of(&key)?;
    loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    let addr = format!("{address}/p2p/{me}");
                    emit(json!({
                        "event": "listening", "addr": addr, "did": did,
                        "invite": invite_to(&key, &addr)?,
                    }))
                }
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    emit(json!({"event": "connected", "peer": peer_id.to_string()}))
                }
                SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                    emit(json!({"event": "disconnected", "peer": peer_id.to_string()}))
                }
                _ => {}
            },
            Some(peer) = hang_ups.recv() => {
                let _ = swarm.disconnect_peer_id(peer);
            }
        }
    }
}

fn hello_text(hello: &Message) -> String {
    String::from_utf8_lossy(&hello.encode()).into_owned()
}

/// A signed invite (an hour long) to this peer at a closed port of loopback, then at `addr`.
fn invite_to(key: &Keypair, addr: &str) -> Result<String, Error> {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let me = key.public().to_peer_id();
    let dead = format!("/ip4/127.0.0.1/tcp/{closed}/ws/p2p/{me}");
    let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis()
        as u64
        + 3_600_000;
    Ok(disot_core::invite::create(key, "Test peer", vec![dead, addr.to_owned()], expires)?)
}
