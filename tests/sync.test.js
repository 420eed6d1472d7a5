// Share and sync between two Chromium browsers through one disot-node, driven through a page
// (the share, approved in the prompt) and the popups (trust, "Shared with me").
// B's trust in A decides what B takes: at 90 the shared bytes arrive in B's store without B
// asking; at 60 only the share (its metadata) arrives until B fetches it; at 30 nothing.
// Offline: B is closed when A shares; once B is back, the share and its bytes arrive.
// Collections: A and B edit a shared collection while apart; after they meet both hold the
// same document, with both sides' additions.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as h from './lib/harness.js';
import { CID } from 'multiformats/cid';
import * as raw from 'multiformats/codecs/raw';
import { sha256 } from 'multiformats/hashes/sha2';

after(() => h.cleanup());
const ui = h.ui;

async function trustInPopup(popup, did, level) {
  await popup.$eval('#trust-did', (e) => { e.value = ''; });
  await popup.type('#trust-did', did);
  await popup.$eval('#trust-level', (e) => { e.value = ''; });
  await popup.type('#trust-level', String(level));
  await popup.click('#trust-add');
  try {
    await popup.waitForFunction((did, level) => {
      const text = document.querySelector(`#trust li[data-did="${did}"]`)?.textContent ?? '';
      return level === 0 ? text.includes('revoked') : text.includes(`level ${level},`);
    }, {}, did, level);
  } catch (e) {
    // What the popup shows instead: the entry as it is, and the error of the edit if any.
    const shown = await popup.evaluate((did) => ({
      entry: document.querySelector(`#trust li[data-did="${did}"]`)?.textContent ?? null,
      error: document.getElementById('trust-error').hidden ? null : document.getElementById('trust-error').textContent,
    }), did).catch((why) => ({ unreadable: String(why) }));
    throw new Error(`trust ${level} for ${did} not shown in the popup: ${JSON.stringify(shown)}`, { cause: e });
  }
}

/** Put `mib` MiB of bytes derived from `seed` in A's page. */
function put(peer, mib, seed, name) {
  return peer.run(async (mib, seed, name) => {
    const d = new Uint8Array(mib << 20);
    let x = seed >>> 0;
    for (let i = 0; i < d.length; i += 4) { x = (x * 1664525 + 1013904223) >>> 0; d[i] = x; d[i + 1] = x >> 8; d[i + 2] = x >> 16; d[i + 3] = x >> 24; }
    return window.disot.cas.put(d, { name });
  }, mib, seed, name);
}

