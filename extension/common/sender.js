// Who sent a runtime message, decided only from what the browser reports (`sender`), never
// from the message: extension pages (popup, options, prompt) are "ui"; content scripts in http(s)
// pages are "page", with the page's origin. Anything else is refused.
const api = globalThis.browser ?? globalThis.chrome;
const extensionOrigin = new URL(api.runtime.getURL('')).origin;
const UI_PAGES = new Set(['/popup.html', '/options.html', '/prompt.html']);

export function classify(sender) {
  if (!sender || sender.id !== api.runtime.id || !sender.url) return null;
  let url;
  try {
    url = new URL(sender.url);
  } catch {
    return null;
  }
  // (Only these pages: never the content frame, which web pages can load, and in a tab of a
  // web page Chrome may not tell the tab's URL.)
  if (url.origin === extensionOrigin && UI_PAGES.has(url.pathname) && !sender.tab?.url?.startsWith('http')) {
    return { kind: 'ui', origin: extensionOrigin };
  }
  if (sender.tab && (url.protocol === 'https:' || url.protocol === 'http:')) {
    // Chrome gives the frame's origin directly; Firefox only its URL.
    return { kind: 'page', origin: sender.origin ?? url.origin };
  }
  return null;
}

export function errorBody(code, message) {
  return JSON.stringify({ error: { code, message } });
}
