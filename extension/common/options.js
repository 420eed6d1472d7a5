import { call } from './ui.js';

const $ = (id) => document.getElementById(id);

async function load() {
  const s = await call('settings_get');
  $('bootstrap').value = s.bootstrap.join('\n');
  $('status').textContent = s.isDefault ? 'Using the built-in defaults.' : '';
}

$('save').addEventListener('click', async () => {
  const bootstrap = $('bootstrap').value.split('\n').map((l) => l.trim()).filter(Boolean);
  try {
    await call('settings_set', { bootstrap });
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
