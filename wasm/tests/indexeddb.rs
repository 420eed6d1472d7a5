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
