//! Content addressing: files to UnixFS blocks with the same CIDs real IPFS nodes compute.
//!
//! Design decision: the DAG builder is `rust-unixfs` (CIDv1, raw leaves, dag-pb nodes, balanced
//! layout, sha2-256); this module chooses its settings so they match the reference
//! implementations, and adds the seed system's name for every object: `sha256:<hex>` of the
//! whole content. Input is pushed in pieces and blocks come out as soon as they are complete,
//! so a file never has to sit in memory. The main type is [`Importer`].

use crate::hex;
use cid::Cid;
use rust_unixfs::file::adder::{BalancedCollector, Chunker, FileAdder};
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
        f.debug_struct("Importer").field("size", &self.blocks.size).finish_non_exhaustive()
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
    adder: FileAdder,
    size: u64,
    /// The last block produced so far: after `finish` it is the root. (A file of exactly one
    /// chunk has its only block produced by `push`, and `finish` adds nothing.)
    last: Option<Cid>,
}

impl std::fmt::Debug for BlockImporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockImporter").field("size", &self.size).finish_non_exhaustive()
    }
}

impl BlockImporter {
    pub fn new(layout: Layout) -> Self {
        let adder = FileAdder::builder()
            .with_chunker(Chunker::Size(layout.chunk_size))
            .with_collector(BalancedCollector::with_branching_factor(layout.max_links))
            .with_cid_version(cid::Version::V1)
            .with_raw_leaves(true)
            .build();
        BlockImporter { adder, size: 0, last: None }
    }

    /// Add bytes; returns the blocks completed by them.
    pub fn push(&mut self, mut input: &[u8]) -> Vec<Block> {
        self.size += input.len() as u64;
        let mut out = Vec::new();
        while !input.is_empty() {
            let (blocks, used) = self.adder.push(input);
            out.extend(blocks.map(|(cid, data)| Block { cid, data }));
            input = &input[used..];
        }
        if let Some(b) = out.last() {
            self.last = Some(b.cid);
        }
        out
    }

    /// End of input, with `content_digest` the SHA-256 of every byte pushed: the remaining
    /// blocks (the root last) and what was imported. For content of one block the root's own
    /// digest is that hash, and it names the object whatever was passed.
    pub fn finish(self, content_digest: &[u8; 32]) -> (Vec<Block>, Imported) {
        let blocks: Vec<Block> =
            self.adder.finish().map(|(cid, data)| Block { cid, data }).collect();
        // The importer emits an empty raw leaf for an empty file, so some block always exists.
        let cid = blocks.last().map(|b| b.cid).or(self.last).unwrap_or_else(empty_file_cid);
        let sha256 = if cid.codec() == RAW_CODEC {
            sha256_name(cid.hash().digest())
        } else {
            sha256_name(content_digest)
        };
        (blocks, Imported { cid, sha256, size: self.size })
    }

    /// Bytes pushed so far.
    pub fn size(&self) -> u64 {
        self.size
    }
}

fn empty_file_cid() -> Cid {
    let digest = Sha256::digest([]);
    let mh = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap_or_default();
    Cid::new_v1(RAW_CODEC, mh)
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

    #[test]
    fn chunk_size_is_validated() {
        assert!(Layout::default().with_chunk_size(0).is_err());
        assert!(Layout::default().with_chunk_size(MAX_CHUNK_SIZE + 1).is_err());
        assert!("helia".parse::<Preset>().is_ok() && "nope".parse::<Preset>().is_err());
    }
}
