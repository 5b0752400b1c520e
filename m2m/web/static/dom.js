// Building the DOM without ever parsing data as HTML: every text goes in as a text node.

const PROPERTIES = new Set(["value", "checked", "disabled", "selected", "hidden", "required"]);
const SVG_NS = "http://www.w3.org/2000/svg";

function build(element, props, children) {
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(element.dataset, value);
    } else if (PROPERTIES.has(key)) {
      element[key] = value;
    } else {
      element.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

/** Append children: nodes as they are, anything else as text; null and false are skipped. */
export function append(element, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

/** `h("a", {href: "#/"}, "Fleet")`: an HTML element with attributes, listeners, children. */
export function h(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

/** The same for SVG elements. */
export function svg(tag, props, ...children) {
  return build(document.createElementNS(SVG_NS, tag), props, children);
}

export function replace(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

// -- time --------------------------------------------------------------------------------

const UNITS = [
  [60, "s", 1],
  [3600, "min", 60],
  [86400, "h", 3600],
  [86400 * 30, "d", 86400],
];

function parseTime(text) {
  if (!text) return null;
  const time = new Date(text);
  return Number.isNaN(time.getTime()) ? null : time;
}

/** "just now", "5 min ago", "3 d ago"; the date itself past a month. */
function relativeTime(text, now = Date.now()) {
  const time = parseTime(text);
  if (time === null) return "never";
  const seconds = Math.round((now - time.getTime()) / 1000);
  if (seconds < 5) return "just now";
  for (const [limit, unit, size] of UNITS) {
    if (seconds < limit) return `${Math.floor(seconds / size)} ${unit} ago`;
  }
  return time.toLocaleDateString();
}

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** Local time, "2026-01-31 23:59:59". */
export function absoluteTime(text) {
  const t = parseTime(text);
  if (t === null) return "—";
  return (
    `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ` +
    `${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`
  );
}

/** A <time> showing how long ago, kept current by `refreshRelativeTimes`. */
export function timeAgo(text) {
  if (!parseTime(text)) return h("span", { class: "muted" }, "never");
  return h(
    "time",
    { datetime: text, title: absoluteTime(text), dataset: { relative: "" } },
    relativeTime(text),
  );
}

export function refreshRelativeTimes(root = document) {
  for (const element of root.querySelectorAll("time[data-relative]")) {
    element.textContent = relativeTime(element.getAttribute("datetime"));
  }
}

export function later(a, b) {
  const ta = parseTime(a);
  const tb = parseTime(b);
  if (ta === null) return b ?? null;
  if (tb === null) return a;
  return tb > ta ? b : a;
}

// -- values ------------------------------------------------------------------------------

const NUMBER = /^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$/;

/** A record's value as a number, if it is one or a string holding one (`D T 21.5`). */
export function numericValue(data) {
  if (typeof data === "number") return Number.isFinite(data) ? data : null;
  if (typeof data === "string" && NUMBER.test(data)) return Number(data);
  return null;
}

/** A record's data as one line of text. */
export function dataText(data) {
  if (typeof data === "string") return data;
  if (data && typeof data === "object" && !Array.isArray(data)) {
    const flat = Object.values(data).every((v) => v === null || typeof v !== "object");
    if (flat) {
      return Object.entries(data)
        .map(([key, value]) => `${key} ${value}`)
        .join(" · ");
    }
  }
  return JSON.stringify(data);
}

export function byteSize(bytes) {
  if (typeof bytes !== "number") return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let size = bytes;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${size.toFixed(size < 10 ? 1 : 0)} ${units[unit]}`;
}

// -- small widgets -----------------------------------------------------------------------

export function badge(text, kind) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

export function connectionBadge(connected) {
  return connected ? badge("Connected", "ok") : badge("Offline", "off");
}

/** A short message for everyone, read out by screen readers too. */
export function notify(message, kind = "info") {
  const area = document.getElementById("toasts");
  if (!area) return;
  const toast = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : null },
    message);
  area.append(toast);
  setTimeout(() => toast.remove(), kind === "error" ? 8000 : 4000);
}

/**
 * A button that asks again before acting: the first click arms it ("Really delete?"),
 * a second one within a few seconds acts. No modal dialog to get lost behind.
 */
export function confirmButton(label, armedLabel, action, props = {}) {
  let armed = null;
  const button = h("button", { type: "button", class: "button-danger small", ...props }, label);
  const name = button.getAttribute("aria-label");
  const disarm = () => {
    armed = null;
    button.textContent = label;
    button.classList.remove("armed");
    if (name) button.setAttribute("aria-label", name);
  };
  button.addEventListener("click", async () => {
    if (armed === null) {
      button.textContent = armedLabel;
      button.classList.add("armed");
      if (name) button.setAttribute("aria-label", `${name}: ${armedLabel}`);
      armed = setTimeout(disarm, 4000);
      return;
    }
    clearTimeout(armed);
    button.disabled = true;
    try {
      await action();
    } finally {
      button.disabled = false;
      disarm();
    }
  });
  return button;
}

export function section(title, ...children) {
  const id = `section-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h(
    "section",
    { class: "card", "aria-labelledby": id },
    h("h2", { id }, title),
    ...children,
  );
}

export function emptyNote(text) {
  return h("p", { class: "empty" }, text);
}
