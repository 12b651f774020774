// The amqlite dashboard: plain modules over RabbitMQ's management API, no
// build step. Credentials stay in sessionStorage and go with each request as
// HTTP Basic auth, as RabbitMQ's UI does. Every string from the API reaches
// the page through textContent, never as HTML.

const POLL_MS = 5000;
// Marks our requests as a script's, so a refused login comes back without
// the challenge that would open the browser's own password dialog.
const SCRIPT = { "X-Requested-With": "XMLHttpRequest" };
const main = document.getElementById("main");
const errorBox = document.getElementById("error");
let timer = null;
// The page the content on screen belongs to (its hash).
let shown = null;

function credentials() {
  return sessionStorage.getItem("amqlite-auth");
}

async function api(method, path, body, headers = {}) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: "Basic " + credentials(), "Content-Type": "application/json", ...SCRIPT, ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  // RabbitMQ answers 401 both to credentials that no longer log in and to
  // an action the user may not take: only the first ends the session.
  if (response.status === 401 && path !== "/api/whoami" && !(await loggedIn())) {
    sessionStorage.removeItem("amqlite-auth");
    location.hash = "#/login";
    throw new Error("Login failed");
  }
  const text = await response.text();
  if (!response.ok) {
    // RabbitMQ's {"error", "reason"}, or whatever text came back (a proxy's page, "Method Not Allowed").
    let data = null;
    try { data = JSON.parse(text); } catch { /* not JSON: show the text */ }
    throw new Error(data && data.reason ? `${data.error}: ${data.reason}` : `HTTP ${response.status} ${text}`.trim());
  }
  return text ? JSON.parse(text) : null;
}

async function loggedIn() {
  const response = await fetch("/api/whoami", { headers: { Authorization: "Basic " + credentials(), ...SCRIPT } });
  return response.ok;
}

// Counts with thousands separators, in the browser's language.
const fmt = (value) => typeof value === "number" ? value.toLocaleString() : value;

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    // Through the CSSOM: the Content-Security-Policy refuses style attributes.
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// Errors show at the top of the window (the box stays there as the page
// scrolls), and an action's also beside the action (see queuePage).
function showError(error) {
  errorBox.textContent = error ? String(error.message || error) : "";
  errorBox.hidden = !error;
}

const enc = encodeURIComponent;

// How each sortable table (by id) is sorted; kept here, so that the table
// a poll or the filter builds anew keeps the order the user chose.
const sorting = {};

// A table of rows; sortable by clicking a header (again: the other way).
function table(columns, rows, { id, sortable = false } = {}) {
  const state = sortable ? (sorting[id] ??= { key: null, ascending: true }) : { key: null, ascending: true };
  const body = el("tbody");
  const head = el("tr");
  const render = () => {
    const sorted = [...rows];
    if (state.key) {
      const key = state.key;
      sorted.sort((a, b) => {
        const x = a.values[key], y = b.values[key];
        const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
        return state.ascending ? order : -order;
      });
    }
    for (const th of head.children) {
      if (th.dataset.key === state.key) th.setAttribute("aria-sort", state.ascending ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    body.replaceChildren(...sorted.map((row) => el("tr", { "data-name": row.name ?? "" },
      ...columns.map((c) => el("td", typeof row.values[c.key] === "number" ? { class: "num" } : {},
        row.cells && row.cells[c.key] ? row.cells[c.key] : fmt(row.values[c.key] ?? ""))))));
  };
  for (const c of columns) {
    const attributes = sortable ? { "data-key": c.key } : {};
    const th = el("th", attributes, c.label);
    if (sortable) th.addEventListener("click", () => {
      state.ascending = state.key === c.key ? !state.ascending : true;
      state.key = c.key;
      render();
    });
    head.append(th);
  }
  render();
  return el("table", id ? { id } : {}, el("thead", {}, head), body);
}

// --- pages -------------------------------------------------------------

// Basic auth's user:password in base64, of its UTF-8 (btoa alone refuses
// anything beyond Latin-1).
function basic(user, password) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(`${user}:${password}`)));
}

