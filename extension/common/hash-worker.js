// The content frame's second thread: SHA-256 of each upload's whole content (its `sha256:`
// name), fed piece by piece in order while the frame cuts and stores the blocks (see
// `startHashers` in frame.js). Messages are handled one at a time, in the order they came.
import init, { ContentDigest } from './pkg/disot_wasm.js';

const MAX_UPLOADS = 64; // more than a frame has open at once (wasm/src/cas.rs)
const digests = new Map(); // upload handle → ContentDigest
let ready = null;

function handle(msg) {
  switch (msg.op) {
    case 'feed': {
      let d = digests.get(msg.handle);
      if (!d) {
        if (digests.size >= MAX_UPLOADS) throw new Error(`more than ${MAX_UPLOADS} uploads being hashed`);
        d = new ContentDigest();
        digests.set(msg.handle, d);
      }
      d.update(new Uint8Array(msg.buffer, msg.offset, msg.length));
      return {};
    }
    case 'digest': {
      const d = digests.get(msg.handle) ?? new ContentDigest(); // nothing fed: empty content
      digests.delete(msg.handle);
      return { digest: d.finish() };
    }
    case 'forget':
      digests.get(msg.handle)?.free();
      digests.delete(msg.handle);
      return null;
  }
  throw new Error(`unknown request ${msg.op}`);
}

self.onmessage = async ({ data: msg }) => {
  try {
    if (msg.op === 'init') {
      ready ??= init({ module_or_path: msg.module });
      await ready;
      self.postMessage({ id: msg.id });
      return;
    }
    // Before init has finished, later messages wait for it, in order.
    if (!ready) throw new Error('not started');
    await ready;
    const reply = handle(msg);
    if (reply && msg.id !== undefined) self.postMessage({ id: msg.id, ...reply });
  } catch (e) {
    if (msg?.id !== undefined) self.postMessage({ id: msg.id, error: String(e?.message ?? e) });
  }
};
