// The content store through the page API, in both browsers: 64 MiB in and out byte-identical,
// still there after a browser restart, invisible without a grant and to other origins, a block
// corrupted in IndexedDB detected on read, and pages' puts named with @helia/unixfs's CIDs.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { unixfs } from '@helia/unixfs';
import { MemoryBlockstore } from 'blockstore-core/memory';
import { CID } from 'multiformats/cid';
import { sha512 } from 'multiformats/hashes/sha2';
import * as h from './lib/harness.js';

after(() => h.cleanup());
const MiB = 64;
const UNHELD = 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku';
const figures = {};
after(() => fs.writeFileSync(path.join(h.ARTIFACTS, 'cas-figures.json'), JSON.stringify(figures, null, 2)));

function checkBadInput(bad) {
  assert.deepEqual(bad, {
    wrongType: -32602, badCid: -32602, badHex: -32602, tooBig: -32005, unknownHandle: -32602,
    brokenStream: 'the source broke', shortStream: -32602, longStream: -32602, wrongSize: -32602, notASize: -32602,
    badOffset: -32602, badLength: -32602, list: [],
    nodeOverSize: -32602, nodeUnderSize: -32602, nodeList: [],
    frame: { hugePiece: -32005, unknownOp: -32600, badRead: -32602, notContent: 4200, afterwards: [] },
  });
}

function checkRoundTrip(kind, r) {
  assert.equal(r.same, true, 'the bytes read back are the bytes put');
  assert.equal(r.rangeSame, true, 'byte ranges read back right, also three gets at once');
  assert.equal(r.blobSame, true, 'the whole read back as a Blob');
  assert.equal(r.put.size, MiB * 1024 * 1024);
  assert.equal(r.put.sha256, `sha256:${r.digest}`, 'the seed name is the SHA-256 of the content');
  assert.match(r.put.cid, /^bafybei/);
  for (const [what, seen] of Object.entries(r.progress)) {
    // Puts report every 1 MiB piece, gets every 4 MiB range.
    assert.ok(seen.length >= MiB / 4, `${what}: progress at least every 4 MiB (${seen.length} calls)`);
    assert.ok(seen.every((n, i) => i === 0 || n > seen[i - 1]), `${what}: progress only grows`);
    assert.equal(seen.at(-1), MiB * 1024 * 1024, `${what}: progress ends at the size`);
  }
  figures[kind] = { putMiBps: +(MiB / (r.putMs / 1000)).toFixed(1), getMiBps: +(MiB / (r.getMs / 1000)).toFixed(1) };
  h.log(`${kind}: put ${MiB} MiB at ${figures[kind].putMiBps} MiB/s, get at ${figures[kind].getMiBps} MiB/s`);
}

// Files whose CIDs a page's put must share with @helia/unixfs `addBytes` (its defaults: 1 MiB
// chunks, raw leaves, 1024 links): empty, one byte, around one chunk, several chunks with a
// short last one, and more than the content frame keeps to name it with one digest (64 MiB;
// beyond, it is hashed as it comes). The browser cuts and hashes leaves on its own path
// (extension/common/hash-worker.js), not the one `disot-node add` shares with
// tests/unixfs.test.js, so it is checked here too.
const CHUNK = 1024 * 1024;
const GENERATED = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 64 * CHUNK + 3, 5 * CHUNK + 123].map((size, i) => ({ size, seed: 1000 + i }));

async function checkGenerated(ours) {
  const helia = unixfs({ blockstore: new MemoryBlockstore() });
  // The last file twice: through the typed wrapper, then straight to the frame in uneven pieces.
  const files = [...GENERATED, GENERATED.at(-1)];
  assert.equal(ours.length, files.length);
  for (const [i, { size, seed }] of files.entries()) {
    const bytes = h.generate(size, seed);
    const expected = (await helia.addBytes(bytes)).toString();
    assert.equal(ours[i].cid, expected, `${size} bytes: the CID @helia/unixfs gives`);
    assert.equal(ours[i].sha256, `sha256:${createHash('sha256').update(bytes).digest('hex')}`);
  }
}

