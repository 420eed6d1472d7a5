//! The block store: content-addressed blocks plus the records that make objects visible.
//!
//! Design decisions:
//! - Every block is checked against its CID when it is stored and again when it is read; a
//!   block that does not match is an error, never data ([`verify`]).
//! - An object (a file imported as UnixFS) becomes visible in one step: its blocks are written
//!   first (harmless if left behind, since they are named by their hash and unreachable), then
//!   its [`ObjectRecord`] is committed. A crash in between leaves nothing half-visible, and
//!   [`collect_garbage`] removes the orphans.
//! - Garbage collection is by reachability from pinned objects, which is reference counting
//!   done exactly: a block shared by two objects stays while either is pinned.
//!
//! The trait [`BlockStore`] has an in-memory backend here ([`MemoryStore`]); the browser node
//! implements it on IndexedDB and `disot-node` on disk. [`conformance`] is the suite every
//! backend must pass.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use cid::Cid;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::unixfs::{Block, Imported, Importer, Layout, RAW_CODEC};

/// Multicodec of dag-pb nodes.
pub const DAG_PB_CODEC: u64 = 0x70;
/// Multihash code of sha2-256, the only hash accepted.
pub const SHA2_256: u64 = 0x12;
/// Largest block accepted from anyone.
pub const MAX_BLOCK_SIZE: usize = 2 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("block {cid} does not match its cid")]
    Corrupt { cid: Cid },
    #[error("block {cid} uses an unsupported hash or codec")]
    Unsupported { cid: Cid },
    #[error("block of {size} bytes is larger than the {MAX_BLOCK_SIZE}-byte limit")]
    TooLarge { size: usize },
    #[error("block {0} is missing")]
    Missing(Cid),
    #[error("no object named {0}")]
    UnknownObject(String),
    #[error("malformed unixfs data in {cid}: {reason}")]
    Malformed { cid: Cid, reason: String },
    #[error("storage: {0}")]
    Backend(String),
    #[error("storage quota exceeded: {0}")]
    QuotaExceeded(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Check that `data` is the block named by `cid` (sha2-256, raw or dag-pb).
pub fn verify(cid: &Cid, data: &[u8]) -> Result<()> {
    check_block(cid, data.len())?;
    check_digest(cid, Sha256::digest(data).as_slice())
}

/// The checks of [`verify`] that need no hashing: the block's size and the CID's codec and hash.
/// A backend with a faster SHA-256 (the browser's) runs this, hashes, then [`check_digest`].
pub fn check_block(cid: &Cid, len: usize) -> Result<()> {
    if len > MAX_BLOCK_SIZE {
        return Err(Error::TooLarge { size: len });
    }
    let mh = cid.hash();
    if mh.code() != SHA2_256 || mh.size() != 32 || !matches!(cid.codec(), RAW_CODEC | DAG_PB_CODEC)
    {
        return Err(Error::Unsupported { cid: *cid });
    }
    Ok(())
}

/// Check a block's SHA-256 `digest` against its CID.
pub fn check_digest(cid: &Cid, digest: &[u8]) -> Result<()> {
    if digest != cid.hash().digest() {
        return Err(Error::Corrupt { cid: *cid });
    }
    Ok(())
}

/// What makes an object visible: its root, its seed name and whether it is pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRecord {
    /// Root CID, as text.
    pub cid: String,
    /// `sha256:<hex>` of the whole content.
    pub sha256: String,
    pub size: u64,
    pub pinned: bool,
    /// Optional file name and MIME type given at import, outside the page API (pages' own are
    /// in `labels`; a record from before those has them here, given by its first origin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    /// Web origins that put this object; only they see it through the page API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<String>,
    /// Served to any peer that asks (by CID); otherwise to none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
    /// Also served to peers this peer trusts at least this much (0–100, trust score for
    /// "content"); `None`: to none of them (unless public).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_trust: Option<u8>,
    /// Also served to these DIDs: the peers it was shared with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<String>,
    /// Origins that unpinned it: for the others of `origins` it stays pinned. (`pinned` says
    /// whether anyone keeps it: one site letting go of an object does not let it go for
    /// another site that holds the same.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unpinned_by: Vec<String>,
    /// What each origin said of it when it put it, told back to that origin only: another
    /// origin that puts the same bytes learns neither the name another gave them nor whether
    /// another made them public. (`public` and `min_trust` above are how the object is
    /// served: any origin may serve what it holds.)
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, Label>,
    /// Whether it has `labels` (a record from before them has not: see
    /// [`ObjectRecord::label_for`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub labelled: bool,
}

/// What one origin said of an object when it put it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Label {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_trust: Option<u8>,
}

impl Label {
    /// This label with what a later put by the same origin says: a name or MIME type given
    /// first stands, public stays public, and of two trust thresholds the lower holds.
    pub fn with(self, more: Label) -> Label {
        Label {
            name: self.name.or(more.name),
            mime: self.mime.or(more.mime),
            public: self.public || more.public,
            min_trust: lower_threshold(self.min_trust, more.min_trust),
        }
    }
}

/// Of two trust thresholds for serving (`None`: not served by trust), the one that serves more.
pub fn lower_threshold(a: Option<u8>, b: Option<u8>) -> Option<u8> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl ObjectRecord {
    pub fn new(imported: &Imported) -> Self {
        ObjectRecord {
            cid: imported.cid.to_string(),
            sha256: imported.sha256.clone(),
            size: imported.size,
            pinned: true,
            name: None,
            mime: None,
            origins: Vec::new(),
            public: false,
            min_trust: None,
            shared_with: Vec::new(),
            unpinned_by: Vec::new(),
            labels: BTreeMap::new(),
            labelled: true,
        }
    }

    /// What `origin` said of it (nothing if it said nothing, or if only another origin did).
    pub fn label_for(&self, origin: &str) -> Label {
        if self.labelled {
            return self.labels.get(origin).cloned().unwrap_or_default();
        }
        // A record from before labels: what it says was said by its one origin. (Of one with
        // several, it cannot be told who said what: nobody is told it.)
        match self.origins.as_slice() {
            [only] if only == origin => Label {
                name: self.name.clone(),
                mime: self.mime.clone(),
                public: self.public,
                min_trust: self.min_trust,
            },
            _ => Label::default(),
        }
    }

    /// `origin` says `label` of it (joined to what it said before, [`Label::with`]), and the
    /// object is served as that says too (serving is never taken away here). Before `origin`
    /// is added to `origins`, for a record from before labels.
    pub fn label(&mut self, origin: &str, label: Label) {
        self.keep_label(origin, label.clone());
        self.public |= label.public;
        self.min_trust = lower_threshold(self.min_trust, label.min_trust);
    }

    /// `origin`'s label joined with `label`, without a change to how the object is served.
    fn keep_label(&mut self, origin: &str, label: Label) {
        self.adopt_old_words();
        let label = self.label_for(origin).with(label);
        if label != Label::default() {
            self.labels.insert(origin.to_owned(), label);
        }
    }

    /// A record from before labels gets them: what it says becomes its one origin's label.
    fn adopt_old_words(&mut self) {
        if self.labelled {
            return;
        }
        if let [only] = self.origins.as_slice() {
            let said = self.label_for(only);
            if said != Label::default() {
                self.labels.insert(only.clone(), said);
            }
        }
        self.labelled = true;
    }

    /// Whether `origin` keeps it pinned.
    pub fn pinned_for(&self, origin: &str) -> bool {
        self.pinned && !self.unpinned_by.iter().any(|o| o == origin)
    }

    /// `origin` pins it, or lets it go: it stays pinned while another of its origins keeps it.
    pub fn set_pinned_for(&mut self, origin: &str, pin: bool) {
        if !self.pinned && self.unpinned_by.is_empty() {
            // Unpinned before pins were kept per origin: by every origin that holds it.
            self.unpinned_by = self.origins.clone();
        }
        self.unpinned_by.retain(|o| o != origin);
        if pin {
            self.pinned = true;
        } else {
            self.unpinned_by.push(origin.to_owned());
            self.pinned = self.origins.iter().any(|o| !self.unpinned_by.contains(o));
        }
    }

    /// `self`, the record stored now, joined by `other`, a record of the same object written
    /// from an older read or for another origin (a fetch): `other`'s origins are added and
    /// it may pin, but what `self` says of access (public, trust threshold, shares) stands, so
    /// a write that raced with a revocation cannot undo it and a fetch never takes access away.
    pub fn joined(mut self, other: &ObjectRecord) -> Self {
        self.adopt_old_words(); // (before other origins come)
        for origin in &other.origins {
            if !self.origins.contains(origin) {
                self.origins.push(origin.clone());
            }
        }
        if other.pinned {
            // Those it comes for keep it (a fetch, or the same content put again).
            self.unpinned_by.retain(|o| !other.origins.contains(o));
            self.pinned = true;
        }
        // What the others' origins said of it, without the serving (see above).
        for (origin, label) in &other.labels {
            self.keep_label(origin, label.clone());
        }
        self
    }
}

