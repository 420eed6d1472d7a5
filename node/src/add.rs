//! `disot-node add`: import a file as UnixFS, as `ipfs add --cid-version 1` does.
//!
//! For now only `--only-hash` is available: it computes the CID and the sha256: name without
//! storing anything. Storing needs the on-disk block store, which is not built yet.

use std::io::Read;
use std::path::PathBuf;

use disot_core::unixfs::{Importer, Layout, Preset};

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// File to import; `-` or nothing reads standard input
    file: Option<PathBuf>,

    /// Importer settings to match: helia (@helia/unixfs defaults) or kubo (ipfs add
    /// --cid-version 1)
    #[arg(long, default_value = "helia", value_parser = |s: &str| s.parse::<Preset>())]
    preset: Preset,

    /// Chunk size in bytes (default: the preset's: helia 1 MiB, kubo 256 KiB)
    #[arg(long, value_name = "BYTES")]
    chunk_size: Option<usize>,

    /// Only compute the CID and the sha256: name; store nothing
    #[arg(short = 'n', long)]
    only_hash: bool,
}

pub fn run(args: &AddArgs, json: bool) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if !args.only_hash {
        return Err(
            "storing content is not available yet (the on-disk block store is not built); \
                    use --only-hash to compute the CID"
                .into(),
        );
    }
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
    let imported = import_stream(&mut input, layout)?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "cid": imported.cid.to_string(), "sha256": imported.sha256, "size": imported.size })
        );
    } else {
        println!("{} {} {}", imported.cid, imported.sha256, imported.size);
    }
    Ok(())
}

/// Stream `input` through the importer in 1 MiB reads; memory stays flat whatever the size.
fn import_stream(
    input: &mut dyn Read,
    layout: Layout,
) -> Result<disot_core::unixfs::Imported, std::io::Error> {
    let mut importer = Importer::new(layout);
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // Blocks are dropped: --only-hash stores nothing.
        drop(importer.push(&buf[..n]));
    }
    Ok(importer.finish().1)
}
