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
use disot_core::unixfs::{BlockImporter, Layout};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::node::now_ms;
use crate::store::Store;

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
/// An upload without a chunk for this long is dropped.
const UPLOAD_IDLE_MS: f64 = 120_000.0;

#[wasm_bindgen]
extern "C" {
    /// Hashes uploads' whole content on another thread (a worker, `extension/common/frame.js`),
    /// so that the thread that takes the pieces only cuts, hashes and stores blocks. Pieces of
    /// one upload are fed in order; `feed` resolves once the piece is hashed (which bounds
    /// what waits in the worker), `digest` to the 32 bytes of SHA-256 of all that was fed,
    /// `forget` drops an upload that will not finish.
    pub type ContentHashers;
    #[wasm_bindgen(method, catch)]
    fn feed(
        this: &ContentHashers,
        handle: f64,
        bytes: &js_sys::Uint8Array,
    ) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn digest(this: &ContentHashers, handle: f64) -> Result<js_sys::Promise, JsValue>;
    #[wasm_bindgen(method)]
    fn forget(this: &ContentHashers, handle: f64);
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
    importer: BlockImporter,
    /// SHA-256 of the content so far, when it is hashed here; `None` when the [`Cas`]'s
    /// hashers do it.
    content: Option<Sha256>,
    name: Option<String>,
    mime: Option<String>,
    public: bool,
    min_trust: Option<u8>,
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
    uploads: RefCell<HashMap<u64, Upload>>,
    next_upload: Cell<u64>,
    /// Why recent uploads were abandoned (the latest few), so that their other pieces in
    /// flight answer with the reason rather than "no such upload".
    failed: RefCell<VecDeque<(u64, ApiError)>>,
    /// Where uploads' whole content is hashed, if not on this thread.
    hashers: Option<ContentHashers>,
    /// The last estimate of the room left, see [`Cas::room_for`].
    room: Cell<Option<Room>>,
}

/// The browser's estimate of the room left for storage, when it was made, and the bytes
/// accepted for storing since.
#[derive(Clone, Copy)]
struct Room {
    estimate: f64,
    at: f64,
    since: f64,
}

