// Opens the approval prompt for a permission request in its own small window, and reports a
// window closed without an answer as a rejection. Used by both browsers' backgrounds.
const api = globalThis.browser ?? globalThis.chrome;
const open = new Map(); // window id -> request id

export async function openPromptWindow(id) {
  const win = await api.windows.create({
    url: api.runtime.getURL(`prompt.html?id=${encodeURIComponent(id)}`),
    type: 'popup',
    width: 420,
    height: 360,
  });
  open.set(win.id, id);
}

/** `decline(id)` is called when a prompt window closes; a request already answered ignores it. */
export function onPromptClosed(decline) {
  api.windows.onRemoved.addListener((windowId) => {
    const id = open.get(windowId);
    if (id === undefined) return;
    open.delete(windowId);
    decline(id);
  });
}

export const declineBody = (id) => JSON.stringify({ method: 'permissions_decide', params: { id, approve: false } });
