// The dashboard page: fills the tables and the chart from /events snapshots, as text only.
// Every value from a device or a journal goes into the page through createTextNode (via el()),
// never through innerHTML, so an id like <img src=x onerror=alert(1)> is shown, not run.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

// An element with attributes (set as attributes, never as markup) and children (strings become text nodes).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// An SVG element with numeric or class attributes.
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  if (text !== undefined) node.appendChild(document.createTextNode(String(text)));
  return node;
}

const fmt = {
  acc: (v) => (v === null || v === undefined ? "-" : Number(v).toFixed(3)),
  num: (v) => (v === null || v === undefined ? "-" : Number(v).toLocaleString("en")),
  bytes: (v) => (v === null || v === undefined ? "-"
    : `${(Number(v) / 1024).toLocaleString("en", {maximumFractionDigits: 0})} KB`),
  time: (t) => (t ? new Date(Number(t) * 1000).toLocaleTimeString("en-GB") : "-"),
  ago: (t, now) => (t ? `${Math.max(0, Number(now) - Number(t)).toFixed(0)} s ago` : "-"),
  text: (v) => (v === null || v === undefined || v === "" ? "-" : String(v)),
};

function cell(value, cls) {
  return el("td", cls ? {class: cls} : {}, value);
}

// Replace a table's body with rows, or with one "nothing yet" row.
function fillTable(id, rows, emptyText) {
  const table = document.getElementById(id);
  const body = table.tBodies[0];
  if (rows.length) {
    body.replaceChildren(...rows);
  } else {
    const columns = table.tHead.rows[0].cells.length;
    body.replaceChildren(el("tr", {class: "empty-row"}, el("td", {colspan: columns, class: "empty"}, emptyText)));
  }
}

function renderTotals(totals) {
  const items = [
    ["devices", totals.devices], ["processed", totals.processed], ["labelled", totals.labelled],
    ["drift alerts", totals.drift_alerts], ["anomaly alerts", totals.anomaly_alerts],
    ["updates", totals.updates], ["dead letters", totals.dead_letters],
  ];
  document.getElementById("totals").replaceChildren(
    ...items.map(([name, value]) => el("li", {}, `${name} `, el("b", {}, fmt.num(value)))));
}

function renderDevices(devices, now) {
  fillTable("devices", devices.map((d) => el("tr", {dataset: {device: d.device}, class: d.final ? "stale" : ""},
    cell(d.device, "device"), cell(fmt.text(d.model), "model"),
    cell(`${fmt.acc(d.accuracy_recent)} (last ${d.recent_window})`, "num accuracy"),
    cell(fmt.num(d.labelled), "num"), cell(fmt.num(d.processed), "num"), cell(fmt.num(d.delivered), "num"),
    cell(fmt.num(d.pending), "num"),
    cell(d.final ? `${fmt.time(d.last_seen)} (stopped)` : `${fmt.time(d.last_seen)}, ${fmt.ago(d.last_seen, now)}`,
      "last-seen"))), "no device has written its stats file yet");
}

function renderAlerts(alerts) {
  fillTable("alerts", alerts.map((a) => el("tr", {class: `kind-${a.kind === "drift" ? "drift" : "anomaly"}`},
    cell(a.kind, "kind"), cell(fmt.time(a.ts)), cell(fmt.text(a.device), "device"), cell(fmt.text(a.model)),
    cell(a.score === null ? "-" : Number(a.score).toFixed(3), "num"), cell(fmt.text(a.detail), "detail"))),
  "no alerts");
}

function renderUpdates(updates) {
  fillTable("updates", updates.map((u) => el("tr", {},
    cell(fmt.text(u.model), "model"), cell(fmt.time(u.published_at)),
    cell(`${fmt.acc(u.accuracy_before)} \u2192 ${fmt.acc(u.accuracy_after)}`, "num"),
    cell(fmt.text(u.retrain_s), "num"))), "no update published");
}

