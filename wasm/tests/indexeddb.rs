//! The block-store conformance suite on IndexedDB, in a real headless browser
//! (`wasm-bindgen-test`; run by scripts/test.sh in Chromium and Firefox).
#![cfg(target_arch = "wasm32")]

use std::sync::atomic::{AtomicUsize, Ordering};

use cid::Cid;
use disot_core::store::conformance;
use disot_wasm::store::Store;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

static N: AtomicUsize = AtomicUsize::new(0);

fn corrupt<'a>(s: &'a Store, cid: &'a Cid) -> futures::future::LocalBoxFuture<'a, ()> {
    Box::pin(async move { s.corrupt(cid, b"flipped bits").await.expect("corrupt") })
}

#[wasm_bindgen_test]
async fn indexeddb_store_passes_the_conformance_suite() {
    let run = js_sys::Date::now();
    let make = || async move {
        let name = format!("disot-conformance-{run}-{}", N.fetch_add(1, Ordering::SeqCst));
        Store::open_named(&name).await.expect("open indexeddb")
    };
    conformance::check_all(make, corrupt).await;
}

/// A store written before objects were named by SHA-256 in an index of their own: until it
/// opens again each name is looked for in every record; once opened, the index names them all.
#[wasm_bindgen_test]
async fn objects_stored_before_the_sha256_index_are_named_when_the_store_opens() {
    use disot_core::store::{self as cas, BlockStore as _};
    let name = format!("disot-names-{}", js_sys::Date::now());
    let store = Store::open_named(&name).await.expect("open");
    assert!(store.names_built());
    let record = cas::add(&store, disot_core::unixfs::Layout::default(), [&b"named later"[..]])
        .await
        .expect("add");
    store.forget_names().await.expect("forget the index");
    assert!(!store.names_built());
    let cids =
        |records: Vec<cas::ObjectRecord>| records.into_iter().map(|r| r.cid).collect::<Vec<_>>();
    assert_eq!(
        cids(store.objects_named(&record.sha256).await.expect("scan")),
        [record.cid.clone()]
    );
    let again = Store::open_named(&name).await.expect("open again");
    assert!(again.names_built(), "named on opening");
    assert_eq!(
        cids(again.objects_named(&record.sha256).await.expect("index")),
        [record.cid.clone()]
    );
    assert_eq!(cas::resolve(&again, &record.sha256).await.expect("resolve").cid, record.cid);
    // A record removed, or collected, takes its name with it.
    assert_eq!(again.name_keys().await.expect("names"), 1);
    again.delete_object(&record.cid).await.expect("delete");
    assert_eq!(again.name_keys().await.expect("names"), 0);
    let kept = cas::add(&again, disot_core::unixfs::Layout::default(), [&b"collected"[..]])
        .await
        .expect("add");
    again
        .update_object(&kept.cid, |r| r.map(|r| cas::ObjectRecord { pinned: false, ..r }))
        .await
        .expect("unpin");
    cas::collect_garbage(&again).await.expect("gc");
    assert_eq!(again.name_keys().await.expect("names"), 0);
}

