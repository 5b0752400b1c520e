// One numeric sensor type over time: uPlot, average as a line within its min–max band.

import uPlot from "./vendor/uPlot.esm.js";
import { h } from "./dom.js";

const HEIGHT = 220;

function cssColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/**
 * A plot of `[{time, min, max, avg}]` rows (times as ISO text). `add` appends a live value;
 * the figure's `data-points` counts what it shows.
 */
export class SeriesPlot {
  constructor(container, label) {
    this.container = container;
    this.label = label;
    this.columns = [[], [], [], []]; // unix seconds, min, max, avg
    this.window = null;
    this.figure = h("div", { class: "plot-area", role: "img", "aria-label": `Plot of ${label}` });
    this.emptyNote = h("p", { class: "plot-empty", hidden: true }, "No values in this time range.");
    container.append(this.figure, this.emptyNote);
    this.resizer = new ResizeObserver(() => this.resize());
    this.resizer.observe(container);
  }

  /** Replace what is shown: rows from the downsample endpoint over [from, to] (Dates). */
  load(rows, from, to) {
    this.window = [from.getTime() / 1000, to.getTime() / 1000];
    this.columns = [[], [], [], []];
    for (const row of rows) {
      if (row.avg === null || row.avg === undefined) continue;
      this.push(new Date(row.time).getTime() / 1000, row.min, row.max, row.avg);
    }
    this.draw();
  }

  /** A live value; ignored when not after the newest point shown (the load had it). */
  add(time, value) {
    const seconds = new Date(time).getTime() / 1000;
    const xs = this.columns[0];
    if (xs.length && seconds <= xs[xs.length - 1]) return false;
    this.push(seconds, value, value, value);
    this.draw();
    return true;
  }

  push(x, min, max, avg) {
    this.columns[0].push(x);
    this.columns[1].push(min);
    this.columns[2].push(max);
    this.columns[3].push(avg);
  }

  get points() {
    return this.columns[0].length;
  }

  draw() {
    this.figure.dataset.points = String(this.points);
    this.figure.dataset.last = this.points ? String(this.columns[3][this.points - 1]) : "";
    this.emptyNote.hidden = this.points > 0;
    if (this.plot) {
      this.plot.setData(this.columns);
      return;
    }
    const accent = cssColor("--accent") || "#2563eb";
    const band = cssColor("--accent-band") || "rgba(37, 99, 235, 0.15)";
    const axis = cssColor("--muted") || "#667";
    const grid = cssColor("--grid") || "#e5e7eb";
    const axes = { stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    const window = () => this.window;
    this.plot = new uPlot(
      {
        width: this.width(),
        height: HEIGHT,
        cursor: { drag: { x: true, y: false } },
        scales: {
          x: {
            time: true,
            range: (u, min, max) => {
              const [from, to] = window() ?? [min, max];
              return [Math.min(from, min ?? from), Math.max(to, max ?? to)];
            },
          },
        },
        legend: { live: true },
        series: [
          {},
          { label: "min", stroke: "transparent", points: { show: false } },
          { label: "max", stroke: "transparent", points: { show: false } },
          { label: "avg", stroke: accent, width: 2, points: { size: 6, fill: accent } },
        ],
        bands: [{ series: [2, 1], fill: band }],
        axes: [axes, { ...axes, size: 56 }],
      },
      this.columns,
      this.figure,
    );
  }

  width() {
    return Math.max(240, this.container.clientWidth);
  }

  resize() {
    this.plot?.setSize({ width: this.width(), height: HEIGHT });
  }

  destroy() {
    this.resizer.disconnect();
    this.plot?.destroy();
  }
}
