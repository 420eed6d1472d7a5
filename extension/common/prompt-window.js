// Opens the approval prompt for a permission request in its own small window, and reports a
// window closed without an answer as a rejection. Used by both browsers' backgrounds.
//
// Which window shows which request is kept in session storage as well as in memory: the
// background may be stopped while a prompt is open (Chrome stops an idle service worker after
// about 30 s; Firefox suspends an idle event page), and a window closed after that must still
// decline its request, or the site could ask nothing more until the browser restarts.
const api = globalThis.browser ?? globalThis.chrome;
const open = new Map(); // window id -> request id
const session = api.storage?.session;
const key = (windowId) => `prompt-window:${windowId}`;

export async function openPromptWindow(id) {
  const win = await api.windows.create({
    url: api.runtime.getURL(`prompt.html?id=${encodeURIComponent(id)}`),
    type: 'popup',
    width: 420,
    height: 360,
  });
  open.set(win.id, id);
  await session?.set({ [key(win.id)]: id });
}

/** `decline(id)` is called when a prompt window closes; a request already answered ignores it. */
export function onPromptClosed(decline) {
  api.windows.onRemoved.addListener(async (windowId) => {
    const known = open.get(windowId);
    open.delete(windowId);
    if (known !== undefined) decline(known);
    if (!session) return;
    try {
      const stored = (await session.get(key(windowId)))[key(windowId)];
      await session.remove(key(windowId));
      if (known === undefined && stored !== undefined) decline(stored);
    } catch (e) {
      console.error('disot: the prompt window closed, its request unknown', e);
    }
  });
}

export const declineBody = (id) => JSON.stringify({ method: 'permissions_decide', params: { id, approve: false } });
