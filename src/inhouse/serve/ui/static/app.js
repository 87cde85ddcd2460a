// inhouse web UI: every action is a call of the HTTP API (/v1), exactly as a script would make it.
// User text is only ever inserted with textContent, never as HTML.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
}

async function api(path, options = {}) {
  const headers = { "X-CSRF-Token": CSRF, ...(options.headers || {}) };
  let body = options.body;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  }
  const response = await fetch(path, { method: options.method || "GET", headers, body, credentials: "same-origin" });
  if (options.raw) return response;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error((data.error && data.error.message) || `${response.status} ${response.statusText}`);
    error.param = data.error ? data.error.param : null;  // the request field it is about, as OpenAI names it
    throw error;
  }
  return data;
}

function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.classList.add("show");
  setTimeout(() => box.classList.remove("show"), 4000);
}

function fmt(value, digits = 4) {
  return typeof value === "number" ? value.toFixed(digits) : value === null || value === undefined ? "–" : String(value);
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "–";
}

// --- charts (uPlot) --------------------------------------------------------------------------

function lineChart(container, series, xLabel = "step") {
  if (!container || typeof uPlot === "undefined") return null;
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const data = [xs, ...series.map((s) => { const m = new Map(s.points); return xs.map((x) => (m.has(x) ? m.get(x) : null)); })];
  const colors = ["#2563eb", "#dc2626", "#059669", "#d97706"];
  const opts = {
    width: Math.max(260, container.clientWidth || 600), height: 240,
    scales: { x: { time: false } },
    axes: [{ label: xLabel }, {}],
    series: [{ label: xLabel }, ...series.map((s, i) => ({ label: s.label, stroke: colors[i % colors.length], width: 2,
      spanGaps: true, points: { show: s.points.length < 40 } }))],
  };
  container.replaceChildren();
  const chart = new uPlot(opts, data, container);
  new ResizeObserver(() => chart.setSize({ width: Math.max(260, container.clientWidth), height: 240 })).observe(container);
  return chart;
}

function barChart(container, bins) {
  if (!container || typeof uPlot === "undefined" || !bins.length) return;
  const xs = bins.map((b, i) => i);
  const opts = {
    width: Math.max(260, container.clientWidth || 500), height: 200, scales: { x: { time: false } },
    axes: [{ values: (u, ticks) => ticks.map((t) => (bins[t] ? `${bins[t].from}` : "")), label: "tokens" }, { label: "examples" }],
    series: [{}, { label: "examples", fill: "rgba(37,99,235,0.35)", stroke: "#2563eb", paths: uPlot.paths.bars({ size: [0.9] }), points: { show: false } }],
  };
  container.replaceChildren();
  new uPlot(opts, [xs, bins.map((b) => b.count)], container);
}

// --- Data -----------------------------------------------------------------------------------

function setupUpload() {
  const drop = document.getElementById("drop");
  if (!drop) return;
  const pick = document.getElementById("pick");
  const list = document.getElementById("uploads");
  const send = async (files) => {
    for (const file of files) {
      const item = el("li", {}, `${file.name}: uploading…`);
      list.prepend(item);
      const form = new FormData();
      form.append("purpose", "fine-tune");
      form.append("file", file, file.name);
      try {
        const saved = await api("/v1/files", { method: "POST", body: form });
        const problems = saved.status_details ? el("pre", { class: "problems" }, saved.status_details) : null;
        clear(item, el("a", { href: `/ui/data/${saved.id}` }, file.name), " ",
          el("span", { class: `pill ${saved.status}` }, saved.status), problems);
      } catch (error) {
        clear(item, `${file.name}: `, el("span", { class: "bad" }, error.message));
      }
      document.body.dispatchEvent(new Event("files-changed"));
    }
  };
  pick.addEventListener("change", () => send([...pick.files]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); send([...e.dataTransfer.files]); });
}

