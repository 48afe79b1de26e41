// Gallery: identities whose name contains the search (any case), sorted, a page at a time; each card shows its
// cover face first and links to the person page (all faces), and offers rename, merge another identity into it,
// delete a face, delete the identity (after confirmation). Cards can be selected (or all on the page) to delete
// them or merge them into one.
// Above them, "Possible duplicates": pairs the server suspects are one person, merged in one click or
// marked as different people (GET /identities/duplicates, POST .../merge, POST .../not-duplicate).
import { ApiError, imageBlob, request } from './api.js';
import { $, UrlBag, confirmDialog, h, say } from './dom.js';
import { renameForm, selectAll } from './people.js';

const PAGE = 12;
const THUMBS = 8;
let ctx;
let offset = 0;
let total = 0;
let seq = 0; // a newer load wins over a slower older one
const urls = new UrlBag();
let shown = []; // the identities on this page
const picked = new Set(); // ids of the selected cards on this page

export function init(context) {
  ctx = context;
  $('gallery-search').addEventListener('submit', (e) => { e.preventDefault(); offset = 0; load(); });
  $('gallery-sort').addEventListener('change', () => { offset = 0; load(); });
  $('gallery-prev').addEventListener('click', () => { offset = Math.max(0, offset - PAGE); load(); });
  $('gallery-next').addEventListener('click', () => { offset += PAGE; load(); });
  selectAll($('gallery-all'), $('gallery-cards'), pick);
  $('gallery-delete').addEventListener('click', removeSelected);
  $('gallery-merge').addEventListener('click', mergeSelectedForm);
}

export function show() { load(); }

/** Another collection: no card of this one may stay on screen while the other's page loads. */
export function switched() {
  seq += 1;
  dupSeq += 1;
  offset = 0;
  urls.clear();
  shown = [];
  picked.clear();
  bulkState();
  $('gallery-cards').replaceChildren();
  $('gallery-bulk-tools').replaceChildren();
  $('gallery-bulk').hidden = true;
  $('dups').hidden = true;
  $('dups-list').replaceChildren();
  say($('gallery-msg'), '');
  pager(0, 0);
}

const DUPS = 20;

let dupSeq = 0; // a newer list wins over a slower older one

async function duplicates() {
  const mine = ++dupSeq;
  const box = $('dups');
  let page;
  try {
    page = await request('GET', '/identities/duplicates', { query: { limit: DUPS } });
  } catch (e) {
    if (mine === dupSeq) box.hidden = true;  // a key without read scope, an old server: the gallery works without it
    return;
  }
  if (mine !== dupSeq) return;
  box.hidden = page.items.length === 0;
  const more = page.total > page.items.length ? ` (the ${page.items.length} strongest of ${page.total})` : '';
  say($('dups-msg'), more ? `Showing${more}.` : '', 'info');
  $('dups-list').replaceChildren(...page.items.map(dupRow));
}

