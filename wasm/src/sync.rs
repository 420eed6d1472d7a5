//! Shares and collections in the browser: the [`Library`] of Automerge documents, kept in
//! IndexedDB, synced with each verified peer over `/disot/sync/1.0.0` (the session itself is
//! `disot_core::sync::session`), and shared content fetched by the sync policy.
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use disot_core::api::{ApiError, ErrorCode};
use disot_core::inbound::InboundLimit;
use disot_core::store::BlockStore as _;
use disot_core::sync::{self as core_sync, Entry, Level, Library, Policy, Role, Share, Stats};
use libp2p::{PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::store::Store;

pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new(core_sync::PROTOCOL);
const POLICY_KEY: &str = "sync-policy";
/// Origins the user let share with some DIDs without asking: origin → DIDs.
const PREAUTH_KEY: &str = "share-preauth";
/// Which site made each collection a page made (id → origin): a page sees and changes only
/// its own site's collections (the extension's pages see all).
const ORIGINS_KEY: &str = "collection-origins";
/// Collections one site may make, and all sites together (documents are bounded in all, see
/// `MAX_DOCS`: sites must not take the room of the shares peers send).
const MAX_COLLECTIONS_PER_ORIGIN: usize = 256;
const MAX_COLLECTIONS_OF_SITES: usize = 4096;
/// Per-peer levels the user set, over what trust would give (DID → level).
const OVERRIDES_KEY: &str = "sync-overrides";
/// Peers with a level of their own, at most.
const MAX_OVERRIDES: usize = 1024;
/// Peers whose last sync session is remembered (shown in the popup; a retry reads how the
/// session it ran ended).
const MAX_PEERS_KEPT: usize = 1024;
/// Peers nothing is taken from since a message of theirs made this node crash (peer id → why).
const CUT_OFF_KEY: &str = "sync-cut-off";
/// Peers cut off, at most (the oldest goes first).
const MAX_CUT_OFF: usize = 256;
/// Saved documents not loaded since loading one made this node crash (id → when and why).
const SET_ASIDE_KEY: &str = "sync-set-aside";
/// Test builds only: a saved document whose loading fails, once: `{id, how?}` (see
/// `CrashHow`; the node takes it out of storage as it reads it).
const CRASH_LOADING_KEY: &str = "debug-crash-loading";

#[derive(Deserialize)]
struct CrashLoading {
    id: String,
    #[serde(default)]
    how: disot_core::api::CrashHow,
}

/// How the library is loaded at the node's start.
#[derive(Debug, Default)]
pub(crate) struct Loading {
    /// Test builds only: a sync message about this document panics, and loading the document
    /// a test names under [`CRASH_LOADING_KEY`] panics or traps.
    pub crash_on: Option<&'static str>,
    /// A saved document whose loading made the node crash (its id, the panic's message): not
    /// loaded from now on, nor taken from peers, until the user asks for it again. Its saved
    /// bytes stay.
    pub set_aside: Option<(String, String)>,
}
/// Most recipients pre-authorised for one origin.
const MAX_PREAUTH: usize = 256;
/// The origin under which content fetched for shares is kept.
pub(crate) const SHARES_ORIGIN: &str = "disot:shares";
/// How long one session may take (documents are small; a session that stalls is on a
/// connection that went away, and is tried again).
const SESSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// How long the first session with a peer reached through the relay waits for the direct
/// connection that usually follows.
const RELAYED_GRACE: std::time::Duration = std::time::Duration::from_millis(2_500);
/// How long the side with the larger DID waits for the other to start the session on
/// connecting, before starting one itself.
const CONNECT_DEFER: std::time::Duration = std::time::Duration::from_millis(1_500);
/// How often a running session saves what it received so far.
const SAVE_DURING_SESSION: std::time::Duration = std::time::Duration::from_millis(300);
/// How often absent participants are looked for, and dialled again.
const LOOK_EVERY_MS: u64 = 2_000;
const REDIAL_MS: u64 = 5_000;
/// How soon an announcement from a peer may have it dialled again.
const NEWS_REDIAL_MS: u64 = 1_000;
/// Most entries one `collection_add` adds.
const MAX_ADDED_AT_ONCE: usize = 10_000;
/// Most sessions answered at once, and of those most from one peer (one each way is what a
/// peer needs; a third covers one that ends as the next begins).
const MAX_INBOUND: usize = 8;
const INBOUND_PER_PEER: usize = 3;

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// A failure inside the node (a store error, say) as the API reports it.
pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, e.to_string())
}

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InvalidParams, e.to_string())
}

fn api_err(e: core_sync::Error) -> ApiError {
    match e {
        core_sync::Error::NotFound(_) => ApiError::new(ErrorCode::NotFound, e.to_string()),
        core_sync::Error::Refused(_) => ApiError::new(ErrorCode::Unauthorized, e.to_string()),
        core_sync::Error::Invalid(_) | core_sync::Error::Malformed(_) => invalid(e),
        other => internal(other),
    }
}

/// What the last session with a peer did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PeerSync {
    pub did: String,
    pub at_ms: u64,
    pub level: Level,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub sessions: u64,
    /// Bytes of all sessions (whether they ended well or not) since this peer started.
    pub bytes_sent_total: u64,
    pub bytes_received_total: u64,
}

pub(crate) struct SyncNode {
    me: String,
    lib: RefCell<Library>,
    store: Rc<Store>,
    control: RefCell<libp2p_stream::Control>,
    exchange: Rc<crate::exchange::Exchange>,
    policy: Cell<Policy>,
    /// Levels the user set for single peers, over the policy.
    overrides: RefCell<BTreeMap<String, Level>>,
    /// Who we trust, directly and through others, as last read (cleared when trust changes),
    /// and how many times it was cleared (a read that raced a change is not kept).
    trust: RefCell<Option<disot_core::trust::TrustGraph>>,
    trust_epoch: Cell<u64>,
    /// Peers a session runs with; `true`: run another when it ends (something changed meanwhile).
    running: RefCell<HashMap<PeerId, bool>>,
    last: RefCell<HashMap<String, PeerSync>>,
    /// Shared objects being fetched by the policy.
    fetching: RefCell<std::collections::BTreeSet<String>>,
    /// Peers connected and verified now (peer id → DID), for syncing after a local change.
    connected: RefCell<HashMap<PeerId, String>>,
    /// When each absent participant was last dialled, and when that was last looked at.
    dialled: RefCell<HashMap<String, u64>>,
    looked_ms: Cell<u64>,
    /// What changed lately, for pages waiting on `sync_watch`, and the documents saved since
    /// the feed last told of a change (whose sites hear of the next).
    feed: RefCell<Feed>,
    unheard: RefCell<std::collections::BTreeSet<String>>,
    saving: futures::lock::Mutex<()>,
    /// `cas-updates`: our side of the announcements, whether one is due, what was heard, and
    /// which peers announced news for us (DID → when), to be reached.
    announcer: RefCell<disot_core::announce::Announcer>,
    announce: Cell<bool>,
    gossip: RefCell<Gossip>,
    news: RefCell<HashMap<String, u64>>,
    /// Sessions peers opened with us, running now ([`MAX_INBOUND`] at most), and peers to sync
    /// with once theirs end.
    inbound: InboundLimit<PeerId>,
    after_inbound: RefCell<std::collections::HashSet<PeerId>>,
    /// Peers whose direct connection came while their first session waited for it.
    direct_seen: RefCell<std::collections::HashSet<PeerId>>,
    /// Origins that may share with some DIDs without a prompt (the user said so in one).
    preauth: RefCell<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>>,
    /// See [`ORIGINS_KEY`].
    origins: RefCell<BTreeMap<String, String>>,
    /// The version of each peer's trust document last taken (DID → version), and who takes
    /// a new one.
    trust_taken: RefCell<HashMap<String, String>>,
    on_trust: RefCell<Option<Rc<TrustHandler>>>,
    /// Peers a message of which made this node crash: no session with them, their
    /// announcements go unheard, and Bitswap neither asks nor answers them, until the user
    /// lets them in again (peer id → when and why; a peer without a DID, whose key is not
    /// Ed25519, speaks only Bitswap here, and is cut off from that).
    cut_off: RefCell<BTreeMap<PeerId, CutOff>>,
    /// Saved documents not loaded (see [`Loading::set_aside`]): id → when and why.
    set_aside: RefCell<BTreeMap<String, SetAside>>,
}