// The login form; then the page asked for (a link to a queue from an alert
// lands on that queue), or the overview.
function loginPage(next) {
  document.getElementById("nav").hidden = true;
  const user = el("input", { id: "username", name: "username", autocomplete: "username" });
  const password = el("input", { id: "password", name: "password", type: "password", autocomplete: "current-password" });
  const message = el("p", { id: "login-message", role: "alert" });
  const form = el("form", { id: "login" },
    el("p", {}, el("label", {}, "Username ", user)),
    el("p", {}, el("label", {}, "Password ", password)),
    el("button", { type: "submit" }, "Log in"), message);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem("amqlite-auth", basic(user.value, password.value));
    const response = await fetch("/api/whoami", { headers: { Authorization: "Basic " + credentials(), ...SCRIPT } });
    if (response.ok) {
      document.getElementById("who").textContent = (await response.json()).name;
      if (location.hash === next) render();  // no hashchange to do it
      else location.hash = next;
    } else {
      sessionStorage.removeItem("amqlite-auth");
      const body = await response.json().catch(() => null);
      message.textContent = body && body.reason ? body.reason : "Login failed";
    }
  });
  main.replaceChildren(el("h1", {}, "Log in"), form);
}

// Samples of the overview for the rate chart: counters' deltas per second.
const history = [];
const SERIES = [
  ["publish", "published", "#1f77b4"], ["deliver_get", "delivered", "#2ca02c"],
  ["ack", "acked", "#ff7f0e"], ["dead_lettered", "dead-lettered", "#d62728"],
];

// Rates between consecutive samples, each at the time of the later one.
function rates() {
  const points = [];
  for (let i = 1; i < history.length; i++) {
    const [t0, a] = history[i - 1], [t1, b] = history[i];
    const seconds = Math.max((t1 - t0) / 1000, 0.001);
    points.push({ time: t1, ...Object.fromEntries(SERIES.map(([key]) =>
      [key, Math.max(0, ((b[key] || 0) - (a[key] || 0)) / seconds)])) });
  }
  return points;
}

const clock = (time) => new Date(time).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

// The lines over a time axis: x is each sample's time, labelled below the
// chart at its start, middle and end (the axis element).
function drawChart(canvas, axis) {
  const ctx = canvas.getContext("2d");
  const points = rates();
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const top = Math.max(1, ...points.flatMap((p) => SERIES.map(([key]) => p[key])));
  const first = points.length ? points[0].time : Date.now(), last = points.length ? points.at(-1).time : first;
  const span = Math.max(1, last - first);
  const xOf = (time) => ((time - first) / span) * (canvas.width - 10) + 5;
  ctx.strokeStyle = "#eee";
  for (const time of [first, first + span / 2, last]) {
    ctx.beginPath();
    ctx.moveTo(xOf(time), 0);
    ctx.lineTo(xOf(time), canvas.height);
    ctx.stroke();
  }
  for (const [key, , colour] of SERIES) {
    ctx.strokeStyle = colour;
    ctx.beginPath();
    points.forEach((p, i) => {
      const y = canvas.height - 5 - (p[key] / top) * (canvas.height - 20);
      i ? ctx.lineTo(xOf(p.time), y) : ctx.moveTo(xOf(p.time), y);
    });
    ctx.stroke();
  }
  ctx.fillStyle = "#555";
  ctx.fillText(`${top.toFixed(1)} msg/s`, 8, 12);
  axis.replaceChildren(...(points.length ? [first, first + span / 2, last] : []).map((t) => el("span", {}, clock(t))));
}

async function overviewPage() {
  const data = await api("GET", "/api/overview");
  const stats = data.message_stats || {};
  history.push([Date.now(), stats]);
  if (history.length > 60) history.shift();
  const totals = data.queue_totals, objects = data.object_totals;
  const box = (label, value, id) => el("div", {}, label, el("b", { id }, fmt(value)));
  const canvas = el("canvas", { id: "rates", width: 640, height: 200 });
  const axis = el("div", { id: "rates-axis", class: "axis" });
  const last = rates().at(-1) || {};
  main.replaceChildren(
    el("h1", {}, "Overview"),
    el("p", {}, `${data.product_name} ${data.product_version}`),
    el("div", { class: "totals" },
      box("Messages", totals.messages, "total-messages"), box("Ready", totals.messages_ready, "total-ready"),
      box("Unacked", totals.messages_unacknowledged, "total-unacked"), box("Queues", objects.queues, "total-queues"),
      box("Connections", objects.connections, "total-connections"), box("Consumers", objects.consumers, "total-consumers")),
    el("h2", {}, "Message rates"),
    el("p", { class: "legend" }, ...SERIES.map(([key, label, colour]) =>
      el("span", { style: `color:${colour}` }, `${label} ${(last[key] || 0).toFixed(1)}/s`))),
    canvas, axis);
  drawChart(canvas, axis);
}

// An unacked delivery out this long is highlighted: a task that may be
// stuck, or one that a consumer timeout would end (docs/concepts.md).
const LATE_SECONDS = 300;

