// The reference peer for interop tests: js-libp2p with WebSocket, circuit relay v2, the
// browser-to-browser `/webrtc` transport and Bitswap (@helia/bitswap), driven by JSON lines on
// stdin (put, get, dial, connections) and reporting JSON lines on stdout.
// Usage: node --experimental-websocket --import ./polyfill.mjs peer.mjs <relay-multiaddr>
import { createLibp2p } from 'libp2p'
import { webSockets } from '@libp2p/websockets'
import { webRTC } from '@libp2p/webrtc'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { noise } from '@libp2p/noise'
import { yamux } from '@libp2p/yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { multiaddr } from '@multiformats/multiaddr'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { createHash } from 'node:crypto'
import { createInterface } from 'node:readline'
// @helia/bitswap 4.x only exports the Helia mixin `withBitswap`; the standalone
// Bitswap class is not in its "exports" map, so import the file directly.
const { Bitswap } = await import(new URL('../../node_modules/@helia/bitswap/dist/src/bitswap.js', import.meta.url))

const relayAddr = process.argv[2]
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const err = (e) => out({ event: 'error', message: e?.message ?? String(e) })

const connInfo = (c) => ({
  remotePeer: c.remotePeer.toString(),
  remoteAddr: c.remoteAddr.toString(),
  direction: c.direction,
  status: c.status,
  limited: c.limits != null,
  webrtc: c.remoteAddr.toString().includes('/webrtc'),
  multiplexer: c.multiplexer,
  encryption: c.encryption
})

const blockstore = new MemoryBlockstore()

const node = await createLibp2p({
  addresses: { listen: ['/p2p-circuit', '/webrtc'] },
  transports: [
    webSockets(),
    circuitRelayTransport({ reservationCompletionTimeout: 20_000 }),
    webRTC()
  ],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  // browser-style gater would refuse loopback / insecure ws; allow everything
  connectionGater: { denyDialMultiaddr: () => false },
  services: {
    identify: identify(),
    ping: ping()
  }
})

node.addEventListener('connection:open', (e) => out({ event: 'connection', state: 'open', ...connInfo(e.detail) }))
node.addEventListener('connection:close', (e) => out({ event: 'connection', state: 'close', ...connInfo(e.detail) }))

const bitswap = new Bitswap({
  libp2p: node,
  blockstore,
  logger: node.logger,
  // no content routing: only want from already-connected peers
  routing: { async * findProviders () {} },
  getHasher: async (code) => { if (code === sha256.code) return sha256; throw new Error(`unsupported hasher 0x${code.toString(16)}`) }
}, {})
await bitswap.start()

const hasCircuitWebrtc = () => node.getMultiaddrs().some(a => {
  const s = a.toString(); return s.includes('/p2p-circuit') && s.includes('/webrtc')
})

if (relayAddr != null) {
  try {
    await node.dial(multiaddr(relayAddr))
  } catch (e) {
    out({ event: 'error', message: `relay dial failed: ${e.message}` })
    process.exit(1)
  }
  // wait for the reservation to show up as a /p2p-circuit address
  await new Promise((resolve) => {
    const t = setTimeout(() => { out({ event: 'error', message: 'timeout waiting for relay reservation' }); resolve() }, 30_000)
    const check = () => {
      if (hasCircuitWebrtc()) { clearTimeout(t); node.removeEventListener('self:peer:update', check); resolve() }
    }
    node.addEventListener('self:peer:update', check)
    check()
  })
}

out({ event: 'ready', peerId: node.peerId.toString(), addrs: node.getMultiaddrs().map(String) })

async function handle (msg) {
  switch (msg.cmd) {
    case 'put': {
      const bytes = new Uint8Array(Buffer.from(msg.bytesBase64, 'base64'))
      const cid = CID.createV1(raw.code, await sha256.digest(bytes))
      await blockstore.put(cid, bytes)
      await bitswap.notify(cid) // send to peers already wanting it
      return { event: 'put', cid: cid.toString() }
    }
    case 'get': {
      const cid = CID.parse(msg.cid)
      const bytes = await bitswap.want(cid, { signal: AbortSignal.timeout(msg.timeoutMs ?? 30_000) })
      const digest = await sha256.digest(bytes)
      if (cid.multihash.code === sha256.code &&
          Buffer.compare(Buffer.from(digest.digest), Buffer.from(cid.multihash.digest)) !== 0) {
        throw new Error('hash mismatch')
      }
      await blockstore.put(cid, bytes)
      return { event: 'got', cid: cid.toString(), sha256hex: createHash('sha256').update(bytes).digest('hex'), size: bytes.byteLength }
    }
    case 'dial': {
      // node-datachannel occasionally (~5% on this box) closes the RTCPeerConnection
      // during ICE and js-libp2p then hangs until the signal fires: retry with a
      // short per-attempt timeout.
      const attempts = msg.attempts ?? 3
      let conn, lastErr
      let attempt = 0
      for (attempt = 1; attempt <= attempts; attempt++) {
        try {
          conn = await node.dial(multiaddr(msg.addr), { signal: AbortSignal.timeout(msg.timeoutMs ?? 10_000) })
          break
        } catch (e) {
          lastErr = e
          out({ event: 'dial-retry', attempt, message: e?.message ?? String(e) })
        }
      }
      if (conn == null) throw lastErr
      const ra = conn.remoteAddr.toString()
      const isWebrtc = ra.includes('/webrtc')
      return {
        event: 'dialed',
        attempts: attempt,
        remoteAddr: ra,
        remotePeer: conn.remotePeer.toString(),
        limited: conn.limits != null,
        transport: isWebrtc && conn.limits == null ? 'webrtc-direct-p2p (not relayed)' : (conn.limits != null ? 'relayed (limited)' : 'other'),
        multiplexer: conn.multiplexer,
        encryption: conn.encryption
      }
    }
    case 'ping': {
      const rtt = await node.services.ping.ping(multiaddr(msg.addr))
      return { event: 'pong', rtt }
    }
    case 'peer': {
      const { peerIdFromString } = await import('@libp2p/peer-id')
      const peer = await node.peerStore.get(peerIdFromString(msg.id))
      return { event: 'peer', protocols: peer.protocols, bitswapPeers: [...bitswap.wantList.peers.keys()].map(String) }
    }
    case 'connections':
      return { event: 'connections', connections: node.getConnections().map(connInfo) }
    case 'addrs':
      return { event: 'addrs', addrs: node.getMultiaddrs().map(String) }
    case 'quit':
      await shutdown()
      return null
    default:
      throw new Error(`unknown cmd ${msg.cmd}`)
  }
}

const rl = createInterface({ input: process.stdin })
rl.on('line', (line) => {
  if (line.trim() === '') return
  let msg
  try { msg = JSON.parse(line) } catch (e) { err(e); return }
  handle(msg).then((r) => { if (r != null) out(r) }, (e) => out({ event: 'error', cmd: msg.cmd, message: e?.message ?? String(e) }))
})

async function shutdown () {
  try { await bitswap.stop(); await node.stop() } finally { process.exit(0) }
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
