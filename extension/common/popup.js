import { call, oneLine } from './ui.js';

const $ = (id) => document.getElementById(id);

function item(text) {
  const li = document.createElement('li');
  li.textContent = text;
  return li;
}

function formatBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  for (; n >= 1024 && i < units.length - 1; i++) n /= 1024;
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

async function refresh() {
  try {
    const s = await call('ui_status');
    document.body.dataset.locked = String(Boolean(s.locked));
    $('locked').hidden = !s.locked;
    if (s.locked) {
      $('state').textContent = 'locked';
      $('state').dataset.state = 'offline';
      return;
    }
    $('did').textContent = s.did;
    $('peer-id').textContent = s.peerId;
    $('peer-count').textContent = String(s.connections);
    $('objects').textContent = String(s.storage.objects);
    $('pinned').textContent = String(s.storage.pinned);
    $('used').textContent = formatBytes(s.storage.bytes);
    const connected = s.bootstrap.some((b) => b.state === 'connected');
    const state = connected ? 'connected' : s.bootstrap.length ? 'offline' : 'no bootstrap node';
    $('state').textContent = state;
    $('state').dataset.state = connected ? 'connected' : 'offline';
    $('relay').textContent = s.relay.state === 'reserved' ? `reserved at ${s.relay.relay}` : `${s.relay.state}${s.relay.error ? ` (${oneLine(s.relay.error)})` : ''}`;
    $('bootstrap').replaceChildren(
      ...s.bootstrap.map((b) => item(`node ${b.peerId}: ${b.state}${b.failures ? ` (${b.failures} failed dials)` : ''}`)));
    $('peers').replaceChildren(
      ...s.peers.map((p) => {
        const via = p.connections.map((c) => c.transport).join(' + ');
        // A DID is shown as verified only once the peer's signed profile checked out.
        const who = p.identity
          ? `${p.identity.displayName ? `${p.identity.displayName} · ` : ''}${p.identity.did} ✓ verified`
          : `${p.did ?? p.peerId}${p.identityError ? ` · not verified: ${oneLine(p.identityError)}` : ''}`;
        const li = item(`${who} · ${via}${p.rttMs != null ? ` · ${p.rttMs.toFixed(0)} ms` : ''}`);
        li.dataset.peerId = p.peerId;
        if (p.identity) li.dataset.verifiedDid = p.identity.did;
        li.title = p.peerId;
        const hangUp = Object.assign(document.createElement('button'), { className: 'hang-up', textContent: 'Hang up', title: 'Close every connection to this peer' });
        hangUp.addEventListener('click', () => call('peers_disconnect', { peerId: p.peerId }).then(refresh, (e) => {
          $('error').textContent = e.message;
          $('error').hidden = false;
        }));
        li.append(' ', hangUp);
        return li;
      }));
    $('display-name').textContent = s.displayName || '—';
    $('crash').hidden = !s.lastCrash;
    if (s.lastCrash) {
      $('crash').textContent = `The peer stopped after an error at ${new Date(s.lastCrash.at).toLocaleTimeString()} and was started again: ${s.lastCrash.message}`;
    }
    $('refused-box').hidden = s.refused.length === 0;
    $('refused-count').textContent = String(s.refused.length);
    $('refused').replaceChildren(...s.refused.slice().reverse().map((r) =>
      item(`${new Date(r.atMs).toLocaleTimeString()} ${r.what} from ${r.peerId.slice(0, 12)}…: ${oneLine(r.reason)}`)));
    busy = s.transfers.length > 0;
    $('transfers').replaceChildren(
      ...(s.transfers.length ? s.transfers.map((t) => {
        const li = item(`${t.cid.slice(0, 16)}… ${formatBytes(t.bytes)}${t.total != null ? ` of ${formatBytes(t.total)}` : ''} `);
        li.dataset.cid = t.cid;
        const bar = document.createElement('progress');
        if (t.total) {
          bar.max = t.total;
          bar.value = Math.min(t.bytes, t.total);
        }
        li.append(bar);
        return li;
      }) : [Object.assign(document.createElement('li'), { className: 'none', textContent: 'none' })]),
      ...(s.fetchesWaiting > 0 ? [Object.assign(item(`${s.fetchesWaiting} more waiting for their turn`), { className: 'waiting' })] : []));
    await showGrants();
    $('error').hidden = true;
    $('stopped').hidden = true;
  } catch (e) {
    $('state').textContent = 'offline';
    $('state').dataset.state = 'offline';
    $('error').textContent = e.message;
    $('error').hidden = false;
    // Stopped after crashing too often: the user may start it again (node-host.js).
    $('stopped').hidden = !/failed to start: it stopped after \d+ errors/.test(e.message);
  }
}

