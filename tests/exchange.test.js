// Content exchange by Bitswap 1.2.0: a page gets by CID what this browser does not hold, from
// the disot-node (a pinning node) and from another browser (through the relay), verified and
// stored; what is not public is not served; progress is reported.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CID } from 'multiformats/cid';
import { sha256 } from 'multiformats/hashes/sha2';
import * as h from './lib/harness.js';

after(() => h.cleanup());

/** Add `bytes` to the node's store with its own `add` command; returns its object record. */
function nodeAdd(dataDir, bytes, extra = []) {
  const file = path.join(h.tempDir('add'), 'content.bin');
  fs.writeFileSync(file, bytes);
  return JSON.parse(execFileSync(h.NODE_BIN, ['--data-dir', dataDir, '--json', 'add', ...extra, file], { encoding: 'utf8' }).trim());
}

/**
 * Wait until `page`'s peer is connected to each of `peerIds` and has heard what each speaks
 * (identify: its agent is known, and so whether it speaks Bitswap).
 */
function connectedTo(page, peerIds) {
  return h.waitFor(async () => {
    const peers = await page.evaluate(() => window.disot.p2p.peers());
    return peerIds.every((id) => peers.some((p) => p.peerId === id && typeof p.agent === 'string'));
  }, { what: `${peerIds.length} peers connected and identified` });
}

/** In-page: get `cid` (not held here), with progress; its SHA-256 and what the page saw. */
async function getFromPeersInPage(cid) {
  const seen = [];
  try {
    const bytes = await window.disot.cas.get(cid, { onProgress: (n) => seen.push(n) });
    const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
    return {
      size: bytes.length,
      sha256: [...digest].map((b) => b.toString(16).padStart(2, '0')).join(''),
      progress: seen,
      stat: await window.disot.cas.stat(cid),
      listed: (await window.disot.cas.list()).map((o) => o.cid),
      peers: await window.disot.p2p.peers(),
    };
  } catch (e) {
    return { error: { code: e.code, message: e.message } };
  }
}

/** The hostile test peer (node/examples/hostile-peer.rs): claims every block, sends junk. */
const startHostilePeer = () => h.startExamplePeer('hostile-peer', ['0']);

