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
pub mod webrtc;

pub use frame::{open_frame, Frame, WorkerImport};
pub use node::{start, Node};

use std::sync::atomic::{AtomicBool, Ordering};

/// Logging is set up by whoever starts first in this context: the node (at the level of its
/// settings) or a content frame (warnings).
#[wasm_bindgen::prelude::wasm_bindgen(start)]
fn init() {
    std::panic::set_hook(Box::new(|info| {
        // Only the first: the module is dead after it (or after a trap), and tasks queued
        // behind the one that stopped may panic in turn (finding its state still borrowed),
        // which says nothing.
        if STOPPED.swap(true, Ordering::Relaxed) {
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

/// Stop with a trap and no panic, as running out of memory does. Called only by a test build's
/// content frame or worker, as [`debug_panic`].
#[wasm_bindgen::prelude::wasm_bindgen(js_name = debugAbort)]
pub fn debug_abort() {
    std::process::abort();
}

/// Whether the module stopped, by a panic or a trap.
static STOPPED: AtomicBool = AtomicBool::new(false);

/// The host caught a trap that no panic announced (running out of memory, most likely): the
/// module is stopped, and panics after it (its tasks finding their state still borrowed) are
/// not reported. Returns the saved document that was loading, if one was (nothing unwound, so
/// its name is still set; see [`disot_core::blame`]). A peer being served is not named: a
/// trap like running out of memory says more about everything the node holds than about the
/// message it happened on, and that peer, perhaps the user's own bootstrap node, would be cut
/// off for it.
#[wasm_bindgen::prelude::wasm_bindgen(js_name = stoppedByTrap)]
pub fn stopped_by_trap() -> Option<String> {
    STOPPED.store(true, Ordering::Relaxed);
    disot_core::blame::current().filter(|who| who.starts_with(disot_core::sync::DOCUMENT_BLAME))
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