// How long the oldest unacked delivery has been out; "" when none is.
function ageCell(seconds) {
  if (seconds === null || seconds === undefined) return el("span", {}, "");
  const text = seconds < 120 ? `${seconds.toFixed(1)} s` : seconds < 7200 ? `${(seconds / 60).toFixed(1)} min`
    : `${(seconds / 3600).toFixed(1)} h`;
  return el("span", seconds >= LATE_SECONDS ? { class: "late", title: `out for over ${LATE_SECONDS / 60} minutes` } : {}, text);
}

function queueRow(q) {
  const link = el("a", { href: `#/queue/${enc(q.vhost)}/${enc(q.name)}` }, q.name);
  return {
    name: q.name,
    values: { vhost: q.vhost, name: q.name, messages: q.messages, ready: q.messages_ready,
              unacked: q.messages_unacknowledged, paged: q.messages_paged ?? 0, consumers: q.consumers,
              oldest: q.oldest_unacked_seconds ?? -1 },
    cells: { name: link, oldest: ageCell(q.oldest_unacked_seconds) },
  };
}

let queueFilter = "";

async function queuesPage() {
  const queues = await api("GET", "/api/queues");
  const existing = document.getElementById("queues-holder");
  if (existing) {  // a refresh: keep the filter box (and its focus) as it is
    existing.replaceChildren(queuesTable(queues));
    return;
  }
  const filter = el("input", { id: "filter", placeholder: "Filter by name", value: queueFilter });
  const holder = el("div", { id: "queues-holder" }, queuesTable(queues));
  filter.addEventListener("input", () => {
    queueFilter = filter.value;
    holder.replaceChildren(queuesTable(lastQueues));
  });
  main.replaceChildren(el("h1", {}, "Queues"), filter, holder);
}

let lastQueues = [];

function queuesTable(queues) {
  lastQueues = queues;
  const columns = [
    { key: "vhost", label: "Vhost" }, { key: "name", label: "Name" }, { key: "messages", label: "Messages" },
    { key: "ready", label: "Ready" }, { key: "unacked", label: "Unacked" }, { key: "paged", label: "Paged" },
    { key: "consumers", label: "Consumers" }, { key: "oldest", label: "Oldest unacked" },
  ];
  return table(columns, queues.filter((q) => q.name.toLowerCase().includes(queueFilter.toLowerCase())).map(queueRow), { id: "queues", sortable: true });
}

function xDeath(message) {
  const list = message.properties && message.properties.headers && message.properties.headers["x-death"];
  return Array.isArray(list) ? list : [];
}

function deaths(message) {
  const list = xDeath(message);
  if (!list.length) return "";
  return table([{ key: "reason", label: "Reason" }, { key: "queue", label: "Queue" }, { key: "count", label: "Count" }],
    list.map((d) => ({ values: { reason: d.reason, queue: d.queue, count: d.count } })));
}

// Whether a queue looks like a dead-letter queue: named as one, or where a
// queue of its vhost dead-letters to (by routing key, or through an exchange
// it is bound to). Messages with x-death tell the rest (see queuePage).
function deadLetterQueue(name, bindings, neighbours) {
  if (/dlq|dead/i.test(name)) return true;
  const sources = new Set(bindings.map((b) => b.source));
  return neighbours.some(({ arguments: a = {} }) =>
    a["x-dead-letter-routing-key"] === name || (a["x-dead-letter-exchange"] && sources.has(a["x-dead-letter-exchange"])));
}

// A stream's offsets and size, and where each consumer group is (docs/streams.md).
function streamSection(queue) {
  const stream = queue.stream;
  if (!stream) return [];
  const last = stream.last_offset ?? "-";  // fmt leaves the dash as it is
  return [
    el("p", { id: "stream-offsets" },
      `offsets ${fmt(stream.first_offset)} to ${fmt(last)}; ${fmt(stream.bytes)} bytes in ${fmt(stream.segments)} segment(s)`),
    el("h2", {}, "Consumer groups"),
    table([{ key: "group", label: "Group" }, { key: "committed", label: "Committed offset" }, { key: "lag", label: "Lag" },
      { key: "active", label: "Active consumer" }],
      stream.groups.map((g) => ({ values: { group: g.group, committed: g.committed_offset, lag: g.lag,
        active: g.active_consumer ? g.active_consumer.consumer_tag : "" } })), { id: "stream-groups" }),
  ];
}

// --- the dead-letter workbench on a queue's page (docs/management.md) ---

const BROWSE_PAGE = 20;

