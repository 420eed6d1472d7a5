// Browser-to-browser benchmark, in one run, Chromium profiles on loopback, one disot-node:
//   - time from dial to a working direct connection, B to each of three peers in turn, hung up
//     after each, three rounds (medians): the extension (relayed connection, then our /webrtc)
//     vs js-libp2p's /webrtc between extension pages of the same browsers; and the extension's
//     first dial after B started, apart
//   - 64 MiB through the extension (page in A puts, page in B gets by CID: Bitswap over our
//     direct WebRTC connection, every block verified and stored) vs
//     (a) a raw RTCDataChannel between the same two browsers (extension pages, 64 KiB messages,
//         back-pressure at 1 MiB buffered; also in 16 KiB messages, the largest the libp2p
//         WebRTC spec sends), (b) js-libp2p /webrtc between the same two browsers
//         (the reference implementation; one stream, 64 KiB writes, nothing verified or stored)
//         and (c) an HTTP download of the same bytes by B's page from a loopback server (the
//         "centralized solution")
//   - swarming: the same 64 MiB held by three peers (A, C, D) and fetched by B from all at once,
//     vs raw RTCDataChannels from A, C and D into B at once (what the machine allows three
//     senders)
//   - first-byte latency of a 1 KiB object from a connected peer vs an HTTP fetch of 1 KiB
//   - a 1 KiB object from a peer not yet connected, by a fresh browser E, from each of A, C and
//     D (the DHT lookup, the relayed dial, the direct connection, Bitswap): for the record
// The transfers compared with each other are taken in turn over three rounds
// (DISOT_BENCH_ROUNDS), and their medians compared. Prints ratios; run with `scripts/bench.sh`.
// Not part of the test suite.
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { build } from 'esbuild';
import * as h from '../lib/harness.js';

const MiB = 64;
const peersOf = () => window.disot.p2p.peers();

/** Connect a raw RTCDataChannel from each page of `senders` to the extension page `receiver`
 * (non-trickle signaling through this script: each side gathers all its candidates first). The
 * receiver hands each message to `window[run].onMessage`, which must be set; each sender keeps
 * its channel in `window[run].dc`. */
async function connectRaw(senders, receiver, run) {
  for (const sender of senders) {
    const offer = await sender.evaluate(async (run) => {
      const pc = new RTCPeerConnection();
      const dc = pc.createDataChannel('bench');
      window[run] = { ...window[run], pc, dc };
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((r) => {
        if (pc.iceGatheringState === 'complete') r();
        else pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r();
      });
      return pc.localDescription.toJSON();
    }, run);
    const answer = await receiver.evaluate(async (run, offer) => {
      const pc = new RTCPeerConnection();
      window[run].pcs.push(pc);
      pc.ondatachannel = ({ channel }) => {
        channel.binaryType = 'arraybuffer';
        channel.onmessage = (ev) => window[run].onMessage(ev.data);
      };
      await pc.setRemoteDescription(offer);
      await pc.setLocalDescription(await pc.createAnswer());
      await new Promise((r) => {
        if (pc.iceGatheringState === 'complete') r();
        else pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r();
      });
      return pc.localDescription.toJSON();
    }, run, offer);
    await sender.evaluate(async (run, answer) => {
      const { pc, dc } = window[run];
      await pc.setRemoteDescription(answer);
      await new Promise((r) => { if (dc.readyState === 'open') r(); else dc.onopen = r; });
    }, run, answer);
  }
}

/** Close what `connectRaw` opened, and `window[run].close()` where a page set one. */
async function closeRaw(pages, run) {
  for (const p of pages) {
    await p.evaluate(async (run) => {
      for (const pc of [window[run].pc, ...(window[run].pcs ?? [])]) pc?.close();
      await window[run].close?.();
      delete window[run];
    }, run);
  }
}

/** A fresh key per call: the pages keep earlier runs' connections apart. */
const runKey = () => `raw${Math.random().toString(36).slice(2)}`;

/** Raw RTCDataChannels into the extension page `receiver`, one from each page of `senders`, all
 * sending at once (`mib` MiB split evenly between them) in messages of `piece` bytes, with
 * back-pressure at 1 MiB buffered. MiB/s from the first message received to the last. */
