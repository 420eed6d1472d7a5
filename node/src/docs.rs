//! The documents the node keeps for the peers it is told to trust (`--trust`): shares and
//! collections, synced with the browsers' own protocol (`disot_core::sync`) and kept on disk,
//! so that what one peer changes reaches another while the first is offline.
//!
//! The node is a peer like any other here, with its own DID: it takes part in a document only
//! as one of its participants, and passes a collection's changes on only as one of its
//! editors (readers take changes only from writers). A share between two others never reaches
//! it. From a peer it does not trust it takes nothing, and it tells nobody of a document that
//! peer is not a participant of.
//!
//! Sessions run on a thread of their own (the library is single-threaded, as in the browser);
//! the swarm's thread only tells it which peers went away.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{ErrorKind, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use disot_core::auth::{self, Local};
use disot_core::inbound::InboundLimit;
use disot_core::sync::{self as core_sync, Level, Library, Policy, Writes};
use futures::{AsyncWriteExt as _, FutureExt as _, StreamExt as _};
use libp2p::identity::Keypair;
use libp2p::{PeerId, StreamProtocol};
use sha2::{Digest as _, Sha256};

use crate::events::{Event, Output};

const SYNC: StreamProtocol = StreamProtocol::new(core_sync::PROTOCOL);
const IDENTITY: StreamProtocol = StreamProtocol::new(auth::PROTOCOL);
/// Longest a session may run.
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest an identity exchange may take.
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most sessions peers may have open with the node at once, and most identity exchanges; of
/// each, most from one peer (a session each way, and a third as one ends and the next begins;
/// an exchange, and one more as a peer reconnects).
const MAX_INBOUND: usize = 32;
const INBOUND_PER_PEER: usize = 3;
const IDENTITY_PER_PEER: usize = 2;
/// Most peers the swarm may report gone before the sync thread has heard of them.
const GONE_QUEUE: usize = 1024;

/// A `--trust` value: a DID and the trust level (0–100) the node gives it.
pub fn parse_trust(value: &str) -> Result<(String, u8), String> {
    let (did, level) = match value.rsplit_once('=') {
        Some((did, level)) => {
            let level: u8 = level
                .parse()
                .ok()
                .filter(|l| *l <= 100)
                .ok_or_else(|| format!("the level of {did} must be 0–100, not {level:?}"))?;
            (did, level)
        }
        None => (value, 100),
    };
    disot_core::identity::public_key_from_did(did)
        .map_err(|e| format!("{did:?} is not a peer's did:key: {e}"))?;
    Ok((did.to_owned(), level))
}

/// What [`DocDir::load`] found: the items, and what could not be read.
pub type Loaded = (Vec<(String, Vec<u8>)>, Vec<String>);

/// The documents' directory: one file per stored item (a document, a part of one, or the sync
/// state with one peer), named by the hash of its key and holding the key itself (two bytes of
/// length, then the key) before its bytes. Each file is written to a temporary name, synced and
/// renamed into place, so a crash leaves the old item or the new one, never half of one.
#[derive(Debug)]
pub struct DocDir {
    dir: PathBuf,
}

impl DocDir {
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("docs");
        fs::create_dir_all(&dir)?;
        Ok(DocDir { dir })
    }

    fn path(&self, key: &str) -> PathBuf {
        let digest = Sha256::digest(key.as_bytes());
        self.dir.join(digest[..16].iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    /// Every stored item (key, bytes), and a problem for each file that could not be read.
    pub fn load(&self) -> std::io::Result<Loaded> {
        let mut items = Vec::new();
        let mut problems = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                // Left by a write that did not finish: the item it replaced is still there.
                let _ = fs::remove_file(&path);
                continue;
            }
            let mut bytes = Vec::new();
            if let Err(e) = fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)) {
                problems.push(format!("{}: {e}", path.display()));
                continue;
            }
            let key = bytes.get(..2).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])));
            let key = key
                .and_then(|len| bytes.get(2..2 + len))
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(str::to_owned)
                .filter(|k| self.path(k) == path);
            match key {
                Some(key) => {
                    let body = bytes.split_off(2 + key.len());
                    items.push((key, body));
                }
                None => problems.push(format!("{}: not a document file", path.display())),
            }
        }
        Ok((items, problems))
    }

    /// Store what the library asks to store, and remove what it asks to remove.
    pub fn apply(&self, writes: &Writes) -> std::io::Result<()> {
        for (key, bytes) in &writes.put {
            let len = u16::try_from(key.len())
                .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "key too long"))?;
            let path = self.path(key);
            let tmp = path.with_extension("tmp");
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&len.to_be_bytes())?;
            file.write_all(key.as_bytes())?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
        }
        for key in &writes.delete {
            match fs::remove_file(self.path(key)) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        // The renames themselves are durable once the directory is.
        fs::File::open(&self.dir)?.sync_all()
    }
}

