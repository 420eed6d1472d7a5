// Firefox background (MV3 event page, a DOM page): the node runs here directly.
import { classify, errorBody } from './sender.js';
import { getNode, handle, servePagePorts } from './node-host.js';
import { connectPrompts, openPromptWindow } from './prompt-window.js';

function openPrompt(id) {
  openPromptWindow(id).catch((e) => console.error('disot: opening prompt', e));
}
connectPrompts((body) => handle('firefox', openPrompt, 'ui', browser.runtime.getURL(''), body));

browser.runtime.onMessage.addListener((msg, sender, sendResponse) => {
  if (msg?.to !== 'background') return false;
  const who = classify(sender);
  if (!who || typeof msg.body !== 'string') {
    sendResponse({ body: errorBody(4100, 'sender not allowed') });
    return false;
  }
  handle('firefox', openPrompt, who.kind, who.origin, msg.body).then((body) => sendResponse({ body }));
  return true;
});

// Firefox suspends an MV3 event page after `extensions.background.idle.timeout` (30 s) without
// events, closing its sockets and dropping the node; open WebSockets do not count as activity.
// Calling an extension API resets that timer, so a short heartbeat keeps the peer always on.
const HEARTBEAT_MS = 5_000;
setInterval(() => browser.runtime.getPlatformInfo(), HEARTBEAT_MS);

servePagePorts('firefox', openPrompt);
getNode('firefox', openPrompt).catch((e) => console.error('disot: node failed to start', e));
