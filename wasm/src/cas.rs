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
use disot_core::unixfs::{Importer, Layout};
use serde_json::{json, Value};

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
/// An upload without a chunk for this long is dropped.
const UPLOAD_IDLE_MS: f64 = 120_000.0;

/// An upload in progress from one origin.
struct Upload {
    origin: String,
    importer: Importer,
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
}

impl Cas {
    pub(crate) fn new(store: Rc<Store>) -> Self {
        Cas {
            store,
            uploads: RefCell::new(HashMap::new()),
            next_upload: Cell::new(0),
            failed: RefCell::new(VecDeque::new()),
        }
    }
}

/// Remove what expired uploads wrote, in the background (blocks other objects share stay).
fn clean_up(cas: &Cas, abandoned: Vec<Upload>) {
    let written: Vec<Cid> = abandoned.into_iter().flat_map(|u| u.written).collect();
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
/// the object would be someone else's bytes.
pub(crate) fn accept_chunk(
    cas: &Cas,
    origin: &str,
    handle: u64,
    data: &[u8],
) -> Result<Vec<disot_core::unixfs::Block>, ApiError> {
    let mut uploads = cas.uploads.borrow_mut();
    let Some(upload) = uploads.get_mut(&handle).filter(|u| u.origin == origin) else {
        drop(uploads);
        return Err(gone(cas, handle));
    };
    upload.touched = now_ms();
    let blocks = upload.importer.push(data);
    upload.written.extend(blocks.iter().map(|b| b.cid));
    upload.storing += 1;
    Ok(blocks)
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
/// is room. A failure abandons the upload.
pub(crate) async fn store_chunk(
    cas: &Cas,
    origin: &str,
    handle: u64,
    blocks: Vec<disot_core::unixfs::Block>,
    len: usize,
) -> Result<Value, ApiError> {
    if let Some(room) = cas.store.room().await {
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
            let expired = expired.iter().filter_map(|h| cas.uploads.borrow_mut().remove(h));
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
                importer: Importer::new(Layout::default()),
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
            let blocks = accept_chunk(cas, origin, handle, &data)?;
            store_chunk(cas, origin, handle, blocks, data.len()).await
        }
        PageRequest::CasPutAbort { handle } => {
            let upload = take(cas, origin, handle)?;
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
            let Upload { importer, name, mime, public, min_trust, mut written, .. } = upload;
            let (blocks, imported) = importer.finish();
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
