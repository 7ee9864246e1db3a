// The little JavaScript of the stepline UI: times, sorting and filtering tables, live parts
// (long polls that answer when something changed), the run page's DAG and panels, dialogs.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
// text from the store put into HTML: escaped, always
const esc = (v) => String(v == null ? "" : v).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
// a status used as a class name: letters and "_" only
const cls = (v) => String(v || "").replace(/[^a-z_]/gi, "");
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

function fmtDur(s) {
  // the rules of stepline.core.display.fmt_duration
  if (s == null || isNaN(s)) return "";
  if (s < 10) return s.toFixed(1) + "s";
  let t = Math.round(s);
  if (t < 60) return t + "s";
  let m = Math.floor(t / 60);
  const sec = t % 60;
  if (m < 60) return m + "m " + String(sec).padStart(2, "0") + "s";
  let h = Math.floor(m / 60);
  m = m % 60;
  if (h < 24) return h + "h " + String(m).padStart(2, "0") + "m";
  const d = Math.floor(h / 24);
  h = h % 24;
  return d + "d " + String(h).padStart(2, "0") + "h";
}

function fmtAgo(ts) {
  const d = Date.now() / 1000 - ts;
  if (d < 0) return "just now";
  if (d < 45) return Math.round(d) + " s ago";
  if (d < 3600) return Math.round(d / 60) + " min ago";
  if (d < 86400) return Math.round(d / 3600) + " h ago";
  return new Date(ts * 1000).toLocaleString();
}

function toast(text) {
  const el = $("#toast");
  if (!el) return;
  el.textContent = text;
  el.classList.add("on");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove("on"), 3500);
}

function refreshTimes(root = document) {
  for (const t of $$("time[data-ts]", root)) {
    const ts = parseFloat(t.dataset.ts);
    if (ts) t.textContent = fmtAgo(ts);
  }
}

function tickDurations(root = document) {
  const now = Date.now() / 1000;
  for (const d of $$(".dur[data-start]", root)) {
    const start = parseFloat(d.dataset.start);
    const end = d.dataset.end ? parseFloat(d.dataset.end) : now;
    d.textContent = fmtDur(Math.max(0, end - start));
  }
}

async function api(method, url, body) {
  const res = await fetch(url, {
    method,
    headers: body === undefined ? {} : { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    const msg = (data && data.message) || res.status + " " + res.statusText;
    throw new Error(msg);
  }
  return data;
}

// -- tables: sort and filter ---------------------------------------------------------------
function cellValue(row, index) {
  const cell = row.children[index];
  if (!cell) return "";
  return cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
}

function versionKey(v) {
  return v.split(/[.\-+]/).map((p) => (/^\d+$/.test(p) ? p.padStart(8, "0") : p)).join(".");
}

function sortTable(table) {
  const th = $("th.sorted-asc, th.sorted-desc", table);
  if (!th) return;
  const index = Array.from(th.parentNode.children).indexOf(th);
  const kind = th.dataset.sort;
  const dir = th.classList.contains("sorted-asc") ? 1 : -1;
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    let x = cellValue(a, index), y = cellValue(b, index);
    if (kind === "num") return dir * ((parseFloat(x) || 0) - (parseFloat(y) || 0));
    if (kind === "ver") { x = versionKey(x); y = versionKey(y); }
    return dir * x.localeCompare(y, undefined, { numeric: true });
  });
  for (const r of rows) body.appendChild(r);
}

function setupSorting() {
  for (const table of $$("table.sortable")) {
    for (const th of $$("th[data-sort]", table)) {
      th.addEventListener("click", () => {
        const asc = !th.classList.contains("sorted-asc");
        for (const o of $$("th", table)) o.classList.remove("sorted-asc", "sorted-desc");
        th.classList.add(asc ? "sorted-asc" : "sorted-desc");
        sortTable(table);
      });
    }
  }
}

