// Loads the WASM node once per context and answers requests with it. Used by Chrome's
// offscreen document and Firefox's background page; it holds no logic of its own.
import init, { start, identityLocked } from './pkg/disot_wasm.js';
import { classify, errorBody } from './sender.js';
import { isTrap, noteStack, onTrap } from './traps.js';

const api = globalThis.browser ?? globalThis.chrome;
let booting = null;

// A panic in the node leaves its module unusable (the wasm traps; nothing unwinds). The node
// says so through `disotCrashed` (see wasm/src/lib.rs), and this context is loaded again (its
// connections closed with it); the node starts again unless it crashed too often lately.
// Crashes are remembered for the session.
const CRASHES = 'disot-crashes';
const CRASH_WINDOW_MS = 10 * 60_000;
const MAX_RESTARTS = 3;
let crashed = null; // what the node said when it crashed, until this context reloads
let stoppedForGood = false; // it crashed too often to start again by itself
// Per request in flight, what answers it should the node crash meanwhile (a request it was
// working on would otherwise never be answered). One per request, dropped when it is answered:
// a promise pending for the context's life, raced by every request, would keep every answer.
const inFlight = new Set();
function untilCrash() {
  let answer;
  const crash = new Promise((resolve) => { answer = resolve; });
  inFlight.add(answer);
  return { crash, done: () => inFlight.delete(answer) };
}
const crashBody = () => errorBody(4900, `disot peer stopped after an error (${crashed}); it starts again unless it failed repeatedly`);

function rememberCrashes(crashes) {
  try {
    sessionStorage.setItem(CRASHES, JSON.stringify(crashes));
  } catch {
    // Not remembered (no restart limit then; session storage is there in extension pages).
  }
}

function recentCrashes() {
  try {
    const all = JSON.parse(sessionStorage.getItem(CRASHES) ?? '[]');
    return Array.isArray(all) ? all.filter((c) => Date.now() - c?.at < CRASH_WINDOW_MS) : [];
  } catch {
    return [];
  }
}

// `blamed`: the peer whose message the node was handling, if any; the node started next cuts
// it off (see SyncNode::cut_off in wasm/src/sync.rs).
globalThis.disotCrashed = (message, blamed) => {
  // Only the first counts: the module is dead after it, and the tasks queued behind the one
  // that panicked may panic in turn (finding its state still borrowed).
  if (crashed !== null) return;
  crashed = String(message).slice(0, 1000);
  for (const answer of inFlight) answer(crashBody());
  inFlight.clear();
  const crash = { at: Date.now(), message: crashed, ...(typeof blamed === 'string' ? { blamed: blamed.slice(0, 200) } : {}) };
  rememberCrashes([...recentCrashes(), crash]);
  console.error('disot: the node crashed; loading its page again');
  setTimeout(() => location.reload(), 0);
};

// A trap without a panic ends the node as a panic does (naming the saved document it was
// loading, if it was: nothing unwound).
const trapped = onTrap((message, blamed) => globalThis.disotCrashed(message, blamed));

/**
 * Stands in for the node while the identity key is locked (sealed under the user's
 * passphrase): it answers the popup's status and unlock requests only; `unlock` starts the
 * real node with the passphrase (which the node uses to open the key, then forgets).
 */
function lockedNode(unlock) {
  const locked = 'the peer is locked: unlock it in the extension popup';
  let unlocked = null;
  let queue = Promise.resolve();
  return {
    locked: true,
    async request(kind, _origin, body) {
      if (kind !== 'ui') return errorBody(4900, locked);
      let method, params;
      try {
        ({ method, params } = JSON.parse(body));
      } catch {
        return errorBody(-32600, 'invalid request');
      }
      if (method === 'ui_status') return JSON.stringify({ result: { locked: true } });
      if (method !== 'identity_unlock') return errorBody(4900, locked);
      if (typeof params?.passphrase !== 'string' || params.passphrase.length > 1024) {
        return errorBody(-32602, 'identity_unlock takes {passphrase}');
      }
      try {
        // One unlock at a time, and one node: a second start would run a second node on the
        // same store.
        const attempt = queue.then(() => unlocked ?? unlock(params.passphrase).then((n) => (unlocked = n)));
        queue = attempt.catch(() => {});
        const node = await attempt;
        return JSON.stringify({ result: { unlocked: true, did: node.did } });
      } catch (e) {
        return errorBody(-32602, String(e?.message ?? e));
      }
    },
  };
}

