// Sync benchmark, in one run, between two headless Chromium browsers with the extension and a
// disot-node on loopback: a 10,000-entry collection shared by A and synced to B, which had
// nothing of it (goal: under 2 s), then one added entry reaching B (goal: under 100 ms), and
// the memory B's node takes for the document. Times run from A's call to the moment a page in
// B hears of the change and reads it (both browsers share this machine's clock). Run with
// `scripts/bench.sh`. Not part of the test suite.
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import { sha256 } from 'multiformats/hashes/sha2';
import * as h from '../lib/harness.js';

const ENTRIES = 10_000;
const ONE_CHANGE_RUNS = 10;

async function entries(from, n) {
  const out = [];
  for (let i = from; i < from + n; i++) {
    const cid = CID.createV1(raw.code, await sha256.digest(new TextEncoder().encode(`bench ${i}`)));
    out.push({ cid: cid.toString(), name: `file-${i}.bin`, mime: 'application/octet-stream', size: i });
  }
  return out;
}

/** In B's page: resolves with Date.now() once collection `id` has `count` entries. */
function whenCount(id, count) {
  return new Promise((resolve) => {
    const check = async () => {
      const c = await window.disot.collections.get(id).catch(() => null);
      if (c?.entries.length === count) {
        window.disot.removeListener('change', check);
        resolve(Date.now());
      }
    };
    window.disot.on('change', check);
    check();
  });
}

try {
  const node = await new h.NativeNode(h.tempDir('node-sync-bench')).start();
  const site = await h.startPageServer();
  const a = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'sync-bench-a' });
  const b = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'sync-bench-b' });
  const grant = await h.startInPage(b.page, { method: 'disot_requestPermissions', params: [{ share: {} }] });
  await h.answerPrompt(b.browser, '#approve');
  await grant();
  const popupA = await a.browser.open(`${a.browser.extensionBase}popup.html`);
  const popupB = await b.browser.open(`${b.browser.extensionBase}popup.html`);
  const [sa, sb] = [await h.ui(popupA, 'ui_status'), await h.ui(popupB, 'ui_status')];
  await h.ui(popupB, 'trust_set', { did: sa.did, level: 90 });
  await h.ui(popupA, 'peers_dial', { addr: `${node.wsAddr}/p2p-circuit/webrtc/p2p/${sb.peerId}` });
  await h.waitFor(async () => (await h.ui(popupA, 'ui_status')).peers.find((p) => p.peerId === sb.peerId)?.identity, { what: 'B verified at A', timeout: 30_000 });
  const memoryBefore = (await h.ui(popupB, 'sync_status')).wasmMemoryBytes;

  const { id } = await h.ui(popupA, 'collection_create', { name: 'bench' });
  await h.ui(popupA, 'collection_member', { id, did: sb.did, role: 'reader' });
  for (let i = 0; i < ENTRIES; i += 1000) await h.ui(popupA, 'collection_add', { id, entries: await entries(i, 1000) });
  await b.page.evaluate(`window.__arrived = (${whenCount})(${JSON.stringify(id)}, ${ENTRIES})`);
  const shared = Date.now();
  await h.ui(popupA, 'share', { collection: id, to: sb.did });
  const arrived = await b.page.evaluate(() => window.__arrived);
  const peerB = (await h.ui(popupA, 'sync_status')).peers.find((p) => p.did === sb.did);

  const oneChange = [];
  for (let k = 0; k < ONE_CHANGE_RUNS; k++) {
    await b.page.evaluate(`window.__arrived = (${whenCount})(${JSON.stringify(id)}, ${ENTRIES + k + 1})`);
    const [entry] = await entries(ENTRIES + k, 1);
    const t0 = Date.now();
    await h.ui(popupA, 'collection_add', { id, ...entry });
    oneChange.push((await b.page.evaluate(() => window.__arrived)) - t0);
  }
  oneChange.sort((x, y) => x - y);
  const status = await h.ui(popupB, 'sync_status');
  const mib = (n) => (n / 1048576).toFixed(1);
  console.log(`sync: two Chromium browsers on loopback (direct WebRTC), one disot-node`);
  console.log(`  ${ENTRIES} entries shared to a peer that has none: ${arrived - shared} ms (goal < 2000 ms), last session ${peerB?.stats?.bytesSent ?? '?'} bytes sent`);
  console.log(`  one added entry, A's call to B's page reading it: median ${oneChange[oneChange.length >> 1]} ms, min ${oneChange[0]}, max ${oneChange[oneChange.length - 1]} over ${ONE_CHANGE_RUNS} (goal < 100 ms)`);
  console.log(`  B's wasm memory: ${mib(memoryBefore)} MiB before, ${mib(status.wasmMemoryBytes)} MiB with the document (grows only; upper bound of its cost)`);
} finally {
  await h.cleanup();
}
