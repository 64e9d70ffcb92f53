// The admin console: plain ES modules and DOM APIs, no build step, no dependency.
// The key (the admin key or a managed key) lives in this tab's sessionStorage only and
// goes in the x-api-key header of each call, never in a URL. GET /me says whose key it
// is; the page shows each role what it may do. Everything from the API is rendered as text.
import { h, mount, insertAtCursor } from "/console/dom.js";

const KEY = "postback-admin-key";
// GET /me's answer for the key, kept beside it so a reload needs no extra call.
const ME = "postback-me";
const main = () => document.getElementById("main");
// The signed-in key, from GET /me: {id, name, role, publisher_id}.
let me = (() => { try { return JSON.parse(sessionStorage.getItem(ME) || "null"); } catch { return null; } })();
const isAdmin = () => me && me.role === "admin";
// What only admins get: write buttons, secrets, keys.
const adminOnly = (x) => (isAdmin() ? x : null);
const isPartner = () => me && me.role === "partner";
// What admins and partners (on their own postbacks) get: create, save, test, delete.
const writerOnly = (x) => (isAdmin() || isPartner() ? x : null);
// Macros the network keeps to itself: not offered to partners (the API refuses them).
const NETWORK_MACROS = ["revenue", "rejection_reason", "ip", "user_agent"];
const AUDIT_ACTIONS = [
  "postback.create", "postback.replace", "postback.delete", "postback.approve", "postback.reject",
  "postback.secret_read", "postback.secret_rotate", "postback.resume", "postback.test",
  "log.resend", "logs.replay", "key.create", "key.revoke",
];

export const MACROS = [
  "transaction_id", "external_transaction_id", "event_id", "type", "offer_id", "publisher_id",
  "status", "rejection_reason", "event_name", "payout", "revenue", "currency",
  "sub1", "sub2", "sub3", "sub4", "sub5", "sub6", "sub7", "sub8", "sub9", "sub10",
  "ip", "user_agent", "country", "timestamp", "unix_timestamp", "postback_id", "postback_name",
  "attempt", "delivery_id", "signature",
];
// Alert postbacks' own macros; their templates also take transaction_id (firing_failed),
// type, timestamp, unix_timestamp, postback_id, postback_name, attempt, delivery_id, not
// the event's values.
export const ALERT_MACROS = [
  "alert", "alert_message", "alert_postback_id", "alert_postback_name", "alert_url", "status_code", "error",
];
// The macros alert postbacks share with event postbacks: with ALERT_MACROS, all an alert
// postback's templates take.
export const ALERT_SHARED_MACROS = [
  "transaction_id", "type", "timestamp", "unix_timestamp", "postback_id", "postback_name", "attempt", "delivery_id", "signature",
];
// The macros only a postback's reversal request takes.
export const REVERSAL_MACROS = ["original_delivery_id", "original_fired_at"];
// Macro functions (`{payout|mul:0.8|round:2}`): what the picker inserts, and one line of
// help each (spec: Macro functions).
export const FUNCTIONS = [
  ["default:0", "the text after the colon when the value is empty"],
  ["lower", "lower case"],
  ["upper", "upper case"],
  ["trim", "without surrounding white space"],
  ["sha256", "SHA-256, lowercase hex (empty stays empty)"],
  ["md5", "MD5, lowercase hex (empty stays empty)"],
  ["map:approved=1,pending=2,rejected=3,*=0", "the value of the first equal key; * is the fallback"],
  ["date:%Y-%m-%d %H:%M:%S,UTC", "a time written with %Y %m %d %H %M %S %z %s %f, in UTC or an IANA zone"],
  ["mul:0.8", "times a decimal, exactly (not a number: empty)"],
  ["round:2", "rounded half away from zero to 0–8 places"],
  ["truncate:100", "at most N characters (1–10000)"],
  ["urlencode", "percent-encoded once more"],
  ["base64", "base64 of the text"],
];
const TYPES = ["impression", "click", "conversion", "event", "alert"];
const ALERT_KINDS = ["breaker_opened", "breaker_closed", "firing_failed", "approval_requested"];
const FIRE_ON = ["approved", "pending", "rejected", "all"];
const OPS = ["eq", "ne", "in", "not_in", "contains", "gt", "gte", "lt", "lte", "exists", "not_exists"];
const LOG_COLUMNS = [
  "postback_id", "postback_name", "transaction_id", "delivery_id", "event_id", "type", "offer_id", "publisher_id",
  "status_code", "outcome", "url", "error", "response_body", "test",
];

// ---------------------------------------------------------------- API
// A call answered 401 although the tab holds a key: the key no longer opens anything (it
// was revoked, or the server restarted with a new generated key). The sign-in comes back
// with one line saying so; what the page's form held is kept (in memory only) and put
// back once signed in, on the same page. The caller is left waiting for good, so it
// paints nothing over the sign-in. `signIn`: the sign-in's own check, which shows its
// own message.
// A call whose answer comes after the manager has moved to another page is left waiting
// the same way, so a slow page never paints over the one that replaced it. A 401 to a key
// the tab no longer holds (signed out, or in with another key, while it was under way)
// says nothing about the current key: it is left waiting too.
const KEY_STOPPED = "The key no longer works — sign in again.";
let draft = null;
let routeSeq = 0;
async function api(method, path, body, { signIn = false } = {}) {
  const seq = routeSeq;
  const sentKey = sessionStorage.getItem(KEY) || "";
  const headers = { "x-api-key": sentKey };
  if (body !== undefined) headers["content-type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    return { status: 0, ok: false, data: { error: { code: "network", message: String(e) } } };
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: { code: "not_json", message: text } }; }
  if (res.status === 401 && !signIn) return (sessionStorage.getItem(KEY) || "") === sentKey ? keyStopped() : new Promise(() => {});
  if (seq !== routeSeq) return new Promise(() => {});
  return { status: res.status, ok: res.ok, data };
}

function keyStopped() {
  // The first 401 of a burst (the list's 24 h counts ask four at a time) does it.
  if (sessionStorage.getItem(KEY)) {
    draft = { hash: location.hash, ...captureDraft() };
    forget();
    routeSeq += 1;
    loginPage(KEY_STOPPED);
  }
  return new Promise(() => {});
}

// What the page's form holds: the postback form as the body a save would send (its
// header and condition rows included), the log filters as typed, any other input by id.
function captureDraft() {
  const form = document.getElementById("postback-form");
  if (form) {
    try {
      return { postback: readForm(form), sample: document.getElementById("f-sample")?.value };
    } catch { return {}; }
  }
  if (document.getElementById("log-filters")) readLogForm();
  const fields = {};
  main().querySelectorAll("input[id], select[id], textarea[id]").forEach((el) => {
    fields[el.id] = el.type === "checkbox" ? el.checked : el.value;
  });
  return { fields };
}

function restoreFields(fields) {
  for (const [id, v] of Object.entries(fields)) {
    const el = document.getElementById(id);
    if (!el || !main().contains(el)) continue;
    if (el.type === "checkbox") el.checked = v; else el.value = v;
  }
}
const errorText = (r) => (r.data && r.data.error ? `${r.status} ${r.data.error.code}: ${r.data.error.message}` : `HTTP ${r.status}`);
const q = (params) => new URLSearchParams(params).toString();
const pretty = (v) => (typeof v === "string" ? v : JSON.stringify(v, null, 2));

// ---------------------------------------------------------------- times
// Every time is shown in the browser's zone, named in the header; the UTC value the API
// gave is the element's title (hover) and a line of its own on detail pages. The time
// filters take the same zone.
const ZONE = (() => { try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time"; } catch { return "local time"; } })();
const pad = (n, w = 2) => String(n).padStart(w, "0");
function zoneText(d = new Date()) {
  const m = -d.getTimezoneOffset();
  return `${ZONE} (UTC${m < 0 ? "-" : "+"}${pad(Math.floor(Math.abs(m) / 60))}:${pad(Math.abs(m) % 60)})`;
}
// `2026-12-01T10:33:44.043485654Z` → `2026-12-01 16:03:44` in Asia/Kolkata (`.043` with ms).
export function localTime(iso, ms = false) {
  if (typeof iso !== "string" || iso === "") return iso ?? "—";
  const d = new Date(iso.replace(/(\.\d{3})\d+/, "$1"));
  if (Number.isNaN(d.getTime())) return iso;
  const text = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return ms ? `${text}.${pad(d.getMilliseconds(), 3)}` : text;
}
const utcTitle = (iso) => (iso ? `UTC ${iso}` : null);
const when = (iso, ms = false) => (iso ? h("time", { datetime: iso, title: utcTitle(iso) }, localTime(iso, ms)) : "—");

// ---------------------------------------------------------------- tables
// A cell with its column's name, which the narrow layout shows beside the value once the
// table has become a stack of cards (and the header row is gone).
const td = (label, attrs, ...children) => h("td", { ...attrs, "data-label": label }, ...children);
const cardTable = (attrs, headers, rows) => h("table", { ...attrs, class: `cards ${attrs.class || ""}`.trim() },
  h("thead", {}, h("tr", {}, headers.map((c) => h("th", {}, c)))), h("tbody", {}, rows));

// A table wider than its box says so above it ("scroll sideways"), checked after every
// change of the page and on resize.
function paintScrollHints() {
  for (const box of main().querySelectorAll(".scroll")) {
    let hint = box.previousElementSibling;
    if (!hint || !hint.classList.contains("scroll-hint")) {
      hint = h("p", { class: "hint scroll-hint", role: "note" }, "Wider than the screen: scroll the table sideways for more columns →");
      box.before(hint);
    }
    const wide = box.scrollWidth > box.clientWidth + 1;
    if (hint.hidden === wide) hint.hidden = !wide;
  }
}
let hintsQueued = false;
function queueScrollHints() {
  if (hintsQueued) return;
  hintsQueued = true;
  requestAnimationFrame(() => { hintsQueued = false; paintScrollHints(); });
}

// ---------------------------------------------------------------- routing
window.addEventListener("hashchange", () => route());
window.addEventListener("resize", () => queueScrollHints());
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-out").addEventListener("click", () => {
    forget();
    draft = null;
    location.hash = "#/";
    route();
  });
  document.getElementById("zone").textContent = `Times in ${zoneText()}`;
  document.getElementById("zone").title = "Hover a time for its UTC value";
  new MutationObserver(queueScrollHints).observe(main(), { childList: true, subtree: true });
  route();
});

