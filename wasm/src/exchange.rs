//! Content exchange with other peers: Bitswap 1.2.0 over libp2p streams (the state machines are
//! `disot_core::bitswap`), and fetching whole objects block by block.
//!
//! - Serving: only blocks of objects marked public are served; for anything else the answer
//!   is DONT_HAVE, the same as for blocks this browser does not hold.
//! - Fetching: the object's DAG is walked from its root with up to [`PARALLEL_BLOCKS`] blocks
//!   in flight; each block is verified (its CID is the hash of its bytes) and stored as it
//!   arrives, so a fetch that is interrupted resumes from what it stored (what it finds stored
//!   for other sites it asks for all the same: see [`Store::fetched_for`]). The object becomes
//!   visible only when all of it is there.
//! - Peers: a peer takes part once identify shows it speaks Bitswap. A peer that sends bytes
//!   nobody asked for is disconnected and never asked again.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;

use cid::Cid;
use disot_core::api::{ApiError, ErrorCode};
use disot_core::bitswap::{self, Client, Event, Incoming, Source};
use disot_core::cache::RecentBlocks;
use disot_core::inbound::InboundLimit;
use disot_core::store::{
    self, BlockStore, ContentSpan, Named, ObjectRecord, DAG_PB_CODEC, SHA2_256,
};
use disot_core::unixfs::Block;
use disot_core::unixfs::RAW_CODEC;
use futures::channel::{mpsc, oneshot};
use futures::future::{Fuse, FusedFuture as _, LocalBoxFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, SinkExt as _, StreamExt as _};
use libp2p::{PeerId, StreamProtocol};
use serde::Serialize;

use crate::node::now_ms;
use crate::store::Store;
use crate::sync::{internal, SHARES_ORIGIN};

/// Blocks of one object fetched at once.
const PARALLEL_BLOCKS: usize = 32;
/// Messages queued for one peer before senders wait.
const OUTBOX: usize = 16;
/// A stream to a peer that breaks after this long without a message is opened again (peers
/// close idle streams); one that breaks sooner is taken for a lost connection.
const REOPEN_IDLE_MS: f64 = 5_000.0;
/// Most fetched blocks waiting to be written (the fetch stops asking while it is reached).
const MAX_WRITE_BATCH: usize = 64;
/// Blocks read from the store ahead of the one being sent, per asking peer.
const READ_AHEAD: usize = 4;
/// Bytes of a fetched file's blocks kept for naming it while they wait for their turn (blocks
/// arrive about in order: this is the blocks in flight at once, of the largest chunk size).
const MAX_AHEAD_OF_TURN: usize = PARALLEL_BLOCKS * 1024 * 1024;
/// A fetched file up to this size is named by one digest with the browser's SHA-256 (four times
/// faster than wasm's) over its content, put together from the blocks as they were written;
/// a larger one is hashed in wasm as its blocks arrive.
const NAMED_AT_ONCE: u64 = 64 * 1024 * 1024;
/// How long the set of public blocks is trusted before it is read again.
const PUBLIC_TTL_MS: f64 = 2_000.0;
/// Fetches in progress at once (others wait for a turn).
const MAX_TRANSFERS: usize = 16;

pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new(bitswap::PROTOCOL);

/// Messages of one inbound stream being hashed at once.
const HASHING_AHEAD: usize = 4;
/// Inbound Bitswap streams served at once from one peer (ours keeps one open; others may open
/// a few), and from all peers. Each holds up to `HASHING_AHEAD + 1` messages of up to
/// `bitswap::MAX_MESSAGE_SIZE` and the one being read.
const INBOUND_PER_PEER: usize = 4;
const INBOUND_TOTAL: usize = 32;

/// Why an inbound stream is read no further.
enum Stop {
    Misbehaved(bitswap::Error),
    Hashing(wasm_bindgen::JsValue),
}

/// A received message decoded, each of its blocks named by the hash of its bytes (made with the
/// browser's SHA-256, all at once): one sent for another is then a block nobody asked for, or a
/// wrong one (see `Client`).
/// `who`: the sender, named if taking its message panics (see `disot_core::blame`).
fn hashed(message: Vec<u8>, who: Rc<str>) -> LocalBoxFuture<'static, Result<Incoming, Stop>> {
    let decoded = disot_core::blame::handling(&who, || bitswap::decode_unhashed(&message));
    async move {
        let message = decoded.map_err(Stop::Misbehaved)?;
        let hashing = message.blocks.iter().map(|(_, data)| crate::store::webcrypto_sha256(data));
        let digests = futures::future::try_join_all(hashing).await.map_err(Stop::Hashing)?;
        disot_core::blame::handling(&who, || message.hashed(&digests)).map_err(Stop::Misbehaved)
    }
    .boxed_local()
}

/// How a panic while taking `peer`'s message names it: by its DID, or its id if it has none.
fn blamed(peer: &PeerId) -> String {
    disot_core::identity::did_of_peer(peer).unwrap_or_else(|| peer.to_string())
}

/// A fetch in progress, as pages and the popup see it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Transfer {
    pub cid: String,
    pub bytes: u64,
    pub blocks: u64,
    /// The content's size, once the root block is here.
    pub total: Option<u64>,
    #[serde(skip)]
    pub origin: String,
    pub started_ms: f64,
}

/// What a fetch of an object answers.
type FetchAnswer = Result<(ObjectRecord, Fetched), ApiError>;

/// Requests of one origin that may wait for the same object's fetch.
const MAX_JOINED: usize = 64;
/// Fetches one origin may run at once (of [`MAX_TRANSFERS`]), and may have waiting for a turn.
const TRANSFERS_PER_ORIGIN: usize = 8;
const WAITING_PER_ORIGIN: usize = 128;
/// Fetches waiting for a turn, of all origins (sixteen origins' worth).
const WAITING_TOTAL: usize = 2048;

/// Either the fetch to run, or the answer of the same fetch that ran meanwhile.
enum Lead<'a> {
    Leading(Leading<'a>),
    Answered(FetchAnswer),
}

/// A fetch for an origin that the same origin's later requests for that object wait for.
struct Leading<'a> {
    exchange: &'a Exchange,
    key: String,
}

impl Leading<'_> {
    /// Hand the answer to those waiting (what was fetched is the leader's to count).
    fn answer(self, answer: &FetchAnswer) {
        let waiters = self.exchange.joining.borrow_mut().remove(&self.key).unwrap_or_default();
        for waiter in waiters {
            let copy = match answer {
                Ok((record, fetched)) => Ok((
                    record.clone(),
                    Fetched { content: fetched.content.clone(), ..Fetched::default() },
                )),
                Err(e) => Err(e.clone()),
            };
            let _ = waiter.send(copy);
        }
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        // Done or dropped, the fetch is no longer listed as running. (Ended unanswered: those
        // waiting fetch for themselves.)
        self.exchange.transfers.borrow_mut().remove(&self.key);
        self.exchange.joining.borrow_mut().remove(&self.key);
    }
}

/// An origin's turn to fetch (see [`disot_core::turns`]), given on to the next when dropped;
/// or, while `waiting`, its place in the queue.
struct Turn<'a> {
    exchange: &'a Exchange,
    origin: String,
    waiting: Option<oneshot::Receiver<()>>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // A waiter dropped after its turn came gives it back too.
        if let Some(rx) = self.waiting.as_mut() {
            if !matches!(rx.try_recv(), Ok(Some(()))) {
                return;
            }
        }
        self.exchange.turns.borrow_mut().give_back(&self.origin, |waiter| waiter.send(()).is_ok());
    }
}

