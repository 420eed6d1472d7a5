//! Bitswap 1.2.0 (`/ipfs/bitswap/1.2.0`): the wire format, its framing, and the two sides of the
//! exchange as sans-IO state machines, so that the same code runs in the browser node, in
//! `disot-node`, and under plain `cargo test`.
//!
//! Design decisions:
//! - A received block is named by the CID rebuilt from its prefix and *the hash of its bytes*;
//!   it satisfies a want only if that CID is the wanted one. Bytes that do not hash to what was
//!   asked can therefore never be taken for the wanted block. A block nobody asked for (nor
//!   recently received from someone else) marks its sender as misbehaving; the node
//!   disconnects it and does not ask it again.
//! - The client sends one want-block per CID, to the candidate peer with the fewest blocks
//!   in flight, and want-have to the others (all with send-dont-have). Parallel wants spread
//!   over every peer that has the content: swarming comes from the choice of peer per block.
//!   Among peers equally busy, one that has more often had what was asked is asked first:
//!   a peer that keeps saying DONT_HAVE (a bootstrap node that holds nothing of ours) would
//!   otherwise cost the first block of every fetch a round trip.
//! - The server answers at once from what the store holds and what the asking peer may see;
//!   it keeps no wantlist for later. "May not see" and "not held" get the same DONT_HAVE.
//! - Every message is bounded ([`MAX_MESSAGE_SIZE`], [`MAX_ENTRIES`]); so is the client's
//!   state ([`MAX_WANTS`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use cid::Cid;
use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p_identity::PeerId;
use sha2::{Digest, Sha256};

use crate::store::{MAX_BLOCK_SIZE, SHA2_256};

pub const PROTOCOL: &str = "/ipfs/bitswap/1.2.0";
/// Largest message sent or accepted (as go-bitswap and Helia).
pub const MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;
/// Most wantlist entries, block presences or blocks accepted in one message.
pub const MAX_ENTRIES: usize = 4096;
/// Most CIDs the client wants at once.
pub const MAX_WANTS: usize = 4096;
/// A want-block without an answer for this long is asked of another peer.
pub const BLOCK_TIMEOUT_MS: u64 = 15_000;
/// Misses a peer is counted for a block it was asked for and did not send in time.
const SILENCE_MISSES: u32 = 8;
/// A want nobody could serve for this long fails.
pub const WANT_TIMEOUT_MS: u64 = 60_000;
/// After a peer that was asked for a block drops off, how long its wants wait for it to come
/// back (a connection being replaced, e.g. relayed by direct) before they fail.
pub const RECONNECT_GRACE_MS: u64 = 5_000;
/// How long a new want is asked only of the peers with the best record (see
/// [`Client::want`]) before the others are asked too.
pub const HOLD_MS: u64 = 200;
/// How long an inbound stream may go without a whole message (and a message to its peer may
/// take to send) before it is dropped and its place freed: a peer that opens streams and
/// leaves them idle, or begins a message and never ends it, does not hold the places of
/// others for good. (Peers open a stream again when one that was idle broke.)
pub const STREAM_IDLE_MS: u64 = 60_000;
/// Blocks received or given up recently: a late copy of one of them is not misbehaviour.
const RECENT: usize = 1024;
/// Most peers remembered as banned; beyond it the longest banned is forgotten (each costs a
/// misbehaving peer only a new identity, so the list must not grow with them).
pub const MAX_BANNED: usize = 1024;

/// The protobuf messages of the spec (`message.proto`), field numbers as there.
pub mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Message {
        #[prost(message, optional, tag = "1")]
        pub wantlist: Option<Wantlist>,
        /// Bitswap 1.0.0 blocks (CIDv0 implied); accepted, never sent.
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub blocks: Vec<Vec<u8>>,
        #[prost(message, repeated, tag = "3")]
        pub payload: Vec<Block>,
        #[prost(message, repeated, tag = "4")]
        pub block_presences: Vec<BlockPresence>,
        #[prost(int32, tag = "5")]
        pub pending_bytes: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Wantlist {
        #[prost(message, repeated, tag = "1")]
        pub entries: Vec<Entry>,
        #[prost(bool, tag = "2")]
        pub full: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(bytes = "vec", tag = "1")]
        pub block: Vec<u8>,
        #[prost(int32, tag = "2")]
        pub priority: i32,
        #[prost(bool, tag = "3")]
        pub cancel: bool,
        /// 0 = Block, 1 = Have.
        #[prost(int32, tag = "4")]
        pub want_type: i32,
        #[prost(bool, tag = "5")]
        pub send_dont_have: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Block {
        #[prost(bytes = "vec", tag = "1")]
        pub prefix: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub data: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BlockPresence {
        #[prost(bytes = "vec", tag = "1")]
        pub cid: Vec<u8>,
        /// 0 = Have, 1 = DontHave.
        #[prost(int32, tag = "2")]
        pub r#type: i32,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    #[error("bitswap message of {0} bytes is over the {MAX_MESSAGE_SIZE}-byte limit")]
    TooLarge(usize),
    #[error("malformed bitswap message: {0}")]
    Malformed(String),
    #[error("bitswap stream: {0}")]
    Io(String),
}

fn malformed(what: impl std::fmt::Display) -> Error {
    Error::Malformed(what.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WantType {
    Block,
    Have,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub cid: Cid,
    pub want_type: WantType,
    pub cancel: bool,
    pub send_dont_have: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Have,
    DontHave,
}

/// A decoded message. Each block's CID is rebuilt from its prefix and the hash of its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Incoming {
    pub wants: Vec<Want>,
    pub blocks: Vec<(Cid, Vec<u8>)>,
    pub presences: Vec<(Cid, Presence)>,
}

/// What to send one peer; becomes one or more messages ([`Outgoing::encode`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outgoing {
    pub wants: Vec<Want>,
    pub blocks: Vec<(Cid, Vec<u8>)>,
    pub presences: Vec<(Cid, Presence)>,
}

impl Outgoing {
    pub fn is_empty(&self) -> bool {
        self.wants.is_empty() && self.blocks.is_empty() && self.presences.is_empty()
    }

    /// Add everything in `other`.
    pub fn absorb(&mut self, other: Outgoing) {
        self.wants.extend(other.wants);
        self.blocks.extend(other.blocks);
        self.presences.extend(other.presences);
    }

    /// Encoded messages, each under [`MAX_MESSAGE_SIZE`] (a block alone always fits, being at
    /// most [`MAX_BLOCK_SIZE`]).
    pub fn encode(&self) -> Vec<Vec<u8>> {
        use prost::Message as _;
        const ROOM: usize = MAX_MESSAGE_SIZE - 64 * 1024;
        let mut out = Vec::new();
        let mut msg = pb::Message::default();
        let mut size = 0;
        let mut flush = |msg: &mut pb::Message, size: &mut usize| {
            if *msg != pb::Message::default() {
                out.push(std::mem::take(msg).encode_to_vec());
            }
            *size = 0;
        };
        for w in &self.wants {
            let entry = pb::Entry {
                block: w.cid.to_bytes(),
                priority: 1,
                cancel: w.cancel,
                want_type: if w.want_type == WantType::Have { 1 } else { 0 },
                send_dont_have: w.send_dont_have,
            };
            size += entry.encoded_len() + 8;
            msg.wantlist.get_or_insert_with(Default::default).entries.push(entry);
            if size > ROOM || msg.wantlist.as_ref().map_or(0, |w| w.entries.len()) >= MAX_ENTRIES {
                flush(&mut msg, &mut size);
            }
        }
        for (cid, presence) in &self.presences {
            let p = pb::BlockPresence {
                cid: cid.to_bytes(),
                r#type: if *presence == Presence::Have { 0 } else { 1 },
            };
            size += p.encoded_len() + 8;
            msg.block_presences.push(p);
            if size > ROOM || msg.block_presences.len() >= MAX_ENTRIES {
                flush(&mut msg, &mut size);
            }
        }
        for (cid, data) in &self.blocks {
            if size + data.len() + 64 > ROOM {
                flush(&mut msg, &mut size);
            }
            size += data.len() + 64;
            msg.payload.push(pb::Block { prefix: prefix_of(cid), data: data.clone() });
        }
        flush(&mut msg, &mut size);
        out
    }
}

/// The CID prefix as go-cid writes it: version, codec, hash code, digest length (uvarints).
pub fn prefix_of(cid: &Cid) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    for n in [cid.version() as u64, cid.codec(), cid.hash().code(), cid.hash().size() as u64] {
        let mut buf = unsigned_varint::encode::u64_buffer();
        out.extend_from_slice(unsigned_varint::encode::u64(n, &mut buf));
    }
    out
}

/// What a block's CID prefix says: everything of the CID but the digest. Only sha2-256 is
/// accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    version: u64,
    codec: u64,
}

