// The in-page provider, run in the page's own world. It only moves requests to the content
// script and answers back; every check that matters happens in the extension.
(() => {
  if (window.disot) return;
  const CHANNEL = 'disot-peer';
  // A version-4 UUID. crypto.randomUUID exists only in secure contexts, and plain-http sites
  // get a provider too.
  const randomId = () => {
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const x = Array.from(b, (v) => v.toString(16).padStart(2, '0')).join('');
    return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
  };
  const prefix = randomId();
  let nextId = 0;
  const pending = new Map();

  class ProviderRpcError extends Error {
    constructor(code, message) {
      super(message);
      this.name = 'ProviderRpcError';
      this.code = code;
    }
  }

  window.addEventListener('message', (ev) => {
    if (ev.source !== window || ev.data?.channel !== CHANNEL || ev.data.dir !== 'response') return;
    const entry = pending.get(ev.data.id);
    if (!entry) return;
    pending.delete(ev.data.id);
    const { result, error } = ev.data.reply ?? {};
    if (error) entry.reject(new ProviderRpcError(error.code, error.message));
    else entry.resolve(result);
  });

  /** A request through the content script (which forwards it to the node). */
  function viaContentScript(request) {
    return new Promise((resolve, reject) => {
      const id = `${prefix}:${nextId++}`;
      pending.set(id, { resolve, reject });
      try {
        window.postMessage({ channel: CHANNEL, dir: 'request', id, request }, window.location.origin);
      } catch (e) {
        pending.delete(id);
        reject(new ProviderRpcError(-32600, `request cannot be sent: ${e.message}`));
      }
    });
  }

  // Requests go to the node through the content frame once it is open, where it can hand them
  // to the node directly (Chrome: the frame runs in the node's process); else, and until then,
  // through the content script. A frame that cannot reach the node says whether it never will
  // (Firefox) or not now (the node's document is starting): then the content script takes the
  // request, and the frame is asked again after a while.
  const NODE_RETRY_MS = 5_000;
  let nodeRoute = null; // the frame client, once the frame is open and may reach the node
  let nodeRouteAt = 0; // when the frame may be asked again, after it could not reach the node

  async function viaFrame(route, request) {
    // Refused as the content script's path refuses it: what cannot be posted (functions,
    // symbols), then what is not JSON (BigInts, cycles).
    try {
      structuredClone(request);
    } catch (e) {
      throw new ProviderRpcError(-32600, `request cannot be sent: ${e.message}`);
    }
    let body;
    try {
      body = JSON.stringify(request);
    } catch (e) {
      throw new ProviderRpcError(-32600, `request is not serialisable: ${e.message}`);
    }
    if (body.length > MAX_REQUEST_BODY) {
      throw new ProviderRpcError(-32005, `request is ${body.length} bytes; the limit is ${MAX_REQUEST_BODY}`);
    }
    const answer = await route.node(body, TIMEOUT_MS_FOR[request.method] ?? TIMEOUT_MS).catch((e) => {
      // No answer in time: the frame may be gone (the page can remove it). Later requests
      // take the content script's path.
      if (e.code === 4900 && nodeRoute === route) nodeRoute = false;
      throw e;
    });
    if (answer?.[UNREACHABLE] === undefined) return answer;
    if (answer[UNREACHABLE] === 'never') nodeRoute = false;
    else nodeRouteAt = performance.now() + NODE_RETRY_MS;
    return viaContentScript(request);
  }

  function request(args) {
    if (typeof args !== 'object' || args === null || Array.isArray(args)) {
      return Promise.reject(new ProviderRpcError(-32600, 'request expects an object {method, params}'));
    }
    if (typeof args.method !== 'string' || args.method.length === 0) {
      return Promise.reject(new ProviderRpcError(-32600, 'method must be a non-empty string'));
    }
    // A sandboxed document has no origin of its own (`'null'`): grants are an origin's, so
    // it is served none, and told so at once.
    if (window.origin === 'null') {
      return Promise.reject(new ProviderRpcError(4100, 'this document has no origin of its own (a sandboxed frame): the peer serves only documents with one'));
    }
    const request = args.params === undefined ? { method: args.method } : { method: args.method, params: args.params };
    if (nodeRoute === null) {
      nodeRoute = undefined; // opening
      // (No frame: asked for again later, see `contentPath`.)
      contentPath().then((path) => { nodeRoute = path === messagePath ? null : path; });
    }
    const answer = nodeRoute && performance.now() >= nodeRouteAt ? viaFrame(nodeRoute, request) : viaContentScript(request);
    // Granted a permission, the site may have the frame at once, and hear of changes if it
    // listens (a listener added before the grant was refused).
    if (request.method === 'disot_requestPermissions') {
      answer.then(() => {
        frameRefusedUntil = 0;
        if (listeners.size > 0) watch();
      }, () => {});
    }
    return answer;
  }

  // The content store's two paths. The binary one is a MessagePort to a hidden extension frame
  // (opened on first use) that moves content as Blobs and transferable buffers, several pieces in flight.
  // If the frame cannot be opened, content moves in base64 chunks through request(), because
  // extension messaging in Chrome is JSON.
  const FRAME_TIMEOUT_MS = 30_000;
  const PIECE_SIZE = 1024 * 1024; // of an upload, through the frame
  const MAX_IN_FLIGHT = 16;
  let framePath = null;
  let frameRefusedUntil = 0; // until when, after no frame was opened, content goes without
  // Requests to the node through the frame: the content script's limits (content.js).
  const MAX_REQUEST_BODY = 1024 * 1024;
  const TIMEOUT_MS = 30_000;
  const TIMEOUT_MS_FOR = {
    disot_requestPermissions: 10 * 60_000, disot_sign: 10 * 60_000, trust_set: 10 * 60_000, share: 10 * 60_000,
    collection_member: 10 * 60_000, // (it asks the user when it lets a peer in)
    cas_fetch: 10 * 60_000,
  };
  const UNREACHABLE = Symbol('the frame cannot reach the node');

  function frameClient(port) {
    let next = 0;
    const waiting = new Map();
    // Buffers of pieces the frame has stored and handed back, for the next pieces to be copied
    // into: an upload sent as bytes reuses the same few buffers rather than leaving one of
    // garbage per piece in every context it passes through (Chrome frees a buffer's memory
    // only when it collects the buffer, however early it is detached). Let go when an upload
    // ends, so that a page does not hold them after.
    const spares = [];
    const MAX_SPARES = 24; // more than the pieces one upload has in flight
    port.onmessage = ({ data }) => {
      if (typeof data?.crashed === 'string') return frameCrashed(data.crashed);
      if (typeof data?.refused === 'string') return frameRefused(data.refused);
      if (data?.spare instanceof ArrayBuffer && data.spare.byteLength === PIECE_SIZE && spares.length < MAX_SPARES) spares.push(data.spare);
      const w = waiting.get(data?.id);
      if (!w) return;
      waiting.delete(data.id);
      clearTimeout(w.timer);
      // A range read comes as its parts, in order: bytes, or Blobs the store has checked.
      if (Array.isArray(data.parts) && data.parts.every((p) => p instanceof Uint8Array || p instanceof Blob)) return w.resolve(data.parts);
      if (typeof data.unreachable === 'string') return w.resolve({ [UNREACHABLE]: data.unreachable });
      let reply;
      try {
        reply = JSON.parse(data.body);
      } catch {
        return w.reject(new ProviderRpcError(-32603, 'malformed answer from the content frame'));
      }
      if (reply.error) w.reject(new ProviderRpcError(reply.error.code, reply.error.message));
      else w.resolve(reply.result);
    };
    // The frame refuses more than MAX_IN_FLIGHT requests at once from one page (MAX_PENDING
    // in frame.js): more wait here for a turn, so that gets and puts running together never
    // fail for it.
    let sent = 0;
    const turns = [];
    let closed = null; // why, once the frame is gone
    const send = (msg, transfer, ms, late) => new Promise((resolve, reject) => {
      if (closed) return reject(new ProviderRpcError(4900, closed));
      const id = next++;
      const timer = setTimeout(() => {
        waiting.delete(id);
        reject(new ProviderRpcError(4900, late));
      }, ms);
      waiting.set(id, { resolve, reject, timer });
      port.postMessage({ ...msg, id }, transfer);
    });
    const call = async (msg, transfer = []) => {
      while (sent >= MAX_IN_FLIGHT) await new Promise((r) => turns.push(r));
      sent++;
      return send(msg, transfer, FRAME_TIMEOUT_MS, 'disot content frame did not answer in time').finally(() => {
        sent--;
        turns.shift()?.();
      });
    };
    const close = (why) => {
      closed ??= why;
      for (const w of waiting.values()) {
        clearTimeout(w.timer);
        w.reject(new ProviderRpcError(4900, why));
      }
      waiting.clear();
      port.postMessage({ op: 'bye' }); // (the frame serves a few ports: this one is free again)
      port.close();
    };
    // The frame's wasm stopped after an error: what waits fails now, and the content script
    // puts a new frame in its place for the next request.
    const frameCrashed = (message) => {
      if (closed) return; // (said once: a message may still come through the closed port)
      close(`the content frame stopped after an error, and starts again: ${message}`);
      framePath = null;
      nodeRoute = null;
      window.postMessage({ channel: CHANNEL, dir: 'frame-crashed' }, window.location.origin);
    };
    // The frame serves no more ports: content goes through the content script for a while.
    const frameRefused = (message) => {
      if (closed) return;
      close(`the content frame refused this page: ${message}`);
      framePath = null;
      nodeRoute = null;
      frameRefusedUntil = performance.now() + NODE_RETRY_MS;
    };
    return {
      // The frame is gone: what waits for it fails now.
      close: () => close('the content frame was removed'),
      // A request for the node (not queued behind content: the frame has its own limit).
      node: (body, ms) => send({ op: 'node', body }, [], ms, 'disot peer did not answer in time'),
      call: (method, params) => call({ op: 'request', body: JSON.stringify(params === undefined ? { method } : { method, params }) }),
      put: (handle, piece, last) => (piece instanceof Blob
        ? call({ op: 'put', handle, data: piece, last })
        : call({ op: 'put', handle, data: piece.buffer, last }, [piece.buffer])),
      read: (name, offset, length, blobs) => call({ op: 'read', name, offset, length, blobs }),
      spare: () => spares.pop(),
      dropSpares: () => { spares.length = 0; },
      pieceSize: PIECE_SIZE,
      readSize: 4 * 1024 * 1024, // the most one frame message takes
      inFlight: 8, // ranges read ahead by one get (two workers read them)
      putsInFlight: 16,
    };
  }

  const messagePath = {
    call: (method, params) => request(params === undefined ? { method } : { method, params }),
    put: async (handle, piece) => {
      const bytes = piece instanceof Blob ? new Uint8Array(await piece.arrayBuffer()) : piece;
      return request({ method: 'cas_put_chunk', params: { handle, data: toBase64(bytes) } });
    },
    read: async (name, offset, length) => [fromBase64((await request({ method: 'cas_read', params: { name, offset, length } })).data)],
    pieceSize: 512 * 1024,
    readSize: 512 * 1024,
    inFlight: 1,
  };

  // The page removed the frame (the content script watches it): the next request opens another.
  window.addEventListener('message', (ev) => {
    if (ev.source !== window || ev.data?.channel !== CHANNEL || ev.data.dir !== 'frame-gone') return;
    const gone = framePath;
    framePath = null;
    nodeRoute = null;
    gone?.then((path) => path.close?.());
  });

  // The frame's port comes in a message from the content script, for the ask that waits
  // (`frameWaiter`). One that comes when none waits was sent for an ask given up on while it
  // was on its way: the next requests use it if no frame is open, else it goes back to the
  // frame, whose ports are few.
  let frameWaiter = null;
  window.addEventListener('message', (ev) => {
    if (ev.source !== window || ev.data?.channel !== CHANNEL || ev.data.dir !== 'frame') return;
    const port = ev.ports.length === 1 ? ev.ports[0] : null;
    if (frameWaiter) return frameWaiter(port);
    if (!port) return;
    if (framePath === null) {
      framePath = Promise.resolve(frameClient(port));
    } else {
      port.postMessage({ op: 'bye' });
      port.close();
    }
  });

  function contentPath() {
    // (A sandboxed document is refused by `request`, at once.)
    if (window.origin === 'null') return Promise.resolve(messagePath);
    if (framePath) return framePath;
    if (performance.now() < frameRefusedUntil) return Promise.resolve(messagePath);
    let done;
    const asked = new Promise((resolve) => {
      const timer = setTimeout(() => {
        // The content script is told, so that a frame ready later keeps its port for the
        // next ask instead of sending it to nobody. (Not if another ask took this one's
        // place: the frame it asked for was removed meanwhile.)
        if (frameWaiter === done) window.postMessage({ channel: CHANNEL, dir: 'frame-abandoned' }, window.location.origin);
        done(null);
      }, 10_000);
      done = (port) => {
        clearTimeout(timer);
        if (frameWaiter === done) frameWaiter = null;
        if (!port && framePath === asked) {
          // No frame (the site holds no permission yet, or the node is starting): the
          // content script carries content meanwhile, and the frame is asked for again.
          frameRefusedUntil = performance.now() + NODE_RETRY_MS;
          framePath = null;
        }
        resolve(port ? frameClient(port) : messagePath);
      };
    });
    frameWaiter = done;
    framePath = asked;
    window.postMessage({ channel: CHANNEL, dir: 'open-frame' }, window.location.origin);
    return asked;
  }

  const toBase64 = (bytes) => {
    if (bytes.toBase64) return bytes.toBase64();
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  };
  const fromBase64 = (text) => {
    if (Uint8Array.fromBase64) return Uint8Array.fromBase64(text);
    const s = atob(text);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  };

  // Checks by shape rather than instanceof, so that values from another realm (an iframe, a
  // test driver's sandbox) are accepted too.
  const tag = (v) => Object.prototype.toString.call(v);
  const isBlob = (v) => tag(v) === '[object Blob]' || tag(v) === '[object File]';
  /** The size of content given as bytes or a Blob; undefined for a stream (or not content). */
  const knownSize = (data) => (tag(data) === '[object ArrayBuffer]' || ArrayBuffer.isView(data) ? data.byteLength : isBlob(data) ? data.size : undefined);
  // The first BLOB_BYTES of an upload of bytes go as Blobs, the rest as bytes (transferred).
  // A Blob is faster to send and to store, but its memory (in the browser's own process, in
  // Chromium) is freed only once every context that saw it has collected its handle, and
  // nothing urges a collection in the content frame, which holds no bytes: a gigabyte's upload
  // all in Blobs held ~900 MiB there.
  const BLOB_BYTES = 64 * 1024 * 1024;
  // As much of a stream of unknown size: the first BLOB_BYTES of a stream that goes on for a
  // gigabyte were in memory at once three times over in Chromium (its Blobs in the browser's
  // process, their reads and the bytes kept to name the content in the import worker). With
  // this, a 1 GiB stream put held 129-143 MiB above idle instead of 204-265, and a 64 MiB one
  // ran 6 % slower (142 vs 151 MiB/s). A page that knows the size can say it (`size`).
  const STREAM_BLOB_BYTES = 16 * 1024 * 1024;
  // A piece smaller than this goes as bytes all the same: reading a small Blob back from the
  // store asks the browser's own process for it, which made serving a 1 KiB block to a peer
  // ~1 ms slower than reading bytes.
  const BLOB_MIN = 64 * 1024;

  /**
   * `data` in pieces of `size` bytes (the last may be shorter), as `{piece, last}`: each
   * piece a Blob or a Uint8Array on a buffer of its own (see BLOB_BYTES, BLOB_MIN), `last` set
   * on the last one if that is known then (a stream of unknown size that ends at a piece's end
   * is known to have ended only after). The page's bytes are copied once, and its own buffers
   * are never touched after; a Blob's or File's pieces are slices of it, not read here. The
   * content frame stores a piece as the Blob or bytes it is. A stream's chunks, of any sizes,
   * are gathered into pieces. `spare()` gives a buffer of `size` bytes the path has back from
   * an earlier piece, if it has one, for a full piece of bytes to be copied into. `total` is
   * the content's size, if known (`knownSize`, or what the page says a stream's is; the store
   * holds it to that).
   */
  async function* pieces(data, size, { spare = () => undefined, total } = {}) {
    let sent = 0;
    const bytes = (view) => {
      const reused = view.length === size ? spare() : undefined;
      if (!reused) return view.slice();
      const piece = new Uint8Array(reused);
      piece.set(view);
      return piece;
    };
    // Content known to be larger than BLOB_BYTES goes as bytes from its start: its Blobs would
    // be garbage the rest of the upload leaves no time to collect.
    const asBlobs = total === undefined ? STREAM_BLOB_BYTES : total > BLOB_BYTES ? 0 : BLOB_BYTES;
    const copy = (view) => {
      const piece = sent < asBlobs && view.length >= BLOB_MIN ? new Blob([view]) : bytes(view);
      sent += view.length;
      return piece;
    };
    if (tag(data) === '[object ArrayBuffer]') data = new Uint8Array(data);
    if (ArrayBuffer.isView(data)) {
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      for (let i = 0; i < bytes.length; i += size) yield { piece: copy(bytes.subarray(i, i + size)), last: i + size >= bytes.length };
    } else if (isBlob(data)) {
      for (let i = 0; i < data.size; i += size) yield { piece: data.slice(i, i + size), last: i + size >= data.size };
    } else if (tag(data) === '[object ReadableStream]') {
      const reader = data.getReader();
      let finished = false;
      try {
        // One buffer, reused: each full piece is copied out of it.
        const out = new Uint8Array(size);
        let filled = 0;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          if (!ArrayBuffer.isView(value)) throw new ProviderRpcError(-32602, 'the stream must yield Uint8Array chunks');
          const chunk = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
          for (let at = 0; at < chunk.length;) {
            const n = Math.min(size - filled, chunk.length - at);
            out.set(chunk.subarray(at, at + n), filled);
            filled += n;
            at += n;
            if (filled === size) {
              const piece = copy(out);
              yield { piece, last: sent === total };
              filled = 0;
            }
          }
        }
        finished = true;
        if (filled) yield { piece: copy(out.subarray(0, filled)), last: true };
      } finally {
        // A put that failed stops the page's source rather than leaving it locked and running.
        if (!finished) reader.cancel().catch(() => {});
      }
    } else {
      throw new ProviderRpcError(-32602, 'put expects a Uint8Array, ArrayBuffer, Blob or ReadableStream');
    }
  }

  /**
   * Run `tasks` (an async iterable of thunks) with at most `limit` at once, in order of start.
   * If one fails, the rest still running are waited for before the failure is thrown: the
   * extension has answered every piece (and cleaned up after it) by the time the caller knows.
   */
  async function bounded(tasks, limit) {
    const running = new Set();
    try {
      for await (const task of tasks) {
        const p = task();
        p.catch(() => {}); // seen by race/all below; this only marks it handled
        running.add(p);
        p.finally(() => running.delete(p)).catch(() => {});
        if (running.size >= limit) await Promise.race(running);
      }
      await Promise.all(running);
    } catch (e) {
      await Promise.allSettled(running);
      throw e;
    }
  }

  const BLOB_RUN = 16 * 1024 * 1024;
  const sizeOf = (part) => (part instanceof Blob ? part.size : part.length);

  /**
   * The parts of bytes `offset..end` of `cid`, in order, with up to `path.inFlight` reads (of
   * up to `path.readSize` bytes, each answered in parts) ahead: each part a Uint8Array, or
   * with `blobs` also a Blob whose bytes the store has checked (a leaf it keeps as a Blob:
   * its bytes then never pass through the content frame or this page).
   */
  async function* ranges(path, cid, offset, end, blobs) {
    const ahead = [];
    let next = offset;
    const issue = () => {
      const at = next;
      const length = Math.min(path.readSize, end - at);
      next += length;
      const p = path.read(cid, at, length, blobs).then((parts) => {
        if (parts.reduce((n, part) => n + sizeOf(part), 0) !== length) throw new ProviderRpcError(-32603, 'the object ended early');
        if (!blobs && parts.some((part) => part instanceof Blob)) throw new ProviderRpcError(-32603, 'a Blob where bytes were asked for');
        return parts;
      });
      p.catch(() => {});
      ahead.push(p);
    };
    while (next < end && ahead.length < path.inFlight) issue();
    while (ahead.length) {
      const parts = await ahead.shift();
      if (next < end) issue();
      yield* parts;
    }
  }

  /**
   * `cid` from this browser's store if it is held for this page, else from other peers into
   * the store, reporting bytes as they come. The answer is the object's record, and its
   * content too if it is small (one block of at most 64 KiB).
   */
  async function fetchFromPeers(cid, onProgress) {
    const fetching = request({ method: 'cas_fetch', params: { name: cid, inline: true, localFirst: true } });
    let done = false;
    fetching.finally(() => { done = true; }).catch(() => {});
    if (onProgress) {
      (async () => {
        while (!done) {
          await new Promise((r) => setTimeout(r, 250));
          const list = await request({ method: 'cas_transfers' }).catch(() => []);
          const t = list.find((x) => x.cid === cid);
          if (t && !done) onProgress(t.bytes, 'fetch');
        }
      })();
    }
    return fetching;
  }

  // Uploads of this page run 4 at a time, as many as the store takes of one page at once (it
  // refuses a fifth with -32005); the others wait here, in order, rather than fail: a page may
  // put a whole folder with one Promise.all.
  const UPLOADS_AT_ONCE = 4;
  const MAX_UPLOADS_WAITING = 4096;
  let uploading = 0;
  const uploadsWaiting = [];
  async function uploadTurn() {
    if (uploading < UPLOADS_AT_ONCE) {
      uploading++;
      return;
    }
    if (uploadsWaiting.length >= MAX_UPLOADS_WAITING) throw new ProviderRpcError(-32005, `${MAX_UPLOADS_WAITING} uploads wait already`);
    await new Promise((resolve) => uploadsWaiting.push(resolve)); // the turn is handed over
  }
  function uploadDone() {
    const next = uploadsWaiting.shift();
    if (next) next();
    else uploading--;
  }
  // Where several pages share one store (the content script's path goes to the node's), their
  // uploads count together: one refused for that asks again, waiting longer each time, for up
  // to as long as any request may wait.
  const UPLOAD_START_PATIENCE_MS = 10 * 60_000;
  async function startUpload(path, start) {
    const until = performance.now() + UPLOAD_START_PATIENCE_MS;
    for (let wait = 100; ; wait = Math.min(2 * wait, 2_000)) {
      try {
        return await path.call('cas_put_start', start);
      } catch (e) {
        if (e.code !== -32005 || !/too many uploads/.test(e.message) || performance.now() + wait > until) throw e;
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  const cas = Object.freeze({
    /** Store content; resolves to {cid, sha256, size}. `onProgress(bytesStored, total)` is
     * optional (`total` where it is known: bytes, a Blob, a stream given `size`); `public`
     * serves it to every peer, `minTrust` (0–100) to peers trusted at least that much. */
    async put(data, { name, mime, public: isPublic, minTrust, size, onProgress } = {}) {
      if (size !== undefined && !(Number.isSafeInteger(size) && size >= 0)) throw new ProviderRpcError(-32602, 'size must be a whole number of bytes');
      const known = knownSize(data);
      if (known !== undefined && size !== undefined && size !== known) throw new ProviderRpcError(-32602, `the content has ${known} bytes, not the ${size} its size says`);
      const total = known ?? size;
      const start = { name, mime };
      if (total !== undefined) start.size = total;
      if (isPublic !== undefined) start.public = isPublic;
      if (minTrust !== undefined) start.minTrust = minTrust;
      await uploadTurn();
      try {
        const path = await contentPath();
        const { handle } = await startUpload(path, start);
        let stored = 0;
        try {
          await bounded((async function* () {
            for await (const { piece, last } of pieces(data, path.pieceSize, { spare: path.spare, total })) {
              const n = piece.size ?? piece.length; // read before a transfer empties it
              yield () => path.put(handle, piece, last).then(() => {
                stored += n;
                onProgress?.(stored, total);
              });
            }
          })(), path.putsInFlight ?? path.inFlight);
        } catch (e) {
          await path.call('cas_put_abort', { handle }).catch(() => {});
          throw e;
        } finally {
          path.dropSpares?.();
        }
        return await path.call('cas_put_finish', { handle });
      } finally {
        uploadDone();
      }
    },
    /**
     * The content (or `length` bytes from `offset`): a Uint8Array by default, a Blob with
     * `as: 'blob'`, or a ReadableStream with `as: 'stream'` (read lazily, memory stays flat).
     */
    async get(name, { offset = 0, length, onProgress, as = 'bytes' } = {}) {
      if (!['bytes', 'blob', 'stream'].includes(as)) throw new ProviderRpcError(-32602, "as must be 'bytes', 'blob' or 'stream'");
      if (!(Number.isSafeInteger(offset) && offset >= 0)) throw new ProviderRpcError(-32602, 'offset must be a whole number of bytes');
      if (length !== undefined && !(Number.isSafeInteger(length) && length >= 0)) throw new ProviderRpcError(-32602, 'length must be a whole number of bytes');
      // Read by CID: a sha256: name would be looked up again for every piece. A CID is asked
      // of the node, which answers from the store or else from peers in one request (and
      // with small content in the answer); a sha256: name can only be looked up here. The
      // content frame is opened only when it is needed: its start (compiling the store's wasm,
      // two workers) shares a thread with the node in Chromium, and would hold up the fetch.
      const { cid, size, mime, data } = String(name).startsWith('sha256:')
        ? await (await contentPath()).call('cas_stat', { name })
        : await fetchFromPeers(name, onProgress).catch(async (e) => {
          // The node is not running (locked, starting): the store can still answer.
          if (e.code !== 4900) throw e;
          return (await contentPath()).call('cas_stat', { name });
        });
      const end = Math.min(size, length === undefined ? size : offset + length);
      let got = 0;
      let source;
      if (typeof data === 'string') {
        // Small content fetched just now came with the answer: no need to read it back.
        const all = fromBase64(data);
        if (all.length !== size) throw new ProviderRpcError(-32603, 'the fetched content is not the size its record says');
        source = (async function* () {
          if (end > offset) yield all.subarray(offset, end);
        })();
      } else {
        source = ranges(await contentPath(), cid, offset, end, as === 'blob');
      }
      const next = async () => {
        const { value } = await source.next();
        got += sizeOf(value);
        onProgress?.(got, 'read');
        return value;
      };
      if (as === 'stream') {
        return new ReadableStream({
          async pull(controller) {
            if (offset + got >= end) return controller.close();
            controller.enqueue(await next());
          },
          cancel: () => source.return(),
        }, { highWaterMark: 1 });
      }
      if (as === 'blob') {
        // Parts that come as bytes (leaves the store keeps as arrays) are made into a Blob every
        // BLOB_RUN bytes, so that the page holds no more of them than that at once.
        const blobs = [];
        let run = [];
        let inRun = 0;
        const seal = () => {
          if (run.length) blobs.push(new Blob(run));
          run = [];
          inRun = 0;
        };
        while (offset + got < end) {
          const part = await next();
          if (part instanceof Blob) {
            seal();
            blobs.push(part);
          } else {
            run.push(part);
            inRun += part.length;
            if (inRun >= BLOB_RUN) seal();
          }
        }
        seal();
        return new Blob(blobs, { type: mime ?? '' });
      }
      const out = new Uint8Array(Math.max(0, end - offset));
      while (offset + got < end) {
        const at = got;
        out.set(await next(), at);
      }
      return out;
    },
    stat: (name) => contentPath().then((p) => p.call('cas_stat', { name })),
    has: (name) => contentPath().then((p) => p.call('cas_has', { name })),
    list: () => contentPath().then((p) => p.call('cas_list')),
    pin: (name) => contentPath().then((p) => p.call('cas_pin', { name })),
    unpin: (name) => contentPath().then((p) => p.call('cas_unpin', { name })),
    /** Fetch from other peers (by CID) without reading it: resolves to {cid, sha256, size,
     * mime, fetched: {blocks, bytes}}. */
    fetch: (cid) => request({ method: 'cas_fetch', params: { name: cid } }),
    /** Fetches in progress for this page's origin: [{cid, bytes, blocks, total, startedMs}]. */
    transfers: () => request({ method: 'cas_transfers' }),
  });

  const p2p = Object.freeze({
    /** Connected peers: [{peerId, did, verified, displayName, transports, rttMs, agent,
     * directError}]. */
    peers: () => request({ method: 'p2p_peers' }),
  });

  /** DISOT entries: `sign({contentHash, type, metadata?, id?})` asks the user to sign with this
   * peer's DID (needs the `sign` permission); `verify(entry)` → `{valid, signer?, reason?}`. */
  const sign = (entry) => request({ method: 'disot_sign', params: entry });
  const verify = (entry) => request({ method: 'disot_verify', params: entry });
  /** Trust (needs the `trust` permission): `list()`, `score(did, context?)`, and
   * `set(did, level, context?)`, which the user approves in the extension's prompt. */
  const trust = Object.freeze({
    list: () => request({ method: 'trust_list' }),
    score: (did, context) => request({ method: 'trust_score', params: context ? { did, context } : { did } }),
    set: (did, level, context) => request({ method: 'trust_set', params: context ? { did, level, context } : { did, level } }),
  });
  /** Shares and collections (needs the `share` permission). `share({cid | collection, to,
   * note?})` asks the user to share with one DID or a list; `list()` → {sharedWithMe,
   * sharedByMe}. Collections are named lists of CIDs that sync with their members. */
  const shares = Object.freeze({
    share: (params) => request({ method: 'share', params }),
    list: () => request({ method: 'shares_list' }),
  });
  const collections = Object.freeze({
    list: () => request({ method: 'collections_list' }),
    get: (id, page = {}) => request({ method: 'collection_get', params: { id, ...page } }),
    create: (name) => request({ method: 'collection_create', params: { name } }),
    add: (id, cid, meta = {}) => request({ method: 'collection_add', params: { id, cid, ...meta } }),
    remove: (id, cid) => request({ method: 'collection_remove', params: { id, cid } }),
    rename: (id, name) => request({ method: 'collection_rename', params: { id, name } }),
    member: (id, did, role) => request({ method: 'collection_member', params: { id, did, role } }),
  });
  // Change events, in the manner of EIP-1193's on/removeListener: while anyone listens, one
  // `sync_watch` request waits in the peer for the next change to shares or to the site's
  // collections (the peer answers within 20 s either way, and is asked again). Pages without the `share`
  // permission hear nothing: the first refusal stops the watch and is logged, and the watch
  // starts again once this page is granted a permission.
  const EVENTS = ['change'];
  const listeners = new Set();
  let watching = false;
  async function watch() {
    if (watching) return;
    watching = true;
    // Where the peer's changes are now; while it cannot say (it is starting), asked every 2 s
    // as long as anyone listens. Undefined if nobody does any more.
    const position = async (wait) => {
      for (;;) {
        if (wait) await new Promise((r) => setTimeout(r, 2000));
        if (listeners.size === 0) return undefined;
        try {
          return (await request({ method: 'sync_watch' })).seq;
        } catch (e) {
          if (e.code === 4100 || e.code === 4200) throw e;
          wait = true;
        }
      }
    };
    try {
      let seq = await position(false);
      let pause = 1000;
      while (listeners.size > 0) {
        let answer;
        try {
          answer = await request({ method: 'sync_watch', params: { since: seq } });
          pause = 1000;
        } catch (e) {
          if (e.code === 4100 || e.code === 4200) throw e;
          if (e.code !== 4900 && !(e.code === -32602 && /is ahead/.test(e.message))) {
            // Not a restart (too many pages wait, say): asked again after a while, up to
            // half a minute, nothing said to listeners.
            await new Promise((r) => setTimeout(r, pause));
            pause = Math.min(2 * pause, 30_000);
            continue;
          }
          // The peer is restarting (or restarted: its numbers began again).
          seq = await position(true);
          if (seq !== undefined) listeners.forEach((fn) => deliver(fn, { seq, reasons: ['restarted'], missed: true }));
          continue;
        }
        seq = answer.seq;
        if (answer.changes.length === 0 && !answer.missed) continue;
        const event = { seq, reasons: [...new Set(answer.changes.map((c) => c.reason))], missed: answer.missed };
        listeners.forEach((fn) => deliver(fn, event));
      }
    } catch (e) {
      console.warn(`disot: change events stopped: ${e.message}`);
    } finally {
      watching = false;
    }
  }
  const deliver = (fn, event) => {
    try {
      fn(event);
    } catch (e) {
      console.error('disot: a change listener failed', e);
    }
  };
  function on(event, listener) {
    if (!EVENTS.includes(event)) throw new ProviderRpcError(-32602, `unknown event ${event}; events: ${EVENTS.join(', ')}`);
    if (typeof listener !== 'function') throw new ProviderRpcError(-32602, 'the listener must be a function');
    listeners.add(listener);
    watch();
    return provider;
  }
  function removeListener(event, listener) {
    if (event === 'change') listeners.delete(listener);
    return provider;
  }

  const provider = Object.freeze({ isDisot: true, request, on, removeListener, cas, p2p, sign, verify, trust, shares, collections });
  Object.defineProperty(window, 'disot', { value: provider, enumerable: true });

  // Discovery without racing on the global, in the manner of EIP-6963: the provider announces
  // itself now and again whenever a page asks.
  const info = Object.freeze({
    uuid: randomId(),
    name: 'Disot Peer',
    rdns: 'org.disot.peer',
    icon: 'data:image/svg+xml,' + encodeURIComponent(
      '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><circle cx="16" cy="16" r="14" fill="#2b6cb0"/><text x="16" y="22" font-size="16" text-anchor="middle" fill="#fff">D</text></svg>'),
  });
  const detail = Object.freeze({ info, provider });
  const announce = () => window.dispatchEvent(new CustomEvent('disot:announceProvider', { detail }));
  window.addEventListener('disot:requestProvider', announce);
  announce();
})();
