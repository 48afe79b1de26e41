// Verify: two photos side by side, the score, the threshold in force and the decision. A photo with several
// faces shows them numbered after a comparison, the one compared marked: a click compares another.
import { ApiError, request } from './api.js';
import { $, UrlBag, drawBoxes, fmt, h, picker, say, uploadable } from './dom.js';

const SIDES = ['a', 'b'];
const chosen = { a: null, b: null };   // the files to upload (shrunk if large)
const picked = { a: null, b: null };   // the face index the user clicked, else null (the server's largest)
const urls = { a: new UrlBag(), b: new UrlBag() };
const NAME = { a: 'Photo A', b: 'Photo B' };

export function init() {
  for (const side of SIDES) {
    $(`verify-picker-${side}`).append(picker({ id: `verify-file-${side}`, label: `Choose photo ${side.toUpperCase()}`,
      onFiles: ([f]) => set(side, f) }));
  }
  $('verify-run').addEventListener('click', run);
}

/** A pasted photo fills A first, then B (through its picker: what is not a photo is said so there). */
export const paste = (files) => $(`verify-picker-${chosen.a && !chosen.b ? 'b' : 'a'}`).querySelector('.drop').take(files);

export function show() {}

/** Another collection (its own operating point): the photos stay, the decision goes. */
export function switched() {
  $('verify-result').hidden = true;
  for (const side of SIDES) $(`verify-boxes-${side}`)?.replaceChildren();
  say($('verify-msg'), '');
}

async function set(side, file) {
  $('verify-result').hidden = true;
  $('verify-run').disabled = true;  // until this photo is ready
  say($('verify-msg'), '');
  const { file: upload, note } = await uploadable(file);
  chosen[side] = upload;
  picked[side] = null;
  urls[side].clear();
  const img = h('img', { src: urls[side].file(upload), alt: NAME[side] });
  $(`verify-preview-${side}`).replaceChildren(
    h('figure', { class: 'photo' }, img, h('div', { class: 'boxes', id: `verify-boxes-${side}` })),
    h('p', { class: 'name' }, file.name || 'pasted photo'), note ? h('p', { class: 'name' }, note) : '');
  $('verify-run').disabled = !(chosen.a && chosen.b);
}

async function run() {
  const msg = $('verify-msg');
  const form = new FormData();
  form.append('file', chosen.a, chosen.a.name || 'a.jpg');
  form.append('file_b', chosen.b, chosen.b.name || 'b.jpg');
  if (picked.a !== null) form.append('face_index', picked.a);
  if (picked.b !== null) form.append('face_index_b', picked.b);
  say(msg, 'Comparing…');
  $('verify-result').hidden = true;
  try {
    const r = await request('POST', '/verify', { form });
    say(msg, '');
    const d = $('verify-decision');
    d.textContent = r.same_person ? 'Same person' : 'Different people';
    d.className = `decision ${r.same_person ? 'match' : 'unknown'}`;
    $('verify-score').textContent = fmt(r.score);
    $('verify-threshold').textContent = fmt(r.threshold);
    $('verify-model').textContent = r.model_version;
    $('verify-faces').replaceChildren(...SIDES.map((side, k) => faceNote(side, r.faces?.[k])));
    $('verify-result').hidden = false;
  } catch (e) {
    say(msg, e instanceof ApiError ? e.say([NAME.a, NAME.b]) : String(e), 'error');
  }
}

/** Which face of a photo was compared, in words; its boxes drawn where it has several. */
function faceNote(side, used) {
  const layer = $(`verify-boxes-${side}`);
  if (!used) { layer.replaceChildren(); return ''; }
  const n = used.faces.length;
  const img = $(`verify-preview-${side}`).querySelector('img');
  if (n > 1) {
    drawBoxes(layer, img, used.faces, {
      name: `${NAME[side]} face`,
      look: (i) => (i === used.face_index ? { kind: 'match', text: 'compared' } : { kind: 'unknown', text: '' }),
      onPick: (i) => { picked[side] = i; run(); },
    });
  } else layer.replaceChildren();
  const which = n === 1 ? 'its only face'
    : `face ${used.face_index + 1} of ${n}${used.chosen_by === 'largest' ? ', the largest' : ', as chosen'}`;
  return h('li', { 'data-side': side }, `${NAME[side]}: ${which}${n > 1 ? ' (click a face on the photo to compare another)' : ''}.`);
}