describe('share and sync', { concurrency: 1 }, () => {
  let node, site, a, b, popupA, popupB, sa, sb, profileB, pageB, extDirB;

  const sessionsWith = async (popup, did) => (await ui(popup, 'sync_status')).peers.find((p) => p.did === did)?.sessions ?? 0;
  const sharedWithB = async () => (await ui(popupB, 'shares_list')).sharedWithMe;

  async function share(cid, note) {
    const sharing = await h.startInPage(a.page, { method: 'share', params: { cid, to: sb.did, note } });
    const shown = await h.answerPrompt(a.browser, '#approve');
    assert.ok(shown.includes(sb.did) && shown.includes(note), `the prompt shows whom and the note: ${shown}`);
    const outcome = await sharing();
    assert.ok(outcome.result, JSON.stringify(outcome));
    return outcome.result[0];
  }

  /** B again, on its profile and its extension directory (the extension's id, and so its
   * store, come from that directory), with `bootstrap` as its nodes. */
  async function openB(bootstrap = [node.wsAddr]) {
    b = await h.Browser.launch('chromium', h.prepareExtension('chrome', bootstrap, extDirB), profileB);
    popupB = await b.open(`${b.extensionBase}popup.html`);
    assert.equal((await ui(popupB, 'ui_status')).did, sb.did, 'B is the same peer');
    return b;
  }

  before(async () => {
    node = await new h.NativeNode(h.tempDir('node-sync')).start();
    site = await h.startPageServer();
    a = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'sync-a' });
    profileB = h.tempDir('profile-sync-b');
    const peerB = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'sync-b', profile: profileB });
    b = peerB.browser;
    extDirB = b.extDir;
    pageB = peerB.page;
    popupB = await b.open(`${b.extensionBase}popup.html`);
    popupA = await a.browser.open(`${a.browser.extensionBase}popup.html`);
    sa = await ui(popupA, 'ui_status');
    sb = await ui(popupB, 'ui_status');
    // A's page may share (the user approves the permission, then each share).
    const grant = await h.startInPage(a.page, { method: 'disot_requestPermissions', params: [{ share: {} }] });
    assert.match(await h.answerPrompt(a.browser, '#approve'), /share content and collections/);
    assert.ok((await grant()).result.some((p) => p.parentCapability === 'share'));
    await h.waitFor(async () => (await ui(popupA, 'ui_status')).peers.some((p) => p.peerId === node.peerId), { what: 'A on the node' });
    await h.waitFor(async () => (await ui(popupB, 'ui_status')).peers.some((p) => p.peerId === node.peerId), { what: 'B on the node' });
  });

  test('trust 90: a 10 MiB share appears in B\'s "Shared with me" and its bytes are in B\'s store without B asking', async () => {
    await trustInPopup(popupB, sa.did, 90);
    const object = await put(a, 10, 1, 'ten.bin');
    await ui(popupA, 'peers_dial', { addr: `${node.wsAddr}/p2p-circuit/webrtc/p2p/${sb.peerId}` });
    const made = await share(object.cid, 'ten MiB for you');
    assert.equal(made.cid, object.cid);
    await popupB.waitForFunction((cid) => document.querySelector(`#shared-with-me li[data-cid="${cid}"][data-held="true"]`), { timeout: 60_000 }, object.cid);
    const row = await popupB.$eval(`#shared-with-me li[data-cid="${object.cid}"]`, (e) => e.textContent);
    assert.match(row, /ten\.bin \(10\.0 MiB\) from did:key:.*ten MiB for you.* here/);
    // The bytes are B's, verified and pinned: the root and its ten leaves are in B's store.
    assert.ok((await popupB.evaluate(h.blockKeysInExtensionPage)).includes(object.cid), 'the root block is in B\'s store');
    // A site of B's that may not list what peers shared with B (it holds only `cas`) is not
    // given it from the store: asked for it, it has every block from a peer, as for anything
    // not held, and learns nothing of what was shared. (A site that may, below, has it at once.)
    const got = (await (await h.startInPage(pageB, { method: 'cas_fetch', params: { name: object.cid } }))()).result;
    assert.equal(got.sha256, object.sha256);
    assert.equal(got.size, 10 << 20);
    assert.equal(got.fetched.blocks, 11, 'every block from a peer');
  });

  test('two tabs of B see one state, and both hear of each change; a page without the permission hears nothing', async () => {
    // Two tabs of one origin, granted `share` (the popup is closed meanwhile: a prompt opened
    // while it is open stops answering the test's driver).
    await popupB.close();
    const opened = [];
    try {
      await twoTabs(opened);
    } finally {
      // Whatever happened, the tests after this one get a working popup (a failure here used
      // to leave them each waiting out the driver's time-out on a closed or stuck one).
      for (const t of opened) await t.close().catch(() => {});
      await popupB.close().catch(() => {});
      popupB = await b.open(`${b.extensionBase}popup.html`);
    }
  });

  async function twoTabs(opened) {
    const tabs = [await b.open(`${site.url}/demo.html`), await b.open(`${site.url}/demo.html`)];
    opened.push(...tabs);
    const grant = await h.startInPage(tabs[0], { method: 'disot_requestPermissions', params: [{ share: {} }] });
    await h.answerPrompt(b, '#approve');
    assert.ok((await grant()).result.some((p) => p.parentCapability === 'share'));
    popupB = await b.open(`${b.extensionBase}popup.html`);
    for (const t of tabs) {
      await t.evaluate(() => {
        window.__changes = [];
        window.disot.on('change', (e) => window.__changes.push(e));
      });
    }
    const heard = (t, reason) => t.waitForFunction((r) => window.__changes.some((e) => e.reasons.includes(r)), { timeout: 30_000, polling: 200 }, reason)
      .catch(async (e) => {
        const seen = await t.evaluate(() => JSON.stringify(window.__changes));
        const status = JSON.stringify((await ui(popupB, 'sync_status')).peers);
        throw new Error(`no "${reason}" event: heard ${seen}; B's sync: ${status}; ${e.message}`);
      });
    // Another origin (same server, other host name) without the permission learns nothing.
    const stranger = await b.open(`${site.url.replace('127.0.0.1', 'localhost')}/demo.html`);
    opened.push(stranger);
    const refused = await stranger.evaluate(() => window.disot.request({ method: 'sync_watch' }).then(() => null, (e) => e.code));
    assert.equal(refused, 4100);
    // It listens for changes all the same: it hears none until it is granted the permission.
    await stranger.evaluate(() => {
      window.__changes = [];
      window.disot.on('change', (e) => window.__changes.push(e));
    });
    // A peer's change (A shares with B): both tabs hear "synced" and list the same shares.
    const object = await put(a, 1, 5, 'for-both-tabs.bin');
    await share(object.cid, 'seen in two tabs');
    for (const t of tabs) await heard(t, 'synced');
    const lists = await Promise.all(tabs.map((t) => t.evaluate(() => window.disot.shares.list())));
    assert.ok(lists[0].sharedWithMe.some((s) => s.cid === object.cid), 'the share is listed');
    assert.deepEqual(lists[0].sharedWithMe.map((s) => s.id), lists[1].sharedWithMe.map((s) => s.id), 'both tabs list the same shares');
    // Its bytes come without asking (B trusts A at 90); a site that may list what was shared
    // with B has them at once, no peer asked.
    await h.waitFor(async () => (await sharedWithB()).some((s) => s.cid === object.cid && s.held), { timeout: 60_000, what: 'the shared bytes to arrive at B' });
    const held = await tabs[0].evaluate((name) => window.disot.request({ method: 'cas_fetch', params: { name } }), object.cid);
    assert.equal(held.sha256, object.sha256);
    assert.equal(held.fetched.blocks, 0, 'shared with B: already held, nothing fetched');
    // A change in one tab: the other hears "collection" and reads the same collection.
    const { id } = await tabs[1].evaluate(() => window.disot.collections.create('from tab 2'));
    const added = await tabs[1].evaluate((id, cid) => window.disot.collections.add(id, cid, { name: 'from tab 2' }), id, object.cid);
    await heard(tabs[0], 'collection');
    const { entries: got, ...info } = await tabs[0].evaluate((id) => window.disot.collections.get(id), id);
    assert.deepEqual(info, added, 'an edit answers with the collection without its entries');
    assert.equal(added.count, 1);
    assert.deepEqual(got.map((e) => [e.cid, e.name]), [[object.cid, 'from tab 2']]);
    // A site sees and changes only the collections its pages made: not one made in the popup,
    // and not this one from another site, even one granted `share` (to which it is as if it
    // did not exist).
    const fromPopup = (await ui(popupB, 'collection_create', { name: 'from the popup' })).id;
    assert.deepEqual((await tabs[0].evaluate(() => window.disot.collections.list())).map((c) => c.id), [id]);
    assert.equal(await tabs[0].evaluate((c) => window.disot.collections.get(c).then(() => null, (e) => e.code), fromPopup), -32001);
    await popupB.close();
    assert.deepEqual(await stranger.evaluate(() => window.__changes), [], 'without the permission, no events');
    const strangerGrant = await h.startInPage(stranger, { method: 'disot_requestPermissions', params: [{ share: {} }] });
    await h.answerPrompt(b, '#approve');
    assert.ok((await strangerGrant()).result.some((p) => p.parentCapability === 'share'));
    popupB = await b.open(`${b.extensionBase}popup.html`);
    const asStranger = await stranger.evaluate(async (id, did) => {
      const code = (p) => p.then(() => 'answered', (e) => e.code);
      return {
        list: (await window.disot.collections.list()).map((c) => c.id),
        get: await code(window.disot.collections.get(id)),
        rename: await code(window.disot.collections.rename(id, 'mine now')),
        add: await code(window.disot.collections.add(id, 'bafkqaaa')),
        member: await code(window.disot.collections.member(id, did, 'reader')),
        share: await code(window.disot.shares.share({ collection: id, to: did })),
      };
    }, id, sa.did);
    assert.deepEqual(asStranger, { list: [], get: -32001, rename: -32001, add: -32001, member: -32001, share: -32001 });
    assert.equal((await ui(popupB, 'collection_get', { id })).name, 'from tab 2', 'unchanged');
    // A site hears of changes to shares and to its own collections, not of another site's or
    // the popup's: the second site's watch, waiting while those change, answers only when a
    // share is made, telling of that alone; nor does its position move meanwhile, and each
    // site numbers only what it hears of. Nor does it list the first site's collection among
    // shares.
    const watch = (t, since) => t.evaluate((since) => window.disot.request(since === undefined ? { method: 'sync_watch' } : { method: 'sync_watch', params: { since } }), since);
    const [strangerAt, ownAt] = [await watch(stranger), await watch(tabs[0])];
    const strangerHears = watch(stranger, strangerAt.seq);
    await tabs[1].evaluate((id) => window.disot.collections.rename(id, 'from tab 2, once'), id);
    await ui(popupB, 'collection_rename', { id: fromPopup, name: 'renamed in the popup' });
    const own = await watch(tabs[0], ownAt.seq);
    assert.deepEqual(own.changes.map((c) => [c.seq, c.reason]), [[ownAt.seq + 1, 'collection']], `its own site hears of its change alone: ${JSON.stringify(own)}`);
    assert.equal((await watch(stranger)).seq, strangerAt.seq, 'the other site\'s position has not moved');
    const someone = 'did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK';
    await ui(popupB, 'share', { collection: id, to: someone, note: 'from the popup' });
    const heardByStranger = await strangerHears;
    // (Numbered as the next change it hears of: the numbers tell nothing of the rest.)
    assert.deepEqual(heardByStranger, { seq: strangerAt.seq + 1, changes: [{ seq: strangerAt.seq + 1, reason: 'shared' }], missed: false });
    // Its listener, added before the grant, hears of it too.
    await heard(stranger, 'shared');
    const sharedCollections = (t) => t.evaluate(() => window.disot.shares.list()).then((l) => l.sharedByMe.filter((s) => s.collection).map((s) => s.collection));
    assert.deepEqual(await sharedCollections(stranger), [], 'another site\'s collection share is not listed');
    assert.deepEqual(await sharedCollections(tabs[0]), [id], 'its own site lists it');
    // Each site keeps its own latest changes: when the first site changes its collection more
    // often than the peer keeps changes (64), the second still reads the share as before, not
    // told it missed anything; the first, whose own changes those were, is.
    await tabs[1].evaluate(async (id) => {
      for (let i = 0; i < 65; i++) await window.disot.collections.rename(id, `from tab 2, ${i}`);
    }, id);
    assert.deepEqual(await watch(stranger, strangerAt.seq), heardByStranger, 'the other site\'s changes take none of its place');
    const ownNow = await watch(tabs[0], ownAt.seq);
    assert.ok(ownNow.seq >= ownAt.seq + 67 && ownNow.missed && ownNow.changes.length === 64, `its own site missed some: ${JSON.stringify(ownNow)}`);
    // A site makes at most 256 collections (documents are bounded in all: sites must not take
    // the room of what peers share).
    const made = await stranger.evaluate(async () => {
      const ids = [];
      for (let i = 0; i < 256; i++) ids.push((await window.disot.collections.create(`c${i}`)).id);
      const more = await window.disot.collections.create('one more').then(() => null, (e) => `${e.code} ${e.message}`);
      return { ids, more, listed: (await window.disot.collections.list()).length };
    });
    assert.equal(made.listed, 256);
    assert.match(made.more, /^-32005 this site has made 256 collections/);
    // Bad input gets a clear error.
    const bad = await tabs[0].evaluate(() => window.disot.request({ method: 'sync_watch', params: { since: 'soon' } }).then(() => null, (e) => e.code));
    assert.equal(bad, -32602);
    // A flood of requests that wait in the node (watches with nothing new yet) meets the
    // in-flight bound of the page's route to it (here, in Chromium, the content frame's): past
    // 256 they are refused at once, the ones let through are all answered when something
    // changes, and the other tab, which holds a watch of its own, still hears of it.
    const flood = tabs[0].evaluate(async (n) => {
      const { seq } = await window.disot.request({ method: 'sync_watch' });
      window.__floodRefused = 0;
      const sent = Array.from({ length: n }, () => window.disot.request({ method: 'sync_watch', params: { since: seq } })
        .catch((e) => { window.__floodRefused++; throw e; }));
      window.__floodSent = true;
      const settled = await Promise.allSettled(sent);
      const refusals = settled.filter((s) => s.status === 'rejected').map((s) => `${s.reason?.code} ${s.reason?.message}`);
      return { n, answered: settled.filter((s) => s.status === 'fulfilled' && s.value.seq > seq).length, refusals };
    }, 400);
    // Let the flood arrive and wait (the route refuses only once 256 wait: so many refusals
    // mean all have come), then change something for it to hear.
    await tabs[0].waitForFunction(() => window.__floodSent === true && window.__floodRefused >= 400 - 256, { timeout: 30_000, polling: 100 }); // (a tab behind another gets no animation frames)
    await tabs[1].evaluate(() => { window.__changes = []; });
    await tabs[1].evaluate((id) => window.disot.collections.rename(id, 'from tab 2, renamed'), id);
    const { answered, refusals } = await flood;
    await heard(tabs[1], 'collection');
    const inFlight = refusals.filter((r) => r === '-32005 more than 256 requests in flight').length;
    assert.equal(answered + refusals.length, 400, 'every request got an answer');
    assert.ok(inFlight >= 400 - 256, `refused by the route's bound: ${inFlight}; ${JSON.stringify([...new Set(refusals)])}`);
    assert.ok(refusals.every((r) => r.startsWith('-32005 ')), JSON.stringify([...new Set(refusals)]));
    assert.ok(answered >= 200, `the waiting ones heard the change: ${answered}`);

    // One site's pages wait for at most 1024 changes at once: five more tabs of 256 watches
    // each go past that, and the ones past it are refused at once. A page listening then is
    // told nothing of it (no `restarted`: it asks again quietly), and hears the next change
    // once there is room again.
    const more = [];
    for (let i = 0; i < 6; i++) {
      more.push(await b.open(`${site.url}/demo.html`));
      opened.push(more.at(-1));
    }
    const late = more.pop();
    const lateAt = (await watch(late)).seq;
    const startFlood = async (n) => {
      const { seq } = await window.disot.request({ method: 'sync_watch' });
      window.__siteRefused = [];
      window.__flood = Promise.allSettled(Array.from({ length: n }, () => window.disot.request({ method: 'sync_watch', params: { since: seq } })
        .catch((e) => { if (!/requests in flight/.test(e.message)) window.__siteRefused.push(`${e.code} ${e.message}`); throw e; })));
    };
    for (const t of more) await t.evaluate(startFlood, 256);
    const siteRefused = async () => (await Promise.all(more.map((t) => t.evaluate(() => window.__siteRefused)))).flat();
    await h.waitFor(async () => (await siteRefused()).length >= 5 * 256 - 1024, { what: 'the site\'s pages waiting at its limit', timeout: 15_000 });
    assert.deepEqual([...new Set(await siteRefused())], ['-32005 more than 1024 pages of this site are waiting for changes']);
    const lateRefused = await late.evaluate((since) => window.disot.request({ method: 'sync_watch', params: { since } }).then(() => 'admitted', (e) => `${e.code} ${e.message}`), lateAt);
    assert.equal(lateRefused, '-32005 more than 1024 pages of this site are waiting for changes');
    // (Its requests to the node go through its content frame, which counts them: its
    // listener asks where the changes are, is refused a watch, and a second later asks again.
    // Only then is room made.)
    const lateFrame = late.frames().find((f) => f.url() === `${b.extensionBase}frame.html`);
    const asked = async () => Number(await lateFrame.evaluate(() => document.documentElement.dataset.nodeRequests ?? 0));
    const askedBefore = await asked();
    await late.evaluate(() => {
      window.__changes = [];
      window.disot.on('change', (e) => window.__changes.push(e));
    });
    await h.waitFor(async () => (await asked()) >= askedBefore + 3, { what: 'the late listener refused a watch and asking again', timeout: 15_000 });
    await tabs[1].evaluate((id) => window.disot.collections.rename(id, 'from tab 2, heard late'), id);
    await heard(late, 'collection');
    assert.ok(!(await late.evaluate(() => window.__changes)).some((e) => e.reasons.includes('restarted')), 'nothing said of the refusals');
    await Promise.all(more.map((t) => t.evaluate(() => window.__flood)));
  }

  test('trust 60: only the share arrives; the bytes come when B asks', async () => {
    await trustInPopup(popupB, sa.did, 60);
    const object = await put(a, 2, 2, 'two.bin');
    const before = await sessionsWith(popupA, sb.did);
    await share(object.cid, 'metadata only');
    await popupB.waitForFunction((cid) => document.querySelector(`#shared-with-me li[data-cid="${cid}"]`), { timeout: 30_000 }, object.cid);
    // Sessions have run since, and still B holds nothing of it.
    await h.waitFor(async () => (await sessionsWith(popupA, sb.did)) > before, { what: 'a session after the share' });
    await new Promise((r) => setTimeout(r, 3000));
    const entry = (await sharedWithB()).find((s) => s.cid === object.cid);
    assert.equal(entry.held, false, 'not fetched at trust 60');
    assert.ok(!(await popupB.evaluate(h.blockKeysInExtensionPage)).includes(object.cid));
    // B asks: the bytes come from A (shared with B, so A serves them).
    const fetched = await (await h.startInPage(pageB, { method: 'cas_fetch', params: { name: object.cid } }))();
    assert.equal(fetched.result?.sha256, object.sha256, JSON.stringify(fetched));
    assert.ok(fetched.result.fetched.blocks > 0, 'fetched from A');
    assert.equal((await sharedWithB()).find((s) => s.cid === object.cid).held, true);
  });

  let notForB;
  test('trust 30: nothing arrives', async () => {
    await trustInPopup(popupB, sa.did, 30);
    const object = await put(a, 1, 3, 'one.bin');
    notForB = object.cid;
    const before = await sessionsWith(popupB, sa.did);
    await share(object.cid, 'not for you');
    await h.waitFor(async () => (await sessionsWith(popupB, sa.did)) > before, { what: 'a session at B after the share' });
    await new Promise((r) => setTimeout(r, 3000));
    assert.ok(!(await sharedWithB()).some((s) => s.cid === object.cid), 'B took nothing from A');
    const status = (await ui(popupB, 'sync_status')).peers.find((p) => p.did === sa.did);
    assert.equal(status.level, 'nothing');
  });

  test('a level of its own for one peer, chosen in the popup: B takes all from A whatever its trust, until "by trust" again', async () => {
    const row = `#sync-peers li[data-did="${sa.did}"] select.peer-level`;
    await popupB.waitForSelector(row, { timeout: 10_000 });
    assert.equal(await popupB.$eval(row, (e) => e.value), '', 'by trust to begin with');
    await popupB.select(row, 'full');
    await h.waitFor(async () => (await ui(popupB, 'sync_status')).overrides[sa.did] === 'full', { what: 'the level saved' });
    // The share B refused at trust 30 comes now, and its bytes with it.
    await popupB.waitForFunction((cid) => document.querySelector(`#shared-with-me li[data-cid="${cid}"][data-held="true"]`), { timeout: 60_000 }, notForB);
    assert.equal((await ui(popupB, 'sync_status')).peers.find((p) => p.did === sa.did).level, 'full');
    await popupB.waitForSelector(row);
    await popupB.select(row, '');
    await h.waitFor(async () => !(sa.did in (await ui(popupB, 'sync_status')).overrides), { what: 'the level gone' });
    await assert.rejects(ui(popupB, 'sync_peer_set', { did: 'did:web:example.com', level: 'full' }), /did/i);
    await assert.rejects(ui(popupB, 'sync_peer_set', { did: sa.did, level: 'everything' }), /sync_peer_set takes/);
  });

  test('"share with these peers without asking": the next share from that site to B needs no prompt, until the user says "Ask again" in the popup', async () => {
    const one = await put(a, 1, 11, 'unasked-1.bin');
    // (A note cannot draw lines that look like the prompt's own: another recipient, say.)
    const forged = 'did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK';
    // Nor can a list of recipients hold anything but DIDs (an entry that is itself a list
    // was left out of the share but shown in the prompt).
    const nested = await h.pageRequest(a.page, { method: 'share', params: { cid: one.cid, to: [forged, [`${sb.did}\nnote: backup`]] } });
    assert.equal(nested.error?.code, -32602, JSON.stringify(nested));
    assert.match(nested.error.message, /to is a DID or a list of DIDs/);
    const first = await h.startInPage(a.page, { method: 'share', params: { cid: one.cid, to: sb.did, note: `remember\u202e me\n${forged}` } });
    const prompt = await h.promptPage(a.browser);
    assert.deepEqual((await prompt.$eval('#entry', (e) => e.textContent)).split('\n'), [sb.did, `note: remember me ${forged}`, one.cid]);
    await prompt.click('#remember');
    await prompt.click('#approve');
    assert.ok((await first()).result, 'approved');
    const preauth = await ui(popupA, 'share_preauth_list');
    assert.deepEqual(preauth, [{ origin: site.url, dids: [sb.did] }]);
    // No prompt this time: the share is made at once.
    const two = await put(a, 1, 12, 'unasked-2.bin');
    // (However long the share takes: it is made, and no prompt opens meanwhile.)
    let prompted;
    const promptOpened = new Promise((r) => { prompted = (t) => { if (t.url().includes('/prompt.html')) r('a prompt opened'); }; });
    const browserA = a.browser.browser;
    browserA.on('targetcreated', prompted).on('targetchanged', prompted);
    const sharing = await h.startInPage(a.page, { method: 'share', params: { cid: two.cid, to: sb.did, note: 'no prompt' } });
    const unasked = await Promise.race([sharing(), promptOpened]).finally(() => browserA.off('targetcreated', prompted).off('targetchanged', prompted));
    assert.equal(unasked?.result?.[0]?.cid, two.cid, `shared without a prompt: ${JSON.stringify(unasked)}`);
    // The popup lists it under the site's grants; "Ask again" ends it.
    const row = `#grants li[data-origin="${site.url}"] li.preauth[data-did="${sb.did}"] button`;
    await popupA.waitForSelector(row, { timeout: 10_000 });
    await popupA.click(row);
    await h.waitFor(async () => (await ui(popupA, 'share_preauth_list')).length === 0, { what: 'the pre-authorisation gone' });
    const three = await put(a, 1, 13, 'asked-again.bin');
    await share(three.cid, 'asked again');
  });

  test('hung up from both popups, neither peer dials the other again to sync; a dial asked for connects them again', async () => {
    const direct = `${node.wsAddr}/p2p-circuit/webrtc/p2p/${sb.peerId}`;
    const connected = async () => (await ui(popupA, 'ui_status')).peers.some((p) => p.peerId === sb.peerId);
    await ui(popupA, 'peers_dial', { addr: direct, wait: true });
    const answers = await Promise.all([ui(popupA, 'peers_disconnect', { peerId: sb.peerId }), ui(popupB, 'peers_disconnect', { peerId: sa.peerId })]);
    assert.ok(answers.some((a) => a.disconnected), JSON.stringify(answers));
    await h.waitFor(async () => !(await connected()), { what: 'the hang-up' });
    // Each looks for absent peers it syncs with every 2 s, and dials one at most every 5 s.
    await new Promise((r) => setTimeout(r, 7000));
    assert.equal(await connected(), false, 'still apart after the redial interval');
    await ui(popupA, 'peers_dial', { addr: direct, wait: true });
    assert.equal(await connected(), true, 'connected again when asked');
  });

  test('B offline when A shares: once B is back the share and its bytes arrive within seconds', async () => {
    await trustInPopup(popupB, sa.did, 90);
    await b.close();
    await h.waitFor(async () => !(await ui(popupA, 'ui_status')).peers.some((p) => p.peerId === sb.peerId), { what: 'B gone at A', timeout: 60_000 });
    const object = await put(a, 3, 4, 'while-away.bin');
    await share(object.cid, 'while you were away');
    const back = Date.now();
    await openB();
    await popupB.waitForFunction((cid) => document.querySelector(`#shared-with-me li[data-cid="${cid}"][data-held="true"]`), { timeout: 60_000 }, object.cid);
    h.log(`B back: the share and its 3 MiB arrived ${Date.now() - back} ms after B started`);
  });

  test('a collection edited on both sides while apart converges, keeping both sides\' additions', async () => {
    const cids = [];
    for (let i = 0; i < 5; i++) cids.push((await a.run((i) => window.disot.cas.put(new Uint8Array([i, 7, 7])), i)).cid);
    const id = await a.run(async (cids) => {
      const { id } = await window.disot.collections.create('trip');
      for (const cid of cids.slice(0, 3)) await window.disot.collections.add(id, cid);
      return id;
    }, cids);
    // Letting B in shares the collection with B, and making a reader an editor gives it more:
    // the user approves either, as any share.
    const letIn = async (button, role, { late = false } = {}) => {
      const joining = await h.startInPage(a.page, { method: 'collection_member', params: { id, did: sb.did, role } });
      // (Late: past the 30 s a request that asks nothing of the user may take.)
      if (late) await new Promise((r) => setTimeout(r, 31_000));
      const shown = await h.answerPrompt(a.browser, button);
      const may = role === 'reader' ? 'read' : 'read and edit';
      assert.match(shown, new RegExp(`asks you to let this peer ${may} the collection “trip” \\(3 entries\\)`));
      assert.ok(shown.includes(sb.did), shown);
      return joining();
    };
    const members = async () => {
      const { editors, readers } = await ui(popupA, 'collection_get', { id });
      return { editors, readers };
    };
    assert.equal((await letIn('#reject', 'reader')).error?.code, 4001, 'the user said no');
    assert.deepEqual(await members(), { editors: [], readers: [] }, 'and B is not in it');
    assert.deepEqual((await letIn('#approve', 'reader')).result?.readers, [sb.did]);
    assert.equal((await letIn('#reject', 'editor')).error?.code, 4001, 'no more than reading');
    assert.deepEqual(await members(), { editors: [], readers: [sb.did] }, 'B still only reads');
    assert.deepEqual((await letIn('#approve', 'editor')).result?.editors, [sb.did]);
    const asReader = await a.run((id, did) => window.disot.request({ method: 'collection_member', params: { id, did, role: 'reader' } }), id, sb.did);
    assert.deepEqual(asReader.readers, [sb.did], 'giving less asks nothing');
    assert.deepEqual((await letIn('#approve', 'editor', { late: true })).result?.editors, [sb.did],
      'an editor again, asked again; the page waits for the user\'s answer as long as for any prompt');
    const sharing = await h.startInPage(a.page, { method: 'share', params: { collection: id, to: sb.did, note: 'edit with me' } });
    assert.match(await h.answerPrompt(a.browser, '#approve'), /asks you to share the collection “trip” \(3 entries\) with:/);
    assert.ok((await sharing()).result);
    const atB = () => ui(popupB, 'collection_get', { id }).catch(() => null);
    await h.waitFor(async () => (await atB())?.entries.length === 3, { what: 'the collection at B' });
    assert.deepEqual((await atB()).editors, [sb.did]);
    // Apart: B closes; A adds the 4th, removes the 1st and renames; B, back but with no
    // network, adds the 5th, removes the 2nd and renames.
    await b.close();
    await h.waitFor(async () => !(await ui(popupA, 'ui_status')).peers.some((p) => p.peerId === sb.peerId), { what: 'B gone at A', timeout: 60_000 });
    await ui(popupA, 'collection_add', { id, cid: cids[3] });
    await ui(popupA, 'collection_remove', { id, cid: cids[0] });
    await ui(popupA, 'collection_rename', { id, name: 'trip 2026' });
    await openB([]);
    await ui(popupB, 'collection_add', { id, cid: cids[4] });
    await ui(popupB, 'collection_remove', { id, cid: cids[1] });
    await ui(popupB, 'collection_rename', { id, name: 'summer' });
    assert.deepEqual((await atB()).entries.map((e) => e.cid), [cids[0], cids[2], cids[4]], 'B alone: its own removal and addition');
    assert.equal((await ui(popupB, 'ui_status')).peers.length, 0, 'B had no peer meanwhile');
    await b.close();
    // Together again.
    await openB();
    const expected = [cids[2], cids[3], cids[4]].sort();
    const same = async () => {
      const [x, y] = [await ui(popupA, 'collection_get', { id }), await atB()];
      return y && JSON.stringify(x) === JSON.stringify(y) && JSON.stringify(x.entries.map((e) => e.cid).sort()) === JSON.stringify(expected) ? x : null;
    };
    const merged = await h.waitFor(same, { what: 'both to hold the same merged collection', timeout: 60_000 });
    assert.ok(['trip 2026', 'summer'].includes(merged.name), merged.name);
    h.log(`merged collection: ${merged.name}, ${merged.entries.length} entries`);
    // A page of it, and the list of collections, which gives no entries.
    const page = await ui(popupB, 'collection_get', { id, offset: 1, limit: 1 });
    assert.deepEqual([page.count, page.entries], [3, [merged.entries[1]]]);
    const listed = (await ui(popupB, 'collections_list')).find((c) => c.id === id);
    const { entries: _, ...withoutEntries } = merged;
    assert.deepEqual(listed, withoutEntries);
  });

  test('B killed while A\'s changes stream in: back, it keeps what it had saved and converges with A without the whole document sent again (bytes counted)', async () => {
    const entries = async (from, n) => {
      const out = [];
      for (let i = from; i < from + n; i++) {
        const cid = CID.createV1(raw.code, await sha256.digest(new TextEncoder().encode(`entry ${i}`)));
        out.push({ cid: cid.toString(), name: `entry-${i}.txt`, mime: 'text/plain', size: i });
      }
      return out;
    };
    const received = async () => (await ui(popupB, 'sync_status')).peers.find((p) => p.did === sa.did)?.bytesReceivedTotal ?? 0;
    const countAtB = async (id) => (await ui(popupB, 'collection_get', { id, limit: 0 }).catch(() => ({ count: 0 }))).count;
    /** Bytes received from A once they stop growing (sessions may still be closing). */
    const settled = async () => {
      let last = -1;
      return h.waitFor(async () => { const now = await received(); const done = now === last; last = now; return done ? now : null; }, { what: 'sessions to settle', interval: 1500 });
    };
    const { id } = await ui(popupA, 'collection_create', { name: 'big' });
    await ui(popupA, 'collection_member', { id, did: sb.did, role: 'reader' });
    for (let i = 0; i < 5000; i += 500) await ui(popupA, 'collection_add', { id, entries: await entries(i, 500) });
    const start = await received();
    await ui(popupA, 'share', { collection: id, to: sb.did, note: 'a big one' });
    await h.waitFor(async () => (await countAtB(id)) === 5000, { what: 'the 5,000 entries at B', timeout: 60_000 });
    const first = (await settled()) - start;
    // A adds 200 more in 20 changes; B is killed (SIGKILL) halfway, while they stream in.
    let atKill;
    for (let k = 0; k < 20; k++) {
      if (k === 9) atKill = await countAtB(id);
      await ui(popupA, 'collection_add', { id, entries: await entries(5000 + 10 * k, 10) });
      if (k === 9) {
        // Right after A's change: B's session for it is under way.
        process.kill(b.pid, 'SIGKILL');
        await b.close();
      }
    }
    await openB();
    const kept = await countAtB(id);
    assert.ok(kept >= 5000, `B kept what it had saved before the kill (${kept})`);
    await h.waitFor(async () => (await countAtB(id)) === 5200, { what: 'all 5,200 entries at B', timeout: 60_000 });
    const resumed = await settled();
    h.log(`first sync of 5,000 entries: ${first} bytes; B held ${atKill} entries just before A's 10th change of 10 and the kill, ${kept} after the restart; the sync of the rest after it: ${resumed} bytes (${(resumed / first).toFixed(3)} of the first)`);
    assert.ok(resumed > 0, 'something was sent after the restart');
    // What B lacked is 10 or 11 changes of 10 entries; the whole document again would be at
    // least the first sync's bytes.
    assert.ok(resumed < first / 2, `only what B lacked was sent after the restart (${resumed} bytes, ${first} the first time)`);
    assert.deepEqual(await ui(popupB, 'collection_get', { id }), await ui(popupA, 'collection_get', { id }), 'the same document on both');
  });
});

