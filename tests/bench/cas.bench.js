// Content store benchmark, in one run and one browser profile per browser:
//   - page cas.put / cas.get of 64 MiB vs the same page writing / reading the same blocks (the
//     1 MiB leaves of the store's Helia layout, one to a transaction, as the store writes a
//     piece) to its own IndexedDB from plain JS (the baseline the store adds work on top of),
//     vs 256 KiB values four to a transaction (the Kubo layout's leaves), and vs the 1 MiB
//     blocks as Blobs (as the store keeps uploads); three rounds of each, medians printed
//   - SHA-256 throughput: WebCrypto in the page vs native `openssl speed` on this machine
//   - peak memory of the whole browser (all its processes, PSS) during a 1 GiB put from a stream
//     (once as it is, once saying its size), a 1 GiB get read as a stream and a put of a 1 GiB file picked in the page, each above the
//     browser idle just before it (every process asked to collect its garbage and give memory
//     back first, as about:memory's "minimize" does, so that one part's garbage is not counted
//     in the next); the processes that grew most (the page's, the extension's); and, as the
//     baselines, the page making the same 1 GiB of 1 MiB pieces, and reading the same file, and
//     dropping them without the extension (what the browser keeps of garbage before it
//     collects it)
//   - finding an object by its `sha256:` name vs by its CID, among OBJECTS objects the page put
//     (DISOT_BENCH_OBJECTS, 3000 by default): `cas.stat` each way, the median of 11 runs of 20
// Prints ratios; run with `scripts/bench.sh`. Not part of the test suite.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import * as h from '../lib/harness.js';

const MiB = 64;
const OBJECTS = Number(process.env.DISOT_BENCH_OBJECTS ?? 3000);

/**
 * In the page: put `n` small objects (the wrapper runs four at a time) and one of 3 MiB, then
 * time `cas.stat` of that one by its `sha256:` name and by its CID, alternately.
 */
async function namesBenchBody(n) {
  const started = performance.now();
  const encoder = new TextEncoder();
  await Promise.all(Array.from({ length: n }, (_, i) => window.disot.cas.put(encoder.encode(`object ${i} of ${n}`))));
  const putS = (performance.now() - started) / 1000;
  const big = await window.disot.cas.put(new Uint8Array(3 * 1024 * 1024).map((_, i) => (i * 7) & 255));
  const byName = [];
  const byCid = [];
  // Twenty at a time (Firefox tells the time to the millisecond only), each way in turn.
  const time = async (list, name) => {
    const t = performance.now();
    for (let i = 0; i < 20; i++) await window.disot.cas.stat(name);
    list.push((performance.now() - t) / 20);
  };
  for (let i = 0; i < 11; i++) {
    await time(byName, big.sha256);
    await time(byCid, big.cid);
  }
  const median = (list) => +list.sort((a, b) => a - b)[list.length >> 1].toFixed(2);
  return { n: n + 1, putS: +putS.toFixed(1), byName: median(byName), byCid: median(byCid) };
}

/**
 * In the page: WebCrypto SHA-256; then, ROUNDS times over, raw IndexedDB puts and gets and the
 * extension's cas.put / cas.get of the same bytes (each figure the median of its rounds). The
 * content frame is started first, apart, by a 1-byte put and get (a page's first put and first
 * get pay that start; it is printed, not counted in the throughput).
 */
