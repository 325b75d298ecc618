// The review app's pages: the queue with live tiles (/) and an alert (/alerts/<id>). Plain DOM, no framework:
// the server's /api/events stream says when to fetch again, so nothing reloads.
"use strict";

const VERDICT_NAMES = {unreviewed: "unreviewed", ack: "acknowledged", false_positive: "false positive",
                       true_positive: "true positive"};
const TOKEN_KEY = "fightwatch_token", WHO_KEY = "fightwatch_who";

// -- small helpers ----------------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);  // strings become text nodes: never parsed as HTML
  return node;
}

const localTime = iso => iso ? new Date(iso).toLocaleString() : "";
const percent = p => `${Math.round(p * 100)}%`;
const seconds = s => s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;

function badge(alert) {
  const text = VERDICT_NAMES[alert.review] + (alert.reviewed_by ? ` · ${alert.reviewed_by}` : "");
  return el("span", {class: `badge ${alert.review}`, title: alert.reviewed_at ? localTime(alert.reviewed_at) : ""}, text);
}

// Where the fight is, outlined over a snapshot's frame (see fitFrame): `box` is [x1, y1, x2, y2] in 0-1 of the
// picture, so the outline is placed in % of the frame and scales with it.
function boxOutline(box, label) {
  const [x1, y1, x2, y2] = box.map(v => Math.min(Math.max(v, 0), 1));
  const outline = el("div", {class: "box", title: "where the window that raised the alert was hottest"});
  Object.assign(outline.style, {left: `${x1 * 100}%`, top: `${y1 * 100}%`, width: `${(x2 - x1) * 100}%`,
                                height: `${(y2 - y1) * 100}%`});
  // the label sits above the box, or inside it where above would leave the picture
  if (label) outline.append(el("span", {class: y1 < 0.08 ? "box-label inside" : "box-label"}, label));
  return outline;
}

// A camera's zones (watch.zones), drawn over its snapshot's frame: polygons in 0-1 of the picture, in an SVG whose
// viewBox is the unit square stretched over the frame, so they scale with it; required zones are drawn solid.
function zonesOverlay(zones) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "zones");
  svg.setAttribute("viewBox", "0 0 1 1");
  svg.setAttribute("preserveAspectRatio", "none");
  for (const zone of zones) {
    const polygon = document.createElementNS(ns, "polygon");
    polygon.setAttribute("points", zone.polygon.map(([x, y]) => `${x},${y}`).join(" "));
    polygon.setAttribute("class", zone.required ? "zone required" : "zone");
    polygon.setAttribute("data-zone", zone.name);
    polygon.append(Object.assign(document.createElementNS(ns, "title"),
                                 {textContent: `zone ${zone.name}${zone.required ? " (alerts need a fight in it)" : ""}`}));
    svg.append(polygon);
  }
  return svg;
}

const aspects = new Map();  // a snapshot's url -> "width / height": a re-rendered thumbnail has its shape at once

// Gives `frame` the aspect ratio of `img` (its picture) once that has loaded; the style sheet fits the frame into
// its .snapshot box, so the frame is the picture's exact area.
function fitFrame(frame, img) {
  const fit = () => frame.style.setProperty("--aspect", aspects.get(img.src));
  img.addEventListener("load", () => { aspects.set(img.src, `${img.naturalWidth} / ${img.naturalHeight}`); fit(); });
  if (aspects.has(img.src)) fit();
}

function say(text) {
  const message = document.getElementById("message");
  if (message) message.textContent = text;
}

// -- identity: the reviewer's name and the token, typed once, kept in this browser ------------------------------