async function setupInspect() {
  const root = document.getElementById("inspect");
  if (!root) return;
  const id = root.dataset.file;
  const select = document.getElementById("template-model");
  const load = async () => {
    try {
      const report = await api(`/v1/files/${id}/check?model=${encodeURIComponent(select.value)}`);
      showReport(report);
    } catch (error) {
      clear(document.getElementById("problems"), el("p", { class: "bad" }, error.message));
    }
  };
  select.addEventListener("change", load);
  await load();
  document.getElementById("prepare").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const out = document.getElementById("prepared");
    clear(out, el("p", { class: "muted" }, "preparing…"));
    try {
      const result = await api(`/v1/files/${id}/prepare`, { method: "POST", json: {
        dedup: form.get("dedup") === "on", pii: form.get("pii"),
        validation: Number(form.get("validation")), test: Number(form.get("test")) } });
      clear(out, el("p", {}, `${result.counts.loaded} read, ${result.removed} removed, ${result.changed} changed.`),
        el("ul", { class: "plain" }, Object.entries(result.files).map(([split, f]) =>
          el("li", {}, `${split}: `, el("a", { href: `/ui/data/${f.id}` }, f.filename), ` (${f.status})`))),
        el("details", {}, el("summary", {}, "every change"), el("ul", {}, result.changes.map((c) =>
          el("li", {}, `${c.where} · ${c.step} · ${c.action}: ${c.reason}`)))));
      document.body.dispatchEvent(new Event("files-changed"));
    } catch (error) {
      clear(out, el("p", { class: "bad" }, error.message));
    }
  });
}

function showReport(report) {
  const summary = document.getElementById("summary");
  if (report.error) {
    clear(summary, el("dt", {}, "error"), el("dd", { class: "bad" }, report.error));
    clear(document.getElementById("problems"), el("p", { class: "bad" }, report.error));
    return;
  }
  const facts = [["format", report.format], ["examples", report.examples], ["usable", report.valid],
    ["problems", report.problem_count], ["tokens (min / max)", report.tokens ? `${report.tokens.min} / ${report.tokens.max}` : "–"],
    ["tokens in all", report.tokens ? report.tokens.total.toLocaleString() : "–"]];
  clear(summary, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
  barChart(document.getElementById("histogram"), report.histogram);
  const problems = document.getElementById("problems");
  if (!report.problems.length) clear(problems, el("p", { class: "good" }, "No problems: ready to train."));
  else clear(problems, el("table", { class: "list" },
    el("thead", {}, el("tr", {}, ["line", "field", "code", "problem"].map((h) => el("th", {}, h)))),
    el("tbody", {}, report.problems.map((p) => el("tr", { class: "problem" }, el("td", { class: "num" }, `${report.filename}:${p.line}`),
      el("td", {}, el("code", {}, p.field || "–")), el("td", {}, p.code), el("td", {}, p.message))))));
  clear(document.getElementById("previews"), report.previews.map((p) => el("div", { class: "preview" },
    el("p", { class: "muted" }, `line ${p.line}`),
    el("pre", {}, p.segments.map((s) => (s.trained ? el("mark", { class: "trained" }, s.text) : s.text))))));
}

// --- New fine-tune ----------------------------------------------------------------------------

function setupNewJob() {
  const form = document.getElementById("new-job");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const number = (name) => (data.get(name) ? Number(data.get(name)) : "auto");
    const recipe = {};
    for (const input of form.querySelectorAll("[data-recipe]")) {
      if (input.value === "") continue;
      let value = input.value;
      if (input.type === "number") value = Number(value);
      else if (value === "true" || value === "false") value = value === "true";
      else if (input.hasAttribute("data-list")) value = value.split(",").map((v) => v.trim()).filter(Boolean);
      recipe[input.name] = value;
    }
    const path = (data.get("model_path") || "").trim();
    const body = { model: path || data.get("model"), training_file: data.get("training_file"),
      hyperparameters: { n_epochs: number("n_epochs"), batch_size: number("batch_size"),
        learning_rate_multiplier: number("learning_rate_multiplier") }, recipe };
    if (data.get("validation_file")) body.validation_file = data.get("validation_file");
    if (data.get("suffix")) body.suffix = data.get("suffix");
    if (data.get("devices") && data.get("devices") !== "auto") body.devices = [Number(data.get("devices"))];
    const general = document.getElementById("new-job-error"), beside = document.getElementById("model-error");
    for (const box of [general, beside]) if (box) box.textContent = "";
    try {
      const job = await api("/v1/fine_tuning/jobs", { method: "POST", json: body });
      window.location.assign(`/ui/jobs/${job.id}`);
    } catch (error) {
      (error.param === "model" && path && beside ? beside : general).textContent = error.message;
    }
  });
}

