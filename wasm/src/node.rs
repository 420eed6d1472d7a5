//! The browser node: a libp2p swarm driven by one local task, and the request router.
//!
//! Design decision: the swarm is owned by a single `spawn_local` task; everything else talks
//! to it through a bounded command channel and reads a status snapshot the task keeps up to
//! date. Requests from pages and from the extension UI arrive as JSON text, are parsed by
//! `disot_core::api` into closed enums and answered as JSON text, so no JS value from outside
//! ever reaches the node unparsed. The main type is [`Node`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use disot_core::api::{self, ApiError, ErrorCode, PageRequest, PageStatus, Settings, UiRequest};
use disot_core::bootstrap::{self, Backoff, Dialer};
use disot_core::permissions::{self, Grants, Pending, Permission};
use disot_core::store::BlockStore as _;
use futures::channel::{mpsc, oneshot};
use futures::future::Either;
use futures::{FutureExt, SinkExt, StreamExt};
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{gossipsub, identify, kad, ping, relay, Multiaddr, PeerId, StreamProtocol, Swarm};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;

use crate::cas::Cas;
use crate::exchange::{self, Exchange};
use crate::store::Store;
use crate::sync::internal;

/// How often the event loop wakes up without an event, to run due dials.
const TICK: Duration = Duration::from_millis(250);
/// How often connected peers are pinged (their round-trip time shows in the popup).
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Commands queued from requests to the event loop before senders wait.
const COMMAND_QUEUE: usize = 32;
/// Longest wait between two dials of a bootstrap node that is down.
const RECONNECT_MAX_DELAY_MS: u64 = 10_000;
/// Minimum time between two attempts to take a relay reservation.
const RELAY_RETRY_MS: f64 = 5_000.0;

#[derive(NetworkBehaviour)]
struct Behaviour {
    relay: relay::client::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
    /// `cas-updates` announcements (see `disot_core::announce`).
    gossipsub: gossipsub::Behaviour,
}

/// Options from the JS host.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartOptions {
    /// Bootstrap addresses used while the user has not saved any in the options page.
    #[serde(default)]
    default_bootstrap: Vec<String>,
    /// STUN/TURN servers used while the user has not saved settings.
    #[serde(default)]
    default_ice_servers: Vec<disot_core::api::IceServer>,
    /// "chromium" or "firefox", for the identify agent string.
    #[serde(default)]
    platform: String,
    /// Most verbose level logged to the console: "error", "warn" (default), "info", "debug".
    #[serde(default)]
    log_level: Option<String>,
    /// Opens the identity key when it is locked (see [`identity_locked`]).
    #[serde(default)]
    passphrase: Option<String>,
    /// The node's last crash in this context, if it was started again after one:
    /// `{at, message, blamed?}` (shown in the popup). `blamed`, given only to the start just
    /// after the crash: the peer whose message was being handled (see
    /// [`SyncNode::cut_off`](crate::sync::SyncNode::cut_off)).
    #[serde(default)]
    last_crash: Option<Value>,
    /// Test builds only (`testHooks` in `config.json`): the `debug_crash` request panics.
    #[serde(default)]
    test_hooks: bool,
    /// Test builds only (`debugBitswapIdleMs` in `config.json`, with `testHooks`): inbound
    /// Bitswap streams are dropped after this long without a whole message.
    #[serde(default)]
    debug_bitswap_idle_ms: Option<u64>,
}

pub(crate) fn init_logging(level: Option<&str>) {
    let level = match level {
        Some("error") => tracing::Level::ERROR,
        Some("info") => tracing::Level::INFO,
        Some("debug") => tracing::Level::DEBUG,
        Some("trace") => tracing::Level::TRACE,
        _ => tracing::Level::WARN,
    };
    let config = tracing_wasm::WASMLayerConfigBuilder::new().set_max_level(level).build();
    // Only the first call in a context takes effect; a restarted node keeps the first level.
    use tracing_subscriber::layer::SubscriberExt;
    let subscriber =
        tracing_subscriber::Registry::default().with(tracing_wasm::WASMLayer::new(config));
    let _ = tracing::subscriber::set_global_default(subscriber);
}

pub(crate) enum Command {
    SetBootstrap(Vec<(PeerId, Vec<Multiaddr>)>, oneshot::Sender<()>),
    /// Peers the DHT names as providers of a CID (the first answer that names any).
    FindProviders(cid::Cid, oneshot::Sender<Vec<PeerId>>),
    /// Dial a peer through the relay this node holds a reservation with.
    DialViaRelay(PeerId, oneshot::Sender<Result<(), String>>),
    /// Announce these roots as provided by this peer (new ones only).
    Provide(Vec<cid::Cid>),
    /// These are all the roots this peer provides, as read at this time (ms): announce the new
    /// ones, and stop announcing those no longer among them (unpublished, removed) that were
    /// announced before that time.
    ProvideAll(f64, Vec<cid::Cid>),
    /// Dial an address the user gave. The answer comes when the dial starts (`None`) or, with
    /// `wait`, once the peer is connected (by which transport) or the dial failed.
    Dial {
        addr: Multiaddr,
        wait: bool,
        answer: oneshot::Sender<DialOutcome>,
    },
    /// Dial a peer at any of the addresses its invite names (the first that answers wins).
    DialInvited(PeerId, Vec<Multiaddr>, oneshot::Sender<Result<(), String>>),
    /// Close every connection to a peer (it said something refused).
    Disconnect(PeerId),
    /// Close every connection to a peer because the user asked (see `EventLoop::hung_up`).
    HangUp(PeerId),
}

type DialOutcome = Result<Option<&'static str>, String>;

/// How long a peer the user hung up on is not dialled again to sync with it.
const HANG_UP_HOLD_MS: f64 = 60_000.0;
/// Dials waited on at once (`peers_dial` with `wait`; each waits 30 s at most).
const MAX_DIAL_WAITERS: usize = 32;

/// A dial the user waits on (`peers_dial` with `wait`).
struct DialWaiter {
    peer: PeerId,
    /// Whether it waits for the direct (WebRTC) connection that follows a relayed one.
    direct: bool,
    /// The dial it started (the relayed one, for a direct address).
    first: ConnectionId,
    answer: oneshot::Sender<DialOutcome>,
}

/// How often public objects are announced on the DHT (new ones; records are refreshed by
/// Kademlia itself).
const PROVIDE_EVERY: Duration = Duration::from_secs(5);
/// Most objects announced on the DHT as provided by this peer.
const MAX_PROVIDED: usize = 16_384;
/// Most announcements on the DHT started at once (one round of [`PROVIDE_EVERY`]).
const PROVIDE_AT_ONCE: usize = 64;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct PeerInfo {
    peer_id: String,
    did: Option<String>,
    /// Open connections, oldest first.
    connections: Vec<ConnectionInfo>,
    rtt_ms: Option<f64>,
    agent: Option<String>,
    /// Why the last attempt at a direct (WebRTC) connection failed, while there is none.
    direct_error: Option<String>,
    /// What the identity exchange proved: the peer's verified profile.
    identity: Option<disot_core::auth::Verified>,
    /// Why its identity exchange failed or was refused, while it has no verified profile.
    identity_error: Option<String>,
    /// Whether an exchange this side started is running.
    #[serde(skip)]
    identity_pending: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionInfo {
    #[serde(skip)]
    id: ConnectionId,
    transport: &'static str,
    addr: String,
    /// "dialer" or "listener".
    role: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct RelayStatus {
    /// "none", "requesting" or "reserved".
    state: &'static str,
    relay: Option<String>,
    /// Why the last reservation ended or was refused (a relay at its limits says so), kept
    /// until one is made.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Default for RelayStatus {
    fn default() -> Self {
        RelayStatus { state: "none", relay: None, error: None }
    }
}

/// An error and what caused it, each said once (`a: b: c`): libp2p's outer errors often say
/// only that something failed.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut said = e.to_string().trim_end_matches('.').to_owned();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        let text = text.trim_end_matches('.');
        if !said.contains(text) {
            said = format!("{said}: {text}");
        }
        cause = c.source();
    }
    said
}

/// Most refusals kept for the popup.
const MAX_REFUSALS: usize = 32;

/// Something a peer sent that was refused, for the popup.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Refusal {
    peer_id: String,
    /// "identity" or "trust credential".
    what: &'static str,
    reason: String,
    at_ms: f64,
}

/// What the event loop publishes for requests to read.
#[derive(Debug, Default)]
struct Live {
    peers: BTreeMap<PeerId, PeerInfo>,
    bootstrap: Vec<bootstrap::NodeStatus>,
    relay: RelayStatus,
    /// The latest refusals, oldest first.
    refused: std::collections::VecDeque<Refusal>,
    /// Relay circuit addresses other peers can reach this one at (while reserved).
    circuit_addrs: Vec<Multiaddr>,
}

impl Live {
    fn refuse(&mut self, peer: &PeerId, what: &'static str, reason: String) {
        tracing::warn!("refused {what} from {peer}: {reason}");
        if self.refused.len() >= MAX_REFUSALS {
            self.refused.pop_front();
        }
        self.refused.push_back(Refusal {
            peer_id: peer.to_string(),
            what,
            reason,
            at_ms: now_ms(),
        });
    }
}

pub(crate) struct Shared {
    did: String,
    /// The DID key. It signs here and is never returned by any request.
    key: libp2p::identity::Keypair,
    peer_id: PeerId,
    started_at: f64,
    pub(crate) store: Rc<Store>,
    defaults: Vec<String>,
    default_ice: Vec<disot_core::api::IceServer>,
    live: RefCell<Live>,
    grants: RefCell<Grants>,
    pending: RefCell<Pending>,
    /// Where each pending request's answer goes.
    waiters: RefCell<HashMap<u64, oneshot::Sender<bool>>>,
    /// JS callback that opens the approval prompt for a request id.
    open_prompt: js_sys::Function,
    pub(crate) cas: Cas,
    exchange: Rc<Exchange>,
    sync: Rc<crate::sync::SyncNode>,
    /// Opens our own protocols' streams to peers (identity, trust credentials).
    control: libp2p_stream::Control,
    /// How this peer presents itself in identity exchanges.
    local: RefCell<disot_core::auth::Local>,
    commands: mpsc::Sender<Command>,
    /// Whether the key is kept sealed under a passphrase (the lock is on).
    lock_enabled: std::cell::Cell<bool>,
    /// The popup's storage figures, as last worked out (see [`storage_summary`]).
    storage: RefCell<Option<StorageSummary>>,
    /// Notices of objects made public in other contexts (kept for as long as the node runs).
    _notices: Option<crate::notice::Listener>,
    /// See [`StartOptions::last_crash`].
    last_crash: Option<Value>,
    /// See [`StartOptions::test_hooks`].
    test_hooks: bool,
}

/// The running browser node.
#[wasm_bindgen]
pub struct Node {
    shared: Rc<Shared>,
    commands: mpsc::Sender<Command>,
}

/// Object `cid` was stored for `origin` by another context: it is known to be held; one made
/// public (`served`) is served at once and announced without waiting for the next round of
/// provider records.
fn stored_elsewhere(
    exchange: &Rc<Exchange>,
    commands: &mpsc::Sender<Command>,
    cid: cid::Cid,
    origin: &str,
    served: bool,
) {
    exchange.note_held(&cid.to_string(), origin);
    if !served {
        return;
    }
    let exchange = exchange.clone();
    let mut commands = commands.clone();
    wasm_bindgen_futures::spawn_local(async move {
        if exchange.note_published(cid).await {
            let _ = commands.try_send(Command::Provide(vec![cid]));
        }
    });
}

