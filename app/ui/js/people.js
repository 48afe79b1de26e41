// What the Gallery's cards and a person's page both do: rename an identity, tick every face or card of a page.
import { ApiError, request } from './api.js';
import { h, say } from './dom.js';

/** A rename form for `ident` ({id, label}) in `tools`; `done(renamed)` once the server renamed it. */
export function renameForm(ident, tools, done) {
  const input = h('input', { type: 'text', value: ident.label, maxlength: 200, 'aria-label': `new name for ${ident.label}` });
  const msg = h('p', { class: 'msg', role: 'status' });
  const form = h('form', { class: 'row' }, input, h('button', { type: 'submit' }, 'Save'),
    h('button', { type: 'button', onclick: () => tools.replaceChildren() }, 'Cancel'), msg);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const label = input.value.trim();
    if (!label) return;
    try {
      done(await request('PATCH', `/identities/${ident.id}`, { json: { label } }));
    } catch (err) {
      say(msg, err instanceof ApiError ? err.text : String(err), 'error');
    }
  });
  tools.replaceChildren(form);
  input.focus();
  input.select();
}

/** "Select all on this page": the checkbox `all` ticks every `input.pick` inside `list`, telling `pick(id, on)`. */
export function selectAll(all, list, pick) {
  all.addEventListener('change', () => {
    const on = all.checked; // read once: each pick() redraws this box's state
    for (const box of list.querySelectorAll('input.pick')) {
      box.checked = on;
      pick(Number(box.value), box.checked);
    }
  });
}
