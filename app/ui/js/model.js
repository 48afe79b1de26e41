// Model: what /ready says, and a hot swap by checkpoint name with the re-embedding progress.
import { ApiError, request } from './api.js';
import { $, h, say } from './dom.js';

let ctx;
let polling = null;
const RUNNING = new Set(['reembedding', 'switching']);

export function init(context) {
  ctx = context;
  $('model-form').addEventListener('submit', (e) => { e.preventDefault(); swap(); });
}

export function show() {
  ready();
  state();
}

const text = (e) => (e instanceof ApiError ? e.text : String(e));

function kv(dl, obj) {
  dl.replaceChildren(...Object.entries(obj).flatMap(([k, v]) => [
    h('dt', {}, k.replace(/_/g, ' ')),
    h('dd', {}, v !== null && typeof v === 'object' ? JSON.stringify(v) : String(v ?? '–'))]));
}

async function ready() {
  try {
    kv($('model-ready'), await request('GET', '/ready'));
    say($('model-ready-msg'), '');
  } catch (e) {
    say($('model-ready-msg'), text(e), 'error');
  }
}

async function state() {
  let s;
  try {
    s = await request('GET', '/admin/model');
  } catch (e) {
    say($('model-msg'), text(e), 'error');
    $('model-state').replaceChildren();
    $('model-progress-box').hidden = true;
    return null;
  }
  const swapState = s.swap || {};
  kv($('model-state'), { serving_name: s.serving_name, serving_version: s.serving_version,
    previous_version: s.previous_version, swap_state: swapState.state, candidate: swapState.candidate_name,
    error: swapState.error, versions_in_gallery: s.versions_in_gallery });
  progress(swapState);
  return swapState;
}

function progress(st) {
  const box = $('model-progress-box');
  if (!st.state || st.state === 'idle') { box.hidden = true; return; }
  box.hidden = false;
  const total = st.faces_total || 0;
  const done = st.state === 'done' ? total : Math.min(st.faces_done || 0, total);
  const bar = $('model-progress');
  bar.max = Math.max(total, 1);
  bar.value = st.state === 'done' ? bar.max : done;
  $('model-progress-label').textContent = st.state === 'failed'
    ? `swap to ${st.candidate_name} failed`
    : `${st.state}: ${done} of ${total} faces re-embedded${st.state === 'done' ? ', now serving ' + st.candidate_name : ''}`;
}

async function swap() {
  const checkpoint = $('model-checkpoint').value.trim();
  if (!checkpoint) return;
  const msg = $('model-msg');
  say(msg, `Validating ${checkpoint}…`);
  try {
    const s = await request('POST', '/admin/model', { json: { checkpoint } });
    say(msg, `Accepted: ${s.swap.candidate_name} (${s.swap.candidate_version}).`, 'ok');
    progress(s.swap);
    poll();
  } catch (e) {
    say(msg, text(e), 'error');
  }
}

function poll() {
  clearTimeout(polling);
  polling = setTimeout(async () => {
    const st = await state();
    if (st && RUNNING.has(st.state)) { poll(); return; }
    if (st?.state === 'done') say($('model-msg'), `Swapped: now serving ${st.candidate_name}.`, 'ok');
    if (st?.state === 'failed') say($('model-msg'), `Swap failed: ${st.error}`, 'error');
    ready();
    ctx.refreshServerLine();
  }, 500);
}
