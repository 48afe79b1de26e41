// Verify: two photos side by side, the score, the threshold in force and the decision.
import { ApiError, request } from './api.js';
import { $, UrlBag, fmt, h, picker, say } from './dom.js';

const chosen = { a: null, b: null };
const urls = { a: new UrlBag(), b: new UrlBag() };

export function init() {
  for (const side of ['a', 'b']) {
    $(`verify-picker-${side}`).append(picker({ id: `verify-file-${side}`, label: `Choose photo ${side.toUpperCase()}`,
      onFiles: ([f]) => set(side, f) }));
  }
  $('verify-run').addEventListener('click', run);
}

/** A pasted photo fills A first, then B. */
export const paste = (files) => set(chosen.a && !chosen.b ? 'b' : 'a', files[0]);

export function show() {}

function set(side, file) {
  chosen[side] = file;
  urls[side].clear();
  $(`verify-preview-${side}`).replaceChildren(h('img', { src: urls[side].file(file), alt: `photo ${side.toUpperCase()}` }),
    h('p', { class: 'name' }, file.name || 'pasted photo'));
  $('verify-run').disabled = !(chosen.a && chosen.b);
  $('verify-result').hidden = true;
}

async function run() {
  const msg = $('verify-msg');
  const form = new FormData();
  form.append('file', chosen.a, chosen.a.name || 'a.jpg');
  form.append('file_b', chosen.b, chosen.b.name || 'b.jpg');
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
    $('verify-result').hidden = false;
  } catch (e) {
    say(msg, e instanceof ApiError ? e.text : String(e), 'error');
  }
}
