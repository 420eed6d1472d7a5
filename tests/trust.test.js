// Trust in the popup, driven as a user would: A enters B's DID and a level; the popup lists B
// with that level and score, backed by a W3C Verifiable Credential A signed and keeps in its
// content store (its form is checked here; the peer verifies its proof each time it lists it,
// and the core tests show forged, changed and expired credentials refused); revoking sets
// level 0 at once.
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
    // The credential is in the content store too, under its CID, as its canonical JSON.
    assert.match(entry.cid, /^bafk/, 'a single raw block');
    assert.ok((await popup.evaluate(h.blockKeysInExtensionPage)).includes(entry.cid), 'its block is stored');
  });

  test('revoking sets level 0 at once, and it stays after the popup reopens', async () => {
    await popup.evaluate((did) => document.querySelector(`#trust li[data-did="${did}"] button.revoke`).click(), didB);
    await popup.waitForFunction((did) => document.querySelector(`#trust li[data-did="${did}"]`)?.textContent.includes('revoked'), {}, didB);
    await popup.reload();
    await popup.waitForFunction((did) => document.querySelector(`#trust li[data-did="${did}"]`), {}, didB);
    assert.match(await row(), /revoked/);
  });

  test('the trust graph draws at most 60 peers, those of the highest scores; the list shows every one', async () => {
    const dids = Array.from({ length: 65 }, () => h.newDidKey());
    // (Their keys decode as the test's own did:key reading says.)
    assert.equal(h.keyOfDid(dids[0]).length, 32);
    for (const [i, did] of dids.entries()) await h.ui(popup, 'trust_set', { did, level: 30 + i });
    await popup.reload();
    await popup.waitForFunction((n) => document.querySelectorAll('#trust li[data-did]').length >= n, { timeout: 30_000 }, dids.length + 1);
    await popup.waitForFunction(() => document.querySelectorAll('#trust-graph circle').length > 1);
    const drawn = await popup.$$eval('#trust-graph circle', (c) => c.map((e) => e.dataset.did));
    assert.equal(drawn.length, 61, 'this peer and 60 others');
    assert.equal(drawn[0], didA);
    // The five left out are those of the lowest scores.
    const left = dids.filter((d) => !drawn.includes(d));
    assert.deepEqual(left.sort(), dids.slice(0, 5).sort());
  });
});

const ui = h.ui;

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
    // Asked to wait, a dial answers once connected: here through the relay.
    const dialed = await ui(popupA, 'peers_dial', { addr: `${node.wsAddr}/p2p-circuit/p2p/${statusB.peerId}`, wait: true });
    assert.equal(dialed.transport, 'relayed');
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
      // A dial that cannot connect says so when asked to wait; a direct address answers once
      // the direct connection is up.
      await assert.rejects(ui(extB, 'peers_dial', { addr: `/ip4/127.0.0.1/tcp/1/ws/p2p/${statusA.peerId}`, wait: true }), /could not connect to \/ip4\/127\.0\.0\.1\/tcp\/1\/ws/);
      const dialed = await ui(extB, 'peers_dial', { addr: `${node.wsAddr}/p2p-circuit/webrtc/p2p/${statusA.peerId}`, wait: true });
      assert.equal(dialed.transport, 'webrtc');
      const toA = (await ui(extB, 'ui_status')).peers.find((p) => p.peerId === statusA.peerId);
      assert.ok(toA?.connections.some((c) => c.transport === 'webrtc'), JSON.stringify(toA));
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

