// The content frame: an extension page the content script hides in a web page to serve that
// page's content-store requests with binary messages over a MessagePort (see wasm/src/frame.rs).
// The origin served is the parent's, as the browser reports it; the port must come from the
// parent window itself.
import init, { debugAbort, debugPanic, openFrame } from './pkg/disot_wasm.js';
import { releaseReceived } from './memory.js';
import { isTrap, noteStack, onTrap } from './traps.js';

const api = globalThis.browser ?? globalThis.chrome;
const MAX_PORTS = 8; // pages (provider instances) one frame serves
const MAX_PENDING = 16; // requests in flight on one port
const MAX_PIECE = 4 * 1024 * 1024; // bytes in one message (the node checks again)
const ASK_TIMEOUT_MS = 60_000; // a 4 MiB piece or range takes well under a second
// Requests for the node in flight on one port, and their size: the content script's limits.
const MAX_NODE_PENDING = 256;
const MAX_NODE_BODY = 1024 * 1024;
let opening = null;
let ports = 0;
let importers = null; // the content workers, once started (else the frame imports uploads itself)
let reading = Promise.resolve(); // without workers: pieces taken in the order they came
// A piece of an upload sent as bytes → `{own, others}`: the buffer it came in, back from the
// worker, and those of the other blocks the worker made of it. Once the piece is stored, its
// own goes back to the page, to carry a later piece (see `spares` in provider.js), and the
// others are garbage, freed then where the browser can (memory.js).
const handedBack = new WeakMap();
// A panic in this frame's wasm leaves it unusable (a trap: nothing unwinds). The pages it
// serves are told at once: they fail what waits with 4900 and have the content script put a
// new frame in this one's place (provider.js, content.js).
const served = new Set();
let crashed = null;
globalThis.disotCrashed = (message) => {
  // Once: the trap that follows a panic comes here too.
  if (crashed !== null) return;
  crashed = String(message);
  for (const port of served) port.postMessage({ crashed });
};
// So does a trap without a panic (running out of memory).
const trapped = onTrap((message) => globalThis.disotCrashed(message));
let testHooks = false; // `config.json` of a test build: a page may crash the frame (see answer)

function frame() {
  opening ??= (async () => {
    const url = api.runtime.getURL('pkg/disot_wasm_bg.wasm');
    // Compiled once here and shared with the worker.
    const module = await WebAssembly.compileStreaming(fetch(url))
      .catch(async () => WebAssembly.compile(await (await fetch(url)).arrayBuffer()));
    const config = fetch(api.runtime.getURL('config.json')).then((r) => r.json()).catch(() => ({}));
    const [worker, exports, { testHooks: hooks }] = await Promise.all([startContentWorker(module), init({ module_or_path: module }), config]);
    noteStack(exports);
    testHooks = hooks === true;
    document.documentElement.dataset.hashing = worker ? 'worker' : 'frame'; // for tests
    importers = worker ?? null;
    return openFrame(worker, worker, tellNodeOfStore);
  })().catch((e) => {
    opening = null;
    throw e;
  });
  return opening;
}

/** One content worker, started: `ask` sends it a request and resolves to its answer. */
async function startWorker(module) {
  let worker;
  try {
    worker = new Worker(new URL('hash-worker.js', import.meta.url), { type: 'module' });
  } catch (e) {
    console.warn('disot: no content worker', e);
    return undefined;
  }
  const waiting = new Map(); // request id → {resolve, reject}
  let next = 0;
  let broken = null;
  const fail = (why) => {
    broken ??= new Error(`content worker: ${why}`);
    for (const w of waiting.values()) w.reject(broken);
    waiting.clear();
  };
  // A worker that does not answer fails the request after ASK_TIMEOUT_MS rather than keeping
  // it waiting for ever (a read then falls back to the frame; an upload fails and says so).
  const ask = (msg, transfer = []) => new Promise((resolve, reject) => {
    if (broken) return reject(broken);
    const id = ++next;
    const timer = setTimeout(() => {
      if (!waiting.delete(id)) return;
      reject(new Error(`content worker: no answer to ${msg.op} in ${ASK_TIMEOUT_MS / 1000} s`));
    }, ASK_TIMEOUT_MS);
    const done = (settle) => (value) => {
      clearTimeout(timer);
      settle(value);
    };
    waiting.set(id, { resolve: done(resolve), reject: done(reject) });
    worker.postMessage({ ...msg, id }, transfer);
  });
  worker.onmessage = ({ data }) => {
    if (typeof data?.crashed === 'string') {
      fail(`stopped after an error: ${data.crashed}`);
      globalThis.disotCrashed(`content worker: ${data.crashed}`);
      return;
    }
    const w = waiting.get(data?.id);
    if (!w) return;
    waiting.delete(data.id);
    if (data.error) w.reject(new Error(data.error));
    else w.resolve(data);
  };
  worker.onerror = (e) => {
    e.preventDefault?.();
    fail(e.message || 'failed');
  };
  try {
    await ask({ op: 'init', module });
  } catch (e) {
    console.warn('disot: no content worker', e);
    worker.terminate();
    return undefined;
  }
  return { ask, tell: (msg, transfer = []) => { if (!broken) worker.postMessage(msg, transfer); } };
}

