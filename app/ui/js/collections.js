// Collections: the switcher in the header (which gallery the pages act on) and the Model page's "Collections"
// section (GET/POST /collections, DELETE /collections/{name}: admin scope). A key that may not list them still
// types a name; names typed are remembered (localStorage), as is the choice.
import { ApiError, COLLECTION_NAME, DEFAULT, collection, readyPath, request } from './api.js';
import { $, confirmDialog, h, say } from './dom.js';

const OTHER = '';  // the switcher's "Other name…" option
let onSwitched = () => {};
let listed = null;  // GET /collections' items, or null where the key may not list them
let seq = 0;  // a newer list wins over a slower older one

const text = (e) => (e instanceof ApiError ? e.text : String(e));
const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;
const NAME_RULE = 'a collection name is 1 to 63 lowercase letters, digits, "-" or "_", starting with a letter or digit';

/** `switched(name)` runs after every switch (main.js: the pages forget the other collection and re-render). */
export function init({ switched }) {
  onSwitched = switched;
  $('collection-form').addEventListener('submit', (e) => { e.preventDefault(); chosen(); });
  $('collection-select').addEventListener('change', () => {
    const other = $('collection-select').value === OTHER;
    $('collection-other').hidden = !other;
    if (other) $('collection-name').focus();
  });
  $('collection-create').addEventListener('submit', (e) => { e.preventDefault(); create(); });
  marked();
  refresh();
}

/** The collections the key may list (GET /collections), else null; the switcher and the section are redrawn. */
export async function refresh() {
  const mine = ++seq;
  let page = null;
  let why = null;
  try {
    page = await request('GET', '/collections', { query: { limit: 1000 } });
  } catch (e) {
    why = e;
  }
  if (mine !== seq) return;
  listed = page ? page.collections : null;
  fill();
  table(why);
}

/** The switcher's options: the listed collections, else default and the names typed before; then "Other name…". */
function fill() {
  const now = collection.get();
  const names = listed ? listed.map((c) => c.name) : [DEFAULT, ...collection.known()];
  if (!names.includes(now)) names.push(now);
  const select = $('collection-select');
  select.replaceChildren(...names.map((n) => h('option', { value: n, selected: n === now }, n)),
    h('option', { value: OTHER }, listed ? 'Other name…' : 'Type a name…'));
  select.value = now;
  $('collection-other').hidden = true;
}

/** The page says which collection it acts on: the header's band, the tab's title (main.js: the server line). */
function marked() {
  const now = collection.get();
  document.body.classList.toggle('in-collection', now !== DEFAULT);
  document.title = now === DEFAULT ? 'faceid' : `faceid · ${now}`;
}

async function chosen() {
  const select = $('collection-select');
  const typed = select.value === OTHER;
  const name = typed ? $('collection-name').value.trim() : select.value;
  const msg = $('collection-msg');
  if (typed && !name) { say(msg, 'Type the name of a collection.', 'error'); $('collection-name').focus(); return; }
  if (!COLLECTION_NAME.test(name)) { say(msg, `"${name}" is not a collection's name: ${NAME_RULE}.`, 'error'); return; }
  if (typed && !(listed || []).some((c) => c.name === name) && !await reachable(name)) return;
  if (typed) collection.remember(name);
  switchTo(name);
}

/** Whether a typed name is a collection this key reaches (404 or 403: said, and not switched to). */
async function reachable(name) {
  const msg = $('collection-msg');
  try {
    await request('GET', readyPath(name));
  } catch (e) {
    if (e instanceof ApiError && e.code === 'unknown_collection') {
      say(msg, `There is no collection "${name}".`, 'error');
      collection.forget(name);
      return false;
    }
    if (e instanceof ApiError && e.code === 'collection_forbidden') {
      say(msg, `This key cannot reach "${name}": ${e.message}.`, 'error');
      return false;
    }
    // 401 without a key, an unreachable server: switch all the same; the pages will say why they fail
  }
  return true;
}

