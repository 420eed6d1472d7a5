// Browser to browser: a page in A puts 64 MiB, a page in B gets it by CID over a direct WebRTC
// connection (our own /webrtc transport), for each pair of browsers. The bytes are identical,
// both peers list the other over `webrtc` only, and the relay (disot-node) moved almost none of
// it (its process's socket bytes, from /proc).
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.js';

after(() => h.cleanup());
const MiB = 64;
const figures = {};
after(() => fs.writeFileSync(path.join(h.ARTIFACTS, 'webrtc-figures.json'), JSON.stringify(figures, null, 2)));

const putPublic = h.putPublicRandomInPage;

/** In-page: get `cid` (from peers) and hash it; how long it took. */
async function getAndHash(cid) {
  const t = performance.now();
  const bytes = await window.disot.cas.get(cid);
  const ms = performance.now() - t;
  const digest = [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))].map((b) => b.toString(16).padStart(2, '0')).join('');
  return { size: bytes.length, sha256: `sha256:${digest}`, ms, named: (await window.disot.cas.stat(cid)).sha256 };
}

const peersOf = () => window.disot.p2p.peers();

for (const [ka, kb] of [['chromium', 'chromium'], ['chromium', 'firefox'], ['firefox', 'firefox']]) {
  describe(`${ka} → ${kb}`, () => {
    test(`${MiB} MiB over a direct WebRTC connection`, async () => {
      const node = await new h.NativeNode(h.tempDir(`node-${ka}-${kb}`)).start();
      const site = await h.startPageServer();
      const a = await h.launchPeer(ka, { bootstrap: [node.wsAddr], site, name: `a-${ka}` });
      const b = await h.launchPeer(kb, { bootstrap: [node.wsAddr], site, name: `b-${kb}` });
      try {
        await h.waitFor(async () => (await a.run(peersOf)).some((p) => p.peerId === node.peerId)
          && (await b.run(peersOf)).some((p) => p.peerId === node.peerId), { what: 'both connected to the node' });
        const put = await a.run(putPublic, MiB);
        const before = node.ioBytes();
        const got = await b.run(getAndHash, put.cid);
        const relayed = node.ioBytes() - before;
        assert.equal(got.size, MiB * 1024 * 1024);
        assert.equal(got.sha256, put.sha256, 'B has exactly A\'s bytes');
        // Named by one digest over the blocks as they were written (64 MiB is the most so).
        assert.equal(got.named, put.sha256, 'B names the object by the hash of its content');
        const aPeers = await a.run(peersOf);
        const bPeers = await b.run(peersOf);
        const aSeesB = aPeers.find((p) => p.peerId !== node.peerId);
        const bSeesA = bPeers.find((p) => p.peerId !== node.peerId);
        assert.deepEqual(aSeesB?.transports, ['webrtc'], `A: ${JSON.stringify(aPeers)}`);
        assert.deepEqual(bSeesA?.transports, ['webrtc'], `B: ${JSON.stringify(bPeers)}`);
        assert.ok(relayed < 2 * 1024 * 1024, `the relay moved ${relayed} bytes of a ${MiB} MiB transfer`);
        const mibps = +(MiB / (got.ms / 1000)).toFixed(1);
        figures[`${ka}->${kb}`] = { MiBps: mibps, relayedBytes: relayed };
        h.log(`${ka} → ${kb}: ${MiB} MiB in ${(got.ms / 1000).toFixed(1)} s (${mibps} MiB/s); the node moved ${relayed} bytes meanwhile`);
      } finally {
        await a.close();
        await b.close();
      }
    });
  });
}

/** In-page: start getting `cid` without waiting; `window.__get` settles with the outcome. */
function startGet(cid) {
  window.__got = undefined;
  window.__get = window.disot.cas.get(cid).then(
    async (bytes) => ({ size: bytes.length, sha256: `sha256:${[...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))].map((b) => b.toString(16).padStart(2, '0')).join('')}` }),
    (e) => ({ error: { code: e.code, message: e.message } })).then((r) => (window.__got = r));
}

