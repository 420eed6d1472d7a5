// Requests from the extension's own pages (popup, options) to the node.
const api = globalThis.browser ?? globalThis.chrome;

export async function call(method, params) {
  const body = JSON.stringify(params === undefined ? { method } : { method, params });
  const reply = await api.runtime.sendMessage({ to: 'background', body });
  const parsed = JSON.parse(reply?.body ?? '{"error":{"code":4900,"message":"no answer"}}');
  if (parsed.error) throw Object.assign(new Error(parsed.error.message), { code: parsed.error.code });
  return parsed.result;
}
