// The bridge between the in-page provider and the extension. It runs in the isolated world,
// checks the size and shape of what the page sends, and always answers (never a hang).
(() => {
  const api = globalThis.browser ?? globalThis.chrome;
  const CHANNEL = 'disot-peer';
  const MAX_BODY = 1024 * 1024; // same limit as the node's MAX_REQUEST_BYTES
  const TIMEOUT_MS = 30_000;
  // A request that opens a prompt waits for the user, who may take their time.
  const TIMEOUT_MS_FOR = {
    disot_requestPermissions: 10 * 60_000, disot_sign: 10 * 60_000, trust_set: 10 * 60_000, share: 10 * 60_000,
    collection_member: 10 * 60_000, // (it asks the user when it lets a peer in)
    cas_fetch: 10 * 60_000,
  };
  const MAX_IN_FLIGHT = 256; // requests from this frame awaiting an answer
  let inFlight = 0;

  const reply = (id, body) =>
    window.postMessage({ channel: CHANNEL, dir: 'response', id, reply: body }, window.location.origin);
  const error = (code, message) => ({ error: { code, message } });

  // Requests go to the node over a long-lived port (in Chrome straight to the offscreen
  // document, skipping the service worker). The port is used once the node has said hello on
  // it; until then, or if nothing answers (the document is not there yet: the service worker
  // creates it), a request goes as a runtime message through the background.
  const PORT_HELLO_MS = 2_000;
  const PORT_RETRY_MS = 1_000;
  let nodePort = null; // a promise of a port that has said hello, or of null
  let portFailedAt = -Infinity;
  let nextCall = 0;
  const calls = new Map(); // id → settle(reply or null)

  function connectNode() {
    if (nodePort) return nodePort;
    if (performance.now() - portFailedAt < PORT_RETRY_MS) return Promise.resolve(null);
    const attempt = new Promise((resolve) => {
      let port;
      try {
        port = api.runtime.connect({ name: 'disot-page' });
      } catch {
        resolve(null);
        return;
      }
      let ready = false;
      const fail = () => {
        if (nodePort === attempt) nodePort = null;
        if (!ready) portFailedAt = performance.now();
        resolve(null);
      };
      const timer = setTimeout(() => {
        if (ready) return;
        port.disconnect();
        fail();
      }, PORT_HELLO_MS);
      port.onMessage.addListener((m) => {
        if (m?.hello === true && !ready) {
          ready = true;
          clearTimeout(timer);
          resolve(port);
          return;
        }
        const settle = calls.get(m?.id);
        if (settle) {
          calls.delete(m.id);
          settle(m);
        }
      });
      port.onDisconnect.addListener(() => {
        clearTimeout(timer);
        void api.runtime.lastError; // read, so that Chrome does not log it as unchecked
        fail();
        // Requests sent on this port may or may not have been carried out: they fail.
        for (const settle of calls.values()) settle(null);
        calls.clear();
      });
    });
    nodePort = attempt;
    return attempt;
  }

  async function send(body, call) {
    const port = await connectNode();
    if (!port) return api.runtime.sendMessage({ to: 'background', body });
    const reply = new Promise((resolve) => calls.set(call.id, resolve));
    try {
      port.postMessage({ id: call.id, body });
    } catch (e) {
      calls.delete(call.id);
      throw e;
    }
    const r = await reply;
    if (r === null) throw new Error('the connection to the node closed');
    return r;
  }

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
    const call = { id: nextCall++ };
    const answer = send(body, call)
      .then((r) => (typeof r?.body === 'string' ? JSON.parse(r.body) : error(4900, 'disot peer gave no answer')))
      .catch((e) => error(4900, `disot peer is not reachable: ${e.message}`));
    try {
      return await Promise.race([answer, timeout]);
    } finally {
      clearTimeout(timer);
      calls.delete(call.id);
    }
  }

  // The binary path for content: a hidden extension frame serving this page over a
  // MessagePort. The frame learns the page's origin from the browser, not from us or the page.
  const FRAME_URL = api.runtime.getURL('frame.html');
  let frameLoaded = null;
  // Frames this script removed (their wasm stopped, or they never loaded): the provider knows,
  // or never had them.
  const removedHere = new WeakSet();
  let frameAsks = 0;
  const FRAME_LOAD_MS = 20_000;
  function openFrame() {
    // Only the latest ask is answered with a port: the provider waits for one at a time, and
    // an earlier one it gave up on (the check below can outlast it; it says so, see
    // 'frame-abandoned') would hold one of the frame's.
    const ask = ++frameAsks;
    if (!frameLoaded) {
      // Only for a site that holds a permission: the frame's address names this installation
      // of the extension (in Firefox by an id of its own), which a page can read, and any page
      // could otherwise use to tell its visitors apart.
      const opening = forward({ method: 'disot_getPermissions' }).then((r) => {
        if (!(r?.result?.length > 0)) throw new Error('this site holds no permission');
        return loadFrame();
      });
      frameLoaded = opening;
      // (Asked again next time: the site may have been granted one meanwhile.)
      opening.catch(() => { if (frameLoaded === opening) frameLoaded = null; });
    }
    return frameLoaded.then((iframe) => {
      if (ask !== frameAsks) return;
      const { port1, port2 } = new MessageChannel();
      iframe.contentWindow.postMessage({ channel: 'disot-frame' }, new URL(FRAME_URL).origin, [port1]);
      window.postMessage({ channel: CHANNEL, dir: 'frame' }, window.location.origin, [port2]);
    }).catch((e) => {
      // (Only to the ask that waits: a later one would take it for its own answer.)
      if (ask === frameAsks) window.postMessage({ channel: CHANNEL, dir: 'frame', error: e.message }, window.location.origin);
    });
  }

  function loadFrame() {
    return new Promise((resolve, reject) => {
      const iframe = document.createElement('iframe');
      iframe.src = FRAME_URL;
      iframe.hidden = true;
      iframe.setAttribute('aria-hidden', 'true');
      iframe.style.display = 'none';
      // An extension page loads in well under a second; one that does not load at all (no
      // load event, no error) is taken away, and asked for again next time.
      const late = setTimeout(() => {
        removedHere.add(iframe);
        iframe.remove();
        reject(new Error('content frame did not load'));
      }, FRAME_LOAD_MS);
      iframe.onload = () => {
        clearTimeout(late);
        resolve(iframe);
      };
      iframe.onerror = () => {
        clearTimeout(late);
        reject(new Error('content frame failed to load'));
      };
      const parent = document.documentElement ?? document;
      parent.append(iframe);
      // The page may remove it: the provider is told, and the next request opens another.
      const watch = new MutationObserver(() => {
        if (iframe.isConnected) return;
        watch.disconnect();
        frameLoaded = null;
        if (!removedHere.has(iframe)) window.postMessage({ channel: CHANNEL, dir: 'frame-gone' }, window.location.origin);
      });
      watch.observe(parent, { childList: true });
      // (And should the page replace its root element, the frame goes with it.)
      if (parent !== document) watch.observe(document, { childList: true });
    });
  }

  window.addEventListener('message', (ev) => {
    // (Nothing from a sandboxed document, which has no origin of its own: the browser could
    // report the origin of its address instead, whose grants are not its to use.)
    if (ev.source !== window || ev.data?.channel !== CHANNEL || window.origin === 'null') return;
    if (ev.data.dir === 'frame-crashed') {
      // The provider has let it go already; the next request opens another.
      frameLoaded?.then((iframe) => {
        removedHere.add(iframe);
        iframe.remove();
      }, () => {});
      return;
    }
    if (ev.data.dir === 'frame-abandoned') {
      // The provider stopped waiting for the frame it asked for: no port goes to nobody.
      frameAsks++;
      return;
    }
    if (ev.data.dir === 'open-frame') {
      openFrame();
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
