// The private key never leaves the background: every page request and every request of the
// extension's own pages is sent (with good and bad parameters), and no answer contains the
// identity key's secret bytes in any usual encoding. Covered: the page API, the UI API and what
// a peer is sent in the identity exchange and with the trust credentials (a test peer records
// every byte). Bitswap, identify and signaling never read the key.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as h from './lib/harness.js';

after(() => h.cleanup());

/** In an extension page: the stored identity key (libp2p protobuf: type, then 64 bytes). */
async function identityKeyInExtensionPage() {
  const db = await new Promise((resolve, reject) => {
    const r = indexedDB.open('disot-peer');
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  const value = await new Promise((resolve, reject) => {
    const r = db.transaction('keys').objectStore('keys').get('identity');
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  db.close();
  return Array.from(new Uint8Array(value.buffer ?? value));
}

/** Every way the secret might be written into an answer. */
function encodings(secret) {
  const b = Buffer.from(secret);
  const b64 = b.toString('base64');
  return [
    b.toString('hex'),
    b64.slice(0, 40), // a prefix: survives other bytes around it (aligned on 3 bytes)
    b64.replace(/\+/g, '-').replace(/\//g, '_').slice(0, 40),
    Array.from(b.subarray(0, 12)).join(','), // a JSON array of numbers
    b.subarray(0, 24).toString('latin1'),
  ];
}

describe('no answer carries key material', () => {
  let site, node, peer, ext, patterns, did;

  before(async () => {
    node = await new h.NativeNode(h.tempDir('node-keys')).start();
    site = await h.startPageServer();
    peer = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'keys' });
    ext = await peer.browser.open(`${peer.browser.extensionBase}options.html`);
    const stored = await ext.evaluate(identityKeyInExtensionPage);
    // Protobuf: 0x08 0x01 (Ed25519), 0x12 0x40, then the 32-byte secret and the public key.
    assert.deepEqual(stored.slice(0, 4), [8, 1, 18, 64], 'an Ed25519 key as libp2p stores it');
    const secret = stored.slice(4, 36);
    patterns = [...encodings(secret), ...encodings(stored)];
    // The scan would see a leak in each form (so that it can fail).
    for (const leak of [Buffer.from(secret).toString('hex'), Buffer.from(stored).toString('base64'), { key: secret }]) {
      assert.throws(() => scan('a leak', { result: leak }), /key material/);
    }
    did = (await peer.run(() => window.disot.request({ method: 'disot_status' }))).did;
  });

  function scan(what, answer) {
    const text = JSON.stringify(answer);
    for (const p of patterns) assert.ok(!text.includes(p), `${what} answered with key material`);
    return text;
  }

  test('page requests, good and bad', async () => {
    const put = await peer.run(() => window.disot.cas.put(new TextEncoder().encode('hello keys'), { public: true }));
    const calls = [
      ['disot_status'], ['disot_getPermissions'], ['disot_requestPermissions', [{ cas: {} }]],
      ['cas_put_start', {}], ['cas_stat', { name: put.cid }], ['cas_read', { name: put.cid, offset: 0, length: 10 }],
      ['cas_has', { name: put.sha256 }], ['cas_list'], ['cas_pin', { name: put.cid }], ['cas_unpin', { name: put.cid }],
      ['cas_fetch', { name: put.cid }], ['cas_transfers'], ['p2p_peers'],
      ['disot_verify', { id: 'x', contentHash: put.sha256, type: 't', metadata: {}, timestamp: 1, signer: did, signature: 'z1' }],
      ['disot_sign', { contentHash: put.sha256, type: 't' }], // no sign permission: 4100
      ['disot_sign', { contentHash: 'nope' }], ['cas_read', { name: 'sha256:00' }], ['no_such_method'],
      ['disot_status', { unexpected: true }], ['identity_export', { passphrase: 'a long passphrase' }],
      ['trust_list'], ['trust_score', { did }], ['trust_set', { did, level: 5 }], // no trust permission: 4100
      ['ui_status'], ['settings_get'],
    ];
    let answered = 0;
    for (const [method, params] of calls) {
      const answer = await h.pageRequest(peer.page, params === undefined ? { method } : { method, params });
      scan(`page ${method}`, answer);
      answered += 1;
    }
    assert.equal(answered, calls.length);
  });

  test('requests of the extension\'s own pages, good and bad', async () => {
    const calls = [
      ['ui_status'], ['settings_get'], ['permissions_list'], ['permissions_pending', { id: 999 }],
      ['permissions_decide', { id: 999, approve: true }], ['peers_dial', { addr: '/ip4/127.0.0.1/tcp/1' }], ['peers_disconnect', { peerId: 'not a peer' }],
      ['identity_export', { passphrase: 'short' }], ['identity_export', { passphrase: 'a long passphrase' }],
      ['identity_import', { backup: '{}', passphrase: 'x' }], ['disot_status'], ['no_such_method'],
      ['trust_set', { did: 'did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK', level: 70 }],
      ['trust_set', { did: 'did:key:bad', level: 70 }], ['trust_list'],
      ['invite_create'], ['invite_accept', { invite: 'disot-invite:e30', level: 50 }],
      ['identity_lock_remove', { passphrase: 'a long passphrase' }], ['identity_lock', { passphrase: 'short' }],
      ['settings_set', { bootstrap: [node.wsAddr], displayName: 'Keys' }],
    ];
    for (const [method, params] of calls) {
      const answer = await ext.evaluate(async (method, params) => {
        const body = JSON.stringify(params === null ? { method } : { method, params });
        return (await chrome.runtime.sendMessage({ to: 'background', body })).body;
      }, method, params ?? null);
      const text = scan(`ui ${method}`, answer);
      if (method === 'identity_export' && params.passphrase.length > 8) {
        assert.match(text, /disot-identity-backup\/1/, 'the backup itself is sealed');
      }
    }
  });

  test('what a peer receives: the identity exchange and the trust credentials', async () => {
    // A peer we trust (so it is sent our credentials too) records every byte we send it.
    const other = await h.startExamplePeer('impostor-peer', ['honest']);
    await h.ui(ext, 'trust_set', { did: other.did, level: 50 });
    await h.ui(ext, 'peers_dial', { addr: other.addr });
    const seen = await h.waitFor(() => other.events.find((e) => e.event === 'browser-profile'), { what: 'our profile at the peer' });
    assert.equal(seen.sent.length, 2, 'the hello and the profile');
    for (const [i, message] of seen.sent.entries()) scan(`identity message ${i}`, message);
    assert.match(seen.sent[1], /"signature":"/, 'the profile is signed, so the scan saw a signature');
    const creds = await h.waitFor(() => other.events.find((e) => e.event === 'browser-credentials'), { what: 'our credentials at the peer' });
    const sent = JSON.parse(creds.sent);
    assert.ok(sent.some((c) => c.credentialSubject?.id === other.did), 'the credential about the peer was sent');
    scan('trust credentials', creds.sent);
    other.stop();
  });
});