/// When and why a peer was cut off (or a document set aside), for the popup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CutOff {
    pub at: u64,
    pub reason: String,
}

/// Why a saved document is not loaded, for the popup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SetAside {
    #[serde(flatten)]
    pub why: CutOff,
    /// The user asked for it again: the node's next start loads it.
    #[serde(default)]
    pub open_at_next_start: bool,
}

/// A peer's libp2p id from its DID, or from the id itself.
fn peer_of(who: &str) -> Option<PeerId> {
    who.parse()
        .ok()
        .or_else(|| disot_core::identity::public_key_from_did(who).ok().map(|k| k.to_peer_id()))
}

/// Takes what a peer's trust document says: (peer, its DID, the credentials in it).
pub(crate) type TrustHandler = dyn Fn(PeerId, String, Vec<String>);

/// Announcements sent and heard, for the popup and tests.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Gossip {
    sent: u64,
    heard: u64,
    for_me: u64,
    refused: u64,
    /// The last announcement heard, as it came (what every subscriber sees).
    last_heard: Option<String>,
}

/// How long news announced by a peer keeps it on the list of peers to reach.
const NEWS_FOR_MS: u64 = 60_000;

/// The change feed: for each audience, the changes it heard of lately (why each happened) and
/// how many before those, and who waits for the next (the site of each waiting page; none for
/// the extension's pages). Each audience numbers the changes it hears of 1, 2, 3… and keeps its
/// own latest: a site's pages cannot tell from the numbers, nor from `missed`, how many changes
/// they did not hear of.
#[derive(Default)]
struct Feed {
    /// The extension's pages: every change.
    all: Window,
    /// Sites that made no collection: changes every page hears of.
    everyone: Window,
    /// Each site that made a collection: those and its own (at most
    /// [`MAX_COLLECTIONS_OF_SITES`] sites).
    sites: HashMap<String, Window>,
    waiters: Vec<(Option<String>, futures::channel::oneshot::Sender<()>)>,
}

impl Feed {
    /// Note a change in the windows of those who hear of it.
    fn note(&mut self, why: &'static str, heard: &Heard) {
        self.all.push(why);
        if heard.everyone {
            self.everyone.push(why);
            self.sites.values_mut().for_each(|w| w.push(why));
        } else {
            for site in &heard.sites {
                let everyone = &self.everyone;
                self.sites.entry(site.clone()).or_insert_with(|| everyone.clone()).push(why);
            }
        }
    }

    /// What pages of `site` (none: the extension's pages) heard of.
    fn of(&self, site: Option<&str>) -> &Window {
        match site {
            None => &self.all,
            Some(site) => self.sites.get(site).unwrap_or(&self.everyone),
        }
    }
}

/// Who hears of a change through `sync_watch`: the extension's pages hear of every change; a
/// site's pages of changes to shares (the browser's) and to the collections its pages made, not
/// of another site's collections or of documents only the extension's pages see.
#[derive(Debug, Clone, Default)]
struct Heard {
    everyone: bool,
    sites: std::collections::BTreeSet<String>,
}

impl Heard {
    fn everyone() -> Heard {
        Heard { everyone: true, ..Heard::default() }
    }

    /// Whether pages of `site` (none: the extension's pages) hear of it.
    fn by(&self, site: Option<&str>) -> bool {
        site.is_none_or(|site| self.everyone || self.sites.contains(site))
    }
}

/// One audience's latest changes ([`FEED_KEPT`] at most) and how many it heard of before them.
#[derive(Default, Clone)]
struct Window {
    before: u64,
    recent: std::collections::VecDeque<&'static str>,
}

impl Window {
    fn push(&mut self, why: &'static str) {
        self.recent.push_back(why);
        if self.recent.len() > FEED_KEPT {
            self.recent.pop_front();
            self.before += 1;
        }
    }

    /// How many changes this audience heard of.
    fn heard(&self) -> u64 {
        self.before + self.recent.len() as u64
    }

    /// `{seq, changes: [{seq, reason}], missed}`: those after `since`.
    fn since(&self, since: u64) -> Value {
        let changes: Vec<Value> = (self.before + 1..)
            .zip(&self.recent)
            .filter(|(seq, _)| *seq > since)
            .map(|(seq, why)| json!({ "seq": seq, "reason": why }))
            .collect();
        json!({ "seq": self.heard(), "changes": changes, "missed": self.before > since })
    }
}

/// Changes kept for pages that ask what happened since their last look.
const FEED_KEPT: usize = 64;
/// Requests waiting at once, over all pages (each tab that listens holds one). Well above the
/// 256 one page's route to the node lets through, so that a page holding that many leaves room
/// for the others.
const MAX_WATCHERS: usize = 4096;
/// Requests waiting at once from the pages of one origin (as many as four pages' routes let
/// through): its many frames cannot take every place, now that other sites' changes do not
/// wake its requests.
const MAX_WATCHERS_PER_SITE: usize = 1024;
/// How long `sync_watch` waits before answering "nothing new" (the page asks again); under
/// the content script's 30 s bound on any request.
const WATCH_FOR: std::time::Duration = std::time::Duration::from_secs(20);

impl SyncNode {
    /// Load the library saved in `store`.
    pub(crate) async fn load(
        me: &str,
        key: &libp2p::identity::Keypair,
        store: Rc<Store>,
        control: libp2p_stream::Control,
        exchange: Rc<crate::exchange::Exchange>,
        loading: Loading,
    ) -> Rc<SyncNode> {
        let seed: [u8; 32] = key
            .clone()
            .try_into_ed25519()
            .ok()
            .and_then(|k| k.secret().as_ref().try_into().ok())
            .unwrap_or_else(|| {
                tracing::warn!("the identity key is not Ed25519: announcements cannot be read");
                crate::store::random_bytes::<32>().unwrap_or([0; 32])
            });
        let mut lib = Library::new(me);
        if let Some(id) = loading.crash_on {
            lib.crash_on(id);
            if let Ok(Some(c)) = store.json_setting::<CrashLoading>(CRASH_LOADING_KEY).await {
                if store.save_bytes(&[], &[CRASH_LOADING_KEY.to_owned()]).await.is_ok() {
                    lib.crash_loading(&c.id, c.how);
                }
            }
        }
        let mut set_aside: BTreeMap<String, SetAside> =
            store.json_setting(SET_ASIDE_KEY).await.ok().flatten().unwrap_or_default();
        // Those the user asked for again are loaded now; one that makes this node crash again
        // is set aside again, by the start after.
        let before = set_aside.len();
        set_aside.retain(|_, d| !d.open_at_next_start);
        let mut changed = set_aside.len() != before;
        if let Some((id, message)) = loading.set_aside {
            tracing::warn!("setting sync document {id} aside: loading it made this node crash");
            let reason = format!("loading it made Disot Peer stop with an error: {message}");
            set_aside.insert(
                id,
                SetAside { why: CutOff { at: now_ms(), reason }, open_at_next_start: false },
            );
            changed = true;
        }
        if changed {
            if let Err(e) = store.set_json_setting(SET_ASIDE_KEY, &set_aside).await {
                tracing::warn!("keeping the documents set aside: {e}");
            }
        }
        for id in set_aside.keys() {
            lib.set_aside(id);
        }
        let mut saved = store.saved_bytes(core_sync::DOC_KEY).await.unwrap_or_default();
        saved.extend(store.saved_bytes(core_sync::STATE_KEY).await.unwrap_or_default());
        for problem in lib.load(saved) {
            tracing::warn!("loading sync documents: {problem}");
        }
        let policy = store.json_setting::<Policy>(POLICY_KEY).await.ok().flatten();
        let preauth = store.json_setting(PREAUTH_KEY).await.ok().flatten().unwrap_or_default();
        let origins = store.json_setting(ORIGINS_KEY).await.ok().flatten().unwrap_or_default();
        let overrides = store.json_setting(OVERRIDES_KEY).await.ok().flatten().unwrap_or_default();
        let cut_off: BTreeMap<PeerId, CutOff> =
            store.json_setting(CUT_OFF_KEY).await.ok().flatten().unwrap_or_default();
        for (peer, why) in &cut_off {
            exchange.cut_off(*peer, why.reason.clone());
        }
        Rc::new(SyncNode {
            me: me.to_owned(),
            lib: RefCell::new(lib),
            store,
            control: RefCell::new(control),
            exchange,
            policy: Cell::new(policy.unwrap_or_default()),
            overrides: RefCell::new(overrides),
            trust: RefCell::default(),
            trust_epoch: Cell::new(0),
            running: RefCell::new(HashMap::new()),
            last: RefCell::new(HashMap::new()),
            fetching: RefCell::new(Default::default()),
            connected: RefCell::new(HashMap::new()),
            dialled: RefCell::new(HashMap::new()),
            looked_ms: Cell::new(0),
            feed: RefCell::default(),
            unheard: RefCell::default(),
            saving: futures::lock::Mutex::new(()),
            announcer: RefCell::new(disot_core::announce::Announcer::new(me, &seed)),
            announce: Cell::new(false),
            gossip: RefCell::default(),
            news: RefCell::default(),
            inbound: InboundLimit::new(INBOUND_PER_PEER, MAX_INBOUND),
            after_inbound: RefCell::default(),
            direct_seen: RefCell::default(),
            preauth: RefCell::new(preauth),
            origins: RefCell::new(origins),
            trust_taken: RefCell::default(),
            on_trust: RefCell::default(),
            cut_off: RefCell::new(cut_off),
            set_aside: RefCell::new(set_aside),
        })
    }

