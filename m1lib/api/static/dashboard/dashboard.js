// M1's live dashboard: figures and charts from the Server-Sent Events stream, a query box.
// Text from the server is only ever set with textContent (never innerHTML); the page's CSP allows
// no inline script either way. uPlot is the vendored global `uPlot` (loaded before this module).

const STREAM = "/api/m1/dashboard/stream";
const QUERY = "/api/m1/dashboard/query";
const TEMPLATES = "/api/m1/dashboard/templates";
const LOGIN = "/dashboard/login";
const MAX_POINTS = 240; // a chart keeps this many ticks (2 minutes at the default 500 ms)
const MAX_ALERTS = 50;
const SILENCE_MS = 20000; // snapshots come every tick: this long without one is a dead stream
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const COLORS = ["#2f6fdf", "#d64545", "#2e9e6a", "#c98a12", "#8a4fd6", "#1d9bb5"];
const BLUE = COLORS[0], RED = COLORS[1], GREEN = COLORS[2], AMBER = COLORS[3];

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

const num = (v, digits = 0) =>
  typeof v === "number" && Number.isFinite(v)
    ? v.toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: 0 })
    : "–";
const ms = (v) => (typeof v === "number" ? `${num(v, v < 10 ? 2 : 0)} ms` : "–");
const usd = (v) => (typeof v === "number" ? `$${num(v, v < 1 ? 4 : 2)}` : "–");
const pct = (v) => (typeof v === "number" ? `${num(v * 100, 1)}%` : "–");

// -- charts ------------------------------------------------------------------------------------

function oneMinute(times) {
  // uPlot widens the empty range of one point (or none) to years: show the last minute instead.
  const last = times.length ? times[times.length - 1] : Date.now() / 1000;
  return { min: last - 60, max: last + 1 };
}

class Chart {
  // A uPlot line chart sized to its container, fed point by point or all at once.
  constructor(container, labels, { height = 130, yFormat = null, colors = COLORS, legend = false, points = false, yRange = null } = {}) {
    this.container = container;
    this.labels = labels;
    this.data = [[], ...labels.map(() => [])];
    const series = [{}, ...labels.map((label, i) => ({
      label, stroke: colors[i % colors.length], width: 2, points: { show: points },
      fill: labels.length === 1 ? `${colors[i % colors.length]}1a` : undefined,
    }))];
    const yAxis = { size: 56, gap: 4, grid: { stroke: "#eef0f4" }, ticks: { stroke: "#eef0f4" } };
    if (yFormat) yAxis.values = (u, vals) => vals.map(yFormat);
    this.plot = new uPlot({
      width: Math.max(container.clientWidth, 200), height,
      series,
      legend: { show: legend, live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, ...(yRange ? { y: { range: yRange } } : {}) },
      axes: [{ grid: { stroke: "#eef0f4" }, ticks: { stroke: "#eef0f4" } }, yAxis],
    }, this.data, container);
    this.plot.setScale("x", oneMinute(this.data[0]));
    new ResizeObserver(() => {
      const width = Math.max(container.clientWidth, 200);
      if (width !== this.plot.width) this.plot.setSize({ width, height });
    }).observe(container);
  }

  push(t, values) {
    this.data[0].push(t);
    values.forEach((v, i) => this.data[i + 1].push(typeof v === "number" ? v : null));
    if (this.data[0].length > MAX_POINTS) this.data.forEach((column) => column.shift());
    this.show();
  }

  show() {
    this.plot.setData(this.data);
    if (this.data[0].length < 2) this.plot.setScale("x", oneMinute(this.data[0]));
  }

  destroy() {
    this.plot.destroy();
  }
}

const charts = {};
function makeCharts() {
  // The numbers above each chart are its key: same colours, no legend.
  charts.cache = new Chart($("chart-cache"), ["hit rate %"], { yFormat: (v) => `${v}%`, yRange: [0, 100] });
  charts.policy = new Chart($("chart-policy"), ["allowed", "denied"], { colors: [GREEN, RED] });
  charts.tools = new Chart($("chart-tools"), ["total", "failed"], { colors: [BLUE, RED] });
  charts.cost = new Chart($("chart-cost"), ["cost $"], { colors: [AMBER], yFormat: (v) => `$${v}` });
}