pub(crate) fn now_ms() -> f64 {
    js_sys::Date::now()
}

fn js_err(context: &str, e: impl std::fmt::Display) -> JsError {
    JsError::new(&format!("{context}: {e}"))
}

/// Whether the identity key is locked: the node then starts only with its passphrase
/// (`passphrase` in the start options).
#[wasm_bindgen(js_name = identityLocked)]
pub async fn identity_locked() -> Result<bool, JsError> {
    let store = Store::open().await.map_err(|e| js_err("opening storage", e))?;
    let sealed = store.sealed_identity().await.map_err(|e| js_err("reading identity", e))?;
    Ok(sealed.is_some())
}

/// Start the node: open IndexedDB, load or create the identity, start the swarm and dial the
/// bootstrap nodes.
#[wasm_bindgen]
pub async fn start(options: JsValue, open_prompt: js_sys::Function) -> Result<Node, JsError> {
    let options: StartOptions = if options.is_undefined() || options.is_null() {
        StartOptions::default()
    } else {
        serde_wasm_bindgen::from_value(options).map_err(|e| js_err("start options", e))?
    };
    init_logging(options.log_level.as_deref());
    let store = Rc::new(Store::open().await.map_err(|e| js_err("opening storage", e))?);
    let key = match (store.sealed_identity().await, options.passphrase.as_deref()) {
        (Ok(Some(sealed)), Some(passphrase)) => disot_core::backup::import(&sealed, passphrase)
            .map_err(|e| js_err("unlocking the identity", e))?,
        _ => store.identity().await.map_err(|e| js_err("loading identity", e))?,
    };
    let lock_enabled = store.sealed_identity().await.is_ok_and(|s| s.is_some());
    let did = disot_core::identity::did_from_public_key(&key.public())
        .map_err(|e| js_err("computing did", e))?;
    let peer_id = key.public().to_peer_id();
    let settings = store.settings().await.map_err(|e| js_err("loading settings", e))?;
    let grants = store.grants().await.map_err(|e| js_err("loading permissions", e))?;
    let ice = settings
        .as_ref()
        .map(|s| s.ice_servers.clone())
        .unwrap_or_else(|| options.default_ice_servers.clone());
    if let Err(e) = disot_core::api::validate_ice_servers(&ice) {
        tracing::warn!("ignoring ICE servers: {}", e.message);
    } else {
        crate::webrtc::set_ice_servers(&ice);
    }
    let display_name = settings.as_ref().map(|s| s.display_name.clone()).unwrap_or_default();
    let bootstrap_addrs =
        settings.map(|s| s.bootstrap).unwrap_or_else(|| options.default_bootstrap.clone());
    // Bad addresses in the shipped defaults or stored settings must not stop the node: it
    // starts without them and the popup shows none connected.
    let nodes = bootstrap::parse_addrs(&bootstrap_addrs).unwrap_or_else(|e| {
        tracing::warn!("ignoring bootstrap addresses: {e}");
        Vec::new()
    });

    let swarm =
        build_swarm(key.clone(), &options.platform).map_err(|e| js_err("building swarm", e))?;
    let exchange =
        Exchange::new(swarm.behaviour().stream.new_control(), store.clone(), did.clone());
    exchange.start().map_err(|e| js_err("starting bitswap", e))?;
    if let Some(ms) = options.debug_bitswap_idle_ms.filter(|_| options.test_hooks) {
        exchange.set_stream_idle_ms(ms);
    }
    if options.test_hooks {
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(DEBUG_CRASH_BLOCK).into();
        exchange.crash_on_want(disot_core::unixfs::raw_cid(&digest));
    }
    // The crash this node starts after, if a peer's message or a saved document set it off:
    // nothing more is taken from that peer, that document is not loaded (either would set it
    // off again).
    let blamed = options.last_crash.as_ref().and_then(|crash| {
        let who = crash.get("blamed").and_then(Value::as_str)?;
        Some((who.to_owned(), crash.get("message").and_then(Value::as_str)?.to_owned()))
    });
    let (document, peer) = match blamed {
        Some((who, message)) => match who.strip_prefix(disot_core::sync::DOCUMENT_BLAME) {
            Some(id) => (Some((id.to_owned(), message)), None),
            None => (None, Some((who, message))),
        },
        None => (None, None),
    };
    let sync = crate::sync::SyncNode::load(
        &did,
        &key,
        store.clone(),
        swarm.behaviour().stream.new_control(),
        exchange.clone(),
        crate::sync::Loading {
            // A test build: a peer's sync message about this document, or loading it, panics.
            crash_on: options.test_hooks.then_some(DEBUG_CRASH_DOCUMENT),
            set_aside: document,
        },
    )
    .await;
    if let Some((who, message)) = peer {
        sync.cut_off(&who, &message).await;
    }
    sync.accept().map_err(|e| js_err("accepting sync sessions", e))?;
    let control = swarm.behaviour().stream.new_control();
    let local = disot_core::auth::Local::new(key.clone(), &display_name)
        .or_else(|_| disot_core::auth::Local::new(key.clone(), ""))
        .map_err(|e| js_err("identity profile", e))?;
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let notices = crate::notice::Listener::new({
        let exchange = exchange.clone();
        let commands = tx.clone();
        move |cid, origin, served| stored_elsewhere(&exchange, &commands, cid, origin, served)
    });
    let shared = Rc::new(Shared {
        did,
        key,
        peer_id,
        started_at: now_ms(),
        store: store.clone(),
        defaults: options.default_bootstrap,
        default_ice: options.default_ice_servers,
        live: RefCell::new(Live::default()),
        grants: RefCell::new(grants),
        pending: RefCell::new(Pending::started_at(now_ms() as u64)),
        waiters: RefCell::new(HashMap::new()),
        open_prompt,
        cas: Cas::new(store.clone(), None),
        exchange: exchange.clone(),
        sync,
        control,
        local: RefCell::new(local),
        commands: tx.clone(),
        lock_enabled: std::cell::Cell::new(lock_enabled),
        storage: RefCell::new(None),
        _notices: notices,
        last_crash: options.last_crash,
        test_hooks: options.test_hooks,
    });
    let weak = Rc::downgrade(&shared);
    // One peer's trust document is taken at a time: taking reads and rewrites what we received.
    let taking = Rc::new(futures::lock::Mutex::new(()));
    shared.sync.on_trust(Rc::new(move |peer, sender, credentials| {
        let (weak, taking) = (weak.clone(), taking.clone());
        wasm_bindgen_futures::spawn_local(async move {
            let Some(shared) = weak.upgrade() else { return };
            let result = {
                let _one = taking.lock().await;
                crate::trustnet::take(&shared.store, &shared.did, &credentials).await
            };
            match result {
                Ok((reasons, new)) => {
                    {
                        let mut live = shared.live.borrow_mut();
                        reasons.into_iter().for_each(|r| live.refuse(&peer, "trust credential", r));
                    }
                    if new {
                        // Access by trust is recomputed from the next request.
                        shared.exchange.access_changed();
                        publish_trust(&shared).await;
                        shared.sync.levels_changed();
                    }
                }
                Err(e) => {
                    shared.sync.trust_not_taken(&sender);
                    shared.live.borrow_mut().refuse(&peer, "trust credential", e);
                }
            }
        });
    }));
    // Our trust document as our credentials say now (written by an earlier version, or
    // restored from a backup, they may say more than it).
    publish_trust(&shared).await;
    let (weak_local, weak_done) = (Rc::downgrade(&shared), Rc::downgrade(&shared));
    crate::auth::accept(
        shared.control.clone(),
        move || weak_local.upgrade().map(|shared| shared.local.borrow().clone()),
        move |peer, result| {
            if let Some(shared) = weak_done.upgrade() {
                on_identity(&shared, peer, result.map(Some));
            }
        },
    )
    .map_err(|e| js_err("accepting identity exchanges", e))?;
    let mut dialer = Dialer::new(Backoff::new(500, RECONNECT_MAX_DELAY_MS));
    dialer.set_nodes(nodes, now_ms() as u64);
    let event_loop = EventLoop {
        swarm,
        dialer,
        shared: shared.clone(),
        relay_listener: None,
        pending_dials: HashMap::new(),
        dial_waiters: Vec::new(),
        last_relay_attempt: f64::NEG_INFINITY,
        kad_bootstrapped: false,
        provider_queries: HashMap::new(),
        provided: HashMap::new(),
        provide_queries: HashMap::new(),
        hung_up: HashMap::new(),
    };
    let mut event_loop = event_loop;
    if let Err(e) = event_loop.swarm.listen_on(Multiaddr::empty().with(Protocol::WebRTC)) {
        tracing::warn!("not accepting direct browser connections: {e}");
    }
    wasm_bindgen_futures::spawn_local(event_loop.run(rx));
    // Announce public objects on the DHT as they appear (they may be put by any tab).
    let mut provide = tx.clone();
    wasm_bindgen_futures::spawn_local(async move {
        loop {
            futures_timer::Delay::new(PROVIDE_EVERY).await;
            // (Not after a failed read: that would stop announcing whatever it missed.)
            let Some((read_at, roots)) = exchange.public_roots().await else { continue };
            if provide.send(Command::ProvideAll(read_at, roots)).await.is_err() {
                break;
            }
        }
    });
    Ok(Node { shared, commands: tx })
}

fn build_swarm(key: libp2p::identity::Keypair, platform: &str) -> Result<Swarm<Behaviour>, String> {
    let agent = format!("disot-peer/{} ({platform})", env!("CARGO_PKG_VERSION"));
    let peer = key.public().to_peer_id();
    // Built here rather than by the builder: the browser-to-browser transport needs the stream
    // control (for signaling) and must come before the relay transport.
    let (relay_transport, relay) = relay::client::new(peer);
    let stream = libp2p_stream::Behaviour::new();
    let (direct, inbound) = crate::webrtc::Transport::new(stream.new_control());
    crate::webrtc::Transport::accept(stream.new_control(), inbound)?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_wasm_bindgen()
        .with_other_transport(|key| {
            crate::transport::build(key, direct, relay_transport)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|e| e.to_string())?
        .with_behaviour(|key| {
            let peer = key.public().to_peer_id();
            // (As many provider records as the objects a peer may publish: the default 1,024
            // would leave the rest unannounced.)
            let records = kad::store::MemoryStoreConfig {
                max_provided_keys: MAX_PROVIDED,
                ..Default::default()
            };
            let mut kad = kad::Behaviour::with_config(
                peer,
                kad::store::MemoryStore::with_config(peer, records),
                kad::Config::new(StreamProtocol::new("/ipfs/kad/1.0.0")),
            );
            kad.set_mode(Some(kad::Mode::Client));
            let gossip_config = gossipsub::ConfigBuilder::default()
                .max_transmit_size(disot_core::announce::MAX_BYTES)
                .validation_mode(gossipsub::ValidationMode::Strict)
                .build()?;
            let mut gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )?;
            gossipsub.subscribe(&gossipsub::IdentTopic::new(disot_core::announce::TOPIC))?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Behaviour {
                relay,
                kad,
                identify: identify::Behaviour::new(
                    identify::Config::new("/disot/0.1.0".into(), key.public())
                        .with_agent_version(agent),
                ),
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(PING_INTERVAL)
                        .with_timeout(Duration::from_secs(10)),
                ),
                stream,
                gossipsub,
            })
        })
        .map_err(|e| e.to_string())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

