// History: recent identifications, newest first, a page at a time (GET /probes): when, the face's crop, and
// the decision (who, or unknown, with the score). Only the faces the server keeps anyway for corrections, for
// as long as it keeps them (FACEID_PROBE_RETENTION_S); the photos themselves are never kept.
import { ApiError, imageBlob, request } from './api.js';
import { $, UrlBag, fmt, h, say } from './dom.js';

const PAGE = 20;
let offset = 0;
let seq = 0; // a newer load wins over a slower older one
const urls = new UrlBag();

export function init() {
  $('history-prev').addEventListener('click', () => { offset = Math.max(0, offset - PAGE); load(); });
  $('history-next').addEventListener('click', () => { offset += PAGE; load(); });
  $('history-refresh').addEventListener('click', () => { offset = 0; load(); });
}

export function show() { load(); }

/** Another collection: its history is not this one's. */
export function switched() {
  seq += 1;
  offset = 0;
  urls.clear();
  $('history-list').replaceChildren();
  say($('history-msg'), '');
  pager(0, 0);
}

async function load() {
  const mine = ++seq;
  const list = $('history-list');
  list.setAttribute('aria-busy', 'true');
  let page;
  try {
    page = await request('GET', '/probes', { query: { offset, limit: PAGE } });
  } catch (e) {
    if (mine !== seq) return;
    list.replaceChildren();
    pager(0, 0);
    say($('history-msg'), e instanceof ApiError ? e.text : String(e), 'error');
    list.setAttribute('aria-busy', 'false');
    return;
  }
  if (mine !== seq) return;
  if (!page.items.length && offset > 0 && page.total > 0) {  // expired meanwhile: step back
    offset = Math.max(0, Math.floor((page.total - 1) / PAGE) * PAGE);
    load();
    return;
  }
  urls.clear();
  say($('history-msg'), page.total ? '' : 'No recent identification is kept: identify a photo first (or the server keeps none: FACEID_PROBE_RETENTION_S).', 'info');
  list.replaceChildren(...page.items.map(row));
  list.setAttribute('aria-busy', 'false');
  pager(page.items.length, page.total);
}

function pager(n, all) {
  $('history-range').textContent = all ? `${offset + 1}–${offset + n} of ${all}` : '';
  $('history-prev').disabled = offset === 0;
  $('history-next').disabled = offset + n >= all;
}

const STATUS = { match: 'match', unknown: 'unknown', low_quality: 'face too poor to decide' };

function decision(p) {
  const top = p.top_identity;
  if (!top) return p.status === 'match' ? ['someone deleted since'] : [];
  const link = h('a', { href: `#person/${top.id}` }, top.label);
  return p.status === 'match' ? [link, ` (score ${fmt(p.top_score)})`] : ['closest: ', link, ` (score ${fmt(p.top_score)})`];
}

function row(p) {
  const time = new Date(p.created_at);
  const status = STATUS[p.status] || p.status;
  const who = p.status === 'match' && p.top_identity ? p.top_identity.label : status;
  const img = h('img', { alt: `face identified ${time.toLocaleString()}: ${who}`, width: 56, height: 56 });
  imageBlob(`/probes/${p.id}/crop`).then((b) => { img.src = urls.file(b); }).catch(() => { img.alt = 'crop expired'; });
  return h('li', { class: 'probe', 'data-probe': p.id }, img,
    h('time', { datetime: p.created_at }, time.toLocaleString()),
    h('span', { class: 'probe-decision' }, h('span', { class: `chip ${p.status === 'match' ? 'match' : ''}` }, status), ' ',
      ...decision(p)));
}
