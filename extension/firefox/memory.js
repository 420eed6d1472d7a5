// How this browser frees a buffer's memory before its next garbage collection (Firefox).
//
// Buffers of bulk content (an upload's pieces, Blob reads) are garbage as soon as they are
// stored or hashed, and Firefox's collector lets hundreds of MiB of them pile up in the page's
// process (where the content frame runs). Detaching a buffer frees its bytes at once.

/** Free `buffer` now. Nothing may use it afterwards (a view of it would read as empty). */
export function releaseReceived(buffer) {
  if (!buffer || buffer.detached || typeof buffer.transfer !== 'function') return;
  try {
    buffer.transfer(0);
  } catch {
    // Not ours to free (a shared or fixed buffer): the collector frees it.
  }
}