function renderDeadLetters(dead) {
  document.getElementById("dead-count").textContent = `${fmt.num(dead.count)} refused`;
  fillTable("dead-letters", dead.reasons.map((r) => el("tr", {},
    cell(r.reason, "detail reason"), cell(fmt.num(r.count), "num"))), "none");
  fillTable("dead-recent", dead.recent.map((r) => el("tr", {},
    cell(fmt.text(r.topic)), cell(fmt.num(r.partition), "num"), cell(fmt.num(r.offset), "num"),
    cell(fmt.num(r.size), "num"), cell(fmt.text(r.reason), "detail"))), "none");
}

// Edge-model and online-model accuracy per time bin, with drift and update markers, as an inline SVG.
function renderTimeline(line) {
  const box = document.getElementById("timeline");
  const width = 760, height = 220, left = 40, right = 140, top = 10, bottom = 30;
  const chart = svg("svg", {width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "accuracy over event time"});
  const points = line.points || [];
  if (!points.length) {
    chart.appendChild(svg("text", {x: left, y: height / 2}, "no labelled predictions yet"));
    box.replaceChildren(chart);
    return;
  }
  // The axis reaches a marker shortly after the last labelled event too (an update is often published
  // then), but not one far off, from a clock that does not agree with the devices'.
  const last = points[points.length - 1].t;
  const markers = (line.markers || []).map((m) => ({kind: m.kind, t: Number(m.ts) - Number(line.t0)}))
    .filter((m) => m.t >= 0 && m.t <= last + Math.max(30, last / 2));
  const span = Math.max(last, ...markers.map((m) => m.t), 1);
  const x = (t) => left + (width - left - right) * (Number(t) / span);
  const y = (v) => top + (height - top - bottom) * (1 - Number(v));
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    chart.appendChild(svg("line", {class: "grid", x1: left, x2: width - right, y1: y(v), y2: y(v)}));
    chart.appendChild(svg("text", {x: 4, y: y(v) + 4}, v.toFixed(2)));
  }
  chart.appendChild(svg("line", {class: "axis", x1: left, x2: width - right, y1: y(0), y2: y(0)}));
  chart.appendChild(svg("text", {x: width - right - 60, y: height - 8}, `${span.toFixed(0)} s`));
  chart.appendChild(svg("text", {x: left, y: height - 8}, "0 s"));
  for (const [key, label, row] of [["edge", "edge model", 0], ["online", "online model", 1]]) {
    const drawn = points.filter((p) => p[key] !== null);
    if (drawn.length) {
      const d = drawn.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
      chart.appendChild(svg("path", {class: key, d}));
    }
    const ly = top + 14 + row * 18;
    chart.appendChild(svg("line", {class: key, x1: width - right + 10, x2: width - right + 34,
      y1: ly - 4, y2: ly - 4}));
    chart.appendChild(svg("text", {x: width - right + 40, y: ly}, label));
  }
  markers.forEach((m, i) => {
    const mx = x(m.t);
    chart.appendChild(svg("line", {class: `marker${m.kind === "update published" ? " update" : ""}`,
      x1: mx, x2: mx, y1: top, y2: y(0)}));
    chart.appendChild(svg("text", {x: width - right + 10, y: top + 60 + i * 16}, `${m.kind} ${m.t.toFixed(0)} s`));
  });
  box.replaceChildren(chart);
}

function renderStream(stream, now) {
  const section = document.getElementById("stream-section");
  section.hidden = !stream;
  if (!stream) return;
  const folder = document.getElementById("stream-folder");
  folder.textContent = stream.found ? stream.folder : `${stream.folder} (not there yet)`;
  renderTotals(stream.totals);
  renderDevices(stream.devices, now);
  renderTimeline(stream.timeline);
  renderAlerts(stream.alerts);
  renderUpdates(stream.updates);
  renderDeadLetters(stream.dead_letters);
}

// A round's central accuracy: hidden when the server aggregated ciphertexts it cannot read.
function centralAccuracy(r) {
  if (r.central_accuracy !== null) return fmt.acc(r.central_accuracy);
  return r.encrypted && r.closed ? "hidden (encrypted)" : "-";
}

