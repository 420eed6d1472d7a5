// Sync benchmark, in one run: two Chromium profiles on loopback, one disot-node, the two peers
// trusting each other at 90 and connected directly (WebRTC).
//   - A's collection of 10,000 entries (ten changes of 1,000, real raw CIDs) shared with B,
//     which has nothing of it: from A's `share` call to B holding all of it, saved (B's
//     `synced` event). Goal < 2 s. Baselines: the same sync code natively over an in-memory
//     stream (core/examples/sync_bench, the same entries), and B's page downloading as many
//     bytes as the sync moved from a loopback HTTP server.
//   - one entry added at A, from the call to B holding it (B's `synced` event), 20 times.
//     Goal < 100 ms. Baseline: the native figure.
//   - memory: B's wasm memory before and after it holds the document, and the saved document.
// Run with `scripts/bench.sh`. Not part of the test suite.
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import { sha256 } from 'multiformats/hashes/sha2';
import * as h from '../lib/harness.js';

const ENTRIES = 10_000;
const PER_CHANGE = 1_000;
const ROUNDS = 20;
const ui = h.ui;

/** Entry `i`, as the native benchmark makes it. */
async function entry(i) {
  const cid = CID.createV1(raw.code, await sha256.digest(new TextEncoder().encode(`entry ${i}`)));
  return { cid: cid.toString(), name: `entry-${i}.txt`, mime: 'text/plain', size: i };
}

/** In B's popup, from the feed's current position: the time (Date.now()) of the `synced`
 * event after which B holds at least `count` entries of collection `id`. Returns a function
 * that waits for it. */
async function syncedTo(popup, id, count) {
  await popup.evaluate(async (id, count) => {
    const call = async (method, params) => {
      const body = JSON.stringify(params === undefined ? { method } : { method, params });
      const reply = JSON.parse((await chrome.runtime.sendMessage({ to: 'background', body })).body);
      if (reply.error) throw new Error(reply.error.message);
      return reply.result;
    };
    let { seq } = await call('sync_watch');
    window.__synced = (async () => {
      for (;;) {
        const r = await call('sync_watch', { since: seq });
        const at = Date.now();
        seq = r.seq;
        if (!r.changes.some((c) => c.reason === 'synced')) continue;
        const held = await call('collection_get', { id, limit: 0 }).then((c) => c.count, () => 0);
        if (held >= count) return at;
      }
    })();
  }, id, count);
  return () => popup.evaluate(() => window.__synced);
}

/** `promise`, or an error after `ms`: a benchmark that stalls says where. */
function within(ms, promise, what) {
  let timer;
  const late = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`no ${what} after ${ms} ms`)), ms); });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];

