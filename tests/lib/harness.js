// Test harness: the real disot-node, a loopback HTTP server, and the built extension in real
// headless Chromium and Firefox. Everything started here is stopped by PID in `cleanup()`.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import puppeteer from 'puppeteer-core';
import { pageServer } from './serve.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const DIST = path.join(ROOT, 'dist');
export const ARTIFACTS = process.env.DISOT_ARTIFACTS ?? path.join(ROOT, 'artifacts');
const TARGET = process.env.CARGO_TARGET_DIR ?? path.join(os.homedir(), '.cache/disot/target');
export const NODE_BIN = process.env.DISOT_NODE_BIN ?? path.join(TARGET, 'debug/disot-node');
export const CHROMIUM = process.env.DISOT_CHROMIUM ?? '/usr/lib/chromium/chromium';
export const FIREFOX = process.env.DISOT_FIREFOX ?? '/usr/bin/firefox-esr';
export const FIREFOX_EXTENSION_ID = 'peer@disot.org';

fs.mkdirSync(ARTIFACTS, { recursive: true });
const cleanups = [];

/** Register an async cleanup; `cleanup()` runs them all, newest first, even after failures. */
export function onCleanup(fn) {
  cleanups.push(fn);
}

/**
 * The browsers' node logs written in this run: a panic in any of them fails the run, but for
 * the one a test asks for (`debug_crash`, with `testHooks`).
 */
const nodeLogs = new Set();
export const ASKED_FOR_CRASH = 'debug_crash: a crash a test asked for';

export async function cleanup() {
  while (cleanups.length) {
    const fn = cleanups.pop();
    try {
      await fn();
    } catch (e) {
      console.error('cleanup:', e.message);
    }
  }
  const panics = [];
  for (const file of nodeLogs) {
    const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    const lines = text.split('\n');
    // (The message follows "panicked at <place>:" on the same line or the next.)
    const line = lines.find((l, i) => l.includes('panicked at') && !`${l}\n${lines[i + 1] ?? ''}`.includes(ASKED_FOR_CRASH));
    if (line) panics.push(`${path.basename(file)}: ${line.trim().slice(0, 300)}`);
  }
  nodeLogs.clear();
  if (panics.length) throw new Error(`the node panicked:\n${panics.join('\n')}`);
}

export function tempDir(name) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `disot-${name}-`));
  onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function log(...args) {
  console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...args);
}