// -- stream events ---------------------------------------------------------------------------

const seconds = (iso) => Date.parse(iso) / 1000;

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function onCache(d, t) {
  const looked = d.totalOps > 0 && typeof d.hitRate === "number" && d.hitRate + (d.missRate || 0) > 0;
  $("cache-hit-rate").textContent = looked ? pct(d.hitRate) : "–";
  $("cache-ops").textContent = num(d.totalOps);
  $("cache-p50").textContent = ms(d.latency?.p50);
  $("cache-p99").textContent = ms(d.latency?.p99);
  charts.cache.push(t, [looked ? d.hitRate * 100 : null]);
}

function onPolicy(d, t) {
  $("policy-allowed").textContent = num(d.allowed);
  $("policy-denied").textContent = num(d.denied);
  $("policy-avg").textContent = ms(d.avgCheckTime);
  charts.policy.push(t, [d.allowed, d.denied]);
}

function onTools(d, t) {
  $("tools-total").textContent = num(d.total);
  $("tools-failed").textContent = num(d.failed);
  const top = $("tools-top");
  clear(top);
  for (const tool of (d.topTools || []).slice(0, 3)) {
    const item = el("span", `${tool.name} `);
    item.append(el("b", `${num(tool.count)} · ${ms(tool.avgDuration)}`));
    top.append(item);
  }
  charts.tools.push(t, [d.total, d.failed]);
}

function onCost(d, t) {
  $("cost-total").textContent = usd(d.totalCost);
  const trend = d.costTrend;
  $("cost-trend").textContent =
    typeof trend === "number" ? `${trend >= 0 ? "▲" : "▼"} ${num(Math.abs(trend), 1)}% vs previous window` : "";
  const models = $("cost-models");
  clear(models);
  const byModel = Object.entries(d.costByModel || {}).sort((a, b) => b[1] - a[1]).slice(0, 3);
  for (const [model, cost] of byModel) {
    const item = el("span", `${model} `);
    item.append(el("b", usd(cost)));
    models.append(item);
  }
  charts.cost.push(t, [d.totalCost]);
}

function onHealth(d) {
  const badge = $("health-status");
  badge.textContent = d.status || "unknown";
  badge.dataset.status = d.status || "unknown";
  const list = $("health");
  clear(list);
  for (const [name, c] of Object.entries(d.components || {}).sort()) {
    const row = el("li");
    const dot = el("span", "", "dot");
    dot.dataset.status = c.status || "unknown";
    row.append(dot, el("span", name, "name"), el("span", c.status || "unknown", "status"));
    row.append(el("span", c.latencyMs == null ? "" : ms(c.latencyMs), "muted right"));
    list.append(row);
  }
  if (!list.firstChild) list.append(el("li", "no component reported", "muted"));
}

const alertIds = new Set();
function onAlert(d, envelope, id) {
  if (id) {
    if (alertIds.has(id)) return; // a replay after a reconnect
    alertIds.add(id);
  }
  const list = $("alerts");
  list.querySelector(".empty")?.remove();
  const row = el("li", null, "alert");
  row.dataset.level = d.level || "warning";
  const head = el("div", null, "alert-head");
  head.append(el("span", d.level || "alert", "level"), el("span", d.source || "", "source"));
  head.append(el("time", new Date(envelope.timestamp).toLocaleTimeString(), "muted right"));
  row.append(head, el("div", d.message || "", "message"));
  const meta = typeof d.metadata === "string" ? d.metadata : JSON.stringify(d.metadata ?? null);
  if (meta && meta !== "null" && meta !== "{}") row.append(el("div", meta, "meta muted"));
  list.prepend(row);
  while (list.children.length > MAX_ALERTS) list.lastElementChild.remove();
  $("alerts-count").textContent = `(${alertIds.size})`;
}

