// Identify: one photo in, every face boxed on it. The threshold slider re-decides locally from each
// face's top-k scores (no new request); at the server's own threshold the server's decision is shown.
import { ApiError, curl, request } from './api.js';
import { $, UrlBag, fmt, h, picker, say } from './dom.js';

let ctx;
let photo = null;    // the File identified last
let result = null;   // its /identify answer
let stream = null;   // webcam MediaStream
let atServer = true; // the slider shows the server's threshold (the range input rounds it to its step)
const urls = new UrlBag();

export function init(context) {
  ctx = context;
  $('identify-picker').append(picker({ id: 'identify-file', label: 'Choose a photo', onFiles: ([f]) => run(f) }));
  $('identify-threshold').addEventListener('input', () => { atServer = false; draw(); });
  $('identify-threshold-reset').addEventListener('click', () => {
    if (result) { $('identify-threshold').value = result.threshold; atServer = true; draw(); }
  });
  $('webcam-open').addEventListener('click', openWebcam);
  $('webcam-close').addEventListener('click', closeWebcam);
  $('webcam-capture').addEventListener('click', capture);
  if (!navigator.mediaDevices?.getUserMedia) {
    $('webcam-open').disabled = true;
    $('webcam-open').title = 'the browser offers no camera here (it needs https or localhost)';
  }
}

export const paste = (files) => run(files[0]);

export function show() {}

function topK() {
  const k = parseInt($('identify-topk').value, 10);
  return Number.isFinite(k) && k >= 1 && k <= 100 ? k : 5;
}

async function run(file) {
  const msg = $('identify-msg');
  say(msg, `Identifying ${file.name || 'photo'}…`);
  const form = new FormData();
  form.append('file', file, file.name || 'photo.jpg');
  const query = { top_k: topK(), remember_unknown: $('identify-remember').checked ? 'true' : undefined };
  try {
    const r = await request('POST', '/identify', { form, query });
    photo = file;
    result = r;
    $('identify-json').textContent = JSON.stringify(r, null, 2);
    $('identify-curl').textContent = curl('POST', '/identify', { query, files: { file: file.name || 'photo.jpg' } });
    $('identify-threshold').value = r.threshold;
    atServer = true;
    say(msg, '');
    render();
  } catch (e) {
    say(msg, e instanceof ApiError ? e.text : String(e), 'error');
  }
}

/** The decision for a face at threshold t: {kind: 'match'|'unknown'|other status, label, score}. */
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

function render() {
  urls.clear();
  const fig = $('identify-photo');
  const img = h('img', { src: urls.file(photo), alt: 'the photo identified' });
  fig.replaceChildren(img, h('div', { class: 'boxes', id: 'identify-boxes' }));
  img.addEventListener('load', draw, { once: true });
  $('identify-result').hidden = false;
  const list = $('identify-faces');
  list.replaceChildren(...result.faces.map((f, i) => faceItem(f, i)));
}

function faceItem(face, i) {
  const label = h('input', { type: 'text', maxlength: 200, 'aria-label': `name for face ${i + 1}`, placeholder: 'name' });
  const out = h('p', { class: 'msg', role: 'status' });
  const form = h('form', { class: 'row enroll-face' },
    label, h('button', { type: 'submit' }, 'Enroll this face as…'));
  form.addEventListener('submit', (e) => { e.preventDefault(); enrollFace(face, i, label.value.trim(), out); });
  const top = h('ol', { class: 'topk', 'aria-label': 'best matches' },
    ...(face.matches || []).map((m) => h('li', {}, h('span', { class: 'name' }, m.label),
      h('span', { class: 'score' }, fmt(m.score)))));
  if (!face.matches?.length) top.append(h('li', { class: 'none' }, 'no enrolled identities to compare with'));
  return h('li', { class: 'face', id: `face-${i}`, tabindex: -1 },
    h('h3', {}, `Face ${i + 1} `, h('span', { class: 'chip' })),
    top, form, out);
}

function draw() {
  if (!result) return;
  const t = atServer ? result.threshold : parseFloat($('identify-threshold').value);
  $('identify-threshold-value').textContent = fmt(t, 2);
  const img = $('identify-photo').querySelector('img');
  const boxes = $('identify-boxes');
  const w = img.naturalWidth, hgt = img.naturalHeight;
  let matched = 0;
  boxes.replaceChildren();
  result.faces.forEach((face, i) => {
    const d = decide(face, t);
    if (d.kind === 'match') matched += 1;
    const [x1, y1, x2, y2] = face.box;
    const text = d.kind === 'match' ? `${d.text} ${fmt(d.score, 2)}` : d.text;
    const box = h('button', { type: 'button', class: `box ${d.kind}`, 'aria-label': `face ${i + 1}: ${text}` },
      h('span', { class: 'tag' }, text));
    if (w && hgt) {
      box.style.left = `${(100 * Math.max(0, x1)) / w}%`;
      box.style.top = `${(100 * Math.max(0, y1)) / hgt}%`;
      box.style.width = `${(100 * (Math.min(w, x2) - Math.max(0, x1))) / w}%`;
      box.style.height = `${(100 * (Math.min(hgt, y2) - Math.max(0, y1))) / hgt}%`;
    }
    box.addEventListener('click', () => {
      const item = $(`face-${i}`);
      item.scrollIntoView({ block: 'nearest' });
      item.focus({ preventScroll: true });
    });
    boxes.append(box);
    const chip = $(`face-${i}`)?.querySelector('.chip');
    if (chip) {
      chip.className = `chip ${d.kind}`;
      chip.textContent = d.kind === 'match' ? `${d.text} · ${fmt(d.score)}` : d.text;
      chip.title = atServer && face.threshold != null ? `this face needed ${fmt(face.threshold)}` : '';
    }
  });
  const n = result.faces.length;
  $('identify-summary').textContent = n
    ? `${n} face${n === 1 ? '' : 's'}, ${matched} matched at threshold ${fmt(t, 2)} (server: ${fmt(result.threshold)}${
      result.operating_point?.normalisation ? ' for a typical face; each face its own' : ''}, model ${result.model_version})`
    : 'No face found in this photo.';
}

async function enrollFace(face, i, label, out) {
  if (!label) { say(out, 'Type a name first.', 'error'); return; }
  const form = new FormData();
  form.append('label', label);
  form.append('face_box', face.box.map((x) => x.toFixed(1)).join(','));
  form.append('files', photo, photo.name || 'photo.jpg');
  try {
    const r = await request('POST', '/enroll', { form });
    const text = `Enrolled as ${r.identity.label} (identity #${r.identity.id}, now ${r.identity.face_count} face${r.identity.face_count === 1 ? '' : 's'}).`;
    say(out, text, 'ok');
    ctx.refreshServerLine();
    await run(photo);  // the box turns green; the list is drawn anew, so the confirmation goes on the new item
    const again = $(`face-${i}`)?.querySelector('.msg');
    if (again) say(again, text, 'ok');
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