describe('bitswap', { concurrency: 1 }, () => {
  test('a page gets content pinned on the disot-node, verified, and it stays', async () => {
    const dataDir = h.tempDir('node-exchange');
    // Long enough for the popup to see it, and larger than a fetch names by one digest at the
    // end (64 MiB): named as its blocks arrive.
    const content = randomBytes(64 * 1024 * 1024 + 123);
    const added = nodeAdd(dataDir, content);
    const node = await new h.NativeNode(dataDir).start();
    const site = await h.startPageServer();
    const browser = await h.Browser.launch('chromium', h.prepareExtension('chrome', [node.wsAddr]), h.tempDir('profile-exchange'));
    try {
      const page = await browser.open(`${site.url}/demo.html`);
      await h.grantInChromium(browser, page);
      await h.waitFor(async () => (await page.evaluate(() => window.disot.p2p.peers())).some((p) => p.peerId === node.peerId), { what: 'the node connected' });
      // The popup shows the transfer with a progress bar while it runs, and the node by DID.
      const popup = await browser.browser.newPage();
      await popup.goto(`${browser.extensionBase}popup.html`);
      // Watch the popup from before the get starts, so that a short transfer is not missed.
      await popup.evaluate((cid) => {
        window.__sawTransfer = new Promise((resolve) => {
          const seen = () => document.querySelector(`#transfers li[data-cid="${cid}"] progress`);
          new MutationObserver(() => seen() && resolve(seen().outerHTML)).observe(document.body, { childList: true, subtree: true });
        });
      }, added.cid);
      await page.evaluate((cid, get) => { window.__get = eval(`(${get})`)(cid); }, added.cid, getFromPeersInPage.toString());
      const bar = await Promise.race([popup.evaluate(() => window.__sawTransfer), new Promise((r) => setTimeout(() => r(null), 30_000))]);
      assert.match(bar ?? '', /<progress/, 'the popup showed the transfer with a progress bar');
      await h.screenshot(popup, 'popup-transfer-chromium.png');
      assert.match(await popup.$eval(`#peers li[data-peer-id="${node.peerId}"]`, (e) => e.textContent), /^did:key:z6Mk.* · websocket/);
      const r = await page.evaluate(() => window.__get);
      await popup.waitForSelector('#transfers li.none', { timeout: 5_000 });
      assert.equal(r.error, undefined, JSON.stringify(r.error));
      assert.equal(r.size, content.length);
      assert.equal(`sha256:${r.sha256}`, `sha256:${createHash('sha256').update(content).digest('hex')}`);
      assert.equal(`sha256:${r.sha256}`, added.sha256, 'the same seed name as the node gave it');
      assert.equal(r.stat.sha256, added.sha256, 'the browser names it as the node did');
      assert.deepEqual(r.listed, [added.cid], 'the fetched object is now this origin\'s');
      const nodePeer = r.peers.find((p) => p.peerId === node.peerId);
      assert.ok(nodePeer?.did?.startsWith('did:key:'), 'p2p_peers shows the peer with its DID');
      assert.ok(nodePeer.transports.length > 0);

      // Held now: it reads with the node gone.
      await node.stop();
      const again = await page.evaluate(async (cid) => (await window.disot.cas.get(cid)).length, added.cid);
      assert.equal(again, content.length);
      // Something nobody has: a clear not-found, not a hang.
      const missing = await page.evaluate((cid) => window.disot.cas.get(cid).then(() => null, (e) => e.code), 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku');
      assert.equal(missing, -32001);
    } finally {
      await browser.close();
    }
  });

  test('browser to browser through the relay: public content is served, private is not', async () => {
    const node = await new h.NativeNode(h.tempDir('node-b2b')).start();
    const site = await h.startPageServer();
    const launch = async (name) => {
      const b = await h.Browser.launch('chromium', h.prepareExtension('chrome', [node.wsAddr]), h.tempDir(`profile-${name}`));
      const page = await b.open(`${site.url}/demo.html`);
      await h.grantInChromium(b, page);
      await h.waitFor(async () => (await h.status(page)).relay?.state === 'reserved' || (await page.evaluate(() => window.disot.p2p.peers())).length > 0, { what: `${name} connected` });
      return { b, page };
    };
    const a = await launch('a');
    const b = await launch('b');
    try {
      const put = await a.page.evaluate(async () => {
        const make = (n, seed) => { const d = new Uint8Array(n); for (let i = 0; i < n; i += 65536) crypto.getRandomValues(d.subarray(i, Math.min(n, i + 65536))); d[0] = seed; return d; };
        const hex = async (d) => [...new Uint8Array(await crypto.subtle.digest('SHA-256', d))].map((x) => x.toString(16).padStart(2, '0')).join('');
        const pub = make(3 * 1024 * 1024 + 5, 1);
        const priv = make(200_000, 2);
        return {
          pub: await window.disot.cas.put(pub, { public: true }), pubSha: await hex(pub),
          priv: await window.disot.cas.put(priv),
        };
      });
      const r = await b.page.evaluate(getFromPeersInPage, put.pub.cid);
      assert.equal(r.error, undefined, JSON.stringify(r.error));
      assert.equal(r.sha256, put.pubSha, 'B has A\'s bytes');
      // Named as it came in (hashed in file order while its blocks arrived).
      assert.equal(r.stat.sha256, `sha256:${put.pubSha}`, 'B names the fetched object by the hash of its content');
      assert.equal(r.stat.size, 3 * 1024 * 1024 + 5);
      const aPeer = (await a.page.evaluate(() => window.disot.p2p.peers())).find((p) => p.peerId !== node.peerId);
      assert.ok(aPeer, 'A sees B connected');
      h.log('A sees B as', JSON.stringify(aPeer));
      assert.deepEqual(aPeer.transports, ['webrtc'], `one direct WebRTC connection, the relayed one closed: ${JSON.stringify(aPeer)}`);
      assert.ok(r.progress.length > 0 && r.progress.at(-1) > 0, 'progress was reported');

      // A's private object: B is connected to A, yet gets nothing.
      const denied = await b.page.evaluate((cid) => window.disot.cas.get(cid).then(() => null, (e) => e.code), put.priv.cid);
      assert.equal(denied, -32001);

      // Two sites in B fetch another public object of A at once: each gets it, neither is
      // turned away (or told) because the other is fetching it.
      const pub2 = await a.page.evaluate(async () => {
        const d = new Uint8Array(3 * 1024 * 1024);
        for (let i = 0; i < d.length; i += 65536) crypto.getRandomValues(d.subarray(i, i + 65536));
        const hex = [...new Uint8Array(await crypto.subtle.digest('SHA-256', d))].map((x) => x.toString(16).padStart(2, '0')).join('');
        return { ...(await window.disot.cas.put(d, { public: true })), hex };
      });
      const otherSite = await b.b.open(`${site.url.replace('127.0.0.1', 'localhost')}/demo.html`);
      await h.grantInChromium(b.b, otherSite);
      const both = await Promise.all([b.page, otherSite].map((p) => p.evaluate(getFromPeersInPage, pub2.cid)));
      for (const got of both) {
        assert.equal(got.error, undefined, JSON.stringify(got.error));
        assert.equal(got.sha256, pub2.hex);
      }

      // Small objects (one block) come with the fetch's answer: a range of one, all of
      // another, and the answer itself, with `inline` and without.
      const small = await a.page.evaluate(async () => {
        const make = (n, seed) => { const d = new Uint8Array(n); crypto.getRandomValues(d); d[0] = seed; return d; };
        const out = [];
        for (const [n, seed] of [[1500, 3], [64 * 1024, 4], [900, 5], [700, 6]]) {
          const d = make(n, seed);
          out.push({ ...(await window.disot.cas.put(d, { public: true })), bytes: Array.from(d) });
        }
        return out;
      });
      const got = await b.page.evaluate(async (small) => {
        const ranged = await window.disot.cas.get(small[0].cid, { offset: 100, length: 50 });
        const whole = await window.disot.cas.get(small[1].cid, { as: 'blob' });
        const inline = await window.disot.request({ method: 'cas_fetch', params: { name: small[2].cid, inline: true } });
        const plain = await window.disot.request({ method: 'cas_fetch', params: { name: small[3].cid } });
        return {
          ranged: Array.from(ranged), whole: Array.from(new Uint8Array(await whole.arrayBuffer())),
          inline, plain, stat: await window.disot.cas.stat(small[2].cid),
          later: Array.from(await window.disot.cas.get(small[0].cid)),
        };
      }, small.map(({ cid }) => ({ cid })));
      assert.deepEqual(got.ranged, small[0].bytes.slice(100, 150), 'a range of a small fetched object');
      assert.deepEqual(got.whole, small[1].bytes, '64 KiB, one block, as a Blob');
      assert.deepEqual(got.later, small[0].bytes, 'the ranged get stored the whole object');
      assert.deepEqual([...Buffer.from(got.inline.data, 'base64')], small[2].bytes, 'inline: the content with the answer');
      assert.equal(got.inline.size, 900);
      assert.equal(got.inline.sha256, small[2].sha256);
      assert.equal(got.stat.cid, small[2].cid, 'and it is stored');
      assert.equal(got.plain.data, undefined, 'without inline, no content in the answer');
      assert.equal(got.plain.size, 700);
    } finally {
      await a.b.close();
      await b.b.close();
    }
  });

  test('a peer that opens more streams than it should gets a few served, the rest reset, and the browser\'s memory does not grow with what it claims', async () => {
    const dataDir = h.tempDir('node-flood');
    const content = randomBytes(2 * 1024 * 1024);
    const added = nodeAdd(dataDir, content);
    const node = await new h.NativeNode(dataDir).start();
    const flood = await h.startExamplePeer('flood-peer', ['0']);
    const site = await h.startPageServer();
    const browser = await h.Browser.launch('chromium', h.prepareExtension('chrome', [node.wsAddr, flood.addr]), h.tempDir('profile-flood'));
    try {
      const page = await browser.open(`${site.url}/demo.html`);
      await h.grantInChromium(browser, page);
      await connectedTo(page, [node.peerId, flood.peerId]);
      const popup = await browser.browser.newPage();
      await popup.goto(`${browser.extensionBase}popup.html`);
      const memory = async () => (await h.ui(popup, 'sync_status')).wasmMemoryBytes;
      const before = await memory();
      // 40 streams of each protocol, each with a message begun that claims the protocol's
      // largest size (4 MiB for Bitswap) and never finished.
      flood.send('flood 40');
      const reports = await h.waitFor(() => {
        const r = flood.events.filter((e) => e.event === 'flood');
        return r.length === 4 && r;
      }, { what: 'the flood peer\'s reports' });
      console.log(`flood reports: ${JSON.stringify(reports)}`);
      // (Sync sessions: three of one peer's, of the eight the browser answers at once.)
      const limits = { '/ipfs/bitswap/1.2.0': 4, '/webrtc-signaling/0.0.1': 2, '/disot/identity/1.0.0': 4, '/disot/sync/1.0.0': 3 };
      for (const r of reports) {
        assert.equal(r.opened, 40, `${r.protocol}: every stream was opened (${JSON.stringify(r)})`);
        assert.equal(r.held, limits[r.protocol], `${r.protocol}: served up to its limit, no more (${JSON.stringify(r)})`);
      }
      const grew = (await memory()) - before;
      console.log(`the node's memory grew ${grew} bytes during the flood`);
      assert.ok(grew < 16 * 1024 * 1024, `the node's memory grew ${grew} bytes (40 Bitswap messages claimed 4 MiB each)`);
      // The browser still works: content comes from the node.
      const r = await page.evaluate(getFromPeersInPage, added.cid);
      assert.equal(r.error, undefined, JSON.stringify(r.error));
      assert.equal(`sha256:${r.sha256}`, added.sha256);
    } finally {
      await browser.close();
    }
    // Bitswap streams that bring no whole message for the idle time (a minute; here one
    // second) are dropped, and their places freed.
    const brief = await h.Browser.launch('chromium', h.prepareExtension('chrome', [flood.addr], undefined, { testHooks: true, debugBitswapIdleMs: 1000 }), h.tempDir('profile-flood-brief'));
    try {
      const page = await brief.open(`${site.url}/demo.html`);
      await h.grantInChromium(brief, page);
      await connectedTo(page, [flood.peerId]);
      const reported = flood.events.length;
      flood.send('flood 40');
      const report = await h.waitFor(() => flood.events.slice(reported).find((e) => e.event === 'flood' && e.protocol === '/ipfs/bitswap/1.2.0'), { what: 'the flood peer\'s report' });
      assert.equal(report.opened, 40, JSON.stringify(report));
      assert.equal(report.held, 0, `none held past the idle time: ${JSON.stringify(report)}`);
    } finally {
      await brief.close();
    }
  });

  test('disot-node serves a peer four Bitswap streams, three sync sessions and two identity exchanges at once and resets the rest; a Bitswap stream idle too long is dropped', async () => {
    // (Keeping some peer's documents, it takes part in sync and answers identity exchanges.)
    const someone = 'did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK';
    const node = await new h.NativeNode(h.tempDir('node-flooded'), { args: ['--trust', someone] }).start();
    const flood = await h.startExamplePeer('flood-peer', ['0', node.wsAddr]);
    await h.waitFor(() => flood.events.some((e) => e.event === 'connected'), { what: 'the flood peer on the node' });
    flood.send('flood 40');
    const limits = { '/ipfs/bitswap/1.2.0': 4, '/disot/sync/1.0.0': 3, '/disot/identity/1.0.0': 2 };
    for (const [protocol, limit] of Object.entries(limits)) {
      const report = await h.waitFor(() => flood.events.find((e) => e.event === 'flood' && e.protocol === protocol), { what: `the flood peer's report on ${protocol}` });
      assert.equal(report.opened, 40, JSON.stringify(report));
      assert.equal(report.held, limit, `served up to the limit, no more: ${JSON.stringify(report)}`);
    }
    assert.equal(node.proc.exitCode, null, 'the node still runs');
    // Streams that bring no whole message for the idle time (a minute; here one second) are
    // dropped, and their places freed.
    const brief = await new h.NativeNode(h.tempDir('node-brief'), { args: ['--debug-bitswap-idle-ms', '1000'] }).start();
    const again = await h.startExamplePeer('flood-peer', ['0', brief.wsAddr]);
    await h.waitFor(() => again.events.some((e) => e.event === 'connected'), { what: 'the flood peer on the node' });
    again.send('flood 40');
    const report = await h.waitFor(() => again.events.find((e) => e.event === 'flood' && e.protocol === '/ipfs/bitswap/1.2.0'), { what: 'the flood peer\'s report' });
    assert.equal(report.opened, 40, JSON.stringify(report));
    assert.equal(report.held, 0, `none held past the idle time: ${JSON.stringify(report)}`);
  });

  test('disot-node refuses a peer\'s fifth connection, and any connection beyond --max-connections, and keeps serving', async () => {
    const dataDir = h.tempDir('node-crowded');
    const added = nodeAdd(dataDir, Buffer.from('still serving'));
    const node = await new h.NativeNode(dataDir, { args: ['--max-connections', '6'] }).start();
    const flood = await h.startExamplePeer('flood-peer', ['0', node.wsAddr]);
    await h.waitFor(() => flood.events.some((e) => e.event === 'connected'), { what: 'the flood peer on the node' });
    const report = (kind) => h.waitFor(() => flood.events.find((e) => e.event === 'connections' && e.kind === kind), { what: `the flood peer's report on ${kind}` });
    // One peer dialling again and again: four connections of it are kept.
    flood.send('connect 9');
    const same = await report('connect');
    assert.deepEqual([same.opened, same.held], [10, 4], JSON.stringify(same));
    // Eight new peers, while that one holds four of the six places: two get in.
    flood.send('strangers 8');
    const others = await report('strangers');
    assert.deepEqual([others.opened, others.held], [8, 2], JSON.stringify(others));
    assert.equal(node.proc.exitCode, null, 'the node still runs');
    // The places of peers that leave are free again: a browser gets one and is served.
    flood.stop();
    const site = await h.startPageServer();
    const b = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'crowded' });
    try {
      await connectedTo(b.page, [node.peerId]);
      const got = await b.run(async (c) => new TextDecoder().decode(await window.disot.cas.get(c)), added.cid);
      assert.equal(got, 'still serving');
    } finally {
      await b.close();
    }
  });

  test('disot-node passes on announcements, and one of a later version, but not junk sent to the topic', async () => {
    const node = await new h.NativeNode(h.tempDir('node-gossip')).start();
    const publisher = await h.startExamplePeer('gossip-peer', [node.wsAddr]);
    const listener = await h.startExamplePeer('gossip-peer', [node.wsAddr]);
    for (const peer of [publisher, listener]) {
      await h.waitFor(() => peer.events.some((e) => e.event === 'subscribed' && e.peer === node.peerId), { what: 'the node on the topic' });
    }
    const received = () => listener.events.filter((e) => e.event === 'received' && e.from === publisher.peerId).map((e) => e.data);
    // Announcements go out until the listener is in the node's mesh and has one. The peer
    // numbers what it publishes (1, 2, ...: the nonce of an announcement, `n` of a later one).
    let sent = 0;
    const publish = (kind) => { publisher.send(kind); sent += 1; return sent; };
    await h.waitFor(() => {
      publish('announcement');
      return received().length > 0;
    }, { interval: 500, what: 'an announcement passed on by the node' });
    // The node reads each message in the order sent: once the last arrives, junk sent before
    // it would have too.
    publish('junk');
    const later = publish('later');
    publish('junk');
    const last = publish('announcement').toString(16).padStart(32, '0');
    await h.waitFor(() => received().some((d) => d.includes(`"nonce":"${last}"`)), { what: 'the last announcement' });
    assert.ok(received().includes(`{"v":2,"n":${later}}`), `a later version is passed on unread: ${JSON.stringify(received())}`);
    assert.ok(!received().some((d) => d.startsWith('not an announcement')), `junk is not passed on: ${JSON.stringify(received())}`);
    assert.equal(publisher.events.filter((e) => e.event === 'published' && e.error).length, 0, 'every message was sent');
  });

  test('a get of what this browser holds for the page asks no peer, also after a restart; one of what it does not hold asks at once', async () => {
    const node = await new h.NativeNode(h.tempDir('node-held')).start();
    // Every want a peer sends it is reported (it would answer want-blocks with junk).
    const observer = await startHostilePeer();
    const site = await h.startPageServer();
    const ext = h.prepareExtension('chrome', [node.wsAddr, observer.addr]);
    const profile = h.tempDir('profile-held');
    const wantsOf = (cids) => observer.events.filter((e) => e.event === 'wanted' && cids.includes(e.cid));
    const connected = (page) => connectedTo(page, [observer.peerId]);
    // Small objects (one block, asked of peers at once when not held), public and not, and a
    // larger one; each got at once after its put, then all again.
    const putAndGet = () => {
      const made = [1024, 3000, 2 * 1024 * 1024].map((n, i) => { const d = new Uint8Array(n); for (let o = 0; o < n; o += 65536) crypto.getRandomValues(d.subarray(o, o + 65536)); return [d, { public: i === 1 }]; });
      return (async () => {
        const cids = [];
        for (const [data, opts] of made) {
          const { cid } = await window.disot.cas.put(data, opts);
          const back = await window.disot.cas.get(cid);
          if (back.length !== data.length || back.some((x, i) => x !== data[i])) throw new Error(`${cid} came back wrong`);
          cids.push(cid);
        }
        for (const cid of cids) await window.disot.cas.get(cid);
        return cids;
      })();
    };
    const getAll = (cids) => Promise.all(cids.map((c) => window.disot.cas.get(c).then((b) => b.length)));
    let browser = await h.Browser.launch('chromium', ext, profile);
    try {
      let page = await browser.open(`${site.url}/demo.html`);
      await h.grantInChromium(browser, page);
      await connected(page);
      const cids = await page.evaluate(putAndGet);
      await new Promise((r) => setTimeout(r, 500)); // any want would have reached the peer
      assert.deepEqual(wantsOf(cids), [], 'no peer was asked for what the browser holds');

      // After a restart the node learns what is held from the store.
      await browser.close();
      browser = await h.Browser.launch('chromium', ext, profile);
      page = await browser.open(`${site.url}/demo.html`);
      await connected(page);
      assert.deepEqual(await page.evaluate(getAll, cids), [1024, 3000, 2 * 1024 * 1024]);
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(wantsOf(cids), [], 'nor after a restart');

      // The peer does see wants: a one-block object the browser does not hold is asked for.
      const unheld = 'bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy';
      await page.evaluate((c) => window.disot.cas.get(c).catch(() => null), unheld);
      assert.ok(wantsOf([unheld]).length > 0, 'a want for what is not held reached the peer');
    } finally {
      await browser.close();
    }
  });

  test('a fetch asks peers for every block of what the page does not hold itself, and a sha256: name means the page\'s own copy', async () => {
    const dataDir = h.tempDir('node-own');
    // 1 MiB leaves (the default layout): X is two leaves and a root; XY starts with X's two
    // leaves and has two more; X2 is X cut into 100,000-byte leaves (21 and a root).
    const x = randomBytes(2 * 1024 * 1024);
    const xy = Buffer.concat([x, randomBytes(1536 * 1024)]);
    const small = randomBytes(1000); // one block
    const [addedX, addedXY, addedX2, addedSmall] = [nodeAdd(dataDir, x), nodeAdd(dataDir, xy), nodeAdd(dataDir, x, ['--chunk-size', '100000']), nodeAdd(dataDir, small)];
    assert.equal(addedX2.sha256, addedX.sha256, 'one content, two CIDs');
    const node = await new h.NativeNode(dataDir).start();
    const [site, site2] = [await h.startPageServer(), await h.startPageServer()];
    const browser = await h.Browser.launch('chromium', h.prepareExtension('chrome', [node.wsAddr]), h.tempDir('profile-own'));
    const fetchIn = (page, cid) => page.evaluate((name) => window.disot.request({ method: 'cas_fetch', params: { name } })
      .then((r) => r.fetched.blocks, (e) => `error ${e.code}: ${e.message}`), cid);
    const statIn = (page, name) => page.evaluate((n) => window.disot.cas.stat(n).then((r) => r.cid, (e) => `error ${e.code}`), name);
    try {
      const a = await browser.open(`${site.url}/demo.html`);
      await h.grantInChromium(browser, a);
      await connectedTo(a, [node.peerId]);
      const putIn = (page, bytes) => page.evaluate(async (b64) => window.disot.cas.put(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)), { mime: 'text/x-a' }), bytes.toString('base64'));
      assert.equal((await putIn(a, x)).cid, addedX.cid, 'site A holds X');
      assert.equal((await putIn(a, small)).cid, addedSmall.cid, 'and a one-block object');

      // Site B's fetch of XY asks for all five blocks, X's two leaves too (held for A); so does
      // site C's of X itself. Before, the store answered for them, and a page learnt what other
      // sites hold by how little a peer was asked for (a DAG linking their blocks).
      const b = await browser.open(`${site.url.replace('127.0.0.1', 'localhost')}/demo.html`);
      await h.grantInChromium(browser, b);
      assert.equal(await fetchIn(b, addedXY.cid), 5, 'every block of XY came from the node');
      assert.equal(await fetchIn(b, addedX2.cid), 22, 'every block of X2 came from the node');
      const c = await browser.open(`${site2.url}/demo.html`);
      await h.grantInChromium(browser, c);
      assert.equal(await fetchIn(c, addedX.cid), 3, 'every block of X came from the node, though held for A');
      const one = await c.evaluate((name) => window.disot.request({ method: 'cas_fetch', params: { name, inline: true } }), addedSmall.cid);
      assert.equal(one.fetched.blocks, 1, 'the one-block object came from the node, though held for A');
      assert.equal(one.data, small.toString('base64'));
      assert.equal(one.mime ?? null, null, 'A\'s MIME type is not told');

      // X is held under two CIDs now: each site's sha256: name is its own copy.
      assert.equal(await statIn(a, addedX.sha256), addedX.cid);
      assert.equal(await statIn(b, addedX.sha256), addedX2.cid);
      assert.equal(await statIn(c, addedX.sha256), addedX.cid);
      const got = await b.evaluate(async (n) => {
        const bytes = await window.disot.cas.get(n);
        const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
        return `sha256:${[...digest].map((v) => v.toString(16).padStart(2, '0')).join('')}`;
      }, addedX.sha256);
      assert.equal(got, addedX.sha256, 'B reads X by name');
    } finally {
      await browser.close();
    }
  });

  test('a page asking for many objects at once has every one: those beyond what may run wait their turn, and one asked twice is fetched once', async () => {
    const dataDir = h.tempDir('node-many');
    // 40 objects of 17 blocks (sixteen 64 KiB leaves and a root).
    const added = Array.from({ length: 40 }, () => nodeAdd(dataDir, randomBytes(16 * 65536), ['--chunk-size', '65536']));
    const node = await new h.NativeNode(dataDir).start();
    const site = await h.startPageServer();
    const browser = await h.Browser.launch('chromium', h.prepareExtension('chrome', [node.wsAddr]), h.tempDir('profile-many'));
    try {
      const page = await browser.open(`${site.url}/demo.html`);
      await h.grantInChromium(browser, page);
      await connectedTo(page, [node.peerId]);
      // All at once, the first one twice. (Until now, 16 fetches ran at once and the rest,
      // and a second request for an object being fetched, failed with -32005.)
      const names = [added[0].cid, ...added.map((a) => a.cid)];
      // Meanwhile the popup shows what runs and how many wait.
      const popup = await browser.browser.newPage();
      await popup.goto(`${browser.extensionBase}popup.html`);
      let watching = true;
      const seen = { running: 0, waiting: 0, shown: '' };
      const watch = (async () => {
        while (watching) {
          const s = await h.ui(popup, 'ui_status');
          seen.running = Math.max(seen.running, s.transfers.length);
          seen.waiting = Math.max(seen.waiting, s.fetchesWaiting);
          seen.shown ||= await popup.$eval('#transfers', (e) => e.querySelector('li.waiting')?.textContent ?? '');
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      const answers = await page.evaluate((names) => Promise.all(names.map((name) => window.disot.request({ method: 'cas_fetch', params: { name } })
        .then((r) => ({ cid: r.cid, sha256: r.sha256, blocks: r.fetched.blocks }), (e) => ({ error: `${e.code}: ${e.message}` })))), names);
      assert.deepEqual(answers.map((a) => a.error ?? a.sha256), [added[0], ...added].map((a) => a.sha256), 'every object, named right');
      watching = false;
      await watch;
      h.log(`fetches at once: at most ${seen.running} ran, ${seen.waiting} waited; the popup said "${seen.shown}"`);
      assert.ok(seen.running <= 8, `no more than 8 of one site at once (${seen.running})`);
      assert.ok(seen.waiting >= 1, 'some waited for their turn');
      assert.match(seen.shown, /^\d+ more waiting for their turn$/);
      assert.deepEqual(answers.slice(2).map((a) => a.blocks), Array(39).fill(17), '17 blocks each');
      assert.deepEqual([answers[0].blocks, answers[1].blocks].sort((x, y) => x - y), [0, 17], 'the object asked for twice came once');
      const listed = await page.evaluate(() => window.disot.cas.list().then((l) => l.length));
      assert.equal(listed, 40);
    } finally {
      await browser.close();
    }
  });

  test('requests of one page for an object being fetched join that fetch: however many, they take one turn', async () => {
    const node = await new h.NativeNode(h.tempDir('node-join')).start();
    const hostile = await startHostilePeer();
    const site = await h.startPageServer();
    const browser = await h.Browser.launch('chromium', h.prepareExtension('chrome', [node.wsAddr, hostile.addr]), h.tempDir('profile-join'));
    try {
      const page = await browser.open(`${site.url}/demo.html`);
      await h.grantInChromium(browser, page);
      await connectedTo(page, [node.peerId, hostile.peerId]);
      // The hostile peer says it has every block and now sends none: a fetch from it holds its
      // turn until the peer goes. One site has at most 8 turns.
      hostile.send('stall');
      await h.waitFor(() => hostile.events.some((e) => e.event === 'stalling'), { what: 'the peer to stall' });
      // An object the page holds: a request for it asks the peers at once, while the store is
      // read, and takes that want back as soon as the store answers.
      const held = await page.evaluate(() => window.disot.cas.put(new Uint8Array([7, 7, 7])).then((r) => r.cid));
      const fromStore = await page.evaluate((name) => window.disot.request({ method: 'cas_fetch', params: { name } }), held);
      assert.equal(fromStore.fetched.blocks, 0, 'answered from the store');
      await h.waitFor(() => hostile.events.some((e) => e.event === 'wanted' && e.cid === held), { what: 'the early want' });
      await h.waitFor(() => hostile.events.some((e) => e.event === 'cancelled' && e.cid === held), { timeout: 5_000, what: 'the early want for the held object to be taken back' });
      // Blocks nobody has (raw CIDs of random bytes).
      const cids = await Promise.all(Array.from({ length: 10 }, async () => CID.create(1, 0x55, await sha256.digest(randomBytes(64))).toString()));
      // Ten requests for one object: joined, one turn, none waits.
      const status = async () => {
        const popup = await browser.browser.newPage();
        await popup.goto(`${browser.extensionBase}popup.html`);
        const s = await h.ui(popup, 'ui_status');
        await popup.close();
        return s;
      };
      await page.evaluate((cid) => {
        window.__same = Array.from({ length: 10 }, () => window.disot.request({ method: 'cas_fetch', params: { name: cid } }).then(() => 'fetched', (e) => e.code));
      }, cids[0]);
      await h.waitFor(() => hostile.events.some((e) => e.event === 'wanted' && e.cid === cids[0] && e.how === 'block'), { what: 'the block asked of the hostile peer' });
      await new Promise((r) => setTimeout(r, 500));
      const same = await status();
      assert.deepEqual([same.transfers.length, same.fetchesWaiting], [1, 0], 'ten requests for one object: one fetch running, none waiting');
      // Nine requests for nine other objects: eight run (with the one above, 8 turns are taken)
      // and two wait: what the count above would have shown had the ten not been joined.
      await page.evaluate((names) => {
        window.__others = names.map((name) => window.disot.request({ method: 'cas_fetch', params: { name } }).then(() => 'fetched', (e) => e.code));
      }, cids.slice(1));
      // (Once all ten objects are counted: had the ten above not been joined, more would be.)
      let others;
      await h.waitFor(async () => {
        others = await status();
        return others.transfers.length + others.fetchesWaiting >= 10;
      }, { what: 'ten objects counted as fetching or waiting' });
      assert.deepEqual([others.transfers.length, others.fetchesWaiting], [8, 2], 'nine more objects: eight run in all, two wait');
      // The peer goes: every one of them fails, the ten joined ones with one answer.
      hostile.stop();
      const answers = await page.evaluate(() => Promise.all([...window.__same, ...window.__others]));
      assert.deepEqual(answers, Array(19).fill(-32001), JSON.stringify(answers));
    } finally {
      hostile.stop();
      await browser.close();
      await node.stop();
    }
  });

  test('a peer that answers with wrong bytes gets nothing stored, is disconnected and is not served again; the get succeeds from an honest peer', async () => {
    const dataDir = h.tempDir('node-honest');
    const content = randomBytes(8 * 1024 * 1024);
    const added = nodeAdd(dataDir, content);
    const node = await new h.NativeNode(dataDir).start();
    const hostile = await startHostilePeer();
    const site = await h.startPageServer();
    const browser = await h.Browser.launch('chromium', h.prepareExtension('chrome', [node.wsAddr, hostile.addr]), h.tempDir('profile-hostile'));
    try {
      const page = await browser.open(`${site.url}/demo.html`);
      await h.grantInChromium(browser, page);
      const hostileId = hostile.addr.split('/p2p/')[1];
      await connectedTo(page, [node.peerId, hostileId]);
      // Before it misbehaves, the peer is served what is public.
      const mine = (await page.evaluate(() => window.disot.cas.put(new Uint8Array(1024).fill(7), { public: true }))).cid;
      const about = (event) => hostile.events.filter((e) => e.event === event && e.cid === mine).length;
      hostile.send(`want ${mine}`);
      await h.waitFor(() => about('received') === 1, { what: 'the peer to be served before it misbehaves' });
      const r = await page.evaluate(getFromPeersInPage, added.cid);
      assert.equal(r.error, undefined, JSON.stringify(r.error));
      assert.equal(`sha256:${r.sha256}`, added.sha256, 'the right bytes, from the honest node');
      const forged = hostile.events.filter((e) => e.event === 'forged');
      assert.ok(forged.length > 0, 'the hostile peer was asked and answered with junk');
      await h.waitFor(() => hostile.events.some((e) => e.event === 'disconnected'), { what: 'the browser to disconnect the hostile peer' });
      // None of the junk was stored.
      const ext = await browser.browser.newPage();
      await ext.goto(`${browser.extensionBase}options.html`);
      const keys = await ext.evaluate(h.blockKeysInExtensionPage);
      for (const f of forged) assert.ok(!keys.includes(f.sent), `forged block ${f.sent} is not stored`);
      assert.equal(keys.length, 10, '8 leaves and the root, the page\'s public block, nothing else');
      // Remembered: connected again (the browser dials its bootstrap peers), it asks for the
      // same public block and its stream is reset, unanswered.
      await h.waitFor(() => hostile.events.filter((e) => e.event === 'connected').length >= 2, { what: 'the hostile peer connected again', timeout: 60_000 });
      // (The first stream ended with its connection.)
      await h.waitFor(() => about('reset') === 1, { what: 'the first stream to end' });
      const resets = about('reset');
      hostile.send(`want ${mine}`);
      await h.waitFor(() => about('reset') > resets, { what: 'the banned peer\'s stream reset' });
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(about('received'), 1, 'nothing served to the banned peer');
    } finally {
      await browser.close();
    }
  });
});
