//! Word between the extension's contexts that an object was just stored, and whether it is
//! served to peers (public, or put to be served by trust). A page's put is usually stored by
//! its content frame, a context of its own, and the node would otherwise learn of the object
//! only when it next reads the store: for a served object on the first want for it (one more
//! read while the asker waits, and for an object served by trust a read of every record: a
//! refusal that takes longer than any other) or on its next round of provider records; for any
//! object, when a page asks for it by CID (the node asks the peers at once for what it does not
//! know it holds, while the store is read).
//!
//! Only a hint: the node reads the object's record before it serves or announces anything, and
//! without the hint the same happens a little later. Only the extension's own contexts can
//! post on the channel (it is scoped to the extension's origin).

use cid::Cid;
use wasm_bindgen::prelude::*;
use web_sys::{BroadcastChannel, MessageEvent};

const CHANNEL: &str = "disot-objects";
/// Longer than any CID this store names objects by.
const MAX_NOTICE: usize = 256;
/// Pages' origins are no longer (a page's requests are refused beyond it).
const MAX_ORIGIN: usize = disot_core::permissions::MAX_ORIGIN_LEN;

/// Tell the other contexts that object `cid` was stored for `origin`, and whether it is
/// `served` to peers.
pub(crate) fn stored(cid: &str, origin: &str, served: bool) {
    let notice = js_sys::Object::new();
    let set = |key: &str, value: JsValue| js_sys::Reflect::set(&notice, &key.into(), &value);
    let made = set("cid", cid.into())
        .and_then(|_| set("origin", origin.into()))
        .and_then(|_| set("served", served.into()));
    let posted = made.and_then(|_| {
        let channel = BroadcastChannel::new(CHANNEL)?;
        let posted = channel.post_message(&notice);
        // Messages already posted are still delivered.
        channel.close();
        posted
    });
    if let Err(e) = posted {
        tracing::info!("telling the node of a stored object: {e:?}");
    }
}

/// Listens for [`stored`] notices while it lives.
pub(crate) struct Listener {
    channel: BroadcastChannel,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

impl Listener {
    /// Calls `on_stored` with the CID of each notice, the origin it was stored for and whether
    /// it is served (malformed notices are ignored).
    pub(crate) fn new(mut on_stored: impl FnMut(Cid, &str, bool) + 'static) -> Option<Self> {
        let channel = BroadcastChannel::new(CHANNEL).ok()?;
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let data = event.data();
            let get = |key: &str| js_sys::Reflect::get(&data, &key.into()).ok();
            let Some(text) = get("cid").and_then(|v| v.as_string()) else { return };
            let Some(origin) = get("origin").and_then(|v| v.as_string()) else { return };
            let Some(served) = get("served").and_then(|v| v.as_bool()) else { return };
            if text.len() > MAX_NOTICE || origin.len() > MAX_ORIGIN {
                return;
            }
            if let Ok(cid) = text.parse::<Cid>() {
                on_stored(cid, &origin, served);
            }
        });
        channel.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        Some(Listener { channel, _on_message: on_message })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.channel.set_onmessage(None);
        self.channel.close();
    }
}