function applyFilters() {
  const bodies = new Set();
  for (const el of $$("[data-filter], [data-filter-target]")) {
    const target = $(el.dataset.filter || el.dataset.filterTarget);
    if (target) bodies.add(target);
  }
  for (const body of bodies) {
    const sel = (a) => $$(`[${a}]`).filter((el) => $(el.getAttribute(a)) === body);
    const texts = sel("data-filter").map((el) => el.value.trim().toLowerCase()).filter(Boolean);
    const cols = sel("data-filter-target").filter((el) => el.value);
    for (const row of Array.from(body.rows)) {
      const text = row.textContent.toLowerCase();
      let show = texts.every((t) => text.includes(t));
      for (const c of cols) show = show && row.dataset[c.dataset.filterCol] === c.value;
      row.hidden = !show;
    }
  }
}

function setupFilters() {
  for (const el of $$("[data-filter], [data-filter-target]")) {
    el.addEventListener("input", applyFilters);
    el.addEventListener("change", applyFilters);
    el.addEventListener("click", (e) => e.stopPropagation()); // inside a <summary>
  }
}

// -- live parts ------------------------------------------------------------------------------
async function follow(url, onData) {
  let etag = "";
  let wait = 500;
  for (;;) {
    try {
      const sep = url.includes("?") ? "&" : "?";
      const res = await fetch(url + (etag ? sep + "etag=" + encodeURIComponent(etag) : ""), {
        credentials: "same-origin", cache: "no-store",
      });
      if (res.status === 404) return;
      if (!res.ok) throw new Error(res.status);
      const data = await res.json();
      if (data.etag !== etag) {
        etag = data.etag;
        onData(data);
      }
      wait = 500;
    } catch (e) {
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 8000);
    }
  }
}

function setupLiveBlocks() {
  for (const el of $$("[data-live]")) {
    follow(el.dataset.live, (data) => {
      const picked = new Set($$("input.pick:checked", el).map((i) => i.value));
      el.innerHTML = data.html;
      for (const i of $$("input.pick", el)) i.checked = picked.has(i.value);
      const table = el.closest("table");
      if (table) sortTable(table);
      applyFilters();
      refreshTimes(el);
      tickDurations(el);
      updateCompare();
    });
  }
}

// -- compare two runs ------------------------------------------------------------------------
function updateCompare() {
  const btn = $("#compare");
  if (!btn) return;
  const picked = $$("input.pick:checked");
  btn.disabled = picked.length !== 2;
  btn.title = picked.length === 2 ? "Compare the two ticked runs" : "Tick two runs to compare them";
}

function setupCompare() {
  const btn = $("#compare");
  if (!btn) return;
  document.addEventListener("change", (e) => { if (e.target.matches("input.pick")) updateCompare(); });
  btn.addEventListener("click", () => {
    const ids = $$("input.pick:checked").map((i) => i.value);
    if (ids.length === 2) location.href = `/compare?a=${ids[1]}&b=${ids[0]}`;
  });
}

// -- dialogs and actions ---------------------------------------------------------------------
function setupDialogs() {
  for (const b of $$("[data-open]")) {
    b.addEventListener("click", () => {
      const d = $(b.dataset.open);
      if (d) { d.showModal(); const first = $("input, select", d); if (first) first.focus(); }
    });
  }
  for (const b of $$("[data-close]")) b.addEventListener("click", () => b.closest("dialog").close());
  for (const form of $$("form.new-run")) {
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const args = {};
      for (const el of $$("[name^='arg:']", form)) args[el.name.slice(4)] = el.value;
      const queue = $("[name=queue]", form).value;
      const err = $(".error", form);
      const submit = $("button[type=submit]", form);
      submit.disabled = true;
      err.hidden = true;
      try {
        const run = await api("POST", `/api/v1/pipelines/${form.dataset.run}/runs`, { args, queue });
        location.href = `/runs/${run.id}`;
      } catch (ex) {
        err.textContent = ex.message;
        err.hidden = false;
        submit.disabled = false;
      }
    });
  }
  document.addEventListener("click", async (e) => {
    const run = e.target.closest("#abort-run");
    const step = e.target.closest("#abort-step");
    if (!run && !step) return;
    const what = run ? "this run and its running steps" : "this step";
    if (!confirm(`Abort ${what}?`)) return;
    try {
      if (run) await api("POST", `/api/v1/pipelines/${run.dataset.run}/abort`, {});
      else await api("POST", `/api/v1/tasks/${step.dataset.task}/abort`, {});
      toast(run ? "Run aborted" : "Step aborted");
      (run || step).disabled = true;
      if (step && !$("#run-data")) setTimeout(() => location.reload(), 600);
    } catch (ex) {
      toast("Could not abort: " + ex.message);
    }
  });
  const login = $("#login");
  if (login) {
    login.addEventListener("submit", async (e) => {
      e.preventDefault();
      const token = login.token.value.trim();
      document.cookie = `stepline_token=${encodeURIComponent(token)}; path=/; SameSite=Strict; max-age=31536000`;
      const res = await fetch("/api/v1/info", { credentials: "same-origin" });
      if (res.ok) location.href = login.dataset.next || "/pipelines";
      else { const err = $(".error", login); err.textContent = "This token is not accepted."; err.hidden = false; }
    });
  }
}