impl Prefix {
    /// Read a prefix as go-cid writes it. A CIDv0 prefix may also come as just the hash code and
    /// length (some implementations write it so).
    fn parse(prefix: &[u8]) -> Result<Prefix, Error> {
        let mut fields = Vec::with_capacity(4);
        let mut rest = prefix;
        while !rest.is_empty() && fields.len() < 4 {
            let (n, r) = unsigned_varint::decode::u64(rest).map_err(malformed)?;
            fields.push(n);
            rest = r;
        }
        if !rest.is_empty() {
            return Err(malformed("block prefix is too long"));
        }
        let (version, codec, code, len) = match fields[..] {
            [version, codec, code, len] => (version, codec, code, len),
            [code, len] => (0, 0x70, code, len),
            _ => return Err(malformed("block prefix has the wrong number of fields")),
        };
        if code != SHA2_256 || len != 32 {
            return Err(malformed("only sha2-256 blocks are accepted"));
        }
        if !matches!((version, codec), (0, 0x70) | (1, _)) {
            return Err(malformed("unsupported cid version in block prefix"));
        }
        Ok(Prefix { version, codec })
    }

    /// The CID of a block under this prefix whose SHA-256 is `digest`.
    pub fn cid(&self, digest: &[u8; 32]) -> Result<Cid, Error> {
        let mh = cid::multihash::Multihash::<64>::wrap(SHA2_256, digest).map_err(malformed)?;
        if self.version == 0 {
            Cid::new_v0(mh).map_err(malformed)
        } else {
            Ok(Cid::new_v1(self.codec, mh))
        }
    }
}

/// A message decoded but for its blocks' hashing: each block comes with its prefix, and gets
/// its CID from the SHA-256 of its bytes ([`Unhashed::hashed`]). (The browser hashes with its
/// own SHA-256, several times faster than this code's.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unhashed {
    pub wants: Vec<Want>,
    pub blocks: Vec<(Prefix, Vec<u8>)>,
    pub presences: Vec<(Cid, Presence)>,
}

impl Unhashed {
    /// The message, each block named by the CID its prefix and `digests` (the SHA-256 of each
    /// block's bytes, in order) make.
    pub fn hashed(self, digests: &[[u8; 32]]) -> Result<Incoming, Error> {
        if digests.len() != self.blocks.len() {
            return Err(malformed("a digest for every block is needed"));
        }
        let blocks = self
            .blocks
            .into_iter()
            .zip(digests)
            .map(|((prefix, data), digest)| Ok((prefix.cid(digest)?, data)))
            .collect::<Result<_, Error>>()?;
        Ok(Incoming { wants: self.wants, blocks, presences: self.presences })
    }
}

/// Decode one message (without its length prefix), every block named by the hash of its bytes.
pub fn decode(bytes: &[u8]) -> Result<Incoming, Error> {
    let message = decode_unhashed(bytes)?;
    let digests: Vec<[u8; 32]> =
        message.blocks.iter().map(|(_, data)| Sha256::digest(data).into()).collect();
    message.hashed(&digests)
}

/// Decode one message (without its length prefix), its blocks to be hashed by the caller.
pub fn decode_unhashed(bytes: &[u8]) -> Result<Unhashed, Error> {
    use prost::Message as _;
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(Error::TooLarge(bytes.len()));
    }
    check_entries(bytes)?;
    let msg = pb::Message::decode(bytes).map_err(malformed)?;
    let entries = msg.wantlist.map(|w| w.entries).unwrap_or_default();
    let mut out = Unhashed::default();
    // A wantlist names each block once: an entry repeated in one message replaces the one
    // before it (so a small message cannot ask for one large block thousands of times).
    let mut wanted_at = std::collections::HashMap::new();
    for e in entries {
        let cid = Cid::try_from(e.block.as_slice()).map_err(malformed)?;
        let want_type = match e.want_type {
            0 => WantType::Block,
            1 => WantType::Have,
            other => return Err(malformed(format!("unknown want type {other}"))),
        };
        let want = Want { cid, want_type, cancel: e.cancel, send_dont_have: e.send_dont_have };
        match wanted_at.entry(cid) {
            std::collections::hash_map::Entry::Occupied(at) => out.wants[*at.get()] = want,
            std::collections::hash_map::Entry::Vacant(at) => {
                at.insert(out.wants.len());
                out.wants.push(want);
            }
        }
    }
    for p in msg.block_presences {
        let cid = Cid::try_from(p.cid.as_slice()).map_err(malformed)?;
        let presence = match p.r#type {
            0 => Presence::Have,
            1 => Presence::DontHave,
            other => return Err(malformed(format!("unknown presence type {other}"))),
        };
        out.presences.push((cid, presence));
    }
    // Bitswap 1.0's bare blocks are CIDv0 (dag-pb, sha2-256).
    let v0 = Prefix { version: 0, codec: 0x70 };
    let payload = msg.payload.into_iter().map(|b| Ok((Prefix::parse(&b.prefix)?, b.data)));
    for block in payload.chain(msg.blocks.into_iter().map(|data| Ok((v0, data)))) {
        let (prefix, data) = block?;
        if data.len() > MAX_BLOCK_SIZE {
            return Err(malformed(format!("block of {} bytes", data.len())));
        }
        out.blocks.push((prefix, data));
    }
    Ok(out)
}

/// Refuse a message with more than [`MAX_ENTRIES`] wantlist entries, block presences or blocks,
/// counted in its wire format before anything is decoded: an entry can be two bytes, and a
/// message of the largest size decoded whole would first make millions of them (a Wasm
/// node's memory, once grown, stays grown).
fn check_entries(mut bytes: &[u8]) -> Result<(), Error> {
    // (wantlist entries, blocks of either version, block presences)
    let mut counts = [0usize; 3];
    while !bytes.is_empty() {
        let (field, body) = next_field(&mut bytes)?;
        let counted = match field {
            1 => {
                let mut wantlist = body.unwrap_or_default();
                while !wantlist.is_empty() {
                    if next_field(&mut wantlist)?.0 == 1 {
                        counts[0] += 1;
                    }
                }
                None
            }
            2 | 3 => Some(1),
            4 => Some(2),
            _ => None,
        };
        if let Some(i) = counted {
            counts[i] += 1;
        }
        if counts.iter().any(|&n| n > MAX_ENTRIES) {
            return Err(malformed("too many entries"));
        }
    }
    Ok(())
}

/// The next protobuf field of `bytes`: its number, and its bytes if it is length-delimited.
/// (Groups, deprecated and in no Bitswap message, are refused.)
fn next_field<'a>(bytes: &mut &'a [u8]) -> Result<(u64, Option<&'a [u8]>), Error> {
    let (key, rest) = protobuf_varint(bytes)?;
    let (len, rest) = match key & 7 {
        0 => (0, protobuf_varint(rest)?.1),
        1 => (8, rest),
        5 => (4, rest),
        2 => {
            let (len, rest) = protobuf_varint(rest)?;
            (usize::try_from(len).map_err(malformed)?, rest)
        }
        other => return Err(malformed(format!("wire type {other}"))),
    };
    if len > rest.len() {
        return Err(malformed("a field runs past the end of the message"));
    }
    let (body, rest) = rest.split_at(len);
    *bytes = rest;
    Ok((key >> 3, (key & 7 == 2).then_some(body)))
}

