//! The Disot Peer browser node, compiled to WebAssembly.
//!
//! It runs in exactly one place per browser profile: Chrome's offscreen document or Firefox's
//! background page (both are windows, which the WebRTC transport needs). The extension's JS
//! glue only forwards messages; this crate owns the keys, IndexedDB and the libp2p swarm.
//!
//! - [`store`]: IndexedDB: the identity key and the settings.
//! - [`webrtc`]: browser-to-browser WebRTC (`/webrtc`) as a libp2p transport.
//! - [`transport`]: WebSocket and WebRTC-direct, with a workaround for missed wake-ups.
//! - [`node`]: the swarm, its event loop and the request router ([`node::Node`]).
//! - [`auth`]: the identity exchange on every connection (signed, challenge-bound profiles).
//! - [`exchange`]: Bitswap with other peers, and fetching objects from them.
//! - [`frame`]: the binary path for a page's content requests ([`frame::Frame`]).
//! - [`notice`]: word from other contexts that an object was just made public.
#![cfg(target_arch = "wasm32")]

mod auth;
mod bench;
mod cas;
mod exchange;
mod frame;
mod node;
mod notice;
mod retry;
pub mod store;
mod sync;
mod transport;
mod trustnet;
mod webrtc;

pub use frame::{open_frame, Frame, WorkerImport};
pub use node::{start, Node};

/// Logging is set up by whoever starts first in this context: the node (at the level of its
/// settings) or a content frame (warnings).
#[wasm_bindgen::prelude::wasm_bindgen(start)]
fn init() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static PANICKED: AtomicBool = AtomicBool::new(false);
    std::panic::set_hook(Box::new(|info| {
        // Only the first: the module is dead after it, and tasks queued behind the one that
        // panicked may panic in turn (finding its state still borrowed), which says nothing.
        if PANICKED.swap(true, Ordering::Relaxed) {
            return;
        }
        console_error_panic_hook::hook(info);
        crashed(&info.to_string(), disot_core::blame::current());
    }));
}

/// Panic, as a bug would. In every build, but called only by a content frame or worker whose
/// `config.json` has `testHooks` (test builds), when a page asks for it (see frame.js).
#[wasm_bindgen::prelude::wasm_bindgen(js_name = debugPanic)]
pub fn debug_panic() {
    panic!("debug_crash: a crash a test asked for");
}

/// A panic leaves this context's module unusable (a trap, with nothing unwound): whoever hosts
/// the node hears of it through `globalThis.disotCrashed(message, blamed)`, if it set one, and
/// starts it again. `blamed`: the peer whose message was being handled, if any (see
/// [`disot_core::blame`]).
fn crashed(message: &str, blamed: Option<String>) {
    use wasm_bindgen::JsCast as _;
    let global = js_sys::global();
    let hook = js_sys::Reflect::get(&global, &"disotCrashed".into()).ok();
    if let Some(hook) = hook.and_then(|h| h.dyn_into::<js_sys::Function>().ok()) {
        let blamed = blamed.map_or(wasm_bindgen::JsValue::UNDEFINED, |b| b.into());
        let _ = hook.call2(&global, &message.into(), &blamed);
    }
}
