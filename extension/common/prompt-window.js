// Opens the approval prompt for permission requests, one window at a time, and reports a
// window closed without an answer as a rejection. Used by both browsers' backgrounds.
//
// Requests that arrive while a prompt is open wait in a queue and get their window when it
// closes (answered or not), so that sites, however many origins they use, cannot stack windows
// on the user's screen; the open prompt says how many wait after it.
//
// The state is kept in session storage as well as in memory: the background may be stopped
// while a prompt is open (Chrome stops an idle service worker after about 30 s; Firefox
// suspends an idle event page), and a window closed after that must still decline its request
// and open the next, or sites could ask nothing more until the browser restarts.
const api = globalThis.browser ?? globalThis.chrome;
const session = api.storage?.session;
const KEY = 'prompt-windows';

// Where a prompt shows: a window of its own, or a tab where the browser has no windows
// (Firefox for Android). `windowId` below is then the tab's id.
const surface = api.windows
  ? {
    open: async (url) => (await api.windows.create({ url, type: 'popup', width: 420, height: 400 })).id,
    get: (id) => api.windows.get(id),
    removed: api.windows.onRemoved,
  }
  : { open: async (url) => (await api.tabs.create({ url })).id, get: (id) => api.tabs.get(id), removed: api.tabs.onRemoved };

/** `{windowId, id, queue}`: the open prompt window, the request it shows, those waiting. */
let state = null;
// One change to the state at a time: a request arriving while its window is still being created
// must join the queue, not open a second window.
let chain = Promise.resolve();
function serially(change) {
  const run = chain.then(async () => {
    if (!state) {
      try {
        state = (await session?.get(KEY))?.[KEY] ?? null;
      } catch (e) {
        console.error('disot: reading the prompt state', e);
      }
      state ??= { windowId: null, id: null, queue: [] };
    }
    await change(state);
    await session?.set({ [KEY]: state });
  });
  chain = run.catch(() => {});
  return run;
}

async function show(s, id) {
  const windowId = await surface.open(api.runtime.getURL(`prompt.html?id=${encodeURIComponent(id)}`));
  Object.assign(s, { windowId, id });
}

const stillOpen = (windowId) => surface.get(windowId).then(() => true, () => false);
let callNode = async () => '{}'; // set by connectPrompts: a UI request's body to its answer's
const decline = (id) => callNode(JSON.stringify({ method: 'permissions_decide', params: { id, approve: false } }));

/** Whether the node still holds request `id` (if it cannot say, it is taken to). */
async function held(id) {
  try {
    const answer = JSON.parse(await callNode(JSON.stringify({ method: 'permissions_pending', params: { id } })));
    return !/no such pending request/.test(answer.error?.message ?? '');
  } catch {
    return true;
  }
}

/**
 * The open prompt window is gone (or was never there): its request is declined (one answered
 * already ignores it), and the next waiting request gets a window.
 */
async function next(s) {
  if (s.id !== null) decline(s.id);
  Object.assign(s, { windowId: null, id: null });
  // A waiting request the node no longer holds (the user blocked its site from another's
  // prompt, it waited too long, or it was made before the node started again) gets no window.
  // (One that goes between this check and its window closes the window at once.)
  for (let id; (id = s.queue.shift()) !== undefined;) {
    if (!(await held(id))) continue;
    try {
      return await show(s, id);
    } catch (e) {
      console.error('disot: opening prompt', e);
      decline(id);
    }
  }
}

export function openPromptWindow(id) {
  return serially(async (s) => {
    // (The node bounds how many requests wait at once.)
    s.queue.push(id);
    // A window whose closing went unseen (the background was stopped meanwhile) counts as
    // closed, as if it had been seen.
    if (s.windowId !== null && (await stillOpen(s.windowId))) return;
    await next(s);
  });
}

/**
 * `call(body)` sends a UI request's body to the node and resolves to its answer's body: a
 * request whose prompt window closed is declined with it (see `next`).
 */
export function connectPrompts(call) {
  callNode = call;
  surface.removed.addListener((windowId) => serially(async (s) => {
    if (windowId === s.windowId) await next(s);
  }).catch((e) => console.error('disot: after a prompt window closed', e)));
}

