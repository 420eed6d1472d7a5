// Signed DISOT entries: a page in Chromium asks for the `sign` permission, then for an entry to
// be signed; the user sees the whole entry in the extension's prompt and signs (or refuses).
// The signed entry verifies in Firefox (disot_verify, open to every page) and natively
// (`disot-node verify`, the same core code compiled for the machine); any changed field, nested
// ones included, fails in both.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as h from './lib/harness.js';

after(() => h.cleanup());

const HASH = 'sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08';
const REQUEST = {
  contentHash: HASH,
  type: 'document',
  metadata: { title: 'Field notes', tags: ['a', 'b'], license: { name: 'CC-BY', version: 4, parts: [{ by: 'x' }] } },
};

const start = h.startInPage;
const answer = h.answerPrompt;

function verifyNatively(entry) {
  const r = spawnSync(h.NODE_BIN, ['verify', '--json'], { input: JSON.stringify(entry), encoding: 'utf8' });
  return { status: r.status, out: r.stdout.trim(), err: r.stderr.trim() };
}

/** Every way of changing a signed entry that must break its signature. */
function forgeries(entry) {
  const edits = {
    id: (e) => { e.id = `${e.id}0`; },
    contentHash: (e) => { e.contentHash = HASH.replace('9f', '8f'); },
    type: (e) => { e.type = 'documents'; },
    timestamp: (e) => { e.timestamp += 1; },
    'metadata.title': (e) => { e.metadata.title = 'Field notes!'; },
    'metadata.tags order': (e) => { e.metadata.tags.reverse(); },
    'metadata.license.version': (e) => { e.metadata.license.version = 4.5; },
    'metadata.license.parts[0].by': (e) => { e.metadata.license.parts[0].by = 'y'; },
    'a new nested field': (e) => { e.metadata.license.extra = null; },
    'a new top-level field': (e) => { e.note = 'x'; },
  };
  return Object.entries(edits).map(([what, edit]) => {
    const forged = structuredClone(entry);
    edit(forged);
    return [what, forged];
  });
}

describe('signed DISOT entries', { concurrency: 1 }, () => {
  let site, chromium, firefox, signed, did;

  before(async () => {
    site = await h.startPageServer();
    chromium = await h.launchPeer('chromium', { bootstrap: [], site, name: 'sign-c' });
    firefox = await h.launchPeer('firefox', { bootstrap: [], site, name: 'sign-f' });
    did = (await chromium.run(() => window.disot.request({ method: 'disot_status' }))).did;
  });

  test('without the sign permission a page gets 4100 and no prompt', async () => {
    const outcome = await (await start(chromium.page, { method: 'disot_sign', params: REQUEST }))();
    assert.equal(outcome.error?.code, 4100, JSON.stringify(outcome));
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(!chromium.browser.browser.targets().some((t) => t.url().includes('/prompt.html')), 'no prompt opened');
  });

  test('the user grants sign, sees the whole entry, and signs it', async () => {
    const grant = await start(chromium.page, { method: 'disot_requestPermissions', params: [{ sign: {} }] });
    const grantText = await answer(chromium.browser, '#approve');
    assert.match(grantText, /sign entries with your identity/);
    assert.ok((await grant()).result.some((p) => p.parentCapability === 'sign'));

    const signing = await start(chromium.page, { method: 'disot_sign', params: REQUEST });
    const shown = await answer(chromium.browser, '#approve');
    assert.match(shown, /Sign an entry/);
    for (const part of [HASH, '"by": "x"', '"version": 4', did]) assert.ok(shown.includes(part), `the prompt shows ${part}`);
    const outcome = await signing();
    assert.ok(outcome.result, JSON.stringify(outcome));
    signed = outcome.result;
    assert.equal(signed.signer, did);
    assert.equal(signed.contentHash, HASH);
    assert.deepEqual(signed.metadata, REQUEST.metadata);
    assert.match(signed.signature, /^z[1-9A-HJ-NP-Za-km-z]{80,}$/);
    assert.ok(Math.abs(signed.timestamp - Date.now()) < 60_000);
  });

  test('rejecting in the prompt gives 4001 and no signature; nothing in the entry draws lines of its own in the prompt', async () => {
    // A value with line separators and a direction override could draw what looks like the
    // end of the entry (and a harmless type) on the prompt: they show as their escapes, and
    // what the entry says comes first.
    const sneaky = { ...REQUEST, metadata: { ...REQUEST.metadata, title: 'a\u2028}\u2029b\u202ec' } };
    const signing = await start(chromium.page, { method: 'disot_sign', params: sneaky });
    const shown = await answer(chromium.browser, '#reject');
    assert.ok(shown.includes('"title": "a\\u2028}\\u2029b\\u202ec"'), shown);
    assert.ok(shown.indexOf('"type": "document"') < shown.indexOf('"metadata"'), `the type comes first: ${shown}`);
    assert.equal((await signing()).error?.code, 4001);
  });

  test('bad entries are refused before any prompt opens', async () => {
    for (const params of [{ type: 'x' }, { ...REQUEST, contentHash: 'md5:00' }, { ...REQUEST, signer: did }, { ...REQUEST, metadata: 'x' }]) {
      const outcome = await (await start(chromium.page, { method: 'disot_sign', params }))();
      assert.equal(outcome.error?.code, -32602, `${JSON.stringify(params)} → ${JSON.stringify(outcome)}`);
    }
  });

  test('the entry verifies in Firefox, where a page needs no permission to check it', async () => {
    const result = await firefox.run((entry) => window.disot.verify(entry), signed);
    assert.deepEqual(result, { valid: true, signer: did });
    for (const [what, forged] of forgeries(signed)) {
      const r = await firefox.run((entry) => window.disot.verify(entry), forged);
      assert.equal(r.valid, false, `changed ${what}`);
    }
  });

  test('the entry verifies natively, and no changed field does', () => {
    const ok = verifyNatively(signed);
    assert.equal(ok.status, 0, ok.err);
    assert.deepEqual(JSON.parse(ok.out), { valid: true, signer: did });
    for (const [what, forged] of forgeries(signed)) {
      const r = verifyNatively(forged);
      assert.notEqual(r.status, 0, `changed ${what}`);
      assert.match(r.err, /signature does not match/, what);
    }
  });
});