function dupFace(ident) {
  const img = h('img', { alt: `a face of ${ident.label}`, width: 48, height: 48 });
  const mine = dupSeq;  // a crop asked for after a switch would be another collection's face
  request('GET', `/identities/${ident.id}`).then((d) => mine === dupSeq && d.faces[0] && imageBlob(`/faces/${d.faces[0].id}/crop`))
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

async function load(note = '', kind = 'ok') {
  const mine = ++seq;
  const cards = $('gallery-cards');
  cards.setAttribute('aria-busy', 'true');
  const q = $('gallery-q').value.trim();
  let page;
  try {
    page = await request('GET', '/identities', { query: { offset, limit: PAGE, q, sort: $('gallery-sort').value } });
  } catch (e) {
    if (mine === seq) { cards.replaceChildren(); pager(0, 0); fail(e); cards.setAttribute('aria-busy', 'false'); }
    return;
  }
  if (mine !== seq) return;
  if (!page.items.length && offset > 0 && page.total > 0) {  // the last page emptied: step back
    offset = Math.max(0, Math.floor((page.total - 1) / PAGE) * PAGE);
    load(note, kind);
    return;
  }
  total = page.total;
  urls.clear();
  say($('gallery-msg'), note || (total ? '' : (q ? 'No name contains that.' : 'The gallery is empty: enroll someone first.')), note ? kind : 'info');
  shown = page.items;
  picked.clear();
  bulkState();
  $('gallery-bulk-tools').replaceChildren();
  $('gallery-bulk').hidden = !page.items.length;
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
  const title = h('h3', { class: 'label' }, h('a', { href: `#person/${ident.id}` }, ident.label));
  const box = h('input', { type: 'checkbox', class: 'pick', value: ident.id, 'aria-label': `select ${ident.label}` });
  box.addEventListener('change', () => pick(ident.id, box.checked));
  const meta = h('p', { class: 'meta' }, `#${ident.id} · ${ident.face_count} face${ident.face_count === 1 ? '' : 's'}`);
  const thumbs = h('ul', { class: 'crops', 'aria-label': `faces of ${ident.label}` });
  const out = h('p', { class: 'msg', role: 'status' });
  const tools = h('div', { class: 'tools' });
  const actions = h('div', { class: 'row actions' },
    h('button', { type: 'button', onclick: () => renameForm(ident, tools, (r) => load(`Renamed #${r.id} to ${r.label}.`)) }, 'Rename'),
    h('button', { type: 'button', onclick: () => mergeForm(ident, tools, out) }, 'Merge…'),
    h('button', { type: 'button', class: 'danger', onclick: () => removeIdentity(ident, out) }, 'Delete'));
  faces(ident, thumbs, out);
  return h('li', { class: 'card', 'data-identity': ident.id }, h('div', { class: 'card-head' }, box, title), meta, thumbs,
    actions, tools, out);
}

async function faces(ident, list, out) {
  const mine = seq;
  let detail;
  try {
    detail = await request('GET', `/identities/${ident.id}`);
  } catch (e) {
    say(out, e instanceof ApiError ? e.text : String(e), 'error');
    return;
  }
  if (mine !== seq) return;  // redrawn meanwhile, or another collection: these ids may be someone else's there
  // faces are numbered as the person page numbers them (oldest first, from 1); the cover comes first
  const numbered = detail.faces.map((f, i) => ({ f, n: i + 1 }));
  const cover = numbered.findIndex(({ f }) => f.id === detail.cover_face_id);
  if (cover > 0) numbered.unshift(...numbered.splice(cover, 1));
  for (const { f, n } of numbered.slice(0, THUMBS)) {
    const name = `${ident.label}, face ${n}`;
    const img = h('img', { alt: name, width: 64, height: 64 });
    list.append(h('li', { 'data-face': f.id }, img,
      h('button', { type: 'button', class: 'small x', 'aria-label': `delete ${name}`, title: 'delete this face',
        onclick: () => removeFace(ident, f, n, out) }, '×')));
    imageBlob(`/faces/${f.id}/crop`).then((b) => { img.src = urls.file(b); }).catch(() => { img.alt = `${name} (crop unavailable)`; });
  }
  if (detail.faces.length > THUMBS) {
    list.append(h('li', { class: 'more' }, h('a', { href: `#person/${ident.id}` }, `+${detail.faces.length - THUMBS} more`)));
  }
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

async function removeFace(ident, face, n, out) {
  const last = ident.face_count === 1;
  const text = last ? `Delete face ${n} (#${face.id})? It is the last face of "${ident.label}", so the identity goes too.`
    : `Delete face ${n} (#${face.id}) of "${ident.label}"?`;
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

// --- selection: delete or merge several identities --------------------------------------------------------------
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

function pick(id, on) {
  if (on) picked.add(id); else picked.delete(id);
  bulkState();
}

function bulkState() {
  const n = picked.size;
  $('gallery-picked').textContent = n ? `${n} selected` : '';
  $('gallery-delete').disabled = n === 0;
  $('gallery-merge').disabled = n < 2;
  const all = $('gallery-all');
  all.checked = n > 0 && n === shown.length;
  all.indeterminate = n > 0 && n < shown.length;
}

const selected = () => shown.filter((i) => picked.has(i.id));

/** Run `step` on each item in turn; a message saying how many went through and the first failure. */
async function each(items, step, done) {
  let ok = 0;
  let failed = '';
  for (const item of items) {
    try {
      await step(item);
      ok += 1;
    } catch (e) {
      failed ||= `; ${item.label}: ${e instanceof ApiError ? e.text : String(e)}`;
    }
  }
  load(`${done(ok)}${failed}`, failed ? 'error' : 'ok');
  ctx.refreshServerLine();
}

async function removeSelected() {
  const idents = selected();
  const faces = idents.reduce((n, i) => n + i.face_count, 0);
  const names = idents.map((i) => i.label).join(', ');
  if (!await confirmDialog(`Delete ${plural(idents.length, 'person', 'people')} (${names}) and their ${plural(faces, 'face')}? This cannot be undone.`, 'Delete')) return;
  await each(idents, (i) => request('DELETE', `/identities/${i.id}`), (n) => `Deleted ${plural(n, 'person', 'people')}.`);
}

function mergeSelectedForm() {
  const idents = selected();
  const tools = $('gallery-bulk-tools');
  // the one with most faces keeps its name by default
  const into = idents.reduce((a, b) => (b.face_count > a.face_count ? b : a));
  const select = h('select', { id: 'gallery-merge-into', 'aria-label': 'keep this name' },
    ...idents.map((i) => h('option', { value: i.id, selected: i === into }, `${i.label} (#${i.id}, ${plural(i.face_count, 'face')})`)));
  const form = h('form', { class: 'row' }, h('label', { for: 'gallery-merge-into' }, `Merge the ${idents.length} selected into`),
    select, h('button', { type: 'submit' }, 'Merge'),
    h('button', { type: 'button', onclick: () => tools.replaceChildren() }, 'Cancel'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const target = idents.find((i) => String(i.id) === select.value);
    const others = idents.filter((i) => i !== target);
    if (!await confirmDialog(`Move the faces of ${others.map((i) => `"${i.label}"`).join(', ')} into "${target.label}" and delete ${others.length === 1 ? 'it' : 'them'}?`, 'Merge')) return;
    await each(others, (i) => request('POST', `/identities/${target.id}/merge`, { json: { from_identity_id: i.id } }),
      (n) => `Merged ${plural(n, 'person', 'people')} into ${target.label}.`);
  });
  tools.replaceChildren(form);
  select.focus();
}