/// A protobuf varint and what follows it. Unlike a multiformats varint, it may be written
/// longer than it needs (protobuf decoders take that), up to 10 bytes.
fn protobuf_varint(bytes: &[u8]) -> Result<(u64, &[u8]), Error> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, &bytes[i + 1..]));
        }
    }
    Err(malformed("a varint runs past the end of the message or past 10 bytes"))
}

/// Read one length-prefixed Bitswap message; `None` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, Error> {
    read_frame_max(r, MAX_MESSAGE_SIZE).await
}

/// Read one uvarint-length-prefixed message of at most `max` bytes (refused before anything is
/// allocated for it); `None` at a clean end of stream. Other protocols framed the same way
/// (WebRTC signaling) use it with their own limit.
pub async fn read_frame_max<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, Error> {
    let mut len: u64 = 0;
    for i in 0..10 {
        let mut byte = [0u8];
        match r.read(&mut byte).await {
            Ok(0) if i == 0 => return Ok(None),
            Ok(0) => return Err(Error::Io("stream ended inside a length".into())),
            Ok(_) => {}
            Err(e) => return Err(Error::Io(e.to_string())),
        }
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            if len as usize > max {
                return Err(Error::TooLarge(len as usize));
            }
            return read_body(r, len as usize).await.map(Some);
        }
    }
    Err(malformed("length prefix is too long"))
}

/// The first memory taken for a message's body; more is taken (doubling) only as its bytes
/// arrive.
const FIRST_TAKE: usize = 64 * 1024;

/// A message body of `len` bytes. Memory grows with what arrives, not with what the length
/// prefix claims: a peer that announces a large message and sends little of it holds little.
async fn read_body<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    let mut filled = 0;
    while filled < len {
        if filled == buf.len() {
            let more = buf.len().max(FIRST_TAKE).min(len - buf.len());
            buf.reserve_exact(more);
            buf.resize(buf.len() + more, 0);
        }
        match r.read(&mut buf[filled..]).await {
            Ok(0) => return Err(Error::Io("stream ended inside a message".into())),
            Ok(n) => filled += n,
            Err(e) => return Err(Error::Io(e.to_string())),
        }
    }
    Ok(buf)
}

/// Write one message with its length prefix.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, message: &[u8]) -> Result<(), Error> {
    let mut buf = unsigned_varint::encode::usize_buffer();
    let len = unsigned_varint::encode::usize(message.len(), &mut buf);
    let io = |e: std::io::Error| Error::Io(e.to_string());
    // One write: over WebRTC each write is a data-channel message, and a prefix sent on its
    // own would cost a message (and, for a small want, most of its latency) of its own.
    let mut framed = Vec::with_capacity(len.len() + message.len());
    framed.extend_from_slice(len);
    framed.extend_from_slice(message);
    w.write_all(&framed).await.map_err(io)?;
    w.flush().await.map_err(io)
}

/// Write `frame` on `stream`, opening one with `open` if there is none. A write that fails on
/// an old stream (peers close streams they find idle: js-libp2p after 10 s) is tried once more
/// on a new one; the stream is kept for the next frame.
pub async fn send_frame<S, F, Fut, E>(
    stream: &mut Option<S>,
    mut open: F,
    frame: &[u8],
) -> Result<(), Error>
where
    S: AsyncWrite + Unpin,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<S, E>>,
    E: std::fmt::Display,
{
    let mut last = Error::Io("no attempt".into());
    for _attempt in 0..2 {
        let s = match stream {
            Some(s) => s,
            None => stream.insert(open().await.map_err(|e| Error::Io(e.to_string()))?),
        };
        match write_frame(s, frame).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                *stream = None;
                last = e;
            }
        }
    }
    Err(last)
}

/// What the store can tell the server, for one asking peer.
#[allow(async_fn_in_trait)]
pub trait Source {
    /// The block, if it is held *and* `peer` may have it.
    async fn block(&self, peer: &PeerId, cid: &Cid) -> Option<Vec<u8>>;
    /// Whether the block is held and `peer` may have it.
    async fn has(&self, peer: &PeerId, cid: &Cid) -> bool;
}

/// The server side: the answer to one of `peer`'s wants (a block, a presence or nothing).
/// Cancels need no answer (nothing is kept).
pub async fn answer<S: Source>(source: &S, peer: &PeerId, w: &Want) -> Outgoing {
    let mut out = Outgoing::default();
    if w.cancel {
        return out;
    }
    match w.want_type {
        WantType::Block => match source.block(peer, &w.cid).await {
            Some(data) => out.blocks.push((w.cid, data)),
            None if w.send_dont_have => out.presences.push((w.cid, Presence::DontHave)),
            None => {}
        },
        WantType::Have => {
            if source.has(peer, &w.cid).await {
                out.presences.push((w.cid, Presence::Have));
            } else if w.send_dont_have {
                out.presences.push((w.cid, Presence::DontHave));
            }
        }
    }
    out
}

/// The answer to all of `peer`'s wants, as one batch (for tests: a server sends each block as
/// it is read, not all of them at once).
#[cfg(test)]
async fn respond<S: Source>(source: &S, peer: &PeerId, wants: &[Want]) -> Outgoing {
    let mut out = Outgoing::default();
    for w in wants {
        out.absorb(answer(source, peer, w).await);
    }
    out
}

/// What the client reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A wanted block arrived (its CID is the hash of `data`).
    Block { cid: Cid, data: Vec<u8>, from: PeerId },
    /// No connected peer has it (all said DONT_HAVE, or nobody answered in time).
    NotFound { cid: Cid },
    /// The peer sent a block nobody asked for, or bytes that are not the wanted block:
    /// disconnect it; it is not asked again.
    Misbehaved { peer: PeerId, reason: String },
}

#[derive(Debug, Clone, Default)]
struct WantState {
    since: u64,
    /// Peers asked (want-have or want-block) and not yet answered DONT_HAVE.
    asked: BTreeSet<PeerId>,
    have: Vec<PeerId>,
    dont_have: BTreeSet<PeerId>,
    /// The peer asked for the block itself, and since when.
    block_from: Option<(PeerId, u64)>,
    /// When a peer that was asked dropped off: the want does not fail for a while after.
    lost_at: Option<u64>,
    /// Until when peers with a worse record than the best are not asked, unless every peer
    /// asked says it does not have it.
    hold_until: Option<u64>,
}

/// The client side: wants, which peer to ask, what came back.
#[derive(Debug, Default)]
pub struct Client {
    wants: BTreeMap<Cid, WantState>,
    peers: BTreeSet<PeerId>,
    banned: BTreeSet<PeerId>,
    /// The banned peers, longest banned first (see [`MAX_BANNED`]).
    ban_order: VecDeque<PeerId>,
    recent: VecDeque<Cid>,
    outbox: BTreeMap<PeerId, Outgoing>,
    events: VecDeque<Event>,
    /// Per connected peer: how often it did not have what it was asked for, less how often it
    /// did (never below zero). Lower is asked first.
    misses: BTreeMap<PeerId, u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("more than {MAX_WANTS} blocks wanted at once")]
pub struct TooManyWants;

