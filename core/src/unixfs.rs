//! Content addressing: files to UnixFS blocks with the same CIDs real IPFS nodes compute.
//!
//! Design decision: CIDv1, raw leaves, dag-pb branches, balanced layout, sha2-256, with settings
//! that match the reference implementations. The branches are rendered by `rust-unixfs`; the
//! tree over the leaves is built here ([`LeafTree`]), because it must also take leaves hashed
//! elsewhere (the browser's own SHA-256, on a worker), which `rust-unixfs`'s importer, hashing
//! every leaf itself, cannot. Every object also gets the seed system's name: `sha256:<hex>` of
//! the whole content. Input is pushed in pieces and blocks come out as soon as they are complete,
//! so a file never has to sit in memory. The main type is [`Importer`].

use crate::hex;
use cid::Cid;
use multihash_codetable::Code;
use rust_unixfs::file::adder::{rebuild_file_branch, FileBranchLink};
use sha2::{Digest, Sha256};

/// Largest chunk size accepted (Bitswap peers refuse blocks over 2 MiB).
pub const MAX_CHUNK_SIZE: usize = 1024 * 1024;

/// How a file is cut into blocks and how the blocks are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Layout {
    chunk_size: usize,
    max_links: usize,
}

/// Settings of well-known importers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// `@helia/unixfs` 8 `addBytes` defaults (ipfs-unixfs-importer's "unixfs-v1-2025"
    /// profile): 1 MiB chunks, raw leaves, CIDv1, up to 1024 links a node.
    Helia,
    /// Kubo `ipfs add --cid-version 1`: 256 KiB chunks, raw leaves, up to 174 links a node.
    Kubo,
}

impl Preset {
    pub fn layout(self) -> Layout {
        match self {
            Preset::Helia => Layout { chunk_size: 1024 * 1024, max_links: 1024 },
            Preset::Kubo => Layout { chunk_size: 256 * 1024, max_links: 174 },
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "helia" => Ok(Preset::Helia),
            "kubo" => Ok(Preset::Kubo),
            other => Err(format!("unknown preset {other:?} (expected helia or kubo)")),
        }
    }
}

impl Default for Layout {
    fn default() -> Self {
        Preset::Helia.layout()
    }
}

impl Layout {
    /// A layout with another chunk size; errors outside 1 byte ..= [`MAX_CHUNK_SIZE`].
    pub fn with_chunk_size(self, chunk_size: usize) -> Result<Self, String> {
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(format!("chunk size must be between 1 and {MAX_CHUNK_SIZE} bytes"));
        }
        Ok(Layout { chunk_size, ..self })
    }

    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    pub fn max_links(&self) -> usize {
        self.max_links
    }
}

/// One content-addressed block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub cid: Cid,
    pub data: Vec<u8>,
}

/// What an import produced: the root CID, the seed name and the size of the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub cid: Cid,
    /// `sha256:<lowercase hex>` of the whole content.
    pub sha256: String,
    pub size: u64,
}

/// Streams bytes into UnixFS blocks, and names the content with its SHA-256.
pub struct Importer {
    blocks: BlockImporter,
    hasher: Sha256,
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer").field("size", &self.blocks.size()).finish_non_exhaustive()
    }
}

impl Importer {
    pub fn new(layout: Layout) -> Self {
        Importer { blocks: BlockImporter::new(layout), hasher: Sha256::new() }
    }

    /// Add bytes; returns the blocks completed by them.
    pub fn push(&mut self, input: &[u8]) -> Vec<Block> {
        self.hasher.update(input);
        self.blocks.push(input)
    }

    /// End of input: the remaining blocks (the root last) and what was imported.
    pub fn finish(self) -> (Vec<Block>, Imported) {
        self.blocks.finish(&self.hasher.finalize().into())
    }
}

/// Streams bytes into UnixFS blocks like [`Importer`], but leaves the SHA-256 of the whole
/// content to the caller (who may compute it on another thread while this one cuts and hashes
/// the blocks) and takes it at [`BlockImporter::finish`].
pub struct BlockImporter {
    tree: LeafTree,
    /// The start of the next leaf, until it is a whole chunk.
    partial: Vec<u8>,
}