function setupIdentity(config) {
  const who = document.getElementById("who"), token = document.getElementById("token");
  who.value = localStorage.getItem(WHO_KEY) || "operator";
  token.value = localStorage.getItem(TOKEN_KEY) || "";
  document.getElementById("token-label").hidden = !config.writes_need_token;
  const save = () => {
    localStorage.setItem(WHO_KEY, who.value.trim() || "operator");
    localStorage.setItem(TOKEN_KEY, token.value);
    // reads from other hosts: <img>, <video> and EventSource send cookies, not headers
    document.cookie = `fightwatch_token=${encodeURIComponent(token.value)}; path=/; SameSite=Strict`;
  };
  who.addEventListener("change", save);
  token.addEventListener("change", () => { save(); location.reload(); });
  document.getElementById("identity").addEventListener("submit", event => event.preventDefault());
  save();
}

async function api(path, options = {}) {
  const headers = {"Accept": "application/json"};
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = `Bearer ${token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {method: options.method || "GET", headers,
                                      body: options.body === undefined ? undefined : JSON.stringify(options.body)});
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    const error = new Error(response.status === 401 ? `${detail}: enter the token above` : detail);
    error.status = response.status;
    throw error;
  }
  return {data: await response.json(), headers: response.headers};
}

const who = () => localStorage.getItem(WHO_KEY) || "operator";

// Calls `onChange` when the store changes, `onCameras(list)` when the cameras do; EventSource reconnects itself.
function listen(onChange, onCameras) {
  const state = document.getElementById("live-state");
  const source = new EventSource("/api/events");
  source.onopen = () => { state.textContent = "live"; state.className = "live-state on"; };
  source.onerror = () => { state.textContent = "reconnecting…"; state.className = "live-state"; };
  source.addEventListener("change", onChange);
  source.addEventListener("cameras", event => onCameras && onCameras(JSON.parse(event.data)));
}

// Runs `task` now, or once more after the running one ends: bursts of changes cost one fetch each end.
function coalesced(task) {
  let running = false, again = false;
  return async function run() {
    if (running) { again = true; return; }
    running = true;
    try { await task(); } catch (error) { say(error.message); }
    running = false;
    if (again) { again = false; run(); }
  };
}

// -- the queue page ---------------------------------------------------------------------------------------------

const selected = new Set();
let shownAlertIds = [];

function tileFor(camera) {  // made once per camera: updating it in place keeps its picture steady
  const meta = el("div", {class: "meta"});
  const tile = el("div", {class: "tile", "data-camera": camera.id}, el("div", {class: "no-picture"}, "no picture"), meta);
  tile.meta = meta;
  if (window.liveFrames) {
    tile.picture = el("img", {alt: `camera ${camera.id}`});
    tile.picture.onload = () => { if (tile.firstChild !== tile.picture) tile.firstChild.replaceWith(tile.picture); };
    tile.frameUrl = camera.frame_url;
  }
  return tile;
}

const tiles = new Map();

function renderTiles(cameras) {
  const container = document.getElementById("tiles"), select = document.getElementById("f-camera");
  const options = new Set([...select.options].map(o => o.value));
  for (const camera of cameras) {
    if (!tiles.has(camera.id)) tiles.set(camera.id, tileFor(camera));
    if (!options.has(camera.id)) select.append(el("option", {value: camera.id}, camera.id));
    const facts = [camera.fps != null ? `${camera.fps.toFixed(1)} fps` : null,
                   camera.lag_s != null ? `lag ${camera.lag_s.toFixed(2)} s` : null].filter(Boolean).join(" · ");
    // the separators are text, so the line reads (and copies) "hall · offline since ...", not "halloffline since ..."
    const more = facts ? [" · ", el("span", {class: "muted"}, facts)]
      : camera.since ? [" ", el("span", {class: "muted"}, `since ${localTime(camera.since)}`)] : [];
    tiles.get(camera.id).meta.replaceChildren(el("b", {}, camera.id), " · ",
      el("span", {class: `status status-${camera.status}`, title: camera.detail || ""}, camera.status), ...more);
  }
  const ids = new Set(cameras.map(c => c.id));
  for (const id of tiles.keys()) if (!ids.has(id)) tiles.delete(id);
  container.replaceChildren(...(tiles.size ? tiles.values() : [el("p", {class: "empty"}, "No cameras yet.")]));
  refreshFrames();
}

function refreshFrames() {  // each tile's newest frame; the old one stays up until the new one has loaded
  for (const tile of tiles.values()) {
    if (!tile.picture) continue;
    const next = new Image();
    next.onload = () => { tile.picture.src = next.src; };
    next.src = `${tile.frameUrl}?t=${Date.now()}`;
  }
}

function filters() {
  const params = new URLSearchParams();
  for (const [id, name] of [["f-camera", "camera"], ["f-day", "day"], ["f-review", "review"]]) {
    const value = document.getElementById(id).value;
    if (value) params.set(name, value);
  }
  return params;
}

function alertRow(alert) {
  const box = el("input", {type: "checkbox", "aria-label": `select ${alert.id}`, "data-id": alert.id});
  box.checked = selected.has(alert.id);
  box.addEventListener("click", event => event.stopPropagation());
  box.addEventListener("change", () => { box.checked ? selected.add(alert.id) : selected.delete(alert.id); showSelected(); });
  let thumbnail = "—";
  if (alert.snapshot_url) {
    const img = el("img", {src: alert.snapshot_url, alt: "", loading: "lazy"});
    const frame = el("div", {class: "snapshot-frame"}, img);
    fitFrame(frame, img);
    if (alert.box) frame.append(boxOutline(alert.box));
    thumbnail = el("div", {class: "snapshot"}, frame);
  }
  const duration = seconds(alert.duration_s) + (alert.state === "active" ? " (active)" : "");
  return el("tr", {class: `alert ${alert.review}`, "data-id": alert.id, onclick: () => { location.href = alert.page_url; }},
    el("td", {}, box), el("td", {}, thumbnail), el("td", {}, alert.camera),
    el("td", {title: alert.start_time}, localTime(alert.start_time)), el("td", {}, percent(alert.peak_prob)),
    el("td", {}, duration), el("td", {}, badge(alert)));
}

function cameraEventRow(event) {
  return el("tr", {class: "camera-event", "data-event": event.id},
    el("td", {}), el("td", {}, el("span", {class: "badge"}, "camera")), el("td", {}, event.camera),
    el("td", {title: event.at}, localTime(event.at)),
    el("td", {colspan: 3}, `camera ${event.kind}` + (event.detail ? `: ${event.detail}` : "")));
}

function showSelected() {
  for (const id of [...selected]) if (!shownAlertIds.includes(id)) selected.delete(id);
  document.getElementById("selected-count").textContent = `${selected.size} selected`;
  document.getElementById("select-all").checked = shownAlertIds.length > 0 && selected.size === shownAlertIds.length;
}

const loadQueue = coalesced(async () => {
  const params = filters();
  const review = params.get("review");
  params.set("limit", "200");
  const {data: alerts, headers} = await api(`/api/alerts?${params}`);
  // camera events are not reviewed: they join the unreviewed part of the queue, by time
  let events = [];
  if (!review || review === "unreviewed") {
    const eventParams = new URLSearchParams(params);
    eventParams.delete("review");
    eventParams.delete("offset");
    eventParams.set("limit", "50");
    events = (await api(`/api/camera-events?${eventParams}`)).data;
  }
  const open = alerts.filter(a => a.review === "unreviewed"), done = alerts.filter(a => a.review !== "unreviewed");
  const timed = [...open.map(a => [a.start_time, alertRow(a)]), ...events.map(e => [e.at, cameraEventRow(e)])];
  timed.sort((a, b) => (a[0] < b[0] ? 1 : a[0] > b[0] ? -1 : 0));
  const rows = [...timed.map(([, row]) => row), ...done.map(alertRow)];
  document.getElementById("queue").replaceChildren(
    ...(rows.length ? rows : [el("tr", {}, el("td", {colspan: 7, class: "empty"}, "No alerts."))]));
  shownAlertIds = alerts.map(a => a.id);
  document.getElementById("total").textContent = `(${headers.get("X-Total-Count")})`;
  showSelected();
});

async function bulkReview(verdict) {
  if (!selected.size) { say("select alerts first"); return; }
  try {
    const {data} = await api("/api/reviews", {method: "POST", body: {alert_ids: [...selected], verdict, who: who()}});
    selected.clear();
    say(`${data.length} marked ${VERDICT_NAMES[verdict]}`);
    loadQueue();
  } catch (error) { say(error.message); }
}

function setupQueue() {
  document.getElementById("filters").addEventListener("change", () => { selected.clear(); loadQueue(); });
  document.getElementById("select-all").addEventListener("change", event => {
    for (const id of shownAlertIds) event.target.checked ? selected.add(id) : selected.delete(id);
    for (const box of document.querySelectorAll("#queue input[type=checkbox]")) box.checked = event.target.checked;
    showSelected();
  });
  for (const button of document.querySelectorAll("[data-bulk]")) {
    button.addEventListener("click", () => bulkReview(button.dataset.bulk));
  }
  listen(loadQueue, renderTiles);
  if (window.liveFrames) setInterval(refreshFrames, 1000);
}

// -- an alert's page --------------------------------------------------------------------------------------------

const alertId = () => decodeURIComponent(location.pathname.split("/").pop());

// The fight probability of each scored window at its end (when it was known), the threshold, and the alert's
// start, raise and end, as an inline SVG.
function probabilityChart(alert) {
  const ns = "http://www.w3.org/2000/svg", width = 640, height = 180, pad = 28, right = 70;  // right: labels
  const svg = document.createElementNS(ns, "svg");
  const node = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
    return n;
  };
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  const windows = alert.windows;
  const marks = [alert.start_s, alert.raised_s, alert.end_s].filter(t => t != null);
  const t0 = Math.min(...marks, ...windows.map(w => w.end_s)), t1 = Math.max(...marks, ...windows.map(w => w.end_s));
  const x = t => pad + (t - t0) / Math.max(t1 - t0, 1e-6) * (width - pad - right);
  const y = p => height - pad - p * (height - 2 * pad);
  node("line", {x1: pad, x2: width - right, y1: y(0), y2: y(0), stroke: "#555"});
  node("text", {x: 2, y: y(1) + 4, fill: "#9aa0a6", "font-size": 10}, "1.0");
  node("text", {x: 2, y: y(0) + 4, fill: "#9aa0a6", "font-size": 10}, "0");
  for (const [t, name] of [[alert.start_s, "start"], [alert.raised_s, "raised"], [alert.end_s, "end"]]) {
    if (t == null) continue;
    node("line", {x1: x(t), x2: x(t), y1: y(0), y2: y(1), stroke: "#8ab4f8", "stroke-dasharray": "2 3"});
    node("text", {x: x(t) + 2, y: pad - 6, fill: "#8ab4f8", "font-size": 10}, `${name} ${t.toFixed(1)} s`);
  }
  if (alert.threshold != null) {
    node("line", {x1: pad, x2: width - right, y1: y(alert.threshold), y2: y(alert.threshold), stroke: "#fdd663",
                  "stroke-dasharray": "6 4"});
    node("text", {x: width - right + 4, y: y(alert.threshold) + 4, fill: "#fdd663", "font-size": 10}, "threshold");
  }
  if (windows.length) {
    node("polyline", {points: windows.map(w => `${x(w.end_s)},${y(w.prob)}`).join(" "), fill: "none",
                      stroke: "#f28b82", "stroke-width": 2, class: "probability"});
    for (const w of windows) {
      node("circle", {cx: x(w.end_s), cy: y(w.prob), r: 2.5, fill: "#f28b82"}).append(
        Object.assign(document.createElementNS(ns, "title"),
                      {textContent: `${w.start_s.toFixed(2)}–${w.end_s.toFixed(2)} s: ${percent(w.prob)}`}));
    }
  } else {
    node("text", {x: width / 2, y: height / 2, fill: "#9aa0a6", "text-anchor": "middle"},
         "no scored windows recorded for this alert");
  }
  node("text", {x: width / 2, y: height - 6, fill: "#9aa0a6", "font-size": 10, "text-anchor": "middle"},
       "stream seconds");
  return svg;
}

function renderAlert(alert, first) {
  document.title = `${alert.id} · fightwatch review`;
  document.getElementById("title").textContent = `${alert.camera}: alert ${alert.id}`;
  const end = alert.state === "active" ? "still active" : `ended (${alert.end_reason || "?"}) ${localTime(alert.end_time)}`;
  document.getElementById("summary").textContent =
    `started ${localTime(alert.start_time)}, raised ${localTime(alert.raised_time)}, ${end}; ` +
    `peak ${percent(alert.peak_prob)}, ${seconds(alert.duration_s)}` + (alert.source ? `; source ${alert.source}` : "");
  if (first) {  // the media once: setting src again would restart the video
    const clip = document.getElementById("clip"), snapshot = document.getElementById("snapshot");
    if (alert.clip_url) clip.src = alert.clip_url;
    else { clip.hidden = true; document.getElementById("clip-caption").textContent = "No clip (not written, or deleted)"; }
    if (alert.snapshot_url) {
      snapshot.src = alert.snapshot_url;
      const frame = document.getElementById("snapshot-frame");
      fitFrame(frame, snapshot);
      const zones = window.zones.filter(zone => zone.camera === alert.camera);
      if (zones.length) frame.append(zonesOverlay(zones));
    } else snapshot.alt = "no snapshot";
  }
  const frame = document.getElementById("snapshot-frame");
  frame.querySelector(".box")?.remove();  // the label's peak may have grown
  if (alert.snapshot_url && alert.box) {
    frame.append(boxOutline(alert.box, `fight ${percent(alert.peak_prob)}`));
    document.getElementById("snapshot-caption").textContent = "Snapshot: the hottest frame; outlined: where the " +
      "fight is" + (frame.querySelector(".zones") ? "; blue: the camera's zones (solid: required)" : "");
  }
  document.getElementById("chart").replaceChildren(probabilityChart(alert));
  document.getElementById("review-state").replaceChildren(badge(alert));
  document.getElementById("undo").disabled = alert.review === "unreviewed";
  document.getElementById("history").replaceChildren(...alert.reviews.map(r => el("li", {class: r.undone_at ? "undone" : ""},
    `${VERDICT_NAMES[r.verdict]} by ${r.who}, ${localTime(r.at)}`,
    r.undone_at ? el("span", {}, ` (undone by ${r.undone_by}, ${localTime(r.undone_at)})`) : "")));
}

function setupAlert() {
  let first = true;
  const load = coalesced(async () => {
    try {
      const {data} = await api(`/api/alerts/${encodeURIComponent(alertId())}`);
      renderAlert(data, first);
      first = false;
    } catch (error) {
      if (error.status === 404) document.getElementById("title").textContent = `No alert ${alertId()}`;
      throw error;
    }
  });
  const post = async (action, body) => {
    try {
      const {data} = await api(`/api/alerts/${encodeURIComponent(alertId())}/${action}`, {method: "POST", body});
      renderAlert(data, false);
      say("");
    } catch (error) { say(error.message); }
  };
  for (const button of document.querySelectorAll("[data-verdict]")) {
    button.addEventListener("click", () => post("review", {verdict: button.dataset.verdict, who: who()}));
  }
  document.getElementById("undo").addEventListener("click", () => post("undo", {who: who()}));
  listen(load);
}

// -- start ------------------------------------------------------------------------------------------------------

(async () => {
  const {data: config} = await api("/api/config");
  window.liveFrames = config.live_frames;
  window.zones = config.zones || [];
  setupIdentity(config);
  if (document.body.dataset.page === "queue") setupQueue(); else setupAlert();
})();