// "partition: value" for each device that trained in a round.
function perDevice(train, key, digits) {
  const shown = train.filter((t) => t[key] !== null && t[key] !== undefined);
  return shown.map((t) => `${t.partition_id}: ${Number(t[key]).toFixed(digits)}`).join(", ") || "-";
}

function roundRow(r) {
  const dropped = r.dropouts.map((d) => `dropped ${d.partition_id ?? d.node_id}: ${d.reason}`);
  return el("tr", {dataset: {round: r.round}},
    cell(fmt.num(r.round), "num"),
    cell(r.participants.length ? r.participants.join(", ") : "-", "participants"),
    cell(centralAccuracy(r), "num"),
    cell(fmt.acc(r.train_loss), "num"),
    cell(perDevice(r.train, "received_accuracy", 3)),
    cell(perDevice(r.train, "epsilon", 2), "epsilon"),
    cell(`${fmt.bytes(r.bytes_up)} / ${fmt.bytes(r.bytes_down)}`, "num bytes"),
    cell([...dropped, ...r.refusals].join("; ") || "-", "detail"),
    cell(r.seconds === null ? "running" : Number(r.seconds).toFixed(1), "num"));
}

const ROUND_COLUMNS = ["round", "participants", "central accuracy", "train loss", "devices' accuracy (received model)",
  "\u03b5 per device", "bytes up / down", "dropouts / refusals", "seconds"];

// One federated run: its rounds (participants and metrics), ε per device and bytes per round.
function renderRun(run) {
  const head = [run.label, ` \u2014 ${fmt.text(run.status)}`];
  if (run.privacy) head.push(`, privacy ${run.privacy}`);
  if (run.num_rounds) head.push(`, ${run.rounds.length}/${run.num_rounds} rounds`);
  const box = el("div", {class: "run", dataset: {run: run.label}}, el("h3", {}, ...head));
  if (run.error) box.appendChild(el("p", {class: "error"}, run.error));
  if (run.stopped) box.appendChild(el("p", {}, `stopped early: ${run.stopped}`));
  const columns = ROUND_COLUMNS.map((h) => (run.encrypted && h.startsWith("bytes") ? `${h} (ciphertexts)` : h));
  box.appendChild(el("table", {class: "rounds"},
    el("thead", {}, el("tr", {}, ...columns.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...run.rounds.map(roundRow))));
  if (!run.rounds.length) box.appendChild(el("p", {class: "empty"}, "no round yet"));
  if (run.epsilon && run.epsilon.length) {
    const budget = run.dp_budgets ? el("small", {}, ` (budget ${run.dp_budgets})`) : null;
    box.appendChild(el("h3", {}, "\u03b5 spent per device", budget));
    box.appendChild(el("table", {class: "epsilon"},
      el("thead", {}, el("tr", {}, el("th", {}, "device"), el("th", {}, "\u03b5"))),
      el("tbody", {}, ...run.epsilon.map((e) => el("tr", {dataset: {device: e.partition_id}},
        cell(e.partition_id), cell(Number(e.epsilon).toFixed(3), "num"))))));
  }
  if (run.he_public_context_bytes) {
    const size = fmt.bytes(run.he_public_context_bytes);
    box.appendChild(el("p", {}, `HE public context: ${size} (no secret key on the server)`));
  }
  return box;
}

function renderFederated(runs) {
  const section = document.getElementById("fl-section");
  section.hidden = !runs.length;
  document.getElementById("fl-runs").replaceChildren(...runs.map(renderRun));
}

function render(data) {
  renderStream(data.stream, data.now);
  renderFederated(data.federated || []);
  document.getElementById("updated").textContent = `updated ${fmt.time(data.now)}`;
}

function setStatus(text, cls) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = `status ${cls}`;
}

// EventSource reconnects by itself after an error; the badge says whether the page is live.
function connect() {
  const source = new EventSource("/events");
  source.onopen = () => setStatus("live", "live");
  source.onmessage = (event) => {
    setStatus("live", "live");
    render(JSON.parse(event.data));
  };
  source.onerror = () => setStatus("reconnecting", "lost");
}

document.addEventListener("DOMContentLoaded", connect);
