import { call } from './ui.js';

const $ = (id) => document.getElementById(id);

function item(text) {
  const li = document.createElement('li');
  li.textContent = text;
  return li;
}

async function refresh() {
  try {
    const s = await call('ui_status');
    $('did').textContent = s.did;
    $('peer-id').textContent = s.peerId;
    $('peer-count').textContent = String(s.connections);
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
        return item(`${p.peerId} · ${via}${p.rttMs != null ? ` · ${p.rttMs.toFixed(0)} ms` : ''}`);
      }));
    $('error').hidden = true;
  } catch (e) {
    $('state').textContent = 'offline';
    $('state').dataset.state = 'offline';
    $('error').textContent = e.message;
    $('error').hidden = false;
  }
}

refresh();
setInterval(refresh, 1000);
