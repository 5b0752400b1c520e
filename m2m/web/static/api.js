// The HTTP API (/api/v1) and its live events, as the pages use them.

const BASE = "/api/v1";

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let unauthorized = () => {};

/** What to do when the API says we are not (or no longer) logged in. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** `?a=1&b=2` from an object; empty, null and undefined values are left out. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export const part = encodeURIComponent;

/**
 * Call the API; the parsed JSON answer (null for 204). Any other status throws an ApiError
 * carrying the server's `{"error"}` text; a 401 also sends the person back to the login.
 */
export async function api(path, { method = "GET", json, body, signal } = {}) {
  const init = { method, signal, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  const response = await fetch(BASE + path, init);
  if (response.status === 401 && path !== "/login") {
    unauthorized();
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error ?? message;
    } catch {
      // not JSON: keep the status line
    }
    throw new ApiError(response.status, message);
  }
  return response.status === 204 ? null : response.json();
}

export const isAbort = (error) => error?.name === "AbortError";

/** Everyone interested in whether the live stream is up ("open", "connecting"). */
export const liveState = new EventTarget();

const EVENTS = [
  "connected", "disconnected", "record", "setting_acked", "command_answered", "status",
  "settings_changed", "commands_changed", "receiver_lost", "skipped",
];

/**
 * `GET /api/v1/events` as an EventSource (the session cookie goes with it). `handlers`
 * maps event names to functions of the parsed data; `resync` runs when the stream comes
 * back after a break, since what happened meanwhile was not sent.
 */
export class LiveStream {
  constructor(params, handlers, resync) {
    this.url = `${BASE}/events${query(params)}`;
    this.handlers = handlers;
    this.resync = resync;
    this.broken = false;
    this.closed = false;
    this.retry = null;
    this.open();
  }

  open() {
    this.source = new EventSource(this.url);
    this.tell("connecting");
    this.source.onopen = () => {
      this.tell("open");
      if (this.broken) {
        this.broken = false;
        this.resync?.();
      }
    };
    this.source.onerror = () => {
      this.broken = true;
      this.tell("connecting");
      if (this.source.readyState === EventSource.CLOSED) {
        // The server refused the stream (not a dropped one, which the browser retries):
        // logged out? /me tells, and a 401 there shows the login form.
        this.retry = setTimeout(() => {
          api("/me").then(() => this.closed || this.open(), () => {});
        }, 3000);
      }
    };
    for (const name of EVENTS) {
      const handler = this.handlers[name];
      if (handler) this.source.addEventListener(name, (event) => handler(JSON.parse(event.data)));
    }
  }

  tell(state) {
    if (!this.closed) liveState.dispatchEvent(new CustomEvent("change", { detail: state }));
  }

  close() {
    this.tell("off");
    this.closed = true;
    clearTimeout(this.retry);
    this.source.close();
  }
}

/** Run at most `size` tasks at a time, in the order they were queued. */
export class TaskQueue {
  constructor(size) {
    this.size = size;
    this.running = 0;
    this.waiting = [];
  }

  get length() {
    return this.running + this.waiting.length;
  }

  push(task) {
    this.waiting.push(task);
    this.next();
  }

  clear() {
    this.waiting = [];
  }

  next() {
    while (this.running < this.size && this.waiting.length) {
      const task = this.waiting.shift();
      this.running += 1;
      Promise.resolve()
        .then(task)
        .catch(() => {})
        .finally(() => {
          this.running -= 1;
          this.next();
        });
    }
  }
}