async function boot(platform, openPrompt) {
  const crashes = recentCrashes();
  if (crashes.length > MAX_RESTARTS) {
    stoppedForGood = true;
    throw new Error(`it stopped after ${crashes.length} errors in 10 minutes (the last: ${crashes.at(-1).message}); start it again from the extension's popup, or restart the browser`);
  }
  // The peer or document to blame is handed to one start only (the user may let it in again
  // after), the one that runs: not one that stays stopped, as above.
  if (crashes.at(-1)?.blamed) rememberCrashes(crashes.map(({ blamed, ...crash }) => crash));
  // Ask the browser not to evict the store under storage pressure (best effort: the answer
  // depends on the browser's policy; extensions with unlimitedStorage are usually kept).
  navigator.storage?.persist?.().catch(() => {});
  noteStack(await init({ module_or_path: api.runtime.getURL('pkg/disot_wasm_bg.wasm') }));
  let config = {};
  try {
    config = await (await fetch(api.runtime.getURL('config.json'))).json();
  } catch (e) {
    console.warn('disot: no usable config.json, starting without default bootstrap nodes', e);
  }
  const options = {
    defaultBootstrap: Array.isArray(config.bootstrap) ? config.bootstrap : [],
    defaultIceServers: Array.isArray(config.iceServers) ? config.iceServers : [],
    logLevel: typeof config.logLevel === 'string' ? config.logLevel : undefined,
    platform,
    lastCrash: crashes.at(-1) ?? null,
    testHooks: config.testHooks === true,
    ...(Number.isSafeInteger(config.debugBitswapIdleMs) ? { debugBitswapIdleMs: config.debugBitswapIdleMs } : {}),
  };
  if (!(await identityLocked())) return start(options, openPrompt);
  return lockedNode(async (passphrase) => {
    const node = await start({ ...options, passphrase }, openPrompt);
    booting = Promise.resolve(node);
    return node;
  });
}

/**
 * The running node, started on first call. A failed start is retried on the next call.
 * `openPrompt(id)` must open the approval prompt for permission request `id`.
 */
export function getNode(platform, openPrompt) {
  booting ??= boot(platform, openPrompt).catch((e) => {
    booting = null;
    throw e;
  });
  return booting;
}

/**
 * `node_restart` (the extension's own pages only): the user starts again a node that crashed
 * too often to start by itself. Its crashes count from the last one again (which the popup
 * shows, and whose peer or document the start takes as to blame), and this context loads
 * again.
 */
function restart() {
  if (!stoppedForGood) return errorBody(-32600, 'node_restart: the peer is not stopped');
  rememberCrashes(recentCrashes().slice(-1));
  setTimeout(() => location.reload(), 0);
  return JSON.stringify({ result: { restarting: true } });
}

const isRestart = (body) => {
  if (!body.includes('node_restart')) return false;
  try {
    return JSON.parse(body)?.method === 'node_restart';
  } catch {
    return false;
  }
};

/** Answer one request; always resolves to the JSON text of `{result}` or `{error}`. */
export async function handle(platform, openPrompt, kind, origin, body) {
  if (kind === 'ui' && isRestart(body)) return restart();
  if (crashed !== null) return crashBody();
  const { crash, done } = untilCrash();
  try {
    let node;
    try {
      // (A start that crashed would never settle.)
      node = await Promise.race([getNode(platform, openPrompt), crash.then(() => null)]);
      if (node === null) return crashBody();
    } catch (e) {
      if (isTrap(e)) {
        trapped(e);
        return crashBody();
      }
      console.error('disot: node failed to start', e);
      return errorBody(4900, `disot peer failed to start: ${e?.message ?? e}`);
    }
    try {
      return await Promise.race([node.request(kind, origin, body), crash]);
    } catch (e) {
      if (!isTrap(e)) throw e;
      trapped(e);
      return crashBody();
    }
  } finally {
    done();
  }
}

const PAGE_PORT = 'disot-page';
const MAX_PORT_IN_FLIGHT = 256; // the content script's own limit, checked again here
const MAX_PORT_BODY = 1024 * 1024;

/**
 * Serve content scripts over long-lived ports, straight to the node: in Chrome that skips the
 * service worker, one hop each way. Who is asking is decided from the port's sender, as the
 * browser reports it, exactly as for a runtime message; the node answers "hello" first, so
 * the content script knows the port has a node at its end.
 */
