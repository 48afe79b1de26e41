// Gallery: identities by label prefix, a page at a time; each card shows stored face crops and offers
// rename, merge another identity into it, delete a face, delete the identity (after confirmation).
// Above them, "Possible duplicates": pairs the server suspects are one person, merged in one click or
// marked as different people (GET /identities/duplicates, POST .../merge, POST .../not-duplicate).
import { ApiError, imageBlob, request } from './api.js';
import { $, UrlBag, confirmDialog, h, say } from './dom.js';

const PAGE = 12;
const THUMBS = 8;
let ctx;
let offset = 0;
let total = 0;
let seq = 0; // a newer load wins over a slower older one
const urls = new UrlBag();

export function init(context) {
  ctx = context;
  $('gallery-search').addEventListener('submit', (e) => { e.preventDefault(); offset = 0; load(); });
  $('gallery-prev').addEventListener('click', () => { offset = Math.max(0, offset - PAGE); load(); });
  $('gallery-next').addEventListener('click', () => { offset += PAGE; load(); });
}

export function show() { load(); }

const DUPS = 20;

async function duplicates() {
  const box = $('dups');
  let page;
  try {
    page = await request('GET', '/identities/duplicates', { query: { limit: DUPS } });
  } catch (e) {
    box.hidden = true;  // a key without read scope, an old server: the gallery works without it
    return;
  }
  box.hidden = page.items.length === 0;
  const more = page.total > page.items.length ? ` (the ${page.items.length} strongest of ${page.total})` : '';
  say($('dups-msg'), more ? `Showing${more}.` : '', 'info');
  $('dups-list').replaceChildren(...page.items.map(dupRow));
}

function dupFace(ident) {
  const img = h('img', { alt: `a face of ${ident.label}`, width: 48, height: 48 });
  request('GET', `/identities/${ident.id}`).then((d) => d.faces[0] && imageBlob(`/faces/${d.faces[0].id}/crop`))
    .then((b) => { if (b) img.src = urls.file(b); }).catch(() => {});
  return h('span', { class: 'dup-side' }, img,
    h('span', {}, `${ident.label} (#${ident.id}, ${ident.face_count} face${ident.face_count === 1 ? '' : 's'})`));
}

function dupRow(pair) {
  const { a, b } = pair;
  // the identity with more faces keeps its label; the other's faces move to it
  const [into, from] = b.face_count > a.face_count ? [b, a] : [a, b];
  const out = h('span', { class: 'msg', role: 'status' });
  return h('li', { class: 'dup-pair row', 'data-pair': `${a.id}-${b.id}` }, dupFace(a), h('span', { class: 'score' }, `≈ ${pair.score.toFixed(3)}`), dupFace(b),
    h('button', { type: 'button', onclick: () => mergePair(into, from, out) }, `Merge into ${into.label}`),
    h('button', { type: 'button', onclick: () => notSame(a, b, out) }, 'Not the same person'), out);
}

async function mergePair(into, from, out) {
  if (!await confirmDialog(`Move the ${from.face_count} face(s) of "${from.label}" into "${into.label}" and delete "${from.label}"?`, 'Merge')) return;
  try {
    const r = await request('POST', `/identities/${into.id}/merge`, { json: { from_identity_id: from.id } });
    load(`Merged ${from.label} into ${r.label} (${r.face_count} faces).`);
    ctx.refreshServerLine();
  } catch (e) {
    say(out, e instanceof ApiError ? e.text : String(e), 'error');
  }
}

async function notSame(a, b, out) {
  try {
    await request('POST', `/identities/${a.id}/not-duplicate`, { json: { identity_id: b.id } });
    load(`${a.label} and ${b.label} are different people: no longer suggested.`);
  } catch (e) {
    say(out, e instanceof ApiError ? e.text : String(e), 'error');
  }
}

const fail = (e) => say($('gallery-msg'), e instanceof ApiError ? e.text : String(e), 'error');

