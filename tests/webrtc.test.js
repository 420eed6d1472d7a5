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

/** In-page: put `mib` MiB of random bytes as a public object; its CID and SHA-256. */
async function putPublic(mib) {
  const data = new Uint8Array(mib * 1024 * 1024);
  for (let i = 0; i < data.length; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
  const put = await window.disot.cas.put(data, { public: true });
  return put;
}

/** In-page: get `cid` (from peers) and hash it; how long it took. */
async function getAndHash(cid) {
  const t = performance.now();
  const bytes = await window.disot.cas.get(cid);
  const ms = performance.now() - t;
  const digest = [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))].map((b) => b.toString(16).padStart(2, '0')).join('');
  return { size: bytes.length, sha256: `sha256:${digest}`, ms };
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
