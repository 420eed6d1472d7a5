// Identity backup, driven through the options page as a user would: a backup made in one
// browser (Chromium) and restored in a fresh profile of another (Firefox) gives that profile
// the same DID after a restart; a wrong passphrase or a damaged backup fails with a clear
// message and changes nothing.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import * as h from './lib/harness.js';

after(() => h.cleanup());

const PASSPHRASE = 'a long and private passphrase';

async function chromiumBackup() {
  const browser = await h.Browser.launch('chromium', h.prepareExtension('chrome', []), h.tempDir('profile-backup-c'));
  try {
    const page = await browser.open(`${browser.extensionBase}options.html`);
    await page.waitForFunction(() => document.getElementById('did').textContent.startsWith('did:key:'));
    const did = await page.$eval('#did', (e) => e.textContent);
    await page.type('#export-pass', 'short');
    await page.click('#export');
    await page.waitForFunction(() => document.getElementById('export-status').className === 'error');
    assert.match(await page.$eval('#export-status', (e) => e.textContent), /passphrase must have 8/);
    await page.$eval('#export-pass', (e) => { e.value = ''; });
    await page.type('#export-pass', PASSPHRASE);
    await page.click('#export');
    await page.waitForFunction(() => !document.getElementById('backup-out').hidden, { timeout: 20_000 });
    const backup = await page.$eval('#backup-out', (e) => e.value);
    return { did, backup };
  } finally {
    await browser.close();
  }
}

describe('identity backup', () => {
  test('made in Chromium, restored in a fresh Firefox profile: the same DID; a wrong passphrase changes nothing', async () => {
    const { did, backup } = await chromiumBackup();
    const parsed = JSON.parse(backup);
    assert.equal(parsed.did, did, 'the backup names its DID');
    assert.equal(parsed.format, 'disot-identity-backup/1');
    assert.equal(parsed.kdf.name, 'argon2id');

    const { By, until } = await import('selenium-webdriver');
    const profile = h.tempDir('profile-backup-f');
    const uuid = randomUUID();
    const ext = h.prepareExtension('firefox', []);
    const statusOf = async (driver, id) => {
      const el = await driver.findElement(By.id(id));
      await driver.wait(async () => !['', 'Opening…'].includes(await el.getText()), 30_000, `${id} to change`);
      return { text: await el.getText(), error: (await el.getAttribute('class')) === 'error' };
    };
    const didIn = async (driver) => {
      const el = await driver.findElement(By.id('did'));
      await driver.wait(async () => (await el.getText()).startsWith('did:key:'), 20_000, 'the DID to show');
      return el.getText();
    };

    let { driver, base } = await h.launchSeleniumFirefox(ext, { profile, uuid });
    try {
      await driver.get(`${base}options.html`);
      const before = await didIn(driver);
      assert.notEqual(before, did, 'a fresh profile has its own DID');
      // Wrong passphrase.
      await driver.findElement(By.id('backup-in')).sendKeys(backup);
      await driver.findElement(By.id('import-pass')).sendKeys('not the passphrase');
      await driver.findElement(By.id('import')).click();
      let status = await statusOf(driver, 'import-status');
      assert.ok(status.error, status.text);
      assert.match(status.text, /wrong passphrase, or the backup is damaged/);
      // Damaged backup.
      await driver.executeScript('document.getElementById("import-status").textContent = ""');
      const damaged = backup.replace(/"sealed": "(.)/, (_, c) => `"sealed": "${c === 'A' ? 'B' : 'A'}`);
      await driver.findElement(By.id('backup-in')).clear();
      await driver.findElement(By.id('backup-in')).sendKeys(damaged);
      await driver.findElement(By.id('import-pass')).clear();
      await driver.findElement(By.id('import-pass')).sendKeys(PASSPHRASE);
      await driver.findElement(By.id('import')).click();
      status = await statusOf(driver, 'import-status');
      assert.match(status.text, /wrong passphrase, or the backup is damaged/);
      await driver.navigate().refresh();
      assert.equal(await didIn(driver), before, 'nothing changed');
      // The right passphrase.
      await driver.findElement(By.id('backup-in')).sendKeys(backup);
      await driver.findElement(By.id('import-pass')).sendKeys(PASSPHRASE);
      await driver.findElement(By.id('import')).click();
      status = await statusOf(driver, 'import-status');
      assert.ok(!status.error, status.text);
      assert.match(status.text, new RegExp(`Restored ${did}`));
    } finally {
      await driver.quit();
    }

    // The same profile, started again: it is now the backed-up identity.
    ({ driver, base } = await h.launchSeleniumFirefox(ext, { profile, uuid }));
    try {
      await driver.get(`${base}options.html`);
      await driver.wait(until.elementLocated(By.id('did')), 10_000);
      assert.equal(await didIn(driver), did);
    } finally {
      await driver.quit();
    }
  });
});