/// The address to dial for `addr`: a direct (browser-to-browser) address through a relay is
/// dialled as its relayed connection, and the direct one follows by itself (see
/// ConnectionEstablished).
fn relayed_first(addr: &Multiaddr) -> Multiaddr {
    addr.iter().filter(|p| !matches!(p, Protocol::WebRTC)).collect()
}

fn transport_of(addr: &Multiaddr) -> &'static str {
    if addr.iter().any(|p| matches!(p, Protocol::WebRTC)) {
        return "webrtc"; // browser to browser, even when the address names the relay
    }
    let mut kind = "unknown";
    for p in addr.iter() {
        match p {
            Protocol::P2pCircuit => return "relayed",
            Protocol::WebRTCDirect => kind = "webrtc-direct",
            Protocol::WebRTC => kind = "webrtc",
            Protocol::Ws(_) | Protocol::Wss(_) => kind = "websocket",
            _ => {}
        }
    }
    kind
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    dialer: Dialer,
    shared: Rc<Shared>,
    relay_listener: Option<ListenerId>,
    last_relay_attempt: f64,
    /// Dials of bootstrap addresses in flight, to credit each result to its address.
    pending_dials: HashMap<ConnectionId, (PeerId, Multiaddr)>,
    dial_waiters: Vec<DialWaiter>,
    kad_bootstrapped: bool,
    provider_queries: HashMap<kad::QueryId, oneshot::Sender<Vec<PeerId>>>,
    /// The roots announced as provided, and since when (ms).
    provided: HashMap<cid::Cid, f64>,
    /// Announcements under way: one that fails is made again on the next round.
    provide_queries: HashMap<kad::QueryId, cid::Cid>,
    /// Peers the user hung up on, and when: not dialled again by this node on its own (to sync)
    /// for [`HANG_UP_HOLD_MS`]; a dial the user asks for clears it.
    hung_up: HashMap<PeerId, f64>,
}

impl EventLoop {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = futures_timer::Delay::new(TICK).fuse();
        loop {
            futures::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                command = commands.next() => match command {
                    Some(Command::SetBootstrap(nodes, done)) => {
                        self.dialer.set_nodes(nodes, now_ms() as u64);
                        let _ = done.send(());
                    }
                    Some(command) => self.on_command(command),
                    None => break,
                },
                () = tick => {
                    tick = futures_timer::Delay::new(TICK).fuse();
                    self.shared.exchange.tick();
                    // The popup's copy of the dialer state; refreshed per tick, not per event.
                    self.shared.live.borrow_mut().bootstrap = self.dialer.status();
                }
            }
            self.dial_due();
            self.keep_relay_reservation();
            self.announce_due();
            let now = now_ms();
            self.hung_up.retain(|_, at| now - *at < HANG_UP_HOLD_MS);
            for peer in self.shared.sync.peers_to_reach(now as u64) {
                if self.hung_up.contains_key(&peer) {
                    continue;
                }
                if let Err(e) = self.dial_via_relay(peer) {
                    tracing::debug!("reaching {peer}: {e}");
                }
            }
            for (peer, reason) in self.shared.exchange.take_banned() {
                tracing::warn!("disconnecting {peer}: {reason}");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::SetBootstrap(..) => {}
            Command::FindProviders(cid, answer) => {
                let id = self.swarm.behaviour_mut().kad.get_providers(cid.hash().to_bytes().into());
                self.provider_queries.insert(id, answer);
            }
            Command::DialViaRelay(peer, answer) => {
                let _ = answer.send(self.dial_via_relay(peer));
            }
            Command::Dial { addr, wait, answer } => self.dial_for_user(addr, wait, answer),
            Command::DialInvited(peer, addrs, answer) => {
                let _ = answer.send(self.dial_invited(peer, addrs));
            }
            Command::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::HangUp(peer) => {
                self.hung_up.insert(peer, now_ms());
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::ProvideAll(read_at, roots) => {
                // (One announced since the roots were read is not among them yet.)
                let kept: std::collections::HashSet<&cid::Cid> = roots.iter().collect();
                let gone: Vec<cid::Cid> = self
                    .provided
                    .iter()
                    .filter(|(r, since)| !kept.contains(r) && **since < read_at)
                    .map(|(r, _)| *r)
                    .collect();
                for root in gone {
                    self.provided.remove(&root);
                    self.swarm.behaviour_mut().kad.stop_providing(&root.hash().to_bytes().into());
                }
                self.on_command(Command::Provide(roots));
            }
            Command::Provide(roots) => {
                // With no DHT server known yet an announcement reaches nobody (and still
                // "succeeds"): wait for the next round.
                if !self.swarm.behaviour_mut().kad.kbuckets().any(|b| b.num_entries() > 0) {
                    return;
                }
                // A few at a time (each is a DHT query): the rest in the next rounds.
                let mut started = 0;
                for root in roots {
                    if self.provided.contains_key(&root) {
                        continue;
                    }
                    if started == PROVIDE_AT_ONCE {
                        break;
                    }
                    started += 1;
                    match self
                        .swarm
                        .behaviour_mut()
                        .kad
                        .start_providing(root.hash().to_bytes().into())
                    {
                        Ok(id) => {
                            self.provided.insert(root, now_ms());
                            self.provide_queries.insert(id, root);
                        }
                        Err(e) => tracing::info!("providing {root}: {e}"),
                    }
                }
            }
        }
    }

    /// Dial an address the user gave; with `wait`, `answer` once the peer it names is connected
    /// (directly, for a `/webrtc` address), at once if it is already.
    fn dial_for_user(&mut self, addr: Multiaddr, wait: bool, answer: oneshot::Sender<DialOutcome>) {
        let direct = transport_of(&addr) == "webrtc";
        let named = match addr.iter().last() {
            Some(Protocol::P2p(peer)) => Some(peer),
            _ => None,
        };
        if let Some(peer) = named {
            self.hung_up.remove(&peer);
        }
        let waiting_on = named.filter(|_| wait);
        if let Some(peer) = waiting_on {
            let live = self.shared.live.borrow();
            let up = live.peers.get(&peer).and_then(|info| {
                info.connections.iter().find(|c| !direct || c.transport == "webrtc")
            });
            if let Some(c) = up {
                let _ = answer.send(Ok(Some(c.transport)));
                return;
            }
            drop(live);
            self.dial_waiters.retain(|w| !w.answer.is_canceled());
            if self.dial_waiters.len() >= MAX_DIAL_WAITERS {
                let _ = answer.send(Err(format!("{MAX_DIAL_WAITERS} dials are waited on already")));
                return;
            }
        }
        let opts = DialOpts::from(relayed_first(&addr));
        let first = opts.connection_id();
        match (self.swarm.dial(opts), waiting_on) {
            (Err(e), _) => {
                let _ = answer.send(Err(e.to_string()));
            }
            (Ok(()), Some(peer)) => {
                self.dial_waiters.push(DialWaiter { peer, direct, first, answer })
            }
            (Ok(()), None) => {
                let _ = answer.send(Ok(None));
            }
        }
    }

    /// Answer each waiting dial that `outcome` settles; forget those nobody waits on any more.
    fn settle_dials(&mut self, outcome: impl Fn(&DialWaiter) -> Option<DialOutcome>) {
        for waiter in std::mem::take(&mut self.dial_waiters) {
            if waiter.answer.is_canceled() {
                continue;
            }
            match outcome(&waiter) {
                Some(settled) => {
                    let _ = waiter.answer.send(settled);
                }
                None => self.dial_waiters.push(waiter),
            }
        }
    }