// --- One job: live curves from the job's event stream -------------------------------------------

function setupJob() {
  const root = document.getElementById("job");
  if (!root) return;
  const id = root.dataset.job;
  const train = [], valid = [];
  let chart = null, pending = false;
  const redraw = () => {
    pending = false;
    const box = document.getElementById("curve");
    if (chart) chart.destroy();
    chart = lineChart(box, [{ label: "training loss", points: train }, { label: "validation loss", points: valid }]);
    box.dataset.points = String(train.length);
  };
  const later = () => { if (!pending) { pending = true; requestAnimationFrame(redraw); } };
  const log = document.getElementById("events");
  const source = new EventSource(`/v1/fine_tuning/jobs/${id}/events/stream`);
  source.addEventListener("job_event", (message) => {
    const event = JSON.parse(message.data);
    const d = event.data || {};
    if (event.type === "metrics" && typeof d.train_loss === "number") {
      train.push([d.step, d.train_loss]);
      document.getElementById("step").textContent = `${d.step} / ${d.total_steps}`;
      if (d.tokens_per_second) document.getElementById("speed").textContent = Math.round(d.tokens_per_second).toLocaleString();
      later();
    }
    if (event.type === "metrics" && typeof d.valid_loss === "number") { valid.push([d.step, d.valid_loss]); later(); }
    if (event.message.startsWith("Checkpoint created")) loadCheckpoints(id);
    log.prepend(el("li", { class: event.level }, el("time", {}, when(event.created_at)), " ", event.message));
  });
  source.addEventListener("job", (message) => showJob(JSON.parse(message.data)));
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) source.close(); };
  document.getElementById("cancel").addEventListener("click", async () => {
    try { showJob(await api(`/v1/fine_tuning/jobs/${id}/cancel`, { method: "POST" })); }
    catch (error) { document.getElementById("error").textContent = error.message; }
  });
  loadCheckpoints(id);
}

function showJob(job) {
  const status = document.getElementById("status");
  status.textContent = job.status;
  status.className = `pill ${job.status}`;
  document.getElementById("eta").textContent = job.finished_at ? `done ${when(job.finished_at)}` : when(job.estimated_finish);
  const result = document.getElementById("result");
  if (job.fine_tuned_model) clear(result, el("a", { href: `/ui/playground?model=${encodeURIComponent(job.fine_tuned_model)}` }, job.fine_tuned_model));
  document.getElementById("error").textContent = job.error ? job.error.message : "";
  document.getElementById("cancel").hidden = !["validating_files", "queued", "running"].includes(job.status);
  if (!["validating_files", "queued", "running"].includes(job.status)) loadCheckpoints(job.id);
}

async function loadCheckpoints(id) {
  const box = document.getElementById("checkpoints");
  const page = await api(`/v1/fine_tuning/jobs/${id}/checkpoints?limit=100`).catch(() => null);
  if (!page || !page.data.length) return;
  clear(box, el("table", { class: "list" }, el("thead", {}, el("tr", {}, ["step", "model", "train loss", "valid loss", "train acc."].map((h) => el("th", {}, h)))),
    el("tbody", {}, page.data.map((c) => el("tr", {}, el("td", { class: "num" }, c.step_number),
      el("td", {}, el("a", { href: `/ui/playground?model=${encodeURIComponent(c.fine_tuned_model_checkpoint)}` }, c.fine_tuned_model_checkpoint)),
      el("td", { class: "num" }, fmt(c.metrics.train_loss)), el("td", { class: "num" }, fmt(c.metrics.valid_loss)),
      el("td", { class: "num" }, fmt(c.metrics.train_mean_token_accuracy)))))));
}

// --- Models ------------------------------------------------------------------------------------