function forget() {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(ME);
  me = null;
}

async function route() {
  routeSeq += 1;
  const signedIn = Boolean(sessionStorage.getItem(KEY));
  document.getElementById("nav").hidden = !signedIn;
  if (!signedIn) return loginPage();
  if (!me) {
    const r = await api("GET", "/me");
    if (!r.ok) { forget(); return loginPage(); }
    me = r.data;
    sessionStorage.setItem(ME, JSON.stringify(me));
  }
  paintNav();
  const hash = location.hash.replace(/^#/, "") || "/postbacks";
  const parts = hash.split("/").filter(Boolean).map(decodeURIComponent);
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", hash.startsWith(a.getAttribute("href").slice(1))));
  await page(parts);
  // Back from a sign-in after a 401: what the form held (the postback form takes its own).
  const kept = draft;
  draft = null;
  if (kept && kept.hash === location.hash && kept.fields) restoreFields(kept.fields);
}

function page(parts) {
  if (parts[0] === "keys" && isAdmin()) return keysPage();
  if (parts[0] === "approvals" && isAdmin()) return approvalsPage();
  if (parts[0] === "audit" && me.role !== "partner") return auditPage();
  if (parts[0] === "logs" && parts[1]) return logDetailPage(parts[1]);
  if (parts[0] === "logs") return logsPage();
  if (parts[0] === "templates" && parts[1]) return templateFormPage(parts[1]);
  if (parts[0] === "templates") return templatesPage();
  if (parts[0] === "postbacks" && parts[1] === "new") return editPage(null);
  if (parts[0] === "postbacks" && parts[1]) return editPage(parts[1]);
  return postbacksPage();
}

// The navigation for the signed-in role: partners see their own postbacks and logs,
// admins and viewers the audit trail, admins the keys.
function paintNav() {
  document.getElementById("nav-postbacks").textContent = me.role === "partner" ? "My postbacks" : "Postbacks";
  document.getElementById("nav-logs").textContent = me.role === "partner" ? "My logs" : "Logs";
  document.getElementById("nav-keys").hidden = !isAdmin();
  document.getElementById("nav-approvals").hidden = !isAdmin();
  if (isAdmin()) api("GET", "/postbacks?approval=pending").then((r) => { if (r.ok) paintApprovalCount(r.data.items.length); });
  document.getElementById("nav-audit").hidden = me.role === "partner";
  document.getElementById("whoami").textContent = `${me.name} (${me.role}${me.publisher_id ? ` · publisher ${me.publisher_id}` : ""})`;
}

// ---------------------------------------------------------------- login
// `why`: one line above the form (the key stopped working). Signing in goes back to the
// page the manager was on.
function loginPage(why) {
  document.getElementById("nav").hidden = true;
  const key = h("input", { id: "admin-key", type: "password", autocomplete: "current-password", required: true });
  const err = h("p", { class: "error", id: "login-error", role: "alert" });
  const form = h("form", { class: "card narrow", id: "login" },
    h("h1", {}, "Sign in"),
    why ? h("p", { class: "error", id: "login-reason", role: "alert" }, why) : null,
    h("label", { for: "admin-key" }, "API key"),
    key, err,
    h("p", { class: "hint" }, "The admin key or a key an admin made for you. Kept in this tab only (session storage); closing the tab forgets it."),
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, key.value.trim());
    const r = await api("GET", "/me", undefined, { signIn: true });
    if (r.ok) {
      me = r.data;
      sessionStorage.setItem(ME, JSON.stringify(me));
      if (location.hash === "" || location.hash === "#/") location.hash = "#/postbacks"; else route();
    } else {
      forget();
      loginPage(why);
      document.getElementById("login-error").textContent = r.status === 401 ? "That key opens nothing: it is not the admin key or a valid key."
        : r.status === 403 ? "An ingest key cannot sign in: it only sends events." : errorText(r);
    }
  });
  mount(main(), form);
  key.focus();
}

// ---------------------------------------------------------------- postbacks list
const scopeText = (s) => (s === "all" || s === undefined ? "all" : s.join(", "));

async function postbacksPage() {
  mount(main(), h("p", {}, "Loading…"));
  const r = await api("GET", "/postbacks");
  if (!r.ok) return mount(main(), h("p", { class: "error" }, errorText(r)));
  const rows = r.data.items.map((p) => h("tr", {},
    td("Name", { class: "wrap" }, h("a", { href: `#/postbacks/${encodeURIComponent(p.id)}`, class: "pb-name" }, p.name)),
    td("Type", {}, p.type),
    // Alert postbacks fire for no offer: what they fire on is their scope.
    td("Scope", { class: "wrap" }, p.type === "alert" ? `alerts: ${(p.alerts || []).join(", ")}` : `offers: ${scopeText(p.offers)}; publishers: ${scopeText(p.publishers)}`),
    td("Enabled", { class: "pb-enabled" }, p.enabled ? "yes" : "no"),
    td("Breaker", { class: `pb-breaker ${p.health && p.health.state !== "closed" ? "bad" : ""}` }, breakerText(p.health)),
    td("Last 24 h", { class: "pb-24h", "data-id": p.id }, "…"),
    td("Version", { class: "mono" }, `v${p.version ?? 1}`),
    td("Approval", { class: `pb-approval ${approvalClass(p)}` }, approvalText(p))));
  mount(main(),
    h("div", { class: "bar" }, h("h1", {}, me.role === "partner" ? "My postbacks" : "Postbacks"), writerOnly(h("a", { class: "button", href: "#/postbacks/new", id: "new-postback" }, "New postback")), adminOnly(h("a", { class: "button secondary", href: "#/templates", id: "new-from-template" }, "New from a template"))),
    rows.length === 0 ? h("p", { id: "empty" }, "No postbacks yet.") :
      h("div", { class: "scroll" }, cardTable({ id: "postbacks" }, ["Name", "Type", "Scope", "Enabled", "Breaker", "Last 24 h", "Version", "Approval"], rows)));
  fillDayCounts(document.querySelectorAll("#postbacks .pb-24h"));
}

// A postback's review state in a few words: pending, rejected (with the reason), or a
// change waiting beside the approved version.
function approvalText(p) {
  const a = p.approval || { state: "approved" };
  if (p.pending_revision) return "approved · change pending";
  if (a.state === "rejected") return `rejected: ${a.reason || ""}`;
  if (a.state === "approved" && a.reason) return `approved · last change rejected: ${a.reason}`;
  return a.state;
}
const approvalClass = (p) => (p.approval && p.approval.state !== "approved") || p.pending_revision ? "bad" : "";

// A postback's breaker in a few words: its state, and what it holds when not closed.
function breakerText(health) {
  if (!health) return "—";
  if (health.state === "closed") return "closed";
  return `${health.state.replace("_", "-")} · ${health.held} held`;
}

