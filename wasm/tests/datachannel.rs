//! What the browser node takes from a peer's data-channel message, in a real headless browser
//! (`wasm-bindgen-test`; run by scripts/test.sh in Chromium and Firefox).
#![cfg(target_arch = "wasm32")]

use disot_core::webrtc::MAX_MESSAGE;
use disot_wasm::webrtc::message_bytes;
use wasm_bindgen::JsValue;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn a_binary_message_is_taken_as_its_bytes() {
    let buf = js_sys::Uint8Array::from(&[1u8, 2, 3][..]).buffer();
    assert_eq!(message_bytes(&buf.into()), Ok(vec![1, 2, 3]));
    let largest = js_sys::ArrayBuffer::new(MAX_MESSAGE as u32);
    assert_eq!(message_bytes(&largest.into()).map(|b| b.len()), Ok(MAX_MESSAGE));
}

#[wasm_bindgen_test]
fn a_text_message_is_refused_not_read_as_a_length() {
    // `new Uint8Array("100000000")` would be 100 MB of zeros.
    let e = message_bytes(&JsValue::from_str("100000000")).expect_err("text");
    assert!(e.contains("not binary"), "{e}");
    let e = message_bytes(&js_sys::Uint8Array::new_with_length(4).into()).expect_err("a view");
    assert!(e.contains("not binary"), "{e}");
}

#[wasm_bindgen_test]
fn an_oversized_message_is_refused_before_it_is_copied() {
    let big = js_sys::ArrayBuffer::new(MAX_MESSAGE as u32 + 1);
    let e = message_bytes(&big.into()).expect_err("too large");
    assert!(e.contains(&format!("{} bytes", MAX_MESSAGE + 1)), "{e}");
}