$('restart').addEventListener('click', async () => {
  $('restart').disabled = true;
  try {
    await call('node_restart');
    $('stopped').hidden = true;
    $('error').hidden = true;
  } catch (e) {
    $('error').textContent = e.message;
  } finally {
    $('restart').disabled = false;
  }
});

/**
 * A list item's button: disabled while its action runs; if that fails, the button says so (the
 * reason as its tooltip) and can be clicked again. (The lists are drawn again only when they
 * change, so a button left disabled would stay so.)
 */
function actionButton(label, className, action) {
  const button = document.createElement('button');
  button.textContent = label;
  if (className) button.className = className;
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await action();
    } catch (e) {
      button.textContent = `${label}: failed, try again`;
      button.title = e.message;
      button.disabled = false;
    }
  });
  return button;
}

let shownTrust = '';
let myDid = null;

async function showTrust() {
  const list = await call('trust_list');
  const key = JSON.stringify(list.map(({ did, level, score }) => [did, level, score]));
  if (key === shownTrust) return;
  shownTrust = key;
  drawTrust(list, myDid ?? (myDid = (await call('ui_status')).did));
  if (list.length === 0) {
    $('trust').replaceChildren(Object.assign(document.createElement('li'), { className: 'none', textContent: 'none' }));
    return;
  }
  $('trust').replaceChildren(...list.map(({ did, level, score, context, path }) => {
    const short = `${did.slice(0, 16)}…${did.slice(-6)}`;
    let text;
    if (level === null) text = `${short}: through ${path.length - 2} trusted peer(s), score ${score.toFixed(2)} (${context})`;
    else if (level === 0) text = `${short}: revoked (${context})`;
    else text = `${short}: level ${level}, score ${score === null ? '—' : score.toFixed(2)} (${context}) `;
    const li = item(text);
    li.dataset.did = did;
    li.title = did;
    if (level !== null && level > 0) {
      li.append(actionButton('Revoke', 'revoke', async () => {
        await call('trust_set', { did, level: 0, context });
        await showTrust();
      }));
    }
    return li;
  }));
}

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text) e.textContent = text;
  return e;
}

/** The trust graph: this peer in the middle, peers it trusts directly on an inner ring and
 * peers trusted through others on an outer one; each edge is a hop of a path that gives a score. */
// Peers drawn in the trust graph at most: those trusted directly first, then the highest
// scores (each peer trusted can pass on a thousand others; the list shows them all).
const MAX_DRAWN = 60;