/// Where a wanted block (or why it could not be had) goes.
type BlockWaiter = oneshot::Sender<Result<Vec<u8>, String>>;

/// What a fetch had to bring over the network (blocks its origin's interrupted fetch stored
/// are not counted).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Fetched {
    pub blocks: u64,
    pub bytes: u64,
    /// The content, when it came as one block of at most [`INLINE_MAX`] bytes (so that a page
    /// can have it with the answer instead of reading it back from the store).
    #[serde(skip)]
    pub content: Option<Vec<u8>>,
}

/// Largest content a fetch hands back with its answer.
pub(crate) const INLINE_MAX: usize = 64 * 1024;

/// Public blocks of up to this size that were served or published a moment ago are kept in
/// memory, [`RECENT_BYTES`] in all, and handed to the next peer that asks without a read of
/// the store (for a small object that read is about a third of the time the asker waits).
const RECENT_BLOCK_MAX: usize = 64 * 1024;
const RECENT_BYTES: usize = 4 * 1024 * 1024;

/// An inbound stream being served: the count of its peer's connections made when it came, and
/// whether it may still be answered.
type Served = (u64, std::rc::Weak<std::cell::Cell<bool>>);

#[derive(Default)]
struct PublicBlocks {
    cids: HashSet<Cid>,
    roots: Vec<Cid>,
    read_at: f64,
    /// Whether every record could be read (else `roots` may lack some).
    complete: bool,
    /// The blocks under each public root, walked once (a DAG never changes).
    walked: HashMap<Cid, Vec<Cid>>,
    /// Blocks of objects served by trust: the lowest trust level (0–100) any of them asks.
    restricted: HashMap<Cid, u8>,
    /// Blocks of objects shared with particular DIDs.
    shared: HashMap<Cid, std::collections::BTreeSet<String>>,
    /// Who we trust, directly and through others (as last read).
    trust: disot_core::trust::TrustGraph,
    /// Every DID's trust score for content, worked out when the set was read: refusing a
    /// restricted block then costs a lookup, as long as refusing one not held, and the time
    /// of an answer tells a peer nothing. Good until `scores_until` (the first expiry).
    scores: HashMap<String, f64>,
    scores_until: u64,
}

/// The links of dag-pb block `cid` not in `seen` yet (they are added to it). A link to a block
/// the store cannot hold (another hash than SHA-256, another codec) fails the fetch: no peer
/// could give it.
fn unseen_links(cid: &Cid, data: &[u8], seen: &mut HashSet<Cid>) -> Result<Vec<Cid>, ApiError> {
    let links = store::dag_pb_links(cid, data).map_err(internal)?;
    for link in &links {
        store::check_block(link, 0).map_err(|e| {
            ApiError::new(ErrorCode::InvalidParams, format!("{cid} links {link}: {e}"))
        })?;
    }
    Ok(links.into_iter().filter(|link| seen.insert(*link)).collect())
}

/// While it lives, space is being freed (see [`Exchange::collecting`]).
pub(crate) struct Collecting<'a>(&'a Exchange);

impl Drop for Collecting<'_> {
    fn drop(&mut self) {
        self.0.collecting.set(false);
    }
}

/// Messages waiting to go to one peer, and whether they still may.
struct Outbox {
    tx: mpsc::Sender<Vec<u8>>,
    live: Rc<std::cell::Cell<bool>>,
}

pub(crate) struct Exchange {
    /// Itself, for the tasks it starts.
    this: std::rc::Weak<Exchange>,
    control: RefCell<libp2p_stream::Control>,
    client: RefCell<Client>,
    waiters: RefCell<HashMap<Cid, Vec<BlockWaiter>>>,
    outboxes: RefCell<HashMap<PeerId, Outbox>>,
    /// Per peer, whether each of its inbound streams being served may still be answered, with
    /// the count of its connections made when the stream came (see [`Exchange::serve`]).
    serving: RefCell<HashMap<PeerId, Vec<Served>>>,
    /// Per connected peer, how many connections to it were made so far.
    connections_made: RefCell<HashMap<PeerId, u64>>,
    store: Rc<Store>,
    public: RefCell<PublicBlocks>,
    /// Small blocks lately served or published (read from the store, so verified), for
    /// peers allowed them only: emptied whenever access changes.
    recent: RefCell<RecentBlocks>,
    /// This peer's DID (trust scores start here).
    did: String,
    public_lock: futures::lock::Mutex<()>,
    /// Counts [`Exchange::access_changed`]: a read of the public set that a change overtook
    /// is installed as stale, so that it is read again before it is trusted.
    access_epoch: std::cell::Cell<u64>,
    transfers: RefCell<BTreeMap<String, Transfer>>,
    /// Fetches running or waiting for a turn, by `"<origin> <root>"`: the same origin's other
    /// requests for that object waiting for its answer.
    joining: RefCell<HashMap<String, Vec<oneshot::Sender<FetchAnswer>>>>,
    turns: RefCell<disot_core::turns::Turns<String, oneshot::Sender<()>>>,
    /// The objects this store holds for each origin, as far as this node knows: a hash of
    /// each root's CID with each origin it is held for, taken from every read of all records
    /// (`refresh_public`) and added to as objects are stored here or by other contexts (which
    /// say so, `crate::notice`).
    held: RefCell<HashSet<u64>>,
    /// Whether all records have been read into `held` yet.
    held_read: std::cell::Cell<bool>,
    /// Peers to disconnect (the event loop owns the swarm and takes them).
    banned: RefCell<Vec<(PeerId, String)>>,
    /// Space is being freed (see [`Exchange::collecting`]).
    collecting: std::cell::Cell<bool>,
    /// Test builds only: answering a want for this block panics, after a wait.
    crash_on_want: std::cell::Cell<Option<Cid>>,
    /// How long an inbound stream may go without a whole message (see
    /// [`bitswap::STREAM_IDLE_MS`]; shorter in tests).
    stream_idle_ms: std::cell::Cell<u64>,
}

impl Exchange {
    pub(crate) fn new(control: libp2p_stream::Control, store: Rc<Store>, did: String) -> Rc<Self> {
        Rc::new_cyclic(|this| Exchange {
            this: this.clone(),
            did,
            control: RefCell::new(control),
            client: RefCell::new(Client::new()),
            waiters: RefCell::default(),
            outboxes: RefCell::default(),
            serving: RefCell::default(),
            connections_made: RefCell::default(),
            store,
            public: RefCell::default(),
            recent: RefCell::new(RecentBlocks::new(RECENT_BLOCK_MAX, RECENT_BYTES)),
            public_lock: futures::lock::Mutex::new(()),
            access_epoch: std::cell::Cell::new(0),
            transfers: RefCell::default(),
            joining: RefCell::default(),
            turns: RefCell::new(disot_core::turns::Turns::new(
                MAX_TRANSFERS,
                TRANSFERS_PER_ORIGIN,
                WAITING_PER_ORIGIN,
                WAITING_TOTAL,
            )),
            held: RefCell::default(),
            held_read: std::cell::Cell::new(false),
            banned: RefCell::default(),
            collecting: std::cell::Cell::new(false),
            crash_on_want: std::cell::Cell::new(None),
            stream_idle_ms: std::cell::Cell::new(bitswap::STREAM_IDLE_MS),
        })
    }