/**
 * A worker that imports uploads (cuts them into blocks and hashes them) while this thread
 * stores the blocks, and reads content (every block verified) while this thread checks
 * permissions and hands the bytes on: the interfaces `wasm/src/cas.rs` calls
 * `ContentImporters` and `wasm/src/frame.rs` calls `ContentReaders`. Resolves to undefined if
 * the worker does not start (then the frame does all of it on its own thread).
 */
async function startContentWorker(module) {
  // Reads are bound by one thread's work (taking values out of IndexedDB and hashing them), so
  // there are two workers, and a range goes to the less busy. Uploads are imported by the
  // first.
  const [worker, second] = await Promise.all([startWorker(module), startWorker(module)]);
  if (!worker) return undefined;
  const readers = [worker, second].filter(Boolean).map((w) => ({ w, reading: 0 }));
  const dataset = document.documentElement.dataset; // for tests
  dataset.readers = String(readers.length);
  return {
    // A piece comes as a Blob (the provider sends an upload's first 64 MiB so, unless it is
    // known to be larger: no bytes pass through this thread, and IndexedDB stores a Blob faster
    // than an array) or as bytes, whose buffer is handed over and comes back with the blocks. A
    // block that is the whole piece is stored as the piece (a view of part of a buffer would
    // store all of it). `total`: the upload's size, if it said one (see hash-worker.js).
    push: async (handle, piece, total) => {
      const blob = piece instanceof Blob;
      const { byteOffset: offset, length } = blob ? {} : piece;
      const { blocks, buffer } = blob
        ? await worker.ask({ op: 'push', handle, total, blob: piece })
        : await worker.ask({ op: 'push', handle, total, buffer: piece.buffer, offset, length }, [piece.buffer]);
      // A block given as null is the whole piece.
      let whole;
      const asPiece = () => (whole ??= blob ? piece
        : offset === 0 && length === buffer.byteLength ? new Uint8Array(buffer) : new Uint8Array(buffer.slice(offset, offset + length)));
      const stored = blocks.map(([cid, data]) => [cid, data ?? asPiece()]);
      if (!blob) handedBack.set(piece, { own: buffer, others: stored.map(([, data]) => data.buffer).filter((b) => b && b !== buffer) });
      return stored;
    },
    // The page's word that upload `handle` has had its last piece (see hash-worker.js).
    last: (handle) => worker.tell({ op: 'last', handle }),
    finish: async (handle) => {
      const { blocks, cid, sha256, size } = await worker.ask({ op: 'finish', handle });
      return [blocks, cid, sha256, size];
    },
    forget: (handle) => worker.tell({ op: 'forget', handle }),
    crash: (abort) => worker.tell({ op: 'crash', abort }), // (test builds: see answer)
    // The parts of a range (or the JSON text of an error), read and verified on the worker.
    read: async (root, start, end, blobs) => {
      const r = readers.reduce((a, b) => (b.reading < a.reading ? b : a)); // the less busy
      r.reading++;
      try {
        const { parts, body } = await r.w.ask({ op: 'read', root, start, end, blobs });
        dataset.workerReads = String(Number(dataset.workerReads ?? 0) + 1);
        return parts ?? body;
      } finally {
        r.reading--;
      }
    },
  };
}

const failure = (code, message) => JSON.stringify({ error: { code, message } });

// Any page can load this frame (it is web-accessible), and in Chrome every content frame runs
// in the node's process: a frame does not start its wasm and workers for a page the node says
// has no `cas` grant, so that such pages cannot fill that process with frames. Where the node
// cannot say (it is locked or stopped, or slow to answer), the frame starts within a small
// pool of such frames, and the store's own check answers each request; where the node's
// document is not there yet, the frame waits for it, then refuses. (Firefox runs a frame in
// its page's process and gives it no way to the node: it starts, and what it takes, the page
// pays.)
//
// The node's document bounds how many frames run their store at once (see `admitFrame` in
// node-host.js): one over the bound answers -32005 and asks again at its next request.
const GRANT_CHECK_MS = 5_000;
let grantCheck = null; // resolves to true if the frame may start, else why not (an error body)

