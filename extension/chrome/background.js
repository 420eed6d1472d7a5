// Chrome service worker: a thin router. The node lives in an offscreen document (service
// workers have no RTCPeerConnection, and offscreen documents are not stopped when idle); this
// worker creates that document when it is missing and forwards requests to it.
import { classify, errorBody } from './sender.js';
import { connectPrompts, openPromptWindow } from './prompt-window.js';

const OFFSCREEN = 'offscreen.html';
let creating = null;
// Set once the document is known to exist, so that a request does not ask the browser again
// (that costs a round trip to the browser process on every request); cleared when a message
// to it fails.
let offscreenReady = false;

async function ensureOffscreen() {
  if (offscreenReady) return;
  const url = chrome.runtime.getURL(OFFSCREEN);
  const existing = await chrome.runtime.getContexts({ contextTypes: ['OFFSCREEN_DOCUMENT'], documentUrls: [url] });
  if (existing.length > 0) {
    offscreenReady = true;
    return;
  }
  // One creation at a time: a second createDocument while one exists is rejected.
  creating ??= chrome.offscreen
    .createDocument({ url: OFFSCREEN, reasons: ['WEB_RTC'], justification: 'runs the peer-to-peer node' })
    .finally(() => {
      creating = null;
    });
  await creating;
}

async function forward(kind, origin, body) {
  // The document may still be loading its module (or be gone); retry briefly until its
  // listener is there.
  for (let attempt = 0; ; attempt++) {
    try {
      await ensureOffscreen();
      const reply = await chrome.runtime.sendMessage({ to: 'node', kind, origin, body });
      if (typeof reply?.body === 'string') return reply.body;
      throw new Error('no answer from the node');
    } catch (e) {
      offscreenReady = false;
      if (attempt >= 20) return errorBody(4900, `disot peer is not reachable: ${e.message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

const offscreenUrl = chrome.runtime.getURL(OFFSCREEN);

chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
  if (msg?.to !== 'background') return false;
  // The node asks for a permission prompt; only its own document may.
  if (msg.prompt !== undefined) {
    if (sender.id === chrome.runtime.id && sender.url === offscreenUrl && Number.isSafeInteger(msg.prompt)) {
      openPromptWindow(msg.prompt).catch((e) => console.error('disot: opening prompt', e));
    }
    return false;
  }
  const who = classify(sender);
  if (!who || typeof msg.body !== 'string') {
    sendResponse({ body: errorBody(4100, 'sender not allowed') });
    return false;
  }
  forward(who.kind, who.origin, msg.body).then((body) => sendResponse({ body }));
  return true;
});

connectPrompts((body) => forward('ui', new URL(offscreenUrl).origin, body));

// The peer is always on: start it with the browser, not only on the first request.
chrome.runtime.onStartup.addListener(() => ensureOffscreen());
chrome.runtime.onInstalled.addListener(() => ensureOffscreen());
ensureOffscreen().catch((e) => console.error('disot: creating offscreen document', e));