    /// Test builds only: inbound streams are dropped after `ms` without a whole message.
    pub(crate) fn set_stream_idle_ms(&self, ms: u64) {
        self.stream_idle_ms.set(ms);
    }

    /// For test builds: answering a peer's want for `cid` panics once the answer has waited on
    /// something, as a bug in serving it would (see `disot_core::blame::handling_async`).
    pub(crate) fn crash_on_want(&self, cid: Cid) {
        self.crash_on_want.set(Some(cid));
    }

    /// Object `root` was stored for `origin`.
    pub(crate) fn note_held(&self, root: &str, origin: &str) {
        self.held.borrow_mut().insert(held_key(root, origin));
    }

    /// Whether the store may hold object `root` for `origin`: false only if it surely does
    /// not, as far as this node knows (an object another context stored a moment ago may not
    /// be known yet). Held for other origins only counts as not held: a page learns no more
    /// from how long an answer takes than from the answer.
    pub(crate) fn may_hold(&self, root: &Cid, origin: &str) -> bool {
        !self.held_read.get() || self.held.borrow().contains(&held_key(&root.to_string(), origin))
    }

    /// Serve inbound Bitswap streams for as long as the node runs, as many at once as
    /// [`INBOUND_PER_PEER`] and [`INBOUND_TOTAL`] allow (the others are reset).
    pub(crate) fn start(self: &Rc<Self>) -> Result<(), String> {
        let mut incoming = self.control.borrow_mut().accept(PROTOCOL).map_err(|e| e.to_string())?;
        let this = self.clone();
        let limit = InboundLimit::new(INBOUND_PER_PEER, INBOUND_TOTAL);
        wasm_bindgen_futures::spawn_local(async move {
            while let Some((peer, stream)) = incoming.next().await {
                let Ok(admitted) = limit.admit(&peer).inspect_err(|e| {
                    tracing::debug!("bitswap stream from {peer} refused: {e}");
                }) else {
                    continue;
                };
                let this = this.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    this.serve(peer, stream).await;
                    drop(admitted);
                });
            }
        });
        Ok(())
    }

    pub(crate) fn peer_connected(&self, peer: PeerId) {
        self.client.borrow_mut().peer_connected(peer, now_ms() as u64);
        self.flush();
    }

    /// A connection to `peer` was made (its first or another).
    pub(crate) fn connection_made(&self, peer: PeerId) {
        *self.connections_made.borrow_mut().entry(peer).or_default() += 1;
    }

    pub(crate) fn peer_disconnected(&self, peer: &PeerId) {
        self.retire_outbox(peer);
        self.stop_serving(peer, u64::MAX);
        self.connections_made.borrow_mut().remove(peer);
        self.client.borrow_mut().peer_disconnected(peer, now_ms() as u64);
        self.flush();
    }

    /// A connection to `peer` closed while another remains.
    pub(crate) fn connection_lost(&self, peer: PeerId) {
        self.retire_outbox(&peer);
        // The streams that came before the newest connection was made stop being answered
        // (a peer that restarted opened its streams on that one; one replacing a relayed
        // connection by a direct one asks again there).
        let newest = self.connections_made.borrow().get(&peer).copied().unwrap_or(0);
        self.stop_serving(&peer, newest);
        self.client.borrow_mut().peer_reconnected(peer, now_ms() as u64);
        self.flush();
    }

    pub(crate) fn tick(&self) {
        self.client.borrow_mut().tick(now_ms() as u64);
        self.flush();
    }

    pub(crate) fn is_peer(&self, peer: &PeerId) -> bool {
        self.client.borrow().peers().any(|p| p == peer)
    }

    pub(crate) fn has_peers(&self) -> bool {
        self.client.borrow().peers().next().is_some()
    }

    /// Neither ask `peer` nor answer it (a message of it made this node crash; see
    /// `SyncNode::cut_off`), until [`Exchange::allow`].
    pub(crate) fn cut_off(&self, peer: PeerId, reason: String) {
        self.client.borrow_mut().ban(peer, reason, now_ms() as u64);
        self.flush();
    }

    /// Ask and answer `peer` again.
    pub(crate) fn allow(&self, peer: &PeerId) {
        self.client.borrow_mut().unban(peer);
    }

    pub(crate) fn take_banned(&self) -> Vec<(PeerId, String)> {
        std::mem::take(&mut *self.banned.borrow_mut())
    }

    pub(crate) fn transfers(&self, origin: Option<&str>) -> Vec<Transfer> {
        self.transfers
            .borrow()
            .values()
            .filter(|t| origin.is_none_or(|o| o == t.origin))
            .cloned()
            .collect()
    }

    /// Fetches waiting for their turn (see [`Exchange::fetch_object`]), of all origins.
    pub(crate) fn fetches_waiting(&self) -> usize {
        self.turns.borrow().waiting()
    }

    /// Roots of the public objects (for provider records), as last read.
    /// The roots of the public objects and when they were read, unless the records could not
    /// all be read.
    pub(crate) async fn public_roots(&self) -> Option<(f64, Vec<Cid>)> {
        self.refresh_public(true).await;
        let public = self.public.borrow();
        public.complete.then(|| (public.read_at, public.roots.clone()))
    }

    async fn serve(self: Rc<Self>, peer: PeerId, mut stream: libp2p::Stream) {
        // A peer that misbehaved is neither asked nor answered (its stream is dropped: reset).
        if self.client.borrow().is_banned(&peer) {
            return;
        }
        // Its wants are answered until a connection of the peer is lost while a newer one than
        // this stream is up: what was read and not yet answered may then be wants of a peer
        // that restarted since, and answers to them blocks it never asked for (see
        // `connection_lost`). It asks again for what it still wants. (What it sends in answer
        // to our wants is taken as ever.)
        let live = Rc::new(std::cell::Cell::new(true));
        {
            let made = self.connections_made.borrow().get(&peer).copied().unwrap_or(0);
            let mut serving = self.serving.borrow_mut();
            let streams = serving.entry(peer).or_default();
            streams.retain(|(_, s)| s.strong_count() > 0);
            streams.push((made, Rc::downgrade(&live)));
        }
        // The stream is read on while the blocks of the messages before are hashed (the
        // browser's SHA-256 settles later; Firefox settles it on this thread, behind the data
        // channel's own events). Messages are handed on in the order they came. Read ahead: those
        // being hashed, and one more.
        let (mut to_hash, hashing) = mpsc::channel(0);
        let who: Rc<str> = blamed(&peer).into();
        let reading_who = who.clone();
        let idle = std::time::Duration::from_millis(self.stream_idle_ms.get());
        let reading = async move {
            let who = reading_who;
            loop {
                // A stream that brings no whole message for a while is dropped: its place is
                // for others (see `bitswap::STREAM_IDLE_MS`).
                let read = bitswap::read_frame(&mut stream);
                let message =
                    match futures::future::select(Box::pin(read), futures_timer::Delay::new(idle))
                        .await
                    {
                        futures::future::Either::Left((Ok(Some(bytes)), _)) => bytes,
                        futures::future::Either::Left((Ok(None), _)) => return,
                        futures::future::Either::Left((Err(e), _)) => {
                            tracing::info!("bitswap stream from {peer}: {e}");
                            return;
                        }
                        futures::future::Either::Right(_) => {
                            tracing::info!("bitswap stream from {peer}: idle too long, dropped");
                            return;
                        }
                    };
                if to_hash.send(hashed(message, who.clone())).await.is_err() {
                    return;
                }
            }
        };
        // Every poll of what the peer's messages set off (answering its wants from the store
        // included) names it, should it panic.
        let handling = disot_core::blame::handling_async(who.clone(), async {
            let mut hashed = hashing.buffered(HASHING_AHEAD);
            while let Some(incoming) = hashed.next().await {
                match incoming {
                    Ok(incoming) => self.on_message(peer, &who, incoming, &live).await,
                    Err(Stop::Misbehaved(e)) => {
                        self.client.borrow_mut().ban(peer, e.to_string(), now_ms() as u64);
                        self.flush();
                        return;
                    }
                    Err(Stop::Hashing(e)) => {
                        tracing::warn!("bitswap stream from {peer}: hashing a block: {e:?}");
                        return;
                    }
                }
            }
        });
        futures::pin_mut!(reading, handling);
        // When the stream ends, what was read is still handed on; when handling stops (a peer
        // that misbehaved), the stream is read no further.
        if let futures::future::Either::Left(((), handling)) =
            futures::future::select(reading, handling).await
        {
            handling.await;
        }
    }

    /// `who`: the peer as a panic names it (`blamed`); `live`: whether its stream may still be
    /// answered (see `serve`).
    async fn on_message(
        &self,
        peer: PeerId,
        who: &str,
        mut incoming: Incoming,
        live: &std::cell::Cell<bool>,
    ) {
        let wants = std::mem::take(&mut incoming.wants);
        // (Checked with nothing awaited before the queue is taken: a queue retired since is
        // closed, and its sends fail.)
        if !wants.is_empty() && live.get() {
            // Blocks are read a few at a time and each goes out as soon as it is read (the
            // asker keeps the pipe full); presences go together at the end.
            let source = Public(self);
            let mut answers = futures::stream::iter(wants.iter())
                .map(|w| bitswap::answer(&source, &peer, w))
                .buffered(READ_AHEAD);
            let mut sender = self.sender(peer);
            let mut presences = bitswap::Outgoing::default();
            while let Some(mut out) = answers.next().await {
                presences.presences.append(&mut out.presences);
                if out.blocks.is_empty() {
                    continue;
                }
                for frame in out.encode() {
                    // Waiting here slows the asker down instead of queueing without bound.
                    if sender.send(frame).await.is_err() {
                        return;
                    }
                }
            }
            for frame in presences.encode() {
                if sender.send(frame).await.is_err() {
                    return;
                }
            }
        }
        if !incoming.blocks.is_empty() || !incoming.presences.is_empty() {
            disot_core::blame::handling(who, || {
                self.client.borrow_mut().on_message(peer, incoming, now_ms() as u64)
            });
            self.flush();
        }
    }

    /// The answers queued for `peer` are for wants made on a connection that is gone: none of
    /// them goes out (a peer that restarted would get blocks it never asked for, and rightly
    /// take us for a misbehaving peer); answering them stops.
    fn retire_outbox(&self, peer: &PeerId) {
        if let Some(mut outbox) = self.outboxes.borrow_mut().remove(peer) {
            outbox.live.set(false);
            outbox.tx.close_channel();
        }
    }

    /// Stop answering `peer`'s inbound streams that came while fewer than `made` connections
    /// to it had been made (all of them with `u64::MAX`).
    fn stop_serving(&self, peer: &PeerId, made: u64) {
        let mut serving = self.serving.borrow_mut();
        let Some(streams) = serving.get_mut(peer) else { return };
        streams.retain(|(when, stream)| match stream.upgrade() {
            Some(live) if *when < made => {
                live.set(false);
                false
            }
            Some(_) => true,
            None => false,
        });
        if streams.is_empty() {
            serving.remove(peer);
        }
    }

    /// The queue of messages to `peer`, with a task that writes them to one outbound stream
    /// (opened again if it broke idle), until the connections they answer are gone.
    fn sender(&self, peer: PeerId) -> mpsc::Sender<Vec<u8>> {
        let mut outboxes = self.outboxes.borrow_mut();
        if let Some(outbox) = outboxes.get(&peer).filter(|o| !o.tx.is_closed()) {
            return outbox.tx.clone();
        }
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUTBOX);
        let live = Rc::new(std::cell::Cell::new(true));
        let control = self.control.borrow().clone();
        let still = live.clone();
        let this = self.this.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let mut stream = None;
            let mut last_sent = f64::NEG_INFINITY;
            while let Some(frame) = rx.next().await {
                if !still.get() {
                    break;
                }
                // A stream is opened again only if it broke idle (peers close idle streams):
                // one that breaks while answers flow most likely went with its connection, and
                // a new one could reach the same peer restarted, with blocks it never asked
                // for. Nor once retired. The asker asks again for what it still wants.
                // (Idle before this frame: a write stuck on a dead connection is not idle.)
                let idle = now_ms() - last_sent > REOPEN_IDLE_MS;
                let open = || {
                    let mut control = control.clone();
                    let allowed = still.get() && idle;
                    async move {
                        if !allowed {
                            return Err(libp2p_stream::OpenStreamError::Io(std::io::Error::other(
                                "the stream broke while answers were flowing",
                            )));
                        }
                        control.open_stream(peer, PROTOCOL).await
                    }
                };
                match bitswap::send_frame(&mut stream, open, &frame).await {
                    Ok(()) => last_sent = now_ms(),
                    Err(e) => {
                        tracing::info!("bitswap to {peer}: {e}; what was queued for it is dropped");
                        // Our own wants were queued too: the peer is asked again for what we
                        // still want, on a new queue (this one is closed first), if this one
                        // worked for a while (one that never could would only fail again).
                        rx.close();
                        let worked = last_sent.is_finite();
                        if let Some(exchange) = this.upgrade().filter(|_| still.get() && worked) {
                            exchange.client.borrow_mut().peer_reconnected(peer, now_ms() as u64);
                            exchange.flush();
                        }
                        break;
                    }
                }
            }
        });
        outboxes.insert(peer, Outbox { tx: tx.clone(), live });
        tx
    }

    /// Send what the client queued and hand out what it reported.
    fn flush(&self) {
        loop {
            let Some((peer, out)) = self.client.borrow_mut().poll_send() else { break };
            let sender = self.sender(peer);
            for frame in out.encode() {
                let mut sender = sender.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let _ = sender.send(frame).await;
                });
            }
        }
        loop {
            let Some(event) = self.client.borrow_mut().poll_event() else { break };
            match event {
                Event::Block { cid, data, .. } => self.resolve(&cid, Ok(data)),
                Event::NotFound { cid } => {
                    self.resolve(&cid, Err("no connected peer has it".into()))
                }
                Event::Misbehaved { peer, reason } => {
                    tracing::warn!("disconnecting {peer}: {reason}");
                    self.banned.borrow_mut().push((peer, reason));
                }
            }
        }
    }

    fn resolve(&self, cid: &Cid, result: Result<Vec<u8>, String>) {
        let waiters = self.waiters.borrow_mut().remove(cid);
        for waiter in waiters.unwrap_or_default() {
            let _ = waiter.send(result.clone());
        }
    }

    /// One block from the connected peers, verified (its CID is the hash of its bytes). The
    /// want goes out when this is called, not when the answer is first awaited.
    fn block(&self, cid: Cid) -> impl std::future::Future<Output = Result<Vec<u8>, String>> + '_ {
        // A fetch that gives up drops its other block futures: their wants go with them, so
        // that a later fetch of the same blocks starts afresh instead of sharing a want that
        // no longer asks the peers connected since. So does a request that found the block
        // held after its early want went out, or joined a fetch of it.
        let (tx, rx) = oneshot::channel();
        self.waiters.borrow_mut().entry(cid).or_default().push(tx);
        // (On a refused want, dropping it takes its sender out again.)
        let mut waiting = Waiting { exchange: self, cid, rx: Some(rx) };
        let wanted = self.client.borrow_mut().want(cid, now_ms() as u64);
        self.flush();
        async move {
            wanted.map_err(|e| e.to_string())?;
            let rx = waiting.rx.as_mut().ok_or("the fetch was dropped")?;
            rx.await.unwrap_or_else(|_| Err("the fetch was dropped".into()))
        }
    }

    /// Object `root` if `origin` holds it already: its record, and its content when that is one
    /// block of at most [`INLINE_MAX`] bytes and `inline` asks for it (read and verified).
    pub(crate) async fn held_for(
        &self,
        root: Cid,
        origin: &str,
        inline: bool,
    ) -> Result<Option<(ObjectRecord, Fetched)>, ApiError> {
        // Small content is read with its record, in one transaction.
        let (record, content) = if inline && root.codec() == RAW_CODEC {
            self.store.object_and_block_up_to(&root, INLINE_MAX as u64).await
        } else {
            self.store.object(&root.to_string()).await.map(|r| (r, None))
        }
        .map_err(internal)?;
        let Some(record) = record.filter(|r| r.origins.iter().any(|o| o == origin)) else {
            return Ok(None);
        };
        Ok(Some((record, Fetched { content, ..Fetched::default() })))
    }

    /// Bring object `root` from connected peers into the store, for `origin`.
    /// Peers shared with this user are held for [`SHARES_ORIGIN`]: an origin that
    /// `sees_shares` (it may list them) takes them as its own, without asking a peer.
    pub(crate) async fn fetch_object(
        &self,
        root: Cid,
        origin: &str,
        sees_shares: bool,
    ) -> Result<(ObjectRecord, Fetched), ApiError> {
        // One fetch of an object per origin: the same origin asking again meanwhile has the
        // running fetch's answer. Another origin's fetch of the same object runs on its own
        // (the wants are shared), so that a page learns nothing of what other sites fetch and
        // is not held up by them. Fetches beyond those that may run at once wait for a turn,
        // origin by origin.
        let key = format!("{origin} {root}");
        let mut quick_turn =
            if self.joining.borrow().contains_key(&key) { None } else { self.try_turn(origin) };
        // A one-block object is asked of the peers at once, while the store is read: for a
        // small object that read would otherwise be a good part of the time to its first byte.
        // (If it is held after all, the want is dropped, and with it cancelled.) Not by a
        // fetch that waits: the want would bring the block before its turn.
        let one_block = root.codec() == RAW_CODEC;
        let mut early =
            (one_block && quick_turn.is_some() && self.has_peers()).then(|| self.block(root));
        // (A block held without a record, a part of some object, maybe another origin's, is
        // not answered for from the store either: a page could otherwise probe for another
        // site's content by the CID of one of its chunks. A peer has to serve it.)
        // Held for other sites only, it is fetched as if it were not held, every block from a
        // peer: the store does not answer for what it holds for others (a page would learn
        // what other sites stored, and get their bytes by CID).
        let held = self.store.object(&root.to_string()).await.map_err(internal)?;
        let mine = |o: &String| o == origin || (sees_shares && o == SHARES_ORIGIN);
        if let Some(mut record) = held.filter(|r| r.origins.iter().any(mine)) {
            if !record.origins.iter().any(|o| o == origin) {
                // Shared with this user: joined to the record as stored by then (a share
                // revoked meanwhile stays revoked, the other origins' pins as they are), and
                // pinned for this origin, as any object it fetched.
                let joined = ObjectRecord {
                    origins: vec![origin.to_owned()],
                    pinned: true,
                    unpinned_by: Vec::new(),
                    ..record.clone()
                };
                self.store.join_object(&joined).await.map_err(internal)?;
                record.origins.push(origin.to_owned());
            }
            self.note_held(&record.cid, origin);
            return Ok((record, Fetched::default()));
        }
        if !self.has_peers() {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "not held here and no peer is connected",
            ));
        }
        // The same fetch started while the store was read: this request joins it, and gives
        // back the turn it took meanwhile (and its early want), or requests for one object
        // would take the turns of others. (Nothing is awaited from here to the joining.)
        if self.joining.borrow().contains_key(&key) {
            quick_turn = None;
            early = None;
        }
        let leading = match self.lead_or_join(&key).await? {
            Lead::Leading(leading) => leading,
            Lead::Answered(answer) => return answer,
        };
        let _turn = match quick_turn {
            Some(turn) => turn,
            None => self.turn(origin).await?,
        };
        if self.collecting.get() {
            return Err(ApiError::new(
                ErrorCode::ResourceUnavailable,
                "the space is being freed: fetch again in a moment",
            ));
        }
        {
            self.transfers.borrow_mut().insert(
                key.clone(),
                Transfer {
                    cid: root.to_string(),
                    bytes: 0,
                    blocks: 0,
                    total: None,
                    origin: origin.to_owned(),
                    started_ms: now_ms(),
                },
            );
        }
        let result = if one_block {
            self.fetch_block(root, early, origin).await
        } else {
            self.fetch_file(root, &key, origin).await
        };
        if result.is_ok() {
            self.note_held(&root.to_string(), origin);
        }
        leading.answer(&result);
        result
    }

    /// The fetch `key` (an origin and an object) runs already: wait for its answer (or, should
    /// it end unanswered, run it); otherwise lead it.
    async fn lead_or_join(&self, key: &str) -> Result<Lead<'_>, ApiError> {
        loop {
            let joined = {
                let mut joining = self.joining.borrow_mut();
                match joining.get_mut(key) {
                    Some(waiters) if waiters.len() >= MAX_JOINED => {
                        return Err(ApiError::new(
                            ErrorCode::LimitExceeded,
                            format!("{MAX_JOINED} requests wait for that object's fetch already"),
                        ))
                    }
                    Some(waiters) => {
                        let (tx, rx) = oneshot::channel();
                        waiters.push(tx);
                        rx
                    }
                    None => {
                        joining.insert(key.to_owned(), Vec::new());
                        return Ok(Lead::Leading(Leading { exchange: self, key: key.to_owned() }));
                    }
                }
            };
            if let Ok(answer) = joined.await {
                return Ok(Lead::Answered(answer));
            }
        }
    }

    /// A turn to fetch for `origin`, at once or once the fetches before it are done.
    async fn turn(&self, origin: &str) -> Result<Turn<'_>, ApiError> {
        if let Some(turn) = self.try_turn(origin) {
            return Ok(turn);
        }
        let (tx, rx) = oneshot::channel();
        self.turns.borrow_mut().queue(origin.to_owned(), tx).map_err(|e| {
            ApiError::new(ErrorCode::LimitExceeded, format!("too many fetches: {e}"))
        })?;
        let mut turn = Turn { exchange: self, origin: origin.to_owned(), waiting: Some(rx) };
        if let Some(rx) = turn.waiting.as_mut() {
            rx.await.map_err(|_| internal("the turns to fetch went away"))?;
            turn.waiting = None;
        }
        Ok(turn)
    }

    /// A turn to fetch for `origin`, if one is free now.
    fn try_turn(&self, origin: &str) -> Option<Turn<'_>> {
        let taken = self.turns.borrow_mut().try_take(&origin.to_owned());
        taken.then(|| Turn { exchange: self, origin: origin.to_owned(), waiting: None })
    }

    /// An object of several blocks: its DAG, then its record, once every block is stored and
    /// verified. The content is named (hashed in file order) as its blocks arrive; only if too
    /// many came ahead of their turn is it read back from the store for that.
    async fn fetch_file(
        &self,
        root: Cid,
        key: &str,
        origin: &str,
    ) -> Result<(ObjectRecord, Fetched), ApiError> {
        let mut named = store::ContentHasher::spans_up_to(root, MAX_AHEAD_OF_TURN, NAMED_AT_ONCE);
        let mut kept = HashMap::new();
        let (fetched, blocks) = self.fetch_dag(root, key, origin, &mut named, &mut kept).await?;
        let named = match named.finish().map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("the peers' copy of {root} is malformed: {e}"),
            )
        })? {
            Some(Named::Spans(spans, size)) => self.hash_spans(&spans, size, &kept).await,
            Some(Named::Hashed(sha256, size)) => Some((sha256, size)),
            None => None,
        };
        drop(kept);
        let (sha256, size) = match named {
            Some(done) => done,
            None => {
                let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
                let mut size = 0u64;
                store::cat(&*self.store, &root, None, |bytes| {
                    sha2::Digest::update(&mut hasher, bytes);
                    size += bytes.len() as u64;
                    Ok(())
                })
                .await
                .map_err(internal)?;
                (sha2::Digest::finalize(hasher).into(), size)
            }
        };
        let record = fetched_record(&root, &sha256, size, origin);
        // Joined to a record another context wrote meanwhile (the same content put by a page).
        self.store.join_object(&record).await.map_err(internal)?;
        if let Err(e) = self.store.fetch_done(origin, &blocks).await {
            // (They are taken from the store if this origin fetches the object again.)
            tracing::warn!("forgetting which blocks the fetch of {root} stored: {e}");
        }
        Ok((record, fetched))
    }

    /// An object of one raw block (`early`, its want if that went out already), stored with
    /// its record in one transaction.
    async fn fetch_block(
        &self,
        root: Cid,
        early: Option<impl std::future::Future<Output = Result<Vec<u8>, String>>>,
        origin: &str,
    ) -> Result<(ObjectRecord, Fetched), ApiError> {
        let answer = match early {
            Some(asked) => asked.await,
            None => self.block(root).await,
        };
        let data =
            answer.map_err(|e| ApiError::new(ErrorCode::NotFound, format!("block {root}: {e}")))?;
        let content = (data.len() <= INLINE_MAX).then(|| data.clone());
        let fetched = Fetched { blocks: 1, bytes: data.len() as u64, content };
        // A raw block's CID names the hash of its content: it is the `sha256:` name when that
        // hash is SHA-256.
        let sha256 = if root.hash().code() == SHA2_256 {
            root.hash().digest().to_vec()
        } else {
            <sha2::Sha256 as sha2::Digest>::digest(&data).to_vec()
        };
        let record = fetched_record(&root, &sha256, data.len() as u64, origin);
        let store = self.store.clone();
        let written = record.clone();
        let mut write =
            Box::pin(
                async move { store.put_fetched(&[Block { cid: root, data }], &written).await },
            );
        // Content fetched just now goes back to the page without waiting for its write to
        // commit (a good part of a first byte's time). The write's transaction is made here,
        // before anyone hears of the fetch, and IndexedDB runs every transaction made later on
        // the same stores after it, in any context: whoever reads next sees block and record.
        // (Only a connection the browser closed, reopened first, makes it later: by then the
        // write waits on that open alone.) Content not handed back waits for the write, as does
        // a write that fails at once; a write that fails later leaves nothing stored and says
        // so in the log (the bytes handed back were verified).
        match futures::poll!(&mut write) {
            std::task::Poll::Ready(done) => done.map_err(internal)?,
            std::task::Poll::Pending if fetched.content.is_some() => {
                wasm_bindgen_futures::spawn_local(async move {
                    if let Err(e) = write.await {
                        tracing::warn!("storing fetched block {root}: {e}");
                    }
                });
            }
            std::task::Poll::Pending => write.await.map_err(internal)?,
        }
        Ok((record, fetched))
    }

    fn note_root(&self, key: &str, root: &Cid, block: &[u8]) {
        if let (Some(t), Ok(size)) =
            (self.transfers.borrow_mut().get_mut(key), store::file_size(root, block))
        {
            t.total = Some(size);
        }
    }

    /// The SHA-256 and size of content of `size` bytes lying in `spans` of blocks, those in
    /// `kept` from there and the others from the store; `None` if that cannot be done (it is
    /// then read back).
    async fn hash_spans(
        &self,
        spans: &[ContentSpan],
        size: u64,
        kept: &HashMap<Cid, js_sys::Uint8Array>,
    ) -> Option<([u8; 32], u64)> {
        if size > NAMED_AT_ONCE {
            return None;
        }
        let content = js_sys::Uint8Array::new_with_length(size as u32);
        let mut at = 0u32;
        for span in spans {
            let block = match kept.get(&span.cid) {
                Some(block) => block.clone(),
                None => self.store.get_js(&span.cid).await.ok()??,
            };
            let (start, end) = (span.offset as u32, (span.offset + span.len) as u32);
            if end > block.length() || at + (end - start) > size as u32 {
                return None;
            }
            content.set(&block.subarray(start, end), at);
            at += end - start;
        }
        if u64::from(at) != size {
            return None;
        }
        Some((crate::store::sha256(&content).await.ok()?, size))
    }

    /// The blocks of `root`'s DAG, from the peers, verified and written in batches; the
    /// content named by `named` as they come. If it notes spans, each block's bytes are kept
    /// in `kept` (as written) for naming the content at the end. Only what an earlier,
    /// interrupted fetch for `origin` stored is taken from the store
    /// ([`Store::fetched_for`]); every other block is asked for, held or not.
    async fn fetch_dag(
        &self,
        root: Cid,
        key: &str,
        origin: &str,
        named: &mut store::ContentHasher,
        kept: &mut HashMap<Cid, js_sys::Uint8Array>,
    ) -> Result<(Fetched, HashSet<Cid>), ApiError> {
        let failed = |what: String| ApiError::new(ErrorCode::NotFound, what);
        let mut resumed = self.store.fetched_for(origin).await.map_err(internal)?;
        let mut queue = VecDeque::from([root]);
        // Each block is asked for once, however often the DAG links it (a file with repeated
        // chunks, or a hostile one whose every node links the same few blocks many times).
        let mut seen = HashSet::from([root]);
        let mut in_flight = FuturesUnordered::new();
        let mut fetched = Fetched::default();
        // Blocks arrive verified (the Bitswap client names each by the hash of its bytes).
        // They are written in batches, one transaction each, while the next ones arrive: a
        // transaction per block made the store, not the network, the limit.
        let mut pending: Vec<(Cid, wasm_bindgen::JsValue)> = Vec::new();
        let mut kept_bytes = 0u64;
        let mut writing: Fuse<LocalBoxFuture<'_, store::Result<()>>> = Fuse::terminated();
        loop {
            while in_flight.len() < PARALLEL_BLOCKS && pending.len() < MAX_WRITE_BATCH {
                let Some(cid) = queue.pop_front() else { break };
                // Stored by an earlier, interrupted fetch for this origin: only its links are
                // needed. Not the root: a peer serves that, as for any object not held for
                // this origin.
                let stored = if cid != root && resumed.remove(&cid) {
                    self.store.get(&cid).await.map_err(internal)?
                } else {
                    None
                };
                if let Some(data) = stored {
                    // Not valid UnixFS: the read-back names the error.
                    let _ = named.offer(&cid, &data);
                    if cid.codec() == DAG_PB_CODEC {
                        queue.extend(unseen_links(&cid, &data, &mut seen)?);
                    }
                    continue;
                }
                in_flight.push(async move { (cid, self.block(cid).await) });
            }
            if writing.is_terminated() && !pending.is_empty() {
                let batch = std::mem::take(&mut pending);
                writing = async move { self.store.put_fetched_blocks(&batch, origin).await }
                    .boxed_local()
                    .fuse();
            }
            if in_flight.is_empty() && writing.is_terminated() {
                break;
            }
            futures::select! {
                written = writing => written.map_err(internal)?,
                arrived = in_flight.select_next_some() => {
                    let (cid, result) = arrived;
                    let data = match result {
                        Ok(data) => data,
                        Err(e) => {
                            // What did arrive is kept: a later fetch asks only for the rest.
                            if !writing.is_terminated() {
                                let _ = (&mut writing).await;
                            }
                            if !pending.is_empty() {
                                let _ = self.store.put_fetched_blocks(&pending, origin).await;
                            }
                            return Err(failed(format!("block {cid}: {e}")));
                        }
                    };
                    let _ = named.offer(&cid, &data);
                    if cid == root {
                        self.note_root(key, &cid, &data);
                    }
                    if cid.codec() == DAG_PB_CODEC {
                        queue.extend(unseen_links(&cid, &data, &mut seen)?);
                    }
                    fetched.blocks += 1;
                    fetched.bytes += data.len() as u64;
                    if let Some(t) = self.transfers.borrow_mut().get_mut(key) {
                        t.blocks = fetched.blocks;
                        t.bytes = fetched.bytes;
                    }
                    let bytes = js_sys::Uint8Array::from(data.as_slice());
                    // (The content and the blocks that link it.)
                    let room = NAMED_AT_ONCE + NAMED_AT_ONCE / 16;
                    if named.notes_spans() && kept_bytes + u64::from(bytes.length()) <= room {
                        kept_bytes += u64::from(bytes.length());
                        kept.insert(cid, bytes.clone());
                    }
                    pending.push((cid, bytes.into()));
                },
            }
        }
        Ok((fetched, seen))
    }

    /// Read the set of public blocks again if it is older than its time to live (`force`:
    /// read it now unless it is very fresh).
    async fn refresh_public(&self, force: bool) {
        let asked_at = now_ms();
        // One reader at a time; whoever waited for it takes what it read.
        let _reading = self.public_lock.lock().await;
        let read_at = self.public.borrow().read_at;
        let age = now_ms() - read_at;
        if read_at >= asked_at || (age < PUBLIC_TTL_MS && !(force && age > 200.0)) {
            return;
        }
        let epoch = self.access_epoch.get();
        let mut walked = std::mem::take(&mut self.public.borrow_mut().walked);
        let mut next = PublicBlocks { read_at: now_ms(), ..Default::default() };
        match self.store.objects().await {
            Ok(objects) => {
                next.complete = true;
                // Every record read: what is held, for whom, is known from here on.
                self.held.borrow_mut().extend(
                    objects.iter().flat_map(|r| r.origins.iter().map(|o| held_key(&r.cid, o))),
                );
                self.held_read.set(true);
                for record in objects
                    .iter()
                    .filter(|r| r.public || r.min_trust.is_some() || !r.shared_with.is_empty())
                {
                    let Ok(cid) = record.cid.parse::<Cid>() else { continue };
                    if let std::collections::hash_map::Entry::Vacant(unwalked) = walked.entry(cid) {
                        let mut reached = Default::default();
                        if store::reachable(&*self.store, &cid, &mut reached).await.is_err() {
                            continue;
                        }
                        unwalked.insert(reached.into_iter().collect());
                    }
                    if let Some(blocks) = walked.get(&cid) {
                        if record.public {
                            next.cids.extend(blocks.iter().copied());
                            next.roots.push(cid);
                        } else if let Some(min) = record.min_trust {
                            for b in blocks {
                                let level = next.restricted.entry(*b).or_insert(min);
                                *level = (*level).min(min);
                            }
                        }
                        if !record.public && !record.shared_with.is_empty() {
                            for b in blocks {
                                next.shared
                                    .entry(*b)
                                    .or_default()
                                    .extend(record.shared_with.iter().cloned());
                            }
                        }
                        next.walked.insert(cid, blocks.clone());
                    }
                }
            }
            Err(e) => {
                tracing::warn!("reading public objects: {e}");
                next.walked = walked;
            }
        }
        // Our own assertions and those trusted peers sent (both verified when they came in).
        for list in [self.store.trust_credentials().await, self.store.received_trust().await] {
            for credential in list.unwrap_or_default() {
                if let Ok(a) = disot_core::trust::read_form(&credential) {
                    next.trust.insert(a);
                }
            }
        }
        (next.scores, next.scores_until) = next.trust.scores(&self.did, "content", now_ms() as u64);
        // Access changed while this was read (a share revoked, trust lowered): what was read
        // may be from before it, so it must not be trusted as fresh.
        if self.access_epoch.get() != epoch {
            next.read_at = f64::NEG_INFINITY;
        }
        *self.public.borrow_mut() = next;
    }

    /// Another context says `cid` was just made public or put to be served by trust: served
    /// from now on as its record says (read here; the notice is only a hint). An object served
    /// by trust has the set read again now, not when the first peer asks for it. Whether it is
    /// public.
    pub(crate) async fn note_published(&self, cid: Cid) -> bool {
        let record = self.store.object(&cid.to_string()).await.ok().flatten();
        let by_trust = record.as_ref().is_some_and(|r| !r.public && r.min_trust.is_some())
            && !self.public.borrow().walked.contains_key(&cid);
        let one_small_block = record.as_ref().is_some_and(|r| {
            cid.codec() == RAW_CODEC
                && usize::try_from(r.size).is_ok_and(|n| self.recent.borrow().takes(n))
        });
        if self.admit_public(record, &cid).await {
            // Peers told of it (it is announced now) may ask at once: have it ready.
            if one_small_block {
                let _ = self.recent_or_stored(&cid).await;
            }
            return true;
        }
        if by_trust {
            self.refresh_public(true).await;
        }
        false
    }

    /// Whether `record` (that of `cid`, if it has one) makes `cid` the root of a public object;
    /// if so, it and every block under it are served from now on. This walks one object, where
    /// reading every record and the trust lists again would keep the asker waiting.
    async fn admit_public(&self, record: Option<ObjectRecord>, cid: &Cid) -> bool {
        if !record.is_some_and(|r| r.public) {
            return false;
        }
        let known = self.public.borrow().walked.get(cid).cloned();
        let blocks = match known {
            Some(blocks) => blocks,
            None => {
                let mut reached = std::collections::BTreeSet::new();
                if let Err(e) = store::reachable(&*self.store, cid, &mut reached).await {
                    tracing::warn!("walking public object {cid}: {e}");
                    return false;
                }
                reached.into_iter().collect()
            }
        };
        let mut public = self.public.borrow_mut();
        public.cids.extend(blocks.iter().copied());
        if !public.roots.contains(cid) {
            public.roots.push(*cid);
        }
        public.walked.insert(*cid, blocks);
        true
    }

    /// Space is being freed until the guard is dropped: no fetch starts meanwhile (its blocks,
    /// reached by no record until its end, would be taken). An error if it is already.
    pub(crate) fn collecting(&self) -> Result<Collecting<'_>, ApiError> {
        if self.collecting.replace(true) {
            return Err(ApiError::new(
                ErrorCode::ResourceUnavailable,
                "the space is being freed already",
            ));
        }
        Ok(Collecting(self))
    }

    /// Objects were removed from the store (garbage collection): what is held is read again,
    /// and nothing is served from memory that may be gone.
    pub(crate) fn objects_removed(&self) {
        self.held.borrow_mut().clear();
        self.held_read.set(false);
        self.access_changed();
    }

    /// Trust or objects changed: read them again before the next answer.
    pub(crate) fn access_changed(&self) {
        self.access_epoch.set(self.access_epoch.get().wrapping_add(1));
        self.public.borrow_mut().read_at = f64::NEG_INFINITY;
        self.recent.borrow_mut().clear();
    }

    /// Block `cid` from memory if it was served or published a moment ago, else from the
    /// store (verified), kept in memory if it is small. Only for blocks a peer is allowed.
    async fn recent_or_stored(&self, cid: &Cid) -> Option<Vec<u8>> {
        if let Some(data) = self.recent.borrow_mut().get(cid) {
            return Some(data);
        }
        let epoch = self.access_epoch.get();
        let data = self.store.get(cid).await.ok().flatten()?;
        // Not if access changed during the read: the cache was emptied for that.
        if self.access_epoch.get() == epoch && self.recent.borrow().takes(data.len()) {
            self.recent.borrow_mut().insert(*cid, data.clone());
        }
        Some(data)
    }

    /// Whether `peer` may have block `cid`, as last read.
    fn may_have(&self, peer: &PeerId, cid: &Cid) -> bool {
        let public = self.public.borrow();
        if public.cids.contains(cid) {
            return true;
        }
        let Some(did) = disot_core::identity::did_of_peer(peer) else { return false };
        if public.shared.get(cid).is_some_and(|dids| dids.contains(&did)) {
            return true;
        }
        let Some(min) = public.restricted.get(cid) else { return false };
        let now = now_ms() as u64;
        let score = if now < public.scores_until {
            public.scores.get(&did).copied()
        } else {
            // An assertion has expired since the scores were worked out.
            public.trust.score(&self.did, &did, "content", now).map(|s| s.score)
        };
        score.is_some_and(|s| s * 100.0 + 1e-9 >= f64::from(*min))
    }
}