impl std::fmt::Debug for BlockImporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockImporter").field("size", &self.size()).finish_non_exhaustive()
    }
}

impl BlockImporter {
    pub fn new(layout: Layout) -> Self {
        BlockImporter { tree: LeafTree::new(layout), partial: Vec::new() }
    }

    /// Add bytes; returns the blocks completed by them (each leaf before the branches it
    /// completed).
    pub fn push(&mut self, mut input: &[u8]) -> Vec<Block> {
        let chunk = self.tree.layout.chunk_size;
        let mut out = Vec::new();
        while !input.is_empty() {
            let leaf = if self.partial.is_empty() && input.len() >= chunk {
                // Whole chunks straight from the input, without buffering.
                let (leaf, rest) = input.split_at(chunk);
                input = rest;
                leaf.to_vec()
            } else {
                let take = (chunk - self.partial.len()).min(input.len());
                self.partial.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.partial.len() < chunk {
                    break;
                }
                std::mem::take(&mut self.partial)
            };
            self.add_leaf(leaf, &mut out);
        }
        out
    }

    fn add_leaf(&mut self, data: Vec<u8>, out: &mut Vec<Block>) {
        // Cut here to the layout's chunk size, as the tree takes them.
        let (cid, branches) = self.tree.add(&Sha256::digest(&data).into(), data.len());
        out.push(Block { cid, data });
        out.extend(branches);
    }

    /// End of input, with `content_digest` the SHA-256 of every byte pushed: the remaining
    /// blocks (the root last) and what was imported. For content of one block the root's own
    /// digest is that hash, and it names the object whatever was passed.
    pub fn finish(mut self, content_digest: &[u8; 32]) -> (Vec<Block>, Imported) {
        let mut out = Vec::new();
        // The last, short leaf; or the empty leaf that is all of empty content.
        if !self.partial.is_empty() || self.tree.leaves == 0 {
            let last = std::mem::take(&mut self.partial);
            self.add_leaf(last, &mut out);
        }
        let (branches, imported) = self.tree.finish(content_digest);
        out.extend(branches);
        (out, imported)
    }

    /// Bytes pushed so far.
    pub fn size(&self) -> u64 {
        self.tree.size + self.partial.len() as u64
    }
}

/// The balanced tree of a file over raw leaves that were cut and hashed elsewhere (a worker
/// hashes them with the browser's own SHA-256, several times faster than this code): it takes
/// each leaf's digest and length, in order, and makes the branch blocks, as `@helia/unixfs`
/// and Kubo link them. Every leaf but the last must be exactly the layout's chunk size.
///
/// Each level keeps the links not yet gathered into a branch; a level that reaches the layout's
/// link count becomes one branch, a link on the level above. At the end, each level's rest
/// becomes a branch on its own, from the bottom up, until one link is left: the root. (So a
/// file of one leaf is that leaf, and the last branch of a level may link a single child, as
/// the reference importers do.)
pub struct LeafTree {
    layout: Layout,
    levels: Vec<Vec<FileBranchLink>>,
    /// Leaves taken, and their bytes.
    leaves: u64,
    size: u64,
    /// A leaf shorter than a chunk was taken: it must be the last.
    ended: bool,
}

