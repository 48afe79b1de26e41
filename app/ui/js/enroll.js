// Enroll: a label and several photos. /enroll is all-or-nothing per request, so each photo is sent
// on its own and gets its own result: the face used, or the service's reason for refusing it. A photo with
// several faces shows them numbered: a click enrolls that face (face_index). A batch goes to the collection it
// started in; switching collection stops it after the photo on its way.
import { ApiError, collection, imageBlob, request } from './api.js';
import { $, UrlBag, drawBoxes, fmt, h, picker, say, uploadable } from './dom.js';

let ctx;
let files = [];
let batches = 0;  // the batch running; a switch of collection makes it stale
const urls = new UrlBag();     // previews of the selected photos
const shown = new UrlBag();    // thumbnails in the results

export function init(context) {
  ctx = context;
  $('enroll-picker').append(picker({ id: 'enroll-files', label: 'Choose photos', multiple: true, onFiles: add }));
  $('enroll-form').addEventListener('submit', (e) => { e.preventDefault(); submit(); });
}

export const paste = (pasted) => $('enroll-picker').querySelector('.drop').take(pasted);

export function show() {}

/** Another collection: the results were the other gallery's (the name and the photos chosen stay). */
export function switched() {
  batches += 1;
  shown.clear();
  $('enroll-results').replaceChildren();
  say($('enroll-msg'), '');
}

const same = (a, b) => a.name === b.name && a.size === b.size && a.lastModified === b.lastModified;

/** Add photos to the selection; one chosen twice (same name, size and date) is kept once, and said so. */
function add(more) {
  const twice = [];
  for (const f of more) {
    if (files.some((g) => same(f, g))) twice.push(f.name || 'a pasted photo');
    else files.push(f);
  }
  renderSelected();
  say($('enroll-msg'), twice.length ? `Already chosen, kept once: ${twice.join(', ')}.` : '');
}

function renderSelected() {
  urls.clear();
  $('enroll-selected').replaceChildren(...files.map((f, i) => h('li', {},
    h('img', { src: urls.file(f), alt: '' }),
    h('span', { class: 'name' }, f.name || `photo ${i + 1}`),
    h('button', { type: 'button', class: 'small', 'aria-label': `remove ${f.name || `photo ${i + 1}`}`,
      onclick: () => { files.splice(i, 1); renderSelected(); } }, 'Remove'))));
  const n = files.length;
  $('enroll-submit').disabled = n === 0;
  $('enroll-submit').textContent = n ? `Enroll ${n} photo${n === 1 ? '' : 's'}` : 'Enroll';
}

/** POST /enroll for one photo into collection `where` (`face_index`: which of its faces). */
function enrollOne(where, label, file, name, faceIndex) {
  const form = new FormData();
  form.append('label', label);
  if (faceIndex !== undefined) form.append('face_index', faceIndex);
  form.append('files', file, name);
  return request('POST', '/enroll', { form, collection: where });
}

function showEnrolled(item, name, r) {
  const face = r.faces[0];
  const crop = h('img', { class: 'crop', alt: `face ${face.id} as stored` });
  item.className = 'result ok';
  const dups = (r.warnings || []).filter((w) => w.code === 'possible_duplicate');
  item.replaceChildren(item.firstChild, h('div', {},
    h('strong', {}, `✓ ${name}`),
    h('p', {}, `face #${face.id} used: box ${face.box.map((x) => Math.round(x)).join(', ')}, detection ${fmt(face.detection_score)}`),
    ...dups.map((w) => h('p', { class: 'warn' },
      `Possibly the same person as ${w.identity.label} (#${w.identity.id}, score ${fmt(w.score)}): merge them in the Gallery if so.`))),
  crop);
  imageBlob(`/faces/${face.id}/crop`).then((b) => { crop.src = shown.file(b); }).catch(() => crop.remove());
}