/** Poll `fn` until it returns a truthy value; its errors count as "not yet". */
export async function waitFor(fn, { timeout = 20_000, interval = 200, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let lastError;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      lastError = e;
    }
    await new Promise((r) => setTimeout(r, interval));
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}${lastError ? `: ${lastError.message}` : ''}`);
}

/** A running disot-node with its parsed JSON events. */
export class NativeNode {
  /** `netns`: run inside that network namespace; `listenIp`: the address to listen on;
   * `args`: more arguments (settable between restarts). */
  constructor(dataDir, { netns, listenIp, args = [] } = {}) {
    this.netns = netns;
    this.args = args;
    this.listenIp = listenIp;
    this.dataDir = dataDir;
    this.events = [];
    this.wsPort = 0;
    this.webrtcPort = 0;
    this.logFile = path.join(ARTIFACTS, `disot-node-${path.basename(dataDir)}.log`);
  }

  async start() {
    this.events = []; // events of this run only; earlier runs are in the log file
    const args = ['--data-dir', this.dataDir, '--ws-port', String(this.wsPort), '--webrtc-port', String(this.webrtcPort), '--json',
      ...(this.listenIp ? ['--listen-ip', this.listenIp] : []), ...this.args];
    this.proc = this.netns
      ? spawn('ip', ['netns', 'exec', this.netns, NODE_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
      : spawn(NODE_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const proc = this.proc;
    const logStream = fs.createWriteStream(this.logFile, { flags: 'a' });
    proc.stderr.pipe(logStream);
    this.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
    createInterface({ input: proc.stdout }).on('line', (line) => {
      logStream.write(line + '\n');
      try {
        this.events.push({ at: Date.now(), ...JSON.parse(line) });
      } catch {
        this.events.push({ at: Date.now(), event: 'unparsed', line });
      }
    });
    onCleanup(() => this.stop());
    const listening = await waitFor(() => {
      const l = this.events.filter((e) => e.event === 'listening').map((e) => e.addr);
      return l.some((a) => a.includes('/ws/')) && l.some((a) => a.includes('/webrtc-direct/')) && l;
    }, { timeout: 30_000, what: 'disot-node to listen' });
    this.peerId = this.events.find((e) => e.event === 'started').peerId;
    this.wsAddr = listening.filter((a) => a.includes('/ws/')).at(-1);
    this.webrtcAddr = listening.filter((a) => a.includes('/webrtc-direct/')).at(-1);
    // Keep the same ports on restart so the browsers' configured addresses stay valid.
    this.wsPort = Number(this.wsAddr.split('/')[4]);
    this.webrtcPort = Number(this.webrtcAddr.split('/')[4]);
    return this;
  }

  /** Stop this node (by its PID only) and wait for it to exit. */
  async stop() {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(timer);
  }

  /** Bytes this node's process has read and written (sockets included), from /proc. */
  ioBytes() {
    const io = fs.readFileSync(`/proc/${this.proc.pid}/io`, 'utf8');
    const field = (name) => Number(new RegExp(`^${name}: (\\d+)`, 'm').exec(io)[1]);
    return field('rchar') + field('wchar');
  }

  /** Peers the node currently has at least one connection to, from its own events. */
  connectedPeers() {
    const open = new Map();
    for (const e of this.events) {
      if (e.event === 'connected') open.set(e.peer, e.connections);
      if (e.event === 'disconnected') {
        if (e.remaining === 0) open.delete(e.peer);
        else open.set(e.peer, e.remaining);
      }
    }
    return new Set(open.keys());
  }

  count(event, peer) {
    return this.events.filter((e) => e.event === event && (!peer || e.peer === peer)).length;
  }
}

/**
 * A browser with the extension and a page of the test site open, granted `cas`, driven the same
 * way whatever the browser: `run(fn, ...args)` runs `fn` in the page and returns its result.
 * Chromium through puppeteer; Firefox through Selenium (its prompt window needs it).
 */
export async function launchPeer(kind, { bootstrap, site, name = kind, profile, firefoxPrefs } = {}) {
  if (kind === 'chromium') {
    const browser = await Browser.launch('chromium', prepareExtension('chrome', bootstrap), profile ?? tempDir(`profile-${name}`));
    const page = await browser.open(`${site.url}/demo.html`);
    await grantInChromium(browser, page);
    return {
      kind, browser, page,
      run: (fn, ...args) => page.evaluate(fn, ...args),
      close: () => browser.close(),
    };
  }
  const { driver, base } = await launchSeleniumFirefox(prepareExtension('firefox', bootstrap), { profile, prefs: firefoxPrefs });
  const quit = () => driver.quit().catch(() => {});
  onCleanup(quit);
  await driver.manage().setTimeouts({ script: 300_000 });
  await driver.get(`${site.url}/demo.html`);
  await driver.wait(() => driver.executeScript('return !!window.disot'), 10_000);
  await grantInSeleniumFirefox(driver);
  return {
    kind, driver, base,
    run: async (fn, ...args) => {
      const r = await driver.executeAsyncScript(
        `const done = arguments[arguments.length - 1];
         (${fn})(...Array.from(arguments).slice(0, -1)).then((v) => done({ v }), (e) => done({ e: { code: e?.code, message: e?.message ?? String(e) } }));`, ...args);
      if (r.e) throw Object.assign(new Error(r.e.message), { code: r.e.code });
      return r.v;
    },
    close: quit,
  };
}

/** Serve tests/pages on a loopback port. */
export async function startPageServer() {
  const server = pageServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  onCleanup(() => {
    server.closeAllConnections();
    return new Promise((r) => server.close(r));
  });
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}

/** A copy of the built extension for `browser` ("chrome" or "firefox") with its bootstrap set. */
export function prepareExtension(browser, bootstrap, dir = tempDir(`ext-${browser}`), { iceServers, testHooks, debugBitswapIdleMs } = {}) {
  fs.cpSync(path.join(DIST, browser), dir, { recursive: true });
  const logLevel = process.env.DISOT_LOG_LEVEL;
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ bootstrap, ...(iceServers ? { iceServers } : {}), ...(logLevel ? { logLevel } : {}), ...(testHooks ? { testHooks } : {}), ...(debugBitswapIdleMs ? { debugBitswapIdleMs } : {}) }));
  return dir;
}

const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic', '--allow-loopback-in-peer-connection',
];

/** A launched browser with the extension installed. */
export class Browser {
  static async launch(kind, extDir, profileDir, { firefoxPrefs = {}, chromiumArgs = [], uuid = randomUUID(), executablePath, loopbackWebRtc = true } = {}) {
    const b = new Browser(kind, extDir, profileDir);
    b.startedAt = Date.now();
    if (kind === 'chromium') {
      b.browser = await puppeteer.launch({
        executablePath: executablePath ?? CHROMIUM, headless: true, pipe: true, userDataDir: profileDir,
        enableExtensions: [extDir],
        // Loopback ICE candidates help on loopback and hurt between namespaces (each has its own).
        args: [...(loopbackWebRtc ? CHROMIUM_ARGS : CHROMIUM_ARGS.filter((a) => a !== '--allow-loopback-in-peer-connection')), ...chromiumArgs],
      });
      const sw = await b.browser.waitForTarget(
        (t) => t.type() === 'service_worker' && t.url().startsWith('chrome-extension://'), { timeout: 20_000 });
      b.extensionId = new URL(sw.url()).host;
      b.extensionBase = `chrome-extension://${b.extensionId}/`;
      // The node's own console (the offscreen document) goes to the artifacts too.
      b.browser.waitForTarget((t) => t.url().endsWith('/offscreen.html'), { timeout: 20_000 })
        .then(async (t) => {
          const cdp = await t.createCDPSession();
          const file = path.join(ARTIFACTS, `chromium-node-${path.basename(profileDir)}.log`);
          nodeLogs.add(file);
          cdp.on('Runtime.consoleAPICalled', (e) => fs.appendFileSync(file,
            `${e.type}: ${e.args.map((a) => a.value ?? a.description ?? '').join(' ')}\n`));
          await cdp.send('Runtime.enable');
        })
        .catch(() => { /* no offscreen document, or the browser closed first */ });
    } else {
      b.uuid = uuid;
      b.browser = await puppeteer.launch({
        browser: 'firefox', executablePath: executablePath ?? FIREFOX, headless: true, userDataDir: profileDir,
        extraPrefsFirefox: {
          'extensions.webextensions.uuids': JSON.stringify({ [FIREFOX_EXTENSION_ID]: uuid }),
          ...firefoxPrefs,
        },
      });
      await b.browser.installExtension(extDir);
      b.extensionBase = `moz-extension://${uuid}/`;
    }
    const pid = b.browser.process()?.pid;
    onCleanup(() => b.close());
    b.pid = pid;
    return b;
  }

  constructor(kind, extDir, profileDir) {
    Object.assign(this, { kind, extDir, profileDir });
  }

  async close() {
    if (!this.browser) return;
    const browser = this.browser;
    this.browser = null;
    try {
      await Promise.race([browser.close(), new Promise((_, rej) => setTimeout(() => rej(new Error('close timed out')), 10_000))]);
    } catch {
      if (this.pid) {
        try { process.kill(this.pid, 'SIGKILL'); } catch { /* already gone */ }
      }
    }
  }

  /** Open a page from the loopback server. */
  async open(url) {
    const page = await this.browser.newPage();
    page.on('console', (m) => fs.appendFileSync(path.join(ARTIFACTS, `${this.kind}-console.log`), `${m.type()}: ${m.text()}\n`));
    await page.goto(url, { waitUntil: 'load' });
    return page;
  }
}