describe('share and sync between Chromium and Firefox', () => {
  test('A (Chromium) shares an object and a collection with B (Firefox, trusting A at 90): B holds both; B\'s addition to the collection reaches A', async () => {
    const node = await new h.NativeNode(h.tempDir('node-sync-x')).start();
    const site = await h.startPageServer();
    const a = await h.launchPeer('chromium', { bootstrap: [node.wsAddr], site, name: 'sync-x-a' });
    const b = await h.launchPeer('firefox', { bootstrap: [node.wsAddr], site, name: 'sync-x-b' });
    try {
      const popupA = await a.browser.open(`${a.browser.extensionBase}popup.html`);
      const sa = await ui(popupA, 'ui_status');
      const sb = await h.firefoxUi(b, 'ui_status');
      await h.firefoxUi(b, 'trust_set', { did: sa.did, level: 90 });
      const object = await a.run(() => window.disot.cas.put(new Uint8Array(300 * 1024).fill(9), { name: 'for-firefox.bin' }));
      const { id } = await ui(popupA, 'collection_create', { name: 'across browsers' });
      await ui(popupA, 'collection_add', { id, cid: object.cid, name: 'for-firefox.bin' });
      await ui(popupA, 'collection_member', { id, did: sb.did, role: 'editor' });
      await ui(popupA, 'share', { cid: object.cid, to: sb.did, note: 'to Firefox' });
      await ui(popupA, 'share', { collection: id, to: sb.did });
      await h.waitFor(async () => (await h.firefoxUi(b, 'shares_list')).sharedWithMe.find((s) => s.cid === object.cid)?.held, { what: 'the share and its bytes in Firefox', timeout: 90_000 });
      await h.waitFor(async () => (await h.firefoxUi(b, 'collection_get', { id }).catch(() => null))?.entries.length === 1, { what: 'the collection in Firefox', timeout: 30_000 });
      const cid = CID.createV1(raw.code, await sha256.digest(new TextEncoder().encode('from firefox'))).toString();
      await h.firefoxUi(b, 'collection_add', { id, cid, name: 'from-firefox.txt' });
      await h.waitFor(async () => (await ui(popupA, 'collection_get', { id })).entries.some((e) => e.cid === cid), { what: 'B\'s addition at A', timeout: 30_000 });
      assert.deepEqual(await h.firefoxUi(b, 'collection_get', { id }), await ui(popupA, 'collection_get', { id }), 'one document on both');
    } finally {
      await a.close();
      await b.close();
    }
  });
});
