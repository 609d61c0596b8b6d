// The clbench leaderboard page. Every string in the data comes from a submission and is
// untrusted, so the DOM is built only with createElement and textContent (never innerHTML).
"use strict";

const DATA = JSON.parse(document.getElementById("leaderboard-data").textContent);
const ENTRIES = DATA.entries;
// The ranking metric and every metric's direction come from the build (the metric table).
const RANK = DATA.metrics.find((m) => m.key === DATA.rank_by);

// Builds an element; string children become text nodes (append never parses HTML).
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

// value x factor with `decimals` decimals, as Python's format rounds it, so the page shows
// README.md's numbers. toFixed rounds the exact binary value too, except an exact tie, which
// it rounds away from zero and Python to even; a tie is v = odd / 2^(decimals + 1).
function fixed(value, factor, decimals) {
  const v = value * factor;
  const halves = v * 2 ** (decimals + 1); // exact: a power of two
  if (!Number.isInteger(halves) || halves % 2 === 0) return v.toFixed(decimals);
  const below = Math.floor(v * 10 ** decimals);
  return ((below % 2 === 0 ? below : below + 1) / 10 ** decimals).toFixed(decimals);
}

// The build names the unit of loss-based scores (bits/byte, ...); anything else is a fraction.
const isPercent = (unit) => !unit || unit === "%";
// A fraction in percent with one decimal; a loss in its own unit with three, as README.md.
const number = (value, unit) => (isPercent(unit) ? fixed(value, 100, 1) : fixed(value, 1, 3));

// Only http(s) URLs become links: a "javascript:" or "data:" URL stays inert text.
const isWebUrl = (url) => typeof url === "string" && /^https?:\/\//i.test(url);

function link(url, text) {
  if (!isWebUrl(url)) return el("span", { class: "url" }, String(url));
  return el("a", { href: url, rel: "noopener noreferrer" }, text ?? url);
}

// The automatic flags already name task-id use and extra memory; add badges only if missing.
function flagsOf(entry) {
  const flags = [...(entry.flags || [])];
  if (entry.uses_task_id && !flags.some((f) => f.includes("task id")))
    flags.push("uses the task id at inference");
  if (entry.extra_memory && !flags.some((f) => f.startsWith("extra memory")))
    flags.push(`extra memory: ${entry.extra_memory}`);
  return flags;
}

const badges = (entry) => flagsOf(entry).map((f) => el("span", { class: "badge", title: f }, f));

// The build computes the status; anything but "verified" shows as self-reported.
const isVerified = (entry) => entry.status === "verified";
const STATUS_TITLE = {
  true: "every cell recomputed from the submitted predictions and the data",
  false: "results as submitted: no predictions, or not checked against the data",
};

function statusBadge(entry) {
  const verified = isVerified(entry);
  return el("span", { class: `status ${verified ? "verified" : "self-reported"}`, title: STATUS_TITLE[verified] },
    verified ? "verified" : "self-reported");
}

// ---- columns and sorting ----------------------------------------------------------------

const mean = (entry, key) => entry.metrics[key]?.mean ?? null;

// The "#" column sorts by the default rank (best first); the shown rank is the position.
const byDefault = [...ENTRIES].sort((a, b) =>
  compareValues(mean(a, RANK.key), mean(b, RANK.key), "num", RANK.higher_is_better));
const defaultRank = new Map(byDefault.map((entry, i) => [entry.id, i + 1]));

// type: "num" or "text" (how to sort; num cells align right); firstDesc: the direction of the
// first click (best first for metrics).
const COLUMNS = [
  { key: "rank", label: "#", title: `rank by ${RANK.short}`, type: "num", value: (e) => defaultRank.get(e.id) },
  { key: "name", label: "Name", type: "text", value: (e) => e.name },
  { key: "model", label: "Model", type: "text", value: (e) => e.model },
  { key: "sequence", label: "Sequence", type: "text", value: (e) => e.sequence },
  ...DATA.metrics.map((m) => ({
    key: m.key,
    label: m.short,
    title: `${m.name} (${m.higher_is_better ? "higher" : "lower"} is better)`,
    type: "num",
    firstDesc: m.higher_is_better,
    value: (e) => mean(e, m.key),
  })),
  { key: "n", label: "n", title: "number of runs", type: "num", firstDesc: true, value: (e) => e.n },
  { key: "flags", label: "Flags", title: "number of flags", type: "num", align: "text",
    value: (e) => flagsOf(e).length },
];

// Nulls sort last in both directions; text compares case-insensitively.
function compareValues(x, y, type, desc) {
  if (x === null || x === undefined) return y === null || y === undefined ? 0 : 1;
  if (y === null || y === undefined) return -1;
  const order = type === "text" ? String(x).localeCompare(String(y), undefined, { sensitivity: "base" }) : x - y;
  return desc ? -order : order;
}