/// Tells the sync thread what the swarm sees.
#[derive(Debug, Clone)]
pub struct Handle {
    gone: tokio::sync::mpsc::Sender<PeerId>,
}

impl Handle {
    /// The node has no connection to `peer` any more.
    pub fn peer_gone(&self, peer: PeerId) {
        // A full queue only delays forgetting the peer: a session with it fails on its own.
        let _ = self.gone.try_send(peer);
    }
}

/// Load the documents from `data_dir` and start answering (and starting) sessions.
pub fn start(
    mut control: libp2p_stream::Control,
    key: Keypair,
    data_dir: &Path,
    trusted: BTreeMap<String, u8>,
    json: bool,
    crash_on: Option<String>,
) -> Result<Handle, String> {
    let local = Local::new(key.clone(), "disot-node").map_err(|e| e.to_string())?;
    let me = local.did().to_owned();
    let dir = DocDir::open(data_dir).map_err(|e| format!("opening the documents: {e}"))?;
    let (items, mut problems) = dir.load().map_err(|e| format!("reading the documents: {e}"))?;
    let mut lib = Library::new(&me);
    if let Some(id) = &crash_on {
        lib.crash_on(id);
    }
    problems.extend(lib.load(items));
    let out = Output::new(json);
    out.emit(&Event::DocumentsLoaded { count: lib.ids().len(), problems });
    let sessions = control.accept(SYNC).map_err(|e| e.to_string())?;
    let identities = control.accept(IDENTITY).map_err(|e| e.to_string())?;
    let (gone_tx, gone) = tokio::sync::mpsc::channel(GONE_QUEUE);
    std::thread::Builder::new()
        .name("documents".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    return out.emit(&Event::Warning { message: format!("document sync: {e}") })
                }
            };
            let service = Rc::new(Service {
                lib: RefCell::new(lib),
                dir,
                trusted,
                policy: Policy::default(),
                control,
                local,
                out,
                peers: RefCell::default(),
                running: RefCell::default(),
                again: RefCell::default(),
                inbound: InboundLimit::new(INBOUND_PER_PEER, MAX_INBOUND),
                identities: InboundLimit::new(IDENTITY_PER_PEER, MAX_INBOUND),
                cut_off: RefCell::default(),
            });
            tokio::task::LocalSet::new()
                .block_on(&runtime, service.run(sessions, identities, gone));
        })
        .map_err(|e| format!("starting the document thread: {e}"))?;
    Ok(Handle { gone: gone_tx })
}

