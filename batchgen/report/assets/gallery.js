/* batchgen gallery: filters, search and paging over window.BATCHGEN_DATA and its chunks.
 * Job data is user text: it only ever reaches the page through textContent
 * and setAttribute, never parsed as markup. Only one page of cards is in the DOM. */
(function () {
  "use strict";
  var PAGE = 100;
  var D = window.BATCHGEN_DATA;
  var $ = function (id) { return document.getElementById(id); };
  var grid = $("grid");
  if (!D || !D.rows) {
    $("empty").textContent = "report-data.js is missing or unreadable: run `batchgen report` on this folder.";
    $("empty").hidden = false;
    return;
  }
  var F = {};
  D.fields.forEach(function (name, i) { F[name] = i; });
  // Rows live in chunks: chunk 0 in report-data.js, the others in files loaded on
  // demand (a <script> per chunk: file:// refuses fetch), at most KEEP held at once.
  var KEEP = 6;
  var nChunks = D.chunks || 1;
  var index = D.index || {};
  var cache = { 0: D.rows }, lru = [], waiting = {};
  var gen = 0;             // bumped by every filter change: late answers are dropped
  var known = {};          // chunk -> indices of its rows matching the current filters
  var list = null;         // a sorted view: every matching row, in order
  var S = null;            // the search's trigram index (search.js), loaded on the first search
  var page = 0;
  var ui = { q: $("q"), status: $("f-status"), tag: $("f-tag"), kind: $("f-kind"), retried: $("f-retried"), sort: $("f-sort") };
  var view = {};

  window.BATCHGEN_CHUNK = function (k, rows) {
    cache[k] = rows;
    (waiting[k] || []).forEach(function (w) { w[0](rows); });
    delete waiting[k];
  };
  function touch(k) {
    if (k === 0 || typeof k !== "number") return;
    lru = lru.filter(function (x) { return x !== k; });
    lru.push(k);
    while (lru.length > KEEP) delete cache[lru.shift()];
  }
  function load(k) {  // a chunk's rows (k a number) or a sorted view's ("cost", ...)
    if (cache[k]) { touch(k); return Promise.resolve(cache[k]); }
    return new Promise(function (resolve, reject) {
      if (waiting[k]) { waiting[k].push([resolve, reject]); return; }
      waiting[k] = [[resolve, reject]];
      var s = document.createElement("script");
      var name = typeof k === "number" ? String(k) : k === "search" ? D.search : D.top[k];
      s.src = href(D.dir + "/" + name + ".js");
      s.onload = function () { s.remove(); touch(k); };
      s.onerror = function () {
        s.remove();
        (waiting[k] || []).forEach(function (w) { w[1](new Error(name)); });
        delete waiting[k];
      };
      document.head.appendChild(s);
    });
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function href(rel) {  // a path relative to the page, each segment URL-encoded
    return rel.split("/").map(encodeURIComponent).join("/");
  }
  function money(v) { return "$" + (v === 0 ? "0" : v < 0.01 ? v.toFixed(6) : v.toFixed(v >= 100 ? 2 : 4)); }
  function fill(select, items) {
    items.forEach(function (it) {
      var o = el("option", "", it[0] + " (" + it[1] + ")");
      o.value = it[0];
      select.appendChild(o);
    });
  }
  fill(ui.tag, D.tags || []);
  fill(ui.kind, D.kinds || []);
  fill(ui.retried, D.retried || []);
  function retries(r) {  // the job's retried answers: {kind: count}, {} for most jobs
    return (F.retried !== undefined && r[F.retried]) || {};
  }

  function matches(r) {
    var v = view;
    if (v.st && r[F.status] !== v.st) return false;
    if (v.kind && r[F.kind] !== v.kind) return false;
    if (v.tag && r[F.tags].indexOf(v.tag) < 0) return false;
    if (v.rk && !(v.rk === "*" ? Object.keys(retries(r)).length : retries(r)[v.rk])) return false;
    if (v.terms.length) {
      var h = (r[F.id] + " " + r[F.prompt]).toLowerCase();
      for (var t = 0; t < v.terms.length; t++) if (h.indexOf(v.terms[t]) < 0) return false;
    }
    return true;
  }
  function scan(rows) {
    var out = [];
    for (var i = 0; i < rows.length; i++) if (matches(rows[i])) out.push(i);
    return out;
  }
  // Which chunks can hold a row matching every term: those holding every trigram of
  // every term (search.js, built from the same lowercased id and prompt); null: any.
  // Trigrams with a surrogate or a character only Python splits words at are skipped.
  function candidates(terms) {
    if (!S) return null;
    var ok = [], k, used = 0;
    for (k = 0; k < nChunks; k++) ok.push(true);
    terms.forEach(function (t) {
      for (var i = 0; i + 3 <= t.length; i++) {
        var g = t.substr(i, 3);
        if (/[\ud800-\udfff\x1c-\x1f\x85]/.test(g)) continue;
        var m = S.grams[g];
        if (m === undefined && !S.complete) continue;
        used++;
        for (k = 0; k < nChunks; k++) if (ok[k] && !holds(m, k)) ok[k] = false;
      }
    });
    return used ? ok : null;
  }
  function holds(m, k) {  // a trigram's chunks: [k, ...], or a hex bitmask (bit k: chunk k)
    if (m === undefined) return false;
    if (typeof m !== "string") return m.indexOf(k) >= 0;
    var at = m.length - 1 - (k >> 2);
    return at >= 0 && (parseInt(m.charAt(at), 16) >> (k & 3) & 1) === 1;
  }

  // How many rows of chunk k can match, from the index alone: exact with at most one
  // filter and no search, else an upper bound (0 means the chunk is never loaded).
  function bound(k) {
    if (known[k]) return { n: known[k].length, exact: true };
    var v = view, n = k === 0 ? D.rows.length : Math.min(D.chunk, D.total - k * D.chunk);
    if (v.cand && !v.cand[k]) return { n: 0, exact: true };
    var used = 0;
    [["status", v.st], ["tag", v.tag], ["kind", v.kind], ["retried", v.rk]].forEach(function (f) {
      if (!f[1]) return;
      var counts = (index[f[0]] || {})[f[1]];
      n = Math.min(n, counts ? counts[k] || 0 : 0);
      used++;
    });
    return { n: n, exact: n === 0 || (used <= 1 && !v.terms.length) };
  }

  function apply() {
    gen++;
    view = { st: ui.status.value, tag: ui.tag.value, kind: ui.kind.value, rk: ui.retried.value,
      terms: ui.q.value.toLowerCase().split(/\s+/).filter(Boolean), sort: ui.sort.value };
    known = {};
    list = null;
    page = 0;
    if (view.terms.length && nChunks > 1 && D.search && !S) {  // load the index, then again
      var g0 = gen, again = function () { if (g0 === gen) apply(); };
      load("search").then(function (s) { S = s; again(); }, function () { D.search = null; again(); });
      return;
    }
    view.cand = view.terms.length && nChunks > 1 ? candidates(view.terms) : null;
    if (!view.sort) { render(); return; }
    var my = gen, key = view.sort === "cost" ? F.cost : F.attempts;
    // One chunk: sort every row. More: the view's own file, the top rows in order.
    var src = nChunks === 1 ? Promise.resolve(D.rows) : load(view.sort);
    src.then(function (rows) {
      if (my !== gen) return;
      var idx = scan(rows);
      if (nChunks === 1) idx.sort(function (a, b) { return rows[b][key] - rows[a][key] || a - b; });
      list = idx.map(function (i) { return rows[i]; });
      list.among = rows.length;
      render();
    }, failed);
  }

  // The rows of page p and what is known of the total: chunks whose count is known
  // are skipped without loading; the others are loaded and scanned in order.
  function pageRows(p) {
    var start = p * PAGE;
    if (list) return Promise.resolve({ rows: list.slice(start, start + PAGE), total: list.length, exact: true });
    var out = [], seen = 0;
    function step(k) {
      if (k >= nChunks || out.length >= PAGE) return Promise.resolve(summary());
      var b = bound(k);
      if (b.n === 0 || (b.exact && seen + b.n <= start)) { seen += b.n; return step(k + 1); }
      return load(k).then(function (rows) {
        if (!known[k]) known[k] = scan(rows);
        var m = known[k];
        for (var i = Math.max(0, start - seen); i < m.length && out.length < PAGE; i++) out.push(rows[m[i]]);
        seen += m.length;
        return step(k + 1);
      });
    }
    function summary() {
      var total = 0, exact = true;
      for (var k = 0; k < nChunks; k++) {
        var b = bound(k);
        if (b.exact) total += b.n; else exact = false;
      }
      return { rows: out, total: exact ? total : Math.max(total, start + out.length), exact: exact };
    }
    return step(0);
  }

  function failed(err) {
    $("empty").textContent = "Could not load " + (err && err.message) + ": the report was rebuilt or moved; reload the page.";
    $("empty").hidden = false;
  }

  function card(r) {
    var status = r[F.status];
    var c = el("article", "card s-" + status);
    c.setAttribute("data-testid", "card");
    c.setAttribute("data-id", r[F.id]);
    c.setAttribute("data-status", status);
    var thumb;
    if (r[F.image]) {
      thumb = el("a", "thumb");
      thumb.href = href(r[F.image]);
      thumb.target = "_blank";
      thumb.rel = "noopener";
      thumb.title = "Open the full image";
      if (r[F.thumb]) {
        var img = el("img");
        img.loading = "lazy";
        img.decoding = "async";
        img.alt = r[F.id];
        img.src = href(r[F.thumb]);
        img.onerror = function () { thumb.replaceChildren(el("span", "", "no preview")); };
        thumb.appendChild(img);
      } else {
        thumb.textContent = "no preview yet \u00b7 open the image";
      }
    } else {
      thumb = el("div", "thumb none", status === "pending" ? "not generated yet" : "no image");
    }
    c.appendChild(thumb);
    var body = el("div", "body");
    var head = el("div", "head");
    var id = el("span", "id", r[F.id]);
    id.title = r[F.id];
    head.append(id, el("span", "badge s-" + status, status));
    body.appendChild(head);
    var p = el("p", "prompt", r[F.prompt]);
    p.title = "Click to expand";
    p.onclick = function () { p.classList.toggle("open"); };
    body.appendChild(p);
    var tags = r[F.tags];
    if (tags.length) {
      var tg = el("div", "tags");
      tags.forEach(function (t) {
        var b = el("button", "tag", t);
        b.type = "button";
        b.title = "Show only this tag";
        b.onclick = function () { setFilter(ui.tag, t); };
        tg.appendChild(b);
      });
      body.appendChild(tg);
    }
    var n = r[F.attempts];
    var meta = body.appendChild(el("div", "meta"));
    meta.append(
      el("span", "", n + (n === 1 ? " attempt" : " attempts")), el("span", "", money(r[F.cost])));
    if (r[F.pixels]) {
      var px = el("span", r[F.mismatch] ? "mismatch" : "", r[F.pixels]);
      if (r[F.mismatch]) {
        px.textContent = r[F.pixels] + " (asked " + r[F.mismatch] + ")";
        px.title = "Not the size the model should give for this request";
        px.setAttribute("data-testid", "size-mismatch");
      }
      meta.append(px);
    }
    var rt = retries(r), rkinds = Object.keys(rt).sort();
    if (rkinds.length) {
      var rb = el("div", "retried", "retried: " + rkinds.map(function (k) { return rt[k] + "\u00d7 " + k; }).join(", "));
      rb.setAttribute("data-testid", "retried");
      rb.title = "Answers this job was sent again after";
      body.appendChild(rb);
    }
    if (r[F.kind]) {
      var err = el("div", "err");
      err.setAttribute("data-testid", "error");
      err.appendChild(el("b", "", r[F.kind] + (r[F.http] ? " \u00b7 HTTP " + r[F.http] : "")));
      err.appendChild(document.createTextNode(r[F.message]));
      body.appendChild(err);
    }
    if (r[F.text] && status !== "done") {
      var q = el("p", "text", r[F.text]);
      q.title = "The model's text";
      body.appendChild(q);
    }
    var refs = (F.refs !== undefined && r[F.refs]) || [];
    if (refs.length) {  // the job's reference images, beside its output
      var rf = el("div", "refs");
      rf.setAttribute("data-testid", "refs");
      rf.appendChild(el("span", "label", refs.length === 1 ? "reference" : "references"));
      refs.forEach(function (path) {
        var a = el("a", "ref");
        a.href = href(path);
        a.target = "_blank";
        a.rel = "noopener";
        a.title = path;
        var img = el("img");
        img.loading = "lazy";
        img.decoding = "async";
        img.alt = path.split("/").pop();
        img.src = href(path);
        img.onerror = function () { a.replaceChildren(el("span", "", img.alt)); };
        a.appendChild(img);
        rf.appendChild(a);
      });
      body.appendChild(rf);
    }
    if (r[F.files].length) {
      var fl = el("div", "files");
      r[F.files].forEach(function (f) {
        var path = f.split("#")[0];
        var a = el("a", "", path.split("/").slice(-2).join("/") + (f.indexOf("#upscaled") > 0 ? " (upscaled)" : ""));
        a.href = href(path);
        a.target = "_blank";
        a.rel = "noopener";
        fl.appendChild(a);
      });
      body.appendChild(fl);
    }
    c.appendChild(body);
    return c;
  }

  function render() {
    var my = gen, p = page;
    return pageRows(p).then(function (res) {
      if (my !== gen || p !== page) return;
      var frag = document.createDocumentFragment();
      res.rows.forEach(function (r) { frag.appendChild(card(r)); });
      grid.replaceChildren(frag);
      var start = p * PAGE, end = start + res.rows.length;
      var total = String(res.total) + (res.exact ? "" : "+");
      var sorted = list && nChunks > 1 ? " among the " + list.among + " first in this order (report.json has every job)" : "";
      $("shown-count").textContent = total;
      $("page-range").textContent = res.rows.length
        ? "showing " + (start + 1) + "\u2013" + end + " of " + total + sorted : "showing none";
      var pages = Math.max(1, Math.ceil(res.total / PAGE));
      $("page-no").textContent = "page " + (p + 1) + (res.exact ? " / " + pages : "");
      $("empty").hidden = res.rows.length > 0;
      var last = res.exact ? p >= pages - 1 : res.rows.length < PAGE;
      ["prev", "prev2"].forEach(function (b) { $(b).disabled = p === 0; });
      ["next", "next2"].forEach(function (b) { $(b).disabled = last; });
      document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
      document.body.setAttribute("data-ready", "1");
    }, failed);
  }
  function go(delta, scroll) {
    page += delta;
    render();
    if (scroll) $("filters").scrollIntoView();
  }
  function setFilter(select, value) {
    if (![].some.call(select.options, function (o) { return o.value === value; })) return;
    select.value = value;
    apply();
    $("filters").scrollIntoView();
  }

  $("prev").onclick = function () { go(-1, false); };
  $("next").onclick = function () { go(1, false); };
  $("prev2").onclick = function () { go(-1, true); };
  $("next2").onclick = function () { go(1, true); };
  [ui.status, ui.tag, ui.kind, ui.retried, ui.sort].forEach(function (s) { s.onchange = apply; });
  var timer = 0;
  ui.q.oninput = function () { clearTimeout(timer); timer = setTimeout(apply, nChunks > 1 ? 250 : 60); };
  $("reset").onclick = function () {
    ui.q.value = ""; ui.status.value = ""; ui.tag.value = ""; ui.kind.value = ""; ui.retried.value = ""; ui.sort.value = "";
    apply();
  };
  document.querySelectorAll("[data-set-status]").forEach(function (b) {
    b.onclick = function () { setFilter(ui.status, b.getAttribute("data-set-status")); };
  });
  document.querySelectorAll("[data-set-tag]").forEach(function (b) {
    b.onclick = function () { setFilter(ui.tag, b.getAttribute("data-set-tag")); };
  });
  document.querySelectorAll("[data-set-kind]").forEach(function (b) {
    b.onclick = function () { setFilter(ui.kind, b.getAttribute("data-set-kind")); };
  });
  document.querySelectorAll("[data-set-retried]").forEach(function (b) {
    b.onclick = function () { setFilter(ui.retried, b.getAttribute("data-set-retried")); };
  });
  document.addEventListener("keydown", function (e) {
    if (e.key === "/" && document.activeElement !== ui.q) { e.preventDefault(); ui.q.focus(); }
  });
  apply();
})();
