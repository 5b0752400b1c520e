// The fleet: every device the user may see, a page at a time, kept current by live events.
//
// Pending counts are not in the device list: they come from GET /devices/{id}, fetched
// only for the rows on screen (an IntersectionObserver), a few at a time, and again when
// a live event says that device's settings or commands changed. A fleet of 10 000 costs
// the rows someone actually looks at, not 10 000 requests.

import { api, isAbort, LiveStream, part, query, TaskQueue } from "./api.js";
import { connectionBadge, h, later, notify, replace, timeAgo } from "./dom.js";

const PAGE = 50;
const MAX_PAGE = 1000;
const DETAILS_AT_ONCE = 4;
const ADDS_AT_ONCE = 20;
const SEARCH_DELAY = 250;

export function fleetPage(main, { params }) {
  document.title = "Fleet · m2m";
  const controller = new AbortController();
  const signal = controller.signal;
  const filters = {
    ident: params.get("ident") ?? "",
    domain: params.get("domain") ?? "",
    connected: params.get("connected") ?? "",
  };
  const rows = new Map(); // device id → {row, tr, pending}
  const heard = new Map(); // device id → what live events said since the page opened
  const details = new TaskQueue(DETAILS_AT_ONCE);
  const adding = new Set();
  let next = null;
  let generation = 0;
  let stream = null;

  // -- the page ---------------------------------------------------------------------------

  const search = h("input", {
    id: "fleet-search", type: "search", value: filters.ident, placeholder: "Ident contains…",
    autocomplete: "off",
  });
  const domainSelect = h("select", { id: "fleet-domain" }, h("option", { value: "" }, "All domains"));
  const connectedSelect = h(
    "select",
    { id: "fleet-connected" },
    h("option", { value: "" }, "Any"),
    h("option", { value: "true" }, "Connected"),
    h("option", { value: "false" }, "Offline"),
  );
  connectedSelect.value = filters.connected;
  const domainField = h("div", { class: "field", hidden: true },
    h("label", { for: "fleet-domain" }, "Domain"), domainSelect);
  const body = h("tbody");
  const count = h("p", { class: "muted count", "aria-live": "polite" });
  const note = h("p", { class: "note", role: "status", hidden: true });
  const more = h("button", { type: "button", class: "button-secondary", hidden: true, onclick: loadMore },
    "Load more devices");
  const problem = h("p", { class: "form-error", role: "alert" });

  replace(
    main,
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Fleet"),
      count,
    ),
    h(
      "form",
      { class: "filters card", role: "search", onsubmit: (e) => e.preventDefault() },
      h("div", { class: "field grow" }, h("label", { for: "fleet-search" }, "Search by ident"), search),
      domainField,
      h("div", { class: "field" }, h("label", { for: "fleet-connected" }, "Connection"), connectedSelect),
    ),
    note,
    problem,
    h(
      "div",
      { class: "card table-card" },
      h(
        "div",
        { class: "table-scroll" },
        h(
          "table",
          { class: "table fleet", "aria-label": "Devices" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ["Device", "Domain", "Connection", "Address", "Last seen", "Pending"].map((name) =>
                h("th", { scope: "col" }, name),
              ),
            ),
          ),
          body,
        ),
      ),
      h("div", { class: "table-foot" }, more),
    ),
  );

  const observer = new IntersectionObserver(
    (entries) => {
      for (const entry of entries) {
        if (entry.isIntersecting) fetchPending(entry.target.dataset.deviceId);
      }
    },
    { rootMargin: "100px" },
  );

  // -- rows ---------------------------------------------------------------------------------

  function merged(row) {
    const news = heard.get(row.id);
    if (!news) return row;
    const result = { ...row, last_seen: later(row.last_seen, news.last_seen) };
    if (news.since && later(row.since, news.since) === news.since && news.since !== row.since) {
      Object.assign(result, { connected: news.connected, since: news.since, source: news.source });
    }
    return result;
  }

  function pendingCell(pending) {
    if (pending === undefined) return h("span", { class: "muted", "aria-label": "not loaded yet" }, "…");
    const parts = [];
    if (pending.settings) {
      parts.push(h("span", { class: "pill pill-warn" },
        `${pending.settings} setting${pending.settings === 1 ? "" : "s"}`));
    }
    if (pending.commands) {
      parts.push(h("span", { class: "pill pill-warn" },
        `${pending.commands} command${pending.commands === 1 ? "" : "s"}`));
    }
    return parts.length ? parts : h("span", { class: "muted", title: "Nothing pending" }, "—");
  }

  function render(entry) {
    const row = entry.row;
    const href = `#/device/${part(row.id)}`;
    replace(
      entry.tr,
      h("th", { scope: "row" }, h("a", { href, class: "ident" }, row.ident)),
      h("td", {}, row.domain ?? h("span", { class: "muted" }, "—")),
      h("td", {}, h("span", { class: "connection" }, connectionBadge(row.connected),
        row.since && h("span", { class: "muted small" }, " since ", timeAgo(row.since)))),
      h("td", { class: "mono" }, row.source ?? "—"),
      h("td", {}, timeAgo(row.last_seen)),
      h("td", { class: "pending" }, pendingCell(entry.pending)),
    );
    entry.tr.dataset.connected = String(row.connected);
  }

  function place(entry) {
    const after = [...rows.values()].find((other) => other.row.ident > entry.row.ident && other.tr.isConnected);
    body.insertBefore(entry.tr, after ? after.tr : null);
  }

  function show(row) {
    const existing = rows.get(row.id);
    if (existing) {
      existing.row = merged(row);
      render(existing);
      return existing;
    }
    const tr = h("tr", { dataset: { deviceId: row.id } });
    const entry = { row: merged(row), tr, pending: undefined };
    rows.set(row.id, entry);
    render(entry);
    observer.observe(tr);
    return entry;
  }

  function update(id, change) {
    const entry = rows.get(id);
    if (!entry) return false;
    Object.assign(entry.row, change);
    render(entry);
    return true;
  }

  function showCount() {
    count.textContent = `${rows.size} device${rows.size === 1 ? "" : "s"} shown${next ? ", more below" : ""}`;
    more.hidden = next === null;
  }

  // -- loading --------------------------------------------------------------------------------

  function listQuery(limit, cursor) {
    return query({ ...filters, limit, cursor });
  }

  async function reload(limit = PAGE) {
    const mine = ++generation;
    problem.textContent = "";
    try {
      const page = await api(`/devices${listQuery(Math.min(MAX_PAGE, Math.max(PAGE, limit)))}`, { signal });
      if (mine !== generation) return;
      details.clear();
      adding.clear();
      observer.disconnect();
      rows.clear();
      body.replaceChildren();
      for (const row of page.devices) body.append(show(row).tr);
      next = page.next;
      if (!rows.size) {
        body.append(h("tr", {}, h("td", { colspan: 6, class: "empty" },
          filters.ident || filters.domain || filters.connected
            ? "No device matches these filters." : "No devices yet.")));
      }
      showCount();
    } catch (error) {
      if (!isAbort(error) && mine === generation) problem.textContent = `Could not list devices: ${error.message}`;
    }
  }

  async function loadMore() {
    if (next === null) return;
    const mine = generation;
    more.disabled = true;
    try {
      const page = await api(`/devices${listQuery(PAGE, next)}`, { signal });
      if (mine !== generation) return;
      for (const row of page.devices) {
        if (!rows.has(row.id)) body.append(show(row).tr);
      }
      next = page.next;
      showCount();
    } catch (error) {
      if (!isAbort(error)) notify(`Could not load more devices: ${error.message}`, "error");
    } finally {
      more.disabled = false;
    }
  }

  function fetchPending(id) {
    const entry = rows.get(id);
    if (!entry || entry.loading) return;
    entry.loading = true;
    details.push(async () => {
      try {
        const detail = await api(`/devices/${part(id)}`, { signal });
        entry.pending = {
          settings: detail.settings.filter((s) => s.pending).length,
          commands: detail.commands.filter((c) => c.pending).length,
        };
        if (rows.get(id) === entry) render(entry);
      } finally {
        entry.loading = false;
      }
    });
  }

  function pendingChanged({ device_id: id }) {
    const entry = rows.get(id);
    if (entry && entry.pending !== undefined) fetchPending(id);
  }

  /** A device we do not show came online: show it if it belongs in the list. */
  function maybeAdd(id) {
    if (adding.has(id)) return;
    if (adding.size >= ADDS_AT_ONCE) {
      scheduleReload();
      return;
    }
    adding.add(id);
    details.push(async () => {
      try {
        const row = await api(`/devices/${part(id)}`, { signal });
        const last = rows.get(body.lastElementChild?.dataset.deviceId)?.row.ident;
        const fits =
          (!filters.ident || row.ident.toLowerCase().includes(filters.ident.toLowerCase())) &&
          (!filters.domain || filters.domain === row.domain || filters.domain === row.domain_id) &&
          (next === null || (last !== undefined && row.ident < last));
        if (fits && !rows.has(id)) {
          const { settings, commands, status, last_location, ...summary } = row;
          const entry = show(summary);
          if (filters.connected && String(entry.row.connected) !== filters.connected) {
            rows.delete(id);
            observer.unobserve(entry.tr);
            return;
          }
          body.querySelector("td.empty")?.parentElement.remove();
          place(entry);
          showCount();
        }
      } finally {
        adding.delete(id);
      }
    });
  }

  let reloadTimer = null;
  function scheduleReload(why) {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(async () => {
      await reload(rows.size);
      if (why) {
        note.textContent = why;
        note.hidden = false;
      }
    }, 300);
  }

  // -- live -------------------------------------------------------------------------------------

  function hear(id, news) {
    heard.set(id, { ...heard.get(id), ...news });
  }

  function connection(connected) {
    return ({ device_id: id, since, source }) => {
      hear(id, { connected, since, source });
      if (!update(id, { connected, since, source: source ?? rows.get(id)?.row.source }) && connected) {
        maybeAdd(id);
      }
    };
  }

  function openStream() {
    stream?.close();
    stream = new LiveStream(
      { domain: filters.domain },
      {
        connected: connection(true),
        disconnected: connection(false),
        record: ({ device_id: id, time }) => {
          const seen = later(heard.get(id)?.last_seen, time);
          hear(id, { last_seen: seen });
          const entry = rows.get(id);
          if (entry && entry.row.last_seen !== later(entry.row.last_seen, seen)) {
            update(id, { last_seen: seen });
          }
        },
        settings_changed: pendingChanged,
        setting_acked: pendingChanged,
        commands_changed: pendingChanged,
        command_answered: pendingChanged,
        receiver_lost: () => scheduleReload(),
        skipped: ({ count: skipped }) =>
          scheduleReload(`${skipped} live update${skipped === 1 ? "" : "s"} skipped, refreshed.`),
      },
      () => scheduleReload(),
    );
  }

  // -- filters ----------------------------------------------------------------------------------

  function filtersChanged() {
    const text = query(filters).slice(1);
    history.replaceState(null, "", `#/${text ? `?${text}` : ""}`);
    note.hidden = true;
    heard.clear();
    reload();
  }

  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      filters.ident = search.value.trim();
      filtersChanged();
    }, SEARCH_DELAY);
  });
  connectedSelect.addEventListener("change", () => {
    filters.connected = connectedSelect.value;
    filtersChanged();
  });
  domainSelect.addEventListener("change", () => {
    filters.domain = domainSelect.value;
    filtersChanged();
    openStream();
  });

  async function loadDomains() {
    try {
      const domains = await api("/domains", { signal });
      for (const domain of domains) {
        domainSelect.append(h("option", { value: domain.name }, `${domain.name} (${domain.devices})`));
      }
      domainSelect.value = filters.domain;
      domainField.hidden = false;
    } catch (error) {
      if (!isAbort(error) && filters.domain) domainField.hidden = false;
    }
  }

  openStream();
  loadDomains();
  reload();

  return () => {
    controller.abort();
    stream?.close();
    observer.disconnect();
    details.clear();
    clearTimeout(reloadTimer);
    clearTimeout(searchTimer);
  };
}
