//! The page API of the content store: uploads in chunks, reads by range, per-origin visibility.
//!
//! Design decision: an origin sees only the objects it put itself (each object record lists its
//! origins). Content addressing would otherwise let any page probe whether this browser holds
//! some file, which says where its user has been. An unknown object and another origin's object
//! get the same answer.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use base64::Engine as _;
use cid::Cid;
use disot_core::api::{ApiError, ErrorCode, PageRequest, MAX_CHUNK_BYTES};
use disot_core::store::{self, BlockStore, ObjectRecord};
use disot_core::unixfs::{Block, Imported, Importer, Layout};
use futures::channel::oneshot;
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::node::now_ms;
use crate::store::{Leaves, Store};

/// Abandoned uploads whose reason is remembered.
const FAILED_KEPT: usize = 16;
/// Uploads one origin may have open at once, and all origins together.
const MAX_UPLOADS_PER_ORIGIN: usize = 4;
const MAX_UPLOADS: usize = 16;
/// Room left for the browser itself and the records: an upload stops with a clear error
/// rather than fill the disk to the last byte.
const STORAGE_RESERVE: f64 = 16.0 * 1024.0 * 1024.0;
/// How long the browser's estimate of the room left is used (less what was written since)
/// before it is asked again; it is asked for every piece within [`ROOM_MARGIN`] of the reserve.
const ROOM_ESTIMATE_MS: f64 = 1_000.0;
const ROOM_MARGIN: f64 = 4.0 * STORAGE_RESERVE;
/// For this long after blocks were removed, an upload short of room asks again, every
/// [`RECLAIM_POLL_MS`], before it gives up: the room they took may show as free only later.
const RECLAIM_MS: f64 = 15_000.0;
const RECLAIM_POLL_MS: u64 = 500;
/// The most pieces whose blocks are written in one transaction (see [`Cas::write`]).
const MAX_PIECES_PER_WRITE: usize = 16;
/// An upload without a chunk for this long is dropped.
const UPLOAD_IDLE_MS: f64 = 120_000.0;

#[wasm_bindgen]
extern "C" {
    /// Imports uploads on another thread (a worker, `extension/common/frame.js`): cuts them into
    /// blocks and hashes the blocks and the whole content, so that the thread that takes the
    /// pieces only stores them. Pieces of one upload are pushed in order (the piece's buffer
    /// is handed over), each with the upload's size if it said one (how its whole content is
    /// best hashed); `push` resolves to the blocks the piece completed as `[cid, bytes]` pairs
    /// (a block that is the whole piece comes back in the piece's own buffer), `finish` to
    /// `[blocks, cid, sha256, size]`, and `forget` drops an upload that will not finish.
    pub type ContentImporters;
    #[wasm_bindgen(method, catch)]
    fn push(
        this: &ContentImporters,
        handle: f64,
        bytes: &JsValue,
        total: JsValue,
    ) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn finish(this: &ContentImporters, handle: f64) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(method)]
    fn forget(this: &ContentImporters, handle: f64);
}

