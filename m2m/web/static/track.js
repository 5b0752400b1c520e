// A device's sen:loc positions drawn without map tiles: an equirectangular projection
// fitted to the points, a light grid of parallels and meridians, start and end markers.

import { absoluteTime, h, svg } from "./dom.js";

const WIDTH = 640;
const HEIGHT = 360;
const MARGIN = 36;
const MIN_SPAN = 0.002; // degrees (about 200 m): a device that never moved is still a dot
const STEPS = [
  0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10,
  20, 30, 45, 90,
];
const DOTS_UP_TO = 300;

/** `{lat, lon, time}` from a record, or null if it holds no position. */
export function position(record) {
  const data = record.data;
  if (!data || typeof data !== "object") return null;
  const lat = Number(data.lat);
  const lon = Number(data.lon);
  if (!Number.isFinite(lat) || !Number.isFinite(lon) || Math.abs(lat) > 90 || Math.abs(lon) > 180) {
    return null;
  }
  return { lat, lon, time: record.time };
}

function niceStep(span) {
  return STEPS.find((step) => span / step <= 6) ?? 90;
}

function degrees(value, step) {
  const decimals = Math.max(0, Math.ceil(-Math.log10(step)));
  return `${value.toFixed(decimals)}°`;
}

export class Track {
  constructor(container) {
    this.points = [];
    this.drawing = svg("svg", {
      class: "track", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img",
      preserveAspectRatio: "xMidYMid meet",
    });
    this.caption = h("p", { class: "muted small track-caption" });
    container.append(this.drawing, this.caption);
  }

  load(points) {
    this.points = [...points].sort((a, b) => new Date(a.time) - new Date(b.time));
    this.draw();
  }

  add(point) {
    this.points.push(point);
    this.draw();
  }

  draw() {
    const points = this.points;
    this.drawing.replaceChildren();
    this.drawing.dataset.points = String(points.length);
    if (!points.length) {
      this.drawing.setAttribute("aria-label", "No positions");
      this.caption.textContent = "No positions yet.";
      return;
    }
    const lats = points.map((p) => p.lat);
    const lons = points.map((p) => p.lon);
    const middle = (Math.min(...lats) + Math.max(...lats)) / 2;
    const squeeze = Math.max(0.05, Math.cos((middle * Math.PI) / 180));
    let [west, east] = [Math.min(...lons), Math.max(...lons)];
    let [south, north] = [Math.min(...lats), Math.max(...lats)];
    // Widen the box to the drawing's proportions so that the projection keeps its shape.
    const spanX = Math.max((east - west) * squeeze, MIN_SPAN);
    const spanY = Math.max(north - south, MIN_SPAN);
    const scale = Math.min((WIDTH - 2 * MARGIN) / spanX, (HEIGHT - 2 * MARGIN) / spanY);
    const halfX = WIDTH / 2 / scale / squeeze;
    const halfY = HEIGHT / 2 / scale;
    const centerLon = (west + east) / 2;
    const centerLat = (south + north) / 2;
    [west, east, south, north] = [centerLon - halfX, centerLon + halfX, centerLat - halfY, centerLat + halfY];
    const x = (lon) => (lon - west) * squeeze * scale;
    const y = (lat) => (north - lat) * scale;

    const grid = svg("g", { class: "track-grid" });
    const step = niceStep(Math.max(north - south, (east - west) * squeeze));
    for (let lat = Math.ceil(south / step) * step; lat <= north; lat += step) {
      grid.append(
        svg("line", { x1: 0, x2: WIDTH, y1: y(lat), y2: y(lat) }),
        svg("text", { x: 6, y: y(lat) - 5 }, degrees(lat, step)),
      );
    }
    for (let lon = Math.ceil(west / step) * step; lon <= east; lon += step) {
      grid.append(
        svg("line", { x1: x(lon), x2: x(lon), y1: 0, y2: HEIGHT }),
        svg("text", { x: x(lon) + 5, y: HEIGHT - 6 }, degrees(lon, step)),
      );
    }
    const path = points.map((p) => `${x(p.lon).toFixed(1)},${y(p.lat).toFixed(1)}`).join(" ");
    const first = points[0];
    const last = points[points.length - 1];
    const marker = (p, kind, label) =>
      svg("g", { class: `track-marker ${kind}` },
        svg("title", {}, `${label}: ${p.lat}, ${p.lon} at ${absoluteTime(p.time)}`),
        svg("circle", { cx: x(p.lon), cy: y(p.lat), r: kind === "end" ? 7 : 6 }));
    this.drawing.append(
      svg("rect", { class: "track-ground", width: WIDTH, height: HEIGHT }),
      grid,
      svg("polyline", { class: "track-line", points: path }),
      points.length <= DOTS_UP_TO &&
        svg("g", { class: "track-dots" }, points.map((p) => svg("circle", { cx: x(p.lon), cy: y(p.lat), r: 2.5 }))),
      points.length > 1 && marker(first, "start", "Start"),
      marker(last, "end", "Latest"),
    );
    const label = `Track of ${points.length} position${points.length === 1 ? "" : "s"}, latest ${last.lat}, ${last.lon}`;
    this.drawing.setAttribute("aria-label", label);
    this.caption.textContent =
      `${points.length} position${points.length === 1 ? "" : "s"}` +
      (points.length > 1 ? ` from ${absoluteTime(first.time)}` : "") +
      ` · latest ${last.lat}, ${last.lon} at ${absoluteTime(last.time)}`;
  }
}
