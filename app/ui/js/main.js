// Page router (location.hash), the API key field, the server line, paste routing, copy buttons.
import { apiKey, request } from './api.js';
import { $ } from './dom.js';
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

async function serverLine() {
  const line = $('server-line');
  try {
    const r = await request('GET', '/ready');
    // a keyed server shows the details to keyed clients only (FACEID_PUBLIC_METRICS)
    line.textContent = r.model_name
      ? `${r.model_name} (${r.model_version}) on ${r.device} · ${r.identities} identities, ${r.faces} faces`
      : 'server ready (an API key shows the model and gallery size)';
  } catch (e) {
    line.textContent = `server not ready: ${e.text}`;
  }
}

function keyField() {
  const input = $('api-key');
  input.value = apiKey.get();
  $('key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    apiKey.set(input.value.trim());
    route();
    serverLine();
  });
  $('key-clear').addEventListener('click', () => {
    input.value = '';
    apiKey.set('');
    route();
    serverLine();
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

for (const p of Object.values(pages)) p.init?.({ refreshServerLine: serverLine });
keyField();
window.addEventListener('hashchange', route);
route();
serverLine();
