import { call } from './ui.js';

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
    $('relay').textContent = s.relay.state === 'reserved' ? `reserved at ${s.relay.relay}` : s.relay.state;
    $('bootstrap').replaceChildren(
      ...s.bootstrap.map((b) => item(`node ${b.peerId}: ${b.state}${b.failures ? ` (${b.failures} failed dials)` : ''}`)));
    $('peers').replaceChildren(
      ...s.peers.map((p) => {
        const via = p.connections.map((c) => c.transport).join(' + ');
        const li = item(`${p.did ?? p.peerId} · ${via}${p.rttMs != null ? ` · ${p.rttMs.toFixed(0)} ms` : ''}`);
        li.dataset.peerId = p.peerId;
        li.title = p.peerId;
        return li;
      }));
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
      }) : [Object.assign(document.createElement('li'), { className: 'none', textContent: 'none' })]));
    await showGrants();
    $('error').hidden = true;
  } catch (e) {
    $('state').textContent = 'offline';
    $('state').dataset.state = 'offline';
    $('error').textContent = e.message;
    $('error').hidden = false;
  }
}

let shownTrust = '';

async function showTrust() {
  const list = await call('trust_list');
  const key = JSON.stringify(list.map(({ did, level, score }) => [did, level, score]));
  if (key === shownTrust) return;
  shownTrust = key;
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
      const revoke = document.createElement('button');
      revoke.textContent = 'Revoke';
      revoke.className = 'revoke';
      revoke.addEventListener('click', async () => {
        revoke.disabled = true;
        await call('trust_set', { did, level: 0, context });
        await showTrust();
      });
      li.append(revoke);
    }
    return li;
  }));
}

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

async function showGrants() {
  const list = await call('permissions_list');
  const key = JSON.stringify(list);
  if (key === shownGrants) return; // keep buttons stable between refreshes
  shownGrants = key;
  if (list.length === 0) {
    $('grants').replaceChildren(Object.assign(document.createElement('li'), { className: 'none', textContent: 'none' }));
    return;
  }
  $('grants').replaceChildren(...list.map(({ origin, grants }) => {
    const li = item(`${origin}: ${grants.map((g) => g.permission).join(', ')} `);
    li.dataset.origin = origin;
    const revoke = document.createElement('button');
    revoke.textContent = 'Revoke';
    revoke.className = 'revoke';
    revoke.addEventListener('click', async () => {
      revoke.disabled = true;
      await call('permissions_revoke', { origin });
      await showGrants();
    });
    li.append(revoke);
    return li;
  }));
}

// Once a second; four times a second while transfers run, so their progress bars move.
let busy = false;
// Trust changes only here (each credential is verified when listed): shown once, and after edits.
showTrust().catch((e) => { $('trust-error').textContent = e.message; $('trust-error').hidden = false; });
async function loop() {
  await refresh();
  setTimeout(loop, busy ? 250 : 1000);
}
loop();
