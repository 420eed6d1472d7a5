//! Sync benchmark: a 10,000-entry collection (ten changes of 1,000) synced to a peer that has nothing of it, then one
//! change to a peer that has everything else, over an in-memory stream (no network), and the
//! size of the document. Run: `cargo run --profile native -p disot-core --example sync_bench`
//! (`-- --json` prints the figures as one JSON object, for `tests/bench/sync.bench.js`).
use std::cell::RefCell;
use std::time::Instant;

use disot_core::sync::{session, Entry, Level, Library, Share, DOC_KEY};
use futures::executor::block_on;
use sha2::{Digest as _, Sha256};

// DIDs and CIDs as long as real ones (the browser benchmark adds the same entries).
const A: &str = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
const B: &str = "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG";
const ENTRIES: usize = 10_000;
/// The collection is made in changes of this many entries, as a page adding files in batches.
const PER_CHANGE: usize = 1_000;

/// Entry `i`: the raw CID of the bytes `entry {i}`.
fn entry(i: usize) -> Entry {
    let digest = Sha256::digest(format!("entry {i}").as_bytes());
    Entry {
        cid: disot_core::unixfs::raw_cid(&digest.into()).to_string(),
        name: Some(format!("entry-{i}.txt")),
        mime: Some("text/plain".into()),
        size: Some(i as u64),
        added_by: A.into(),
        added_ms: 1_700_000_000_000 + i as u64,
    }
}

fn main() {
    // Adding one by one: each entry a change.
    let one_by_one = RefCell::new(Library::new(A));
    let started = Instant::now();
    let id = one_by_one.borrow_mut().create_collection([4; 16], "one by one").expect("create");
    for i in 0..ENTRIES {
        one_by_one.borrow_mut().collection_add(&id, &entry(i)).expect("add");
    }
    let built = started.elapsed();

    let a = RefCell::new(Library::new(A));
    let b = RefCell::new(Library::new(B));
    let id = a.borrow_mut().create_collection([5; 16], "bench").expect("create");
    for from in (0..ENTRIES).step_by(PER_CHANGE) {
        let batch: Vec<Entry> = (from..from + PER_CHANGE).map(entry).collect();
        a.borrow_mut().collection_add_all(&id, &batch).expect("add");
    }
    let share = Share {
        id: "bench".into(),
        from: String::new(),
        to: B.into(),
        cid: None,
        sha256: None,
        size: None,
        name: None,
        mime: None,
        collection: Some(id.clone()),
        note: String::new(),
        created_ms: 1,
        revoked: false,
    };
    a.borrow_mut().share(share).expect("share");
    let saving = Instant::now();
    let saved = a.borrow_mut().take_writes().put;
    let save_ms = saving.elapsed().as_secs_f64() * 1e3;
    let key = format!("{DOC_KEY}{id}");
    let doc_bytes: usize = saved.iter().filter(|(k, _)| *k == key).map(|(_, v)| v.len()).sum();

    let (first, first_bytes) = run(&a, &b);
    assert_eq!(b.borrow_mut().collection(&id).expect("at b").entries.len(), ENTRIES);
    a.borrow_mut().collection_add(&id, &entry(ENTRIES)).expect("add");
    let (second, second_bytes) = run(&a, &b);
    assert_eq!(b.borrow_mut().collection(&id).expect("at b").entries.len(), ENTRIES + 1);
    if std::env::args().any(|a| a == "--json") {
        println!(
            "{{\"entries\":{ENTRIES},\"docBytes\":{doc_bytes},\"saveMs\":{save_ms:.3},\"firstMs\":{:.3},\"firstBytes\":{first_bytes},\"oneChangeMs\":{:.3},\"oneChangeBytes\":{second_bytes}}}",
            first.as_secs_f64() * 1e3,
            second.as_secs_f64() * 1e3
        );
        return;
    }
    println!("{ENTRIES} entries added one by one: {:.0} ms", built.as_secs_f64() * 1e3);
    println!(
        "saved document: {doc_bytes} bytes ({:.1} bytes per entry), in {save_ms:.0} ms",
        doc_bytes as f64 / ENTRIES as f64
    );
    println!("sync to a new peer: {:.0} ms, {first_bytes} bytes sent", first.as_secs_f64() * 1e3);
    println!(
        "one change to a peer up to date: {:.2} ms, {second_bytes} bytes sent",
        second.as_secs_f64() * 1e3
    );
}

/// One session from `a` to `b`; its duration and the bytes `a` sent.
fn run(a: &RefCell<Library>, b: &RefCell<Library>) -> (std::time::Duration, u64) {
    let (mut ab, mut ba) = pipe();
    let started = Instant::now();
    let (sa, sb) = block_on(futures::future::join(
        session(&mut ab, a, B, Level::Full, true, |_| {}),
        session(&mut ba, b, A, Level::Full, false, |_| {}),
    ));
    let elapsed = started.elapsed();
    sb.expect("session at b");
    (elapsed, sa.expect("session at a").bytes_sent)
}

/// Two ends of an in-memory duplex stream.
fn pipe() -> (Duplex, Duplex) {
    let (x, y) =
        (futures_ringbuf::RingBuffer::new(1 << 24), futures_ringbuf::RingBuffer::new(1 << 24));
    let (xr, xw) = futures::AsyncReadExt::split(x);
    let (yr, yw) = futures::AsyncReadExt::split(y);
    (Duplex { r: yr, w: xw }, Duplex { r: xr, w: yw })
}

struct Duplex {
    r: futures::io::ReadHalf<futures_ringbuf::RingBuffer<u8>>,
    w: futures::io::WriteHalf<futures_ringbuf::RingBuffer<u8>>,
}

impl futures::AsyncRead for Duplex {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.r).poll_read(cx, buf)
    }
}

impl futures::AsyncWrite for Duplex {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.w).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.w).poll_flush(cx)
    }
    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
