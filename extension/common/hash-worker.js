// A worker of the content frame (it starts two): imports uploads (cuts them into leaves and
// hashes each with the browser's SHA-256 for its CID; wasm builds the tree over them) and,
// unless the other worker does it, hashes the whole content for its `sha256:` name, while the
// frame stores what comes back; and reads ranges of content from the store, verifying every
// block, for the frame to hand on (see `startContentWorker` in frame.js). Import messages are
// handled one at a time, in the order they came, so the pieces of an upload are taken in
// order; reads overlap.
import init, { ContentHash, WorkerImport, openReader } from './pkg/disot_wasm.js';

const MAX_UPLOADS = 64; // more than a frame has open at once (wasm/src/cas.rs)
// Content up to this size is kept and hashed whole, at the end, by the browser's SHA-256
// (four times as fast as wasm's and, in Firefox, on another thread); beyond it, piece by piece
// in wasm. One upload at a time is kept. The buffer is allocated at its full size, but memory
// is only taken as it is written.
const MAX_KEPT = 64 * 1024 * 1024;
let kept = null; // {handle, bytes, size}: the upload being kept for hashing whole
const imports = new Map(); // upload handle → {tree, partial, filled, hash}
const hashes = new Map(); // upload handle → ContentHash, when another worker imports it
let ready = null;
let reader = null; // its own connection to the store, opened at the first read
let importing = Promise.resolve(); // the import message being handled: the next waits for it
let CHUNK = 0; // every leaf but the last is this long

const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));

/**
 * Leaves in order, hashed (several at once: Firefox hashes on other threads), into the upload's
 * tree: the `[cid, bytes | null]` pairs of the leaves (`null`: the leaf is the whole piece)
 * and of the branches they completed.
 */
async function addLeaves(up, leaves) {
  const digests = await Promise.all(leaves.map(({ bytes }) => sha256(bytes)));
  const blocks = [];
  leaves.forEach(({ bytes, piece }, i) => {
    const [cid, branches] = up.tree.pushLeaf(digests[i], bytes.length);
    blocks.push([cid, piece ? null : bytes], ...branches);
  });
  return blocks;
}

/** The leaves a piece completes: whole chunks of it as they are, the rest through `partial`. */
function cut(up, bytes) {
  const leaves = [];
  let at = 0;
  while (at < bytes.length) {
    if (up.filled === 0 && bytes.length - at >= CHUNK) {
      // The frame stores a leaf that is the whole piece from the piece's buffer. Any other
      // is copied: a leaf stored from part of a buffer would store all of it.
      const piece = at === 0 && bytes.length === CHUNK;
      const leaf = bytes.subarray(at, at + CHUNK);
      leaves.push({ bytes: piece ? leaf : leaf.slice(), piece });
      at += CHUNK;
      continue;
    }
    up.partial ??= new Uint8Array(CHUNK);
    const take = Math.min(CHUNK - up.filled, bytes.length - at);
    up.partial.set(bytes.subarray(at, at + take), up.filled);
    up.filled += take;
    at += take;
    if (up.filled === CHUNK) {
      leaves.push({ bytes: up.partial, piece: false });
      up.partial = null;
      up.filled = 0;
    }
  }
  return leaves;
}

/** An upload's import: its tree, the leaf being filled, and whether its whole content is hashed here. */
const newUpload = (whole) => ({ tree: new WorkerImport(), partial: null, filled: 0, whole });

/** `[cid, bytes | null]` pairs as replies carry them, and the buffers they hand over. */
function reply(pairs, transfer) {
  for (const [, bytes] of pairs) if (bytes) transfer.push(bytes.buffer);
  return pairs;
}

function contentHash(handle) {
  let hash = hashes.get(handle);
  if (hash === undefined) {
    hash = hashes.size >= MAX_UPLOADS ? null : new ContentHash();
    hashes.set(handle, hash);
  }
  return hash;
}

