// The page of `deepfake serve`: upload a video, follow its job, show the verdict, per-face scores, the per-frame
// timeline (an SVG drawn from the JSON), the plot and explanation strips, and a history kept in localStorage.
// Plain JavaScript, nothing loaded from elsewhere. Untrusted text (file names, reasons) only ever goes through
// textContent, never innerHTML.
"use strict";

const $ = (id) => document.getElementById(id);
const HISTORY_KEY = "deepfake-history";
const TOKEN_KEY = "deepfake-token";
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
let token = sessionStorage.getItem(TOKEN_KEY) || "";
let threshold = 0.5;
let maxUploadMb = null;
let chosen = null;
let blobUrls = [];

function authHeaders() {
  return token ? { Authorization: "Bearer " + token } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    if (response.status === 401) showTokenPanel("wrong or missing token");
    const err = new Error((body && body.error) || response.status + " " + response.statusText);
    err.status = response.status;
    throw err;
  }
  return body;
}

async function blobUrl(path) {
  const response = await fetch(path, { headers: authHeaders() });
  if (!response.ok) throw new Error(path + ": " + response.status);
  const url = URL.createObjectURL(await response.blob());
  blobUrls.push(url);
  return url;
}

function say(text) { $("message").textContent = text || ""; }
function fmt(p) { return p === null || p === undefined ? "-" : Number(p).toFixed(3); }

function showTokenPanel(state) {
  $("token-panel").hidden = false;
  $("token-state").textContent = state || "";
}

// ------------------------------------------------------------------------------------------------ health

async function loadHealth() {
  try {
    const h = await api("/health");
    threshold = h.threshold;
    maxUploadMb = h.max_upload_mb;
    $("health").textContent = `model ${h.model_loaded ? "loaded" : "loading"} on ${h.device}, version ${h.version}; ` +
      `uploads up to ${h.max_upload_mb} MB; ${h.queue.queued} waiting, ${h.queue.running} running`;
    if (h.auth && !token) showTokenPanel("needed");
  } catch (e) {
    $("health").textContent = "server unreachable: " + e.message;
  }
}

// ------------------------------------------------------------------------------------------------ upload

function choose(file) {
  chosen = file || null;
  $("file-name").textContent = chosen ? `${chosen.name} (${(chosen.size / 1048576).toFixed(1)} MB)` : "no file chosen";
  $("check").disabled = !chosen;
}

function upload(file, explain) {
  // XMLHttpRequest, not fetch: it reports how much of the upload has gone.
  return new Promise((resolve, reject) => {
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("explain", explain ? "true" : "false");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/videos");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (ev) => {
      if (ev.lengthComputable) setProgress(0.1 * ev.loaded / ev.total, `uploading ${Math.round(100 * ev.loaded / ev.total)}%`);
    };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status === 202) resolve(body);
      else {
        if (xhr.status === 401) showTokenPanel("wrong or missing token");
        reject(new Error((body && body.error) || `${xhr.status} ${xhr.statusText}`));
      }
    };
    xhr.onerror = () => reject(new Error("the upload failed (connection closed: too large, or server down?)"));
    xhr.send(form);
  });
}

function setProgress(value, stage) {
  $("progress-box").hidden = false;
  $("progress").value = value;
  $("stage").textContent = stage;
}

async function check(ev) {
  ev.preventDefault();
  if (!chosen) return;
  say("");
  if (maxUploadMb !== null && chosen.size > maxUploadMb * 1048576) {
    say(`${chosen.name} is over this server's upload limit of ${maxUploadMb} MB`);
    return;
  }
  $("check").disabled = true;
  $("result").hidden = true;
  try {
    setProgress(0, "uploading");
    const job = await upload(chosen, $("explain").checked);
    addHistory({ id: job.id, name: chosen.name, state: "queued", when: new Date().toISOString() });
    const final = await follow(job.status_url);
    await showJob(final);
  } catch (e) {
    say(e.message);
    $("progress-box").hidden = true;
  } finally {
    $("check").disabled = !chosen;
  }
}

async function follow(statusUrl) {
  for (;;) {
    const job = await api(statusUrl);
    const where = job.state === "queued" ? `queued (position ${job.queue_position})` : job.stage;
    setProgress(0.1 + 0.9 * job.progress, where);
    if (job.state === "done" || job.state === "failed") return job;
    await new Promise((r) => setTimeout(r, 400));
  }
}

// ------------------------------------------------------------------------------------------------ result