const generatedInPage = () => ({ cases: GENERATED, generateSource: h.generate.toString() });

function checkManyPutsAtOnce(r) {
  assert.ok(r.puts.every((p) => p.startsWith('bafk')), `every put stored: ${JSON.stringify(r.puts)}`);
  assert.equal(new Set(r.puts).size, 12);
  assert.deepEqual([...r.listed].sort(), [...r.puts].sort(), 'and listed');
}

function checkPutForms(r) {
  assert.equal(r.kept, true, "the page's buffer is left whole");
  assert.equal(r.same, true, 'the bytes read back are the bytes put');
  assert.deepEqual(r.sizes, Array(3).fill(3 * 1024 * 1024 + 7));
  assert.ok(r.chunks >= 8, `the stream came in many uneven chunks (${r.chunks})`);
  assert.equal(new Set(r.cids).size, 1, `one object whatever the form: ${r.cids}`);
}

function checkPastBlobs(r) {
  assert.equal(r.size, 72 * 1024 * 1024, JSON.stringify(r));
  assert.equal(r.named, true, 'named by the digest of the bytes put');
  assert.equal(r.same, true, 'the bytes read back are the bytes put');
  assert.equal(r.blobSame, true, 'and read back as a Blob, of stored Blobs and of bytes');
  assert.equal(r.again, true, 'the same bytes put as a Blob have the same names');
  assert.equal(r.asBytes, true, 'the same bytes put as bytes, in buffers the frame gave back, have the same names and read back whole');
  assert.equal(r.sized, true, 'the same bytes as a stream that says its size have the same names');
  assert.deepEqual(r.totals, [72 * 1024 * 1024], 'its progress tells the whole');
}

/** The frame gave back the buffers of the 56 + 72 + 72 pieces that three puts of 72 MiB sent
 * as bytes (all but the stream's first 16 MiB). */
function checkSparesBack(count) {
  assert.ok(Number(count) >= 200, `buffers given back to the page: ${count}`);
}

/**
 * Sends `n` late frame ports (see latePortsInPage), one at a time, each once the frame has
 * taken the one before and let it go again: the frame serves as many ports as before after
 * each. (Sent all at once, a slow frame can see several arrive before their `bye`s and refuse
 * the ones past its limit, which is right but is not what this checks.)
 */
async function latePortsGoBack(sendOne, framePorts, n) {
  const [before, takenBefore] = (await framePorts()).map(Number);
  for (let i = 1; i <= n; i++) {
    await sendOne();
    let seen = [];
    await h.waitFor(async () => {
      seen = (await framePorts()).map(Number);
      return seen[1] === takenBefore + i && seen[0] === before;
    }, { timeout: 10_000, what: `late port ${i} of ${n} to be taken and let go` }).catch((e) => {
      throw new Error(`${e.message} (the frame served ${before} ports and had taken ${takenBefore}; last seen serving ${seen[0]}, having taken ${seen[1]})`);
    });
  }
}

