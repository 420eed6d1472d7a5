// Trust benchmark, in one run: the browser node's trust code (wasm, in an extension page of
// headless Chromium) against the same code built natively (core/examples/trust_bench.rs):
// scores over a generated web of 10,000 assertions among 1,000 DIDs (goal: under 50 ms in the
// browser), and trust credentials (W3C VCs, eddsa-rdfc-2022 by ssi) signed and verified per
// second. Run with `scripts/bench.sh`. Not part of the test suite.
import { execFileSync } from 'node:child_process';
import * as h from '../lib/harness.js';

try {
  const native = JSON.parse(execFileSync('cargo', ['run', '--quiet', '--release', '-p', 'disot-core', '--example', 'trust_bench'], { cwd: h.ROOT, encoding: 'utf8' }).trim());
  const browser = await h.Browser.launch('chromium', h.prepareExtension('chrome', []), h.tempDir('profile-trust-bench'));
  const page = await browser.browser.newPage();
  await page.goto(`${browser.extensionBase}options.html`);
  const inBrowser = JSON.parse(await page.evaluate(async () => {
    const wasm = await import(chrome.runtime.getURL('pkg/disot_wasm.js'));
    await wasm.default();
    return wasm.benchTrust();
  }));
  const f = (x, d = 2) => x.toFixed(d);
  console.log('trust: 10,000 assertions among 1,000 DIDs, 200 scores (best path, up to 4 hops)');
  console.log(`  score, median: chromium ${f(inBrowser.scoreMedianMs)} ms (max ${f(inBrowser.scoreMaxMs)}), native ${f(native.scoreMedianMs)} ms → ${f(inBrowser.scoreMedianMs / native.scoreMedianMs)}x native; goal < 50 ms`);
  console.log(`  trust credentials signed:   chromium ${f(inBrowser.signPerSec, 0)}/s, native ${f(native.signPerSec, 0)}/s → ${f(inBrowser.signPerSec / native.signPerSec)}x native`);
  console.log(`  trust credentials verified: chromium ${f(inBrowser.verifyPerSec, 0)}/s, native ${f(native.verifyPerSec, 0)}/s → ${f(inBrowser.verifyPerSec / native.verifyPerSec)}x native`);
} finally {
  await h.cleanup();
}
