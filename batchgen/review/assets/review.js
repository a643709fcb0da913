/* batchgen review: pages of jobs from the local API, a decision per image.
 *
 * Every user text is set with textContent (a prompt is data, never markup).
 * Decisions go into a queue sent in order, one at a time: a 503 (the run's
 * writer holds the state) is sent again after a pause, so none is lost; the
 * page shows how many are still to save. */
'use strict';
(function () {
  const PAGE = 60;
  const token = new URLSearchParams(location.search).get('token') || '';
  const $ = (id) => document.getElementById(id);
  const state = {
    items: [], index: -1, next: 0, done: false, loading: null,
    filter: { view: '', status: '', tag: '', model: '' },
    counts: { total: 0, approved: 0, rejected: 0 },
    queue: [], sending: false, generation: 0,
  };

  function url(path, params) {
    const q = new URLSearchParams(params || {});
    q.set('token', token);
    return path + '?' + q.toString();
  }
  const fileUrl = (rel) => url('/file/' + rel.split('/').map(encodeURIComponent).join('/'));

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  async function getJSON(path, params) {
    const r = await fetch(url(path, params));
    if (!r.ok) throw new Error(path + ': ' + r.status);
    return r.json();
  }

  function problem(text) {
    const p = $('problem');
    p.textContent = text;
    p.hidden = !text;
  }

  // -- counts and filters -------------------------------------------------
  function showCounts() {
    const c = state.counts;
    $('count-approved').textContent = String(c.approved);
    $('count-rejected').textContent = String(c.rejected);
    $('count-unreviewed').textContent = String(c.total - c.approved - c.rejected);
    $('saving').textContent = String(state.queue.length);
    document.body.dataset.saving = String(state.queue.length);
  }

  function fill(select, values, label) {
    for (const [value, text] of values) {
      const o = el('option', '', label ? label(value, text) : value);
      o.value = value;
      select.appendChild(o);
    }
  }

  async function loadFacets() {
    const f = await getJSON('/api/facets');
    const total = Object.values(f.statuses).reduce((a, b) => a + b, 0);
    state.counts = { total, approved: f.approved, rejected: f.rejected };
    fill($('f-status'), Object.entries(f.statuses).filter(([, n]) => n > 0),
      (s, n) => s + ' (' + n + ')');
    fill($('f-tag'), f.tags.map((t) => [t, t]));
    fill($('f-model'), f.models.map((m) => [m, m]));
    showCounts();
  }

  // -- the list -----------------------------------------------------------
  function card(item, i) {
    const c = el('button', 'card');
    c.type = 'button';
    c.dataset.testid = 'card';
    c.dataset.id = item.id;
    c.dataset.status = item.status;
    const img = el('img');
    img.alt = '';
    img.loading = 'lazy';
    if (item.files.length) img.src = fileUrl(item.files[0]);
    c.appendChild(img);
    c.appendChild(el('span', 'cid', item.id));
    c.appendChild(el('span', 'badge'));
    c.addEventListener('click', () => select(i));
    item.card = c;
    paint(item);
    return c;
  }

  function paint(item) {
    const c = item.card;
    c.dataset.decision = item.decision || '';
    c.querySelector('.badge').textContent = item.stale ? 'changed' : (item.decision || '');
  }

  async function loadMore() {
    if (state.done) return;
    if (state.loading) return state.loading;
    const generation = state.generation;
    state.loading = (async () => {
      const params = Object.assign({}, state.filter, { after: state.next, limit: PAGE });
      const page = await getJSON('/api/jobs', params);
      if (generation !== state.generation) return;
      const grid = $('grid');
      for (const item of page.items) {
        grid.appendChild(card(item, state.items.length));
        state.items.push(item);
      }
      state.done = page.next === null;
      if (!state.done) state.next = page.next;
      $('more').hidden = state.done;
      $('empty').hidden = state.items.length > 0;
    })();
    try { await state.loading; } finally { state.loading = null; }
  }

  async function restart() {
    state.generation += 1;
    Object.assign(state, { items: [], index: -1, next: 0, done: false, loading: null });
    $('grid').replaceChildren();
    $('detail').hidden = true;
    await loadMore();
    if (state.items.length) select(0);
  }

  // -- the job under review -----------------------------------------------
  function select(i) {
    if (i < 0 || i >= state.items.length) return;
    const old = state.items[state.index];
    if (old) old.card.classList.remove('current');
    state.index = i;
    const item = state.items[i];
    item.card.classList.add('current');
    item.card.scrollIntoView({ block: 'nearest' });
    show(item);
    if (i >= state.items.length - 5) loadMore().catch((e) => problem(String(e)));
  }

  function figure(src, caption, testid) {
    const f = el('figure');
    const img = el('img');
    img.alt = caption;
    img.src = src;
    img.setAttribute('data-testid', testid);
    f.appendChild(img);
    f.appendChild(el('figcaption', '', caption));
    return f;
  }

  function show(item) {
    $('detail').hidden = false;
    $('detail').dataset.id = item.id;
    $('d-id').textContent = item.id;
    $('d-decision').textContent = item.stale ? 'image changed: reload' : (item.decision || 'unreviewed');
    $('d-decision').dataset.decision = item.decision || '';
    $('note').value = item.note || '';
    const main = $('d-image');
    if (item.files.length) main.src = fileUrl(item.files[0]); else main.removeAttribute('src');
    $('d-prompt').textContent = item.prompt;
    $('d-model').textContent = item.model || '';
    $('d-status').textContent = item.status;
    $('d-tags').textContent = item.tags.join(', ');
    $('d-error').textContent = item.error || '';
    const refs = $('d-refs');
    refs.replaceChildren();
    item.references.forEach((ref, n) => {
      refs.appendChild(figure(url('/ref', { job: item.id, n }), 'reference ' + (n + 1), 'reference'));
    });
    const hist = $('d-history');
    hist.replaceChildren();
    item.history.forEach((rel, n) => {
      hist.appendChild(figure(fileUrl(rel), 'version ' + (n + 1), 'history-image'));
    });
  }

  function current() { return state.items[state.index]; }

  function decide(decision, advance) {
    const item = current();
    if (!item || item.stale) return;
    const before = item.decision;
    if (before) state.counts[before] -= 1;
    if (decision) state.counts[decision] += 1;
    item.decision = decision;
    item.note = decision ? $('note').value : '';
    paint(item);
    state.queue.push({ item, body: { id: item.id, decision, note: item.note, version: item.version } });
    showCounts();
    send();
    if (advance && state.index < state.items.length - 1) select(state.index + 1); else show(item);
  }

  // -- saving, in order, never dropped -------------------------------------
  async function send() {
    if (state.sending) return;
    state.sending = true;
    let pause = 100;
    while (state.queue.length) {
      const { item, body } = state.queue[0];
      let r = null;
      try {
        r = await fetch(url('/api/review'), {
          method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
        });
      } catch (e) { r = null; }
      if (r === null || r.status === 503) {
        problem('the state is busy (a run is planning); saving again shortly');
        await new Promise((done) => setTimeout(done, pause));
        pause = Math.min(pause * 2, 5000);
        continue;
      }
      pause = 100;
      if (r.status === 409) { item.stale = true; paint(item); }
      problem(r.ok || r.status === 409 ? '' : 'not saved: ' + r.status + ' ' + (await r.text()));
      state.queue.shift();
      showCounts();
    }
    state.sending = false;
  }

  // -- keys and controls --------------------------------------------------
  function onKey(e) {
    if (e.target === $('note')) {
      if (e.key === 'Enter' && !e.shiftKey) {
        e.preventDefault();
        const item = current();
        if (item && item.decision) decide(item.decision, false);
        $('note').blur();
      } else if (e.key === 'Escape') {
        $('note').blur();
      }
      return;
    }
    if (e.target.tagName === 'SELECT' || e.ctrlKey || e.metaKey || e.altKey) return;
    const keys = {
      a: () => decide('approved', true),
      r: () => decide('rejected', true),
      u: () => decide(null, false),
      n: () => $('note').focus(),
      ArrowRight: () => select(state.index + 1),
      ArrowDown: () => select(state.index + 1),
      j: () => select(state.index + 1),
      ArrowLeft: () => select(state.index - 1),
      ArrowUp: () => select(state.index - 1),
      k: () => select(state.index - 1),
    };
    const action = keys[e.key];
    if (action) { e.preventDefault(); action(); }
  }

  function wire() {
    document.addEventListener('keydown', onKey);
    $('approve').addEventListener('click', () => decide('approved', true));
    $('reject').addEventListener('click', () => decide('rejected', true));
    $('clear').addEventListener('click', () => decide(null, false));
    $('more').addEventListener('click', () => loadMore().catch((e) => problem(String(e))));
    $('filters').addEventListener('submit', (e) => e.preventDefault());
    for (const name of ['view', 'status', 'tag', 'model']) {
      $('f-' + name).addEventListener('change', (e) => {
        state.filter[name] = e.target.value;
        e.target.blur();
        restart().catch((err) => problem(String(err)));
      });
    }
    window.addEventListener('beforeunload', (e) => { if (state.queue.length) e.preventDefault(); });
  }

  async function start() {
    wire();
    await loadFacets();
    await restart();
    document.body.dataset.ready = '1';
  }
  start().catch((e) => problem(String(e)));
})();
