# Copyright 2026 The ECLIP authors. Licensed under the Apache License, Version 2.0.
"""
The search page `eclip-serve` serves: one self-contained HTML document (inline CSS and JavaScript, no external
asset, so it works offline and behind any proxy). Every text from the index (titles, fields, error messages) is
inserted with `textContent`, never as HTML. Element ids (`query`, `file`, `search`, `results`, `error`, ...) are
stable: the browser tests drive the page by them.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ECLIP catalogue search</title>
<style>
  :root { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; background: #fafafa; }
  body { margin: 0 auto; max-width: 1180px; padding: 18px 22px 40px; }
  h1 { font-size: 1.35rem; margin: 0 0 4px; }
  #status { color: #666; font-size: .9rem; min-height: 1.2em; }
  form { display: flex; flex-wrap: wrap; gap: 10px 14px; align-items: center; background: #fff; padding: 14px;
         border: 1px solid #ddd; border-radius: 8px; margin: 12px 0; }
  fieldset { border: none; padding: 0; margin: 0; display: flex; gap: 10px; }
  #query { flex: 1 1 320px; font-size: 1rem; padding: 7px 9px; border: 1px solid #bbb; border-radius: 6px; }
  #filters { width: 230px; padding: 6px 8px; border: 1px solid #bbb; border-radius: 6px; }
  #k { width: 60px; padding: 6px; }
  button { font-size: 1rem; padding: 7px 18px; border-radius: 6px; border: none; background: #2457d6; color: #fff;
           cursor: pointer; }
  button:disabled { background: #8aa1d8; cursor: progress; }
  .hidden { display: none !important; }
  #error { color: #a40000; background: #fdecea; border: 1px solid #f5c2bd; padding: 8px 12px; border-radius: 6px;
           margin: 8px 0; }
  .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 12px; }
  .card { background: #fff; border: 1px solid #e3e3e3; border-radius: 8px; padding: 8px; display: flex;
          flex-direction: column; gap: 4px; }
  .card img { width: 100%; aspect-ratio: 1 / 1; object-fit: contain; background: #f2f2f2; border-radius: 4px; }
  .title { font-size: .85rem; line-height: 1.2; }
  .meta { font-size: .75rem; color: #666; }
  .score { font-variant-numeric: tabular-nums; font-size: .75rem; color: #2457d6; }
  .instance { display: grid; grid-template-columns: 220px 1fr; gap: 14px; padding: 12px 0;
              border-bottom: 1px solid #e3e3e3; }
  .instance img.highlight { width: 220px; border-radius: 6px; border: 1px solid #ddd; }
  .instance-label { font-size: .85rem; color: #444; margin-top: 4px; }
  .hint { font-size: .8rem; color: #777; }
</style>
</head>
<body>
<h1>ECLIP catalogue search</h1>
<div id="status" aria-live="polite">Loading the index&hellip;</div>
<form id="form" autocomplete="off">
  <fieldset>
    <label><input type="radio" name="mode" id="mode-text" value="text" checked> Text</label>
    <label><input type="radio" name="mode" id="mode-image" value="image"> Photo</label>
    <label><input type="radio" name="mode" id="mode-scene" value="scene"> Scene (shop the look)</label>
  </fieldset>
  <input type="search" id="query" placeholder="e.g. red running shoes" aria-label="Text query">
  <input type="file" id="file" class="hidden" accept="image/*" aria-label="Photo">
  <label>results <input type="number" id="k" value="10" min="1" max="100"></label>
  <input type="text" id="filters" placeholder="filters, e.g. gender=Women" aria-label="Filters" list="filter-hints">
  <datalist id="filter-hints"></datalist>
  <button type="submit" id="search">Search</button>
</form>
<div id="error" role="alert" class="hidden"></div>
<div id="timing" class="hint"></div>
<div id="results"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let info = null;

function mode() { return document.querySelector('input[name="mode"]:checked').value; }

function showMode() {
  const text = mode() === "text";
  $("query").classList.toggle("hidden", !text);
  $("file").classList.toggle("hidden", text);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function card(hit) {
  const node = el("div", "card");
  node.dataset.productId = hit.product_id;
  const img = el("img", "thumb");
  img.src = hit.image_url;
  img.alt = hit.title;
  img.loading = "lazy";
  node.append(img, el("div", "title", hit.title));
  const fields = ["articleType", "gender", "baseColour"].map((f) => hit.fields[f]).filter(Boolean).join(" · ");
  if (fields) node.append(el("div", "meta", fields));
  node.append(el("div", "score", "score " + hit.score.toFixed(3) + " · #" + hit.rank + " · id " + hit.product_id));
  return node;
}

function grid(hits) {
  const node = el("div", "grid");
  if (!hits.length) node.append(el("div", "hint", "No product matches."));
  hits.forEach((hit) => node.append(card(hit)));
  return node;
}

function render(data) {
  const results = $("results");
  results.replaceChildren();
  results.dataset.kind = data.kind;
  if (data.kind === "scene") {
    data.instances.forEach((instance) => {
      const row = el("div", "instance");
      row.dataset.query = instance.query;
      const left = el("div");
      const img = el("img", "highlight");
      img.src = instance.highlight;
      img.alt = "instance " + instance.query + " highlight";
      left.append(img, el("div", "instance-label",
        "instance " + instance.query + " · selection " + instance.selection.toFixed(3)));
      row.append(left, grid(instance.hits));
      results.append(row);
    });
    if (data.skipped.length)
      results.append(el("div", "hint", data.skipped.length + " instance(s) left out: " +
        data.skipped.map((s) => s.query + " (" + s.reason + ")").join("; ")));
  } else {
    results.append(grid(data.hits));
  }
  const t = data.timings;
  $("timing").textContent = "model " + t.embed_ms.toFixed(1) + " ms · search " + t.search_ms.toFixed(1) + " ms";
}

function showError(message) {
  $("error").textContent = message;
  $("error").classList.remove("hidden");
  $("results").replaceChildren();
  $("timing").textContent = "";
}

async function search(event) {
  event.preventDefault();
  $("error").classList.add("hidden");
  const button = $("search");
  button.disabled = true;
  try {
    let response;
    const k = $("k").value || "10";
    const filters = $("filters").value.trim();
    if (mode() === "text") {
      const params = new URLSearchParams({ q: $("query").value, k: k });
      filters.split(",").map((f) => f.trim()).filter(Boolean).forEach((f) => params.append("filter", f));
      response = await fetch("/api/search?" + params.toString());
    } else {
      const file = $("file").files[0];
      if (!file) { showError("Choose a photo to upload first."); return; }
      const body = new FormData();
      body.append("file", file);
      body.append("k", k);
      body.append("filter", filters);
      response = await fetch("/api/search/" + mode(), { method: "POST", body: body });
    }
    let data;
    try { data = await response.json(); } catch (e) { data = { error: "the server answered " + response.status }; }
    if (!response.ok) { showError(data.error || ("the server answered " + response.status)); return; }
    render(data);
  } catch (e) {
    showError("The search server cannot be reached (" + e.message + ").");
  } finally {
    button.disabled = false;
  }
}

async function start() {
  document.querySelectorAll('input[name="mode"]').forEach((r) => r.addEventListener("change", showMode));
  $("form").addEventListener("submit", search);
  showMode();
  try {
    info = await (await fetch("/api/info")).json();
    $("status").textContent = info.products.toLocaleString() + " products · filters: " +
      (Object.keys(info.fields).join(", ") || "none");
    const hints = $("filter-hints");
    Object.entries(info.fields).forEach(([name, values]) => values.slice(0, 12).forEach((v) => {
      const option = document.createElement("option"); option.value = name + "=" + v; hints.append(option);
    }));
    if (!info.scene) $("mode-scene").disabled = true;
    document.body.dataset.ready = "1";
  } catch (e) {
    $("status").textContent = "The index could not be loaded (" + e.message + ").";
  }
}
start();
</script>
</body>
</html>
"""

__all__ = ["PAGE"]
