import { call } from './ui.js';

const $ = (id) => document.getElementById(id);

async function load() {
  call('ui_status').then((st) => {
    $('did').textContent = st.did;
    $('lock-state').textContent = st.lockEnabled ? 'The lock is on.' : 'The lock is off.';
  }, () => {});
  const s = await call('settings_get');
  $('bootstrap').value = s.bootstrap.join('\n');
  $('display-name').value = s.displayName ?? '';
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
    await call('settings_set', { bootstrap, iceServers, displayName: $('display-name').value.trim() });
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

function say(id, text, error = false) {
  $(id).textContent = text;
  $(id).className = error ? 'error' : '';
}

$('export').addEventListener('click', async () => {
  say('export-status', 'Sealing…');
  try {
    const { backup } = await call('identity_export', { passphrase: $('export-pass').value });
    $('backup-out').value = backup;
    $('backup-out').hidden = false;
    const link = $('backup-download');
    URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(new Blob([backup], { type: 'application/json' }));
    link.hidden = false;
    say('export-status', 'Done: save it somewhere safe.');
  } catch (e) {
    say('export-status', e.message, true);
  }
});

$('backup-file').addEventListener('change', async () => {
  const file = $('backup-file').files[0];
  if (file) $('backup-in').value = file.size > 65536 ? '' : await file.text();
});

$('import').addEventListener('click', async () => {
  say('import-status', 'Opening…');
  try {
    const { did, restart } = await call('identity_import', { backup: $('backup-in').value, passphrase: $('import-pass').value });
    say('import-status', restart ? `Restored ${did}: restarting…` : `This peer already is ${did}.`);
    const api = globalThis.browser ?? globalThis.chrome;
    if (restart) setTimeout(() => api.runtime.reload(), 500);
  } catch (e) {
    say('import-status', e.message, true);
  }
});

for (const [button, method, done] of [['lock', 'identity_lock', 'The lock is on.'], ['unlock-remove', 'identity_lock_remove', 'The lock is off.']]) {
  $(button).addEventListener('click', async () => {
    say('lock-status', 'Working…');
    try {
      await call(method, { passphrase: $('lock-pass').value });
      $('lock-pass').value = '';
      $('lock-state').textContent = done;
      say('lock-status', 'Done.');
    } catch (e) {
      say('lock-status', e.message, true);
    }
  });
}