async function pageBenchBody(mib) {
  {
    const ROUNDS = 3;
    const size = mib * 1024 * 1024;
    const data = new Uint8Array(size);
    for (let i = 0; i < size; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
    const rate = (ms) => +(mib / (ms / 1000)).toFixed(1);
    const timed = async (f) => {
      const t = performance.now();
      const out = await f();
      return [rate(performance.now() - t), out];
    };
    const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

    const [webcrypto] = await timed(() => crypto.subtle.digest('SHA-256', data));

    const db = await new Promise((resolve, reject) => {
      const r = indexedDB.open(`bench-${Date.now()}`, 1);
      r.onupgradeneeded = () => {
        for (const name of ['blocks', 'leaves', 'blobs']) r.result.createObjectStore(name);
      };
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
    const done = (tx) => new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
    });
    // `per` values of `mib / per` MiB each to a transaction, made by `value(at, length)`.
    const rawPut = async (store, per, value) => {
      const len = (1 << 20) / per;
      for (let i = 0; i < mib; i++) {
        const tx = db.transaction(store, 'readwrite');
        for (let k = 0; k < per; k++) tx.objectStore(store).put(value((i << 20) + k * len, len), i * per + k);
        await done(tx);
      }
    };
    const rawGet = async (store, per, read = (v) => v) => {
      for (let i = 0; i < mib; i++) {
        const tx = db.transaction(store);
        const got = [];
        for (let k = 0; k < per; k++) tx.objectStore(store).get(i * per + k).onsuccess = (e) => got.push(read(e.target.result));
        await done(tx);
        await Promise.all(got);
      }
    };
    const t0 = performance.now();
    // Starts the content frame, its workers and their own connections to the store.
    const warm = await window.disot.cas.put(new Uint8Array(1));
    await window.disot.cas.get(warm.cid);
    const frameStartMs = Math.round(performance.now() - t0);

    const runs = { idbPut: [], idbGet: [], leafPut: [], leafGet: [], blobPut: [], blobGet: [], blobWhole: [], casPut: [], casGet: [], casGetBlob: [], casGetBlobRead: [] };
    for (let round = 0; round < ROUNDS; round++) {
      runs.idbPut.push((await timed(() => rawPut('blocks', 1, (at, n) => data.slice(at, at + n))))[0]);
      runs.idbGet.push((await timed(() => rawGet('blocks', 1)))[0]);
      // The Kubo layout's 256 KiB leaves, the four of each MiB in one transaction.
      runs.leafPut.push((await timed(() => rawPut('leaves', 4, (at, n) => data.slice(at, at + n))))[0]);
      runs.leafGet.push((await timed(() => rawGet('leaves', 4)))[0]);
      // The same 1 MiB blocks as Blobs, as the store keeps a page's upload, read back to bytes.
      runs.blobPut.push((await timed(() => rawPut('blobs', 1, (at, n) => new Blob([data.subarray(at, at + n)]))))[0]);
      runs.blobGet.push((await timed(() => rawGet('blobs', 1, (b) => b.arrayBuffer())))[0]);
      // The same Blobs made into one Blob of the whole, unread (what a get as a Blob gives).
      runs.blobWhole.push((await timed(async () => {
        const all = [];
        await rawGet('blobs', 1, (b) => all.push(b));
        return new Blob(all);
      }))[0]);
      data[0] = round; // new content each round
      const [casPut, put] = await timed(() => window.disot.cas.put(data));
      runs.casPut.push(casPut);
      runs.casGet.push((await timed(() => window.disot.cas.get(put.cid)))[0]);
      runs.casGetBlob.push((await timed(() => window.disot.cas.get(put.cid, { as: 'blob' })))[0]);
      runs.casGetBlobRead.push((await timed(async () => (await window.disot.cas.get(put.cid, { as: 'blob' })).arrayBuffer()))[0]);
    }
    db.close();
    const out = { webcrypto, frameStartMs, rounds: ROUNDS };
    for (const [k, v] of Object.entries(runs)) {
      out[k] = median(v);
      out[`${k}Runs`] = v;
    }
    return out;
  }
}

/** In an extension page: the wasm SHA-256 the store verifies with, over 1 MiB blocks. */
async function wasmShaBody(mib) {
  const m = await import(`${location.origin}/pkg/disot_wasm.js`);
  await m.default({ module_or_path: `${location.origin}/pkg/disot_wasm_bg.wasm` });
  const block = new Uint8Array(1024 * 1024);
  crypto.getRandomValues(block.subarray(0, 65536));
  m.sha256(block); // warm up
  const t = performance.now();
  for (let i = 0; i < mib; i++) {
    block[0] = i;
    m.sha256(block);
  }
  return +(mib / ((performance.now() - t) / 1000)).toFixed(1);
}

function opensslSha256MiBps() {
  const out = execFileSync('openssl', ['speed', '-seconds', '2', '-bytes', '1048576', 'sha256'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const line = out.split('\n').find((l) => l.startsWith('sha256'));
  const kBps = Number(line.trim().split(/\s+/).at(-1).replace('k', ''));
  return +(kBps * 1000 / (1024 * 1024)).toFixed(1);
}

/** PSS in MiB of `pid` and each of its descendants, by process: Map pid → {mib, role}. */
function treePss(pid) {
  const children = new Map();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const ppid = Number(fs.readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1].split(' ')[1]);
      if (!children.has(ppid)) children.set(ppid, []);
      children.get(ppid).push(Number(entry));
    } catch { /* gone */ }
  }
  const out = new Map();
  const stack = [pid];
  while (stack.length) {
    const p = stack.pop();
    try {
      const m = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${p}/smaps_rollup`, 'utf8'));
      if (m) out.set(p, { mib: Number(m[1]) / 1024, role: processRole(p) });
    } catch { /* gone */ }
    stack.push(...(children.get(p) ?? []));
  }
  return out;
}

/** What a browser process is: Chromium's --type (and whether it hosts the extension), or
 * the name Firefox gives its processes ("WebExtensions", "Isolated Web Co", …). */
function processRole(pid) {
  try {
    // Chromium rewrites its command line as one string; Firefox keeps its arguments apart.
    const args = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split(/[\0 ]/).filter(Boolean);
    const type = args.find((a) => a.startsWith('--type='))?.slice(7);
    if (type) {
      const sub = args.find((a) => a.startsWith('--utility-sub-type='))?.slice(19).split('.')[0];
      return [type, sub, args.includes('--extension-process') ? 'extension' : ''].filter(Boolean).join(' ');
    }
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

const sumMiB = (byProcess) => [...byProcess.values()].reduce((n, p) => n + p.mib, 0);

/** In the page: put 1 GiB from a stream. */
async function gibPutBody(sized) {
  const total = 1024 * 1024 * 1024;
  const piece = new Uint8Array(1024 * 1024);
  let made = 0;
  const source = new ReadableStream({
    pull(c) {
      if (made >= total) return c.close();
      crypto.getRandomValues(piece.subarray(0, 65536));
      piece[0] = made / (1024 * 1024); // every MiB differs, so no block is deduplicated away
      c.enqueue(piece.slice());
      made += piece.length;
    },
  });
  const t = performance.now();
  const put = await window.disot.cas.put(source, sized ? { size: total } : {});
  return { cid: put.cid, size: put.size, putS: (performance.now() - t) / 1000 };
}

/** In the page: put the file picked in its file input (a user's upload: the bytes are on disk). */
async function gibFilePutBody() {
  const file = document.getElementById('gib-file').files[0];
  const t = performance.now();
  const put = await window.disot.cas.put(file);
  return { cid: put.cid, size: put.size, filePutS: (performance.now() - t) / 1000 };
}

/** In the page, the baseline for the file: the page reading the same file in 1 MiB slices and
 * dropping them, without the extension. */
async function gibFileAloneBody() {
  const file = document.getElementById('gib-file').files[0];
  const t = performance.now();
  let sum = 0;
  for (let i = 0; i < file.size; i += 1024 * 1024) {
    const bytes = new Uint8Array(await file.slice(i, i + 1024 * 1024).arrayBuffer());
    sum += bytes[0] + bytes[bytes.length - 1];
  }
  return { sum, aloneS: (performance.now() - t) / 1000 };
}

/** A file of 1 GiB in `dir`, every MiB different (nothing deduplicated), for the page to pick. */
function gibFile(dir) {
  const file = path.join(dir, 'upload.bin');
  const fd = fs.openSync(file, 'w');
  try {
    const piece = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < 1024; i++) {
      crypto.getRandomValues(piece.subarray(0, 65536));
      piece[1] = i & 0xff;
      piece[2] = i >> 8;
      fs.writeSync(fd, piece);
    }
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

/** In the page: an `<input type=file>` for the driver to set. */
async function addFileInputBody() {
  const input = document.createElement('input');
  input.type = 'file';
  input.id = 'gib-file';
  document.body.append(input);
}

/** In the page: read `cid` back as a stream. */
async function gibGetBody(cid) {
  const t = performance.now();
  const reader = (await window.disot.cas.get(cid, { as: 'stream' })).getReader();
  let read = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    read += value.length;
  }
  return { read, getS: (performance.now() - t) / 1000 };
}

/** In the page: get `cid` as a Blob (every block read and checked in the extension; the page
 * is handed the Blobs the store keeps, not their bytes). */
async function gibGetBlobBody(cid) {
  const t = performance.now();
  const blob = await window.disot.cas.get(cid, { as: 'blob' });
  return { blobSize: blob.size, getBlobS: (performance.now() - t) / 1000 };
}

/** In the page, the baseline: the same 1 GiB stream read and dropped by the page itself (what
 * the browser keeps of 1 MiB pieces nobody holds any more, before it collects them). */
async function gibAloneBody() {
  const total = 1024 * 1024 * 1024;
  const piece = new Uint8Array(1024 * 1024);
  let made = 0;
  const source = new ReadableStream({
    pull(c) {
      if (made >= total) return c.close();
      crypto.getRandomValues(piece.subarray(0, 65536));
      piece[0] = made / (1024 * 1024);
      c.enqueue(piece.slice());
      made += piece.length;
    },
  });
  const t = performance.now();
  const reader = source.getReader();
  let sum = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    sum += value[0] + value[value.length - 1];
    await new Promise((r) => setTimeout(r, 0)); // a turn of the event loop per piece, as a put has
  }
  return { sum, aloneS: (performance.now() - t) / 1000 };
}

/** 1 GiB put and get with `run(body, arg)`, each with the browser's memory sampled; then a
 * put of a 1 GiB file after `pick(file)` has set it in the page's file input. `settle()`
 * has every process of the browser collect its garbage (before each part). */
async function gib(pid, settle, run, pick) {
  const measure = async (body, arg) => {
    await settle();
    return withPeakMemory(pid, treePss(pid), () => run(body, arg));
  };
  const alone = await measure(gibAloneBody);
  const put = await measure(gibPutBody);
  if (put.error) return put;
  // A stream like it (of other random bytes), saying its size.
  const sizedPut = await measure(gibPutBody, true);
  if (sizedPut.error) return sizedPut;
  if (sizedPut.size !== put.size) return { error: `the stream that says its size was stored as ${sizedPut.size} bytes` };
  const get = await measure(gibGetBody, put.cid);
  if (get.error) return get;
  await run(addFileInputBody);
  await pick(gibFile(h.tempDir('bench-upload')));
  const fileAlone = await measure(gibFileAloneBody);
  const filePut = await measure(gibFilePutBody);
  if (filePut.error) return filePut;
  // The file's content, stored as the slices of the file it came in, got back as a Blob.
  const getBlob = await measure(gibGetBlobBody, filePut.cid);
  if (getBlob.error) return getBlob;
  if (getBlob.blobSize !== filePut.size) return { error: `the get as a Blob gave ${getBlob.blobSize} bytes` };
  return { ...put, ...get, alone, put, sizedPut, get, fileAlone, filePut, getBlob };
}

/** Run `body(arg)` in the page and sample the browser's memory meanwhile: the peak of the
 * whole browser, and the processes that grew most by then (their own peaks), above `idle`. */
async function withPeakMemory(pid, idle, run) {
  let peak = 0;
  const own = new Map();
  const timer = setInterval(() => {
    const now = treePss(pid);
    peak = Math.max(peak, sumMiB(now));
    for (const [p, x] of now) if (x.mib > (own.get(p)?.mib ?? 0)) own.set(p, x);
  }, 250);
  try {
    const r = await run();
    const grew = [...own].map(([p, x]) => ({ role: x.role, mib: Math.round(x.mib - (idle.get(p)?.mib ?? 0)) }))
      .sort((a, b) => b.mib - a.mib).slice(0, 3);
    return { ...r, idleMiB: Math.round(sumMiB(idle)), peakAboveIdleMiB: Math.round(peak - sumMiB(idle)), grew };
  } finally {
    clearInterval(timer);
  }
}

const SETTLE_MS = 2000; // after the browser is asked to give memory back, before idle is taken

/** Chromium: every page, frame and worker collects its garbage, and every process is told
 * memory is short (it then gives back what its allocators keep). */
async function settleChromium(browser) {
  for (const target of browser.targets()) {
    let cdp;
    try {
      cdp = await target.createCDPSession();
      await cdp.send('HeapProfiler.collectGarbage');
    } catch {
      // A target without a JS heap (the browser's own), or one that just closed.
    } finally {
      await cdp?.detach().catch(() => {});
    }
  }
  const cdp = await browser.target().createCDPSession();
  try {
    await cdp.send('Memory.simulatePressureNotification', { level: 'critical' });
  } finally {
    await cdp.detach().catch(() => {});
  }
  await new Promise((r) => setTimeout(r, SETTLE_MS));
}

/** Firefox: what about:memory's "Minimize memory usage" does, in every process. */
async function settleFirefox(driver) {
  await driver.setContext('chrome');
  try {
    await driver.executeAsyncScript(`const done = arguments[arguments.length - 1];
      Services.obs.notifyObservers(null, 'child-mmu-request');
      Cc['@mozilla.org/memory-reporter-manager;1'].getService(Ci.nsIMemoryReporterManager).minimizeMemoryUsage(() => done());`);
  } finally {
    await driver.setContext('content');
  }
  await new Promise((r) => setTimeout(r, SETTLE_MS));
}

const inPage = (fn, arg) => `const done = arguments[arguments.length - 1];
  (${fn})(${JSON.stringify(arg)}).then(done, (e) => done({ error: String(e) }));`;

/**
 * `inPage` for a web page, run in the page's own realm as a page's script is: WebDriver runs
 * its scripts in a sandbox of their own in Firefox, whose garbage the browser collects on
 * another schedule (a 1 GiB put's source held 556 MiB there, against 114 MiB in the page).
 * The answer comes back as JSON in an event.
 */
const inPageRealm = (fn, arg) => {
  const event = `disot-bench-${Math.random().toString(36).slice(2)}`;
  const script = `(${fn})(${JSON.stringify(arg)}).catch((e) => ({ error: String(e) }))
    .then((r) => dispatchEvent(new CustomEvent(${JSON.stringify(event)}, { detail: JSON.stringify(r) })));`;
  return `const done = arguments[arguments.length - 1];
    window.addEventListener(${JSON.stringify(event)}, (e) => done(JSON.parse(e.detail)), { once: true });
    const s = document.createElement('script');
    s.textContent = ${JSON.stringify(script)};
    document.documentElement.append(s);
    s.remove();`;
};

async function chromium(site) {
  const browser = await h.Browser.launch('chromium', h.prepareExtension('chrome', []), h.tempDir('bench-chromium'));
  const page = await browser.open(`${site.url}/demo.html`);
  await h.grantInChromium(browser, page);
  const r = await page.evaluate(pageBenchBody, MiB);
  r.names = await page.evaluate(namesBenchBody, OBJECTS);
  const ext = await browser.browser.newPage();
  await ext.goto(`${browser.extensionBase}options.html`);
  r.wasmSha = await ext.evaluate(wasmShaBody, MiB);
  await ext.close();
  if (process.env.DISOT_BENCH_GIB !== '0') {
    const pick = async (file) => (await page.$('#gib-file')).uploadFile(file);
    r.gib = await gib(browser.pid, () => settleChromium(browser.browser), (body, arg) => page.evaluate(body, arg), pick);
  }
  await browser.close();
  return r;
}

async function firefox(site) {
  const { driver, base } = await h.launchSeleniumFirefox(h.prepareExtension('firefox', []));
  try {
    await driver.manage().setTimeouts({ script: 15 * 60_000 });
    const pid = (await driver.getCapabilities()).get('moz:processID');
    await driver.get(`${site.url}/demo.html`);
    await driver.wait(() => driver.executeScript('return !!window.disot'), 10_000);
    await h.grantInSeleniumFirefox(driver);
    const r = await driver.executeAsyncScript(inPageRealm(pageBenchBody, MiB));
    r.names = await driver.executeAsyncScript(inPageRealm(namesBenchBody, OBJECTS));
    const main = await driver.getWindowHandle();
    await driver.switchTo().newWindow('tab');
    await driver.get(`${base}options.html`);
    r.wasmSha = await driver.executeAsyncScript(inPage(wasmShaBody, MiB));
    await driver.close();
    await driver.switchTo().window(main);
    if (process.env.DISOT_BENCH_GIB !== '0') {
      const { By } = await import('selenium-webdriver');
      const pick = async (file) => (await driver.findElement(By.id('gib-file'))).sendKeys(file);
      r.gib = await gib(pid, () => settleFirefox(driver), (body, arg) => driver.executeAsyncScript(inPageRealm(body, arg)), pick);
    }
    return r;
  } finally {
    await driver.quit();
  }
}

const results = {};
try {
  const native = opensslSha256MiBps();
  const site = await h.startPageServer();
  const kinds = (process.env.DISOT_BENCH_BROWSERS ?? 'chromium firefox').split(/\s+/).filter(Boolean);
  for (const kind of kinds) results[kind] = kind === 'chromium' ? await chromium(site) : await firefox(site);
  for (const [kind, r] of Object.entries(results)) {
    if (r.error) throw new Error(`${kind}: ${r.error}`);
    console.log(`${kind}: ${MiB} MiB`);
    console.log(`  SHA-256  WebCrypto ${r.webcrypto} MiB/s vs native openssl ${native} MiB/s = ${(r.webcrypto / native).toFixed(2)}x`);
    console.log(`  SHA-256  wasm (the store's) ${r.wasmSha} MiB/s vs native openssl = ${(r.wasmSha / native).toFixed(2)}x`);
    const ratio = (a, b) => (a / b).toFixed(2);
    console.log(`  (medians of ${r.rounds} rounds; the content frame started first, a 1-byte put and get: ${r.frameStartMs} ms)`);
    console.log(`  put      cas.put ${r.casPut} MiB/s vs raw IndexedDB puts of the same 1 MiB blocks ${r.idbPut} MiB/s = ${ratio(r.casPut, r.idbPut)}x` +
      ` (of 256 KiB values, four to a transaction, ${r.leafPut} MiB/s = ${ratio(r.casPut, r.leafPut)}x; of the 1 MiB blocks as Blobs, ${r.blobPut} MiB/s = ${ratio(r.casPut, r.blobPut)}x)`);
    console.log(`           rounds: cas.put ${r.casPutRuns.join(', ')}; raw ${r.idbPutRuns.join(', ')}; Blobs ${r.blobPutRuns.join(', ')}`);
    console.log(`  get      cas.get ${r.casGet} MiB/s vs raw IndexedDB gets of the same 1 MiB blocks ${r.idbGet} MiB/s = ${ratio(r.casGet, r.idbGet)}x` +
      ` (of 256 KiB values, four to a transaction, ${r.leafGet} MiB/s = ${ratio(r.casGet, r.leafGet)}x; of the Blobs, read to bytes, ${r.blobGet} MiB/s = ${ratio(r.casGet, r.blobGet)}x)`);
    console.log(`           rounds: cas.get ${r.casGetRuns.join(', ')}; raw ${r.idbGetRuns.join(', ')}; Blobs ${r.blobGetRuns.join(', ')}`);
    console.log(`  get      as a Blob (cas.get(cid, {as: 'blob'}), every block checked, no bytes handed over) ${r.casGetBlob} MiB/s vs the page making one Blob of the same stored Blobs ${r.blobWhole} MiB/s = ${ratio(r.casGetBlob, r.blobWhole)}x;` +
      ` then read to bytes ${r.casGetBlobRead} MiB/s = ${ratio(r.casGetBlobRead, r.idbGet)}x raw gets, ${ratio(r.casGetBlobRead, r.blobGet)}x the Blobs read to bytes`);
    console.log(`           rounds: as a Blob ${r.casGetBlobRuns.join(', ')}; read ${r.casGetBlobReadRuns.join(', ')}; raw ${r.blobWholeRuns.join(', ')}`);
    const { names } = r;
    if (names.error) throw new Error(`${kind} names: ${names.error}`);
    console.log(`  names    cas.stat by sha256: name ${names.byName} ms vs by CID ${names.byCid} ms = ${ratio(names.byName, names.byCid)}x, among ${names.n} objects (put in ${names.putS} s)`);
    if (r.gib) {
      const g = r.gib;
      if (g.error) throw new Error(`${kind} 1 GiB: ${g.error}`);
      const grew = (x) => x.grew.map((p) => `${p.role} ${p.mib}`).join(', ');
      console.log(`  1 GiB    put ${g.putS.toFixed(0)} s, get ${g.getS.toFixed(0)} s (${g.read === g.size ? 'all bytes read back' : `READ ${g.read} OF ${g.size}`}); ` +
        `browser peak above its idle just before (${g.put.idleMiB} MiB at the put): put ${g.put.peakAboveIdleMiB} MiB, get ${g.get.peakAboveIdleMiB} MiB, ` +
        `vs the page alone making and dropping the same 1 MiB pieces ${g.alone.peakAboveIdleMiB} MiB`);
      console.log(`           processes that grew most, MiB: put: ${grew(g.put)}; get: ${grew(g.get)}`);
      console.log(`  1 GiB    put of the same stream saying its size (cas.put(stream, {size})) ${g.sizedPut.putS.toFixed(0)} s; browser peak above idle ${g.sizedPut.peakAboveIdleMiB} MiB`);
      console.log(`           processes that grew most, MiB: ${grew(g.sizedPut)}`);
      console.log(`  1 GiB    put of a file picked in the page ${g.filePut.filePutS.toFixed(0)} s; browser peak above idle ${g.filePut.peakAboveIdleMiB} MiB ` +
        `vs the page alone reading the same file in 1 MiB slices ${g.fileAlone.peakAboveIdleMiB} MiB`);
      console.log(`           processes that grew most, MiB: put: ${grew(g.filePut)}; page alone: ${grew(g.fileAlone)}`);
      console.log(`  1 GiB    get of that file's content as a Blob (every block checked) ${g.getBlob.getBlobS.toFixed(0)} s; browser peak above idle ${g.getBlob.peakAboveIdleMiB} MiB`);
      console.log(`           processes that grew most, MiB: ${grew(g.getBlob)}`);
    }
  }
} finally {
  await h.cleanup();
}