async function handle(msg) {
  const transfer = [];
  switch (msg.op) {
    case 'push': {
      let up = imports.get(msg.handle);
      if (!up) {
        if (imports.size >= MAX_UPLOADS) throw new Error(`more than ${MAX_UPLOADS} uploads being imported`);
        // With `split`, another worker hashes the whole content (`hash` below).
        up = newUpload(!msg.split);
        imports.set(msg.handle, up);
      }
      const bytes = new Uint8Array(msg.buffer, msg.offset, msg.length);
      if (up.whole) hash(msg.handle, bytes);
      const blocks = reply(await addLeaves(up, cut(up, bytes)), transfer);
      // The piece goes back: the frame stores it as the block it is, when it is one.
      transfer.push(msg.buffer);
      return [{ blocks, buffer: msg.buffer }, transfer];
    }
    case 'finish': {
      // Nothing pushed: empty content.
      const up = imports.get(msg.handle) ?? newUpload(false);
      imports.delete(msg.handle);
      let leaves, digest;
      try {
        // The last, short leaf; or the one empty leaf of empty content.
        const last = up.filled || !up.tree.leaves() ? [{ bytes: (up.partial ?? new Uint8Array(0)).slice(0, up.filled), piece: false }] : [];
        leaves = await addLeaves(up, last);
        digest = msg.digest ?? digestOf(msg.handle);
      } catch (e) {
        up.tree.free();
        throw e;
      }
      const [branches, cid, sha256, size] = up.tree.finish(digest); // uses the tree up
      return [{ blocks: reply([...leaves, ...branches], transfer), cid, sha256, size }, transfer];
    }
    case 'hash': {
      const bytes = new Uint8Array(msg.buffer, msg.offset, msg.length);
      if (kept === null && !hashes.has(msg.handle)) kept = { handle: msg.handle, bytes: new Uint8Array(MAX_KEPT), size: 0 };
      if (kept?.handle === msg.handle) {
        if (kept.size + bytes.length <= MAX_KEPT) {
          kept.bytes.set(bytes, kept.size);
          kept.size += bytes.length;
        } else {
          // Too big to keep: hashed piece by piece from here on.
          const { size } = kept;
          hash(msg.handle, kept.bytes.subarray(0, size));
          kept = null;
          hash(msg.handle, bytes);
        }
      } else {
        hash(msg.handle, bytes);
      }
      // The buffer goes back, for the next piece's copy.
      transfer.push(msg.buffer);
      return [{ buffer: msg.buffer }, transfer];
    }
    case 'digest': {
      if (kept?.handle === msg.handle) {
        const { bytes, size } = kept;
        kept = null;
        hashes.delete(msg.handle);
        return [{ digest: await sha256(bytes.subarray(0, size)) }, transfer];
      }
      return [{ digest: digestOf(msg.handle) }, transfer];
    }
    case 'forget':
      if (kept?.handle === msg.handle) kept = null;
      imports.get(msg.handle)?.tree.free();
      imports.delete(msg.handle);
      hashes.get(msg.handle)?.free();
      hashes.delete(msg.handle);
      return [null, transfer];
  }
  throw new Error(`unknown request ${msg.op}`);
}

/** The next piece of the whole content of upload `handle`, into its `sha256:` name. */
function hash(handle, bytes) {
  // A piece that cannot be hashed marks the upload (null), and its digest is refused, so no
  // object is ever named by a hash of part of its content.
  const h = contentHash(handle);
  try {
    h?.push(bytes);
  } catch (e) {
    hashes.set(handle, null);
    throw e;
  }
}

/** The SHA-256 of all of upload `handle` (none pushed: empty content). */
function digestOf(handle) {
  const h = hashes.get(handle);
  hashes.delete(handle);
  if (h === null) throw new Error(`more than ${MAX_UPLOADS} uploads were being hashed`);
  return (h ?? new ContentHash()).finish();
}

self.onmessage = async ({ data: msg }) => {
  try {
    if (msg.op === 'init') {
      ready ??= init({ module_or_path: msg.module }).then(() => { CHUNK = WorkerImport.chunkSize(); });
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
    // Import messages one at a time, in order, though each may wait for the browser's hashing.
    const handled = importing.then(() => handle(msg));
    importing = handled.catch(() => {});
    const [answer, transfer] = await handled;
    if (answer && msg.id !== undefined) self.postMessage({ id: msg.id, ...answer }, transfer);
  } catch (e) {
    if (msg?.id !== undefined) self.postMessage({ id: msg.id, error: String(e?.message ?? e) });
  }
};