    /// Dial `peer` directly (browser-to-browser WebRTC), signaling over the relayed
    /// connection at `circuit`.
    fn dial_direct(&mut self, peer: PeerId, circuit: &Multiaddr) {
        let base: Multiaddr =
            circuit.iter().take_while(|p| !matches!(p, Protocol::P2pCircuit)).collect();
        let addr = base.with(Protocol::P2pCircuit).with(Protocol::WebRTC).with(Protocol::P2p(peer));
        let opts = DialOpts::peer_id(peer)
            .addresses(vec![addr.clone()])
            .condition(PeerCondition::Always)
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::info!("direct dial {addr}: {e}");
        }
    }

    /// Dial `peer` at `<relay>/p2p-circuit/p2p/<peer>` through a connected bootstrap node.
    /// (Every browser takes its reservation with a bootstrap node, so a peer found on the DHT
    /// is reachable through the one this browser uses when they share it.)
    fn dial_via_relay(&mut self, peer: PeerId) -> Result<(), String> {
        if self.swarm.is_connected(&peer) {
            return Ok(());
        }
        let relay = self
            .swarm
            .connected_peers()
            .copied()
            .find(|p| self.dialer.is_bootstrap(p))
            .ok_or("no relay is connected")?;
        let addr =
            self.dialer.addrs(&relay).into_iter().next().ok_or("the relay has no address")?;
        let base: Multiaddr = addr.into_iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
        let circuit =
            base.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit).with(Protocol::P2p(peer));
        self.swarm
            .dial(DialOpts::peer_id(peer).addresses(vec![circuit]).build())
            .map_err(|e| e.to_string())
    }

    /// Dial `peer` at all of `addrs` (as the swarm does: several at once, the first connection
    /// made ends the others).
    fn dial_invited(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), String> {
        self.hung_up.remove(&peer);
        if self.swarm.is_connected(&peer) {
            return Ok(());
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs.iter().map(relayed_first).collect())
            .condition(PeerCondition::Disconnected)
            .build();
        self.swarm.dial(opts).map_err(|e| e.to_string())
    }

    fn dial_due(&mut self) {
        for (peer, addr) in self.dialer.due(now_ms() as u64) {
            // Several addresses of one node may be in flight at once (see `Dialer`).
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Disconnected)
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    self.pending_dials.insert(id, (peer, addr));
                }
                Err(DialError::DialPeerConditionFalse(_)) if self.swarm.is_connected(&peer) => {
                    self.dialer.on_connected(&peer, now_ms() as u64)
                }
                Err(e) => {
                    tracing::info!("dial {addr}: {e}");
                    self.dialer.on_dial_failed(&peer, &addr, now_ms() as u64);
                }
            }
        }
    }

    /// Listen through a connected bootstrap node (circuit relay v2) while there is none.
    fn keep_relay_reservation(&mut self) {
        if self.relay_listener.is_some() || now_ms() - self.last_relay_attempt < RELAY_RETRY_MS {
            return;
        }
        let relay = self.swarm.connected_peers().copied().find(|p| self.dialer.is_bootstrap(p));
        let Some(relay) = relay else { return };
        let Some(addr) = self.dialer.addrs(&relay).into_iter().next() else {
            return;
        };
        self.last_relay_attempt = now_ms();
        let base: Multiaddr = addr.into_iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
        let circuit = base.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                self.relay_listener = Some(id);
                let mut live = self.shared.live.borrow_mut();
                let error = live.relay.error.take();
                live.relay =
                    RelayStatus { state: "requesting", relay: Some(relay.to_string()), error };
            }
            Err(e) => tracing::warn!("listen on {circuit}: {e}"),
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let now = now_ms() as u64;
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                established_in,
                ..
            } => {
                self.pending_dials.remove(&connection_id);
                self.shared.exchange.connection_made(peer_id);
                let addr = endpoint.get_remote_address().clone();
                tracing::info!(
                    "connection {connection_id} to {peer_id} via {addr} ({} ms)",
                    established_in.as_millis()
                );
                if self.dialer.is_bootstrap(&peer_id) {
                    self.dialer.on_connected(&peer_id, now);
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr.clone());
                    if !self.kad_bootstrapped {
                        self.kad_bootstrapped = self.swarm.behaviour_mut().kad.bootstrap().is_ok();
                    }
                }
                let mut live = self.shared.live.borrow_mut();
                let info = live.peers.entry(peer_id).or_insert_with(|| PeerInfo {
                    peer_id: peer_id.to_string(),
                    did: disot_core::identity::did_of_peer(&peer_id),
                    connections: Vec::new(),
                    rtt_ms: None,
                    agent: None,
                    direct_error: None,
                    identity: None,
                    identity_error: None,
                    identity_pending: false,
                });
                if transport_of(&addr) == "webrtc" {
                    info.direct_error = None;
                }
                // A relayed connection shows the circuit in the dialer's remote address and in
                // the listener's local (circuit listen) address.
                let transport = match &endpoint {
                    libp2p::core::ConnectedPoint::Listener { local_addr, .. }
                        if transport_of(local_addr) == "relayed" =>
                    {
                        "relayed"
                    }
                    _ => transport_of(&addr),
                };
                // Each side starts an identity exchange of its own (credentials follow it) on
                // any connection while the peer is not verified: answering the other side's is
                // not enough, since its last message can be lost when a relayed connection
                // closes under it for the direct one, and only the initiator learns that.
                // Bootstrap nodes too: one that keeps documents (`--trust`) answers, one that
                // does not refuses the protocol at once.
                // On a relayed connection it waits for the direct one that usually follows
                // (see `direct_or_not`): run at once, it would share the relay with the
                // signaling and slow the direct dial down, and then be cut off by it.
                if info.identity.is_none() && !info.identity_pending {
                    info.identity_pending = true;
                    let shared = self.shared.clone();
                    let local = shared.local.borrow().clone();
                    let relayed = transport == "relayed";
                    wasm_bindgen_futures::spawn_local(async move {
                        if relayed {
                            direct_or_not(&shared, peer_id).await;
                        }
                        let control = shared.control.clone();
                        let connected = || shared.live.borrow().peers.contains_key(&peer_id);
                        let result =
                            crate::auth::initiate(control, local, peer_id, connected).await;
                        on_identity(&shared, peer_id, result);
                    });
                }
                info.connections.push(ConnectionInfo {
                    id: connection_id,
                    transport,
                    addr: addr.to_string(),
                    role: if endpoint.is_dialer() { "dialer" } else { "listener" },
                });
                let relayed: Vec<ConnectionId> = info
                    .connections
                    .iter()
                    .filter(|c| c.transport == "relayed")
                    .map(|c| c.id)
                    .collect();
                // A new direct connection supersedes an older one: the peer restarted, and its
                // old connection lingers until ICE gives up (about 30 s), swallowing whatever
                // is written to it.
                let older_direct: Vec<ConnectionId> = info
                    .connections
                    .iter()
                    .filter(|c| c.transport == "webrtc" && c.id != connection_id)
                    .map(|c| c.id)
                    .collect();
                drop(live);
                self.settle_dials(|w| {
                    (w.peer == peer_id && (!w.direct || transport == "webrtc"))
                        .then_some(Ok(Some(transport)))
                });
                if transport == "relayed" && endpoint.is_dialer() {
                    // Try for a direct connection right away; the relay is for signaling.
                    self.dial_direct(peer_id, &addr);
                } else if transport == "webrtc" {
                    // Direct now: traffic leaves the relay (whichever side dialled; streams
                    // must not be opened on the relayed connection, which peers may refuse).
                    let superseded = !relayed.is_empty() || !older_direct.is_empty();
                    for id in relayed.into_iter().chain(older_direct) {
                        self.swarm.close_connection(id);
                    }
                    // Sessions on the closed connections are lost: run them again here.
                    if superseded {
                        self.shared.sync.direct_up(peer_id);
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id, connection_id, num_established, cause, ..
            } => {
                tracing::info!("connection {connection_id} to {peer_id} closed: {cause:?}");
                let mut live = self.shared.live.borrow_mut();
                if let Some(info) = live.peers.get_mut(&peer_id) {
                    info.connections.retain(|c| c.id != connection_id);
                }
                if num_established > 0 {
                    drop(live);
                    self.shared.exchange.connection_lost(peer_id);
                } else {
                    live.peers.remove(&peer_id);
                    drop(live);
                    self.shared.exchange.peer_disconnected(&peer_id);
                    self.shared.sync.peer_gone(&peer_id);
                    if self.dialer.is_bootstrap(&peer_id) {
                        self.dialer.on_disconnected(&peer_id, now);
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(peer), ref error, .. }
                if matches!(error, DialError::Transport(addrs)
                    if addrs.iter().any(|(a, _)| transport_of(a) == "webrtc")) =>
            {
                tracing::warn!("no direct connection to {peer}: {error}");
                if let Some(info) = self.shared.live.borrow_mut().peers.get_mut(&peer) {
                    info.direct_error = Some(error.to_string());
                }
                self.settle_dials(|w| {
                    (w.peer == peer && w.direct)
                        .then(|| Err(format!("no direct connection: {error}")))
                });
            }
            SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                self.settle_dials(|w| (w.first == connection_id).then(|| Err(error.to_string())));
                if let Some((peer, addr)) = self.pending_dials.remove(&connection_id) {
                    tracing::info!("dial {addr} failed: {error}");
                    self.dialer.on_dial_failed(&peer, &addr, now);
                }
            }
            SwarmEvent::NewListenAddr { address, .. }
                if address.iter().any(|p| p == Protocol::P2pCircuit) =>
            {
                let mut live = self.shared.live.borrow_mut();
                if !live.circuit_addrs.contains(&address) {
                    live.circuit_addrs.push(address);
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.shared.live.borrow_mut().circuit_addrs.retain(|a| *a != address);
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. }
                if Some(listener_id) == self.relay_listener =>
            {
                tracing::info!("relay listener closed: {reason:?}");
                self.relay_listener = None;
                let mut live = self.shared.live.borrow_mut();
                live.circuit_addrs.clear();
                let relay = live.relay.relay.take();
                let error = match reason {
                    Ok(()) => live.relay.error.take(),
                    Err(e) => Some(format!(
                        "no reservation at the relay {}: {}",
                        relay.as_deref().unwrap_or("?"),
                        with_causes(&e)
                    )),
                };
                live.relay = RelayStatus { state: "none", relay: None, error };
            }
            SwarmEvent::Behaviour(BehaviourEvent::Relay(
                relay::client::Event::ReservationReqAccepted { relay_peer_id, .. },
            )) => {
                self.shared.live.borrow_mut().relay = RelayStatus {
                    state: "reserved",
                    relay: Some(relay_peer_id.to_string()),
                    error: None,
                };
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) => {
                if let Some(p) = self.shared.live.borrow_mut().peers.get_mut(&peer) {
                    p.rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if let Some(p) = self.shared.live.borrow_mut().peers.get_mut(&peer_id) {
                    p.agent = Some(info.agent_version);
                }
                if info.protocols.contains(&exchange::PROTOCOL) {
                    self.shared.exchange.peer_connected(peer_id);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(result),
                step,
                ..
            })) => {
                let found: Vec<PeerId> = match result {
                    Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                        providers.into_iter().filter(|p| p != self.swarm.local_peer_id()).collect()
                    }
                    _ => Vec::new(),
                };
                if !found.is_empty() || step.last {
                    if let Some(answer) = self.provider_queries.remove(&id) {
                        let _ = answer.send(found);
                    }
                    if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        query.finish();
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::StartProviding(result),
                ..
            })) => {
                if let Some(root) = self.provide_queries.remove(&id) {
                    if let Err(e) = result {
                        // Perhaps before the DHT knew any server: announced again next round.
                        tracing::info!("announcing {root} failed: {e}");
                        self.provided.remove(&root);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message,
                ..
            })) => {
                if let Some(from) = message.source {
                    self.shared.sync.heard(from, &message.data, now);
                }
            }
            _ => {}
        }
    }

    /// Publish the `cas-updates` announcement the library has waiting, if any. Without a
    /// subscribed peer to take it, it waits (the sessions on reconnecting carry the news
    /// anyway).
    fn announce_due(&mut self) {
        let Some(bytes) = self.shared.sync.announcement_due() else { return };
        let topic = gossipsub::IdentTopic::new(disot_core::announce::TOPIC);
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) => self.shared.sync.announced(),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
            Err(e) => {
                tracing::info!("cas-updates announcement not sent: {e}");
                self.shared.sync.announced();
            }
        }
    }
}

/// How long an identity exchange on a relayed connection waits for a direct one.
const DIRECT_WAIT: Duration = Duration::from_secs(1);

/// Until `peer` has a direct connection, its direct dial failed, it is gone, or
/// [`DIRECT_WAIT`] passed.
async fn direct_or_not(shared: &Shared, peer: PeerId) {
    let start = now_ms();
    while now_ms() - start < DIRECT_WAIT.as_millis() as f64 {
        let settled = shared.live.borrow().peers.get(&peer).is_none_or(|info| {
            info.direct_error.is_some() || info.connections.iter().any(|c| c.transport == "webrtc")
        });
        if settled {
            return;
        }
        futures_timer::Delay::new(Duration::from_millis(10)).await;
    }
}

/// What an identity exchange with `peer` came to. A verified peer gets our trust credentials
/// (if we trust it); a peer whose profile was refused is disconnected.
fn on_identity(
    shared: &Rc<Shared>,
    peer: PeerId,
    result: Result<Option<disot_core::auth::Verified>, disot_core::auth::Error>,
) {
    let mut live = shared.live.borrow_mut();
    if let Some(info) = live.peers.get_mut(&peer) {
        info.identity_pending = false;
    }
    match result {
        Ok(None) => {}
        Ok(Some(verified)) => {
            tracing::info!("{peer} is {} ({:?})", verified.did, verified.display_name);
            let did = verified.did.clone();
            // Over a relayed connection only, a direct one usually follows within a second
            // (and the relayed one is closed then): sessions wait for it a little.
            let relayed_only = live.peers.get(&peer).is_some_and(|info| {
                !info.connections.is_empty()
                    && info.connections.iter().all(|c| c.transport == "relayed")
            });
            if let Some(info) = live.peers.get_mut(&peer) {
                info.identity = Some(verified);
                info.identity_error = None;
            }
            drop(live);
            shared.sync.peer_verified(peer, did, relayed_only);
        }
        Err(e) if e.is_refusal() => {
            if let Some(info) = live.peers.get_mut(&peer) {
                info.identity = None;
                info.identity_error = Some(e.to_string());
            }
            live.refuse(&peer, "identity", e.to_string());
            drop(live);
            let _ = shared.commands.clone().try_send(Command::Disconnect(peer));
        }
        Err(e) => {
            tracing::info!("identity exchange with {peer}: {e}");
            if let Some(info) = live.peers.get_mut(&peer).filter(|i| i.identity.is_none()) {
                info.identity_error = Some(e.to_string());
            }
        }
    }
}

#[wasm_bindgen]
impl Node {
    #[wasm_bindgen(getter)]
    pub fn did(&self) -> String {
        self.shared.did.clone()
    }

    #[wasm_bindgen(getter, js_name = peerId)]
    pub fn peer_id(&self) -> String {
        self.shared.peer_id.to_string()
    }

