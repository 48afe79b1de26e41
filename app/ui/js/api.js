// The public REST API, as the UI uses it: the API key (sessionStorage) goes in X-API-Key, and every
// failure becomes an ApiError carrying the service's {"error": {"code", "message"}}.

const KEY = 'faceid.apiKey';

export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || '',
  set: (v) => (v ? sessionStorage.setItem(KEY, v) : sessionStorage.removeItem(KEY)),
};

export class ApiError extends Error {
  constructor(status, code, message, detail) {
    super(message);
    Object.assign(this, { status, code, detail });
  }

  /** One line for people: what went wrong and, for 401/403, what to do. */
  get text() {
    if (this.status === 401) return `401 unauthorized: ${this.message}. Enter an API key at the top of the page.`;
    if (this.status === 403) return `403 forbidden: ${this.message}. Use a key with that scope.`;
    if (this.status === 0) return this.message;
    let extra = '';
    if (Array.isArray(this.detail) && this.detail.length && this.detail[0].msg) {
      extra = ` (${this.detail.map((d) => `${(d.loc || []).join('.')}: ${d.msg}`).join('; ')})`;
    }
    return `${this.status} ${this.code}: ${this.message}${extra}`;
  }
}

const url = (path, query) => {
  const u = new URL(path.replace(/^\//, ''), document.baseURI);
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null && v !== '') u.searchParams.set(k, v);
  return u;
};

/**
 * request('POST', '/identify', {form: FormData, query: {top_k: 5}}) -> parsed JSON (null for 204);
 * `json` sends a JSON body; `raw: true` returns the Response (for images).
 */
export async function request(method, path, { json, form, query, raw = false } = {}) {
  const headers = {};
  const key = apiKey.get();
  if (key) headers['X-API-Key'] = key;
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form) body = form;
  let resp;
  try {
    resp = await fetch(url(path, query), { method, headers, body });
  } catch (e) {
    throw new ApiError(0, 'network', `could not reach the server (${e.message})`);
  }
  if (!resp.ok) {
    let err = {};
    try { err = (await resp.json()).error || {}; } catch { /* not our JSON: keep the status */ }
    throw new ApiError(resp.status, err.code || 'error', err.message || resp.statusText, err.detail);
  }
  if (raw) return resp;
  if (resp.status === 204) return null;
  return resp.json();
}

/** An image the API serves (needs the key header, so <img src> cannot fetch it): a Blob. */
export async function imageBlob(path) {
  return (await request('GET', path, { raw: true })).blob();
}

const q = (s) => `'${String(s).replace(/'/g, "'\\''")}'`;

/** The curl command that makes the same request; the key stays a variable, never printed. */
export function curl(method, path, { query, fields = {}, files = {} } = {}) {
  const parts = ['curl'];
  if (method !== 'GET' && !Object.keys(files).length && !Object.keys(fields).length) parts.push('-X', method);
  if (apiKey.get()) parts.push('-H', '"X-API-Key: $FACEID_API_KEY"');
  for (const [k, v] of Object.entries(fields)) parts.push('-F', q(`${k}=${v}`));
  for (const [k, name] of Object.entries(files)) parts.push('-F', q(`${k}=@${name}`));
  parts.push(q(url(path, query).href));
  return parts.join(' ');
}
