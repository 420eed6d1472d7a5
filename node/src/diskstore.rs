//! `disot-node`'s on-disk block store: a flat-file layout in the data directory.
//!
//! `blocks/<last two characters of the CID>/<CID>` holds each block and
//! `objects/<CID>.json` each object record. Every file is written to a temporary name, synced
//! and renamed into place, so a crash leaves either the old state or the new one. Blocks are
//! verified when stored and when read (`disot_core::store::verify`).

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use cid::Cid;
use disot_core::store::{verify, BlockStore, Error, ObjectRecord, Result};
use disot_core::unixfs::Block;

#[derive(Debug)]
pub struct DiskStore {
    blocks: PathBuf,
    objects: PathBuf,
}

fn io(e: std::io::Error) -> Error {
    // ENOSPC / EDQUOT: say it plainly; the store stays consistent (writes are atomic renames).
    if matches!(e.raw_os_error(), Some(28) | Some(122)) {
        Error::QuotaExceeded(e.to_string())
    } else {
        Error::Backend(e.to_string())
    }
}

impl DiskStore {
    pub fn open(data_dir: &Path) -> Result<Self> {
        let store =
            DiskStore { blocks: data_dir.join("blocks"), objects: data_dir.join("objects") };
        fs::create_dir_all(&store.blocks).map_err(io)?;
        fs::create_dir_all(&store.objects).map_err(io)?;
        Ok(store)
    }

    fn block_path(&self, cid: &Cid) -> PathBuf {
        let name = cid.to_string();
        let shard = &name[name.len().saturating_sub(2)..];
        self.blocks.join(shard).join(name)
    }

    fn object_path(&self, cid: &str) -> Result<PathBuf> {
        // Only names that parse as CIDs become file names: no path tricks from outside input.
        let cid: Cid = cid.parse().map_err(|_| Error::UnknownObject(cid.to_owned()))?;
        Ok(self.objects.join(format!("{cid}.json")))
    }

