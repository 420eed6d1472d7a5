// Per-origin permissions (EIP-2255 style): a page asks, the user answers in the extension's
// prompt window, grants show in the popup and can be revoked there.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as h from './lib/harness.js';

after(() => h.cleanup());

/** Start a permission request in the page without awaiting it. */
function ask(page) {
  return page.evaluate(() => {
    window.__ask = window.disot.request({ method: 'disot_requestPermissions', params: [{ cas: {} }] })
      .then((result) => ({ result }), (e) => ({ error: { code: e.code, message: e.message } }));
  }).then(() => () => page.evaluate(() => window.__ask));
}

const promptPage = h.promptPage;
const promptShown = h.promptShown;

describe('chromium permissions', { concurrency: 1 }, () => {
  let browser, page, site;

  before(async () => {
    site = await h.startPageServer();
    browser = await h.Browser.launch('chromium', h.prepareExtension('chrome', []), h.tempDir('profile-perm'));
    page = await browser.open(`${site.url}/demo.html`);
  });

  test('a page starts with no permissions, and is not told who the peer is', async () => {
    assert.deepEqual((await h.pageRequest(page, { method: 'disot_getPermissions' })).result, []);
    const status = (await h.pageRequest(page, { method: 'disot_status' })).result;
    assert.deepEqual([status.did, status.peerId], [null, null], 'no DID for a site the user has not granted anything');
    assert.equal(typeof status.connections, 'number');
    // Nor is the extension's frame put in the page, whose address names this installation.
    const tried = await h.pageRequest(page, { method: 'cas_list' });
    assert.equal(tried.error?.code, 4100, JSON.stringify(tried));
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await page.evaluate(() => document.querySelectorAll('iframe').length), 0);
  });

  test('rejecting in the prompt gives 4001, and a second prompt while one waits gives -32002', async () => {
    const answer = await ask(page);
    const prompt = await promptPage(browser);
    assert.equal(await prompt.$eval('#origin', (e) => e.textContent), site.url);
    assert.equal(await prompt.$eval('#insecure', (e) => e.hidden), true, 'a site on this computer is secure');
    assert.deepEqual(await prompt.$$eval('#permissions li', (l) => l.map((e) => e.dataset.permission)), ['cas']);
    const second = await h.pageRequest(page, { method: 'disot_requestPermissions', params: [{ cas: {} }] });
    assert.equal(second.error.code, -32002);
    await prompt.click('#reject');
    assert.equal((await answer()).error.code, 4001);
    assert.deepEqual((await h.pageRequest(page, { method: 'disot_getPermissions' })).result, []);
  });

  test('the prompt\'s answers do nothing for a moment after it shows (a click aimed where it opens answers nothing)', async () => {
    // A click the moment the request shows, while the buttons are still disabled, does
    // nothing. (A machine too slow to click within that moment gets another prompt.)
    let tested = false;
    for (let attempt = 0; attempt < 3 && !tested; attempt++) {
      const answer = await ask(page);
      const prompt = await promptShown(browser);
      // (A disabled button fires no click: a listener of its own tells whether this one
      // counted.)
      await prompt.evaluate(() => {
        window.__hit = false;
        document.getElementById('reject').addEventListener('click', () => { window.__hit = true; });
      });
      await prompt.click('#reject');
      const hit = await prompt.evaluate(() => window.__hit).catch(() => true); // (an answered prompt may have closed)
      if (hit) {
        // Enabled before the click: not what this tests.
        assert.equal((await answer()).error.code, 4001, 'clicked once enabled: answered');
        continue;
      }
      tested = true;
      const early = await Promise.race([answer(), new Promise((r) => setTimeout(() => r('waiting'), 300))]);
      assert.equal(early, 'waiting', 'the early click answered nothing');
      // A moment later the buttons work.
      await prompt.waitForFunction(() => !document.getElementById('reject').disabled, { timeout: 5_000 });
      await prompt.click('#reject');
      assert.equal((await answer()).error.code, 4001);
    }
    assert.ok(tested, 'the prompt\'s buttons were disabled when it showed');
  });

  test('closing the prompt window without answering is a rejection', async () => {
    const answer = await ask(page);
    const prompt = await promptPage(browser);
    await prompt.close();
    assert.equal((await answer()).error.code, 4001);
  });

  test('requests from several sites wait for one prompt window, each in turn, and the prompt says how many wait', async () => {
    const otherSite = await h.startPageServer();
    const pages = [page, await browser.open(`${otherSite.url}/demo.html`),
      await browser.open(`${site.url.replace('127.0.0.1', 'localhost')}/demo.html`)];
    const origins = [site.url, otherSite.url, site.url.replace('127.0.0.1', 'localhost')];
    const answers = [await ask(pages[0])];
    const first = await promptPage(browser);
    // (One after the other: two tabs' requests reach the peer in either order.)
    answers.push(await ask(pages[1]));
    await first.waitForFunction(() => document.getElementById('waiting').textContent.startsWith('1 more request waits'), { timeout: 10_000 });
    answers.push(await ask(pages[2]));
    await first.waitForFunction(() => document.getElementById('waiting').textContent.startsWith('2 more requests wait'), { timeout: 10_000 });
    const prompts = () => browser.browser.targets().filter((t) => t.url().includes('/prompt.html')).length;
    await new Promise((r) => setTimeout(r, 1000)); // (time for a wrong second window to open)
    assert.equal(prompts(), 1, 'one prompt window for three requests');
    // Closed unanswered: a no for the first site; the next site's request opens.
    await first.close();
    assert.equal((await answers[0]()).error.code, 4001);
    const second = await promptPage(browser);
    assert.equal(await second.$eval('#origin', (e) => e.textContent), origins[1]);
    assert.equal(await second.$eval('#waiting', (e) => e.textContent), '1 more request waits: it opens when this one is answered or closed.');
    assert.equal(prompts(), 1);
    await second.click('#approve');
    assert.deepEqual((await answers[1]()).result.map((g) => [g.parentCapability, g.invoker]), [['cas', origins[1]]]);
    const third = await promptPage(browser);
    assert.equal(await third.$eval('#origin', (e) => e.textContent), origins[2]);
    assert.equal(await third.$eval('#waiting', (e) => e.hidden), true, 'none waits after the last');
    await third.click('#reject');
    assert.equal((await answers[2]()).error.code, 4001);
    for (const i of [0, 2]) {
      assert.deepEqual((await h.pageRequest(pages[i], { method: 'disot_getPermissions' })).result, [], `nothing for ${origins[i]}`);
    }
    // (The next test starts with no grants.)
    const popup = await browser.browser.newPage();
    await popup.goto(`${browser.extensionBase}popup.html`);
    await h.ui(popup, 'permissions_revoke', { origin: origins[1] });
    await Promise.all([popup, ...pages.slice(1)].map((p) => p.close()));
  });

  test('blocking every site under a domain from its prompt turns its sites down without asking, until the popup unblocks it', async () => {
    // Subdomains of localhost reach this machine's page server; 127.0.0.1 is another site.
    const under = (sub) => site.url.replace('127.0.0.1', `${sub}.localhost`);
    const [a, b, other] = [await browser.open(`${under('a')}/demo.html`), await browser.open(`${under('b')}/demo.html`), page];
    const answers = [await ask(a)];
    const prompt = await promptPage(browser);
    answers.push(await ask(b), await ask(other));
    await prompt.waitForFunction(() => document.getElementById('waiting').textContent.startsWith('2 more requests wait'), { timeout: 10_000 });
    assert.deepEqual(await prompt.$$eval('#block-scope option', (o) => o.map((e) => [e.value, e.textContent])),
      [['site', 'this site'], ['domain', 'every site under localhost']]);
    assert.deepEqual(await prompt.$eval('#origin', (e) => [e.textContent, e.querySelector('b')?.textContent]), [under('a'), 'localhost'], 'the domain set apart');
    await prompt.select('#block-scope', 'domain');
    await prompt.click('#block');
    for (const [i, answer] of answers.slice(0, 2).entries()) {
      const { error } = await answer();
      assert.equal(error?.code, 4001, `request ${i} turned down`);
    }
    // b's request waited for a's prompt: it was turned down with it, and gets no window; the
    // other site's request is next.
    const next = await promptPage(browser);
    assert.equal(await next.$eval('#origin', (e) => e.textContent), site.url);
    assert.deepEqual(await next.$$eval('#block-scope option', (o) => o.map((e) => e.value)), ['site'], 'an IP address has no domain to block');
    await next.click('#reject');
    assert.equal((await answers[2]()).error.code, 4001);
    // From now on a site under localhost, even one that never asked, is turned down at once.
    const c = await browser.open(`${under('c')}/demo.html`);
    for (const p of [a, c]) {
      const blocked = await h.pageRequest(p, { method: 'disot_requestPermissions', params: [{ cas: {} }] });
      assert.equal(blocked.error.code, 4001);
      assert.match(blocked.error.message, /blocked this site from asking/);
    }
    const prompts = () => browser.browser.targets().filter((t) => t.url().includes('/prompt.html')).length;
    assert.equal(prompts(), 0, 'no prompt window for a blocked site');
    // The popup lists the domain and unblocks it.
    const popup = await browser.browser.newPage();
    await popup.goto(`${browser.extensionBase}popup.html`);
    const row = await popup.waitForSelector('#blocked li[data-blocked="localhost"]');
    assert.match(await row.evaluate((e) => e.textContent), /^every site under localhost/);
    await row.$eval('button', (e) => e.click());
    await popup.waitForFunction(() => document.getElementById('blocked').hidden, { timeout: 10_000 });
    assert.deepEqual(await h.ui(popup, 'permissions_blocked'), []);
    const again = await ask(c);
    await (await promptPage(browser)).click('#reject');
    assert.equal((await again()).error.code, 4001);
    await Promise.all([popup, a, b, c].map((p) => p.close()));
  });

  test('approving grants the permission to this origin only, and the popup can revoke it', async () => {
    const answer = await ask(page);
    const prompt = await promptPage(browser);
    await prompt.click('#approve');
    const { result } = await answer();
    assert.equal(result.length, 1);
    assert.equal(result[0].parentCapability, 'cas');
    assert.equal(result[0].invoker, site.url);
    assert.deepEqual((await h.pageRequest(page, { method: 'disot_getPermissions' })).result, result);
    // Asking again for what is granted answers at once, without a prompt.
    assert.deepEqual((await h.pageRequest(page, { method: 'disot_requestPermissions', params: ['cas'] })).result, result);
    // A granted origin is told who the peer is (the popup shows the same DID).
    const status = (await h.pageRequest(page, { method: 'disot_status' })).result;
    assert.match(status.did, /^did:key:z6Mk/);
    assert.equal(typeof status.peerId, 'string');
    // Granted, the page gets the extension's frame at once, for content.
    assert.deepEqual((await h.pageRequest(page, { method: 'cas_list' })).result, []);
    await h.waitFor(() => page.evaluate(() => [...document.querySelectorAll('iframe')].some((f) => f.src.endsWith('/frame.html'))), { timeout: 3_000, what: 'the content frame' });

    // Another origin (localhost instead of 127.0.0.1) has nothing.
    const other = await browser.open(`${site.url.replace('127.0.0.1', 'localhost')}/demo.html`);
    assert.deepEqual((await h.pageRequest(other, { method: 'disot_getPermissions' })).result, []);
    assert.equal((await h.pageRequest(other, { method: 'disot_status' })).result.did, null, 'nor is it told the DID');

    const popup = await browser.browser.newPage();
    await popup.goto(`${browser.extensionBase}popup.html`);
    await popup.waitForSelector(`#grants li[data-origin="${site.url}"] button.revoke`);
    await h.screenshot(popup, 'popup-grants-chromium.png');
    await popup.click(`#grants li[data-origin="${site.url}"] button.revoke`);
    await h.waitFor(async () => (await h.pageRequest(page, { method: 'disot_getPermissions' })).result.length === 0,
      { what: 'the revocation to take effect' });
    await popup.waitForSelector('#grants li.none');
    await popup.waitForFunction(() => document.getElementById('did').textContent.startsWith('did:key:'));
    assert.equal(await popup.$eval('#did', (e) => e.textContent), status.did, 'the DID the popup shows');
    // Revoked: the page is not told any more.
    assert.equal((await h.pageRequest(page, { method: 'disot_status' })).result.did, null);
  });

  test('revoking a site in the popup turns down what it waits for the user to answer: its open prompt can no longer be approved', async () => {
    const granted = await ask(page);
    await (await promptPage(browser)).click('#approve');
    assert.equal((await granted()).result.length, 1);
    const signGrant = await h.startInPage(page, { method: 'disot_requestPermissions', params: [{ sign: {} }] });
    await (await promptPage(browser)).click('#approve');
    assert.ok((await signGrant()).result.some((p) => p.parentCapability === 'sign'));
    const signing = await h.startInPage(page, { method: 'disot_sign', params: { contentHash: `sha256:${'ab'.repeat(32)}`, type: 'document' } });
    const prompt = await promptPage(browser);
    const popup = await browser.browser.newPage();
    await popup.goto(`${browser.extensionBase}popup.html`);
    await popup.waitForSelector(`#grants li[data-origin="${site.url}"] button.revoke`);
    await popup.click(`#grants li[data-origin="${site.url}"] button.revoke`);
    const answer = await signing();
    assert.equal(answer.error?.code, 4001, `turned down: ${JSON.stringify(answer)}`);
    await prompt.waitForFunction(() => !document.getElementById('error').hidden && document.getElementById('approve').disabled, { timeout: 10_000 });
    assert.match(await prompt.$eval('#error', (e) => e.textContent), /no longer waiting/);
    await popup.close();
  });

  test('grants survive a browser restart', async () => {
    const answer = await ask(page);
    await (await promptPage(browser)).click('#approve');
    assert.equal((await answer()).result.length, 1);
    const ext = browser.extDir;
    const profile = browser.profileDir;
    await browser.close();
    browser = await h.Browser.launch('chromium', ext, profile);
    page = await browser.open(`${site.url}/demo.html`);
    assert.equal((await h.pageRequest(page, { method: 'disot_getPermissions' })).result[0].parentCapability, 'cas');
  });

  after(() => browser?.close());
});