// -- resume a run (the run page) -----------------------------------------------------------
function setupResume() {
  const dialog = $("#resume-dialog");
  if (!dialog) return;
  const form = $("form.resume", dialog);
  const pick = $("[name=from_step]", form);
  const box = $(".from-step", form);
  const table = $(".step-args", form);
  const note = $(".args-note", form);
  const err = $(".error", form);
  let asked = 0;
  async function loadArgs() {
    // the arguments of the step chosen, to give new values to
    const step = pick.value;
    const mine = ++asked;
    table.innerHTML = "";
    note.hidden = true;
    box.hidden = !step;
    if (!step) return;
    try {
      const data = await api("GET", `/runs/${form.dataset.run}/steps/${encodeURIComponent(step)}/args`);
      if (mine !== asked) return;
      table.innerHTML = data.args.map((a, i) => `<tr data-arg="${esc(a.name)}"><th><label for="step-arg-${i}">${esc(a.name)}</label></th>` +
        `<td><input id="step-arg-${i}" name="set:${esc(a.name)}" value="${esc(a.value)}" data-was="${esc(a.value)}" autocomplete="off">` +
        `<span class="type">${esc(a.type)}</span></td></tr>`).join("");
      note.textContent = data.note || "";
      note.hidden = !data.note;
    } catch (ex) {
      if (mine !== asked) return;
      note.textContent = "Could not read the step's arguments: " + ex.message;
      note.hidden = false;
    }
  }
  pick.addEventListener("change", () => { err.hidden = true; loadArgs(); });
  document.addEventListener("click", (e) => {
    const b = e.target.closest("[data-resume]");
    if (!b) return;
    pick.value = b.dataset.step || "";
    err.hidden = true;
    loadArgs();
    dialog.showModal();
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const args = {};
    for (const el of $$("[name^='set:']", form)) if (el.value !== el.dataset.was) args[el.name.slice(4)] = el.value;
    const body = { from_step: pick.value || null, args, queue: $("[name=queue]", form).value || null };
    const submit = $("button[type=submit]", form);
    submit.disabled = true;
    err.hidden = true;
    try {
      const run = await api("POST", `/api/v1/pipelines/${form.dataset.run}/resume`, body);
      location.href = `/runs/${run.id}`;
    } catch (ex) {
      err.textContent = ex.message;
      err.hidden = false;
      submit.disabled = false;
    }
  });
}

// -- log tail --------------------------------------------------------------------------------
let logSource = null;

function tailLog(pre, onEnd) {
  if (logSource) { logSource.close(); logSource = null; }
  if (!pre || pre.dataset.tail !== "1") return;
  const id = pre.dataset.task;
  const url = `/api/v1/stream?log=${id}&task=${id}&after=${pre.dataset.after || 0}`;
  const src = new EventSource(url);
  logSource = src;
  src.addEventListener("log", (ev) => {
    const lines = JSON.parse(ev.data);
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 30;
    const frag = document.createDocumentFragment();
    for (const ln of lines) {
      const span = document.createElement("span");
      span.className = ln.level || "info";
      span.textContent = ln.text.endsWith("\n") ? ln.text : ln.text + "\n";
      frag.appendChild(span);
      pre.dataset.after = ln.seq;
    }
    pre.appendChild(frag);
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  });
  src.addEventListener("task", (ev) => {
    const rec = JSON.parse(ev.data);
    if (["completed", "failed", "stopped", "closed", "published"].includes(rec.status)) {
      // the last lines are written before the end: read them, then stop
      setTimeout(() => { src.close(); if (logSource === src) logSource = null; if (onEnd) onEnd(); }, 700);
    }
  });
}