async function showJob(job) {
  blobUrls.forEach((u) => URL.revokeObjectURL(u));
  blobUrls = [];
  const r = job.result || { video: job.video, verdict: "error", p_fake: null, faces: [], error: job.error };
  $("progress-box").hidden = true;
  $("result").hidden = false;
  $("result-title").textContent = r.video;
  const verdict = $("verdict");
  verdict.textContent = r.verdict;
  verdict.className = "verdict " + r.verdict.replace(" ", "-");
  $("p-fake").textContent = r.p_fake === null ? (r.error ? "(" + r.error + ")" : "") : `p(fake) ${fmt(r.p_fake)}`;
  $("warning").hidden = !job.warning;
  $("warning").textContent = job.warning || "";
  const body = $("faces").querySelector("tbody");
  body.replaceChildren();
  for (const face of r.faces) {
    const tr = document.createElement("tr");
    const cells = [`face ${face.track}`, fmt(face.p_fake), String(face.frames.length),
                   face.frames.length ? `${face.frames[0]}-${face.frames[face.frames.length - 1]}` : "-"];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 1) td.className = face.p_fake >= threshold ? "fake" : "real";
      tr.appendChild(td);
    });
    body.appendChild(tr);
  }
  $("faces").hidden = r.faces.length === 0;
  drawChart(r.faces);
  $("json").textContent = JSON.stringify(r, null, 2);
  $("plot-box").hidden = !job.plot_url;
  $("explain-box").hidden = !(job.explain_urls && job.explain_urls.length);
  const strips = $("strips");
  strips.replaceChildren();
  try {
    if (job.plot_url) $("plot").src = await blobUrl(job.plot_url);
    for (const url of job.explain_urls || []) {
      const img = document.createElement("img");
      img.alt = "explanation strip " + url.split("/").pop();
      img.src = await blobUrl(url);
      strips.appendChild(img);
    }
  } catch (e) {
    say("images: " + e.message);
  }
  updateHistory(job);
}

function svg(tag, attrs, text) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function drawChart(faces) {
  const box = $("chart");
  box.replaceChildren();
  const frames = faces.flatMap((f) => f.frames);
  if (!frames.length) {
    box.textContent = "no face: nothing to draw";
    return;
  }
  const W = 760, H = 240, L = 40, R = 10, T = 10, B = 30;
  const x0 = Math.min(...frames), x1 = Math.max(...frames, x0 + 1);
  const x = (f) => L + (W - L - R) * (f - x0) / (x1 - x0);
  const y = (p) => T + (H - T - B) * (1 - p);
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "p(fake) per frame and face" });
  chart.appendChild(svg("line", { x1: L, y1: y(0), x2: W - R, y2: y(0), class: "axis" }));
  chart.appendChild(svg("line", { x1: L, y1: y(0), x2: L, y2: y(1), class: "axis" }));
  chart.appendChild(svg("line", { x1: L, y1: y(threshold), x2: W - R, y2: y(threshold), class: "threshold" }));
  for (const p of [0, 0.5, 1]) chart.appendChild(svg("text", { x: L - 6, y: y(p) + 4, "text-anchor": "end" }, String(p)));
  chart.appendChild(svg("text", { x: L, y: H - 8 }, `frame ${x0}`));
  chart.appendChild(svg("text", { x: W - R, y: H - 8, "text-anchor": "end" }, `frame ${x1}`));
  faces.forEach((face, i) => {
    const color = COLORS[i % COLORS.length];
    const points = face.frames.map((f, k) => `${x(f).toFixed(1)},${y(face.steps[k]).toFixed(1)}`).join(" ");
    chart.appendChild(svg("polyline", { points, fill: "none", stroke: color, "stroke-width": 2 }));
    face.frames.forEach((f, k) => {
      const dot = svg("circle", { cx: x(f), cy: y(face.steps[k]), r: 3, fill: color });
      dot.appendChild(svg("title", {}, `face ${face.track}, frame ${f}: p(fake) ${fmt(face.steps[k])}`));
      chart.appendChild(dot);
    });
    chart.appendChild(svg("text", { x: L + 8, y: T + 14 + 14 * i, fill: color },
                          `face ${face.track}: p(fake) ${fmt(face.p_fake)}`));
  });
  box.appendChild(chart);
}

// ------------------------------------------------------------------------------------------------ history

function readHistory() {
  try { return JSON.parse(localStorage.getItem(HISTORY_KEY)) || []; } catch (e) { return []; }
}

function writeHistory(items) {
  localStorage.setItem(HISTORY_KEY, JSON.stringify(items.slice(0, 50)));
  renderHistory();
}

function addHistory(item) { writeHistory([item, ...readHistory().filter((h) => h.id !== item.id)]); }

function updateHistory(job) {
  const r = job.result || {};
  writeHistory(readHistory().map((h) => h.id !== job.id ? h : {
    ...h, state: job.state, verdict: r.verdict || "error", p_fake: r.p_fake ?? null,
    faces: (r.faces || []).map((f) => f.p_fake), error: job.error || null,
  }));
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren();
  for (const h of readHistory()) {
    const li = document.createElement("li");
    const when = new Date(h.when).toLocaleString();
    const what = h.verdict ? `${h.verdict}${h.p_fake !== null && h.p_fake !== undefined ? " " + fmt(h.p_fake) : ""}`
                           : h.state;
    li.textContent = `${h.name}: ${what} (${when})`;
    li.title = "show this result again (while the server still holds it)";
    li.addEventListener("click", async () => {
      say("");
      try { await showJob(await api(`/api/v1/videos/${h.id}`)); } catch (e) {
        say(`${h.name}: ${e.status === 404 ? "the server no longer holds this result" : e.message}`);
      }
    });
    list.appendChild(li);
  }
}

// ------------------------------------------------------------------------------------------------ wiring

function init() {
  const drop = $("drop");
  $("file").addEventListener("change", () => choose($("file").files[0]));
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    if (ev.dataTransfer.files.length) choose(ev.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") $("file").click(); });
  $("upload-form").addEventListener("submit", check);
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-state").textContent = "saved for this tab";
    loadHealth();
  });
  $("clear-history").addEventListener("click", () => writeHistory([]));
  renderHistory();
  loadHealth();
}

document.addEventListener("DOMContentLoaded", init);
