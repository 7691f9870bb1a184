// TracIn-WE explorer front end. Training text is untrusted: it only ever
// enters the page as text (textContent / text nodes), never as markup.
"use strict";

const state = { info: null, lastQuery: null };
const $ = (id) => document.getElementById(id);

// An element with attributes and children; strings become text nodes.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "className") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

async function api(path, body) {
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST",
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function status(message, isError) {
  $("status").textContent = message || "";
  $("status").className = isError ? "error" : "";
}

// "Save as HTML": the server renders the view as a standalone page.
async function saveView(view, request) {
  const response = await fetch("/api/export", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ view, request }),
  });
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    status(data.error || `HTTP ${response.status}`, true);
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: `tracin_we_${view}.html` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function saveButton(view, request) {
  return el("button", { className: "save", type: "button", onclick: () => saveView(view, request) }, "Save as HTML");
}

function words(list) {
  const out = [];
  list.forEach((word, i) => {
    if (i) out.push(" ");
    // each word isolated, so a bidi control in training text cannot reorder the rest
    out.push(el("bdi", word.shared ? { className: "shared" } : {}, word.w));
  });
  return out;
}

function cut(truncated) {
  return truncated ? [" ", el("span", { className: "cut", title: "longer than the model reads" }, "[truncated]")] : [];
}

function chip(label, name, testLabel) {
  return el("bdi", { className: "chip " + (label === testLabel ? "same" : "other") }, name);
}

// ---------------------------------------------------------------- routing
function readHash() {
  return Object.fromEntries(new URLSearchParams(location.hash.slice(1)));
}

function go(params) {
  const clean = Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined);
  location.hash = new URLSearchParams(clean).toString();
}

async function route() {
  const params = readHash();
  const view = params.view || "query";
  for (const name of ["query", "audit"]) {
    $(`tab-${name}`).classList.toggle("active", name === view);
    $(`${name}-panel`).hidden = name !== view;
  }
  $("pair-panel").hidden = true;
  status("");
  try {
    if (view === "audit") await showAudit(params);
    else await showQuery(params);
  } catch (error) {
    status(error.message, true);
  }
  document.body.dataset.shown = location.hash || "#";
}

// ----------------------------------------------------------------- query
function queryRequest(params) {
  const request = { text: params.text, k: Number(params.k || state.info.k) };
  if (params.label !== undefined && params.label !== "") request.label = Number(params.label);
  if (params.methods) request.methods = params.methods.split("|");
  return request;
}

async function showQuery(params) {
  $("text").value = params.text || $("text").value;
  $("label").value = params.label || "";
  $("k").value = params.k || state.info.k;
  const chosen = params.methods ? params.methods.split("|") : null;
  document.querySelectorAll("#method-toggles input").forEach((box) => { box.checked = !chosen || chosen.includes(box.dataset.method); });
  if (!params.text) return;
  const request = queryRequest(params);
  let result = state.lastQuery;
  if (!result || JSON.stringify(result.request) !== JSON.stringify(request)) {
    status("Explaining…");
    const answer = await api("/api/query", request);
    result = state.lastQuery = { request, answer };
    status(`Answered in ${answer.seconds.toFixed(2)} s.`);
  }
  renderQuery(result.answer, request);
  if (params.pair !== undefined) await showPair(request, Number(params.pair));
}

