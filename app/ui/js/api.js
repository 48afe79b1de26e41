// The public REST API, as the UI uses it: the API key (sessionStorage) goes in X-API-Key, gallery paths go to
// the chosen collection, and every failure becomes an ApiError carrying the service's {"error": {"code", "message"}}.

const KEY = 'faceid.apiKey';
const COLLECTION = 'faceid.collection';
const KNOWN = 'faceid.collections';  // names typed by hand (a key that cannot list them), newest first
const MAX_KNOWN = 20;
export const DEFAULT = 'default';
export const COLLECTION_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;  // as the server's (app/services/collections.py)

export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || '',
  set: (v) => (v ? sessionStorage.setItem(KEY, v) : sessionStorage.removeItem(KEY)),
};

const stored = (k) => { try { return localStorage.getItem(k); } catch { return null; } };
const store = (k, v) => { try { if (v === null) localStorage.removeItem(k); else localStorage.setItem(k, v); } catch { /* private mode */ } };

/**
 * The collection the pages act on: read from localStorage once (a reload stays in it), then this tab's own
 * (another tab switching does not move this one under the user's feet).
 */
let current = (() => {
  const saved = stored(COLLECTION);
  return saved && COLLECTION_NAME.test(saved) ? saved : DEFAULT;
})();

export const collection = {
  get: () => current,
  set(name) {
    current = name && COLLECTION_NAME.test(name) ? name : DEFAULT;
    store(COLLECTION, current === DEFAULT ? null : current);
  },
  /** Names typed by hand before (a key that cannot list the collections still finds them again). */
  known() {
    try {
      const names = JSON.parse(stored(KNOWN) || '[]');
      return Array.isArray(names) ? names.filter((n) => typeof n === 'string' && COLLECTION_NAME.test(n)) : [];
    } catch { return []; }
  },
  remember(name) {
    if (name === DEFAULT || !COLLECTION_NAME.test(name)) return;
    store(KNOWN, JSON.stringify([name, ...this.known().filter((n) => n !== name)].slice(0, MAX_KNOWN)));
  },
  forget(name) { store(KNOWN, JSON.stringify(this.known().filter((n) => n !== name))); },
};

// Service-wide routes stay unprefixed; every other path is a gallery route and goes to the collection. Listing
// the service-wide ones (not the gallery ones) fails safe: a gallery route missed here would act on `default`
// unseen, a service-wide one missed would be a loud 404.
const SERVICE_WIDE = /^\/(?:ready|metrics|admin|webhooks|collections|docs|openapi\.json)(?:[/?]|$)/;

/** `path` as it addresses collection `name` (the chosen one unless given): /identify -> /collections/doors/identify. */
export function galleryPath(path, name = current) {
  if (SERVICE_WIDE.test(path) || name === DEFAULT) return path;
  return `/collections/${encodeURIComponent(name)}${path}`;
}

/** The readiness of collection `name`: its model, operating point and counts (any key that reaches it). */
export const readyPath = (name = current) => `/collections/${encodeURIComponent(name)}/ready`;
export const calibrationPath = (name = current) => `/collections/${encodeURIComponent(name)}/calibration`;

export class ApiError extends Error {
  constructor(status, code, message, detail) {
    super(message);
    Object.assign(this, { status, code, detail });
  }

  /** One line for people: what went wrong and, for 401/403, what to do. */
  get text() { return this.say(); }

  /**
   * The message in the user's words: `photos` names the request's images in order ("image 1" -> "Photo B");
   * bytes and pixels in MB and MP; the API's code stays at the end for a bug report.
   */
  say(photos = ['this photo']) {
    if (this.status === 401) return `401 unauthorized: ${this.message}. Enter an API key at the top of the page.`;
    if (this.code === 'collection_forbidden') return `403 forbidden: ${this.message}. Choose one of its collections at the top of the page, or use another key.`;
    if (this.code === 'unknown_collection') return `${cap(this.message)} (any more): choose another collection at the top of the page. (404 unknown_collection)`;
    if (this.status === 403) return `403 forbidden: ${this.message}. Use a key with that scope.`;
    if (this.status === 0) return this.message;
    let m = humane(this.message, photos);
    if (this.code === 'ambiguous_face') {
      m = `${photos[0]} has ${this.detail?.faces?.length || 'several'} faces: pick the one you mean`;
    }
    let extra = '';
    if (Array.isArray(this.detail) && this.detail.length && this.detail[0].msg) {
      extra = ` (${this.detail.map((d) => `${(d.loc || []).join('.')}: ${d.msg}`).join('; ')})`;
    }
    return `${cap(m)}${extra}. (${this.status} ${this.code})`;
  }
}

/** A sentence's capital, unless it starts with a file name ("couple.jpg has..."). */
const cap = (s) => (/^\S+\.\w+\b/.test(s) ? s : s.charAt(0).toUpperCase() + s.slice(1));
const MB = (n) => `${(Number(n) / 1024 / 1024).toFixed(1)} MB`;
const MP = (n) => `${(Number(n) / 1e6).toFixed(0)} MP`;

/** The API's wording ("image 0", "file 0 of field 'file'", bytes, pixels) as a person would say it. */
function humane(message, photos) {
  return String(message)
    .replace(/^(?:file \d+ of )?field '\w+' is empty$/, `${photos[0]} is empty`)
    .replace(/\bimage is (\d+)x(\d+); at most (\d+) pixels/, (_, w, hh, max) =>
      `${photos[0]} is ${w}×${hh} (${MP(w * hh)}); the server takes at most ${MP(max)}`)
    .replace(/larger than (\d+) bytes/, (_, n) => `larger than ${MB(n)}`)
    .replace(/has 0 usable faces \((\d+) detected\): face is (\d+) px, (\w+) needs at least (\d+) px;.*$/,
      (_, n, px, purpose, min) => `has ${n === '1' ? 'a face' : `${n} faces`}, but too small: ${px} px wide, ${purpose} needs at least ${min} px (a closer or larger photo)`)
    .replace(/: face is (\d+) px, (\w+) needs at least (\d+) px/, (_, px, purpose, min) =>
      `: the face is too small (${px} px, ${purpose} needs at least ${min} px)`)
    .replace(/\bimage (\d+)\b/g, (_, i) => photos[Number(i)] || photos[0]);
}

const url = (path, query) => {
  const u = new URL(path.replace(/^\//, ''), document.baseURI);
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null && v !== '') u.searchParams.set(k, v);
  return u;
};

/**
 * request('POST', '/identify', {form: FormData, query: {top_k: 5}}) -> parsed JSON (null for 204);
 * `json` sends a JSON body; `raw: true` returns the Response (for images). A gallery path goes to the chosen
 * collection, or to `collection` where given (a batch keeps the collection it started in).
 */
export async function request(method, path, { json, form, query, raw = false, collection: name } = {}) {
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
    resp = await fetch(url(galleryPath(path, name), query), { method, headers, body });
  } catch (e) {
    window.dispatchEvent(new CustomEvent('faceid:unreachable'));  // main.js: the status line says so
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
  parts.push(q(url(galleryPath(path), query).href));
  return parts.join(' ');
}