async function nodeViewSoon() {
  const until = Date.now() + GRANT_CHECK_MS;
  let view = nodeView();
  while (view === null && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 100));
    view = nodeView();
  }
  return view;
}

function mayStart(origin) {
  if (opening) return Promise.resolve(true);
  grantCheck ??= (async () => {
    const view = await nodeViewSoon();
    if (view === 'never') return true;
    if (view === null) return failure(4900, 'Disot Peer is not running: try again in a moment');
    const asked = view.disotPageRequest(origin, JSON.stringify({ method: 'disot_getPermissions' }));
    const late = new Promise((r) => setTimeout(() => r(null), GRANT_CHECK_MS));
    const reply = JSON.parse((await Promise.race([asked, late])) ?? '{}');
    const unconfirmed = !Array.isArray(reply.result); // no answer, or an error (locked, stopped)
    if (!unconfirmed && !reply.result.some((p) => p?.parentCapability === 'cas')) {
      return failure(4100, 'this origin has no "cas" permission: ask with disot_requestPermissions [{"cas": {}}]');
    }
    const admitted = view.disotAdmitFrame(window, origin, unconfirmed);
    return admitted === true ? true : failure(-32005, String(admitted));
  })().catch(() => failure(4900, 'Disot Peer could not check this page\'s permission: try again')).then((may) => {
    if (may !== true) grantCheck = null; // asked again next time: the user may grant it meanwhile
    return may;
  });
  return grantCheck;
}

async function answer(origin, msg) {
  let f;
  try {
    const may = await mayStart(origin);
    if (may !== true) return { body: may }; // (why not, as an error)
    f = await frame();
  } catch (e) {
    return { body: failure(4900, `disot content frame failed to start: ${e?.message ?? e}`) };
  }
  switch (msg.op) {
    case 'request': {
      if (typeof msg.body !== 'string') break;
      if (testHooks && msg.body === '{"method":"cas_stat","params":{"name":"debug_crash"}}') debugPanic();
      if (testHooks && msg.body === '{"method":"cas_stat","params":{"name":"debug_abort"}}') debugAbort();
      const workerCrash = /^\{"method":"cas_stat","params":\{"name":"debug_(crash|abort)_worker"\}\}$/.exec(msg.body);
      if (testHooks && workerCrash && importers) {
        importers.crash(workerCrash[1] === 'abort');
        return new Promise(() => {}); // answered when the worker's panic stops this frame
      }
      return { body: await f.request(origin, msg.body) };
    }
    case 'put': {
      const { data } = msg;
      const blob = data instanceof Blob;
      if (!(blob || data instanceof ArrayBuffer) || typeof msg.handle !== 'number') break;
      // Refused before it is read or copied into the node's memory.
      const size = blob ? data.size : data.byteLength;
      if (size > MAX_PIECE) return { body: failure(-32005, `${size} bytes in one message; the limit is ${MAX_PIECE}`) };
      let piece = blob ? data : new Uint8Array(data);
      if (!importers) {
        // This thread imports it, from bytes. A Blob is read first; every piece waits for the
        // reads before it, so the pieces stay in the order they came.
        const read = reading.then(() => (blob ? data.arrayBuffer() : data));
        reading = read.catch(() => {});
        try {
          piece = new Uint8Array(await read);
        } catch (e) {
          return { body: failure(-32602, `the piece could not be read: ${e?.message ?? e}`) };
        }
      }
      const putting = f.putChunk(origin, msg.handle, piece); // taken in, in order, before it waits
      if (msg.last === true) importers?.last(msg.handle);
      try {
        // Once the store has answered (stored or not), nothing holds the piece's bytes: its own
        // buffer can carry the page's next piece.
        const body = await putting;
        const own = handedBack.get(piece)?.own ?? (blob ? null : piece.buffer);
        return own?.byteLength ? { body, spare: own } : { body }; // (empty: sent away and lost)
      } finally {
        for (const buffer of handedBack.get(piece)?.others ?? []) releaseReceived(buffer);
      }
    }
    case 'read': {
      if (typeof msg.name !== 'string' || msg.name.length > 256 || typeof msg.offset !== 'number' || typeof msg.length !== 'number') break;
      const r = await f.read(origin, msg.name, msg.offset, msg.length, msg.blobs === true);
      return typeof r === 'string' ? { body: r } : { parts: r };
    }
  }
  return { body: failure(-32600, 'malformed frame message') };
}

/**
 * The node's document, if it runs in this process (Chrome: see `serveFrames` in
 * node-host.js); 'never' where a frame cannot reach it (Firefox), null if not now.
 */