/// The bytes of a piece of an upload, as they came: in this memory (the node's JSON path) or
/// as a JS value, a `Uint8Array` or a `Blob` (the content frame's binary path).
pub(crate) enum Piece<'a> {
    Bytes(&'a [u8]),
    Js(&'a JsValue),
}

/// Blocks whose bytes are JS values (`Uint8Array`s or `Blob`s), as the importers give them back.
type JsBlocks = Vec<(Cid, JsValue)>;

/// `[cid, bytes]` pairs from the importers.
fn js_blocks(v: &JsValue) -> Result<JsBlocks, JsValue> {
    let pairs = v.dyn_ref::<js_sys::Array>().ok_or("blocks are not a list")?;
    let mut out = Vec::with_capacity(pairs.length() as usize);
    for pair in pairs.iter() {
        let pair = pair.dyn_into::<js_sys::Array>().map_err(|_| "a block is not a pair")?;
        let cid =
            pair.get(0).as_string().and_then(|c| c.parse::<Cid>().ok()).ok_or("a block's CID")?;
        let bytes = pair.get(1);
        crate::store::value_len(&bytes).ok_or("a block's bytes")?;
        out.push((cid, bytes));
    }
    Ok(out)
}

/// What the importers made of a whole upload.
async fn finish_elsewhere(
    importers: &ContentImporters,
    handle: u64,
) -> Result<(JsBlocks, Imported), JsValue> {
    let done = JsFuture::from(importers.finish(handle as f64)?).await?;
    let done = done.dyn_into::<js_sys::Array>().map_err(|_| "not a finished import")?;
    let blocks = js_blocks(&done.get(0))?;
    let cid = done.get(1).as_string().and_then(|c| c.parse::<Cid>().ok()).ok_or("the root CID")?;
    let sha256 = done.get(2).as_string().filter(|n| n.starts_with("sha256:")).ok_or("the name")?;
    let size = done.get(3).as_f64().filter(|n| *n >= 0.0).ok_or("the size")? as u64;
    Ok((blocks, Imported { cid, sha256, size }))
}

fn js_error(e: &JsValue) -> String {
    e.as_string()
        .or_else(|| e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| format!("{e:?}"))
}

fn hashing_failed(e: &JsValue) -> ApiError {
    ApiError::new(ErrorCode::Internal, format!("hashing the content failed: {}", js_error(e)))
}

/// An upload in progress from one origin.
struct Upload {
    origin: String,
    /// The import, when it runs on this thread; `None` when the [`Cas`]'s importers run it.
    importer: Option<Importer>,
    name: Option<String>,
    mime: Option<String>,
    public: bool,
    min_trust: Option<u8>,
    /// The size the upload said its content has, if it did.
    size: Option<u64>,
    /// Bytes of content taken so far.
    received: u64,
    touched: f64,
    /// Blocks written so far: removed again if the upload fails or is abandoned.
    written: Vec<Cid>,
    /// Pieces taken into the importer whose blocks are not stored yet.
    storing: usize,
}

/// The content store as pages see it: the block store plus the uploads in progress. The node
/// has one; so has each extension frame that serves a page's content requests directly.
pub(crate) struct Cas {
    pub(crate) store: Rc<Store>,
    /// Uploads by handle: a random 32-bit number, so that the handles an origin is given tell
    /// it nothing of other origins' uploads.
    uploads: RefCell<HashMap<u64, Upload>>,
    /// Why recent uploads were abandoned (the latest few), so that their other pieces in
    /// flight answer with the reason rather than "no such upload".
    failed: RefCell<VecDeque<(u64, String, ApiError)>>,
    /// Where uploads are cut and hashed, if not on this thread.
    importers: Option<ContentImporters>,
    /// The last estimate of the room left, see [`Cas::room_for`].
    room: Cell<Option<Room>>,
    /// Pieces' blocks waiting for the transaction being written to end (see [`Cas::write`]),
    /// and whether one is.
    writes: Rc<RefCell<WriteQueue>>,
    writing: Rc<Cell<bool>>,
    /// Called with `(cid, origin)` as each upload is committed, before its page hears of it
    /// (see [`Cas::tell_on_store`]).
    on_stored: Option<js_sys::Function>,
}

/// The blocks of pieces to write, each with where its outcome goes.
type WriteQueue = Vec<(Vec<(Cid, JsValue)>, oneshot::Sender<Result<(), ApiError>>)>;

/// The browser's estimate of the room left for storage, when it was made, and the bytes
/// accepted for storing since.
#[derive(Clone, Copy)]
struct Room {
    estimate: f64,
    at: f64,
    since: f64,
}

impl Cas {
    pub(crate) fn new(store: Rc<Store>, importers: Option<ContentImporters>) -> Self {
        Cas {
            store,
            uploads: RefCell::new(HashMap::new()),
            failed: RefCell::new(VecDeque::new()),
            importers,
            room: Cell::new(None),
            writes: Rc::default(),
            writing: Rc::default(),
            on_stored: None,
        }
    }

    /// A handle for a new upload: random, and neither in use nor one of a failed upload's.
    fn new_handle(&self, uploads: &HashMap<u64, Upload>) -> Result<u64, ApiError> {
        loop {
            let bytes = crate::store::random_bytes::<4>()
                .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
            let handle = u64::from(u32::from_be_bytes(bytes));
            let taken = handle == 0
                || uploads.contains_key(&handle)
                || self.failed.borrow().iter().any(|(h, ..)| *h == handle);
            if !taken {
                return Ok(handle);
            }
        }
    }

    /// Also call `on_stored(cid, origin)` for each upload committed, before the page's answer
    /// (on top of the notice every context gets): for a node running in the same process,
    /// which then knows the object is held before the page's next request can reach it.
    pub(crate) fn tell_on_store(mut self, on_stored: Option<js_sys::Function>) -> Self {
        self.on_stored = on_stored;
        self
    }

    /// Write the blocks of one piece. While a transaction is being written, the blocks of
    /// pieces that become ready meanwhile wait and go together in the next one (up to
    /// [`MAX_PIECES_PER_WRITE`]): IndexedDB writes several Blobs in one transaction 2–2.5× as
    /// fast as in one each (measured in Chromium). A transaction that fails fails every piece
    /// in it.
    async fn write(&self, blocks: Vec<(Cid, JsValue)>) -> Result<(), ApiError> {
        let (done, outcome) = oneshot::channel();
        self.writes.borrow_mut().push((blocks, done));
        if !self.writing.replace(true) {
            let (store, queue, writing) =
                (self.store.clone(), self.writes.clone(), self.writing.clone());
            wasm_bindgen_futures::spawn_local(async move {
                loop {
                    let group: WriteQueue = {
                        let mut queue = queue.borrow_mut();
                        let n = queue.len().min(MAX_PIECES_PER_WRITE);
                        queue.drain(..n).collect()
                    };
                    if group.is_empty() {
                        break;
                    }
                    let all: Vec<(Cid, JsValue)> =
                        group.iter().flat_map(|(blocks, _)| blocks.iter().cloned()).collect();
                    let result = store.put_js_blocks(&all).await.map_err(store_error);
                    for (_, done) in group {
                        let _ = done.send(result.clone());
                    }
                }
                writing.set(false);
            });
        }
        outcome.await.unwrap_or_else(|_| {
            Err(ApiError::new(ErrorCode::Internal, "the write of the blocks was dropped"))
        })
    }

    /// The room left for storage before `len` more bytes are written, if the browser says.
    /// Asking costs a trip to the browser's own process (about 3 ms in Chromium), so a recent
    /// estimate is used, less what was written since, unless that comes near the reserve.
    async fn room_for(&self, len: f64) -> Option<f64> {
        if let Some(r) = self.room.get() {
            let left = r.estimate - r.since;
            if now_ms() - r.at < ROOM_ESTIMATE_MS && left - len >= ROOM_MARGIN {
                self.room.set(Some(Room { since: r.since + len, ..r }));
                return Some(left);
            }
        }
        let estimate = self.store.room().await?;
        self.room.set(Some(Room { estimate, at: now_ms(), since: len }));
        Some(estimate)
    }

    /// [`Cas::room_for`] a piece of upload `handle`, but if that is short of `len` and the
    /// reserve soon after blocks were removed, asked again until it is not, [`RECLAIM_MS`] have
    /// passed since the removal or the upload is gone (Firefox frees the files of removed Blob
    /// values some seconds later).
    async fn room_after_removals(&self, handle: u64, len: f64) -> Option<f64> {
        let mut room = self.room_for(len).await?;
        while room < len + STORAGE_RESERVE
            && self.store.since_removal() < RECLAIM_MS
            && self.uploads.borrow().contains_key(&handle)
        {
            futures_timer::Delay::new(std::time::Duration::from_millis(RECLAIM_POLL_MS)).await;
            self.room.set(None); // asked afresh
            room = self.room_for(len).await?;
        }
        Some(room)
    }

    /// Upload `handle` will not finish: its import elsewhere is not wanted.
    fn forget(&self, handle: u64, upload: &Upload) {
        if let (None, Some(importers)) = (&upload.importer, &self.importers) {
            importers.forget(handle as f64);
        }
    }
}

/// What [`accept_chunk`] took: the blocks to store, or their import elsewhere; or a piece it
/// did not take, for this reason, whose upload must be abandoned.
pub(crate) enum Accepted {
    Blocks(Vec<Block>),
    Importing(js_sys::Promise),
    Refused(ApiError),
}

/// Remove what expired uploads wrote, in the background (blocks other objects share stay).
fn clean_up(cas: &Cas, abandoned: Vec<(u64, Upload)>) {
    for (handle, upload) in &abandoned {
        cas.forget(*handle, upload);
    }
    let written: Vec<Cid> = abandoned.into_iter().flat_map(|(_, u)| u.written).collect();
    let store = cas.store.clone();
    wasm_bindgen_futures::spawn_local(async move { remove_written(&store, &written).await });
}

/// Remove blocks a failed or abandoned upload wrote (blocks other objects share stay).
///
/// Awaited before the failure is answered: the context that runs this (a content frame lives
/// only as long as its page) may be gone a moment after the page has its answer, and a removal
/// left running in the background would die with it, leaving the blocks behind.
async fn remove_written(store: &Store, written: &[Cid]) {
    if written.is_empty() {
        return;
    }
    // On a full disk the browser may refuse even the transaction that deletes (Firefox
    // journals it first): try again a few times as space comes back. What is still left after
    // that is an orphan that garbage collection removes.
    let removed = crate::retry::with_backoff(
        "removing blocks of abandoned uploads",
        250,
        8_000,
        |_| true,
        || async {
            store
                .remove_unreferenced(written)
                .await?
                .ok_or_else(|| store::Error::Backend("objects changed while it ran".to_owned()))
        },
    )
    .await;
    // Room may show as free only some seconds after (see `Cas::room_after_removals`).
    if !matches!(removed, Ok(0)) {
        store.removed();
    }
    match removed {
        Ok(n) => tracing::info!("removed {n} blocks of abandoned uploads"),
        Err(e) => tracing::warn!("removing blocks of abandoned uploads: {e}; giving up"),
    }
}

fn store_error(e: store::Error) -> ApiError {
    match e {
        store::Error::QuotaExceeded(m) => {
            ApiError::new(ErrorCode::LimitExceeded, format!("storage quota exceeded: {m}"))
        }
        store::Error::UnknownObject(_) => not_found(),
        other => ApiError::new(ErrorCode::Internal, other.to_string()),
    }
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such object")
}

fn no_upload() -> ApiError {
    ApiError::new(ErrorCode::InvalidParams, "no such upload (finished, aborted or expired)")
}

/// The answer for a piece of upload `handle` that is gone: why it was abandoned, if it was.
/// (Handles are shared by all origins: another origin's failures are not told.)
fn gone(cas: &Cas, origin: &str, handle: u64) -> ApiError {
    let failed = cas.failed.borrow();
    failed
        .iter()
        .find(|(h, o, _)| *h == handle && o == origin)
        .map_or_else(no_upload, |(_, _, why)| why.clone())
}

/// The object `name`, if this origin may see it.
async fn visible(cas: &Cas, origin: &str, name: &str) -> Result<ObjectRecord, ApiError> {
    match store::resolve_where(&*cas.store, name, |r| r.origins.iter().any(|o| o == origin)).await {
        Ok(r) => Ok(r),
        Err(store::Error::UnknownObject(_)) => Err(not_found()),
        Err(e) => Err(store_error(e)),
    }
}

/// Object `r` as `origin` sees it: pinned or not by that origin, and what that origin said of
/// it, nothing another origin said.
fn describe(r: &ObjectRecord, origin: &str) -> Value {
    let l = r.label_for(origin);
    json!({ "cid": r.cid, "sha256": r.sha256, "size": r.size, "pinned": r.pinned_for(origin), "public": l.public, "minTrust": l.min_trust, "name": l.name, "mime": l.mime })
}

/// The root and byte range a read of up to `length` bytes of object `name` from `offset`
/// covers (clipped to the object's end; empty past it).
pub(crate) async fn read_range(
    cas: &Cas,
    origin: &str,
    name: &str,
    offset: u64,
    length: u64,
) -> Result<(Cid, std::ops::Range<u64>), ApiError> {
    let record = visible(cas, origin, name).await?;
    let cid: Cid = record.cid.parse().map_err(|_| not_found())?;
    let end = offset.saturating_add(length).min(record.size);
    Ok((cid, offset..end.max(offset)))
}

/// Stream the bytes of `range` of the object rooted at `root` to `sink`, every block verified.
pub(crate) async fn read_into(
    store: &Store,
    root: &Cid,
    range: std::ops::Range<u64>,
    mut sink: impl FnMut(&[u8]),
) -> Result<(), ApiError> {
    if range.is_empty() {
        return Ok(());
    }
    store::cat(store, root, Some(range), |bytes| {
        sink(bytes);
        Ok(())
    })
    .await
    .map_err(store_error)
}

/// The bytes of `range` of the object rooted at `root`, every block verified, as a JS array of
/// `Uint8Array` parts in order, each the only view of a buffer of its own (so each can be
/// transferred to another context as it is). A file of raw leaves has its leaves read all at
/// once and each whole leaf handed on as storage gave it (a part of one is copied out); other
/// files are walked by [`store::cat`] into one part. With [`Leaves::Blobs`], a leaf stored as
/// a `Blob` is handed on as that Blob (or a slice of it), checked: its bytes go to whoever
/// reads it without passing through here.
pub(crate) async fn read_js(
    store: &Store,
    root: &Cid,
    range: std::ops::Range<u64>,
    leaves: Leaves<'_>,
) -> Result<js_sys::Array, ApiError> {
    let parts = js_sys::Array::new();
    if range.is_empty() {
        return Ok(parts);
    }
    let Some(spans) = store::leaf_spans(store, root, range.clone()).await.map_err(store_error)?
    else {
        let len = (range.end - range.start) as u32;
        let out = js_sys::Uint8Array::new_with_length(len);
        // Exactly the range, or an error: never a part left as zeros, nor a copy past its end.
        let mut at = Some(0u32);
        read_into(store, root, range, |bytes| {
            at = at
                .and_then(|a| Some((a, a.checked_add(u32::try_from(bytes.len()).ok()?)?)))
                .filter(|(_, end)| *end <= len)
                .map(|(a, end)| {
                    out.subarray(a, end).copy_from(bytes);
                    end
                });
        })
        .await?;
        if at != Some(len) {
            return Err(store_error(store::Error::Malformed {
                cid: *root,
                reason: "the file does not hold the bytes its record says".into(),
            }));
        }
        parts.push(&out);
        return Ok(parts);
    };
    // Every read is waited for, even after one failed: storage takes no request back.
    let leaves =
        futures::future::join_all(spans.iter().map(|s| store.get_part(&s.cid, leaves))).await;
    let mut total = 0u64;
    for (span, leaf) in spans.iter().zip(leaves) {
        let leaf = leaf.and_then(|l| l.ok_or(store::Error::Missing(span.cid)));
        let leaf = leaf.map_err(store_error)?;
        let len = crate::store::value_len(&leaf).unwrap_or(0) as u64;
        if len != span.size {
            return Err(store_error(store::Error::Malformed {
                cid: span.cid,
                reason: format!("{len} bytes where its parent says {}", span.size),
            }));
        }
        let (start, end) = (span.within.start, span.within.end);
        let part: JsValue = match leaf.dyn_into::<web_sys::Blob>() {
            Ok(blob) if start == 0 && end == span.size => blob.into(),
            Ok(blob) => blob
                .slice_with_f64_and_f64(start as f64, end as f64)
                .map_err(|e| store_error(store::Error::Backend(format!("{e:?}"))))?
                .into(),
            Err(leaf) => {
                let leaf = js_sys::Uint8Array::from(leaf);
                let whole = start == 0
                    && end == span.size
                    && leaf.byte_offset() == 0
                    && leaf.byte_length() == leaf.buffer().byte_length();
                if whole {
                    leaf.into()
                } else {
                    leaf.slice(start as u32, end as u32).into()
                }
            }
        };
        parts.push(&part);
        total += end - start;
    }
    if total != range.end - range.start {
        return Err(store_error(store::Error::Malformed {
            cid: *root,
            reason: "the file is shorter than its record says".into(),
        }));
    }
    Ok(parts)
}

/// The first half of taking the next piece of upload `handle`: into the importer, at once.
///
/// Call it before anything awaits, in the order the pieces arrived: pieces that wait (for the
/// permission check, for storage) would otherwise be taken in the order they stop waiting, and
/// the object would be someone else's bytes. A piece that came as a JS array goes to the
/// importers (if there are) without a copy.
pub(crate) fn accept_chunk(
    cas: &Cas,
    origin: &str,
    handle: u64,
    piece: Piece<'_>,
) -> Result<Accepted, ApiError> {
    let mut uploads = cas.uploads.borrow_mut();
    let Some(upload) = uploads.get_mut(&handle).filter(|u| u.origin == origin) else {
        drop(uploads);
        return Err(gone(cas, origin, handle));
    };
    upload.touched = now_ms();
    let len = match piece {
        Piece::Bytes(bytes) => bytes.len(),
        Piece::Js(value) => crate::store::value_len(value).unwrap_or(0),
    };
    upload.received += len as u64;
    if let Some(size) = upload.size.filter(|size| upload.received > *size) {
        return Ok(Accepted::Refused(ApiError::new(
            ErrorCode::InvalidParams,
            format!("the upload has more than the {size} bytes its size says"),
        )));
    }
    let accepted = match (&mut upload.importer, &cas.importers) {
        (Some(importer), _) => {
            let blocks = match piece {
                Piece::Bytes(bytes) => importer.push(bytes),
                Piece::Js(value) => match value.dyn_ref::<js_sys::Uint8Array>() {
                    Some(array) => importer.push(&array.to_vec()),
                    None => {
                        drop(uploads);
                        return Err(ApiError::new(
                            ErrorCode::InvalidParams,
                            "a piece read on this thread must be bytes",
                        ));
                    }
                },
            };
            upload.written.extend(blocks.iter().map(|b| b.cid));
            Accepted::Blocks(blocks)
        }
        (None, Some(importers)) => {
            let total =
                upload.size.map_or(JsValue::UNDEFINED, |size| JsValue::from_f64(size as f64));
            let pushed = match piece {
                Piece::Bytes(bytes) => {
                    importers.push(handle as f64, &js_sys::Uint8Array::from(bytes).into(), total)
                }
                Piece::Js(value) => importers.push(handle as f64, value, total),
            };
            match pushed {
                Ok(promise) => Accepted::Importing(promise),
                Err(e) => {
                    drop(uploads);
                    return Err(hashing_failed(&e));
                }
            }
        }
        (None, None) => {
            drop(uploads);
            return Err(hashing_failed(&JsValue::from_str("no importer")));
        }
    };
    upload.storing += 1;
    Ok(accepted)
}

/// Upload `handle` of `origin`, taken out of the uploads in progress.
fn take(cas: &Cas, origin: &str, handle: u64) -> Result<Upload, ApiError> {
    let mut uploads = cas.uploads.borrow_mut();
    uploads.get(&handle).filter(|u| u.origin == origin).ok_or_else(no_upload)?;
    uploads.remove(&handle).ok_or_else(no_upload)
}

/// Drop upload `handle` and remove what it wrote, after one of its pieces failed with `why`;
/// gives back `why`, which its other pieces answer too.
pub(crate) async fn abandon(cas: &Cas, origin: &str, handle: u64, why: ApiError) -> ApiError {
    if let Ok(upload) = take(cas, origin, handle) {
        cas.forget(handle, &upload);
        {
            let mut failed = cas.failed.borrow_mut();
            if failed.len() >= FAILED_KEPT {
                failed.pop_front();
            }
            failed.push_back((handle, origin.to_owned(), why.clone()));
        }
        remove_written(&cas.store, &upload.written).await;
    }
    why
}

/// Blocks to store: made here, or by the importers.
enum Stored {
    Here(Vec<Block>),
    Js(JsBlocks),
}

impl Stored {
    async fn store(&self, store: &Store) -> store::Result<()> {
        match self {
            Stored::Here(blocks) => store.put_imported(blocks).await,
            Stored::Js(blocks) => store.put_js_blocks(blocks).await,
        }
    }

    fn cids(&self) -> Vec<Cid> {
        match self {
            Stored::Here(blocks) => blocks.iter().map(|b| b.cid).collect(),
            Stored::Js(blocks) => blocks.iter().map(|(cid, _)| *cid).collect(),
        }
    }

    /// The blocks as JS values, as IndexedDB takes them.
    fn js(&self) -> Vec<(Cid, JsValue)> {
        match self {
            Stored::Here(blocks) => crate::store::js_values(blocks),
            Stored::Js(blocks) => blocks.clone(),
        }
    }
}

/// The second half: write the blocks [`accept_chunk`] made of a piece of `len` bytes, if there
/// is room, and wait for the piece's hashing. A failure abandons the upload.
pub(crate) async fn store_chunk(
    cas: &Cas,
    origin: &str,
    handle: u64,
    accepted: Accepted,
    len: usize,
) -> Result<Value, ApiError> {
    let blocks = match accepted {
        Accepted::Refused(why) => return Err(abandon(cas, origin, handle, why).await),
        Accepted::Blocks(blocks) => Stored::Here(blocks),
        Accepted::Importing(promise) => {
            match JsFuture::from(promise).await.and_then(|v| js_blocks(&v)) {
                Ok(blocks) => Stored::Js(blocks),
                Err(e) => return Err(abandon(cas, origin, handle, hashing_failed(&e)).await),
            }
        }
    };
    if let Some(room) = cas.room_after_removals(handle, len as f64).await {
        if room < len as f64 + STORAGE_RESERVE {
            let full = ApiError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "storage is full: {:.1} MiB left and {:.0} MiB are kept in reserve; the upload was abandoned",
                    room.max(0.0) / 1048576.0,
                    STORAGE_RESERVE / 1048576.0
                ),
            );
            return Err(abandon(cas, origin, handle, full).await);
        }
    }
    // An earlier piece failed meanwhile: the upload is gone, and so must these blocks be.
    // The worker's blocks were not seen on this thread before: record them for the clean-up.
    match cas.uploads.borrow_mut().get_mut(&handle) {
        Some(upload) => {
            if let Stored::Js(blocks) = &blocks {
                upload.written.extend(blocks.iter().map(|(cid, _)| *cid));
            }
        }
        None => return Err(gone(cas, origin, handle)),
    }
    if let Err(e) = cas.write(blocks.js()).await {
        return Err(abandon(cas, origin, handle, e).await);
    }
    let still_open = match cas.uploads.borrow_mut().get_mut(&handle) {
        Some(upload) => {
            upload.storing = upload.storing.saturating_sub(1);
            true
        }
        None => false,
    };
    if !still_open {
        // Another piece failed while these blocks were being written, and its clean-up may
        // have looked for them before they were there: remove them too.
        remove_written(&cas.store, &blocks.cids()).await;
        return Err(gone(cas, origin, handle));
    }
    Ok(json!({ "accepted": len }))
}