// Which site asks, as the prompt shows it: its registrable domain (the part no one else can
// have) set apart, and a warning for a plain-HTTP site that is not on this computer (anyone on
// the network between could have made the request). The browsers resolve the test's name to
// this computer: no traffic leaves it.
const AWAY = 'shop.example.test';

describe('chromium prompt: which site asks', () => {
  test('a plain-HTTP site away from this computer is flagged not secure, its registrable domain set apart', async () => {
    const site = await h.startPageServer();
    const origin = site.url.replace('127.0.0.1', AWAY);
    const browser = await h.Browser.launch('chromium', h.prepareExtension('chrome', []), h.tempDir('profile-perm-away'),
      { chromiumArgs: [`--host-resolver-rules=MAP ${AWAY} 127.0.0.1`] });
    try {
      const page = await browser.open(`${origin}/demo.html`);
      const answer = await ask(page);
      const prompt = await promptPage(browser);
      assert.deepEqual(await prompt.$eval('#origin', (e) => [e.textContent, e.querySelector('b')?.textContent]), [origin, 'example.test']);
      assert.equal(await prompt.$eval('#insecure', (e) => e.hidden), false);
      assert.match(await prompt.$eval('#insecure', (e) => e.textContent), /plain HTTP/);
      await prompt.click('#reject');
      assert.equal((await answer()).error.code, 4001);
    } finally {
      await browser.close();
    }
  });
});

