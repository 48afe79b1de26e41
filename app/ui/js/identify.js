// Identify: one photo in, every face boxed and numbered on it, a card per face with its crop (cut from the photo
// here, no request), its best matches and corrections. The threshold slider and the presets re-decide locally
// from each face's top-k scores (no new request); at the server's own threshold the server's decision is shown.
import { ApiError, calibrationPath, curl, request } from './api.js';
import { $, UrlBag, drawBoxes, drawCrop, fmt, h, picker, say, uploadable } from './dom.js';

let ctx;
let photo = null;    // the File identified last (as uploaded: shrunk if it was large)
let result = null;   // its /identify answer
let stream = null;   // webcam MediaStream
let atServer = true; // the slider shows the server's threshold (the range input rounds it to its step)
let presets = null;  // GET /admin/calibration's presets, where the key may read them
let people = null;   // enrolled identities for "This is…" (loaded on first use)
let seq = 0;         // the latest run: an older answer arriving late is dropped
const urls = new UrlBag();
const WORDS = { strict: 'Strict', balanced: 'Balanced', loose: 'Loose' };

export function init(context) {
  ctx = context;
  $('identify-picker').append(picker({ id: 'identify-file', label: 'Choose a photo', onFiles: ([f]) => run(f) }));
  $('identify-threshold').addEventListener('input', () => { atServer = false; $('identify-preset').value = ''; draw(); });
  $('identify-preset').addEventListener('change', () => {
    const p = presets?.find((x) => x.name === $('identify-preset').value);
    if (p) { $('identify-threshold').value = p.threshold; atServer = false; draw(); }
  });
  $('identify-threshold-reset').addEventListener('click', () => {
    if (result) { $('identify-threshold').value = result.threshold; atServer = true; $('identify-preset').value = ''; draw(); }
  });
  $('webcam-open').addEventListener('click', openWebcam);
  $('webcam-close').addEventListener('click', closeWebcam);
  $('webcam-capture').addEventListener('click', capture);
  if (!navigator.mediaDevices?.getUserMedia) {
    $('webcam-open').disabled = true;
    $('webcam-open').title = 'the browser offers no camera here (it needs https or localhost)';
  }
}

export const paste = (files) => $('identify-picker').querySelector('.drop').take(files);

export function show() {}

/** Another collection: this photo's answer (and the people to correct it with) were the other gallery's. */
export function switched() {
  seq += 1;  // an answer still on its way is dropped
  clear();
  people = null;
  say($('identify-msg'), '');
}

function topK() {
  const k = parseInt($('identify-topk').value, 10);
  return Number.isFinite(k) && k >= 1 && k <= 100 ? k : 5;
}

/** Forget the last answer: a new photo's message never sits above the previous photo's boxes. */
function clear() {
  result = null;
  $('identify-result').hidden = true;
  $('identify-photo').replaceChildren();
  $('identify-faces').replaceChildren();
  urls.clear();
}

async function run(chosen, keep = null) {
  const msg = $('identify-msg');
  const mine = ++seq;
  if (!keep) clear();
  say(msg, `Identifying ${chosen.name || 'photo'}…`);
  const { file, note } = keep ? { file: chosen, note: '' } : await uploadable(chosen);
  const form = new FormData();
  form.append('file', file, file.name || 'photo.jpg');
  const query = { top_k: topK(), remember_unknown: $('identify-remember').checked ? 'true' : undefined };
  try {
    const r = await request('POST', '/identify', { form, query });
    if (mine !== seq) return;
    photo = file;
    result = r;
    $('identify-json').textContent = JSON.stringify(r, null, 2);
    $('identify-curl').textContent = curl('POST', '/identify', { query, files: { file: file.name || 'photo.jpg' } });
    $('identify-threshold').value = r.threshold;
    $('identify-preset').value = '';
    atServer = true;
    say(msg, note);
    render(keep);
    loadPresets();
  } catch (e) {
    if (mine !== seq) return;
    if (keep) clear();
    say(msg, e instanceof ApiError ? e.text : String(e), 'error');
  }
}

async function loadPresets() {
  if (presets) return;
  try {
    presets = (await request('GET', calibrationPath())).presets || [];
  } catch {
    presets = [];  // a key without the admin scope: the slider alone
  }
  const select = $('identify-preset');
  select.replaceChildren(h('option', { value: '' }, 'Server’s setting'),
    ...presets.map((p) => h('option', { value: p.name, title: p.measured_on || '' },
      `${WORDS[p.name] || p.name}: about 1 stranger in ${Math.round(1 / p.target_fpir)} wrongly matched${missed(p)}`)));
  $('identify-preset-label').hidden = !presets.length;
}

/** A preset's measured miss rate in words (where the serving model was measured), else nothing. */
function missed(p) {
  return p.measured_fnir == null ? '' : `, about ${Math.round(100 * p.measured_fnir)} in 100 enrolled people missed`;
}