// The filter fields of the browse form, as the API's filter object.
function workbenchFilter(fields) {
  const filter = {};
  if (fields.reason.value) filter.reason = fields.reason.value;
  if (fields.diedIn.value) filter.queue = fields.diedIn.value;
  if (fields.routingKey.value) filter.routing_key = fields.routingKey.value;
  if (fields.minDeaths.value) filter.min_deaths = Number(fields.minDeaths.value);
  const header = fields.header.value;
  if (header) {
    const at = header.indexOf("=");
    if (at < 1) throw new Error("header filter: NAME=VALUE");
    filter.headers = { [header.slice(0, at)]: header.slice(at + 1) };
  }
  return filter;
}

// A filter object as a browse's query parameters.
function filterQuery(filter) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(filter)) {
    if (key === "headers") for (const [name, v] of Object.entries(value)) query.set(`header.${name}`, v);
    else query.set(key, value);
  }
  return query;
}

// One browsed message's deaths, newest first: "rejected in work ×2".
function deathSummary(message) {
  return (message.x_death || []).map((d) => `${d.reason} in ${d.queue} ×${d.count}`).join("; ");
}

function headerSummary(message) {
  const headers = (message.properties && message.properties.headers) || {};
  // x-death has a column; its x-first-death-* and x-last-death-* summaries would only repeat it.
  return Object.entries(headers).filter(([name]) => !/^x-(death$|first-death-|last-death-)/.test(name))
    .map(([name, value]) => `${name}=${typeof value === "object" ? JSON.stringify(value) : value}`).join(" ");
}

function browseTable(messages) {
  const columns = [{ key: "position", label: "Position" }, { key: "routing_key", label: "Routing key" },
    { key: "headers", label: "Headers" }, { key: "deaths", label: "x-death" }, { key: "payload", label: "Body" }];
  return table(columns, messages.map((m) => ({ values: {
    position: m.position, routing_key: m.routing_key ?? "", headers: headerSummary(m), deaths: deathSummary(m),
    payload: m.error ?? (m.payload_encoding === "base64" ? `(base64) ${m.payload}` : m.payload)
      + (m.payload_bytes > 1024 ? " …" : "") } })), { id: "browse" });
}