/// The change for [`BlockStore::update_object`] that joins `record` to the record stored
/// ([`ObjectRecord::joined`]), or writes it as it is if none is.
pub fn join_to(
    record: &ObjectRecord,
) -> impl FnOnce(Option<ObjectRecord>) -> Option<ObjectRecord> + '_ {
    move |stored| Some(stored.map_or_else(|| record.clone(), |s| s.joined(record)))
}

/// Storage of blocks and object records. Implementations must verify blocks on `put_blocks`
/// and on `get` (use [`verify`]).
#[allow(async_fn_in_trait)] // one backend is !Send (IndexedDB): no Send bound is wanted
pub trait BlockStore {
    /// The verified block, or `None` if it is not stored.
    async fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>>;
    async fn has(&self, cid: &Cid) -> Result<bool>;
    /// Store blocks (each verified first); storing a block twice is not an error.
    async fn put_blocks(&self, blocks: &[Block]) -> Result<()>;
    /// Store blocks this process has just made from their bytes (the importer's output, whose
    /// CIDs were computed from exactly those bytes), without hashing them a second time. Never
    /// for blocks from outside: those go through [`BlockStore::put_blocks`].
    async fn put_imported(&self, blocks: &[Block]) -> Result<()> {
        self.put_blocks(blocks).await
    }
    async fn delete_block(&self, cid: &Cid) -> Result<()>;
    /// Every stored block's CID.
    async fn block_cids(&self) -> Result<Vec<Cid>>;
    /// Make an object visible (or update its record).
    async fn put_object(&self, record: &ObjectRecord) -> Result<()>;
    async fn object(&self, cid: &str) -> Result<Option<ObjectRecord>>;
    /// Change object `cid`'s record as it is stored when the change is made: `change` is given
    /// that record (or `None`) and returns the record to write, or `None` to write nothing.
    /// Resolves to what was written. A backend whose records other tasks may write between
    /// this read and this write (IndexedDB: the extension's frames, workers and node) must do
    /// both at once; the default, for a backend with one writer, reads and then writes.
    async fn update_object<F>(&self, cid: &str, change: F) -> Result<Option<ObjectRecord>>
    where
        F: FnOnce(Option<ObjectRecord>) -> Option<ObjectRecord>,
    {
        let Some(record) = change(self.object(cid).await?) else { return Ok(None) };
        self.put_object(&record).await?;
        Ok(Some(record))
    }
    async fn delete_object(&self, cid: &str) -> Result<()>;
    async fn objects(&self) -> Result<Vec<ObjectRecord>>;
    /// The records of the objects whose content is `sha256` (a `sha256:<hex>` name), in the
    /// order of their CIDs. The default reads every record; a backend holding many may keep
    /// an index.
    async fn objects_named(&self, sha256: &str) -> Result<Vec<ObjectRecord>> {
        Ok(self.objects().await?.into_iter().filter(|o| o.sha256 == sha256).collect())
    }
}

/// Find an object by its CID or its `sha256:` name.
pub async fn resolve<S: BlockStore>(store: &S, name: &str) -> Result<ObjectRecord> {
    resolve_where(store, name, |_| true).await
}

/// Find an object by its CID or its `sha256:` name among those `visible` lets through. The same
/// content can be held under several CIDs (built with other chunk sizes or layouts, maybe for
/// other origins): a `sha256:` name means the first of those that is visible.
pub async fn resolve_where<S: BlockStore>(
    store: &S,
    name: &str,
    visible: impl Fn(&ObjectRecord) -> bool,
) -> Result<ObjectRecord> {
    let name = name.trim();
    let unknown = || Error::UnknownObject(name.to_owned());
    if let Some(hex) = name.strip_prefix("sha256:") {
        let wanted = format!("sha256:{}", hex.to_ascii_lowercase());
        return store
            .objects_named(&wanted)
            .await?
            .into_iter()
            .find(|o| o.sha256 == wanted && visible(o))
            .ok_or_else(unknown);
    }
    let cid: Cid = name.parse().map_err(|_| unknown())?;
    store.object(&cid.to_string()).await?.filter(|o| visible(o)).ok_or_else(unknown)
}

/// Import `chunks` into the store: blocks are written as they complete, and the object becomes
/// visible only when all are written.
pub async fn add<S, I>(store: &S, layout: Layout, chunks: I) -> Result<ObjectRecord>
where
    S: BlockStore,
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    add_with(store, layout, chunks, |_| {}).await
}

/// [`add`], with `finish` applied to the record as it is written (the record stored before,
/// if any, joined with the new one), in the same write.
pub async fn add_with<S, I>(
    store: &S,
    layout: Layout,
    chunks: I,
    finish: impl FnOnce(&mut ObjectRecord),
) -> Result<ObjectRecord>
where
    S: BlockStore,
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let mut importer = Importer::new(layout);
    for chunk in chunks {
        let blocks = importer.push(chunk.as_ref());
        if !blocks.is_empty() {
            store.put_imported(&blocks).await?;
        }
    }
    let (blocks, imported) = importer.finish();
    store.put_imported(&blocks).await?;
    // Content stored before keeps its record (who may see it, its name), now pinned.
    let fresh = ObjectRecord::new(&imported);
    let change = |stored| {
        let mut record = join_to(&fresh)(stored)?;
        finish(&mut record);
        Some(record)
    };
    let written = store.update_object(&fresh.cid, change).await?;
    Ok(written.unwrap_or(fresh))
}

/// Stream an object's bytes (optionally a byte range) to `sink`, verifying every block.
pub async fn cat<S: BlockStore>(
    store: &S,
    root: &Cid,
    range: Option<std::ops::Range<u64>>,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    use rust_unixfs::file::visit::IdleFileVisit;
    let block = store.get(root).await?.ok_or(Error::Missing(*root))?;
    let mut visit = IdleFileVisit::default();
    if let Some(r) = range.clone() {
        visit = visit.with_target_range(r);
    }
    let malformed = |cid: &Cid, e: &dyn std::fmt::Display| Error::Malformed {
        cid: *cid,
        reason: e.to_string(),
    };
    // What the walk hands on must be exactly what the root says the file holds (a peer's DAG
    // can have leaves shorter than their parents say, which the walk does not notice).
    let mut handed = 0u64;
    let mut sink = |content: &[u8]| {
        handed += content.len() as u64;
        sink(content)
    };
    let (mut next, size) = if root.codec() == RAW_CODEC {
        let (content, size, _, next) = visit.start_from_raw(&block);
        sink(content)?;
        (next, size)
    } else {
        let (content, size, _, next) = visit.start(&block).map_err(|e| malformed(root, &e))?;
        sink(content)?;
        (next, size)
    };
    let expected = match &range {
        Some(r) => r.end.min(size).saturating_sub(r.start),
        None => size,
    };
    let mut cache = None;
    // The next blocks of the walk are read while the current one is handed on: a backend
    // whose reads wait on another thread or process (IndexedDB, the disk) serves them together.
    let read = |cid: Cid| async move { (cid, store.get(&cid).await) };
    let mut queued = std::collections::VecDeque::new();
    let mut reads = futures::stream::FuturesOrdered::new();
    let walked = async {
        while let Some(walk) = next {
            let (first, rest) = walk.pending_links();
            let cid = *first;
            let wanted: Vec<Cid> =
                std::iter::once(first).chain(rest).take(READ_AHEAD).copied().collect();
            // Reads queued before the walk entered an inner node are not what it wants now.
            if !queued.iter().zip(&wanted).all(|(q, w)| q == w) {
                queued.clear();
                finish_reads(&mut reads).await;
            }
            for c in wanted.iter().skip(queued.len()) {
                queued.push_back(*c);
                reads.push_back(read(*c));
            }
            queued.pop_front();
            let block = match futures::StreamExt::next(&mut reads).await {
                Some((got, block)) if got == cid => block?,
                _ => return Err(Error::Backend("the read-ahead lost its place".into())),
            };
            let block = block.ok_or(Error::Missing(cid))?;
            let (content, rest) =
                walk.continue_walk(&block, &mut cache).map_err(|e| malformed(&cid, &e))?;
            sink(content)?;
            next = rest;
        }
        Ok(())
    }
    .await;
    // A walk that ends early (a bad block, a sink that gives up) still lets the reads it
    // started finish: a backend may not take a request back once it is made (IndexedDB).
    finish_reads(&mut reads).await;
    walked?;
    if handed != expected {
        return Err(Error::Malformed {
            cid: *root,
            reason: format!("its blocks hold {handed} bytes where its root says {expected}"),
        });
    }
    Ok(())
}

