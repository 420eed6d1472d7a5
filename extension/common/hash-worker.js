// A worker of the content frame (it starts two; see `startContentWorker` in frame.js). The
// first imports uploads: it cuts each into leaves, hashes them with the browser's SHA-256 for
// their CIDs (wasm builds the tree over them) and hashes the whole content for its `sha256:`
// name, while the frame stores what comes back. Both read ranges of content from the store,
// verifying every block, for the frame to hand on. Import messages are handled one at a time,
// in the order they came, so the pieces of an upload are taken in order; reads overlap.
import init, { ContentHash, WorkerImport, debugAbort, debugPanic, openReader } from './pkg/disot_wasm.js';
import { releaseReceived } from './memory.js';
import { isTrap, noteStack, onTrap } from './traps.js';

const MAX_UPLOADS = 64; // more than a frame has open at once (wasm/src/cas.rs)
// Content up to this size is kept and named by one digest of the browser's SHA-256 (four times
// as fast as wasm's), started as soon as its last piece is in; beyond it, it is hashed piece
// by piece in wasm, and so is content the page says is larger from the start. One upload at a
// time is kept. Its buffer is allocated at this size, but memory is only taken as it is written.
const MAX_KEPT = 64 * 1024 * 1024;
let keeping = null; // the handle of the upload being kept
const imports = new Map(); // upload handle → its import (see `newUpload`)
let ready = null;
let reader = null; // its own connection to the store, opened at the first read
let importing = Promise.resolve(); // the import message being handled: the next waits for it
let CHUNK = 0; // every leaf but the last is this long

// A panic leaves this worker's wasm unusable: the frame is told, and stops as if its own had
// (see `disotCrashed` in frame.js).
let crashed = false;
globalThis.disotCrashed = (message) => {
  // Once: the trap that follows a panic comes here too.
  if (crashed) return;
  crashed = true;
  self.postMessage({ crashed: String(message) });
};
// So does a trap without a panic (running out of memory).
const trapped = onTrap((message) => globalThis.disotCrashed(message));

const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));

// Content hashed in wasm goes in steps of at most this: wasm memory grows to hold the largest
// step, and never shrinks.
const HASH_STEP = 1024 * 1024;
function hashInSteps(hash, bytes) {
  for (let at = 0; at < bytes.length; at += HASH_STEP) hash.push(bytes.subarray(at, at + HASH_STEP));
}

/** Give a buffer's memory back now, not at the next garbage collection. */
const release = (bytes) => bytes.buffer.transfer?.(0);

/**
 * An upload's import: its tree, the leaf being filled, and its whole content, kept (if no other
 * upload is, and it is not `total` bytes, more than can be kept) or else hashed as it comes.
 */
function newUpload(handle, total) {
  const keep = keeping === null && !(total > MAX_KEPT);
  if (keep) keeping = handle;
  return {
    tree: new WorkerImport(),
    partial: null,
    filled: 0,
    kept: keep ? { bytes: new Uint8Array(MAX_KEPT), size: 0 } : null,
    hash: keep ? null : new ContentHash(),
    early: null, // the digest of the kept content, started when told its last piece is in
  };
}

/** Let go of upload `handle`'s import (after its finish, or when it will not finish). */
function drop(handle, up) {
  imports.delete(handle);
  if (keeping === handle) keeping = null;
  if (up.kept) release(up.kept.bytes); // its digest, if one was started, has its own copy
  up.tree?.free(); // null once `finish` has used it up
  up.hash?.free();
}

/** The next piece of an upload's whole content, for its `sha256:` name. */
function addContent(up, bytes) {
  up.early = null; // more came after the "last" piece
  if (up.kept && up.kept.size + bytes.length <= MAX_KEPT) {
    up.kept.bytes.set(bytes, up.kept.size);
    up.kept.size += bytes.length;
    return;
  }
  if (up.kept) {
    // Too big to keep: hashed piece by piece from here on.
    up.hash = new ContentHash();
    hashInSteps(up.hash, up.kept.bytes.subarray(0, up.kept.size));
    release(up.kept.bytes);
    up.kept = null;
    keeping = null;
  }
  hashInSteps(up.hash, bytes);
}

/** The SHA-256 of all of an upload's content. */
function contentDigest(up) {
  if (up.kept) return up.early ?? sha256(up.kept.bytes.subarray(0, up.kept.size));
  const digest = up.hash.finish(); // uses the hasher up
  up.hash = null;
  return digest;
}

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
      // The frame stores a leaf that is the whole piece as the piece. Any other is copied: a
      // leaf stored from part of a buffer would store all of it.
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

/** `[cid, bytes | null]` pairs as replies carry them, and the buffers they hand over. */
function reply(pairs, transfer) {
  for (const [, bytes] of pairs) if (bytes) transfer.push(bytes.buffer);
  return pairs;
}