export function servePagePorts(platform, openPrompt) {
  api.runtime.onConnect.addListener((port) => {
    if (port.name !== PAGE_PORT) return;
    const who = classify(port.sender);
    if (who?.kind !== 'page') {
      port.disconnect();
      return;
    }
    let inFlight = 0;
    let open = true;
    port.onDisconnect.addListener(() => {
      open = false;
    });
    const answer = (id, body) => {
      if (!open) return;
      try {
        port.postMessage({ id, body });
      } catch {
        open = false;
      }
    };
    port.onMessage.addListener((msg) => {
      const id = msg?.id;
      if (!Number.isSafeInteger(id)) return;
      if (typeof msg.body !== 'string' || msg.body.length > MAX_PORT_BODY) {
        answer(id, errorBody(-32600, 'malformed request'));
        return;
      }
      if (inFlight >= MAX_PORT_IN_FLIGHT) {
        answer(id, errorBody(-32005, `more than ${MAX_PORT_IN_FLIGHT} requests in flight`));
        return;
      }
      inFlight++;
      handle(platform, openPrompt, who.kind, who.origin, msg.body)
        .then((body) => answer(id, body))
        .finally(() => inFlight--);
    });
    port.postMessage({ hello: true });
  });
}

/**
 * Serve pages' requests handed over by their content frames in this same process: in Chrome a
 * frame the content script put in a page runs in the extension's process and finds this
 * document with `extension.getViews()`, so a request skips the browser's messaging (a hop
 * through the browser's process each way). The frame passes its parent's origin as the browser
 * reports it to the frame (`location.ancestorOrigins`), and these are a page's requests, never
 * the UI's. Firefox gives a frame in a page no `getViews`: there pages use their ports (and
 * the node hears of objects a frame stored over the broadcast channel alone).
 */
export function serveFrames(platform, openPrompt) {
  globalThis.disotAdmitFrame = admitFrame;
  globalThis.disotPageRequest = (origin, body) => handle(platform, openPrompt, 'page', String(origin), String(body));
  // A frame's word that it stored an object (the node's `noteStored`), taken before the frame
  // answers its page: this runs before any later request can.
  globalThis.disotStored = (cid, origin) => {
    getNode(platform, openPrompt).then((node) => node.noteStored?.(String(cid), String(origin)), () => {});
  };
}

// Content frames that started their store (wasm and workers) in this process, each some tens
// of MiB: a granted site, however many frames it opens (one per document that uses the store),
// cannot take this process's memory, the node's too, beyond these. Frames started while the
// node could not say whether their site holds a grant (locked, starting, stopped) count in a
// small pool of their own: any site could open those.
const MAX_FRAMES = 32;
const MAX_FRAMES_PER_ORIGIN = 8;
const MAX_UNCONFIRMED = 8;
const MAX_UNCONFIRMED_PER_ORIGIN = 2;
const frames = new Map(); // WeakRef to a frame's window → {origin, unconfirmed}

/**
 * Whether the frame `win`, serving `origin`, may start its store: a string that says why not
 * if as many frames run already, of that origin or in all (of its pool: `unconfirmed` when the
 * node could not check the site's grant). A frame counts until its document goes (its page
 * closed or navigated, or its iframe removed); one already counted is let in.
 */
function admitFrame(win, origin, unconfirmed = false) {
  unconfirmed = unconfirmed === true;
  let same = 0;
  let pool = 0;
  for (const [ref, f] of frames) {
    const w = ref.deref();
    if (!w || w.closed) {
      frames.delete(ref);
      continue;
    }
    if (w === win) return true;
    if (f.unconfirmed !== unconfirmed) continue;
    pool++;
    if (f.origin === origin) same++;
  }
  if (unconfirmed) {
    const why = 'while Disot Peer cannot check permissions (it is locked, starting or stopped)';
    if (same >= MAX_UNCONFIRMED_PER_ORIGIN) return `this site has ${same} content frames open, the most it may ${why}`;
    if (pool >= MAX_UNCONFIRMED) return `${pool} content frames are open, the most there may be ${why}`;
  } else {
    if (same >= MAX_FRAMES_PER_ORIGIN) return `this site has ${same} content frames open, the most it may: close some of its tabs or frames`;
    if (pool >= MAX_FRAMES) return `${pool} content frames are open, the most there may be: close some tabs or frames`;
  }
  frames.set(new WeakRef(win), { origin: String(origin), unconfirmed });
  return true;
}
