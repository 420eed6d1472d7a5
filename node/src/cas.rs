//! The content subcommands of `disot-node`, in the manner of `ipfs add` / `ipfs cat`: they work
//! on the on-disk store in the data directory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use cid::Cid;
use disot_core::store::{self, join_to, BlockStore, ObjectRecord};
use disot_core::unixfs::{Importer, Preset};

use crate::datadir::{Hold, Lock};
use crate::diskstore::DiskStore;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// File to import; `-` or nothing reads standard input
    file: Option<PathBuf>,

    /// Importer settings to match: helia (@helia/unixfs defaults: 1 MiB chunks, 1024 links)
    /// or kubo (ipfs add --cid-version 1: 256 KiB chunks, 174 links)
    #[arg(long, default_value = "helia", value_parser = |s: &str| s.parse::<Preset>())]
    preset: Preset,

    /// Chunk size in bytes (default: the preset's)
    #[arg(long, value_name = "BYTES")]
    chunk_size: Option<usize>,

    /// Only compute the CID and the sha256: name; store nothing
    #[arg(short = 'n', long)]
    only_hash: bool,

    /// Do not pin the object (the next gc removes it)
    #[arg(long)]
    no_pin: bool,
}

#[derive(Debug, clap::Args)]
pub struct NameArg {
    /// The object's CID or its sha256:<hex> name
    name: String,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// File with the entry (JSON); `-` or nothing reads standard input
    file: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Import a file (or stdin) as UnixFS; print its CID, sha256: name and size
    Add(AddArgs),
    /// Write an object's bytes to stdout (every block is verified)
    Cat(NameArg),
    /// Keep an object through garbage collection
    Pin(NameArg),
    /// Let the next garbage collection remove an object
    Unpin(NameArg),
    /// List the stored objects
    Ls,
    /// Remove unpinned objects and blocks no pinned object needs
    Gc,
    /// Check a signed DISOT entry (JSON); print its signer's DID, or fail
    Verify(VerifyArgs),
}

pub fn run(command: &Command, data_dir: &Path, json: bool) -> Result<(), BoxError> {
    futures::executor::block_on(run_async(command, data_dir, json))
}

/// The store, with the lock `hold` needs (`None` to read only: reads need none, every file
/// being written whole or not at all). Only `add` (`create`) makes the directory: for the
/// others a mistyped path is an error, not an empty store. Nothing is written to try the
/// disk: `gc` must work on a full one.
fn open(
    data_dir: &Path,
    hold: Option<Hold>,
    create: bool,
) -> Result<(DiskStore, Option<Lock>), BoxError> {
    let dir = if create {
        crate::datadir::DataDir::open(data_dir)?
    } else {
        crate::datadir::DataDir::existing(data_dir)?
    };
    let lock = hold.map(|h| dir.lock(h)).transpose()?;
    Ok((DiskStore::open(data_dir)?, lock))
}

/// A line on stdout. A reader that went (`disot-node ls | head -1`) ends the command quietly,
/// as it does other command-line tools.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            stdout_failed(e);
        }
    }};
}

fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: writing to stdout: {e}");
    std::process::exit(2);
}

fn print_record(r: &ObjectRecord, json: bool) {
    if json {
        out!("{}", serde_json::json!(r));
    } else {
        out!("{} {} {}{}", r.cid, r.sha256, r.size, if r.pinned { " pinned" } else { "" });
    }
}