const state = { sort: RANK.key, desc: RANK.higher_is_better, sequence: "", family: "", model: "" };

// ---- the table --------------------------------------------------------------------------

// An entry's metrics are in its `unit`: percent, or a loss's unit when every task is scored by
// it (then they are computed on the negated losses, so each reads as it does in percent).
function metricCell(stat, unit) {
  if (!stat) return el("td", { class: "num na" }, "n/a");
  const std = stat.n > 1 && stat.std !== null ? el("span", { class: "std" }, ` ± ${number(stat.std, unit)}`) : null;
  const title = isPercent(unit) ? {} : { title: `${unit}, of the negated losses` };
  return el("td", { class: "num", ...title }, el("span", { class: "mean" }, number(stat.mean, unit)), std);
}

function row(entry, rank) {
  const name = el("button", { type: "button", class: "linklike" }, entry.name);
  name.addEventListener("click", () => { location.hash = `entry=${encodeURIComponent(entry.id)}`; });
  return el("tr", { "data-id": entry.id },
    el("td", { class: "num rank" }, String(rank)),
    el("td", { class: "name" }, name, statusBadge(entry)),
    el("td", { class: "ident" }, entry.model),
    el("td", { class: "ident" }, entry.sequence),
    ...DATA.metrics.map((m) => metricCell(entry.metrics[m.key], entry.unit)),
    el("td", { class: "num" }, String(entry.n)),
    el("td", { class: "flags" }, ...badges(entry)));
}

function matches(entry) {
  return (!state.sequence || entry.sequence === state.sequence)
    && (!state.family || (entry.families || []).includes(state.family))
    && (!state.model || entry.model === state.model);
}

function render() {
  const column = COLUMNS.find((c) => c.key === state.sort);
  const shown = ENTRIES.filter(matches)
    .sort((a, b) => compareValues(column.value(a), column.value(b), column.type, state.desc));
  document.querySelector("#leaderboard tbody").replaceChildren(...shown.map((e, i) => row(e, i + 1)));
  for (const th of document.querySelectorAll("#leaderboard th")) {
    if (th.dataset.key === state.sort) th.setAttribute("aria-sort", state.desc ? "descending" : "ascending");
    else th.removeAttribute("aria-sort");
  }
  document.getElementById("count").textContent = `${shown.length} of ${ENTRIES.length} entries`;
}

function buildHeader() {
  const cells = COLUMNS.map((column) => {
    const button = el("button", { type: "button", title: column.title ?? `sort by ${column.label}` }, column.label);
    button.addEventListener("click", () => {
      state.desc = state.sort === column.key ? !state.desc : Boolean(column.firstDesc);
      state.sort = column.key;
      render();
    });
    return el("th", { scope: "col", "data-key": column.key, class: column.align ?? column.type }, button);
  });
  document.querySelector("#leaderboard thead tr").replaceChildren(...cells);
}

function buildFilter(id, field, values) {
  const select = document.getElementById(id);
  const distinct = [...new Set(values)].sort((a, b) => String(a).localeCompare(String(b)));
  select.replaceChildren(el("option", { value: "" }, "all"), ...distinct.map((v) => el("option", { value: v }, v)));
  select.addEventListener("change", () => { state[field] = select.value; render(); });
}

// ---- the details view -------------------------------------------------------------------

const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];

// Linear interpolation between viridis stops: perceptually ordered and colour-blind safe.
function viridis(value) {
  const t = Math.min(1, Math.max(0, value)) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(t), VIRIDIS.length - 2);
  return VIRIDIS[i].map((c, k) => Math.round(c + (VIRIDIS[i + 1][k] - c) * (t - i)));
}

