// A full disk: each browser runs with its storage on a small tmpfs of its own (a private mount
// namespace, tests/lib/small-disk.sh). A put that does not fit stops with a clear error, the
// store stays consistent (no half object, the earlier object intact, the failed upload's blocks
// removed again), and a put that fits works afterwards.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import * as h from './lib/harness.js';

after(() => h.cleanup());
const SMALL_DISK = path.join(h.ROOT, 'tests/lib/small-disk.sh');
// A: 8 leaves + root; C: 4 leaves + root (1 MiB chunks).
const BLOCKS_OF_A_AND_C = 14;

/** Wait until the store holds A's and C's blocks only; `keys` lists the blocks held. */
async function waitForBlocksOfAAndC(keys) {
  let held = -1;
  try {
    await h.waitFor(async () => (held = (await keys()).length) === BLOCKS_OF_A_AND_C,
      { what: 'the failed upload\'s blocks removed', timeout: 60_000 });
  } catch (e) {
    throw new Error(`${e.message}: ${held} blocks held, ${BLOCKS_OF_A_AND_C} expected`);
  }
}

function checkOverfill(r) {
  assert.ok(r.a.ok, `A fits: ${JSON.stringify(r.a)}`);
  assert.equal(r.b.error?.code, -32005, `B is refused as over the limit: ${JSON.stringify(r.b)}`);
  assert.match(r.b.error.message, /storage is full|quota/i);
  assert.deepEqual(r.list.ok, [r.a.ok.cid], 'only A is listed: nothing of B is visible');
  assert.equal(r.aBack.ok, true, 'A reads back byte-identical after the failure');
  assert.ok(r.c.ok, `a put that fits works afterwards: ${JSON.stringify(r.c)}`);
}

describe('storage full', { concurrency: 1 }, () => {
  test('chromium: profile on an 80 MiB disk', async () => {
    process.env.DISOT_SMALL_DISK_BROWSER = h.CHROMIUM;
    process.env.DISOT_SMALL_DISK_SIZE = '80m';
    delete process.env.DISOT_SMALL_DISK_SUBDIR;
    const site = await h.startPageServer();
    const browser = await h.Browser.launch('chromium', h.prepareExtension('chrome', []), h.tempDir('profile-full'), { executablePath: SMALL_DISK });
    try {
      const page = await browser.open(`${site.url}/demo.html`);
      await h.grantInChromium(browser, page);
      const r = await page.evaluate(h.overfillInPage);
      h.log('chromium overfill:', JSON.stringify(r.b));
      checkOverfill(r);
      const ext = await browser.browser.newPage();
      await ext.goto(`${browser.extensionBase}options.html`);
      await waitForBlocksOfAAndC(() => ext.evaluate(h.blockKeysInExtensionPage));
    } finally {
      await browser.close();
    }
  });

  test('firefox: storage directory on an 80 MiB disk (Firefox grants an origin half of it)', async () => {
    process.env.DISOT_SMALL_DISK_BROWSER = h.FIREFOX;
    process.env.DISOT_SMALL_DISK_SIZE = '80m';
    process.env.DISOT_SMALL_DISK_SUBDIR = 'storage';
    const site = await h.startPageServer();
    const { driver, base } = await h.launchSeleniumFirefox(h.prepareExtension('firefox', []), { profile: h.tempDir('profile-full-ff'), binary: SMALL_DISK });
    try {
      await driver.manage().setTimeouts({ script: 120_000 });
      await driver.get(`${site.url}/demo.html`);
      await driver.wait(() => driver.executeScript('return !!window.disot'), 10_000);
      await h.grantInSeleniumFirefox(driver);
      const r = await driver.executeAsyncScript(`const done = arguments[0]; (${h.overfillInPage})().then(done);`);
      h.log('firefox overfill:', JSON.stringify(r.b));
      checkOverfill(r);
      await driver.get(`${base}options.html`);
      await waitForBlocksOfAAndC(() => driver.executeAsyncScript(`const done = arguments[0]; (${h.blockKeysInExtensionPage})().then(done);`));
    } finally {
      await driver.quit();
    }
  });
});
