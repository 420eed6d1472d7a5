//! Shares and collections in the browser: the [`Library`] of Automerge documents, kept in
//! IndexedDB, synced with each verified peer over `/disot/sync/1.0.0` (the session itself is
//! `disot_core::sync::session`), and shared content fetched by the sync policy.
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use disot_core::api::{ApiError, ErrorCode};
use disot_core::store::BlockStore as _;
use disot_core::sync::{self as core_sync, Entry, Level, Library, Policy, Role, Share, Stats};
use libp2p::{PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::store::Store;

pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new(core_sync::PROTOCOL);
const DOC_PREFIX: &str = "sync-doc:";
const STATE_PREFIX: &str = "sync-state:";
const POLICY_KEY: &str = "sync-policy";
/// The origin under which content fetched for shares is kept.
pub(crate) const SHARES_ORIGIN: &str = "disot:shares";
/// How long one session may take (documents are small; a session that stalls is on a
/// connection that went away, and is tried again).
const SESSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// How often absent participants are looked for, and dialled again.
const LOOK_EVERY_MS: u64 = 2_000;
const REDIAL_MS: u64 = 5_000;
/// Most sessions answered at once.
const MAX_INBOUND: usize = 8;

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

fn internal(e: impl std::fmt::Display) -> ApiError {
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
}

pub(crate) struct SyncNode {
    me: String,
    lib: RefCell<Library>,
    store: Rc<Store>,
    control: RefCell<libp2p_stream::Control>,
    exchange: Rc<crate::exchange::Exchange>,
    policy: Cell<Policy>,
    /// Peers a session runs with; `true`: run another when it ends (something changed meanwhile).
    running: RefCell<HashMap<PeerId, bool>>,
    last: RefCell<HashMap<String, PeerSync>>,
    inbound: Cell<usize>,
    /// Shared objects being fetched by the policy.
    fetching: RefCell<std::collections::BTreeSet<String>>,
    /// Peers connected and verified now (peer id → DID), for syncing after a local change.
    connected: RefCell<HashMap<PeerId, String>>,
    /// When each absent participant was last dialled, and when that was last looked at.
    dialled: RefCell<HashMap<String, u64>>,
    looked_ms: Cell<u64>,
    /// Told after anything in the library changed (pages with permission hear of it).
    pub(crate) on_change: RefCell<Option<Box<dyn Fn(&str)>>>,
}

impl SyncNode {
    /// Load the library saved in `store`.
    pub(crate) async fn load(
        me: &str,
        store: Rc<Store>,
        control: libp2p_stream::Control,
        exchange: Rc<crate::exchange::Exchange>,
    ) -> Rc<SyncNode> {
        let mut lib = Library::new(me);
        for (key, bytes) in store.saved_bytes(DOC_PREFIX).await.unwrap_or_default() {
            let id = &key[DOC_PREFIX.len()..];
            if let Err(e) = lib.load_doc(id, &bytes) {
                tracing::warn!("sync document {id} is damaged and was not loaded: {e}");
            }
        }
        for (key, bytes) in store.saved_bytes(STATE_PREFIX).await.unwrap_or_default() {
            let Some((peer, doc)) = key[STATE_PREFIX.len()..].split_once('|') else { continue };
            let _ = lib.load_state(peer, doc, &bytes);
        }
        let policy = store.json_setting::<Policy>(POLICY_KEY).await.ok().flatten();
        Rc::new(SyncNode {
            me: me.to_owned(),
            lib: RefCell::new(lib),
            store,
            control: RefCell::new(control),
            exchange,
            policy: Cell::new(policy.unwrap_or_default()),
            running: RefCell::new(HashMap::new()),
            last: RefCell::new(HashMap::new()),
            inbound: Cell::new(0),
            fetching: RefCell::new(Default::default()),
            connected: RefCell::new(HashMap::new()),
            dialled: RefCell::new(HashMap::new()),
            looked_ms: Cell::new(0),
            on_change: RefCell::new(None),
        })
    }

    /// Write what changed to IndexedDB, in one transaction.
    async fn persist(&self) -> Result<(), ApiError> {
        let (docs, states) = self.lib.borrow_mut().take_dirty();
        let mut items: Vec<(String, Vec<u8>)> =
            docs.into_iter().map(|(id, b)| (format!("{DOC_PREFIX}{id}"), b)).collect();
        items.extend(
            states.into_iter().map(|((peer, id), b)| (format!("{STATE_PREFIX}{peer}|{id}"), b)),
        );
        self.store.save_bytes(&items).await.map_err(internal)
    }

    /// This peer's trust in `did` (for "content"), as a sync level.
    async fn level_for(&self, did: &str) -> Level {
        let now = now_ms();
        let mut graph = disot_core::trust::TrustGraph::new();
        for list in [self.store.trust_credentials().await, self.store.received_trust().await] {
            for c in list.unwrap_or_default() {
                if let Ok(a) = disot_core::trust::read_form(&c) {
                    graph.insert(a);
                }
            }
        }
        let score = graph.score(&self.me, did, "content", now).map(|s| s.score);
        self.policy.get().level(score)
    }

    /// Answer the sessions peers open with us.
    pub(crate) fn accept(self: &Rc<Self>) -> Result<(), String> {
        let mut incoming = self.control.borrow_mut().accept(PROTOCOL).map_err(|e| e.to_string())?;
        let this = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            use futures::StreamExt as _;
            while let Some((peer, stream)) = incoming.next().await {
                if this.inbound.get() >= MAX_INBOUND {
                    continue; // dropped: the peer tries again later
                }
                let Some(did) = crate::node::peer_public_did(&peer) else { continue };
                this.inbound.set(this.inbound.get() + 1);
                let this = this.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    this.run_session(peer, did, stream, false).await;
                    this.inbound.set(this.inbound.get() - 1);
                });
            }
        });
        Ok(())
    }

    async fn run_session(
        self: &Rc<Self>,
        peer: PeerId,
        did: String,
        mut stream: libp2p::Stream,
        initiator: bool,
    ) {
        let level = self.level_for(&did).await;
        let mut refusals = Vec::new();
        let result = {
            let session =
                disot_core::sync::session(&mut stream, &self.lib, &did, level, initiator, |r| {
                    refusals.push(r)
                });
            futures::pin_mut!(session);
            match futures::future::select(session, futures_timer::Delay::new(SESSION_TIMEOUT)).await
            {
                futures::future::Either::Left((r, _)) => r,
                futures::future::Either::Right(_) => {
                    Err(core_sync::Error::Io("the session timed out".into()))
                }
            }
        };
        for r in &refusals {
            tracing::info!("sync with {peer}: {r}");
        }
        if let Err(e) = self.persist().await {
            tracing::warn!("saving sync documents: {}", e.message);
        }
        let (stats, error) = match result {
            Ok(s) => (Some(s), refusals.first().cloned()),
            Err(e) => {
                tracing::info!("sync with {peer}: {e}");
                (None, Some(e.to_string()))
            }
        };
        {
            let mut last = self.last.borrow_mut();
            let sessions = last.get(&did).map_or(0, |l| l.sessions) + 1;
            last.insert(
                did.clone(),
                PeerSync { did: did.clone(), at_ms: now_ms(), level, stats, error, sessions },
            );
        }
        if stats.is_some_and(|s| s.changed > 0) {
            self.changed(&did);
        }
        if level == Level::Full {
            self.fetch_shared(&did);
        }
    }

    /// A verified peer is connected: sync with it now.
    pub(crate) fn peer_verified(self: &Rc<Self>, peer: PeerId, did: String) {
        self.connected.borrow_mut().insert(peer, did.clone());
        self.sync_with(peer, did);
    }

    /// Peers we share documents with and are not connected to, to be dialled through the
    /// relay (each at most every [`REDIAL_MS`]): this is how what changed offline reaches a
    /// peer that comes back.
    pub(crate) fn peers_to_reach(&self, now: u64) -> Vec<PeerId> {
        if now.saturating_sub(self.looked_ms.get()) < LOOK_EVERY_MS {
            return Vec::new();
        }
        self.looked_ms.set(now);
        let mut dids = std::collections::BTreeSet::new();
        {
            let lib = self.lib.borrow();
            for id in lib.ids() {
                dids.extend(lib.participants(&id));
            }
        }
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
        self.connected.borrow_mut().remove(peer);
    }

    /// Run a session with `peer` (one at a time per peer; a request during one runs another
    /// after it).
    pub(crate) fn sync_with(self: &Rc<Self>, peer: PeerId, did: String) {
        // The side that holds documents with a peer starts the session; with none, the peer
        // (if it holds some with us) will.
        if self.lib.borrow_mut().docs_with(&did).is_empty() {
            return;
        }
        {
            let mut running = self.running.borrow_mut();
            if let Some(again) = running.get_mut(&peer) {
                *again = true;
                return;
            }
            running.insert(peer, false);
        }
        let this = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let mut delay_ms = 500;
            loop {
                let opened = this.control.borrow_mut().clone().open_stream(peer, PROTOCOL).await;
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

    /// Something changed here: every connected peer that takes part hears of it.
    pub(crate) fn sync_all(self: &Rc<Self>) {
        let peers: Vec<(PeerId, String)> =
            self.connected.borrow().iter().map(|(p, d)| (*p, d.clone())).collect();
        for (peer, did) in peers {
            self.sync_with(peer, did);
        }
    }

    fn changed(&self, why: &str) {
        if let Some(f) = self.on_change.borrow().as_ref() {
            f(why);
        }
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
                if let Ok(root) = cid.parse::<cid::Cid>() {
                    let held = this.store.object(&cid).await.ok().flatten().is_some();
                    if !held {
                        match this.exchange.fetch_object(root, SHARES_ORIGIN).await {
                            Ok(_) => this.changed("fetched"),
                            Err(e) => tracing::info!("fetching shared {cid}: {}", e.message),
                        }
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
    /// what we shared.
    pub(crate) async fn shares_list(&self) -> Result<Value, ApiError> {
        let (with_me, by_me) = {
            let mut lib = self.lib.borrow_mut();
            (lib.shares_to_me(), lib.shares_by_me())
        };
        let mut mine = Vec::new();
        for s in &with_me {
            let held = match &s.cid {
                Some(cid) => self.store.object(cid).await.ok().flatten().is_some(),
                None => self
                    .lib
                    .borrow_mut()
                    .collection(s.collection.as_deref().unwrap_or(""))
                    .is_some(),
            };
            mine.push(self.share_json(s, held));
        }
        let by: Vec<Value> = by_me.iter().map(|s| self.share_json(s, true)).collect();
        Ok(json!({ "sharedWithMe": mine, "sharedByMe": by }))
    }

    /// Share `params` (`{cid | collection, to, note?}`), already approved by the user.
    pub(crate) async fn share(self: &Rc<Self>, params: &ShareParams) -> Result<Value, ApiError> {
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
                let mut record = self
                    .store
                    .object(cid)
                    .await
                    .map_err(internal)?
                    .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such object here"))?;
                share.cid = Some(record.cid.clone());
                share.sha256 = Some(record.sha256.clone());
                share.size = Some(record.size);
                share.name = record.name.clone();
                share.mime = record.mime.clone();
                if !record.shared_with.contains(&to) {
                    record.shared_with.push(to.clone());
                    self.store.put_object(&record).await.map_err(internal)?;
                    self.exchange.access_changed();
                }
            }
            let share = self.lib.borrow_mut().share(share).map_err(api_err)?;
            made.push(share);
        }
        self.persist().await?;
        self.changed("shared");
        self.sync_all();
        Ok(serde_json::to_value(made).map_err(internal)?)
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
                if let Ok(Some(mut record)) = self.store.object(cid).await {
                    record.shared_with.retain(|d| d != to);
                    self.store.put_object(&record).await.map_err(internal)?;
                    self.exchange.access_changed();
                }
            }
        }
        self.persist().await?;
        self.changed("revoked");
        self.sync_all();
        serde_json::to_value(share).map_err(internal)
    }

    /// `shares_list` and the collection methods.
    pub(crate) async fn collections_or_list(
        self: &Rc<Self>,
        method: &str,
        params: Value,
    ) -> Result<Value, ApiError> {
        if method == "shares_list" {
            return self.shares_list().await;
        }
        self.collections(method, params).await
    }

    /// The collection methods (`collection_*`, `collections_list`), for pages and the popup.
    pub(crate) async fn collections(
        self: &Rc<Self>,
        method: &str,
        params: Value,
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
        }
        let p: P = if params.is_null() {
            serde_json::from_value(json!({})).map_err(invalid)?
        } else {
            serde_json::from_value(params).map_err(|e| invalid(format!("{method}: {e}")))?
        };
        let need = |v: &Option<String>, what: &str| {
            v.clone().ok_or_else(|| invalid(format!("{method}: {what} is required")))
        };
        let mut changed = true;
        let result =
            {
                let mut lib = self.lib.borrow_mut();
                match method {
                    "collections_list" => {
                        changed = false;
                        serde_json::to_value(lib.collections()).map_err(internal)?
                    }
                    "collection_get" => {
                        changed = false;
                        let id = need(&p.id, "id")?;
                        serde_json::to_value(lib.collection(&id).ok_or_else(|| {
                            ApiError::new(ErrorCode::NotFound, "no such collection")
                        })?)
                        .map_err(internal)?
                    }
                    "collection_create" => {
                        let name = need(&p.name, "name")?;
                        let id = lib.create_collection(random_bytes()?, &name).map_err(api_err)?;
                        json!({ "id": id })
                    }
                    "collection_add" => {
                        let id = need(&p.id, "id")?;
                        let cid = need(&p.cid, "cid")?;
                        cid.parse::<cid::Cid>().map_err(|_| invalid("cid: not a CID"))?;
                        let entry = Entry {
                            cid,
                            name: p.name,
                            mime: p.mime,
                            size: p.size,
                            added_by: self.me.clone(),
                            added_ms: now_ms(),
                        };
                        lib.collection_add(&id, &entry).map_err(api_err)?;
                        serde_json::to_value(lib.collection(&id)).map_err(internal)?
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
                        serde_json::to_value(lib.collection(&id)).map_err(internal)?
                    }
                    "collection_member" => {
                        let id = need(&p.id, "id")?;
                        let did = need(&p.did, "did")?;
                        disot_core::identity::public_key_from_did(&did).map_err(invalid)?;
                        lib.set_member(&id, &did, p.role.unwrap_or(Role::Editor), true)
                            .map_err(api_err)?;
                        serde_json::to_value(lib.collection(&id)).map_err(internal)?
                    }
                    other => {
                        return Err(ApiError::new(
                            ErrorCode::UnsupportedMethod,
                            format!("unknown method {other:.40}"),
                        ))
                    }
                }
            };
        if changed {
            self.persist().await?;
            self.changed("collection");
            self.sync_all();
        }
        Ok(result)
    }

    /// The sync status for the popup: policy, and each peer's last session.
    pub(crate) fn status(&self) -> Value {
        let mut peers: Vec<PeerSync> = self.last.borrow().values().cloned().collect();
        peers.sort_by(|a, b| a.did.cmp(&b.did));
        json!({ "policy": self.policy.get(), "peers": peers, "documents": self.lib.borrow().ids().len() })
    }

    pub(crate) async fn set_policy(self: &Rc<Self>, policy: Policy) -> Result<Value, ApiError> {
        policy.validate().map_err(invalid)?;
        self.store.set_json_setting(POLICY_KEY, &policy).await.map_err(internal)?;
        self.policy.set(policy);
        self.sync_all();
        Ok(json!(policy))
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

    fn recipients(&self) -> Result<Vec<String>, ApiError> {
        let list: Vec<String> = match &self.to {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
            _ => return Err(invalid("share: to is a DID or a list of DIDs")),
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

fn random_bytes() -> Result<[u8; 16], ApiError> {
    crate::store::random_bytes::<16>().map_err(internal)
}

fn random_id() -> Result<String, ApiError> {
    Ok(random_bytes()?[..8].iter().map(|b| format!("{b:02x}")).collect())
}
