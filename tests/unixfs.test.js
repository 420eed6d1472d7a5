// CID equality with the real JavaScript IPFS stack: the same generated files imported by
// @helia/unixfs (whose importer is ipfs-unixfs-importer) and by `disot-node add --only-hash`
// must get the same CIDs, under each preset and with chunk sizes small enough to build
// multi-level trees quickly. The kubo preset is checked through the same importer configured
// as Kubo's `ipfs add --cid-version 1` (256 KiB chunks, 174 links, raw leaves); no Kubo binary
// is available from the package registries here.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { unixfs } from '@helia/unixfs';
import { MemoryBlockstore } from 'blockstore-core/memory';
import { fixedSize } from 'ipfs-unixfs-importer/chunker';
import { balanced } from 'ipfs-unixfs-importer/layout';
import * as h from './lib/harness.js';

after(() => h.cleanup());

const KiB = 1024;
const MiB = 1024 * KiB;
// Max links per node and chunk size of each preset, as the packages define them.
const PRESETS = { helia: 1024, kubo: 174 };
const CHUNK = { helia: MiB, kubo: 256 * KiB };

const cases = [];
for (const preset of Object.keys(PRESETS)) {
  const chunk = CHUNK[preset];
  for (const size of [0, 1, chunk - 1, chunk, chunk + 1, 5 * MiB + 123]) cases.push({ preset, chunk, size });
  // Small chunks: more leaves than one node may link, so the tree has two levels (and, for
  // kubo's 174 links, three).
  cases.push({ preset, chunk: 256, size: PRESETS[preset] * 256 * 2 + 7 });
  if (preset === 'kubo') cases.push({ preset, chunk: 64, size: 174 * 174 * 64 + 1000 });
}

const dir = h.tempDir('unixfs');

for (const { preset, chunk, size } of cases) {
  test(`${preset} preset, ${chunk}-byte chunks, ${size} bytes: same CID as @helia/unixfs`, async () => {
    const bytes = h.generate(size, size + chunk);
    const file = path.join(dir, `${preset}-${chunk}-${size}.bin`);
    fs.writeFileSync(file, bytes);

    const helia = unixfs({ blockstore: new MemoryBlockstore() });
    const expected = await helia.addBytes(bytes, {
      cidVersion: 1,
      rawLeaves: true,
      chunker: fixedSize({ chunkSize: chunk }),
      layout: balanced({ maxChildrenPerNode: PRESETS[preset] }),
    });

    const out = execFileSync(h.NODE_BIN, ['add', '--only-hash', '--json', '--preset', preset, '--chunk-size', String(chunk), file], { encoding: 'utf8' });
    const ours = JSON.parse(out);
    assert.equal(ours.cid, expected.toString());
    assert.equal(ours.size, size);
    assert.equal(ours.sha256, `sha256:${createHash('sha256').update(bytes).digest('hex')}`);
    fs.rmSync(file);
  });
}

test('the helia preset is exactly @helia/unixfs addBytes with no options', async () => {
  const bytes = h.generate(3 * MiB, 42);
  const file = path.join(dir, 'defaults.bin');
  fs.writeFileSync(file, bytes);
  const expected = await unixfs({ blockstore: new MemoryBlockstore() }).addBytes(bytes);
  const ours = JSON.parse(execFileSync(h.NODE_BIN, ['add', '-n', '--json', file], { encoding: 'utf8' }));
  assert.equal(ours.cid, expected.toString());
});
