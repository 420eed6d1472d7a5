import { call } from './ui.js';

const $ = (id) => document.getElementById(id);

/** Whether the lock is on: taking the key out of it then needs its passphrase. */
let lockOn = false;
function showLock(on) {
  lockOn = on;
  $('lock-state').textContent = on ? 'The lock is on.' : 'The lock is off.';
  $('lock-current-row').hidden = !on;
  // (After a change of passphrase the one typed there is the old one.)
  $('lock-current').value = '';
}
/** The lock's passphrase, for a request that takes the key out of it. */
const lockPassphrase = () => (lockOn ? { current: $('lock-current').value } : {});

async function load() {
  call('ui_status').then((st) => {
    $('did').textContent = st.did;
    showLock(st.lockEnabled);
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
    const { backup } = await call('identity_export', { passphrase: $('export-pass').value, ...lockPassphrase() });
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
    const { did, restart } = await call('identity_import', { backup: $('backup-in').value, passphrase: $('import-pass').value, ...lockPassphrase() });
    say('import-status', restart ? `Restored ${did}: restarting…` : `This peer already is ${did}.`);
    const api = globalThis.browser ?? globalThis.chrome;
    if (restart) setTimeout(() => api.runtime.reload(), 500);
  } catch (e) {
    say('import-status', e.message, true);
  }
});

for (const [button, method, on] of [['lock', 'identity_lock', true], ['unlock-remove', 'identity_lock_remove', false]]) {
  $(button).addEventListener('click', async () => {
    say('lock-status', 'Working…');
    try {
      // (Removing the lock takes the lock's passphrase itself.)
      await call(method, { passphrase: $('lock-pass').value, ...(on ? lockPassphrase() : {}) });
      $('lock-pass').value = '';
      showLock(on);
      say('lock-status', 'Done.');
    } catch (e) {
      say('lock-status', e.message, true);
    }
  });
}