impl Cas {
    /// Whether an upload is in progress here (one left idle is dropped first, and what it
    /// wrote removed: its page went without finishing it).
    pub(crate) fn uploading(&self) -> bool {
        self.drop_idle(now_ms());
        !self.uploads.borrow().is_empty()
    }

    /// Drop the uploads no piece reached for [`UPLOAD_IDLE_MS`], removing what they wrote.
    fn drop_idle(&self, now: f64) {
        let idle: Vec<u64> = self
            .uploads
            .borrow()
            .iter()
            .filter(|(_, u)| now - u.touched >= UPLOAD_IDLE_MS)
            .map(|(h, _)| *h)
            .collect();
        let idle = idle.iter().filter_map(|h| self.uploads.borrow_mut().remove(h).map(|u| (*h, u)));
        clean_up(self, idle.collect());
    }
}

pub(crate) async fn handle(
    cas: &Cas,
    origin: &str,
    request: PageRequest,
) -> Result<Value, ApiError> {
    match request {
        PageRequest::CasPutStart { name, mime, public, min_trust, size } => {
            let now = now_ms();
            cas.drop_idle(now);
            let mut uploads = cas.uploads.borrow_mut();
            let mine = uploads.values().filter(|u| u.origin == origin).count();
            if mine >= MAX_UPLOADS_PER_ORIGIN || uploads.len() >= MAX_UPLOADS {
                return Err(ApiError::new(
                    ErrorCode::LimitExceeded,
                    "too many uploads in progress",
                ));
            }
            let handle = cas.new_handle(&uploads)?;
            let upload = Upload {
                origin: origin.to_owned(),
                importer: cas.importers.is_none().then(|| Importer::new(Layout::default())),
                name,
                mime,
                public,
                min_trust,
                size,
                received: 0,
                touched: now,
                written: Vec::new(),
                storing: 0,
            };
            uploads.insert(handle, upload);
            Ok(json!({ "handle": handle, "chunkSize": MAX_CHUNK_BYTES }))
        }
        PageRequest::CasPutChunk { handle, data } => {
            let accepted = accept_chunk(cas, origin, handle, Piece::Bytes(&data))?;
            store_chunk(cas, origin, handle, accepted, data.len()).await
        }
        PageRequest::CasPutAbort { handle } => {
            let upload = take(cas, origin, handle)?;
            cas.forget(handle, &upload);
            remove_written(&cas.store, &upload.written).await;
            Ok(json!({ "aborted": handle }))
        }
        PageRequest::CasPutFinish { handle } => {
            // Its record would make the object visible before all of its blocks are.
            if cas
                .uploads
                .borrow()
                .get(&handle)
                .is_some_and(|u| u.origin == origin && u.storing > 0)
            {
                return Err(ApiError::new(
                    ErrorCode::InvalidParams,
                    "pieces of this upload are still being stored: wait for their answers before finishing",
                ));
            }
            let short =
                cas.uploads.borrow().get(&handle).filter(|u| u.origin == origin).and_then(|u| {
                    u.size.filter(|size| *size != u.received).map(|size| (size, u.received))
                });
            if let Some((size, received)) = short {
                let why = ApiError::new(
                    ErrorCode::InvalidParams,
                    format!("the upload has {received} bytes, not the {size} its size says"),
                );
                return Err(abandon(cas, origin, handle, why).await);
            }
            let upload = take(cas, origin, handle)?;
            let Upload { importer, name, mime, public, min_trust, mut written, .. } = upload;
            let finished = match (importer, &cas.importers) {
                (Some(importer), _) => {
                    let (blocks, imported) = importer.finish();
                    Ok((Stored::Here(blocks), imported))
                }
                (None, Some(importers)) => finish_elsewhere(importers, handle)
                    .await
                    .map(|(blocks, imported)| (Stored::Js(blocks), imported)),
                (None, None) => Err(JsValue::from_str("no importer")),
            };
            let (blocks, imported) = match finished {
                Ok(done) => done,
                Err(e) => {
                    remove_written(&cas.store, &written).await;
                    return Err(hashing_failed(&e));
                }
            };
            written.extend(blocks.cids());
            let committed = async {
                blocks.store(&cas.store).await?;
                // The record comes last: only now is the object visible, all at once. It is
                // changed as stored when it is written (another page may have put the same
                // content, or the user shared or revoked it, since this upload began).
                let change = |stored: Option<ObjectRecord>| {
                    let mut record = stored.unwrap_or_else(|| ObjectRecord::new(&imported));
                    // Put again with another threshold: the lower one holds.
                    record.label(origin, store::Label { name, mime, public, min_trust });
                    if !record.origins.iter().any(|o| o == origin) {
                        record.origins.push(origin.to_owned());
                    }
                    record.set_pinned_for(origin, true);
                    Some(record)
                };
                let record =
                    cas.store.commit_object(&imported.cid.to_string(), &written, change).await?;
                record.ok_or_else(|| store::Error::Backend("the record was not written".into()))
            }
            .await;
            match committed {
                Ok(record) => {
                    crate::notice::stored(
                        &record.cid,
                        origin,
                        record.public || record.min_trust.is_some(),
                    );
                    if let Some(on_stored) = &cas.on_stored {
                        let told = on_stored.call2(
                            &JsValue::NULL,
                            &record.cid.as_str().into(),
                            &origin.into(),
                        );
                        if let Err(e) = told {
                            tracing::info!("telling of a stored object: {e:?}");
                        }
                    }
                    Ok(json!({ "cid": record.cid, "sha256": record.sha256, "size": record.size }))
                }
                Err(e) => {
                    remove_written(&cas.store, &written).await;
                    Err(match e {
                        store::Error::Missing(cid) => ApiError::new(
                            ErrorCode::Internal,
                            format!(
                                "block {cid} of this upload was removed before the upload was \
                                 done (the storage was freed meanwhile): put it again"
                            ),
                        ),
                        other => store_error(other),
                    })
                }
            }
        }
        PageRequest::CasStat { name } => Ok(describe(&visible(cas, origin, &name).await?, origin)),
        PageRequest::CasHas { name } => match visible(cas, origin, &name).await {
            Ok(_) => Ok(Value::Bool(true)),
            Err(e) if e.code == ErrorCode::NotFound => Ok(Value::Bool(false)),
            Err(e) => Err(e),
        },
        PageRequest::CasRead { name, offset, length } => {
            let (root, range) = read_range(cas, origin, &name, offset, length).await?;
            let mut data = Vec::with_capacity((range.end - range.start) as usize);
            read_into(&cas.store, &root, range, |bytes| data.extend_from_slice(bytes)).await?;
            Ok(
                json!({ "offset": offset, "data": base64::engine::general_purpose::STANDARD.encode(&data) }),
            )
        }
        PageRequest::CasList => {
            let all = cas.store.objects().await.map_err(store_error)?;
            Ok(Value::Array(
                all.iter()
                    .filter(|r| r.origins.iter().any(|o| o == origin))
                    .map(|r| describe(r, origin))
                    .collect(),
            ))
        }
        PageRequest::CasPin { name, pin } => {
            let record = visible(cas, origin, &name).await?;
            // Changed as stored now: a share, revocation or another page's put made since it
            // was read stands. Gone meanwhile (collected): not found, as if never seen.
            let pinned = cas
                .store
                .update_object(&record.cid, |stored| {
                    let mut stored = stored?;
                    stored.set_pinned_for(origin, pin);
                    Some(stored)
                })
                .await
                .map_err(store_error)?
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::NotFound, format!("{name} is not stored"))
                })?;
            Ok(describe(&pinned, origin))
        }
        _ => Err(ApiError::new(ErrorCode::UnsupportedMethod, "not a content-store method")),
    }
}
