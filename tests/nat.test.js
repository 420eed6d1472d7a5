// NAT traversal for real: two Chromium peers, each in its own network namespace behind an
// iptables masquerade router that drops what comes in unasked, as home routers do; disot-node,
// coturn and the page server in the "internet" namespace (tests/lib/nat.js). With STUN/TURN
// (coturn) configured, the peers connect directly and the transfer succeeds; without, the
// direct connection fails with a clear error within seconds and the peers keep working over the
// relay, saying so. The pages are on plain-http private addresses, as on a LAN: the provider
// works there too.
//
// Not here: a symmetric NAT (a new random port per destination), where only TURN-relayed
// candidate pairs can work. There, plain RTCPeerConnections fail as ours do: the connectivity
// checks sent through coturn mostly do not reach it (its counters show a few packets where
// Chromium reports dozens of checks sent). To be found.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.js';
import { browserInNs, setUpNat, startInNs } from './lib/nat.js';

after(() => h.cleanup());
const peersOf = () => window.disot.p2p.peers();

async function world() {
  const net = setUpNat();
  const node = await new h.NativeNode(h.tempDir('node-nat'), { netns: net.ns.net, listenIp: '0.0.0.0' }).start();
  const listening = node.events.filter((e) => e.event === 'listening').map((e) => e.addr);
  const wsFor = (ip) => listening.find((a) => a.startsWith(`/ip4/${ip}/`) && a.includes('/ws/'));
  const port = 4400 + Math.floor(Math.random() * 500);
  await startInNs(net.ns.net, process.execPath, [path.join(h.ROOT, 'tests/lib/serve.js'), String(port), '0.0.0.0'], { ready: (l) => l.includes('serving') });
  await startInNs(net.ns.net, 'turnserver', [
    '-n', '--no-cli', '--no-tls', '--no-dtls', '--lt-cred-mech', '--realm=disot.test', '--user=peer:secret',
    '--listening-ip=10.99.1.1', '--listening-ip=10.99.2.1', '--relay-ip=10.99.1.1', '--listening-port=3478',
    '--min-port=49152', '--max-port=49300', '--log-file=stdout', '--simple-log', '--verbose',
    // Both peers' relayed addresses are on this server (a private range, which coturn may refuse).
    '--allowed-peer-ip=10.99.0.0-10.99.255.255',
  ], { ready: (l) => /listener opened on|Total General servers/i.test(l), log: path.join(h.ARTIFACTS, 'coturn.log') });
  return { net, node, wsFor, pageA: `http://10.99.1.1:${port}`, pageB: `http://10.99.2.1:${port}` };
}

async function peer(ns, bootstrap, pageUrl, name, iceServers) {
  const ext = h.prepareExtension('chrome', [bootstrap], undefined, { iceServers });
  const browser = await h.Browser.launch('chromium', ext, h.tempDir(`profile-${name}`), { executablePath: browserInNs(ns, h.CHROMIUM), loopbackWebRtc: false });
  const page = await browser.open(`${pageUrl}/demo.html`);
  await h.grantInChromium(browser, page);
  return { browser, page };
}

describe('NAT traversal', { concurrency: 1 }, () => {
  test('behind two NATs with TURN: a direct WebRTC connection, and the transfer succeeds', async () => {
    const w = await world();
    const turn = (ip) => [{ urls: `turn:${ip}:3478?transport=udp`, username: 'peer', credential: 'secret' }];
    const a = await peer(w.net.ns.a, w.wsFor('10.99.1.1'), w.pageA, 'nat-a', turn('10.99.1.1'));
    const b = await peer(w.net.ns.b, w.wsFor('10.99.2.1'), w.pageB, 'nat-b', turn('10.99.2.1'));
    try {
      await h.waitFor(async () => (await a.page.evaluate(peersOf)).length > 0 && (await b.page.evaluate(peersOf)).length > 0, { what: 'both on the node' });
      const put = await a.page.evaluate(async () => {
        const d = new Uint8Array(8 * 1024 * 1024);
        for (let i = 0; i < d.length; i += 65536) crypto.getRandomValues(d.subarray(i, i + 65536));
        return window.disot.cas.put(d, { public: true });
      });
      // The page is on a plain-http address (no crypto.subtle there): B's store names what it
      // fetched by the SHA-256 of the verified bytes.
      const got = await b.page.evaluate(async (cid) => {
        try {
          const bytes = await window.disot.cas.get(cid);
          return { size: bytes.length, sha256: (await window.disot.cas.stat(cid)).sha256 };
        } catch (e) {
          return { error: e.message, peers: await window.disot.p2p.peers() };
        }
      }, put.cid);
      assert.deepEqual(got, { size: put.size, sha256: put.sha256 });
      const bPeers = await b.page.evaluate(peersOf);
      const toA = bPeers.find((p) => p.peerId !== w.node.peerId);
      assert.deepEqual(toA?.transports, ['webrtc'], JSON.stringify(bPeers));
    } finally {
      await a.browser.close();
      await b.browser.close();
    }
  });

  test('behind two NATs with no STUN or TURN: a clear error, and the relay keeps them talking', async () => {
    const w = await world();
    const a = await peer(w.net.ns.a, w.wsFor('10.99.1.1'), w.pageA, 'nat-a2', []);
    const b = await peer(w.net.ns.b, w.wsFor('10.99.2.1'), w.pageB, 'nat-b2', []);
    try {
      await h.waitFor(async () => (await a.page.evaluate(peersOf)).length > 0 && (await b.page.evaluate(peersOf)).length > 0, { what: 'both on the node' });
      const put = await a.page.evaluate(async () => {
        const d = new Uint8Array(256 * 1024);
        crypto.getRandomValues(d.subarray(0, 65536));
        return window.disot.cas.put(d, { public: true });
      });
      const started = Date.now();
      const got = await b.page.evaluate((cid) => window.disot.cas.get(cid).then((x) => x.length, (e) => e.message), put.cid);
      assert.equal(got, 256 * 1024, 'the content still arrives, over the relay');
      const toA = await h.waitFor(async () => {
        const p = (await b.page.evaluate(peersOf)).find((x) => x.peerId !== w.node.peerId);
        return p?.directError ? p : null;
      }, { what: 'the direct connection to be given up', timeout: 30_000 });
      h.log(`no direct connection after ${Date.now() - started} ms: ${toA.directError}`);
      assert.match(toA.directError, /ICE|timed out|no route/i);
      assert.deepEqual(toA.transports, ['relayed'], 'the peers say they are relayed');
    } finally {
      await a.browser.close();
      await b.browser.close();
    }
  });
});