/** In-page: bytes fetched so far for `cid` (0 before it starts); throws if the get failed. */
async function fetchedSoFar(cid) {
  if (window.__got?.error) throw new Error(`the get failed: ${JSON.stringify(window.__got.error)}`);
  return (await window.disot.cas.transfers()).find((t) => t.cid === cid)?.bytes ?? 0;
}

describe('interruptions', { concurrency: 1 }, () => {
  test('the relay killed mid-transfer: the direct transfer completes', async () => {
    const node = await new h.NativeNode(h.tempDir('node-killed')).start();
    const site = await h.startPageServer();
    const a = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'a-relay' });
    const b = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'b-relay' });
    try {
      await h.waitFor(async () => (await b.run(peersOf)).some((p) => p.peerId === node.peerId), { what: 'B connected to the node' });
      const put = await a.run(putPublic, MiB);
      await b.run(startGet, put.cid);
      await h.waitFor(async () => (await b.run(fetchedSoFar, put.cid)) > 4 * 1024 * 1024, { what: 'the transfer under way', timeout: 60_000 });
      await node.stop();
      const got = await b.page.evaluate(() => window.__get);
      assert.equal(got.error, undefined, JSON.stringify(got.error));
      assert.equal(got.sha256, put.sha256, 'complete and identical without the relay');
    } finally {
      await a.close();
      await b.close();
    }
  });

  test('the receiving browser killed mid-transfer and restarted: the next get resumes', async () => {
    const node = await new h.NativeNode(h.tempDir('node-resume')).start();
    const site = await h.startPageServer();
    const a = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'a-resume' });
    const ext = h.prepareExtension('chrome', [node.wsAddr]);
    const profile = h.tempDir('profile-b-resume');
    let b = await h.Browser.launch('chromium', ext, profile);
    try {
      let page = await b.open(`${site.url}/demo.html`);
      await h.grantInChromium(b, page);
      await h.waitFor(async () => (await page.evaluate(peersOf)).some((p) => p.peerId === node.peerId), { what: 'B connected to the node' });
      const put = await a.run(putPublic, MiB);
      await page.evaluate(startGet, put.cid);
      await h.waitFor(async () => (await page.evaluate(fetchedSoFar, put.cid)) > 24 * 1024 * 1024, { what: 'a good part fetched', timeout: 60_000 });
      process.kill(b.pid, 'SIGKILL'); // a crash, not a clean close
      await b.close();
      b = await h.Browser.launch('chromium', ext, profile);
      page = await b.open(`${site.url}/demo.html`);
      await h.waitFor(async () => (await page.evaluate(peersOf)).some((p) => p.peerId === node.peerId), { what: 'B back on the node' });
      const again = await page.evaluate((cid) => window.disot.cas.fetch(cid), put.cid);
      h.log(`resumed: fetched ${again.fetched.bytes} of ${again.size} bytes after the restart`);
      assert.equal(again.sha256, put.sha256);
      assert.ok(again.fetched.bytes < (MiB - 16) * 1024 * 1024, `only the rest was fetched (${again.fetched.bytes} bytes)`);
      assert.ok(again.fetched.bytes > 0, 'something was left to fetch');
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('idle', () => {
  test('Firefox serving with no page open, past its background idle timeout: B still fetches from it', async () => {
    const IDLE_MS = 8000; // Firefox suspends an idle MV3 background page after this (30 s by default)
    const node = await new h.NativeNode(h.tempDir('node-idle')).start();
    const site = await h.startPageServer();
    const a = await h.launchPeer('firefox', { bootstrap: [node.wsAddr], site, name: 'a-idle', firefoxPrefs: { 'extensions.background.idle.timeout': IDLE_MS } });
    const b = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'b-idle' });
    try {
      await h.waitFor(async () => (await a.run(peersOf)).some((p) => p.peerId === node.peerId), { what: 'A connected to the node' });
      const put = await a.run(putPublic, 4);
      // No page of A talks to its extension any more (pages poll it), then wait out the timeout.
      await a.driver.get('about:blank');
      await new Promise((r) => setTimeout(r, 2.5 * IDLE_MS));
      const got = await b.run(getAndHash, put.cid);
      assert.equal(got.sha256, put.sha256);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
