// The bridge between the in-page provider and the extension. It runs in the isolated world,
// checks the size and shape of what the page sends, and always answers (never a hang).
(() => {
  const api = globalThis.browser ?? globalThis.chrome;
  const CHANNEL = 'disot-peer';
  const MAX_BODY = 1024 * 1024; // same limit as the node's MAX_REQUEST_BYTES
  const TIMEOUT_MS = 30_000;
  // A permission request waits for the user, who may take their time.
  const TIMEOUT_MS_FOR = { disot_requestPermissions: 10 * 60_000, cas_fetch: 10 * 60_000 };
  const MAX_IN_FLIGHT = 256; // requests from this frame awaiting an answer
  let inFlight = 0;

  const reply = (id, body) =>
    window.postMessage({ channel: CHANNEL, dir: 'response', id, reply: body }, window.location.origin);
  const error = (code, message) => ({ error: { code, message } });

  async function forward(request) {
    let body;
    try {
      body = JSON.stringify(request);
    } catch (e) {
      return error(-32600, `request is not serialisable: ${e.message}`);
    }
    if (body.length > MAX_BODY) {
      return error(-32005, `request is ${body.length} bytes; the limit is ${MAX_BODY}`);
    }
    let timer;
    const timeout = new Promise((resolve) => {
      const ms = TIMEOUT_MS_FOR[request?.method] ?? TIMEOUT_MS;
      timer = setTimeout(() => resolve(error(4900, 'disot peer did not answer in time')), ms);
    });
    const answer = api.runtime
      .sendMessage({ to: 'background', body })
      .then((r) => (typeof r?.body === 'string' ? JSON.parse(r.body) : error(4900, 'disot peer gave no answer')))
      .catch((e) => error(4900, `disot peer is not reachable: ${e.message}`));
    try {
      return await Promise.race([answer, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  // The binary path for content: a hidden extension frame serving this page over a
  // MessagePort. The frame learns the page's origin from the browser, not from us or the page.
  const FRAME_URL = api.runtime.getURL('frame.html');
  let frameLoaded = null;
  function openFrame() {
    frameLoaded ??= new Promise((resolve, reject) => {
      const iframe = document.createElement('iframe');
      iframe.src = FRAME_URL;
      iframe.hidden = true;
      iframe.setAttribute('aria-hidden', 'true');
      iframe.style.display = 'none';
      iframe.onload = () => resolve(iframe);
      iframe.onerror = () => reject(new Error('content frame failed to load'));
      (document.documentElement ?? document).append(iframe);
    });
    return frameLoaded.then((iframe) => {
      const { port1, port2 } = new MessageChannel();
      iframe.contentWindow.postMessage({ channel: 'disot-frame' }, new URL(FRAME_URL).origin, [port1]);
      window.postMessage({ channel: CHANNEL, dir: 'frame' }, window.location.origin, [port2]);
    });
  }

  window.addEventListener('message', (ev) => {
    if (ev.source !== window || ev.data?.channel !== CHANNEL) return;
    if (ev.data.dir === 'open-frame') {
      openFrame().catch((e) => window.postMessage({ channel: CHANNEL, dir: 'frame', error: e.message }, window.location.origin));
      return;
    }
    if (ev.data.dir !== 'request') return;
    const { id, request } = ev.data;
    if (typeof id !== 'string' || id.length > 128) return;
    if (inFlight >= MAX_IN_FLIGHT) {
      reply(id, error(-32005, `more than ${MAX_IN_FLIGHT} requests in flight`));
      return;
    }
    inFlight++;
    forward(request)
      .then((body) => reply(id, body))
      .finally(() => inFlight--);
  });
})();