describe('three browsers', () => {
  test('A and B trust each other in their popups and see each other verified; C, trusted only by B, is served by A above its threshold and refused below; what C asserts reaches A through B; A\'s share with B does not reach C, and its cas-updates announcement tells C nothing', async () => {
    const node = await new h.NativeNode(h.tempDir('node-three')).start();
    const site = await h.startPageServer();
    const peers = [];
    try {
      for (const name of ['three-a', 'three-b', 'three-c']) {
        peers.push(await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name }));
      }
      const [a, b, c] = peers;
      const popupA = await a.browser.open(`${a.browser.extensionBase}popup.html`);
      const popupB = await b.browser.open(`${b.browser.extensionBase}popup.html`);
      const extC = await c.browser.open(`${c.browser.extensionBase}options.html`);
      const [sa, sb, sc] = [await ui(popupA, 'ui_status'), await ui(popupB, 'ui_status'), await ui(extC, 'ui_status')];
      await trustInPopup(popupA, sb.did, 80);
      await trustInPopup(popupB, sa.did, 90);
      await trustInPopup(popupB, sc.did, 90);
      for (const [page, what] of [[popupA, 'A'], [popupB, 'B'], [extC, 'C']]) {
        await h.waitFor(async () => (await ui(page, 'ui_status')).peers.some((p) => p.peerId === node.peerId), { what: `${what} on the node` });
      }
      // A dials B; each popup then shows the other's DID as verified by the identity exchange.
      await ui(popupA, 'peers_dial', { addr: `${node.wsAddr}/p2p-circuit/webrtc/p2p/${sb.peerId}` });
      const verifiedIn = (popup, peer) => popup.waitForFunction((id) => document.querySelector(`#peers li[data-peer-id="${id}"]`)?.dataset.verifiedDid, { timeout: 30_000 }, peer.peerId)
        .then(() => popup.$eval(`#peers li[data-peer-id="${peer.peerId}"]`, (e) => [e.dataset.verifiedDid, e.textContent]));
      const [didAtA, textAtA] = await verifiedIn(popupA, sb);
      const [didAtB, textAtB] = await verifiedIn(popupB, sa);
      assert.equal(didAtA, sb.did);
      assert.equal(didAtB, sa.did);
      assert.ok(textAtA.includes(`${sb.did} ✓ verified`), textAtA);
      assert.ok(textAtB.includes(`${sa.did} ✓ verified`), textAtB);
      await h.screenshot(popupA, 'popup-verified-peer-chromium.png');
      // B's credentials reach A once the exchange verified A: C scores 0.8 × 0.9 at A.
      const viaB = await h.waitFor(async () => (await ui(popupA, 'trust_list')).find((e) => e.did === sc.did), { what: "C's score at A", timeout: 30_000 });
      assert.ok(Math.abs(viaB.score - 0.72) < 1e-9, `score ${viaB.score}`);
      assert.deepEqual(viaB.path, [sa.did, sb.did, sc.did]);
      const put = (minTrust, seed) => a.run(async (minTrust, seed) => window.disot.cas.put(new Uint8Array(200 * 1024).fill(seed), { minTrust }), minTrust, seed);
      const at70 = await put(70, 7);
      const at80 = await put(80, 8);
      await ui(extC, 'peers_dial', { addr: `${node.wsAddr}/p2p-circuit/webrtc/p2p/${sa.peerId}` });
      await h.waitFor(async () => (await ui(popupA, 'ui_status')).peers.find((p) => p.peerId === sc.peerId)?.identity, { what: 'C verified at A', timeout: 30_000 });
      const fetch = (cid) => c.run((cid) => window.disot.cas.fetch(cid).then((r) => ({ sha256: r.sha256 }), (e) => ({ code: e.code })), cid);
      assert.deepEqual(await fetch(at70.cid), { sha256: at70.sha256 }, 'C at 0.72 ≥ 70: served');
      assert.deepEqual(await fetch(at80.cid), { code: -32001 }, 'C at 0.72 < 80: refused, as if not held');
      // Longer paths: C trusts D and tells B; B passes it on to A, which scores D through B and C.
      const D = 'did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK';
      await ui(extC, 'trust_set', { did: sb.did, level: 60 });
      await ui(extC, 'trust_set', { did: D, level: 50 });
      await ui(extC, 'peers_dial', { addr: `${node.wsAddr}/p2p-circuit/webrtc/p2p/${sb.peerId}` });
      const viaC = await h.waitFor(async () => (await ui(popupA, 'trust_list')).find((e) => e.did === D), { what: "D's score at A, through B and C", timeout: 30_000 });
      assert.ok(Math.abs(viaC.score - 0.36) < 1e-9, `0.8 × 0.9 × 0.5, got ${viaC.score}`);
      assert.deepEqual(viaC.path, [sa.did, sb.did, sc.did, D]);
      // A shares its private object with B (from A's popup): B, trusting A at 90, holds it;
      // C, connected to both and trusted only by B, gets neither the share nor the bytes.
      await ui(popupA, 'share', { cid: at80.cid, to: sb.did, note: 'for B only' });
      await h.waitFor(async () => (await ui(popupB, 'shares_list')).sharedWithMe.find((s) => s.cid === at80.cid)?.held, { what: 'the share and its bytes at B', timeout: 60_000 });
      for (const [page, peer] of [[popupA, sc], [popupB, sc]]) {
        await h.waitFor(async () => (await ui(page, 'ui_status')).peers.find((p) => p.peerId === peer.peerId)?.identity, { what: 'C connected and verified' });
      }
      await new Promise((r) => setTimeout(r, 3000));
      assert.deepEqual((await ui(extC, 'shares_list')).sharedWithMe, [], 'nothing was shared with C');
      // C holds its own trust document and B's (B trusts C), not A's (A does not).
      assert.deepEqual((await ui(extC, 'sync_status')).documentKinds, { shares: 0, collections: 0, trust: 2 }, 'C holds no share or collection of A or B');
      assert.deepEqual(await fetch(at80.cid), { code: -32001 }, 'C cannot fetch it from A or from B');
      // The share was announced on cas-updates: B found news for it there; C heard the
      // announcement too (gossipsub gives every subscriber everything) and learnt nothing from
      // it: no tag for C, and no CID, hash, DID or note on the wire.
      const gossip = async (page) => (await ui(page, 'sync_status')).announcements;
      assert.ok((await gossip(popupA)).sent >= 1, 'A announced');
      await h.waitFor(async () => (await gossip(popupB)).forMe >= 1, { what: 'B to find news for it in an announcement' });
      const atC = await h.waitFor(async () => { const g = await gossip(extC); return g.heard >= 1 ? g : null; }, { what: 'C to hear an announcement' });
      assert.equal(atC.forMe, 0, 'nothing in it is for C');
      for (const secret of [at80.cid, at80.sha256.slice(7), sa.did, sb.did, 'for B only']) {
        assert.ok(!atC.lastHeard.includes(secret), `the announcement C heard names nothing: ${atC.lastHeard}`);
      }
      assert.match(atC.lastHeard, /^\{"v":1,"nonce":"[0-9a-f]{32}","tags":\["[0-9a-f]{32}"(,"[0-9a-f]{32}")*\]\}$/);
    } finally {
      for (const p of peers) await p.close();
    }
  });
});

