//! Shared documents and their sync between peers (sans-IO).
//!
//! A peer's shares and collections are Automerge documents, kept in a [`Library`]:
//!
//! - **Shares** from one DID to another live in one document per (sender, recipient) pair, its id
//!   derived from both DIDs ([`shares_id`]). Only the sender writes it; the recipient reads it.
//!   Each share names an object (CID, `sha256:` name, size, name, MIME type) or a collection,
//!   with a note, and may be revoked.
//! - **Collections** are named, ordered lists of CIDs with metadata. Their owner and editors
//!   write them; readers only read. Concurrent edits merge as Automerge merges: every addition
//!   is kept, a removal removes the entry it named, and of two concurrent renames the same one
//!   wins on every peer.
//! - **Trust**: each peer publishes its trust assertions (signed credentials: its own and those
//!   it passes on from others) in one document of its own ([`trust_id`]), read by the peers it
//!   trusts. Only its issuer writes it; readers verify every credential in it before using it.
//!
//! The sync protocol ([`session`]) runs Automerge's sync messages for every document the two
//! peers share, in batches, until neither has anything to send. What a peer may see is decided
//! here, not by the caller: a document is sent only to its participants, changes are taken
//! only from its writers, a new document only when it is the sender's shares to us or a
//! collection the sender shared with us, and nothing at all from a peer the user does not trust
//! enough ([`Policy`]). Each document's sync state with each peer is kept ([`Library::take_writes`]),
//! so that a reconnect sends only what changed since.
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;

use automerge::sync::{self, SyncDoc as _};
use automerge::transaction::Transactable as _;
use automerge::{AutoCommit, ObjType, ReadDoc as _, ROOT};
use futures::{AsyncRead, AsyncWrite};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::bitswap::{read_frame_max, write_frame};
use crate::hex;

/// The sync protocol.
pub const PROTOCOL: &str = "/disot/sync/1.0.0";
/// Largest frame (one document's sync message) accepted.
pub const MAX_FRAME: usize = 8 << 20;
/// Most documents a library keeps.
pub const MAX_DOCS: usize = 10_000;
/// Most of those that are trust documents of peers this one does not trust: they come from any
/// peer that names this one a reader, so they must not take the room of shares and collections.
/// A trusted peer's is taken beyond this (strangers cannot crowd it out).
pub const MAX_TRUST_DOCS: usize = 1_000;
/// Most frames in one batch, and most batches in one session.
pub const MAX_BATCH: usize = 10_000;
pub const MAX_ROUNDS: usize = 64;
/// Most bytes a document may hold of peers' changes (a collection of the most entries, with
/// their history, is a few MiB), and the trust document of a peer not trusted.
pub const MAX_DOCUMENT_BYTES: usize = 64 << 20;
pub const MAX_STRANGER_TRUST_BYTES: usize = 256 << 10;
/// Most bytes all trust documents held may take before a peer not trusted adds to them: a
/// thousand made-up peers could otherwise make this one hold 256 MiB of what they say.
pub const MAX_TRUST_BYTES_IN_ALL: usize = 16 << 20;
/// Most collections asked for at once of one peer that shared them (see
/// [`Library::expect_collections`]).
pub const MAX_EXPECTED_PER_PEER: usize = 64;
/// Most refusals of one session told with why (the rest are counted): a peer sending junk
/// under ids it makes up does not fill memory with the reasons.
pub const MAX_REFUSALS_TOLD: u64 = 32;
/// Longest name, note, MIME type or id in a document.
pub const MAX_TEXT: usize = 1024;
/// Most entries in a collection.
pub const MAX_ENTRIES: usize = 100_000;
/// A sync message above this size is weighed against the other way to say the same (see
/// [`Library::generate_with`]).
const COMPARE_ABOVE: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("malformed sync message: {0}")]
    Malformed(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no document {0}")]
    NotFound(String),
    #[error("{0} is not shared with this peer")]
    Unknown(String),
    #[error("sync stream: {0}")]
    Io(String),
    #[error("document: {0}")]
    Document(String),
}

fn doc_err(e: automerge::AutomergeError) -> Error {
    Error::Document(e.to_string())
}

/// How much of what a peer shares this peer takes, from how much it trusts that peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Level {
    /// Nothing: its documents are not taken.
    Nothing,
    /// The documents (what is shared, collections), and content only when asked for.
    Metadata,
    /// The documents, and the shared content fetched and pinned at once.
    Full,
}

/// The trust thresholds (0–100, the peer's trust score × 100) of the sync [`Level`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// At or above: fetch shared content at once and pin it.
    pub fetch_at: u8,
    /// At or above (and below `fetch_at`): take the metadata only.
    pub metadata_at: u8,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { fetch_at: 80, metadata_at: 50 }
    }
}

impl Policy {
    pub fn validate(&self) -> Result<(), Error> {
        if self.fetch_at > 100 || self.metadata_at > self.fetch_at {
            return Err(Error::Invalid("thresholds must be 0 ≤ metadata ≤ fetch ≤ 100".into()));
        }
        Ok(())
    }

    /// The level for a peer whose trust score is `score` (0–1; `None`: not trusted at all).
    pub fn level(&self, score: Option<f64>) -> Level {
        let percent = score.unwrap_or(0.0) * 100.0 + 1e-9;
        if score.is_none() || percent < f64::from(self.metadata_at) || percent < 1.0 {
            Level::Nothing
        } else if percent < f64::from(self.fetch_at) {
            Level::Metadata
        } else {
            Level::Full
        }
    }
}

/// The id of the document holding the trust assertions `issuer` publishes.
pub fn trust_id(issuer: &str) -> String {
    let digest = Sha256::digest(format!("disot-trust\n{issuer}").as_bytes());
    format!("trust-{}", hex(&digest[..16]))
}

/// Whether `id` names a trust document (see [`trust_id`]).
pub fn is_trust_id(id: &str) -> bool {
    id.starts_with("trust-")
}

/// Most credentials in a trust document.
pub const MAX_TRUST_CREDENTIALS: usize = 1000;
/// Largest credential in a trust document.
pub const MAX_CREDENTIAL: usize = crate::trust::MAX_CREDENTIAL_BYTES;

/// The id of the document holding what `from` shares with `to`.
pub fn shares_id(from: &str, to: &str) -> String {
    let digest = Sha256::digest(format!("disot-shares\n{from}\n{to}").as_bytes());
    format!("shares-{}", hex(&digest[..16]))
}

/// Whether `id` names a shares document (see [`shares_id`]).
pub fn is_shares_id(id: &str) -> bool {
    id.starts_with("shares-")
}

fn valid_id(id: &str) -> bool {
    let body = id
        .strip_prefix("shares-")
        .or_else(|| id.strip_prefix("collection-"))
        .or_else(|| id.strip_prefix("trust-"));
    body.is_some_and(|b| b.len() == 32 && b.bytes().all(|c| c.is_ascii_hexdigit()))
}

fn text(what: &str, value: &str) -> Result<(), Error> {
    if value.len() > MAX_TEXT {
        return Err(Error::Invalid(format!("{what} is over {MAX_TEXT} bytes")));
    }
    Ok(())
}

/// What is shared: an object, or a collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Share {
    pub id: String,
    pub from: String,
    pub to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    #[serde(default)]
    pub note: String,
    pub created_ms: u64,
    #[serde(default)]
    pub revoked: bool,
}

impl Share {
    /// Its texts that this code writes at most [`MAX_TEXT`] bytes of, each with its name.
    fn texts(&self) -> impl Iterator<Item = (&'static str, &String)> {
        [("id", Some(&self.id)), ("note", Some(&self.note))]
            .into_iter()
            .chain([("name", self.name.as_ref()), ("MIME type", self.mime.as_ref())])
            .chain([("cid", self.cid.as_ref()), ("sha256", self.sha256.as_ref())])
            .chain([("collection", self.collection.as_ref())])
            .filter_map(|(what, v)| Some((what, v?)))
    }

    /// Whether each of its texts is within [`MAX_TEXT`].
    fn fits(&self) -> bool {
        self.texts().all(|(_, t)| t.len() <= MAX_TEXT)
    }
}

/// Most shares read from one shares document (one per object or collection shared, each
/// approved by the user).
pub const MAX_SHARES_IN_DOCUMENT: usize = 10_000;

/// One entry of a collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub cid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub added_by: String,
    pub added_ms: u64,
}

/// A collection as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Collection {
    /// Its name, members and how many entries it has (`entries` may be a page of them).
    #[serde(flatten)]
    pub info: CollectionInfo,
    pub entries: Vec<Entry>,
}

/// A collection without its entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionInfo {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub editors: Vec<String>,
    pub readers: Vec<String>,
    pub count: usize,
}

/// A member's role in a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    Editor,
    Reader,
    /// Not a member (any more).
    None,
}

/// What one session moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    /// Documents that changed here.
    pub changed: u64,
    /// Messages refused (the first [`MAX_REFUSALS_TOLD`] are told, each with why).
    pub refused: u64,
    /// Documents the session kept a sync state for: those held here that either side spoke of.
    pub documents: u64,
}

/// The documents of one peer, and its sync state with each other peer.
pub struct Library {
    me: String,
    docs: BTreeMap<String, AutoCommit>,
    /// Documents taken from a peer before their first change arrived: (document → that peer).
    arriving: BTreeMap<String, String>,
    /// Collections a peer shared that it sent nothing of when asked (it may no longer hold
    /// them): not asked for again until its shares change, so that they do not keep the
    /// places of others (see [`Library::expect_collections`]).
    unanswered: BTreeSet<(String, String)>,
    states: HashMap<(String, String), sync::State>,
    dirty_docs: BTreeSet<String>,
    dirty_states: BTreeSet<(String, String)>,
    /// What storage holds of each document (see [`Library::take_writes`]).
    stored: HashMap<String, Stored>,
    /// Test builds only: a sync message about this document panics, as a bug would.
    crash_on: Option<String>,
    /// Test builds only: loading this document fails so, as a bug would.
    crash_loading: Option<(String, crate::api::CrashHow)>,
    /// Documents not loaded, nor taken from peers, because loading one made the node crash:
    /// their saved bytes stay as they are, for a later version to open.
    set_aside: BTreeSet<String>,
}

/// Read a saved document from its whole save and the chunks appended after it (chunk number →
/// bytes), noting in `problems` what is damaged; `None` if the whole save cannot be read.
fn read_document(
    id: &str,
    whole: &[u8],
    chunks: BTreeMap<u32, Vec<u8>>,
    problems: &mut Vec<String>,
) -> Option<(AutoCommit, Stored)> {
    let mut doc = match AutoCommit::load(whole) {
        Ok(doc) => doc,
        Err(e) => {
            problems.push(format!("sync document {id} is damaged: {e}"));
            return None;
        }
    };
    let mut stored = Stored { whole_bytes: whole.len(), ..Stored::default() };
    for (n, chunk) in chunks {
        stored.next_chunk = stored.next_chunk.max(n + 1);
        stored.chunk_bytes += chunk.len();
        // A chunk is its changes after their SHA-256: Automerge would take the changes of a
        // damaged chunk up to the damage and say nothing.
        let body = chunk.get(32..).filter(|b| Sha256::digest(b)[..] == chunk[..32]);
        let loaded = match body {
            Some(body) => doc.load_incremental(body).map_err(|e| e.to_string()),
            None => Err("its hash does not match".into()),
        };
        if let Err(e) = loaded {
            problems.push(format!("sync document {id}, chunk {n}, is damaged: {e}"));
            stored.damaged = true;
        }
    }
    stored.heads = doc.get_heads();
    Some((doc, stored))
}

/// How a panic while loading a saved document names it (see [`crate::blame`]): this, then the
/// document's id.
pub const DOCUMENT_BLAME: &str = "document:";

/// What storage holds of one document: a whole save and the chunks appended after it.
#[derive(Debug, Default, Clone)]
struct Stored {
    /// The heads of what is stored.
    heads: Vec<automerge::ChangeHash>,
    /// Chunks are numbered from 0; this is the next number (chunks below it may exist).
    next_chunk: u32,
    whole_bytes: usize,
    chunk_bytes: usize,
    /// Bytes of peers' sync messages with changes taken since the last write: with what is
    /// stored, about what the document holds (see [`Library::room_to_grow`]).
    taken_bytes: usize,
    /// A chunk failed to load: the next write is a whole save.
    damaged: bool,
}

/// Storage keys: a document's whole save, its appended chunks, and sync states.
pub const DOC_KEY: &str = "sync-doc:";
pub const STATE_KEY: &str = "sync-state:";
/// Chunks appended to a document before it is saved whole again, at most.
const MAX_CHUNKS: u32 = 64;

fn chunk_key(id: &str, n: u32) -> String {
    format!("{DOC_KEY}{id}+{n:06}")
}

/// What to write to storage, in one transaction: keys to put, and keys to delete.
#[derive(Debug, Default)]
pub struct Writes {
    pub put: Vec<(String, Vec<u8>)>,
    pub delete: Vec<String>,
    /// The documents these writes save.
    pub docs: Vec<String>,
    /// What storage held of each document before these writes, and the sync states they
    /// save: what [`Library::writes_failed`] goes back to.
    before: Vec<(String, Stored)>,
    states: Vec<(String, String)>,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library").field("me", &self.me).field("docs", &self.docs.len()).finish()
    }
}

impl Library {
    pub fn new(me: &str) -> Self {
        Library {
            me: me.to_owned(),
            docs: BTreeMap::new(),
            arriving: BTreeMap::new(),
            unanswered: BTreeSet::new(),
            states: HashMap::new(),
            dirty_docs: BTreeSet::new(),
            dirty_states: BTreeSet::new(),
            stored: HashMap::new(),
            crash_on: None,
            crash_loading: None,
            set_aside: BTreeSet::new(),
        }
    }

    /// Neither load document `id` nor take it from peers (see [`DOCUMENT_BLAME`]). Before
    /// [`Library::load`].
    pub fn set_aside(&mut self, id: &str) {
        self.set_aside.insert(id.to_owned());
    }

    /// For test builds: a peer's sync message about document `id` panics, as a bug its
    /// message set off would (see [`crate::blame`]).
    pub fn crash_on(&mut self, id: &str) {
        self.crash_on = Some(id.to_owned());
    }