function drawTrust(list, me) {
  const graph = $('trust-graph');
  const live = list.filter((e) => e.score !== null && e.path)
    .sort((a, b) => (b.level !== null) - (a.level !== null) || b.score - a.score)
    .slice(0, MAX_DRAWN);
  graph.hidden = live.length === 0;
  if (graph.hidden) return;
  const placed = new Set([me]);
  const rings = [[me], [], []];
  const place = (did, ring) => {
    if (placed.has(did)) return;
    placed.add(did);
    rings[ring].push(did);
  };
  for (const e of live) if (e.level !== null) place(e.did, 1);
  for (const e of live) if (e.level === null) place(e.did, 2);
  for (const e of live) for (const d of e.path.slice(1, -1)) place(d, 2);
  const byDid = new Map(live.map((e) => [e.did, e]));
  const at = new Map();
  rings.forEach((dids, ring) => dids.forEach((did, i) => {
    const angle = (2 * Math.PI * i) / Math.max(dids.length, 1) - Math.PI / 2 + ring * 0.4;
    at.set(did, ring === 0 ? [0, 0] : [Math.cos(angle) * ring * 42, Math.sin(angle) * ring * 42]);
  }));
  const edges = new Set();
  for (const e of live) for (let i = 1; i < e.path.length; i++) edges.add(`${e.path[i - 1]} ${e.path[i]}`);
  const parts = [...edges].map((edge) => {
    const [a, b] = edge.split(' ').map((d) => at.get(d) ?? [0, 0]);
    return svg('line', { x1: a[0], y1: a[1], x2: b[0], y2: b[1], 'data-edge': edge });
  });
  for (const [did, [x, y]] of at) {
    const entry = byDid.get(did);
    const cls = did === me ? 'me' : entry?.level === null ? 'through' : 'direct';
    const dot = svg('circle', { cx: x, cy: y, r: did === me ? 7 : 5, class: cls, 'data-did': did });
    dot.append(svg('title', {}, did === me ? `you (${did})` : `${did}${entry ? `: score ${entry.score.toFixed(2)}` : ''}`));
    parts.push(dot, svg('text', { x, y: y + 14 }, did === me ? 'you' : did.slice(-4)));
  }
  graph.replaceChildren(...parts);
}

$('gc').addEventListener('click', async () => {
  $('gc').disabled = true;
  $('gc-status').textContent = 'Freeing…';
  $('gc-status').className = '';
  try {
    const r = await call('cas_gc');
    $('gc-status').textContent = `Removed ${r.objects} unpinned object${r.objects === 1 ? '' : 's'} and ${r.blocks} block${r.blocks === 1 ? '' : 's'}`;
    await refresh();
  } catch (e) {
    $('gc-status').textContent = e.message;
    $('gc-status').className = 'error';
  } finally {
    $('gc').disabled = false;
  }
});