impl Cas {
    pub(crate) fn new(store: Rc<Store>, hashers: Option<ContentHashers>) -> Self {
        Cas {
            store,
            uploads: RefCell::new(HashMap::new()),
            next_upload: Cell::new(0),
            failed: RefCell::new(VecDeque::new()),
            hashers,
            room: Cell::new(None),
        }
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

    /// Upload `handle` will not finish: its content hash is not wanted.
    fn forget(&self, handle: u64, upload: &Upload) {
        if let (None, Some(hashers)) = (&upload.content, &self.hashers) {
            hashers.forget(handle as f64);
        }
    }
}

/// What [`accept_chunk`] took: the blocks to store and, when the content is hashed elsewhere,
/// the hashing of the piece.
pub(crate) struct Accepted {
    blocks: Vec<disot_core::unixfs::Block>,
    hashed: Option<Result<js_sys::Promise, JsValue>>,
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
        || store::remove_unreferenced(store, written),
    )
    .await;
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
fn gone(cas: &Cas, handle: u64) -> ApiError {
    let failed = cas.failed.borrow();
    failed.iter().find(|(h, _)| *h == handle).map_or_else(no_upload, |(_, why)| why.clone())
}

/// The object `name`, if this origin may see it.
async fn visible(cas: &Cas, origin: &str, name: &str) -> Result<ObjectRecord, ApiError> {
    match store::resolve(&*cas.store, name).await {
        Ok(r) if r.origins.iter().any(|o| o == origin) => Ok(r),
        Ok(_) | Err(store::Error::UnknownObject(_)) => Err(not_found()),
        Err(e) => Err(store_error(e)),
    }
}

fn describe(r: &ObjectRecord) -> Value {
    json!({ "cid": r.cid, "sha256": r.sha256, "size": r.size, "pinned": r.pinned, "public": r.public, "minTrust": r.min_trust, "name": r.name, "mime": r.mime })
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
    cas: &Cas,
    root: &Cid,
    range: std::ops::Range<u64>,
    mut sink: impl FnMut(&[u8]),
) -> Result<(), ApiError> {
    if range.is_empty() {
        return Ok(());
    }
    store::cat(&*cas.store, root, Some(range), |bytes| {
        sink(bytes);
        Ok(())
    })
    .await
    .map_err(store_error)
}

/// The first half of taking the next piece of upload `handle`: into the importer, at once.
///
/// Call it before anything awaits, in the order the pieces arrived: pieces that wait (for the
/// permission check, for storage) would otherwise be taken in the order they stop waiting, and
/// the object would be someone else's bytes. `js` is the same bytes as a JS array, if the
/// caller has them so (handed to the hashers without another copy).
pub(crate) fn accept_chunk(
    cas: &Cas,
    origin: &str,
    handle: u64,
    data: &[u8],
    js: Option<&js_sys::Uint8Array>,
) -> Result<Accepted, ApiError> {
    let mut uploads = cas.uploads.borrow_mut();
    let Some(upload) = uploads.get_mut(&handle).filter(|u| u.origin == origin) else {
        drop(uploads);
        return Err(gone(cas, handle));
    };
    upload.touched = now_ms();
    let blocks = upload.importer.push(data);
    let hashed = match (&mut upload.content, &cas.hashers) {
        (Some(hasher), _) => {
            hasher.update(data);
            None
        }
        (None, Some(hashers)) => Some(match js {
            Some(bytes) => hashers.feed(handle as f64, bytes),
            None => hashers.feed(handle as f64, &js_sys::Uint8Array::from(data)),
        }),
        (None, None) => Some(Err(JsValue::from_str("no content hasher"))),
    };
    upload.written.extend(blocks.iter().map(|b| b.cid));
    upload.storing += 1;
    Ok(Accepted { blocks, hashed })
}

/// SHA-256 of all of upload `handle`, from the hashers.
async fn content_digest(hashers: &ContentHashers, handle: u64) -> Result<[u8; 32], JsValue> {
    let digest = JsFuture::from(hashers.digest(handle as f64)?).await?;
    let digest = digest.dyn_into::<js_sys::Uint8Array>()?.to_vec();
    digest
        .try_into()
        .map_err(|d: Vec<u8>| JsValue::from_str(&format!("a digest of {} bytes", d.len())))
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
            failed.push_back((handle, why.clone()));
        }
        remove_written(&cas.store, &upload.written).await;
    }
    why
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
    let Accepted { blocks, hashed } = accepted;
    let hashed = match hashed.transpose() {
        Ok(promise) => promise.map(JsFuture::from),
        Err(e) => return Err(abandon(cas, origin, handle, hashing_failed(&e)).await),
    };
    if let Some(room) = cas.room_for(len as f64).await {
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
    if !cas.uploads.borrow().contains_key(&handle) {
        return Err(gone(cas, handle));
    }
    if let Err(e) = cas.store.put_imported(&blocks).await {
        return Err(abandon(cas, origin, handle, store_error(e)).await);
    }
    if let Some(hashed) = hashed {
        if let Err(e) = hashed.await {
            return Err(abandon(cas, origin, handle, hashing_failed(&e)).await);
        }
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
        let cids: Vec<Cid> = blocks.iter().map(|b| b.cid).collect();
        remove_written(&cas.store, &cids).await;
        return Err(gone(cas, handle));
    }
    Ok(json!({ "accepted": len }))
}