    /// Object `cid` was just stored for `origin` by a content frame in this process (which says
    /// so before its page hears of it: the notice on the broadcast channel may come after the
    /// page's next request). Whether it is public comes with that notice.
    #[wasm_bindgen(js_name = noteStored)]
    pub fn note_stored(&self, cid: String, origin: String) {
        if let Ok(cid) = cid.parse() {
            stored_elsewhere(&self.shared.exchange, &self.commands, cid, &origin, false);
        }
    }

    /// Answer one request. `sender` is "page" or "ui", decided by the JS host from what the
    /// browser says about the message's sender; `origin` is the page's origin (from the browser).
    /// Resolves to the JSON text of `{result}` or `{error: {code, message}}`; never rejects.
    pub fn request(&self, sender: String, origin: String, body: String) -> js_sys::Promise {
        let shared = self.shared.clone();
        let commands = self.commands.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let started = now_ms();
            // Parsed, the request's text goes at once, not when its answer does (a request may
            // wait long, and a page may have many in flight); a short one is kept to name it
            // in the log should it be slow.
            let short = (body.len() <= 4096).then(|| body.clone());
            let result = match sender.as_str() {
                "page" => match api::parse_page_request(&body) {
                    Ok(request) => {
                        drop(body);
                        handle_page(&shared, commands, &origin, request).await
                    }
                    Err(e) => Err(e),
                },
                "ui" => match api::parse_ui_request(&body) {
                    Ok(request) => {
                        drop(body);
                        handle_ui(&shared, commands, request).await
                    }
                    Err(e) => Err(e),
                },
                _ => Err(ApiError::new(ErrorCode::Unauthorized, "unknown sender")),
            };
            let took = now_ms() - started;
            if took > SLOW_REQUEST_MS {
                #[derive(Deserialize)]
                struct Method {
                    method: String,
                }
                let method = short.and_then(|b| serde_json::from_str::<Method>(&b).ok());
                let method = method.map_or_else(|| "(long)".to_owned(), |m| m.method);
                if !LONG_BY_DESIGN.contains(&method.as_str()) {
                    tracing::info!("{sender} request {method:.40} took {took:.0} ms");
                }
            }
            Ok(JsValue::from_str(&api::response_json(result)))
        })
    }
}

fn page_status(shared: &Shared, origin: &str) -> PageStatus {
    let granted = !shared.grants.borrow().of(origin).is_empty();
    PageStatus::for_origin(
        granted,
        &shared.did,
        &shared.peer_id.to_string(),
        shared.live.borrow().peers.len(),
    )
}

async fn handle_page(
    shared: &Shared,
    commands: mpsc::Sender<Command>,
    origin: &str,
    request: PageRequest,
) -> Result<Value, ApiError> {
    permissions::validate_origin(origin)?;
    // Checked before anything touches the store: without the grant a page learns nothing,
    // not even by timing, whether some content is held.
    let needed = request.needs();
    let missing = || needed.filter(|&p| !shared.grants.borrow().allows(origin, p));
    if let Some(p) = missing() {
        return Err(p.missing());
    }
    let answer = answer_page(shared, commands, origin, request).await;
    // A permission revoked while the request ran (a fetch waits for peers, a prompt for the
    // user): its answer is not given.
    match missing() {
        Some(p) if answer.is_ok() => Err(p.missing()),
        _ => answer,
    }
}

async fn answer_page(
    shared: &Shared,
    commands: mpsc::Sender<Command>,
    origin: &str,
    request: PageRequest,
) -> Result<Value, ApiError> {
    match request {
        PageRequest::CasFetch { name, inline, local_first } => {
            fetch(shared, commands, origin, &name, inline, local_first).await
        }
        PageRequest::CasTransfers => serde_json::to_value(shared.exchange.transfers(Some(origin)))
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string())),
        PageRequest::P2pPeers => Ok(p2p_peers(shared)),
        PageRequest::Sign(params) => sign_entry(shared, origin, &params).await,
        PageRequest::TrustList => trust_entries(shared, false).await,
        PageRequest::TrustScore { did, context } => {
            let now = now_ms() as u64;
            let (graph, _) = load_trust(shared, now).await?;
            let score = graph.score(&shared.did, &did, &context, now);
            Ok(json!({
                "did": did,
                "context": context,
                "score": score.as_ref().map(|s| s.score),
                "path": score.map(|s| s.path),
            }))
        }
        PageRequest::TrustSet { did, level, context } => {
            let asked = json!({ "did": did, "level": level, "context": context });
            let request = shared.pending.borrow_mut().open_trust(origin, asked, now_ms() as u64)?;
            if !ask_user(shared, request.id).await? {
                return Err(ApiError::new(ErrorCode::UserRejected, "the user did not agree"));
            }
            set_trust(shared, did.clone(), level, context.clone()).await?;
            Ok(json!({ "did": did, "level": level, "context": context }))
        }
        PageRequest::Sync { method, params } => page_sync(shared, origin, &method, params).await,
        PageRequest::Verify(entry) => Ok(match disot_core::entry::verify(&entry) {
            Ok(signer) => json!({ "valid": true, "signer": signer }),
            Err(e) => json!({ "valid": false, "reason": e.to_string() }),
        }),
        // The other requests that need the content-store grant are content-store requests.
        request if request.needs() == Some(Permission::Cas) => {
            crate::cas::handle(&shared.cas, origin, request).await
        }
        PageRequest::Status => serde_json::to_value(page_status(shared, origin))
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string())),
        PageRequest::GetPermissions => Ok(eip2255(origin, &shared.grants.borrow().of(origin))),
        PageRequest::RequestPermissions(wanted) => {
            request_permissions(shared, origin, wanted).await
        }
        _ => Err(ApiError::new(ErrorCode::UnsupportedMethod, "not implemented")),
    }
}

/// In test builds, a peer's sync message about this document panics.
const DEBUG_CRASH_DOCUMENT: &str = "collection-deadbeefdeadbeefdeadbeefdeadbeef";
/// In test builds, answering a peer's want for the raw block of these bytes panics.
const DEBUG_CRASH_BLOCK: &[u8] = b"debug_crash";

/// Requests slower than this are logged (with their method only).
const SLOW_REQUEST_MS: f64 = 500.0;
/// Requests that wait or move content by design, not logged as slow.
const LONG_BY_DESIGN: &[&str] =
    &["sync_watch", "cas_fetch", "cas_get", "cas_put", "disot_requestPermissions", "share"];

/// How long a fetch waits for peers that just connected to identify themselves.
const IDENTIFY_WAIT_MS: f64 = 5_000.0;
/// How long a fetch waits for peers found on the DHT to connect.
const PROVIDER_WAIT_MS: f64 = 15_000.0;
/// How long a fetch waits for a direct connection before it goes through the relay.
const DIRECT_WAIT_MS: f64 = 8_000.0;

/// `cas_fetch`: from the peers connected now; failing that, from providers found on the DHT,
/// dialled through the relay.
async fn fetch(
    shared: &Shared,
    mut commands: mpsc::Sender<Command>,
    origin: &str,
    name: &str,
    inline: bool,
    local_first: bool,
) -> Result<Value, ApiError> {
    let cid: cid::Cid = name.trim().parse().map_err(|_| {
        let message = if name.trim().starts_with("sha256:") {
            "peers are asked for content by CID: a sha256: name is known only for content held here"
        } else {
            "not a CID"
        };
        ApiError::new(ErrorCode::InvalidParams, message)
    })?;
    // Only what the store can hold is asked of peers (a SHA-256 raw or dag-pb block).
    disot_core::store::check_block(&cid, 0)
        .map_err(|e| ApiError::new(ErrorCode::InvalidParams, e.to_string()))?;
    let describe = |(r, fetched): (disot_core::store::ObjectRecord, crate::exchange::Fetched)| {
        let mut answer = json!({ "cid": r.cid, "sha256": r.sha256, "size": r.size, "mime": r.label_for(origin).mime, "fetched": fetched });
        if let Some(bytes) = fetched.content.as_ref().filter(|_| inline) {
            answer["data"] =
                json!(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes));
        }
        answer
    };
    // What peers shared with this user is this origin's too if it may list it.
    let sees_shares = shared.grants.borrow().allows(origin, Permission::Share);
    // What this node does not know it holds is asked of the peers at once, while the store is
    // read (see `fetch_object`); what it may hold is looked for first.
    if local_first && shared.exchange.may_hold(&cid, origin) {
        if let Some(held) = shared.exchange.held_for(cid, origin, inline).await? {
            return Ok(describe(held));
        }
    }
    let first = shared.exchange.fetch_object(cid, origin, sees_shares).await;
    match first {
        Ok(done) => return Ok(describe(done)),
        Err(e) if e.code != ErrorCode::NotFound => return Err(e),
        Err(_) => {}
    }
    // Peers connected a moment ago are asked only once they said what they speak (identify):
    // wait for those, and ask again if one of them turns out to speak Bitswap.
    let unidentified = || -> Vec<PeerId> {
        let live = shared.live.borrow();
        live.peers.iter().filter(|(_, info)| info.agent.is_none()).map(|(p, _)| *p).collect()
    };
    let waiting = unidentified();
    if !waiting.is_empty() {
        let since = now_ms();
        while now_ms() - since < IDENTIFY_WAIT_MS
            && !waiting.iter().all(|p| shared.exchange.is_peer(p) || !unidentified().contains(p))
        {
            futures_timer::Delay::new(Duration::from_millis(50)).await;
        }
        if waiting.iter().any(|p| shared.exchange.is_peer(p)) {
            match shared.exchange.fetch_object(cid, origin, sees_shares).await {
                Ok(done) => return Ok(describe(done)),
                Err(e) if e.code != ErrorCode::NotFound => return Err(e),
                Err(_) => {}
            }
        }
    }
    let unreachable = || ApiError::new(ErrorCode::Disconnected, "the node is not running");
    // Ask the DHT until someone is named (a provider announces its objects every few
    // seconds) or the wait is over.
    let since = now_ms();
    let providers = loop {
        let (tx, rx) = oneshot::channel();
        commands.send(Command::FindProviders(cid, tx)).await.map_err(|_| unreachable())?;
        let answer =
            futures::future::select(rx, futures_timer::Delay::new(Duration::from_secs(5))).await;
        if let futures::future::Either::Left((Ok(found), _)) = answer {
            if !found.is_empty() {
                break found;
            }
        }
        if now_ms() - since > PROVIDER_WAIT_MS {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "no connected peer and no provider has it",
            ));
        }
        futures_timer::Delay::new(Duration::from_secs(1)).await;
    };
    for peer in &providers {
        let (tx, rx) = oneshot::channel();
        commands.send(Command::DialViaRelay(*peer, tx)).await.map_err(|_| unreachable())?;
        if let Ok(Err(e)) = rx.await {
            tracing::info!("dialling provider {peer}: {e}");
        }
    }
    // Wait until one of them speaks Bitswap with us, then ask again.
    let since = now_ms();
    while !providers.iter().any(|p| shared.exchange.is_peer(p)) {
        if now_ms() - since > PROVIDER_WAIT_MS {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "the providers found could not be reached",
            ));
        }
        futures_timer::Delay::new(Duration::from_millis(100)).await;
    }
    // Give the direct connection a moment, so that the content does not start over the relay.
    let since = now_ms();
    let direct = || {
        let live = shared.live.borrow();
        // Direct, and asked over it: identify has run on the new connection.
        providers.iter().any(|p| {
            shared.exchange.is_peer(p)
                && live
                    .peers
                    .get(p)
                    .is_some_and(|i| i.connections.iter().all(|c| c.transport == "webrtc"))
        })
    };
    while !direct() && now_ms() - since < DIRECT_WAIT_MS {
        futures_timer::Delay::new(Duration::from_millis(50)).await;
    }
    if !direct() {
        tracing::warn!("no direct connection to the providers: fetching through the relay");
    }
    // The DHT named them, so a "not found" now is more likely a moment's race (a connection
    // being replaced, an announcement ahead of the store) than the truth: ask again a few
    // times before giving up. Blocks already fetched are kept, so a retry costs only the rest.
    crate::retry::with_backoff(
        &format!("fetching {cid} from the providers"),
        500,
        4_000,
        |e: &ApiError| e.code == ErrorCode::NotFound,
        || shared.exchange.fetch_object(cid, origin, sees_shares),
    )
    .await
    .map(describe)
}