async function rawChannels(senders, receiver, mib, piece) {
  const total = mib * 1024 * 1024;
  // Whole bytes each; the first sender takes what does not divide evenly.
  const shares = senders.map((_, i) => Math.floor(total / senders.length) + (i === 0 ? total % senders.length : 0));
  const run = runKey();
  await receiver.evaluate((run, total) => {
    let got = 0;
    let start;
    window[run] = { pcs: [] };
    window[run].received = new Promise((resolve) => {
      window[run].onMessage = (data) => {
        start ??= performance.now();
        got += data.byteLength;
        if (got >= total) resolve(performance.now() - start);
      };
    });
  }, run, total);
  await connectRaw(senders, receiver, run);
  // All connected: send at once.
  const sending = senders.map((sender, i) => sender.evaluate(async (run, share, size) => {
    const { dc } = window[run];
    const piece = new Uint8Array(size);
    crypto.getRandomValues(piece.subarray(0, Math.min(size, 65536)));
    dc.bufferedAmountLowThreshold = 256 * 1024;
    for (let sent = 0; sent < share; sent += piece.length) {
      if (dc.bufferedAmount > 1024 * 1024) await new Promise((r) => { dc.onbufferedamountlow = r; });
      dc.send(sent + piece.length <= share ? piece : piece.subarray(0, share - sent));
    }
  }, run, shares[i], piece));
  const ms = await receiver.evaluate((run) => window[run].received, run);
  await Promise.all(sending);
  await closeRaw([receiver, ...senders], run);
  return mib / (ms / 1000);
}

/** The work the extension does around the bytes, done by plain JavaScript around a raw
 * RTCDataChannel from extension page `sender` to `receiver`, in 16 KiB messages with
 * back-pressure at 1 MiB: the sender reads each 1 MiB block from its own IndexedDB (stored as
 * Blobs beforehand, untimed) and checks it with WebCrypto before sending; the receiver checks
 * each 1 MiB it gets with WebCrypto, stores it in its own IndexedDB (one transaction each), and
 * at the end digests the whole content (its `sha256:` name), which must equal the sender's.
 * MiB/s from the first message received to the name. */