pub(crate) async fn handle(
    cas: &Cas,
    origin: &str,
    request: PageRequest,
) -> Result<Value, ApiError> {
    match request {
        PageRequest::CasPutStart { name, mime, public, min_trust } => {
            let now = now_ms();
            let expired: Vec<u64> = cas
                .uploads
                .borrow()
                .iter()
                .filter(|(_, u)| now - u.touched >= UPLOAD_IDLE_MS)
                .map(|(h, _)| *h)
                .collect();
            let expired =
                expired.iter().filter_map(|h| cas.uploads.borrow_mut().remove(h).map(|u| (*h, u)));
            clean_up(cas, expired.collect());
            let mut uploads = cas.uploads.borrow_mut();
            let mine = uploads.values().filter(|u| u.origin == origin).count();
            if mine >= MAX_UPLOADS_PER_ORIGIN || uploads.len() >= MAX_UPLOADS {
                return Err(ApiError::new(
                    ErrorCode::LimitExceeded,
                    "too many uploads in progress",
                ));
            }
            let handle = cas.next_upload.get() + 1;
            cas.next_upload.set(handle);
            let upload = Upload {
                origin: origin.to_owned(),
                importer: BlockImporter::new(Layout::default()),
                content: cas.hashers.is_none().then(Sha256::new),
                name,
                mime,
                public,
                min_trust,
                touched: now,
                written: Vec::new(),
                storing: 0,
            };
            uploads.insert(handle, upload);
            Ok(json!({ "handle": handle, "chunkSize": MAX_CHUNK_BYTES }))
        }
        PageRequest::CasPutChunk { handle, data } => {
            let accepted = accept_chunk(cas, origin, handle, &data, None)?;
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
            let upload = take(cas, origin, handle)?;
            let Upload { importer, content, name, mime, public, min_trust, mut written, .. } =
                upload;
            let digest = match (content, &cas.hashers) {
                (Some(hasher), _) => Ok(hasher.finalize().into()),
                (None, Some(hashers)) => content_digest(hashers, handle).await,
                (None, None) => Err(JsValue::from_str("no content hasher")),
            };
            let digest: [u8; 32] = match digest {
                Ok(digest) => digest,
                Err(e) => {
                    remove_written(&cas.store, &written).await;
                    return Err(hashing_failed(&e));
                }
            };
            let (blocks, imported) = importer.finish(&digest);
            written.extend(blocks.iter().map(|b| b.cid));
            let committed = async {
                cas.store.put_imported(&blocks).await?;
                let mut record = match cas.store.object(&imported.cid.to_string()).await? {
                    Some(existing) => existing,
                    None => ObjectRecord::new(&imported),
                };
                if !record.origins.iter().any(|o| o == origin) {
                    record.origins.push(origin.to_owned());
                }
                record.name = record.name.or(name);
                record.mime = record.mime.or(mime);
                record.public |= public;
                // Put again with another threshold: the lower one holds.
                record.min_trust = match (record.min_trust, min_trust) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                record.pinned = true;
                // The record comes last: only now is the object visible, all at once.
                cas.store.put_object(&record).await?;
                Ok(record)
            }
            .await;
            match committed {
                Ok(record) => {
                    if record.public {
                        crate::notice::published(&record.cid);
                    }
                    Ok(json!({ "cid": record.cid, "sha256": record.sha256, "size": record.size }))
                }
                Err(e) => {
                    remove_written(&cas.store, &written).await;
                    Err(store_error(e))
                }
            }
        }
        PageRequest::CasStat { name } => Ok(describe(&visible(cas, origin, &name).await?)),
        PageRequest::CasHas { name } => match visible(cas, origin, &name).await {
            Ok(_) => Ok(Value::Bool(true)),
            Err(e) if e.code == ErrorCode::NotFound => Ok(Value::Bool(false)),
            Err(e) => Err(e),
        },
        PageRequest::CasRead { name, offset, length } => {
            let (root, range) = read_range(cas, origin, &name, offset, length).await?;
            let mut data = Vec::with_capacity((range.end - range.start) as usize);
            read_into(cas, &root, range, |bytes| data.extend_from_slice(bytes)).await?;
            Ok(
                json!({ "offset": offset, "data": base64::engine::general_purpose::STANDARD.encode(&data) }),
            )
        }
        PageRequest::CasList => {
            let all = cas.store.objects().await.map_err(store_error)?;
            Ok(Value::Array(
                all.iter()
                    .filter(|r| r.origins.iter().any(|o| o == origin))
                    .map(describe)
                    .collect(),
            ))
        }
        PageRequest::CasPin { name, pin } => {
            let mut record = visible(cas, origin, &name).await?;
            record.pinned = pin;
            cas.store.put_object(&record).await.map_err(store_error)?;
            Ok(describe(&record))
        }
        _ => Err(ApiError::new(ErrorCode::UnsupportedMethod, "not a content-store method")),
    }
}