/// Storage figures worked out at `at` (ms), which took `cost` ms.
struct StorageSummary {
    value: Value,
    at: f64,
    cost: f64,
    refreshing: bool,
}

/// Objects, pins and bytes stored, for the popup's status. Working them out reads every object
/// record (about 8 ms per thousand objects), and the popup asks four times a second while
/// something moves: the figures are kept, and worked out again once they are older than a
/// second or than twenty times what that took, whichever is longer, so that the popup never
/// takes more than a twentieth of this thread however many objects there are. While they are
/// being worked out, the figures kept are the answer.
async fn storage_summary(shared: &Shared) -> Result<Value, ApiError> {
    let started = now_ms();
    if let Some(kept) = shared.storage.borrow_mut().as_mut() {
        if kept.refreshing || started - kept.at < (kept.cost * 20.0).max(1_000.0) {
            return Ok(kept.value.clone());
        }
        kept.refreshing = true;
    }
    let objects = shared.store.objects().await;
    if let Some(kept) = shared.storage.borrow_mut().as_mut() {
        kept.refreshing = false;
    }
    let objects = objects.map_err(internal)?;
    let value = json!({
        "objects": objects.len(),
        "pinned": objects.iter().filter(|o| o.pinned).count(),
        "bytes": objects.iter().map(|o| o.size).sum::<u64>(),
    });
    *shared.storage.borrow_mut() = Some(StorageSummary {
        value: value.clone(),
        at: started,
        cost: now_ms() - started,
        refreshing: false,
    });
    Ok(value)
}

/// `p2p_peers`: each connected peer with its DID, transports and round-trip time.
fn p2p_peers(shared: &Shared) -> Value {
    let live = shared.live.borrow();
    Value::Array(
        live.peers
            .values()
            .map(|p| {
                json!({
                    "peerId": p.peer_id,
                    "did": p.did,
                    "transports": p.connections.iter().map(|c| c.transport).collect::<Vec<_>>(),
                    "rttMs": p.rtt_ms,
                    "agent": p.agent,
                    "directError": p.direct_error,
                    "verified": p.identity.is_some(),
                    "displayName": p.identity.as_ref().map(|v| v.display_name.clone()),
                })
            })
            .collect(),
    )
}

/// Grants as EIP-2255 permission objects.
fn eip2255(origin: &str, grants: &[permissions::Grant]) -> Value {
    Value::Array(
        grants
            .iter()
            .map(|g| json!({ "parentCapability": g.permission, "invoker": origin, "date": g.granted_at }))
            .collect(),
    )
}

/// Ask the user, unless everything asked for is already granted; waits for the answer.
async fn request_permissions(
    shared: &Shared,
    origin: &str,
    wanted: Vec<Permission>,
) -> Result<Value, ApiError> {
    if wanted.iter().all(|p| shared.grants.borrow().allows(origin, *p)) {
        return Ok(eip2255(origin, &shared.grants.borrow().of(origin)));
    }
    let request = shared.pending.borrow_mut().open(origin, wanted, now_ms() as u64)?;
    if !ask_user(shared, request.id).await? {
        return Err(ApiError::new(ErrorCode::UserRejected, "the user rejected the request"));
    }
    Ok(eip2255(origin, &shared.grants.borrow().of(origin)))
}

/// `disot_sign`: show the entry to the user; once approved, sign it with the DID key.
async fn sign_entry(shared: &Shared, origin: &str, params: &Value) -> Result<Value, ApiError> {
    let invalid =
        |e: disot_core::entry::Error| ApiError::new(ErrorCode::InvalidParams, e.to_string());
    let unsigned = disot_core::entry::unsigned_from_params(params, &shared.did, now_ms() as u64)
        .map_err(invalid)?;
    let request =
        shared.pending.borrow_mut().open_sign(origin, unsigned.clone(), now_ms() as u64)?;
    if !ask_user(shared, request.id).await? {
        return Err(ApiError::new(ErrorCode::UserRejected, "the user did not sign"));
    }
    disot_core::entry::sign(&shared.key, &unsigned).map_err(invalid)
}

/// Shares and collections, for a page with the `share` permission: a share is made only once
/// the user approves it in the prompt, which shows what is shared and with whom.
async fn page_sync(
    shared: &Shared,
    origin: &str,
    method: &str,
    params: Value,
) -> Result<Value, ApiError> {
    if method == "collection_member" {
        ask_to_add_member(shared, origin, &params).await?;
    }
    if method != "share" {
        return shared.sync.collections_or_list(method, params, Some(origin)).await;
    }
    let share = crate::sync::ShareParams::parse(params)?;
    let mut shown = serde_json::to_value(&share).map_err(internal)?;
    // The prompt shows the recipients as they will be read, and what the collection is.
    let to = share.recipients()?;
    shown["to"] = json!(to);
    if let Some(id) = &share.collection {
        let info = shared
            .sync
            .collection_info(id)
            .filter(|_| shared.sync.made_by(id, origin))
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such collection"))?;
        shown["object"] = json!({ "name": info.name, "count": info.count });
    }
    if let Some(cid) = &share.cid {
        let record = shared.store.object(cid).await.map_err(internal)?;
        let record = record.filter(|r| r.origins.iter().any(|o| o == origin)).ok_or_else(|| {
            ApiError::new(ErrorCode::NotFound, "this origin holds no such object")
        })?;
        shown["object"] = json!({ "name": record.label_for(origin).name, "size": record.size, "sha256": record.sha256 });
    }
    // The user may have let this origin share with these recipients without asking.
    if shared.sync.preauthorised(origin, &to) {
        return shared.sync.share(&share, Some(origin)).await;
    }
    let request = shared.pending.borrow_mut().open_share(origin, shown, now_ms() as u64)?;
    if !ask_user(shared, request.id).await? {
        return Err(ApiError::new(ErrorCode::UserRejected, "the user did not share it"));
    }
    shared.sync.share(&share, Some(origin)).await
}

/// A page's `collection_member {id, did, role}` that lets a peer in (as editor or reader)
/// shares the collection with that peer: the user approves it first, as any share (unless
/// this origin may share with that peer without asking). Taking a peer out needs no prompt.
async fn ask_to_add_member(shared: &Shared, origin: &str, params: &Value) -> Result<(), ApiError> {
    use disot_core::sync::Role;
    let role = match params.get("role") {
        None | Some(Value::Null) => Role::Editor,
        Some(role) => serde_json::from_value(role.clone())
            .map_err(|_| ApiError::new(ErrorCode::InvalidParams, "role: editor, reader or none"))?,
    };
    let text = |key: &str| params.get(key).and_then(Value::as_str);
    let (Some(id), Some(did)) = (text("id"), text("did")) else {
        return Err(ApiError::new(
            ErrorCode::InvalidParams,
            "collection_member takes {id, did, role?}",
        ));
    };
    // (Taking a member out takes any text: one stored before DIDs had to be canonical too.)
    if role != Role::None {
        disot_core::identity::public_key_from_did(did)
            .map_err(|e| ApiError::new(ErrorCode::InvalidParams, e.to_string()))?;
    }
    let info = shared
        .sync
        .collection_info(id)
        .filter(|_| shared.sync.made_by(id, origin))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such collection"))?;
    let has = |members: &[String]| members.iter().any(|m| m == did);
    // Taking a peer out, or giving it no more than it has, asks nothing; nor does a peer this
    // origin may share with without asking, or the owner (whose role cannot change).
    let asks_more = match role {
        Role::None => false,
        Role::Reader => !has(&info.readers) && !has(&info.editors),
        Role::Editor => !has(&info.editors),
    };
    if !asks_more || info.owner == did || shared.sync.preauthorised(origin, &[did.to_owned()]) {
        return Ok(());
    }
    let role = if role == Role::Reader { "reader" } else { "editor" };
    let shown = json!({ "collection": id, "to": [did], "role": role, "object": { "name": info.name, "count": info.count } });
    let request = shared.pending.borrow_mut().open_share(origin, shown, now_ms() as u64)?;
    if !ask_user(shared, request.id).await? {
        return Err(ApiError::new(ErrorCode::UserRejected, "the user did not let that peer in"));
    }
    Ok(())
}

/// Shares, collections and sync for the extension's own pages (no prompt: the user is there).
async fn ui_sync(shared: &Shared, method: &str, params: Value) -> Result<Value, ApiError> {
    match method {
        "share" => shared.sync.share(&crate::sync::ShareParams::parse(params)?, None).await,
        "share_revoke" => {
            let to = params.get("to").and_then(Value::as_str).unwrap_or_default().to_owned();
            let id = params.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
            shared.sync.revoke(&to, &id).await
        }
        "sync_status" => Ok(shared.sync.status()),
        "share_preauth_list" => Ok(shared.sync.preauth_list()),
        "share_preauth_remove" => {
            let origin = params.get("origin").and_then(Value::as_str).unwrap_or_default();
            let did = params.get("did").and_then(Value::as_str);
            shared.sync.preauth_remove(origin, did).await
        }
        "sync_peer_set" => shared.sync.set_peer_level(params).await,
        "sync_document_retry" => shared.sync.retry_document(params).await,
        "sync_peer_allow" => {
            let (peer, allowed) = shared.sync.allow(params).await?;
            // Connected now: Bitswap asks and answers it again from now, not from its next
            // connection.
            if shared.live.borrow().peers.contains_key(&peer) {
                shared.exchange.peer_connected(peer);
            }
            Ok(allowed)
        }
        "sync_policy_set" => {
            let policy = serde_json::from_value(params)
                .map_err(|e| ApiError::new(ErrorCode::InvalidParams, format!("policy: {e}")))?;
            shared.sync.set_policy(policy).await
        }
        other => shared.sync.collections_or_list(other, params, None).await,
    }
}

/// Open the prompt for pending request `id` and wait for the user's answer (a prompt closed
/// unanswered is a no).
async fn ask_user(shared: &Shared, id: u64) -> Result<bool, ApiError> {
    // A site the user blocked from asking is turned down at once, whatever it asks.
    let origin = shared.pending.borrow().get(id).map(|r| r.origin.clone());
    if origin.is_some_and(|o| shared.grants.borrow().blocks(&o)) {
        shared.pending.borrow_mut().close(id);
        return Err(ApiError::new(
            ErrorCode::UserRejected,
            "the user blocked this site from asking (Disot Peer's popup can unblock it)",
        ));
    }
    let (tx, rx) = oneshot::channel();
    shared.waiters.borrow_mut().insert(id, tx);
    let forget = || {
        shared.pending.borrow_mut().close(id);
        shared.waiters.borrow_mut().remove(&id);
    };
    if let Err(e) = shared.open_prompt.call1(&JsValue::NULL, &JsValue::from_f64(id as f64)) {
        forget();
        return Err(ApiError::new(
            ErrorCode::Internal,
            format!("could not open the prompt: {e:?}"),
        ));
    }
    // A prompt nobody answers, or whose closing went unseen, does not hold the origin's one
    // waiting request for good: after as long as the page waits, it counts as a no.
    match futures::future::select(rx, futures_timer::Delay::new(PROMPT_WAIT)).await {
        futures::future::Either::Left((answer, _)) => Ok(answer.unwrap_or(false)),
        futures::future::Either::Right(_) => {
            forget();
            Ok(false)
        }
    }
}

