// A worker of the content frame (it starts two): imports uploads (cuts them into blocks,
// hashes every block for its CID and, unless the other worker does it, the whole content for
// its `sha256:` name) while the frame stores what comes back, and reads ranges of content from
// the store, verifying every block, for the frame to hand on (see `startContentWorker` in
// frame.js). Import messages are handled one at a time, in the order they came, so the pieces
// of an upload are taken in order; reads overlap.
import init, { ContentHash, WorkerImport, openReader } from './pkg/disot_wasm.js';

const MAX_UPLOADS = 64; // more than a frame has open at once (wasm/src/cas.rs)
const imports = new Map(); // upload handle → WorkerImport
const hashes = new Map(); // upload handle → ContentHash, when another worker imports it
let ready = null;
let reader = null; // its own connection to the store, opened at the first read

/** `[cid, bytes | null]` pairs as replies carry them, and the buffers they hand over. */
function reply(pairs, transfer) {
  for (const [, bytes] of pairs) if (bytes) transfer.push(bytes.buffer);
  return pairs;
}

function handle(msg) {
  const transfer = [];
  switch (msg.op) {
    case 'push': {
      let imp = imports.get(msg.handle);
      if (!imp) {
        if (imports.size >= MAX_UPLOADS) throw new Error(`more than ${MAX_UPLOADS} uploads being imported`);
        // With `split`, another worker hashes the whole content (`hash` below).
        imp = msg.split ? WorkerImport.blocksOnly() : new WorkerImport();
        imports.set(msg.handle, imp);
      }
      const blocks = reply(imp.push(new Uint8Array(msg.buffer, msg.offset, msg.length)), transfer);
      // The piece goes back: the frame stores it as the block it is, when it is one.
      transfer.push(msg.buffer);
      return [{ blocks, buffer: msg.buffer }, transfer];
    }
    case 'finish': {
      // Nothing pushed: empty content.
      const imp = imports.get(msg.handle) ?? (msg.digest ? WorkerImport.blocksOnly() : new WorkerImport());
      imports.delete(msg.handle);
      const [blocks, cid, sha256, size] = imp.finish(msg.digest);
      return [{ blocks: reply(blocks, transfer), cid, sha256, size }, transfer];
    }
    case 'hash': {
      // A piece that cannot be hashed marks the upload (null), and its digest is refused, so
      // no object is ever named by a hash of part of its content.
      let hash = hashes.get(msg.handle);
      if (hash === undefined) {
        hash = hashes.size >= MAX_UPLOADS ? null : new ContentHash();
        hashes.set(msg.handle, hash);
      }
      try {
        hash?.push(new Uint8Array(msg.buffer, msg.offset, msg.length));
      } catch (e) {
        hashes.set(msg.handle, null);
        throw e;
      }
      // The buffer goes back, for the next piece's copy.
      transfer.push(msg.buffer);
      return [{ buffer: msg.buffer }, transfer];
    }
    case 'digest': {
      const hash = hashes.get(msg.handle);
      hashes.delete(msg.handle);
      if (hash === null) throw new Error(`more than ${MAX_UPLOADS} uploads were being hashed`);
      return [{ digest: (hash ?? new ContentHash()).finish() }, transfer]; // none: empty content
    }
    case 'forget':
      imports.get(msg.handle)?.free();
      imports.delete(msg.handle);
      hashes.get(msg.handle)?.free();
      hashes.delete(msg.handle);
      return [null, transfer];
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
    if (msg.op === 'read') {
      // A failed open is tried again at the next read, not kept.
      reader ??= openReader().catch((e) => {
        reader = null;
        throw e;
      });
      // Parts, each on a buffer of its own, handed over as they are (no copy stays here).
      const got = await (await reader).read(msg.root, msg.start, msg.end);
      if (typeof got === 'string') self.postMessage({ id: msg.id, body: got });
      else self.postMessage({ id: msg.id, parts: got }, got.map((p) => p.buffer));
      return;
    }
    const [answer, transfer] = handle(msg);
    if (answer && msg.id !== undefined) self.postMessage({ id: msg.id, ...answer }, transfer);
  } catch (e) {
    if (msg?.id !== undefined) self.postMessage({ id: msg.id, error: String(e?.message ?? e) });
  }
};
