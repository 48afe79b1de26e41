// Unknown people: clusters of kept unknown faces (GET /unknown), largest first, each with its crops and its
// suggestion. Name one and its faces are enrolled (POST /unknown/{id}/enroll); dismiss it (never suggested again);
// open it to remove a wrong face (DELETE /unknown/faces/{id}); delete it. "Re-cluster now": POST /unknown/refine.
import { ApiError, imageBlob, request } from './api.js';
import { $, UrlBag, confirmDialog, h, say } from './dom.js';

const PAGE = 12;
const THUMBS = 8;
let ctx;
let offset = 0;
let seq = 0; // a newer load wins over a slower older one
const urls = new UrlBag();

export function init(context) {
  ctx = context;
  $('unknown-prev').addEventListener('click', () => { offset = Math.max(0, offset - PAGE); load(); });
  $('unknown-next').addEventListener('click', () => { offset += PAGE; load(); });
  $('unknown-refine').addEventListener('click', refine);
}

export function show() { load(); }

/** Another collection: its unknown people are not this one's. */
export function switched() {
  seq += 1;
  offset = 0;
  urls.clear();
  $('unknown-cards').replaceChildren();
  say($('unknown-msg'), '');
  pager(0, 0);
}

const fail = (e) => say($('unknown-msg'), e instanceof ApiError ? e.text : String(e), 'error');
const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

async function load(note = '') {
  const mine = ++seq;
  const cards = $('unknown-cards');
  cards.setAttribute('aria-busy', 'true');
  let page;
  try {
    page = await request('GET', '/unknown', { query: { offset, limit: PAGE } });
  } catch (e) {
    if (mine === seq) { cards.replaceChildren(); pager(0, 0); fail(e); cards.setAttribute('aria-busy', 'false'); }
    return;
  }
  if (mine !== seq) return;
  if (!page.items.length && offset > 0 && page.total > 0) {  // the last page emptied: step back
    offset = Math.max(0, Math.floor((page.total - 1) / PAGE) * PAGE);
    load(note);
    return;
  }
  urls.clear();
  say($('unknown-msg'), note || (page.total ? '' : 'Nobody unnamed yet: identify photos with "remember unknown faces" '
    + '(remember_unknown=true), or set FACEID_REMEMBER_UNKNOWN on the server.'), note ? 'ok' : 'info');
  cards.replaceChildren(...page.items.map(card));
  cards.setAttribute('aria-busy', 'false');
  pager(page.items.length, page.total);
}

function pager(n, all) {
  $('unknown-range').textContent = all ? `${offset + 1}–${offset + n} of ${all}` : '';
  $('unknown-prev').disabled = offset === 0;
  $('unknown-next').disabled = offset + n >= all;
}

function card(cluster) {
  const seen = new Date(cluster.last_seen).toLocaleString();
  const meta = h('p', { class: 'meta' }, `Person #${cluster.id} · ${plural(cluster.size, 'face')} · last seen ${seen}`);
  const hint = cluster.suggestion
    ? h('p', { class: 'suggestion' }, `Looks like ${cluster.suggestion.identity.label} (${cluster.suggestion.score.toFixed(3)})`)
    : null;
  const thumbs = h('ul', { class: 'crops', 'aria-label': `faces of person ${cluster.id}` });
  for (const id of cluster.face_ids) thumbs.append(h('li', {}, crop(id)));
  if (cluster.size > cluster.face_ids.length) thumbs.append(h('li', { class: 'more' }, `+${cluster.size - cluster.face_ids.length}`));
  const out = h('p', { class: 'msg', role: 'status' });
  const input = h('input', { type: 'text', maxlength: 200, autocomplete: 'off', 'aria-label': `name of person ${cluster.id}`,
    placeholder: 'Name', value: cluster.suggestion ? cluster.suggestion.identity.label : '' });
  const form = h('form', { class: 'row name' }, input, h('button', { type: 'submit' }, 'Name'));
  form.addEventListener('submit', (e) => { e.preventDefault(); name(cluster, input.value.trim(), out); });
  const tools = h('div', { class: 'tools' });
  const actions = h('div', { class: 'row actions' },
    h('button', { type: 'button', onclick: () => open(cluster, tools, out) }, 'Open'),
    h('button', { type: 'button', onclick: () => dismiss(cluster, out) }, 'Dismiss'),
    h('button', { type: 'button', class: 'danger', onclick: () => remove(cluster, out) }, 'Delete'));
  return h('li', { class: 'card', 'data-cluster': cluster.id }, meta, hint, thumbs, form, actions, tools, out);
}

function crop(faceId) {
  const img = h('img', { alt: `face ${faceId}`, width: 64, height: 64 });
  imageBlob(`/unknown/faces/${faceId}/crop`).then((b) => { img.src = urls.file(b); })
    .catch(() => { img.alt = `face ${faceId} (crop unavailable)`; });
  return img;
}

async function name(cluster, label, out) {
  if (!label) { say(out, 'Type a name first.', 'error'); return; }
  try {
    const r = await request('POST', `/unknown/${cluster.id}/enroll`, { json: { label } });
    load(`Enrolled ${plural(r.faces.length, 'face')} as ${r.identity.label}${r.created ? ' (new)' : ''}.`);
    ctx.refreshServerLine();
  } catch (e) {
    say(out, e instanceof ApiError ? e.text : String(e), 'error');
  }
}

async function dismiss(cluster, out) {
  try {
    await request('POST', `/unknown/${cluster.id}/dismiss`);
    load(`Person #${cluster.id} dismissed: not suggested again.`);
  } catch (e) {
    say(out, e instanceof ApiError ? e.text : String(e), 'error');
  }
}

async function remove(cluster, out) {
  if (!await confirmDialog(`Delete person #${cluster.id} and its ${plural(cluster.size, 'kept face')}?`, 'Delete')) return;
  try {
    await request('DELETE', `/unknown/${cluster.id}`);
    load(`Deleted person #${cluster.id}.`);
  } catch (e) {
    say(out, e instanceof ApiError ? e.text : String(e), 'error');
  }
}

async function open(cluster, tools, out) {
  const mine = seq;
  let detail;
  try {
    detail = await request('GET', `/unknown/${cluster.id}`);
  } catch (e) {
    say(out, e instanceof ApiError ? e.text : String(e), 'error');
    return;
  }
  if (mine !== seq) return;  // redrawn meanwhile, or another collection
  const list = h('ul', { class: 'crops', 'aria-label': `every face of person ${cluster.id}` });
  for (const f of detail.faces.slice(0, 200)) {
    list.append(h('li', { 'data-face': f.id }, crop(f.id),
      h('button', { type: 'button', class: 'small x', 'aria-label': `remove face ${f.id}`, title: 'not this person: remove',
        onclick: () => removeFace(f, out) }, '×')));
  }
  tools.replaceChildren(h('p', { class: 'hint' }, 'A face that is not this person: remove it.'), list);
}

async function removeFace(face, out) {
  try {
    await request('DELETE', `/unknown/faces/${face.id}`);
    load(`Removed face #${face.id}.`);
  } catch (e) {
    say(out, e instanceof ApiError ? e.text : String(e), 'error');
  }
}

async function refine() {
  try {
    const r = await request('POST', '/unknown/refine');
    load(`Re-clustered ${plural(r.faces, 'face')} in ${r.seconds.toFixed(1)} s.`);
  } catch (e) {
    fail(e);
  }
}
