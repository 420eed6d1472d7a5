import { call } from './ui.js';

const $ = (id) => document.getElementById(id);
const id = Number(new URLSearchParams(location.search).get('id'));
const DESCRIPTIONS = { cas: 'store content in your peer, read it back, list and pin it' };

async function decide(approve) {
  $('approve').disabled = $('reject').disabled = true;
  try {
    await call('permissions_decide', { id, approve });
    window.close();
  } catch (e) {
    $('error').textContent = e.message;
    $('error').hidden = false;
  }
}

try {
  const request = await call('permissions_pending', { id });
  $('origin').textContent = request.origin;
  $('permissions').replaceChildren(...request.permissions.map((p) => {
    const li = document.createElement('li');
    li.textContent = DESCRIPTIONS[p] ?? p;
    li.dataset.permission = p;
    return li;
  }));
  $('approve').disabled = $('reject').disabled = false;
  $('approve').addEventListener('click', () => decide(true));
  $('reject').addEventListener('click', () => decide(false));
} catch (e) {
  $('error').textContent = `This request is no longer waiting (${e.message}).`;
  $('error').hidden = false;
}