// The last 24 hours' delivered / failed counts per postback, from GET /postbacks/{id}/stats,
// a few requests at a time so a long list does not flood the server.
async function fillDayCounts(cells) {
  const queue = Array.from(cells);
  const worker = async () => {
    for (let cell = queue.shift(); cell; cell = queue.shift()) {
      const r = await api("GET", `/postbacks/${encodeURIComponent(cell.dataset.id)}/stats?hours=24`);
      if (!r.ok) { cell.textContent = "—"; continue; }
      const sum = (k) => r.data.buckets.reduce((n, b) => n + (b[k] || 0), 0);
      const failed = sum("failed");
      mount(cell, h("span", { class: "ok" }, `${sum("delivered")} delivered`), " · ",
        h("span", { class: failed ? "bad" : "" }, `${failed} failed`));
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
}

// ---------------------------------------------------------------- create / edit
// Fields the network keeps to itself: not shown to partners (the API refuses them).
const PARTNER_HIDDEN = ["publishers", "delay_seconds", "rate_limit_per_second", "rejection_reasons", "alerts"];
// One line for the page after a create ("Created: version 1."), shown once.
let flash = null;
let lastTemplateField = null;
const templateField = (el) => { el.classList.add("template"); el.addEventListener("focus", () => { lastTemplateField = el; }); return el; };

function field(label, name, input, hint) {
  input.dataset.field = name;
  if (!input.id) input.id = `f-${name}`;
  return h("div", { class: "field", "data-for": name },
    h("label", { for: input.id }, label), input, hint ? h("small", { class: "hint" }, hint) : null,
    h("div", { class: "field-error", role: "alert" }));
}
const listText = (v) => (Array.isArray(v) ? v.join(", ") : "");
const splitList = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);

function headerRow(name = "", value = "") {
  const n = h("input", { class: "h-name", placeholder: "Header name", value: name, "aria-label": "Header name" });
  const v = templateField(h("input", { class: "h-value", placeholder: "Value (macros allowed)", value, "aria-label": "Header value" }));
  const row = h("div", { class: "row header-row" }, n, v,
    h("button", { type: "button", class: "link", onclick: () => row.remove() }, "Remove"),
    h("div", { class: "field-error", role: "alert" }));
  return row;
}

function conditionRow(c = {}) {
  const valueText = c.value === undefined ? "" : Array.isArray(c.value) ? c.value.join(", ") : String(c.value);
  const f = h("input", { class: "c-field", placeholder: "field, e.g. payout or params.goal", value: c.field || "", "aria-label": "Condition field" });
  const op = h("select", { class: "c-op", "aria-label": "Condition operator", value: c.op || "eq" }, OPS.map((o) => h("option", { value: o }, o)));
  const v = h("input", { class: "c-value", placeholder: "value (comma-separated for in / not_in)", value: valueText, "aria-label": "Condition value" });
  const row = h("div", { class: "row condition-row" }, f, op, v,
    h("button", { type: "button", class: "link", onclick: () => row.remove() }, "Remove"),
    h("div", { class: "field-error", role: "alert" }));
  return row;
}

// The macro picker offers what the chosen type's templates take (`pick.showFor`, called
// with the form's fields): an alert postback's macros, or the event macros with
// `{params.<key>}` (and the reversal request's own two where the type has one).
function macroPicker() {
  const key = h("input", { id: "macro-param", placeholder: "params key", "aria-label": "params key", size: 10 });
  const pick = h("select", { id: "macro-picker", "aria-label": "Insert a macro" });
  const options = (names) => names.map((m) => h("option", { value: m }, `{${m}}`));
  pick.showFor = (type, reversal) => {
    const groups = isPartner()
      ? [h("optgroup", { label: "Macros" }, options(MACROS.filter((m) => !NETWORK_MACROS.includes(m))))]
      : type === "alert"
        ? [h("optgroup", { label: "Alert postbacks" }, options([...ALERT_MACROS, ...ALERT_SHARED_MACROS]))]
        : [h("optgroup", { label: "Event postbacks" }, options(MACROS), h("option", { value: "params." }, "{params.<key>}")),
          reversal ? h("optgroup", { label: "Reversal request" }, options(REVERSAL_MACROS)) : null];
    pick.replaceChildren(h("option", { value: "" }, "Insert macro…"), ...groups.filter(Boolean));
    key.hidden = isPartner() || type === "alert";
  };
  pick.showFor("conversion", true);
  const note = h("small", { class: "hint", id: "macro-target" }, "Inserts at the cursor of the last URL, header value or body field you were in.");
  pick.addEventListener("change", () => {
    let name = pick.value;
    pick.value = "";
    if (!name) return;
    if (name === "params.") {
      const k = key.value.trim();
      if (!k) { note.textContent = "Type the params key first."; key.focus(); return; }
      name += k;
    }
    const target = lastTemplateField || document.getElementById("f-url");
    insertAtCursor(target, `{${name}}`);
  });
  const fn = h("select", { id: "function-picker", "aria-label": "Add a function to the macro" },
    h("option", { value: "" }, "Add function…"),
    FUNCTIONS.map(([text, help]) => h("option", { value: text, title: help }, `|${text} — ${help}`)));
  fn.addEventListener("change", () => {
    const text = fn.value;
    fn.value = "";
    if (!text) return;
    const target = lastTemplateField || document.getElementById("f-url");
    insertFunction(target, `|${text}`);
    note.textContent = `Added |${text}: ${FUNCTIONS.find(([t]) => t === text)[1]}. Edit its argument as needed.`;
  });
  return h("div", { class: "macro-picker row" }, pick, isPartner() ? null : key, fn, note);
}

// Put a function into the macro at the cursor: inside its braces, after what is there
// (`{payout}` + `|round:2` → `{payout|round:2}`). Right after a macro's `}` counts as in it.
export function insertFunction(target, text) {
  const v = target.value;
  let at = target.selectionStart ?? v.length;
  const open = v.lastIndexOf("{", at - 1);
  const close = v.indexOf("}", open);
  if (open >= 0 && close >= 0 && close >= at - 1 && /^[A-Za-z0-9_.]+(\|[^{}]*)?$/.test(v.slice(open + 1, close))) at = close;
  target.setSelectionRange(at, at);
  insertAtCursor(target, text);
}

// Which of the type-dependent fields apply to a postback of this type (and fire_on), as
// the API has it: alert postbacks fire on the manager's own alerts (no scope, delay or
// conditions); fire_on, rejection reasons and the reversal need a status; event names
// filter events. The form hides the others, says which, and sends none of them.
export function applicable(type, fireOn) {
  const tracked = type !== "alert";
  const status = type === "conversion" || type === "event";
  return {
    offers: tracked, publishers: tracked, fire_on: status,
    rejection_reasons: status && (fireOn === "rejected" || fireOn === "all"),
    event_names: type === "event", delay_seconds: tracked, alerts: type === "alert",
    reversal: status, conditions: tracked,
  };
}
const APPLICABLE_LABELS = {
  offers: "Offers", publishers: "Publishers", fire_on: "Fire on", rejection_reasons: "Rejection reasons",
  event_names: "Event names", delay_seconds: "Delay", alerts: "Alerts", reversal: "Reversal request", conditions: "Conditions",
};
// Why a field is hidden, for the line that lists them.
const NOT_APPLICABLE_WHY = {
  rejection_reasons: "with fire on rejected or all", event_names: "event postbacks", alerts: "alert postbacks",
  fire_on: "conversion and event postbacks", reversal: "conversion and event postbacks",
};

function readForm(form) {
  const val = (n) => form.querySelector(`[data-field="${n}"]`);
  const body = { name: val("name").value, type: val("type").value, enabled: val("enabled").checked, method: val("method").value, url: val("url").value };
  const fits = applicable(body.type, val("fire_on").value);
  for (const n of ["offers", "publishers"]) {
    if (!fits[n]) continue;
    const t = val(n).value.trim();
    body[n] = t === "" || t === "all" ? "all" : splitList(t);
  }
  if (fits.fire_on) body.fire_on = val("fire_on").value;
  if (fits.rejection_reasons) {
    const rr = splitList(val("rejection_reasons").value);
    if (rr.length) body.rejection_reasons = rr;
  }
  if (fits.event_names) {
    const en = splitList(val("event_names").value);
    if (en.length) body.event_names = en;
  }
  if (fits.alerts) {
    body.alerts = ALERT_KINDS.filter((k) => form.querySelector(`#f-alert-${k}`).checked);
  }
  if (fits.delay_seconds) {
    const delay = val("delay_seconds").value.trim();
    body.delay_seconds = delay === "" ? 0 : Number(delay);
  }
  const rate = val("rate_limit_per_second").value.trim();
  if (rate !== "") body.rate_limit_per_second = Number(rate);
  const headers = {};
  for (const row of form.querySelectorAll(".header-row")) {
    const n = row.querySelector(".h-name").value.trim();
    if (n) headers[n] = row.querySelector(".h-value").value;
  }
  if (Object.keys(headers).length) body.headers = headers;
  if (val("body").value !== "") body.body = val("body").value;
  if (val("content_type").value.trim() !== "") body.content_type = val("content_type").value.trim();
  const conditions = !fits.conditions ? [] : [...form.querySelectorAll(".condition-row")].map((row) => {
    const c = { field: row.querySelector(".c-field").value.trim(), op: row.querySelector(".c-op").value };
    const v = row.querySelector(".c-value").value;
    if (c.op === "in" || c.op === "not_in") c.value = splitList(v);
    else if (c.op !== "exists" && c.op !== "not_exists") c.value = v;
    return c;
  });
  if (conditions.length) body.conditions = conditions;
  const contains = val("success_rule.body_contains").value;
  const notContains = val("success_rule.body_not_contains").value;
  if (contains || notContains) {
    body.success_rule = { retry: val("success_rule.retry").checked };
    if (contains) body.success_rule.body_contains = contains;
    if (notContains) body.success_rule.body_not_contains = notContains;
  }
  const reversalUrl = val("reversal.url").value.trim();
  if (fits.reversal && reversalUrl !== "") {
    const r = { method: val("reversal.method").value, url: reversalUrl };
    const rh = {};
    for (const line of val("reversal.headers").value.split("\n")) {
      const at = line.indexOf(":");
      if (at > 0) rh[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    if (Object.keys(rh).length) r.headers = rh;
    if (val("reversal.body").value !== "") r.body = val("reversal.body").value;
    if (val("reversal.content_type").value.trim() !== "") r.content_type = val("reversal.content_type").value.trim();
    body.reversal = r;
  }
  body.signing = val("signing").value;
  if (val("signing_secret").value.trim() !== "") body.signing_secret = val("signing_secret").value.trim();
  // A postback made from a template keeps its reference (and its secret inputs, shown
  // as [REDACTED], are kept when the fields holding them come back unchanged).
  if (form.dataset.template) body.template = JSON.parse(form.dataset.template);
  return body;
}

// Number the condition rows and name the header rows so an error's `field`
// (`conditions[0].value`, `headers.X`) finds its input.
function tagRows(form) {
  form.querySelectorAll(".condition-row").forEach((row, i) => {
    row.dataset.field = `conditions[${i}]`;
    row.querySelector(".c-field").dataset.field = `conditions[${i}].field`;
    row.querySelector(".c-op").dataset.field = `conditions[${i}].op`;
    row.querySelector(".c-value").dataset.field = `conditions[${i}].value`;
  });
  form.querySelectorAll(".header-row").forEach((row) => {
    const n = row.querySelector(".h-name").value.trim();
    row.querySelector(".h-value").dataset.field = `headers.${n}`;
  });
}

function clearErrors(form) {
  form.querySelectorAll(".field-error").forEach((e) => { e.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
  form.querySelector("#form-error").textContent = "";
}

// Show the API's 400 beside the field it names: the input itself, else its nearest
// named ancestor (`conditions[0]`, `success_rule`), else at the top of the form.
export function showFieldError(form, error) {
  let name = error.field || "";
  while (name) {
    const el = [...form.querySelectorAll("[data-field]")].find((x) => x.dataset.field === name);
    if (el) {
      el.setAttribute("aria-invalid", "true");
      const box = el.closest(".field, .row").querySelector(".field-error");
      box.textContent = error.message;
      el.focus();
      return;
    }
    const cut = Math.max(name.lastIndexOf("."), name.lastIndexOf("["));
    name = cut > 0 ? name.slice(0, cut) : "";
  }
  form.querySelector("#form-error").textContent = `${error.field ? error.field + ": " : ""}${error.message}`;
}

function requestView(req) {
  return h("div", { class: "request" },
    h("h3", {}, "Request"),
    h("pre", { class: "req-line" }, `${req.method} ${req.url}`),
    Object.keys(req.headers || {}).length ? h("pre", { class: "req-headers" }, Object.entries(req.headers).map(([k, v]) => `${k}: ${v}`).join("\n")) : null,
    req.body ? h("pre", { class: "req-body" }, req.body) : null);
}

// The reversal request (conversion and event postbacks): sent once per delivered firing
// when the conversion is later rejected. Empty URL: none.
function reversalFields(r) {
  const headerText = Object.entries(r.headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n");
  return h("fieldset", { "data-field": "reversal", class: "field" },
    h("legend", {}, "Reversal request (sent when a delivered conversion is later rejected; empty URL: none)"),
    h("div", { class: "grid" },
      field("Reversal method", "reversal.method", h("select", { value: r.method || "GET" }, ["GET", "POST", "PUT"].map((m) => h("option", { value: m }, m)))),
      field("Reversal content type", "reversal.content_type", h("input", { value: r.content_type || "", placeholder: "application/json" }))),
    field("Reversal URL", "reversal.url", templateField(h("input", { value: r.url || "", placeholder: "https://receiver.example/reverse?id={original_delivery_id}" }))),
    field("Reversal headers", "reversal.headers", templateField(h("textarea", { rows: 2, value: headerText, placeholder: "Name: value (one a line)" }))),
    field("Reversal body", "reversal.body", templateField(h("textarea", { rows: 3, value: r.body || "" })), "POST / PUT"),
    h("div", { class: "field-error", role: "alert" }));
}

async function editPage(id) {
  mount(main(), h("p", {}, "Loading…"));
  let p = { type: "conversion", enabled: true, method: "GET", offers: "all", publishers: isPartner() ? [me.publisher_id] : "all", fire_on: "approved", signing: "none", url: "" };
  if (id) {
    const r = await api("GET", `/postbacks/${encodeURIComponent(id)}`);
    if (!r.ok) return mount(main(), h("p", { class: "error" }, errorText(r)));
    p = r.data;
  }
  // Back from a sign-in after a 401: the form as it was, over what the API holds.
  const kept = draft && draft.hash === location.hash && draft.postback ? draft : null;
  if (kept) {
    draft = null;
    p = { ...p, rejection_reasons: undefined, event_names: undefined, headers: undefined, conditions: undefined, body: undefined,
      content_type: undefined, success_rule: undefined, reversal: undefined, rate_limit_per_second: undefined, ...kept.postback };
  }
  lastTemplateField = null;
  const url = templateField(h("input", { value: p.url, placeholder: "https://receiver.example/?clickid={external_transaction_id}" }));
  const bodyArea = templateField(h("textarea", { rows: 4, value: p.body || "" }));
  const headerRows = h("div", { id: "header-rows" }, Object.entries(p.headers || {}).map(([k, v]) => headerRow(k, v)));
  const conditionRows = h("div", { id: "condition-rows" }, (p.conditions || []).map((c) => conditionRow(c)));
  const rule = p.success_rule || {};
  const result = h("div", { id: "result", class: "result" });
  const fieldsNote = h("p", { class: "hint", id: "fields-note", role: "status" });
  const form = h("form", { id: "postback-form", class: "card", novalidate: true },
    h("p", { id: "form-error", class: "error", role: "alert" }),
    fieldsNote,
    h("div", { class: "grid" },
      field("Name", "name", h("input", { value: p.name || "", maxlength: 200 })),
      field("Type", "type", h("select", { value: p.type }, (isPartner() ? ["conversion", "event"] : TYPES).map((t) => h("option", { value: t }, t)))),
      field("Enabled", "enabled", h("input", { type: "checkbox", checked: p.enabled })),
      field("Offers", "offers", h("input", { value: p.offers === "all" ? "all" : listText(p.offers) }), "all, or ids separated by commas"),
      field("Publishers", "publishers", h("input", { value: p.publishers === "all" ? "all" : listText(p.publishers) }), "all, or ids separated by commas"),
      field("Fire on", "fire_on", h("select", { value: p.fire_on || "approved" }, FIRE_ON.map((t) => h("option", { value: t }, t))), "conversion and event postbacks"),
      field("Rejection reasons", "rejection_reasons", h("input", { value: listText(p.rejection_reasons) }), "with fire on rejected / all; commas"),
      field("Event names", "event_names", h("input", { value: listText(p.event_names) }), "event postbacks; empty: any"),
      field("Delay (seconds)", "delay_seconds", h("input", { type: "number", min: 0, value: p.delay_seconds ?? 0 })),
      field("Rate limit (requests/s)", "rate_limit_per_second", h("input", { type: "number", min: 1, max: 10000, value: p.rate_limit_per_second ?? "" }), "1–10000; empty: no limit"),
      field("Method", "method", h("select", { value: p.method }, ["GET", "POST", "PUT"].map((m) => h("option", { value: m }, m))))),
    h("fieldset", { "data-field": "alerts", class: "field" }, h("legend", {}, "Alerts (alert postbacks: fire on)"),
      ALERT_KINDS.map((k) => h("label", { class: "check" },
        h("input", { type: "checkbox", id: `f-alert-${k}`, checked: p.type !== "alert" || (p.alerts || ALERT_KINDS).includes(k) }), ` ${k}`)),
      h("div", { class: "field-error", role: "alert" })),
    macroPicker(),
    field("URL", "url", url),
    h("fieldset", { "data-field": "headers" }, h("legend", {}, "Headers"), headerRows,
      h("button", { type: "button", class: "link", id: "add-header", onclick: () => headerRows.append(headerRow()) }, "+ header"),
      h("div", { class: "field-error", role: "alert" })),
    field("Body", "body", bodyArea, "POST / PUT"),
    field("Content type", "content_type", h("input", { value: p.content_type || "", placeholder: "application/json" })),
    reversalFields(p.reversal || {}),
    h("fieldset", { "data-field": "conditions", class: "field" }, h("legend", {}, "Conditions (all must hold)"), conditionRows,
      h("button", { type: "button", class: "link", id: "add-condition", onclick: () => conditionRows.append(conditionRow()) }, "+ condition"),
      h("div", { class: "field-error", role: "alert" })),
    h("fieldset", { "data-field": "success_rule", class: "field" }, h("legend", {}, "Success rule (optional)"),
      h("div", { class: "grid" },
        field("Body contains", "success_rule.body_contains", h("input", { value: rule.body_contains || "" })),
        field("Body does not contain", "success_rule.body_not_contains", h("input", { value: rule.body_not_contains || "" })),
        field("Retry when broken", "success_rule.retry", h("input", { type: "checkbox", checked: rule.retry }))),
      h("div", { class: "field-error", role: "alert" })),
    h("div", { class: "grid" },
      field("Signing", "signing", h("select", { value: p.signing || "none" }, ["none", "standard-webhooks"].map((s) => h("option", { value: s }, s)))),
      field("Signing secret", "signing_secret", h("input", { value: p.signing_secret || "", placeholder: "generated when empty", autocomplete: "off" }), "whsec_…; [REDACTED] keeps the stored one")),
    id ? field("Sample event for Preview / Test (JSON, optional)", "sample", h("textarea", { rows: 2, id: "f-sample", value: kept ? kept.sample : undefined, placeholder: p.type === "alert" ? '{"alert": "breaker_opened"}' : '{"payout": "12.50", "params": {"goal": "signup"}}' }),
      p.type === "alert" ? "alert postbacks: the kind of the sample alert" : "its fields over a sample suited to this postback") : null,
    h("div", { class: "actions" },
      writerOnly(h("button", { type: "submit", id: "save" }, id ? (isPartner() && p.approval && p.approval.state === "approved" ? "Submit change" : "Save") : "Create")),
      id ? h("button", { type: "button", id: "preview", onclick: () => run("preview") }, "Preview") : null,
      id ? writerOnly(h("button", { type: "button", id: "test", onclick: () => run("test") }, "Test")) : null,
      h("a", { href: "#/postbacks", class: "button secondary" }, "Back"),
      id ? writerOnly(h("button", { type: "button", id: "delete", class: "danger", onclick: () => confirmDelete() }, "Delete")) : null),
    h("div", { id: "confirm" }));

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    tagRows(form);
    const r = id ? await api("PUT", `/postbacks/${encodeURIComponent(id)}`, readForm(form)) : await api("POST", "/postbacks", readForm(form));
    if (!r.ok) return showFieldError(form, (r.data && r.data.error) || { message: errorText(r) });
    if (!id) { flash = `Created: version ${r.data.version ?? 1}.`; location.hash = `#/postbacks/${encodeURIComponent(r.data.id)}`; return; }
    await editPage(id);
    document.getElementById("form-error").textContent = "";
    document.getElementById("saved").textContent = `Saved: version ${r.data.version}.`;
  });

  async function run(kind) {
    mount(result, h("p", {}, kind === "test" ? "Sending…" : "Rendering…"));
    let sample = {};
    const text = document.getElementById("f-sample").value.trim();
    if (text) {
      try { sample = JSON.parse(text); } catch (e) { return mount(result, h("p", { class: "error", id: "result-error" }, `Sample event: not JSON (${e.message})`)); }
    }
    const r = await api("POST", `/postbacks/${encodeURIComponent(id)}/${kind}`, sample);
    if (!r.ok) return mount(result, h("p", { class: "error", id: "result-error" }, errorText(r)));
    const d = r.data;
    mount(result,
      h("h2", {}, kind === "test" ? "Test" : "Preview"),
      h("p", { class: "hint" }, d.conditions_met ? "The sample event meets the conditions." : "The sample event does not meet the conditions (a real event like it would not match)."),
      requestView(d.request),
      kind === "test" ? h("div", { class: "response" },
        h("h3", {}, "Response"),
        d.response ? [
          h("p", {}, "Status ", h("strong", { id: "resp-status" }, d.response.status), ` in ${d.response.duration_ms} ms — outcome `, h("strong", { id: "resp-outcome" }, d.outcome)),
          h("pre", { id: "resp-body" }, d.response.body)] : null,
        d.error ? h("p", { class: "error", id: "resp-error" }, d.error) : null,
        h("p", {}, h("a", { href: `#/logs/${encodeURIComponent(d.log_id)}` }, "Log entry"))) : null);
  }

  function confirmDelete() {
    const box = document.getElementById("confirm");
    mount(box, h("div", { class: "confirm", role: "alertdialog" },
      h("p", {}, `Delete “${p.name}”? Its configuration is gone for good; its log entries stay.`),
      h("button", { type: "button", class: "danger", id: "confirm-delete", onclick: async () => {
        const r = await api("DELETE", `/postbacks/${encodeURIComponent(id)}`);
        if (r.ok) location.hash = "#/postbacks"; else mount(box, h("p", { class: "error" }, errorText(r)));
      } }, "Yes, delete"),
      h("button", { type: "button", class: "secondary", onclick: () => box.replaceChildren() }, "Cancel")));
  }

  if (p.template) form.dataset.template = JSON.stringify({ id: p.template.id, version: p.template.version });
  mount(main(), h("div", { class: "bar" }, h("h1", {}, id ? `Postback: ${p.name}` : "New postback"), id ? h("span", { class: "mono" }, `${p.id} · v${p.version}`) : null,
    p.template ? h("span", { class: "hint", id: "from-template" }, `from template ${p.template.id} v${p.template.version}`) : null),
    h("p", { id: "saved", class: "ok", role: "status" }, flash || ""),
    kept ? h("p", { id: "restored", class: "ok", role: "status" }, "Your unsaved changes are back in the form: Save to keep them.") : null,
    id ? approvalSection(p) : null, id ? breakerSection(id, p.health) : null, form, result,
    id && isAdmin() ? await secretSection(id, p) : null, id ? await versionsSection(id) : null);
  flash = null;
  // The fields that apply to the chosen type (and fire_on), again on every change of them.
  const paintFields = () => {
    const type = form.querySelector('[data-field="type"]').value;
    const fits = applicable(type, form.querySelector('[data-field="fire_on"]').value);
    const hidden = [];
    for (const [name, applies] of Object.entries(fits)) {
      const el = form.querySelector(`[data-for="${name}"]`) || form.querySelector(`fieldset[data-field="${name}"]`);
      // Partners: their publisher only, none of the fields the network keeps.
      const network = isPartner() && PARTNER_HIDDEN.includes(name);
      if (el) el.hidden = !applies || network;
      if (!applies && !network) hidden.push(NOT_APPLICABLE_WHY[name] ? `${APPLICABLE_LABELS[name]} (${NOT_APPLICABLE_WHY[name]})` : APPLICABLE_LABELS[name]);
    }
    for (const name of PARTNER_HIDDEN) {
      const el = form.querySelector(`[data-for="${name}"]`) || form.querySelector(`fieldset[data-field="${name}"]`);
      if (el && isPartner()) el.hidden = true;
    }
    form.querySelector("#macro-picker").showFor(type, fits.reversal);
    form.querySelector("#f-url").placeholder = type === "alert"
      ? "https://chat.example/hook?text={alert_message}" : "https://receiver.example/?clickid={external_transaction_id}";
    fieldsNote.textContent = hidden.length ? `Hidden, as they do not apply to ${/^[aeiou]/.test(type) ? "an" : "a"} ${type} postback${fits.fire_on ? ` that fires on ${form.querySelector('[data-field="fire_on"]').value}` : ""}: ${hidden.join(", ")}.` : "";
  };
  form.querySelector('[data-field="type"]').addEventListener("change", paintFields);
  form.querySelector('[data-field="fire_on"]').addEventListener("change", paintFields);
  paintFields();
  // Read-only for the roles that may not write: the form shows, nothing edits.
  if (!isAdmin() && !isPartner()) {
    form.querySelectorAll("input, select, textarea").forEach((el) => { if (el.id !== "f-sample") el.disabled = true; });
    form.querySelectorAll("button.link").forEach((el) => { el.hidden = true; });
  }
}

// The review state of a postback: pending, rejected with the reason, or a change waiting.
function approvalSection(p) {
  const a = p.approval || { state: "approved" };
  if (a.state === "approved" && !p.pending_revision && !a.reason) return null;
  return h("div", { class: `card approval ${approvalClass(p)}`, id: "approval" },
    h("p", {}, "Approval: ", h("strong", { id: "approval-state" }, approvalText(p))),
    a.state === "pending" ? h("p", { class: "hint" }, "It fires nothing until the network approves it.") : null,
    p.pending_revision ? h("p", { class: "hint" }, "Your change waits for review; the approved version below keeps firing.") : null,
    a.decided_at ? h("p", { class: "hint" }, "Decided ", when(a.decided_at), a.decided_by ? ` by ${a.decided_by.name}` : "", ".") : null);
}

// ---------------------------------------------------------------- approvals (admins)
// The fields a pending change may differ in, shown beside the approved version.
const REVIEW_FIELDS = ["name", "type", "enabled", "offers", "publishers", "fire_on", "event_names", "method", "url", "headers", "body", "content_type", "conditions", "success_rule", "signing"];
const shownValue = (v) => (v === undefined || v === null ? "—" : typeof v === "string" ? v : JSON.stringify(v));

async function approvalsPage() {
  mount(main(), h("p", {}, "Loading…"));
  const r = await api("GET", "/postbacks?approval=pending");
  if (!r.ok) return mount(main(), h("p", { class: "error" }, errorText(r)));
  paintApprovalCount(r.data.items.length);
  const cards = r.data.items.map((p) => {
    const revision = p.pending_revision;
    const proposed = revision ? "Proposed" : "Submitted";
    const rows = REVIEW_FIELDS.filter((f) => !revision || shownValue(p[f]) !== shownValue(revision[f])).map((f) => h("tr", {},
      h("th", {}, f),
      td("Approved", { class: "mono wrap old" }, revision ? shownValue(p[f]) : "—"),
      td(proposed, { class: "mono wrap new" }, shownValue(revision ? revision[f] : p[f]))));
    const reason = h("input", { class: "reject-reason", placeholder: "Reason (shown to the partner)", maxlength: 500, "aria-label": "Rejection reason" });
    const err = h("p", { class: "error", role: "alert" });
    const decide = async (kind) => {
      const d = await api("POST", `/postbacks/${encodeURIComponent(p.id)}/${kind}`, kind === "reject" ? { reason: reason.value } : undefined);
      if (!d.ok) { err.textContent = errorText(d); return; }
      approvalsPage();
    };
    return h("div", { class: "card approval-item", "data-id": p.id },
      h("h2", {}, h("a", { href: `#/postbacks/${encodeURIComponent(p.id)}` }, p.name), ` — partner ${p.owner ? p.owner.publisher_id : "?"}`),
      h("p", { class: "hint" }, revision ? "A change to an approved postback (the approved version keeps firing):" : "A new postback (fires nothing until approved):"),
      h("div", { class: "scroll" }, cardTable({ class: "diff" }, ["Field", "Approved", proposed], rows)),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "approve", onclick: () => decide("approve") }, "Approve"),
        reason,
        h("button", { type: "button", class: "danger reject", onclick: () => decide("reject") }, "Reject")),
      err);
  });
  mount(main(), h("div", { class: "bar" }, h("h1", {}, "Approvals")),
    cards.length === 0 ? h("p", { id: "empty" }, "Nothing waits for a decision.") : cards);
}

function paintApprovalCount(n) {
  const link = document.getElementById("nav-approvals");
  if (link) link.textContent = n ? `Approvals (${n})` : "Approvals";
}

// The circuit breaker's health, and Resume while it is not closed.
function breakerSection(id, health) {
  if (!health) return null;
  const box = h("section", { class: "card", id: "breaker" });
  const paint = (hl) => {
    const rows = [["State", hl.state.replace("_", "-")], ["Consecutive failures", String(hl.consecutive_failures)], ["Held firings", String(hl.held)]];
    if (hl.opened_at) rows.push(["Open since", when(hl.opened_at)]);
    if (hl.next_probe_at) rows.push(["Next probe", when(hl.next_probe_at)]);
    mount(box, h("h2", {}, "Circuit breaker"),
      h("dl", { class: "facts" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono" }, v)])),
      isAdmin() && (hl.state !== "closed" || hl.held > 0) ? h("button", { type: "button", id: "resume", onclick: async () => {
        const r = await api("POST", `/postbacks/${encodeURIComponent(id)}/resume`);
        if (r.ok) paint(r.data.health); else box.append(h("p", { class: "error" }, errorText(r)));
      } }, "Resume: close now and release held firings") : null);
  };
  paint(health);
  return box;
}

async function secretSection(id, p) {
  if (p.signing !== "standard-webhooks") return null;
  const out = h("pre", { id: "secret" });
  return h("section", { class: "card" }, h("h2", {}, "Signing secret"), out,
    h("button", { type: "button", onclick: async () => { const r = await api("GET", `/postbacks/${encodeURIComponent(id)}/secret`); out.textContent = r.ok ? r.data.signing_secret : errorText(r); } }, "Show"),
    h("button", { type: "button", class: "secondary", onclick: async () => {
      const r = await api("POST", `/postbacks/${encodeURIComponent(id)}/secret/rotate`);
      out.textContent = r.ok ? `${r.data.signing_secret}\n(the previous one keeps signing until ${localTime(r.data.previous_expires_at)}, ${ZONE})` : errorText(r);
    } }, "Rotate"));
}

async function versionsSection(id) {
  const r = await api("GET", `/postbacks/${encodeURIComponent(id)}/versions`);
  if (!r.ok) return h("p", { class: "error" }, errorText(r));
  return h("section", { class: "card", id: "versions" }, h("h2", {}, "Version history"),
    r.data.items.map((v) => h("details", {}, h("summary", { title: utcTitle(v.updated_at || v.created_at) }, `v${v.version} · ${localTime(v.updated_at || v.created_at || "")}`), h("pre", {}, pretty(v)))));
}

// ---------------------------------------------------------------- logs
// `count`: how many entries the applied filters match (a number, or "more than N"), kept
// while paging; `note`: what the search box found.
const logState = { filters: [], from: "", to: "", limit: "50", cursors: [null], count: null, note: "" };
// The filters' column names as people say them (the option's value stays the API's).
const COLUMN_LABELS = {
  postback_id: "Postback id", postback_name: "Postback name", transaction_id: "Transaction id", delivery_id: "Delivery id", event_id: "Event id",
  type: "Type", offer_id: "Offer id", publisher_id: "Publisher id", status_code: "Status code", outcome: "Outcome",
  url: "URL", error: "Error", response_body: "Response body", test: "Test (true / false)",
};
// The log table's columns, in the list and in an entry's attempt chain.
const LOG_HEADERS = ["Fired at", "Postback", "Transaction", "Type", "Attempt", "Status", "Outcome", "Duration", "URL"];
// The count asks for one page of this many (the API's largest) and says "more than" beyond.
const COUNT_LIMIT = 500;
const COUNT_DELAY_MS = 400;

function filterRow(f = { column: "postback_name", op: "is", value: "" }) {
  const row = h("div", { class: "row filter-row" },
    h("select", { class: "f-col", "aria-label": "Column", value: f.column }, LOG_COLUMNS.map((c) => h("option", { value: c }, COLUMN_LABELS[c] || c))),
    h("select", { class: "f-op", "aria-label": "Operator", value: f.op }, [["is", "is"], ["not", "is not"], ["contains", "contains"]].map(([v, t]) => h("option", { value: v }, t))),
    h("input", { class: "f-value", "aria-label": "Value", value: f.value }),
    h("button", { type: "button", class: "link", onclick: () => row.remove() }, "Remove"),
    h("div", { class: "field-error", role: "alert" }));
  return row;
}

// A filter's parameter name, as GET /logs and POST /logs/replay call it (`url.contains`).
const filterKey = (f) => (f.op === "is" ? f.column : `${f.column}.${f.op}`);

function logQuery(cursor, limit = logState.limit) {
  const params = new URLSearchParams();
  for (const f of logState.filters) params.append(filterKey(f), f.value);
  if (logState.from) params.set("from", new Date(logState.from).toISOString());
  if (logState.to) params.set("to", new Date(logState.to).toISOString());
  params.set("limit", limit);
  if (cursor) params.set("cursor", cursor);
  return params.toString();
}

// The Logs form as typed into the page's state (Apply, a dry run, a 401's draft).
function readLogForm() {
  logState.filters = [...document.querySelectorAll("#filter-rows .filter-row")].map((r) => ({ column: r.querySelector(".f-col").value, op: r.querySelector(".f-op").value, value: r.querySelector(".f-value").value }));
  logState.from = document.getElementById("from").value;
  logState.to = document.getElementById("to").value;
  logState.limit = document.getElementById("limit").value;
  logState.cursors = [null];
  logState.count = null;
}

export function logRows(items) {
  return items.map((e) => h("tr", { "data-id": e.id, class: `outcome-${e.outcome}` },
    td("Fired at", { class: "mono when", title: utcTitle(e.fired_at) }, h("a", { href: `#/logs/${encodeURIComponent(e.id)}` }, localTime(e.fired_at, true))),
    td("Postback", { class: "wrap" }, e.postback_name), td("Transaction", { class: "mono wrap" }, e.transaction_id), td("Type", {}, e.type),
    td("Attempt", {}, e.attempt), td("Status", {}, e.status_code ?? "—"),
    td("Outcome", { class: "outcome" }, e.outcome, e.test ? " (test)" : "", e.replay_of ? " (replay)" : "", e.resend_of ? " (resend)" : "", e.reversal_of ? " (reversal)" : ""),
    td("Duration", {}, `${e.duration_ms} ms`), td("URL", { class: "url" }, e.url)));
}

// The search box: one text, tried as what it looks like. A log entry id (a UUID) opens
// that entry; a delivery id (`d_` + 32 hex) opens its latest attempt (whose page shows
// the attempt chain); any other text is a transaction id, else a postback name (exact,
// then a part of one). Each step is a GET /logs filter the page has anyway.
async function find(text) {
  const t = text.trim();
  if (!t) return { note: "Type a transaction id, delivery id or postback name." };
  const one = (params) => api("GET", `/logs?${q({ ...params, limit: 1 })}`);
  if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(t)) {
    const r = await api("GET", `/logs/${encodeURIComponent(t)}`);
    if (r.ok) return { entry: t };
  }
  if (/^d_[0-9a-f]{32}$/.test(t)) {
    const r = await one({ delivery_id: t });
    if (!r.ok) return { error: errorText(r) };
    if (r.data.items.length) return { entry: r.data.items[0].id };
    return { note: `No entry of delivery ${t} in the log.` };
  }
  const [tx, name] = await Promise.all([one({ transaction_id: t }), one({ postback_name: t })]);
  if (!tx.ok) return { error: errorText(tx) };
  if (tx.data.items.length) return { filters: [{ column: "transaction_id", op: "is", value: t }], note: `Transaction id “${t}”.` };
  if (name.ok && name.data.items.length) return { filters: [{ column: "postback_name", op: "is", value: t }], note: `Postback “${t}”.` };
  const part = await one({ "postback_name.contains": t });
  if (part.ok && part.data.items.length) return { filters: [{ column: "postback_name", op: "contains", value: t }], note: `Postback names containing “${t}”.` };
  return { note: `Nothing found: no transaction id, delivery id or postback name “${t}” in the log.` };
}

// Bulk replay without a From takes this many days back (shown before anything is sent):
// enough for a weekend's outage, short of replaying conversions nobody expects any more.
export const REPLAY_DEFAULT_DAYS = 7;
const isoSeconds = (d) => d.toISOString().replace(/\.\d+Z$/, "Z");

// The body of POST /logs/replay for the page's filters: the same names and values as the
// GET /logs query, `from` the range's start or the default, `to` the range's end or now,
// pinned at the dry run so the confirmed call takes what was counted, not what failed since.
export function replayBody(filters, from, to, now = new Date()) {
  const body = {};
  for (const f of filters) {
    const key = filterKey(f);
    if (f.value === "") continue;
    if (key in body) return { error: { field: key, message: `${key} is given more than once` } };
    body[key] = f.value;
  }
  body.from = from ? new Date(from).toISOString() : isoSeconds(new Date(now.getTime() - REPLAY_DEFAULT_DAYS * 86400000));
  // Not rounded: an entry logged in this very second is in.
  body.to = to ? new Date(to).toISOString() : now.toISOString();
  return { body, defaultFrom: !from };
}

async function logsPage() {
  const rows = h("div", { id: "filter-rows" }, logState.filters.map(filterRow));
  const from = h("input", { type: "datetime-local", id: "from", value: logState.from, step: 1, "data-field": "from" });
  const to = h("input", { type: "datetime-local", id: "to", value: logState.to, step: 1, "data-field": "to" });
  const limit = h("select", { id: "limit", value: logState.limit, "aria-label": "Per page" }, ["25", "50", "100"].map((n) => h("option", { value: n }, n)));
  const err = h("p", { class: "error", id: "logs-error", role: "alert" });
  const rangeError = h("div", { class: "field-error", id: "range-error", role: "alert" });
  const table = h("div", { id: "log-table", class: "scroll" });
  const pager = h("div", { class: "actions", id: "pager" });
  const count = h("p", { class: "hint", id: "log-count", role: "status" });
  const replayBox = h("div", { id: "replay-box" });
  const form = h("form", { class: "card", id: "log-filters" },
    rows, h("button", { type: "button", class: "link", id: "add-filter", onclick: () => rows.append(filterRow()) }, "+ filter"),
    h("div", { class: "row" }, h("label", { for: "from" }, `From (${ZONE})`), from, h("label", { for: "to" }, `To (${ZONE})`), to, h("label", { for: "limit" }, "Per page"), limit, rangeError),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "apply" }, "Apply"),
      adminOnly(h("button", { type: "button", class: "secondary", id: "replay", onclick: () => dryRun() }, "Replay failed firings…"))), err, replayBox);
  const readFilters = readLogForm;
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    readFilters();
    logState.note = "";
    findNote.textContent = "";
    replayBox.replaceChildren();
    load();
  });
  const findInput = h("input", { id: "find", type: "search", value: logState.findText || "", placeholder: "Transaction id, delivery id or postback name", "aria-label": "Find in the log" });
  const findNote = h("p", { class: "hint", id: "find-result", role: "status" }, logState.note);
  const findForm = h("form", { class: "card", id: "find-form", role: "search" },
    h("div", { class: "row" }, h("label", { for: "find" }, "Find"), findInput, h("button", { type: "submit", id: "find-go" }, "Find")), findNote);
  findForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    findNote.textContent = "Looking…";
    logState.findText = findInput.value;
    const f = await find(findInput.value);
    if (f.entry) { location.hash = `#/logs/${encodeURIComponent(f.entry)}`; return; }
    if (f.error) { findNote.textContent = f.error; return; }
    if (f.filters) {
      Object.assign(logState, { filters: f.filters, from: "", to: "", cursors: [null], count: null, note: f.note });
      return logsPage();
    }
    findNote.textContent = f.note;
  });
  mount(main(), h("div", { class: "bar" }, h("h1", {}, "Logs"), h("button", { type: "button", class: "secondary", id: "refresh", onclick: () => { logState.count = null; load(); } }, "Refresh")),
    findForm, form, count, table, pager);
  logState.note = "";

  function clearLogErrors() {
    err.textContent = "";
    form.querySelectorAll(".field-error").forEach((x) => { x.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach((x) => x.removeAttribute("aria-invalid"));
  }
  // A 400 beside what it names: the filter row of that parameter (`status_code.contains`),
  // the time range (`from`, `to`), else above the table.
  function showLogError(r) {
    const e = r.data && r.data.error;
    const name = e && e.field;
    const row = name ? [...rows.querySelectorAll(".filter-row")].find((x) => filterKey({ column: x.querySelector(".f-col").value, op: x.querySelector(".f-op").value }) === name) : null;
    if (row) {
      row.querySelector(".f-value").setAttribute("aria-invalid", "true");
      row.querySelector(".field-error").textContent = `${name}: ${e.message}`;
    } else if (name === "from" || name === "to") {
      (name === "from" ? from : to).setAttribute("aria-invalid", "true");
      rangeError.textContent = `${name}: ${e.message}`;
    } else {
      err.textContent = errorText(r);
    }
  }

  let loads = 0;
  async function load() {
    const mine = ++loads;
    clearLogErrors();
    const cursor = logState.cursors[logState.cursors.length - 1];
    const asked = performance.now();
    const r = await api("GET", `/logs?${logQuery(cursor)}`);
    if (!r.ok) { showLogError(r); return; }
    const started = performance.now();
    const t = cardTable({ id: "logs" }, LOG_HEADERS, logRows(r.data.items));
    mount(table, r.data.items.length ? t : h("p", { id: "no-logs" }, "No log entries match."));
    const ms = performance.now() - started;
    table.dataset.renderMs = ms.toFixed(1);
    table.dataset.count = String(r.data.items.length);
    table.dataset.totalMs = (performance.now() - asked).toFixed(1);
    // Until the frame with the rows has been laid out and painted. The count is asked a
    // moment after, unless another load has begun (new filters, a page turned): off the
    // path of the rows and of the manager's next click.
    delete table.dataset.paintedMs;
    const pageNo = logState.cursors.length;
    const first = (pageNo - 1) * Number(logState.limit) + 1;
    if (logState.count === null && pageNo === 1 && !r.data.next_cursor) logState.count = r.data.items.length;
    paintCount();
    requestAnimationFrame(() => setTimeout(() => {
      table.dataset.paintedMs = (performance.now() - asked).toFixed(1);
      // Only while this page is the one shown: a page left meanwhile must not take the
      // count (it would paint it into its detached element, and the page shown now,
      // finding it set, would never ask).
      setTimeout(() => { if (mine === loads && logState.count === null && count.isConnected) countMatches(); }, COUNT_DELAY_MS);
    }, 0));
    mount(pager,
      h("button", { type: "button", class: "secondary", id: "prev", disabled: pageNo < 2, onclick: () => { logState.cursors.pop(); load(); } }, "Previous"),
      h("span", { class: "hint" }, `page ${pageNo}${r.data.items.length ? ` · entries ${first}–${first + r.data.items.length - 1}` : ""} · rendered in ${ms.toFixed(1)} ms`),
      h("button", { type: "button", class: "secondary", id: "next", disabled: !r.data.next_cursor, onclick: () => { logState.cursors.push(r.data.next_cursor); load(); } }, "Next"));
  }

  // How many entries the filters match: one more page of COUNT_LIMIT from the start.
  async function countMatches() {
    const filters = logState.filters;
    const r = await api("GET", `/logs?${logQuery(null, String(COUNT_LIMIT))}`);
    if (!r.ok || filters !== logState.filters || !count.isConnected) return;
    logState.count = r.data.next_cursor ? `more than ${COUNT_LIMIT}` : r.data.items.length;
    paintCount();
  }
  function paintCount() {
    const n = logState.count;
    count.textContent = n === null ? "Counting the matching entries…" : typeof n === "string" ? `${n[0].toUpperCase()}${n.slice(1)} entries match.`
      : `${n} ${n === 1 ? "entry matches" : "entries match"}.`;
    count.dataset.count = n === null ? "" : String(n);
  }

  // Replay in two steps: a dry run that counts the failed firings the filters select, then,
  // on confirmation, the same body for real (and again from each next_cursor on request).
  async function dryRun() {
    readFilters();
    clearLogErrors();
    const made = replayBody(logState.filters, logState.from, logState.to);
    if (made.error) { showLogError({ status: 400, data: { error: made.error } }); return; }
    mount(replayBox, h("p", {}, "Counting failed firings…"));
    load();
    const r = await api("POST", "/logs/replay", { ...made.body, dry_run: true });
    if (!r.ok) { replayBox.replaceChildren(); showLogError(r); return; }
    const n = r.data.matched;
    const range = `from ${localTime(made.body.from)}${made.defaultFrom ? ` (the last ${REPLAY_DEFAULT_DAYS} days: set From to go further back)` : ""} to ${localTime(made.body.to)} (${ZONE})`;
    const scope = h("p", { class: "hint" }, `Failed, non-test firings ${range}, matching the filters above. Each is sent once more with its delivery id and a fresh retry chain, through its postback's rate limit and breaker; a conversion no longer approved is skipped.`);
    if (n === 0) return mount(replayBox, h("div", { class: "confirm", id: "replay-confirm" }, h("p", { id: "replay-none" }, "No failed firings match: nothing to replay."), scope));
    mount(replayBox, h("div", { class: "confirm", role: "alertdialog", id: "replay-confirm" },
      h("p", {}, r.data.next_cursor ? "At least " : "", h("strong", { id: "replay-count" }, String(n)), ` failed firing${n === 1 ? "" : "s"} would be replayed`,
        r.data.next_cursor ? " (more than one call takes: the rest can follow once these are sent)" : "", "."),
      scope,
      h("div", { class: "actions" },
        h("button", { type: "button", class: "danger", id: "confirm-replay", onclick: () => replay(made.body, null, 0, 0) }, `Replay ${n} firing${n === 1 ? "" : "s"}`),
        h("button", { type: "button", class: "secondary", id: "cancel-replay", onclick: () => replayBox.replaceChildren() }, "Cancel"))));
  }

  async function replay(body, cursor, matched, replayed) {
    mount(replayBox, h("p", {}, "Replaying…"));
    const r = await api("POST", "/logs/replay", cursor ? { ...body, cursor } : body);
    if (!r.ok) {
      mount(replayBox, h("p", { class: "error", id: "replay-error" }, errorText(r), matched ? ` (after ${replayed} replayed)` : ""));
      return;
    }
    matched += r.data.matched; replayed += r.data.replayed;
    const next = r.data.next_cursor;
    mount(replayBox, h("div", { class: "card", id: "replay-result" },
      h("p", { class: "ok" }, "Replayed ", h("strong", { id: "replayed-count" }, String(replayed)), ` of ${matched} failed firing${matched === 1 ? "" : "s"}`,
        replayed < matched ? " (the others were logged without their firing and cannot be sent again)" : "", next ? "; more remain in the range." : "."),
      next ? h("button", { type: "button", id: "replay-more", onclick: () => replay(body, next, matched, replayed) }, "Replay the next ones") : null,
      h("p", { class: "hint" }, "They go through the queue: Refresh to see their new entries (marked “replay”).")));
    load();
  }
  await load();
}

async function logDetailPage(id) {
  mount(main(), h("p", {}, "Loading…"));
  const r = await api("GET", `/logs/${encodeURIComponent(id)}`);
  if (!r.ok) return mount(main(), h("p", { class: "error" }, errorText(r)));
  const e = r.data;
  const resent = h("div", { id: "resent" });
  const facts = [["Postback", `${e.postback_name} (${e.postback_id}, v${e.postback_version ?? "—"})`], ["Transaction", e.transaction_id], ["Event id", e.event_id ?? "—"],
    ["Type", e.type], ["Offer / publisher", `${e.offer_id ?? "—"} / ${e.publisher_id ?? "—"}`],
    ["Fired at", h("span", { id: "entry-fired" }, `${localTime(e.fired_at, true)} ${ZONE}`)], ["Fired at (UTC)", h("span", { class: "mono", id: "entry-fired-utc" }, e.fired_at)], ["Attempt", e.attempt],
    ["Outcome", `${e.outcome}${e.test ? " (test)" : ""}`], ["Duration", `${e.duration_ms} ms`], ["Delivery id", e.delivery_id]];
  const entryLink = (x, id) => h("a", { href: `#/logs/${encodeURIComponent(x)}`, id, class: "mono" }, x);
  if (e.resend_of) facts.push(["Resend of", entryLink(e.resend_of, "resend-of")]);
  if (e.replay_of) facts.push(["Replay of", entryLink(e.replay_of, "replay-of")]);
  if (e.reversal_of) facts.push(["Reversal of", entryLink(e.reversal_of, "reversal-of")]);
  if (e.next_attempt_at) facts.push(["Next attempt", when(e.next_attempt_at)]);
  const chain = await api("GET", `/logs?${q({ transaction_id: e.transaction_id, postback_id: e.postback_id, delivery_id: e.delivery_id, limit: 100 })}`);
  const attempts = chain.ok ? chain.data.items.sort((a, b) => a.attempt - b.attempt || a.fired_at.localeCompare(b.fired_at)) : [];
  mount(main(),
    h("div", { class: "bar" }, h("h1", {}, "Log entry"), h("span", { class: "mono" }, e.id)),
    h("section", { class: "card" }, h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
    h("section", { class: "card" }, requestView({ method: e.method, url: e.url, headers: e.request_headers, body: e.request_body })),
    h("section", { class: "card" }, h("h3", {}, "Response"),
      h("p", {}, "Status ", h("strong", { id: "entry-status" }, e.status_code ?? "none")),
      e.response_body ? h("pre", { id: "entry-body" }, e.response_body) : null,
      e.error ? h("p", { class: "error", id: "entry-error" }, e.error) : null),
    h("section", { class: "card" }, h("h3", { id: "chain-title" }, "Attempt chain (delivery ", h("span", { class: "mono" }, e.delivery_id), ")"),
      chain.ok ? h("div", { class: "scroll" }, cardTable({ id: "chain" }, LOG_HEADERS, logRows(attempts))) : h("p", { class: "error" }, errorText(chain))),
    h("div", { class: "actions" },
      writerOnly(h("button", { type: "button", id: "resend", onclick: async () => {
        const s = await api("POST", `/logs/${encodeURIComponent(e.id)}/resend`);
        mount(resent, s.ok ? h("p", { class: "ok" }, `Resent: ${s.data.outcome}, status ${s.data.status_code ?? "none"} — `, h("a", { href: `#/logs/${encodeURIComponent(s.data.id)}`, id: "resent-link" }, "new entry")) : h("p", { class: "error" }, errorText(s)));
      } }, "Resend")),
      h("a", { href: "#/logs", class: "button secondary" }, "Back to logs")),
    resent);
}

// ---------------------------------------------------------------- keys (admins)
async function keysPage() {
  mount(main(), h("p", {}, "Loading…"));
  const r = await api("GET", "/keys");
  if (!r.ok) return mount(main(), h("p", { class: "error" }, errorText(r)));
  const role = h("select", { id: "k-role", value: "viewer" }, ["admin", "viewer", "partner", "ingest"].map((x) => h("option", { value: x }, x)));
  const publisher = h("input", { id: "k-publisher", placeholder: "partners only" });
  const created = h("div", { id: "key-created" });
  const form = h("form", { id: "key-form", class: "card", novalidate: true },
    h("h2", {}, "New key"),
    h("p", { id: "form-error", class: "error", role: "alert" }),
    h("div", { class: "grid" },
      field("Name", "name", h("input", { maxlength: 200, placeholder: "Ana (support)" })),
      field("Role", "role", role),
      field("Publisher id", "publisher_id", publisher, "required for partner keys, refused for the others")),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "create-key" }, "Create key")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    const body = { name: document.getElementById("f-name").value, role: role.value };
    if (publisher.value.trim()) body.publisher_id = publisher.value.trim();
    const c = await api("POST", "/keys", body);
    if (!c.ok) return showFieldError(form, (c.data && c.data.error) || { message: errorText(c) });
    await keysPage();
    showCreated(c.data);
  });
  const rows = r.data.items.map((k) => h("tr", { "data-id": k.id },
    td("Name", { class: "k-name wrap" }, k.name), td("Role", {}, k.role), td("Publisher", { class: "mono wrap" }, k.publisher_id ?? "—"),
    td("Created", { class: "mono when" }, when(k.created_at)), td("Last used", { class: "mono when k-used" }, k.last_used_at ? when(k.last_used_at) : "never"),
    td("", {}, h("button", { type: "button", class: "danger revoke", onclick: () => confirmRevoke(k) }, "Revoke"))));
  mount(main(), h("div", { class: "bar" }, h("h1", {}, "Keys")),
    h("p", { class: "hint" }, "The bootstrap ADMIN_API_KEY and INGEST_API_KEY are not listed: they come from the settings."),
    created, form, h("div", { id: "revoke-confirm" }),
    rows.length === 0 ? h("p", { id: "no-keys" }, "No keys yet.") :
      h("div", { class: "scroll" }, cardTable({ id: "keys" }, ["Name", "Role", "Publisher", "Created", "Last used", ""], rows)));

  function showCreated(k) {
    const box = document.getElementById("key-created");
    const value = h("input", { id: "new-key", readonly: true, value: k.key, class: "mono" });
    const copied = h("span", { class: "ok", id: "copied" });
    mount(box, h("section", { class: "card confirm", role: "status" },
      h("p", {}, h("strong", {}, `Key for “${k.name}” (${k.role})`), " — copy it now: it is shown this once and cannot be read again."),
      h("div", { class: "row" }, value,
        h("button", { type: "button", id: "copy-key", onclick: async () => {
          value.select();
          try { await navigator.clipboard.writeText(k.key); copied.textContent = "Copied."; } catch { copied.textContent = "Selected: press Ctrl+C."; }
        } }, "Copy"), copied)));
  }

  function confirmRevoke(k) {
    const box = document.getElementById("revoke-confirm");
    mount(box, h("div", { class: "confirm", role: "alertdialog" },
      h("p", {}, `Revoke “${k.name}” (${k.role})? Within 5 seconds it opens nothing; this cannot be undone.`),
      h("button", { type: "button", class: "danger", id: "confirm-revoke", onclick: async () => {
        const d = await api("DELETE", `/keys/${encodeURIComponent(k.id)}`);
        if (d.ok) keysPage(); else mount(box, h("p", { class: "error" }, errorText(d)));
      } }, "Yes, revoke"),
      h("button", { type: "button", class: "secondary", id: "cancel-revoke", onclick: () => box.replaceChildren() }, "Cancel")));
  }
}

