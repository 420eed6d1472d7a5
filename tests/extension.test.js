// End-to-end tests of the built extension in real headless Chromium and Firefox, against the
// real disot-node on loopback. Run by `scripts/test.sh` (after the build).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.js';

const metrics = {};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// A test build's node panics on a peer's sync message about this document, or on loading it.
const DEBUG_CRASH_DOCUMENT = 'collection-deadbeefdeadbeefdeadbeefdeadbeef';
// Firefox suspends idle MV3 background pages after this long; shortened from 30 s so the
// keep-alive test below proves the mechanism within seconds.
const FIREFOX_IDLE_MS = 8000;
const FIREFOX_PREFS = { 'extensions.background.idle.timeout': FIREFOX_IDLE_MS };

after(async () => {
  fs.writeFileSync(path.join(h.ARTIFACTS, 'metrics.json'), JSON.stringify(metrics, null, 2));
  await h.cleanup();
});

for (const kind of ['chromium', 'firefox']) {
  const dist = kind === 'chromium' ? 'chrome' : 'firefox';
  const launchOpts = kind === 'firefox' ? { firefoxPrefs: FIREFOX_PREFS } : {};

  describe(kind, { concurrency: 1 }, () => {
    let node, site, extDir, profile, browser, page, me;
    // A page is told the peer's DID only once its origin holds a grant. Chromium's page gets
    // one (the test approves the prompt, as a user would); Firefox hides the prompt window
    // from WebDriver BiDi, so its page stays a stranger, is told null, and the peer is the one
    // the node identified (the popup test below checks the DID there).
    const shownDid = () => (kind === 'chromium' ? me.did : null);
    const newFirefoxPeer = (known) => h.waitFor(() => node.events.find((e) => e.event === 'identified'
      && / \(firefox\)$/.test(e.agent) && !known.includes(e.peer))?.peer, { what: 'the node to identify the Firefox peer' });

    before(async () => {
      node = await new h.NativeNode(h.tempDir(`node-${kind}`)).start();
      site = await h.startPageServer();
      extDir = h.prepareExtension(dist, [node.wsAddr, node.webrtcAddr]);
      profile = h.tempDir(`profile-${kind}`);
    });

    after(async () => {
      await browser?.close();
      await node?.stop();
    });

    test('installs, announces the provider, and reports a DID that is its peer key', async () => {
      browser = await h.Browser.launch(kind, extDir, profile, launchOpts);
      page = await browser.open(`${site.url}/demo.html`);
      const found = await h.discoverProvider(page);
      assert.equal(found.info.rdns, 'org.disot.peer');
      assert.equal(found.isGlobal, true, 'the announced provider is window.disot');
      const stranger = await h.status(page);
      assert.deepEqual([stranger.did, stranger.peerId], [null, null], 'a page without a grant is not told who the peer is');
      assert.equal(typeof stranger.connections, 'number');
      if (kind === 'chromium') {
        await h.grantInChromium(browser, page);
        me = await h.status(page);
        assert.match(me.did, /^did:key:z6Mk/);
        assert.ok(h.keyOfDid(me.did).equals(h.keyOfPeerId(me.peerId)), 'did:key and peer id carry the same Ed25519 key');
      } else {
        const peerId = await newFirefoxPeer([]);
        me = { peerId, did: null };
      }
    });

    test('connects to the disot-node, as the node itself reports', async () => {
      const st = await h.waitFor(async () => {
        const s = await h.status(page);
        return s.connections >= 1 && s;
      }, { what: 'the browser peer to connect' });
      metrics[`${kind}_start_to_connected_ms`] = Date.now() - browser.startedAt;
      h.log(`${kind}: browser start to peer connected: ${metrics[`${kind}_start_to_connected_ms`]} ms`);
      if (kind === 'chromium') assert.equal(st.peerId, me.peerId);
      await h.waitFor(() => node.connectedPeers().has(me.peerId), { what: 'the node to see the browser peer' });
      await h.waitFor(() => node.count('reservation', me.peerId) >= 1, { what: 'a relay reservation at the node' });
      const identified = node.events.find((e) => e.event === 'identified' && e.peer === me.peerId);
      assert.match(identified.agent, new RegExp(`^disot-peer/.* \\(${kind}\\)$`));
    });

    test('malformed page requests get typed errors and the peer keeps running', async () => {
      const cases = await page.evaluate(async () => {
        const call = async (args) => {
          try {
            await window.disot.request(args);
            return null;
          } catch (e) {
            return e.code;
          }
        };
        const cyclic = {};
        cyclic.self = cyclic;
        return {
          noArgs: await call(),
          notObject: await call('disot_status'),
          array: await call(['disot_status']),
          methodNotString: await call({ method: 42 }),
          emptyMethod: await call({ method: '' }),
          paramsNotContainer: await call({ method: 'disot_status', params: 'x' }),
          unexpectedParams: await call({ method: 'disot_status', params: [1] }),
          unknownMethod: await call({ method: 'eth_sendTransaction', params: [] }),
          longMethod: await call({ method: 'm'.repeat(10_000) }),
          huge: await call({ method: 'disot_status', params: ['x'.repeat(4 * 1024 * 1024)] }),
          notCloneable: await call({ method: 'disot_status', params: { f: () => 1 } }),
          bigint: await call({ method: 'disot_status', params: { n: 1n } }),
          cyclic: await call({ method: 'disot_status', params: cyclic }),
        };
      });
      assert.deepEqual(cases, {
        noArgs: -32600, notObject: -32600, array: -32600, methodNotString: -32600, emptyMethod: -32600,
        paramsNotContainer: -32600, unexpectedParams: -32602, unknownMethod: 4200, longMethod: -32600,
        huge: -32005, notCloneable: -32600, bigint: -32600, cyclic: -32600,
      });
      // A message forged straight at the content script, bypassing the provider, is answered too.
      const forged = await page.evaluate(() => new Promise((resolve) => {
        window.addEventListener('message', (ev) => {
          if (ev.data?.dir === 'response' && ev.data.id === 'forged') resolve(ev.data.reply);
        });
        window.postMessage({ channel: 'disot-peer', dir: 'request', id: 'forged', request: { method: 7, junk: 'x'.repeat(1000) } }, location.origin);
      }));
      assert.equal(forged.error.code, -32600);
      // Many requests at once are all answered; past an in-flight bound they are refused.
      const many = await page.evaluate(() =>
        Promise.all(Array.from({ length: 200 }, () => window.disot.request({ method: 'disot_status' }))));
      assert.equal(many.length, 200);
      assert.ok(many.every((s) => s.did === shownDid()));
      const flood = await page.evaluate(async () => {
        const all = await Promise.allSettled(Array.from({ length: 2000 }, () => window.disot.request({ method: 'disot_status' })));
        return { ok: all.filter((r) => r.status === 'fulfilled').length, limited: all.filter((r) => r.reason?.code === -32005).length };
      });
      assert.equal(flood.ok + flood.limited, 2000, 'every request got an answer');
      assert.ok(flood.ok >= 256, JSON.stringify(flood));
      // Firefox's go through the content script, which has 256 in flight at most. Chromium's go
      // from the page's content frame to the node (see the next test), which answers each
      // before the frame takes the next: none waits long enough to meet the frame's bound.
      if (kind === 'firefox') assert.ok(flood.limited > 0, JSON.stringify(flood));
      assert.equal((await h.status(page)).did, shownDid(), 'still answering');
      assert.ok(node.connectedPeers().has(me.peerId), 'still connected');
      assert.equal(node.count('disconnected', me.peerId), 0);
    });

    test('page requests go to the node from the page\'s content frame where the browser lets it reach the node, each as its own page', async () => {
      const answers = await page.evaluate(() => Promise.all(Array.from({ length: 20 }, () => window.disot.request({ method: 'disot_status' }))));
      assert.ok(answers.every((s) => s.did === shownDid()));
      if (kind === 'firefox') return; // a frame in a page has no getViews there: the content script's port it is
      const handed = async (p) => {
        const frame = p.frames().find((f) => f.url() === `${browser.extensionBase}frame.html`);
        return Number(await frame?.evaluate(() => document.documentElement.dataset.nodeRequests ?? 0) ?? -1);
      };
      assert.ok(await handed(page) >= 20, `the frame handed the requests to the node (${await handed(page)})`);
      // Another origin's page, without a grant, is told nothing, and gets no frame (whose
      // address names this installation).
      const other = await browser.open(`${site.url.replace('127.0.0.1', 'localhost')}/demo.html`);
      assert.equal((await h.status(other)).did, null, 'the other origin holds no grant');
      await new Promise((r) => setTimeout(r, 500));
      assert.equal((await h.status(other)).did, null);
      assert.equal(await handed(other), -1, 'no frame in a page without a grant');
      await other.close();
      // The page removes its frame: a request sent to it meanwhile fails at once (as on a
      // closed port: it may or may not have been carried out), the next is answered, and soon
      // they go through a new frame.
      const after = await page.evaluate(async () => {
        const ask = async () => {
          const t = performance.now();
          const answer = await window.disot.request({ method: 'disot_status' }).then((st) => st.did, (e) => e.code);
          return { answer, ms: performance.now() - t };
        };
        document.querySelectorAll('iframe').forEach((f) => f.remove());
        const meanwhile = await ask();
        await new Promise((r) => setTimeout(r, 50));
        return { meanwhile, next: await ask() };
      });
      assert.ok([shownDid(), 4900].includes(after.meanwhile.answer), JSON.stringify(after));
      assert.ok(after.meanwhile.ms < 10_000, `not left waiting for the removed frame: ${JSON.stringify(after)}`);
      assert.equal(after.next.answer, shownDid());
      await h.waitFor(async () => (await h.status(page)) && (await handed(page)) > 0, { what: 'requests through a new frame' });
      // A page that replaces its root element takes the frame with it: noticed as well.
      const rooted = await browser.open(`${site.url}/demo.html`);
      assert.equal((await h.status(rooted)).did, shownDid());
      const replaced = await rooted.evaluate(async () => {
        document.documentElement.replaceWith(document.createElement('html'));
        await new Promise((r) => setTimeout(r, 50));
        const t = performance.now();
        const answer = await window.disot.request({ method: 'disot_status' }).then((st) => st.did, (e) => e.code);
        return { answer, ms: performance.now() - t };
      });
      assert.equal(replaced.answer, shownDid(), JSON.stringify(replaced));
      assert.ok(replaced.ms < 10_000, `not left waiting for the frame that went: ${JSON.stringify(replaced)}`);
      await rooted.close();
    });

    if (kind === 'chromium') {
      // Each content frame that starts its store takes some tens of MiB of the node's process.
      // (Firefox runs a frame in its page's process: the page pays for its own.)
      test('a granted site runs at most 8 content stores at once in the node\'s process: one more is refused until one goes', async () => {
        const r = await page.evaluate(async () => {
          const list = (w) => w.disot.cas.list().then(() => 'ok', (e) => `${e.code} ${e.message}`);
          const own = await list(window); // the page's own frame runs its store
          const frames = [];
          for (let i = 0; i < 8; i++) {
            const f = document.createElement('iframe');
            f.src = '/demo.html';
            const loaded = new Promise((res) => f.addEventListener('load', res, { once: true }));
            document.body.append(f);
            await loaded;
            frames.push(f);
          }
          const first = [];
          for (const f of frames) first.push(await list(f.contentWindow));
          frames[0].remove();
          // (Its content frame runs in the extension's process, which hears of the removal a
          // moment later: the refused one asks again until then, as its page's next request would.)
          let again;
          for (const until = performance.now() + 30_000; performance.now() < until;) {
            again = await list(frames[7].contentWindow);
            if (!again.startsWith('-32005')) break;
            await new Promise((r) => setTimeout(r, 100));
          }
          frames.forEach((f) => f.remove());
          return { own, first, again };
        });
        assert.equal(r.own, 'ok');
        assert.deepEqual(r.first.slice(0, 7), Array(7).fill('ok'), JSON.stringify(r));
        assert.match(r.first[7], /^-32005 this site has 8 content frames open, the most it may/);
        assert.equal(r.again, 'ok', 'once one goes, the one refused starts');
      });
    }

    if (kind === 'chromium') {
      test('popup shows the DID and the connected state', async () => {
        const popup = await browser.browser.newPage();
        await popup.setViewport({ width: 400, height: 420 });
        await popup.goto(`${browser.extensionBase}popup.html`);
        await popup.waitForFunction(() => document.getElementById('state').textContent === 'connected', { timeout: 15_000 });
        assert.equal(await popup.$eval('#did', (e) => e.textContent), me.did);
        assert.equal(await popup.$eval('#peer-id', (e) => e.textContent), me.peerId);
        assert.ok(Number(await popup.$eval('#peer-count', (e) => e.textContent)) >= 1);
        await h.screenshot(popup, 'popup-chromium.png');
        await assert.rejects(h.ui(popup, 'debug_crash'), /debug_crash is for test builds/, 'a build without test hooks cannot be crashed');
        await popup.close();
      });

      test('the offscreen peer stays connected while the service worker is stopped, and pages reach it without the worker', async () => {
        const isWorker = (t) => t.type() === 'service_worker' && t.url().startsWith(browser.extensionBase);
        const target = await browser.browser.waitForTarget(isWorker);
        const connectsBefore = node.count('connected', me.peerId);
        await (await target.worker()).close();
        // The worker we closed is gone once its target is (a message may start a new one at
        // once, which is a new target).
        await h.waitFor(() => !browser.browser.targets().includes(target), { what: 'the service worker to stop' });
        await sleep(3000);
        assert.ok(node.connectedPeers().has(me.peerId), 'node still sees the peer with no worker running');
        assert.equal(node.count('disconnected', me.peerId), 0);
        // A page's request goes from its content frame (or over the content script's port)
        // straight to the offscreen document: it is answered with no worker running, and does
        // not start one.
        const st = await h.status(page);
        assert.equal(st.did, me.did);
        assert.ok(st.connections >= 1);
        assert.ok(!browser.browser.targets().some(isWorker), 'the page request went through a service worker');
        // The popup's requests still go through the worker, which wakes for them.
        const popup = await browser.browser.newPage();
        await popup.goto(`${browser.extensionBase}popup.html`);
        await popup.waitForFunction(() => document.getElementById('state').textContent === 'connected', { timeout: 15_000 });
        await popup.close();
        assert.ok(browser.browser.targets().some(isWorker), 'the worker was started again by the popup');
        assert.equal(node.count('connected', me.peerId), connectsBefore, 'no reconnection was needed');
      });
    } else {
      test('popup shows the DID and the connected state', async () => {
        // Selenium runs its own Firefox profile, so this is a second peer with its own DID.
        const seen = await h.withFirefoxExtensionPage(extDir, 'popup.html', async (driver) => {
          const { By, until } = await import('selenium-webdriver');
          await driver.manage().window().setRect({ width: 420, height: 460 });
          await driver.wait(until.elementTextIs(driver.findElement(By.id('state')), 'connected'), 30_000);
          const did = await driver.findElement(By.id('did')).getText();
          const peerId = await driver.findElement(By.id('peer-id')).getText();
          fs.writeFileSync(path.join(h.ARTIFACTS, 'popup-firefox.png'), await driver.takeScreenshot(), 'base64');
          return { did, peerId };
        });
        assert.ok(h.keyOfDid(seen.did).equals(h.keyOfPeerId(seen.peerId)));
        assert.ok(node.events.some((e) => e.event === 'connected' && e.peer === seen.peerId),
          'the popup\'s peer is the one the node saw');
      });

      test('the background page is not suspended while the peer is connected', async () => {
        const connectsBefore = node.count('connected', me.peerId);
        // No page may talk to the extension meanwhile (the demo page polls): messages alone
        // would keep the background awake and prove nothing.
        await page.goto('about:blank');
        await sleep(FIREFOX_IDLE_MS * 2.5);
        await page.goto(`${site.url}/demo.html`);
        assert.equal(node.count('disconnected', me.peerId), 0, 'the node never lost the peer');
        assert.equal(node.count('connected', me.peerId), connectsBefore);
        assert.equal((await h.status(page)).did, shownDid());
      });
    }

    test('reconnects by itself when the node goes down and comes back', async () => {
      const t0 = Date.now();
      await node.stop();
      await h.waitFor(async () => (await h.status(page)).connections === 0, { what: 'the browser to notice the node is gone' });
      h.log(`${kind}: browser noticed the node was gone after ${Date.now() - t0} ms`);
      await sleep(1500);
      await node.start(); // same data dir and ports: same addresses
      const t1 = Date.now();
      await h.waitFor(() => node.connectedPeers().has(me.peerId), { timeout: 40_000, what: 'the node to see the peer again' });
      metrics[`${kind}_reconnect_after_node_restart_ms`] = Date.now() - t1;
      h.log(`${kind}: reconnected ${Date.now() - t1} ms after the node came back`);
      await h.waitFor(() => node.count('reservation', me.peerId) >= 1, { what: 'a new relay reservation' });
      await h.waitFor(async () => (await h.status(page)).connections >= 1, { what: 'the browser to report the connection' });
    });

    test('the DID survives a browser restart and differs between profiles', async () => {
      await browser.close();
      browser = await h.Browser.launch(kind, extDir, profile, { ...launchOpts, uuid: browser.uuid });
      page = await browser.open(`${site.url}/demo.html`);
      assert.equal((await h.status(page)).did, shownDid(), 'same profile, same DID (and the grant kept)');
      await h.waitFor(() => node.count('connected', me.peerId) >= 1, { what: 'the restarted browser to reconnect' });
      await browser.close();

      const known = node.events.filter((e) => e.event === 'identified').map((e) => e.peer);
      browser = await h.Browser.launch(kind, extDir, h.tempDir(`profile2-${kind}`), launchOpts);
      page = await browser.open(`${site.url}/demo.html`);
      if (kind === 'chromium') {
        assert.equal((await h.status(page)).did, null, 'a new profile has granted nothing');
        await h.grantInChromium(browser, page);
        const other = await h.status(page);
        assert.notEqual(other.did, me.did, 'another profile, another DID');
        assert.ok(h.keyOfDid(other.did).equals(h.keyOfPeerId(other.peerId)));
      } else {
        assert.notEqual(await newFirefoxPeer(known), me.peerId, 'another profile, another peer key');
      }
    });
  });
}

