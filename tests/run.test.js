// The README's run command, exercised as a user would: it must start a node and a browser with
// the extension pointed at that node, and stop everything on Ctrl-C (SIGINT).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import * as h from './lib/harness.js';

after(() => h.cleanup());

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function portOpen(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    sock.on('connect', () => { sock.destroy(); resolve(true); });
    sock.on('error', () => resolve(false));
  });
}

for (const kind of ['chromium', 'firefox']) {
  test(`scripts/run.sh --headless ${kind === 'firefox' ? '--firefox ' : ''}connects the browser to its node and stops cleanly`, async () => {
    const [wsPort, demoPort] = [await freePort(), await freePort()];
    const args = [path.join(h.ROOT, 'scripts/run.sh'), '--headless', '--no-build', ...(kind === 'firefox' ? ['--firefox'] : [])];
    const proc = spawn('bash', args, {
      cwd: h.ROOT,
      env: { ...process.env, DISOT_NODE_DIR: h.tempDir('run-node'), DISOT_WS_PORT: String(wsPort), DISOT_WEBRTC_PORT: '0', DISOT_DEMO_PORT: String(demoPort) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    proc.stdout.on('data', (d) => { output += d; });
    proc.stderr.on('data', (d) => { output += d; });
    const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
    h.onCleanup(async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGINT');
        await exited;
      }
    });
    try {
      await h.waitFor(() => new RegExp(`identified \\S+ as "disot-peer/\\S+ \\(${kind}\\)"`).test(output),
        { timeout: 60_000, what: 'the node to identify the browser peer' });
      await h.waitFor(() => /relay reservation accepted/.test(output), { what: 'a relay reservation' });
      assert.ok(await portOpen(demoPort), 'the demo page is served');
    } catch (e) {
      throw new Error(`${e.message}\n--- run.sh output ---\n${output}`);
    }
    proc.kill('SIGINT');
    const { code } = await exited;
    assert.equal(code, 0, output);
    assert.match(output, /stopping/);
    assert.equal(await portOpen(wsPort), false, 'the node was stopped');
    assert.equal(await portOpen(demoPort), false, 'the page server was stopped');
  });
}