/** From an extension page (puppeteer): a request of the extension's own API; throws its error. */
export function ui(page, method, params) {
  return page.evaluate(async (method, params) => {
    const body = JSON.stringify(params === null ? { method } : { method, params });
    const api = globalThis.browser ?? globalThis.chrome;
    const reply = JSON.parse((await api.runtime.sendMessage({ to: 'background', body })).body);
    if (reply.error) throw new Error(reply.error.message);
    return reply.result;
  }, method, params ?? null);
}

/** Start `request` in the page (puppeteer); the returned function waits for its outcome. */
export async function startInPage(page, request) {
  await page.evaluate((r) => {
    window.__pending = window.disot.request(r).then((result) => ({ result }), (e) => ({ error: { code: e.code, message: e.message } }));
  }, request);
  return () => page.evaluate(() => window.__pending);
}

/**
 * The next approval prompt of a Chromium `browser`, ready to answer. A prompt taken before is
 * never returned again, so one that is still closing after its answer is not mistaken for the
 * next.
 */
const promptsTaken = new WeakSet();
export async function promptPage(browser) {
  const prompt = await promptShown(browser);
  await prompt.waitForFunction(() => !document.getElementById('approve').disabled, { timeout: 15_000 });
  return prompt;
}

/** [`promptPage`], as soon as it shows its request (its buttons may not work yet). */
export async function promptShown(browser) {
  const target = await browser.browser.waitForTarget(
    (t) => t.url().includes('/prompt.html?id=') && !promptsTaken.has(t), { timeout: 15_000 });
  promptsTaken.add(target);
  const prompt = await target.asPage();
  await prompt.waitForFunction(() => document.getElementById('origin').textContent !== '…', { polling: 'mutation', timeout: 15_000 });
  return prompt;
}

/** Chromium: the prompt window that opens next; returns its text, then clicks `button`. */
export async function answerPrompt(browser, button) {
  const prompt = await promptPage(browser);
  const text = await prompt.evaluate(() => document.body.innerText);
  await prompt.click(button);
  return text;
}

/** A test peer from node/examples (e.g. the impostor peer), its JSON-line events collected. */
export async function startExamplePeer(name, args) {
  const proc = spawn(path.join(path.dirname(NODE_BIN), 'examples', name), args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const events = [];
  createInterface({ input: proc.stdout }).on('line', (line) => events.push(JSON.parse(line)));
  onCleanup(() => proc.exitCode === null && proc.signalCode === null && proc.kill('SIGKILL'));
  const listening = await waitFor(() => events.find((e) => e.event === 'listening'), { what: `${name} to listen` });
  // `send`: a command line on its stdin (the peers that take commands say which).
  const send = (line) => proc.stdin.write(`${line}\n`);
  return { addr: listening.addr, peerId: listening.addr.split('/p2p/')[1], did: listening.did, events, send, stop: () => proc.kill('SIGKILL') };
}

/** Find the provider through its announcement, as a page should. */
export function discoverProvider(page) {
  return page.evaluate(() => new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no disot:announceProvider event')), 10_000);
    window.addEventListener('disot:announceProvider', (ev) => {
      clearTimeout(t);
      resolve({ info: ev.detail.info, isGlobal: ev.detail.provider === window.disot });
    }, { once: true });
    window.dispatchEvent(new Event('disot:requestProvider'));
  }));
}

/** Call window.disot.request in the page; returns {result} or {error: {code, message}}. */
export function pageRequest(page, args) {
  return page.evaluate(async (args) => {
    try {
      return { result: await window.disot.request(args) };
    } catch (e) {
      return { error: { code: e.code, message: e.message, name: e.name } };
    }
  }, args);
}