function renderQuery(answer, request) {
  const probabilities = answer.probabilities.map((p) =>
    el("span", { className: "prob" }, el("bdi", {}, p.label), ` ${(100 * p.p).toFixed(1)}%`, el("span", { className: "bar" })));
  answer.probabilities.forEach((p, i) => { probabilities[i].querySelector(".bar").style.width = `${Math.round(80 * p.p)}px`; });
  const prediction = el("div", { className: "prediction", id: "prediction" },
    saveButton("query", request),
    el("div", {}, el("b", {}, "The model sees: "), words(answer.words), cut(answer.truncated)),
    answer.truncated ? el("div", { className: "cut" }, `Only the first ${state.info.max_length} tokens are read; the rest is ignored.`) : null,
    el("div", {}, el("b", {}, "Prediction: "), el("bdi", { id: "predicted" }, answer.predicted_name), " · ", probabilities),
    el("div", { className: "muted" }, "Explained at label “", el("bdi", {}, answer.label_name), "”. Underlined words are shared with the training text. Click a training text for its words."));
  const columns = el("div", { className: "columns" },
    answer.methods.map((method) => el("div", { className: "method", dataset: { method: method.name } },
      el("h2", {}, method.name, el("span", { className: "muted" }, ` (${method.seconds.toFixed(2)} s)`)),
      ["proponents", "opponents"].map((side) => [
        el("h3", {}, side),
        el("ol", { className: "examples", dataset: { side } },
          method[side].map((row) => exampleItem(row, answer.label, request))),
      ]))));
  $("query-result").replaceChildren(prediction, columns);
}

function exampleItem(row, testLabel, request) {
  const open = () => go({ ...hashOf(request), pair: row.index });
  const item = el("li", { tabindex: "0", dataset: { index: String(row.index) }, onclick: open },
    chip(row.label, row.label_name, testLabel),
    el("span", { className: "score" }, formatScore(row.score)),
    el("span", { className: "idx" }, `#${row.index}`),
    words(row.words), cut(row.truncated));
  item.addEventListener("keydown", (event) => { if (event.key === "Enter") open(); });
  return item;
}

function hashOf(request) {
  return { view: "query", text: request.text, label: request.label, k: request.k, methods: (request.methods || []).join("|") };
}

function formatScore(value) {
  const text = Math.abs(value) >= 1e-3 && Math.abs(value) < 1e4 ? value.toFixed(4) : value.toExponential(2);
  return value > 0 ? `+${text}` : text;
}

// ------------------------------------------------------------ word views
async function showPair(request, index) {
  status("Splitting the score over words…");
  const body = { text: request.text, index };
  if (request.label !== undefined) body.label = request.label;
  const answer = await api("/api/pair", body);
  renderPair(answer, "pair", body);
  status("");
}

async function showSelf(index) {
  status("Splitting the self-influence over words…");
  const body = { index };
  renderPair(await api("/api/self", body), "self", body);
  status("");
}

function renderPair(answer, view, request) {
  const head = view === "self"
    ? el("p", {}, `Training text #${answer.index} (label “`, el("bdi", {}, answer.label_name), "”) with itself: self-influence ", el("b", {}, formatScore(answer.score)), ".")
    : el("p", {}, "Your text (label “", el("bdi", {}, answer.label_name), `”) and training text #${answer.index} (label “`, el("bdi", {}, answer.train_label_name), "”): score ",
      el("b", {}, formatScore(answer.score)), ". Each side’s word contributions sum to the score.");
  const table = el("table", {},
    el("tr", {}, el("td", {}, view === "self" ? "as test" : "your text"), el("td", { className: "marks", dataset: { side: "test" } }, marks(answer.test_words))),
    el("tr", {}, el("td", {}, "training"), el("td", { className: "marks", dataset: { side: "train" } }, marks(answer.train_words))));
  const legend = el("div", { className: "legend" }, el("b", {}, "Legend:"),
    [["Negative", "hsl(0, 75%, 60%)"], ["Neutral", "hsl(0, 75%, 100%)"], ["Positive", "hsl(120, 75%, 50%)"]].map(([name, color]) => {
      const swatch = el("span");
      swatch.style.backgroundColor = color;
      return [swatch, name];
    }));
  const original = el("p", { className: "muted" }, "Training text as given: ", el("bdi", { id: "train-text" }, answer.train_text), cut(answer.train_truncated));
  const close = el("button", { type: "button", onclick: () => { const params = readHash(); delete params.pair; delete params.self; go(params); } }, "Close");
  $("pair-result").replaceChildren(el("div", { className: "pair", id: "pair" }, saveButton(view, request), close, head, table, legend, original));
  $("pair-panel").hidden = false;
  document.querySelectorAll("li.selected").forEach((item) => item.classList.remove("selected"));
  if (view === "pair") document.querySelectorAll(`li[data-index="${answer.index}"]`).forEach((item) => item.classList.add("selected"));
}

