// Browser-to-browser benchmark, in one run, two Chromium profiles on loopback, one disot-node:
//   - 64 MiB through the extension (page in A puts, page in B gets by CID: Bitswap over our
//     direct WebRTC connection, every block verified and stored) vs
//     (a) a raw RTCDataChannel between the same two browsers (extension pages, 64 KiB messages,
//         back-pressure at 1 MiB buffered), and (b) an HTTP download of the same bytes by B's
//         page from a loopback server (the "centralized solution")
//   - first-byte latency of a 1 KiB object from a connected peer vs an HTTP fetch of 1 KiB
// Prints ratios; run with `scripts/bench.sh`. Not part of the test suite.
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import * as h from '../lib/harness.js';

const MiB = 64;
const peersOf = () => window.disot.p2p.peers();

function blobServer(bytes) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'access-control-allow-origin': '*', 'content-length': bytes.length });
    res.end(bytes);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    h.onCleanup(() => new Promise((r) => { server.closeAllConnections(); server.close(r); }));
    resolve(`http://127.0.0.1:${server.address().port}/blob`);
  }));
}

async function rawChannel(pa, pb, mib) {
  // Non-trickle signaling through this script: each side gathers all candidates first.
  const offer = await pa.evaluate(async () => {
    window.pc = new RTCPeerConnection();
    window.dc = window.pc.createDataChannel('bench');
    window.dc.binaryType = 'arraybuffer';
    await window.pc.setLocalDescription(await window.pc.createOffer());
    await new Promise((r) => { if (window.pc.iceGatheringState === 'complete') r(); else window.pc.onicegatheringstatechange = () => window.pc.iceGatheringState === 'complete' && r(); });
    return window.pc.localDescription.toJSON();
  });
  const answer = await pb.evaluate(async (offer, total) => {
    window.pc = new RTCPeerConnection();
    window.received = new Promise((resolve) => {
      window.pc.ondatachannel = ({ channel }) => {
        channel.binaryType = 'arraybuffer';
        let got = 0;
        let start;
        channel.onmessage = (ev) => {
          start ??= performance.now();
          got += ev.data.byteLength;
          if (got >= total) resolve(performance.now() - start);
        };
      };
    });
    await window.pc.setRemoteDescription(offer);
    await window.pc.setLocalDescription(await window.pc.createAnswer());
    await new Promise((r) => { if (window.pc.iceGatheringState === 'complete') r(); else window.pc.onicegatheringstatechange = () => window.pc.iceGatheringState === 'complete' && r(); });
    return window.pc.localDescription.toJSON();
  }, offer, mib * 1024 * 1024);
  await pa.evaluate(async (answer, total) => {
    await window.pc.setRemoteDescription(answer);
    const dc = window.dc;
    await new Promise((r) => { if (dc.readyState === 'open') r(); else dc.onopen = r; });
    const piece = new Uint8Array(64 * 1024);
    crypto.getRandomValues(piece);
    dc.bufferedAmountLowThreshold = 256 * 1024;
    for (let sent = 0; sent < total; sent += piece.length) {
      if (dc.bufferedAmount > 1024 * 1024) await new Promise((r) => { dc.onbufferedamountlow = r; });
      dc.send(piece);
    }
  }, answer, mib * 1024 * 1024);
  const ms = await pb.evaluate(() => window.received);
  return mib / (ms / 1000);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

try {
  const node = await new h.NativeNode(h.tempDir('bench-node')).start();
  const site = await h.startPageServer();
  const a = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'bench-a' });
  const b = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'bench-b' });
  await h.waitFor(async () => (await a.run(peersOf)).length > 0 && (await b.run(peersOf)).length > 0, { what: 'both connected' });

  // Through the extension.
  const put = await a.run(h.putPublicRandomInPage, MiB);
  const p2p = await b.run(async (cid) => {
    const t = performance.now();
    const bytes = await window.disot.cas.get(cid);
    return { ms: performance.now() - t, size: bytes.length };
  }, put.cid);
  if (p2p.size !== MiB * 1024 * 1024) throw new Error(`got ${p2p.size} bytes`);
  // The same, now that the connection is up: Bitswap alone (a second object).
  const put2 = await a.run(h.putPublicRandomInPage, MiB);
  const p2pWarm = await b.run(async (cid) => {
    const t = performance.now();
    await window.disot.cas.fetch(cid);
    return { ms: performance.now() - t };
  }, put2.cid);

  // Raw data channel between extension pages of the same two browsers.
  const ea = await a.browser.browser.newPage();
  await ea.goto(`${a.browser.extensionBase}options.html`);
  const eb = await b.browser.browser.newPage();
  await eb.goto(`${b.browser.extensionBase}options.html`);
  const raw = await rawChannel(ea, eb, MiB);

  // HTTP download of the same size by B's page.
  const url = await blobServer(randomBytes(MiB * 1024 * 1024));
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
  const url1k = await blobServer(randomBytes(1024));
  const http1k = [];
  for (let i = 0; i < 7; i++) http1k.push(await b.run(async (u) => { const t = performance.now(); await (await fetch(`${u}?${Math.random()}`, { cache: 'no-store' })).arrayBuffer(); return performance.now() - t; }, url1k));

  const rate = (ms) => MiB / (ms / 1000);
  const ext = rate(p2p.ms);
  const warm = rate(p2pWarm.ms);
  const web = rate(httpMs);
  console.log(`chromium → chromium, ${MiB} MiB on loopback`);
  console.log(`  extension, first get (DHT lookup, dial, direct WebRTC, Bitswap, verify, store): ${ext.toFixed(1)} MiB/s`);
  console.log(`  extension, connection up (Bitswap, verify, store):                             ${warm.toFixed(1)} MiB/s`);
  console.log(`  raw RTCDataChannel, same browsers:                                             ${raw.toFixed(1)} MiB/s → extension ${(warm / raw).toFixed(2)}x raw`);
  console.log(`  HTTP download from loopback:                                                   ${web.toFixed(1)} MiB/s → extension ${(warm / web).toFixed(3)}x HTTP`);
  console.log(`  first byte, 1 KiB from a connected peer: median ${median(small).toFixed(1)} ms vs HTTP ${median(http1k).toFixed(1)} ms = ${(median(small) / median(http1k)).toFixed(1)}x`);
} finally {
  await h.cleanup();
}
