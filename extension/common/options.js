import { call } from './ui.js';

const $ = (id) => document.getElementById(id);

async function load() {
  const s = await call('settings_get');
  $('bootstrap').value = s.bootstrap.join('\n');
  $('ice').value = (s.iceServers ?? []).map((i) => [i.urls, i.username, i.credential].filter(Boolean).join(' ')).join('\n');
  $('status').textContent = s.isDefault ? 'Using the built-in defaults.' : '';
}

$('save').addEventListener('click', async () => {
  const bootstrap = $('bootstrap').value.split('\n').map((l) => l.trim()).filter(Boolean);
  const iceServers = $('ice').value.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => {
    const [urls, username, credential] = l.split(/\s+/);
    return username === undefined ? { urls } : { urls, username, credential };
  });
  try {
    await call('settings_set', { bootstrap, iceServers });
    $('status').textContent = 'Saved.';
    $('status').className = '';
  } catch (e) {
    $('status').textContent = e.message;
    $('status').className = 'error';
  }
});

load().catch((e) => {
  $('status').textContent = e.message;
  $('status').className = 'error';
});