/// The part of a raw leaf that a range of a file covers: the leaf's bytes `within` (offsets in
/// the leaf, which must be `size` bytes long, as its parent says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpan {
    pub cid: Cid,
    pub size: u64,
    pub within: std::ops::Range<u64>,
}

/// The raw leaves that hold bytes `range` of the file rooted at `root`, in file order, each
/// with its part in the range: for a reader that takes leaves out of storage itself and copies
/// only those parts. Only the branch blocks are read here (verified); the caller must verify
/// each leaf and check its size. `None` for a file that is not raw leaves under plain file
/// branches (one block, leaves in dag-pb, metadata, a deeper tree than any importer makes), or
/// a range over more than [`MAX_SPANS`] leaves:
/// [`cat`] reads those.
pub async fn leaf_spans<S: BlockStore>(
    store: &S,
    root: &Cid,
    range: std::ops::Range<u64>,
) -> Result<Option<Vec<LeafSpan>>> {
    use rust_unixfs::file::adder::parse_file_branch;
    enum Item {
        Branch { cid: Cid, start: u64, depth: usize },
        Leaf(LeafSpan),
    }
    if root.codec() != DAG_PB_CODEC {
        return Ok(None);
    }
    let mut out = Vec::new();
    // Depth first, children pushed last to first: items come off in file order.
    let mut stack = vec![Item::Branch { cid: *root, start: 0, depth: 0 }];
    while let Some(item) = stack.pop() {
        let (cid, start, depth) = match item {
            Item::Leaf(span) => {
                if out.len() >= MAX_SPANS {
                    return Ok(None);
                }
                out.push(span);
                continue;
            }
            Item::Branch { cid, start, depth } => (cid, start, depth),
        };
        if depth > MAX_TREE_DEPTH {
            return Ok(None);
        }
        let block = store.get(&cid).await?.ok_or(Error::Missing(cid))?;
        let Some(branch) = parse_file_branch(&block) else { return Ok(None) };
        let malformed = |reason: &str| Error::Malformed { cid, reason: reason.to_owned() };
        let mut children = Vec::new();
        let mut at = start;
        let mut total = 0u64;
        for link in branch.links {
            let end = at.checked_add(link.blocksize).ok_or_else(|| malformed("sizes overflow"))?;
            total = total.saturating_add(link.blocksize);
            if at < range.end && end > range.start {
                let within = range.start.max(at) - at..range.end.min(end) - at;
                children.push(match link.cid.codec() {
                    RAW_CODEC => {
                        Item::Leaf(LeafSpan { cid: link.cid, size: link.blocksize, within })
                    }
                    DAG_PB_CODEC => Item::Branch { cid: link.cid, start: at, depth: depth + 1 },
                    _ => return Ok(None),
                });
            }
            at = end;
        }
        if total != branch.filesize {
            return Err(malformed("the sizes of its links do not add up to its file size"));
        }
        stack.extend(children.into_iter().rev());
    }
    Ok(Some(out))
}

/// Deeper than any importer's tree of any file this store can hold.
const MAX_TREE_DEPTH: usize = 16;
/// Most leaves [`leaf_spans`] names (their reads all start at once); a range over more (a
/// file of tiny leaves) is left to [`cat`], which reads a few at a time.
pub const MAX_SPANS: usize = 1024;

/// Wait for every read in `reads` and drop what they read.
async fn finish_reads<F: std::future::Future>(reads: &mut futures::stream::FuturesOrdered<F>) {
    while futures::StreamExt::next(reads).await.is_some() {}
}

/// Blocks a walk reads at most at once.
const READ_AHEAD: usize = 8;

/// The SHA-256 and size of a file's content, worked out from its blocks as they arrive in any
/// order (a fetch asks for many at once): content is hashed in file order as soon as its turn
/// comes, and a block that comes ahead of its turn waits. So that a fetch need not read the
/// whole file back once it is stored. Blocks must be verified against their CIDs before they
/// are offered. If more than `max_waiting` bytes would wait, it gives up (and
/// [`ContentHasher::finish`] says so): the caller then reads the content back instead.
///
/// Made with [`ContentHasher::spans_up_to`], it does not hash a file that small: it notes where
/// each piece of the content lies in its blocks ([`Named::Spans`]), for the caller to hash with
/// a faster SHA-256 than this code has (a browser's is four times faster than it compiled to
/// wasm).
pub struct ContentHasher {
    root: Cid,
    walk: Walk,
    waiting: std::collections::HashMap<Cid, Vec<u8>>,
    waiting_bytes: usize,
    max_waiting: usize,
    sink: Sink,
    size: u64,
    /// The size the root says the file has.
    declared: Option<u64>,
    cache: Option<rust_unixfs::file::visit::Cache>,
}

/// Where a file's content goes, in file order.
enum Sink {
    Hash(Sha256),
    /// Spans noted, if the file is at most this large (decided by its root).
    SpansUpTo(u64),
    Spans(Vec<ContentSpan>),
}

/// A piece of a file's content: `len` bytes at `offset` in block `cid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentSpan {
    pub cid: Cid,
    pub offset: usize,
    pub len: usize,
}

/// What [`ContentHasher::finish`] gives: the content's SHA-256, or where its bytes are (in file
/// order), and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    Hashed([u8; 32], u64),
    Spans(Vec<ContentSpan>, u64),
}

enum Walk {
    /// Nothing offered yet: the root comes first.
    Root(Cid),
    Next(rust_unixfs::file::visit::FileVisit),
    Done,
    GaveUp,
}

impl ContentHasher {
    pub fn new(root: Cid, max_waiting: usize) -> Self {
        Self::with_sink(root, max_waiting, Sink::Hash(Sha256::new()))
    }

    /// One that notes the content's spans instead of hashing it, if the file (as its root
    /// says) is at most `max_size` bytes.
    pub fn spans_up_to(root: Cid, max_waiting: usize, max_size: u64) -> Self {
        Self::with_sink(root, max_waiting, Sink::SpansUpTo(max_size))
    }

    /// Whether it notes spans (known once the root was offered): the caller must then keep the
    /// blocks' bytes, or have them stored, for [`Named::Spans`].
    pub fn notes_spans(&self) -> bool {
        matches!(self.sink, Sink::Spans(_))
    }

    fn with_sink(root: Cid, max_waiting: usize, sink: Sink) -> Self {
        ContentHasher {
            root,
            walk: Walk::Root(root),
            waiting: Default::default(),
            waiting_bytes: 0,
            max_waiting,
            sink,
            size: 0,
            declared: None,
            cache: None,
        }
    }

    fn next_wanted(&self) -> Option<Cid> {
        match &self.walk {
            Walk::Root(root) => Some(*root),
            Walk::Next(visit) => Some(*visit.pending_links().0),
            Walk::Done | Walk::GaveUp => None,
        }
    }

    /// The next piece of content, `content`, a part of block `cid`'s bytes `data`.
    fn feed(&mut self, cid: &Cid, data: &[u8], content: &[u8]) -> Result<()> {
        match &mut self.sink {
            Sink::Hash(hasher) => hasher.update(content),
            Sink::Spans(spans) if !content.is_empty() => {
                // The visitor hands out a part of the block it was given.
                let offset = (content.as_ptr() as usize)
                    .checked_sub(data.as_ptr() as usize)
                    .filter(|o| o + content.len() <= data.len())
                    .ok_or_else(|| Error::Malformed {
                        cid: *cid,
                        reason: "content outside its block".into(),
                    })?;
                spans.push(ContentSpan { cid: *cid, offset, len: content.len() });
            }
            Sink::Spans(_) | Sink::SpansUpTo(_) => {}
        }
        self.size += content.len() as u64;
        Ok(())
    }

