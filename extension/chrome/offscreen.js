// Chrome offscreen document: home of the node. It answers the service worker's forwarded
// requests (`to: 'node'`, sent from an extension context, not a tab), content scripts' ports
// and pages' content frames (see node-host.js).
import { getNode, handle, serveFrames, servePagePorts } from './node-host.js';

chrome.runtime.onMessage.addListener((msg, sender, sendResponse) => {
  if (msg?.to !== 'node' || sender.id !== chrome.runtime.id || sender.tab) return false;
  if (!['page', 'ui'].includes(msg.kind) || typeof msg.body !== 'string') return false;
  handle('chromium', openPrompt, msg.kind, String(msg.origin), msg.body).then((body) => sendResponse({ body }));
  return true;
});

// The offscreen document cannot open windows: the service worker does it.
function openPrompt(id) {
  chrome.runtime.sendMessage({ to: 'background', prompt: id }).catch((e) => console.error('disot: prompt', e));
}

servePagePorts('chromium', openPrompt);
serveFrames('chromium', openPrompt);
getNode('chromium', openPrompt).catch((e) => console.error('disot: node failed to start', e));