/** Act on collection `name` from now on: every page forgets what it showed of the previous one. */
export function switchTo(name, note = '') {
  const before = collection.get();
  collection.set(name);
  say($('collection-msg'), note || (before === name ? '' : `Now acting on ${name}.`), note ? 'info' : 'ok');
  $('collection-name').value = '';
  fill();
  marked();
  table();
  if (before !== name) onSwitched(name);
}

// --- the Model page's section ----------------------------------------------------------------------------------

export function show() { refresh(); }

const strangers = (rate) => `about 1 in ${Math.round(1 / rate).toLocaleString('en')}`;

/** The section's table: each collection, its size, its operating point, Use and Delete. */
function table(why = null) {
  const body = $('collections-rows');
  $('collections-table').hidden = !listed;
  if (!listed) {
    body.replaceChildren();
    if (why) {
      say($('collections-list-msg'), why instanceof ApiError && why.code === 'collection_forbidden'
        ? 'This key is bound to collections: only a key bound to none lists, makes or deletes them.' : text(why), 'error');
    }
    return;
  }
  say($('collections-list-msg'), '');
  const now = collection.get();
  body.replaceChildren(...listed.map((c) => {
    const fpir = c.settings?.target_fpir;
    const counts = c.counts || {};
    const here = c.name === now;
    return h('tr', { 'data-collection': c.name, class: here ? 'here' : null },
      h('th', { scope: 'row' }, c.name, here ? h('span', { class: 'chip match' }, 'in use') : null),
      h('td', {}, String(counts.identities ?? '–')),
      h('td', {}, String(counts.faces ?? '–')),
      h('td', {}, fpir ? `${fpir} (1 in ${Math.round(1 / fpir).toLocaleString('en')})` : 'the service’s'),
      h('td', {}, h('div', { class: 'row' },
        here ? null : h('button', { type: 'button', class: 'small', 'aria-label': `use ${c.name}`,
          onclick: () => switchTo(c.name) }, 'Use'),
        c.name === DEFAULT ? null : h('button', { type: 'button', class: 'small danger', 'aria-label': `delete ${c.name}`,
          onclick: () => remove(c) }, 'Delete'))));
  }));
}

async function create() {
  const msg = $('collections-msg');
  const name = $('collection-new-name').value.trim();
  const raw = $('collection-new-fpir').value.trim();
  if (!name) { say(msg, 'Type a name for the new collection.', 'error'); $('collection-new-name').focus(); return; }
  if (!COLLECTION_NAME.test(name)) { say(msg, `"${name}" cannot be used: ${NAME_RULE}.`, 'error'); return; }
  const fpir = raw === '' ? null : Number(raw);
  if (fpir !== null && !(fpir > 0 && fpir < 1)) {
    say(msg, 'The share of strangers matched is a number between 0 and 1 (0.001: about 1 in 1,000), or empty for the service’s.', 'error');
    return;
  }
  try {
    const c = await request('POST', '/collections', { json: { name, settings: fpir === null ? {} : { target_fpir: fpir } } });
    say(msg, `Made ${c.name}${fpir === null ? '' : ` (${strangers(fpir)} strangers matched)`}: choose it at the top of the page to fill it.`, 'ok');
    $('collection-new-name').value = '';
    $('collection-new-fpir').value = '';
    refresh();
  } catch (e) {
    say(msg, e instanceof ApiError && e.code === 'collection_exists' ? `There is already a collection named "${name}" (or one being deleted).` : text(e), 'error');
  }
}

async function remove(c) {
  const counts = c.counts || {};
  const size = counts.identities === undefined ? 'everything in it'
    : `its ${plural(counts.identities, 'person', 'people')} and ${plural(counts.faces, 'face')}`;
  if (!await confirmDialog(`Delete the collection "${c.name}" with ${size}? The other collections are not touched. This cannot be undone.`, 'Delete')) return;
  const msg = $('collections-msg');
  try {
    await request('DELETE', `/collections/${encodeURIComponent(c.name)}`);
    collection.forget(c.name);
    if (collection.get() === c.name) switchTo(DEFAULT, `${c.name} was deleted: now acting on ${DEFAULT}.`);
    say(msg, `Deleted ${c.name}.`, 'ok');
    refresh();
  } catch (e) {
    say(msg, text(e), 'error');
  }
}
