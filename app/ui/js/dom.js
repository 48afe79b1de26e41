// Small DOM helpers. Text always goes in through textContent / text nodes, never innerHTML:
// labels are user input.

/** h('li', {class: 'x', onclick: f}, 'text', child) -> element. Strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export const $ = (id) => document.getElementById(id);

/** Show a message (kind: 'error' | 'ok' | 'info') in a status element; '' clears it. */
export function say(el, text, kind = 'info') {
  el.textContent = text;
  el.className = text ? `msg ${kind}` : 'msg';
}

export const fmt = (x, digits = 3) => (typeof x === 'number' ? x.toFixed(digits) : '–');

/** Ask for confirmation in the page's <dialog>; resolves true on OK. */
export function confirmDialog(text, okLabel = 'OK') {
  const dlg = $('confirm');
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = okLabel;
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.returnValue = '';
    dlg.showModal();
    $('confirm-cancel').focus();
  });
}

const IMAGE_NAME = /\.(jpe?g|png|webp|bmp|gif|tiff?|heic|heif|avif)$/i;

/** Whether a file looks like a photo (by type, else by name: some systems give no type). */
export const isImage = (f) => (f.type ? f.type.startsWith('image/') : IMAGE_NAME.test(f.name || ''));

/**
 * A file chooser that also takes drag-and-drop. `onFiles(files)` gets image files only; files that are not
 * photos are named in the zone's own message. Returns the element; paste is routed by main.js to the page.
 */
export function picker({ id, label, multiple = false, onFiles }) {
  const input = h('input', { type: 'file', id, accept: 'image/*', multiple });
  const note = h('p', { class: 'msg', role: 'status', 'aria-live': 'polite' });
  const zone = h('div', { class: 'drop' },
    h('label', { for: id, class: 'drop-label' }, label),
    input,
    h('span', { class: 'drop-hint' }, multiple ? 'or drop / paste photos here' : 'or drop / paste a photo here'),
    note);
  const take = (list) => {
    const all = [...list];
    const files = all.filter(isImage);
    const others = all.filter((f) => !isImage(f)).map((f) => f.name || 'the pasted item');
    say(note, others.length
      ? `${others.join(', ')} ${others.length === 1 ? 'is not a photo' : 'are not photos'}: choose a JPEG, PNG or WebP image.`
      : '', 'error');
    if (files.length) onFiles(multiple ? files : files.slice(0, 1));
  };
  input.addEventListener('change', () => { take(input.files); input.value = ''; });
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    take(e.dataTransfer.files);
  });
  zone.take = take;
  return zone;
}

// Photos larger than this (pixels or bytes) are shrunk in the browser before upload: the server refuses more
// than 40 MP or 15 MB by default, and detection gains nothing from a 48 MP phone photo.
const SHRINK_ABOVE_PX = 24_000_000;
const SHRINK_ABOVE_BYTES = 8 * 1024 * 1024;

const mb = (bytes) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
const mp = (pixels) => `${(pixels / 1e6).toFixed(pixels < 1e7 ? 1 : 0)} MP`;

/** width x height of an image file, from an <img> (no decode to a bitmap); 0 where the browser cannot read it. */
async function pixelsOf(file) {
  const url = URL.createObjectURL(file);
  try {
    const img = new Image();
    await new Promise((resolve, reject) => { img.onload = resolve; img.onerror = reject; img.src = url; });
    return img.naturalWidth * img.naturalHeight;
  } catch {
    return 0;
  } finally {
    URL.revokeObjectURL(url);
  }
}

/**
 * The file to upload for a chosen photo: itself, or a JPEG shrunk to at most SHRINK_ABOVE_PX, upright as the
 * camera meant (EXIF orientation applied). Resolves to {file, note}; `note` says what was done ('' if nothing).
 */
export async function uploadable(file) {
  if (file.size <= SHRINK_ABOVE_BYTES && (await pixelsOf(file)) <= SHRINK_ABOVE_PX) return { file, note: '' };
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: 'from-image' });
  } catch {
    return { file, note: '' };  // the browser cannot decode it (HEIC...): the server may
  }
  const pixels = bitmap.width * bitmap.height;
  const scale = Math.min(1, Math.sqrt(SHRINK_ABOVE_PX / pixels));
  const canvas = h('canvas');
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext('2d').drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', 0.9));
  const name = (file.name || 'photo').replace(/\.[^.]*$/, '') + '.jpg';
  return { file: new File([blob], name, { type: 'image/jpeg', lastModified: file.lastModified }),
    note: `${file.name || 'The photo'} (${mp(pixels)}, ${mb(file.size)}) was shrunk to ${mp(canvas.width * canvas.height)} (${mb(blob.size)}) before upload.` };
}

/**
 * Numbered boxes over a photo: `layer` (absolutely placed over `img`) gets one button per face. `faces[i].box`
 * is in the image's pixels; `look(i)` -> {kind, text} (kind: a CSS class); `onPick(i)` on click. The tag
 * ("3 · name") sits above the box, or below it / right-aligned where it would leave the photo.
 */
export function drawBoxes(layer, img, faces, { look, onPick, name = 'face' }) {
  const w = img.naturalWidth, hgt = img.naturalHeight;
  layer.replaceChildren(...faces.map((face, i) => {
    const { kind, text } = look(i);
    const [x1, y1, x2, y2] = face.box;
    const tag = h('span', { class: 'tag' }, h('b', {}, String(i + 1)), text ? ` ${text}` : '');
    const box = h('button', { type: 'button', class: `box ${kind}`, 'data-face': i + 1,
      'aria-label': `${name} ${i + 1}${text ? `: ${text}` : ''}` }, tag);
    if (w && hgt) {
      box.style.left = `${(100 * Math.max(0, x1)) / w}%`;
      box.style.top = `${(100 * Math.max(0, y1)) / hgt}%`;
      box.style.width = `${(100 * (Math.min(w, x2) - Math.max(0, x1))) / w}%`;
      box.style.height = `${(100 * (Math.min(hgt, y2) - Math.max(0, y1))) / hgt}%`;
      const shown = img.clientHeight / hgt;  // displayed px per image px
      if (Math.max(0, y1) * shown < 22) tag.classList.add('below');
      if (x1 / w > 0.55) tag.classList.add('right');
    }
    if (onPick) box.addEventListener('click', () => onPick(i));
    return box;
  }));
}

/** Draw face `box` of a loaded `img` (with a little margin) into `canvas`, `size` px square. */
export function drawCrop(canvas, img, box, size = 96) {
  const [x1, y1, x2, y2] = box;
  const side = Math.max(x2 - x1, y2 - y1) * 1.25;
  const cx = (x1 + x2) / 2, cy = (y1 + y2) / 2;
  canvas.width = size;
  canvas.height = size;
  const c = canvas.getContext('2d');
  c.fillStyle = '#ddd';
  c.fillRect(0, 0, size, size);
  c.drawImage(img, cx - side / 2, cy - side / 2, side, side, 0, 0, size, size);
}

/** Object URLs that a view owns; revoke them all when it re-renders. */
export class UrlBag {
  constructor() { this.urls = []; }
  add(url) { this.urls.push(url); return url; }
  file(blob) { return this.add(URL.createObjectURL(blob)); }
  clear() { this.urls.forEach((u) => URL.revokeObjectURL(u)); this.urls = []; }
}