// ---------------------------------------------------------------- audit (admins, viewers)
const auditState = { filters: { actor_key_id: "", action: "", target_id: "", from: "", to: "" }, cursors: [null] };

async function auditPage() {
  const f = auditState.filters;
  const actor = h("input", { id: "a-actor", value: f.actor_key_id, placeholder: "env:admin or key_…" });
  const action = h("select", { id: "a-action", value: f.action }, h("option", { value: "" }, "any"), AUDIT_ACTIONS.map((a) => h("option", { value: a }, a)));
  const target = h("input", { id: "a-target", value: f.target_id, placeholder: "pb_…, a log id, key_…" });
  const from = h("input", { id: "a-from", type: "datetime-local", value: f.from });
  const to = h("input", { id: "a-to", type: "datetime-local", value: f.to });
  const err = h("p", { class: "error", id: "audit-error", role: "alert" });
  const table = h("div", { id: "audit-table" });
  const pager = h("div", { class: "actions", id: "audit-pager" });
  const detail = h("div", { id: "audit-detail" });
  const form = h("form", { class: "card", id: "audit-filters" },
    h("div", { class: "grid" },
      field("Actor key id", "actor_key_id", actor), field("Action", "action", action), field("Target id", "target_id", target),
      field(`From (${ZONE})`, "from", from), field(`To (${ZONE})`, "to", to)),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "audit-apply" }, "Apply")), err);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    Object.assign(auditState.filters, { actor_key_id: actor.value.trim(), action: action.value, target_id: target.value.trim(), from: from.value, to: to.value });
    auditState.cursors = [null];
    load();
  });
  mount(main(), h("div", { class: "bar" }, h("h1", {}, "Audit trail")), form, table, pager, detail);
  await load();

  async function load() {
    const params = { limit: 25 };
    for (const [k, v] of Object.entries(auditState.filters)) {
      if (!v) continue;
      params[k] = k === "from" || k === "to" ? new Date(v).toISOString() : v;
    }
    const cursor = auditState.cursors[auditState.cursors.length - 1];
    if (cursor) params.cursor = cursor;
    err.textContent = "";
    const r = await api("GET", `/audit?${q(params)}`);
    if (!r.ok) { err.textContent = errorText(r); return; }
    const rows = r.data.items.map((rec) => h("tr", { class: "audit-row", "data-id": rec.id, onclick: () => showRecord(rec) },
      td("At", { class: "mono when", title: utcTitle(rec.at) }, localTime(rec.at, true)),
      td("Who", { class: "wrap" }, `${rec.actor.name} (${rec.actor.role})`),
      td("Action", { class: "mono a-action" }, rec.action),
      td("Target", { class: "mono wrap" }, `${rec.target.kind}${rec.target.id ? ` ${rec.target.id}` : ""}`),
      td("Summary", { class: "a-summary wrap" }, rec.summary)));
    mount(table, rows.length === 0 ? h("p", { id: "audit-empty" }, "No records match.") :
      h("div", { class: "scroll" }, cardTable({ id: "audit" }, ["At", "Who", "Action", "Target", "Summary"], rows)));
    mount(pager,
      h("button", { type: "button", class: "secondary", id: "audit-prev", disabled: auditState.cursors.length < 2, onclick: () => { auditState.cursors.pop(); load(); } }, "Previous"),
      h("span", { class: "hint" }, `Page ${auditState.cursors.length}`),
      h("button", { type: "button", class: "secondary", id: "audit-next", disabled: !r.data.next_cursor, onclick: () => { auditState.cursors.push(r.data.next_cursor); load(); } }, "Next"));
  }

  function showRecord(rec) {
    const facts = [["Id", rec.id], ["At", `${localTime(rec.at, true)} ${ZONE}`], ["At (UTC)", rec.at], ["Actor", `${rec.actor.name} — ${rec.actor.key_id} (${rec.actor.role}${rec.actor.publisher_id ? `, publisher ${rec.actor.publisher_id}` : ""})`],
      ["Action", rec.action], ["Target", `${rec.target.kind} ${rec.target.id ?? "(none)"}`],
      ["Version", `${rec.version_before ?? "—"} → ${rec.version_after ?? "—"}`], ["Address", rec.ip ?? "—"], ["Summary", rec.summary]];
    mount(detail, h("section", { class: "card", id: "audit-record" }, h("h2", {}, "Record"),
      h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono" }, v)]))));
    detail.scrollIntoView();
  }
}

// ---------------------------------------------------------------- templates
const CATEGORIES = { ad_platform: "Ad platforms", tracker: "Affiliate trackers", crm: "CRMs", chat: "Team chats (alert postbacks)" };

async function templatesPage() {
  mount(main(), h("p", {}, "Loading…"));
  const r = await api("GET", "/templates");
  if (!r.ok) return mount(main(), h("p", { class: "error" }, errorText(r)));
  const groups = Object.entries(CATEGORIES).map(([cat, title]) => {
    const items = r.data.items.filter((t) => t.category === cat);
    if (!items.length) return null;
    return h("section", { class: "card" }, h("h2", {}, title),
      h("ul", { class: "templates" }, items.map((t) => h("li", {},
        h("a", { href: `#/templates/${encodeURIComponent(t.id)}`, class: "tpl-name", "data-id": t.id }, t.name),
        " — ", h("span", { class: "hint" }, t.summary)))));
  });
  mount(main(), h("div", { class: "bar" }, h("h1", {}, "New postback from a template")),
    h("p", { class: "hint" }, "Pick a destination, fill in what it needs; the result is an ordinary postback you can edit."), groups);
}

// The template's request fields with the inputs put in (secret ones masked): what the
// postback will hold, before macros are rendered.
export function fillTemplate(t, inputs, mask) {
  const put = (text) => text.replace(/\{input\.([A-Za-z0-9_]+)\}/g, (_, name) => {
    const input = t.inputs.find((i) => i.name === name);
    const v = inputs[name] || (input && input.default) || "";
    return input && input.secret && mask && v ? "[REDACTED]" : v;
  });
  const f = t.fields;
  return {
    method: f.method,
    url: put(f.url),
    headers: Object.fromEntries(Object.entries(f.headers || {}).map(([k, v]) => [k, put(v)])),
    body: f.body ? put(f.body) : null,
  };
}

async function templateFormPage(id) {
  mount(main(), h("p", {}, "Loading…"));
  const r = await api("GET", `/templates/${encodeURIComponent(id)}`);
  if (!r.ok) return mount(main(), h("p", { class: "error" }, errorText(r)));
  const t = r.data;
  const inputs = t.inputs.map((i) => field(`${i.label}${i.required ? "" : " (optional)"}`, `template.inputs.${i.name}`,
    h("input", { id: `tpl-input-${i.name}`, type: i.secret ? "password" : "text", autocomplete: "off", pattern: i.pattern,
      required: i.required, placeholder: i.default || "", "data-input": i.name }),
    i.secret ? "secret: sent to the receiver, shown as [REDACTED] everywhere else" : null));
  const preview = h("div", { id: "tpl-preview", class: "result" });
  const form = h("form", { id: "template-form", class: "card", novalidate: true },
    h("p", { id: "form-error", class: "error", role: "alert" }),
    h("p", { class: "hint" }, t.summary, " ", h("a", { href: t.docs_url, target: "_blank", rel: "noopener noreferrer" }, "Format")),
    h("div", { class: "grid" },
      field("Name", "name", h("input", { value: t.name, maxlength: 200 })),
      field("Type", "type", h("select", { value: t.types[0] }, t.types.map((x) => h("option", { value: x }, x))))),
    inputs,
    h("div", { class: "actions" },
      h("button", { type: "button", id: "tpl-preview-button", onclick: () => showPreview() }, "Preview"),
      h("button", { type: "submit", id: "tpl-save" }, "Create"),
      h("a", { href: "#/templates", class: "button secondary" }, "Back")));
  const values = () => Object.fromEntries([...form.querySelectorAll("[data-input]")].map((el) => [el.dataset.input, el.value.trim()]).filter(([, v]) => v !== ""));
  function showPreview() {
    clearErrors(form);
    mount(preview, h("h2", {}, "Preview"),
      h("p", { class: "hint" }, "The request fields the postback will hold; the macros ({…}) are filled per event — save, then Preview renders them for a sample event."),
      requestView(fillTemplate(t, values(), true)));
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    const val = (n) => form.querySelector(`[data-field="${n}"]`);
    const body = { name: val("name").value, type: val("type").value, template: { id: t.id, inputs: values() } };
    const res = await api("POST", "/postbacks", body);
    if (!res.ok) return showFieldError(form, (res.data && res.data.error) || { message: errorText(res) });
    flash = `Created from the template ${t.name}: version ${res.data.version ?? 1}.`;
    location.hash = `#/postbacks/${encodeURIComponent(res.data.id)}`;
  });
  mount(main(), h("div", { class: "bar" }, h("h1", {}, `New postback: ${t.name}`), h("span", { class: "mono" }, `${t.id} · v${t.version}`)), form, preview);
}
