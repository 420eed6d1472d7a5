import { call, oneLine, visibleJson } from './ui.js';

const $ = (id) => document.getElementById(id);
const id = Number(new URLSearchParams(location.search).get('id'));
const DESCRIPTIONS = {
  cas: 'store content in your peer, read it back, list and pin it',
  sign: 'ask you to sign entries with your identity (you approve each one)',
  trust: 'see whom you trust, and ask you to trust peers (you approve each change)',
  share: 'share content and collections with peers (you approve each share), and see what peers shared with you',
};

let deciding = false;
/** The node stopped waiting for this request: nothing here may be answered any more. */
let expired = false;

// Requests from other sites (or this one's next) wait for this prompt: say how many.
function showWaiting({ waiting }) {
  $('waiting').textContent = waiting === 1
    ? '1 more request waits: it opens when this one is answered or closed.'
    : `${waiting} more requests wait: each opens when the one before is answered or closed.`;
  $('waiting').hidden = !(waiting > 0);
}

const buttons = ['approve', 'reject', 'block'];
const enable = (on) => buttons.forEach((b) => { $(b).disabled = !on; });

/**
 * How long the answers stay disabled once the request shows (and again whenever the window
 * comes back into view): a site could have the user click fast where the window is about to
 * open, and have that click approve what they never read.
 */
const ARM_MS = 800;
let armTimer;
function arm() {
  enable(false);
  clearTimeout(armTimer);
  armTimer = setTimeout(() => {
    if (!deciding && document.visibilityState === 'visible') enable(true);
  }, ARM_MS);
}

/** The user's answer; `block` ('site' or 'domain', with a rejection): stop it asking. */
async function decide(approve, block) {
  deciding = true;
  enable(false);
  try {
    const remember = approve && !$('remember-row').hidden && $('remember').checked;
    await call('permissions_decide', { id, approve, ...(remember ? { remember } : {}), ...(block ? { block } : {}) });
    window.close();
  } catch (e) {
    $('error').textContent = e.message;
    $('error').hidden = false;
    // The answer can be given again, unless the request is gone.
    if (!/no such pending request/.test(e.message)) {
      deciding = false;
      arm();
    }
  }
}

/** The request, asked for again for a few seconds while the node cannot answer (starting). */
async function pending() {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call('permissions_pending', { id });
    } catch (e) {
      if (/no such pending request/.test(e.message) || attempt >= 10) throw e;
      await new Promise((r) => setTimeout(r, 1_000));
    }
  }
}

/**
 * The site, with its registrable domain (`example.co.uk` of `https://shop.example.co.uk:8443`,
 * the part no one else can have) set apart from the rest; its text is the whole origin.
 */
function showOrigin(origin, domain) {
  const el = $('origin');
  const start = origin.indexOf('://') + 3;
  // (A host written with a final dot is the same host: its domain is set apart before it.)
  const host = origin.slice(start).match(/^(\[[^\]]*\]|[^:/]*)/)[0].replace(/\.+$/, '');
  const end = start + host.length;
  const at = end - (domain?.length ?? 0);
  if (!domain || start < 3 || !host.toLowerCase().endsWith(domain) || !(at === start || origin[at - 1] === '.')) {
    el.textContent = origin;
    return;
  }
  const part = (tag, text) => Object.assign(document.createElement(tag), { textContent: text });
  el.replaceChildren(part('span', origin.slice(0, at)), part('b', origin.slice(at, end)), part('span', origin.slice(end)));
  el.classList.add('split');
}

try {
  const request = await pending();
  showOrigin(request.origin, request.blockDomain);
  $('insecure').hidden = request.secure !== false;
  showWaiting(request);
  if (request.sign) {
    // A signing request: the whole entry, exactly as it will be signed.
    document.title = 'Disot Peer: sign an entry';
    $('title').textContent = 'Sign an entry';
    $('asks').textContent = 'asks you to sign this entry with your identity:';
    // What it says comes first (the box scrolls), and nothing in it can draw lines of its
    // own: every line break or invisible character in a value shows as its escape.
    const { type, contentHash, ...rest } = request.sign;
    $('entry').textContent = visibleJson({ type, contentHash, ...rest });
    $('entry').hidden = false;
    $('approve').textContent = 'Sign';
  } else if (request.trust) {
    // A trust request: exactly which peer, at which level, for what.
    const { did, level, context } = request.trust;
    document.title = 'Disot Peer: trust a peer';
    $('title').textContent = level === 0 ? 'Revoke trust' : 'Trust a peer';
    $('asks').textContent = level === 0
      ? `asks you to stop trusting this peer (${context}):`
      : `asks you to trust this peer at level ${level} of 100 (${context}):`;
    $('entry').textContent = did;
    $('entry').hidden = false;
    $('approve').textContent = level === 0 ? 'Revoke' : 'Trust';
  }
  if (request.share) {
    // A share: what, with whom, and the note, exactly as it will be shared.
    const { cid, collection, to, note, object } = request.share;
    document.title = 'Disot Peer: share';
    $('title').textContent = 'Share';
    const what = collection
      ? `the collection ${object?.name ? `“${oneLine(object.name)}” (${object.count} entries)` : oneLine(collection)}`
      : `${object?.name ? oneLine(object.name) : cid} (${object?.size ?? '?'} bytes)`;
    const { role } = request.share;
    $('asks').textContent = role
      ? `asks you to let this peer ${role === 'reader' ? 'read' : 'read and edit'} ${what}:`
      : `asks you to share ${what} with:`;
    $('entry').textContent = [...[to].flat().map((did) => oneLine(did)), ...(note ? [`note: ${oneLine(note)}`] : []), ...(cid ? [cid] : [])].join('\n');
    $('entry').hidden = false;
    $('approve').textContent = 'Share';
    $('remember-row').hidden = false;
  }
  $('permissions').replaceChildren(...request.permissions.map((p) => {
    const li = document.createElement('li');
    li.textContent = DESCRIPTIONS[p] ?? p;
    li.dataset.permission = p;
    return li;
  }));
  // The site, or every site under its domain (one answer for a site asking from many
  // subdomains), may be stopped from asking again; the popup lists what is blocked.
  if (request.blockDomain) {
    $('block-scope').append(new Option(`every site under ${request.blockDomain}`, 'domain'));
  }
  $('block-row').hidden = false;
  arm();
  document.addEventListener('visibilitychange', () => {
    if (!deciding && !expired) arm();
  });
  $('approve').addEventListener('click', () => decide(true));
  $('reject').addEventListener('click', () => decide(false));
  $('block').addEventListener('click', () => decide(false, $('block-scope').value));
  // A request the node stopped waiting for (it timed out, or the node started again after an
  // error) is not left on screen to be answered: the window says so and closes.
  const watch = setInterval(async () => {
    if (deciding) return; // (an answer failed to go is followed again)
    try {
      showWaiting(await call('permissions_pending', { id }));
    } catch (e) {
      if (deciding || !/no such pending request/.test(e.message)) return;
      clearInterval(watch);
      expired = true;
      clearTimeout(armTimer);
      enable(false);
      $('error').textContent = 'This request is no longer waiting: the site has to ask again.';
      $('error').hidden = false;
      setTimeout(() => window.close(), 3_000);
    }
  }, 2_000);
} catch (e) {
  if (/no such pending request/.test(e.message)) {
    // Gone before it was shown (it waited its turn too long, or the node started again):
    // nothing to say; closing opens the next.
    window.close();
  } else {
    $('error').textContent = `This request cannot be shown (${e.message}): close this window to turn it down.`;
    $('error').hidden = false;
  }
}