const HANDLERS = {
  cache_metrics: onCache,
  policy_decisions: onPolicy,
  tool_executions: onTools,
  cost_update: onCost,
  health_status: onHealth,
  error_alert: onAlert,
  reset: () => {}, // the alert replay is gone: nothing to reload, the next tick has every figure
};

// -- the connection ------------------------------------------------------------------------------

const conn = { source: null, backoff: BACKOFF_MIN_MS, timer: null, lastMessage: 0, lastId: null };

function setState(state, detail = "") {
  const indicator = $("conn");
  indicator.dataset.state = state;
  $("conn-label").textContent = state;
  $("conn-detail").textContent = detail ? ` · ${detail}` : "";
}

function connect() {
  clearTimeout(conn.timer);
  // A new EventSource cannot send Last-Event-ID: the last id seen goes in the query instead, so
  // alerts raised while the page was away are replayed after its own reconnects too.
  const resume = conn.lastId ? `?lastEventId=${encodeURIComponent(conn.lastId)}` : "";
  const source = new EventSource(STREAM + resume);
  conn.source = source;
  conn.lastMessage = Date.now();
  source.onopen = () => {
    if (conn.source !== source) return;
    conn.backoff = BACKOFF_MIN_MS;
    conn.lastMessage = Date.now();
    setState("connected");
  };
  source.onerror = () => {
    if (conn.source !== source) return;
    if (source.readyState === EventSource.CLOSED) giveUp(source);
    else setState("disconnected", "reconnecting");
  };
  for (const [type, handle] of Object.entries(HANDLERS)) {
    source.addEventListener(type, (event) => {
      if (conn.source !== source) return;
      conn.lastMessage = Date.now();
      if (event.lastEventId) conn.lastId = event.lastEventId;
      if ($("conn").dataset.state !== "connected") setState("connected");
      const envelope = JSON.parse(event.data);
      handle(envelope.data || {}, type === "error_alert" ? envelope : seconds(envelope.timestamp), event.lastEventId);
      $("updated").textContent = `updated ${new Date(envelope.timestamp).toLocaleTimeString()}`;
    });
  }
}

function giveUp(source) {
  // The browser stopped retrying (an HTTP error such as a 503) or the stream went silent:
  // reconnect ourselves, with jittered exponential backoff.
  source.close();
  const delay = Math.round(conn.backoff * (0.75 + Math.random() * 0.5));
  conn.backoff = Math.min(conn.backoff * 2, BACKOFF_MAX_MS);
  setState("disconnected", `retrying in ${Math.ceil(delay / 1000)} s`);
  checkSession();
  conn.timer = setTimeout(() => {
    setState("reconnecting");
    connect();
  }, delay);
}

async function checkSession() {
  // A stream refused for an expired session would be retried forever: go to the key form instead.
  try {
    const response = await fetch(TEMPLATES, { credentials: "same-origin" });
    if (response.status === 401) window.location.assign(LOGIN);
  } catch {
    // the server is unreachable: the backoff keeps trying
  }
}

setInterval(() => {
  const source = conn.source;
  if (source && source.readyState === EventSource.OPEN && Date.now() - conn.lastMessage > SILENCE_MS) {
    giveUp(source);
  }
}, 2000);

// -- the query box -------------------------------------------------------------------------------

let queryChart = null;

async function loadTemplates() {
  const response = await fetch(TEMPLATES, { credentials: "same-origin" });
  if (!response.ok) return;
  const { templates } = await response.json();
  const picker = $("query-template");
  for (const template of templates) {
    const option = el("option", template.title || template.name);
    option.value = JSON.stringify(template.query, null, 2);
    option.title = template.description || "";
    picker.append(option);
  }
}

function showProblem(problem, status) {
  const box = $("query-error");
  clear(box);
  box.append(el("strong", `${problem.title || "Error"} (${problem.status || status})`));
  box.append(el("div", problem.detail || ""));
  for (const error of problem.errors || []) {
    const line = `${error.path || ""}: ${error.problem || ""}`;
    const allowed = error.allowed ? ` (allowed: ${error.allowed.join(", ")})` : "";
    box.append(el("div", line + allowed, "muted"));
  }
  box.hidden = false;
}