async function queuePage(vhost, name) {
  const path = `/api/queues/${enc(vhost)}/${enc(name)}`;
  const [queue, bindings, consumers, neighbours] = await Promise.all([
    api("GET", path), api("GET", `${path}/bindings`), api("GET", `/api/consumers/${enc(vhost)}`),
    api("GET", `/api/queues/${enc(vhost)}`)]);
  const output = el("div", { id: "queue-output" });
  const totals = el("div", { class: "totals" });
  const showCounts = (q) => totals.replaceChildren(
    el("div", {}, "Messages", el("b", { id: "queue-messages" }, fmt(q.messages))),
    el("div", {}, "Ready", el("b", {}, fmt(q.messages_ready))),
    el("div", {}, "Unacked", el("b", {}, fmt(q.messages_unacknowledged))),
    el("div", {}, "Paged", el("b", {}, fmt(q.messages_paged ?? 0))),
    el("div", {}, "Consumers", el("b", {}, fmt(q.consumers))),
    el("div", {}, "Oldest unacked", el("b", { id: "queue-oldest-unacked" }, ageCell(q.oldest_unacked_seconds))),
    ...(q.message_groups ? [
      el("div", {}, "Message groups", el("b", { id: "queue-groups" }, fmt(q.message_groups.groups))),
      el("div", {}, "Groups in backoff", el("b", { id: "queue-groups-backoff" }, fmt(q.message_groups.in_backoff))),
      el("div", {}, "Oldest group", el("b", { id: "queue-oldest-group" }, ageCell(q.message_groups.oldest_group_seconds))),
    ] : []));
  // After an action, the counts it changed; the forms and the output stay as they are.
  const refreshCounts = async () => showCounts(await api("GET", path));
  showCounts(queue);
  // An action's error shows beside the forms, where the user just clicked, and at the top.
  const actionError = el("p", { id: "action-error", class: "error", role: "alert", hidden: "" });
  const act = (fn) => async (event) => {
    event.preventDefault();
    try {
      showError(null);
      actionError.hidden = true;
      await fn();
    } catch (error) {
      showError(error);
      actionError.textContent = String(error.message || error);
      actionError.hidden = false;
    }
  };
  const count = el("input", { id: "get-count", type: "number", value: 5, min: 1, style: "width:5em" });
  const ackmode = el("select", { id: "get-ackmode" },
    ...["ack_requeue_true", "ack_requeue_false", "reject_requeue_true", "reject_requeue_false"].map((m) => el("option", { value: m }, m)));
  const payload = el("input", { id: "publish-payload", placeholder: "payload" });
  const redriveTo = el("input", { id: "redrive-to", placeholder: "to (default: where each died)" });
  const getMessages = act(async () => {
    const messages = await api("POST", `${path}/get`,
      { count: Number(count.value), ackmode: ackmode.value, encoding: "auto", truncate: 50000 });
    output.replaceChildren(el("h2", {}, `${messages.length} message(s)`), ...messages.map((m, i) => el("div", { class: "message" },
      el("h3", {}, `Message ${i + 1}${m.redelivered ? " (redelivered)" : ""}`),
      el("p", {}, `exchange ${m.exchange || "(default)"}, routing key ${m.routing_key}`),
      el("pre", {}, m.payload), deaths(m))));
    if (messages.some((m) => xDeath(m).length)) redriveForm.hidden = false;
    await refreshCounts();
  });
  const publish = act(async () => {
    const result = await api("POST", `/api/exchanges/${enc(vhost)}/amq.default/publish`,
      { properties: {}, routing_key: name, payload: payload.value, payload_encoding: "string" });
    output.replaceChildren(el("p", { id: "publish-result" }, result.routed ? "Published." : "Not routed."));
    await refreshCounts();
  });
  // Browse: the ready messages a page at a time, changing nothing in the queue.
  const fields = {
    reason: el("select", { id: "filter-reason" }, el("option", { value: "" }, "any reason"),
      ...["rejected", "expired", "maxlen", "delivery_limit"].map((r) => el("option", { value: r }, r))),
    diedIn: el("input", { id: "filter-died-in", placeholder: "died in queue" }),
    header: el("input", { id: "filter-header", placeholder: "header=value" }),
    routingKey: el("input", { id: "filter-routing-key", placeholder: "routing key" }),
    minDeaths: el("input", { id: "filter-min-deaths", type: "number", min: 0, placeholder: "min deaths", style: "width:7em" }),
  };
  const browseOutput = el("div", { id: "browse-output" });
  let offsets = [0];  // where each page shown so far began: Previous goes back one
  const showBrowse = async (offset) => {
    const query = filterQuery(workbenchFilter(fields));
    query.set("offset", offset);
    query.set("limit", BROWSE_PAGE);
    const page = await api("GET", `${path}/messages?${query}`);
    const first = page.messages.length ? page.messages[0].position + 1 : 0;
    const last = page.messages.length ? page.messages[page.messages.length - 1].position + 1 : 0;
    const previous = el("button", { id: "browse-previous", type: "button" }, "Previous");
    const next = el("button", { id: "browse-next", type: "button" }, "Next");
    previous.disabled = offsets.length < 2;
    next.disabled = page.next === null;
    previous.addEventListener("click", act(async () => { offsets.pop(); await showBrowse(offsets[offsets.length - 1]); }));
    next.addEventListener("click", act(async () => { offsets.push(page.next); await showBrowse(page.next); }));
    browseOutput.replaceChildren(
      el("p", { id: "browse-summary" }, page.messages.length
        ? `Positions ${fmt(first)} to ${fmt(last)} of ${fmt(page.messages_ready)} ready`
        : `No messages shown of ${fmt(page.messages_ready)} ready`),
      browseTable(page.messages), el("div", { class: "inline" }, previous, next));
  };
  const browse = act(async () => { offsets = [0]; await showBrowse(0); });
  // A redrive is a job: started here, then its progress polled until it ends.
  const redriveRate = el("input", { id: "redrive-rate", type: "number", min: 0, step: "any",
                                    placeholder: "messages/s (default: all at once)", style: "width:16em" });
  const redriveBody = (dryRun) => {
    const body = { filter: workbenchFilter(fields), dry_run: dryRun };
    if (redriveTo.value) body.to = redriveTo.value;
    if (redriveRate.value && !dryRun) body.rate = Number(redriveRate.value);
    return body;
  };
  const redrive = act(async () => {
    let job = await api("POST", `${path}/redrives`, redriveBody(false));
    const progress = el("p", { id: "redrive-result" });
    output.replaceChildren(progress);
    for (;;) {
      progress.textContent = job.state === "running"
        ? `Redrive ${job.id}: moved ${fmt(job.done)} of ${fmt(job.matched)} matched so far…`
        : `Moved ${fmt(job.done)} message(s).` + (job.skipped ? ` ${fmt(job.skipped)} left in place (nowhere to go).` : "")
          + (job.state !== "done" ? ` Redrive ${job.state}${job.error ? ": " + job.error : ""}.` : "");
      if (job.state !== "running" || !document.body.contains(progress)) break;
      await showJobs();
      await new Promise((resolve) => setTimeout(resolve, 500));
      job = await api("GET", `/api/redrives/${enc(vhost)}/${job.id}`);
    }
    await refreshCounts();
    await showJobs();
    await showBrowse(0);
  });
  // This queue's redrive jobs, running and lately finished (a job outlives the page that started it).
  const jobsSection = el("div", { id: "redrive-jobs" });
  const showJobs = async () => {
    const jobs = (await api("GET", `/api/redrives/${enc(vhost)}`)).filter((j) => j.queue === name && j.action !== "count");
    jobsSection.replaceChildren(...(jobs.length ? [el("h2", {}, "Redrive jobs"),
      table([{ key: "id", label: "Id" }, { key: "action", label: "Action" }, { key: "state", label: "State" },
             { key: "matched", label: "Matched" }, { key: "done", label: "Done" }, { key: "skipped", label: "Skipped" },
             { key: "to", label: "To" }, { key: "rate", label: "Rate/s" }, { key: "filter", label: "Filter" },
             { key: "user", label: "User" }],
        jobs.map((j) => ({ values: { id: j.id, action: j.action, state: j.state, matched: j.matched, done: j.done,
          skipped: j.skipped, to: j.to ?? "where each died", rate: j.rate ?? "", filter: JSON.stringify(j.filter),
          user: j.user } })), { id: "redrive-jobs-table" })] : []));
  };
  const dryRun = act(async () => {
    const job = await api("POST", `${path}/redrives`, redriveBody(true));
    output.replaceChildren(el("p", { id: "redrive-result" }, `${fmt(job.matched)} message(s) would move.`));
  });
  const deleteMatching = act(async () => {
    const filter = workbenchFilter(fields);
    if (!confirm(Object.keys(filter).length ? `Delete the messages of ${name} that match?` : `Delete every ready message of ${name}?`)) return;
    const result = await api("POST", `${path}/messages/delete`, { filter });
    output.replaceChildren(el("p", { id: "delete-result" }, `Deleted ${fmt(result.deleted)} message(s).`));
    await refreshCounts();
    await showJobs();
    await showBrowse(0);
  });
  const purge = act(async () => {
    if (!confirm(`Purge ${name}?`)) return;
    await api("DELETE", `${path}/contents`);
    output.replaceChildren(el("p", {}, "Purged."));
    await refreshCounts();
  });
  const remove = act(async () => {
    if (!confirm(`Delete ${name}?`)) return;
    await api("DELETE", path);
    location.hash = "#/queues";
  });
  // Redrive is for dead letters: shown where they are, so that no one moves a work queue by mistake.
  const redriveForm = el("form", { class: "inline", onsubmit: redrive }, redriveTo, redriveRate,
    el("button", { id: "redrive" }, "Redrive"), el("button", { id: "redrive-dry", type: "button", onclick: dryRun }, "Dry run"));
  redriveForm.hidden = !deadLetterQueue(name, bindings, neighbours);
  const mine = consumers.filter((c) => c.queue.name === name);
  // A queue that retries with backoff lists what waits out its delay (scheduled messages too).
  const retries = (queue.arguments || {})["x-delayed-retry-min"] !== undefined
    ? scheduledSection(path, act, "retries") : null;
  // A stream is read by consumers from an offset: RabbitMQ refuses basic.get and purge on one.
  const stream = queue.type === "stream";
  main.replaceChildren(
    el("h1", {}, `${stream ? "Stream" : "Queue"} ${name}`),
    el("p", {}, `vhost ${vhost}; ${queue.durable ? "durable" : "transient"}; arguments ${JSON.stringify(queue.arguments)}`),
    totals,
    ...streamSection(queue),
    ...(stream ? [] : [el("form", { class: "inline", onsubmit: getMessages }, "Get", count, ackmode,
                          el("button", { id: "get" }, "Get messages"))]),
    el("form", { class: "inline", onsubmit: publish }, payload, el("button", { id: "publish" }, "Publish")),
    redriveForm,
    el("form", { class: "inline" }, ...(stream ? [] : [el("button", { id: "purge", onclick: purge }, "Purge")]),
      el("button", { id: "delete", onclick: remove }, "Delete")),
    actionError,
    output,
    ...(stream ? [] : [el("h2", {}, "Messages"),
      el("form", { class: "inline", id: "browse-form", onsubmit: browse }, fields.reason, fields.diedIn, fields.header,
        fields.routingKey, fields.minDeaths, el("button", { id: "browse-button" }, "Browse"),
        el("button", { id: "delete-matching", type: "button", onclick: deleteMatching }, "Delete matching")),
      browseOutput, jobsSection]),
    ...(retries ? [el("h2", {}, "Retries waiting out their delay"),
      el("p", {}, "Cancel dead-letters the message, as a reject without requeue would."), retries.output] : []),
    el("h2", {}, "Bindings"),
    table([{ key: "source", label: "From" }, { key: "routing_key", label: "Routing key" }],
      bindings.map((b) => ({ values: { source: b.source || "(default)", routing_key: b.routing_key } }))),
    el("h2", {}, "Consumers"),
    table([{ key: "tag", label: "Tag" }, { key: "channel", label: "Channel" }, { key: "ack", label: "Ack required" },
           { key: "prefetch", label: "Prefetch" }, { key: "unacked", label: "Unacked" },
           { key: "oldest", label: "Oldest unacked" }],
      mine.map((c) => ({ values: { tag: c.consumer_tag, channel: c.channel_details.name, ack: String(c.ack_required),
                                   prefetch: c.prefetch_count, unacked: c.messages_unacknowledged ?? 0 },
                         cells: { oldest: ageCell(c.oldest_unacked_seconds) } })), { id: "queue-consumers" }));
  if (!stream) await Promise.all([showBrowse(0), showJobs(), ...(retries ? [retries.show()] : [])]);
}

