// One device: identity and connection, settings, commands, status, plots, track, records.
// Everything follows the device's live events (GET /api/v1/events?device=<id>).

import { api, isAbort, LiveStream, part, query } from "./api.js";
import {
  absoluteTime, badge, confirmButton, connectionBadge, dataText, emptyNote, h, later, notify,
  numericValue, replace, section, timeAgo,
} from "./dom.js";
import { SeriesPlot } from "./plot.js";
import { position, Track } from "./track.js";

const RANGES = [
  { key: "1h", label: "1 h", seconds: 3600 },
  { key: "24h", label: "24 h", seconds: 86400 },
  { key: "7d", label: "7 d", seconds: 7 * 86400 },
  { key: "30d", label: "30 d", seconds: 30 * 86400 },
  { key: "1y", label: "1 y", seconds: 365 * 86400 },
];
const LOCATION = "sen:loc";
const DEVICE_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const RECORDS_SHOWN = 50;
const RECORDS_KEPT = 200;
const TRACK_POINTS = 1000;
const SENT_KEY = "m2m.sentCommands";
const SENT_KEPT = 500;

/** Texts of the commands sent from this browser: the API forgets them once answered. */
const sentCommands = {
  all() {
    try {
      return JSON.parse(localStorage.getItem(SENT_KEY) ?? "{}");
    } catch {
      return {};
    }
  },
  text(id) {
    return this.all()[id];
  },
  keep(id, text) {
    const entries = Object.entries({ ...this.all(), [id]: text }).slice(-SENT_KEPT);
    localStorage.setItem(SENT_KEY, JSON.stringify(Object.fromEntries(entries)));
  },
};