describe('trust from a page', () => {
  test('needs the trust permission; every change is approved by the user in the prompt', async () => {
    const site = await h.startPageServer();
    const a = await h.launchPeer('chromium', { bootstrap: [], site, name: 'trust-page' });
    try {
      const other = 'did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK';
      const call = (method, params) => h.startInPage(a.page, params === undefined ? { method } : { method, params }).then((wait) => wait());
      for (const [method, params] of [['trust_list'], ['trust_score', { did: other }], ['trust_set', { did: other, level: 60 }]]) {
        assert.equal((await call(method, params)).error?.code, 4100, `${method} without the permission`);
      }
      const grant = await h.startInPage(a.page, { method: 'disot_requestPermissions', params: [{ trust: {} }] });
      assert.match(await h.answerPrompt(a.browser, '#approve'), /see whom you trust/);
      assert.ok((await grant()).result.some((p) => p.parentCapability === 'trust'));
      assert.deepEqual((await call('trust_list')).result, []);
      // The user sees which peer and what level, and agrees.
      const setting = await h.startInPage(a.page, { method: 'trust_set', params: { did: other, level: 60 } });
      const shown = await h.answerPrompt(a.browser, '#approve');
      assert.ok(shown.includes(other) && /level 60 of 100 \(content\)/.test(shown), shown);
      assert.deepEqual((await setting()).result, { did: other, level: 60, context: 'content' });
      const [entry] = (await call('trust_list')).result;
      assert.equal(entry.did, other);
      assert.equal(entry.level, 60);
      assert.equal(entry.score, 0.6);
      assert.equal(entry.credential, undefined, 'pages get the scores, not the credentials');
      assert.deepEqual((await call('trust_score', { did: other })).result.score, 0.6);
      // The user refuses a change: 4001, and nothing changed.
      const refusing = await h.startInPage(a.page, { method: 'trust_set', params: { did: other, level: 0 } });
      assert.match(await h.answerPrompt(a.browser, '#reject'), /stop trusting this peer/);
      assert.equal((await refusing()).error?.code, 4001);
      assert.equal((await call('trust_score', { did: other })).result.score, 0.6);
      // Bad input is refused before any prompt.
      assert.equal((await call('trust_set', { did: 'did:key:nope', level: 5 })).error?.code, -32602);
      assert.equal((await call('trust_set', { did: other, level: 500 })).error?.code, -32602);
    } finally {
      await a.close();
    }
  });
});

