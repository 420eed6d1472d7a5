// Interop with the reference implementation: a js-libp2p peer (npm `libp2p` + `@libp2p/webrtc` +
// `@helia/bitswap`, in Node: tests/interop/peer.mjs) and our browser peer open a direct `/webrtc`
// connection through our relay (disot-node), in both directions, and exchange a block by
// Bitswap each way.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import fs from 'node:fs';
import path from 'node:path';
import * as h from './lib/harness.js';

after(() => h.cleanup());
const peersOf = () => window.disot.p2p.peers();

/** The js-libp2p peer, connected to `relay`; `ask(cmd)` sends a command and awaits its answer. */
async function startJsPeer(relay) {
  const dir = path.join(h.ROOT, 'tests/interop');
  const proc = spawn(process.execPath, ['--experimental-websocket', '--no-warnings', '--import', './polyfill.mjs', 'peer.mjs', relay], { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, DEBUG: process.env.DISOT_JS_DEBUG ?? '' } });
  h.onCleanup(() => proc.exitCode === null && proc.signalCode === null && proc.kill('SIGKILL'));
  const log = fs.createWriteStream(path.join(h.ARTIFACTS, 'js-libp2p-peer.log'), { flags: 'a' });
  proc.stderr.pipe(log);
  const events = [];
  let waiting = null;
  createInterface({ input: proc.stdout }).on('line', (line) => {
    log.write(line + '\n');
    let e;
    try { e = JSON.parse(line); } catch { return; }
    events.push(e);
    if (waiting && waiting.match(e)) {
      const w = waiting;
      waiting = null;
      w.resolve(e);
    }
  });
  const ready = await h.waitFor(() => events.find((e) => e.event === 'ready') ?? (proc.exitCode !== null && { exited: true }), { what: 'the js-libp2p peer', timeout: 40_000 });
  assert.ok(!ready.exited, 'the js-libp2p peer started');
  const ask = (cmd, answers) => new Promise((resolve) => {
    waiting = { match: (e) => answers.includes(e.event) && (e.event !== 'error' || e.cmd === cmd.cmd), resolve };
    proc.stdin.write(JSON.stringify(cmd) + '\n');
  });
  return { peerId: ready.peerId, addrs: ready.addrs, events, ask };
}

describe('js-libp2p interop', { concurrency: 1 }, () => {
  test('/webrtc both ways through our relay, and a block by Bitswap each way', async () => {
    const node = await new h.NativeNode(h.tempDir('node-interop')).start();
    const js = await startJsPeer(node.wsAddr);
    const site = await h.startPageServer();
    const browser = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'interop' });
    const ext = await browser.browser.browser.newPage();
    await ext.goto(`${browser.browser.extensionBase}options.html`);
    try {
      await h.waitFor(async () => (await browser.run(peersOf)).some((p) => p.peerId === node.peerId), { what: 'the browser on the node' });
      const me = (await h.status(browser.page)).peerId;

      // js → browser: js dials our /webrtc address through the relay.
      const ours = `${node.wsAddr}/p2p-circuit/webrtc/p2p/${me}`;
      const dialed = await js.ask({ cmd: 'dial', addr: ours, timeoutMs: 15_000 }, ['dialed', 'error']);
      assert.equal(dialed.event, 'dialed', JSON.stringify(dialed));
      assert.equal(dialed.limited, false, 'a direct connection, not the limited relayed one');
      assert.match(dialed.remoteAddr, /\/webrtc\//);
      await h.waitFor(async () => (await browser.run(peersOf)).some((p) => p.peerId === js.peerId && p.transports.includes('webrtc')), { what: 'the browser to list the js peer over webrtc' });

      // A block from js to the browser...
      const fromJs = randomBytes(100_000);
      const put = await js.ask({ cmd: 'put', bytesBase64: fromJs.toString('base64') }, ['put', 'error']);
      const got = await browser.run(async (cid) => {
        const bytes = await window.disot.cas.get(cid);
        return [...new Uint8Array(await crypto.subtle.digest('SHA-256', bytes))].map((b) => b.toString(16).padStart(2, '0')).join('');
      }, put.cid);
      assert.equal(got, createHash('sha256').update(fromJs).digest('hex'), 'the browser got js\'s block');
      // browser → js: drop the connection, then the browser dials js's /webrtc address.
      const hangup = await js.ask({ cmd: 'connections' }, ['connections']);
      assert.ok(hangup.connections.some((c) => c.remotePeer === me && c.webrtc && !c.limited));
      await browser.close();
      const b2 = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'interop-2' });
      const ext2 = await b2.browser.browser.newPage();
      await ext2.goto(`${b2.browser.extensionBase}options.html`);
      await h.waitFor(async () => (await b2.run(peersOf)).some((p) => p.peerId === node.peerId), { what: 'the second browser on the node' });
      const jsWebrtc = `${node.wsAddr}/p2p-circuit/webrtc/p2p/${js.peerId}`;
      const r = await ext2.evaluate(async (addr) => (await import('./ui.js')).call('peers_dial', { addr }), jsWebrtc);
      assert.ok(r.dialing);
      await h.waitFor(async () => (await b2.run(peersOf)).some((p) => p.peerId === js.peerId && p.transports.join() === 'webrtc'),
        { what: 'the browser to reach js directly', timeout: 30_000 });
      const me2 = (await h.status(b2.page)).peerId;
      const conns = (await js.ask({ cmd: 'connections' }, ['connections'])).connections;
      assert.ok(conns.some((c) => c.remotePeer === me2 && c.webrtc && !c.limited), `js sees a direct connection from the browser: ${JSON.stringify(conns)}`);
      const again = await b2.run(async (cid) => (await window.disot.cas.get(cid)).length, put.cid);
      assert.equal(again, fromJs.length, 'Bitswap over the connection the browser dialled');
      // And a block from the browser to js.
      const mine = await b2.run(async () => {
        const d = new Uint8Array(50_000);
        crypto.getRandomValues(d);
        const hex = [...new Uint8Array(await crypto.subtle.digest('SHA-256', d))].map((b) => b.toString(16).padStart(2, '0')).join('');
        return { put: await window.disot.cas.put(d, { public: true }), hex };
      });
      await new Promise((r) => setTimeout(r, 300)); // past the cache of what is public
      h.log('js knows the browser as', JSON.stringify(await js.ask({ cmd: 'peer', id: me2 }, ['peer', 'error'])));
      const jsGot = await js.ask({ cmd: 'get', cid: mine.put.cid, timeoutMs: 20_000 }, ['got', 'error']);
      assert.equal(jsGot.event, 'got', JSON.stringify(jsGot));
      assert.equal(jsGot.sha256hex, mine.hex, 'js got the browser\'s block');

      await b2.close();
    } finally {
      await browser.close();
    }
  });
});