impl std::fmt::Debug for LeafTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafTree")
            .field("leaves", &self.leaves)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl LeafTree {
    pub fn new(layout: Layout) -> Self {
        LeafTree { layout, levels: vec![Vec::new()], leaves: 0, size: 0, ended: false }
    }

    /// The next raw leaf: its SHA-256 and length. Returns the leaf's CID and the branch blocks
    /// it completed; errs (taking nothing) if the leaf is longer than a chunk, follows a
    /// shorter one, or is empty but not the only one.
    pub fn push_leaf(
        &mut self,
        digest: &[u8; 32],
        len: usize,
    ) -> Result<(Cid, Vec<Block>), String> {
        let chunk = self.layout.chunk_size;
        if len > chunk {
            return Err(format!("a leaf of {len} bytes is longer than the chunk size ({chunk})"));
        }
        if self.ended {
            return Err("a leaf after the last (shorter than a chunk) one".into());
        }
        if len == 0 && self.leaves > 0 {
            return Err("an empty leaf is only the whole of empty content".into());
        }
        Ok(self.add(digest, len))
    }

    /// [`LeafTree::push_leaf`] of a leaf known to be right.
    fn add(&mut self, digest: &[u8; 32], len: usize) -> (Cid, Vec<Block>) {
        self.ended = len < self.layout.chunk_size;
        self.leaves += 1;
        self.size += len as u64;
        let cid = raw_cid(digest);
        self.levels[0].push(FileBranchLink { cid, blocksize: len as u64, tsize: len as u64 });
        let mut branches = Vec::new();
        let mut level = 0;
        while self.levels[level].len() == self.layout.max_links {
            let full = std::mem::take(&mut self.levels[level]);
            self.gather(level, &full, &mut branches);
            level += 1;
        }
        (cid, branches)
    }

    /// The branch over `links` (of `level`), as a link on the level above; its block goes
    /// to `out`.
    fn gather(&mut self, level: usize, links: &[FileBranchLink], out: &mut Vec<Block>) {
        let filesize = links.iter().map(|l| l.blocksize).sum();
        let (cid, data) = rebuild_file_branch(filesize, links, cid::Version::V1, Code::Sha2_256);
        let tsize = links.iter().map(|l| l.tsize).sum::<u64>() + data.len() as u64;
        if self.levels.len() == level + 1 {
            self.levels.push(Vec::new());
        }
        self.levels[level + 1].push(FileBranchLink { cid, blocksize: filesize, tsize });
        out.push(Block { cid, data });
    }

    /// No more leaves, with `content_digest` the SHA-256 of all of them: the remaining
    /// branches (the root last) and what was imported. For content of one leaf the leaf is the
    /// root and its own digest names the object, whatever was passed. With no leaf at all the
    /// content is empty, and so is its one leaf (whose block the caller has to store).
    pub fn finish(mut self, content_digest: &[u8; 32]) -> (Vec<Block>, Imported) {
        let mut branches = Vec::new();
        let mut level = 0;
        let root = loop {
            let rest = std::mem::take(&mut self.levels[level]);
            let above: usize = self.levels[level + 1..].iter().map(Vec::len).sum();
            match (rest.as_slice(), above) {
                ([], 0) => break None,
                ([only], 0) => break Some(only.cid),
                ([], _) => {}
                (links, _) => self.gather(level, links, &mut branches),
            }
            level += 1;
        };
        let cid = root.unwrap_or_else(empty_file_cid);
        let sha256 = if cid.codec() == RAW_CODEC {
            sha256_name(cid.hash().digest())
        } else {
            sha256_name(content_digest)
        };
        (branches, Imported { cid, sha256, size: self.size })
    }

    /// Leaves taken so far.
    pub fn leaves(&self) -> u64 {
        self.leaves
    }
}

/// The CIDv1 of a raw block whose SHA-256 is `digest`.
pub fn raw_cid(digest: &[u8; 32]) -> Cid {
    // A 32-byte digest always fits a 64-byte multihash.
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, digest).unwrap_or_default();
    Cid::new_v1(RAW_CODEC, mh)
}

fn empty_file_cid() -> Cid {
    raw_cid(&Sha256::digest([]).into())
}

/// Multicodec of raw leaves.
pub const RAW_CODEC: u64 = 0x55;

/// The seed system's name of content whose SHA-256 is `digest`: `sha256:<lowercase hex>`.
pub fn sha256_name(digest: &[u8]) -> String {
    format!("sha256:{}", hex(digest))
}