async function exchangesPage() {
  const exchanges = await api("GET", "/api/exchanges");
  main.replaceChildren(el("h1", {}, "Exchanges"), table(
    [{ key: "vhost", label: "Vhost" }, { key: "name", label: "Name" }, { key: "type", label: "Type" },
     { key: "durable", label: "Durable" }],
    exchanges.map((x) => ({ name: x.name, values: { vhost: x.vhost, name: x.name || "(default)", type: x.type,
                                                    durable: String(x.durable) },
                            cells: { name: el("a", { href: `#/exchange/${enc(x.vhost)}/${enc(x.name || "amq.default")}` },
                                               x.name || "(default)") } })),
    { id: "exchanges", sortable: true }));
}

// Scheduled messages at `path` (a delayed exchange's held messages, or a
// queue's retries waiting out their delay), a page at a time, each with
// Fire now and Cancel; element ids start with `prefix`.
function scheduledSection(path, act, prefix) {
  const output = el("div", { id: `${prefix}-output` });
  let afters = ["0"];  // where each page shown so far began: Previous goes back one
  const show = async (after) => {
    const page = await api("GET", `${path}/scheduled?after=${enc(after)}&limit=${BROWSE_PAGE}`);
    const button = (label, method, suffix) => el("button", { type: "button", class: label.toLowerCase().replace(" ", "-"),
      onclick: act(async () => { await api(method, `${path}/scheduled/${suffix}`); await show(afters[afters.length - 1]); }) },
      label);
    const previous = el("button", { id: `${prefix}-previous`, type: "button" }, "Previous");
    const next = el("button", { id: `${prefix}-next`, type: "button" }, "Next");
    previous.disabled = afters.length < 2;
    next.disabled = page.next === null;
    previous.addEventListener("click", act(async () => { afters.pop(); await show(afters[afters.length - 1]); }));
    next.addEventListener("click", act(async () => { afters.push(page.next); await show(page.next); }));
    const retries = page.messages.some((m) => m.delivery_count !== undefined);
    output.replaceChildren(
      el("p", { id: `${prefix}-summary` }, `${fmt(page.held)} ${retries || prefix !== "scheduled" ? "waiting" : "held"}`),
      table([{ key: "id", label: "Id" }, { key: "due", label: "Due" }, { key: "routing_key", label: "Routing key" },
             ...(retries ? [{ key: "deliveries", label: "Deliveries" }] : []),
             { key: "headers", label: "Headers" }, { key: "payload", label: "Body" }, { key: "actions", label: "" }],
        page.messages.map((m) => ({ name: m.id ?? m.number, values: {
          id: m.id ?? `#${m.number}`, due: new Date(m.due * 1000).toISOString(), routing_key: m.routing_key ?? "",
          deliveries: m.delivery_count ?? "", headers: headerSummary(m),
          payload: m.error ?? (m.payload_encoding === "base64" ? `(base64) ${m.payload}` : m.payload) },
          cells: { actions: m.id === null ? "" : el("span", {}, button("Fire now", "POST", `${enc(m.id)}/fire`),
                                                   button("Cancel", "DELETE", enc(m.id))) } })),
        { id: prefix }),
      el("div", { class: "inline" }, previous, next));
  };
  return { output, show: async () => { afters = ["0"]; await show("0"); } };
}