/** In the popup: the invite's QR image drawn on a canvas, as RGBA pixels. */
async function qrPixelsInPopup() {
  const img = document.getElementById('invite-qr');
  await img.decode();
  const canvas = Object.assign(document.createElement('canvas'), { width: 400, height: 400 });
  const g = canvas.getContext('2d');
  g.fillStyle = '#fff';
  g.fillRect(0, 0, 400, 400);
  g.drawImage(img, 0, 0, 400, 400);
  return Array.from(g.getImageData(0, 0, 400, 400).data);
}

describe('invites', () => {
  test('B accepts the invite A made (link or QR code): B trusts A and connects to it; a changed invite is refused', async () => {
    const { default: jsQR } = await import('jsqr');
    const node = await new h.NativeNode(h.tempDir('node-invite')).start();
    const site = await h.startPageServer();
    const a = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'invite-a' });
    const b = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'invite-b' });
    try {
      const popupA = await a.browser.open(`${a.browser.extensionBase}popup.html`);
      const popupB = await b.browser.open(`${b.browser.extensionBase}popup.html`);
      const sa = await ui(popupA, 'ui_status');
      await h.waitFor(async () => (await ui(popupA, 'ui_status')).relay.state === 'reserved', { what: 'A reserved on the relay' });
      await popupA.click('#invite-box summary');
      await popupA.click('#invite-create');
      await popupA.waitForFunction(() => document.getElementById('invite-out').value.startsWith('disot-invite:'));
      const invite = await popupA.$eval('#invite-out', (e) => e.value);
      const pixels = await popupA.evaluate(qrPixelsInPopup);
      const decoded = jsQR(Uint8ClampedArray.from(pixels), 400, 400);
      assert.equal(decoded?.data, invite, 'the QR code holds the invite');
      await h.screenshot(popupA, 'popup-invite-chromium.png');
      // A changed invite: refused with a clear message, nothing trusted.
      const [scheme, body] = [invite.slice(0, 13), invite.slice(13)];
      const json = JSON.parse(Buffer.from(body, 'base64url').toString());
      json.displayName = 'Mallory';
      await popupB.click('#invite-box summary');
      await popupB.type('#invite-in', scheme + Buffer.from(JSON.stringify(json)).toString('base64url'));
      await popupB.click('#invite-accept');
      await popupB.waitForFunction(() => document.getElementById('invite-status').className === 'error');
      assert.match(await popupB.$eval('#invite-status', (e) => e.textContent), /signature does not verify/);
      assert.deepEqual(await ui(popupB, 'trust_list'), []);
      // The real one: B trusts A at the level chosen and connects to it, verified.
      await popupB.$eval('#invite-in', (e) => { e.value = ''; });
      await popupB.type('#invite-in', invite);
      await popupB.$eval('#invite-level', (e) => { e.value = ''; });
      await popupB.type('#invite-level', '70');
      await popupB.click('#invite-accept');
      await popupB.waitForFunction(() => document.getElementById('invite-status').textContent.startsWith('Trusting'));
      const [entry] = await ui(popupB, 'trust_list');
      assert.equal(entry.did, sa.did);
      assert.equal(entry.level, 70);
      const atB = await h.waitFor(async () => (await ui(popupB, 'ui_status')).peers.find((p) => p.peerId === sa.peerId)?.identity, { what: 'B connected to A, verified', timeout: 30_000 });
      assert.equal(atB.did, sa.did);
      // A, which does not trust B, keeps nothing of what B asserts (B trusts A): it counts for
      // nothing here, and kept it would crowd out what peers A trusts said.
      const sb = await ui(popupB, 'ui_status');
      const refusal = await h.waitFor(async () => (await ui(popupA, 'ui_status')).refused.find((r) => r.peerId === sb.peerId && r.what === 'trust credential'), { what: "B's credential refused at A", timeout: 30_000 });
      assert.equal(refusal.reason, `a credential issued by ${sb.did}, whom this peer does not trust`);
      // The trust graph in B's popup: B and A, one edge.
      await popupB.reload();
      await popupB.waitForFunction((did) => document.querySelector(`#trust-graph circle[data-did="${did}"]`), {}, sa.did);
      assert.equal(await popupB.$$eval('#trust-graph line', (l) => l.length), 1);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