describe('firefox prompt: which site asks', () => {
  test('a plain-HTTP site away from this computer is flagged not secure, its registrable domain set apart', async () => {
    const { By } = await import('selenium-webdriver');
    const site = await h.startPageServer();
    const origin = site.url.replace('127.0.0.1', AWAY);
    await h.withSeleniumFirefox(h.prepareExtension('firefox', []), async (driver) => {
      const main = await driver.getWindowHandle();
      await driver.get(`${origin}/demo.html`);
      await driver.wait(() => driver.executeScript('return !!window.disot'), 10_000);
      await driver.executeScript("window.__ask = window.disot.request({ method: 'disot_requestPermissions', params: [{ cas: {} }] }).then((result) => ({ result }), (e) => ({ error: { code: e.code } }));");
      await h.toSeleniumPrompt(driver, main);
      assert.equal(await driver.findElement(By.id('origin')).getText(), origin);
      assert.equal(await driver.findElement(By.css('#origin b')).getText(), 'example.test');
      assert.equal(await driver.findElement(By.id('insecure')).isDisplayed(), true);
      await driver.findElement(By.id('reject')).click();
      await driver.switchTo().window(main);
      assert.deepEqual(await driver.executeAsyncScript('const done = arguments[0]; window.__ask.then(done);'), { error: { code: 4001 } });
    }, { prefs: { 'network.dns.localDomains': AWAY } });
  });
});