/// The record of an object fetched for `origin`: pinned, served to nobody until it is shared.
/// The key of object `root` held for `origin` in [`Exchange::may_hold`]'s set: a 64-bit hash
/// (two that share one only cost the other a read of the store).
fn held_key(root: &str, origin: &str) -> u64 {
    use std::hash::{Hash, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (root, origin).hash(&mut hasher);
    hasher.finish()
}

fn fetched_record(root: &Cid, sha256: &[u8], size: u64, origin: &str) -> ObjectRecord {
    let sha256 = disot_core::unixfs::sha256_name(sha256);
    let imported = disot_core::unixfs::Imported { cid: *root, sha256, size };
    ObjectRecord { origins: vec![origin.to_owned()], ..ObjectRecord::new(&imported) }
}

/// One future's wait for a block: when the last one waiting for it is dropped unanswered, the
/// want is cancelled. (It owns its receiver and drops that first, so that it sees its own
/// wait gone, whether the future was polled or not.)
struct Waiting<'a> {
    exchange: &'a Exchange,
    cid: Cid,
    rx: Option<oneshot::Receiver<Result<Vec<u8>, String>>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut waiters = self.exchange.waiters.borrow_mut();
        let Some(list) = waiters.get_mut(&self.cid) else { return };
        list.retain(|w| !w.is_canceled());
        if list.is_empty() {
            waiters.remove(&self.cid);
            drop(waiters);
            self.exchange.client.borrow_mut().cancel(&self.cid);
            // The cancel goes out now, not with whatever is sent next (from a task of its own:
            // this may be dropped while the exchange is in use).
            let exchange = self.exchange.this.clone();
            wasm_bindgen_futures::spawn_local(async move {
                if let Some(exchange) = exchange.upgrade() {
                    exchange.flush();
                }
            });
        }
    }
}

