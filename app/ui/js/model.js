// Model: what is serving and how it decides, in words (from /ready and /admin/calibration), and a hot swap to
// one of the checkpoints the server has (/admin/checkpoints) with the re-embedding progress. The gallery and its
// operating point are the chosen collection's; the Collections section is collections.js's.
import { ApiError, DEFAULT, apiKey, calibrationPath, collection, readyPath, request } from './api.js';
import * as collections from './collections.js';
import { $, fmt, h, say } from './dom.js';

let ctx;
let polling = null;
let serving = null;  // the serving model's name, marked in the checkpoint list
const RUNNING = new Set(['reembedding', 'switching']);
const WORDS = { strict: 'Strict', balanced: 'Balanced', loose: 'Loose' };

export function init(context) {
  ctx = context;
  $('model-form').addEventListener('submit', (e) => { e.preventDefault(); swap(); });
}

export function show() {
  ready();
  state().then(checkpoints);
  collections.show();
}

/** Another collection: its gallery and operating point are not this one's. */
export function switched() {
  $('model-ready').replaceChildren();
  say($('model-ready-msg'), '');
}

const text = (e) => (e instanceof ApiError ? e.text : String(e));
const strangers = (rate) => (rate ? `about 1 in ${Math.round(1 / rate).toLocaleString('en')}` : '–');

function kv(dl, rows) {
  dl.replaceChildren(...rows.filter(([, v]) => v !== undefined).flatMap(([k, v]) => [
    h('dt', {}, k), h('dd', {}, v === null || v === '' ? '–' : String(v))]));
}

async function ready() {
  let r;
  const name = collection.get();
  try {
    r = name === DEFAULT ? await request('GET', '/ready') : null;
    // another collection's, or the default's for a key bound to collections (/ready answers it briefly)
    if (!r || (!r.model_name && apiKey.get())) r = await request('GET', readyPath(name));
    if (name !== collection.get()) return;  // switched meanwhile
    say($('model-ready-msg'), '');
  } catch (e) {
    say($('model-ready-msg'), text(e), 'error');
    return;
  }
  if (!r.model_name) {
    kv($('model-ready'), [['Status', 'ready (an API key shows the details)']]);
    return;
  }
  const op = r.operating_point || {};
  kv($('model-ready'), [
    ['Model', `${r.model_name} (version ${r.model_version})`],
    ['Runs on', `${r.device}, ${r.precision}${r.batching ? ', requests batched' : ''}`],
    ['Gallery', `collection ${name}: ${r.identities} people, ${r.faces} faces`],
    ['Decides', `a face matches from a similarity of ${fmt(r.threshold, 2)}${op.normalisation ? ' (adjusted per face)' : ''}`],
    ['Strangers matched', r.operating_point?.target_fpir
      ? `${strangers(op.target_fpir)} searches for someone not enrolled returns a wrong match` : `fixed threshold (${op.source || 'set'})`],
    ...(op.warnings || []).map((w) => ['Warning', w]),
  ]);
  presets();
}

async function presets() {
  const list = $('model-presets');
  try {
    const c = await request('GET', calibrationPath());
    const ps = c.presets || [];
    list.replaceChildren(...ps.map((p) => h('li', {},
      h('strong', {}, WORDS[p.name] || p.name), `: ${strangers(p.target_fpir)} strangers wrongly matched${
        p.measured_fnir == null ? '' : `, about ${Math.round(100 * p.measured_fnir)} in 100 enrolled people missed`
      }, threshold ${fmt(p.threshold, 2)}`)));
    const on = ps.find((p) => p.measured_on)?.measured_on;
    if (on) list.append(h('li', { class: 'meta' }, `Miss rates measured for this model on ${on}.`));
    if (ps.length > 1 && new Set(ps.map((p) => fmt(p.threshold, 2))).size === 1) {  // a small gallery: all at the floor
      list.append(h('li', {}, 'In a gallery this small they coincide: a search is never looser than a 1:1 verification.'));
    }
  } catch {
    list.replaceChildren();  // not an admin key: the summary above is all
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
  const st = s.swap || {};
  serving = s.serving_name;
  kv($('model-state'), [
    ['Serving', `${s.serving_name} (${s.serving_version})`],
    ['Before it', s.previous_version],
    ['Last swap', st.state === 'idle' ? 'none since start' : `${st.state}${st.candidate_name ? ` (${st.candidate_name})` : ''}`],
    ['Error', st.error || undefined],
    ['Faces stored per version', Object.entries(s.versions_in_gallery || {}).map(([v, n]) => `${v}: ${n}`).join(', ')],
  ]);
  progress(st);
  return st;
}

async function checkpoints() {
  const select = $('model-checkpoint');
  let items;
  try {
    items = await request('GET', '/admin/checkpoints');
  } catch {
    return;  // state() said why (401 / 403)
  }
  const size = (c) => (c.size_bytes ? `, ${(c.size_bytes / 1024 / 1024).toFixed(0)} MB` : '');
  select.replaceChildren(...items.map((c) => h('option', { value: c.name },
    c.source === 'file'
      ? `${c.name} (file${size(c)}, ${new Date(c.modified_at * 1000).toLocaleString()})`
      : `${c.name} (pretrained${c.cached ? '' : ', fetched at the swap'})${c.name === serving ? ' · serving now' : ''}`)));
  $('model-swap').disabled = !items.length;
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
  const checkpoint = $('model-checkpoint').value;
  if (!checkpoint) return;
  const msg = $('model-msg');
  say(msg, `Checking ${checkpoint}…`);
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
    checkpoints();
    ctx.refreshServerLine();
  }, 500);
}