    /// Remove what interrupted writes left (`<name>.tmp<pid>` files of processes that are
    /// gone; a running one's are its writes in progress). Returns how many went. Where the
    /// system cannot say which processes run (no `/proc`), nothing is removed.
    pub fn remove_leftovers(&self) -> Result<usize> {
        let proc = Path::new("/proc");
        if !proc.is_dir() {
            return Ok(0);
        }
        let mut dirs = vec![self.objects.clone()];
        for shard in fs::read_dir(&self.blocks).map_err(io)? {
            let shard = shard.map_err(io)?;
            if shard.file_type().map_err(io)?.is_dir() {
                dirs.push(shard.path());
            }
        }
        let mut removed = 0;
        for dir in dirs {
            for entry in fs::read_dir(&dir).map_err(io)? {
                let path = entry.map_err(io)?.path();
                let pid = path
                    .extension()
                    .and_then(|e| e.to_str()?.strip_prefix("tmp")?.parse::<u32>().ok());
                if pid.is_some_and(|pid| !proc.join(pid.to_string()).exists()) {
                    match fs::remove_file(&path) {
                        Err(e) if e.kind() != ErrorKind::NotFound => return Err(io(e)),
                        _ => removed += 1,
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Overwrite a stored block's bytes without checks, to test corruption detection.
    #[cfg(test)]
    pub fn corrupt(&self, cid: &Cid, data: &[u8]) -> std::io::Result<()> {
        fs::write(self.block_path(cid), data)
    }
}

/// Write `path` whole or not at all; with `sync_dir_too`, the rename is made durable as well
/// (else the caller syncs the directory: [`sync_dir`]).
fn write_atomic(path: &Path, bytes: &[u8], sync_dir_too: bool) -> Result<()> {
    // A directory made here (a new shard) is made durable in its parent at once: else a
    // power loss could keep the record and lose the directory holding its blocks.
    if let Some(dir) = path.parent().filter(|d| !d.is_dir()) {
        fs::create_dir_all(dir).map_err(io)?;
        dir.parent().map_or(Ok(()), sync_dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)?;
    match path.parent() {
        Some(dir) if sync_dir_too => sync_dir(dir),
        _ => Ok(()),
    }
}

/// Make the renames into `dir` durable: a power loss after an `add` has printed its CID does
/// not take its files back.
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

impl DiskStore {
    /// A block's bytes, checked against its CID, read on this thread (it blocks: see
    /// [`crate::exchange`] for reading on a thread of its own).
    pub fn read_block(&self, cid: &Cid) -> Result<Option<Vec<u8>>> {
        match read_optional(&self.block_path(cid))? {
            Some(data) => verify(cid, &data).map(|()| Some(data)),
            None => Ok(None),
        }
    }
}

impl BlockStore for DiskStore {
    async fn get(&self, cid: &Cid) -> Result<Option<Vec<u8>>> {
        self.read_block(cid)
    }

    async fn has(&self, cid: &Cid) -> Result<bool> {
        Ok(self.block_path(cid).exists())
    }

    async fn put_blocks(&self, blocks: &[Block]) -> Result<()> {
        for b in blocks {
            verify(&b.cid, &b.data)?;
        }
        let mut written = std::collections::BTreeSet::new();
        for b in blocks {
            let path = self.block_path(&b.cid);
            // One stored already is kept only if its bytes still match its CID: adding the same
            // content again repairs a damaged block.
            let intact =
                matches!(read_optional(&path), Ok(Some(old)) if verify(&b.cid, &old).is_ok());
            if !intact {
                write_atomic(&path, &b.data, false)?;
                written.extend(path.parent().map(Path::to_path_buf));
            }
        }
        // Each directory synced once, not once a block.
        written.iter().try_for_each(|dir| sync_dir(dir))
    }

    async fn delete_block(&self, cid: &Cid) -> Result<()> {
        match fs::remove_file(self.block_path(cid)) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        }
    }

    async fn block_cids(&self) -> Result<Vec<Cid>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.blocks).map_err(io)? {
            let shard = shard.map_err(io)?;
            if !shard.file_type().map_err(io)?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path()).map_err(io)? {
                let name = entry.map_err(io)?.file_name();
                // Leftover temporary files of an interrupted write are not blocks.
                if let Some(cid) = name.to_str().and_then(|n| n.parse::<Cid>().ok()) {
                    out.push(cid);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn put_object(&self, record: &ObjectRecord) -> Result<()> {
        let json = serde_json::to_vec_pretty(record).map_err(|e| Error::Backend(e.to_string()))?;
        write_atomic(&self.object_path(&record.cid)?, &json, true)
    }

    async fn object(&self, cid: &str) -> Result<Option<ObjectRecord>> {
        let Ok(path) = self.object_path(cid) else { return Ok(None) };
        match read_optional(&path)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Backend(format!("{}: {e}", path.display()))),
            None => Ok(None),
        }
    }

    /// Read and write under a lock that every change of a record takes (`objects/.lock`):
    /// several `add`, `pin` and `unpin` may run at once, and two that read the same record
    /// before either wrote it would lose one's change (an `add --no-pin` unpinning what
    /// another `add` of the same content just pinned).
    async fn update_object<F>(&self, cid: &str, change: F) -> Result<Option<ObjectRecord>>
    where
        F: FnOnce(Option<ObjectRecord>) -> Option<ObjectRecord>,
    {
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.objects.join(".lock"))
            .map_err(io)?;
        lock.lock().map_err(io)?;
        let Some(record) = change(self.object(cid).await?) else { return Ok(None) };
        self.put_object(&record).await?;
        Ok(Some(record))
        // (The lock goes with its file.)
    }

    async fn delete_object(&self, cid: &str) -> Result<()> {
        match fs::remove_file(self.object_path(cid)?) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        }
    }

    async fn objects(&self) -> Result<Vec<ObjectRecord>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.objects).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = fs::read(&path).map_err(io)?;
                out.push(
                    serde_json::from_slice(&bytes)
                        .map_err(|e| Error::Backend(format!("{}: {e}", path.display())))?,
                );
            }
        }
        out.sort_by(|a: &ObjectRecord, b| a.cid.cmp(&b.cid));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn disk_store_passes_the_conformance_suite() {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::temp_dir().join(format!("disot-diskstore-{}", std::process::id()));
        let make = || {
            let dir = base.join(N.fetch_add(1, Ordering::SeqCst).to_string());
            async move { DiskStore::open(&dir).expect("open") }
        };
        fn corrupt<'a>(s: &'a DiskStore, cid: &'a Cid) -> futures::future::LocalBoxFuture<'a, ()> {
            Box::pin(async move { s.corrupt(cid, b"flipped bits").expect("corrupt") })
        }
        futures::executor::block_on(disot_core::store::conformance::check_all(make, corrupt));
        let _ = fs::remove_dir_all(&base);
    }

    /// Several commands changing one record at once (each with its own store, as separate
    /// processes have) lose none of the changes.
    #[test]
    fn concurrent_changes_of_one_record_are_all_kept() {
        let dir = std::env::temp_dir().join(format!("disot-diskstore-race-{}", std::process::id()));
        let record: ObjectRecord = serde_json::from_value(serde_json::json!({
            "cid": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
            "sha256": format!("sha256:{}", "0".repeat(64)),
            "size": 0,
            "pinned": false,
        }))
        .expect("record");
        futures::executor::block_on(DiskStore::open(&dir).expect("open").put_object(&record))
            .expect("put");
        const THREADS: usize = 4;
        const CHANGES: usize = 40;
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (dir, cid) = (&dir, &record.cid);
                s.spawn(move || {
                    let store = DiskStore::open(dir).expect("open");
                    for c in 0..CHANGES {
                        let origin = format!("https://t{t}-{c}.example");
                        let changed = store.update_object(cid, |r| {
                            r.map(|mut r| {
                                r.origins.push(origin);
                                r
                            })
                        });
                        futures::executor::block_on(changed).expect("update").expect("found");
                    }
                });
            }
        });
        let store = DiskStore::open(&dir).expect("open");
        let kept = futures::executor::block_on(store.object(&record.cid)).expect("read");
        assert_eq!(kept.expect("record").origins.len(), THREADS * CHANGES);
        let _ = fs::remove_dir_all(&dir);
    }
}
