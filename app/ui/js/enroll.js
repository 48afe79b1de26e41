// Enroll: a label and several photos. /enroll is all-or-nothing per request, so each photo is sent
// on its own and gets its own result: the face used, or the service's reason for refusing it.
import { ApiError, imageBlob, request } from './api.js';
import { $, UrlBag, fmt, h, picker, say } from './dom.js';

let ctx;
let files = [];
const urls = new UrlBag();     // previews of the selected photos
const shown = new UrlBag();    // thumbnails in the results

export function init(context) {
  ctx = context;
  $('enroll-picker').append(picker({ id: 'enroll-files', label: 'Choose photos', multiple: true, onFiles: add }));
  $('enroll-form').addEventListener('submit', (e) => { e.preventDefault(); submit(); });
}

export const paste = (pasted) => add(pasted);

export function show() {}

function add(more) {
  files = files.concat(more);
  renderSelected();
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

async function submit() {
  const label = $('enroll-label').value.trim();
  const msg = $('enroll-msg');
  if (!label) { say(msg, 'Type a name first.', 'error'); $('enroll-label').focus(); return; }
  if (!files.length) { say(msg, 'Choose at least one photo.', 'error'); return; }
  const batch = files;
  $('enroll-submit').disabled = true;
  shown.clear();
  const list = $('enroll-results');
  list.replaceChildren();
  let ok = 0;
  let identity = null;
  for (const [i, file] of batch.entries()) {
    say(msg, `Enrolling photo ${i + 1} of ${batch.length}…`);
    const name = file.name || `photo ${i + 1}`;
    const item = h('li', { class: 'result' }, h('img', { src: shown.file(file), alt: '' }));
    list.append(item);
    const form = new FormData();
    form.append('label', label);
    form.append('files', file, name);
    try {
      const r = await request('POST', '/enroll', { form });
      const face = r.faces[0];
      ok += 1;
      identity = r.identity;
      const crop = h('img', { class: 'crop', alt: `face ${face.id} as stored` });
      item.classList.add('ok');
      const dups = (r.warnings || []).filter((w) => w.code === 'possible_duplicate');
      item.append(h('div', {},
        h('strong', {}, `✓ ${name}`),
        h('p', {}, `face #${face.id} used: box ${face.box.map((x) => Math.round(x)).join(', ')}, detection ${fmt(face.detection_score)}`),
        ...dups.map((w) => h('p', { class: 'warn' },
          `Possibly the same person as ${w.identity.label} (#${w.identity.id}, score ${fmt(w.score)}): merge them in the Gallery if so.`))),
      crop);
      imageBlob(`/faces/${face.id}/crop`).then((b) => { crop.src = shown.file(b); }).catch(() => crop.remove());
    } catch (e) {
      item.classList.add('refused');
      item.append(h('div', {}, h('strong', {}, `✗ ${name}`), h('p', {}, e instanceof ApiError ? e.text : String(e))));
      if (e instanceof ApiError && (e.status === 401 || e.status === 403 || e.status === 0)) break;
    }
  }
  const summary = identity
    ? `${ok} of ${batch.length} photo${batch.length === 1 ? '' : 's'} enrolled into ${identity.label} (identity #${identity.id}, ${identity.face_count} face${identity.face_count === 1 ? '' : 's'}).`
    : `No photo enrolled (${batch.length} tried).`;
  say(msg, summary, identity ? (ok === batch.length ? 'ok' : 'info') : 'error');
  files = [];
  renderSelected();
  ctx.refreshServerLine();
}
