//! The binary path for page content: an extension page embedded (hidden) in the web page serves
//! that page's `cas_*` requests straight from the extension's IndexedDB, with content moving as
//! transferable buffers. Extension messaging would carry it as base64 JSON through one or two
//! hops, which is most of the cost of a put or a get.
//!
//! The origin is the one the browser stamped on the message that delivered the frame's port;
//! the grant is read from storage on every request, so a revocation in the popup applies to the
//! next request. Only content-store requests are served here; everything else (permissions,
//! status) still goes to the node.

use std::rc::Rc;

use disot_core::api::{self, ApiError, ErrorCode, MAX_FRAME_CHUNK_BYTES};
use disot_core::permissions::{self, Permission};
use wasm_bindgen::prelude::*;

use crate::cas::{self, Cas, ContentImporters, Piece};
use crate::store::{Leaves, Store};
use cid::Cid;
use disot_core::unixfs::{Layout, LeafTree};
use wasm_bindgen_futures::JsFuture;

/// The content store of one extension frame.
#[wasm_bindgen]
pub struct Frame {
    cas: Rc<Cas>,
    readers: Option<ContentReaders>,
}

/// SHA-256 of `data` with the same code the store verifies blocks with; for the benchmark that
/// compares it with WebCrypto and native hashing.
#[wasm_bindgen(js_name = sha256)]
pub fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).to_vec()
}

/// An upload's import on the worker that takes it off the frame's thread (see
/// [`ContentImporters`]): the worker cuts the pieces into leaves and hashes each with the
/// browser's SHA-256 (several times faster than this code's); this builds the tree over them.
/// The whole content's `sha256:` name is hashed apart ([`ContentHash`]), and its digest given
/// at the end.
#[wasm_bindgen]
pub struct WorkerImport(LeafTree);

/// `blocks` for JS as `[cid, bytes]` pairs.
fn block_pairs(blocks: &[disot_core::unixfs::Block]) -> js_sys::Array {
    blocks
        .iter()
        .map(|b| {
            let bytes = js_sys::Uint8Array::from(b.data.as_slice());
            js_sys::Array::of2(&JsValue::from_str(&b.cid.to_string()), &bytes)
        })
        .collect()
}

#[wasm_bindgen]
impl WorkerImport {
    /// An upload with the store's layout.
    #[wasm_bindgen(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> WorkerImport {
        WorkerImport(LeafTree::new(Layout::default()))
    }

    /// The size the worker cuts leaves to: every leaf but the last is exactly this long.
    #[wasm_bindgen(js_name = chunkSize)]
    pub fn chunk_size() -> usize {
        Layout::default().chunk_size()
    }

    /// The next leaf, by its SHA-256 and length: `[cid, blocks]`, the leaf's CID and the
    /// branch blocks it completed as `[cid, bytes]` pairs. Errs on a leaf out of shape (see
    /// [`LeafTree::push_leaf`]).
    #[wasm_bindgen(js_name = pushLeaf)]
    pub fn push_leaf(&mut self, digest: &[u8], len: usize) -> Result<js_sys::Array, JsError> {
        let digest: &[u8; 32] =
            digest.try_into().map_err(|_| JsError::new("a leaf's SHA-256 is 32 bytes"))?;
        let (cid, branches) = self.0.push_leaf(digest, len).map_err(|e| JsError::new(&e))?;
        Ok(js_sys::Array::of2(&JsValue::from_str(&cid.to_string()), &block_pairs(&branches)))
    }

    /// Leaves taken so far.
    pub fn leaves(&self) -> f64 {
        self.0.leaves() as f64
    }

    /// End of the upload, with `content_digest` the SHA-256 of all of it: `[blocks, cid,
    /// sha256, size]`, the last branches as from `pushLeaf` (the root last); used up. With no
    /// leaf pushed the content is empty, and its one (empty) leaf is the caller's to store.
    pub fn finish(self, content_digest: &[u8]) -> Result<js_sys::Array, JsError> {
        let digest: &[u8; 32] = content_digest
            .try_into()
            .map_err(|_| JsError::new("the content's SHA-256 (32 bytes) is needed"))?;
        let (blocks, imported) = self.0.finish(digest);
        let out = js_sys::Array::new();
        out.push(&block_pairs(&blocks));
        out.push(&JsValue::from_str(&imported.cid.to_string()));
        out.push(&JsValue::from_str(&imported.sha256));
        out.push(&JsValue::from_f64(imported.size as f64));
        Ok(out)
    }
}

/// The SHA-256 of an upload's whole content (its `sha256:` name), worked out piece by piece
/// (the browser's SHA-256 takes only whole buffers): on a worker of its own while another cuts
/// and hashes the leaves ([`WorkerImport`]), or on that one if it is alone.
#[wasm_bindgen]
pub struct ContentHash(sha2::Sha256);

