// KIRI's dashboard: glue between the server's JSON and Plotly. Every number is the server's;
// this script only draws it, follows the event stream, and sends the buttons' verdicts.
"use strict";

const state = { atom: "", span: "hour", source: null, charts: {}, picked: null };

function $(sel) { return document.querySelector(sel); }

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

// Plotly's date axes read strings as local wall-clock time, as people read the times below.
function local(ts) {
  const d = new Date(ts * 1000), p = (n, w = 2) => String(n).padStart(w, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ` +
    `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

function fixed(x, n = 2) { return x === null || x === undefined ? "–" : Number(x).toFixed(n); }

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (r.status === 403) { $("#login").hidden = false; throw new Error("not logged in"); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function post(url, body) {
  const r = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const answer = await r.json();
  if (!r.ok) throw new Error(answer.error || r.statusText);
  return answer;
}

// -- charts ---------------------------------------------------------------------------------------

async function drawCharts() {
  const data = await getJSON(`/api/chart?atom=${encodeURIComponent(state.atom)}&span=${state.span}`);
  const list = $("#chart-list");
  list.replaceChildren();
  state.charts = {};
  const hosts = Object.keys(data.hosts);
  $("#no-scores").hidden = hosts.length > 0;
  for (const host of hosts) {
    const div = el("div", null, "chart");
    div.dataset.host = host;
    list.appendChild(div);
    state.charts[host] = div;
    const s = data.hosts[host];
    const x = s.ts.map(local);
    const bands = data.bands.filter(b => b.host === host).map(b => ({
      type: "rect", xref: "x", yref: "paper", x0: local(Math.max(b.start, data.start)),
      x1: local(b.end), y0: 0, y1: 1, fillcolor: "rgba(220, 40, 40, 0.15)", line: { width: 0 },
      name: "alert " + b.id,
    }));
    const traces = [
      { x, y: s.surprise, customdata: s.ts, name: "surprise", mode: "lines+markers",
        marker: { size: 3 }, line: { width: 1, color: "#2a6f97" } },
      { x, y: s.threshold, customdata: s.ts, name: "threshold", mode: "lines",
        line: { width: 1, dash: "dot", color: "#c0392b" }, hoverinfo: "skip" },
    ];
    const layout = {
      title: { text: `${data.atom} on ${host}`, font: { size: 13 } },
      margin: { l: 40, r: 10, t: 30, b: 30 }, shapes: bands, showlegend: false, hovermode: "x",
      xaxis: { type: "date", range: [local(data.start), local(data.end)] },
      yaxis: { title: { text: "surprise" }, rangemode: "tozero" },
    };
    await Plotly.newPlot(div, traces, layout, { displaylogo: false, responsive: true });
    div.on("plotly_click", ev => {
      const p = ev.points.find(q => q.curveNumber === 0);
      if (p) showWhy(host, p.customdata);
    });
  }
  document.body.dataset.ready = "1";
  document.body.dataset.readyMs = String(Math.round(performance.now()));  // for bench/dashboard.py
  follow(data.end);
}

function follow(since) {
  if (state.source) state.source.close();
  const src = new EventSource(`/events?atom=${encodeURIComponent(state.atom)}&since=${since}`);
  state.source = src;
  src.addEventListener("open", () => { $("#live").textContent = "live"; });
  src.addEventListener("error", () => { $("#live").textContent = "reconnecting…"; });
  src.addEventListener("scores", ev => {
    const fresh = JSON.parse(ev.data);
    for (const [host, s] of Object.entries(fresh)) {
      const div = state.charts[host];
      if (!div) { drawCharts(); return; }  // a new host: draw it
      Plotly.extendTraces(div, {
        x: [s.ts.map(local), s.ts.map(local)], y: [s.surprise, s.threshold],
        customdata: [s.ts, s.ts],
      }, [0, 1]);
      const span = { hour: 3600, day: 86400, week: 604800 }[state.span];
      const end = Date.now() / 1000;
      Plotly.relayout(div, { "xaxis.range": [local(end - span), local(end)] });
    }
  });
  src.addEventListener("changed", () => { drawLists(); });
}

// -- why ------------------------------------------------------------------------------------------

async function showWhy(host, ts) {
  const window = { hour: 300, day: 1800, week: 7200 }[state.span];
  const w = await getJSON(`/api/why?atom=${encodeURIComponent(state.atom)}` +
    `&host=${encodeURIComponent(host)}&ts=${ts}&window=${window}`);
  $("#why").hidden = false;
  $("#why-head").textContent =
    `${w.atom} on ${w.host} at ${w.time}: surprise ${fixed(w.surprise)} (threshold ${fixed(w.threshold)})`;
  const body = $("#why-fields tbody");
  body.replaceChildren();
  for (const f of w.fields) {
    const tr = el("tr");
    const usual = f.low === null ? "–" : `${fixed(f.low)}–${fixed(f.high)}${f.unit}`;
    for (const cell of [f.label, `${fixed(f.value)}${f.unit}`, f.token, fixed(f.nll), fixed(f.z), usual]) {
      tr.appendChild(el("td", cell));
    }
    body.appendChild(tr);
  }
  await Plotly.newPlot($("#strip"), [{
    type: "heatmap", x: w.strip.ts.map(local), y: w.strip.fields, z: w.strip.z,
    colorscale: "YlOrRd", reversescale: true, zmin: 0, colorbar: { title: { text: "z" } },
  }], {
    margin: { l: 90, r: 10, t: 10, b: 30 },
    shapes: [{ type: "line", xref: "x", yref: "paper", x0: local(w.ts), x1: local(w.ts),
      y0: 0, y1: 1, line: { color: "#2a6f97", width: 2 } }],
  }, { displaylogo: false, responsive: true });
}

// -- alerts, rules, atoms -------------------------------------------------------------------------

function verdictText(a) {
  if (!a.verdict) return "";
  return a.verdict === "confirm" ? "confirmed" : a.normal ? "new normal" : "dismissed";
}

function alertRow(a) {
  const tr = el("tr", null, a.state);
  tr.dataset.id = a.id;
  for (const cell of [a.short_id, a.time, a.atom, a.host, a.state, a.by, a.summary]) {
    tr.appendChild(el("td", cell));
  }
  const verdict = el("td", verdictText(a), "verdict");
  tr.appendChild(verdict);
  const actions = el("td");
  const result = el("span", "", "result");
  for (const [label, verdictName] of [["Confirm", "confirm"], ["Dismiss", "dismiss"], ["New normal", "normal"]]) {
    const b = el("button", label);
    b.dataset.verdict = verdictName;
    b.addEventListener("click", async ev => {
      ev.stopPropagation();
      try {
        const answer = await post("/api/feedback", { alert: a.id, verdict: verdictName });
        result.className = "result";
        result.textContent = answer.lines.join("\n");
        verdict.textContent = { confirm: "confirmed", dismiss: "dismissed", normal: "new normal" }[verdictName];
        drawRules();
      } catch (e) {
        result.className = "result error";
        result.textContent = e.message;
      }
    });
    actions.appendChild(b);
  }
  actions.appendChild(result);
  tr.appendChild(actions);
  tr.addEventListener("click", () => {
    document.querySelectorAll("#alerts tr.picked").forEach(r => r.classList.remove("picked"));
    tr.classList.add("picked");
    if (a.atom === state.atom) showWhy(a.host, a.ts);
  });
  return tr;
}

async function drawAlerts() {
  const { alerts } = await getJSON("/api/alerts");
  const body = $("#alerts tbody");
  const results = {};  // what a button said stays shown when the list is drawn again
  body.querySelectorAll("tr").forEach(tr => { results[tr.dataset.id] = tr.querySelector(".result"); });
  body.replaceChildren(...alerts.map(alertRow));
  body.querySelectorAll("tr").forEach(tr => {
    const old = results[tr.dataset.id];
    if (old && old.textContent) tr.querySelector(".result").replaceWith(old);
  });
  $("#no-alerts").hidden = alerts.length > 0;
}

async function drawRules() {
  const { rules } = await getJSON("/api/rules");
  const body = $("#rules tbody");
  body.replaceChildren();
  for (const r of rules) {
    const tr = el("tr");
    tr.dataset.id = r.id;
    const made = r.alerts.length ? `dismissals of ${r.alerts.join(", ")}` : r.reason;
    for (const cell of [r.id, r.host, r.atom, r.match, r.until, made]) tr.appendChild(el("td", cell));
    const td = el("td"), result = el("span", "", "result"), b = el("button", "Delete");
    b.addEventListener("click", async () => {
      try {
        const answer = await post("/api/rules/delete", { rule: r.id });
        result.className = "result";
        result.textContent = answer.lines.join("\n");
        b.disabled = true;
        tr.classList.add("deleted");
      } catch (e) {
        result.className = "result error";
        result.textContent = e.message;
      }
    });
    td.append(b, result);
    tr.appendChild(td);
    body.appendChild(tr);
  }
  $("#no-rules").hidden = rules.length > 0;
}

async function drawAtoms() {
  const { atoms, status } = await getJSON("/api/atoms");
  const body = $("#atoms tbody");
  body.replaceChildren();
  for (const a of atoms) {
    const tr = el("tr");
    const hours = a.span ? `, ${fixed(a.span / 3600, 1)} h` : "";
    const model = a.trained ? `trained ${a.when} on ${a.observations} observations${hours}${a.early ? " (early)" : ""}`
      : a.problem || "not trained yet";
    for (const cell of [a.atom, model, a.trained ? fixed(a.threshold, 3) : "–", a.life]) tr.appendChild(el("td", cell));
    body.appendChild(tr);
  }
  const picker = $("#atom");
  if (!picker.options.length) {
    for (const a of atoms) picker.appendChild(el("option", a.atom));
  }
  $("#pipeline").textContent = status.running ? `${status.pipeline}, updated ${status.updated}`
    : status.problem || "the supervisor is not running";
  const stages = $("#stages tbody");
  stages.replaceChildren();
  for (const s of status.stages) {
    const tr = el("tr");
    const mem = s.rss === null ? "–" : `${fixed(s.rss / 1048576, 0)} MB`;
    for (const cell of [s.name, s.state, s.pid ?? "–", s.restarts, s.cpu === null ? "–" : `${fixed(s.cpu, 1)}%`, mem]) {
      tr.appendChild(el("td", cell));
    }
    stages.appendChild(tr);
  }
  return atoms;
}

async function drawLists() { await Promise.all([drawAlerts(), drawRules()]); }

async function start() {
  const asked = location.hash.slice(1);  // /#day opens the day view
  if (asked in { hour: 1, day: 1, week: 1 }) {
    state.span = asked;
    document.querySelectorAll("#spans button").forEach(x => x.classList.toggle("on", x.dataset.span === asked));
  }
  const atoms = await drawAtoms();
  state.atom = (atoms[0] || {}).atom || "";
  $("#atom").addEventListener("change", ev => { state.atom = ev.target.value; drawCharts(); });
  document.querySelectorAll("#spans button").forEach(b => b.addEventListener("click", () => {
    document.querySelectorAll("#spans button").forEach(x => x.classList.toggle("on", x === b));
    state.span = b.dataset.span;
    drawCharts();
  }));
  await drawLists();
  if (state.atom) await drawCharts();
  else { $("#no-scores").hidden = false; document.body.dataset.ready = "1"; }
}

document.addEventListener("DOMContentLoaded", () => {
  start().catch(e => { if (e.message !== "not logged in") console.warn(e); });
});