function nodeView() {
  const getViews = api.extension?.getViews;
  if (typeof getViews !== 'function') return 'never';
  for (const view of getViews()) {
    try {
      if (typeof view.disotPageRequest === 'function') return view;
    } catch {
      // A document closing: not this one.
    }
  }
  return null;
}

/**
 * The store calls this as an upload is committed, before the page hears of it: the node in
 * this process is told at once, so that the page's next get finds it known to be held (the
 * store's notice to every context goes over a broadcast channel, which may come later than the
 * page's next request through this frame).
 */
function tellNodeOfStore(cid, origin) {
  const view = nodeView();
  if (typeof view?.disotStored === 'function') view.disotStored(cid, origin);
}

/** A request the page has for the node, handed to it directly if it can be. */
async function askNode(origin, msg) {
  if (typeof msg.body !== 'string' || msg.body.length > MAX_NODE_BODY) {
    return { body: failure(-32600, 'malformed request') };
  }
  const view = nodeView();
  if (typeof view?.disotPageRequest !== 'function') return { unreachable: view ?? 'now' };
  const dataset = document.documentElement.dataset; // for tests
  dataset.nodeRequests = String(Number(dataset.nodeRequests ?? 0) + 1);
  return { body: await view.disotPageRequest(origin, msg.body) };
}

function serve(port, origin) {
  let pending = 0;
  let nodePending = 0;
  served.add(port);
  if (crashed) port.postMessage({ crashed }); // (a page that came after)
  port.onmessage = async ({ data: msg }) => {
    if (msg?.op === 'bye') {
      // The page let this port go: another may take its place.
      if (served.delete(port)) ports--;
      port.close();
      document.documentElement.dataset.ports = String(ports); // for tests
      return;
    }
    const id = msg?.id;
    if (!Number.isSafeInteger(id)) return;
    if (crashed) {
      port.postMessage({ id, body: failure(4900, `disot content frame stopped after an error: ${crashed}`) });
      return;
    }
    if (msg.op === 'node') {
      if (nodePending >= MAX_NODE_PENDING) {
        port.postMessage({ id, body: failure(-32005, `more than ${MAX_NODE_PENDING} requests in flight`) });
        return;
      }
      nodePending++;
      try {
        port.postMessage({ id, ...(await askNode(origin, msg)) });
      } catch (e) {
        port.postMessage({ id, body: failure(4900, `disot peer is not reachable: ${e?.message ?? e}`) });
      } finally {
        nodePending--;
      }
      return;
    }
    if (pending >= MAX_PENDING) {
      port.postMessage({ id, body: failure(-32005, `more than ${MAX_PENDING} requests in flight`) });
      return;
    }
    pending++;
    try {
      const reply = await answer(origin, msg);
      // Each part is a Blob or has a buffer of its own: all of them are handed over, none copied.
      if (reply.parts) {
        const buffers = reply.parts.filter((p) => !(p instanceof Blob)).map((p) => p.buffer);
        port.postMessage({ id, parts: reply.parts }, buffers);
        const blobs = reply.parts.length - buffers.length;
        if (blobs) document.documentElement.dataset.blobParts = String(Number(document.documentElement.dataset.blobParts ?? 0) + blobs); // for tests
      }
      else if (reply.spare) {
        port.postMessage({ id, body: reply.body, spare: reply.spare }, [reply.spare]);
        const dataset = document.documentElement.dataset; // for tests
        dataset.sparesBack = String(Number(dataset.sparesBack ?? 0) + 1);
      } else port.postMessage({ id, body: reply.body });
    } catch (e) {
      // A trap: every request waiting fails with 4900 (see disotCrashed), this one with them.
      if (isTrap(e)) trapped(e);
      else port.postMessage({ id, body: failure(-32603, `content frame: ${e?.message ?? e}`) });
    } finally {
      pending--;
    }
  };
}

window.addEventListener('message', (ev) => {
  if (ev.source !== window.parent || ev.data?.channel !== 'disot-frame' || ev.ports.length !== 1) return;
  const origin = location.ancestorOrigins?.[0];
  if (!origin || ports >= MAX_PORTS) {
    // Said, so that the page does not wait for answers that never come.
    ev.ports[0].postMessage({ refused: origin ? `it serves ${MAX_PORTS} at most` : 'no origin to serve' });
    ev.ports[0].close();
    return;
  }
  ports++;
  const dataset = document.documentElement.dataset; // for tests: ports served now, and ever
  dataset.ports = String(ports);
  dataset.portsTaken = String(Number(dataset.portsTaken ?? 0) + 1);
  serve(ev.ports[0], origin);
});
