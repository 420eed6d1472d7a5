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

  const provider = Object.freeze({ isDisot: true, request });
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