// -- the run page ----------------------------------------------------------------------------
const RUN = { id: null, groups: {}, state: null, selected: null, zoom: 1 };
const FINAL_STEP = new Set(["completed", "cached", "failed", "skipped", "aborted"]);
const ORDER = ["failed", "running", "queued", "aborted", "pending", "skipped", "cached", "completed"];
const COLOURS = {
  pending: "var(--pending)", queued: "var(--queued)", running: "var(--running)",
  completed: "var(--completed)", cached: "var(--cached)", failed: "var(--failed)",
  skipped: "var(--skipped)", aborted: "var(--aborted)",
};
const SVGNS = "http://www.w3.org/2000/svg";

function stepDuration(st) {
  const [, started, ended] = st;
  if (!started) return "";
  if (ended) return fmtDur(ended - started);
  if (st[0] === "running") return fmtDur(Date.now() / 1000 - started);
  return "";
}

function applyRunState(state) {
  RUN.state = state;
  const head = $("#run-status");
  const shown = state.shown || state.status;
  if (head && (head.dataset.status !== state.status || head.dataset.shown !== shown)) {
    head.dataset.status = state.status;
    head.dataset.shown = shown;
    head.innerHTML = `<span class="badge st-${cls(shown)}">${esc(shown.replace("_", " "))}</span>`;
  }
  const links = $("#run-links");
  const linkKey = JSON.stringify(state.links || null);
  if (links && RUN.linkKey !== undefined && RUN.linkKey !== linkKey) links.innerHTML = runLinks(state.links);
  RUN.linkKey = linkKey;
  const prog = $("#run-progress");
  if (prog && state.progress != null) {
    const pct = Math.max(0, Math.min(100, Number(state.progress) || 0));
    prog.innerHTML = `<span class="progress st-${cls(state.status)}"><span style="width:${pct}%"></span></span><span class="pct">${pct}%</span>`;
  }
  const dur = $("#run-duration");
  if (dur && state.started) {
    dur.innerHTML = "";
    const span = document.createElement("span");
    span.className = "dur";
    span.dataset.start = state.started;
    if (state.completed) span.dataset.end = state.completed;
    else if (state.final) span.dataset.end = state.started;
    dur.appendChild(span);
  }
  const msg = $("#run-message");
  if (msg) msg.textContent = state.message || "";
  const abort = $("#abort-run");
  if (abort) abort.hidden = !!state.final;
  const resume = $("#resume-run");
  if (resume) resume.hidden = !(state.final && state.resumable);
  for (const b of $$(".rerun-from")) b.hidden = !state.final;
  for (const g of $$("svg.dag g.node[data-step]")) {
    const st = state.steps[g.dataset.step];
    if (!st) continue;
    if (g.dataset.status !== st[0]) {
      g.dataset.status = st[0];
      g.setAttribute("class", `node st-${cls(st[0])}` + (RUN.selected === g.dataset.step ? " selected" : ""));
    }
    const meta = $(".meta", g);
    const d = stepDuration(st);
    const text = st[0] + (d ? " · " + d : "");
    if (meta.textContent !== text) meta.textContent = text;
  }
  for (const g of $$("svg.dag g.node[data-group]")) drawGroup(g, state);
  for (const row of $$("#steps tbody tr[data-step]")) {
    const st = state.steps[row.dataset.step];
    if (!st || row.dataset.status === st[0]) continue;
    row.dataset.status = st[0];
    row.children[1].dataset.value = st[0];
    row.children[1].innerHTML = `<span class="badge st-${cls(st[0])}">${esc(st[0])}</span>`;
    row.children[2].textContent = stepDuration(st);
    if (st[3] && !row.children[3].textContent.trim()) {
      row.children[3].innerHTML = `<a class="mono" href="/tasks/${encodeURIComponent(st[3])}">${esc(st[3].slice(0, 8))}</a>`;
    }
  }
  applyFilters();
  if (RUN.selected && RUN.selected.startsWith("group:")) showGroup(RUN.selected, false);
  // the run's panel (metrics, artifacts) changes when a step ends or the run does
  const done = Object.values(state.steps).filter((st) => FINAL_STEP.has(st[0])).length;
  const key = state.status + "|" + done;
  if (RUN.infoKey !== undefined && RUN.infoKey !== key) refreshRunInfo();
  RUN.infoKey = key;
}

