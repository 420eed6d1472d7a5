// How this browser frees a buffer's memory before its next garbage collection (Chrome): it
// does not, for buffers the browser made or was given (a message's, a Blob's bytes).
//
// Chrome keeps the memory of such a buffer until the browser's own handle to it is collected,
// even once JavaScript has detached it; and a detached buffer no longer counts towards the
// collector's measure of memory in use, so the next collection comes later. Detaching the
// pieces of a 1 GiB upload made the extension's process hold 1 GiB more, not less. They are
// left to the collector.

/** Leave `buffer` to the collector (see above). */
export function releaseReceived() {}
