//! Word between the extension's contexts that an object was just made public, or put to be
//! served by trust. A page's put is usually stored by its content frame, a context of its own,
//! and the node would otherwise learn of the object only when it next reads the store: on the
//! first want for it (one more read while the asker waits, and for an object served by trust a
//! read of every record: a refusal that takes longer than any other) or on its next round of
//! provider records.
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

/// Tell the other contexts that object `cid` is public now, or served by trust.
pub(crate) fn published(cid: &str) {
    match BroadcastChannel::new(CHANNEL) {
        Ok(channel) => {
            if let Err(e) = channel.post_message(&JsValue::from_str(cid)) {
                tracing::info!("telling the node of a public object: {e:?}");
            }
            // Messages already posted are still delivered.
            channel.close();
        }
        Err(e) => tracing::info!("telling the node of a public object: {e:?}"),
    }
}

/// Listens for [`published`] notices while it lives.
pub(crate) struct Listener {
    channel: BroadcastChannel,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
}

impl Listener {
    /// Calls `on_published` with the CID of each notice (malformed ones are ignored).
    pub(crate) fn new(mut on_published: impl FnMut(Cid) + 'static) -> Option<Self> {
        let channel = BroadcastChannel::new(CHANNEL).ok()?;
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let Some(text) = event.data().as_string().filter(|t| t.len() <= MAX_NOTICE) else {
                return;
            };
            if let Ok(cid) = text.parse::<Cid>() {
                on_published(cid);
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