impl Client {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.iter()
    }

    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned.contains(peer)
    }

    pub fn wanted(&self) -> usize {
        self.wants.len()
    }

    /// Ask the connected peers for `cid`. Those with the fewest misses are asked at once; the
    /// others only once all of those said they do not have it, or after [`HOLD_MS`]: the peer
    /// that had the last blocks asked for usually has the next, and asking the rest costs them
    /// and us a message each (and tells them what we want).
    pub fn want(&mut self, cid: Cid, now: u64) -> Result<(), TooManyWants> {
        if self.wants.contains_key(&cid) {
            return Ok(());
        }
        if self.wants.len() >= MAX_WANTS {
            return Err(TooManyWants);
        }
        let mut peers: Vec<PeerId> = self.peers.iter().copied().collect();
        peers.sort_by_key(|p| self.rank(p));
        let fewest = peers.iter().map(|p| self.misses_of(p)).min().unwrap_or(0);
        let (first, held): (Vec<PeerId>, Vec<PeerId>) =
            peers.into_iter().partition(|p| self.misses_of(p) == fewest);
        let hold_until = (!held.is_empty()).then_some(now + HOLD_MS);
        self.wants.insert(cid, WantState { since: now, hold_until, ..Default::default() });
        for peer in first {
            self.ask(cid, peer, now);
        }
        Ok(())
    }

    /// Stop wanting `cid`.
    pub fn cancel(&mut self, cid: &Cid) {
        if let Some(state) = self.wants.remove(cid) {
            // The block may already be on its way: when it comes, it is not misbehaviour.
            self.remember(*cid);
            for peer in state.asked {
                self.send_want(peer, *cid, WantType::Block, true);
            }
        }
    }

    pub fn peer_connected(&mut self, peer: PeerId, now: u64) {
        if self.banned.contains(&peer) || !self.peers.insert(peer) {
            return;
        }
        let cids: Vec<Cid> = self.wants.keys().copied().collect();
        for cid in cids {
            self.ask(cid, peer, now);
        }
    }

    /// `peer` has no connection left. Its wants are asked of it again if it comes back; those
    /// only it was serving wait [`RECONNECT_GRACE_MS`] for that before they fail.
    pub fn peer_disconnected(&mut self, peer: &PeerId, now: u64) {
        self.drop_peer(peer, now, true);
    }

    fn drop_peer(&mut self, peer: &PeerId, now: u64, may_return: bool) {
        if !self.peers.remove(peer) {
            return;
        }
        self.outbox.remove(peer);
        self.misses.remove(peer);
        let cids: Vec<Cid> = self.wants.keys().copied().collect();
        for cid in cids {
            if let Some(state) = self.wants.get_mut(&cid) {
                let was_serving = state.asked.remove(peer) | state.have.contains(peer);
                state.have.retain(|p| p != peer);
                if was_serving && may_return {
                    state.lost_at = Some(now);
                }
                if !may_return {
                    state.dont_have.insert(*peer);
                }
                if state.block_from.is_some_and(|(p, _)| p == *peer) {
                    state.block_from = None;
                }
            }
            self.advance(cid, now);
        }
    }

    /// One of several connections to `peer` closed: what was sent on it may be lost, so every
    /// want is asked of it again (on the connection that remains).
    pub fn peer_reconnected(&mut self, peer: PeerId, now: u64) {
        if !self.peers.contains(&peer) {
            return;
        }
        self.outbox.remove(&peer);
        let cids: Vec<Cid> = self.wants.keys().copied().collect();
        for cid in &cids {
            if let Some(state) = self.wants.get_mut(cid) {
                state.asked.remove(&peer);
                state.have.retain(|p| *p != peer);
                if state.block_from.is_some_and(|(p, _)| p == peer) {
                    state.block_from = None;
                }
            }
        }
        for cid in cids {
            self.ask(cid, peer, now);
            self.advance(cid, now);
        }
    }

    /// A message from `peer`.
    pub fn on_message(&mut self, peer: PeerId, incoming: Incoming, now: u64) {
        if !self.peers.contains(&peer) {
            return;
        }
        for (cid, data) in incoming.blocks {
            if self.wants.remove(&cid).is_some_and(|state| {
                for other in state.asked.iter().filter(|p| **p != peer) {
                    self.send_want(*other, cid, WantType::Block, true);
                }
                true
            }) {
                self.remember(cid);
                self.scored(peer, true);
                self.events.push_back(Event::Block { cid, data, from: peer });
            } else if !self.recent.contains(&cid) {
                self.ban(peer, format!("sent block {cid} that was not asked for"), now);
                return;
            }
        }
        for (cid, presence) in incoming.presences {
            if !self.wants.contains_key(&cid) {
                continue;
            }
            self.scored(peer, presence == Presence::Have);
            let Some(state) = self.wants.get_mut(&cid) else { continue };
            match presence {
                Presence::Have => {
                    if !state.have.contains(&peer) {
                        state.have.push(peer);
                    }
                }
                Presence::DontHave => {
                    state.asked.remove(&peer);
                    state.have.retain(|p| *p != peer);
                    state.dont_have.insert(peer);
                    if state.block_from.is_some_and(|(p, _)| p == peer) {
                        state.block_from = None;
                    }
                }
            }
            self.advance(cid, now);
        }
    }

    /// Time passes: slow peers are passed over, hopeless wants fail.
    pub fn tick(&mut self, now: u64) {
        let cids: Vec<Cid> = self.wants.keys().copied().collect();
        for cid in cids {
            let Some(state) = self.wants.get_mut(&cid) else { continue };
            if let Some((peer, since)) = state.block_from {
                if now.saturating_sub(since) >= BLOCK_TIMEOUT_MS {
                    state.block_from = None;
                    state.asked.remove(&peer);
                    state.have.retain(|p| *p != peer);
                    state.dont_have.insert(peer);
                    // A peer asked for a block that did not send it in time cost the want a
                    // whole time-out: it weighs as many misses, so that new wants go first to
                    // peers that answer (a HAVE it gives again takes off only one).
                    let misses = self.misses.entry(peer).or_default();
                    *misses = misses.saturating_add(SILENCE_MISSES);
                }
            }
            if now.saturating_sub(state.since) >= WANT_TIMEOUT_MS && state.block_from.is_none() {
                self.fail(cid);
                continue;
            }
            self.advance(cid, now);
        }
    }

    /// The next message to send.
    /// The next message to send: those that ask for a block go first (the others ask whether
    /// a peer has it, which matters only if that one fails), so the block is on its way sooner.
    pub fn poll_send(&mut self) -> Option<(PeerId, Outgoing)> {
        let asks_block =
            |out: &Outgoing| out.wants.iter().any(|w| w.want_type == WantType::Block && !w.cancel);
        match self.outbox.iter().find(|(_, out)| asks_block(out)).map(|(p, _)| *p) {
            Some(peer) => self.outbox.remove_entry(&peer),
            None => self.outbox.pop_first(),
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn remember(&mut self, cid: Cid) {
        if self.recent.len() >= RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(cid);
    }

    /// `peer` misbehaved: it sent a block nobody asked for, or a message on a stream of its own
    /// that does not parse. It is dropped and never asked again (once: a peer banned already
    /// is left as it is).
    pub fn ban(&mut self, peer: PeerId, reason: String, now: u64) {
        if !self.banned.insert(peer) {
            return;
        }
        self.ban_order.push_back(peer);
        while self.ban_order.len() > MAX_BANNED {
            if let Some(oldest) = self.ban_order.pop_front() {
                self.banned.remove(&oldest);
            }
        }
        // Not waited for: it is not asked again.
        self.drop_peer(&peer, now, false);
        self.events.push_back(Event::Misbehaved { peer, reason });
    }

    /// Let a banned peer be asked and answered again (the user allowed it).
    pub fn unban(&mut self, peer: &PeerId) -> bool {
        self.ban_order.retain(|p| p != peer);
        self.banned.remove(peer)
    }

    fn fail(&mut self, cid: Cid) {
        self.cancel(&cid);
        self.events.push_back(Event::NotFound { cid });
    }

    /// `peer` had (or did not have) what it was asked for.
    fn scored(&mut self, peer: PeerId, had: bool) {
        let misses = self.misses.entry(peer).or_default();
        *misses = if had { misses.saturating_sub(1) } else { misses.saturating_add(1) };
    }

    /// The order in which peers are asked: least busy first, then fewest misses.
    fn rank(&self, peer: &PeerId) -> (usize, u32) {
        (self.load(peer), self.misses_of(peer))
    }

    fn misses_of(&self, peer: &PeerId) -> u32 {
        self.misses.get(peer).copied().unwrap_or(0)
    }

    /// Blocks in flight from `peer`, over all wants.
    fn load(&self, peer: &PeerId) -> usize {
        self.wants.values().filter(|s| s.block_from.is_some_and(|(p, _)| p == *peer)).count()
    }

    /// Ask `peer` for `cid`: the block itself if nobody is sending it and this peer is the
    /// least busy candidate, otherwise whether it has it.
    fn ask(&mut self, cid: Cid, peer: PeerId, now: u64) {
        let least_busy =
            self.load(&peer) <= self.peers.iter().map(|p| self.load(p)).min().unwrap_or(0);
        let Some(state) = self.wants.get_mut(&cid) else { return };
        if state.dont_have.contains(&peer) || !state.asked.insert(peer) {
            return;
        }
        if state.block_from.is_none() && least_busy {
            state.block_from = Some((peer, now));
            self.send_want(peer, cid, WantType::Block, false);
        } else {
            self.send_want(peer, cid, WantType::Have, false);
        }
    }

    /// After news about `cid`: ask a peer that has it for the block, or fail if none can.
    fn advance(&mut self, cid: Cid, now: u64) {
        let Some(state) = self.wants.get(&cid) else { return };
        if state.block_from.is_some() {
            return;
        }
        let mut candidates: Vec<PeerId> =
            state.have.iter().filter(|p| !state.dont_have.contains(p)).copied().collect();
        candidates.sort_by_key(|p| self.rank(p));
        if let Some(peer) = candidates.first().copied() {
            if let Some(state) = self.wants.get_mut(&cid) {
                state.block_from = Some((peer, now));
                state.asked.insert(peer);
            }
            self.send_want(peer, cid, WantType::Block, false);
            return;
        }
        // Nobody known to have it: ask whoever has not been asked (once those asked first all
        // said no, or the hold is over); fail when all said no.
        if !state.asked.is_empty() && state.hold_until.is_some_and(|t| now < t) {
            return;
        }
        let unasked: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|p| !state.asked.contains(p) && !state.dont_have.contains(p))
            .copied()
            .collect();
        if unasked.is_empty() {
            let waiting_for_return =
                state.lost_at.is_some_and(|t| now.saturating_sub(t) < RECONNECT_GRACE_MS);
            let everyone_said_no =
                state.asked.is_empty() && !self.peers.is_empty() && !waiting_for_return;
            let nobody_came =
                self.peers.is_empty() && now.saturating_sub(state.since) >= WANT_TIMEOUT_MS;
            if everyone_said_no || nobody_came {
                self.fail(cid);
            }
            return;
        }
        for peer in unasked {
            self.ask(cid, peer, now);
        }
    }

    fn send_want(&mut self, peer: PeerId, cid: Cid, want_type: WantType, cancel: bool) {
        let out = self.outbox.entry(peer).or_default();
        out.wants.push(Want { cid, want_type, cancel, send_dont_have: !cancel });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unixfs::{import, Layout};

    fn peer() -> PeerId {
        PeerId::random()
    }

    /// A client connected to `peers` at time 0.
    fn connected(peers: &[PeerId]) -> Client {
        let mut c = Client::new();
        for p in peers {
            c.peer_connected(*p, 0);
        }
        c
    }

    fn block(content: &[u8]) -> (Cid, Vec<u8>) {
        let (blocks, imported) = import(content, Layout::default());
        (imported.cid, blocks[0].data.clone())
    }

    fn round_trip(out: &Outgoing) -> Incoming {
        let mut all = Incoming::default();
        for bytes in out.encode() {
            let one = decode(&bytes).expect("decode");
            all.wants.extend(one.wants);
            all.blocks.extend(one.blocks);
            all.presences.extend(one.presences);
        }
        all
    }

    #[test]
    fn blocks_hashed_by_the_caller_get_the_cids_of_their_digests() {
        let (cid, data) = block(b"hashed elsewhere");
        let out = Outgoing { blocks: vec![(cid, data.clone())], ..Default::default() };
        let bytes = out.encode().remove(0);
        let unhashed = decode_unhashed(&bytes).expect("decode");
        assert_eq!(unhashed.blocks.len(), 1);
        let digest: [u8; 32] = Sha256::digest(&data).into();
        let hashed = unhashed.clone().hashed(&[digest]).expect("hashed");
        assert_eq!(hashed, decode(&bytes).expect("decode"));
        assert_eq!(hashed.blocks, vec![(cid, data)]);
        // A digest that is not the bytes' names another block, which nobody asked for.
        assert_ne!(unhashed.clone().hashed(&[[0; 32]]).expect("hashed").blocks[0].0, cid);
        assert!(unhashed.hashed(&[]).is_err(), "a digest for every block");
    }

    fn sent(client: &mut Client) -> BTreeMap<PeerId, Outgoing> {
        std::iter::from_fn(|| client.poll_send()).collect()
    }

    struct Held(BTreeMap<Cid, Vec<u8>>, BTreeSet<PeerId>);
    impl Source for Held {
        async fn block(&self, peer: &PeerId, cid: &Cid) -> Option<Vec<u8>> {
            self.1.contains(peer).then(|| self.0.get(cid).cloned()).flatten()
        }
        async fn has(&self, peer: &PeerId, cid: &Cid) -> bool {
            self.1.contains(peer) && self.0.contains_key(cid)
        }
    }

    #[test]
    fn messages_survive_encoding_and_blocks_are_named_by_their_hash() {
        let (cid, data) = block(b"hello bitswap");
        let out = Outgoing {
            wants: vec![Want {
                cid,
                want_type: WantType::Have,
                cancel: false,
                send_dont_have: true,
            }],
            blocks: vec![(cid, data.clone())],
            presences: vec![(cid, Presence::DontHave)],
        };
        let back = round_trip(&out);
        assert_eq!(back.wants, out.wants);
        assert_eq!(back.blocks, out.blocks);
        assert_eq!(back.presences, out.presences);
        assert_eq!(prefix_of(&cid), vec![0x01, 0x55, 0x12, 0x20]);

        // Bytes that are not the block get another name: they can never pass as it.
        use prost::Message as _;
        let forged = pb::Message {
            payload: vec![pb::Block { prefix: prefix_of(&cid), data: b"forged".to_vec() }],
            ..Default::default()
        };
        let got = decode(&forged.encode_to_vec()).expect("decode");
        assert_ne!(got.blocks[0].0, cid);
    }

    #[test]
    fn a_block_wanted_many_times_in_one_message_is_one_want() {
        let (cid, _) = block(b"wanted over and over");
        let (other, _) = block(b"wanted once");
        let want = |cid, want_type| Want { cid, want_type, cancel: false, send_dont_have: true };
        let mut wants = vec![want(cid, WantType::Have), want(other, WantType::Block)];
        wants.extend(std::iter::repeat_n(want(cid, WantType::Block), 4000));
        let back = round_trip(&Outgoing { wants, ..Default::default() });
        // The first place, the last entry's kind.
        assert_eq!(back.wants, vec![want(cid, WantType::Block), want(other, WantType::Block)]);
    }

    #[test]
    fn big_answers_are_split_under_the_message_limit() {
        let blocks: Vec<(Cid, Vec<u8>)> = (0..6u8).map(|i| block(&vec![i; 1024 * 1024])).collect();
        let out = Outgoing { blocks: blocks.clone(), ..Default::default() };
        let encoded = out.encode();
        assert!(encoded.len() >= 2);
        assert!(encoded.iter().all(|m| m.len() <= MAX_MESSAGE_SIZE));
        assert_eq!(round_trip(&out).blocks, blocks);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(matches!(decode(&[0xff; 16]), Err(Error::Malformed(_))));
        assert!(matches!(decode(&vec![0; MAX_MESSAGE_SIZE + 1]), Err(Error::TooLarge(_))));
        use prost::Message as _;
        let bad_prefix = pb::Message {
            payload: vec![pb::Block { prefix: vec![1, 0x55, 0x13, 0x40], data: vec![1] }],
            ..Default::default()
        };
        assert!(decode(&bad_prefix.encode_to_vec()).is_err(), "sha2-512 is refused");
        let too_many = pb::Message {
            block_presences: vec![pb::BlockPresence::default(); MAX_ENTRIES + 1],
            ..Default::default()
        };
        assert!(decode(&too_many.encode_to_vec()).is_err());
    }

    #[test]
    fn too_many_entries_are_refused_before_the_message_is_decoded() {
        use prost::Message as _;
        let over = MAX_ENTRIES + 1;
        let wantlist = pb::Wantlist { entries: vec![pb::Entry::default(); over], full: false };
        for message in [
            pb::Message { wantlist: Some(wantlist), ..Default::default() },
            pb::Message { blocks: vec![Vec::new(); over], ..Default::default() },
            pb::Message { payload: vec![pb::Block::default(); over], ..Default::default() },
            pb::Message {
                block_presences: vec![pb::BlockPresence::default(); over],
                ..Default::default()
            },
        ] {
            // Each entry is two bytes; then a field that runs past the end. Decoded whole, the
            // message would fail there, after its entries were made; it fails on the count.
            let mut bytes = message.encode_to_vec();
            assert!(bytes.len() < 4 * over + 8);
            bytes.extend_from_slice(&[0x2a, 0x7f]);
            match decode(&bytes) {
                Err(Error::Malformed(why)) => assert_eq!(why, "too many entries"),
                other => panic!("{other:?}"),
            }
        }
        // A key written longer than it needs is still a key, as protobuf decoders read it: the
        // count sees the entries behind it.
        let mut padded = vec![0x8a, 0x00]; // field 1 (the wantlist), length-delimited
        let entries: Vec<u8> = [0x0a, 0x00].repeat(over);
        padded.extend(unsigned_varint::encode::usize(entries.len(), &mut [0; 10]));
        padded.extend(entries);
        match decode(&padded) {
            Err(Error::Malformed(why)) => assert_eq!(why, "too many entries"),
            other => panic!("{other:?}"),
        }
        // As many as allowed: counted, then decoded (and refused there for what they hold).
        let most = pb::Message {
            block_presences: vec![pb::BlockPresence::default(); MAX_ENTRIES],
            ..Default::default()
        };
        match decode(&most.encode_to_vec()) {
            Err(Error::Malformed(why)) => assert_ne!(why, "too many entries"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frames_round_trip_and_oversize_lengths_are_refused() {
        futures::executor::block_on(async {
            let mut buf = Vec::new();
            write_frame(&mut buf, b"abc").await.expect("write");
            write_frame(&mut buf, &[7; 300]).await.expect("write");
            let mut r = futures::io::Cursor::new(buf);
            assert_eq!(read_frame(&mut r).await.expect("1"), Some(b"abc".to_vec()));
            assert_eq!(read_frame(&mut r).await.expect("2"), Some(vec![7; 300]));
            assert_eq!(read_frame(&mut r).await.expect("end"), None);
            let mut huge = futures::io::Cursor::new(vec![0xff, 0xff, 0xff, 0x7f]);
            assert!(matches!(read_frame(&mut huge).await, Err(Error::TooLarge(_))));
            let mut small = futures::io::Cursor::new(vec![5, 1, 2, 3, 4, 5]);
            assert!(matches!(read_frame_max(&mut small, 4).await, Err(Error::TooLarge(5))));
        });
    }

    /// A reader that gives at most `step` bytes a read, as a data channel gives its messages.
    struct InSteps {
        data: futures::io::Cursor<Vec<u8>>,
        step: usize,
    }

    impl futures::AsyncRead for InSteps {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step);
            std::pin::Pin::new(&mut self.data).poll_read(cx, &mut buf[..n])
        }
    }

    #[test]
    fn a_large_message_arriving_in_small_pieces_is_read_whole_and_a_cut_one_is_an_error() {
        futures::executor::block_on(async {
            let body: Vec<u8> = (0..3 * 1024 * 1024 + 5).map(|i| (i % 251) as u8).collect();
            let mut framed = Vec::new();
            write_frame(&mut framed, &body).await.expect("write");
            write_frame(&mut framed, b"next").await.expect("write");
            let mut r = InSteps { data: futures::io::Cursor::new(framed.clone()), step: 16_000 };
            assert_eq!(read_frame(&mut r).await.expect("whole").as_deref(), Some(&body[..]));
            assert_eq!(read_frame(&mut r).await.expect("next").as_deref(), Some(&b"next"[..]));
            // The prefix promises 3 MiB; the stream ends after 100 KB of it.
            let mut cut =
                InSteps { data: futures::io::Cursor::new(framed[..100_000].to_vec()), step: 7 };
            assert!(matches!(read_frame(&mut cut).await, Err(Error::Io(_))));
        });
    }

    #[test]
    fn send_frame_opens_a_stream_once_and_keeps_it() {
        futures::executor::block_on(async {
            let mut stream: Option<Vec<u8>> = None;
            let mut opened = 0;
            for msg in [&b"a"[..], b"bc"] {
                send_frame(
                    &mut stream,
                    || {
                        opened += 1;
                        async { Ok::<_, String>(Vec::new()) }
                    },
                    msg,
                )
                .await
                .expect("send");
            }
            assert_eq!(opened, 1);
            assert_eq!(stream, Some(vec![1, b'a', 2, b'b', b'c']));
            let mut none: Option<Vec<u8>> = None;
            let refused =
                send_frame(&mut none, || async { Err::<Vec<u8>, _>("no route") }, b"x").await;
            assert_eq!(refused, Err(Error::Io("no route".into())));
        });
    }

    #[test]
    fn the_server_answers_only_what_the_peer_may_see_and_the_same_for_refused_and_unheld() {
        let (cid, data) = block(b"served");
        let (unheld, _) = block(b"not here");
        let friend = peer();
        let stranger = peer();
        let source = Held([(cid, data.clone())].into(), [friend].into());
        let wants = |t| {
            vec![
                Want { cid, want_type: t, cancel: false, send_dont_have: true },
                Want { cid: unheld, want_type: t, cancel: false, send_dont_have: true },
            ]
        };
        futures::executor::block_on(async {
            let out = respond(&source, &friend, &wants(WantType::Block)).await;
            assert_eq!(out.blocks, vec![(cid, data)]);
            assert_eq!(out.presences, vec![(unheld, Presence::DontHave)]);
            let out = respond(&source, &friend, &wants(WantType::Have)).await;
            assert_eq!(out.presences, vec![(cid, Presence::Have), (unheld, Presence::DontHave)]);
            // A peer that may not see it cannot tell held from not held.
            let refused = respond(&source, &stranger, &wants(WantType::Block)).await;
            assert_eq!(
                refused.presences,
                vec![(cid, Presence::DontHave), (unheld, Presence::DontHave)]
            );
            assert!(refused.blocks.is_empty());
        });
    }

    #[test]
    fn one_peer_is_asked_for_the_block_the_others_whether_they_have_it() {
        let (a, b) = (peer(), peer());
        let (cid, data) = block(b"wanted");
        let mut c = Client::new();
        c.peer_connected(a, 0);
        c.peer_connected(b, 0);
        c.want(cid, 0).expect("want");
        let out = sent(&mut c);
        let types: Vec<WantType> = out.values().map(|o| o.wants[0].want_type).collect();
        assert!(types.contains(&WantType::Block) && types.contains(&WantType::Have));
        let (asked, other) =
            if out[&a].wants[0].want_type == WantType::Block { (a, b) } else { (b, a) };
        c.on_message(
            asked,
            Incoming { blocks: vec![(cid, data.clone())], ..Default::default() },
            5,
        );
        assert_eq!(c.poll_event(), Some(Event::Block { cid, data: data.clone(), from: asked }));
        // The other peer is told to forget it; a late duplicate is no offence.
        let out = sent(&mut c);
        assert!(out[&other].wants[0].cancel);
        c.on_message(other, Incoming { blocks: vec![(cid, data)], ..Default::default() }, 6);
        assert_eq!(c.poll_event(), None);
        assert_eq!(c.wanted(), 0);
    }

    #[test]
    fn a_peer_that_had_what_was_asked_is_asked_for_the_block_before_one_that_did_not() {
        // Both ways round, so that the order of the peers' ids decides nothing.
        for swap in [false, true] {
            let (mut holder, mut empty) = (peer(), peer());
            if swap {
                std::mem::swap(&mut holder, &mut empty);
            }
            let mut c = Client::new();
            c.peer_connected(holder, 0);
            c.peer_connected(empty, 0);
            for (i, content) in [&b"one"[..], b"two", b"three"].into_iter().enumerate() {
                let (cid, data) = block(content);
                c.want(cid, 0).expect("want");
                let out = sent(&mut c);
                let now = i as u64;
                c.on_message(
                    empty,
                    Incoming { presences: vec![(cid, Presence::DontHave)], ..Default::default() },
                    now,
                );
                let asked_holder_first = out[&holder].wants[0].want_type == WantType::Block;
                if !asked_holder_first {
                    c.on_message(
                        holder,
                        Incoming { presences: vec![(cid, Presence::Have)], ..Default::default() },
                        now,
                    );
                }
                c.on_message(
                    holder,
                    Incoming { blocks: vec![(cid, data)], ..Default::default() },
                    now,
                );
                let _ = sent(&mut c);
                while c.poll_event().is_some() {}
                if i > 0 {
                    assert!(asked_holder_first, "want {i}: the block was asked of the empty peer");
                }
            }
        }
    }

    /// A client with `holder` and `others` connected, where `holder` had the last block asked
    /// for and the others did not.
    fn after_one_from_holder(holder: PeerId, others: &[PeerId]) -> Client {
        let mut c = Client::new();
        for p in std::iter::once(&holder).chain(others) {
            c.peer_connected(*p, 0);
        }
        let (cid, data) = block(b"the first");
        c.want(cid, 0).expect("want");
        let _ = sent(&mut c);
        for p in others {
            let dont =
                Incoming { presences: vec![(cid, Presence::DontHave)], ..Default::default() };
            c.on_message(*p, dont, 1);
        }
        let have = Incoming { presences: vec![(cid, Presence::Have)], ..Default::default() };
        c.on_message(holder, have, 1);
        c.on_message(holder, Incoming { blocks: vec![(cid, data)], ..Default::default() }, 1);
        let _ = sent(&mut c);
        while c.poll_event().is_some() {}
        c
    }

    #[test]
    fn the_peer_with_the_best_record_is_asked_alone_and_the_others_once_it_has_not_got_it() {
        let (holder, others) = (peer(), [peer(), peer()]);
        let mut c = after_one_from_holder(holder, &others);
        let (cid, data) = block(b"the next");
        c.want(cid, 10).expect("want");
        let out = sent(&mut c);
        assert_eq!(out.keys().copied().collect::<Vec<_>>(), vec![holder], "only the holder");
        assert_eq!(out[&holder].wants[0].want_type, WantType::Block);
        c.tick(10 + HOLD_MS / 2);
        assert!(sent(&mut c).is_empty(), "nobody else while the holder may answer");
        // It answers with the block: nobody else ever hears of the want.
        c.on_message(holder, Incoming { blocks: vec![(cid, data)], ..Default::default() }, 12);
        assert!(matches!(c.poll_event(), Some(Event::Block { from, .. }) if from == holder));
        c.tick(10 + 2 * HOLD_MS);
        assert!(sent(&mut c).is_empty());

        // It does not have the next: the others are asked at once.
        let (cid, _) = block(b"elsewhere");
        c.want(cid, 20).expect("want");
        let _ = sent(&mut c);
        let dont = Incoming { presences: vec![(cid, Presence::DontHave)], ..Default::default() };
        c.on_message(holder, dont, 21);
        let out = sent(&mut c);
        assert!(others.iter().all(|p| out.contains_key(p)), "both others asked: {out:?}");
    }

    #[test]
    fn the_others_are_asked_when_the_best_peer_is_silent_past_the_hold() {
        let (holder, others) = (peer(), [peer(), peer()]);
        let mut c = after_one_from_holder(holder, &others);
        let (cid, _) = block(b"slow");
        // The holder is busy with another block: it is asked whether it has this one.
        let (busy, _) = block(b"busy");
        c.want(busy, 10).expect("want");
        c.want(cid, 10).expect("want");
        let out = sent(&mut c);
        assert_eq!(out.keys().copied().collect::<Vec<_>>(), vec![holder]);
        c.tick(10 + HOLD_MS - 1);
        assert!(sent(&mut c).is_empty());
        c.tick(10 + HOLD_MS);
        let out = sent(&mut c);
        for p in &others {
            assert!(out[p].wants.iter().any(|w| w.cid == cid && !w.cancel), "{p} asked");
        }
    }

    #[test]
    fn the_message_that_asks_for_the_block_is_sent_before_those_that_ask_who_has_it() {
        for n in 2..6 {
            let mut c = Client::new();
            for _ in 0..n {
                c.peer_connected(peer(), 0);
            }
            let (cid, _) = block(b"first");
            c.want(cid, 0).expect("want");
            let (_, first) = c.poll_send().expect("a message");
            assert!(
                first.wants.iter().any(|w| w.cid == cid && w.want_type == WantType::Block),
                "{n} peers: the first message sent is a want-have: {first:?}"
            );
            let mut rest = 0;
            while let Some((_, out)) = c.poll_send() {
                assert!(out.wants.iter().all(|w| w.want_type == WantType::Have));
                rest += 1;
            }
            assert_eq!(rest, n - 1, "every other peer is asked whether it has it");
        }
    }

    #[test]
    fn dont_have_moves_the_want_to_a_peer_that_has_it() {
        let (a, b) = (peer(), peer());
        let (cid, data) = block(b"moved");
        let mut c = Client::new();
        c.peer_connected(a, 0);
        c.peer_connected(b, 0);
        c.want(cid, 0).expect("want");
        let out = sent(&mut c);
        let (first, second) =
            if out[&a].wants[0].want_type == WantType::Block { (a, b) } else { (b, a) };
        c.on_message(
            second,
            Incoming { presences: vec![(cid, Presence::Have)], ..Default::default() },
            1,
        );
        c.on_message(
            first,
            Incoming { presences: vec![(cid, Presence::DontHave)], ..Default::default() },
            2,
        );
        let out = sent(&mut c);
        assert_eq!(
            out[&second].wants,
            vec![Want { cid, want_type: WantType::Block, cancel: false, send_dont_have: true }]
        );
        c.on_message(second, Incoming { blocks: vec![(cid, data)], ..Default::default() }, 3);
        assert!(matches!(c.poll_event(), Some(Event::Block { from, .. }) if from == second));
    }

    #[test]
    fn a_block_that_comes_after_its_want_was_given_up_is_ignored_not_punished() {
        let a = peer();
        let (cid, data) = block(b"late");
        let mut c = Client::new();
        c.peer_connected(a, 0);
        c.want(cid, 0).expect("want");
        c.cancel(&cid);
        c.on_message(a, Incoming { blocks: vec![(cid, data)], ..Default::default() }, 1);
        assert_eq!(c.poll_event(), None, "no block event, and no misbehaviour");
        // A block never asked for still is misbehaviour.
        let (other, bytes) = block(b"never wanted");
        c.on_message(a, Incoming { blocks: vec![(other, bytes)], ..Default::default() }, 2);
        assert!(matches!(c.poll_event(), Some(Event::Misbehaved { peer, .. }) if peer == a));
    }

    #[test]
    fn a_peer_whose_stream_misbehaves_is_banned_once_and_not_asked() {
        let (bad, good) = (peer(), peer());
        let mut c = connected(&[bad, good]);
        c.ban(bad, "a message that does not parse".into(), 1);
        c.ban(bad, "again".into(), 2);
        let events: Vec<Event> = std::iter::from_fn(|| c.poll_event()).collect();
        assert_eq!(
            events,
            vec![Event::Misbehaved { peer: bad, reason: "a message that does not parse".into() }]
        );
        assert!(c.is_banned(&bad));
        c.peer_connected(bad, 3); // it comes back: it is still not asked
        let (cid, _) = block(b"wanted");
        c.want(cid, 4).expect("want");
        assert_eq!(sent(&mut c).into_keys().collect::<Vec<_>>(), vec![good]);
    }

    #[test]
    fn the_ban_list_keeps_the_latest_bans_only() {
        let mut c = Client::new();
        let first = peer();
        c.ban(first, "first".into(), 0);
        let others: Vec<PeerId> = (0..MAX_BANNED).map(|_| peer()).collect();
        for (i, p) in others.iter().enumerate() {
            c.ban(*p, "flood".into(), i as u64);
        }
        assert!(!c.is_banned(&first), "the longest banned is forgotten");
        assert!(others.iter().all(|p| c.is_banned(p)));
        assert_eq!(c.banned.len(), MAX_BANNED);
        assert_eq!(c.ban_order.len(), MAX_BANNED);
        assert!(c.unban(&others[0]));
        assert_eq!((c.banned.len(), c.ban_order.len()), (MAX_BANNED - 1, MAX_BANNED - 1));
    }

    #[test]
    fn a_peer_that_says_have_and_sends_nothing_is_asked_after_those_that_answer() {
        let (honest, silent) = (peer(), peer());
        let mut c = connected(&[honest, silent]);
        let (first, _) = block(b"first");
        c.want(first, 0).expect("want");
        sent(&mut c);
        let presence = |p| Incoming { presences: vec![(first, p)], ..Default::default() };
        c.on_message(honest, presence(Presence::DontHave), 1);
        c.on_message(silent, presence(Presence::Have), 1);
        sent(&mut c);
        // Whichever was asked first, the block is now asked of the one that says it has it.
        assert_eq!(c.wants[&first].block_from.map(|(p, _)| p), Some(silent));
        c.tick(1 + BLOCK_TIMEOUT_MS);
        sent(&mut c);
        let (next, _) = block(b"next");
        c.want(next, 2 + BLOCK_TIMEOUT_MS).expect("want");
        let asked: Vec<PeerId> = sent(&mut c).into_keys().collect();
        assert_eq!(asked, vec![honest], "the next want goes first to the peer that answered");
    }

    #[test]
    fn all_dont_have_is_not_found_and_silence_times_out() {
        let a = peer();
        let (cid, _) = block(b"nowhere");
        let mut c = Client::new();
        c.peer_connected(a, 0);
        c.want(cid, 0).expect("want");
        sent(&mut c);
        c.on_message(
            a,
            Incoming { presences: vec![(cid, Presence::DontHave)], ..Default::default() },
            1,
        );
        assert_eq!(c.poll_event(), Some(Event::NotFound { cid }));

        let (slow, _) = block(b"slow");
        c.peer_connected(peer(), 0);
        c.want(slow, 10).expect("want");
        c.tick(10 + BLOCK_TIMEOUT_MS);
        c.tick(10 + WANT_TIMEOUT_MS);
        assert!(std::iter::from_fn(|| c.poll_event()).any(|e| e == Event::NotFound { cid: slow }));
    }

    #[test]
    fn a_serving_peer_that_drops_off_is_waited_for_and_asked_again() {
        let (node, a) = (peer(), peer());
        let (cid, data) = block(b"served by a");
        let mut c = Client::new();
        c.peer_connected(node, 0);
        c.peer_connected(a, 0);
        c.want(cid, 0).expect("want");
        sent(&mut c);
        let dont_have =
            Incoming { presences: vec![(cid, Presence::DontHave)], ..Default::default() };
        c.on_message(node, dont_have, 1);
        // A's only connection is replaced: the want does not fail meanwhile.
        c.peer_disconnected(&a, 2);
        c.tick(2 + RECONNECT_GRACE_MS - 1);
        assert_eq!(c.poll_event(), None);
        c.peer_connected(a, 3 + RECONNECT_GRACE_MS - 1);
        let out = sent(&mut c);
        assert_eq!(out[&a].wants[0].cid, cid, "asked again on the new connection");
        c.on_message(a, Incoming { blocks: vec![(cid, data)], ..Default::default() }, 4_000);
        assert!(matches!(c.poll_event(), Some(Event::Block { from, .. }) if from == a));

        // One that does not come back: the want fails once the grace is over.
        let (gone, _) = block(b"only a had it");
        c.want(gone, 10_000).expect("want");
        sent(&mut c);
        c.on_message(
            node,
            Incoming { presences: vec![(gone, Presence::DontHave)], ..Default::default() },
            10_001,
        );
        c.peer_disconnected(&a, 10_002);
        assert_eq!(c.poll_event(), None);
        c.tick(10_002 + RECONNECT_GRACE_MS);
        assert_eq!(c.poll_event(), Some(Event::NotFound { cid: gone }));
    }

    #[test]
    fn a_peer_sending_wrong_bytes_is_banned_and_an_honest_one_still_serves() {
        let (liar, honest) = (peer(), peer());
        let (cid, data) = block(b"the real bytes");
        let mut c = Client::new();
        c.peer_connected(liar, 0);
        c.want(cid, 0).expect("want");
        sent(&mut c);
        // The liar answers the want with other bytes: they hash to another CID.
        let (fake, junk) = block(b"the wrong bytes");
        assert_ne!(fake, cid);
        c.on_message(liar, Incoming { blocks: vec![(fake, junk)], ..Default::default() }, 1);
        assert!(matches!(c.poll_event(), Some(Event::Misbehaved { peer, .. }) if peer == liar));
        assert!(c.is_banned(&liar));
        c.peer_connected(liar, 2); // reconnecting does not help it
        assert_eq!(c.peers().count(), 0);
        c.peer_connected(honest, 3);
        let out = sent(&mut c);
        assert_eq!(out[&honest].wants[0].want_type, WantType::Block);
        assert!(!out.contains_key(&liar));
        c.on_message(honest, Incoming { blocks: vec![(cid, data)], ..Default::default() }, 4);
        assert!(matches!(c.poll_event(), Some(Event::Block { from, .. }) if from == honest));
    }

    #[test]
    fn a_lost_connection_to_a_peer_that_stays_connected_means_asking_again() {
        let a = peer();
        let (cid, _) = block(b"in flight");
        let mut c = Client::new();
        c.peer_connected(a, 0);
        c.want(cid, 0).expect("want");
        assert_eq!(sent(&mut c)[&a].wants[0].want_type, WantType::Block);
        c.peer_reconnected(a, 5);
        let again = sent(&mut c);
        assert_eq!(
            again[&a].wants,
            vec![Want { cid, want_type: WantType::Block, cancel: false, send_dont_have: true }]
        );
        assert_eq!(c.wanted(), 1);
    }

    #[test]
    fn parallel_wants_spread_over_peers() {
        let peers: Vec<PeerId> = (0..3).map(|_| peer()).collect();
        let mut c = Client::new();
        for p in &peers {
            c.peer_connected(*p, 0);
        }
        for i in 0..9u8 {
            c.want(block(&[i; 10]).0, 0).expect("want");
        }
        let out = sent(&mut c);
        for p in &peers {
            let blocks = out[p].wants.iter().filter(|w| w.want_type == WantType::Block).count();
            assert_eq!(blocks, 3, "each peer sends a third of the blocks");
        }
    }
}