/** The decision for a face at threshold t: {kind: 'match'|'unknown'|'other', text, score}. */
function decide(face, t) {
  const best = face.matches?.[0];
  const known = face.status === 'match' || face.status === 'unknown';
  if (!known) return { kind: 'other', text: String(face.status || 'unknown').replace(/_/g, ' '), score: best?.score };
  if (atServer) {  // the server's threshold: its own decision
    return face.status === 'match'
      ? { kind: 'match', text: face.identity?.label ?? best?.label ?? '?', score: face.score }
      : { kind: 'unknown', text: 'unknown', score: face.score };
  }
  return best && best.score >= t
    ? { kind: 'match', text: best.label, score: best.score }
    : { kind: 'unknown', text: 'unknown', score: best?.score };
}

/** `keep`: {i, text}, a card's confirmation to show again after the list is drawn anew. */
function render(keep) {
  urls.clear();
  const fig = $('identify-photo');
  const img = h('img', { src: urls.file(photo), alt: 'the photo identified, each face boxed and numbered' });
  fig.replaceChildren(img, h('div', { class: 'boxes', id: 'identify-boxes' }));
  const list = $('identify-faces');
  list.replaceChildren(...result.faces.map((f, i) => faceItem(f, i)));
  $('identify-result').hidden = false;
  img.addEventListener('load', () => {
    result.faces.forEach((f, i) => drawCrop($(`face-${i}`).querySelector('canvas'), img, f.box));
    draw();
  }, { once: true });
  if (keep) say($(`face-${keep.i}`).querySelector('.msg'), keep.text, 'ok');
}

function faceItem(face, i) {
  const out = h('p', { class: 'msg', role: 'status' });
  const label = h('input', { type: 'text', maxlength: 200, 'aria-label': `name for face ${i + 1}`, placeholder: 'name' });
  const form = h('form', { class: 'row enroll-face' },
    label, h('button', { type: 'submit' }, 'Enroll this face as…'));
  form.addEventListener('submit', (e) => { e.preventDefault(); enrollFace(face, i, label.value.trim(), out); });
  const top = h('ol', { class: 'topk', 'aria-label': `best matches for face ${i + 1}` },
    ...(face.matches || []).map((m) => h('li', {}, h('span', { class: 'name' }, m.label),
      h('span', { class: 'score' }, fmt(m.score)))));
  if (!face.matches?.length) top.append(h('li', { class: 'none' }, 'no enrolled identities to compare with'));
  return h('li', { class: 'face', id: `face-${i}`, tabindex: -1 },
    h('div', { class: 'face-head' },
      h('canvas', { class: 'crop', width: 96, height: 96, role: 'img', 'aria-label': `face ${i + 1}, cut from the photo` }),
      h('div', {}, h('h3', {}, `Face ${i + 1}`), h('span', { class: 'chip' }))),
    top, corrections(face, i, out), form, out);
}

/** "Not X" / "This is…" / "Nobody I know": POST /feedback on the face's probe (or the photo and its box). */
function corrections(face, i, out) {
  const box = h('div', { class: 'row feedback', role: 'group', 'aria-label': `corrections for face ${i + 1}` });
  if (face.status !== 'match' && face.status !== 'unknown') return box;
  if (face.status === 'match' && face.identity) {
    box.append(h('button', { type: 'button', class: 'small',
      onclick: () => report(face, i, 'is_not', face.identity, out) }, `Not ${face.identity.label}`));
  }
  const choose = h('select', { 'aria-label': `who face ${i + 1} is`, hidden: true });
  const isBtn = h('button', { type: 'button', class: 'small' }, 'This is…');
  isBtn.addEventListener('click', async () => {
    if (choose.hidden) {
      await fillPeople(choose, face);
      choose.hidden = false;
      choose.focus();
      isBtn.textContent = 'Report';
      return;
    }
    const id = Number(choose.value);
    if (!id) { say(out, 'Choose who it is first.', 'error'); return; }
    report(face, i, 'is', { id, label: choose.selectedOptions[0].textContent }, out);
  });
  box.append(isBtn, choose, h('button', { type: 'button', class: 'small',
    onclick: () => report(face, i, 'nobody', null, out) }, 'Nobody I know'));
  return box;
}

async function fillPeople(select, face) {
  if (!people) {
    try {
      people = (await request('GET', '/identities', { query: { limit: 500 } })).items;
    } catch {
      people = [];  // a key that cannot list: the face's own matches remain
    }
  }
  const seen = new Map();
  for (const m of face.matches || []) seen.set(m.identity_id, m.label);
  for (const p of people) if (!seen.has(p.id)) seen.set(p.id, p.label);
  select.replaceChildren(h('option', { value: '' }, 'choose a person…'),
    ...[...seen].map(([id, label]) => h('option', { value: id }, label)));
}