// the header's links to the run this one resumes and to the runs resuming it (as the
// template's run_links macro draws them): [id, text, name] each
function runLinks(links) {
  if (!links) return "";
  const a = (l, c) => `<a class="${c}" href="/runs/${encodeURIComponent(l[0])}" title="${esc(l[2])} (${esc(l[0])})">${esc(l[1])}</a>`;
  const parts = [];
  if (links.resume_of) parts.push("resume of " + a(links.resume_of, "resume-of"));
  if (links.resumed_by && links.resumed_by.length) {
    parts.push("resumed by " + links.resumed_by.map((l) => a(l, "resumed-by")).join(", "));
  }
  return parts.join(" · ");
}

async function refreshRunInfo() {
  try {
    const res = await fetch(`/runs/${RUN.id}/info`, { credentials: "same-origin" });
    if (!res.ok) return;
    const box = $("#run-panel");
    box.innerHTML = await res.text();
    refreshTimes(box);
  } catch (e) { /* the next change tries again */ }
}

function drawGroup(g, state) {
  const members = RUN.groups[g.dataset.group] || [];
  const counts = {};
  for (const m of members) {
    const st = state.steps[m];
    const s = st ? st[0] : "pending";
    counts[s] = (counts[s] || 0) + 1;
  }
  const lead = ORDER.find((s) => counts[s]) || "pending";
  g.dataset.status = lead;
  g.setAttribute("class", `node group st-${cls(lead)}` + (RUN.selected === g.dataset.group ? " selected" : ""));
  const bar = $(".bar", g);
  const width = parseFloat($("rect.track", bar).getAttribute("width"));
  for (const r of $$("rect.seg", bar)) r.remove();
  let x = 0;
  for (const s of ORDER.slice().reverse()) {
    if (!counts[s]) continue;
    const w = (width * counts[s]) / members.length;
    const r = document.createElementNS(SVGNS, "rect");
    r.setAttribute("class", "seg");
    r.setAttribute("x", x);
    r.setAttribute("width", Math.max(w, 1));
    r.setAttribute("height", 8);
    r.setAttribute("fill", COLOURS[s]);
    bar.appendChild(r);
    x += w;
  }
  const parts = ORDER.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`);
  $(".meta", g).textContent = parts.join(" · ");
}

function select(id) {
  RUN.selected = id;
  for (const g of $$("svg.dag g.node")) {
    const own = g.dataset.step || g.dataset.group;
    g.classList.toggle("selected", own === id);
  }
}

function showRunPanel() {
  select(null);
  tailLog(null);
  $("#step-panel").hidden = true;
  $("#run-panel").hidden = false;
  if (location.hash) history.replaceState(null, "", location.pathname);
}

async function showStep(name, push = true) {
  select(name);
  if (push) history.replaceState(null, "", "#step=" + encodeURIComponent(name));
  const box = $("#step-panel");
  try {
    const res = await fetch(`/runs/${RUN.id}/steps/${encodeURIComponent(name)}`, { credentials: "same-origin" });
    if (RUN.selected !== name) return;
    box.innerHTML = res.ok ? await res.text() : `<p class="error">Could not load step ${esc(name)}.</p>`;
  } catch (e) {
    box.innerHTML = `<p class="error">Could not load step ${esc(name)}: ${esc(e.message)}</p>`;
  }
  box.hidden = false;
  $("#run-panel").hidden = true;
  refreshTimes(box);
  tickDurations(box);
  const panel = $(".task-panel", box);
  box.dataset.status = panel ? panel.dataset.status : "";
  box.dataset.stepStatus = RUN.state && RUN.state.steps[name] ? RUN.state.steps[name][0] : "";
  tailLog($("#log", box), () => { if (RUN.selected === name) showStep(name, false); });
}

function showGroup(id, fresh = true) {
  select(id);
  const members = RUN.groups[id] || [];
  const box = $("#step-panel");
  const rows = members.map((m) => {
    const st = (RUN.state && RUN.state.steps[m]) || ["pending"];
    return `<tr data-step="${encodeURIComponent(m)}"><td><a href="#" data-member="${encodeURIComponent(m)}">${esc(m)}</a></td><td><span class="badge st-${cls(st[0])}">${esc(st[0])}</span></td><td>${esc(stepDuration(st))}</td></tr>`;
  }).join("");
  const scroll = fresh ? 0 : ($(".group-list", box) || { scrollTop: 0 }).scrollTop;
  box.innerHTML = `<div class="panel-head"><button class="ghost small" data-back>← Run</button><h2>${Number(members.length)} steps</h2></div>
    <p class="muted">Steps with the same parents and children, drawn as one box.</p>
    <div class="group-list"><table class="kv">${rows}</table></div>`;
  const list = $(".group-list", box);
  if (list) list.scrollTop = scroll;
  box.hidden = false;
  $("#run-panel").hidden = true;
}

function zoom(level) {
  const svg = $("svg.dag");
  const scroll = $(".dag-scroll");
  const w = parseFloat(svg.dataset.w), h = parseFloat(svg.dataset.h);
  if (level === 0) RUN.zoom = Math.max(0.2, Math.min(1, (scroll.clientWidth - 4) / w));
  else RUN.zoom = Math.max(0.2, Math.min(2.5, RUN.zoom * (level > 0 ? 1.25 : 0.8)));
  svg.setAttribute("width", Math.round(w * RUN.zoom));
  svg.setAttribute("height", Math.round(h * RUN.zoom));
}

function setupRunPage() {
  const dataEl = $("#run-data");
  if (!dataEl) return;
  const data = JSON.parse(dataEl.textContent);
  RUN.id = data.id;
  RUN.groups = data.groups;
  applyRunState(data.state);
  const svg = $("svg.dag");
  const fit = Math.min(1, ($(".dag-scroll").clientWidth - 4) / parseFloat(svg.dataset.w));
  if (fit < 1 && fit >= 0.45) zoom(0);
  svg.addEventListener("click", (e) => {
    const g = e.target.closest("g.node");
    if (!g) return;
    if (g.dataset.step) showStep(g.dataset.step);
    else showGroup(g.dataset.group);
  });
  svg.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); e.target.closest("g.node")?.dispatchEvent(new MouseEvent("click", { bubbles: true })); }
  });
  for (const b of $$("[data-zoom]")) b.addEventListener("click", () => zoom(parseInt(b.dataset.zoom, 10)));
  document.addEventListener("click", (e) => {
    if (e.target.closest("[data-back]")) { e.preventDefault(); showRunPanel(); return; }
    const member = e.target.closest("[data-member]");
    if (member) { e.preventDefault(); showStep(decodeURIComponent(member.dataset.member)); return; }
    const link = e.target.closest("a.step-link");
    if (link) { e.preventDefault(); showStep(decodeURIComponent(link.getAttribute("href").slice(6))); }
  });
  follow(`/runs/${RUN.id}/state`, (state) => {
    const before = RUN.state && RUN.selected ? RUN.state.steps[RUN.selected] : null;
    applyRunState(state);
    const now = RUN.selected ? state.steps[RUN.selected] : null;
    // a selected step that changed (started, ended, got its task) is shown again, unless its
    // log is being followed: the log stream reloads it when the task ends
    if (now && before && (now[0] !== before[0] || now[3] !== before[3]) && !logSource) showStep(RUN.selected, false);
  });
  const m = /^#step=(.+)$/.exec(location.hash);
  if (m) showStep(decodeURIComponent(m[1]), false);
}

function setupTaskPage() {
  if ($("#run-data")) return;
  const pre = $("pre#log");
  if (pre) tailLog(pre, () => setTimeout(() => location.reload(), 300));
}

document.addEventListener("DOMContentLoaded", () => {
  setupSorting();
  setupFilters();
  setupDialogs();
  setupResume();
  setupCompare();
  setupLiveBlocks();
  setupRunPage();
  setupTaskPage();
  refreshTimes();
  tickDurations();
  setInterval(tickDurations, 1000);
  setInterval(refreshTimes, 20000);
});