try {
  const native = JSON.parse(execFileSync('cargo', ['run', '--quiet', '--profile', 'native', '-p', 'disot-core', '--example', 'sync_bench', '--', '--json'], { cwd: h.ROOT, encoding: 'utf8' }).trim());
  const node = await new h.NativeNode(h.tempDir('node-sync-bench')).start();
  const a = await h.Browser.launch('chromium', h.prepareExtension('chrome', [node.wsAddr]), h.tempDir('profile-sync-bench-a'));
  const b = await h.Browser.launch('chromium', h.prepareExtension('chrome', [node.wsAddr]), h.tempDir('profile-sync-bench-b'));
  const popupA = await a.open(`${a.extensionBase}popup.html`);
  const popupB = await b.open(`${b.extensionBase}popup.html`);
  const [sa, sb] = [await ui(popupA, 'ui_status'), await ui(popupB, 'ui_status')];
  await ui(popupA, 'trust_set', { did: sb.did, level: 90 });
  await ui(popupB, 'trust_set', { did: sa.did, level: 90 });
  for (const p of [popupA, popupB]) await h.waitFor(async () => (await ui(p, 'ui_status')).peers.some((x) => x.peerId === node.peerId), { what: 'both on the node' });
  await ui(popupA, 'peers_dial', { addr: `${node.wsAddr}/p2p-circuit/webrtc/p2p/${sb.peerId}` });
  await h.waitFor(async () => {
    const peer = (await ui(popupA, 'ui_status')).peers.find((x) => x.peerId === sb.peerId);
    return peer?.connections.length && peer.connections.every((c) => c.transport === 'webrtc');
  }, { what: 'A and B connected directly', timeout: 60_000 });

  // A's collection, made before B may see it.
  const { id } = await ui(popupA, 'collection_create', { name: 'bench' });
  await ui(popupA, 'collection_member', { id, did: sb.did, role: 'reader' });
  for (let from = 0; from < ENTRIES; from += PER_CHANGE) {
    const batch = [];
    for (let i = from; i < from + PER_CHANGE; i++) batch.push(await entry(i));
    await ui(popupA, 'collection_add', { id, entries: batch });
  }
  const statusB = () => ui(popupB, 'sync_status');
  const receivedFromA = async () => (await statusB()).peers.find((p) => p.did === sa.did)?.bytesReceivedTotal ?? 0;
  const memoryBefore = (await statusB()).wasmMemoryBytes;
  const bytesBefore = await receivedFromA();

  // 1. The whole collection to a peer that has none of it.
  let heard = await syncedTo(popupB, id, ENTRIES);
  let t0 = Date.now();
  await ui(popupA, 'share', { collection: id, to: sb.did, note: 'bench' });
  const arrived = await within(120_000, heard(), 'collection at B');
  const firstMs = arrived - t0;
  await new Promise((r) => setTimeout(r, 1500));
  const firstBytes = (await receivedFromA()) - bytesBefore;
  const memoryAfter = (await statusB()).wasmMemoryBytes;

  // The same number of bytes over HTTP, into B's popup.
  const url = await h.serveBytes(randomBytes(firstBytes));
  const httpMs = await popupB.evaluate(async (url) => {
    const t = performance.now();
    await (await fetch(url, { cache: 'no-store' })).arrayBuffer();
    return performance.now() - t;
  }, url);

  // 2. One change at a time.
  const changeMs = [];
  const callMs = [];
  const endedMs = [];
  const sessionBytes = [];
  for (let k = 0; k < ROUNDS; k++) {
    const before = await receivedFromA();
    heard = await syncedTo(popupB, id, ENTRIES + k + 1);
    const added = await entry(ENTRIES + k);
    t0 = Date.now();
    await ui(popupA, 'collection_add', { id, ...added });
    callMs.push(Date.now() - t0);
    changeMs.push((await within(30_000, heard(), `entry ${k} at B`)) - t0);
    endedMs.push((await statusB()).peers.find((p) => p.did === sa.did).atMs - t0);
    sessionBytes.push((await receivedFromA()) - before);
  }

  const f = (x, d = 0) => Number(x).toFixed(d);
  const MiB = 1 << 20;
  console.log(`sync: ${ENTRIES} entries in ${ENTRIES / PER_CHANGE} changes, A → B over direct WebRTC (Chromium, loopback)`);
  console.log(`  to a new peer: ${f(firstMs)} ms, ${firstBytes} bytes received; native ${f(native.firstMs)} ms (${native.firstBytes} bytes) → ${f(firstMs / native.firstMs, 1)}x native; HTTP of ${firstBytes} bytes ${f(httpMs, 1)} ms → ${f(firstMs / httpMs, 1)}x HTTP; goal < 2000 ms`);
  console.log(`  one change: median ${f(median(changeMs))} ms, min ${f(Math.min(...changeMs))}, max ${f(Math.max(...changeMs))} over ${ROUNDS}; median ${median(sessionBytes)} bytes received; native ${f(native.oneChangeMs, 2)} ms (${native.oneChangeBytes} bytes) → ${f(median(changeMs) / native.oneChangeMs, 1)}x native; goal < 100 ms`);
  console.log(`    A's call returned after ${f(median(callMs))} ms, B's session ended ${f(median(endedMs))} ms after the call (medians)`);
  console.log(`  B's wasm memory: ${f(memoryBefore / MiB, 1)} MiB before, ${f(memoryAfter / MiB, 1)} MiB holding the document (+${f((memoryAfter - memoryBefore) / MiB, 1)} MiB); the saved document natively: ${native.docBytes} bytes`);
} finally {
  await h.cleanup();
}