    /// `sync_document_retry {id}`: load a document set aside again, from the node's next start
    /// (it stays set aside until then).
    pub(crate) async fn retry_document(&self, params: Value) -> Result<Value, ApiError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct P {
            id: String,
        }
        let P { id } = serde_json::from_value(params)
            .map_err(|e| invalid(format!("sync_document_retry takes {{id}}: {e}")))?;
        let all = {
            let mut all = self.set_aside.borrow_mut();
            let entry = all.get_mut(&id).ok_or_else(|| {
                ApiError::new(ErrorCode::NotFound, "that document is not set aside")
            })?;
            entry.open_at_next_start = true;
            all.clone()
        };
        self.store.set_json_setting(SET_ASIDE_KEY, &all).await.map_err(internal)?;
        Ok(json!({ "id": id, "loadedAtNextStart": true }))
    }

    /// Whether nothing is taken from `peer` (see [`SyncNode::cut_off`]).
    pub(crate) fn is_cut_off(&self, peer: &PeerId) -> bool {
        self.cut_off.borrow().contains_key(peer)
    }

    /// A message of `who` (a DID, or a peer id) made this node crash (`reason`: the panic's
    /// message): take nothing more from it, by sync or by Bitswap, until the user allows it
    /// again. Kept across restarts.
    pub(crate) async fn cut_off(&self, who: &str, reason: &str) {
        let Some(peer) = peer_of(who) else {
            tracing::warn!("the node crashed on a message of {who:.80}, which names no peer");
            return;
        };
        tracing::warn!("cutting off {peer}: a message of it made this node crash ({reason})");
        let reason = format!("a message of this peer made Disot Peer stop with an error: {reason}");
        self.exchange.cut_off(peer, reason.clone());
        let all = {
            let mut all = self.cut_off.borrow_mut();
            while all.len() >= MAX_CUT_OFF {
                let oldest = all.iter().min_by_key(|(_, c)| c.at).map(|(p, _)| *p);
                oldest.map(|d| all.remove(&d));
            }
            all.insert(peer, CutOff { at: now_ms(), reason });
            all.clone()
        };
        if let Err(e) = self.store.set_json_setting(CUT_OFF_KEY, &all).await {
            tracing::warn!("keeping the peers cut off: {e}");
        }
    }

    /// `sync_peer_allow {peerId}`: take from a peer that was cut off again. Returns it, and
    /// the answer.
    pub(crate) async fn allow(self: &Rc<Self>, params: Value) -> Result<(PeerId, Value), ApiError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        struct P {
            peer_id: PeerId,
        }
        let P { peer_id: peer } = serde_json::from_value(params)
            .map_err(|e| invalid(format!("sync_peer_allow takes {{peerId}}: {e}")))?;
        let all = {
            let mut all = self.cut_off.borrow_mut();
            if all.remove(&peer).is_none() {
                return Err(ApiError::new(ErrorCode::NotFound, "that peer is not cut off"));
            }
            all.clone()
        };
        self.store.set_json_setting(CUT_OFF_KEY, &all).await.map_err(internal)?;
        self.exchange.allow(&peer);
        // Connected now: a session brings what it has for us.
        let did = self.connected.borrow().get(&peer).cloned();
        if let Some(did) = did {
            self.start_session(peer, did, true);
        }
        Ok((peer, json!({ "peerId": peer.to_string(), "allowed": true })))
    }

    /// Who takes the trust documents peers publish, when they change.
    pub(crate) fn on_trust(&self, handler: Rc<TrustHandler>) {
        *self.on_trust.borrow_mut() = Some(handler);
    }

    /// The user changed whom this peer trusts: every peer's trust document is taken again
    /// after the next session (what was refused from a peer not trusted then may count now).
    pub(crate) fn retake_trust(&self) {
        self.trust_taken.borrow_mut().clear();
    }

    /// Taking the trust document of `did` failed: it is taken again after the next session.
    pub(crate) fn trust_not_taken(&self, did: &str) {
        self.trust_taken.borrow_mut().remove(did);
    }

    /// Publish our trust assertions (see `trustnet::published`); if that changed our trust
    /// document, it is saved and the connected peers hear of it.
    pub(crate) async fn publish_trust(
        self: &Rc<Self>,
        readers: &std::collections::BTreeSet<String>,
        credentials: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let changed = self.lib.borrow_mut().publish_trust(readers, credentials).map_err(api_err)?;
        if changed {
            self.persist().await?;
            self.sync_all();
        }
        Ok(())
    }

    /// `did`'s trust document, if it changed since it was last handed out to be taken (two
    /// sessions ending close together hand it out once).
    fn trust_news(&self, did: &str) -> Option<Vec<String>> {
        let (version, credentials) = self.lib.borrow_mut().trust_of(did)?;
        let mut taken = self.trust_taken.borrow_mut();
        if taken.get(did) == Some(&version) {
            return None;
        }
        taken.insert(did.to_owned(), version);
        Some(credentials)
    }

    /// Write what changed to IndexedDB, in one transaction. Returns how many documents (whose
    /// sites hear of the next change told).
    ///
    /// One at a time: a later call returns only once what earlier ones took is saved (or
    /// failed), so that the change told after it is told to every site it concerns. (What
    /// failed to be saved has changed in memory all the same: its sites hear of it too.)
    async fn persist(&self) -> Result<usize, ApiError> {
        let _one = self.saving.lock().await;
        let writes = self.lib.borrow_mut().take_writes();
        let saved = self.store.save_bytes(&writes.put, &writes.delete).await;
        self.unheard.borrow_mut().extend(writes.docs.iter().cloned());
        if let Err(e) = saved {
            self.lib.borrow_mut().writes_failed(writes);
            return Err(internal(e));
        }
        Ok(writes.docs.len())
    }

    /// The level the user set for `did`, or else this peer's trust in it (for "content") as
    /// a sync level.
    async fn level_for(&self, did: &str) -> Level {
        if let Some(level) = self.overrides.borrow().get(did) {
            return *level;
        }
        if self.trust.borrow().is_none() {
            let epoch = self.trust_epoch.get();
            let mut graph = disot_core::trust::TrustGraph::new();
            for list in [self.store.trust_credentials().await, self.store.received_trust().await] {
                for c in list.unwrap_or_default() {
                    if let Ok(a) = disot_core::trust::read_form(&c) {
                        graph.insert(a);
                    }
                }
            }
            if self.trust_epoch.get() == epoch {
                *self.trust.borrow_mut() = Some(graph);
            } else {
                let score = graph.score(&self.me, did, "content", now_ms());
                return self.policy.get().level(score.map(|s| s.score));
            }
        }
        let score =
            self.trust.borrow().as_ref().and_then(|g| g.score(&self.me, did, "content", now_ms()));
        self.policy.get().level(score.map(|s| s.score))
    }

    /// The verified peers connected now, with their DIDs.
    fn connected_peers(&self) -> Vec<(PeerId, String)> {
        self.connected.borrow().iter().map(|(p, d)| (*p, d.clone())).collect()
    }

    /// Answer the sessions peers open with us.
    pub(crate) fn accept(self: &Rc<Self>) -> Result<(), String> {
        let mut incoming = self.control.borrow_mut().accept(PROTOCOL).map_err(|e| e.to_string())?;
        let this = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            use futures::StreamExt as _;
            while let Some((peer, stream)) = incoming.next().await {
                // Over the limit: dropped, and the peer tries again later.
                let Ok(admitted) = this.inbound.admit(&peer) else { continue };
                let Some(did) = disot_core::identity::did_of_peer(&peer) else { continue };
                if this.is_cut_off(&peer) {
                    continue; // (its stream is dropped: reset)
                }
                let this = this.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    this.run_session(peer, did.clone(), stream, false).await;
                    drop(admitted);
                    // What changed here while the peer's session ran goes in a session of ours.
                    if this.inbound.open_from(&peer) == 0
                        && this.after_inbound.borrow_mut().remove(&peer)
                    {
                        this.sync_with(peer, did);
                    }
                });
            }
        });
        Ok(())
    }

    async fn run_session(
        self: &Rc<Self>,
        peer: PeerId,
        did: String,
        stream: libp2p::Stream,
        initiator: bool,
    ) {
        let started = now_ms();
        let level = self.level_for(&did).await;
        let trust_ms = now_ms() - started;
        let mut refusals = Vec::new();
        let mut saved = 0;
        let mut saving_ms = 0;
        // Counted on the stream, so a session that fails halfway counts too.
        let (sent, received) = (Cell::new(0u64), Cell::new(0u64));
        let mut stream = Counted { inner: stream, sent: &sent, received: &received };
        let result = {
            use futures::future::{select, Either};
            let session =
                disot_core::sync::session(&mut stream, &self.lib, &did, level, initiator, |r| {
                    refusals.push(r)
                });
            futures::pin_mut!(session);
            let deadline = futures_timer::Delay::new(SESSION_TIMEOUT);
            futures::pin_mut!(deadline);
            // What arrives is saved as the session goes, so a peer killed in the middle of a
            // long one keeps what it had received, and the next session sends only the rest.
            loop {
                let save = futures_timer::Delay::new(SAVE_DURING_SESSION);
                match select(session.as_mut(), select(deadline.as_mut(), save)).await {
                    Either::Left((r, _)) => break r,
                    Either::Right((Either::Left(_), _)) => {
                        break Err(core_sync::Error::Io("the session timed out".into()))
                    }
                    Either::Right((Either::Right(_), _)) => {
                        let t = now_ms();
                        match self.persist().await {
                            Ok(n) => saved += n,
                            Err(e) => tracing::warn!("saving sync documents: {}", e.message),
                        }
                        saving_ms += now_ms() - t;
                    }
                }
            }
        };
        // Closed in the background: the session is over, and what it changed is saved and
        // told now, not after the close handshake.
        let Counted { inner: mut stream, .. } = stream;
        wasm_bindgen_futures::spawn_local(async move {
            let t = now_ms();
            let _ = futures::AsyncWriteExt::close(&mut stream).await;
            let took = now_ms() - t;
            if took > 1000 {
                tracing::info!("closing the sync stream with {peer} took {took} ms");
            }
        });
        for r in &refusals {
            tracing::info!("sync with {peer}: {r}");
        }
        let t = now_ms();
        match self.persist().await {
            Ok(n) => saved += n,
            Err(e) => tracing::warn!("saving sync documents: {}", e.message),
        }
        saving_ms += now_ms() - t;
        tracing::info!(
            "sync session with {peer} ({}): {} bytes sent, {} received, in {} ms (trust {trust_ms} ms, saving {saving_ms} ms), {}",
            if initiator { "ours" } else { "theirs" },
            sent.get(),
            received.get(),
            now_ms() - started,
            match &result {
                Ok(s) => format!("ended well, {} document(s) changed here", s.changed),
                Err(e) => format!("failed: {e}"),
            }
        );
        let (stats, error) = match result {
            Ok(s) => (Some(s), refusals.first().cloned()),
            Err(e) => {
                tracing::info!("sync with {peer}: {e}");
                (None, Some(e.to_string()))
            }
        };
        {
            let mut last = self.last.borrow_mut();
            let before = last.get(&did);
            let sessions = before.map_or(0, |l| l.sessions) + 1;
            let bytes_sent_total = before.map_or(0, |l| l.bytes_sent_total) + sent.get();
            let bytes_received_total =
                before.map_or(0, |l| l.bytes_received_total) + received.get();
            last.insert(
                did.clone(),
                PeerSync {
                    did: did.clone(),
                    at_ms: now_ms(),
                    level,
                    stats,
                    error,
                    sessions,
                    bytes_sent_total,
                    bytes_received_total,
                },
            );
            // Any peer may open a session: the longest quiet are forgotten past the bound.
            if last.len() > MAX_PEERS_KEPT {
                let oldest = last.values().min_by_key(|l| l.at_ms).map(|l| l.did.clone());
                last.remove(&oldest.unwrap_or_default());
            }
        }
        // Documents saved by the session are what the peer changed (local changes are saved
        // when they are made), whether or not the session ended well.
        // (Pages hear of it if it concerns them: see `persist`.)
        if saved > 0 || stats.is_some_and(|s| s.changed > 0) {
            self.changed("synced", Heard::default());
        }
        if level == Level::Full {
            self.fetch_shared(&did);
        }
        // Only `did` writes its trust document: what it says now is taken after a session
        // with it (and once after each start).
        if let Some(credentials) = self.trust_news(&did) {
            let handler = self.on_trust.borrow().clone();
            if let Some(handler) = handler {
                handler(peer, did, credentials);
            }
        }
    }

    /// A verified peer is connected: sync with it now.
    /// `relayed_only`: the peer is reached through the relay for now, and a direct connection
    /// is likely on its way; the first session waits for it up to [`RELAYED_GRACE`] (a session
    /// on the relayed connection would die with it, and send its bytes again).
    pub(crate) fn peer_verified(self: &Rc<Self>, peer: PeerId, did: String, relayed_only: bool) {
        self.news.borrow_mut().remove(&did);
        self.connected.borrow_mut().insert(peer, did.clone());
        if !relayed_only {
            return self.connect_sync(peer, did);
        }
        let this = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            futures_timer::Delay::new(RELAYED_GRACE).await;
            let still = this.connected.borrow().get(&peer) == Some(&did);
            if still && !this.direct_seen.borrow_mut().remove(&peer) {
                this.connect_sync(peer, did);
            }
        });
    }

    /// A direct connection to `peer` replaced its relayed one: sync over it now.
    pub(crate) fn direct_up(self: &Rc<Self>, peer: PeerId) {
        let Some(did) = self.connected.borrow().get(&peer).cloned() else { return };
        self.direct_seen.borrow_mut().insert(peer);
        self.connect_sync(peer, did);
    }

    /// The session on (re)connecting. Both sides would start one at the same moment, and each
    /// would carry the same changes: the side with the smaller DID starts it; the other does
    /// only if none ran after [`CONNECT_DEFER`] (the first side may hold nothing with us yet).
    fn connect_sync(self: &Rc<Self>, peer: PeerId, did: String) {
        if self.me < did {
            return self.sync_with(peer, did);
        }
        fn sessions(this: &SyncNode, did: &str) -> u64 {
            this.last.borrow().get(did).map_or(0, |l| l.sessions)
        }
        let before = sessions(self, &did);
        let this = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            futures_timer::Delay::new(CONNECT_DEFER).await;
            let still = this.connected.borrow().get(&peer) == Some(&did);
            let quiet = sessions(&this, &did) == before;
            if still && quiet && this.inbound.open_from(&peer) == 0 {
                this.sync_with(peer, did);
            }
        });
    }

    /// Peers we share documents with and are not connected to, to be dialled through the
    /// relay (each at most every [`REDIAL_MS`]): this is how what changed offline reaches a
    /// peer that comes back.
    pub(crate) fn peers_to_reach(&self, now: u64) -> Vec<PeerId> {
        if now.saturating_sub(self.looked_ms.get()) < LOOK_EVERY_MS {
            return Vec::new();
        }
        self.looked_ms.set(now);
        let mut dids = self.lib.borrow().content_peers();
        self.news.borrow_mut().retain(|_, at| now.saturating_sub(*at) < NEWS_FOR_MS);
        dids.extend(self.news.borrow().keys().cloned());
        dids.remove(&self.me);
        let connected: std::collections::BTreeSet<String> =
            self.connected.borrow().values().cloned().collect();
        let mut dialled = self.dialled.borrow_mut();
        let due: Vec<String> = dids
            .into_iter()
            .filter(|d| !connected.contains(d))
            .filter(|d| dialled.get(d).is_none_or(|t| now.saturating_sub(*t) >= REDIAL_MS))
            .take(16)
            .collect();
        due.into_iter()
            .filter_map(|d| {
                let key = disot_core::identity::public_key_from_did(&d).ok()?;
                dialled.insert(d, now);
                Some(PeerId::from_public_key(&key))
            })
            .collect()
    }

    pub(crate) fn peer_gone(&self, peer: &PeerId) {
        self.direct_seen.borrow_mut().remove(peer);
        self.connected.borrow_mut().remove(peer);
    }

    /// Run a session with `peer` (one at a time per peer; a request during one runs another
    /// after it).
    pub(crate) fn sync_with(self: &Rc<Self>, peer: PeerId, did: String) {
        self.start_session(peer, did, false)
    }

    /// `force`: even holding no document with the peer (what we take from it changed: the
    /// peer, which does not know, would not start one).
    fn start_session(self: &Rc<Self>, peer: PeerId, did: String, force: bool) {
        // The side that holds documents with a peer starts the session; with none, the peer
        // (if it holds some with us) will.
        if (!force && self.lib.borrow_mut().docs_with(&did).is_empty()) || self.is_cut_off(&peer) {
            return;
        }
        // The peer's own session is running: ours follows it (two at once would each carry
        // the same changes).
        if self.inbound.open_from(&peer) > 0 {
            tracing::info!("sync with {peer}: after its own session");
            self.after_inbound.borrow_mut().insert(peer);
            return;
        }
        {
            let mut running = self.running.borrow_mut();
            if let Some(again) = running.get_mut(&peer) {
                tracing::info!("sync with {peer}: again after the running session");
                *again = true;
                return;
            }
            running.insert(peer, false);
        }
        let this = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let mut delay_ms = 500;
            loop {
                // A clone, so that no borrow is held across the wait (other tasks use it).
                let mut control = this.control.borrow().clone();
                let opened = control.open_stream(peer, PROTOCOL).await;
                let ok = match opened {
                    Ok(stream) => {
                        this.run_session(peer, did.clone(), stream, true).await;
                        this.last
                            .borrow()
                            .get(&did)
                            .is_some_and(|l| l.error.is_none() || l.stats.is_some())
                    }
                    Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_)) => true,
                    Err(e) => {
                        tracing::info!("sync with {peer}: {e}");
                        false
                    }
                };
                let again = {
                    let mut running = this.running.borrow_mut();
                    let again = running.get(&peer).copied().unwrap_or(false);
                    let still = this.connected.borrow().contains_key(&peer);
                    if (ok && !again) || !still || delay_ms > 16_000 {
                        running.remove(&peer);
                        None
                    } else {
                        running.insert(peer, false);
                        Some(ok)
                    }
                };
                match again {
                    None => break,
                    Some(true) => {}
                    Some(false) => {
                        // The stream failed (a relayed connection closing for the direct one):
                        // try again shortly.
                        futures_timer::Delay::new(std::time::Duration::from_millis(delay_ms)).await;
                        delay_ms *= 2;
                    }
                }
            }
        });
    }

    /// What this peer takes from others changed (trust, policy, a peer's own level): trust is
    /// read again, and a session runs with every connected peer, so what they hold for us and
    /// we now take arrives.
    pub(crate) fn levels_changed(self: &Rc<Self>) {
        self.trust.borrow_mut().take();
        self.trust_epoch.set(self.trust_epoch.get() + 1);
        for (peer, did) in self.connected_peers() {
            self.start_session(peer, did, true);
        }
    }

    /// Something changed here: every connected peer that takes part hears of it.
    pub(crate) fn sync_all(self: &Rc<Self>) {
        for (peer, did) in self.connected_peers() {
            self.sync_with(peer, did);
        }
    }

    /// Tell waiting pages of a change: those that hear of it (`heard`, and the sites of the
    /// documents saved since the last change told; see [`Heard`]).
    fn changed(&self, why: &'static str, mut heard: Heard) {
        if matches!(why, "shared" | "revoked" | "collection") {
            self.announce.set(true);
        }
        {
            let origins = self.origins.borrow();
            for id in std::mem::take(&mut *self.unheard.borrow_mut()) {
                if disot_core::sync::is_shares_id(&id) {
                    heard.everyone = true;
                } else if let Some(site) = origins.get(&id) {
                    heard.sites.insert(site.clone());
                }
            }
        }
        let mut feed = self.feed.borrow_mut();
        feed.note(why, &heard);
        for (site, w) in std::mem::take(&mut feed.waiters) {
            if heard.by(site.as_deref()) {
                let _ = w.send(());
            } else if !w.is_canceled() {
                feed.waiters.push((site, w));
            }
        }
    }

    /// `sync_watch {since?}` from pages of `site` (none: the extension's pages): the changes
    /// they hear of after `since`, waiting up to [`WATCH_FOR`] for one if there is none yet.
    /// Without `since` it answers at once with the current position. `{seq, changes: [{seq,
    /// reason}], missed}`: `missed` when more changed than is kept. Each audience numbers and
    /// keeps what it hears of on its own (see [`Feed`]), so a site's pages learn nothing of
    /// changes they do not hear of: not when, nor how many.
    pub(crate) async fn watch(&self, params: Value, site: Option<&str>) -> Result<Value, ApiError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct P {
            #[serde(default)]
            since: Option<u64>,
        }
        let P { since } = if params.is_null() {
            P { since: None }
        } else {
            serde_json::from_value(params)
                .map_err(|e| invalid(format!("sync_watch takes {{since?}}: {e}")))?
        };
        let Some(since) = since else {
            return Ok(
                json!({ "seq": self.feed.borrow().of(site).heard(), "changes": [], "missed": false }),
            );
        };
        let wait = {
            let mut feed = self.feed.borrow_mut();
            let heard = feed.of(site).heard();
            if since > heard {
                return Err(invalid(format!("since: {since} is ahead of this peer ({heard})")));
            }
            if heard > since {
                return Ok(feed.of(site).since(since));
            }
            feed.waiters.retain(|(_, w)| !w.is_canceled());
            if feed.waiters.len() >= MAX_WATCHERS {
                return Err(ApiError::new(
                    ErrorCode::LimitExceeded,
                    format!("more than {MAX_WATCHERS} pages are waiting for changes"),
                ));
            }
            let of_site = feed.waiters.iter().filter(|(s, _)| s.as_deref() == site).count();
            if site.is_some() && of_site >= MAX_WATCHERS_PER_SITE {
                return Err(ApiError::new(
                    ErrorCode::LimitExceeded,
                    format!("more than {MAX_WATCHERS_PER_SITE} pages of this site are waiting for changes"),
                ));
            }
            let (tx, rx) = futures::channel::oneshot::channel();
            feed.waiters.push((site.map(str::to_owned), tx));
            rx
        };
        let _ = futures::future::select(wait, futures_timer::Delay::new(WATCH_FOR)).await;
        Ok(self.feed.borrow().of(site).since(since))
    }

    /// Fetch and pin what `from` shared with us and we do not hold (the policy said "full").
    fn fetch_shared(self: &Rc<Self>, from: &str) {
        let wanted: Vec<String> = self
            .lib
            .borrow_mut()
            .shares_to_me()
            .into_iter()
            .filter(|s| s.from == from && !s.revoked)
            .filter_map(|s| s.cid)
            .collect();
        for cid in wanted {
            if !self.fetching.borrow_mut().insert(cid.clone()) {
                continue;
            }
            let this = self.clone();
            wasm_bindgen_futures::spawn_local(async move {
                // A fetch that fails (the connection it used closing, the sender's access
                // not yet read again) is tried again a few times: no later session may come to
                // ask for it.
                if let Ok(root) = cid.parse::<cid::Cid>() {
                    let fetched = crate::retry::with_backoff(
                        &format!("fetching shared {cid}"),
                        1_000,
                        16_000,
                        |_| true,
                        || async {
                            if this.store.object(&cid).await.ok().flatten().is_some() {
                                return Ok(false);
                            }
                            this.exchange
                                .fetch_object(root, SHARES_ORIGIN, true)
                                .await
                                .map(|_| true)
                        },
                    )
                    .await;
                    match fetched {
                        Ok(true) => this.changed("fetched", Heard::everyone()),
                        Ok(false) => {}
                        Err(e) => tracing::warn!("fetching shared {cid}: {e}; giving up"),
                    }
                }
                this.fetching.borrow_mut().remove(&cid);
            });
        }
    }

    fn share_json(&self, s: &Share, held: bool) -> Value {
        let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
        v["held"] = json!(held);
        v
    }

    /// `shares_list`: what was shared with us (each with whether its content is here) and
    /// what we shared. Shares are the browser's, but a page of `origin` sees a collection's
    /// only if its site made that collection (the others are not there for it).
    pub(crate) async fn shares_list(&self, origin: Option<&str>) -> Result<Value, ApiError> {
        let (with_me, by_me) = {
            let mut lib = self.lib.borrow_mut();
            (lib.shares_to_me(), lib.shares_by_me())
        };
        let seen = |s: &Share| match (origin, &s.collection) {
            (Some(origin), Some(id)) => self.made_by(id, origin),
            _ => true,
        };
        let mut mine = Vec::new();
        for s in with_me.iter().filter(|s| seen(s)) {
            let held = match &s.cid {
                Some(cid) => self.store.object(cid).await.ok().flatten().is_some(),
                None => self
                    .lib
                    .borrow()
                    .collection_info(s.collection.as_deref().unwrap_or(""))
                    .is_some(),
            };
            mine.push(self.share_json(s, held));
        }
        let by: Vec<Value> =
            by_me.iter().filter(|s| seen(s)).map(|s| self.share_json(s, true)).collect();
        Ok(json!({ "sharedWithMe": mine, "sharedByMe": by }))
    }

    /// Share `params` (`{cid | collection, to, note?}`), already approved by the user, for a
    /// page's `origin` (the share names an object as that origin does) or for the user.
    pub(crate) async fn share(
        self: &Rc<Self>,
        params: &ShareParams,
        origin: Option<&str>,
    ) -> Result<Value, ApiError> {
        let mut made = Vec::new();
        for to in params.recipients()? {
            let mut share = Share {
                id: random_id()?,
                from: self.me.clone(),
                to: to.clone(),
                cid: None,
                sha256: None,
                size: None,
                name: None,
                mime: None,
                collection: params.collection.clone(),
                note: params.note.clone().unwrap_or_default(),
                created_ms: now_ms(),
                revoked: false,
            };
            if let Some(cid) = &params.cid {
                // The record is changed as stored when it is written, in one transaction.
                let mut added = false;
                let record = self
                    .store
                    .update_object(cid, |stored| {
                        let mut record = stored?;
                        added = !record.shared_with.contains(&to);
                        if added {
                            record.shared_with.push(to.clone());
                        }
                        Some(record)
                    })
                    .await
                    .map_err(internal)?
                    .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such object here"))?;
                share.cid = Some(record.cid.clone());
                share.sha256 = Some(record.sha256.clone());
                share.size = Some(record.size);
                // (The user, in the popup, shares it under any name it has.)
                let any = |f: fn(&disot_core::store::Label) -> Option<String>| {
                    record.labels.values().find_map(f)
                };
                (share.name, share.mime) = match origin {
                    Some(origin) => {
                        let label = record.label_for(origin);
                        (label.name, label.mime)
                    }
                    None => (
                        record.name.clone().or_else(|| any(|l| l.name.clone())),
                        record.mime.clone().or_else(|| any(|l| l.mime.clone())),
                    ),
                };
                if added {
                    self.exchange.access_changed();
                }
            }
            let share = self.lib.borrow_mut().share(share).map_err(api_err)?;
            made.push(share);
        }
        self.persist().await?;
        self.changed("shared", Heard::default());
        self.sync_all();
        serde_json::to_value(made).map_err(internal)
    }

    /// Revoke a share we made: the recipient is no longer served its content.
    pub(crate) async fn revoke(self: &Rc<Self>, to: &str, id: &str) -> Result<Value, ApiError> {
        let share = self.lib.borrow_mut().revoke_share(to, id).map_err(api_err)?;
        if let Some(cid) = &share.cid {
            let still = self
                .lib
                .borrow_mut()
                .shares_by_me()
                .iter()
                .any(|s| s.to == to && !s.revoked && s.cid.as_deref() == Some(cid.as_str()));
            if !still {
                // Changed as stored when it is written: a put or pin made meanwhile stands.
                let revoked = self
                    .store
                    .update_object(cid, |stored| {
                        let mut record = stored?;
                        record.shared_with.retain(|d| d != to);
                        Some(record)
                    })
                    .await
                    .map_err(internal)?;
                if revoked.is_some() {
                    self.exchange.access_changed();
                }
            }
        }
        self.persist().await?;
        self.changed("revoked", Heard::default());
        self.sync_all();
        serde_json::to_value(share).map_err(internal)
    }

    /// `shares_list`, `sync_watch` and the collection methods.
    pub(crate) async fn collections_or_list(
        self: &Rc<Self>,
        method: &str,
        params: Value,
        origin: Option<&str>,
    ) -> Result<Value, ApiError> {
        match method {
            "shares_list" => return self.shares_list(origin).await,
            "sync_watch" => return self.watch(params, origin).await,
            _ => {}
        }
        self.collections(method, params, origin).await
    }

    /// Whether page origin `origin` made collection `id`.
    pub(crate) fn made_by(&self, id: &str, origin: &str) -> bool {
        self.origins.borrow().get(id).is_some_and(|o| o == origin)
    }

    /// The collection methods (`collection_*`, `collections_list`), for the extension's pages
    /// (`origin` none) and for a page of `origin`, which sees only what pages of its site made.
    pub(crate) async fn collections(
        self: &Rc<Self>,
        method: &str,
        params: Value,
        origin: Option<&str>,
    ) -> Result<Value, ApiError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        struct P {
            #[serde(default)]
            id: Option<String>,
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            cid: Option<String>,
            #[serde(default)]
            mime: Option<String>,
            #[serde(default)]
            size: Option<u64>,
            #[serde(default)]
            did: Option<String>,
            #[serde(default)]
            role: Option<Role>,
            #[serde(default)]
            entries: Option<Vec<Added>>,
            #[serde(default)]
            offset: Option<usize>,
            #[serde(default)]
            limit: Option<usize>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Added {
            cid: String,
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            mime: Option<String>,
            #[serde(default)]
            size: Option<u64>,
        }
        let p: P = if params.is_null() {
            serde_json::from_value(json!({})).map_err(invalid)?
        } else {
            serde_json::from_value(params).map_err(|e| invalid(format!("{method}: {e}")))?
        };
        let need = |v: &Option<String>, what: &str| {
            v.clone().ok_or_else(|| invalid(format!("{method}: {what} is required")))
        };
        // Another site's collection, or one a peer shared, is not there for a page (and it
        // learns nothing of whether it exists).
        if let (Some(origin), Some(id)) = (origin, &p.id) {
            if method.starts_with("collection_") && !self.made_by(id, origin) {
                return Err(ApiError::new(ErrorCode::NotFound, "no such collection"));
            }
        }
        let mut made = None;
        let mut changed = true;
        let result = {
            let mut lib = self.lib.borrow_mut();
            match method {
                "collections_list" => {
                    changed = false;
                    let mut all = lib.collections();
                    if let Some(origin) = origin {
                        all.retain(|c| self.made_by(&c.id, origin));
                    }
                    serde_json::to_value(all).map_err(internal)?
                }
                "collection_get" => {
                    changed = false;
                    let id = need(&p.id, "id")?;
                    let page = lib.collection_page(
                        &id,
                        p.offset.unwrap_or(0),
                        p.limit.unwrap_or(usize::MAX),
                    );
                    serde_json::to_value(
                        page.ok_or_else(|| {
                            ApiError::new(ErrorCode::NotFound, "no such collection")
                        })?,
                    )
                    .map_err(internal)?
                }
                "collection_create" => {
                    let name = need(&p.name, "name")?;
                    if let Some(origin) = origin {
                        // (Counted among those held: a record whose collection was never
                        // saved counts for nothing.)
                        let origins = self.origins.borrow();
                        let held: Vec<&String> = origins
                            .iter()
                            .filter(|(id, _)| lib.holds(id))
                            .map(|(_, o)| o)
                            .collect();
                        let own = held.iter().filter(|o| **o == origin).count();
                        if own >= MAX_COLLECTIONS_PER_ORIGIN
                            || held.len() >= MAX_COLLECTIONS_OF_SITES
                        {
                            return Err(ApiError::new(
                                ErrorCode::LimitExceeded,
                                format!(
                                    "this site has made {own} collections, and sites {} in all: \
                                     the most are {MAX_COLLECTIONS_PER_ORIGIN} and {MAX_COLLECTIONS_OF_SITES}",
                                    held.len()
                                ),
                            ));
                        }
                    }
                    let id = lib.create_collection(random_bytes()?, &name).map_err(api_err)?;
                    made = origin.map(|o| (id.clone(), o.to_owned()));
                    json!({ "id": id })
                }
                "collection_add" => {
                    // One entry ({cid, name?, mime?, size?}) or many ({entries: [...]}),
                    // added as one change.
                    let id = need(&p.id, "id")?;
                    let added = match (p.entries, p.cid) {
                        (Some(list), None) if list.len() <= MAX_ADDED_AT_ONCE => list,
                        (Some(_), None) => {
                            return Err(ApiError::new(
                                ErrorCode::LimitExceeded,
                                format!("at most {MAX_ADDED_AT_ONCE} entries at once"),
                            ))
                        }
                        (None, Some(cid)) => {
                            vec![Added { cid, name: p.name, mime: p.mime, size: p.size }]
                        }
                        _ => return Err(invalid("collection_add takes cid or entries")),
                    };
                    let now = now_ms();
                    let entries = added
                        .into_iter()
                        .enumerate()
                        .map(|(i, a)| {
                            a.cid
                                .parse::<cid::Cid>()
                                .map_err(|_| invalid(format!("entries[{i}].cid: not a CID")))?;
                            Ok(Entry {
                                cid: a.cid,
                                name: a.name,
                                mime: a.mime,
                                size: a.size,
                                added_by: self.me.clone(),
                                added_ms: now,
                            })
                        })
                        .collect::<Result<Vec<Entry>, ApiError>>()?;
                    lib.collection_add_all(&id, &entries).map_err(api_err)?;
                    serde_json::to_value(lib.collection_info(&id)).map_err(internal)?
                }
                "collection_remove" => {
                    let id = need(&p.id, "id")?;
                    let removed =
                        lib.collection_remove(&id, &need(&p.cid, "cid")?).map_err(api_err)?;
                    json!({ "removed": removed })
                }
                "collection_rename" => {
                    let id = need(&p.id, "id")?;
                    lib.collection_rename(&id, &need(&p.name, "name")?).map_err(api_err)?;
                    serde_json::to_value(lib.collection_info(&id)).map_err(internal)?
                }
                "collection_member" => {
                    let id = need(&p.id, "id")?;
                    let did = need(&p.did, "did")?;
                    let role = p.role.unwrap_or(Role::Editor);
                    // (Taking a member out takes any text, as `collection_member` in pages.)
                    if role != Role::None {
                        disot_core::identity::public_key_from_did(&did).map_err(invalid)?;
                    }
                    lib.set_member(&id, &did, role, true).map_err(api_err)?;
                    serde_json::to_value(lib.collection_info(&id)).map_err(internal)?
                }
                other => {
                    return Err(ApiError::new(
                        ErrorCode::UnsupportedMethod,
                        format!("unknown method {other:.40}"),
                    ))
                }
            }
        };
        // Stored before the answer: a collection whose site is forgotten would be the
        // extension's pages' alone. (The collection is saved even if that fails.)
        let recorded = match made {
            Some((id, origin)) => self.record_origin(id, origin).await,
            None => Ok(()),
        };
        if changed {
            let t = now_ms();
            self.persist().await?;
            tracing::info!("{method}: saved in {} ms", now_ms() - t);
            self.changed("collection", Heard::default());
            self.sync_all();
        }
        recorded?;
        Ok(result)
    }

    /// Record that a page of `origin` made collection `id`: stored over what storage holds
    /// (read again, so that a record this node failed to read at start is not written over).
    async fn record_origin(&self, id: String, origin: String) -> Result<(), ApiError> {
        fn unsaved(e: impl std::fmt::Display) -> ApiError {
            internal(format!("the collection was made, but not saved as this site's: {e}"))
        }
        self.origins.borrow_mut().insert(id, origin);
        let mut all: BTreeMap<String, String> =
            self.store.json_setting(ORIGINS_KEY).await.map_err(unsaved)?.unwrap_or_default();
        all.extend(self.origins.borrow().clone());
        self.store.set_json_setting(ORIGINS_KEY, &all).await.map_err(unsaved)?;
        *self.origins.borrow_mut() = all;
        Ok(())
    }

    /// Collection `id`'s name, owner, members and size, if it is a collection held here.
    pub(crate) fn collection_info(&self, id: &str) -> Option<disot_core::sync::CollectionInfo> {
        self.lib.borrow().collection_info(id)
    }

    /// Whether `origin` may share with every one of `to` without asking the user.
    pub(crate) fn preauthorised(&self, origin: &str, to: &[String]) -> bool {
        self.preauth.borrow().get(origin).is_some_and(|dids| to.iter().all(|d| dids.contains(d)))
    }

    /// The user, approving a share, let `origin` share with `to` again without asking.
    pub(crate) async fn preauthorise(&self, origin: &str, to: &[String]) -> Result<(), ApiError> {
        let all = {
            let mut all = self.preauth.borrow_mut();
            let mut dids = all.get(origin).cloned().unwrap_or_default();
            dids.extend(to.iter().cloned());
            if dids.len() > MAX_PREAUTH {
                return Err(ApiError::new(
                    ErrorCode::LimitExceeded,
                    format!("at most {MAX_PREAUTH} peers may be shared with unasked"),
                ));
            }
            all.insert(origin.to_owned(), dids);
            all.clone()
        };
        self.store.set_json_setting(PREAUTH_KEY, &all).await.map_err(internal)
    }

    /// `share_preauth_list`: `[{origin, dids}]`.
    pub(crate) fn preauth_list(&self) -> Value {
        let all = self.preauth.borrow();
        Value::Array(all.iter().map(|(o, d)| json!({ "origin": o, "dids": d })).collect())
    }

    /// `share_preauth_remove {origin, did?}`: ask again before `origin` shares with `did`
    /// (or with anyone).
    pub(crate) async fn preauth_remove(
        &self,
        origin: &str,
        did: Option<&str>,
    ) -> Result<Value, ApiError> {
        let all = {
            let mut all = self.preauth.borrow_mut();
            match did {
                Some(did) => {
                    if let Some(dids) = all.get_mut(origin) {
                        dids.remove(did);
                        if dids.is_empty() {
                            all.remove(origin);
                        }
                    }
                }
                None => {
                    all.remove(origin);
                }
            }
            all.clone()
        };
        self.store.set_json_setting(PREAUTH_KEY, &all).await.map_err(internal)?;
        Ok(self.preauth_list())
    }

    /// The `cas-updates` announcement to publish, if a local change is not announced yet:
    /// one tag for each peer we hold documents with.
    pub(crate) fn announcement_due(&self) -> Option<Vec<u8>> {
        if !self.announce.get() {
            return None;
        }
        let dids = self.lib.borrow().content_peers();
        let nonce = random_bytes().ok();
        let (Some(nonce), false) = (nonce, dids.is_empty()) else {
            self.announce.set(false);
            return None;
        };
        let recipients: Vec<String> = dids.into_iter().collect();
        Some(self.announcer.borrow_mut().announce(&recipients, nonce).encode())
    }

    /// The due announcement went out.
    pub(crate) fn announced(&self) {
        self.announce.set(false);
        self.gossip.borrow_mut().sent += 1;
    }

    /// A `cas-updates` announcement from `from`: with news for us from a peer we take
    /// something from, that peer is reached (dialled through the relay if need be) and the
    /// sessions bring the news.
    pub(crate) fn heard(self: &Rc<Self>, from: PeerId, data: &[u8], now: u64) {
        let mut gossip = self.gossip.borrow_mut();
        gossip.heard += 1;
        gossip.last_heard = Some(String::from_utf8_lossy(data).into_owned());
        let Some(did) = disot_core::identity::did_of_peer(&from) else {
            gossip.refused += 1;
            return;
        };
        if self.is_cut_off(&from) {
            gossip.refused += 1;
            return;
        }
        let announcement = match disot_core::blame::handling(&did, || {
            disot_core::announce::Announcement::decode(data)
        }) {
            Ok(a) => a,
            Err(e) => {
                tracing::info!("cas-updates from {did}: {e}");
                gossip.refused += 1;
                return;
            }
        };
        let for_me = disot_core::blame::handling(&did, || {
            self.announcer.borrow_mut().is_for_me(&did, &announcement)
        });
        if !for_me {
            return;
        }
        gossip.for_me += 1;
        drop(gossip);
        let this = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if this.level_for(&did).await == Level::Nothing {
                return;
            }
            // A connected announcer runs the session itself after its change.
            let connected = this.connected.borrow().values().any(|d| *d == did);
            if !connected {
                // Dialled at once, but never more than once a second however many arrive
                // (an old announcement can be sent again by anyone who kept it).
                let mut dialled = this.dialled.borrow_mut();
                if dialled.get(&did).is_none_or(|t| now.saturating_sub(*t) >= NEWS_REDIAL_MS) {
                    dialled.remove(&did);
                }
                drop(dialled);
                this.news.borrow_mut().insert(did, now);
                this.looked_ms.set(0);
            }
        });
    }

    /// The sync status for the popup: policy, each peer's last session, announcements.
    pub(crate) fn status(&self) -> Value {
        let mut peers: Vec<PeerSync> = self.last.borrow().values().cloned().collect();
        peers.sort_by(|a, b| a.did.cmp(&b.did));
        let ids = self.lib.borrow().ids();
        let kinds = |prefix: &str| ids.iter().filter(|id| id.starts_with(prefix)).count();
        json!({
            "policy": self.policy.get(),
            "overrides": self.overrides.borrow().clone(),
            "peers": peers,
            "documents": ids.len(),
            "documentKinds": {
                "shares": kinds("shares-"),
                "collections": kinds("collection-"),
                "trust": ids.iter().filter(|id| disot_core::sync::is_trust_id(id)).count(),
            },
            "announcements": self.gossip.borrow().clone(),
            "cutOff": self.cut_off.borrow().iter().map(|(peer, c)| json!({
                "peerId": peer.to_string(),
                "did": disot_core::identity::did_of_peer(peer),
                "at": c.at,
                "reason": c.reason,
            })).collect::<Vec<_>>(),
            "setAside": self.set_aside.borrow().iter().map(|(id, d)| json!({
                "id": id,
                "at": d.why.at,
                "reason": d.why.reason,
                "openAtNextStart": d.open_at_next_start,
            })).collect::<Vec<_>>(),
            "wasmMemoryBytes": wasm_memory_bytes(),
        })
    }

    /// `sync_peer_set {did, level}`: `level` (`full`, `metadata`, `nothing`) for `did`
    /// whatever the trust in it; `null` goes back to the policy.
    pub(crate) async fn set_peer_level(self: &Rc<Self>, params: Value) -> Result<Value, ApiError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct P {
            did: String,
            level: Option<Level>,
        }
        let P { did, level } = serde_json::from_value(params).map_err(|e| {
            invalid(format!("sync_peer_set takes {{did, level: full|metadata|nothing|null}}: {e}"))
        })?;
        // (Going back to the policy takes any text: one stored before DIDs had to be canonical.)
        if level.is_some() {
            disot_core::identity::public_key_from_did(&did).map_err(invalid)?;
        }
        let mut all = self.overrides.borrow().clone();
        match level {
            Some(level) => {
                if !all.contains_key(&did) && all.len() >= MAX_OVERRIDES {
                    return Err(ApiError::new(
                        ErrorCode::LimitExceeded,
                        format!("at most {MAX_OVERRIDES} peers with a level of their own"),
                    ));
                }
                all.insert(did.clone(), level);
            }
            None => {
                all.remove(&did);
            }
        }
        self.store.set_json_setting(OVERRIDES_KEY, &all).await.map_err(internal)?;
        *self.overrides.borrow_mut() = all;
        self.levels_changed();
        Ok(json!({ "did": did, "level": level }))
    }

    pub(crate) async fn set_policy(self: &Rc<Self>, policy: Policy) -> Result<Value, ApiError> {
        policy.validate().map_err(invalid)?;
        self.store.set_json_setting(POLICY_KEY, &policy).await.map_err(internal)?;
        self.policy.set(policy);
        self.levels_changed();
        Ok(json!(policy))
    }
}

