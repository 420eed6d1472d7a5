// Node 20 support for the js-libp2p interop peer (loaded with --import).
// Node 20 lacks Promise.withResolvers (used by libp2p 3.x deps)
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
if (typeof globalThis.WebSocket !== 'function') {
  console.error('WARNING: global WebSocket missing; run node with --experimental-websocket')
}
