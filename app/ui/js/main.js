// Page router (location.hash), the API key field, the collection switcher, the server line, paste routing, copy
// buttons.
import { DEFAULT, apiKey, collection, readyPath, request } from './api.js';
import * as collections from './collections.js';
import { $, say } from './dom.js';
import * as identify from './identify.js';
import * as enroll from './enroll.js';
import * as gallery from './gallery.js';
import * as person from './person.js';
import * as history from './history.js';
import * as unknown from './unknown.js';
import * as verify from './verify.js';
import * as model from './model.js';

const pages = { identify, enroll, gallery, person, history, unknown, verify, model };
let current = null;

function route() {
  const [name, arg] = location.hash.slice(1).split('/'); // #person/12: a page and its argument
  if (!pages[name] && current) return;  // an in-page anchor (the skip link): stay on this page
  const next = pages[name] ? name : 'identify';
  for (const p of Object.keys(pages)) $(`page-${p}`).hidden = p !== next;
  for (const a of document.querySelectorAll('nav a[data-page]')) {
    if (a.dataset.page === (pages[next].navPage || next)) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const changed = current !== next;
  current = next;
  pages[next].show?.(arg);
  if (changed && location.hash) $('main').focus({ preventScroll: true });
}

// The status line follows the server: a failed request (or the poll) says it is unreachable, and it is
// polled every few seconds until it answers again.
const POLL_UP_MS = 30_000;
const POLL_DOWN_MS = 3_000;
let down = false;
let poll = null;

async function serverLine() {
  const line = $('server-line');
  try {
    const name = collection.get();
    let r = await request('GET', '/ready');  // service-wide: whether it is up
    // a keyed server shows the details to keyed clients only (FACEID_PUBLIC_METRICS); another collection's (and
    // the default's for a key bound to collections) come from /collections/{name}/ready
    let why = '';
    if (name !== DEFAULT || (!r.model_name && apiKey.get())) {
      try {
        r = await request('GET', readyPath(name));
      } catch (e) {
        if (e.status === 0) throw e;
        r = {};
        why = e.text;
      }
    }
    line.textContent = `Collection ${name} · ${r.model_name
      ? `${r.identities} identities, ${r.faces} faces · ${r.model_name} (${r.model_version}) on ${r.device}`
      : why || 'server ready (an API key shows the model and gallery size)'}`;
    line.classList.remove('down');
    down = false;
  } catch (e) {
    line.textContent = e.status === 0
      ? 'The server cannot be reached: it may be down or restarting. Checking again every few seconds…'
      : `server not ready: ${e.text}`;
    line.classList.toggle('down', e.status === 0);
    down = e.status === 0;
  }
  clearTimeout(poll);
  poll = setTimeout(serverLine, down ? POLL_DOWN_MS : POLL_UP_MS);
}

window.addEventListener('faceid:unreachable', () => {
  if (down) return;  // already said and polled (the poll's own failures land here too)
  down = true;
  serverLine();
});

/** Whether the server takes the key: a read of one identity (401: not a valid key; 403: valid, other scopes). */
async function checkKey() {
  const msg = $('key-msg');
  if (!apiKey.get()) { say(msg, ''); return; }
  try {
    await request('GET', '/identities', { query: { limit: 1 } });
    say(msg, 'Key accepted.', 'ok');
  } catch (e) {
    if (e.status === 401) say(msg, 'This key is not valid: the server refused it.', 'error');
    else if (e.code === 'collection_forbidden') say(msg, `Key accepted (it cannot reach ${collection.get()}: choose one of its collections).`, 'ok');
    else if (e.status === 403) say(msg, 'Key accepted (it cannot read the gallery).', 'ok');
    else say(msg, e.text, 'error');
  }
}

function keyField() {
  const input = $('api-key');
  input.value = apiKey.get();
  $('key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    apiKey.set(input.value.trim());
    checkKey();
    route();
    serverLine();
    collections.refresh();
  });
  $('key-clear').addEventListener('click', () => {
    input.value = '';
    apiKey.set('');
    say($('key-msg'), '');
    route();
    serverLine();
    collections.refresh();
  });
}

document.addEventListener('paste', (e) => {
  const target = e.target;
  if (target instanceof HTMLInputElement && target.type !== 'file') return; // pasting text into a field
  const files = [...(e.clipboardData?.files || [])];
  if (files.length && pages[current].paste) {
    e.preventDefault();
    pages[current].paste(files);
  }
});

document.addEventListener('click', async (e) => {
  const btn = e.target.closest('button[data-copy]');
  if (!btn) return;
  try {
    await navigator.clipboard.writeText($(btn.dataset.copy).textContent);
    btn.textContent = 'Copied';
  } catch {
    btn.textContent = 'Select and copy by hand';
  }
});

/**
 * Another collection: every page forgets what it showed of the previous one at once (no card of A stays on
 * screen while B's load), then the page shown loads again; a person's page goes back to the gallery (its id
 * is the other collection's).
 */
function switched() {
  for (const p of Object.values(pages)) p.switched?.();
  serverLine();
  if (current === 'person') location.hash = '#gallery';
  else route();
}

for (const p of Object.values(pages)) p.init?.({ refreshServerLine: serverLine });
collections.init({ switched });
keyField();
window.addEventListener('hashchange', route);
route();
serverLine();