describe('chromium content store', { concurrency: 1 }, () => {
  test('64 MiB round trip, origins, restart, corruption', async () => {
    const site = await h.startPageServer();
    const ext = h.prepareExtension('chrome', []);
    const profile = h.tempDir('profile-cas');
    let browser = await h.Browser.launch('chromium', ext, profile);
    try {
      let page = await browser.open(`${site.url}/demo.html`);
      const denied = await page.evaluate(async (unheld) => {
        const code = (p) => p.then(() => null, (e) => e.code);
        return [await code(window.disot.cas.has(unheld)), await code(window.disot.cas.put(new Uint8Array(1))), await code(window.disot.cas.list())];
      }, UNHELD);
      assert.deepEqual(denied, [4100, 4100, 4100], 'nothing without a grant');

      await h.grantInChromium(browser, page);
      // Bad input gets typed errors and leaves nothing behind.
      checkBadInput(await page.evaluate(h.badInputInPage));
      const r = await page.evaluate(h.putAndGetInPage, MiB);
      checkRoundTrip('chromium', r);
      // The content frame named it in its worker, not on its own thread, and read it back there
      // (a 64 MiB get is 16 ranges of 4 MiB).
      const frame = page.frames().find((f) => f.url() === `${browser.extensionBase}frame.html`);
      assert.equal(await frame?.evaluate(() => document.documentElement.dataset.hashing), 'worker');
      assert.ok(Number(await frame.evaluate(() => document.documentElement.dataset.workerReads)) >= 16, 'ranges read on the worker');
      assert.equal(await frame.evaluate(() => document.documentElement.dataset.readers), '2', 'two workers read');
      assert.ok(Number(await frame.evaluate(() => document.documentElement.dataset.blobParts)) >= MiB, 'the get as a Blob was handed the stored Blobs');
      assert.deepEqual((await page.evaluate(() => window.disot.cas.list())).map((o) => o.cid), [r.put.cid]);
      // A frame serves a page a few ports at most (8). Ports the content script sends for asks
      // the provider no longer waits for (it gave up on a frame slow to come) go back to the
      // frame when the page has one already: ten such take none of them.
      const ports = () => frame.evaluate(() => [document.documentElement.dataset.ports, Number(document.documentElement.dataset.portsTaken)]);
      await latePortsGoBack(() => page.evaluate(h.latePortsInPage, 1), ports, 10);
      assert.deepEqual((await page.evaluate(() => window.disot.cas.list())).map((o) => o.cid), [r.put.cid]);

      // Another origin: without a grant it cannot probe held vs unheld (same error for both)...
      const other = await browser.open(`${site.url.replace('127.0.0.1', 'localhost')}/demo.html`);
      const probe = await other.evaluate(async (cids) => Promise.all(cids.map((c) => window.disot.cas.has(c).then(() => null, (e) => e.code))), [r.put.cid, UNHELD]);
      assert.deepEqual(probe, [4100, 4100]);
      // It was not even given the content frame (whose address names this installation).
      const contentFrame = () => other.frames().find((f) => f.url() === `${browser.extensionBase}frame.html`);
      assert.equal(contentFrame(), undefined);
      const started = () => contentFrame().evaluate(() => document.documentElement.dataset.hashing ?? 'not started');
      // ...and with its own grant it still does not see the first origin's object.
      await h.grantInChromium(browser, other);
      // Such a port, come when the page has no frame yet, is the page's frame: it is used.
      await other.evaluate(h.latePortsInPage, 1);
      assert.equal(await other.evaluate((c) => window.disot.cas.has(c), r.put.cid), false);
      assert.equal(await started(), 'worker', 'granted, its frame starts');
      assert.deepEqual(await contentFrame().evaluate(() => [document.documentElement.dataset.ports, document.documentElement.dataset.portsTaken]), ['1', '1'], 'the page uses the port that came late, and asked for no other');
      // The frame in a web page is never taken for the extension's own UI.
      const asUi = await other.frames().find((f) => f.url() === `${browser.extensionBase}frame.html`)
        .evaluate(() => chrome.runtime.sendMessage({ to: 'background', body: JSON.stringify({ method: 'ui_status' }) }).then((r) => JSON.parse(r.body)));
      assert.equal(asUi.error?.code, 4100, JSON.stringify(asUi).slice(0, 200));
      assert.equal(await other.evaluate((c) => window.disot.cas.stat(c).then(() => null, (e) => e.code), r.put.cid), -32001);
      assert.deepEqual(await other.evaluate(() => window.disot.cas.list()), []);
      // Nor can it have the object by naming its CID: what the browser holds for another
      // origin is not a fetch's answer (no peer serves it here, so it is not found).
      assert.equal(await other.evaluate((c) => window.disot.cas.get(c, { length: 16 }).then(() => null, (e) => e.code), r.put.cid), -32001);
      assert.equal(await other.evaluate((c) => window.disot.cas.stat(c).then(() => null, (e) => e.code), r.put.cid), -32001);
      assert.deepEqual(await other.evaluate(() => window.disot.cas.list()), []);

      const popup = await browser.browser.newPage();
      await popup.goto(`${browser.extensionBase}popup.html`);
      await popup.waitForFunction(() => document.getElementById('objects').textContent === '1');
      assert.equal(await popup.$eval('#used', (e) => e.textContent), '64.0 MiB');
      // Nor by the CID of one of its chunks, a block held without a record of its own (a
      // page that knows a file could otherwise learn whether this browser holds it).
      const chunk = (await popup.evaluate(h.blockKeysInExtensionPage)).find((k) => k.startsWith('bafkrei') && k !== r.put.cid);
      assert.ok(chunk, 'a leaf of the object is stored');
      assert.equal(await other.evaluate((c) => window.disot.cas.get(c, { length: 16 }).then(() => null, (e) => e.code), chunk), -32001, 'a chunk of another origin\'s object');
      assert.equal(await page.evaluate((c) => window.disot.cas.get(c, { length: 16 }).then(() => null, (e) => e.code), chunk), -32001, 'a chunk is not an object, even of the origin that put it');
      // A CID the store could not hold (SHA-512) is refused before any peer is asked.
      const sha512Cid = CID.create(1, 0x55, await sha512.digest(new Uint8Array([1, 2, 3]))).toString();
      assert.equal(await page.evaluate((c) => window.disot.cas.get(c).then(() => null, (e) => `${e.code} ${e.message}`), sha512Cid), `-32602 block ${sha512Cid} uses an unsupported hash or codec`);
      // Upload handles are random (they tell an origin nothing of others' uploads), and why
      // another origin's upload failed is not told.
      const handle = await page.evaluate(async () => {
        const { handle } = await window.disot.request({ method: 'cas_put_start', params: { size: 1 } });
        await window.disot.request({ method: 'cas_put_chunk', params: { handle, data: btoa('too long') } }).catch(() => {});
        return handle;
      });
      const again = (handle) => window.disot.request({ method: 'cas_put_chunk', params: { handle, data: '' } }).then(() => null, (e) => e.message);
      assert.equal(await page.evaluate(again, handle), 'the upload has more than the 1 bytes its size says', 'the origin hears why');
      assert.match(await other.evaluate(again, handle), /^no such upload/, 'another origin does not');
      const handles = await other.evaluate(async () => {
        const started = [];
        for (let i = 0; i < 2; i++) started.push((await window.disot.request({ method: 'cas_put_start', params: {} })).handle);
        for (const handle of started) await window.disot.request({ method: 'cas_put_abort', params: { handle } });
        return started;
      });
      assert.ok(handles.every((n) => Number.isSafeInteger(n) && Math.abs(n - handle) > 1000) && Math.abs(handles[1] - handles[0]) > 1000, `not counted: ${handle}, ${handles}`);
      // A page putting more at once than the store takes at a time: the rest wait their turn.
      checkManyPutsAtOnce(await other.evaluate(h.manyPutsAtOnceInPage));
      await h.screenshot(popup, 'popup-storage-chromium.png');

      await browser.close();
      browser = await h.Browser.launch('chromium', ext, profile);
      page = await browser.open(`${site.url}/demo.html`);
      const head = await page.evaluate(async (cid) => {
        const b = await window.disot.cas.get(cid, { length: 64 });
        return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
      }, r.put.cid);
      assert.equal(head, r.head, 'still there after a browser restart');

      const extPage = await browser.browser.newPage();
      await extPage.goto(`${browser.extensionBase}popup.html`);
      const leaf = await extPage.evaluate(h.corruptALeafInExtensionPage);
      assert.match(leaf, /^bafkrei/);
      for (const as of ['bytes', 'blob', 'stream']) {
        const err = await page.evaluate(async (cid, as) => {
          try {
            const got = await window.disot.cas.get(cid, { as });
            if (as === 'stream') for (const reader = got.getReader(); !(await reader.read()).done;);
            return null;
          } catch (e) {
            return { code: e.code, message: e.message };
          }
        }, r.put.cid, as);
        assert.equal(err?.code, -32603, `${as}: ${JSON.stringify(err)}`);
        assert.match(err.message, /does not match its cid/);
      }
      checkPutForms(await page.evaluate(h.putFormsInPage));
      checkPastBlobs(await page.evaluate(h.putPastBlobsInPage));
      const frameNow = page.frames().find((f) => f.url() === `${browser.extensionBase}frame.html`);
      checkSparesBack(await frameNow.evaluate(() => document.documentElement.dataset.sparesBack));
      await checkGenerated(await page.evaluate(h.putGeneratedInPage, generatedInPage()));
    } finally {
      await browser.close();
    }
  });

  test('"Free space" in the popup removes what no site keeps pinned and what unfinished uploads left, keeps what another site pins, and an upload whose blocks it took fails saying so; a site putting what another put learns nothing of what that one said of it', async () => {
    const site = await h.startPageServer();
    const ext = h.prepareExtension('chrome', []);
    const browser = await h.Browser.launch('chromium', ext, h.tempDir('profile-gc'));
    try {
      const a = await browser.open(`${site.url}/demo.html`);
      const b = await browser.open(`${site.url.replace('127.0.0.1', 'localhost')}/demo.html`);
      await h.grantInChromium(browser, a);
      await h.grantInChromium(browser, b);
      const x = await a.evaluate(putSeeded, 3, 1); // three leaves and a root
      const y = await a.evaluate(putSeeded, 2, 2); // two leaves and a root
      assert.equal((await b.evaluate(putSeeded, 2, 2)).cid, y.cid, 'B puts the same content');
      // A lets both go; B's pin of the same content stands.
      for (const o of [x, y]) assert.equal((await a.evaluate((c) => window.disot.cas.unpin(c), o.cid)).pinned, false);
      assert.equal((await b.evaluate((c) => window.disot.cas.stat(c), y.cid)).pinned, true, 'B still keeps it');
      assert.equal((await a.evaluate((c) => window.disot.cas.stat(c), y.cid)).pinned, false, 'A does not');
      // An upload left unfinished: its tab is closed once its first pieces are stored.
      const c = await browser.open(`${site.url}/demo.html`);
      await c.evaluate(startStreamPut);
      await c.evaluate(() => window.__feed(8));
      await c.waitForFunction(() => window.__stored >= 8 * 1024 * 1024, { timeout: 30_000, polling: 100 });
      await c.close();

      const popup = await browser.open(`${browser.extensionBase}popup.html`);
      const freeSpace = async () => {
        await popup.$eval('#gc-status', (e) => { e.textContent = ''; });
        await popup.click('#gc');
        await popup.waitForFunction(() => /^Removed|error/i.test(document.getElementById('gc-status').textContent), { timeout: 30_000, polling: 100 });
        return popup.$eval('#gc-status', (e) => e.textContent);
      };
      const before = await popup.evaluate(h.blockKeysInExtensionPage);
      assert.ok(before.length >= 4 + 3 + 8, `blocks before: ${before.length}`);
      const said = await freeSpace();
      const after = await popup.evaluate(h.blockKeysInExtensionPage);
      h.log(`free space: ${before.length} blocks before; "${said}"`);
      assert.equal(said, `Removed 1 unpinned object and ${before.length - 3} blocks`);
      assert.equal(after.length, 3, 'only the blocks of the object B keeps');
      assert.ok(after.includes(y.cid));
      assert.equal(await a.evaluate((cid) => window.disot.cas.stat(cid).then(() => null, (e) => e.code), x.cid), -32001, 'the unpinned object is gone');
      for (const p of [a, b]) {
        const digest = await p.evaluate(async (cid) => {
          const bytes = await window.disot.cas.get(cid);
          return Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)), (v) => v.toString(16).padStart(2, '0')).join('');
        }, y.cid);
        assert.equal(`sha256:${digest}`, y.sha256, 'the object kept reads back whole');
      }
      await popup.waitForFunction(() => document.getElementById('objects').textContent === '1' && document.getElementById('pinned').textContent === '1', { timeout: 10_000, polling: 100 });

      // Space freed while an upload runs takes its stored pieces (they belong to no object
      // yet): the upload then fails with an error that says so, and leaves nothing behind.
      await a.evaluate(startStreamPut);
      await a.evaluate(() => window.__feed(4));
      await a.waitForFunction(() => window.__stored >= 4 * 1024 * 1024, { timeout: 30_000, polling: 100 });
      const freed = (await freeSpace()).match(/^Removed 0 unpinned objects and (\d+) blocks$/);
      assert.ok(freed && Number(freed[1]) >= 4, `the upload's stored pieces are freed: ${freed?.[0]}`);
      const failed = await a.evaluate(async () => {
        window.__feed(1, true);
        return window.__put.then(() => null, (e) => `${e.code} ${e.message}`);
      });
      h.log(`the upload whose blocks were freed: ${failed}`);
      assert.match(failed, /^-32603 block \S+ of this upload was removed before the upload was done/);
      assert.deepEqual((await popup.evaluate(h.blockKeysInExtensionPage)).sort(), after.sort(), 'nothing of it is left');
      assert.deepEqual((await a.evaluate(() => window.disot.cas.list())).map((o) => o.cid), [y.cid]);

      // B putting what A put is told nothing of what A said of it: not its name, its type,
      // nor that A made it public.
      const words = 'the same words, put by two sites';
      const fromA = await a.evaluate((w) => window.disot.cas.put(new TextEncoder().encode(w), { name: 'plan.txt', mime: 'text/x-plan', public: true }), words);
      const atB = await b.evaluate(async (w) => {
        const { cid } = await window.disot.cas.put(new TextEncoder().encode(w));
        return { ...(await window.disot.cas.stat(cid)), type: (await window.disot.cas.get(cid, { as: 'blob' })).type };
      }, words);
      assert.equal(atB.cid, fromA.cid, 'the same object');
      assert.deepEqual([atB.name, atB.mime, atB.public, atB.minTrust, atB.type], [null, null, false, null, ''], `nothing A said: ${JSON.stringify(atB)}`);
      const atA = await a.evaluate((c) => window.disot.cas.stat(c), fromA.cid);
      assert.deepEqual([atA.name, atA.mime, atA.public], ['plan.txt', 'text/x-plan', true], 'A is told what it said');
      // Nor the other way round: B makes public what A put saying nothing.
      const quiet = await a.evaluate(() => window.disot.cas.put(new TextEncoder().encode('said nothing of it')));
      await b.evaluate(() => window.disot.cas.put(new TextEncoder().encode('said nothing of it'), { name: 'b.txt', public: true, minTrust: 40 }));
      const stillQuiet = await a.evaluate((c) => window.disot.cas.stat(c), quiet.cid);
      assert.deepEqual([stillQuiet.name, stillQuiet.public, stillQuiet.minTrust], [null, false, null], 'A is not told what B said');
    } finally {
      await browser.close();
    }
  });
});

