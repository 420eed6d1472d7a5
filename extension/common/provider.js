// The in-page provider, run in the page's own world. It only moves requests to the content
// script and answers back; every check that matters happens in the extension.
(() => {
  if (window.disot) return;
  const CHANNEL = 'disot-peer';
  const prefix = crypto.randomUUID();
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

  function request(args) {
    return new Promise((resolve, reject) => {
      if (typeof args !== 'object' || args === null || Array.isArray(args)) {
        return reject(new ProviderRpcError(-32600, 'request expects an object {method, params}'));
      }
      if (typeof args.method !== 'string' || args.method.length === 0) {
        return reject(new ProviderRpcError(-32600, 'method must be a non-empty string'));
      }
      const id = `${prefix}:${nextId++}`;
      pending.set(id, { resolve, reject });
      const request = args.params === undefined ? { method: args.method } : { method: args.method, params: args.params };
      try {
        window.postMessage({ channel: CHANNEL, dir: 'request', id, request }, window.location.origin);
      } catch (e) {
        pending.delete(id);
        reject(new ProviderRpcError(-32600, `request cannot be sent: ${e.message}`));
      }
    });
  }

  // A small typed wrapper over request() for the content store. Content moves in base64
  // chunks because extension messaging in Chrome is JSON.
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

  async function* pieces(data, size) {
    if (data instanceof ArrayBuffer) data = new Uint8Array(data);
    if (ArrayBuffer.isView(data)) {
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
      for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
    } else if (data instanceof Blob) {
      for (let i = 0; i < data.size; i += size) yield new Uint8Array(await data.slice(i, i + size).arrayBuffer());
    } else if (data instanceof ReadableStream) {
      const reader = data.getReader();
      let pending = new Uint8Array(0);
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (!(value instanceof Uint8Array)) throw new ProviderRpcError(-32602, 'the stream must yield Uint8Array chunks');
        const joined = new Uint8Array(pending.length + value.length);
        joined.set(pending);
        joined.set(value, pending.length);
        let at = 0;
        for (; joined.length - at >= size; at += size) yield joined.subarray(at, at + size);
        pending = joined.slice(at);
      }
      if (pending.length) yield pending;
    } else {
      throw new ProviderRpcError(-32602, 'put expects a Uint8Array, ArrayBuffer, Blob or ReadableStream');
    }
  }

  const cas = Object.freeze({
    /** Store content; resolves to {cid, sha256, size}. `onProgress(bytesSent)` is optional. */
    async put(data, { name, mime, onProgress } = {}) {
      const { handle, chunkSize } = await request({ method: 'cas_put_start', params: { name, mime } });
      let sent = 0;
      try {
        for await (const piece of pieces(data, chunkSize)) {
          await request({ method: 'cas_put_chunk', params: { handle, data: toBase64(piece) } });
          sent += piece.length;
          onProgress?.(sent);
        }
      } catch (e) {
        await request({ method: 'cas_put_abort', params: { handle } }).catch(() => {});
        throw e;
      }
      return request({ method: 'cas_put_finish', params: { handle } });
    },
    /**
     * The content (or `length` bytes from `offset`): a Uint8Array by default, a Blob with
     * `as: 'blob'`, or a ReadableStream with `as: 'stream'` (read lazily, memory stays flat).
     */
    async get(name, { offset = 0, length, onProgress, as = 'bytes' } = {}) {
      if (!['bytes', 'blob', 'stream'].includes(as)) throw new ProviderRpcError(-32602, "as must be 'bytes', 'blob' or 'stream'");
      // Read by CID: a sha256: name would be looked up again for every chunk.
      const { cid, size, mime } = await request({ method: 'cas_stat', params: { name } });
      const end = Math.min(size, length === undefined ? size : offset + length);
      let at = offset;
      const next = async () => {
        const { data } = await request({ method: 'cas_read', params: { name: cid, offset: at, length: Math.min(512 * 1024, end - at) } });
        const bytes = fromBase64(data);
        if (bytes.length === 0) throw new ProviderRpcError(-32603, 'the object ended early');
        at += bytes.length;
        onProgress?.(at - offset);
        return bytes;
      };
      if (as === 'stream') {
        return new ReadableStream({
          async pull(controller) {
            if (at >= end) return controller.close();
            controller.enqueue(await next());
          },
        }, { highWaterMark: 1 });
      }
      if (as === 'blob') {
        const parts = [];
        while (at < end) parts.push(await next());
        return new Blob(parts, { type: mime ?? '' });
      }
      const out = new Uint8Array(Math.max(0, end - offset));
      while (at < end) {
        const start = at - offset;
        out.set(await next(), start);
      }
      return out;
    },
    stat: (name) => request({ method: 'cas_stat', params: { name } }),
    has: (name) => request({ method: 'cas_has', params: { name } }),
    list: () => request({ method: 'cas_list' }),
    pin: (name) => request({ method: 'cas_pin', params: { name } }),
    unpin: (name) => request({ method: 'cas_unpin', params: { name } }),
  });

  const provider = Object.freeze({ isDisot: true, request, cas });
  Object.defineProperty(window, 'disot', { value: provider, enumerable: true });

  // Discovery without racing on the global, in the manner of EIP-6963: the provider announces
  // itself now and again whenever a page asks.
  const info = Object.freeze({
    uuid: crypto.randomUUID(),
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