async function load(note = '') {
  const mine = ++seq;
  const cards = $('gallery-cards');
  cards.setAttribute('aria-busy', 'true');
  const prefix = $('gallery-prefix').value.trim();
  let page;
  try {
    page = await request('GET', '/identities', { query: { offset, limit: PAGE, prefix } });
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
  total = page.total;
  urls.clear();
  say($('gallery-msg'), note || (total ? '' : (prefix ? 'No identity label starts with that.' : 'The gallery is empty: enroll someone first.')), note ? 'ok' : 'info');
  cards.replaceChildren(...page.items.map(card));
  cards.setAttribute('aria-busy', 'false');
  pager(page.items.length, total);
  duplicates();
}

function pager(n, all) {
  $('gallery-range').textContent = all ? `${offset + 1}–${offset + n} of ${all}` : '';
  $('gallery-prev').disabled = offset === 0;
  $('gallery-next').disabled = offset + n >= all;
}

function card(ident) {
  const title = h('h3', { class: 'label' }, ident.label);
  const meta = h('p', { class: 'meta' }, `#${ident.id} · ${ident.face_count} face${ident.face_count === 1 ? '' : 's'}`);
  const thumbs = h('ul', { class: 'crops', 'aria-label': `faces of ${ident.label}` });
  const out = h('p', { class: 'msg', role: 'status' });
  const tools = h('div', { class: 'tools' });
  const actions = h('div', { class: 'row actions' },
    h('button', { type: 'button', onclick: () => renameForm(ident, tools) }, 'Rename'),
    h('button', { type: 'button', onclick: () => mergeForm(ident, tools, out) }, 'Merge…'),
    h('button', { type: 'button', class: 'danger', onclick: () => removeIdentity(ident, out) }, 'Delete'));
  faces(ident, thumbs, out);
  return h('li', { class: 'card', 'data-identity': ident.id }, title, meta, thumbs, actions, tools, out);
}

async function faces(ident, list, out) {
  let detail;
  try {
    detail = await request('GET', `/identities/${ident.id}`);
  } catch (e) {
    say(out, e instanceof ApiError ? e.text : String(e), 'error');
    return;
  }
  for (const f of detail.faces.slice(0, THUMBS)) {
    const img = h('img', { alt: `face ${f.id}`, width: 64, height: 64 });
    list.append(h('li', {}, img,
      h('button', { type: 'button', class: 'small x', 'aria-label': `delete face ${f.id}`, title: 'delete this face',
        onclick: () => removeFace(ident, f, out) }, '×')));
    imageBlob(`/faces/${f.id}/crop`).then((b) => { img.src = urls.file(b); }).catch(() => { img.alt = `face ${f.id} (crop unavailable)`; });
  }
  if (detail.faces.length > THUMBS) list.append(h('li', { class: 'more' }, `+${detail.faces.length - THUMBS}`));
}

function renameForm(ident, tools) {
  const input = h('input', { type: 'text', value: ident.label, maxlength: 200, 'aria-label': `new name for ${ident.label}` });
  const msg = h('p', { class: 'msg', role: 'status' });
  const form = h('form', { class: 'row' }, input, h('button', { type: 'submit' }, 'Save'),
    h('button', { type: 'button', onclick: () => tools.replaceChildren() }, 'Cancel'), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const label = input.value.trim();
    if (!label) return;
    try {
      const r = await request('PATCH', `/identities/${ident.id}`, { json: { label } });
      load(`Renamed #${r.id} to ${r.label}.`);
    } catch (err) {
      say(msg, err instanceof ApiError ? err.text : String(err), 'error');
    }
  });
  tools.replaceChildren(form);
  input.focus();
  input.select();
}

async function mergeForm(ident, tools, out) {
  let others;
  try {  // the API pages at 500 at most: enough for a person choosing from a list
    others = (await request('GET', '/identities', { query: { limit: 500 } })).items.filter((i) => i.id !== ident.id);
  } catch (e) {
    say(out, e instanceof ApiError ? e.text : String(e), 'error');
    return;
  }
  if (!others.length) { say(out, 'There is no other identity to merge.', 'info'); return; }
  const select = h('select', { 'aria-label': `identity to merge into ${ident.label}` },
    ...others.map((o) => h('option', { value: o.id }, `${o.label} (#${o.id}, ${o.face_count} faces)`)));
  const form = h('form', { class: 'row' }, h('span', {}, 'Move all faces of'), select,
    h('span', {}, 'here'), h('button', { type: 'submit' }, 'Merge'),
    h('button', { type: 'button', onclick: () => tools.replaceChildren() }, 'Cancel'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const from = others.find((o) => String(o.id) === select.value);
    if (!await confirmDialog(`Move the ${from.face_count} face(s) of "${from.label}" into "${ident.label}" and delete "${from.label}"?`, 'Merge')) return;
    try {
      const r = await request('POST', `/identities/${ident.id}/merge`, { json: { from_identity_id: from.id } });
      load(`Merged ${from.label} into ${r.label} (${r.face_count} faces).`);
      ctx.refreshServerLine();
    } catch (err) {
      say(out, err instanceof ApiError ? err.text : String(err), 'error');
    }
  });
  tools.replaceChildren(form);
  select.focus();
}

async function removeFace(ident, face, out) {
  const last = ident.face_count === 1;
  const text = last ? `Delete face #${face.id}? It is the last face of "${ident.label}", so the identity goes too.`
    : `Delete face #${face.id} of "${ident.label}"?`;
  if (!await confirmDialog(text, 'Delete')) return;
  try {
    await request('DELETE', `/faces/${face.id}`);
    load(`Deleted face #${face.id}.`);
    ctx.refreshServerLine();
  } catch (e) {
    say(out, e instanceof ApiError ? e.text : String(e), 'error');
  }
}

async function removeIdentity(ident, out) {
  if (!await confirmDialog(`Delete "${ident.label}" and its ${ident.face_count} face(s)? This cannot be undone.`, 'Delete')) return;
  try {
    await request('DELETE', `/identities/${ident.id}`);
    load(`Deleted ${ident.label}.`);
    ctx.refreshServerLine();
  } catch (e) {
    say(out, e instanceof ApiError ? e.text : String(e), 'error');
  }
}