export async function status(page) {
  const r = await pageRequest(page, { method: 'disot_status' });
  if (r.error) throw new Error(`disot_status failed: ${r.error.code} ${r.error.message}`);
  return r.result;
}

// --- independent decoding, so the tests do not trust the code under test ---
const B58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
export function base58Decode(s) {
  let n = 0n;
  for (const c of s) {
    const v = B58.indexOf(c);
    if (v < 0) throw new Error(`not base58: ${c}`);
    n = n * 58n + BigInt(v);
  }
  const bytes = [];
  while (n > 0n) {
    bytes.unshift(Number(n % 256n));
    n /= 256n;
  }
  for (const c of s) {
    if (c !== '1') break;
    bytes.unshift(0);
  }
  return Buffer.from(bytes);
}

export function base58Encode(bytes) {
  let n = 0n;
  for (const b of bytes) n = n * 256n + BigInt(b);
  let out = '';
  while (n > 0n) {
    out = B58[Number(n % 58n)] + out;
    n /= 58n;
  }
  for (const b of bytes) {
    if (b !== 0) break;
    out = `1${out}`;
  }
  return out;
}

/** A did:key of a new Ed25519 key (of no peer: a name to trust). */
export function newDidKey() {
  const { publicKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  return `did:key:z${base58Encode(Buffer.concat([Buffer.from([0xed, 0x01]), raw]))}`;
}

/** The 32 Ed25519 key bytes named by a did:key (multicodec 0xed01, base58btc "z"). */
export function keyOfDid(did) {
  const m = /^did:key:z([1-9A-HJ-NP-Za-km-z]+)$/.exec(did);
  if (!m) throw new Error(`not a base58btc did:key: ${did}`);
  const bytes = base58Decode(m[1]);
  if (bytes[0] !== 0xed || bytes[1] !== 0x01 || bytes.length !== 34) throw new Error(`not an Ed25519 did:key: ${did}`);
  return bytes.subarray(2);
}

/** The 32 Ed25519 key bytes inside a libp2p peer id (identity multihash of the protobuf key). */
export function keyOfPeerId(peerId) {
  const bytes = base58Decode(peerId);
  const prefix = Buffer.from([0x00, 0x24, 0x08, 0x01, 0x12, 0x20]);
  if (bytes.length !== 38 || !bytes.subarray(0, 6).equals(prefix)) throw new Error(`not an Ed25519 peer id: ${peerId}`);
  return bytes.subarray(6);
}

/** Save a page screenshot under the artifacts folder. */
export async function screenshot(page, name) {
  const file = path.join(ARTIFACTS, name);
  await page.screenshot({ path: file });
  return file;
}

/**
 * Firefox refuses to navigate to moz-extension:// pages over WebDriver BiDi, so the popup is
 * opened through Selenium and geckodriver (with --allow-system-access), in its own profile.
 * Returns what `inspect(driver)` returns.
 */
export async function withFirefoxExtensionPage(extDir, pagePath, inspect) {
  return withSeleniumFirefox(extDir, async (driver, base) => {
    await driver.get(`${base}${pagePath}`);
    return inspect(driver);
  });
}

/**
 * A Selenium-driven headless Firefox with the extension installed. With `profile`, Firefox runs
 * on that profile directory in place (so a relaunch finds the same IndexedDB); the extension's
 * UUID is fixed per `uuid` so its storage origin stays the same across relaunches.
 */
export async function launchSeleniumFirefox(extDir, { profile, uuid = randomUUID(), binary = FIREFOX, prefs = {} } = {}) {
  const { Builder } = await import('selenium-webdriver');
  const firefox = await import('selenium-webdriver/firefox.js');
  const geckodriver = process.env.DISOT_GECKODRIVER ?? path.join(os.homedir(), '.cargo/bin/geckodriver');
  const options = new firefox.Options()
    .setBinary(binary)
    .addArguments('-headless', ...(profile ? ['-profile', profile] : []))
    .setPreference('extensions.webextensions.uuids', JSON.stringify({ [FIREFOX_EXTENSION_ID]: uuid }))
    // WebRTC between browsers on loopback (tests only use loopback or their own namespaces).
    .setPreference('media.peerconnection.ice.loopback', true)
    .setPreference('media.peerconnection.ice.obfuscate_host_addresses', false)
    // The extension's console (the node's log) to Firefox's stdout, kept in the artifacts.
    .setPreference('devtools.console.stdout.chrome', true)
    .setPreference('devtools.console.stdout.content', true);
  for (const [k, v] of Object.entries(prefs)) options.setPreference(k, v);
  const logFile = path.join(ARTIFACTS, `firefox-${profile ? path.basename(profile) : uuid.slice(0, 8)}.log`);
  nodeLogs.add(logFile);
  const logFd = fs.openSync(logFile, 'a');
  const service = new firefox.ServiceBuilder(geckodriver).addArguments('--allow-system-access')
    .setStdio(['ignore', logFd, logFd]);
  let driver;
  try {
    driver = await new Builder().forBrowser('firefox').setFirefoxOptions(options).setFirefoxService(service).build();
  } finally {
    fs.closeSync(logFd); // geckodriver and Firefox hold their own copies
  }
  try {
    await driver.installAddon(extDir, true);
  } catch (e) {
    await driver.quit();
    throw e;
  }
  return { driver, base: `moz-extension://${uuid}/`, uuid };
}

/**
 * A request of the extension's own API in a Firefox peer from `launchPeer`, made from an
 * extension tab of its own (opened on first use); the page's tab stays the current one.
 */
export async function firefoxUi(peer, method, params) {
  const { driver } = peer;
  const main = await driver.getWindowHandle();
  if (!peer.uiWindow) {
    await driver.switchTo().newWindow('tab');
    peer.uiWindow = await driver.getWindowHandle();
    await driver.get(`${peer.base}options.html`);
  } else {
    await driver.switchTo().window(peer.uiWindow);
  }
  try {
    const reply = await driver.executeAsyncScript(`
      const [method, params, done] = arguments;
      const body = JSON.stringify(params === null ? { method } : { method, params });
      browser.runtime.sendMessage({ to: 'background', body })
        .then((r) => done(JSON.parse(r.body)), (e) => done({ error: { message: String(e) } }));`, method, params ?? null);
    if (reply.error) throw new Error(reply.error.message);
    return reply.result;
  } finally {
    await driver.switchTo().window(main);
  }
}

/** Run `use(driver, extensionBase)` in a Selenium Firefox, always quitting it afterwards. */
export async function withSeleniumFirefox(extDir, use, options) {
  const { driver, base } = await launchSeleniumFirefox(extDir, options);
  try {
    return await use(driver, base);
  } finally {
    await driver.quit();
  }
}

/** Chromium: ask for `cas` in `page` and approve it in the prompt window, as a user would. */
export async function grantInChromium(browser, page) {
  await page.evaluate(() => {
    window.__grant = window.disot.request({ method: 'disot_requestPermissions', params: [{ cas: {} }] });
  });
  const prompt = await promptPage(browser);
  await prompt.click('#approve');
  return page.evaluate(() => window.__grant);
}

/**
 * Selenium Firefox: switch to the prompt window that opens beside `main` (the only other
 * window), once its request shows and its answers are enabled.
 */
export async function toSeleniumPrompt(driver, main) {
  const { By, until } = await import('selenium-webdriver');
  await driver.wait(async () => (await driver.getAllWindowHandles()).length === 2, 15_000, 'a prompt window');
  await driver.switchTo().window((await driver.getAllWindowHandles()).find((w) => w !== main));
  // The new window may still be on about:blank: wait for the prompt to load.
  await driver.wait(async () => /\/prompt\.html\?id=\d+$/.test(await driver.getCurrentUrl()), 15_000, 'the prompt page');
  await driver.wait(until.elementIsEnabled(await driver.wait(until.elementLocated(By.id('approve')), 15_000)), 15_000);
}

/** Selenium Firefox: ask for `cas` in the current page and approve it in the prompt window. */
export async function grantInSeleniumFirefox(driver) {
  const { By } = await import('selenium-webdriver');
  const main = await driver.getWindowHandle();
  await driver.executeScript("window.__grant = window.disot.request({ method: 'disot_requestPermissions', params: [{ cas: {} }] });");
  await toSeleniumPrompt(driver, main);
  await driver.findElement(By.id('approve')).click();
  await driver.switchTo().window(main);
  return driver.executeAsyncScript('const done = arguments[0]; window.__grant.then(done);');
}

/** In-page: put `mib` MiB of random bytes, get them back; returns what the test checks. */
export async function putAndGetInPage(mib) {
  const size = mib * 1024 * 1024;
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
  const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');
  const progress = { put: [], get: [] };
  const t0 = performance.now();
  const put = await window.disot.cas.put(new Blob([data]), { name: 'random.bin', mime: 'application/octet-stream', onProgress: (n) => progress.put.push(n) });
  const t1 = performance.now();
  const back = await window.disot.cas.get(put.cid, { onProgress: (n) => progress.get.push(n) });
  const t2 = performance.now();
  let same = back.length === data.length;
  for (let i = 0; same && i < size; i++) same = back[i] === data[i];
  const range = await window.disot.cas.get(put.sha256, { offset: 1_000_000, length: 5000 });
  let rangeSame = range.length === 5000;
  for (let i = 0; rangeSame && i < 5000; i++) rangeSame = range[i] === data[1_000_000 + i];
  // The same range as a Blob and as a stream.
  const blob = await window.disot.cas.get(put.cid, { offset: 1_000_000, length: 5000, as: 'blob' });
  const fromBlob = new Uint8Array(await blob.arrayBuffer());
  rangeSame &&= blob.type === 'application/octet-stream' && fromBlob.every((b, i) => b === range[i]);
  // The whole as a Blob: made of the Blobs the store keeps, each checked, their bytes read
  // only here.
  const whole = await window.disot.cas.get(put.cid, { as: 'blob' });
  const blobSame = whole.size === size && whole.type === 'application/octet-stream'
    && hex(await crypto.subtle.digest('SHA-256', await whole.arrayBuffer())) === hex(await crypto.subtle.digest('SHA-256', data));
  const streamed = await new Response(await window.disot.cas.get(put.cid, { offset: 900_000, length: 700_000, as: 'stream' })).arrayBuffer();
  const fromStream = new Uint8Array(streamed);
  rangeSame &&= fromStream.length === 700_000 && fromStream.every((b, i) => b === data[900_000 + i]);
  // Three gets at once, each reading ranges ahead: more requests than the frame takes at once
  // from a page, so some wait their turn in the page rather than fail.
  const MiB = 1024 * 1024;
  const together = await Promise.all([0, 1, 2].map((i) => window.disot.cas.get(put.cid, { offset: i * 7 * MiB, length: 24 * MiB })));
  for (const [i, got] of together.entries()) {
    const want = data.subarray(i * 7 * MiB, i * 7 * MiB + 24 * MiB);
    rangeSame &&= got.length === want.length && hex(await crypto.subtle.digest('SHA-256', got)) === hex(await crypto.subtle.digest('SHA-256', want));
  }
  return {
    put, same, rangeSame, blobSame, progress,
    digest: hex(await crypto.subtle.digest('SHA-256', data)),
    head: hex(data.subarray(0, 64)),
    putMs: t1 - t0, getMs: t2 - t1,
  };
}

/**
 * In-page, with the cas grant: 72 MiB put from a stream of 1.5 MiB chunks and read back. Past
 * a stream's first 16 MiB its pieces go to the content frame as bytes rather than Blobs, in
 * buffers the frame hands back once each is stored; the content is kept up to 64 MiB to be
 * named, then hashed as it comes: the object must still read back whole, and be named by the
 * digest of what was put. Then the same bytes as a Blob, whose size is known from the start
 * (so its content is hashed piece by piece, not kept), as bytes, and as a stream that says
 * its size: the same names.
 */
export async function putPastBlobsInPage() {
  const MiB = 1024 * 1024;
  const size = 72 * MiB;
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
  let at = 0;
  const streamOfData = () => new ReadableStream({
    pull(c) {
      if (at >= size) return c.close();
      c.enqueue(data.slice(at, at + 1.5 * MiB));
      at += 1.5 * MiB;
    },
  });
  const source = streamOfData();
  const hex = async (bytes) => [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))].map((b) => b.toString(16).padStart(2, '0')).join('');
  const put = await window.disot.cas.put(source);
  const back = await window.disot.cas.get(put.cid);
  const want = await hex(data);
  // As a Blob: of the stored Blobs the first 16 MiB, of the rest's bytes made into Blobs.
  const asBlob = await window.disot.cas.get(put.cid, { as: 'blob' });
  const blobSame = asBlob.size === size && (await hex(await asBlob.arrayBuffer())) === want;
  const again = await window.disot.cas.put(new Blob([data]));
  // As bytes, known to be over 64 MiB: every piece goes as bytes, copied into the buffers the
  // frame gave back from the stream's, and the blocks are stored again (over the same keys).
  const bytes = await window.disot.cas.put(data);
  const reread = await window.disot.cas.get(bytes.cid);
  // A stream that says its size: all of it goes as bytes, and progress tells the whole.
  at = 0;
  const totals = new Set();
  const sized = await window.disot.cas.put(streamOfData(), { size, onProgress: (n, total) => totals.add(total) });
  return {
    size: put.size, named: put.sha256 === `sha256:${want}`, same: back.length === size && (await hex(back)) === want, blobSame,
    again: again.cid === put.cid && again.sha256 === put.sha256,
    asBytes: bytes.cid === put.cid && bytes.sha256 === put.sha256 && reread.length === size && (await hex(reread)) === want,
    sized: sized.cid === put.cid && sized.sha256 === put.sha256, totals: [...totals],
  };
}