#[wasm_bindgen]
impl ContentHash {
    #[wasm_bindgen(constructor)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> ContentHash {
        use sha2::Digest as _;
        ContentHash(sha2::Sha256::new())
    }

    pub fn push(&mut self, piece: &[u8]) {
        use sha2::Digest as _;
        self.0.update(piece);
    }

    /// The digest of everything pushed; the hasher is used up.
    pub fn finish(self) -> Vec<u8> {
        use sha2::Digest as _;
        self.0.finalize().to_vec()
    }
}

/// Open the extension's storage for a frame. With `importers`, uploads are cut into blocks and
/// hashed there (another thread) rather than on the frame's, which only stores them; with
/// `readers`, content is read and verified there. `on_stored(cid, origin)` is called as each
/// upload is committed, before its page is answered (see [`Cas::tell_on_store`]).
#[wasm_bindgen(js_name = openFrame)]
pub async fn open_frame(
    importers: Option<ContentImporters>,
    readers: Option<ContentReaders>,
    on_stored: Option<js_sys::Function>,
) -> Result<Frame, JsError> {
    crate::node::init_logging(None);
    let cas = Cas::new(open_store().await?, importers).tell_on_store(on_stored);
    Ok(Frame { cas: Rc::new(cas), readers })
}

async fn open_store() -> Result<Rc<Store>, JsError> {
    let store = Store::open().await.map_err(|e| JsError::new(&format!("opening storage: {e}")))?;
    Ok(Rc::new(store))
}

async fn authorise(cas: &Cas, origin: &str) -> Result<(), ApiError> {
    permissions::validate_origin(origin)?;
    let grants = cas
        .store
        .grants()
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("reading permissions: {e}")))?;
    if grants.allows(origin, Permission::Cas) {
        Ok(())
    } else {
        Err(Permission::Cas.missing())
    }
}

fn too_big(len: usize) -> ApiError {
    ApiError::new(
        ErrorCode::LimitExceeded,
        format!("{len} bytes in one message; the limit is {MAX_FRAME_CHUNK_BYTES}"),
    )
}

#[wasm_bindgen]
impl Frame {
    /// A content-store request as JSON text; resolves to the JSON text of `{result}` or
    /// `{error}`.
    pub fn request(&self, origin: String, body: String) -> js_sys::Promise {
        let cas = self.cas.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let result = async {
                let request = api::parse_page_request(&body)?;
                if request.needs() != Some(Permission::Cas) {
                    return Err(ApiError::new(
                        ErrorCode::UnsupportedMethod,
                        "the content frame serves only content-store methods",
                    ));
                }
                authorise(&cas, &origin).await?;
                cas::handle(&cas, &origin, request).await
            }
            .await;
            Ok(JsValue::from_str(&api::response_json(result)))
        })
    }

    /// The next piece of upload `handle`, as a `Uint8Array` or a `Blob`; resolves like
    /// [`Frame::request`]. Pieces are taken in the order of the calls, however many are in
    /// flight.
    #[wasm_bindgen(js_name = putChunk)]
    pub fn put_chunk(&self, origin: String, handle: f64, data: JsValue) -> js_sys::Promise {
        let cas = self.cas.clone();
        let len = crate::store::value_len(&data);
        // Into the importer now, before the permission check waits (see `cas::accept_chunk`);
        // if the check fails, the upload is abandoned and nothing of it is stored.
        let accepted = match len {
            None => Err(ApiError::new(ErrorCode::InvalidParams, "a piece must be bytes or a Blob")),
            Some(len) if len > MAX_FRAME_CHUNK_BYTES => Err(too_big(len)),
            Some(_) if !((0.0..=u32::MAX as f64).contains(&handle) && handle.fract() == 0.0) => {
                Err(ApiError::new(ErrorCode::InvalidParams, "handle must be an upload handle"))
            }
            Some(_) => cas::accept_chunk(&cas, &origin, handle as u64, Piece::Js(&data)),
        };
        let len = len.unwrap_or(0);
        wasm_bindgen_futures::future_to_promise(async move {
            let result = async {
                let blocks = accepted?;
                if let Err(e) = authorise(&cas, &origin).await {
                    return Err(cas::abandon(&cas, &origin, handle as u64, e).await);
                }
                cas::store_chunk(&cas, &origin, handle as u64, blocks, len).await
            }
            .await;
            Ok(JsValue::from_str(&api::response_json(result)))
        })
    }

    /// Up to `length` bytes of object `name` from `offset`: resolves to an array of
    /// `Uint8Array` parts, in order, each on a buffer of its own, or with `blobs` also checked
    /// `Blob`s (see [`cas::read_js`]), or to the JSON text of `{error}`. The blocks are read
    /// and verified on the worker when there is one: this thread only checks the permission
    /// and looks the object up.
    pub fn read(
        &self,
        origin: String,
        name: String,
        offset: f64,
        length: f64,
        blobs: bool,
    ) -> js_sys::Promise {
        let cas = self.cas.clone();
        let readers = self.readers.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let result = async {
                if !whole_bytes(offset) || !whole_bytes(length) {
                    return Err(ApiError::new(
                        ErrorCode::InvalidParams,
                        "offset and length must be whole numbers of bytes",
                    ));
                }
                if length > MAX_FRAME_CHUNK_BYTES as f64 {
                    return Err(too_big(length as usize));
                }
                authorise(&cas, &origin).await?;
                let (root, range) =
                    cas::read_range(&cas, &origin, &name, offset as u64, length as u64).await?;
                if let Some(readers) = &readers {
                    match read_elsewhere(readers, &root, &range, blobs).await {
                        Ok(answer) => return Ok(answer),
                        // The worker failed (not the read): this thread reads instead.
                        Err(e) => tracing::warn!("content worker: {e:?}; reading in the frame"),
                    }
                }
                let leaves = Leaves::asked(blobs, None);
                cas::read_js(&cas.store, &root, range, leaves).await.map(JsValue::from)
            }
            .await;
            Ok(match result {
                Ok(answer) => answer,
                Err(e) => JsValue::from_str(&api::response_json(Err(e))),
            })
        })
    }
}

