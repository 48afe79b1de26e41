// A person's page (#person/<id>): every face, a page at a time, each with its crop, the photo it came from (its
// SHA-256: the service keeps the aligned crop, never the photo; the other people enrolled from the same photo,
// GET /faces?source_sha256=) and when it was added; per face: set as cover,
// move to another person, delete; several faces selected (or all on the page) move or go together. Rename or
// delete the person, and the reports that name them (GET /feedback?identity_id=).
import { ApiError, imageBlob, request } from './api.js';
import { $, UrlBag, confirmDialog, h, say } from './dom.js';
import { renameForm, selectAll } from './people.js';

const PAGE = 24;
let ctx;
let id = null;
let person = null; // GET /identities/{id}: the person and every face (without crops)
let offset = 0;
let seq = 0; // a newer load wins over a slower older one
let drawn = 0; // a newer page of faces wins over a slower older one
const urls = new UrlBag();
const reportUrls = new UrlBag(); // the reports' crops outlive a change of face page
const picked = new Set(); // face ids selected on this page

export const navPage = 'gallery';

export function init(context) {
  ctx = context;
  $('person-prev').addEventListener('click', () => { offset = Math.max(0, offset - PAGE); render(); });
  $('person-next').addEventListener('click', () => { offset += PAGE; render(); });
  $('person-rename').addEventListener('click', rename);
  $('person-delete').addEventListener('click', removePerson);
  selectAll($('person-all'), $('person-faces'), pick);
  $('person-delete-faces').addEventListener('click', removeSelected);
  $('person-move-form').addEventListener('submit', (e) => { e.preventDefault(); moveSelected(); });
  $('person-move-to').addEventListener('focus', suggest);
}

export function show(arg) {
  const next = Number(arg);
  if (next !== id) { id = next; offset = 0; }
  load();
}

/** Another collection: person #id there is someone else (main.js goes back to the gallery). */
export function switched() {
  seq += 1;
  drawn += 1;
  id = null;
  urls.clear();
  reportUrls.clear();
  picked.clear();
  $('person-faces').replaceChildren();
  $('person-reports').replaceChildren();
  gone('');
}

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
const text = (e) => (e instanceof ApiError ? e.text : String(e));
const when = (iso) => new Date(iso).toLocaleString();

async function load(note = '', kind = 'ok') {
  const mine = ++seq;
  $('person-tools').replaceChildren();
  if (!Number.isInteger(id) || id < 1) { gone('That is not a person\'s address.'); return; }
  try {
    person = await request('GET', `/identities/${id}`);
  } catch (e) {
    if (mine !== seq) return;
    if (e instanceof ApiError && e.status === 404) gone(`Person #${id} does not exist (any more).`);
    else gone(text(e), 'error');
    return;
  }
  if (mine !== seq) return;
  $('person-name').textContent = person.label;
  $('person-meta').textContent = `#${person.id} · ${plural(person.face_count, 'face')} · enrolled ${when(person.created_at)}`;
  $('person-body').hidden = false;
  say($('person-msg'), note, kind);
  if (offset >= person.faces.length) offset = Math.max(0, Math.floor((person.faces.length - 1) / PAGE) * PAGE);
  render();
  reports(mine);
}

function gone(message, kind = 'info') {
  person = null;
  $('person-name').textContent = 'Person';
  $('person-meta').textContent = '';
  $('person-body').hidden = true;
  say($('person-msg'), message, kind);
}

function render() {
  urls.clear();
  picked.clear();
  const page = person.faces.slice(offset, offset + PAGE);
  $('person-faces').replaceChildren(...page.map((f, i) => faceItem(f, offset + i + 1)));
  samePhoto(page, ++drawn);
  $('person-range').textContent = `faces ${offset + 1}–${offset + page.length} of ${person.faces.length}`;
  $('person-prev').disabled = offset === 0;
  $('person-next').disabled = offset + page.length >= person.faces.length;
  bulkState();
}