// An exchange's page; a delayed exchange's lists the messages it holds.
async function exchangePage(vhost, name) {
  const path = `/api/exchanges/${enc(vhost)}/${enc(name)}`;
  const exchange = await api("GET", path);
  const heading = [el("h1", {}, `Exchange ${name}`),
    el("p", {}, `${exchange.type} in vhost ${vhost}, ${exchange.durable ? "durable" : "transient"}`)];
  if (exchange.type !== "x-delayed-message") {
    main.replaceChildren(...heading);
    return;
  }
  const actionError = el("p", { id: "action-error", class: "error", role: "alert", hidden: "" });
  const act = (fn) => async (event) => {
    event.preventDefault();
    try {
      actionError.hidden = true;
      await fn();
    } catch (error) {
      actionError.textContent = String(error.message || error);
      actionError.hidden = false;
    }
  };
  const scheduled = scheduledSection(path, act, "scheduled");
  main.replaceChildren(...heading, el("h2", {}, "Scheduled messages"), actionError, scheduled.output);
  await scheduled.show();
}

async function connectionsPage() {
  const connections = await api("GET", "/api/connections");
  const close = (name) => async () => {
    if (!confirm(`Close connection ${name}?`)) return;
    try {
      await api("DELETE", `/api/connections/${enc(name)}`, undefined, { "X-Reason": "Closed from the amqlite dashboard" });
      render();
    } catch (error) { showError(error); }
  };
  // The name a client gave its connection (user_provided_name) says whose it is better than its address.
  main.replaceChildren(el("h1", {}, "Connections"), table(
    [{ key: "client", label: "Client name" }, { key: "name", label: "Address" }, { key: "user", label: "User" },
     { key: "protocol", label: "Protocol" }, { key: "vhost", label: "Vhost" }, { key: "channels", label: "Channels" },
     { key: "close", label: "" }],
    connections.map((c) => ({ name: c.name, values: { client: c.user_provided_name ?? "", name: c.name, user: c.user,
                                                      protocol: c.protocol, vhost: c.vhost, channels: c.channels },
                              cells: { close: el("button", { class: "close", onclick: close(c.name) }, "Close") } })),
    { id: "connections" }));
}