// WCAG relative luminance; above 0.179 dark text has the higher contrast, below it white.
function luminance(rgb) {
  const [r, g, b] = rgb.map((c) => c / 255).map((c) => (c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4));
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

// Where a score falls on the colour scale, 1 the brightest: a fraction as it is; a loss (lower is
// better) within the range of its column, lowest the brightest.
function shade(value, column, unit) {
  if (isPercent(unit)) return value;
  const known = column.filter((v) => v !== null);
  const [low, high] = [Math.min(...known), Math.max(...known)];
  return high > low ? (high - value) / (high - low) : 0.5;
}

function heatmap(matrix, taskUnits) {
  const units = matrix.tasks.map((_, j) => (taskUnits ? taskUnits[j] : "%"));
  const head = el("tr", {}, el("th", { scope: "col" }, "after \\ task"),
    ...matrix.tasks.map((task, j) => el("th", { scope: "col" }, isPercent(units[j]) ? task : `${task} (${units[j]})`)));
  const columns = matrix.tasks.map((_, j) => matrix.mean.map((values) => values[j]));
  const body = matrix.mean.map((values, r) => el("tr", {},
    el("th", { scope: "row" }, matrix.rows[r]),
    ...values.map((value, j) => {
      if (value === null) return el("td", { class: "na" }, "n/a");
      const [red, green, blue] = viridis(shade(value, columns[j], units[j]));
      const cell = el("td", {}, number(value, units[j]));
      cell.style.backgroundColor = `rgb(${red}, ${green}, ${blue})`;
      cell.style.color = luminance([red, green, blue]) > 0.179 ? "#111" : "#fff";
      return cell;
    })));
  return el("figure", {},
    el("figcaption", {}, `${matrix.sequence}: mean score over ${matrix.n} run${matrix.n === 1 ? "" : "s"}`
      + ` (${[...new Set(units)].map((u) => (isPercent(u) ? "%" : `${u}, lower is better`)).join("; ")})`),
    el("div", { class: "table-wrap" },
      el("table", { class: "heatmap" }, el("thead", {}, head), el("tbody", {}, ...body))));
}

// Flat objects become "key = value" lists; anything deeper is shown as JSON text.
function detailValue(value) {
  if (value === null || value === undefined) return "n/a";
  if (typeof value !== "object") return String(value);
  if (Array.isArray(value)) return value.map((v) => (typeof v === "object" ? JSON.stringify(v) : String(v))).join(", ");
  return el("ul", { class: "kv" }, ...Object.entries(value).map(([k, v]) =>
    el("li", {}, el("code", {}, k), " = ", typeof v === "object" && v !== null ? JSON.stringify(v) : String(v))));
}

const list = (values) => (values || []).join(", ") || "n/a";

function definitions(pairs) {
  return el("dl", {}, ...pairs.flatMap(([key, value]) => [el("dt", {}, key), el("dd", {}, detailValue(value))]));
}

function showDetails(entry) {
  const section = document.getElementById("details");
  const close = el("button", { type: "button", class: "close", "aria-label": "close details" }, "Close ×");
  close.addEventListener("click", () => { location.hash = ""; });
  const submission = "../" + entry.submission.split("/").map(encodeURIComponent).join("/");
  const flags = badges(entry);
  section.replaceChildren(
    el("div", { class: "details-head" }, el("h2", { id: "details-title", tabindex: "-1" }, entry.name), close),
    el("p", { class: "meta" }, `method ${entry.method} · model ${entry.model} · sequence ${entry.sequence}`),
    el("p", { class: "links" }, "Paper: ", entry.paper ? link(entry.paper) : "n/a",
      " · Code: ", entry.code ? link(entry.code) : "n/a",
      " · ", el("a", { href: submission }, "submission JSON")),
    el("p", { class: "flags" }, statusBadge(entry), ...flags),
    definitions([
      ["runs", `${entry.n} (seeds ${list(entry.seeds)}; orders ${list(entry.orders)})`],
      ["task families", (entry.families || []).join(", ")],
      ...DATA.metrics.map((m) => [`${m.short} (${m.name})`,
        metricCell(entry.metrics[m.key], entry.unit).textContent + (isPercent(entry.unit) ? "" : ` ${entry.unit}`)]),
      ...Object.entries(entry.details || {}),
    ]),
    ...(entry.matrices || []).map((matrix) => heatmap(matrix, entry.task_units)),
    el("p", { class: "note" }, "Rows: the model before training and after each task; columns: the task evaluated."));
  section.hidden = false;
  section.scrollIntoView({ block: "start" });
  section.querySelector("h2").focus({ preventScroll: true });
}

// The hash is the single source of truth, so deep links and the back button both work.
function route() {
  const match = /^#entry=(.*)$/.exec(location.hash);
  let id = null;
  try { id = match ? decodeURIComponent(match[1]) : null; } catch { id = null; }
  const entry = ENTRIES.find((e) => e.id === id);
  if (entry) showDetails(entry);
  else document.getElementById("details").hidden = true;
}

// ---- start ------------------------------------------------------------------------------

document.title = DATA.title;
document.getElementById("title").textContent = DATA.title;
// Each term and its definition sit in a <div> (valid in a <dl>) so a pair never wraps apart.
document.getElementById("metric-legend").replaceChildren(...DATA.metrics.map((m) => el("div", {},
  el("dt", {}, m.short), el("dd", {}, `${m.name}${m.higher_is_better ? "" : " (lower is better)"}`))));
document.getElementById("version").textContent = DATA.clbench_version;
buildHeader();
buildFilter("filter-sequence", "sequence", ENTRIES.map((e) => e.sequence));
buildFilter("filter-family", "family", ENTRIES.flatMap((e) => e.families || []));
buildFilter("filter-model", "model", ENTRIES.map((e) => e.model));
render();
window.addEventListener("hashchange", route);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && !document.getElementById("details").hidden) location.hash = "";
});
route();
