// Loads the WASM node once per context and answers requests with it. Used by Chrome's
// offscreen document and Firefox's background page; it holds no logic of its own.
import init, { start } from './pkg/disot_wasm.js';
import { errorBody } from './sender.js';

const api = globalThis.browser ?? globalThis.chrome;
let booting = null;

async function boot(platform, openPrompt) {
  // Ask the browser not to evict the store under storage pressure (best effort: the answer
  // depends on the browser's policy; extensions with unlimitedStorage are usually kept).
  navigator.storage?.persist?.().catch(() => {});
  await init({ module_or_path: api.runtime.getURL('pkg/disot_wasm_bg.wasm') });
  let config = {};
  try {
    config = await (await fetch(api.runtime.getURL('config.json'))).json();
  } catch (e) {
    console.warn('disot: no usable config.json, starting without default bootstrap nodes', e);
  }
  return start(
    {
      defaultBootstrap: Array.isArray(config.bootstrap) ? config.bootstrap : [],
      defaultIceServers: Array.isArray(config.iceServers) ? config.iceServers : [],
      logLevel: typeof config.logLevel === 'string' ? config.logLevel : undefined,
      platform,
    },
    openPrompt,
  );
}

/**
 * The running node, started on first call. A failed start is retried on the next call.
 * `openPrompt(id)` must open the approval prompt for permission request `id`.
 */
export function getNode(platform, openPrompt) {
  booting ??= boot(platform, openPrompt).catch((e) => {
    booting = null;
    throw e;
  });
  return booting;
}

/** Answer one request; always resolves to the JSON text of `{result}` or `{error}`. */
export async function handle(platform, openPrompt, kind, origin, body) {
  let node;
  try {
    node = await getNode(platform, openPrompt);
  } catch (e) {
    console.error('disot: node failed to start', e);
    return errorBody(4900, `disot peer failed to start: ${e?.message ?? e}`);
  }
  return node.request(kind, origin, body);
}