/// A page keeps several pieces of one upload in flight; each waits for the permission check
/// and for storage, in whatever order those finish. The object must still be the pieces in
/// the order they were sent.
#[wasm_bindgen_test]
async fn pieces_in_flight_are_taken_in_the_order_they_were_sent() {
    use disot_core::permissions::Permission;
    use wasm_bindgen::JsValue;
    use wasm_bindgen_futures::JsFuture;

    let origin = "https://pieces.example";
    let store = Store::open().await.expect("open the extension's database");
    let mut grants = store.grants().await.expect("grants");
    grants.grant(origin, &[Permission::Cas], 1);
    store.set_grants(&grants).await.expect("grant");
    let frame = disot_wasm::open_frame(None, None, None).await.expect("frame");
    let answer = |v: JsValue| -> serde_json::Value {
        let text = v.as_string().expect("a JSON answer");
        let reply: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert!(reply.get("error").is_none(), "{text}");
        reply["result"].clone()
    };
    let started =
        JsFuture::from(frame.request(origin.into(), r#"{"method":"cas_put_start"}"#.into()))
            .await
            .expect("start");
    let handle = answer(started)["handle"].as_f64().expect("handle");
    // Twelve pieces of 100 KiB, none alike, all sent before any is answered.
    let pieces: Vec<Vec<u8>> = (0..12u32)
        .map(|p| {
            (0..100 * 1024u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 ^ p as u8)
                .collect()
        })
        .collect();
    let sent: Vec<_> = pieces
        .iter()
        .map(|p| {
            JsFuture::from(frame.put_chunk(
                origin.into(),
                handle,
                js_sys::Uint8Array::from(&p[..]).into(),
            ))
        })
        .collect();
    for accepted in futures::future::join_all(sent).await {
        answer(accepted.expect("piece"));
    }
    let body = format!(r#"{{"method":"cas_put_finish","params":{{"handle":{handle}}}}}"#);
    let finished =
        answer(JsFuture::from(frame.request(origin.into(), body)).await.expect("finish"));
    let (_, expected) = disot_core::unixfs::import(&pieces.concat(), Default::default());
    assert_eq!(finished["cid"], expected.cid.to_string());
    assert_eq!(finished["sha256"], expected.sha256);
}

/// What a failed or abandoned upload wrote goes, but not a block another object reaches, not
/// even an object committed while the removal runs, nor a block a fetch noted as its own.
#[wasm_bindgen_test]
async fn an_abandoned_upload_removes_only_its_own_blocks() {
    use disot_core::store::{self as cas, BlockStore as _, MemoryStore};
    use disot_core::unixfs::{Importer, Layout, Preset};
    use std::collections::BTreeSet;

    let layout: Layout = Preset::Kubo.layout().with_chunk_size(1000).expect("layout");
    let content = |seed: u8, len: usize| -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    };
    let (a, b, c) = (content(1, 3000), content(2, 4000), content(3, 2000));
    let store =
        Store::open_named(&format!("disot-abandoned-{}", js_sys::Date::now())).await.expect("open");
    let kept = cas::add(&store, layout, [[a.clone(), b.clone()].concat()]).await.expect("kept");
    // Another object, all of whose blocks are written, its record not yet: it shares its first
    // leaves (c's) with the upload that fails.
    let late_bytes = [c.clone(), content(4, 3000)].concat();
    let memory = MemoryStore::new();
    let late = cas::add(&memory, layout, [&late_bytes]).await.expect("late");
    let late_blocks = memory.block_cids().await.expect("late's blocks");
    for cid in &late_blocks {
        let data = memory.get(cid).await.expect("read").expect("held");
        store.put_imported(&[disot_core::unixfs::Block { cid: *cid, data }]).await.expect("put");
    }
    // A block a running fetch stored and noted as its own (its record not written yet).
    let fetched_bytes = content(5, 1000);
    let fetched = Importer::new(layout).push(&fetched_bytes).remove(0);
    let value = js_sys::Uint8Array::from(&fetched.data[..]).into();
    store
        .put_fetched_blocks(&[(fetched.cid, value)], "https://fetching.example")
        .await
        .expect("fetched");

    let before: BTreeSet<_> = store.block_cids().await.expect("list").into_iter().collect();
    // The upload that fails: a's leaves (shared with `kept`), c's (shared with `late`), the
    // fetched block's bytes, and its own.
    let failed = Importer::new(layout).push(&[a, c, fetched_bytes, content(6, 2000)].concat());
    store.put_imported(&failed).await.expect("put");
    let written: Vec<_> = failed.iter().map(|b| b.cid).collect();

    // `late` is committed while the removal runs.
    let record = late.clone();
    let (removed, committed) = futures::join!(
        store.remove_unreferenced(&written),
        store.commit_object(&late.cid, &late_blocks, move |_| Some(record)),
    );
    let removed = removed.expect("remove");
    match committed {
        Ok(_) => {
            let cid = late.cid.parse().expect("cid");
            let mut read = Vec::new();
            cas::cat(&store, &cid, None, |b| {
                read.extend_from_slice(b);
                Ok(())
            })
            .await
            .expect("an object committed while the removal ran reads whole");
            assert_eq!(read, late_bytes);
        }
        // (Or it finds a block gone at its commit, says so, and is not there; its uploader
        // puts it again, as after any failed upload.)
        Err(e) => {
            assert!(matches!(e, cas::Error::Missing(_)), "{e}");
            assert!(store.object(&late.cid).await.expect("record").is_none());
            for cid in &late_blocks {
                let data = memory.get(cid).await.expect("read").expect("held");
                store
                    .put_imported(&[disot_core::unixfs::Block { cid: *cid, data }])
                    .await
                    .expect("put");
            }
            let record = late.clone();
            store
                .commit_object(&late.cid, &late_blocks, move |_| Some(record))
                .await
                .expect("again");
        }
    }
    // Tried again until the records stand still, as an upload's clean-up does.
    let removed = match removed {
        Some(n) => n,
        None => store.remove_unreferenced(&written).await.expect("again").expect("unchanged"),
    };
    let after: BTreeSet<_> = store.block_cids().await.expect("list").into_iter().collect();
    assert_eq!(after, before, "exactly the failed upload's own blocks went ({removed})");
    assert!(removed > 0);
    let cid = kept.cid.parse().expect("cid");
    let mut read = 0;
    cas::cat(&store, &cid, None, |b| {
        read += b.len();
        Ok(())
    })
    .await
    .expect("kept intact");
    assert_eq!(read, 7000);
}