function faceItem(f, n) {
  const name = `${person.label}, face ${n}`;
  const cover = f.id === person.cover_face_id;
  const img = h('img', { alt: name, width: 96, height: 96 });
  imageBlob(`/faces/${f.id}/crop`).then((b) => { img.src = urls.file(b); }).catch(() => { img.alt = `${name} (crop unavailable)`; });
  const box = h('input', { type: 'checkbox', class: 'pick', value: f.id, 'aria-label': `select ${name}` });
  box.addEventListener('change', () => pick(f.id, box.checked));
  const out = h('p', { class: 'msg', role: 'status' });
  const tools = h('div', { class: 'tools' });
  return h('li', { class: 'person-face', 'data-face': f.id }, h('div', { class: 'row' }, box, img),
    h('p', { class: 'face-title' }, `Face ${n}`, cover ? h('span', { class: 'chip match' }, 'cover') : null),
    h('p', { class: 'meta' }, `#${f.id} · added ${when(f.created_at)}`),
    h('p', { class: 'meta source', title: f.source_sha256 },
      `From photo sha256 ${f.source_sha256.slice(0, 12)}… (the photo is not stored, only this crop)`),
    h('div', { class: 'row actions' },
      cover ? null : h('button', { type: 'button', class: 'small', onclick: () => setCover(f, n, out) }, 'Set as cover'),
      h('button', { type: 'button', class: 'small', onclick: () => moveForm([f], tools, out) }, 'Move…'),
      h('button', { type: 'button', class: 'small danger', 'aria-label': `delete face ${n}`,
        onclick: () => removeFaces([f]) }, 'Delete')),
    tools, out);
}

/** Under each face, the other enrolled faces that came from the same photo (a group photo enrolled face by face). */
async function samePhoto(faces, mine) {
  const query = new URLSearchParams();
  for (const sha of new Set(faces.map((f) => f.source_sha256))) query.append('source_sha256', sha);
  let rows;
  try {
    rows = (await request('GET', `/faces?${query}`)).items;
  } catch { return; } // a hint only
  if (mine !== drawn) return;
  for (const f of faces) {
    const others = rows.filter((r) => r.source_sha256 === f.source_sha256 && r.id !== f.id);
    const li = document.querySelector(`#person-faces li[data-face="${f.id}"] .source`);
    if (!others.length || !li) continue;
    const links = others.flatMap((r, i) => [i ? ', ' : '', r.identity_id === id ? `${r.label} (face #${r.id})`
      : h('a', { href: `#person/${r.identity_id}` }, r.label)]);
    li.after(h('p', { class: 'meta same-photo' }, 'Also from this photo: ', ...links));
  }
}

function pick(faceId, on) {
  if (on) picked.add(faceId); else picked.delete(faceId);
  bulkState();
}

function bulkState() {
  const n = picked.size;
  const onPage = document.querySelectorAll('#person-faces input.pick').length;
  $('person-picked').textContent = n ? `${plural(n, 'face')} selected` : '';
  $('person-delete-faces').disabled = n === 0;
  $('person-move-submit').disabled = n === 0;
  const all = $('person-all');
  all.checked = n > 0 && n === onPage;
  all.indeterminate = n > 0 && n < onPage;
}

const selectedFaces = () => person.faces.filter((f) => picked.has(f.id));

async function setCover(f, n, out) {
  try {
    await request('PATCH', `/identities/${id}`, { json: { cover_face_id: f.id } });
    load(`Face ${n} is now the cover of ${person.label}.`);
  } catch (e) {
    say(out, text(e), 'error');
  }
}

/** Labels of the other people, for the "move to" field's suggestions (the API pages at 500 at most). */
async function suggest() {
  try {
    const page = await request('GET', '/identities', { query: { limit: 500, sort: 'label' } });
    $('person-labels').replaceChildren(...page.items.filter((i) => i.id !== id).map((i) => h('option', { value: i.label })));
  } catch { /* suggestions only: typing a name still works */ }
}

function moveForm(faces, tools, out) {
  const input = h('input', { type: 'text', list: 'person-labels', maxlength: 200, required: true,
    'aria-label': 'move to the person named', placeholder: 'name (new or existing)' });
  const form = h('form', { class: 'row' }, input, h('button', { type: 'submit' }, 'Move'),
    h('button', { type: 'button', onclick: () => tools.replaceChildren() }, 'Cancel'));
  form.addEventListener('submit', (e) => { e.preventDefault(); move(faces, input.value.trim(), out); });
  tools.replaceChildren(form);
  suggest();
  input.focus();
}