async function channelsPage() {
  const channels = await api("GET", "/api/channels");
  main.replaceChildren(el("h1", {}, "Channels"), table(
    [{ key: "name", label: "Channel" }, { key: "user", label: "User" }, { key: "consumers", label: "Consumers" },
     { key: "unacked", label: "Unacked" }, { key: "prefetch", label: "Prefetch" }, { key: "confirm", label: "Confirm" }],
    channels.map((c) => ({ values: { name: c.name, user: c.user, consumers: c.consumer_count,
                                      unacked: c.messages_unacknowledged, prefetch: c.prefetch_count,
                                      confirm: String(c.confirm) } })),
    { id: "channels" }));
}

// --- routing -------------------------------------------------------------

async function render() {
  clearTimeout(timer);
  const [, page, ...rest] = location.hash.split("/");
  if (!credentials() || page === "login") {
    loginPage(page === "login" || !page ? "#/overview" : location.hash);
    return;
  }
  document.getElementById("nav").hidden = false;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.hash === `#/${page}`);
  const pages = { overview: overviewPage, queues: queuesPage, exchanges: exchangesPage,
                  connections: connectionsPage, channels: channelsPage };
  try {
    if (page === "queue") await queuePage(decodeURIComponent(rest[0]), decodeURIComponent(rest[1]));
    else if (page === "exchange") await exchangePage(decodeURIComponent(rest[0]), decodeURIComponent(rest[1]));
    else await (pages[page] || overviewPage)();
    shown = location.hash;
    showError(null);
  } catch (error) {
    // A page that could not load shows nothing of the page before it (a
    // missing queue must not show the last queue's heading and counts); a
    // list whose refresh failed keeps its last content under the error.
    if (shown !== location.hash) main.replaceChildren();
    showError(error);
  }
  // Lists refresh themselves; a queue or exchange page waits for the user (its forms keep their input).
  if (page !== "queue" && page !== "exchange" && page !== "login") timer = setTimeout(render, POLL_MS);
}

document.getElementById("logout").addEventListener("click", () => {
  sessionStorage.removeItem("amqlite-auth");
  location.hash = "#/login";
});
window.addEventListener("hashchange", render);
if (credentials()) {
  api("GET", "/api/whoami").then((me) => { document.getElementById("who").textContent = me.name; }).catch(() => {});
}
render();
