// Requests from the extension's own pages (popup, options) to the node.
const api = globalThis.browser ?? globalThis.chrome;

export async function call(method, params) {
  const body = JSON.stringify(params === undefined ? { method } : { method, params });
  const reply = await api.runtime.sendMessage({ to: 'background', body });
  const parsed = JSON.parse(reply?.body ?? '{"error":{"code":4900,"message":"no answer"}}');
  if (parsed.error) throw Object.assign(new Error(parsed.error.message), { code: parsed.error.code });
  return parsed.result;
}

/**
 * Text a site or a peer chose (a name, a note, an error that repeats what a peer said), as one
 * line of at most `max` characters: line breaks and other control characters would let it
 * draw lines that look like the page's own (another recipient, a verified peer), and
 * invisible format characters (direction overrides) reorder what is shown around it.
 */
export function oneLine(text, max = 200) {
  const flat = String(text).replace(/[\p{Cf}]+/gu, '').replace(/[\p{Cc}\p{Zl}\p{Zp}]+/gu, ' ');
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

/** JSON to show as it will be signed or sent, with every invisible or line-breaking character
 * written as its escape, so that a value cannot draw lines (or reorder them) on screen. */
export function visibleJson(value) {
  // (Its own line breaks stay: JSON has escaped those in strings already.)
  return JSON.stringify(value, null, 2).replace(/(?!\n)[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, (c) => {
    const code = c.codePointAt(0);
    return code > 0xffff ? `\\u{${code.toString(16)}}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}
