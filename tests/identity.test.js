// Mutual authentication (`/disot/identity/1.0.0`) against a test peer that lies
// (node/examples/impostor-peer.rs): the browser dials it and must verify an honest profile,
// refuse (and disconnect) one claiming another peer's DID, one changed after signing and one
// replayed from an earlier exchange, and keep only the trust credentials that verify and that
// the sender issued itself or passes on from someone trusted (a changed, an expired and an
// unknown issuer's credential are refused). Every refusal is listed in the popup with its reason.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as h from './lib/harness.js';

after(() => h.cleanup());

describe('identity exchange with a lying peer', { concurrency: 1 }, () => {
  let browser, ext, me;

  before(async () => {
    browser = await h.Browser.launch('chromium', h.prepareExtension('chrome', []), h.tempDir('profile-identity'));
    ext = await browser.open(`${browser.extensionBase}options.html`);
    await h.ui(ext, 'settings_set', { bootstrap: [], displayName: 'Identity tester' });
    me = await h.ui(ext, 'ui_status');
  });
  after(() => browser?.close());

  const peerOf = async (peerId) => (await h.ui(ext, 'ui_status')).peers.find((p) => p.peerId === peerId);
  const refusals = async (peerId) => (await h.ui(ext, 'ui_status')).refused.filter((r) => r.peerId === peerId);

  test('an honest profile is verified, with its display name; ours reaches the peer signed', async () => {
    const peer = await h.startExamplePeer('impostor-peer', ['honest']);
    await h.ui(ext, 'peers_dial', { addr: peer.addr });
    const info = await h.waitFor(async () => (await peerOf(peer.peerId))?.identity, { what: 'the profile verified' });
    assert.equal(info.did, peer.did);
    assert.equal(info.displayName, 'Test peer');
    assert.equal(info.didDocument.id, peer.did);
    const seen = await h.waitFor(() => peer.events.find((e) => e.event === 'browser-profile'), { what: 'our profile at the peer' });
    assert.equal(seen.did, me.did);
    assert.ok(seen.answersOurs, "our profile answers the peer's challenge");
    assert.match(seen.sent[1], /"displayName":"Identity tester"/);
    const page = await browser.open(`${browser.extensionBase}popup.html`);
    await page.waitForFunction((id) => document.querySelector(`#peers li[data-peer-id="${id}"]`)?.dataset.verifiedDid, {}, peer.peerId);
    assert.match(await page.$eval(`#peers li[data-peer-id="${peer.peerId}"]`, (e) => e.textContent), /^Test peer · did:key:z6Mk\S+ ✓ verified · websocket/);
    assert.deepEqual(await refusals(peer.peerId), []);
    // Hung up from the popup: the peer sees it, and it leaves the list.
    await page.click(`#peers li[data-peer-id="${peer.peerId}"] button.hang-up`);
    await h.waitFor(() => peer.events.some((e) => e.event === 'disconnected'), { what: 'the peer to see the hang-up' });
    await h.waitFor(async () => !(await peerOf(peer.peerId)), { what: 'the peer gone from the list' });
    await page.waitForFunction((id) => !document.querySelector(`#peers li[data-peer-id="${id}"]`), {}, peer.peerId);
    assert.deepEqual(await h.ui(ext, 'peers_disconnect', { peerId: peer.peerId }), { disconnected: false });
    peer.stop();
  });

  for (const [mode, reason] of [
    ['other-did', /is not the key that authenticated the connection/],
    ['forged', /signature does not verify/],
  ]) {
    test(`a profile that is ${mode === 'forged' ? 'changed after signing' : "another peer's DID"} is refused and the peer disconnected`, async () => {
      const peer = await h.startExamplePeer('impostor-peer', [mode]);
      await h.ui(ext, 'peers_dial', { addr: peer.addr });
      const [refused] = await h.waitFor(async () => { const r = await refusals(peer.peerId); return r.length ? r : null; }, { what: 'the refusal' });
      assert.equal(refused.what, 'identity');
      assert.match(refused.reason, reason);
      await h.waitFor(() => peer.events.some((e) => e.event === 'disconnected'), { what: 'the browser to hang up' });
      await h.waitFor(async () => !(await peerOf(peer.peerId)), { what: 'the peer gone from the list' });
      peer.stop();
    });
  }

  test('a profile replayed from an earlier exchange is refused', async () => {
    const peer = await h.startExamplePeer('impostor-peer', ['replay']);
    await h.ui(ext, 'peers_dial', { addr: peer.addr });
    await h.waitFor(async () => (await peerOf(peer.peerId))?.identity, { what: 'the first, honest exchange' });
    // The peer hangs up; the next connection gets the first answer again.
    await h.waitFor(async () => !(await peerOf(peer.peerId)), { what: 'the peer to hang up' });
    await h.ui(ext, 'peers_dial', { addr: peer.addr });
    const [refused] = await h.waitFor(async () => { const r = await refusals(peer.peerId); return r.length ? r : null; }, { what: 'the refusal' });
    assert.equal(refused.what, 'identity');
    assert.match(refused.reason, /answers another challenge: replayed/);
    await h.waitFor(async () => !(await peerOf(peer.peerId)), { what: 'the replaying peer disconnected' });
    assert.equal(peer.events.filter((e) => e.event === 'answered').length, 2);
    peer.stop();
  });

  test('trust credentials: only what verifies and was issued by someone trusted (here the sender) is kept', async () => {
    const peer = await h.startExamplePeer('impostor-peer', ['credentials']);
    const { subjects } = peer.events.find((e) => e.event === 'subjects');
    await h.ui(ext, 'trust_set', { did: peer.did, level: 100 });
    await h.ui(ext, 'peers_dial', { addr: peer.addr });
    await h.waitFor(() => peer.events.some((e) => e.event === 'credentials-sent'), { what: 'the credentials sent' });
    const reasons = await h.waitFor(async () => {
      const r = (await refusals(peer.peerId)).filter((x) => x.what === 'trust credential');
      return r.length >= 3 ? r.map((x) => x.reason) : null;
    }, { what: 'three credentials refused' });
    assert.equal(reasons.length, 3, reasons.join('; '));
    assert.ok(reasons.some((r) => /proof does not verify/.test(r)), `the changed one: ${reasons}`);
    assert.ok(reasons.some((r) => /expired/.test(r)), `the expired one: ${reasons}`);
    assert.ok(reasons.some((r) => /issued by did:key:\S+, whom this peer does not trust/.test(r)), `the foreign one: ${reasons}`);
    const list = await h.ui(ext, 'trust_list');
    const good = list.find((e) => e.did === subjects.good);
    assert.ok(good, 'the good credential counts');
    assert.ok(Math.abs(good.score - 0.5) < 1e-9, `1.0 × 0.5, got ${good.score}`);
    for (const k of ['forged', 'expired', 'foreign']) {
      assert.ok(!list.some((e) => e.did === subjects[k]), `the ${k} credential does not count`);
    }
    // The peer itself stays: a bad credential is refused, not a reason to hang up.
    assert.ok((await peerOf(peer.peerId))?.identity, 'still connected and verified');
    const page = await browser.open(`${browser.extensionBase}popup.html`);
    await page.waitForFunction(() => !document.getElementById('refused-box').hidden);
    assert.match(await page.$eval('#refused', (e) => e.textContent), /trust credential from .*expired/);
    await h.screenshot(page, 'popup-refused-chromium.png');
    peer.stop();
  });

  test('an invite whose first address does not answer reaches its peer at the next', async () => {
    const peer = await h.startExamplePeer('impostor-peer', ['honest']);
    const { invite } = peer.events.find((e) => e.event === 'listening');
    const accepted = await h.ui(ext, 'invite_accept', { invite, level: 40 });
    assert.equal(accepted.did, peer.did);
    assert.equal(accepted.dialing.length, 2, JSON.stringify(accepted));
    const info = await h.waitFor(async () => (await peerOf(peer.peerId))?.identity, { what: 'the invited peer connected, verified' });
    assert.equal(info.did, peer.did);
    const live = `/tcp/${peer.addr.split('/')[4]}/`;
    const through = (await peerOf(peer.peerId)).connections.map((c) => c.addr);
    assert.ok(through.length > 0 && through.every((a) => a.includes(live)), `connected at ${through}, the invite's second address has ${live}`);
    assert.equal((await h.ui(ext, 'trust_list')).find((e) => e.did === peer.did)?.level, 40);
    peer.stop();
  });
});