/// What this browser serves: the blocks of its public objects, to anyone, and of objects put
/// with a trust threshold, to peers it trusts that much. Anything else is answered as not held.
struct Public<'a>(&'a Exchange);

impl Public<'_> {
    async fn allowed(&self, peer: &PeerId, cid: &Cid) -> bool {
        if self.0.crash_on_want.get() == Some(*cid) {
            futures_timer::Delay::new(std::time::Duration::from_millis(10)).await;
            panic!("debug_crash: a crash a test asked for, by a want for {cid}");
        }
        // Access shrinks only through this node, which marks the set stale at once
        // (`access_changed`); other contexts only add objects. So a block the set names is
        // served without reading the set again, however old it is.
        let read_at = self.0.public.borrow().read_at;
        if read_at.is_finite() && self.0.may_have(peer, cid) {
            return true;
        }
        self.0.refresh_public(false).await;
        // Asked again only of a set that was read again.
        let asked = read_at.is_finite() && self.0.public.borrow().read_at == read_at;
        if !asked && self.0.may_have(peer, cid) {
            return true;
        }
        // Perhaps put a moment ago by another context: one record read (records name roots;
        // the blocks under a root are admitted with it). Blocks not held and blocks held for
        // nobody else cost this same read to refuse, and no read of every record beyond the
        // one the set's time to live asks for: a peer asking for what we do not have is the
        // common case, and each such read would be paid by every peer it asks.
        let record = self.0.store.object(&cid.to_string()).await.ok().flatten();
        let restricted = record
            .as_ref()
            .is_some_and(|r| !r.public && (r.min_trust.is_some() || !r.shared_with.is_empty()))
            && !self.0.public.borrow().walked.contains_key(cid);
        if self.0.admit_public(record, cid).await {
            return true;
        }
        if restricted {
            // Served by trust or to named peers, and not seen before: work out who may have it
            // (once per such object; after that it is refused as fast as anything else).
            self.0.refresh_public(true).await;
            return self.0.may_have(peer, cid);
        }
        false
    }
}

impl Source for Public<'_> {
    async fn block(&self, peer: &PeerId, cid: &Cid) -> Option<Vec<u8>> {
        // The block is read only once it may be served: a block held for someone else must
        // cost no more to refuse than one not held.
        if !self.allowed(peer, cid).await {
            return None;
        }
        self.0.recent_or_stored(cid).await
    }

    async fn has(&self, peer: &PeerId, cid: &Cid) -> bool {
        self.allowed(peer, cid).await
            && (self.0.recent.borrow().contains(cid)
                || self.0.store.has(cid).await.unwrap_or(false))
    }
}