/// A byte offset or count as JS gives it: a whole number that a double holds exactly.
fn whole_bytes(n: f64) -> bool {
    (0.0..=9_007_199_254_740_991.0).contains(&n) && n.fract() == 0.0
}

/// `range` of the object rooted at `root`, read by `readers`: its parts, or the JSON text of
/// the error the read ended with. `Err` if the readers themselves failed.
async fn read_elsewhere(
    readers: &ContentReaders,
    root: &Cid,
    range: &std::ops::Range<u64>,
    blobs: bool,
) -> Result<JsValue, JsValue> {
    let promise = readers.read(&root.to_string(), range.start as f64, range.end as f64, blobs)?;
    let answer = JsFuture::from(promise).await?;
    let total = answer.dyn_ref::<js_sys::Array>().and_then(|parts| {
        parts.iter().try_fold(0u64, |n, p| Some(n + crate::store::value_len(&p)? as u64))
    });
    let right_size = total == Some(range.end - range.start);
    if right_size || answer.is_string() {
        Ok(answer)
    } else {
        Err(JsValue::from_str("the worker's answer is not the range asked for"))
    }
}

#[wasm_bindgen]
extern "C" {
    /// Reads content on another thread (the frame's worker, `extension/common/frame.js`):
    /// `read(root, start, end, blobs)` resolves like [`Frame::read`], to the parts of that range
    /// of the object rooted at `root` (every block verified there) or to the JSON text of
    /// `{error}`.
    #[derive(Clone)]
    pub type ContentReaders;
    #[wasm_bindgen(method, catch)]
    fn read(
        this: &ContentReaders,
        root: &str,
        start: f64,
        end: f64,
        blobs: bool,
    ) -> Result<js_sys::Promise, JsValue>;
}

/// The worker's side of [`ContentReaders`]: its own connection to the extension's storage,
/// and the function that frees the bytes it reads only to check them (see [`Leaves`]).
#[wasm_bindgen]
pub struct WorkerReader(Rc<Store>, Option<js_sys::Function>);

/// Open the extension's storage for reading on a worker; `release(buffer)`, if given, is
/// called with each buffer read only to be checked, once it has been.
#[wasm_bindgen(js_name = openReader)]
pub async fn open_reader(release: Option<js_sys::Function>) -> Result<WorkerReader, JsError> {
    Ok(WorkerReader(open_store().await?, release))
}

#[wasm_bindgen]
impl WorkerReader {
    /// Bytes `start..end` of the object rooted at `root` (which the frame has already found
    /// this origin may read): resolves to an array of `Uint8Array` parts, or with `blobs` also
    /// checked `Blob`s (see [`cas::read_js`]), or to the JSON text of `{error}`.
    pub fn read(&self, root: String, start: f64, end: f64, blobs: bool) -> js_sys::Promise {
        let store = self.0.clone();
        let release = self.1.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let result = async {
                let root: Cid = root
                    .parse()
                    .map_err(|_| ApiError::new(ErrorCode::InvalidParams, "root is not a CID"))?;
                if !whole_bytes(start) || !whole_bytes(end) || end < start {
                    return Err(ApiError::new(ErrorCode::InvalidParams, "not a range of bytes"));
                }
                if end - start > MAX_FRAME_CHUNK_BYTES as f64 {
                    return Err(too_big((end - start) as usize));
                }
                let leaves = Leaves::asked(blobs, release.as_ref());
                cas::read_js(&store, &root, start as u64..end as u64, leaves).await
            }
            .await;
            Ok(match result {
                Ok(parts) => parts.into(),
                Err(e) => JsValue::from_str(&api::response_json(Err(e))),
            })
        })
    }
}