/** An import message: `[answer, buffers to hand over]`. */
async function handle(msg) {
  const transfer = [];
  switch (msg.op) {
    case 'push': {
      let up = imports.get(msg.handle);
      if (!up) {
        if (imports.size >= MAX_UPLOADS) throw new Error(`more than ${MAX_UPLOADS} uploads being imported`);
        up = newUpload(msg.handle, msg.total);
        imports.set(msg.handle, up);
      }
      // A Blob's bytes (read since the message came), or the bytes sent.
      const bytes = msg.blob ? new Uint8Array(await msg.reading) : new Uint8Array(msg.buffer, msg.offset, msg.length);
      addContent(up, bytes);
      const blocks = reply(await addLeaves(up, cut(up, bytes)), transfer);
      if (msg.blob) {
        // Read only to be hashed: the frame stores the Blob itself, and any other leaf is a copy.
        releaseReceived(bytes.buffer);
        return [{ blocks }, transfer];
      }
      // The piece goes back: the frame stores it as the block it is, when it is one.
      transfer.push(msg.buffer);
      return [{ blocks, buffer: msg.buffer }, transfer];
    }
    case 'last': {
      // The page says no more pieces come: the kept content's digest starts now, while the
      // frame stores the last pieces. (If more come after all, it is dropped.)
      const up = imports.get(msg.handle);
      if (up?.kept) {
        up.early = sha256(up.kept.bytes.subarray(0, up.kept.size)); // the bytes are copied now
        up.early.catch(() => {}); // seen at `finish`
      }
      return [null, transfer];
    }
    case 'finish': {
      const up = imports.get(msg.handle) ?? newUpload(msg.handle); // nothing pushed: empty content
      try {
        // The last, short leaf; or the one empty leaf of empty content.
        const last = up.filled || !up.tree.leaves() ? [{ bytes: (up.partial ?? new Uint8Array(0)).slice(0, up.filled), piece: false }] : [];
        const leaves = await addLeaves(up, last);
        const digest = await contentDigest(up);
        const tree = up.tree;
        up.tree = null;
        const [branches, cid, sha256, size] = tree.finish(digest); // uses the tree up
        return [{ blocks: reply([...leaves, ...branches], transfer), cid, sha256, size }, transfer];
      } finally {
        drop(msg.handle, up);
      }
    }
    case 'forget': {
      const up = imports.get(msg.handle);
      if (up) drop(msg.handle, up);
      return [null, transfer];
    }
  }
  throw new Error(`unknown request ${msg.op}`);
}

/** The buffers of those of `parts` that are bytes, to hand over with them. */
const buffersOf = (parts) => parts.filter((p) => !(p instanceof Blob)).map((p) => p.buffer);

self.onmessage = async ({ data: msg }) => {
  try {
    if (msg.op === 'init') {
      ready ??= init({ module_or_path: msg.module }).then((exports) => {
        noteStack(exports);
        CHUNK = WorkerImport.chunkSize();
      });
      await ready;
      self.postMessage({ id: msg.id });
      return;
    }
    // Before init has finished, later messages wait for it, in order.
    if (!ready) throw new Error('not started');
    await ready;
    if (msg.op === 'crash') (msg.abort ? debugAbort : debugPanic)(); // asked for by a test build's frame
    if (msg.op === 'read') {
      // A failed open is tried again at the next read, not kept.
      reader ??= openReader(releaseReceived).catch((e) => {
        reader = null;
        throw e;
      });
      // Parts, each a Blob (checked here, its bytes read by whoever reads it next) or bytes on
      // a buffer of its own, handed over as they are (no copy stays here).
      const got = await (await reader).read(msg.root, msg.start, msg.end, msg.blobs === true);
      if (typeof got === 'string') self.postMessage({ id: msg.id, body: got });
      else self.postMessage({ id: msg.id, parts: got }, buffersOf(got));
      return;
    }
    // A Blob is read at once, while earlier pieces are handled.
    if (msg.blob) {
      msg.reading = msg.blob.arrayBuffer();
      msg.reading.catch(() => {}); // seen when the piece's turn comes
    }
    // Import messages one at a time, in order, though each may wait for the browser's hashing.
    const handled = importing.then(() => handle(msg));
    importing = handled.catch(() => {});
    const [answer, transfer] = await handled;
    if (answer && msg.id !== undefined) self.postMessage({ id: msg.id, ...answer }, transfer);
  } catch (e) {
    if (isTrap(e)) {
      trapped(e);
      return;
    }
    if (msg?.id !== undefined) self.postMessage({ id: msg.id, error: String(e?.message ?? e) });
  }
};
