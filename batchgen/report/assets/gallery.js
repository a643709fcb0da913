/* batchgen gallery: filters, search and paging over window.BATCHGEN_DATA.
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
  var rows = D.rows;
  var hay = null;          // lower-cased "id prompt", built on the first search
  var matches = [];        // indices of rows passing the filters, in display order
  var page = 0;
  var ui = { q: $("q"), status: $("f-status"), tag: $("f-tag"), kind: $("f-kind"), retried: $("f-retried"), sort: $("f-sort") };

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

  function apply() {
    var st = ui.status.value, tag = ui.tag.value, kind = ui.kind.value, rk = ui.retried.value;
    var terms = ui.q.value.toLowerCase().split(/\s+/).filter(Boolean);
    if (terms.length && !hay) {
      hay = rows.map(function (r) { return (r[F.id] + " " + r[F.prompt]).toLowerCase(); });
    }
    var out = [];
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      if (st && r[F.status] !== st) continue;
      if (kind && r[F.kind] !== kind) continue;
      if (tag && r[F.tags].indexOf(tag) < 0) continue;
      if (rk && !(rk === "*" ? Object.keys(retries(r)).length : retries(r)[rk])) continue;
      if (terms.length) {
        var h = hay[i], ok = true;
        for (var t = 0; t < terms.length; t++) if (h.indexOf(terms[t]) < 0) { ok = false; break; }
        if (!ok) continue;
      }
      out.push(i);
    }
    var key = ui.sort.value === "cost" ? F.cost : ui.sort.value === "attempts" ? F.attempts : -1;
    if (key >= 0) out.sort(function (a, b) { return rows[b][key] - rows[a][key] || a - b; });
    matches = out;
    page = 0;
    render();
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
    var pages = Math.max(1, Math.ceil(matches.length / PAGE));
    if (page >= pages) page = pages - 1;
    var start = page * PAGE, end = Math.min(matches.length, start + PAGE);
    var frag = document.createDocumentFragment();
    for (var i = start; i < end; i++) frag.appendChild(card(rows[matches[i]]));
    grid.replaceChildren(frag);
    $("shown-count").textContent = String(matches.length);
    $("page-range").textContent = matches.length
      ? "showing " + (start + 1) + "\u2013" + end + " of " + matches.length : "showing none";
    $("page-no").textContent = "page " + (page + 1) + " / " + pages;
    $("empty").hidden = matches.length > 0;
    ["prev", "prev2"].forEach(function (b) { $(b).disabled = page === 0; });
    ["next", "next2"].forEach(function (b) { $(b).disabled = page >= pages - 1; });
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
  ui.q.oninput = function () { clearTimeout(timer); timer = setTimeout(apply, rows.length > 20000 ? 200 : 60); };
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
  document.body.setAttribute("data-ready", "1");
})();