/**
 * In-page, with the cas grant: the same 3 MiB (and a few bytes) put as a Blob, as a view into
 * a bigger Uint8Array and as a stream of uneven chunks (1 byte to 1.4 MiB) must be one object,
 * and the page's buffer must be left whole (the extension copies, never takes it).
 */
export async function putFormsInPage() {
  const whole = new Uint8Array(4 * 1024 * 1024);
  for (let i = 0; i < whole.length; i += 65536) crypto.getRandomValues(whole.subarray(i, i + 65536));
  const part = whole.subarray(123, 123 + 3 * 1024 * 1024 + 7);
  const sizes = [1, 1000, 300_000, 1_500_000, 7, 65_536, 12_345];
  let at = 0;
  let n = 0;
  const stream = new ReadableStream({
    pull(c) {
      if (at >= part.length) return c.close();
      const k = Math.min(sizes[n++ % sizes.length], part.length - at);
      c.enqueue(part.subarray(at, at + k));
      at += k;
    },
  });
  const blob = await window.disot.cas.put(new Blob([part]));
  const view = await window.disot.cas.put(part);
  const streamed = await window.disot.cas.put(stream);
  const back = await window.disot.cas.get(blob.cid);
  return {
    cids: [blob.cid, view.cid, streamed.cid],
    sizes: [blob.size, view.size, streamed.size],
    chunks: n,
    kept: whole.byteLength === 4 * 1024 * 1024 && part.length === 3 * 1024 * 1024 + 7,
    same: back.length === part.length && back.every((b, i) => b === part[i]),
  };
}