async fn run_async(command: &Command, data_dir: &Path, json: bool) -> Result<(), BoxError> {
    match command {
        Command::Add(args) => add(args, data_dir, json).await,
        Command::Cat(NameArg { name }) => {
            let (store, _) = open(data_dir, None, false)?;
            let record = store::resolve(&store, name).await?;
            let cid: Cid = record.cid.parse()?;
            let mut stdout = std::io::stdout().lock();
            store::cat(&store, &cid, None, |bytes| {
                stdout.write_all(bytes).map_err(|e| stdout_failed(e))
            })
            .await?;
            stdout.flush().unwrap_or_else(|e| stdout_failed(e));
            Ok(())
        }
        Command::Pin(NameArg { name }) | Command::Unpin(NameArg { name }) => {
            let (store, _writing) = open(data_dir, Some(Hold::StoreWrite), false)?;
            let found = store::resolve(&store, name).await?;
            let pinned = matches!(command, Command::Pin(_));
            // Changed as stored when the change is made (another command may change it too).
            let changed = store
                .update_object(&found.cid, |r| r.map(|r| ObjectRecord { pinned, ..r }))
                .await?
                .ok_or_else(|| store::Error::UnknownObject(name.clone()))?;
            print_record(&changed, json);
            Ok(())
        }
        Command::Ls => {
            let (store, _) = open(data_dir, None, false)?;
            for r in store.objects().await? {
                print_record(&r, json);
            }
            Ok(())
        }
        Command::Verify(VerifyArgs { file }) => {
            // Read no further than the largest entry (and one byte to tell it is larger).
            use std::io::Read as _;
            let limit = 4 * disot_core::entry::MAX_ENTRY_BYTES;
            let mut text = Vec::new();
            match file.as_deref() {
                Some(path) if path != Path::new("-") => std::fs::File::open(path)
                    .and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut text))
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
                _ => std::io::stdin().lock().take(limit as u64 + 1).read_to_end(&mut text)?,
            };
            if text.len() > limit {
                return Err(format!("the entry is larger than {limit} bytes").into());
            }
            let entry: serde_json::Value = serde_json::from_slice(&text)?;
            let signer = disot_core::entry::verify(&entry)?;
            if json {
                out!("{}", serde_json::json!({ "valid": true, "signer": signer }));
            } else {
                out!("valid, signed by {signer}");
            }
            Ok(())
        }
        Command::Gc => {
            let (store, _sweeping) = open(data_dir, Some(Hold::StoreSweep), false)?;
            let removed = store::collect_garbage(&store).await?;
            let leftovers = store.remove_leftovers()?;
            if leftovers > 0 {
                tracing::info!("removed {leftovers} files interrupted writes left");
            }
            if json {
                out!(
                    "{}",
                    serde_json::json!({ "removedBlocks": removed.blocks, "removedObjects": removed.objects })
                );
            } else {
                out!("removed {} objects, {} blocks", removed.objects, removed.blocks);
            }
            Ok(())
        }
    }
}

async fn add(args: &AddArgs, data_dir: &Path, json: bool) -> Result<(), BoxError> {
    let mut layout = args.preset.layout();
    if let Some(size) = args.chunk_size {
        layout = layout.with_chunk_size(size)?;
    }
    let mut input: Box<dyn Read> = match &args.file {
        None => Box::new(std::io::stdin().lock()),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdin().lock()),
        Some(p) => Box::new(
            std::fs::File::open(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        ),
    };
    let opened =
        if args.only_hash { None } else { Some(open(data_dir, Some(Hold::StoreWrite), true)?) };
    let store = opened.as_ref().map(|(store, _writing)| store);
    // Stream in 1 MiB reads: memory stays flat whatever the size. Blocks are written as they
    // complete; the object record is written last, so the object appears all at once.
    let mut importer = Importer::new(layout);
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading input: {e}").into()),
        };
        let blocks = importer.push(&buf[..n]);
        if let Some(store) = &store {
            store.put_imported(&blocks).await?;
        }
    }
    let (blocks, imported) = importer.finish();
    let mut record = ObjectRecord::new(&imported);
    record.pinned = !args.no_pin;
    record.name =
        args.file.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
    if let Some(store) = &store {
        store.put_imported(&blocks).await?;
        // Content held already keeps what its record says (a pin, who it is served to):
        // adding it again with `--no-pin` must not unpin it.
        store.update_object(&record.cid, join_to(&record)).await?;
    }
    if json {
        out!(
            "{}",
            serde_json::json!({ "cid": record.cid, "sha256": record.sha256, "size": record.size })
        );
    } else {
        out!("{} {} {}", record.cid, record.sha256, record.size);
    }
    Ok(())
}