function showTable(rows) {
  const wrap = $("query-table");
  if (!rows.length) {
    wrap.append(el("p", "no rows", "muted"));
    return;
  }
  const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))];
  const table = el("table");
  const head = el("tr");
  for (const column of columns) head.append(el("th", column));
  const thead = el("thead");
  thead.append(head);
  table.append(thead);
  const body = el("tbody");
  for (const row of rows.slice(0, 200)) {
    const line = el("tr");
    for (const column of columns) {
      const v = row[column];
      line.append(el("td", v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : typeof v === "number" ? num(v, 3) : v));
    }
    body.append(line);
  }
  table.append(body);
  wrap.append(table);
  if (rows.length > 200) wrap.append(el("p", `first 200 of ${rows.length} rows`, "muted"));
}

function plotSeries(rows, groupBy) {
  // Buckets on x; one line per numeric output, or per group of the first numeric output.
  const skip = new Set(["bucket", ...groupBy]);
  const numeric = Object.keys(rows[0]).filter((k) => !skip.has(k) && typeof rows[0][k] === "number");
  if (!numeric.length) return false;
  const times = [...new Set(rows.map((r) => seconds(r.bucket)))].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const lines = new Map();
  for (const row of rows) {
    const keys = groupBy.length ? [`${groupBy.map((g) => row[g]).join(" / ")} ${numeric[0]}`] : numeric;
    keys.forEach((label, i) => {
      if (!lines.has(label)) lines.set(label, new Array(times.length).fill(null));
      lines.get(label)[index.get(seconds(row.bucket))] = row[groupBy.length ? numeric[0] : numeric[i]];
    });
  }
  const labels = [...lines.keys()].slice(0, COLORS.length);
  queryChart = new Chart($("query-chart"), labels, { height: 200, legend: labels.length > 1, points: true });
  queryChart.data = [times, ...labels.map((label) => lines.get(label))];
  queryChart.show();
  return labels;
}

async function runQuery(event) {
  event.preventDefault();
  const status = $("query-status");
  $("query-error").hidden = true;
  clear($("query-table"));
  if (queryChart) {
    queryChart.destroy();
    queryChart = null;
  }
  let query;
  try {
    query = JSON.parse($("query-text").value);
  } catch (error) {
    showProblem({ title: "Not JSON", detail: String(error.message || error) }, 0);
    return;
  }
  status.textContent = "running…";
  try {
    const response = await fetch(QUERY, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-M1-Dashboard": "1" },
      body: JSON.stringify(query),
    });
    const body = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
    if (!response.ok) {
      status.textContent = "";
      showProblem(body, response.status);
      return;
    }
    const rows = body.rows || [];
    // A series of at least two buckets is plotted; anything else is a table.
    const buckets = new Set(rows.map((row) => row.bucket)).size;
    const plotted = rows.length > 0 && "bucket" in rows[0] && buckets > 1 && plotSeries(rows, query.groupBy || []);
    if (!plotted) showTable(rows);
    const what = plotted ? ` · ${plotted.join(", ")} by ${query.interval || "bucket"}` : "";
    const trend = body.trend ? ` · trend ${body.trend.direction}` : "";
    status.textContent = `${rows.length} rows${what}${trend}`;
  } catch (error) {
    status.textContent = "";
    showProblem({ title: "No answer", detail: String(error) }, 0);
  }
}

// -- start -----------------------------------------------------------------------------------------

$("query-template").addEventListener("change", (event) => {
  if (event.target.value) $("query-text").value = event.target.value;
});
$("query-form").addEventListener("submit", runQuery);
$("logout").addEventListener("click", async () => {
  await fetch("/api/m1/session", { method: "DELETE", credentials: "same-origin" }).catch(() => {});
  window.location.assign(LOGIN);
});

makeCharts();
connect();
loadTemplates();