struct Service {
    lib: RefCell<Library>,
    dir: DocDir,
    trusted: BTreeMap<String, u8>,
    policy: Policy,
    control: libp2p_stream::Control,
    local: Local,
    out: Output,
    /// Connected peers that proved who they are or synced with the node, with their DIDs.
    peers: RefCell<HashMap<PeerId, String>>,
    /// Peers a session of ours runs with now, and those to run another with after it.
    running: RefCell<HashSet<PeerId>>,
    again: RefCell<HashSet<PeerId>>,
    /// Sessions peers opened, and identity exchanges, answered at once ([`MAX_INBOUND`] at
    /// most of each).
    inbound: InboundLimit<PeerId>,
    identities: InboundLimit<PeerId>,
    /// Peers a sync message of which made a session panic: no session with them (theirs or
    /// ours) until the node starts again, so that the same message cannot set it off again.
    cut_off: RefCell<HashSet<PeerId>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Service {
    async fn run(
        self: Rc<Self>,
        mut sessions: libp2p_stream::IncomingStreams,
        mut identities: libp2p_stream::IncomingStreams,
        mut gone: tokio::sync::mpsc::Receiver<PeerId>,
    ) {
        loop {
            tokio::select! {
                Some((peer, stream)) = sessions.next() => self.clone().inbound_session(peer, stream),
                Some((peer, stream)) = identities.next() => self.clone().identify(peer, stream),
                Some(peer) = gone.recv() => {
                    self.peers.borrow_mut().remove(&peer);
                }
                else => break,
            }
        }
    }

    /// How much the node takes from `did`: from its `--trust` level, by the default policy.
    fn level(&self, did: &str) -> Level {
        match self.trusted.get(did) {
            Some(level) => self.policy.level(Some(f64::from(*level) / 100.0)),
            None => Level::Nothing,
        }
    }

    /// Answer `peer`'s identity exchange, so that it knows the node is who its key says.
    fn identify(self: Rc<Self>, peer: PeerId, mut stream: libp2p::Stream) {
        // Over the limit: dropped, and the peer tries again.
        let Ok(admitted) = self.identities.admit(&peer) else { return };
        tokio::task::spawn_local(async move {
            let _admitted = admitted; // until the exchange is over
            let exchange =
                auth::respond(&mut stream, self.local.clone(), peer, rand::random(), now_ms);
            match tokio::time::timeout(IDENTITY_TIMEOUT, exchange).await {
                Ok(Ok(verified)) => {
                    self.out.emit(&Event::Verified {
                        peer: peer.to_string(),
                        did: verified.did.clone(),
                    });
                    self.peers.borrow_mut().insert(peer, verified.did);
                }
                Ok(Err(e)) => self.out.emit(&Event::Warning {
                    message: format!("identity exchange with {peer}: {e}"),
                }),
                Err(_) => self.out.emit(&Event::Warning {
                    message: format!("identity exchange with {peer}: timed out"),
                }),
            }
            let _ = stream.close().await;
        });
    }

    fn inbound_session(self: Rc<Self>, peer: PeerId, stream: libp2p::Stream) {
        if self.cut_off.borrow().contains(&peer) {
            return; // (dropped unread)
        }
        let Some(did) = disot_core::identity::did_of_peer(&peer) else { return };
        // Over the limit: dropped, and the peer tries again.
        let Ok(admitted) = self.inbound.admit(&peer) else { return };
        self.peers.borrow_mut().insert(peer, did.clone());
        tokio::task::spawn_local(async move {
            self.session(peer, did, stream, false).await;
            drop(admitted);
        });
    }

    /// Run a session of ours with `peer` (one at a time; asked again during one, another
    /// follows it).
    fn sync_with(self: &Rc<Self>, peer: PeerId, did: String) {
        if self.cut_off.borrow().contains(&peer) {
            return;
        }
        if !self.running.borrow_mut().insert(peer) {
            self.again.borrow_mut().insert(peer);
            return;
        }
        let this = self.clone();
        tokio::task::spawn_local(async move {
            let mut control = this.control.clone();
            loop {
                match control.open_stream(peer, SYNC).await {
                    Ok(stream) => this.session(peer, did.clone(), stream, true).await,
                    Err(e) => this.out.emit(&Event::SyncFailed {
                        peer: peer.to_string(),
                        reason: format!("opening a session: {e}"),
                    }),
                }
                if !this.again.borrow_mut().remove(&peer) || this.cut_off.borrow().contains(&peer) {
                    break;
                }
            }
            this.running.borrow_mut().remove(&peer);
        });
    }

    async fn session(
        self: &Rc<Self>,
        peer: PeerId,
        did: String,
        mut stream: libp2p::Stream,
        initiator: bool,
    ) {
        let level = self.level(&did);
        let mut refusals = Vec::new();
        let session = core_sync::session(&mut stream, &self.lib, &did, level, initiator, |r| {
            refusals.push(r)
        });
        // A panic (a bug a peer's message set off) ends this session only: the library's state
        // is left as the message found it or as far as it got, and nothing more is taken from
        // that peer until the node restarts.
        let session = std::panic::AssertUnwindSafe(session).catch_unwind();
        let result = match tokio::time::timeout(SESSION_TIMEOUT, session).await {
            Ok(Err(panic)) => {
                let message = disot_core::blame::panic_message(&*panic);
                self.cut_off.borrow_mut().insert(peer);
                self.out.emit(&Event::PeerCutOff {
                    peer: peer.to_string(),
                    reason: format!(
                        "a sync session with it made the node's sync fail: {message:.300}"
                    ),
                });
                let _ = stream.close().await;
                return;
            }
            Ok(Ok(result)) => Ok(result),
            Err(elapsed) => Err(elapsed),
        };
        let _ = stream.close().await;
        let saved = self.persist();
        match result {
            Ok(Ok(stats)) => {
                self.out.emit(&Event::Synced {
                    peer: peer.to_string(),
                    did: did.clone(),
                    initiator,
                    changed: stats.changed,
                    sent: stats.bytes_sent,
                    received: stats.bytes_received,
                    refused: refusals,
                    refused_count: stats.refused,
                    documents: self.lib.borrow().ids().len(),
                });
                if stats.changed > 0 {
                    self.pass_on(peer);
                }
            }
            Ok(Err(e)) => {
                self.out.emit(&Event::SyncFailed { peer: peer.to_string(), reason: e.to_string() })
            }
            Err(_) => self.out.emit(&Event::SyncFailed {
                peer: peer.to_string(),
                reason: "the session timed out".into(),
            }),
        }
        if let Err(e) = saved {
            self.out.emit(&Event::Warning { message: format!("saving the documents: {e}") });
        }
    }

    /// Save what changed.
    fn persist(&self) -> std::io::Result<()> {
        let writes = self.lib.borrow_mut().take_writes();
        if writes.put.is_empty() && writes.delete.is_empty() {
            return Ok(());
        }
        let applied = self.dir.apply(&writes);
        if applied.is_err() {
            self.lib.borrow_mut().writes_failed(writes);
        }
        applied
    }

    /// What `from` just changed goes on to the other connected peers that share documents
    /// with the node.
    fn pass_on(self: &Rc<Self>, from: PeerId) {
        let others: Vec<(PeerId, String)> = {
            let mut lib = self.lib.borrow_mut();
            self.peers
                .borrow()
                .iter()
                .filter(|(p, did)| **p != from && !lib.docs_with(did).is_empty())
                .map(|(p, did)| (*p, did.clone()))
                .collect()
        };
        for (peer, did) in others {
            self.sync_with(peer, did);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("disot-docs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_library_saved_in_the_directory_loads_again_the_same() {
        let dir = temp_dir("roundtrip");
        let docs = DocDir::open(&dir).unwrap();
        let me = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
        let mut lib = Library::new(me);
        let id = lib.create_collection([7; 16], "kept").unwrap();
        lib.collection_add(
            &id,
            &disot_core::sync::Entry {
                cid: "bafkqaaa".into(),
                name: Some("empty".into()),
                mime: None,
                size: Some(0),
                added_by: me.into(),
                added_ms: 1,
            },
        )
        .unwrap();
        docs.apply(&lib.take_writes()).unwrap();
        // A write cut short leaves a temporary file, which loading removes.
        fs::write(dir.join("docs/0123.tmp"), b"half").unwrap();
        let (items, problems) = docs.load().unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let mut again = Library::new(me);
        assert!(again.load(items).is_empty());
        assert_eq!(again.collection(&id), lib.collection(&id));
        assert!(!dir.join("docs/0123.tmp").exists());
        // A stranger's file in the directory is named, not taken.
        fs::write(dir.join("docs/ffff"), b"\x00\x03abcdef").unwrap();
        let (_, problems) = docs.load().unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn trust_values_name_a_did_and_a_level() {
        let did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
        assert_eq!(parse_trust(did).unwrap(), (did.to_owned(), 100));
        assert_eq!(parse_trust(&format!("{did}=60")).unwrap(), (did.to_owned(), 60));
        assert!(parse_trust(&format!("{did}=101")).unwrap_err().contains("0–100"));
        assert!(parse_trust("did:web:example.com=50").is_err());
    }
}