export function devicePage(main, { args: [asked], params }) {
  document.title = "Device · m2m";
  const controller = new AbortController();
  const signal = controller.signal;
  let device = null;
  let series = null;
  let stream = null;
  let range = RANGES.find((r) => r.key === params.get("range")) ?? RANGES[1];
  const plots = new Map(); // type → {plot, latest, loaded, waiting}
  const shownRecords = new Set();
  let track = null;

  const title = h("h1", { class: "ident" }, asked);
  const crumb = h("span", { "aria-current": "page" }, asked);
  const headBadge = h("span");
  const identity = h("dl", { class: "facts" });
  const note = h("p", { class: "note", role: "status", hidden: true });
  const problem = h("p", { class: "form-error", role: "alert" });

  // -- settings -----------------------------------------------------------------------------
  const settingsBody = h("tbody");
  const settingName = h("input", { id: "setting-name", required: true, autocomplete: "off", spellcheck: "false" });
  const settingValue = h("input", { id: "setting-value", autocomplete: "off", spellcheck: "false" });
  const settingsSection = section(
    "Settings",
    h("div", { class: "table-scroll" },
      h("table", { class: "table", "aria-label": "Settings" },
        h("thead", {}, h("tr", {}, ["Name", "Value", "State", ""].map((n) => h("th", { scope: "col" }, n)))),
        settingsBody)),
    h("form", { class: "inline-form", "aria-label": "Set a setting", onsubmit: saveSetting },
      h("div", { class: "field" }, h("label", { for: "setting-name" }, "Name"), settingName),
      h("div", { class: "field grow" }, h("label", { for: "setting-value" }, "Value"), settingValue),
      h("button", { type: "submit", class: "button-primary" }, "Save setting")),
  );

  // -- commands -----------------------------------------------------------------------------
  const commandsBody = h("tbody");
  const commandText = h("input", { id: "command-text", required: true, autocomplete: "off", spellcheck: "false" });
  const commandsSection = section(
    "Commands",
    h("form", { class: "inline-form", "aria-label": "Send a command", onsubmit: sendCommand },
      h("div", { class: "field grow" }, h("label", { for: "command-text" }, "Command"), commandText),
      h("button", { type: "submit", class: "button-primary" }, "Send command")),
    h("div", { class: "table-scroll" },
      h("table", { class: "table", "aria-label": "Commands" },
        h("thead", {}, h("tr", {}, ["Command", "State", "Response", ""].map((n) => h("th", { scope: "col" }, n)))),
        commandsBody)),
  );

  // -- status, track, plots, records ----------------------------------------------------------
  const statusList = h("dl", { class: "facts" });
  const statusSection = section("Status", statusList);
  const routesBody = h("tbody");
  const routesSection = section(
    "Routes",
    h("p", { class: "muted" }, "Channels sent to other topics than converter-m2mp, first match wins."),
    h("div", { class: "table-scroll" },
      h("table", { class: "table", "aria-label": "Routes" },
        h("thead", {}, h("tr", {}, ["Priority", "Channel regex", "Topic"].map((n) => h("th", { scope: "col" }, n)))),
        routesBody)),
  );
  routesSection.hidden = true;
  const trackHolder = h("div");
  const trackSection = section("Track", trackHolder);
  trackSection.hidden = true;
  const rangeButtons = RANGES.map((r) =>
    h("button", { type: "button", class: "segment", "aria-pressed": String(r === range), onclick: () => pickRange(r) },
      r.label));
  const plotGrid = h("div", { class: "plots" });
  const plotsEmpty = emptyNote("No numeric sensor values yet.");
  const plotsSection = section(
    "Sensors",
    h("div", { class: "segmented", role: "group", "aria-label": "Time range" }, rangeButtons),
    plotsEmpty,
    plotGrid,
  );
  const recordsBody = h("tbody");
  const recordsSection = section(
    "Latest records",
    h("div", { class: "table-scroll records-scroll" },
      h("table", { class: "table records", "aria-label": "Latest records" },
        h("thead", {}, h("tr", {}, ["Time", "Type", "Data"].map((n) => h("th", { scope: "col" }, n)))),
        recordsBody)),
  );

  replace(
    main,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/" }, "Fleet"), " / ", crumb),
    h("div", { class: "page-head" }, title, headBadge),
    note,
    problem,
    h("section", { class: "card", "aria-label": "Identity and connection" }, identity),
    h("div", { class: "columns" },
      h("div", { class: "column" }, settingsSection, commandsSection),
      h("div", { class: "column" }, statusSection, routesSection, trackSection)),
    plotsSection,
    recordsSection,
  );

  // -- identity -------------------------------------------------------------------------------

  function renderIdentity() {
    const d = device;
    document.title = `${d.ident} · m2m`;
    title.textContent = d.ident;
    crumb.textContent = d.ident;
    replace(headBadge, connectionBadge(d.connected));
    const location = d.last_location;
    const fact = (name, ...value) => h("div", {}, h("dt", {}, name), h("dd", {}, ...value));
    replace(
      identity,
      fact("Ident", h("span", { class: "mono" }, d.ident)),
      fact("Device id", h("span", { class: "mono" }, d.id)),
      fact("Domain", d.domain ?? "—"),
      fact("Connection", connectionBadge(d.connected),
        d.since && h("span", { class: "muted" }, d.connected ? " since " : " last ", timeAgo(d.since))),
      fact("Address", h("span", { class: "mono" }, d.source ?? "—")),
      fact("Last seen", timeAgo(d.last_seen)),
      location && fact("Last position", `${location.lat}, ${location.lon}`,
        h("span", { class: "muted" }, " ", timeAgo(location.time))),
    );
  }

  function renderStatus() {
    const entries = Object.entries(device.status ?? {}).sort(([a], [b]) => a.localeCompare(b));
    if (!entries.length) {
      replace(statusList, emptyNote("No status reported yet."));
      return;
    }
    replace(statusList, entries.map(([name, value]) =>
      h("div", {}, h("dt", { class: "mono" }, name), h("dd", { class: "mono" }, value))));
  }

  async function loadRoutes() {
    try {
      const routes = await api(`/devices/${part(device.id)}/routes`, { signal });
      routesSection.hidden = !routes.length;
      replace(routesBody, routes.map((route) => h("tr", {},
        h("td", {}, String(route.priority)),
        h("td", { class: "mono" }, route.regex),
        h("td", { class: "mono" }, route.topic))));
    } catch (error) {
      if (!isAbort(error)) notify(`Could not load the routes: ${error.message}`, "error");
    }
  }

  // -- settings -------------------------------------------------------------------------------

  function settingState(setting) {
    if (setting.pending) return badge("Pending", "warn");
    if (setting.acked_at) {
      return h("span", { class: "state" }, badge("Acknowledged", "ok"), " ", timeAgo(setting.acked_at));
    }
    return badge("Reported", "neutral");
  }

  function renderSettings(settings) {
    if (!settings.length) {
      replace(settingsBody, h("tr", {}, h("td", { colspan: 4, class: "empty" }, "No settings.")));
      return;
    }
    replace(settingsBody, settings.map((setting) =>
      h("tr", { dataset: { setting: setting.name, pending: String(setting.pending) } },
        h("th", { scope: "row", class: "mono" }, setting.name),
        h("td", { class: "mono wrap" }, setting.value ?? "—"),
        h("td", {}, settingState(setting)),
        h("td", { class: "actions" },
          h("button", { type: "button", class: "button-quiet small", "aria-label": `Edit ${setting.name}`,
            onclick: () => {
              settingName.value = setting.name;
              settingValue.value = setting.value ?? "";
              settingValue.focus();
            } }, "Edit"),
          confirmButton("Delete", "Really delete?", () => deleteSetting(setting.name),
            { "aria-label": `Delete ${setting.name}` })))));
  }

  async function loadSettings() {
    try {
      renderSettings(await api(`/devices/${part(device.id)}/settings`, { signal }));
    } catch (error) {
      if (!isAbort(error)) notify(`Could not load the settings: ${error.message}`, "error");
    }
  }

  async function saveSetting(event) {
    event.preventDefault();
    const name = settingName.value.trim();
    try {
      const saved = await api(`/devices/${part(device.id)}/settings/${part(name)}`,
        { method: "PUT", json: { value: settingValue.value } });
      notify(saved.pushed ? `Setting ${name} sent to the device.`
        : `Setting ${name} saved: the device gets it when it next connects.`);
      settingName.value = "";
      settingValue.value = "";
      await loadSettings();
    } catch (error) {
      if (!isAbort(error)) notify(`Could not set ${name}: ${error.message}`, "error");
    }
  }

  async function deleteSetting(name) {
    try {
      await api(`/devices/${part(device.id)}/settings/${part(name)}`, { method: "DELETE" });
      await loadSettings();
    } catch (error) {
      notify(`Could not delete ${name}: ${error.message}`, "error");
    }
  }

  // -- commands -------------------------------------------------------------------------------

  function renderCommands(commands) {
    if (!commands.length) {
      replace(commandsBody, h("tr", {}, h("td", { colspan: 4, class: "empty" }, "No commands.")));
      return;
    }
    replace(commandsBody, commands.map((command) => {
      const text = command.text ?? sentCommands.text(command.id);
      return h("tr", { dataset: { command: command.id, pending: String(command.pending) } },
        h("th", { scope: "row", class: "mono wrap" },
          text ?? h("span", { class: "muted", title: command.id }, "(sent elsewhere)")),
        h("td", {}, command.pending ? badge("Pending", "warn") : badge("Answered", "ok")),
        h("td", {}, command.response === null ? h("span", { class: "muted" }, "—")
          : h("pre", { class: "response" }, command.response || "(empty)")),
        h("td", { class: "actions" },
          confirmButton(command.pending ? "Cancel" : "Remove", "Really?", () => deleteCommand(command.id),
            { "aria-label": `${command.pending ? "Cancel" : "Remove"} command ${text ?? command.id}` })));
    }));
  }

  async function loadCommands() {
    try {
      renderCommands(await api(`/devices/${part(device.id)}/commands`, { signal }));
    } catch (error) {
      if (!isAbort(error)) notify(`Could not load the commands: ${error.message}`, "error");
    }
  }

  async function sendCommand(event) {
    event.preventDefault();
    const text = commandText.value;
    try {
      const created = await api(`/devices/${part(device.id)}/commands`, { method: "POST", json: { text } });
      sentCommands.keep(created.id, text);
      commandText.value = "";
      await loadCommands();
    } catch (error) {
      if (!isAbort(error)) notify(`Could not send the command: ${error.message}`, "error");
    }
  }

  async function deleteCommand(id) {
    try {
      await api(`/devices/${part(device.id)}/commands/${part(id)}`, { method: "DELETE" });
      await loadCommands();
    } catch (error) {
      notify(`Could not remove the command: ${error.message}`, "error");
    }
  }

  // -- records --------------------------------------------------------------------------------

  function recordRow(record, fresh) {
    return h("tr", { class: fresh ? "fresh" : null, dataset: { type: record.type, uuid: record.uuid ?? "" } },
      h("td", { class: "nowrap" }, h("time", { datetime: record.time }, absoluteTime(record.time))),
      h("td", { class: "mono" }, record.type),
      h("td", { class: "mono wrap" }, dataText(record.data)));
  }

  async function loadRecords() {
    try {
      const page = await api(`${series}/records${query({ limit: RECORDS_SHOWN })}`, { signal });
      const fetched = new Set(page.records.map((record) => record.uuid));
      // Records heard live while the page was on its way may not have been stored yet.
      const heardOnly = [...recordsBody.querySelectorAll("tr.fresh")].filter((tr) => !fetched.has(tr.dataset.uuid));
      shownRecords.clear();
      for (const tr of heardOnly) shownRecords.add(tr.dataset.uuid);
      for (const uuid of fetched) shownRecords.add(uuid);
      const rows = [...heardOnly, ...page.records.map((record) => recordRow(record, false))];
      replace(recordsBody, rows.length ? rows
        : h("tr", { class: "placeholder" }, h("td", { colspan: 3, class: "empty" }, "No records yet.")));
    } catch (error) {
      if (!isAbort(error)) notify(`Could not load the records: ${error.message}`, "error");
    }
  }

  function addRecord(record) {
    if (record.uuid && shownRecords.has(record.uuid)) return;
    shownRecords.add(record.uuid);
    recordsBody.querySelector("tr.placeholder")?.remove();
    recordsBody.prepend(recordRow(record, true));
    while (recordsBody.rows.length > RECORDS_KEPT) recordsBody.lastElementChild.remove();
  }

  // -- plots ----------------------------------------------------------------------------------

  function plotCard(type) {
    const latest = h("span", { class: "latest" });
    const body = h("div", { class: "plot-body" });
    const card = h("figure", { class: "plot-card", dataset: { type } },
      h("figcaption", {}, h("span", { class: "mono plot-title" }, type), latest), body);
    const entry = { card, latest, plot: new SeriesPlot(body, type), loaded: false, waiting: [] };
    const after = [...plotGrid.children].find((other) => other.dataset.type > type);
    plotGrid.insertBefore(card, after ?? null);
    plotsEmpty.hidden = true;
    plots.set(type, entry);
    return entry;
  }

  function showLatest(entry, value, time) {
    replace(entry.latest, h("strong", {}, String(value)), " ", h("span", { class: "muted" }, timeAgo(time)));
  }

  /** The type's downsampled points over the picked range, as many as ``width`` pixels take. */
  async function fetchPlot(type, width) {
    const to = new Date();
    const from = new Date(to.getTime() - range.seconds * 1000);
    const points = Math.min(1000, Math.max(60, Math.round(width || 600)));
    const rows = await api(`${series}/downsample${query({
      type, from: from.toISOString(), to: to.toISOString(), points })}`, { signal });
    return { rows, from, to };
  }

  function showPlot(entry, { rows, from, to }) {
    entry.plot.load(rows, from, to);
    entry.loaded = true;
    for (const [time, value] of entry.waiting.splice(0)) entry.plot.add(time, value);
  }

  async function loadPlot(type, entry) {
    entry.loaded = false;
    try {
      showPlot(entry, await fetchPlot(type, entry.card.clientWidth));
    } catch (error) {
      if (!isAbort(error)) notify(`Could not plot ${type}: ${error.message}`, "error");
    }
  }

  /** The newest record of a type, if its value is a number (or a string holding one). */
  async function numericLatest(type) {
    const page = await api(`${series}/records${query({ type, limit: 1 })}`, { signal });
    const record = page.records[0];
    const value = record && numericValue(record.data);
    return value === null || value === undefined ? null : { value, time: record.time };
  }

  function loadSensors() {
    return loadSensorsOf(series);
  }

  async function loadSensorsOf(key) {
    series = key;
    let types;
    try {
      const answer = await api(`${series}/types`, { signal });
      types = (Array.isArray(answer) ? answer : answer.types ?? []).map((t) => (typeof t === "string" ? t : t.type));
    } catch (error) {
      // No such device (404) is the page's to say.
      if (!isAbort(error) && error.status !== 404) {
        notify(`Could not list the sensor types: ${error.message}`, "error");
      }
      return;
    }
    if (types.includes(LOCATION)) loadTrack();
    // A plot's points are asked for with its newest value, not after it: one round trip.
    const width = plotGrid.clientWidth / 2;
    await Promise.all(types.filter((t) => t !== LOCATION && !t.startsWith("_")).map(async (type) => {
      const [latest, points] = await Promise.all([
        numericLatest(type).catch(() => null),
        fetchPlot(type, width).catch((error) => (isAbort(error) ? null : error)),
      ]);
      if (latest === null || plots.has(type)) return;
      const entry = plotCard(type);
      showLatest(entry, latest.value, latest.time);
      if (points === null) return;
      if (points instanceof Error) notify(`Could not plot ${type}: ${points.message}`, "error");
      else showPlot(entry, points);
    }));
  }

  function pickRange(picked) {
    range = picked;
    for (const [index, button] of rangeButtons.entries()) {
      button.setAttribute("aria-pressed", String(RANGES[index] === picked));
    }
    history.replaceState(null, "", `#/device/${part(asked)}?range=${picked.key}`);
    for (const [type, entry] of plots) loadPlot(type, entry);
  }

  function plotRecord(record) {
    const value = numericValue(record.data);
    if (value === null || record.type === LOCATION || record.type.startsWith("_")) return;
    const time = record.time ?? new Date().toISOString();
    let entry = plots.get(record.type);
    if (!entry) {
      // A type first seen live: start its plot with this value rather than fetch it again.
      entry = plotCard(record.type);
      const to = new Date();
      entry.plot.load([], new Date(to.getTime() - range.seconds * 1000), to);
      entry.loaded = true;
    }
    showLatest(entry, record.data, time);
    if (entry.loaded) entry.plot.add(time, value);
    else entry.waiting.push([time, value]);
  }

  // -- track ----------------------------------------------------------------------------------

  function ensureTrack() {
    if (!track) {
      track = new Track(trackHolder);
      trackSection.hidden = false;
    }
    return track;
  }

  async function loadTrack() {
    try {
      const page = await api(`${series}/records${query({ type: LOCATION, limit: TRACK_POINTS })}`, { signal });
      const points = page.records.map(position).filter(Boolean);
      if (points.length) ensureTrack().load(points);
    } catch (error) {
      if (!isAbort(error)) notify(`Could not load the track: ${error.message}`, "error");
    }
  }

  // -- everything, live ---------------------------------------------------------------------

  async function loadDevice() {
    device = await api(`/devices/${part(asked)}`, { signal });
    series = `/series/${part(`dev-${device.id}`)}`;
    renderIdentity();
    renderStatus();
    renderSettings(device.settings);
    renderCommands(device.commands);
  }

  async function refreshAll(why) {
    try {
      await loadDevice();
    } catch (error) {
      if (!isAbort(error)) problem.textContent = `Could not load the device: ${error.message}`;
      return;
    }
    await Promise.all([loadRoutes(), loadRecords(), loadTrack(), ...[...plots].map(([type, entry]) => loadPlot(type, entry))]);
    if (why) {
      note.textContent = why;
      note.hidden = false;
    }
  }

  function onRecord(record) {
    const time = record.time ?? new Date().toISOString();
    addRecord({ ...record, time });
    device.last_seen = later(device.last_seen, time);
    plotRecord({ ...record, time });
    if (record.type === LOCATION) {
      const point = position({ ...record, time });
      if (point) {
        ensureTrack().add(point);
        device.last_location = { time, lat: point.lat, lon: point.lon };
      }
    }
    renderIdentity();
  }

  function connection(connected) {
    return ({ since, source }) => {
      Object.assign(device, { connected, since: since ?? device.since, source: source ?? device.source });
      renderIdentity();
    };
  }

  async function start() {
    // Asked by id (as the fleet links it), the series is known at once: its plots need
    // not wait for the device's details.
    const sensors = DEVICE_ID.test(asked) ? loadSensorsOf(`/series/${part(`dev-${asked}`)}`) : null;
    try {
      await loadDevice();
    } catch (error) {
      if (isAbort(error)) return;
      if (error.status === 404) {
        replace(main, h("section", { class: "card" }, h("h1", {}, "No such device"),
          h("p", {}, `There is no device “${asked}” that you may see. `), h("a", { href: "#/" }, "Back to the fleet")));
      } else {
        problem.textContent = `Could not load the device: ${error.message}`;
      }
      return;
    }
    stream = new LiveStream(
      { device: device.id },
      {
        connected: connection(true),
        disconnected: connection(false),
        record: onRecord,
        setting_acked: loadSettings,
        settings_changed: loadSettings,
        command_answered: loadCommands,
        commands_changed: loadCommands,
        status: () => refreshAll(),
        receiver_lost: () => refreshAll(),
        skipped: ({ count }) => refreshAll(`${count} live update${count === 1 ? "" : "s"} skipped, refreshed.`),
      },
      () => refreshAll(),
    );
    await Promise.all([loadRoutes(), loadRecords(), sensors ?? loadSensors()]);
  }

  start();

  return () => {
    controller.abort();
    stream?.close();
    for (const entry of plots.values()) entry.plot.destroy();
  };
}
