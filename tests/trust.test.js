// Trust in the popup, driven as a user would: A enters B's DID and a level; the popup lists B
// with that level and score, backed by a W3C Verifiable Credential A signed (its form is
// checked here; the peer verifies its proof each time it lists it, and the core tests show
// forged, changed and expired credentials refused); revoking sets level 0 at once.
// Across peers: B trusts A and C; once A and B are connected, B's credentials reach A (B trusts
// A), and A's popup shows C through B with the product of the levels.
// Access by trust: content A put with a trust threshold is served to B while A trusts B enough,
// refused (as not held) below it, and refused from the next request once A revokes B.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as h from './lib/harness.js';

after(() => h.cleanup());

describe('trust in the popup', () => {
  let a, didA, didB, popup;

  before(async () => {
    const site = await h.startPageServer();
    a = await h.launchPeer('chromium', { bootstrap: [], site, name: 'trust-a' });
    const b = await h.launchPeer('chromium', { bootstrap: [], site, name: 'trust-b' });
    didA = (await a.run(() => window.disot.request({ method: 'disot_status' }))).did;
    didB = (await b.run(() => window.disot.request({ method: 'disot_status' }))).did;
    await b.close();
    popup = await a.browser.open(`${a.browser.extensionBase}popup.html`);
  });

  const row = () => popup.evaluate((did) => document.querySelector(`#trust li[data-did="${did}"]`)?.textContent ?? null, didB);

  test('a bad DID is refused with a clear message', async () => {
    await popup.type('#trust-did', 'did:key:nonsense');
    await popup.click('#trust-add');
    await popup.waitForFunction(() => !document.getElementById('trust-error').hidden);
    assert.match(await popup.$eval('#trust-error', (e) => e.textContent), /did:key of an Ed25519 key/);
    await popup.$eval('#trust-did', (e) => { e.value = ''; });
  });

  test('trusting B at 80 lists it with score 0.80, backed by a credential A signed', async () => {
    await popup.type('#trust-did', didB);
    await popup.$eval('#trust-level', (e) => { e.value = ''; });
    await popup.type('#trust-level', '80');
    await popup.click('#trust-add');
    await popup.waitForFunction((did) => document.querySelector(`#trust li[data-did="${did}"]`), {}, didB);
    assert.match(await row(), /level 80, score 0\.80 \(content\)/);
    const [entry] = await popup.evaluate(async () => {
      const reply = await chrome.runtime.sendMessage({ to: 'background', body: JSON.stringify({ method: 'trust_list' }) });
      return JSON.parse(reply.body).result;
    });
    const vc = entry.credential;
    assert.deepEqual(vc.type, ['VerifiableCredential', 'DisotTrustAssertion']);
    assert.equal(vc.issuer, didA);
    assert.deepEqual(vc.credentialSubject, { id: didB, trustLevel: 80, trustContext: 'content' });
    assert.equal(vc.proof.cryptosuite, 'eddsa-rdfc-2022');
    assert.equal(vc.proof.verificationMethod, `${didA}#${didA.slice('did:key:'.length)}`);
    assert.deepEqual(entry.path, [didA, didB]);
  });

  test('revoking sets level 0 at once, and it stays after the popup reopens', async () => {
    await popup.evaluate((did) => document.querySelector(`#trust li[data-did="${did}"] button.revoke`).click(), didB);
    await popup.waitForFunction((did) => document.querySelector(`#trust li[data-did="${did}"]`)?.textContent.includes('revoked'), {}, didB);
    await popup.reload();
    await popup.waitForFunction((did) => document.querySelector(`#trust li[data-did="${did}"]`), {}, didB);
    assert.match(await row(), /revoked/);
  });
});

/** From an extension page: a request of the extension's own API. */
function ui(page, method, params) {
  return page.evaluate(async (method, params) => {
    const body = JSON.stringify(params === null ? { method } : { method, params });
    const reply = JSON.parse((await chrome.runtime.sendMessage({ to: 'background', body })).body);
    if (reply.error) throw new Error(reply.error.message);
    return reply.result;
  }, method, params ?? null);
}

async function trustInPopup(popup, did, level) {
  await popup.type('#trust-did', did);
  await popup.$eval('#trust-level', (e) => { e.value = ''; });
  await popup.type('#trust-level', String(level));
  await popup.click('#trust-add');
  await popup.waitForFunction((did) => document.querySelector(`#trust li[data-did="${did}"]`), {}, did);
}