/** In a page: put `mib` MiB of bytes made from `seed` (the same seed gives the same bytes). */
async function putSeeded(mib, seed) {
  const bytes = new Uint8Array(mib * 1024 * 1024);
  let state = seed * 2654435761 >>> 0 || 1;
  for (let i = 0; i < bytes.length; i++) {
    state ^= state << 13; state ^= state >>> 17; state ^= state << 5; state >>>= 0;
    bytes[i] = state & 0xff;
  }
  return window.disot.cas.put(bytes);
}

/** In a page: start a put of a stream the test feeds (`window.__feed(mib, last)`); the bytes
 * stored so far are in `window.__stored`, the put's promise in `window.__put`. */
function startStreamPut() {
  let controller;
  const stream = new ReadableStream({ start(c) { controller = c; } });
  window.__stored = 0;
  window.__feed = (mib, last = false) => {
    for (let i = 0; i < mib * 16; i++) controller.enqueue(crypto.getRandomValues(new Uint8Array(65536)));
    if (last) controller.close();
  };
  window.__put = window.disot.cas.put(stream, { onProgress: (stored) => { window.__stored = stored; } });
  window.__put.catch(() => {});
}

describe('firefox content store', () => {
  test('64 MiB round trip, origins, restart, corruption, "Free space" (Selenium: the grant needs the prompt window)', async () => {
    const site = await h.startPageServer();
    const ext = h.prepareExtension('firefox', []);
    const profile = h.tempDir('profile-cas-firefox');
    let { driver, base, uuid } = await h.launchSeleniumFirefox(ext, { profile });
    try {
      await driver.manage().setTimeouts({ script: 300_000 });
      const run = (fn, ...args) => driver.executeAsyncScript(
        `const done = arguments[arguments.length - 1]; (${fn})(...Array.from(arguments).slice(0, -1)).then(done, (e) => done({ thrown: e.code ?? e.message }));`, ...args);
      const openDemo = async (url = site.url) => {
        await driver.get(`${url}/demo.html`);
        await driver.wait(() => driver.executeScript('return !!window.disot'), 10_000);
      };
      await openDemo();
      const denied = await run(async (unheld) => window.disot.cas.has(unheld), UNHELD);
      assert.deepEqual(denied, { thrown: 4100 });
      await h.grantInSeleniumFirefox(driver);
      checkBadInput(await run(h.badInputInPage));
      const r = await run(h.putAndGetInPage, MiB);
      assert.equal(r.thrown, undefined, JSON.stringify(r));
      checkRoundTrip('firefox', r);
      // The content frame named it in its worker, not on its own thread, and read it back there.
      const { By } = await import('selenium-webdriver');
      await driver.switchTo().frame(await driver.findElement(By.css(`iframe[src="${base}frame.html"]`)));
      assert.equal(await driver.executeScript('return document.documentElement.dataset.hashing'), 'worker');
      assert.ok(Number(await driver.executeScript('return document.documentElement.dataset.workerReads')) >= 16, 'ranges read on the worker');
      assert.equal(await driver.executeScript('return document.documentElement.dataset.readers'), '2', 'two workers read');
      assert.ok(Number(await driver.executeScript('return document.documentElement.dataset.blobParts')) >= MiB, 'the get as a Blob was handed the stored Blobs');
      // Ports sent for asks the provider no longer waits for go back to the frame, or are the
      // page's frame if it has none yet (as in the Chromium test).
      const framePorts = async () => {
        await driver.switchTo().frame(await driver.findElement(By.css(`iframe[src="${base}frame.html"]`)));
        const n = await driver.executeScript('return [document.documentElement.dataset.ports, document.documentElement.dataset.portsTaken]');
        await driver.switchTo().defaultContent();
        return n;
      };
      await driver.switchTo().defaultContent();
      await latePortsGoBack(() => run(h.latePortsInPage, 1), framePorts, 10);

      await openDemo(site.url.replace('127.0.0.1', 'localhost'));
      assert.deepEqual(await run(async (cid) => window.disot.cas.has(cid), r.put.cid), { thrown: 4100 });
      // With its own grant, it can neither see the object nor have it by naming its CID.
      await h.grantInSeleniumFirefox(driver);
      await run(h.latePortsInPage, 1);
      assert.equal(await run(async (cid) => window.disot.cas.has(cid), r.put.cid), false);
      assert.deepEqual(await framePorts(), ['1', '1'], 'the page uses the port that came late, and asked for no other');
      assert.deepEqual(await run(async (cid) => window.disot.cas.get(cid, { length: 16 }), r.put.cid), { thrown: -32001 });
      assert.deepEqual(await run(async () => window.disot.cas.list()), []);
      // A page putting more at once than the store takes at a time: the rest wait their turn.
      checkManyPutsAtOnce(await run(h.manyPutsAtOnceInPage));

      // Restart on the same profile: the content and the grant are still there.
      await driver.quit();
      ({ driver, base } = await h.launchSeleniumFirefox(ext, { profile, uuid }));
      await driver.manage().setTimeouts({ script: 300_000 });
      await openDemo();
      const head = await run(async (cid) => {
        const b = await window.disot.cas.get(cid, { length: 64 });
        return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
      }, r.put.cid);
      assert.equal(head, r.head, 'still there after a browser restart');

      await driver.get(`${base}popup.html`);
      assert.match(await run(h.corruptALeafInExtensionPage), /^bafkrei/);
      await openDemo();
      for (const as of ['bytes', 'blob']) {
        assert.deepEqual(await run(async (cid, as) => window.disot.cas.get(cid, { as }), r.put.cid, as), { thrown: -32603 }, as);
      }
      checkPutForms(await run(h.putFormsInPage));
      checkPastBlobs(await run(h.putPastBlobsInPage));
      await driver.switchTo().frame(await driver.findElement(By.css(`iframe[src="${base}frame.html"]`)));
      checkSparesBack(await driver.executeScript('return document.documentElement.dataset.sparesBack'));
      await driver.switchTo().defaultContent();
      await checkGenerated(await run(h.putGeneratedInPage, generatedInPage()));

      // "Free space" in the popup: the one object let go goes, with its blocks; one kept stays.
      const x = await run(putSeeded, 3, 1); // three leaves and a root
      const y = await run(putSeeded, 2, 2);
      assert.equal((await run(async (cid) => window.disot.cas.unpin(cid), x.cid)).pinned, false);
      await driver.get(`${base}popup.html`);
      const before = (await run(h.blockKeysInExtensionPage)).length;
      await driver.findElement(By.id('gc')).click();
      await driver.wait(async () => /^Removed|error/i.test(await driver.findElement(By.id('gc-status')).getText()), 30_000);
      const said = await driver.findElement(By.id('gc-status')).getText();
      const after = await run(h.blockKeysInExtensionPage);
      h.log(`firefox free space: ${before} blocks before; "${said}"`);
      assert.equal(said, `Removed 1 unpinned object and ${before - after.length} blocks`);
      assert.ok(before - after.length >= 4, 'x\'s root and leaves at least');
      assert.ok(!after.includes(x.cid) && after.includes(y.cid));
      await openDemo();
      assert.deepEqual(await run(async (cid) => window.disot.cas.stat(cid), x.cid), { thrown: -32001 });
      const kept = await run(async (cid) => Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', await window.disot.cas.get(cid))), (v) => v.toString(16).padStart(2, '0')).join(''), y.cid);
      assert.equal(`sha256:${kept}`, y.sha256, 'the object kept reads back whole');
    } finally {
      await driver.quit();
    }
  });
});

// A browser that cannot start the content frame's workers (they are an optimisation): the frame
// imports and reads on its own thread, and gives the same CIDs and bytes.
describe('chromium content store without workers', () => {
  test('puts named as @helia/unixfs names them, and read back whole', async () => {
    const ext = h.prepareExtension('chrome', []);
    const frameJs = path.join(ext, 'frame.js');
    fs.writeFileSync(frameJs, `globalThis.Worker = undefined; // as if workers could not start\n${fs.readFileSync(frameJs, 'utf8')}`);
    const site = await h.startPageServer();
    const browser = await h.Browser.launch('chromium', ext, h.tempDir('profile-noworker'));
    try {
      const page = await browser.open(`${site.url}/demo.html`);
      await h.grantInChromium(browser, page);
      await checkGenerated(await page.evaluate(h.putGeneratedInPage, generatedInPage()));
      const frame = page.frames().find((f) => f.url().endsWith('/frame.html'));
      assert.equal(await frame.evaluate(() => document.documentElement.dataset.hashing), 'frame', 'no worker started');
      const { size, seed } = GENERATED.at(-1);
      const back = await page.evaluate(async (size, seed, generateSource) => {
        const bytes = (0, eval)(`(${generateSource})`)(size, seed);
        const put = await window.disot.cas.put(bytes);
        const got = await window.disot.cas.get(put.cid);
        return { same: got.length === bytes.length && got.every((b, i) => b === bytes[i]) };
      }, size, seed, h.generate.toString());
      assert.equal(back.same, true, 'the bytes read back are the bytes put');
    } finally {
      await browser.close();
    }
  });
});