function curves(lineage, suffix = "") {
  const history = lineage.history || [];
  return [{ label: `training loss${suffix}`, points: history.filter((h) => "loss" in h).map((h) => [h.step, h.loss]) },
    { label: `validation loss${suffix}`, points: history.filter((h) => "eval_loss" in h).map((h) => [h.step, h.eval_loss]) }];
}

async function setupModels() {
  const box = document.getElementById("library");
  if (!box) return;
  const adapters = (await api("/v1/adapters")).data;
  const picked = new Set();
  const button = document.getElementById("compare");
  clear(box, adapters.length ? el("table", { class: "list" },
    el("thead", {}, el("tr", {}, ["", "name", "kind", "base", "validation loss", "created", "from"].map((h) => el("th", {}, h)))),
    el("tbody", {}, adapters.map((a) => el("tr", {},
      el("td", {}, el("input", { type: "checkbox", "aria-label": `compare ${a.name}`, onchange: (e) => {
        e.target.checked ? picked.add(a.name) : picked.delete(a.name); button.disabled = picked.size !== 2; } })),
      el("td", {}, el("a", { href: "#", onclick: (e) => { e.preventDefault(); showAdapter(a.name); } }, a.name)),
      el("td", {}, a.broken ? el("span", { class: "bad" }, "broken") : a.kind || "–"),
      el("td", {}, a.base_model || "–"), el("td", { class: "num" }, fmt((a.metrics || {}).validation_loss)),
      el("td", {}, a.finished_at || "–"), el("td", {}, a.origin && a.origin.job ? el("a", { href: `/ui/jobs/${a.origin.job}` }, a.origin.job) : "–"))))) :
    el("p", { class: "muted" }, "The library is empty."));
  button.addEventListener("click", () => { const [a, b] = [...picked];
    window.location.assign(`/ui/models/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`); });
}

async function showAdapter(name) {
  const lineage = await api(`/v1/adapters/${encodeURIComponent(name)}`);
  document.getElementById("detail").hidden = false;
  document.getElementById("detail-name").textContent = name;
  const m = lineage.metrics || {};
  clear(document.getElementById("detail-facts"), [["kind", lineage.kind], ["base", lineage.base_model],
    ["validation loss", fmt(m.validation_loss)], ["before training", fmt(m.validation_loss_before)],
    ["steps", m.steps], ["finished", lineage.finished_at]].map(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "–")]));
  lineChart(document.getElementById("detail-curve"), curves(lineage));
  const { history, ...shown } = lineage;
  document.getElementById("detail-lineage").textContent = JSON.stringify(shown, null, 2);
  document.getElementById("detail-chat").href = `/ui/playground?model=${encodeURIComponent(name)}`;
  const merge = document.getElementById("merge");
  merge.onclick = async () => {
    const out = document.getElementById("merge-result");
    out.textContent = "merging…";
    try { out.textContent = `merged model saved: ${(await api(`/v1/adapters/${encodeURIComponent(name)}/merge`, { method: "POST" })).name}`; }
    catch (error) { out.textContent = error.message; }
  };
}

async function setupCompare() {
  const box = document.getElementById("compare-curve");
  if (!box) return;
  const [a, b] = await Promise.all([box.dataset.a, box.dataset.b].map((n) => api(`/v1/adapters/${encodeURIComponent(n)}`)));
  lineChart(box, [...curves(a, ` (${a.name})`), ...curves(b, ` (${b.name})`)]);
}

// --- Playground: streamed chat, side by side, grounded answers with citations -------------------

function setupPlayground() {
  const form = document.getElementById("ask");
  if (!form) return;
  const wanted = new URLSearchParams(window.location.search).get("model");
  if (wanted) form.elements.model.value = wanted;
  const histories = { a: [], b: [] };
  document.getElementById("reset").addEventListener("click", () => {
    histories.a = []; histories.b = [];
    document.querySelectorAll(".transcript").forEach((t) => t.replaceChildren());
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const message = data.get("message").trim();
    if (!message) return;
    form.elements.message.value = "";
    const other = data.get("other");
    document.getElementById("pane-b").hidden = !other;
    const runs = [chat("a", data.get("model"), message, data, histories)];
    if (other) runs.push(chat("b", other, message, data, histories));
    await Promise.all(runs);
  });
  setupKbUpload();
}