async function rawWithWork(sender, receiver, mib) {
  const run = runKey();
  const setUp = async (run, mib, sending) => {
    const name = `${run}-${sending ? 'sent' : 'got'}`;
    const db = await new Promise((resolve, reject) => {
      const open = indexedDB.open(name, 1);
      open.onupgradeneeded = () => open.result.createObjectStore('blocks');
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
    window[run] = {
      pcs: [],
      db,
      close: async () => {
        db.close();
        await new Promise((r) => { const d = indexedDB.deleteDatabase(name); d.onsuccess = d.onerror = r; });
      },
    };
    if (!sending) return null;
    // 1 MiB blocks, each different, stored as Blobs as an upload is; and the whole content's
    // digest for the receiver to match.
    const whole = new Uint8Array(mib * 1024 * 1024);
    crypto.getRandomValues(whole.subarray(0, 65536));
    for (let i = 0; i < mib; i++) {
      const block = whole.subarray(i * 1048576, (i + 1) * 1048576);
      crypto.getRandomValues(block.subarray(0, 4096));
      const tx = db.transaction('blocks', 'readwrite');
      tx.objectStore('blocks').put(new Blob([block]), i);
      await new Promise((r, j) => { tx.oncomplete = r; tx.onerror = () => j(tx.error); });
    }
    return Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', whole)));
  };
  const expected = await sender.evaluate(setUp, run, mib, true);
  await receiver.evaluate(setUp, run, mib, false);
  await receiver.evaluate((run, mib, expected) => {
    const total = mib * 1048576;
    const { db } = window[run];
    let start;
    let got = 0;
    let block = new Uint8Array(1048576);
    let filled = 0;
    const blocks = [];
    const stored = [];
    const store = (bytes, i) => crypto.subtle.digest('SHA-256', bytes).then(() => new Promise((r, j) => {
      const tx = db.transaction('blocks', 'readwrite');
      tx.objectStore('blocks').put(bytes, i);
      tx.oncomplete = r;
      tx.onerror = () => j(tx.error);
    }));
    window[run].received = new Promise((resolve, reject) => {
      window[run].onMessage = (data) => {
        start ??= performance.now();
        const bytes = new Uint8Array(data);
        for (let at = 0; at < bytes.length;) {
          const n = Math.min(bytes.length - at, block.length - filled);
          block.set(bytes.subarray(at, at + n), filled);
          filled += n;
          at += n;
          if (filled === block.length) {
            blocks.push(block);
            stored.push(store(block, blocks.length - 1));
            block = new Uint8Array(1048576);
            filled = 0;
          }
        }
        got += bytes.length;
        if (got < total) return;
        Promise.all(stored).then(async () => {
          const whole = new Uint8Array(total);
          blocks.forEach((b, i) => whole.set(b, i * 1048576));
          const name = new Uint8Array(await crypto.subtle.digest('SHA-256', whole));
          if (name.some((x, i) => x !== expected[i])) throw new Error('the content arrived changed');
          resolve(performance.now() - start);
        }).catch(reject);
      };
    });
  }, run, mib, expected);
  await connectRaw([sender], receiver, run);
  const sending = sender.evaluate(async (run, mib) => {
    const { dc, db } = window[run];
    dc.bufferedAmountLowThreshold = 256 * 1024;
    const read = (i) => new Promise((r, j) => {
      const get = db.transaction('blocks').objectStore('blocks').get(i);
      get.onsuccess = () => r(get.result);
      get.onerror = () => j(get.error);
    }).then(async (blob) => {
      const bytes = new Uint8Array(await blob.arrayBuffer());
      await crypto.subtle.digest('SHA-256', bytes);
      return bytes;
    });
    let next = read(0);
    for (let i = 0; i < mib; i++) {
      const bytes = await next;
      if (i + 1 < mib) next = read(i + 1); // read ahead while this one goes
      for (let at = 0; at < bytes.length; at += 16384) {
        if (dc.bufferedAmount > 1024 * 1024) await new Promise((r) => { dc.onbufferedamountlow = r; });
        dc.send(bytes.subarray(at, at + 16384));
      }
    }
  }, run, mib);
  const ms = await receiver.evaluate((run) => window[run].received, run);
  await sending;
  await closeRaw([receiver, sender], run);
  return mib / (ms / 1000);
}

/** js-libp2p for the browser, as one script. */
async function jsLibp2pBundle() {
  const out = await build({
    entryPoints: [path.join(h.ROOT, 'tests/bench/jslibp2p.page.js')],
    bundle: true, format: 'iife', platform: 'browser', target: 'es2022', write: false, logLevel: 'error',
  });
  return out.outputFiles[0].text;
}

/** A request to the extension's own API from one of its pages (as the popup makes them). */
function ui(page, method, params) {
  return page.evaluate(async (method, params) => {
    const body = JSON.stringify(params === null ? { method } : { method, params });
    const reply = JSON.parse((await chrome.runtime.sendMessage({ to: 'background', body })).body);
    if (reply.error) throw new Error(reply.error.message);
    return reply.result;
  }, method, params ?? null);
}

/** Dial `peerId` from the extension page `from` through the relay; ms until the direct
 * connection is up (`peers_dial` with `wait` answers then, as js-libp2p's `dial` resolves). */
function dialDirect(from, relay, peerId) {
  return from.evaluate(async (addr) => {
    const t = performance.now();
    const body = JSON.stringify({ method: 'peers_dial', params: { addr, wait: true } });
    const reply = JSON.parse((await chrome.runtime.sendMessage({ to: 'background', body })).body);
    const ms = performance.now() - t;
    if (reply.error) throw new Error(reply.error.message);
    if (reply.result.transport !== 'webrtc') throw new Error(`connected by ${reply.result.transport}, not directly`);
    return ms;
  }, `${relay}/p2p-circuit/webrtc/p2p/${peerId}`);
}

/** Hang up every connection of the extension in page `from` to `peerId`, and wait until none
 * is left (the next dial then starts from nothing, the relayed connection too). */
async function hangUp(from, peerId) {
  await ui(from, 'peers_disconnect', { peerId });
  await h.waitFor(async () => !(await ui(from, 'ui_status')).peers.some((p) => p.peerId === peerId), { what: 'the hang-up' });
  await new Promise((r) => setTimeout(r, 200));
}

/** In a page: put `mib` MiB of bytes that depend only on `seed` (the same object in every peer). */
async function putSeededInPage(mib, seed) {
  const data = new Uint8Array(mib * 1024 * 1024);
  const words = new Uint32Array(data.buffer);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    words[i] = x;
  }
  return window.disot.cas.put(data, { public: true });
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rate = (ms) => MiB / (ms / 1000);
/** Rounds of dials to each of the three peers, by each kind. */
const DIAL_ROUNDS = Number(process.env.DISOT_BENCH_DIAL_ROUNDS ?? 3);
/** Rounds of the transfers that are compared with each other. */
const ROUNDS = Number(process.env.DISOT_BENCH_ROUNDS ?? 3);

try {
  const node = await new h.NativeNode(h.tempDir('bench-node')).start();
  const site = await h.startPageServer();
  const [a, b, c, d] = await Promise.all(['a', 'b', 'c', 'd'].map((n) => h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: `bench-${n}` })));
  await h.waitFor(async () => {
    for (const p of [a, b, c, d]) if ((await p.run(peersOf)).length === 0) return false;
    return true;
  }, { what: 'all connected to the node' });
  const extPage = async (p) => {
    const page = await p.browser.browser.newPage();
    await page.goto(`${p.browser.extensionBase}options.html`);
    return page;
  };
  const [ea, eb, ec, ed] = await Promise.all([a, b, c, d].map(extPage));
  const idOf = async (page) => (await ui(page, 'ui_status')).peerId;
  const [idA, idC, idD] = [await idOf(ea), await idOf(ec), await idOf(ed)];

  // Dial to a working direct connection. Both kinds dial from B's extension renderer (js-libp2p
  // in an extension page, the extension's node in its offscreen document), where the first
  // WebRTC connection also starts WebRTC itself: that first dial (the extension's, to A) is
  // reported apart. Then B dials A, C and D in turn, the extension and js-libp2p one after the
  // other, each hanging up every connection to the peer afterwards (the relayed one too),
  // DIAL_ROUNDS times: medians (dials vary 2x from one to the next).
  const firstDial = await dialDirect(eb, node.wsAddr, idA);
  await hangUp(eb, idA);
  const bundle = await jsLibp2pBundle();
  for (const p of [ea, eb, ec, ed]) await p.evaluate(bundle);
  const jsAddrs = [];
  for (const p of [ea, eb, ec, ed]) jsAddrs.push(await p.evaluate((relay) => globalThis.jsBench.start(relay), node.wsAddr));
  const dialsExt = [];
  const dialsJs = [];
  for (let round = 0; round < DIAL_ROUNDS; round++) {
    for (const [id, addr] of [[idA, jsAddrs[0]], [idC, jsAddrs[2]], [idD, jsAddrs[3]]]) {
      dialsExt.push(await dialDirect(eb, node.wsAddr, id));
      await hangUp(eb, id);
      const d = await eb.evaluate((a) => globalThis.jsBench.dial(a), addr);
      if (d.retried) console.log(`  (a js-libp2p dial failed${d.failed ? ' twice, left out' : ' and was retried'}: ${d.retried})`);
      if (!d.failed) dialsJs.push(d.ms);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  // Connected to all three again for what follows.
  for (const id of [idA, idC, idD]) await dialDirect(eb, node.wsAddr, id);
  await ea.evaluate((total) => globalThis.jsBench.serve(total), MiB * 1024 * 1024);
  const js = await eb.evaluate((addr, total) => globalThis.jsBench.fetch(addr, total), jsAddrs[0], MiB * 1024 * 1024);
  if (js.limited) throw new Error(`js-libp2p stayed on the relay: ${js.addr}`);
  if (js.retried) console.log(`  (js-libp2p's dial for the transfer failed and was retried: ${js.retried})`);
  for (const p of [ea, eb, ec, ed]) await p.evaluate(() => globalThis.jsBench.stop());

  // Through the extension.
  const put = await a.run(h.putPublicRandomInPage, MiB);
  const p2p = await b.run(async (cid) => {
    const t = performance.now();
    const bytes = await window.disot.cas.get(cid);
    return { ms: performance.now() - t, size: bytes.length };
  }, put.cid);
  if (p2p.size !== MiB * 1024 * 1024) throw new Error(`got ${p2p.size} bytes`);
  // With the connection up: Bitswap alone, against raw data channels between extension pages
  // of the same browsers (A to B in 64 KiB messages, and in 16 KiB ones: the largest the libp2p
  // WebRTC spec sends). Then swarming: A, C and D hold the same object and B, directly
  // connected to all three, fetches it, against raw data channels from A, C and D into B at
  // once. Each in ROUNDS rounds, taken in turn (the figures move a lot from one transfer to
  // the next on two cores): medians.
  const fetchTimed = (p, cid) => p.run(async (cid) => {
    const t = performance.now();
    await window.disot.cas.fetch(cid);
    return { ms: performance.now() - t };
  }, cid);
  const rounds = { warm: [], raw: [], raw16: [], rawWork: [], swarmed: [], rawSwarm: [] };
  for (let round = 0; round < ROUNDS; round++) {
    const one = await a.run(h.putPublicRandomInPage, MiB);
    rounds.warm.push(rate((await fetchTimed(b, one.cid)).ms));
    rounds.raw.push(await rawChannels([ea], eb, MiB, 64 * 1024));
    rounds.raw16.push(await rawChannels([ea], eb, MiB, 16 * 1024));
    rounds.rawWork.push(await rawWithWork(ea, eb, MiB));
    const held = await Promise.all([a, c, d].map((p) => p.run(putSeededInPage, MiB, 7 + round)));
    if (new Set(held.map((x) => x.cid)).size !== 1) throw new Error('the three peers hold different objects');
    await new Promise((r) => setTimeout(r, 300)); // past the providers' cache of what is public
    rounds.swarmed.push(rate((await fetchTimed(b, held[0].cid)).ms));
    rounds.rawSwarm.push(await rawChannels([ea, ec, ed], eb, MiB, 64 * 1024));
  }
  const [warm, raw, raw16, rawWork, swarmed, rawSwarm] = ['warm', 'raw', 'raw16', 'rawWork', 'swarmed', 'rawSwarm'].map((k) => median(rounds[k]));

  // HTTP download of the same size by B's page.
  const url = await h.serveBytes(randomBytes(MiB * 1024 * 1024));
  const httpMs = await b.run(async (u) => {
    const t = performance.now();
    await (await fetch(u, { cache: 'no-store' })).arrayBuffer();
    return performance.now() - t;
  }, url);

  // First byte: 1 KiB from the connected peer vs over HTTP.
  const small = [];
  for (let i = 0; i < 7; i++) {
    const s = await a.run(async (i) => { const d = new Uint8Array(1024); crypto.getRandomValues(d); d[0] = i; return window.disot.cas.put(d, { public: true }); }, i);
    await new Promise((r) => setTimeout(r, 300)); // past A's cache of what is public
    small.push(await b.run(async (cid) => { const t = performance.now(); await window.disot.cas.get(cid); return performance.now() - t; }, s.cid));
  }
  // Where the first byte's time goes: a get is one request to the node, which looks in the
  // store and then asks the peers. Measured apart: a fetch (peers asked at once: messaging,
  // Bitswap, the write), a request that does nothing (messaging alone), and a get of what is
  // now held.
  const parts = [];
  for (let i = 0; i < 7; i++) {
    const s = await a.run(async (i) => { const d = new Uint8Array(1024); crypto.getRandomValues(d); d[0] = 100 + i; return window.disot.cas.put(d, { public: true }); }, i);
    await new Promise((r) => setTimeout(r, 300));
    parts.push(await b.run(async (cid) => {
      const t1 = performance.now();
      await window.disot.cas.fetch(cid);
      const t2 = performance.now();
      await window.disot.request({ method: 'p2p_peers' });
      const t3 = performance.now();
      await window.disot.cas.get(cid);
      const t4 = performance.now();
      return { fetch: t2 - t1, messaging: t3 - t2, local: t4 - t3 };
    }, s.cid));
  }
  // A 1 KiB object from a peer not connected yet: a fresh browser E gets one of A's, one of C's
  // and one of D's, after they have announced them.
  const coldObjects = [];
  for (const p of [a, c, d]) coldObjects.push(await p.run(async () => { const x = new Uint8Array(1024); crypto.getRandomValues(x); return window.disot.cas.put(x, { public: true }); }));
  const e = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'bench-e' });
  await h.waitFor(async () => (await e.run(peersOf)).length > 0, { what: 'E on the node' });
  await new Promise((r) => setTimeout(r, 6000)); // past the next announcements (every 5 s)
  const cold = [];
  for (const o of coldObjects) {
    const got = await e.run(async (cid) => { const t = performance.now(); const b = await window.disot.cas.get(cid); return { ms: performance.now() - t, size: b.length }; }, o.cid);
    if (got.size !== 1024) throw new Error(`E got ${got.size} bytes`);
    cold.push(got.ms);
  }
  await e.close();
  const url1k = await h.serveBytes(randomBytes(1024));
  const http1k = [];
  for (let i = 0; i < 7; i++) http1k.push(await b.run(async (u) => { const t = performance.now(); await (await fetch(`${u}?${Math.random()}`, { cache: 'no-store' })).arrayBuffer(); return performance.now() - t; }, url1k));

  const ext = rate(p2p.ms);
  const jsRate = rate(js.ms);
  const web = rate(httpMs);
  const f = (x) => x.toFixed(1).padStart(6);
  console.log(`chromium → chromium, ${MiB} MiB on loopback`);
  const ms = (xs) => xs.map((x) => x.toFixed(0)).join(', ');
  console.log(`  dial to a working direct connection, medians of ${dialsExt.length} and ${dialsJs.length} dials (B to A, C and D in turn, hung up after each): extension ${median(dialsExt).toFixed(0)} ms (${ms(dialsExt)}), js-libp2p ${median(dialsJs).toFixed(0)} ms (${ms(dialsJs)}) → ${(median(dialsExt) / median(dialsJs)).toFixed(2)}x js-libp2p`);
  console.log(`    the first dial after B started (WebRTC starting in its extension renderer): extension ${firstDial.toFixed(0)} ms`);
  console.log(`  extension, get to a Uint8Array (Bitswap, verify, store, read back):           ${f(ext)} MiB/s`);
  console.log(`  js-libp2p /webrtc, same browsers (one stream, not verified or stored):         ${f(jsRate)} MiB/s (one round) → extension, connection up, ${(warm / jsRate).toFixed(2)}x js-libp2p`);
  const all = (k) => `(${rounds[k].map((x) => x.toFixed(1)).join(', ')})`;
  console.log(`  medians of ${ROUNDS} rounds from here on (each round's figure in brackets)`);
  console.log(`  extension, connection up (Bitswap, verify, store):                             ${f(warm)} MiB/s ${all('warm')}`);
  console.log(`  raw RTCDataChannel, same browsers:                                             ${f(raw)} MiB/s → extension ${(warm / raw).toFixed(2)}x raw ${all('raw')}`);
  console.log(`  raw RTCDataChannel in 16 KiB messages:                                         ${f(raw16)} MiB/s → extension ${(warm / raw16).toFixed(2)}x ${all('raw16')}`);
  console.log(`  raw, 16 KiB messages, with the extension's work in plain JS (blocks read from   ${f(rawWork)} MiB/s → ${(rawWork / raw).toFixed(2)}x raw; extension ${(warm / rawWork).toFixed(2)}x it ${all('rawWork')}`);
  console.log(`    IndexedDB and checked, checked and stored on arrival, the whole digested)`);
  console.log(`  extension, swarming from 3 peers:                                              ${f(swarmed)} MiB/s → ${(swarmed / warm).toFixed(2)}x one peer ${all('swarmed')}`);
  console.log(`  raw RTCDataChannels from the same 3 peers at once:                             ${f(rawSwarm)} MiB/s → ${(rawSwarm / raw).toFixed(2)}x one raw channel; extension swarming ${(swarmed / rawSwarm).toFixed(2)}x it ${all('rawSwarm')}`);
  console.log(`  HTTP download from loopback:                                                   ${f(web)} MiB/s → extension ${(warm / web).toFixed(3)}x, swarming ${(swarmed / web).toFixed(3)}x HTTP`);
  console.log(`  first byte, 1 KiB from a connected peer: median ${median(small).toFixed(1)} ms vs HTTP ${median(http1k).toFixed(1)} ms = ${(median(small) / median(http1k)).toFixed(1)}x`);
  const part = (k) => median(parts.map((p) => p[k])).toFixed(1);
  console.log(`    medians of its parts: fetch from the peer ${part('fetch')} ms (a request that does nothing: ${part('messaging')} ms), get once held ${part('local')} ms`);
  console.log(`  1 KiB from a peer not yet connected (fresh browser: DHT lookup, relayed dial, direct WebRTC, Bitswap): median ${median(cold).toFixed(0)} ms (${ms(cold)})`);
} finally {
  await h.cleanup();
}