/** Deterministic pseudo-random bytes (xorshift32): the same file in Node and, from this
 * function's source, in a page. */
export function generate(size, seed) {
  const out = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * In-page, with the cas grant: the files `cases` ({size, seed}, made by `generate`, whose
 * source is passed) put through the typed wrapper; and the last of them sent again straight to
 * the content frame in uneven pieces (7 bytes to 4 MiB), as a page may. Their `{cid, sha256}`.
 */
export async function putGeneratedInPage({ cases, generateSource }) {
  const make = (0, eval)(`(${generateSource})`);
  const out = [];
  for (const { size, seed } of cases) {
    const { cid, sha256 } = await window.disot.cas.put(make(size, seed));
    out.push({ cid, sha256 });
  }
  const last = cases.at(-1);
  const bytes = make(last.size, last.seed);
  const iframe = document.querySelector('iframe[src*="-extension://"]');
  const { port1, port2 } = new MessageChannel();
  iframe.contentWindow.postMessage({ channel: 'disot-frame' }, '*', [port2]);
  let id = 0;
  const ask = (msg, transfer = []) => new Promise((resolve, reject) => {
    const mine = ++id;
    port1.onmessage = ({ data }) => {
      if (data.id !== mine) return;
      const body = JSON.parse(data.body);
      if (body.error) reject(new Error(body.error.message));
      else resolve(body.result);
    };
    port1.postMessage({ ...msg, id: mine }, transfer);
  });
  const call = (method, params) => ask({ op: 'request', body: JSON.stringify({ method, params }) });
  try {
    const { handle } = await call('cas_put_start', {});
    const sizes = [3000, 7, 2_500_000, 1 << 20, 4 << 20, 777_777];
    for (let at = 0, n = 0; at < bytes.length; n++) {
      const piece = bytes.slice(at, at + sizes[n % sizes.length]);
      at += piece.length;
      await ask({ op: 'put', handle, data: piece.buffer }, [piece.buffer]);
    }
    const { cid, sha256 } = await call('cas_put_finish', { handle });
    out.push({ cid, sha256 });
  } finally {
    port1.close();
  }
  return out;
}

/**
 * In-page, with the cas grant: bad input through the typed wrapper, through raw requests and
 * straight to the extension's content frame (as a hostile page could); error codes, and what
 * is listed afterwards.
 */
/**
 * In the page: 12 puts at once (more than the store takes of one page at a time), each of
 * other bytes, as a gallery uploading a folder would. Returns each put's CID or error, and
 * the objects listed after.
 */
export async function manyPutsAtOnceInPage() {
  const puts = await Promise.all(Array.from({ length: 12 }, (_, i) => {
    const bytes = new Uint8Array(100_000 + i).map((_, j) => (i * 31 + j) & 255);
    return window.disot.cas.put(i % 2 ? new Blob([bytes]) : bytes).then((r) => r.cid, (e) => `${e.code} ${e.message}`);
  }));
  const listed = (await window.disot.cas.list()).map((o) => o.cid);
  return { puts, listed };
}

export async function badInputInPage() {
  const code = (p) => p.then(() => null, (e) => e.code);
  let pulls = 0;
  const failing = new ReadableStream({
    pull(c) {
      if (pulls++ < 3) c.enqueue(new Uint8Array(400_000));
      else c.error(new Error('the source broke'));
    },
  });
  const out = {
    wrongType: await code(window.disot.cas.put('text')),
    badCid: await code(window.disot.cas.stat('bafy-nope')),
    badHex: await code(window.disot.cas.has('sha256:xyz')),
    tooBig: await code(window.disot.request({ method: 'cas_read', params: { name: 'sha256:' + '0'.repeat(64), length: 1 << 30 } })),
    unknownHandle: await code(window.disot.request({ method: 'cas_put_finish', params: { handle: 999 } })),
    brokenStream: await window.disot.cas.put(failing).then(() => 'stored', (e) => e.message),
    // A size that is not the content's: a stream shorter or longer than it says (found only
    // once pieces have been stored), bytes of another length, a size that is no size.
    shortStream: await code(window.disot.cas.put(new Blob([new Uint8Array(3_000_000)]).stream(), { size: 3_000_001 })),
    longStream: await code(window.disot.cas.put(new Blob([new Uint8Array(3_000_000)]).stream(), { size: 2_500_000 })),
    wrongSize: await code(window.disot.cas.put(new Uint8Array(10), { size: 11 })),
    notASize: await code(window.disot.cas.put(new Uint8Array(10), { size: -1 })),
    badOffset: await code(window.disot.cas.get('sha256:' + '0'.repeat(64), { offset: -1 })),
    badLength: await code(window.disot.cas.get('sha256:' + '0'.repeat(64), { length: 1.5 })),
    list: await window.disot.cas.list(),
  };
  // The same through request(), to the node: 3 bytes where 2 were said, then where 10 were.
  const viaNode = (method, params) => window.disot.request({ method, params });
  const over = await viaNode('cas_put_start', { size: 2 });
  out.nodeOverSize = await code(viaNode('cas_put_chunk', { handle: over.handle, data: 'AAAA' }));
  const under = await viaNode('cas_put_start', { size: 10 });
  await viaNode('cas_put_chunk', { handle: under.handle, data: 'AAAA' });
  out.nodeUnderSize = await code(viaNode('cas_put_finish', { handle: under.handle }));
  out.nodeList = await window.disot.cas.list();
  // The page talks to the content frame itself, bypassing the provider.
  const iframe = document.querySelector('iframe[src*="-extension://"]');
  const { port1, port2 } = new MessageChannel();
  iframe.contentWindow.postMessage({ channel: 'disot-frame' }, '*', [port2]);
  let id = 0;
  const ask = (msg, transfer = []) => new Promise((resolve) => {
    const mine = ++id;
    port1.onmessage = ({ data }) => data.id === mine && resolve(JSON.parse(data.body).error?.code ?? null);
    port1.postMessage({ ...msg, id: mine }, transfer);
  });
  const huge = new ArrayBuffer(5 << 20);
  out.frame = {
    hugePiece: await ask({ op: 'put', handle: 1, data: huge }, [huge]),
    unknownOp: await ask({ op: 'format-disk' }),
    badRead: await ask({ op: 'read', name: 'sha256:' + '0'.repeat(64), offset: -1, length: 5 }),
    notContent: await ask({ op: 'request', body: JSON.stringify({ method: 'disot_requestPermissions', params: [{ cas: {} }] }) }),
    afterwards: await window.disot.cas.list(),
  };
  port1.close();
  return out;
}

/**
 * In-page: `n` times, ask the content script for a port of the content frame as the provider
 * does, when the provider has not asked: as a port comes that was sent for an ask the provider
 * had given up on (the frame was slow to come). Waits until each has come.
 */
export async function latePortsInPage(n) {
  for (let i = 0; i < n; i++) {
    await new Promise((resolve) => {
      const on = (ev) => {
        if (ev.source !== window || ev.data?.channel !== 'disot-peer' || ev.data.dir !== 'frame') return;
        window.removeEventListener('message', on);
        resolve();
      };
      window.addEventListener('message', on);
      window.postMessage({ channel: 'disot-peer', dir: 'open-frame' }, window.location.origin);
    });
  }
}

/**
 * In-page: fill the store past what the disk allows. Puts 8 MiB (A), then 96 MiB (B, which
 * must fail), then lists, reads A back and puts 4 MiB (C). Each step's result or error.
 */
export async function overfillInPage() {
  const make = (mib, seed) => {
    const d = new Uint8Array(mib << 20);
    for (let i = 0; i < d.length; i += 65536) crypto.getRandomValues(d.subarray(i, i + 65536));
    d[0] = seed;
    return d;
  };
  const attempt = (f) => f().then((ok) => ({ ok }), (e) => ({ error: { code: e.code, message: e.message } }));
  const a = make(8, 1);
  const out = {};
  out.a = await attempt(() => window.disot.cas.put(a));
  out.b = await attempt(() => window.disot.cas.put(make(96, 2)));
  out.list = await attempt(async () => (await window.disot.cas.list()).map((o) => o.cid));
  out.aBack = await attempt(async () => {
    const back = await window.disot.cas.get(out.a.ok.cid);
    return back.length === a.length && back.every((x, i) => x === a[i]);
  });
  out.c = await attempt(() => window.disot.cas.put(make(4, 3)));
  return out;
}

/** In an extension page: the keys (CIDs) of every block the store holds. */
export async function blockKeysInExtensionPage() {
  const db = await new Promise((resolve, reject) => {
    const r = indexedDB.open('disot-peer');
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  const keys = await new Promise((resolve, reject) => {
    const r = db.transaction('blocks').objectStore('blocks').getAllKeys();
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  db.close();
  return keys;
}

/** In-page: put `mib` MiB of random bytes as a public object; resolves to {cid, sha256, size}. */
export async function putPublicRandomInPage(mib) {
  const data = new Uint8Array(mib * 1024 * 1024);
  for (let i = 0; i < data.length; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
  return window.disot.cas.put(data, { public: true });
}

/**
 * In an extension page: overwrite one stored raw leaf in IndexedDB with as many bytes, one of
 * them changed, stored as it was (a Blob or an array); returns its key.
 */
export async function corruptALeafInExtensionPage() {
  const db = await new Promise((resolve, reject) => {
    const r = indexedDB.open('disot-peer');
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  const keys = await new Promise((resolve) => {
    const r = db.transaction('blocks').objectStore('blocks').getAllKeys();
    r.onsuccess = () => resolve(r.result);
  });
  const leaf = keys.find((k) => k.startsWith('bafkrei'));
  const value = await new Promise((resolve) => {
    const r = db.transaction('blocks').objectStore('blocks').get(leaf);
    r.onsuccess = () => resolve(r.result);
  });
  const bytes = value instanceof Blob ? new Uint8Array(await value.arrayBuffer()) : new Uint8Array(value);
  bytes[bytes.length >> 1] ^= 0xff;
  await new Promise((resolve) => {
    const tx = db.transaction('blocks', 'readwrite');
    tx.objectStore('blocks').put(value instanceof Blob ? new Blob([bytes]) : bytes, leaf);
    tx.oncomplete = resolve;
  });
  db.close();
  return leaf;
}

/** Serve `bytes` over HTTP on a loopback port (a benchmark's baseline); closed on cleanup.
 * Resolves with the URL. */
export function serveBytes(bytes) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'access-control-allow-origin': '*', 'content-length': bytes.length });
    res.end(bytes);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    onCleanup(() => new Promise((r) => { server.closeAllConnections(); server.close(r); }));
    resolve(`http://127.0.0.1:${server.address().port}/bytes`);
  }));
}
