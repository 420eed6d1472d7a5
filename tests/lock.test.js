// The optional lock: with it on (options page), the identity key is kept only sealed under
// the passphrase in IndexedDB; after a browser restart the peer waits: pages get 4900 "locked",
// the popup asks for the passphrase, refuses a wrong one and unlocks with the right one as the
// same DID. Removing the lock stores the key in the clear again. In Chromium (offscreen
// document) and Firefox (background page), which start the node differently.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import * as h from './lib/harness.js';

after(() => h.cleanup());

const PASSPHRASE = 'correct horse battery staple';

/** In an extension page: the names in the `keys` store, and the sealed identity's text. */
async function keysInExtensionPage() {
  const db = await new Promise((resolve, reject) => {
    const r = indexedDB.open('disot-peer');
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  const store = db.transaction('keys').objectStore('keys');
  const ask = (r) => new Promise((resolve, reject) => { r.onsuccess = () => resolve(r.result); r.onerror = () => reject(r.error); });
  const names = await ask(store.getAllKeys());
  const sealed = await ask(store.get('identity-sealed'));
  db.close();
  return { names: names.map(String).sort(), sealed: typeof sealed === 'string' ? sealed : null };
}

const pageStatus = (page) => page.evaluate(() => window.disot.request({ method: 'disot_status' })
  .then((r) => ({ did: r.did }), (e) => ({ code: e.code, message: e.message })));

describe('the lock', () => {
  test('the key is sealed at rest; after a restart the peer waits for the passphrase, refuses a wrong one and unlocks as the same DID', async () => {
    const site = await h.startPageServer();
    const ext = h.prepareExtension('chrome', []);
    const profile = h.tempDir('profile-lock');
    let browser = await h.Browser.launch('chromium', ext, profile);
    try {
      let options = await browser.open(`${browser.extensionBase}options.html`);
      const { did } = await h.ui(options, 'ui_status');
      await options.type('#lock-pass', PASSPHRASE);
      await options.click('#lock');
      await options.waitForFunction(() => document.getElementById('lock-status').textContent === 'Done.');
      assert.equal((await h.ui(options, 'ui_status')).lockEnabled, true);
      const atRest = await options.evaluate(keysInExtensionPage);
      assert.deepEqual(atRest.names, ['identity-sealed'], 'no plain key at rest');
      assert.equal(JSON.parse(atRest.sealed).did, did, 'the sealed key names our DID');
      assert.ok(!atRest.sealed.includes('"secret"'), 'sealed, not written out');
      // This session goes on: the key is in memory. (A page is told the DID once granted.)
      const granted = await browser.open(`${site.url}/demo.html`);
      await h.grantInChromium(browser, granted);
      assert.equal((await pageStatus(granted)).did, did);

      await browser.close();
      browser = await h.Browser.launch('chromium', ext, profile);
      const page = await browser.open(`${site.url}/demo.html`);
      const locked = await pageStatus(page);
      assert.equal(locked.code, 4900);
      assert.match(locked.message, /locked: unlock it in the extension popup/);
      // Locked, the node cannot say which sites hold a grant: the content script puts no
      // content frame in a page then (nested pages of the site are answered 4900 too)...
      const nested = await page.evaluate(async () => {
        const f = document.createElement('iframe');
        f.src = '/demo.html';
        const loaded = new Promise((res) => f.addEventListener('load', res, { once: true }));
        document.body.append(f);
        await loaded;
        window.testFrame = f;
        return f.contentWindow.disot.cas.list().then(() => 'ok', (e) => `${e.code} ${e.message}`);
      });
      assert.match(nested, /^4900 the peer is locked/);
      assert.equal(await page.evaluate(() => document.querySelectorAll('iframe[src$="/frame.html"]').length), 0);
      // ...and frames that a page puts in itself (Chrome's address of them is public) start
      // within a small pool of their own, two per site, so that sites without a grant cannot
      // fill the node's process with them (the store's own check answers each request, here
      // the site's grant from before the restart): of three, two start, the third waits for
      // the unlock.
      const whileLocked = await page.evaluate(async (frameUrl) => {
        let next = 0;
        const ask = (port) => new Promise((res) => {
          const id = next++;
          port.addEventListener('message', ({ data }) => {
            if (data?.id !== id) return;
            const r = JSON.parse(data.body);
            res(r.error ? `${r.error.code} ${r.error.message}` : 'ok');
          });
          port.start();
          port.postMessage({ op: 'request', body: JSON.stringify({ method: 'cas_list' }), id });
        });
        window.askFrame = (i) => ask(window.testPorts[i]);
        window.testPorts = [];
        const answers = [];
        for (let i = 0; i < 3; i++) {
          const f = document.createElement('iframe');
          f.src = frameUrl;
          const loaded = new Promise((res) => f.addEventListener('load', res, { once: true }));
          document.body.append(f);
          await loaded;
          const { port1, port2 } = new MessageChannel();
          f.contentWindow.postMessage({ channel: 'disot-frame' }, new URL(frameUrl).origin, [port1]);
          window.testPorts.push(port2);
          answers.push(await ask(port2));
        }
        return answers;
      }, `${browser.extensionBase}frame.html`);
      assert.deepEqual(whileLocked.slice(0, 2), ['ok', 'ok'], `two start, and their store answers by the grant it reads: ${JSON.stringify(whileLocked)}`);
      assert.match(whileLocked[2], /^-32005 this site has 2 content frames open, the most it may while Disot Peer cannot check permissions/);
      const popup = await browser.open(`${browser.extensionBase}popup.html`);
      await popup.waitForFunction(() => !document.getElementById('locked').hidden);
      await h.screenshot(popup, 'popup-locked-chromium.png');
      await popup.type('#unlock-pass', 'not the passphrase');
      await popup.click('#unlock');
      await popup.waitForFunction(() => !document.getElementById('unlock-error').hidden, { timeout: 30_000 });
      assert.match(await popup.$eval('#unlock-error', (e) => e.textContent), /wrong passphrase/);
      assert.equal((await pageStatus(page)).code, 4900, 'still locked');
      await popup.$eval('#unlock-pass', (e) => { e.value = ''; });
      await popup.type('#unlock-pass', PASSPHRASE);
      await popup.click('#unlock');
      await popup.waitForFunction(() => document.getElementById('locked').hidden && document.getElementById('did').textContent.startsWith('did:key:'), { timeout: 30_000 });
      assert.equal(await popup.$eval('#did', (e) => e.textContent), did, 'the same identity');
      assert.equal((await pageStatus(page)).did, did, 'pages are answered again');
      assert.equal(await page.evaluate(() => window.askFrame(2)), 'ok', 'a frame refused while locked starts once the node can check its grant');
      assert.equal(await page.evaluate(() => window.testFrame.contentWindow.disot.cas.list().then(() => 'ok', (e) => e.code)), 'ok');
      options = await browser.open(`${browser.extensionBase}options.html`);
      assert.deepEqual((await options.evaluate(keysInExtensionPage)).names, ['identity-sealed'], 'still sealed at rest');

      // Unlocked, the key still leaves the lock only with its passphrase: a backup of it (so
      // also another lock passphrase, or another identity in its place).
      const exportWith = async (current) => {
        await options.$eval('#lock-current', (e, v) => { e.value = v; }, current);
        await options.$eval('#export-pass', (e) => { e.value = 'another long passphrase'; });
        await options.$eval('#export-status', (e) => { e.textContent = ''; });
        await options.click('#export');
        await options.waitForFunction(() => !['', 'Sealing…'].includes(document.getElementById('export-status').textContent), { timeout: 30_000 });
        return options.$eval('#export-status', (e) => e.textContent);
      };
      await options.waitForFunction(() => !document.getElementById('lock-current-row').hidden, { timeout: 10_000 }); // the options ask for the lock's passphrase
      assert.match(await exportWith(''), /not the lock's passphrase/);
      assert.match(await exportWith('not the passphrase'), /not the lock's passphrase/);
      assert.equal(await options.$eval('#backup-out', (e) => e.hidden), true, 'no backup made');
      assert.match(await h.ui(options, 'identity_export', { passphrase: 'another long passphrase' }).catch((e) => e.message), /the lock is on: give its passphrase/);
      assert.match(await h.ui(options, 'identity_lock', { passphrase: 'another long passphrase' }).catch((e) => e.message), /the lock is on: give its passphrase/);
      assert.match(await h.ui(options, 'identity_import', { backup: '{}', passphrase: 'x' }).catch((e) => e.message), /the lock is on: give its passphrase/);
      assert.match(await exportWith(PASSPHRASE), /^Done/);
      assert.match(await options.$eval('#backup-out', (e) => e.value), /disot-identity-backup/);

      // Removing the lock needs the passphrase, and stores the key in the clear again.
      await options.type('#lock-pass', 'not the passphrase');
      await options.click('#unlock-remove');
      await options.waitForFunction(() => document.getElementById('lock-status').className === 'error');
      assert.match(await options.$eval('#lock-status', (e) => e.textContent), /wrong passphrase/);
      await options.$eval('#lock-pass', (e) => { e.value = ''; });
      await options.type('#lock-pass', PASSPHRASE);
      await options.click('#unlock-remove');
      await options.waitForFunction(() => document.getElementById('lock-status').textContent === 'Done.');
      assert.deepEqual((await options.evaluate(keysInExtensionPage)).names, ['identity']);
      await browser.close();
      browser = await h.Browser.launch('chromium', ext, profile);
      assert.equal((await pageStatus(await browser.open(`${site.url}/demo.html`))).did, did, 'starts unlocked, the same DID');
    } finally {
      await browser.close();
    }
  });

  test('Firefox: locked after a restart, unlocked in the popup as the same DID', async () => {
    const { By } = await import('selenium-webdriver');
    const site = await h.startPageServer();
    const ext = h.prepareExtension('firefox', []);
    const profile = h.tempDir('profile-lock-f');
    const uuid = randomUUID();
    const text = async (driver, id, until) => {
      const el = await driver.findElement(By.id(id));
      await driver.wait(async () => until(await el.getText()), 30_000, `${id} to change`);
      return el.getText();
    };
    const pageStatusIn = async (driver) => {
      await driver.get(`${site.url}/demo.html`);
      await driver.wait(() => driver.executeScript('return !!window.disot'), 10_000);
      return driver.executeAsyncScript(`const done = arguments[0];
        window.disot.request({ method: 'disot_status' }).then((r) => done({ did: r.did }), (e) => done({ code: e.code, message: e.message }));`);
    };
    let { driver, base } = await h.launchSeleniumFirefox(ext, { profile, uuid });
    let did;
    try {
      // A page is told the DID once granted; the grant outlives the restart below.
      await driver.get(`${site.url}/demo.html`);
      await driver.wait(() => driver.executeScript('return !!window.disot'), 10_000);
      await h.grantInSeleniumFirefox(driver);
      await driver.get(`${base}options.html`);
      did = await text(driver, 'did', (t) => t.startsWith('did:key:'));
      await driver.findElement(By.id('lock-pass')).sendKeys(PASSPHRASE);
      await driver.findElement(By.id('lock')).click();
      assert.equal(await text(driver, 'lock-status', (t) => t === 'Done.' || /error|must/.test(t)), 'Done.');
    } finally {
      await driver.quit();
    }
    ({ driver, base } = await h.launchSeleniumFirefox(ext, { profile, uuid }));
    try {
      const locked = await pageStatusIn(driver);
      assert.equal(locked.code, 4900, JSON.stringify(locked));
      await driver.get(`${base}popup.html`);
      await driver.wait(async () => driver.findElement(By.id('locked')).isDisplayed(), 20_000, 'the unlock form');
      await driver.findElement(By.id('unlock-pass')).sendKeys('not the passphrase');
      await driver.findElement(By.id('unlock')).click();
      assert.match(await text(driver, 'unlock-error', (t) => t !== ''), /wrong passphrase/);
      await driver.findElement(By.id('unlock-pass')).clear();
      await driver.findElement(By.id('unlock-pass')).sendKeys(PASSPHRASE);
      await driver.findElement(By.id('unlock')).click();
      assert.equal(await text(driver, 'did', (t) => t.startsWith('did:key:')), did, 'the same identity');
      assert.equal((await pageStatusIn(driver)).did, did, 'pages are answered again');
    } finally {
      await driver.quit();
    }
  });
});