    /// Walk on with the block `cid`, whose turn it is (an invalid block ends the walk).
    fn step(&mut self, cid: &Cid, data: &[u8]) -> Result<()> {
        use rust_unixfs::file::visit::IdleFileVisit;
        let malformed =
            |e: &dyn std::fmt::Display| Error::Malformed { cid: *cid, reason: e.to_string() };
        let walk = std::mem::replace(&mut self.walk, Walk::GaveUp);
        let (content, next) = match walk {
            Walk::Root(_) => {
                let (content, size, _, next) = if cid.codec() == RAW_CODEC {
                    IdleFileVisit::default().start_from_raw(data)
                } else {
                    IdleFileVisit::default().start(data).map_err(|e| malformed(&e))?
                };
                self.declared = Some(size);
                if let Sink::SpansUpTo(max) = self.sink {
                    self.sink = if size <= max {
                        Sink::Spans(Vec::new())
                    } else {
                        Sink::Hash(Sha256::new())
                    };
                }
                (content, next)
            }
            Walk::Next(visit) => {
                visit.continue_walk(data, &mut self.cache).map_err(|e| malformed(&e))?
            }
            finished @ (Walk::Done | Walk::GaveUp) => {
                self.walk = finished;
                return Ok(());
            }
        };
        self.feed(cid, data, content)?;
        self.walk = next.map_or(Walk::Done, Walk::Next);
        Ok(())
    }

    /// A block of the file, verified against `cid`. A block offered again while it waits is
    /// ignored; one the walk never needs only takes room until the end. An error only for a
    /// block that is not valid UnixFS (and the hasher gives up).
    pub fn offer(&mut self, cid: &Cid, data: &[u8]) -> Result<()> {
        if matches!(self.walk, Walk::Done | Walk::GaveUp) {
            return Ok(());
        }
        if self.next_wanted() != Some(*cid) {
            self.wait(*cid, || data.to_vec());
            return Ok(());
        }
        self.step(cid, data)?;
        // The same block can come again later in a file (a run of zeros, say).
        if self.pending_later(cid) {
            self.wait(*cid, || data.to_vec());
        }
        while let Some(next) = self.next_wanted() {
            let Some(data) = self.waiting.remove(&next) else { break };
            self.waiting_bytes -= data.len();
            self.step(&next, &data)?;
            if self.pending_later(&next) {
                self.wait(next, || data);
            }
        }
        Ok(())
    }

    /// Whether the walk still has to visit `cid`.
    fn pending_later(&self, cid: &Cid) -> bool {
        match &self.walk {
            Walk::Next(visit) => {
                let (first, rest) = visit.pending_links();
                first == cid || rest.into_iter().any(|c| c == cid)
            }
            _ => false,
        }
    }

    /// Keep a block until its turn comes, or give up if that is too much to hold.
    fn wait(&mut self, cid: Cid, data: impl FnOnce() -> Vec<u8>) {
        if self.waiting.contains_key(&cid) {
            return;
        }
        let data = data();
        if self.waiting_bytes.saturating_add(data.len()) > self.max_waiting {
            self.walk = Walk::GaveUp;
            self.waiting.clear();
            self.waiting_bytes = 0;
            return;
        }
        self.waiting_bytes += data.len();
        self.waiting.insert(cid, data);
    }

    /// The content's SHA-256 (or its spans) and size, once every block was offered; `None` if
    /// it gave up or a block is still missing. An error if the blocks hold another size than
    /// the root says: the file is malformed (and [`cat`] would refuse it too).
    pub fn finish(self) -> Result<Option<Named>> {
        if !matches!(self.walk, Walk::Done) {
            return Ok(None);
        }
        if let Some(declared) = self.declared.filter(|d| *d != self.size) {
            return Err(Error::Malformed {
                cid: self.root,
                reason: format!(
                    "its blocks hold {} bytes where its root says {declared}",
                    self.size
                ),
            });
        }
        Ok(match self.sink {
            Sink::Hash(hasher) => Some(Named::Hashed(hasher.finalize().into(), self.size)),
            Sink::Spans(spans) => Some(Named::Spans(spans, self.size)),
            Sink::SpansUpTo(_) => None,
        })
    }
}

/// CIDs of all blocks of the object rooted at `root` (the ones that are stored).
pub async fn reachable<S: BlockStore>(
    store: &S,
    root: &Cid,
    into: &mut BTreeSet<Cid>,
) -> Result<()> {
    let mut stack = vec![*root];
    while let Some(cid) = stack.pop() {
        if !into.insert(cid) || cid.codec() != DAG_PB_CODEC {
            continue;
        }
        let Some(block) = store.get(&cid).await? else { continue };
        stack.extend(dag_pb_links(&cid, &block)?);
    }
    Ok(())
}

/// The size of the file whose root block is `block` (the whole content, from the root alone).
pub fn file_size(cid: &Cid, block: &[u8]) -> Result<u64> {
    if cid.codec() == RAW_CODEC {
        return Ok(block.len() as u64);
    }
    let visit = rust_unixfs::file::visit::IdleFileVisit::default();
    let (_, size, _, _) =
        visit.start(block).map_err(|e| Error::Malformed { cid: *cid, reason: e.to_string() })?;
    Ok(size)
}

/// The CIDs a dag-pb node links to.
pub fn dag_pb_links(cid: &Cid, block: &[u8]) -> Result<Vec<Cid>> {
    let node = ipld_dagpb::PbNode::from_bytes(block.to_vec().into())
        .map_err(|e| Error::Malformed { cid: *cid, reason: e.to_string() })?;
    Ok(node.links.into_iter().map(|l| l.cid).collect())
}

/// Storage figures for the popup and `ls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub objects: usize,
    pub pinned: usize,
    pub blocks: usize,
}

/// What [`collect_garbage`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    pub objects: usize,
    pub blocks: usize,
}

/// Every block the objects of `records` reach (those that are stored).
pub async fn reached_from<'a, S: BlockStore>(
    store: &S,
    records: impl IntoIterator<Item = &'a ObjectRecord>,
) -> Result<BTreeSet<Cid>> {
    let mut keep = BTreeSet::new();
    for record in records {
        let cid: Cid = record.cid.parse().map_err(|_| Error::UnknownObject(record.cid.clone()))?;
        // A damaged object stops the collection (what it reaches cannot be known); the error
        // names the object, so that its owner can let it go or put it again.
        reachable(store, &cid, &mut keep).await.map_err(|e| match e {
            Error::Corrupt { .. } | Error::Malformed { .. } => Error::Malformed {
                cid,
                reason: format!("{e}; unpin the object or put it again, then free space again"),
            },
            other => other,
        })?;
    }
    Ok(keep)
}

/// Remove unpinned objects and every block not reachable from a pinned one.
pub async fn collect_garbage<S: BlockStore>(store: &S) -> Result<Collected> {
    let records = store.objects().await?;
    let keep = reached_from(store, records.iter().filter(|r| r.pinned)).await?;
    let mut removed = Collected::default();
    for record in records.iter().filter(|r| !r.pinned) {
        store.delete_object(&record.cid).await?;
        removed.objects += 1;
    }
    for cid in store.block_cids().await? {
        if !keep.contains(&cid) {
            store.delete_block(&cid).await?;
            removed.blocks += 1;
        }
    }
    Ok(removed)
}

/// An in-memory store, for tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    blocks: Mutex<BTreeMap<Cid, Vec<u8>>>,
    objects: Mutex<BTreeMap<String, ObjectRecord>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Overwrite a stored block without checks, to test corruption detection.
    pub fn corrupt(&self, cid: &Cid, data: Vec<u8>) {
        self.lock_blocks().insert(*cid, data);
    }

    fn lock_blocks(&self) -> std::sync::MutexGuard<'_, BTreeMap<Cid, Vec<u8>>> {
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ObjectRecord>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BlockStore for MemoryStore {
    async fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>> {
        let data = self.lock_blocks().get(cid).cloned();
        match data {
            Some(d) => verify(cid, &d).map(|()| Some(d)),
            None => Ok(None),
        }
    }
    async fn has(&self, cid: &Cid) -> Result<bool> {
        Ok(self.lock_blocks().contains_key(cid))
    }
    async fn put_blocks(&self, blocks: &[Block]) -> Result<()> {
        for b in blocks {
            verify(&b.cid, &b.data)?;
        }
        let mut map = self.lock_blocks();
        for b in blocks {
            map.insert(b.cid, b.data.clone());
        }
        Ok(())
    }
    async fn delete_block(&self, cid: &Cid) -> Result<()> {
        self.lock_blocks().remove(cid);
        Ok(())
    }
    async fn block_cids(&self) -> Result<Vec<Cid>> {
        Ok(self.lock_blocks().keys().copied().collect())
    }
    async fn put_object(&self, record: &ObjectRecord) -> Result<()> {
        self.lock_objects().insert(record.cid.clone(), record.clone());
        Ok(())
    }
    async fn object(&self, cid: &str) -> Result<Option<ObjectRecord>> {
        Ok(self.lock_objects().get(cid).cloned())
    }
    async fn delete_object(&self, cid: &str) -> Result<()> {
        self.lock_objects().remove(cid);
        Ok(())
    }
    async fn objects(&self) -> Result<Vec<ObjectRecord>> {
        Ok(self.lock_objects().values().cloned().collect())
    }
}

