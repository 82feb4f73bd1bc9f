// pgferry dashboard: live progress from the API's Server-Sent Events (`GET /api/runs/{id}/events`,
// replayed from the start, then live), and button labels that say what a form will do. No framework, no build step; the pages work without it (the
// progress then shows where the run was when the page was made).
"use strict";

function describe(ev) {
  switch (ev.type) {
    case "warning": return "warning" + (ev.table ? " (" + ev.table + ")" : "") + ": " + ev.message;
    case "run_started": return ev.mode + " " + ev.source + " → " + ev.target + ": " + (ev.tables || []).length + " table(s)";
    case "table_started": return ev.table + " started (" + (ev.strategy || "") + (ev.total_rows ? ", about " + ev.total_rows.toLocaleString() + " rows" : "") + ")";
    case "batch_written": return ev.table + ": " + (ev.rows || 0).toLocaleString() + " more rows";
    case "table_finished": return ev.table + " finished: " + ev.status + (ev.error ? " (" + ev.error + ")" : "");
    case "run_finished": return "finished: " + ev.outcome + " in " + (ev.duration_s || 0).toFixed(2) + " s";
    case "migration_started": return "migration " + ev.index + "/" + ev.total + ": " + ev.label;
    case "migration_finished": return "migration " + ev.index + "/" + ev.total + " done: " + ev.label + " (" + ev.duration_ms + " ms)";
    case "lock_retry": return ev.label + ": lock not granted, attempt " + ev.attempt + "/" + ev.max_attempts;
    case "complete": return "run ended: " + ev.state + (ev.exit_code != null ? " (exit " + ev.exit_code + ")" : "");
    case "error": return "run ended: " + ev.state + (ev.error ? ": " + ev.error : "");
    default: return ev.message || ev.type;  // a run's own steps (queued, started, approved ...)
  }
}

function follow(box) {
  const id = box.dataset.run;
  const bar = box.querySelector("progress");
  const pct = box.querySelector(".pct");
  const state = box.querySelector(".state");
  const log = document.querySelector('[data-log-for="' + id + '"]');
  // how far the run is: the service computes it (pgferry.jobs.progress) and sends it on the
  // events that say something about it, as `percent`
  let percent = null;
  const source = new EventSource(box.dataset.events);

  function setState(s) {
    box.dataset.state = s;
    state.textContent = s.replace(/_/g, " ");
    state.className = "state s-" + s;
  }
  function show(p) {
    if (p === null) { bar.removeAttribute("value"); pct.textContent = ""; return; }
    bar.value = p;
    bar.textContent = p + "%";
    pct.textContent = p + "%";
  }
  function handle(e) {
    let ev;
    try { ev = JSON.parse(e.data); } catch (err) { return; }
    if (typeof ev.percent === "number") { percent = ev.percent; }
    if (log) {
      const li = document.createElement("li");
      li.className = "ev-" + ev.type;
      const at = ev.at ? new Date(ev.at * 1000).toISOString().slice(11, 19) + " " : "";
      li.textContent = at + describe(ev);
      log.appendChild(li);
    }
    if (e.type === "batch:progress") {
      // a run's own step (queued, started, approved, retrying) carries its new state
      if ("step" in ev && ev.state) { setState(ev.state); }
      if (typeof ev.percent === "number") { show(Math.floor(percent)); }
      else if (box.dataset.state === "running" && percent === null) { show(null); }
      return;
    }
    source.close();
    setState(ev.state || (e.type === "batch:complete" ? "succeeded" : "failed"));
    if (e.type === "batch:complete") { show(100); } else { box.classList.add("ended-badly"); }
    box.dataset.done = "true";
    document.querySelectorAll('[data-while-live="' + id + '"]').forEach((el) => { el.hidden = true; });
    document.querySelectorAll('[data-when-done="' + id + '"]').forEach((el) => { el.hidden = false; });
  }
  source.addEventListener("batch:progress", handle);
  source.addEventListener("batch:complete", handle);
  source.addEventListener("batch:error", handle);
  // the stream ends when the run has; EventSource would reconnect and replay: do not
  source.addEventListener("error", () => { if (box.dataset.done) { source.close(); } });
}

// "Verify {target} against {source}": the button says what it will do with the chosen envs
function labelPair(form) {
  const button = form.querySelector("button[type=submit]");
  const source = form.querySelector('[data-role="source"]').value;
  const target = form.querySelector('[data-role="target"]').value;
  button.textContent = form.dataset.label.replace(/\{source\}/g, source).replace(/\{target\}/g, target);
  const guarded = (form.dataset.protected || "").split(" ").filter(Boolean);
  const note = form.querySelector("[data-protected-note]");
  if (note) { note.hidden = !guarded.includes(target); }
  button.disabled = button.disabled || false;
  if (source === target) { button.setAttribute("aria-disabled", "true"); } else { button.removeAttribute("aria-disabled"); }
}

document.addEventListener("DOMContentLoaded", () => {
  // a browser holds 6 connections per host (HTTP/1.1): follow a few runs live, not all
  Array.from(document.querySelectorAll(".progress[data-events]")).slice(0, 4).forEach(follow);
  document.querySelectorAll("form.pair").forEach((form) => {
    labelPair(form);
    form.addEventListener("change", () => labelPair(form));
  });
  // a form that writes to a protected environment asks once more before it is sent
  document.querySelectorAll("form.on-protected button.danger").forEach((b) => {
    b.form.addEventListener("submit", (e) => {
      if (!window.confirm(b.textContent.trim() + "?")) { e.preventDefault(); }
    });
  });
});