$('invite-create').addEventListener('click', async () => {
  $('invite-status').textContent = '';
  try {
    const { invite, qrSvg } = await call('invite_create');
    $('invite-out').value = invite;
    $('invite-out').hidden = false;
    $('invite-qr').src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(qrSvg)}`;
    $('invite-qr').hidden = false;
  } catch (e) {
    $('invite-status').textContent = e.message;
    $('invite-status').className = 'error';
  }
});

$('invite-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('invite-status').textContent = '';
  try {
    const r = await call('invite_accept', { invite: $('invite-in').value.trim(), level: Number($('invite-level').value) });
    $('invite-status').textContent = `Trusting ${r.displayName || r.did} at ${r.level}${r.dialing.length ? '; connecting…' : ' (not reachable now)'}`;
    $('invite-status').className = '';
    $('invite-in').value = '';
    await showTrust();
  } catch (e) {
    $('invite-status').textContent = e.message;
    $('invite-status').className = 'error';
  }
});

$('trust-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('trust-error').hidden = true;
  try {
    await call('trust_set', { did: $('trust-did').value.trim(), level: Number($('trust-level').value) });
    $('trust-did').value = '';
    await showTrust();
  } catch (e) {
    $('trust-error').textContent = e.message;
    $('trust-error').hidden = false;
  }
});

let shownGrants = '';

/** Sites and domains whose requests are turned down without a prompt, each with Unblock. */
function showBlocked(blocked) {
  $('blocked-title').hidden = $('blocked').hidden = blocked.length === 0;
  $('blocked').replaceChildren(...blocked.map(({ blocked: what }) => {
    const li = item(`${what.includes('://') ? what : `every site under ${what}`} `);
    li.dataset.blocked = what;
    li.append(actionButton('Unblock', '', async () => {
      await call('permissions_unblock', { blocked: what });
      await showGrants();
    }));
    return li;
  }));
}

async function showGrants() {
  const [list, preauth, blocked] = await Promise.all([call('permissions_list'), call('share_preauth_list'), call('permissions_blocked')]);
  const key = JSON.stringify([list, preauth, blocked]);
  if (key === shownGrants) return; // keep buttons stable between refreshes
  shownGrants = key;
  showBlocked(blocked);
  if (list.length === 0) {
    $('grants').replaceChildren(Object.assign(document.createElement('li'), { className: 'none', textContent: 'none' }));
    return;
  }
  $('grants').replaceChildren(...list.map(({ origin, grants }) => {
    const li = item(`${origin}: ${grants.map((g) => g.permission).join(', ')} `);
    li.dataset.origin = origin;
    // Recipients this origin may share with unasked, each with a button to ask again.
    const unasked = preauth.find((p) => p.origin === origin)?.dids ?? [];
    const sub = document.createElement('ul');
    for (const did of unasked) {
      const row = item(`shares with ${short(did)} without asking `);
      row.className = 'preauth';
      row.dataset.did = did;
      row.append(actionButton('Ask again', '', async () => {
        await call('share_preauth_remove', { origin, did });
        await showGrants();
      }));
      sub.append(row);
    }
    li.append(actionButton('Revoke', 'revoke', async () => {
      await call('permissions_revoke', { origin });
      await showGrants();
    }));
    if (unasked.length) li.append(sub);
    return li;
  }));
}

// Once a second; four times a second while transfers run, so their progress bars move.
let busy = false;
$('unlock-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('unlock-error').hidden = true;
  try {
    await call('identity_unlock', { passphrase: $('unlock-pass').value });
    $('unlock-pass').value = '';
    await refresh();
    await loadTrust();
  } catch (e) {
    $('unlock-error').textContent = e.message;
    $('unlock-error').hidden = false;
  }
});

const short = (did) => `${did.slice(0, 16)}…${did.slice(-6)}`;
let shownShares = '';
// The lists of shares and collections, read again only when the peer's change feed moved on
// (a large collection is not read every second), or every ten seconds.
let lists = null;

/**
 * Peers cut off after their message made the node crash, each with Allow again, and saved
 * documents set aside after loading one did, each with Open again (at the node's next start).
 */
function showSetAside(cutOff, documents) {
  $('cut-off-box').hidden = cutOff.length + documents.length === 0;
  const row = (text, button, method, params, data) => {
    const li = item(`${text} `);
    Object.assign(li.dataset, data);
    const act = document.createElement('button');
    act.textContent = button;
    act.addEventListener('click', async () => {
      act.disabled = true;
      try {
        await call(method, params);
      } catch (e) {
        $('error').textContent = e.message;
        $('error').hidden = false;
      }
      shownShares = '';
      await showShares();
    });
    li.append(act);
    return li;
  };
  const since = (at) => new Date(at).toLocaleString();
  const docText = (d) => `document ${d.id} since ${since(d.at)}: ${d.reason}`;
  const reopening = (d) => {
    const li = item(`${docText(d)} (opened again when Disot Peer starts next)`);
    Object.assign(li.dataset, { document: d.id, reopening: 'yes' });
    return li;
  };
  $('cut-off').replaceChildren(
    ...cutOff.map((c) => row(`peer ${c.did ? short(c.did) : c.peerId} since ${since(c.at)}: ${c.reason}`,
      'Allow again', 'sync_peer_allow', { peerId: c.peerId }, { peerId: c.peerId })),
    ...documents.map((d) => (d.openAtNextStart
      ? reopening(d)
      : row(docText(d),
        'Open again at next start', 'sync_document_retry', { id: d.id }, { document: d.id }))),
  );
}

/** Shares, collections and sync status: drawn again only when they change. */
async function showShares() {
  const [{ seq }, sync] = await Promise.all([call('sync_watch'), call('sync_status')]);
  if (lists?.seq !== seq || Date.now() - lists.at > 10_000 || !shownShares) {
    const [shares, collections] = await Promise.all([call('shares_list'), call('collections_list')]);
    lists = { seq, at: Date.now(), shares, collections };
  }
  const { shares, collections } = lists;
  const { sent, heard, forMe } = sync.announcements;
  const key = JSON.stringify([shares, collections, sync.peers.map((p) => [p.did, p.sessions, p.error]), sync.overrides, sent, heard, forMe, sync.cutOff, sync.setAside]);
  if (key === shownShares) return;
  shownShares = key;
  showSetAside(sync.cutOff ?? [], sync.setAside ?? []);
  const none = () => Object.assign(document.createElement('li'), { className: 'none', textContent: 'none' });
  const what = (s) => s.collection
    ? `collection ${oneLine(collections.find((c) => c.id === s.collection)?.name ?? s.collection)}`
    : `${oneLine(s.name ?? s.cid)} (${formatBytes(s.size ?? 0)})`;
  $('shared-with-me').replaceChildren(...(shares.sharedWithMe.length ? shares.sharedWithMe.map((s) => {
    const li = item(`${what(s)} from ${short(s.from)}${s.note ? `: “${oneLine(s.note)}”` : ''}${s.revoked ? ' — revoked' : s.held ? ' — here' : ' — not fetched'}`);
    Object.assign(li.dataset, { share: s.id, cid: s.cid ?? '', held: String(s.held), revoked: String(s.revoked) });
    li.title = s.cid ?? s.collection;
    return li;
  }) : [none()]));
  $('shared-by-me').replaceChildren(...(shares.sharedByMe.length ? shares.sharedByMe.map((s) => {
    const li = item(`${what(s)} to ${short(s.to)}${s.revoked ? ' — revoked' : ''} `);
    Object.assign(li.dataset, { share: s.id, to: s.to });
    if (!s.revoked) {
      li.append(actionButton('Revoke', 'revoke', async () => {
        await call('share_revoke', { to: s.to, id: s.id });
        await showShares();
      }));
    }
    return li;
  }) : [none()]));
  $('collections').replaceChildren(...(collections.length ? collections.map((c) => {
    const li = item(`${oneLine(c.name)}: ${c.count} item(s), ${c.editors.length + 1} editor(s), ${c.readers.length} reader(s)`);
    li.dataset.collection = c.id;
    return li;
  }) : [none()]));
  if (document.activeElement?.form !== $('policy-form')) {
    $('policy-fetch').value = String(sync.policy.fetchAt);
    $('policy-metadata').value = String(sync.policy.metadataAt);
  }
  $('sync-announcements').textContent = `cas-updates: ${sent} announced, ${heard} heard, ${forMe} with news for this peer`;
  $('sync-peers').replaceChildren(...sync.peers.map((p) => {
    const li = item(`${short(p.did)}: ${p.level}, ${p.sessions} session(s), last ${new Date(p.atMs).toLocaleTimeString()}${p.error ? ` (${p.error})` : p.stats ? `, ${formatBytes(p.stats.bytesSent)} sent, ${formatBytes(p.stats.bytesReceived)} received` : ''}`);
    li.dataset.did = p.did;
    // What to take from this peer: by trust (the policy above), or the user's own choice.
    const pick = document.createElement('select');
    pick.className = 'peer-level';
    pick.title = 'What to take from this peer';
    for (const [value, label] of [['', 'by trust'], ['full', 'fetch and pin'], ['metadata', 'metadata only'], ['nothing', 'nothing']]) {
      const option = document.createElement('option');
      option.value = value;
      option.textContent = label;
      pick.append(option);
    }
    pick.value = sync.overrides?.[p.did] ?? '';
    pick.addEventListener('change', async () => {
      $('sync-error').hidden = true;
      try {
        await call('sync_peer_set', { did: p.did, level: pick.value || null });
        shownShares = '';
        await showShares();
      } catch (e) {
        $('sync-error').textContent = e.message;
        $('sync-error').hidden = false;
      }
    });
    li.append(' ', pick);
    return li;
  }));
}

$('policy-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('sync-error').hidden = true;
  try {
    await call('sync_policy_set', { fetchAt: Number($('policy-fetch').value), metadataAt: Number($('policy-metadata').value) });
    shownShares = '';
    await showShares();
  } catch (e) {
    $('sync-error').textContent = e.message;
    $('sync-error').hidden = false;
  }
});

// Trust changes only here (each credential is verified when listed): shown once, and after edits.
const loadTrust = () => showTrust().catch((e) => { $('trust-error').textContent = e.message; $('trust-error').hidden = false; });
call('ui_status').then((s) => s.locked || loadTrust(), () => {});
async function loop() {
  await refresh();
  if (document.body.dataset.locked !== 'true') await showShares().catch(() => {});
  setTimeout(loop, busy ? 250 : 1000);
}
loop();