/// The suite every [`BlockStore`] backend must pass. `make` gives a fresh, empty store;
/// `corrupt` overwrites a stored block's bytes behind the store's back.
#[cfg(any(test, feature = "conformance"))]
pub mod conformance {
    use super::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn small_layout() -> Layout {
        // 64-byte chunks and at most 174 links: a few KiB already make a multi-level tree.
        crate::unixfs::Preset::Kubo.layout().with_chunk_size(64).unwrap_or_default()
    }

    async fn read_all<S: BlockStore>(
        store: &S,
        cid: &Cid,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        cat(store, cid, range, |bytes| {
            out.extend_from_slice(bytes);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Overwrites a stored block's bytes behind the store's back.
    pub type Corrupt<S> = for<'a> fn(&'a S, &'a Cid) -> futures::future::LocalBoxFuture<'a, ()>;

    pub async fn check_all<S, M, F>(make: M, corrupt: Corrupt<S>)
    where
        S: BlockStore,
        M: Fn() -> F,
        F: std::future::Future<Output = S>,
    {
        blocks_round_trip(&make().await).await;
        mismatched_blocks_are_refused(&make().await).await;
        objects_round_trip_with_ranges(&make().await).await;
        objects_are_invisible_until_committed(&make().await).await;
        garbage_collection_keeps_what_pinned_objects_share(&make().await).await;
        corruption_is_detected_on_read(&make().await, corrupt).await;
        record_updates_made_at_once_all_hold(&make().await).await;
        sha256_names_find_every_copy(&make().await).await;
    }

    /// The same content under two CIDs (two chunk sizes) is found by its `sha256:` name as
    /// both, in CID order; a record removed, or collected, is not found any more.
    pub async fn sha256_names_find_every_copy<S: BlockStore>(store: &S) {
        let content = data(5_000, 9);
        let a = add(store, small_layout(), content.chunks(1000)).await.expect("add a");
        let b = add(store, Layout::default(), [&content[..]]).await.expect("add b");
        let other = add(store, Layout::default(), [&b"other"[..]]).await.expect("add other");
        assert_ne!(a.cid, b.cid);
        assert_eq!(a.sha256, b.sha256);
        let mut both = vec![a.cid.clone(), b.cid.clone()];
        both.sort();
        let named =
            |records: Vec<ObjectRecord>| records.into_iter().map(|r| r.cid).collect::<Vec<_>>();
        assert_eq!(named(store.objects_named(&a.sha256).await.expect("named")), both);
        assert_eq!(
            named(store.objects_named(&other.sha256).await.expect("other")),
            std::slice::from_ref(&other.cid)
        );
        let upper = format!("sha256:{}", a.sha256["sha256:".len()..].to_ascii_uppercase());
        assert_eq!(resolve(store, &upper).await.expect("resolved").cid, both[0]);
        assert_eq!(
            resolve_where(store, &a.sha256, |r| r.cid == b.cid).await.expect("the visible one").cid,
            b.cid
        );
        store.delete_object(&both[0]).await.expect("delete");
        assert_eq!(named(store.objects_named(&a.sha256).await.expect("named")), [both[1].clone()]);
        store
            .update_object(&both[1], |r| r.map(|r| ObjectRecord { pinned: false, ..r }))
            .await
            .expect("unpin");
        collect_garbage(store).await.expect("gc");
        assert!(store.objects_named(&a.sha256).await.expect("named").is_empty());
        assert!(matches!(resolve(store, &a.sha256).await, Err(Error::UnknownObject(_))));
        let none = format!("sha256:{}", "0".repeat(64));
        assert!(store.objects_named(&none).await.expect("none").is_empty());
    }

    pub async fn blocks_round_trip<S: BlockStore>(store: &S) {
        let (blocks, imported) = crate::unixfs::import(b"a block", Layout::default());
        assert!(!store.has(&imported.cid).await.expect("has"));
        assert_eq!(store.get(&imported.cid).await.expect("get"), None);
        store.put_blocks(&blocks).await.expect("put");
        store.put_blocks(&blocks).await.expect("putting twice is fine");
        assert!(store.has(&imported.cid).await.expect("has"));
        assert_eq!(store.get(&imported.cid).await.expect("get").as_deref(), Some(&b"a block"[..]));
        assert_eq!(store.block_cids().await.expect("list"), vec![imported.cid]);
        store.delete_block(&imported.cid).await.expect("delete");
        assert!(!store.has(&imported.cid).await.expect("has"));
    }

    pub async fn mismatched_blocks_are_refused<S: BlockStore>(store: &S) {
        let (mut blocks, imported) = crate::unixfs::import(b"honest", Layout::default());
        blocks[0].data = b"forged".to_vec();
        let err = store.put_blocks(&blocks).await.expect_err("forged block");
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(!store.has(&imported.cid).await.expect("has"), "nothing was stored");
    }

    pub async fn objects_round_trip_with_ranges<S: BlockStore>(store: &S) {
        let content = data(40_000, 3);
        let record = add(store, small_layout(), content.chunks(1000)).await.expect("add");
        assert_eq!(record.size, 40_000);
        let cid: Cid = record.cid.parse().expect("cid");
        assert_eq!(cid.codec(), DAG_PB_CODEC);
        assert_eq!(read_all(store, &cid, None).await.expect("cat"), content);
        let root = store.get(&cid).await.expect("get").expect("root");
        assert_eq!(file_size(&cid, &root).expect("size"), 40_000);
        assert_eq!(
            read_all(store, &cid, Some(100..12_345)).await.expect("range"),
            content[100..12_345]
        );
        // The same ranges by their leaves (a tree of two levels: 625 leaves, 174 to a branch).
        for range in [0..40_000, 100..12_345, 11_100..11_200, 63..65, 39_990..40_000, 500..500] {
            let spans = leaf_spans(store, &cid, range.clone()).await.expect("spans").expect("raw");
            let mut out = Vec::new();
            for span in spans {
                let leaf = store.get(&span.cid).await.expect("leaf").expect("stored");
                assert_eq!(leaf.len() as u64, span.size);
                out.extend_from_slice(&leaf[span.within.start as usize..span.within.end as usize]);
            }
            assert_eq!(out, content[range.start as usize..range.end as usize], "{range:?}");
        }
        let single = add(store, small_layout(), [&content[..10]]).await.expect("one block");
        let single: Cid = single.cid.parse().expect("cid");
        assert_eq!(leaf_spans(store, &single, 0..10).await.expect("spans"), None, "cat reads it");
        assert_eq!(resolve(store, &record.sha256).await.expect("by sha256").cid, record.cid);
        assert_eq!(resolve(store, &record.cid).await.expect("by cid"), record);
        assert!(matches!(resolve(store, "sha256:00").await, Err(Error::UnknownObject(_))));
        assert!(matches!(resolve(store, "not a cid").await, Err(Error::UnknownObject(_))));
        // The same content under another CID: a `sha256:` name finds the one let through.
        let layout = crate::unixfs::Preset::Kubo.layout().with_chunk_size(100).unwrap_or_default();
        let other = add(store, layout, content.chunks(1000)).await.expect("other layout");
        assert_ne!(other.cid, record.cid);
        assert_eq!(other.sha256, record.sha256);
        for wanted in [&record, &other] {
            let found = resolve_where(store, &record.sha256, |o| o.cid == wanted.cid).await;
            assert_eq!(found.expect("visible").cid, wanted.cid);
        }
        let hidden = resolve_where(store, &record.cid, |o| o.cid != record.cid).await;
        assert!(matches!(hidden, Err(Error::UnknownObject(_))));
    }

    pub async fn objects_are_invisible_until_committed<S: BlockStore>(store: &S) {
        let (blocks, imported) = crate::unixfs::import(&data(5000, 9), small_layout());
        // A crash after the blocks and before the record: no object, and gc cleans up.
        store.put_blocks(&blocks).await.expect("put");
        assert!(store.objects().await.expect("objects").is_empty());
        assert!(resolve(store, &imported.cid.to_string()).await.is_err());
        let distinct: BTreeSet<Cid> = blocks.iter().map(|b| b.cid).collect();
        assert_eq!(collect_garbage(store).await.expect("gc").blocks, distinct.len());
        assert!(store.block_cids().await.expect("list").is_empty());
    }

    pub async fn garbage_collection_keeps_what_pinned_objects_share<S: BlockStore>(store: &S) {
        let shared = data(6400, 1);
        let mut longer = shared.clone();
        longer.extend(data(6400, 2));
        let a = add(store, small_layout(), [&shared]).await.expect("a");
        let b = add(store, small_layout(), [&longer]).await.expect("b");
        let mut unpinned = b.clone();
        unpinned.pinned = false;
        store.put_object(&unpinned).await.expect("unpin");
        let removed = collect_garbage(store).await.expect("gc").blocks;
        assert!(removed > 0, "b's own blocks go");
        assert!(store.object(&b.cid).await.expect("object").is_none());
        let a_cid: Cid = a.cid.parse().expect("cid");
        assert_eq!(read_all(store, &a_cid, None).await.expect("a intact"), shared);
    }

    /// Updates of one record made at once (say, two pages putting the same content, or a
    /// revocation racing a pin) each see the others' writes: none is lost.
    pub async fn record_updates_made_at_once_all_hold<S: BlockStore>(store: &S) {
        let record = add(store, small_layout(), [data(700, 6)]).await.expect("add");
        let origins: Vec<String> = (0..8).map(|i| format!("https://{i}.example")).collect();
        let updates = origins.iter().map(|origin| {
            store.update_object(&record.cid, move |stored| {
                let mut stored = stored?;
                stored.origins.push(origin.clone());
                Some(stored)
            })
        });
        for written in futures::future::join_all(updates).await {
            assert!(written.expect("update").is_some());
        }
        let stored = store.object(&record.cid).await.expect("object").expect("stored");
        for origin in &origins {
            assert!(stored.origins.contains(origin), "{origin} was lost: {:?}", stored.origins);
        }
        let unchanged = store.update_object(&record.cid, |_| None).await.expect("no change");
        assert_eq!(unchanged, None);
        assert_eq!(store.object(&record.cid).await.expect("object"), Some(stored));
        let other = crate::unixfs::import(b"not stored", Layout::default()).1.cid.to_string();
        let absent = store.update_object(&other, |stored| stored).await.expect("absent");
        assert_eq!(absent, None, "nothing is written for a record not stored");
    }

    pub async fn corruption_is_detected_on_read<S: BlockStore>(store: &S, corrupt: Corrupt<S>) {
        let record = add(store, small_layout(), [data(3000, 5)]).await.expect("add");
        let cid: Cid = record.cid.parse().expect("cid");
        let mut all = BTreeSet::new();
        reachable(store, &cid, &mut all).await.expect("walk");
        let leaf = *all.iter().find(|c| c.codec() == RAW_CODEC).expect("a leaf");
        corrupt(store, &leaf).await;
        assert!(matches!(store.get(&leaf).await, Err(Error::Corrupt { .. })));
        let err = read_all(store, &cid, None).await.expect_err("corrupt object");
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_stays_pinned_while_any_origin_that_holds_it_keeps_it() {
        let (a, b) = ("https://a.example", "https://b.example");
        let mut record = ObjectRecord {
            origins: vec![a.into(), b.into()],
            ..ObjectRecord::new(&Imported {
                cid: Cid::default(),
                sha256: "sha256:00".into(),
                size: 1,
            })
        };
        record.set_pinned_for(a, false);
        assert!(record.pinned && !record.pinned_for(a) && record.pinned_for(b));
        record.set_pinned_for(a, false);
        assert_eq!(record.unpinned_by, vec![a.to_owned()], "once");
        record.set_pinned_for(b, false);
        assert!(!record.pinned, "nobody keeps it: garbage collection may take it");
        record.set_pinned_for(a, true);
        assert!(record.pinned && record.pinned_for(a) && !record.pinned_for(b));
        // B fetches it again (or puts the same content): B keeps it too.
        let fetched = ObjectRecord { origins: vec![b.into()], ..record.clone() };
        let fetched = ObjectRecord { pinned: true, unpinned_by: vec![], ..fetched };
        let joined = record.joined(&fetched);
        assert!(joined.pinned_for(a) && joined.pinned_for(b));
        // A record unpinned before pins were per origin: pinned again by one, not by all.
        let mut legacy = ObjectRecord { pinned: false, unpinned_by: vec![], ..joined };
        legacy.set_pinned_for(a, true);
        assert!(legacy.pinned_for(a) && !legacy.pinned_for(b));
    }

    /// Regression: a second origin putting the same bytes was told the name, MIME type and
    /// serving the first origin gave them.
    #[test]
    fn each_origin_is_told_only_what_it_said_of_an_object() {
        let (a, b, c) = ("https://a.example", "https://b.example", "https://c.example");
        let imported = Imported { cid: Cid::default(), sha256: "sha256:00".into(), size: 1 };
        // A record from before labels: what it says was said by its one origin.
        let mut record = ObjectRecord {
            name: Some("a.txt".into()),
            public: true,
            origins: vec![a.into()],
            labelled: false,
            ..ObjectRecord::new(&imported)
        };
        assert_eq!(record.label_for(a).name.as_deref(), Some("a.txt"));
        assert_eq!(record.label_for(b), Label::default());
        record.label(b, Label { mime: Some("text/plain".into()), ..Label::default() });
        record.origins.push(b.into());
        let (for_a, for_b) = (record.label_for(a), record.label_for(b));
        assert_eq!((for_a.name.as_deref(), for_a.public), (Some("a.txt"), true), "A's words stay");
        assert_eq!(
            (for_b.name, for_b.mime.as_deref(), for_b.public),
            (None, Some("text/plain"), false)
        );
        // Put again: a name given first stands, public stays, the lower threshold holds.
        record.label(
            b,
            Label { name: Some("b.txt".into()), min_trust: Some(70), ..Label::default() },
        );
        record.label(
            b,
            Label { name: Some("other.txt".into()), min_trust: Some(50), ..Label::default() },
        );
        let for_b = record.label_for(b);
        assert_eq!((for_b.name.as_deref(), for_b.min_trust), (Some("b.txt"), Some(50)));
        assert_eq!(record.label_for(a).min_trust, None, "B's threshold is not A's");
        // Served as any origin that holds it asked; C, which said nothing, is told nothing.
        assert!(record.public);
        assert_eq!(record.min_trust, Some(50));
        record.origins.push(c.into());
        assert_eq!(record.label_for(c), Label::default());
        // A new record: A says nothing, B makes it public; A is not told B did.
        let mut fresh = ObjectRecord::new(&imported);
        fresh.label(a, Label::default());
        fresh.origins.push(a.into());
        fresh.label(b, Label { public: true, ..Label::default() });
        fresh.origins.push(b.into());
        assert!(fresh.public && !fresh.label_for(a).public && fresh.label_for(b).public);
        // A record from before labels with several origins: nobody can be told who said what.
        let shared = ObjectRecord { origins: vec![a.into(), b.into()], ..record.clone() };
        let old = ObjectRecord { labelled: false, labels: BTreeMap::new(), ..shared };
        assert_eq!((old.label_for(a), old.label_for(b)), (Label::default(), Label::default()));
        // Joined (a record another context wrote): its labels come, its serving does not.
        let private = ObjectRecord::new(&imported);
        let mut other = private.clone();
        other.label(c, Label { name: Some("c.txt".into()), public: true, ..Label::default() });
        other.origins = vec![c.into()];
        let joined = private.joined(&other);
        assert_eq!(joined.label_for(c).name.as_deref(), Some("c.txt"));
        assert!(!joined.public, "what the stored record serves stands");
    }

    /// Regression: a fetch that read a record, waited on the network and wrote its copy back
    /// restored a share revoked meanwhile; a fetched object's fresh record dropped `public`.
    #[test]
    fn joined_record_keeps_access_as_stored_and_adds_origins() {
        let stored = ObjectRecord {
            cid: "bafk".into(),
            sha256: "sha256:00".into(),
            size: 1,
            pinned: false,
            name: Some("a.txt".into()),
            mime: None,
            origins: vec!["https://a.example".into()],
            public: true,
            min_trust: Some(70),
            shared_with: vec![],
            unpinned_by: vec![],
            labels: BTreeMap::new(),
            labelled: true,
        };
        let older = ObjectRecord {
            origins: vec!["https://b.example".into(), "https://a.example".into()],
            public: false,
            min_trust: None,
            shared_with: vec!["did:key:z6Mkrevoked".into()],
            pinned: true,
            name: None,
            ..stored.clone()
        };
        let joined = stored.clone().joined(&older);
        assert_eq!(joined.origins, vec!["https://a.example", "https://b.example"]);
        assert!(joined.public);
        assert_eq!(joined.min_trust, Some(70));
        assert!(joined.shared_with.is_empty(), "a revoked share stays revoked");
        assert!(joined.pinned);
        assert_eq!(joined.name.as_deref(), Some("a.txt"));
    }

    #[test]
    fn memory_store_passes_the_conformance_suite() {
        fn corrupt<'a>(
            s: &'a MemoryStore,
            cid: &'a Cid,
        ) -> futures::future::LocalBoxFuture<'a, ()> {
            Box::pin(async move { s.corrupt(cid, b"flipped bits".to_vec()) })
        }
        futures::executor::block_on(conformance::check_all(
            || async { MemoryStore::new() },
            corrupt,
        ));
    }

    /// `add_with` changes the record in the write that makes it: a name given where none is
    /// stored, and what is stored (a name, a pin, origins) kept.
    #[test]
    fn add_with_finishes_the_record_in_its_own_write() {
        futures::executor::block_on(async {
            let store = MemoryStore::new();
            let layout = crate::unixfs::Layout::default();
            let name = |r: &mut ObjectRecord| {
                r.name.get_or_insert_with(|| "given.json".into());
            };
            let first =
                add_with(&store, layout, [b"credential".as_slice()], name).await.expect("add");
            assert_eq!(first.name.as_deref(), Some("given.json"));
            let stored = store.object(&first.cid).await.expect("read").expect("stored");
            assert_eq!(stored, first);
            let renamed = ObjectRecord {
                name: Some("kept.json".into()),
                origins: vec!["https://a.example".into()],
                ..stored
            };
            store.put_object(&renamed).await.expect("rename");
            let again =
                add_with(&store, layout, [b"credential".as_slice()], name).await.expect("again");
            assert_eq!(again.name.as_deref(), Some("kept.json"), "a stored name stands");
            assert_eq!(again.origins, vec!["https://a.example"]);
            assert_eq!(store.object(&first.cid).await.expect("read"), Some(again));
        });
    }

    /// Garbage collection stops at a damaged pinned object, naming it (not only its block).
    #[test]
    fn a_damaged_object_stops_garbage_collection_and_is_named() {
        futures::executor::block_on(async {
            let store = MemoryStore::new();
            let layout = crate::unixfs::Preset::Kubo.layout().with_chunk_size(64).expect("layout");
            let record = add(&store, layout, [vec![1u8; 64 * 200]]).await.expect("add");
            let root: Cid = record.cid.parse().expect("cid");
            let branch =
                *dag_pb_links(&root, &store.get(&root).await.expect("root").expect("root"))
                    .expect("links")
                    .iter()
                    .find(|c| c.codec() == DAG_PB_CODEC)
                    .expect("a branch under the root");
            store.corrupt(&branch, b"not the branch".to_vec());
            let err = collect_garbage(&store).await.expect_err("stopped");
            assert!(matches!(err, Error::Malformed { cid, .. } if cid == root), "{err}");
            assert!(err.to_string().contains(&branch.to_string()), "{err}");
        });
    }

    /// A range over more leaves than may be read at once is left to `cat`.
    #[test]
    fn leaf_spans_names_at_most_max_spans_leaves() {
        futures::executor::block_on(async {
            let store = MemoryStore::new();
            let layout = crate::unixfs::Preset::Kubo.layout().with_chunk_size(64).expect("layout");
            let content = vec![7u8; 64 * (MAX_SPANS + 1)];
            let record = add(&store, layout, content.chunks(4096)).await.expect("add");
            let cid: Cid = record.cid.parse().expect("cid");
            let most = (64 * MAX_SPANS) as u64;
            let spans = leaf_spans(&store, &cid, 0..most).await.expect("spans");
            assert_eq!(spans.map(|s| s.len()), Some(MAX_SPANS));
            assert_eq!(leaf_spans(&store, &cid, 0..most + 1).await.expect("spans"), None);
        });
    }

    /// A peer's file whose last leaf is shorter than its root says: neither read nor named,
    /// never handed out as a shorter (or zero-padded) file.
    #[test]
    fn a_file_shorter_than_its_root_says_is_malformed() {
        use rust_unixfs::file::adder::{rebuild_file_branch, FileBranchLink};
        let leaf = |bytes: &[u8]| {
            let digest: [u8; 32] = Sha256::digest(bytes).into();
            Block { cid: crate::unixfs::raw_cid(&digest), data: bytes.to_vec() }
        };
        let (first, short) = (leaf(&[1; 100]), leaf(&[2; 50]));
        let links = [
            FileBranchLink { cid: first.cid, blocksize: 100, tsize: 100 },
            FileBranchLink { cid: short.cid, blocksize: 100, tsize: 100 },
        ];
        let (root, data) =
            rebuild_file_branch(200, &links, cid::Version::V1, multihash_codetable::Code::Sha2_256);
        let blocks = [first, short, Block { cid: root, data }];
        futures::executor::block_on(async {
            let store = MemoryStore::new();
            store.put_blocks(&blocks).await.expect("each block is what its CID says");
            let store = &store;
            let read_all = |root, range| async move {
                let mut out = Vec::new();
                cat(store, &root, range, |b| {
                    out.extend_from_slice(b);
                    Ok(())
                })
                .await
                .map(|()| out)
            };
            for range in [None, Some(0..200), Some(0..151), Some(120..200)] {
                let read = read_all(root, range.clone()).await;
                assert!(matches!(read, Err(Error::Malformed { .. })), "{range:?}: {read:?}");
            }
            assert_eq!(read_all(root, Some(0..100)).await.expect("the first leaf"), [1; 100]);
        });
        let mut named = ContentHasher::new(root, usize::MAX);
        for block in blocks.iter().rev() {
            named.offer(&block.cid, &block.data).expect("valid blocks");
        }
        assert!(matches!(named.finish(), Err(Error::Malformed { .. })), "not named as 150 bytes");
    }

    #[test]
    fn the_content_hash_comes_out_of_blocks_offered_in_any_order() {
        let layout = crate::unixfs::Preset::Kubo.layout().with_chunk_size(64).expect("layout");
        let mut x = 7u32;
        let content: Vec<u8> = (0..40_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let (blocks, imported) = crate::unixfs::import(&content, layout);
        assert!(blocks.len() > 600, "a tree of two levels: {} blocks", blocks.len());
        let want: [u8; 32] = Sha256::digest(&content).into();
        let hashed = |order: &mut dyn Iterator<Item = &Block>, max_waiting: usize| {
            let mut h = ContentHasher::new(imported.cid, max_waiting);
            for b in order {
                h.offer(&b.cid, &b.data).expect("valid blocks");
            }
            h.finish().expect("well formed").map(hashed_only)
        };
        // The importer gives the root last; leaves first, in order, then their parents.
        assert_eq!(hashed(&mut blocks.iter().rev(), usize::MAX), Some((want, 40_000)));
        assert_eq!(hashed(&mut blocks.iter(), usize::MAX), Some((want, 40_000)));
        // Interleaved from both ends, each offered twice.
        let n = blocks.len();
        let mut mixed = (0..n).flat_map(|i| {
            let j = if i % 2 == 0 { i / 2 } else { n - 1 - i / 2 };
            [&blocks[j], &blocks[j]]
        });
        assert_eq!(hashed(&mut mixed, usize::MAX), Some((want, 40_000)));
        // Root first, then its children, then the leaves in file order (the order a fetch
        // mostly sees): only the inner nodes wait for their turn, no leaf does.
        let mut walk_order: Vec<&Block> = vec![blocks.last().expect("root")];
        let inner: Vec<&Block> = blocks.iter().filter(|b| b.cid.codec() != RAW_CODEC).collect();
        let inner = &inner[..inner.len() - 1];
        walk_order.extend(inner);
        walk_order.extend(blocks.iter().filter(|b| b.cid.codec() == RAW_CODEC));
        let inner_bytes = inner.iter().map(|b| b.data.len()).sum();
        assert_eq!(hashed(&mut walk_order.into_iter(), inner_bytes), Some((want, 40_000)));
        // Too much ahead of its turn: it gives up rather than hold it.
        assert_eq!(hashed(&mut blocks.iter(), 1024), None);
        // A block missing: no answer.
        assert_eq!(hashed(&mut blocks.iter().skip(1), usize::MAX), None);
        // Leaves that repeat (every 251st), within a node's links and across nodes: in walk
        // order, where each position's copy comes in its turn, the hash comes out; in another
        // order it may give up (a block used once is not kept for a later subtree), never err.
        let repeating: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (blocks, imported) = crate::unixfs::import(&repeating, layout);
        let want: [u8; 32] = Sha256::digest(&repeating).into();
        let mut walk_order: Vec<&Block> = vec![blocks.last().expect("root")];
        let inner: Vec<&Block> = blocks.iter().filter(|b| b.cid.codec() != RAW_CODEC).collect();
        walk_order.extend(&inner[..inner.len() - 1]);
        walk_order.extend(blocks.iter().filter(|b| b.cid.codec() == RAW_CODEC));
        let hashed = |order: &mut dyn Iterator<Item = &Block>| {
            let mut h = ContentHasher::new(imported.cid, usize::MAX);
            for b in order {
                h.offer(&b.cid, &b.data).expect("valid blocks");
            }
            h.finish().expect("well formed").map(hashed_only)
        };
        assert_eq!(hashed(&mut walk_order.into_iter()), Some((want, 40_000)));
        let reversed = hashed(&mut blocks.iter().rev());
        assert!(reversed.is_none_or(|r| r == (want, 40_000)), "{reversed:?}");
        // One raw block.
        let (one, single) = crate::unixfs::import(b"hello", Layout::default());
        let mut h = ContentHasher::new(single.cid, 0);
        h.offer(&one[0].cid, &one[0].data).expect("raw");
        assert_eq!(
            h.finish().expect("well formed"),
            Some(Named::Hashed(Sha256::digest(b"hello").into(), 5))
        );
    }

    fn hashed_only(named: Named) -> ([u8; 32], u64) {
        match named {
            Named::Hashed(digest, size) => (digest, size),
            Named::Spans(..) => panic!("spans from a hasher made to hash"),
        }
    }

    #[test]
    fn a_small_file_gives_the_spans_of_its_content_and_a_larger_one_its_hash() {
        use rust_unixfs::file::adder::{BalancedCollector, Chunker, FileAdder};
        let content: Vec<u8> = (0..25_000u32).map(|i| (i * 31 % 253) as u8).collect();
        // Raw leaves (each span a whole block), and leaves wrapped in dag-pb as CIDv0 files
        // have them (each span a part of its block).
        for raw_leaves in [true, false] {
            let mut adder = FileAdder::builder()
                .with_chunker(Chunker::Size(100))
                .with_collector(BalancedCollector::with_branching_factor(11))
                .with_cid_version(if raw_leaves { cid::Version::V1 } else { cid::Version::V0 })
                .with_raw_leaves(raw_leaves)
                .build();
            let mut blocks = Vec::new();
            let mut input = content.as_slice();
            while !input.is_empty() {
                let (made, used) = adder.push(input);
                blocks.extend(made);
                input = &input[used..];
            }
            blocks.extend(adder.finish());
            let root = blocks.last().expect("root").0;
            assert!(blocks.len() > 250 + 25, "two levels: {} blocks", blocks.len());
            let by_cid: std::collections::HashMap<Cid, &[u8]> =
                blocks.iter().map(|(cid, data)| (*cid, data.as_slice())).collect();
            // Offered root first, the rest in the importer's order (leaves before their
            // parents: most wait for their turn).
            let offered = |mut h: ContentHasher| {
                for (cid, data) in std::iter::once(blocks.last().expect("root")).chain(&blocks) {
                    h.offer(cid, data).expect("valid blocks");
                }
                h.finish().expect("well formed")
            };
            let mut h = ContentHasher::spans_up_to(root, usize::MAX, 25_000);
            assert!(!h.notes_spans(), "before the root says how large the file is");
            h.offer(&root, &blocks.last().expect("root").1).expect("valid root");
            assert!(h.notes_spans());
            let Some(Named::Spans(spans, 25_000)) = offered(h) else {
                panic!("no spans for a file of the largest size that has them");
            };
            let mut joined = Vec::new();
            for s in &spans {
                assert!(raw_leaves == (s.offset == 0 && s.len == by_cid[&s.cid].len()));
                joined.extend_from_slice(&by_cid[&s.cid][s.offset..s.offset + s.len]);
            }
            assert!(joined == content, "the spans put together are the content");
            assert_eq!(
                offered(ContentHasher::spans_up_to(root, usize::MAX, 24_999)),
                Some(Named::Hashed(Sha256::digest(&content).into(), 25_000)),
            );
        }
    }

    #[test]
    fn verify_rejects_other_hashes_and_oversize_blocks() {
        let (blocks, _) = crate::unixfs::import(b"x", Layout::default());
        assert!(verify(&blocks[0].cid, &blocks[0].data).is_ok());
        let other = Cid::new_v1(0x71, blocks[0].cid.hash().to_owned());
        assert!(matches!(verify(&other, &blocks[0].data), Err(Error::Unsupported { .. })));
        let big = vec![0u8; MAX_BLOCK_SIZE + 1];
        assert!(matches!(verify(&blocks[0].cid, &big), Err(Error::TooLarge { .. })));
    }

    /// A store whose reads each wait one turn of the executor, counting how many wait at once
    /// and which blocks were read.
    #[derive(Default)]
    struct SlowStore {
        inner: MemoryStore,
        waiting: std::cell::Cell<usize>,
        most: std::cell::Cell<usize>,
        read: std::cell::RefCell<Vec<Cid>>,
    }

    impl BlockStore for SlowStore {
        async fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>> {
            struct Waiting<'a>(&'a std::cell::Cell<usize>);
            impl Drop for Waiting<'_> {
                fn drop(&mut self) {
                    self.0.set(self.0.get() - 1);
                }
            }
            self.waiting.set(self.waiting.get() + 1);
            self.most.set(self.most.get().max(self.waiting.get()));
            let _waiting = Waiting(&self.waiting);
            let mut turned = false;
            futures::future::poll_fn(|cx| {
                if std::mem::replace(&mut turned, true) {
                    std::task::Poll::Ready(())
                } else {
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            })
            .await;
            self.read.borrow_mut().push(*cid);
            self.inner.get(cid).await
        }
        async fn has(&self, cid: &Cid) -> Result<bool> {
            self.inner.has(cid).await
        }
        async fn put_blocks(&self, blocks: &[Block]) -> Result<()> {
            self.inner.put_blocks(blocks).await
        }
        async fn delete_block(&self, cid: &Cid) -> Result<()> {
            self.inner.delete_block(cid).await
        }
        async fn block_cids(&self) -> Result<Vec<Cid>> {
            self.inner.block_cids().await
        }
        async fn put_object(&self, record: &ObjectRecord) -> Result<()> {
            self.inner.put_object(record).await
        }
        async fn object(&self, cid: &str) -> Result<Option<ObjectRecord>> {
            self.inner.object(cid).await
        }
        async fn delete_object(&self, cid: &str) -> Result<()> {
            self.inner.delete_object(cid).await
        }
        async fn objects(&self) -> Result<Vec<ObjectRecord>> {
            self.inner.objects().await
        }
    }

    #[test]
    fn reads_go_ahead_of_the_walk_and_stay_in_the_range() {
        futures::executor::block_on(async {
            let store = SlowStore::default();
            // 64-byte leaves, at most 174 per node: 625 leaves under 4 inner nodes.
            // No two leaves alike, so that every leaf is its own block.
            let content: Vec<u8> =
                (0..40_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
            let layout =
                crate::unixfs::Preset::Kubo.layout().with_chunk_size(64).unwrap_or_default();
            let record = add(&store, layout, content.chunks(1000)).await.expect("add");
            let root: Cid = record.cid.parse().expect("cid");
            let mut out = Vec::new();
            let range = 10_000..30_000u64;
            cat(&store, &root, Some(range.clone()), |b| {
                out.extend_from_slice(b);
                Ok(())
            })
            .await
            .expect("cat");
            assert_eq!(out, content[10_000..30_000]);
            assert_eq!(store.most.get(), READ_AHEAD, "reads run {READ_AHEAD} at once");
            // Every block read is the root, an inner node or a leaf the range needs, each
            // read once, except reads dropped when the walk entered an inner node.
            let read = store.read.borrow();
            let distinct: BTreeSet<_> = read.iter().collect();
            let leaves = (range.end / 64 - range.start / 64) as usize;
            assert!(
                (leaves..=1 + 4 + leaves).contains(&distinct.len()),
                "{} blocks read",
                distinct.len()
            );
            assert!(read.len() <= distinct.len() + 4 * READ_AHEAD, "{} reads", read.len());
        });
    }
}