/// A stream that counts the bytes read from and written to it.
struct Counted<'a, S> {
    inner: S,
    sent: &'a Cell<u64>,
    received: &'a Cell<u64>,
}

impl<S: futures::AsyncRead + Unpin> futures::AsyncRead for Counted<'_, S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = polled {
            self.received.set(self.received.get() + n as u64);
        }
        polled
    }
}

impl<S: futures::AsyncWrite + Unpin> futures::AsyncWrite for Counted<'_, S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = polled {
            self.sent.set(self.sent.get() + n as u64);
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// `share` parameters from a page or the popup.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ShareParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    pub to: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ShareParams {
    pub(crate) fn parse(params: Value) -> Result<ShareParams, ApiError> {
        let p: ShareParams =
            serde_json::from_value(params).map_err(|e| invalid(format!("share: {e}")))?;
        if p.cid.is_some() == p.collection.is_some() {
            return Err(invalid("share: give a cid or a collection"));
        }
        if let Some(cid) = &p.cid {
            cid.parse::<cid::Cid>().map_err(|_| invalid("share: cid is not a CID"))?;
        }
        if p.note.as_ref().is_some_and(|n| n.len() > core_sync::MAX_TEXT) {
            return Err(invalid("share: the note is too long"));
        }
        p.recipients()?;
        Ok(p)
    }

    pub(crate) fn recipients(&self) -> Result<Vec<String>, ApiError> {
        let not_dids = || invalid("share: to is a DID or a list of DIDs");
        let list: Vec<String> = match &self.to {
            Value::String(s) => vec![s.clone()],
            // Every entry a DID: what is not one is refused, not left out (the prompt shows
            // the list as shared).
            Value::Array(a) => a
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(not_dids))
                .collect::<Result<_, _>>()?,
            _ => return Err(not_dids()),
        };
        if list.is_empty() || list.len() > 32 {
            return Err(invalid("share: 1 to 32 recipients"));
        }
        for did in &list {
            disot_core::identity::public_key_from_did(did)
                .map_err(|e| invalid(format!("share: {e}")))?;
        }
        Ok(list)
    }
}

/// This node's linear memory (it only grows: an upper bound of what it holds).
fn wasm_memory_bytes() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return core::arch::wasm32::memory_size(0) as u64 * 65_536;
    #[cfg(not(target_arch = "wasm32"))]
    0
}

fn random_bytes() -> Result<[u8; 16], ApiError> {
    crate::store::random_bytes::<16>().map_err(internal)
}

fn random_id() -> Result<String, ApiError> {
    Ok(random_bytes()?[..8].iter().map(|b| format!("{b:02x}")).collect())
}