function moveSelected() {
  const label = $('person-move-to').value.trim();
  if (label) move(selectedFaces(), label, $('person-msg'));
}

async function move(faces, label, out) {
  if (!label) return;
  if (label === person.label) { say(out, `These faces are already ${person.label}'s.`, 'info'); return; }
  let ok = 0;
  let target = label;
  for (const f of faces) {
    try {
      const r = await request('POST', `/faces/${f.id}/move`, { json: { label } });
      target = r.identity.label;
      ok += 1;
    } catch (e) {
      say(out, `${ok ? `Moved ${plural(ok, 'face')}; then ` : ''}${text(e)}`, 'error');
      if (ok) ctx.refreshServerLine();
      return;
    }
  }
  $('person-move-to').value = '';
  ctx.refreshServerLine();
  if (ok === person.faces.length) {  // the last faces went: this person is gone
    say($('person-msg'), `Moved ${plural(ok, 'face')} to ${target}; ${person.label} had no faces left and was deleted.`, 'ok');
    location.hash = '#gallery';
    return;
  }
  load(`Moved ${plural(ok, 'face')} to ${target}.`);
}

function removeSelected() { removeFaces(selectedFaces()); }

async function removeFaces(faces) {
  const all = faces.length === person.faces.length;
  const what = faces.length === 1 ? 'this face' : `these ${faces.length} faces`;
  const warn = all ? ` They are all of ${person.label}'s faces, so ${person.label} goes too.` : '';
  if (!await confirmDialog(`Delete ${what} of "${person.label}"?${warn}`, 'Delete')) return;
  let ok = 0;
  for (const f of faces) {
    try {
      await request('DELETE', `/faces/${f.id}`);
      ok += 1;
    } catch (e) {
      load(`Deleted ${plural(ok, 'face')}; then ${text(e)}`, 'error');
      ctx.refreshServerLine();
      return;
    }
  }
  ctx.refreshServerLine();
  if (all) { location.hash = '#gallery'; return; }
  load(`Deleted ${plural(ok, 'face')}.`);
}

function rename() {
  renameForm({ id, label: person.label }, $('person-tools'), (r) => load(`Renamed to ${r.label}.`));
}

async function removePerson() {
  if (!await confirmDialog(`Delete "${person.label}" and ${plural(person.face_count, 'face')}? This cannot be undone.`, 'Delete')) return;
  try {
    await request('DELETE', `/identities/${id}`);
    ctx.refreshServerLine();
    location.hash = '#gallery';
  } catch (e) {
    say($('person-msg'), text(e), 'error');
  }
}

const KIND = { is: 'This is', is_not: 'This is not', nobody: 'Nobody enrolled' };

async function reports(mine) {
  const list = $('person-reports');
  let page;
  try {
    page = await request('GET', '/feedback', { query: { identity_id: id, limit: 50 } });
  } catch (e) {
    if (mine === seq) { list.replaceChildren(); say($('person-reports-msg'), text(e), 'error'); }
    return;
  }
  if (mine !== seq) return;
  reportUrls.clear();
  const more = page.total > page.items.length ? ` (the first ${page.items.length} of ${page.total})` : '';
  say($('person-reports-msg'), page.total ? (more ? `Showing${more}.` : '') : `Nobody has reported on a face as ${person.label} yet.`, 'info');
  list.replaceChildren(...page.items.map((r) => {
    const img = h('img', { alt: `the face reported (${KIND[r.kind]} ${person.label})`, width: 48, height: 48 });
    imageBlob(`/feedback/${r.id}/crop`).then((b) => { img.src = reportUrls.file(b); }).catch(() => {});
    const answered = r.answered_identity ? ` · the answer was ${r.answered_identity.label}` : '';
    return h('li', { class: 'row report', 'data-feedback': r.id }, img,
      h('span', {}, `${KIND[r.kind]} ${person.label}${answered} · ${when(r.created_at)}${r.reported_by ? ` · by ${r.reported_by}` : ''}`));
  }));
}