describe('trust across peers', () => {
  test('B tells A whom it trusts; A scores C through B (0.8 × 0.9)', async () => {
    const C = 'did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK';
    const node = await new h.NativeNode(h.tempDir('node-trust')).start();
    const site = await h.startPageServer();
    const a = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'trust-net-a' });
    const b = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'trust-net-b' });
    try {
    const popupA = await a.browser.open(`${a.browser.extensionBase}popup.html`);
    const popupB = await b.browser.open(`${b.browser.extensionBase}popup.html`);
    const statusA = await ui(popupA, 'ui_status');
    const statusB = await ui(popupB, 'ui_status');
    await trustInPopup(popupA, statusB.did, 80);
    await trustInPopup(popupB, statusA.did, 90);
    await trustInPopup(popupB, C, 90);
    // Before A and B meet, A knows nothing of C.
    assert.ok(!(await ui(popupA, 'trust_list')).some((e) => e.did === C));
    await h.waitFor(async () => (await ui(popupA, 'ui_status')).peers.some((p) => p.peerId === node.peerId), { what: 'A on the node' });
    await h.waitFor(async () => (await ui(popupB, 'ui_status')).peers.some((p) => p.peerId === node.peerId), { what: 'B on the node' });
    await ui(popupA, 'peers_dial', { addr: `${node.wsAddr}/p2p-circuit/p2p/${statusB.peerId}` });
    const viaB = await h.waitFor(async () => (await ui(popupA, 'trust_list')).find((e) => e.did === C), { what: "B's credentials at A", timeout: 30_000 });
    assert.equal(viaB.level, null, 'A did not rate C itself');
    assert.ok(Math.abs(viaB.score - 0.72) < 1e-9, `score ${viaB.score}`);
    assert.deepEqual(viaB.path, [statusA.did, statusB.did, C]);
    await popupA.reload();
    await popupA.waitForFunction((did) => document.querySelector(`#trust li[data-did="${did}"]`), {}, C);
    const row = await popupA.$eval(`#trust li[data-did="${C}"]`, (e) => e.textContent);
    assert.match(row, /through 1 trusted peer\(s\), score 0\.72/);
    // B revokes C: A hears of it and C's score is gone.
    await trustInPopup(popupB, C, 0);
    await popupB.waitForFunction((did) => document.querySelector(`#trust li[data-did="${did}"]`)?.textContent.includes('revoked'), {}, C);
    await h.waitFor(async () => !(await ui(popupA, 'trust_list')).some((e) => e.did === C), { what: 'the revocation to reach A', timeout: 30_000 });
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('access by trust', () => {
  test('served at or above the threshold, refused below it and after a revocation', async () => {
    const node = await new h.NativeNode(h.tempDir('node-access')).start();
    const site = await h.startPageServer();
    const a = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'access-a' });
    const b = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'access-b' });
    try {
      const popupA = await a.browser.open(`${a.browser.extensionBase}popup.html`);
      const extB = await b.browser.open(`${b.browser.extensionBase}options.html`);
      const statusA = await ui(popupA, 'ui_status');
      const statusB = await ui(extB, 'ui_status');
      await trustInPopup(popupA, statusB.did, 80);
      const put = (minTrust, seed) => a.run(async (minTrust, seed) => {
        const d = new Uint8Array(300 * 1024).fill(seed);
        return window.disot.cas.put(d, { minTrust });
      }, minTrust, seed);
      const at70 = await put(70, 1);
      const at90 = await put(90, 2);
      const at50 = await put(50, 3);
      await h.waitFor(async () => (await ui(extB, 'ui_status')).peers.some((p) => p.peerId === node.peerId), { what: 'B on the node' });
      await ui(extB, 'peers_dial', { addr: `${node.wsAddr}/p2p-circuit/webrtc/p2p/${statusA.peerId}` });
      await h.waitFor(async () => (await ui(extB, 'ui_status')).peers.some((p) => p.peerId === statusA.peerId), { what: 'B connected to A' });
      const fetch = (cid) => b.run((cid) => window.disot.cas.fetch(cid).then((r) => ({ sha256: r.sha256 }), (e) => ({ code: e.code })), cid);
      assert.deepEqual(await fetch(at70.cid), { sha256: at70.sha256 }, 'trust 0.80 ≥ 70: served');
      assert.deepEqual(await fetch(at90.cid), { code: -32001 }, 'trust 0.80 < 90: refused, as if not held');
      await popupA.evaluate((did) => document.querySelector(`#trust li[data-did="${did}"] button.revoke`).click(), statusB.did);
      await popupA.waitForFunction((did) => document.querySelector(`#trust li[data-did="${did}"]`)?.textContent.includes('revoked'), {}, statusB.did);
      assert.deepEqual(await fetch(at50.cid), { code: -32001 }, 'revoked: refused from the next request');
      // Trusted again: the same request is served (the refusals were the trust rule, not the network).
      await trustInPopup(popupA, statusB.did, 80);
      await popupA.waitForFunction((did) => document.querySelector(`#trust li[data-did="${did}"]`)?.textContent.includes('level 80'), {}, statusB.did);
      assert.deepEqual(await fetch(at50.cid), { sha256: at50.sha256 }, 'trusted again: served');
    } finally {
      await a.close();
      await b.close();
    }
  });
});