// Firefox hides extension windows from WebDriver BiDi, so this side runs on Selenium and
// geckodriver, which can switch to the prompt window. (Grants surviving a restart are covered
// for Firefox by the content-store test, which relaunches on the same profile.)
describe('firefox permissions', { concurrency: 1 }, () => {
  test('reject, close, approve, other origin, revoke in the popup', async () => {
    const { By, until } = await import('selenium-webdriver');
    const site = await h.startPageServer();
    await h.withSeleniumFirefox(h.prepareExtension('firefox', []), async (driver, base) => {
      const call = (args) => driver.executeAsyncScript(
        'const done = arguments[arguments.length - 1]; window.disot.request(arguments[0]).then((result) => done({ result }), (e) => done({ error: { code: e.code } }));',
        args);
      const ask = () => driver.executeScript(
        "window.__ask = window.disot.request({ method: 'disot_requestPermissions', params: [{ cas: {} }] }).then((result) => ({ result }), (e) => ({ error: { code: e.code } }));");
      const answer = () => driver.executeAsyncScript('const done = arguments[0]; window.__ask.then(done);');
      const main = await driver.getWindowHandle();
      const toPrompt = async () => {
        await h.toSeleniumPrompt(driver, main);
        assert.equal(await driver.findElement(By.id('origin')).getText(), site.url);
        assert.equal(await driver.findElement(By.id('insecure')).isDisplayed(), false, 'a site on this computer is secure');
      };

      await driver.get(`${site.url}/demo.html`);
      await driver.wait(() => driver.executeScript('return !!window.disot'), 10_000);
      assert.deepEqual(await call({ method: 'disot_getPermissions' }), { result: [] });

      await ask();
      await toPrompt();
      await driver.findElement(By.id('reject')).click();
      await driver.switchTo().window(main);
      assert.deepEqual(await answer(), { error: { code: 4001 } });

      await ask();
      await toPrompt();
      await driver.close(); // the prompt window, unanswered
      await driver.switchTo().window(main);
      assert.deepEqual(await answer(), { error: { code: 4001 } });

      await ask();
      await toPrompt();
      await driver.findElement(By.id('approve')).click();
      await driver.switchTo().window(main);
      const granted = await answer();
      assert.equal(granted.result[0].parentCapability, 'cas');
      assert.equal(granted.result[0].invoker, site.url);
      assert.deepEqual(await call({ method: 'disot_getPermissions' }), granted);

      // A sandboxed frame of the site has no origin of its own, and so none of the site's
      // grants: its requests are turned down at once (they went unanswered).
      await driver.executeScript("const f = document.createElement('iframe'); f.id = 'sandboxed'; f.sandbox = 'allow-scripts'; f.src = '/demo.html'; document.body.append(f);");
      await driver.switchTo().frame(await driver.wait(until.elementLocated(By.id('sandboxed')), 10_000));
      await driver.wait(() => driver.executeScript('return !!window.disot && window.origin === "null"'), 10_000, 'the sandboxed frame\'s provider');
      const refused = await driver.executeAsyncScript('const done = arguments[0]; window.disot.request({ method: "disot_getPermissions" }).then((result) => done({ result }), (e) => done({ error: { code: e.code, message: e.message } }));');
      assert.equal(refused.error?.code, 4100, JSON.stringify(refused));
      assert.match(refused.error.message, /no origin of its own/);
      // (Content calls too, without first waiting for a content frame that cannot come.)
      const has = await driver.executeAsyncScript('const done = arguments[0]; const t = performance.now(); window.disot.cas.has("bafkqaaa").then(() => done({ ms: performance.now() - t }), (e) => done({ code: e.code, ms: performance.now() - t }));');
      assert.equal(has.code, 4100, JSON.stringify(has));
      assert.ok(has.ms < 5_000, `answered, not after waiting for a frame: ${JSON.stringify(has)}`);
      await driver.switchTo().defaultContent();
      await driver.executeScript("document.getElementById('sandboxed').remove();");

      await driver.get(`${site.url.replace('127.0.0.1', 'localhost')}/demo.html`);
      await driver.wait(() => driver.executeScript('return !!window.disot'), 10_000);
      assert.deepEqual(await call({ method: 'disot_getPermissions' }), { result: [] }, 'another origin has nothing');

      // Two sites ask at once: one prompt window, which says that one more waits; closing it
      // (a no) opens the other's.
      const otherSite = await h.startPageServer();
      await ask();
      await driver.wait(async () => (await driver.getAllWindowHandles()).length === 2, 15_000, 'a prompt window');
      const firstPrompt = (await driver.getAllWindowHandles()).find((w) => w !== main);
      const tab = (await driver.switchTo().newWindow('tab'), await driver.getWindowHandle());
      await driver.get(`${otherSite.url}/demo.html`);
      await driver.wait(() => driver.executeScript('return !!window.disot'), 10_000);
      await ask();
      await driver.switchTo().window(firstPrompt);
      await driver.wait(async () => /\/prompt\.html\?id=\d+$/.test(await driver.getCurrentUrl()), 15_000, 'the prompt page');
      await driver.wait(async () => (await driver.findElement(By.id('waiting')).getText()).startsWith('1 more request waits'), 15_000, 'the prompt to say one more waits');
      assert.equal(await driver.findElement(By.id('origin')).getText(), site.url.replace('127.0.0.1', 'localhost'));
      assert.equal((await driver.getAllWindowHandles()).length, 3, 'the page, its tab and one prompt window');
      await driver.close();
      await driver.wait(async () => (await driver.getAllWindowHandles()).length === 3, 15_000, 'the next prompt window');
      await driver.switchTo().window((await driver.getAllWindowHandles()).find((w) => w !== main && w !== tab));
      await driver.wait(async () => /\/prompt\.html\?id=\d+$/.test(await driver.getCurrentUrl()), 15_000, 'the next prompt page');
      await driver.wait(until.elementIsEnabled(await driver.wait(until.elementLocated(By.id('reject')), 15_000)), 15_000);
      assert.equal(await driver.findElement(By.id('origin')).getText(), otherSite.url);
      await driver.findElement(By.id('reject')).click();
      await driver.switchTo().window(tab);
      assert.deepEqual(await answer(), { error: { code: 4001 } });
      await driver.close();
      await driver.switchTo().window(main);
      assert.deepEqual(await answer(), { error: { code: 4001 } }, 'the closed prompt was a no');

      await driver.get(`${base}popup.html`);
      const revoke = await driver.wait(until.elementLocated(By.css(`#grants li[data-origin="${site.url}"] button.revoke`)), 15_000);
      await revoke.click();
      await driver.wait(until.elementLocated(By.css('#grants li.none')), 15_000);

      await driver.get(`${site.url}/demo.html`);
      await driver.wait(() => driver.executeScript('return !!window.disot'), 10_000);
      assert.deepEqual(await call({ method: 'disot_getPermissions' }), { result: [] }, 'revoked');

      // Blocking the site from its prompt: its requests are turned down without a window
      // until the popup unblocks it.
      await ask();
      await toPrompt();
      await driver.findElement(By.id('block')).click();
      await driver.switchTo().window(main);
      assert.deepEqual(await answer(), { error: { code: 4001 } });
      await driver.wait(async () => (await driver.getAllWindowHandles()).length === 1, 15_000, 'the prompt closed');
      await ask();
      assert.deepEqual(await answer(), { error: { code: 4001 } }, 'blocked: turned down, nobody having answered');
      assert.equal((await driver.getAllWindowHandles()).length, 1, 'no prompt window opened');
      await driver.get(`${base}popup.html`);
      const unblock = await driver.wait(until.elementLocated(By.css(`#blocked li[data-blocked="${site.url}"] button`)), 15_000);
      await unblock.click();
      await driver.wait(async () => !(await driver.findElement(By.id('blocked')).isDisplayed()), 15_000, 'the site unblocked');
      await driver.get(`${site.url}/demo.html`);
      await driver.wait(() => driver.executeScript('return !!window.disot'), 10_000);
      await ask();
      await toPrompt();
      await driver.findElement(By.id('reject')).click();
      await driver.switchTo().window(main);
      assert.deepEqual(await answer(), { error: { code: 4001 } }, 'asked again, and answered');
    });
  });
});