async function report(face, i, kind, identity, out) {
  const form = new FormData();
  form.append('kind', kind);
  if (identity) form.append('identity_id', identity.id);
  if (face.probe_id) form.append('probe_id', face.probe_id);
  else {  // the server kept no probe: the photo and this face's box
    form.append('face_box', face.box.map((x) => x.toFixed(1)).join(','));
    form.append('file', photo, photo.name || 'photo.jpg');
  }
  const what = { is: `is ${identity?.label}`, is_not: `is not ${identity?.label}`, nobody: 'is nobody enrolled' }[kind];
  try {
    const r = await request('POST', '/feedback', { form });
    say(out, `Thanks: recorded that face ${i + 1} ${what} (report #${r.id}).`, 'ok');
  } catch (e) {
    say(out, e instanceof ApiError ? e.text : String(e), 'error');
  }
}

/** The operating point in words: how often a stranger is wrongly matched, and where the threshold is. */
function pointText(t) {
  const fpir = result.target_fpir;
  const preset = presets?.find((p) => p.name === $('identify-preset').value);
  if (preset) return `${WORDS[preset.name] || preset.name}: about 1 stranger in ${Math.round(1 / preset.target_fpir)} wrongly matched (threshold ${fmt(t, 2)})`;
  if (!atServer) return `your threshold ${fmt(t, 2)} (${t > result.threshold ? 'stricter' : 'looser'} than the server’s ${fmt(result.threshold, 2)})`;
  const per = result.operating_point?.normalisation ? ', adjusted per face' : '';
  return fpir
    ? `server’s setting: about 1 stranger in ${Math.round(1 / fpir)} wrongly matched (threshold ${fmt(t, 2)}${per})`
    : `server’s threshold ${fmt(t, 2)}`;
}

function draw() {
  if (!result) return;
  const t = atServer ? result.threshold : parseFloat($('identify-threshold').value);
  $('identify-threshold-value').textContent = fmt(t, 2);
  const img = $('identify-photo').querySelector('img');
  const decisions = result.faces.map((face) => decide(face, t));
  drawBoxes($('identify-boxes'), img, result.faces, {
    look: (i) => {
      const d = decisions[i];
      return { kind: d.kind, text: d.kind === 'match' ? `${d.text} ${fmt(d.score, 2)}` : d.text };
    },
    onPick: (i) => {
      const item = $(`face-${i}`);
      item.scrollIntoView({ block: 'nearest' });
      item.focus({ preventScroll: true });
    },
  });
  decisions.forEach((d, i) => {
    const chip = $(`face-${i}`)?.querySelector('.chip');
    if (!chip) return;
    chip.className = `chip ${d.kind}`;
    chip.textContent = d.kind === 'match' ? `${d.text} · ${fmt(d.score)}` : d.text;
    chip.title = atServer && result.faces[i].threshold != null ? `this face needed ${fmt(result.faces[i].threshold)}` : '';
  });
  const n = result.faces.length;
  const matched = decisions.filter((d) => d.kind === 'match').length;
  $('identify-summary').textContent = n
    ? `${n} face${n === 1 ? '' : 's'}, ${matched} matched · ${pointText(t)} · model ${result.model_version}`
    : 'No face found in this photo.';
}

async function enrollFace(face, i, label, out) {
  if (!label) { say(out, 'Type a name first.', 'error'); return; }
  const form = new FormData();
  form.append('label', label);
  form.append('face_box', face.box.map((x) => x.toFixed(1)).join(','));
  form.append('files', photo, photo.name || 'photo.jpg');
  const mine = seq;
  try {
    const r = await request('POST', '/enroll', { form });
    if (mine !== seq) return;  // another photo, or another collection, since
    const text = `Enrolled as ${r.identity.label} (identity #${r.identity.id}, now ${r.identity.face_count} face${r.identity.face_count === 1 ? '' : 's'}).`;
    say(out, text, 'ok');
    ctx.refreshServerLine();
    people = null;
    await run(photo, { i, text });  // the box turns green; the list is drawn anew, the confirmation kept
  } catch (e) {
    say(out, e instanceof ApiError ? e.text : String(e), 'error');
  }
}

async function openWebcam() {
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    const video = $('webcam-video');
    $('webcam-capture').disabled = true;  // until the first frame's size is known
    video.addEventListener('loadedmetadata', () => {
      $('webcam-capture').disabled = false;
      $('webcam-capture').focus();
    }, { once: true });
    video.srcObject = stream;
    $('webcam').hidden = false;
  } catch (e) {
    say($('identify-msg'), `No webcam: ${e.message}`, 'error');
  }
}

function closeWebcam() {
  stream?.getTracks().forEach((t) => t.stop());
  stream = null;
  $('webcam-video').srcObject = null;
  $('webcam').hidden = true;
}

function capture() {
  const video = $('webcam-video');
  if (!video.videoWidth) { say($('identify-msg'), 'The webcam has no picture yet.', 'error'); return; }
  const canvas = h('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext('2d').drawImage(video, 0, 0);
  canvas.toBlob((blob) => run(new File([blob], 'webcam.jpg', { type: 'image/jpeg' })), 'image/jpeg', 0.92);
}
