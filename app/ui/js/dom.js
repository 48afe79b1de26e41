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

/**
 * A file chooser that also takes drag-and-drop. `onFiles(files)` gets image files only.
 * Returns the element; paste is routed by main.js to the visible page.
 */
export function picker({ id, label, multiple = false, onFiles }) {
  const input = h('input', { type: 'file', id, accept: 'image/*', multiple });
  const zone = h('div', { class: 'drop' },
    h('label', { for: id, class: 'drop-label' }, label),
    input,
    h('span', { class: 'drop-hint' }, multiple ? 'or drop / paste photos here' : 'or drop / paste a photo here'));
  const take = (list) => {
    const files = [...list].filter((f) => f.type.startsWith('image/') || /\.(jpe?g|png|webp|bmp|tiff?|heic)$/i.test(f.name));
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

/** Object URLs that a view owns; revoke them all when it re-renders. */
export class UrlBag {
  constructor() { this.urls = []; }
  add(url) { this.urls.push(url); return url; }
  file(blob) { return this.add(URL.createObjectURL(blob)); }
  clear() { this.urls.forEach((u) => URL.revokeObjectURL(u)); this.urls = []; }
}