/// How long a request waits for the user in a prompt (as long as the page waits for it).
const PROMPT_WAIT: Duration = Duration::from_secs(10 * 60);

/// The user's answer to a pending request (or `false` when its prompt closed unanswered).
async fn decide(
    shared: &Shared,
    id: u64,
    approve: bool,
    remember: bool,
    block: Option<disot_core::permissions::BlockScope>,
) -> Result<Value, ApiError> {
    let gone = || ApiError::new(ErrorCode::InvalidParams, "no such pending request");
    // The site, or every site of the domain, is blocked from now on (see `ask_user`): what is
    // blocked is worked out (a site without a domain cannot block one) before the request is
    // answered, and kept after.
    let blocking = match block {
        Some(scope) => {
            let origin =
                shared.pending.borrow().get(id).map(|r| r.origin.clone()).ok_or_else(gone)?;
            let mut grants = shared.grants.borrow().clone();
            let blocked = grants.block(&origin, scope, now_ms() as u64)?;
            Some((blocked, grants))
        }
        None => None,
    };
    let request = shared.pending.borrow_mut().close(id).ok_or_else(gone)?;
    let mut answered = vec![(id, approve)];
    let mut blocked = None;
    if let Some((what, grants)) = blocking {
        // Those of them that wait for their prompts are turned down with this one, and their
        // windows are not opened.
        let more = shared.pending.borrow_mut().close_where(|r| grants.blocks(&r.origin));
        answered.extend(more.into_iter().map(|id| (id, false)));
        *shared.grants.borrow_mut() = grants.clone();
        blocked = Some(what);
        if let Err(e) = shared.store.set_grants(&grants).await {
            // (In force until the node starts again.)
            tracing::warn!("keeping the blocked sites: {e}");
        }
    }
    if approve && !request.permissions.is_empty() {
        // Kept first, then in force: a grant that cannot be stored (storage full, say) is not
        // granted at all, and the site is told no rather than left waiting.
        let at = now_ms() as u64;
        let mut grants = shared.grants.borrow().clone();
        grants.grant(&request.origin, &request.permissions, at);
        if let Err(e) = shared.store.set_grants(&grants).await {
            answered[0].1 = false;
            answer_waiters(shared, answered);
            return Err(ApiError::new(ErrorCode::Internal, format!("keeping the grant: {e}")));
        }
        shared.grants.borrow_mut().grant(&request.origin, &request.permissions, at);
    }
    if approve && remember {
        if let Some(share) = &request.share {
            let to: Vec<String> = match share.get("to") {
                Some(Value::String(d)) => vec![d.clone()],
                Some(Value::Array(list)) => {
                    list.iter().filter_map(|d| d.as_str().map(str::to_owned)).collect()
                }
                _ => Vec::new(),
            };
            // The share itself is approved whatever happens to remembering its recipients.
            if let Err(e) = shared.sync.preauthorise(&request.origin, &to).await {
                answer_waiters(shared, answered);
                return Err(e);
            }
        }
    }
    answer_waiters(shared, answered);
    Ok(json!({ "id": id, "approved": approve, "blocked": blocked }))
}

/// Give closed requests their answers (`true`: approved).
fn answer_waiters(shared: &Shared, answered: impl IntoIterator<Item = (u64, bool)>) {
    for (id, approve) in answered {
        if let Some(waiter) = shared.waiters.borrow_mut().remove(&id) {
            let _ = waiter.send(approve);
        }
    }
}

/// Issue (and keep) a trust assertion about `did`, and publish it to the peers we trust.
async fn set_trust(
    shared: &Shared,
    did: String,
    level: u8,
    context: String,
) -> Result<Value, ApiError> {
    if did == shared.did {
        return Err(ApiError::new(ErrorCode::InvalidParams, "a peer does not rate itself"));
    }
    let assertion = disot_core::trust::Assertion {
        issuer: shared.did.clone(),
        subject: did.clone(),
        level,
        context: context.clone(),
        issued_ms: now_ms() as u64,
        expires_ms: None,
    };
    let credential = disot_core::trust::issue(&shared.key, &assertion)
        .await
        .map_err(|e| ApiError::new(ErrorCode::InvalidParams, e.to_string()))?;
    crate::trustnet::store_credential(&shared.store, &credential).await.map_err(internal)?;
    let mut all = shared.store.trust_credentials().await.map_err(internal)?;
    // The latest assertion about a peer, per context, replaces the earlier one.
    all.retain(|c| {
        c.pointer("/credentialSubject/id").and_then(Value::as_str) != Some(did.as_str())
            || c.pointer("/credentialSubject/trustContext").and_then(Value::as_str)
                != Some(context.as_str())
    });
    all.push(credential.clone());
    shared.store.set_trust_credentials(&all).await.map_err(internal)?;
    // A revocation holds from the very next request.
    shared.exchange.access_changed();
    publish_trust(shared).await;
    shared.sync.retake_trust();
    shared.sync.levels_changed();
    Ok(credential)
}

/// What we know of trust changed: our trust document says so (and its readers hear of it).
async fn publish_trust(shared: &Shared) {
    match crate::trustnet::published(&shared.store).await {
        Ok((readers, credentials)) => {
            if let Err(e) = shared.sync.publish_trust(&readers, &credentials).await {
                tracing::warn!("publishing trust: {}", e.message);
            }
        }
        Err(e) => tracing::warn!("publishing trust: {e}"),
    }
}

/// Whom this peer trusts: its own assertions (with the credential, when `credentials`) and the
/// peers it trusts only through others, each with its score and path.
async fn trust_entries(shared: &Shared, credentials: bool) -> Result<Value, ApiError> {
    let now = now_ms() as u64;
    let (graph, mine) = load_trust(shared, now).await?;
    let mut entries: Vec<Value> = Vec::new();
    let mut listed = std::collections::BTreeSet::new();
    for (a, credential) in mine {
        let score = graph.score(&shared.did, &a.subject, &a.context, now);
        listed.insert((a.subject.clone(), a.context.clone()));
        let mut entry = json!({
            "did": a.subject,
            "level": a.level,
            "context": a.context,
            "issuedMs": a.issued_ms,
            "score": score.as_ref().map(|s| s.score),
            "path": score.map(|s| s.path),
        });
        if credentials {
            entry["cid"] = json!(crate::trustnet::credential_cid(&credential));
            entry["credential"] = credential;
        }
        entries.push(entry);
    }
    // Peers we trust only through others.
    let others: Vec<(String, String)> = graph
        .in_force(now)
        .map(|a| (a.subject.clone(), a.context.clone()))
        .filter(|k| k.0 != shared.did && !listed.contains(k))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for (did, context) in others {
        if let Some(score) = graph.score(&shared.did, &did, &context, now) {
            entries.push(json!({
                "did": did,
                "level": null,
                "context": context,
                "score": score.score,
                "path": score.path,
            }));
        }
    }
    Ok(Value::Array(entries))
}

/// The trust graph as this peer sees it (its own assertions, verified again, and what trusted
/// peers sent, verified when it came), and its own assertions with their credentials.
async fn load_trust(
    shared: &Shared,
    now: u64,
) -> Result<(disot_core::trust::TrustGraph, Vec<(disot_core::trust::Assertion, Value)>), ApiError> {
    let mut graph = disot_core::trust::TrustGraph::new();
    let mut mine = Vec::new();
    for credential in shared.store.trust_credentials().await.map_err(internal)? {
        // Checked again on every read: the store is not trusted more than the network.
        match disot_core::trust::verify(&credential, now).await {
            Ok(a) => {
                graph.insert(a.clone());
                mine.push((a, credential));
            }
            Err(e) => tracing::warn!("ignoring a stored trust credential: {e}"),
        }
    }
    // What trusted peers told us (verified when it came).
    for credential in shared.store.received_trust().await.map_err(internal)? {
        if let Ok(a) = disot_core::trust::read_form(&credential) {
            graph.insert(a);
        }
    }
    Ok((graph, mine))
}

/// While the lock is on, what takes the key out of it (a backup, a new lock passphrase, another
/// identity in its place) needs the lock's passphrase, `current`: the lock is not only for a
/// stolen disk, but also against whoever sits at the browser once it is unlocked.
async fn lock_passphrase_given(shared: &Shared, current: Option<&str>) -> Result<(), ApiError> {
    if !shared.lock_enabled.get() {
        return Ok(());
    }
    let refused = |m: &str| ApiError::new(ErrorCode::Unauthorized, m);
    let current = current.ok_or_else(|| refused("the lock is on: give its passphrase"))?;
    let sealed = shared.store.sealed_identity().await.map_err(internal)?;
    let sealed = sealed.ok_or_else(|| internal("the lock is on, but no sealed key is kept"))?;
    disot_core::backup::import(&sealed, current)
        .map(drop)
        .map_err(|_| refused("that is not the lock's passphrase"))
}

/// The identity key sealed under `passphrase` (a backup; also the lock's form at rest).
fn seal_identity(shared: &Shared, passphrase: &str) -> Result<String, ApiError> {
    let random = |e: String| ApiError::new(ErrorCode::Internal, e);
    disot_core::backup::export(
        &shared.key,
        passphrase,
        crate::store::random_bytes().map_err(random)?,
        crate::store::random_bytes().map_err(random)?,
    )
    .map_err(|e| ApiError::new(ErrorCode::InvalidParams, e.to_string()))
}

/// Free the space of objects no origin keeps pinned and of blocks no object reaches. Not while
/// this node fetches or takes an upload (their blocks are not reached until their record is
/// written), and no fetch starts meanwhile; an upload in a page's content frame whose blocks
/// go meanwhile fails at its end with an error that says so, and leaves nothing half-visible
/// (see `Store::collect_garbage` and `Store::commit_object`).
async fn collect_garbage(shared: &Shared) -> Result<Value, ApiError> {
    let busy = |what: &str| ApiError::new(ErrorCode::ResourceUnavailable, what.to_owned());
    if !shared.exchange.transfers(None).is_empty() || shared.cas.uploading() {
        return Err(busy("content is being fetched or stored: free the space once that is done"));
    }
    let _collecting = shared.exchange.collecting()?;
    let removed = shared
        .store
        .collect_garbage()
        .await
        .map_err(internal)?
        .ok_or_else(|| busy("objects changed while the space was being freed: try again"))?;
    if removed.objects > 0 || removed.blocks > 0 {
        // What is held and served is read again; the popup's figures are worked out again.
        shared.exchange.objects_removed();
        *shared.storage.borrow_mut() = None;
    }
    Ok(json!({ "objects": removed.objects, "blocks": removed.blocks }))
}

