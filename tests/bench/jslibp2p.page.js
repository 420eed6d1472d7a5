// The reference implementation in the browser, for the P2P benchmark: a js-libp2p peer with
// WebSocket, circuit relay v2 and `/webrtc`, driven from the benchmark through `globalThis.jsBench`.
// Bundled by esbuild (scripts/bench.sh) into one IIFE that the benchmark evaluates in an
// extension page of each browser, beside the extension's own peer.
import { createLibp2p } from 'libp2p'
import { webSockets } from '@libp2p/websockets'
import { webRTC } from '@libp2p/webrtc'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { noise } from '@libp2p/noise'
import { yamux } from '@libp2p/yamux'
import { identify } from '@libp2p/identify'
import { multiaddr } from '@multiformats/multiaddr'

const PROTOCOL = '/disot-bench/1.0.0'
const PIECE = 64 * 1024
let node

globalThis.jsBench = {
  /** Start, take a reservation on the relay; resolves with the `/webrtc` address peers dial. */
  async start (relayAddr) {
    node = await createLibp2p({
      addresses: { listen: ['/p2p-circuit', '/webrtc'] },
      transports: [webSockets(), circuitRelayTransport(), webRTC()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      // The browser's default gater refuses plain ws and loopback addresses: this is loopback.
      connectionGater: { denyDialMultiaddr: () => false },
      // The default 6 s per address is sometimes too short for the relayed signalling and
      // ICE on two busy cores; the benchmark would stop with "signal timed out".
      connectionManager: { dialTimeout: 30_000, addressDialTimeout: 20_000 },
      services: { identify: identify() }
    })
    await node.dial(multiaddr(relayAddr))
    const deadline = Date.now() + 20_000
    for (;;) {
      const addr = node.getMultiaddrs().map(String).find((a) => a.includes('/p2p-circuit/webrtc'))
      if (addr != null) return addr
      if (Date.now() > deadline) throw new Error('no relay reservation')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  },

  /** Send `total` random bytes on every stream opened on the benchmark protocol. */
  async serve (total) {
    const piece = new Uint8Array(PIECE)
    crypto.getRandomValues(piece)
    await node.handle(PROTOCOL, async (stream) => {
      for (let sent = 0; sent < total; sent += PIECE) {
        if (!stream.send(piece.slice())) await stream.onDrain()
      }
      await stream.close()
    })
  },

  /** Dial `addr` (`/webrtc` through the relay), then read `total` bytes from it. */
  async fetch (addr, total) {
    let t0 = performance.now()
    let conn
    let retried = false
    try {
      conn = await node.dial(multiaddr(addr))
    } catch (e) {
      // Once more, and say so: the dial time is then that of the second try.
      console.warn('js-libp2p dial failed, retrying:', e)
      retried = String(e?.message ?? e)
      t0 = performance.now()
      conn = await node.dial(multiaddr(addr))
    }
    const dialMs = performance.now() - t0
    const t1 = performance.now()
    const stream = await conn.newStream(PROTOCOL).catch((e) => {
      throw new Error(`opening the stream after the dial${retried ? ' (retried)' : ''}: ${e?.name}: ${e?.message}`)
    })
    let got = 0
    for await (const chunk of stream) got += chunk.byteLength
    if (got !== total) throw new Error(`got ${got} of ${total} bytes`)
    return { dialMs, ms: performance.now() - t1, limited: conn.limits != null, addr: conn.remoteAddr.toString(), retried }
  },

  /** Dial `addr` (`/webrtc` through the relay) and hang up (every connection to the peer, the
   * relayed one too, so that the next dial starts from nothing): {ms} until the dial resolved,
   * or {failed} with why if it failed twice (like `fetch`, it tries once more and says so). */
  async dial (addr) {
    let retried = false
    for (;;) {
      const t0 = performance.now()
      try {
        const conn = await node.dial(multiaddr(addr))
        const ms = performance.now() - t0
        if (conn.limits != null) throw new Error(`js-libp2p stayed on the relay: ${conn.remoteAddr}`)
        await node.hangUp(conn.remotePeer)
        return { ms, retried }
      } catch (e) {
        if (retried) return { failed: String(e?.message ?? e), retried }
        retried = String(e?.message ?? e)
      }
    }
  },

  async stop () {
    await node?.stop()
  }
}
