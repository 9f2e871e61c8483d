// Porch's dashboard: polls /api/dashboard (same origin, the admin cookie) once a
// second and draws requests/s and 5xx/s on a canvas.  No library, nothing fetched
// from elsewhere (the page's Content-Security-Policy allows 'self' only).
"use strict";

const POLL_MS = 1000;
const POINTS = 120; // two minutes at one poll a second
const history = { ok: [], err: [] };
let previous = null;

function cell(row, value, cls) {
  const td = document.createElement("td");
  if (cls) {
    const badge = document.createElement("span");
    badge.className = "badge state-" + String(value).split(" ")[0];
    badge.textContent = value;
    td.className = "state";
    td.appendChild(badge);
  } else {
    td.textContent = value === null || value === undefined ? "-" : String(value);
  }
  row.appendChild(td);
}

function fill(id, items, columns) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const item of items) {
    const row = document.createElement("tr");
    for (const [get, badge] of columns) cell(row, get(item), badge);
    body.appendChild(row);
  }
}

function rate(now, key) {
  if (!previous) return 0;
  const seconds = now.time - previous.time;
  return seconds > 0 ? Math.max(0, (now[key] - previous[key]) / seconds) : 0;
}

function push(series, value) {
  series.push(value);
  if (series.length > POINTS) series.shift();
}

function draw() {
  const canvas = document.getElementById("chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 24;
  const top = Math.max(1, ...history.ok, ...history.err);
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#eef0f3";
  ctx.fillStyle = "#667";
  ctx.font = "11px sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = pad / 2 + (h - pad) * i / 4;
    ctx.beginPath(); ctx.moveTo(pad * 2, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText((top * (4 - i) / 4).toFixed(top < 4 ? 1 : 0), 0, y + 4);
  }
  for (const [series, color] of [[history.ok, "#2e8b57"], [history.err, "#c0392b"]]) {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    series.forEach((v, i) => {
      const x = pad * 2 + (w - pad * 2) * (i + POINTS - series.length) / (POINTS - 1);
      const y = pad / 2 + (h - pad) * (1 - v / top);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  // What the chart shows, for a test or a screen reader to read.
  canvas.dataset.points = String(history.ok.length);
  canvas.dataset.peak = String(Math.max(0, ...history.ok));
}

function render(data) {
  const ok = rate(data, "requests"), err = rate(data, "errors");
  if (previous) { push(history.ok, ok); push(history.err, err); }
  previous = data;
  document.getElementById("requests-total").textContent = data.requests;
  document.getElementById("requests-rate").textContent = ok.toFixed(1);
  document.getElementById("errors-rate").textContent = err.toFixed(1);
  document.getElementById("connections").textContent = data.connections;
  document.getElementById("workers").textContent = data.workers;
  fill("sites", data.sites, [[s => s.name], [s => s.hosts.join(", ") || "(any)"], [s => s.tls],
    [s => s.routes.map(r => r.path + " → " + r.proxy.join(", ")).join("; ")]]);
  fill("upstreams", data.upstreams, [[u => u.url], [u => u.state, true], [u => u.in_flight],
    [u => u.failures], [u => u.routes.join(", ")], [u => u.health_error || u.last_error]]);
  fill("certificates", data.certificates, [[c => c.names.join(", ")], [c => c.source], [c => c.issuer],
    [c => c.not_after], [c => c.days_left], [c => c.state, true]]);
  const list = document.getElementById("errors");
  list.replaceChildren();
  for (const e of data.recent_errors.slice().reverse()) {
    const li = document.createElement("li");
    li.className = e.level;
    li.textContent = e.line;
    list.appendChild(li);
  }
  draw();
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("/api/dashboard", { credentials: "same-origin", cache: "no-store" });
    if (response.status === 401) {
      status.textContent = "not signed in: open /?token=YOUR_ADMIN_TOKEN";
    } else if (!response.ok) {
      status.textContent = "admin API answered " + response.status;
    } else {
      const data = await response.json();
      render(data);
      status.textContent = data.config + " · updated " + new Date(data.time * 1000).toLocaleTimeString();
    }
  } catch (e) {
    status.textContent = "porch unreachable (" + e.message + ")";
  }
  setTimeout(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", poll);