describe('a crashed peer', () => {
  for (const kind of ['chromium', 'firefox']) {
    test(`${kind}: a panic, or a trap without one, stops the node, and it starts again with its identity and connections, and says why (after too many, the user starts it from the popup)`, async () => {
      const node = await new h.NativeNode(h.tempDir(`node-crash-${kind}`)).start();
      const ext = h.prepareExtension(kind === 'chromium' ? 'chrome' : 'firefox', [node.wsAddr], undefined, { testHooks: true });
      let ui, popupLine, close, browser;
      if (kind === 'chromium') {
        browser = await h.Browser.launch('chromium', ext, h.tempDir('profile-crash'));
        close = () => browser.close();
        const page = await browser.browser.newPage();
        await page.goto(`${browser.extensionBase}options.html`);
        ui = (method, params) => h.ui(page, method, params);
        popupLine = async () => {
          const popup = await browser.browser.newPage();
          await popup.goto(`${browser.extensionBase}popup.html`);
          await popup.waitForSelector('#crash:not([hidden])', { timeout: 15_000 });
          return popup.$eval('#crash', (e) => e.textContent);
        };
      } else {
        const peer = await h.launchSeleniumFirefox(ext);
        close = () => peer.driver.quit();
        ui = (method, params) => h.firefoxUi(peer, method, params);
      }
      try {
        const connected = (crashed) => h.waitFor(async () => {
          try {
            const s = await ui('ui_status');
            return s.connections >= 1 && Boolean(s.lastCrash) === crashed && s;
          } catch {
            return false; // stopped, or starting again
          }
        }, { timeout: 40_000, what: crashed ? 'the node to start again and connect' : 'the node to connect' });
        const before = await connected(false);
        assert.equal(before.lastCrash, null);
        await h.waitFor(() => node.connectedPeers().has(before.peerId), { what: 'the node to see the peer' });
        // Chromium: a page's permission prompt is open when the node crashes.
        const site = await h.startPageServer();
        const page = browser && await browser.open(`${site.url}/demo.html`);
        const ask = () => page.evaluate(() => {
          window.__grant = window.disot.request({ method: 'disot_requestPermissions', params: [{ cas: {} }] })
            .then((r) => r.map((p) => p.parentCapability), (e) => e.code);
        });
        const stale = page && (await ask(), await h.promptPage(browser));
        assert.deepEqual(await ui('debug_crash'), { crashing: true });
        const after = await connected(true);
        assert.ok(after.lastCrash.message.includes(h.ASKED_FOR_CRASH), after.lastCrash.message);
        assert.equal(after.did, before.did, 'the same identity');
        assert.ok(after.startedAt > before.startedAt, 'a node started anew');
        await h.waitFor(() => node.count('connected', before.peerId) >= 2, { what: 'the node to see the peer connect again' });
        if (popupLine) assert.match(await popupLine(), /^The peer stopped after an error at .* and was started again: .*debug_crash/s);
        // A trap without a panic (as running out of memory is) stops it the same way.
        assert.deepEqual(await ui('debug_crash', { how: 'abort' }), { crashing: true });
        const trapped = await h.waitFor(async () => {
          const s = await ui('ui_status').catch(() => null);
          return s?.startedAt > after.startedAt && s.connections >= 1 && s;
        }, { timeout: 40_000, what: 'the node to start again after a trap' });
        assert.match(trapped.lastCrash.message, /^RuntimeError: unreachable/);
        assert.equal(trapped.did, before.did, 'the same identity');
        // So does its stack overflowing (a trap out of bounds of its memory, or the engine's
        // own stack running out, as the frames fall).
        assert.deepEqual(await ui('debug_crash', { how: 'overflow' }), { crashing: true });
        const overflowed = await h.waitFor(async () => {
          const s = await ui('ui_status').catch(() => null);
          return s?.startedAt > trapped.startedAt && s.connections >= 1 && s;
        }, { timeout: 40_000, what: 'the node to start again after its stack overflowed' });
        h.log(`${kind}: the stack overflow came as "${overflowed.lastCrash.message.slice(0, 80)}"`);
        assert.match(overflowed.lastCrash.message, /^(RuntimeError: .*out of bounds|RangeError: Maximum call stack|InternalError: too much recursion)/);
        if (page) {
          // The request the node was working on is answered, not left hanging.
          assert.equal(await page.evaluate(() => window.__grant), 4900);
          // The page asks again, and a new prompt opens. The one left from before the crash
          // cannot answer it: its request id is not the new one's.
          await ask();
          const staleClosed = new Promise((resolve) => stale.once('close', resolve));
          const fresh = await h.promptPage(browser);
          const idOf = (p) => new URL(p.url()).searchParams.get('id');
          assert.notEqual(idOf(fresh), idOf(stale), 'a new id after the restart');
          // The old window finds its request gone, says so and closes by itself.
          const said = await stale.$eval('#error', (e) => e.textContent).catch(() => 'closed already');
          await Promise.race([staleClosed, new Promise((_, reject) => setTimeout(() => reject(new Error(`the stale prompt stayed open (${said})`)), 15_000))]);
          assert.equal((await h.status(page)).did, null, 'nothing was granted meanwhile');
          await fresh.click('#approve');
          assert.deepEqual(await page.evaluate(() => window.__grant), ['cas']);
        }

        // Started again after each of 3 crashes in 10 minutes (the panic, the trap and the
        // overflow above); after a fourth it stays stopped (its connections closed) and says
        // why.
        await ui('debug_crash');
        // (Until the page reloads, requests are answered "stopped after an error": wait past it.)
        const stopped = await h.waitFor(() => ui('ui_status').then(() => false, (e) => /failed to start: it stopped after/.test(e.message) && e.message), { timeout: 30_000, what: 'the node to stay stopped' });
        assert.match(stopped, /disot peer failed to start: it stopped after 4 errors in 10 minutes \(the last: .*debug_crash.*\); start it again from the extension's popup, or restart the browser/s);
        await h.waitFor(() => !node.connectedPeers().has(before.peerId), { what: 'the node to lose the stopped peer' });
        // The user starts it again (Chromium: from the popup, which offers it now); its crashes
        // count from the last one again.
        let popup;
        if (browser) {
          popup = await browser.browser.newPage();
          await popup.goto(`${browser.extensionBase}popup.html`);
          await popup.waitForSelector('#stopped:not([hidden]) #restart', { timeout: 15_000 });
          await popup.click('#restart');
        } else {
          assert.deepEqual(await ui('node_restart'), { restarting: true });
        }
        const restarted = await h.waitFor(async () => {
          const s = await ui('ui_status').catch(() => null);
          return s?.connections >= 1 && s;
        }, { timeout: 40_000, what: 'the node to start again when the user asks' });
        assert.equal(restarted.did, before.did, 'the same identity');
        assert.ok(restarted.lastCrash.message.includes(h.ASKED_FOR_CRASH), 'the last crash is still shown');
        if (popup) await popup.waitForFunction(() => document.getElementById('stopped').hidden, { timeout: 15_000 });
        await h.waitFor(() => node.connectedPeers().has(before.peerId), { what: 'the node to see the peer again' });
        // A running node is not started again: the request is refused.
        await assert.rejects(ui('node_restart'), /the peer is not stopped/);
        if (page) {
          // Change events go on across a crash: a page listening when the node stops hears
          // "restarted" once it is back (its watch asks again every 2 s until then; here the
          // first time is enough), and the changes after it.
          const share = await h.startInPage(page, { method: 'disot_requestPermissions', params: [{ share: {} }] });
          await h.answerPrompt(browser, '#approve');
          assert.ok((await share()).result.some((p) => p.parentCapability === 'share'));
          const heard = (reason) => page.waitForFunction((r) => window.__changes.some((e) => e.reasons.includes(r)), { timeout: 30_000, polling: 200 }, reason)
            .catch(async (e) => { throw new Error(`no "${reason}" event: heard ${await page.evaluate(() => JSON.stringify(window.__changes))}; ${e.message}`); });
          await page.evaluate(() => {
            window.__changes = [];
            window.disot.on('change', (e) => window.__changes.push(e));
          });
          // (Heard: the watch is running when the node crashes.)
          await page.evaluate(() => window.disot.collections.create('before the crash'));
          await heard('collection');
          await page.evaluate(() => { window.__changes = []; });
          assert.deepEqual(await ui('debug_crash'), { crashing: true });
          await h.waitFor(async () => {
            const s = await ui('ui_status').catch(() => null);
            return s?.startedAt > restarted.startedAt && s.connections >= 1;
          }, { timeout: 40_000, what: 'the node to start again after a fifth crash, the user having started it after the fourth' });
          await heard('restarted');
          await page.evaluate(() => window.disot.collections.create('after the crash'));
          await heard('collection');
          assert.deepEqual((await page.evaluate(() => window.disot.collections.list())).map((c) => c.name).sort(), ['after the crash', 'before the crash']);
        }
      } finally {
        await close();
        await node.stop();
      }
    });

    test(`${kind}: a peer whose message made the node crash (a sync message, or a want whose answer awaits) is cut off when it starts again (no second crash), until the user allows it again`, async () => {
      const node = await new h.NativeNode(h.tempDir(`node-blame-${kind}`)).start();
      const hostile = await h.startExamplePeer('hostile-peer', ['0']);
      const ext = h.prepareExtension(kind === 'chromium' ? 'chrome' : 'firefox', [node.wsAddr, hostile.addr], undefined, { testHooks: true });
      let ui, close, browser;
      if (kind === 'chromium') {
        browser = await h.Browser.launch('chromium', ext, h.tempDir('profile-blame'));
        close = () => browser.close();
        const page = await browser.browser.newPage();
        await page.goto(`${browser.extensionBase}options.html`);
        ui = (method, params) => h.ui(page, method, params);
      } else {
        const peer = await h.launchSeleniumFirefox(ext);
        close = () => peer.driver.quit();
        ui = (method, params) => h.firefoxUi(peer, method, params);
      }
      const count = (event, peer) => hostile.events.filter((e) => e.event === event && (!peer || e.peer === peer)).length;
      const status = () => ui('ui_status').catch(() => null);
      try {
        const before = await h.waitFor(async () => {
          const s = await status();
          return s?.peerId && count('connected', s.peerId) > 0 && s;
        }, { timeout: 30_000, what: 'the browser to connect to the hostile peer' });
        assert.equal(before.lastCrash, null);
        const connections = count('connected', before.peerId);
        hostile.send(`sync ${DEBUG_CRASH_DOCUMENT}`);
        const after = await h.waitFor(async () => {
          const s = await status();
          return s?.startedAt > before.startedAt && s;
        }, { timeout: 40_000, what: 'the node to start again after the crash' });
        assert.ok(after.lastCrash.message.includes(`by a sync message about ${DEBUG_CRASH_DOCUMENT}`), after.lastCrash.message);
        const cutOff = (await ui('sync_status')).cutOff;
        assert.deepEqual(cutOff.map((c) => c.peerId), [hostile.peerId], JSON.stringify(cutOff));
        assert.match(cutOff[0].did, /^did:key:z6Mk/);
        assert.match(cutOff[0].reason, /^a message of this peer made Disot Peer stop with an error: .*a crash a test asked for/s);
        // The browser dials it again (a bootstrap peer) and it sends the same: the session is
        // refused unread, and the node runs on.
        await h.waitFor(() => count('connected', before.peerId) > connections, { timeout: 30_000, what: 'the hostile peer connected again' });
        const ended = count('sync-ended');
        hostile.send(`sync ${DEBUG_CRASH_DOCUMENT}`);
        await h.waitFor(() => count('sync-ended') > ended, { what: 'the second session to end' });
        // Bitswap does not answer it either: its want's stream is reset unanswered.
        const resets = count('reset');
        hostile.send('want bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku');
        await h.waitFor(() => count('reset') > resets, { what: 'the want to be refused' });
        await sleep(1000);
        const still = await status();
        assert.equal(still?.startedAt, after.startedAt, 'no second crash');
        assert.equal(still.lastCrash.at, after.lastCrash.at);
        // Allowed again (Chromium: in the popup), it is no longer cut off.
        if (kind === 'chromium') {
          const popup = await browser.browser.newPage();
          await popup.goto(`${browser.extensionBase}popup.html`);
          const row = await popup.waitForSelector(`#cut-off li[data-peer-id="${hostile.peerId}"] button`, { timeout: 15_000 });
          assert.match(await popup.$eval('#cut-off li', (e) => e.textContent), /made Disot Peer stop with an error/);
          await row.click();
          await popup.waitForFunction(() => document.getElementById('cut-off-box').hidden, { timeout: 15_000 });
        } else {
          assert.deepEqual(await ui('sync_peer_allow', { peerId: hostile.peerId }), { peerId: hostile.peerId, allowed: true });
        }
        assert.deepEqual((await ui('sync_status')).cutOff, []);
        // A want whose answering panics after it has waited on something (test builds: the
        // raw block of "debug_crash"): answering runs in many steps, each of them named.
        const crashBlock = 'bafkreifv4mg5ww53ej77mlh3cvcrwd6xrikpiccwkrtzse6zke43s6fssu';
        hostile.send(`want ${crashBlock}`);
        const third = await h.waitFor(async () => {
          const s = await status();
          return s?.startedAt > after.startedAt && s;
        }, { timeout: 40_000, what: 'the node to start again after the want' });
        assert.ok(third.lastCrash.message.includes(`by a want for ${crashBlock}`), third.lastCrash.message);
        assert.deepEqual((await ui('sync_status')).cutOff.map((c) => c.peerId), [hostile.peerId], 'cut off again');
      } finally {
        await close();
        hostile.stop();
        await node.stop();
      }
    });

    if (kind === 'chromium') {
      // (Firefox runs the same node and host code; its side of the crash handling is tested
      // above.)
      test('chromium: a saved document whose loading makes the node trap is set aside when it starts again, its bytes kept, until the user asks for it again, and the next start then loads it', async () => {
        const ext = h.prepareExtension('chrome', [], undefined, { testHooks: true });
        const profile = h.tempDir('profile-set-aside');
        let browser = await h.Browser.launch('chromium', ext, profile);
        // A value in the extension's settings store: read (value undefined) or written (a
        // string as it is, an array as bytes).
        const setting = (page, key, value) => page.evaluate((key, value) => new Promise((resolve, reject) => {
          const open = indexedDB.open('disot-peer');
          open.onerror = () => reject(open.error);
          open.onsuccess = () => {
            const tx = open.result.transaction('settings', value === undefined ? 'readonly' : 'readwrite');
            const store = tx.objectStore('settings');
            const request = value === undefined ? store.get(key)
              : store.put(typeof value === 'string' ? value : new Uint8Array(value), key);
            tx.oncomplete = () => {
              open.result.close();
              resolve(value === undefined && request.result ? [...new Uint8Array(request.result)] : null);
            };
            tx.onerror = () => reject(tx.error);
          };
        }), key, value);
        const start = async () => {
          const page = await browser.browser.newPage();
          await page.goto(`${browser.extensionBase}options.html`);
          const status = await h.waitFor(() => h.ui(page, 'ui_status').catch(() => null), { what: 'the node to start' });
          return { page, status };
        };
        try {
          let { page, status } = await start();
          assert.equal(status.lastCrash, null);
          const { id } = await h.ui(page, 'collection_create', { name: 'kept aside' });
          const key = `sync-doc:${id}`;
          const bytes = await h.waitFor(() => setting(page, key), { what: 'the collection to be saved' });
          // The test build's loader stops on this document at the next start only, its stack
          // overflowing (a trap, and no panic): the module, its stack put back, still says
          // what it was loading.
          await setting(page, 'debug-crash-loading', JSON.stringify({ id, how: 'overflow' }));
          await browser.close();
          browser = await h.Browser.launch('chromium', ext, profile);
          page = await browser.browser.newPage();
          await page.goto(`${browser.extensionBase}options.html`);
          const after = await h.waitFor(async () => {
            const s = await h.ui(page, 'ui_status').catch(() => null);
            return s?.lastCrash && s;
          }, { timeout: 40_000, what: 'the node to crash on loading and start again' });
          assert.match(after.lastCrash.message, /^RuntimeError: .*out of bounds/);
          const { setAside } = await h.ui(page, 'sync_status');
          assert.deepEqual(setAside.map((d) => [d.id, d.openAtNextStart]), [[id, false]]);
          assert.match(setAside[0].reason, /^loading it made Disot Peer stop with an error: RuntimeError: .*out of bounds/);
          assert.deepEqual(await setting(page, key), bytes, 'its saved bytes are kept');
          await assert.rejects(h.ui(page, 'collection_get', { id }), /no such collection/);
          await sleep(1000);
          assert.equal((await h.ui(page, 'ui_status')).startedAt, after.startedAt, 'no second crash');
          const popup = await browser.browser.newPage();
          await popup.goto(`${browser.extensionBase}popup.html`);
          const retry = await popup.waitForSelector(`#cut-off li[data-document="${id}"] button`, { timeout: 15_000 });
          await retry.click();
          // Listed, marked, until the next start.
          await popup.waitForSelector(`#cut-off li[data-document="${id}"][data-reopening="yes"]`, { timeout: 15_000 });
          assert.deepEqual((await h.ui(page, 'sync_status')).setAside.map((d) => [d.id, d.openAtNextStart]), [[id, true]]);
          await browser.close();
          browser = await h.Browser.launch('chromium', ext, profile);
          ({ page, status } = await start());
          const loaded = await h.waitFor(() => h.ui(page, 'collection_get', { id }).catch(() => null), { what: 'the collection to load' });
          assert.equal(loaded.name, 'kept aside');
          assert.deepEqual((await h.ui(page, 'sync_status')).setAside, []);
          await sleep(1000);
          assert.equal((await h.ui(page, 'ui_status')).startedAt, status.startedAt, 'no crash on loading it');
        } finally {
          await browser.close();
        }
      });
    }

    test(`${kind}: a panic or a trap in a page's content frame or one of its workers fails the request it was on with 4900, and the next request has a new frame`, async () => {
      const site = await h.startPageServer();
      const ext = h.prepareExtension(kind === 'chromium' ? 'chrome' : 'firefox', [], undefined, { testHooks: true });
      let run, close;
      if (kind === 'chromium') {
        const browser = await h.Browser.launch('chromium', ext, h.tempDir('profile-frame-crash'));
        close = () => browser.close();
        const page = await browser.open(`${site.url}/demo.html`);
        await h.grantInChromium(browser, page);
        run = (fn) => page.evaluate(fn);
      } else {
        const { driver } = await h.launchSeleniumFirefox(ext);
        close = () => driver.quit();
        await driver.get(`${site.url}/demo.html`);
        await driver.wait(() => driver.executeScript('return !!window.disot'), 10_000);
        await h.grantInSeleniumFirefox(driver);
        run = (fn) => driver.executeAsyncScript(`const done = arguments[0]; (${fn})().then(done, (e) => done({ thrown: String(e) }));`);
      }
      try {
        const r = await run(async () => {
          const before = await window.disot.cas.put(new Uint8Array([1, 2, 3]));
          const frame = () => document.querySelector('iframe[src$="/frame.html"]');
          const stopped = frame();
          // (A test build's frame panics on this request.)
          const crash = await window.disot.cas.stat('debug_crash').then(() => 'answered', (e) => ({ code: e.code, message: e.message }));
          const after = await window.disot.cas.put(new Uint8Array([4, 5, 6]));
          // So does one of its content workers (which hash uploads and read content).
          const workerCrash = await window.disot.cas.stat('debug_crash_worker').then(() => 'answered', (e) => ({ code: e.code, message: e.message }));
          // A trap without a panic (as running out of memory is), in the frame and in a worker.
          const abort = await window.disot.cas.stat('debug_abort').then(() => 'answered', (e) => ({ code: e.code, message: e.message }));
          const workerAbort = await window.disot.cas.stat('debug_abort_worker').then(() => 'answered', (e) => ({ code: e.code, message: e.message }));
          return {
            crash,
            workerCrash,
            abort,
            workerAbort,
            after: [...await window.disot.cas.get(after.cid)],
            before: [...await window.disot.cas.get(before.cid)],
            listed: (await window.disot.cas.list()).length,
            frames: document.querySelectorAll('iframe[src$="/frame.html"]').length,
            replaced: Boolean(stopped) && !stopped.isConnected && frame() !== stopped,
          };
        });
        assert.equal(r.crash?.code, 4900, JSON.stringify(r));
        assert.match(r.crash.message, /the content frame stopped after an error, and starts again: .*debug_crash/s);
        assert.equal(r.workerCrash?.code, 4900, JSON.stringify(r));
        assert.match(r.workerCrash.message, /the content frame stopped after an error, and starts again: content worker: .*debug_crash/s);
        assert.equal(r.abort?.code, 4900, JSON.stringify(r));
        assert.match(r.abort.message, /the content frame stopped after an error, and starts again: RuntimeError: unreachable/s);
        assert.equal(r.workerAbort?.code, 4900, JSON.stringify(r));
        assert.match(r.workerAbort.message, /the content frame stopped after an error, and starts again: content worker: RuntimeError: unreachable/s);
        assert.deepEqual([r.after, r.before, r.listed], [[4, 5, 6], [1, 2, 3], 2], 'puts and gets work again');
        assert.deepEqual([r.frames, r.replaced], [1, true], 'the stopped frame was replaced');
      } finally {
        await close();
      }
    });
  }
});

describe('chromium options page', () => {
  test('setting a bootstrap node in the options page connects to it', async () => {
    const node = await new h.NativeNode(h.tempDir('node-options')).start();
    const ext = h.prepareExtension('chrome', []);
    const browser = await h.Browser.launch('chromium', ext, h.tempDir('profile-options'));
    try {
      const options = await browser.browser.newPage();
      await options.goto(`${browser.extensionBase}options.html`);
      await options.waitForFunction(() => document.getElementById('status').textContent.includes('defaults'));
      assert.equal(node.connectedPeers().size, 0);

      await options.type('#bootstrap', '/ip4/127.0.0.1/tcp/1/ws');
      await options.click('#save');
      await options.waitForFunction(() => document.getElementById('status').className === 'error');
      assert.match(await options.$eval('#status', (e) => e.textContent), /must end with \/p2p/);

      await options.$eval('#bootstrap', (e) => { e.value = ''; });
      await options.type('#bootstrap', node.wsAddr);
      await options.click('#save');
      await options.waitForFunction(() => document.getElementById('status').textContent === 'Saved.');
      await h.waitFor(() => node.connectedPeers().size === 1, { what: 'the node to see the browser' });

      // The saved setting outlives the page and wins over the built-in default.
      await options.reload();
      await options.waitForFunction((addr) => document.getElementById('bootstrap').value === addr, {}, node.wsAddr);
    } finally {
      await browser.close();
      await node.stop();
    }
  });
});

describe('chromium over webrtc-direct', () => {
  test('the peer reaches the node over WebRTC-direct alone and takes a relay reservation', async () => {
    const node = await new h.NativeNode(h.tempDir('node-webrtc')).start();
    const ext = h.prepareExtension('chrome', [node.webrtcAddr]);
    const browser = await h.Browser.launch('chromium', ext, h.tempDir('profile-webrtc'));
    try {
      const connected = await h.waitFor(() => node.events.find((e) => e.event === 'connected'),
        { timeout: 30_000, what: 'a WebRTC-direct connection at the node' });
      // Chromium may report a peer-reflexive ICE address (192.0.2.x) instead of 127.0.0.1.
      assert.match(connected.addr, /^\/ip4\/[\d.]+\/udp\/\d+\/webrtc-direct/);
      await h.waitFor(() => node.count('reservation', connected.peer) >= 1, { what: 'a relay reservation' });
      const ui = await browser.browser.newPage();
      await ui.goto(`${browser.extensionBase}popup.html`);
      const peers = await ui.evaluate(async () => (await (await import('./ui.js')).call('ui_status')).peers);
      assert.equal(peers.length, 1);
      assert.equal(peers[0].peerId, node.peerId);
      assert.deepEqual(peers[0].connections.map((c) => c.transport), ['webrtc-direct']);
    } finally {
      await browser.close();
      await node.stop();
    }
  });
});

describe('chromium and a relay at its limits', () => {
  test('a relay that takes one reservation refuses the second peer, whose popup says why', async () => {
    const node = new h.NativeNode(h.tempDir('node-relay-full'));
    node.args = ['--relay-max-reservations', '1'];
    await node.start();
    const launch = (name) => h.Browser.launch('chromium', h.prepareExtension('chrome', [node.wsAddr]), h.tempDir(`profile-${name}`));
    const first = await launch('relay-first');
    let second;
    try {
      const popups = [await first.open(`${first.extensionBase}popup.html`)];
      const firstId = (await h.ui(popups[0], 'ui_status')).peerId;
      await h.waitFor(() => node.count('reservation', firstId) >= 1, { what: 'the first peer\'s reservation' });
      second = await launch('relay-second');
      popups.push(await second.open(`${second.extensionBase}popup.html`));
      const secondId = (await h.ui(popups[1], 'ui_status')).peerId;
      // (The second asks again every few seconds: each time it is refused.)
      const relay = await h.waitFor(async () => {
        const r = (await h.ui(popups[1], 'ui_status')).relay;
        return r.error && r;
      }, { what: 'the second peer told why it has no reservation', timeout: 30_000 });
      h.log(`the second peer's relay status: ${relay.state}, ${relay.error}`);
      assert.match(relay.error, new RegExp(`^no reservation at the relay ${node.peerId}: .*(limit|refused|denied)`, 'i'));
      await popups[1].waitForFunction(() => /\(no reservation at the relay/.test(document.getElementById('relay').textContent), { timeout: 10_000 });
      assert.equal(node.count('reservation', secondId), 0, 'the node made none for it');
      // Both still reach the node itself.
      assert.ok(node.connectedPeers().has(firstId) && node.connectedPeers().has(secondId));
    } finally {
      await first.close();
      await second?.close();
      await node.stop();
    }
  });
});