function marks(list) {
  const out = [];
  list.forEach((word, i) => {
    if (i) out.push(" ");
    const mark = el("mark", { className: "word", title: formatScore(word.value) }, el("bdi", {}, word.w));
    if (/^hsl\([0-9., %]+\)$/.test(word.color)) mark.style.backgroundColor = word.color;
    out.push(mark);
  });
  return out;
}

// ----------------------------------------------------------------- audit
async function showAudit(params) {
  $("audit-label").value = params.label || "";
  $("audit-disagree").checked = params.disagree === "1";
  const request = { offset: Number(params.offset || 0), limit: 25, disagree: params.disagree === "1" };
  if (params.label) request.label = Number(params.label);
  status("Ranking…");
  const answer = await api("/api/audit", request);
  status("");
  renderAudit(answer, request, params);
  if (params.self !== undefined) await showSelf(Number(params.self));
}

function renderAudit(answer, request, params) {
  const header = el("tr", {}, ["rank", "#", "label", "predicted", "self-influence", "words"].map((h) => el("th", {}, h)));
  const rows = answer.rows.map((row) => el("tr", { className: "row", tabindex: "0", dataset: { index: String(row.index) }, onclick: () => go({ ...params, self: row.index }) },
    el("td", {}, String(row.rank)), el("td", {}, String(row.index)),
    el("td", {}, chip(row.label, row.label_name, row.predicted)),
    el("td", {}, el("bdi", {}, row.predicted_name)), el("td", { className: "score" }, row.self_influence.toPrecision(4)),
    el("td", {}, words(row.words), cut(row.truncated))));
  const end = Math.min(answer.offset + answer.rows.length, answer.total);
  const page = (offset) => () => go({ ...params, offset, self: "" });
  const pager = el("div", { className: "pager" },
    el("button", { type: "button", onclick: page(Math.max(0, answer.offset - request.limit)), ...(answer.offset === 0 ? { disabled: "" } : {}) }, "Previous"),
    `${answer.total ? answer.offset + 1 : 0}–${end} of ${answer.total}, largest self-influence first; a chip is red where the prediction differs from the label`,
    el("button", { type: "button", onclick: page(answer.offset + request.limit), ...(end >= answer.total ? { disabled: "" } : {}) }, "Next"),
    saveButton("audit", request));
  $("audit-result").replaceChildren(pager, el("table", { className: "audit", id: "audit" }, header, rows));
}

// ------------------------------------------------------------------ start
async function start() {
  try {
    state.info = await api("/api/info");
  } catch (error) {
    status(`The explorer is not answering: ${error.message}`, true);
    return;
  }
  const info = state.info;
  $("model").textContent = `${info.description} · ${info.num_train} training texts · max ${info.max_length} tokens`;
  for (const select of [$("label"), $("audit-label")]) {
    info.labels.forEach((name, i) => select.append(el("option", { value: String(i) }, name)));
  }
  $("k").max = String(info.limits.max_k);
  if (info.methods.length > 1) {
    $("method-toggles").replaceChildren(...info.methods.map((name) =>
      el("label", {}, el("input", { type: "checkbox", checked: "", dataset: { method: name } }), ` ${name} `)));
  }
  $("text").maxLength = info.limits.max_text_chars;
  $("query-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const boxes = [...document.querySelectorAll("#method-toggles input")];
    const chosen = boxes.filter((box) => box.checked).map((box) => box.dataset.method);
    const methods = chosen.length && chosen.length < boxes.length ? chosen.join("|") : "";
    go({ view: "query", text: $("text").value, label: $("label").value, k: $("k").value, methods });
  });
  $("audit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    go({ view: "audit", label: $("audit-label").value, disagree: $("audit-disagree").checked ? "1" : "" });
  });
  window.addEventListener("hashchange", route);
  await route();
}

document.addEventListener("DOMContentLoaded", start);