    /// For test builds: loading document `id` fails as `how` says, as a bug in reading its
    /// saved bytes would (see [`DOCUMENT_BLAME`]).
    pub fn crash_loading(&mut self, id: &str, how: crate::api::CrashHow) {
        self.crash_loading = Some((id.to_owned(), how));
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    /// Load what [`Library::take_writes`] had stored, as (key, bytes) in any order. A document
    /// that cannot be read is left out and named in the answer; a damaged chunk loses only
    /// what it held (peers send it again), and the document is saved whole at the next write.
    pub fn load(&mut self, items: Vec<(String, Vec<u8>)>) -> Vec<String> {
        let mut problems = Vec::new();
        let mut wholes = BTreeMap::new();
        let mut chunks: BTreeMap<String, BTreeMap<u32, Vec<u8>>> = BTreeMap::new();
        let mut states = Vec::new();
        for (key, bytes) in items {
            if let Some(rest) = key.strip_prefix(DOC_KEY) {
                match rest.split_once('+') {
                    None => {
                        wholes.insert(rest.to_owned(), bytes);
                    }
                    Some((id, n)) => match n.parse::<u32>() {
                        Ok(n) => {
                            chunks.entry(id.to_owned()).or_default().insert(n, bytes);
                        }
                        Err(_) => problems.push(format!("{key:.80}: not a chunk number")),
                    },
                }
            } else if let Some(rest) = key.strip_prefix(STATE_KEY) {
                if let Some((peer, doc)) = rest.split_once('|') {
                    states.push(((peer.to_owned(), doc.to_owned()), bytes));
                }
            }
        }
        for (id, whole) in wholes {
            if !valid_id(&id) {
                problems.push(format!("not a document id: {id:.40}"));
                continue;
            }
            if self.set_aside.contains(&id) {
                chunks.remove(&id);
                problems
                    .push(format!("sync document {id} is set aside: loading it stopped the node"));
                continue;
            }
            // A panic while this document loads names it: in the browser (where a panic ends
            // the node) the node that starts next sets it aside rather than stop on it again;
            // the native node, which unwinds, sets it aside at once.
            let blame = format!("{DOCUMENT_BLAME}{id}");
            let _loading = crate::blame::Handling::new(&blame);
            let crash = self.crash_loading.as_ref().filter(|(c, _)| *c == id).map(|(_, how)| *how);
            let doc_chunks = chunks.remove(&id).unwrap_or_default();
            let read = std::panic::catch_unwind(AssertUnwindSafe(|| {
                if let Some(how) = crash {
                    how.crash(&format!("debug_crash: a crash a test asked for, by loading {id}"));
                }
                read_document(&id, &whole, doc_chunks, &mut problems)
            }));
            match read {
                Ok(Some((doc, stored))) => {
                    if stored.damaged {
                        self.dirty_docs.insert(id.clone());
                    }
                    self.docs.insert(id.clone(), doc);
                    self.stored.insert(id, stored);
                }
                Ok(None) => {}
                Err(panic) => {
                    let message = crate::blame::panic_message(&*panic);
                    problems.push(format!(
                        "sync document {id} is set aside: loading it failed ({message:.200}); \
                         its saved bytes are kept"
                    ));
                    self.set_aside.insert(id);
                }
            }
        }
        for id in chunks.into_keys() {
            problems.push(format!("sync document {id:.80}: chunks without the document"));
        }
        for ((peer, doc), bytes) in states {
            // (Not those of a document set aside, before or while it loaded.)
            if self.set_aside.contains(&doc) {
                continue;
            }
            match sync::State::decode(&bytes) {
                Ok(state) => {
                    self.states.insert((peer, doc), state);
                }
                Err(e) => problems.push(format!("sync state with {peer:.80}: {e}")),
            }
        }
        problems
    }

    /// What changed since the last call, to be written in one transaction: for each changed
    /// document the changes since what storage holds, as a chunk appended to it, or, once
    /// the chunks grow past half the whole save or [`MAX_CHUNKS`], the document saved whole
    /// in place of them; and changed sync states (their shared heads). A change to a large
    /// document costs the size of the change, not of the document.
    pub fn take_writes(&mut self) -> Writes {
        let mut w = Writes::default();
        for id in std::mem::take(&mut self.dirty_docs) {
            // One set aside keeps its saved bytes: a document made anew under its id (our own
            // trust or shares document is, at need) lives in memory only.
            if self.set_aside.contains(&id) {
                continue;
            }
            let Some(doc) = self.docs.get_mut(&id) else { continue };
            let heads = doc.get_heads();
            let stored = self.stored.entry(id.clone()).or_default();
            if stored.heads == heads && !stored.damaged && stored.whole_bytes > 0 {
                continue;
            }
            w.before.push((id.clone(), stored.clone()));
            let chunk = (stored.whole_bytes > 0 && !stored.damaged)
                .then(|| doc.save_after(&stored.heads))
                .filter(|c| {
                    stored.next_chunk < MAX_CHUNKS
                        && (stored.chunk_bytes + c.len()) * 2 <= stored.whole_bytes
                });
            match chunk {
                Some(changes) => {
                    let mut chunk = Sha256::digest(&changes).to_vec();
                    chunk.extend(changes);
                    stored.chunk_bytes += chunk.len();
                    w.put.push((chunk_key(&id, stored.next_chunk), chunk));
                    stored.next_chunk += 1;
                }
                None => {
                    let whole = doc.save();
                    w.delete.extend((0..stored.next_chunk).map(|n| chunk_key(&id, n)));
                    *stored = Stored { whole_bytes: whole.len(), ..Stored::default() };
                    w.put.push((format!("{DOC_KEY}{id}"), whole));
                }
            }
            stored.heads = heads;
            stored.taken_bytes = 0;
            w.docs.push(id);
        }
        for key in std::mem::take(&mut self.dirty_states) {
            if self.set_aside.contains(&key.1) {
                continue;
            }
            if let Some(state) = self.states.get(&key) {
                w.put.push((format!("{STATE_KEY}{}|{}", key.0, key.1), state.encode()));
                w.states.push(key);
            }
        }
        w
    }

    /// The writes `w` of [`Library::take_writes`] failed, and storage holds what it held
    /// before them: what they were to save is written at the next call, each document whole
    /// (a chunk made after the lost one would lack its changes), removing every chunk it
    /// may have in storage.
    pub fn writes_failed(&mut self, w: Writes) {
        for (id, mut before) in w.before {
            let now = self.stored.get(&id).cloned().unwrap_or_default();
            before.next_chunk = before.next_chunk.max(now.next_chunk);
            before.taken_bytes += now.taken_bytes;
            before.damaged = true;
            self.stored.insert(id.clone(), before);
            self.dirty_docs.insert(id);
        }
        self.dirty_states.extend(w.states);
    }

    fn json(&mut self, id: &str) -> Option<Value> {
        let doc = self.docs.get_mut(id)?;
        serde_json::to_value(automerge::AutoSerde::from(doc.document())).ok()
    }

    fn room(&self) -> Result<(), Error> {
        if self.docs.len() >= MAX_DOCS {
            return Err(Error::Invalid(format!("more than {MAX_DOCS} documents")));
        }
        Ok(())
    }

    /// The ids of the trust documents held. (Their ids start "trust-", and `docs` is ordered:
    /// only they are read.)
    fn trust_ids(&self) -> impl Iterator<Item = &String> {
        use std::ops::Bound::{Excluded, Included};
        self.docs.range::<str, _>((Included("trust-"), Excluded("trust."))).map(|(id, _)| id)
    }

    /// Room for document `id` from a peer trusted at `level` (see [`MAX_TRUST_DOCS`]).
    fn room_for(&self, id: &str, level: Level) -> Result<(), Error> {
        self.room()?;
        if is_trust_id(id)
            && level == Level::Nothing
            && self.trust_ids().nth(MAX_TRUST_DOCS - 1).is_some()
        {
            return Err(Error::Invalid(format!("more than {MAX_TRUST_DOCS} trust documents")));
        }
        Ok(())
    }

    /// Who may see document `id`.
    pub fn participants(&self, id: &str) -> BTreeSet<String> {
        self.docs.get(id).and_then(meta_of).map(|m| m.participants).unwrap_or_default()
    }

    /// Everyone who takes part in a share or collection with this peer (trust documents left
    /// out: each peer's own reaches its readers whenever they meet), this peer excluded.
    pub fn content_peers(&self) -> BTreeSet<String> {
        let mut dids: BTreeSet<String> = self
            .ids()
            .iter()
            .filter(|id| !is_trust_id(id))
            .flat_map(|id| self.participants(id))
            .collect();
        dids.remove(&self.me);
        dids
    }

    /// Who may change document `id`.
    pub fn writers(&self, id: &str) -> BTreeSet<String> {
        self.docs.get(id).and_then(meta_of).map(|m| m.writers).unwrap_or_default()
    }

    /// The documents this peer syncs with `peer`: those it is sending us for the first time,
    /// and those both take part in where one of the two may write (two readers have nothing
    /// to give each other: each takes changes only from writers).
    pub fn docs_with(&mut self, peer: &str) -> Vec<String> {
        self.docs.keys().filter(|id| self.syncs_with(id, peer)).cloned().collect()
    }

    fn syncs_with(&self, id: &str, peer: &str) -> bool {
        if self.arriving.get(id).is_some_and(|p| p == peer) {
            return true;
        }
        self.docs.get(id).and_then(meta_of).is_some_and(|m| {
            m.participants.contains(peer)
                && (m.writers.contains(peer) || m.writers.contains(&self.me))
        })
    }

    /// Share an object or a collection with `to`. Returns the share.
    pub fn share(&mut self, mut share: Share) -> Result<Share, Error> {
        share.from = self.me.clone();
        if share.to == self.me {
            return Err(Error::Invalid("sharing with yourself".into()));
        }
        for (what, v) in share.texts() {
            text(what, v)?;
        }
        if share.cid.is_some() == share.collection.is_some() {
            return Err(Error::Invalid("a share names an object or a collection".into()));
        }
        if let Some(c) = &share.collection {
            if self.docs.get(c.as_str()).and_then(meta_of).is_none_or(|m| m.kind != "collection") {
                return Err(Error::NotFound(c.clone()));
            }
            let meta = self.docs.get(c.as_str()).and_then(meta_of);
            if !meta.is_some_and(|m| m.writers.contains(&share.to)) {
                self.set_member(c, &share.to, Role::Reader, false)?;
            }
        }
        let id = shares_id(&self.me, &share.to);
        if !self.docs.contains_key(&id) {
            self.room()?;
            let mut doc = AutoCommit::new();
            doc.put(ROOT, "kind", "shares").map_err(doc_err)?;
            doc.put(ROOT, "from", self.me.as_str()).map_err(doc_err)?;
            doc.put(ROOT, "to", share.to.as_str()).map_err(doc_err)?;
            doc.put_object(ROOT, "items", ObjType::Map).map_err(doc_err)?;
            self.docs.insert(id.clone(), doc);
        }
        let doc = self.docs.get_mut(&id).ok_or_else(|| Error::NotFound(id.clone()))?;
        let items = match doc.get(ROOT, "items").map_err(doc_err)? {
            Some((_, items)) => items,
            None => doc.put_object(ROOT, "items", ObjType::Map).map_err(doc_err)?,
        };
        if doc.length(&items) >= MAX_SHARES_IN_DOCUMENT {
            return Err(Error::Invalid(format!(
                "{MAX_SHARES_IN_DOCUMENT} shares to that peer already, the most one document holds"
            )));
        }
        let item = doc.put_object(&items, share.id.as_str(), ObjType::Map).map_err(doc_err)?;
        let fields = [
            ("cid", share.cid.clone()),
            ("sha256", share.sha256.clone()),
            ("name", share.name.clone()),
            ("mime", share.mime.clone()),
            ("collection", share.collection.clone()),
        ];
        for (key, value) in fields {
            if let Some(v) = value {
                doc.put(&item, key, v).map_err(doc_err)?;
            }
        }
        if let Some(size) = share.size {
            doc.put(&item, "size", size).map_err(doc_err)?;
        }
        doc.put(&item, "note", share.note.as_str()).map_err(doc_err)?;
        doc.put(&item, "createdMs", share.created_ms).map_err(doc_err)?;
        doc.put(&item, "revoked", false).map_err(doc_err)?;
        doc.commit();
        self.dirty_docs.insert(id);
        Ok(share)
    }

    /// Revoke a share this peer made: it stays listed as revoked; a shared collection no
    /// longer syncs with that recipient.
    pub fn revoke_share(&mut self, to: &str, share_id: &str) -> Result<Share, Error> {
        let share = self
            .shares_by_me()
            .into_iter()
            .find(|s| s.to == to && s.id == share_id)
            .ok_or_else(|| Error::NotFound(share_id.to_owned()))?;
        let id = shares_id(&self.me, to);
        let doc = self.docs.get_mut(&id).ok_or_else(|| Error::NotFound(id.clone()))?;
        let (_, items) =
            doc.get(ROOT, "items").map_err(doc_err)?.ok_or_else(|| Error::NotFound(id.clone()))?;
        let (_, item) = doc
            .get(&items, share_id)
            .map_err(doc_err)?
            .ok_or_else(|| Error::NotFound(share_id.to_owned()))?;
        doc.put(&item, "revoked", true).map_err(doc_err)?;
        doc.commit();
        self.dirty_docs.insert(id);
        if let Some(c) = &share.collection {
            // Still shared with them by another share? Then they stay.
            let still = self
                .shares_by_me()
                .iter()
                .any(|s| s.to == to && !s.revoked && s.collection.as_deref() == Some(c.as_str()));
            if !still {
                self.set_member(c, to, Role::None, false)?;
            }
        }
        Ok(Share { revoked: true, ..share })
    }

    fn shares_in(&mut self, id: &str) -> Vec<Share> {
        let Some(doc) = self.json(id) else { return Vec::new() };
        if doc.get("kind").and_then(Value::as_str) != Some("shares") {
            return Vec::new();
        }
        let (Some(from), Some(to)) = (str_at(&doc, "from"), str_at(&doc, "to")) else {
            return Vec::new();
        };
        let Some(items) = doc.get("items").and_then(Value::as_object) else { return Vec::new() };
        // A peer writes its shares documents: what it could not have written through this
        // code (more shares than one document holds, over-long text) is not read.
        items
            .iter()
            .take(MAX_SHARES_IN_DOCUMENT)
            .filter_map(|(key, item)| {
                let mut item = item.clone();
                let o = item.as_object_mut()?;
                o.insert("id".into(), key.clone().into());
                o.insert("from".into(), from.clone().into());
                o.insert("to".into(), to.clone().into());
                serde_json::from_value::<Share>(item).ok()
            })
            .filter(Share::fits)
            .collect()
    }

    /// What others shared with this peer.
    pub fn shares_to_me(&mut self) -> Vec<Share> {
        let ids: Vec<String> =
            self.docs.keys().filter(|k| k.starts_with("shares-")).cloned().collect();
        let me = self.me.clone();
        let mut all: Vec<Share> =
            ids.into_iter().flat_map(|id| self.shares_in(&id)).filter(|s| s.to == me).collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.created_ms));
        all
    }

    /// What this peer shared.
    pub fn shares_by_me(&mut self) -> Vec<Share> {
        let ids: Vec<String> =
            self.docs.keys().filter(|k| k.starts_with("shares-")).cloned().collect();
        let me = self.me.clone();
        let mut all: Vec<Share> =
            ids.into_iter().flat_map(|id| self.shares_in(&id)).filter(|s| s.from == me).collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.created_ms));
        all
    }

    /// A new collection owned by this peer; `random` makes its id.
    pub fn create_collection(&mut self, random: [u8; 16], name: &str) -> Result<String, Error> {
        text("name", name)?;
        self.room()?;
        let id = format!("collection-{}", hex(&random));
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "kind", "collection").map_err(doc_err)?;
        doc.put(ROOT, "owner", self.me.as_str()).map_err(doc_err)?;
        doc.put(ROOT, "name", name).map_err(doc_err)?;
        doc.put_object(ROOT, "editors", ObjType::Map).map_err(doc_err)?;
        doc.put_object(ROOT, "readers", ObjType::Map).map_err(doc_err)?;
        doc.put_object(ROOT, "entries", ObjType::List).map_err(doc_err)?;
        doc.commit();
        self.docs.insert(id.clone(), doc);
        self.dirty_docs.insert(id.clone());
        Ok(id)
    }

    /// The collection `id` as it is now, with all its entries.
    pub fn collection(&mut self, id: &str) -> Option<Collection> {
        self.collection_page(id, 0, usize::MAX)
    }

    /// The collection `id` with `limit` of its entries from `offset` (read from the document
    /// as they are, without turning the rest of it into JSON).
    pub fn collection_page(&self, id: &str, offset: usize, limit: usize) -> Option<Collection> {
        let info = self.collection_info(id)?;
        let doc = self.docs.get(id)?;
        let mut entries = Vec::new();
        if let Ok(Some((automerge::Value::Object(ObjType::List), list))) = doc.get(ROOT, "entries")
        {
            let end = offset.saturating_add(limit).min(info.count);
            for i in offset..end {
                if let Ok(Some((automerge::Value::Object(ObjType::Map), e))) = doc.get(&list, i) {
                    entries.extend(entry_at(doc, &e));
                }
            }
        }
        Some(Collection { info, entries })
    }

    /// The collection `id` without its entries: its name, members and how many entries.
    pub fn collection_info(&self, id: &str) -> Option<CollectionInfo> {
        let doc = self.docs.get(id)?;
        if scalar_str(doc, &ROOT, "kind").as_deref() != Some("collection") {
            return None;
        }
        let count = match doc.get(ROOT, "entries") {
            Ok(Some((automerge::Value::Object(ObjType::List), list))) => doc.length(&list),
            _ => 0,
        };
        Some(CollectionInfo {
            id: id.to_owned(),
            name: scalar_str(doc, &ROOT, "name").unwrap_or_default(),
            owner: scalar_str(doc, &ROOT, "owner")?,
            editors: map_keys(doc, "editors").into_iter().collect(),
            readers: map_keys(doc, "readers").into_iter().collect(),
            count,
        })
    }

    /// The collections this peer owns, edits or reads, without their entries.
    pub fn collections(&self) -> Vec<CollectionInfo> {
        self.docs
            .keys()
            .filter(|k| k.starts_with("collection-"))
            .filter_map(|id| self.collection_info(id))
            .collect()
    }

    fn writable(&mut self, id: &str) -> Result<&mut AutoCommit, Error> {
        let meta = self.docs.get(id).and_then(meta_of).filter(|m| m.kind == "collection");
        let meta = meta.ok_or_else(|| Error::NotFound(id.to_owned()))?;
        if !meta.writers.contains(&self.me) {
            return Err(Error::Refused("this peer may only read that collection".into()));
        }
        self.docs.get_mut(id).ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    fn list(doc: &mut AutoCommit, key: &str, kind: ObjType) -> Result<automerge::ObjId, Error> {
        match doc.get(ROOT, key).map_err(doc_err)? {
            Some((_, obj)) => Ok(obj),
            None => doc.put_object(ROOT, key, kind).map_err(doc_err),
        }
    }

    /// Add an entry at the end of collection `id`.
    pub fn collection_add(&mut self, id: &str, entry: &Entry) -> Result<(), Error> {
        self.collection_add_all(id, std::slice::from_ref(entry))
    }

    /// Add `added` at the end of collection `id`, in order, as one change: all of them or,
    /// if any is invalid or they would not fit, none.
    pub fn collection_add_all(&mut self, id: &str, added: &[Entry]) -> Result<(), Error> {
        for entry in added {
            text("cid", &entry.cid)?;
            for v in [&entry.name, &entry.mime].into_iter().flatten() {
                text("name", v)?;
            }
        }
        let doc = self.writable(id)?;
        let entries = Self::list(doc, "entries", ObjType::List)?;
        let start = doc.length(&entries);
        if start + added.len() > MAX_ENTRIES {
            return Err(Error::Invalid(format!("more than {MAX_ENTRIES} entries")));
        }
        let insert = |doc: &mut AutoCommit| -> Result<(), automerge::AutomergeError> {
            for (i, entry) in added.iter().enumerate() {
                let e = doc.insert_object(&entries, start + i, ObjType::Map)?;
                doc.put(&e, "cid", entry.cid.as_str())?;
                for (key, v) in [("name", &entry.name), ("mime", &entry.mime)] {
                    if let Some(v) = v {
                        doc.put(&e, key, v.as_str())?;
                    }
                }
                if let Some(size) = entry.size {
                    doc.put(&e, "size", size)?;
                }
                doc.put(&e, "addedBy", entry.added_by.as_str())?;
                doc.put(&e, "addedMs", entry.added_ms)?;
            }
            Ok(())
        };
        if let Err(e) = insert(doc) {
            doc.rollback();
            return Err(doc_err(e));
        }
        doc.commit();
        self.dirty_docs.insert(id.to_owned());
        Ok(())
    }

    /// Remove every entry of `cid` from collection `id`. Returns how many were removed.
    pub fn collection_remove(&mut self, id: &str, cid: &str) -> Result<usize, Error> {
        let doc = self.writable(id)?;
        let entries = Self::list(doc, "entries", ObjType::List)?;
        let mut removed = 0;
        let mut at = doc.length(&entries);
        while at > 0 {
            at -= 1;
            let Some((_, e)) = doc.get(&entries, at).map_err(doc_err)? else { continue };
            let is = matches!(doc.get(&e, "cid").map_err(doc_err)?,
                Some((automerge::Value::Scalar(v), _)) if v.as_str() == Some(cid));
            if is {
                doc.delete(&entries, at).map_err(doc_err)?;
                removed += 1;
            }
        }
        doc.commit();
        self.dirty_docs.insert(id.to_owned());
        Ok(removed)
    }

    /// Rename collection `id`.
    pub fn collection_rename(&mut self, id: &str, name: &str) -> Result<(), Error> {
        text("name", name)?;
        let doc = self.writable(id)?;
        doc.put(ROOT, "name", name).map_err(doc_err)?;
        doc.commit();
        self.dirty_docs.insert(id.to_owned());
        Ok(())
    }

    /// Make `did` an editor or a reader of collection `id`, or no member. Only the owner and
    /// editors can; `check` false skips that (for shares this peer makes of its own).
    pub fn set_member(
        &mut self,
        id: &str,
        did: &str,
        role: Role,
        check: bool,
    ) -> Result<(), Error> {
        text("DID", did)?;
        let meta = self.docs.get(id).and_then(meta_of).filter(|m| m.kind == "collection");
        let owner = meta.ok_or_else(|| Error::NotFound(id.to_owned()))?.owner;
        if did == owner {
            return Err(Error::Invalid("the owner's role cannot change".into()));
        }
        let doc = if check {
            self.writable(id)?
        } else {
            self.docs.get_mut(id).ok_or_else(|| Error::NotFound(id.to_owned()))?
        };
        let editors = Self::list(doc, "editors", ObjType::Map)?;
        let readers = Self::list(doc, "readers", ObjType::Map)?;
        let (add, remove) = match role {
            Role::Editor => (Some(&editors), vec![&readers]),
            Role::Reader => (Some(&readers), vec![&editors]),
            Role::None => (None, vec![&editors, &readers]),
        };
        for map in remove {
            if doc.get(map, did).map_err(doc_err)?.is_some() {
                doc.delete(map, did).map_err(doc_err)?;
            }
        }
        if let Some(map) = add {
            doc.put(map, did, true).map_err(doc_err)?;
        }
        doc.commit();
        self.dirty_docs.insert(id.to_owned());
        Ok(())
    }

    /// Publish this peer's trust assertions: its trust document holds `credentials` (signed
    /// trust credentials as JSON text, by a key naming what each asserts: those this peer
    /// issued and those it passes on from others) and is read by `readers` (the peers it
    /// trusts) alone. Only what differs from the document is changed. Returns whether anything
    /// changed.
    pub fn publish_trust(
        &mut self,
        readers: &BTreeSet<String>,
        credentials: &BTreeMap<String, String>,
    ) -> Result<bool, Error> {
        if credentials.len() > MAX_TRUST_CREDENTIALS {
            return Err(Error::Invalid(format!("more than {MAX_TRUST_CREDENTIALS} credentials")));
        }
        for (key, c) in credentials {
            text("credential key", key)?;
            if c.len() > MAX_CREDENTIAL {
                return Err(Error::Invalid(format!("a credential is over {MAX_CREDENTIAL} bytes")));
            }
        }
        for did in readers {
            text("DID", did)?;
        }
        let id = trust_id(&self.me);
        if !self.docs.contains_key(&id) {
            self.room()?;
            let mut doc = AutoCommit::new();
            doc.put(ROOT, "kind", "trust").map_err(doc_err)?;
            doc.put(ROOT, "owner", self.me.as_str()).map_err(doc_err)?;
            doc.commit();
            self.docs.insert(id.clone(), doc);
            self.dirty_docs.insert(id.clone());
        }
        let doc = self.docs.get_mut(&id).ok_or_else(|| Error::NotFound(id.clone()))?;
        let before = doc.get_heads();
        let update = |doc: &mut AutoCommit| -> Result<(), Error> {
            let map = Self::list(doc, "readers", ObjType::Map)?;
            let held: BTreeSet<String> = doc.keys(&map).collect();
            for gone in held.difference(readers) {
                doc.delete(&map, gone.as_str()).map_err(doc_err)?;
            }
            for new in readers.difference(&held) {
                doc.put(&map, new.as_str(), true).map_err(doc_err)?;
            }
            let map = Self::list(doc, "credentials", ObjType::Map)?;
            let held: Vec<String> = doc.keys(&map).collect();
            for key in held.iter().filter(|k| !credentials.contains_key(*k)) {
                doc.delete(&map, key.as_str()).map_err(doc_err)?;
            }
            for (key, c) in credentials {
                if scalar_str(doc, &map, key).as_deref() != Some(c.as_str()) {
                    doc.put(&map, key.as_str(), c.as_str()).map_err(doc_err)?;
                }
            }
            Ok(())
        };
        if let Err(e) = update(doc) {
            doc.rollback();
            return Err(e);
        }
        doc.commit();
        let changed = doc.get_heads() != before;
        if changed {
            self.dirty_docs.insert(id);
        }
        Ok(changed)
    }

    /// The credentials (JSON text, unchecked: verify each before use) in the trust document of
    /// `issuer`, at most [`MAX_TRUST_CREDENTIALS`] of at most [`MAX_CREDENTIAL`] bytes, and a
    /// version that changes whenever the document does; `None` if this peer holds none.
    pub fn trust_of(&mut self, issuer: &str) -> Option<(String, Vec<String>)> {
        let id = trust_id(issuer);
        if self.arriving.contains_key(&id) {
            return None;
        }
        let doc = self.docs.get_mut(&id)?;
        meta_of(doc).filter(|m| m.kind == "trust" && m.owner == issuer)?;
        let heads: Vec<u8> = doc.get_heads().iter().flat_map(|h| h.0).collect();
        let version = hex(&Sha256::digest(heads));
        let doc = &*doc;
        let mut credentials = Vec::new();
        if let Ok(Some((automerge::Value::Object(ObjType::Map), map))) =
            doc.get(ROOT, "credentials")
        {
            for key in doc.keys(&map).take(MAX_TRUST_CREDENTIALS) {
                credentials
                    .extend(scalar_str(doc, &map, &key).filter(|c| c.len() <= MAX_CREDENTIAL));
            }
        }
        Some((version, credentials))
    }

    pub fn generate(&mut self, peer: &str, id: &str) -> Option<Vec<u8>> {
        let key = (peer.to_owned(), id.to_owned());
        let mut state = self.states.remove(&key).unwrap_or_default();
        let message = self.generate_with(peer, id, &mut state);
        self.states.insert(key.clone(), state);
        self.dirty_states.insert(key);
        message
    }

    /// The sync state a new session with `peer` starts from for document `id`: what both
    /// were known to have when a session last ended well (nothing in flight).
    pub fn session_state(&self, peer: &str, id: &str) -> sync::State {
        self.states
            .get(&(peer.to_owned(), id.to_owned()))
            .and_then(|s| sync::State::decode(&s.encode()).ok())
            .unwrap_or_default()
    }

    /// A document arriving from `peer` is not taken after all: it goes, with any sync state
    /// kept for it.
    fn drop_arriving(&mut self, peer: &str, id: &str) {
        self.arriving.remove(id);
        self.docs.remove(id);
        self.stored.remove(id);
        let key = (peer.to_owned(), id.to_owned());
        self.states.remove(&key);
        self.dirty_states.remove(&key);
    }

    /// A session ended well: keep what it learned both sides have. Returns for how many
    /// documents it kept a state.
    pub fn end_session(&mut self, peer: &str, states: HashMap<String, sync::State>) -> usize {
        // Collections asked of the peer of which nothing came: let go, and not asked again
        // until its shares change.
        let asked: Vec<String> = self
            .arriving
            .iter()
            .filter(|(_, from)| *from == peer)
            .map(|(id, _)| id.clone())
            .collect();
        for id in asked {
            if self.docs.get_mut(&id).is_none_or(|d| d.get_heads().is_empty()) {
                self.drop_arriving(peer, &id);
                self.unanswered.insert((peer.to_owned(), id));
            }
        }
        let mut kept = 0;
        for (id, state) in states {
            // (Not of a document the peer only asked about: anyone may ask, and would leave a
            // state stored for good.)
            if self.participants(&id).contains(peer) {
                let key = (peer.to_owned(), id);
                self.states.insert(key.clone(), state);
                self.dirty_states.insert(key);
                kept += 1;
            }
        }
        kept
    }

    /// [`Library::generate`] with a session's own state.
    pub fn generate_with(
        &mut self,
        peer: &str,
        id: &str,
        state: &mut sync::State,
    ) -> Option<Vec<u8>> {
        if !self.syncs_with(id, peer) {
            return None;
        }
        let doc = self.docs.get_mut(id)?;
        let mut whole = state.clone();
        let message = doc.sync().generate_sync_message(&mut whole)?.encode();
        // Automerge sends the whole document in place of what the peer lacks once that is more
        // than a third of the changes by count, whatever their size: a peer that missed a few
        // small changes of a document made of a few large ones would get all of it again. For
        // a message large enough to matter, one of just the changes is made too, and the
        // smaller goes. A peer that holds nothing is always sent the whole document.
        let peer_holds_some = state.their_heads.as_ref().is_some_and(|h| !h.is_empty());
        let v2 = |s: &sync::State| {
            s.their_capabilities.as_ref().is_some_and(|c| c.contains(&sync::Capability::MessageV2))
        };
        if message.len() > COMPARE_ABOVE && peer_holds_some && v2(state) {
            let mut changes = state.clone();
            if let Some(caps) = changes.their_capabilities.as_mut() {
                caps.retain(|c| *c != sync::Capability::MessageV2);
            }
            if let Some(other) = doc.sync().generate_sync_message(&mut changes) {
                let other = other.encode();
                if other.len() < message.len() {
                    changes.their_capabilities.clone_from(&state.their_capabilities);
                    *state = changes;
                    return Some(other);
                }
            }
        }
        *state = whole;
        Some(message)
    }

    /// Take a message with the library's own state (see [`Library::receive_with`]).
    pub fn receive(
        &mut self,
        peer: &str,
        id: &str,
        message: &[u8],
        level: Level,
    ) -> Result<bool, Error> {
        let key = (peer.to_owned(), id.to_owned());
        let mut state = self.states.remove(&key).unwrap_or_default();
        let result = self.receive_with(peer, id, message, level, &mut state);
        if self.docs.contains_key(id) {
            self.states.insert(key.clone(), state);
            self.dirty_states.insert(key);
        }
        result
    }

    /// Whether `peer` may send us document `id` that we do not hold: its shares to us, or a
    /// collection it shared with us.
    fn may_introduce(&mut self, peer: &str, id: &str) -> bool {
        if id == shares_id(peer, &self.me) || id == trust_id(peer) {
            return true;
        }
        let me = self.me.clone();
        self.shares_to_me().iter().any(|s| {
            s.from == peer && s.to == me && !s.revoked && s.collection.as_deref() == Some(id)
        })
    }

    /// Take `peer`'s sync message about document `id`, if `level` lets us and `peer` may
    /// send it, with a session's `state`. Returns whether the document changed.
    pub fn receive_with(
        &mut self,
        peer: &str,
        id: &str,
        message: &[u8],
        level: Level,
        state: &mut sync::State,
    ) -> Result<bool, Error> {
        if self.crash_on.as_deref() == Some(id) {
            panic!("debug_crash: a crash a test asked for, by a sync message about {id}");
        }
        if !valid_id(id) {
            return Err(Error::Malformed(format!("not a document id: {id:.40}")));
        }
        if self.set_aside.contains(id) {
            // Nothing taken, and nothing said of the peer: it only shares the document.
            return Err(Error::Unknown(id.to_owned()));
        }
        let raw_len = message.len();
        let message =
            sync::Message::decode(message).map_err(|e| Error::Malformed(e.to_string()))?;
        // From a peer not trusted enough nothing is taken: no change and no new document. What
        // it says of its own state (heads, what it has and needs) is still heard, or it could
        // never be sent what it is shared.
        // An editor this peer itself named for its own collection is taken at its word.
        let named_by_me = self
            .docs
            .get(id)
            .and_then(meta_of)
            .is_some_and(|m| m.owner == self.me && m.writers.contains(peer));
        // A peer's trust document is taken whatever our trust in it: each assertion in it is
        // checked on its own (signature, expiry, issuer) and counts only through a trust path
        // from this peer, so what it says of others weighs only as much as we trust it.
        if level == Level::Nothing
            && !named_by_me
            && !is_trust_id(id)
            && (!message.changes.is_empty()
                || !self.docs.contains_key(id)
                || self.arriving.contains_key(id))
        {
            return Err(Error::Refused("this peer does not trust the sender enough".into()));
        }
        let arriving = self.arriving.get(id).is_some_and(|p| p == peer);
        if self.docs.contains_key(id) && !arriving {
            if !self.participants(id).contains(peer) {
                return Err(Error::Refused(format!("{id} is not shared with that peer")));
            }
            if !message.changes.is_empty() && !self.writers(id).contains(peer) {
                return Err(Error::Refused(format!("that peer may not change {id}")));
            }
        } else if !arriving {
            if !self.may_introduce(peer, id) {
                // Perhaps the share naming it is in this very batch: the collection is asked
                // for once that share arrives (see `expect_collections`).
                return Err(Error::Unknown(id.to_owned()));
            }
            // Out of room: this document is refused, the session goes on with the others.
            self.room_for(id, level).map_err(|e| Error::Refused(e.to_string()))?;
            self.docs.insert(id.to_owned(), AutoCommit::new());
            self.arriving.insert(id.to_owned(), peer.to_owned());
        }
        let doc = self.docs.get_mut(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
        // The peer remembers sharing changes this peer no longer has (it was stopped after
        // taking them and before saving them). Automerge would answer with an empty Bloom
        // filter and be sent the whole document again; a fresh state instead says, in a
        // filter of everything held, what is here, and only the rest comes.
        if message.changes.is_empty() {
            let mut stale = false;
            for hash in message.have.iter().flat_map(|h| h.last_sync.iter()) {
                stale |= doc.get_change_by_hash(hash).is_none();
            }
            if stale {
                *state = sync::State::new();
                return Ok(false);
            }
        }
        let grows = !message.changes.is_empty();
        if grows {
            if let Err(e) = self.room_to_grow(id, level, raw_len) {
                if self.arriving.contains_key(id) {
                    self.drop_arriving(peer, id);
                }
                return Err(e);
            }
        }
        let doc = self.docs.get_mut(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let before = doc.get_heads();
        let what_before = (!self.arriving.contains_key(id)).then(|| what_it_is(doc));
        doc.sync().receive_sync_message(state, message).map_err(doc_err)?;
        let changed = doc.get_heads() != before;
        if changed && what_before.is_some_and(|was| was != what_it_is(doc)) {
            // What a document is (its kind, its owner, whom a shares document is from and to)
            // is set when it is made, and no change may alter it: an editor could otherwise
            // make itself a collection's owner, or a sharer make its shares seem another's.
            let back = doc.fork_at(&before).map_err(doc_err)?;
            self.docs.insert(id.to_owned(), back);
            *state = sync::State::new();
            return Err(Error::Refused(format!("that peer's changes would alter what {id} is")));
        }
        if changed && self.arriving.contains_key(id) {
            // Its first content: it must be what the sender may give us.
            let me = self.me.clone();
            let fits = self.docs.get(id).and_then(meta_of).is_some_and(|m| {
                m.writers.contains(peer)
                    && m.participants.contains(&me)
                    && match m.kind.as_str() {
                        "shares" => id == shares_id(peer, &me) && m.owner == peer,
                        // One this peer made is never new to it: one saying so would have
                        // this peer take its editors' changes at its word (`named_by_me`).
                        "collection" => id.starts_with("collection-") && m.owner != me,
                        "trust" => id == trust_id(peer) && m.owner == peer,
                        _ => false,
                    }
            });
            if !fits {
                self.drop_arriving(peer, id);
                return Err(Error::Refused(format!("{id} is not what that peer may send")));
            }
            self.arriving.remove(id);
        }
        // Counted also when the heads stay if Automerge holds changes back for ones missing
        // (unapplied, until those come; saved with the document), not when nothing is held
        // back (the changes were all known: a count that only the next write, after a change,
        // would reset). While some are, known ones sent again count too, erring on the safe
        // side.
        let held_back = grows
            && !changed
            && self.docs.get_mut(id).is_some_and(|d| !d.get_missing_deps(&[]).is_empty());
        if changed || held_back {
            self.stored.entry(id.to_owned()).or_default().taken_bytes += raw_len;
        }
        if changed {
            self.dirty_docs.insert(id.to_owned());
            if id.starts_with("shares-") {
                self.unanswered.retain(|(p, _)| p != peer);
                self.expect_collections(peer);
            }
        }
        Ok(changed)
    }

    /// Whether document `id` may take `more` bytes of a peer's changes: about what it holds
    /// (as stored, and taken since) stays within [`MAX_DOCUMENT_BYTES`], or
    /// [`MAX_STRANGER_TRUST_BYTES`] for the trust document of a peer not trusted (any peer
    /// may send its own, and its history grows with every change however small it keeps it).
    fn room_to_grow(&self, id: &str, level: Level, more: usize) -> Result<(), Error> {
        let stranger = is_trust_id(id) && level == Level::Nothing;
        let limit = if stranger { MAX_STRANGER_TRUST_BYTES } else { MAX_DOCUMENT_BYTES };
        let held_by = |id: &str| {
            self.stored.get(id).map_or(0, |s| s.whole_bytes + s.chunk_bytes + s.taken_bytes)
        };
        let held = held_by(id);
        if held + more > limit {
            return Err(Error::Refused(format!(
                "{id} would hold more than {limit} bytes ({held} held, {more} more)"
            )));
        }
        if stranger {
            // (All trust documents count, this peer's and trusted peers' too: what is bounded
            // is what strangers may add.)
            let all: usize = self.trust_ids().map(|id| held_by(id)).sum();
            if all + more > MAX_TRUST_BYTES_IN_ALL {
                return Err(Error::Refused(format!(
                    "trust documents would hold more than {MAX_TRUST_BYTES_IN_ALL} bytes: \
                     none more is taken from peers this one does not trust"
                )));
            }
        }
        Ok(())
    }

    /// Ask for the collections `peer` shared with us that we do not hold yet: an empty document
    /// for each, whose first sync message tells the peer we have nothing of it.
    fn expect_collections(&mut self, peer: &str) {
        let me = self.me.clone();
        let wanted: Vec<String> = self
            .shares_in(&shares_id(peer, &me))
            .into_iter()
            .filter(|s| s.from == peer && s.to == me && !s.revoked)
            .filter_map(|s| s.collection)
            .filter(|c| {
                valid_id(c)
                    && c.starts_with("collection-")
                    && !self.docs.contains_key(c)
                    && !self.set_aside.contains(c)
                    && !self.unanswered.contains(&(peer.to_owned(), c.clone()))
            })
            .collect();
        // A few at a time: a peer naming thousands of collections must not fill the room for
        // documents with empty ones. The rest are asked for in later sessions.
        let waiting = self.arriving.values().filter(|p| *p == peer).count();
        for c in wanted.into_iter().take(MAX_EXPECTED_PER_PEER.saturating_sub(waiting)) {
            if self.room().is_ok() {
                self.docs.insert(c.clone(), AutoCommit::new());
                self.arriving.insert(c, peer.to_owned());
            }
        }
    }

    /// Every document's id.
    /// Whether document `id` is held (and not still arriving).
    pub fn holds(&self, id: &str) -> bool {
        self.docs.contains_key(id) && !self.arriving.contains_key(id)
    }

    pub fn ids(&self) -> Vec<String> {
        self.docs.keys().filter(|k| !self.arriving.contains_key(*k)).cloned().collect()
    }
}

fn str_at(doc: &Value, key: &str) -> Option<String> {
    doc.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Who a document belongs to, read from its root without reading the rest.
struct Meta {
    kind: String,
    /// The shares' sender, or the collection's owner.
    owner: String,
    writers: BTreeSet<String>,
    participants: BTreeSet<String>,
}

fn scalar_str(doc: &AutoCommit, obj: &automerge::ObjId, key: &str) -> Option<String> {
    match doc.get(obj, key).ok()?? {
        (automerge::Value::Scalar(v), _) => v.as_str().map(str::to_owned),
        _ => None,
    }
}

/// Entry map `e` of a collection; `None` if a field it must have is missing or of the wrong type.
fn entry_at(doc: &AutoCommit, e: &automerge::ObjId) -> Option<Entry> {
    let number = |key: &str| match doc.get(e, key).ok()?? {
        (automerge::Value::Scalar(v), _) => match v.as_ref() {
            automerge::ScalarValue::Uint(n) => Some(*n),
            automerge::ScalarValue::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        },
        _ => None,
    };
    Some(Entry {
        cid: scalar_str(doc, e, "cid")?,
        name: scalar_str(doc, e, "name"),
        mime: scalar_str(doc, e, "mime"),
        size: number("size"),
        added_by: scalar_str(doc, e, "addedBy")?,
        added_ms: number("addedMs")?,
    })
}

fn map_keys(doc: &AutoCommit, key: &str) -> BTreeSet<String> {
    match doc.get(ROOT, key) {
        Ok(Some((automerge::Value::Object(ObjType::Map), obj))) => doc.keys(&obj).collect(),
        _ => BTreeSet::new(),
    }
}

/// What a document is, as its changes may not alter: its kind, owner, and for shares whom
/// they are from and to.
fn what_it_is(doc: &AutoCommit) -> [Option<String>; 4] {
    ["kind", "owner", "from", "to"].map(|key| scalar_str(doc, &ROOT, key))
}

fn meta_of(doc: &AutoCommit) -> Option<Meta> {
    let kind = scalar_str(doc, &ROOT, "kind")?;
    match kind.as_str() {
        "shares" => {
            let from = scalar_str(doc, &ROOT, "from")?;
            let to = scalar_str(doc, &ROOT, "to")?;
            Some(Meta {
                kind,
                owner: from.clone(),
                writers: [from.clone()].into(),
                participants: [from, to].into(),
            })
        }
        "collection" => {
            let owner = scalar_str(doc, &ROOT, "owner")?;
            let mut writers = map_keys(doc, "editors");
            writers.insert(owner.clone());
            let mut participants = map_keys(doc, "readers");
            participants.extend(writers.iter().cloned());
            Some(Meta { kind, owner, writers, participants })
        }
        "trust" => {
            let owner = scalar_str(doc, &ROOT, "owner")?;
            let mut participants = map_keys(doc, "readers");
            participants.insert(owner.clone());
            Some(Meta { kind, writers: [owner.clone()].into(), owner, participants })
        }
        _ => None,
    }
}

/// One frame: a document's id (a byte of length, then the id) and its sync message. An empty
/// frame ends a batch.
pub fn frame(id: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + id.len() + message.len());
    out.push(id.len() as u8);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(message);
    out
}

fn unframe(bytes: &[u8]) -> Result<(&str, &[u8]), Error> {
    let (&len, rest) = bytes.split_first().ok_or_else(|| Error::Malformed("empty".into()))?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(Error::Malformed("truncated document id".into()));
    }
    let id = std::str::from_utf8(&rest[..len]).map_err(|e| Error::Malformed(e.to_string()))?;
    Ok((id, &rest[len..]))
}

/// One sync session with `peer` on `stream` (the initiator opened it): batches of sync
/// messages go back and forth until neither side has anything to send. `level` is how much
/// we take from `peer`; what it sends beyond that, or may not send, is refused (`refused`
/// hears why) and the session goes on. `lib` is borrowed only between reads and writes.
/// The caller closes `stream`: the session is over when this returns, and a close handshake
/// (a data channel's FIN / FIN_ACK) need not hold up what follows.
pub async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    lib: &RefCell<Library>,
    peer: &str,
    level: Level,
    initiator: bool,
    mut refused: impl FnMut(String),
) -> Result<Stats, Error> {
    let io = |e: crate::bitswap::Error| Error::Io(e.to_string());
    let mut stats = Stats::default();
    // This session's own sync states, from what both had when the last one ended well: two
    // sessions with the same peer (one each way) may run at once without mixing up what each
    // has in flight.
    let mut states: HashMap<String, sync::State> = HashMap::new();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut last_sent: Option<usize> = None;
    if level != Level::Nothing {
        // Collections the peer shared that are not here yet (beyond those asked for as its
        // shares arrived, or after a restart): asked for now.
        lib.borrow_mut().expect_collections(peer);
    }
    if initiator {
        last_sent = Some(send_batch(stream, lib, peer, &touched, &mut states, &mut stats).await?);
    }
    for _ in 0..MAX_ROUNDS {
        // Their batch.
        let mut received = 0;
        loop {
            let bytes = read_frame_max(stream, MAX_FRAME)
                .await
                .map_err(io)?
                .ok_or_else(|| Error::Io("closed by the peer".into()))?;
            if bytes.is_empty() {
                break;
            }
            received += 1;
            if received > MAX_BATCH {
                return Err(Error::Malformed(format!("more than {MAX_BATCH} messages in a batch")));
            }
            stats.bytes_received += bytes.len() as u64;
            stats.messages_received += 1;
            let (id, message) = unframe(&bytes)?;
            let mut lib = lib.borrow_mut();
            let new = !states.contains_key(id);
            let state = states.entry(id.to_owned()).or_insert_with(|| lib.session_state(peer, id));
            // Where a panic unwinds (the native node), one while the message is taken leaves
            // the document as far as it got: it is set aside, neither saved nor synced again
            // until the next start loads it as saved, and the panic goes on to the caller.
            let taken = std::panic::catch_unwind(AssertUnwindSafe(|| {
                crate::blame::handling(peer, || lib.receive_with(peer, id, message, level, state))
            }));
            let taken = match taken {
                Ok(taken) => taken,
                Err(panic) => {
                    lib.set_aside(id);
                    std::panic::resume_unwind(panic)
                }
            };
            // A state is kept only for a document held: ids a peer makes up cost nothing after.
            if new && !lib.docs.contains_key(id) {
                states.remove(id);
            }
            match taken {
                Ok(changed) => {
                    if changed {
                        stats.changed += 1;
                    }
                    touched.insert(id.to_owned());
                }
                Err(e @ (Error::Refused(_) | Error::Malformed(_) | Error::Document(_))) => {
                    stats.refused += 1;
                    if stats.refused <= MAX_REFUSALS_TOLD {
                        refused(e.to_string());
                    }
                }
                // Not (yet) shared with us: nothing taken, nothing to say.
                Err(Error::Unknown(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if received == 0 && last_sent == Some(0) {
            stats.documents = lib.borrow_mut().end_session(peer, states) as u64;
            return Ok(stats);
        }
        let sent = send_batch(stream, lib, peer, &touched, &mut states, &mut stats).await?;
        if received == 0 && sent == 0 {
            stats.documents = lib.borrow_mut().end_session(peer, states) as u64;
            return Ok(stats);
        }
        last_sent = Some(sent);
    }
    Err(Error::Io(format!("no agreement after {MAX_ROUNDS} rounds")))
}

async fn send_batch<S: AsyncWrite + Unpin>(
    stream: &mut S,
    lib: &RefCell<Library>,
    peer: &str,
    touched: &BTreeSet<String>,
    states: &mut HashMap<String, sync::State>,
    stats: &mut Stats,
) -> Result<usize, Error> {
    let io = |e: crate::bitswap::Error| Error::Io(e.to_string());
    let frames: Vec<Vec<u8>> = {
        let mut lib = lib.borrow_mut();
        let mut ids: BTreeSet<String> = lib.docs_with(peer).into_iter().collect();
        ids.extend(touched.iter().cloned());
        // Shares first: they introduce the collections that follow.
        let mut ids: Vec<String> = ids.into_iter().collect();
        ids.sort_by_key(|id| (!id.starts_with("shares-"), id.clone()));
        // (Not under the peer's name, though what is generated depends on what it said it
        // has: the documents are shared with others too, whose changes could be the cause.)
        ids.iter()
            .filter_map(|id| {
                let state = states.entry(id.clone()).or_insert_with(|| lib.session_state(peer, id));
                Some(frame(id, &lib.generate_with(peer, id, state)?))
            })
            .collect()
    };
    for f in &frames {
        stats.bytes_sent += f.len() as u64;
        stats.messages_sent += 1;
        write_frame(stream, f).await.map_err(io)?;
    }
    write_frame(stream, &[]).await.map_err(io)?;
    Ok(frames.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    const A: &str = "did:key:z6MkA";
    const B: &str = "did:key:z6MkB";
    const C: &str = "did:key:z6MkC";

    fn object_share(to: &str, id: &str, cid: &str) -> Share {
        Share {
            id: id.into(),
            from: String::new(),
            to: to.into(),
            cid: Some(cid.into()),
            sha256: Some(format!("sha256:{:064}", 0)),
            size: Some(10),
            name: Some("file.bin".into()),
            mime: None,
            collection: None,
            note: "for you".into(),
            created_ms: 1,
            revoked: false,
        }
    }

    fn entry(cid: &str, by: &str) -> Entry {
        Entry {
            cid: cid.into(),
            name: None,
            mime: None,
            size: None,
            added_by: by.into(),
            added_ms: 1,
        }
    }

    #[test]
    fn a_share_with_text_longer_than_this_code_writes_is_not_read() {
        let mut a = Library::new(A);
        a.share(object_share(B, "s1", "bafkone")).expect("share");
        a.share(object_share(B, "s2", "bafktwo")).expect("share");
        // As a peer's own code could write it: a note past the limit.
        let doc = a.docs.get_mut(&shares_id(A, B)).expect("doc");
        let (_, items) = doc.get(ROOT, "items").expect("items").expect("items");
        let (_, item) = doc.get(&items, "s2").expect("s2").expect("s2");
        doc.put(&item, "note", "n".repeat(MAX_TEXT + 1)).expect("put");
        let read: Vec<String> = a.shares_by_me().into_iter().map(|s| s.id).collect();
        assert_eq!(read, vec!["s1"]);
    }

    #[test]
    fn many_entries_are_added_as_one_change_or_not_at_all() {
        let mut a = Library::new(A);
        let coll = a.create_collection([2; 16], "bulk").expect("create");
        let heads = |a: &mut Library| a.docs.get_mut(&coll).expect("doc").get_heads().len();
        let before = a.docs.get_mut(&coll).expect("doc").get_changes(&[]).len();
        let mut many: Vec<Entry> = (0..500).map(|i| entry(&format!("bafk{i}"), A)).collect();
        many[3] = Entry {
            name: Some("n.txt".into()),
            mime: Some("text/plain".into()),
            size: Some(7),
            ..entry("bafk3", A)
        };
        a.collection_add_all(&coll, &many).expect("add");
        let after = a.docs.get_mut(&coll).expect("doc").get_changes(&[]).len();
        assert_eq!(after, before + 1, "one change for 500 entries");
        assert_eq!(heads(&mut a), 1);
        let got = a.collection(&coll).expect("collection");
        assert_eq!(got.entries.len(), 500);
        assert_eq!(got.entries[499].cid, "bafk499", "in order");
        assert_eq!(got.entries[3], many[3], "every field read back");
        // A page of the entries, and the collection without them: both give the count.
        let page = a.collection_page(&coll, 498, 10).expect("page");
        assert_eq!((page.info.count, page.entries.clone()), (500, many[498..].to_vec()));
        assert!(a.collection_page(&coll, 600, 10).expect("past the end").entries.is_empty());
        let info = a.collection_info(&coll).expect("info");
        assert_eq!((info.name.as_str(), info.owner.as_str(), info.count), ("bulk", A, 500));
        assert_eq!(a.collections(), vec![info]);
        // One bad entry (an over-long name): none of them is added.
        let mut bad: Vec<Entry> = (0..10).map(|i| entry(&format!("bafkz{i}"), A)).collect();
        bad[7].name = Some("n".repeat(MAX_TEXT + 1));
        assert!(matches!(a.collection_add_all(&coll, &bad), Err(Error::Invalid(_))));
        assert_eq!(a.collection(&coll).expect("collection").entries.len(), 500);
        assert_eq!(a.docs.get_mut(&coll).expect("doc").get_changes(&[]).len(), after);
    }

    /// A shares collection `coll` with B.
    fn share_collection(a: &RefCell<Library>, coll: &str) {
        let mut s = object_share(B, "s", "x");
        s.cid = None;
        s.collection = Some(coll.to_owned());
        a.borrow_mut().share(s).expect("share");
    }

    /// Storage as a platform keeps it: [`Writes`] applied to a key-value map.
    #[derive(Default, Clone)]
    struct Storage(BTreeMap<String, Vec<u8>>);

    impl Storage {
        fn write(&mut self, w: Writes) -> &mut Self {
            for k in w.delete {
                self.0.remove(&k);
            }
            self.0.extend(w.put);
            self
        }
        fn of(lib: &RefCell<Library>) -> Storage {
            let mut s = Storage::default();
            s.write(lib.borrow_mut().take_writes());
            s
        }
    }

    /// A library loaded from `storage` (as after a restart).
    fn reload(me: &str, storage: &Storage) -> RefCell<Library> {
        let mut lib = Library::new(me);
        let problems = lib.load(storage.0.clone().into_iter().collect());
        assert!(problems.is_empty(), "{problems:?}");
        RefCell::new(lib)
    }

    /// Run a session between two libraries over an in-memory duplex.
    fn sync_pair(
        a: &RefCell<Library>,
        b: &RefCell<Library>,
        level_at_a: Level,
        level_at_b: Level,
    ) -> (Stats, Stats, Vec<String>) {
        let (mut one, mut two) = duplex();
        let (da, db) = (a.borrow().me().to_owned(), b.borrow().me().to_owned());
        let mut refusals = Vec::new();
        let mut refusals_b = Vec::new();
        let (sa, sb) = block_on(futures::future::join(
            session(&mut one, a, &db, level_at_a, true, |r| refusals.push(r)),
            session(&mut two, b, &da, level_at_b, false, |r| refusals_b.push(r)),
        ));
        refusals.extend(refusals_b);
        (sa.expect("session at a"), sb.expect("session at b"), refusals)
    }

    /// Two connected in-memory streams.
    fn duplex() -> (Duplex, Duplex) {
        let (ab, ba) =
            (futures_ringbuf::RingBuffer::new(1 << 22), futures_ringbuf::RingBuffer::new(1 << 22));
        let (ab_r, ab_w) = futures::AsyncReadExt::split(ab);
        let (ba_r, ba_w) = futures::AsyncReadExt::split(ba);
        (Duplex { r: ba_r, w: ab_w }, Duplex { r: ab_r, w: ba_w })
    }

    struct Duplex {
        r: futures::io::ReadHalf<futures_ringbuf::RingBuffer<u8>>,
        w: futures::io::WriteHalf<futures_ringbuf::RingBuffer<u8>>,
    }

    impl AsyncRead for Duplex {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.r).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Duplex {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.w).poll_write(cx, buf)
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.w).poll_flush(cx)
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            // Closing one direction would end the other side's reads early; the test drops both.
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn junk_under_ids_a_peer_makes_up_is_counted_not_kept() {
        use futures::AsyncWriteExt as _;
        let b = RefCell::new(Library::new(B));
        let (mut hostile, mut ours) = duplex();
        // A batch of 5,000 frames under as many made-up ids, each not a sync message, then an
        // empty batch: the session ends.
        let mut batch = Vec::new();
        for i in 0..5_000 {
            let f = frame(&format!("collection-{i:032x}"), b"nonsense");
            let mut len = unsigned_varint::encode::usize_buffer();
            batch.extend_from_slice(unsigned_varint::encode::usize(f.len(), &mut len));
            batch.extend_from_slice(&f);
        }
        batch.extend_from_slice(&[0, 0]);
        let mut told = Vec::new();
        let (sent, stats) = block_on(futures::future::join(
            async {
                hostile.write_all(&batch).await?;
                hostile.flush().await
            },
            session(&mut ours, &b, A, Level::Full, false, |r| told.push(r)),
        ));
        sent.expect("sent");
        let stats = stats.expect("the session ends");
        assert_eq!(stats.refused, 5_000);
        assert_eq!(stats.documents, 0, "no state kept for a document not held");
        assert_eq!(told.len(), MAX_REFUSALS_TOLD as usize, "only the first are told why");
        assert!(b.borrow().ids().is_empty());
    }

    #[test]
    fn trust_documents_from_strangers_crowd_out_neither_shares_nor_trusted_peers() {
        let a = RefCell::new(Library::new(A));
        let b = RefCell::new(Library::new(B));
        let c = RefCell::new(Library::new(C));
        // B holds as many strangers' trust documents as it takes (any peer may make B a reader
        // of one).
        for i in 0..MAX_TRUST_DOCS {
            b.borrow_mut()
                .docs
                .insert(trust_id(&format!("did:key:stranger{i}")), AutoCommit::new());
        }
        let readers: BTreeSet<String> = [B.to_owned()].into();
        let creds: BTreeMap<String, String> =
            [("a|c|content".to_owned(), "{\"level\":50}".to_owned())].into();
        for peer in [&a, &c] {
            peer.borrow_mut().publish_trust(&readers, &creds).expect("publish");
            peer.borrow_mut().share(object_share(B, "s1", "bafkone")).expect("share");
        }
        // C, whom B does not trust: its trust document is refused, and its share is not taken.
        let (_, sb, refusals) = sync_pair(&c, &b, Level::Nothing, Level::Nothing);
        assert!(refusals.iter().any(|r| r.contains("trust documents")), "{refusals:?}");
        assert!(b.borrow_mut().trust_of(C).is_none());
        assert_eq!(sb.changed, 0);
        // A, whom B trusts: its trust document is taken beyond the strangers' room, and its
        // share arrives.
        let (_, sb, refusals) = sync_pair(&a, &b, Level::Nothing, Level::Full);
        assert!(refusals.is_empty(), "{refusals:?}");
        assert!(b.borrow_mut().trust_of(A).is_some());
        assert_eq!(sb.changed, 2);
        assert_eq!(b.borrow_mut().shares_to_me().len(), 1);
    }

    #[test]
    fn strangers_trust_documents_together_are_taken_only_up_to_their_limit() {
        let (a, b, c) = (
            RefCell::new(Library::new(A)),
            RefCell::new(Library::new(B)),
            RefCell::new(Library::new(C)),
        );
        // B holds 64 strangers' trust documents of 256 KiB each: 16 MiB.
        for i in 0..64 {
            let id = trust_id(&format!("did:key:stranger{i}"));
            b.borrow_mut().docs.insert(id.clone(), AutoCommit::new());
            let full = Stored { whole_bytes: MAX_STRANGER_TRUST_BYTES, ..Stored::default() };
            b.borrow_mut().stored.insert(id, full);
        }
        let readers: BTreeSet<String> = [B.to_owned()].into();
        let creds: BTreeMap<String, String> =
            [("x|y|content".to_owned(), "{\"level\":50}".to_owned())].into();
        for peer in [&a, &c] {
            peer.borrow_mut().publish_trust(&readers, &creds).expect("publish");
        }
        // One more stranger's is refused; a trusted peer's is taken.
        let refused = sync_pair(&c, &b, Level::Nothing, Level::Nothing).2;
        assert!(refused.iter().any(|r| r.contains("none more is taken")), "{refused:?}");
        assert!(b.borrow_mut().trust_of(C).is_none());
        let refused = sync_pair(&a, &b, Level::Nothing, Level::Full).2;
        assert!(refused.is_empty(), "{refused:?}");
        assert!(b.borrow_mut().trust_of(A).is_some());
    }

    #[test]
    fn a_strangers_trust_document_is_taken_only_up_to_its_size_limit() {
        // C's trust document grows by a credential at a time, each change small, until it is
        // past what B takes of a stranger's; B, which trusts A, takes A's all the same.
        let b = RefCell::new(Library::new(B));
        let readers: BTreeSet<String> = [B.to_owned()].into();
        let mut creds = BTreeMap::new();
        let mut seed = 7u64;
        let mut noise = |n: usize| -> String {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    char::from(b'a' + (seed >> 59) as u8)
                })
                .collect()
        };
        let (a, c) = (RefCell::new(Library::new(A)), RefCell::new(Library::new(C)));
        let mut refused = Vec::new();
        for i in 0..40 {
            creds.insert(format!("c|x{i}|content"), noise(10_000));
            for peer in [&a, &c] {
                peer.borrow_mut().publish_trust(&readers, &creds).expect("publish");
            }
            refused.extend(sync_pair(&c, &b, Level::Nothing, Level::Nothing).2);
            let (_, _, from_a) = sync_pair(&a, &b, Level::Nothing, Level::Full);
            assert!(from_a.is_empty(), "{from_a:?}");
            b.borrow_mut().take_writes();
        }
        assert!(
            refused.iter().any(|r| r.contains("would hold more than 262144 bytes")),
            "{refused:?}"
        );
        let count = |issuer: &str| b.borrow_mut().trust_of(issuer).map_or(0, |(_, all)| all.len());
        let (from_a, from_c) = (count(A), count(C));
        assert_eq!(from_a, 40, "a trusted peer's is taken whole");
        assert!(from_c > 0 && from_c < 40, "{from_c} of C's");
        let c_saved = b.borrow_mut().docs.get_mut(&trust_id(C)).map_or(0, |d| d.save().len());
        assert!(c_saved <= MAX_STRANGER_TRUST_BYTES, "{c_saved}");
    }

    #[test]
    fn changes_held_back_for_missing_ones_count_towards_the_size_limit() {
        // Automerge keeps a change whose dependencies it lacks until they come, without the
        // document's heads changing: a stranger sending only such changes must still meet
        // the size limit of its trust document.
        let (b, c) = (RefCell::new(Library::new(B)), RefCell::new(Library::new(C)));
        let readers: BTreeSet<String> = [B.to_owned()].into();
        let mut creds = BTreeMap::new();
        creds.insert("c|x|content".to_owned(), "first".to_owned());
        c.borrow_mut().publish_trust(&readers, &creds).expect("publish");
        assert!(sync_pair(&c, &b, Level::Nothing, Level::Nothing).2.is_empty());
        let id = trust_id(C);
        let known = b.borrow_mut().docs.get_mut(&id).expect("taken").get_heads();
        // Changes B holds already count for nothing, however often they come.
        b.borrow_mut().take_writes();
        let first = c.borrow_mut().docs.get_mut(&id).expect("held").get_changes(&[]);
        let again = |changes: &[automerge::Change]| {
            sync::Message {
                heads: Vec::new(),
                need: Vec::new(),
                have: Vec::new(),
                changes: changes.iter().map(|c| c.raw_bytes().to_vec()).collect::<Vec<_>>().into(),
                flags: None,
                version: sync::MessageVersion::V1,
            }
            .encode()
        };
        for _ in 0..20 {
            let mut state = sync::State::new();
            let taken =
                b.borrow_mut().receive_with(C, &id, &again(&first), Level::Nothing, &mut state);
            assert!(matches!(taken, Ok(false)), "{taken:?}");
        }
        assert_eq!(b.borrow().stored.get(&id).map_or(0, |s| s.taken_bytes), 0);
        for i in 0..60 {
            creds.insert(format!("c|y{i}|content"), format!("{i:0>8000}"));
            c.borrow_mut().publish_trust(&readers, &creds).expect("publish");
        }
        let changes = c.borrow_mut().docs.get_mut(&id).expect("held").get_changes(&known);
        let mut state = sync::State::new();
        let mut refused = None;
        // Every change but the first, on which the others depend.
        for change in changes.iter().skip(1) {
            let message = again(std::slice::from_ref(change));
            match b.borrow_mut().receive_with(C, &id, &message, Level::Nothing, &mut state) {
                Ok(changed) => assert!(!changed, "held back, not applied"),
                Err(e) => {
                    refused = Some(e.to_string());
                    break;
                }
            }
        }
        let refused = refused.expect("refused before 60 changes of 8 KB were held");
        assert!(refused.contains("would hold more than 262144 bytes"), "{refused}");
        assert_eq!(b.borrow_mut().docs.get_mut(&id).expect("kept").get_heads(), known);
    }

    #[test]
    fn collections_shared_by_the_hundred_arrive_a_few_at_a_time_and_only_if_they_exist() {
        let a = RefCell::new(Library::new(A));
        let b = RefCell::new(Library::new(B));
        let share_collection = |lib: &RefCell<Library>, name: String, id: &str| {
            let mut s = object_share(B, &name, "x");
            s.cid = None;
            s.collection = Some(id.to_owned());
            lib.borrow_mut().share(s).expect("share");
        };
        // 70 real collections, and 100 named that A does not hold, whose shares come first
        // (they are read in the order of their names).
        for n in 0..70u8 {
            let id = a.borrow_mut().create_collection([n; 16], "c").expect("create");
            a.borrow_mut().set_member(&id, B, Role::Reader, true).expect("member");
            share_collection(&a, format!("s-real-{n:03}"), &id);
        }
        for n in 0..100u8 {
            let id = a
                .borrow_mut()
                .create_collection([n, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], "c")
                .expect("create");
            share_collection(&a, format!("s-dead-{n:03}"), &id);
            a.borrow_mut().docs.remove(&id);
        }
        let collections = |lib: &RefCell<Library>| {
            lib.borrow().ids().iter().filter(|i| i.starts_with("collection-")).count()
        };
        let (_, _, refusals) = sync_pair(&a, &b, Level::Full, Level::Metadata);
        assert!(refusals.is_empty(), "{refusals:?}");
        assert_eq!(collections(&b), 0, "the first asked are those A does not hold");
        assert!(b.borrow().docs.len() <= 1 + MAX_EXPECTED_PER_PEER, "placeholders are bounded");
        for _ in 0..4 {
            if collections(&b) == 70 {
                break;
            }
            sync_pair(&a, &b, Level::Full, Level::Metadata);
        }
        assert_eq!(collections(&b), 70, "every real one arrives in later sessions");
        assert!(b.borrow().docs.len() <= 71 + MAX_EXPECTED_PER_PEER);
        assert!(b.borrow().arriving.is_empty(), "nothing left waiting for what never came");
    }

    #[test]
    fn a_share_reaches_its_recipient_and_nobody_else() {
        let a = RefCell::new(Library::new(A));
        let b = RefCell::new(Library::new(B));
        let c = RefCell::new(Library::new(C));
        a.borrow_mut().share(object_share(B, "s1", "bafkone")).expect("share");
        // A need not trust B to send what it shares with B.
        let (_, sb, refusals) = sync_pair(&a, &b, Level::Nothing, Level::Full);
        assert!(refusals.is_empty(), "{refusals:?}");
        assert_eq!(sb.changed, 1);
        let got = b.borrow_mut().shares_to_me();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].from.as_str(), got[0].cid.as_deref()), (A, Some("bafkone")));
        assert_eq!(got[0].note, "for you");
        // C, even after talking to both, gets nothing of it.
        let (_, sc, _) = sync_pair(&a, &c, Level::Full, Level::Full);
        let (_, sc2, _) = sync_pair(&b, &c, Level::Full, Level::Full);
        assert_eq!(sc.changed + sc2.changed, 0);
        assert!(c.borrow_mut().shares_to_me().is_empty());
        assert!(c.borrow().ids().is_empty());
    }

    #[test]
    fn a_trust_document_reaches_its_readers_alone_and_only_its_issuer_changes_it() {
        let a = RefCell::new(Library::new(A));
        let b = RefCell::new(Library::new(B));
        let c = RefCell::new(Library::new(C));
        let creds = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let readers: BTreeSet<String> = [B.to_owned()].into();
        let first = creds(&[("a|c|content", "{\"level\":50}"), ("a|d|content", "{\"level\":70}")]);
        assert!(a.borrow_mut().publish_trust(&readers, &first).expect("publish"));
        assert!(!a.borrow_mut().publish_trust(&readers, &first).expect("again"), "no change");
        // B takes it even trusting A not at all: what is in it counts only through trust.
        let (_, sb, refusals) = sync_pair(&a, &b, Level::Nothing, Level::Nothing);
        assert!(refusals.is_empty(), "{refusals:?}");
        assert_eq!(sb.changed, 1);
        let (v1, mut got) = b.borrow_mut().trust_of(A).expect("A's trust at B");
        got.sort();
        assert_eq!(got, ["{\"level\":50}", "{\"level\":70}"]);
        // C is no reader: it gets nothing of it, from A or from B.
        sync_pair(&a, &c, Level::Full, Level::Full);
        sync_pair(&b, &c, Level::Full, Level::Full);
        assert!(c.borrow_mut().trust_of(A).is_none());
        assert!(c.borrow().ids().is_empty());
        // A replaces one assertion and drops the other: B sees exactly that, as a new version.
        let second = creds(&[("a|c|content", "{\"level\":0}")]);
        assert!(a.borrow_mut().publish_trust(&readers, &second).expect("publish"));
        let (_, sb, _) = sync_pair(&a, &b, Level::Full, Level::Full);
        assert_eq!(sb.changed, 1);
        let (v2, got) = b.borrow_mut().trust_of(A).expect("A's trust at B");
        assert_eq!(got, ["{\"level\":0}"]);
        assert_ne!(v1, v2);
        // B, a reader, changes its copy of A's document: A refuses the change.
        {
            let mut lib = b.borrow_mut();
            let doc = lib.docs.get_mut(&trust_id(A)).expect("held");
            let (_, map) = doc.get(ROOT, "credentials").unwrap().unwrap();
            doc.put(&map, "a|b|content", "{\"level\":100}").unwrap();
            doc.commit();
        }
        let (sa, _, refusals) = sync_pair(&a, &b, Level::Full, Level::Full);
        assert_eq!(sa.changed, 0);
        assert!(refusals.iter().any(|r| r.contains("may not change")), "{refusals:?}");
        assert_eq!(a.borrow_mut().trust_of(A).expect("own").1, ["{\"level\":0}"]);
        // B is no reader any more: A's next change does not reach it.
        assert!(a.borrow_mut().publish_trust(&BTreeSet::new(), &first).expect("publish"));
        sync_pair(&a, &b, Level::Full, Level::Full);
        assert!(!b
            .borrow_mut()
            .trust_of(A)
            .expect("old copy")
            .1
            .contains(&"{\"level\":70}".to_owned()));
        // Too much to publish is refused whole.
        let many: BTreeMap<String, String> =
            (0..=MAX_TRUST_CREDENTIALS).map(|i| (format!("k{i}"), "{}".to_owned())).collect();
        assert!(matches!(a.borrow_mut().publish_trust(&readers, &many), Err(Error::Invalid(_))));
    }

    #[test]
    fn two_sessions_at_once_one_each_way_both_deliver() {
        let a = RefCell::new(Library::new(A));
        let b = RefCell::new(Library::new(B));
        a.borrow_mut().share(object_share(B, "s1", "bafkone")).expect("share");
        b.borrow_mut().share(object_share(A, "s2", "bafktwo")).expect("share");
        let ((mut a1, mut b1), (mut b2, mut a2)) = (duplex(), duplex());
        let results = block_on(futures::future::join4(
            session(&mut a1, &a, B, Level::Full, true, |_| {}),
            session(&mut b1, &b, A, Level::Full, false, |_| {}),
            session(&mut b2, &b, A, Level::Full, true, |_| {}),
            session(&mut a2, &a, B, Level::Full, false, |_| {}),
        ));
        for r in [results.0, results.1, results.2, results.3] {
            r.expect("session");
        }
        assert_eq!(b.borrow_mut().shares_to_me().len(), 1);
        assert_eq!(a.borrow_mut().shares_to_me().len(), 1);
    }

    #[test]
    fn nothing_is_taken_from_a_peer_not_trusted_enough() {
        let a = RefCell::new(Library::new(A));
        let b = RefCell::new(Library::new(B));
        a.borrow_mut().share(object_share(B, "s1", "bafkone")).expect("share");
        let (_, sb, refusals) = sync_pair(&a, &b, Level::Full, Level::Nothing);
        assert_eq!(sb.changed, 0);
        assert!(refusals.iter().any(|r| r.contains("does not trust")), "{refusals:?}");
        assert!(b.borrow_mut().shares_to_me().is_empty());
    }

    #[test]
    fn policy_levels_follow_the_thresholds() {
        let p = Policy::default();
        assert_eq!(p.level(Some(0.9)), Level::Full);
        assert_eq!(p.level(Some(0.8)), Level::Full);
        assert_eq!(p.level(Some(0.6)), Level::Metadata);
        assert_eq!(p.level(Some(0.5)), Level::Metadata);
        assert_eq!(p.level(Some(0.3)), Level::Nothing);
        assert_eq!(p.level(None), Level::Nothing);
        assert_eq!(Policy { fetch_at: 0, metadata_at: 0 }.level(Some(0.0)), Level::Nothing);
        assert!(Policy { fetch_at: 40, metadata_at: 60 }.validate().is_err());
    }

    #[test]
    fn a_peer_cannot_slip_in_a_document_or_change_one_it_only_reads() {
        // C pretends that a document is A's shares to B.
        let mut c = Library::new(C);
        c.share(object_share(B, "s1", "bafkevil")).expect("share");
        let mut b = Library::new(B);
        let msg = c.generate(B, &shares_id(C, B)).expect("a message");
        // Sent to B under the id of A's shares: not taken (the id is not C's to use).
        let wrong = b.receive(C, &shares_id(A, B), &msg, Level::Full);
        assert!(matches!(wrong, Err(Error::Unknown(_))), "{wrong:?}");
        // A document that says it is A's shares to B, sent by C under C's own id: refused once
        // its content arrives, and dropped.
        let mut forger = Library::new(A);
        forger.share(object_share(B, "s1", "bafkevil")).expect("share");
        let forged = forger.docs.remove(&shares_id(A, B)).expect("doc");
        c.docs.insert(shares_id(C, B), forged);
        // C's library would not send a document it does not write: a forger uses Automerge
        // itself.
        let mut c_state = sync::State::new();
        let refusal = (0..6).find_map(|_| {
            let doc = c.docs.get_mut(&shares_id(C, B))?;
            let m = doc.sync().generate_sync_message(&mut c_state)?.encode();
            match b.receive(C, &shares_id(C, B), &m, Level::Full) {
                Err(e) => Some(e),
                Ok(_) => {
                    let back = b.generate(C, &shares_id(C, B))?;
                    let back = sync::Message::decode(&back).ok()?;
                    let doc = c.docs.get_mut(&shares_id(C, B))?;
                    let _ = doc.sync().receive_sync_message(&mut c_state, back);
                    None
                }
            }
        });
        assert!(matches!(refusal, Some(Error::Refused(_))), "{refusal:?}");
        assert!(b.ids().is_empty() && b.shares_to_me().is_empty());
        // A reader sending changes to a collection is refused.
        let mut a = Library::new(A);
        let coll = a.create_collection([1; 16], "photos").expect("create");
        a.set_member(&coll, B, Role::Reader, true).expect("member");
        let mut b_copy = Library::new(B);
        b_copy.docs.insert(coll.clone(), a.docs.get_mut(&coll).expect("doc").fork());
        // B cannot edit it locally…
        assert!(matches!(b_copy.collection_add(&coll, &entry("bafkx", B)), Err(Error::Refused(_))));
        // …and a change made anyway (by hand) is refused by A.
        let doc = b_copy.docs.get_mut(&coll).expect("doc");
        doc.put(ROOT, "name", "mine now").expect("put");
        doc.commit();
        let mut delivered = false;
        for _ in 0..6 {
            if let Some(m) = b_copy.generate(A, &coll) {
                match a.receive(B, &coll, &m, Level::Full) {
                    Err(Error::Refused(r)) => {
                        assert!(r.contains("may not change"), "{r}");
                        delivered = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            if let Some(m) = a.generate(B, &coll) {
                let _ = b_copy.receive(A, &coll, &m, Level::Full);
            }
        }
        assert!(delivered, "B's change was offered and refused");
        assert_eq!(a.collection(&coll).expect("c").info.name, "photos");
        // Messages that are not sync messages are refused as malformed.
        assert!(matches!(a.receive(B, &coll, b"nonsense", Level::Full), Err(Error::Malformed(_))));
    }

    /// Offer `from`'s document `id` to `to` until it is taken or refused, as a forger would,
    /// with Automerge itself (`from`'s library would not send what it may not).
    fn offer(from: &mut Library, to: &mut Library, id: &str) -> Result<(), Error> {
        let sender = from.me.clone();
        let mut state = sync::State::new();
        for _ in 0..8 {
            let doc = from.docs.get_mut(id).expect("the sender's document");
            if let Some(m) = doc.sync().generate_sync_message(&mut state) {
                to.receive(&sender, id, &m.encode(), Level::Full)?;
            }
            if let Some(m) = to.generate(&sender, id) {
                let m = sync::Message::decode(&m).expect("a sync message");
                let doc = from.docs.get_mut(id).expect("the sender's document");
                doc.sync().receive_sync_message(&mut state, m).expect("taken");
            }
        }
        Ok(())
    }

    #[test]
    fn no_change_alters_what_a_document_is() {
        // An editor of A's collection makes itself its owner, by hand.
        let mut a = Library::new(A);
        let coll = a.create_collection([3; 16], "photos").expect("create");
        a.set_member(&coll, B, Role::Editor, true).expect("member");
        let mut b = Library::new(B);
        b.docs.insert(coll.clone(), a.docs.get_mut(&coll).expect("doc").fork());
        b.collection_add(&coll, &entry("bafkfine", B)).expect("an editor adds");
        offer(&mut b, &mut a, &coll).expect("an editor's addition is taken");
        assert_eq!(a.collection(&coll).expect("c").entries.len(), 1);
        let doc = b.docs.get_mut(&coll).expect("doc");
        doc.put(ROOT, "owner", B).expect("put");
        doc.put(ROOT, "name", "mine now").expect("put");
        doc.commit();
        let refused = offer(&mut b, &mut a, &coll);
        assert!(
            matches!(&refused, Err(Error::Refused(r)) if r.contains("alter what")),
            "{refused:?}"
        );
        let held = a.collection(&coll).expect("still A's collection");
        assert_eq!((held.info.name.as_str(), held.entries.len()), ("photos", 1));
        assert_eq!(meta_of(a.docs.get(&coll).expect("doc")).expect("meta").owner, A);
        assert!(a.collection_add(&coll, &entry("bafkmore", A)).is_ok(), "A still owns it");

        // C, sharing with B, makes its shares seem A's.
        let mut c = Library::new(C);
        c.share(object_share(B, "s1", "bafkc")).expect("share");
        let mut b = Library::new(B);
        offer(&mut c, &mut b, &shares_id(C, B)).expect("C's share is taken");
        assert_eq!(b.shares_to_me().len(), 1);
        let doc = c.docs.get_mut(&shares_id(C, B)).expect("doc");
        doc.put(ROOT, "from", A).expect("put");
        doc.commit();
        let refused = offer(&mut c, &mut b, &shares_id(C, B));
        assert!(matches!(&refused, Err(Error::Refused(_))), "{refused:?}");
        let shares = b.shares_to_me();
        assert!(shares.len() == 1 && shares[0].from == C, "{shares:?}");
    }

    #[test]
    fn a_collection_new_to_this_peer_cannot_say_this_peer_made_it() {
        // C makes a collection that says B owns it and C edits it, and shares it with B.
        let mut forger = Library::new(B);
        let coll = forger.create_collection([4; 16], "yours").expect("create");
        forger.set_member(&coll, C, Role::Editor, true).expect("member");
        let mut c = Library::new(C);
        c.docs.insert(coll.clone(), forger.docs.remove(&coll).expect("doc"));
        let mut share = object_share(B, "s1", "unused");
        (share.cid, share.collection) = (None, Some(coll.clone()));
        c.share(share).expect("share");
        let mut b = Library::new(B);
        offer(&mut c, &mut b, &shares_id(C, B)).expect("C's share is taken");
        let refused = offer(&mut c, &mut b, &coll);
        assert!(
            matches!(&refused, Err(Error::Refused(r)) if r.contains("not what that peer may send")),
            "{refused:?}"
        );
        assert!(!b.docs.contains_key(&coll));
    }

    #[test]
    fn a_session_keeps_states_only_of_documents_the_peer_takes_part_in() {
        let mut b = Library::new(B);
        let readers: BTreeSet<String> = [A.to_owned()].into();
        b.publish_trust(&readers, &BTreeMap::new()).expect("publish");
        let coll = b.create_collection([5; 16], "ours").expect("create");
        b.set_member(&coll, A, Role::Reader, true).expect("member");
        let states = |ids: &[&String]| {
            ids.iter().map(|id| ((*id).clone(), sync::State::new())).collect::<HashMap<_, _>>()
        };
        let ids = [&trust_id(B), &coll];
        // A stranger asking about them leaves nothing behind; a reader keeps its states.
        assert_eq!(b.end_session(C, states(&ids)), 0);
        assert_eq!(b.end_session(A, states(&ids)), 2);
        assert!(b.take_writes().put.iter().all(|(k, _)| !k.contains(C)));
    }

    #[test]
    fn offline_edits_of_a_shared_collection_converge_keeping_both_sides_additions() {
        let a = RefCell::new(Library::new(A));
        let b = RefCell::new(Library::new(B));
        let coll = a.borrow_mut().create_collection([7; 16], "trip").expect("create");
        for cid in ["bafk1", "bafk2", "bafk3"] {
            a.borrow_mut().collection_add(&coll, &entry(cid, A)).expect("add");
        }
        a.borrow_mut().set_member(&coll, B, Role::Editor, true).expect("editor");
        let mut s = object_share(B, "s-coll", "x");
        s.cid = None;
        s.collection = Some(coll.clone());
        a.borrow_mut().share(s).expect("share");
        // Share is a reader role by default; A made B an editor: keep it.
        a.borrow_mut().set_member(&coll, B, Role::Editor, true).expect("editor again");
        let (_, _, refusals) = sync_pair(&a, &b, Level::Full, Level::Full);
        assert!(refusals.is_empty(), "{refusals:?}");
        assert_eq!(b.borrow_mut().collection(&coll).expect("at b").entries.len(), 3);
        // Offline: A adds bafk4 and removes bafk1, renames to "trip 2026"; B adds bafk5,
        // removes bafk2, renames to "summer".
        {
            let mut a = a.borrow_mut();
            a.collection_add(&coll, &entry("bafk4", A)).expect("add");
            a.collection_remove(&coll, "bafk1").expect("remove");
            a.collection_rename(&coll, "trip 2026").expect("rename");
        }
        {
            let mut b = b.borrow_mut();
            b.collection_add(&coll, &entry("bafk5", B)).expect("add");
            b.collection_remove(&coll, "bafk2").expect("remove");
            b.collection_rename(&coll, "summer").expect("rename");
        }
        // A need not trust B: it named B an editor of its own collection.
        let (_, _, refusals) = sync_pair(&a, &b, Level::Nothing, Level::Full);
        assert!(refusals.is_empty(), "{refusals:?}");
        let at_a = a.borrow_mut().collection(&coll).expect("a");
        let at_b = b.borrow_mut().collection(&coll).expect("b");
        assert_eq!(at_a, at_b, "converged");
        let mut cids: Vec<&str> = at_a.entries.iter().map(|e| e.cid.as_str()).collect();
        cids.sort_unstable();
        assert_eq!(cids, ["bafk3", "bafk4", "bafk5"], "both additions kept, both removals done");
        assert!(["trip 2026", "summer"].contains(&at_a.info.name.as_str()), "{}", at_a.info.name);
    }

    #[test]
    fn a_reconnect_sends_only_what_is_new() {
        let a = RefCell::new(Library::new(A));
        let b = RefCell::new(Library::new(B));
        let coll = a.borrow_mut().create_collection([9; 16], "big").expect("create");
        for i in 0..2000 {
            a.borrow_mut().collection_add(&coll, &entry(&format!("bafk{i:05}"), A)).expect("add");
        }
        share_collection(&a, &coll);
        let (first, _, _) = sync_pair(&a, &b, Level::Full, Level::Full);
        assert_eq!(b.borrow_mut().collection(&coll).expect("b").entries.len(), 2000);
        // Both sides persist and reload their sync states (as after a restart).
        let saved_a = Storage::of(&a);
        let saved_b = Storage::of(&b);
        let a = reload(A, &saved_a);
        let b = reload(B, &saved_b);
        a.borrow_mut().collection_add(&coll, &entry("bafknew", A)).expect("add");
        let (second, _, _) = sync_pair(&a, &b, Level::Full, Level::Full);
        assert_eq!(b.borrow_mut().collection(&coll).expect("b").entries.len(), 2001);
        assert!(
            second.bytes_sent * 20 < first.bytes_sent,
            "{} bytes after the reconnect, {} the first time",
            second.bytes_sent,
            first.bytes_sent
        );
    }

    #[test]
    fn a_peer_that_lost_its_last_changes_is_sent_only_those() {
        let a = RefCell::new(Library::new(A));
        let b = RefCell::new(Library::new(B));
        let coll = a.borrow_mut().create_collection([5; 16], "big").expect("create");
        let many: Vec<Entry> = (0..2000).map(|i| entry(&format!("bafk{i:05}"), A)).collect();
        a.borrow_mut().collection_add_all(&coll, &many).expect("add");
        share_collection(&a, &coll);
        let (first, _, _) = sync_pair(&a, &b, Level::Full, Level::Full);
        let saved_b = Storage::of(&b);
        // A adds ten; B takes them, then stops before saving them; A saved what it sent.
        let ten: Vec<Entry> = (0..10).map(|i| entry(&format!("bafkz{i}"), A)).collect();
        a.borrow_mut().collection_add_all(&coll, &ten).expect("add");
        sync_pair(&a, &b, Level::Full, Level::Full);
        assert_eq!(b.borrow_mut().collection(&coll).expect("b").entries.len(), 2010);
        // A keeps its state (it knows B had the ten); B restarts from what it had saved.
        let b = reload(B, &saved_b);
        assert_eq!(b.borrow_mut().collection(&coll).expect("b").entries.len(), 2000, "B lost ten");
        let (again, _, _) = sync_pair(&a, &b, Level::Full, Level::Full);
        assert_eq!(b.borrow_mut().collection(&coll).expect("b").entries.len(), 2010);
        assert!(
            again.bytes_sent * 5 < first.bytes_sent,
            "{} bytes to bring back ten entries, {} for the first 2,000",
            again.bytes_sent,
            first.bytes_sent
        );
    }

    #[test]
    fn a_peer_that_missed_many_small_changes_is_sent_those_not_the_whole_document() {
        // CIDs as long and random as real ones.
        let cid_like = |n: &str| format!("bafkrei{}", &hex(&Sha256::digest(n.as_bytes()))[..52]);
        // Automerge alone sends the whole document once the changes a peer lacks are more
        // than a third of all by count, whatever their size.
        let a = RefCell::new(Library::new(A));
        let b = RefCell::new(Library::new(B));
        let coll = a.borrow_mut().create_collection([6; 16], "big").expect("create");
        for k in 0..5 {
            let many: Vec<Entry> =
                (0..500).map(|i| entry(&cid_like(&format!("{k}-{i}")), A)).collect();
            a.borrow_mut().collection_add_all(&coll, &many).expect("add");
        }
        share_collection(&a, &coll);
        let (first, _, _) = sync_pair(&a, &b, Level::Full, Level::Full);
        // B away; A makes twelve small changes, more than all the others together.
        for k in 0..12 {
            let few: Vec<Entry> =
                (0..5).map(|i| entry(&cid_like(&format!("z{k}-{i}")), A)).collect();
            a.borrow_mut().collection_add_all(&coll, &few).expect("add");
        }
        let (again, _, _) = sync_pair(&a, &b, Level::Full, Level::Full);
        assert_eq!(b.borrow_mut().collection(&coll).expect("b").entries.len(), 2560);
        assert!(
            again.bytes_sent * 4 < first.bytes_sent,
            "{} bytes to bring sixty entries, {} for the first 2,500",
            again.bytes_sent,
            first.bytes_sent
        );
    }

    #[test]
    fn a_change_to_a_large_document_is_stored_as_a_small_chunk_and_all_of_it_loads_back() {
        let a = RefCell::new(Library::new(A));
        let coll = a.borrow_mut().create_collection([7; 16], "big").expect("create");
        let many: Vec<Entry> = (0..2000).map(|i| entry(&format!("bafk{i:05}"), A)).collect();
        a.borrow_mut().collection_add_all(&coll, &many).expect("add");
        let mut storage = Storage::of(&a);
        let whole = storage.0[&format!("{DOC_KEY}{coll}")].len();
        // One entry more: a chunk of about its size, the whole save untouched.
        a.borrow_mut().collection_add(&coll, &entry("bafkone", A)).expect("add");
        let w = a.borrow_mut().take_writes();
        assert_eq!((&w.docs[..], w.delete.len()), (&[coll.clone()][..], 0));
        assert_eq!(w.put.len(), 1);
        assert_eq!(w.put[0].0, chunk_key(&coll, 0));
        assert!(w.put[0].1.len() * 20 < whole, "{} bytes for one entry", w.put[0].1.len());
        storage.write(w);
        assert_eq!(
            reload(A, &storage).borrow_mut().collection(&coll).expect("c").entries.len(),
            2001
        );
        // Nothing changed: nothing written.
        let w = a.borrow_mut().take_writes();
        assert!(w.put.is_empty() && w.docs.is_empty());
        // Once the chunks grow large, the document is saved whole again and the chunks go.
        let chunks = |s: &Storage| s.0.keys().filter(|k| k.contains('+')).count();
        let mut compacted = false;
        for i in 0..MAX_CHUNKS {
            a.borrow_mut().collection_add(&coll, &entry(&format!("bafkmore{i}"), A)).expect("add");
            let w = a.borrow_mut().take_writes();
            let whole_again = !w.delete.is_empty();
            storage.write(w);
            if whole_again {
                assert_eq!(chunks(&storage), 0, "the chunks went with the whole save");
                compacted = true;
            }
            assert!(chunks(&storage) < MAX_CHUNKS as usize);
        }
        assert!(compacted, "saved whole again at least once");
        let back = reload(A, &storage);
        assert_eq!(back.borrow_mut().collection(&coll), a.borrow_mut().collection(&coll));
        // A damaged chunk loses what it held, says so, and the next write saves whole.
        a.borrow_mut().collection_add(&coll, &entry("bafklast", A)).expect("add");
        storage.write(a.borrow_mut().take_writes());
        let key = storage.0.keys().filter(|k| k.contains('+')).max().expect("a chunk").clone();
        let chunk = storage.0.get_mut(&key).expect("a chunk");
        let last = chunk.len() - 1;
        chunk[last] ^= 0xff;
        let mut damaged = Library::new(A);
        let problems = damaged.load(storage.0.clone().into_iter().collect());
        assert!(problems.len() == 1 && problems[0].contains("is damaged"), "{problems:?}");
        assert_eq!(damaged.collection(&coll).expect("c").entries.len(), 2001 + MAX_CHUNKS as usize);
        let w = damaged.take_writes();
        assert!(
            w.put.iter().any(|(k, _)| *k == format!("{DOC_KEY}{coll}")) && w.delete.contains(&key)
        );
    }

    #[test]
    fn what_a_failed_write_was_to_save_is_saved_by_the_next() {
        let a = RefCell::new(Library::new(A));
        let coll = a.borrow_mut().create_collection([8; 16], "kept").expect("create");
        let many: Vec<Entry> = (0..200).map(|i| entry(&format!("bafk{i:05}"), A)).collect();
        a.borrow_mut().collection_add_all(&coll, &many).expect("add");
        let mut storage = Storage::of(&a);
        // A chunk is written, then two writes fail: one of a chunk, one of the document whole.
        a.borrow_mut().collection_add(&coll, &entry("bafkfirst", A)).expect("add");
        storage.write(a.borrow_mut().take_writes());
        for name in ["bafklost", "bafklost2"] {
            a.borrow_mut().collection_add(&coll, &entry(name, A)).expect("add");
            let failed = a.borrow_mut().take_writes();
            assert_eq!(failed.docs, std::slice::from_ref(&coll));
            a.borrow_mut().writes_failed(failed);
        }
        let w = a.borrow_mut().take_writes();
        assert!(w.put.iter().any(|(k, _)| *k == format!("{DOC_KEY}{coll}")), "saved whole");
        assert!(w.delete.contains(&chunk_key(&coll, 0)), "the chunk in storage goes");
        storage.write(w);
        let back = reload(A, &storage);
        assert_eq!(back.borrow_mut().collection(&coll).expect("c").entries.len(), 203);
        // And the next change is a chunk again.
        a.borrow_mut().collection_add(&coll, &entry("bafkafter", A)).expect("add");
        let w = a.borrow_mut().take_writes();
        assert_eq!(w.put.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), [chunk_key(&coll, 0)]);
    }

    #[test]
    fn a_document_set_aside_is_neither_loaded_nor_taken_from_peers_and_its_bytes_stay() {
        let a = RefCell::new(Library::new(A));
        let b = RefCell::new(Library::new(B));
        let coll = a.borrow_mut().create_collection([5; 16], "kept").expect("create");
        a.borrow_mut().collection_add(&coll, &entry("bafkone", A)).expect("add");
        share_collection(&a, &coll);
        sync_pair(&a, &b, Level::Full, Level::Full);
        let storage = Storage::of(&b);
        let mut aside = Library::new(B);
        aside.set_aside(&coll);
        let problems = aside.load(storage.0.clone().into_iter().collect());
        assert!(problems.iter().any(|p| p.contains("is set aside")), "{problems:?}");
        assert!(aside.collection(&coll).is_none());
        assert!(aside.ids().iter().all(|id| *id != coll), "the others load");
        // A's messages about it are refused, and nothing of it is written over.
        let aside = RefCell::new(aside);
        sync_pair(&a, &aside, Level::Full, Level::Full);
        assert!(aside.borrow_mut().collection(&coll).is_none());
        let w = aside.borrow_mut().take_writes();
        let keys: Vec<&String> = w.put.iter().map(|(k, _)| k).chain(&w.delete).collect();
        assert!(keys.iter().all(|k| !k.contains(&coll)), "{keys:?}");
        // Without it set aside, the same bytes load.
        assert!(reload(B, &storage).borrow_mut().collection(&coll).is_some());
        // Where a panic unwinds (the native node), one while a document loads sets it aside at
        // once: the rest load, and nothing of it is written or taken from peers.
        let mut caught = Library::new(B);
        caught.crash_loading(&coll, crate::api::CrashHow::Panic);
        let problems = caught.load(storage.0.clone().into_iter().collect());
        assert!(
            problems.iter().any(|p| p.contains(&coll)
                && p.contains(
                    "is set aside: loading it failed (debug_crash: a crash a test asked for"
                )),
            "{problems:?}"
        );
        assert!(caught.collection(&coll).is_none());
        assert_eq!(
            caught.ids().len(),
            reload(B, &storage).borrow().ids().len() - 1,
            "the others load"
        );
        let caught = RefCell::new(caught);
        sync_pair(&a, &caught, Level::Full, Level::Full);
        assert!(caught.borrow_mut().collection(&coll).is_none());
        let w = caught.borrow_mut().take_writes();
        assert!(w.put.iter().map(|(k, _)| k).chain(&w.delete).all(|k| !k.contains(&coll)));
        // A's own shares document set aside: sharing again makes one anew, in memory only; the
        // saved one is not written over.
        let a_storage = Storage::of(&a);
        let shares = shares_id(A, B);
        let mut a_aside = Library::new(A);
        a_aside.set_aside(&shares);
        a_aside.load(a_storage.0.clone().into_iter().collect());
        a_aside.share(object_share(B, "s2", "bafkagain")).expect("share again");
        let w = a_aside.take_writes();
        let keys: Vec<&String> = w.put.iter().map(|(k, _)| k).chain(&w.delete).collect();
        assert!(keys.iter().all(|k| !k.contains(&shares)), "{keys:?}");
    }

    #[test]
    fn revoking_a_collection_share_stops_its_sync() {
        let a = RefCell::new(Library::new(A));
        let b = RefCell::new(Library::new(B));
        let coll = a.borrow_mut().create_collection([3; 16], "notes").expect("create");
        share_collection(&a, &coll);
        sync_pair(&a, &b, Level::Full, Level::Full);
        assert!(b.borrow_mut().collection(&coll).is_some());
        a.borrow_mut().revoke_share(B, "s").expect("revoke");
        a.borrow_mut().collection_add(&coll, &entry("bafksecret", A)).expect("add");
        sync_pair(&a, &b, Level::Full, Level::Full);
        let at_b = b.borrow_mut().collection(&coll).expect("b keeps what it had");
        assert!(at_b.entries.iter().all(|e| e.cid != "bafksecret"), "nothing new reaches B");
        assert!(b.borrow_mut().shares_to_me()[0].revoked, "B sees the share revoked");
    }
}