/** A photo with several faces: the photo, its faces numbered; clicking one enrolls that face. */
function facePicker(item, where, label, file, name, faces) {
  const img = h('img', { src: shown.file(file), alt: `${name}, its faces numbered` });
  const layer = h('div', { class: 'boxes' });
  const out = h('p', { class: 'msg', role: 'status' });
  const fig = h('figure', { class: 'photo pick' }, img, layer);
  const usable = faces.filter((f) => !f.problem).length;
  const pick = async (i) => {
    say(out, `Enrolling face ${i + 1} as ${label}…`);
    try {
      const r = await enrollOne(where, label, file, name, faces[i].face_index);
      showEnrolled(item, name, r);
      ctx.refreshServerLine();
    } catch (e) {
      say(out, e instanceof ApiError ? e.text : String(e), 'error');
    }
  };
  img.addEventListener('load', () => drawBoxes(layer, img, faces, {
    look: (i) => (faces[i].problem ? { kind: 'other', text: 'too small' } : { kind: 'unknown', text: '' }),
    onPick: pick,
  }), { once: true });
  return h('div', { class: 'picker-box' },
    h('p', {}, `${usable} of ${faces.length} faces can be enrolled: click the face of ${label} (or identify the photo and use “Enroll this face as…” on its card).`),
    fig, out);
}

async function submit() {
  const label = $('enroll-label').value.trim();
  const msg = $('enroll-msg');
  if (!label) { say(msg, 'Type a name first.', 'error'); $('enroll-label').focus(); return; }
  if (!files.length) { say(msg, 'Choose at least one photo.', 'error'); return; }
  const batch = files;
  const mine = ++batches;
  const where = collection.get();
  $('enroll-submit').disabled = true;
  shown.clear();
  const list = $('enroll-results');
  list.replaceChildren();
  let ok = 0;
  let identity = null;
  for (const [i, chosen] of batch.entries()) {
    say(msg, `Enrolling photo ${i + 1} of ${batch.length}…`);
    const { file, note } = await uploadable(chosen);
    if (mine !== batches) { stopped(where, batch, i, ok); return; }
    const name = chosen.name || `photo ${i + 1}`;
    const item = h('li', { class: 'result' }, h('img', { src: shown.file(file), alt: '' }));
    list.append(item);
    try {
      const r = await enrollOne(where, label, file, name);
      if (mine !== batches) { stopped(where, batch, i + 1, ok + 1); return; }
      ok += 1;
      identity = r.identity;
      showEnrolled(item, name, r);
      if (note) item.querySelector('div').append(h('p', {}, note));
    } catch (e) {
      if (mine !== batches) { stopped(where, batch, i + 1, ok); return; }
      item.classList.add('refused');
      const text = e instanceof ApiError ? e.say([name]) : String(e);
      item.append(h('div', {}, h('strong', {}, `✗ ${name}`), h('p', {}, text)));
      if (e instanceof ApiError && e.code === 'ambiguous_face' && e.detail?.faces?.length) {
        item.classList.add('several');
        item.append(facePicker(item, where, label, file, name, e.detail.faces));
      }
      if (e instanceof ApiError && (e.status === 401 || e.status === 403 || e.status === 0)) break;
    }
  }
  const summary = identity
    ? `${ok} of ${batch.length} photo${batch.length === 1 ? '' : 's'} enrolled into ${identity.label} (identity #${identity.id}, ${identity.face_count} face${identity.face_count === 1 ? '' : 's'}).`
    : `No photo enrolled (${batch.length} tried).`;
  say(msg, summary, identity ? (ok === batch.length ? 'ok' : 'info') : 'error');
  if (identity) $('enroll-label').value = '';  // the next person's photos must not land in this identity
  files = [];
  renderSelected();
  ctx.refreshServerLine();
}

/** The collection was switched during a batch into `where`: the photos not sent yet stay chosen. */
function stopped(where, batch, sent, ok) {
  files = batch.slice(sent);
  renderSelected();
  say($('enroll-msg'), `Stopped when the collection changed: ${ok} of ${batch.length} photo${batch.length === 1 ? '' : 's'} `
    + `went into ${where}; the ${files.length} not sent are still chosen, for ${collection.get()}.`, 'info');
  ctx.refreshServerLine();
}