/// Import a whole buffer at once.
pub fn import(bytes: &[u8], layout: Layout) -> (Vec<Block>, Imported) {
    let mut importer = Importer::new(layout);
    let mut blocks = importer.push(bytes);
    let (rest, imported) = importer.finish();
    blocks.extend(rest);
    (blocks, imported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_chunk_is_a_raw_block_named_by_its_sha256() {
        let data = b"hello disot";
        let (blocks, imported) = import(data, Layout::default());
        assert_eq!(blocks.len(), 1);
        assert_eq!(imported.cid.codec(), RAW_CODEC);
        let digest = Sha256::digest(data);
        assert_eq!(imported.cid.hash().digest(), digest.as_slice());
        assert_eq!(imported.sha256, format!("sha256:{}", hex(&digest)));
        assert_eq!(imported.size, data.len() as u64);
    }

    #[test]
    fn the_empty_file_is_the_empty_raw_block() {
        let (blocks, imported) = import(b"", Layout::default());
        assert_eq!(blocks.len(), 1);
        // The well-known CID of zero bytes as a CIDv1 raw block.
        assert_eq!(
            imported.cid.to_string(),
            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
        );
        assert_eq!(imported.cid, empty_file_cid());
    }

    #[test]
    fn pushing_in_pieces_gives_the_same_dag() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let layout = Layout::default().with_chunk_size(1000).expect("valid");
        let (whole, a) = import(&data, layout);
        let mut importer = Importer::new(layout);
        let mut pieces = Vec::new();
        for piece in data.chunks(777) {
            pieces.extend(importer.push(piece));
        }
        let (rest, b) = importer.finish();
        pieces.extend(rest);
        assert_eq!(a, b);
        assert_eq!(whole, pieces);
        assert!(whole.len() > 300, "300 leaves and their parents");
    }

    /// Regression: a file of exactly one chunk got the empty file's CID, because its only
    /// block comes out of `push` and `finish` returns nothing.
    #[test]
    fn a_file_of_exactly_one_chunk_is_its_own_raw_block() {
        let data = vec![7u8; 1000];
        let layout = Layout::default().with_chunk_size(1000).expect("valid");
        let (blocks, imported) = import(&data, layout);
        assert_eq!(blocks.len(), 1);
        assert_eq!(imported.cid, blocks[0].cid);
        assert_eq!(imported.cid.codec(), RAW_CODEC);
    }

    #[test]
    fn the_block_importer_takes_the_content_hash_from_outside() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 13 % 251) as u8).collect();
        let layout = Layout::default().with_chunk_size(1000).expect("valid");
        let (blocks, imported) = import(&data, layout);
        let digest: [u8; 32] = Sha256::digest(&data).into();
        let mut importer = BlockImporter::new(layout);
        let mut pieces = importer.push(&data[..2500]);
        pieces.extend(importer.push(&data[2500..]));
        assert_eq!(importer.size(), 5000);
        let (rest, b) = importer.finish(&digest);
        pieces.extend(rest);
        assert_eq!((pieces, b), (blocks, imported.clone()));
        // Several blocks: the name is what the caller hashed.
        let (_, wrong) = {
            let mut i = BlockImporter::new(layout);
            i.push(&data);
            i.finish(&[0; 32])
        };
        assert_eq!(wrong.cid, imported.cid);
        assert_eq!(wrong.sha256, sha256_name(&[0; 32]));
        // One block: its CID's digest is the name, whatever the caller passed.
        let mut one = BlockImporter::new(layout);
        one.push(b"hello");
        let (_, single) = one.finish(&[0; 32]);
        assert_eq!(single.sha256, sha256_name(&Sha256::digest(b"hello")));
    }

    /// The blocks `rust-unixfs`'s own importer makes of `data`: an independent reference for
    /// the tree built here.
    fn reference(data: &[u8], layout: Layout) -> Vec<Block> {
        use rust_unixfs::file::adder::{BalancedCollector, Chunker, FileAdder};
        let mut adder = FileAdder::builder()
            .with_chunker(Chunker::Size(layout.chunk_size))
            .with_collector(BalancedCollector::with_branching_factor(layout.max_links))
            .with_cid_version(cid::Version::V1)
            .with_raw_leaves(true)
            .build();
        let mut out = Vec::new();
        let mut input = data;
        while !input.is_empty() {
            let (blocks, used) = adder.push(input);
            out.extend(blocks.map(|(cid, data)| Block { cid, data }));
            input = &input[used..];
        }
        out.extend(adder.finish().map(|(cid, data)| Block { cid, data }));
        out
    }

    #[test]
    fn the_tree_is_the_one_rust_unixfs_builds_for_every_shape() {
        // Every leaf count from 0 to past three levels of 3 links, and two levels of 4 and 5.
        for (max_links, leaves) in [(2, 0..20), (3, 0..40), (4, 0..40), (5, 20..30)] {
            for n in leaves {
                for tail in [0, 3] {
                    let layout = Layout { chunk_size: 8, max_links };
                    let data: Vec<u8> = (0..n * 8 + tail).map(|i| (i * 31 % 251) as u8).collect();
                    let (mut ours, imported) = import(&data, layout);
                    let mut theirs = reference(&data, layout);
                    // The same root, last; the same blocks (a full branch comes out here as
                    // soon as its last link, there at the next leaf).
                    assert_eq!(
                        ours.last(),
                        theirs.last(),
                        "{n} leaves + {tail}, {max_links} links"
                    );
                    assert_eq!(Some(imported.cid), ours.last().map(|b| b.cid));
                    ours.sort_by_key(|b| b.cid);
                    theirs.sort_by_key(|b| b.cid);
                    assert_eq!(ours, theirs, "{n} leaves + {tail} bytes, {max_links} links");
                    assert_eq!(imported.size, data.len() as u64);
                }
            }
        }
    }

    #[test]
    fn a_tree_of_leaves_hashed_elsewhere_is_the_importers() {
        let layout = Layout { chunk_size: 10, max_links: 3 };
        let data: Vec<u8> = (0..137u32).map(|i| (i * 17 % 251) as u8).collect();
        let (blocks, imported) = import(&data, layout);
        let mut tree = LeafTree::new(layout);
        let mut ours = Vec::new();
        for leaf in data.chunks(10) {
            let (cid, branches) =
                tree.push_leaf(&Sha256::digest(leaf).into(), leaf.len()).expect("a leaf in shape");
            ours.push(Block { cid, data: leaf.to_vec() });
            ours.extend(branches);
        }
        assert_eq!(tree.leaves(), 14);
        let (rest, done) = tree.finish(&Sha256::digest(&data).into());
        ours.extend(rest);
        assert_eq!((ours, done), (blocks, imported));
    }

    #[test]
    fn a_leaf_tree_refuses_leaves_out_of_shape() {
        let layout = Layout { chunk_size: 10, max_links: 3 };
        let mut tree = LeafTree::new(layout);
        assert!(tree.push_leaf(&[1; 32], 11).is_err(), "longer than a chunk");
        tree.push_leaf(&[1; 32], 10).expect("a whole chunk");
        assert!(tree.push_leaf(&[0; 32], 0).is_err(), "an empty leaf after others");
        tree.push_leaf(&[2; 32], 4).expect("a short last leaf");
        assert!(tree.push_leaf(&[3; 32], 10).is_err(), "after the short last leaf");
        assert_eq!(tree.leaves(), 2, "a refused leaf is not taken");
        // No leaf: the empty file.
        let (blocks, empty) = LeafTree::new(layout).finish(&[0; 32]);
        assert!(blocks.is_empty());
        assert_eq!(empty.cid, empty_file_cid());
        assert_eq!(empty.size, 0);
    }

    #[test]
    fn chunk_size_is_validated() {
        assert!(Layout::default().with_chunk_size(0).is_err());
        assert!(Layout::default().with_chunk_size(MAX_CHUNK_SIZE + 1).is_err());
        assert!("helia".parse::<Preset>().is_ok() && "nope".parse::<Preset>().is_err());
    }
}