async fn handle_ui(
    shared: &Shared,
    mut commands: mpsc::Sender<Command>,
    request: UiRequest,
) -> Result<Value, ApiError> {
    match request {
        UiRequest::Status => {
            let storage = storage_summary(shared).await?;
            let live = shared.live.borrow();
            Ok(json!({
                "storage": storage,
                "did": shared.did,
                "peerId": shared.peer_id.to_string(),
                "connections": live.peers.len(),
                "peers": live.peers.values().collect::<Vec<_>>(),
                "refused": live.refused,
                "displayName": shared.local.borrow().display_name(),
                "locked": false,
                "lockEnabled": shared.lock_enabled.get(),
                "bootstrap": live.bootstrap,
                "relay": live.relay,
                "transfers": shared.exchange.transfers(None),
                "fetchesWaiting": shared.exchange.fetches_waiting(),
                "startedAt": shared.started_at,
                "version": env!("CARGO_PKG_VERSION"),
                "lastCrash": shared.last_crash,
            }))
        }
        UiRequest::CollectGarbage => collect_garbage(shared).await,
        UiRequest::Crash { how } if shared.test_hooks => {
            // Later, from a task of its own, as a fault in the node's work would.
            wasm_bindgen_futures::spawn_local(async move {
                how.crash("debug_crash: a crash a test asked for");
            });
            Ok(json!({ "crashing": true }))
        }
        UiRequest::Crash { .. } => {
            Err(ApiError::new(ErrorCode::UnsupportedMethod, "debug_crash is for test builds"))
        }
        UiRequest::GetSettings => {
            let stored = shared.store.settings().await.map_err(internal)?;
            let is_default = stored.is_none();
            let settings = stored.unwrap_or_else(|| Settings {
                bootstrap: shared.defaults.clone(),
                ice_servers: shared.default_ice.clone(),
                display_name: String::new(),
            });
            Ok(json!({
                "bootstrap": settings.bootstrap,
                "iceServers": settings.ice_servers,
                "displayName": settings.display_name,
                "isDefault": is_default,
            }))
        }
        UiRequest::SetSettings(settings) => {
            let nodes = bootstrap::parse_addrs(&settings.bootstrap)?;
            shared.store.set_settings(&settings).await.map_err(internal)?;
            let (done, applied) = oneshot::channel();
            commands
                .send(Command::SetBootstrap(nodes, done))
                .await
                .map_err(|_| ApiError::new(ErrorCode::Disconnected, "node event loop stopped"))?;
            applied
                .await
                .map_err(|_| ApiError::new(ErrorCode::Disconnected, "node event loop stopped"))?;
            crate::webrtc::set_ice_servers(&settings.ice_servers);
            let local = disot_core::auth::Local::new(shared.key.clone(), &settings.display_name)
                .map_err(|e| ApiError::new(ErrorCode::InvalidParams, e.to_string()))?;
            *shared.local.borrow_mut() = local;
            Ok(json!({
                "bootstrap": settings.bootstrap,
                "iceServers": settings.ice_servers,
                "displayName": settings.display_name,
                "isDefault": false,
            }))
        }
        UiRequest::PendingPermission(id) => {
            let pending = shared.pending.borrow();
            let request = pending.get(id).ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidParams, "no such pending request")
            })?;
            let mut shown = serde_json::to_value(request).map_err(internal)?;
            // The others wait for their prompts, one after another.
            shown["waiting"] = json!(pending.len().saturating_sub(1));
            // What "block every site under …" would block, if the origin has a domain.
            shown["blockDomain"] = json!(permissions::block_domain(&request.origin));
            shown["secure"] = json!(permissions::secure_origin(&request.origin));
            Ok(shown)
        }
        UiRequest::DecidePermission { id, approve, remember, block } => {
            decide(shared, id, approve, remember, block).await
        }
        UiRequest::ListBlocked => {
            let grants = shared.grants.borrow();
            Ok(Value::Array(
                grants
                    .blocked()
                    .iter()
                    .map(|(blocked, at)| json!({ "blocked": blocked, "blockedAt": at }))
                    .collect(),
            ))
        }
        UiRequest::Unblock(blocked) => {
            let grants = {
                let mut grants = shared.grants.borrow_mut();
                if !grants.unblock(&blocked) {
                    return Err(ApiError::new(ErrorCode::NotFound, "that site is not blocked"));
                }
                grants.clone()
            };
            shared.store.set_grants(&grants).await.map_err(internal)?;
            Ok(json!({ "blocked": blocked, "unblocked": true }))
        }
        UiRequest::ListPermissions => {
            let grants = shared.grants.borrow();
            Ok(Value::Array(
                grants
                    .all()
                    .iter()
                    .map(|(origin, g)| json!({ "origin": origin, "grants": g }))
                    .collect(),
            ))
        }
        UiRequest::SetTrust { did, level, context } => set_trust(shared, did, level, context).await,
        UiRequest::ListTrust => trust_entries(shared, true).await,
        UiRequest::Sync { method, params } => ui_sync(shared, &method, params).await,
        UiRequest::CreateInvite => {
            // Reachable through the relay, then directly: `<circuit>/webrtc/p2p/<me>`.
            let me = Protocol::P2p(shared.peer_id);
            let addrs: Vec<String> = shared
                .live
                .borrow()
                .circuit_addrs
                .iter()
                .map(|a| {
                    let mut a = a.clone();
                    if a.iter().last() == Some(me.clone()) {
                        a.pop();
                    }
                    a.with(Protocol::WebRTC).with(me.clone()).to_string()
                })
                .collect();
            if addrs.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::ResourceUnavailable,
                    "not reachable yet: an invite needs a relay reservation (connect to a bootstrap node)",
                ));
            }
            let expires = now_ms() as u64 + disot_core::invite::DEFAULT_VALIDITY_MS;
            let name = shared.local.borrow().display_name().to_owned();
            let text =
                disot_core::invite::create(&shared.key, &name, addrs, expires).map_err(internal)?;
            let qr = disot_core::invite::qr_svg(&text).map_err(internal)?;
            Ok(json!({ "invite": text, "qrSvg": qr, "expiresMs": expires }))
        }
        UiRequest::AcceptInvite { invite, level } => {
            let invite = disot_core::invite::open(&invite, now_ms() as u64)
                .map_err(|e| ApiError::new(ErrorCode::InvalidParams, e.to_string()))?;
            if invite.did == shared.did {
                return Err(ApiError::new(
                    ErrorCode::InvalidParams,
                    "that is this peer's own invite",
                ));
            }
            set_trust(shared, invite.did.clone(), level, "content".into()).await?;
            // (`open` checked that every address parses and ends in the invite's peer.)
            let addrs: Vec<Multiaddr> =
                invite.addrs.iter().filter_map(|a| a.parse().ok()).collect();
            let peer =
                disot_core::identity::public_key_from_did(&invite.did).map(|k| k.to_peer_id());
            let mut dialing = Vec::new();
            if let (Ok(peer), false) = (peer, addrs.is_empty()) {
                let (tx, rx) = oneshot::channel();
                let dial = Command::DialInvited(peer, addrs, tx);
                if commands.send(dial).await.is_ok() && matches!(rx.await, Ok(Ok(()))) {
                    dialing = invite.addrs.clone();
                }
            }
            Ok(json!({
                "did": invite.did,
                "displayName": invite.display_name,
                "level": level,
                "dialing": dialing,
            }))
        }
        UiRequest::ExportIdentity { passphrase, current } => {
            lock_passphrase_given(shared, current.as_deref()).await?;
            Ok(json!({ "did": shared.did, "backup": seal_identity(shared, &passphrase)? }))
        }
        UiRequest::LockIdentity { passphrase, current } => {
            lock_passphrase_given(shared, current.as_deref()).await?;
            let sealed = seal_identity(shared, &passphrase)?;
            shared.store.lock_identity(&sealed).await.map_err(internal)?;
            shared.lock_enabled.set(true);
            Ok(json!({ "lockEnabled": true }))
        }
        UiRequest::RemoveLock { passphrase } => {
            let sealed = shared.store.sealed_identity().await.map_err(internal)?;
            let sealed = sealed
                .ok_or_else(|| ApiError::new(ErrorCode::InvalidParams, "the lock is not on"))?;
            let key = disot_core::backup::import(&sealed, &passphrase)
                .map_err(|e| ApiError::new(ErrorCode::InvalidParams, e.to_string()))?;
            shared.store.replace_identity(&key).await.map_err(internal)?;
            shared.lock_enabled.set(false);
            Ok(json!({ "lockEnabled": false }))
        }
        UiRequest::ImportIdentity { backup, passphrase, current } => {
            lock_passphrase_given(shared, current.as_deref()).await?;
            let key = disot_core::backup::import(&backup, &passphrase)
                .map_err(|e| ApiError::new(ErrorCode::InvalidParams, e.to_string()))?;
            let did = disot_core::identity::did_from_public_key(&key.public()).map_err(internal)?;
            // The restored key is stored in the clear: a lock is set again from the options.
            shared.store.replace_identity(&key).await.map_err(internal)?;
            shared.lock_enabled.set(false);
            Ok(json!({ "did": did, "restart": did != shared.did }))
        }
        UiRequest::DisconnectPeer { peer } => {
            let connected = shared.live.borrow().peers.contains_key(&peer);
            commands
                .send(Command::HangUp(peer))
                .await
                .map_err(|_| ApiError::new(ErrorCode::Disconnected, "node event loop stopped"))?;
            Ok(json!({ "disconnected": connected }))
        }
        UiRequest::DialPeer { addr, wait } => {
            let (answer, rx) = oneshot::channel();
            commands
                .send(Command::Dial { addr: addr.clone(), wait, answer })
                .await
                .map_err(|_| ApiError::new(ErrorCode::Disconnected, "node event loop stopped"))?;
            // A direct dial gives up after its own deadline; this one only bounds the wait.
            let outcome = futures::future::select(
                rx,
                Box::pin(futures_timer::Delay::new(Duration::from_secs(30))),
            )
            .await;
            match outcome {
                Either::Left((Ok(Ok(None)), _)) => Ok(json!({ "dialing": addr.to_string() })),
                Either::Left((Ok(Ok(Some(transport))), _)) => {
                    Ok(json!({ "connected": addr.to_string(), "transport": transport }))
                }
                Either::Left((Ok(Err(e)), _)) if wait => Err(ApiError::new(
                    ErrorCode::ResourceUnavailable,
                    format!("could not connect to {addr}: {e}"),
                )),
                Either::Left((Ok(Err(e)), _)) => Err(ApiError::new(ErrorCode::InvalidParams, e)),
                Either::Left((Err(_), _)) => {
                    Err(ApiError::new(ErrorCode::Disconnected, "node event loop stopped"))
                }
                Either::Right(_) => Err(ApiError::new(
                    ErrorCode::ResourceUnavailable,
                    format!("no connection to {addr} after 30 s"),
                )),
            }
        }
        UiRequest::RevokePermission { origin, permission } => {
            let grants = {
                let mut grants = shared.grants.borrow_mut();
                grants.revoke(&origin, permission);
                grants.clone()
            };
            // What the site waits for the user to answer with what was revoked is turned down
            // at once: a prompt still open for it can no longer be approved (it says so, and
            // closes).
            let waiting = shared.pending.borrow_mut().close_where(|r| {
                r.origin == origin && (permission.is_none() || r.needs() == permission)
            });
            answer_waiters(shared, waiting.into_iter().map(|id| (id, false)));
            shared.store.set_grants(&grants).await.map_err(internal)?;
            // Without the share permission, nothing it was allowed to share unasked stays so.
            if permission.is_none_or(|p| p == disot_core::permissions::Permission::Share) {
                shared.sync.preauth_remove(&origin, None).await?;
            }
            Ok(json!({ "origin": origin, "revoked": true }))
        }
        _ => Err(ApiError::new(ErrorCode::UnsupportedMethod, "not implemented")),
    }
}