async function chat(pane, model, message, data, histories) {
  const root = document.getElementById(`pane-${pane}`);
  root.querySelector(".who").textContent = model;
  const transcript = root.querySelector(".transcript");
  transcript.append(el("div", { class: "turn user" }, message));
  const answer = el("div", { class: "turn assistant" });
  const citations = el("ol", { class: "citations" });
  transcript.append(answer, citations);
  const kb = data.get("kb");
  const history = histories[pane];
  history.push({ role: "user", content: message });
  const messages = (data.get("system") ? [{ role: "system", content: data.get("system") }] : []).concat(history);
  const body = { model, messages, stream: true, max_tokens: Number(data.get("max_tokens")), temperature: Number(data.get("temperature")) };
  if (kb) body.knowledge_base = kb;
  let text = "";
  try {
    const response = await api("/v1/chat/completions", { method: "POST", json: body, raw: true });
    if (!response.ok) throw new Error(((await response.json()).error || {}).message || response.statusText);
    for await (const chunk of sse(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) { text += delta.content; answer.textContent = text; }
      if (chunk.citations) showCitations(citations, chunk.citations, kb);
    }
    history.push({ role: "assistant", content: text });
  } catch (error) {
    answer.append(el("span", { class: "bad" }, ` ${error.message}`));
  }
}

async function* sse(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const line = block.split("\n").find((l) => l.startsWith("data: "));
      if (!line || line === "data: [DONE]") continue;
      yield JSON.parse(line.slice(6));
    }
  }
}

function showCitations(list, citations, kb) {
  clear(list, citations.map((c) => el("li", {},
    el("a", { href: `/ui/kb/${encodeURIComponent(kb)}?path=${encodeURIComponent(c.doc_path)}&start=${c.start}&end=${c.end}` },
      `${c.doc_path}${c.heading_path ? ` (${c.heading_path})` : ""}`),
    el("blockquote", {}, c.quote))));
}

function setupKbUpload() {
  const form = document.getElementById("kb-upload");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const out = document.getElementById("kb-result");
    out.textContent = "indexing…";
    const body = new FormData();
    for (const file of form.elements.file.files) body.append("file", file, file.name);
    try {
      const report = await api(`/v1/vector_stores/${encodeURIComponent(data.get("kb"))}/documents`, { method: "POST", body });
      out.textContent = `${report.added.length} added, ${report.changed.length} changed, ${report.skipped.length} skipped; reload to use it.`;
    } catch (error) {
      out.textContent = error.message;
    }
  });
}

// --- A knowledge base and one document, with a cited span marked --------------------------------

async function setupKb() {
  const root = document.getElementById("kb");
  if (!root) return;
  const name = root.dataset.kb;
  const docs = await api(`/v1/vector_stores/${encodeURIComponent(name)}/documents`);
  clear(document.getElementById("kb-docs"), el("ul", { class: "plain" }, docs.data.map((d) =>
    el("li", {}, el("a", { href: `/ui/kb/${encodeURIComponent(name)}?path=${encodeURIComponent(d.path)}` }, d.path), ` — ${d.chunks} chunks`))));
  if (!root.dataset.path) return;
  const doc = await api(`/v1/vector_stores/${encodeURIComponent(name)}/documents/content?path=${encodeURIComponent(root.dataset.path)}`);
  const [start, end] = [Number(root.dataset.start), Number(root.dataset.end)];
  document.getElementById("kb-doc").hidden = false;
  document.getElementById("kb-doc-title").textContent = `${doc.title} (${doc.path})`;
  const pre = document.getElementById("kb-doc-text");
  if (end > start) {
    const mark = el("mark", { id: "cited" }, doc.text.slice(start, end));
    clear(pre, doc.text.slice(0, start), mark, doc.text.slice(end));
    mark.scrollIntoView({ block: "center" });
  } else {
    pre.textContent = doc.text;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const safely = (setup) => Promise.resolve().then(setup).catch((error) => toast(error.message));
  [setupUpload, setupInspect, setupNewJob, setupJob, setupModels, setupCompare, setupPlayground, setupKb].forEach(safely);
});
