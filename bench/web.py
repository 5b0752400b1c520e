"""What the console and the HTTP API cost with a big fleet, and how live the live events are.

Three measurements against one real ``m2m serve`` (receivers, workers and the web service,
on a private nsqd and a throw-away keyspace), its pages loaded in headless Chromium
(Debian's ``chromium``, driven by Playwright):

1. **Fleet page** with ``--devices`` devices (10 000), each with a connection record and a
   reading: the console's first render, from navigation to the first page of rows drawn
   (median of ``--rounds``), and the API call it makes (``GET /api/v1/devices``, 100 rows)
   beside its baseline, the bare driver reading the same rows (the device node, its
   latest ``_server`` record, its newest record: the three reads a row takes).
2. **A downsampled plot** over ``--records`` records (100 000, over a year): the API's
   ``downsample?points=500`` beside its baseline, the bare driver reading the same rows;
   and the device page drawing that plot in the browser.
3. **Live events**: ``--live-devices`` ALIP devices (100) each sending ``--rate`` readings a
   second (10) for ``--seconds``; a page's ``EventSource`` notes when each ``record`` event
   arrives. Latency = arrival in the browser - the moment the device wrote the line (one
   machine, one clock), p50 and p99, and how many the stream skipped.

Goals (issue 12): fleet page < 1 s, plot < 1 s, live p99 < 1 s. Wall-clock figures on a
small shared machine: they wander from run to run; the ratios to the baseline measured in
the same run are the steadier figure. Nothing is asserted.

Run from the repository root:  .venv/bin/python -m bench.web [--help]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, BrowserContext, async_playwright

from bench.keyspace import throwaway_keyspace
from bench.receivers import (
    HOST,
    Results,
    create_devices,
    heading,
    ident,
    identified,
    in_batches,
    running,
    shares,
)
from m2m.cassandra import Database
from m2m.config import dump_with_secrets, load_config
from m2m.receivers.alip.client import ALIPClient
from m2m.registry.device import device_id_for
from m2m.registry.device_views import SERVER_RECORD_TYPE
from m2m.registry.domain import DEFAULT_DOMAIN, Domains
from m2m.registry.user import Users
from m2m.simulate import ALIP
from m2m.stack.provision import nsq_artifact
from m2m.timeseries import TimeSeries

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
"""The machine reaches nothing beyond loopback: Chromium must not try."""
ADMIN, PASSWORD = "bench-admin", "bench-password"
PAGE_ROWS = 50
READING_TYPE = "sen:temp"
FLEET_ROWS = "table tbody tr"
"""The fleet page's device rows (m2m/web/static)."""
PLOT = ".uplot canvas"
"""A plot drawn by uPlot on the device page."""
GOALS = 1.0
"""Seconds: the issue's goal for each of the three figures."""


def seconds_text(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:,.0f} ms (median of {len(values)})"


def verdict(value: float) -> tuple[str, bool]:
    return f"< {GOALS:g} s", value < GOALS


async def timed(call: Callable[[], Awaitable[Any]], rounds: int) -> list[float]:
    spent = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        spent.append(time.perf_counter() - started)
    return spent


# --- data -------------------------------------------------------------------------------


async def fill_fleet(database: Database, count: int) -> list[str]:
    """``count`` devices, each with a ``_server`` record and a reading, as in the field."""
    idents = [ident(i) for i in range(count)]
    await create_devices(database, idents)
    series = TimeSeries(database)
    now = datetime.now(UTC)

    async def records(i: int) -> None:
        series_id = f"dev-{device_id_for(idents[i])}"
        data = {"type": "device_disconnected", "source": f"10.0.0.{i % 250}:4000"}
        await series.save(series_id, SERVER_RECORD_TYPE, data, time=now)
        await series.save(series_id, READING_TYPE, str(20 + i % 10), time=now)

    await in_batches(records, count, batch=256)
    return idents


async def fill_series(database: Database, series_id: str, count: int) -> None:
    """``count`` readings over the last year."""
    series = TimeSeries(database)
    start = datetime.now(UTC) - timedelta(days=365)
    step = timedelta(days=365) / count

    async def record(i: int) -> None:
        await series.save(series_id, READING_TYPE, str(15 + (i % 200) / 10), time=start + i * step)

    await in_batches(record, count, batch=512)


async def bare_rows(database: Database, idents: list[str]) -> None:
    """The baseline of a fleet page: the three reads of each row, with the bare driver."""
    session = database.session
    keyspace = database.keyspace
    node = session.prepare(f"SELECT status, values FROM {keyspace}.registrynode WHERE path = ?")
    index = session.prepare(
        f"SELECT date FROM {keyspace}.timeseries_index WHERE id = ? AND type = ? LIMIT 1"
    )
    futures = []
    for name in idents:
        device_id = device_id_for(name)
        futures.append(session.execute_async(node, (f"/device/{device_id}/",)))
        futures.append(session.execute_async(index, (f"dev-{device_id}", SERVER_RECORD_TYPE)))
        futures.append(session.execute_async(index, (f"dev-{device_id}", "")))
    await asyncio.to_thread(lambda: [future.result() for future in futures])


async def bare_series(database: Database, series_id: str) -> int:
    """The baseline of a downsampled plot: every row of the series' type, bare driver."""
    session = database.session
    keyspace = database.keyspace
    buckets = session.prepare(
        f"SELECT date FROM {keyspace}.timeseries_index WHERE id = ? AND type = ?"
    )
    rows = session.prepare(
        f"SELECT time, data FROM {keyspace}.timeseries WHERE id = ? AND date = ?"
    )

    def read() -> int:
        key = f"{series_id}!{READING_TYPE}"
        count = 0
        for bucket in session.execute(buckets, (series_id, READING_TYPE)):
            statement = rows.bind((key, bucket.date))
            statement.fetch_size = 5000
            count += sum(1 for _ in session.execute(statement))
        return count

    return await asyncio.to_thread(read)


# --- the browser ------------------------------------------------------------------------


async def logged_in(browser: Browser, base: str) -> BrowserContext:
    context = await browser.new_context(base_url=base, viewport={"width": 1400, "height": 900})
    response = await context.request.post(
        "/api/v1/login", data={"user": ADMIN, "password": PASSWORD}
    )
    if not response.ok:
        raise RuntimeError(f"login refused: {response.status} {await response.text()}")
    return context


async def page_render(
    context: BrowserContext, path: str, selector: str, rounds: int
) -> list[float]:
    """Navigation to ``path`` until ``selector`` is drawn, ``rounds`` times (a fresh page each)."""
    spent = []
    for _ in range(rounds):
        page = await context.new_page()
        started = time.perf_counter()
        await page.goto(path)
        await page.locator(selector).first.wait_for(state="visible", timeout=60_000)
        spent.append(time.perf_counter() - started)
        await page.close()
    return spent


# --- the three measurements -------------------------------------------------------------


async def bench_fleet(
    results: Results, database: Database, idents: list[str], base: str,
    context: BrowserContext, rounds: int,
) -> None:  # fmt: skip
    heading(f"fleet: {len(idents):,} devices")
    async with httpx.AsyncClient(base_url=base, cookies=await cookies(context)) as api:

        async def first_page() -> None:
            response = await api.get("/api/v1/devices", params={"limit": PAGE_ROWS})
            response.raise_for_status()

        api_spent = await timed(first_page, rounds)
    bare_spent = await timed(lambda: bare_rows(database, sorted(idents)[:PAGE_ROWS]), rounds)
    ratio = statistics.median(api_spent) / statistics.median(bare_spent)
    results.add("fleet", f"GET /api/v1/devices ({PAGE_ROWS} rows)",
                f"{seconds_text(api_spent)}, {ratio:.1f}x the bare driver's "
                f"{statistics.median(bare_spent) * 1e3:,.0f} ms")  # fmt: skip
    render = await page_render(context, "/#/", FLEET_ROWS, rounds)
    results.add("fleet", "fleet page first render", seconds_text(render),
                *verdict(statistics.median(render)))  # fmt: skip


async def bench_plot(
    results: Results, database: Database, base: str, context: BrowserContext,
    records: int, rounds: int,
) -> None:  # fmt: skip
    name = f"bench:plot{uuid.uuid4().hex[:6]}"
    await create_devices(database, [name])
    series_id = f"dev-{device_id_for(name)}"
    heading(f"plot: {records:,} records over a year")
    started = time.perf_counter()
    await fill_series(database, series_id, records)
    print(f"  written in {time.perf_counter() - started:.1f} s", flush=True)
    params = {"type": READING_TYPE, "points": 500}
    async with httpx.AsyncClient(base_url=base, cookies=await cookies(context)) as api:

        async def downsample() -> None:
            response = await api.get(f"/api/v1/series/{series_id}/downsample", params=params,
                                     timeout=120)  # fmt: skip
            response.raise_for_status()
            assert sum(point["count"] for point in response.json()) == records

        api_spent = await timed(downsample, rounds)
    bare_spent = await timed(lambda: bare_series(database, series_id), rounds)
    ratio = statistics.median(api_spent) / statistics.median(bare_spent)
    results.add("plot", f"GET downsample ({records:,} records, 500 points)",
                f"{seconds_text(api_spent)}, {ratio:.1f}x the bare driver reading them "
                f"({statistics.median(bare_spent) * 1e3:,.0f} ms)",
                *verdict(statistics.median(api_spent)))  # fmt: skip
    page = f"/#/device/{device_id_for(name)}?range=1y"  # the year: every record under it
    render = await page_render(context, page, PLOT, rounds)
    results.add("plot", "device page over a year, plot drawn", seconds_text(render),
                *verdict(statistics.median(render)))  # fmt: skip


LISTEN = """
(() => {
  window.arrivals = [];
  window.skipped = 0;
  const source = new EventSource("/api/v1/events");
  source.addEventListener("record", (event) => {
    window.arrivals.push([performance.timeOrigin + performance.now(), event.data]);
  });
  source.addEventListener("skipped", (event) => {
    window.skipped += JSON.parse(event.data).count;
  });
  return new Promise((resolve) => { source.onopen = () => resolve(true); });
})()
"""


async def bench_live(
    results: Results, alip_port: int, base: str, context: BrowserContext,
    devices: int, rate: float, seconds: float,
) -> None:  # fmt: skip
    heading(f"live: {devices} devices x {rate:g} readings/s for {seconds:g} s")
    page = await context.new_page()
    await page.goto("/healthz")
    await page.evaluate(LISTEN)
    sent: dict[str, float] = {}
    async with contextlib.AsyncExitStack() as exits:
        idents = [f"bench:live{i:04d}" for i in range(devices)]
        clients = await identified(ALIP, alip_port, idents, exits)
        await asyncio.sleep(2)  # identification's own events pass before the clock runs

        async def send(i: int, client: ALIPClient, count: int) -> None:
            await asyncio.sleep(i / devices / rate)  # spread the devices over one period
            started = time.perf_counter()
            for n in range(count):
                value = f"{i}.{n:06d}"
                sent[value] = time.time() * 1000
                client.send_line(f"D T {value}")
                await asyncio.sleep(max(0.0, started + (n + 1) / rate - time.perf_counter()))

        counts = shares(int(devices * rate * seconds), devices)
        await asyncio.gather(
            *(send(i, c, n) for i, (c, n) in enumerate(zip(clients, counts, strict=True)))
        )
        await asyncio.sleep(3)  # the last readings on their way
    arrivals: list[list[Any]] = await page.evaluate("window.arrivals")
    skipped: int = await page.evaluate("window.skipped")
    latencies = sorted(
        (arrived - sent[value]) / 1000
        for arrived, text in arrivals
        if (value := _reading(text)) in sent
    )
    if len(latencies) < 2:
        results.add("live", "record event latency", "n/a (no events arrived)")
        return
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    results.add("live", "record event latency, device line -> browser",
                f"p50 {cuts[49] * 1e3:,.0f} ms, p99 {cuts[98] * 1e3:,.0f} ms "
                f"({len(latencies):,} of {len(sent):,} arrived, {skipped} skipped)",
                *verdict(cuts[98]))  # fmt: skip


def _reading(event_data: str) -> str | None:
    data = json.loads(event_data).get("data")
    return data if isinstance(data, str) else None


async def cookies(context: BrowserContext) -> dict[str, str]:
    return {cookie["name"]: cookie["value"] for cookie in await context.cookies()}


# --- the run ----------------------------------------------------------------------------


async def run(arguments: argparse.Namespace) -> Results:
    results = Results()
    configured = load_config(arguments.config)
    binary = nsq_artifact(configured.stack.cache_dir.expanduser(), configured.stack.nsq_version)
    with (
        throwaway_keyspace(configured.cassandra) as cassandra,
        tempfile.TemporaryDirectory() as tmp,
    ):
        config = configured.model_copy(update={"cassandra": cassandra})
        database = await asyncio.to_thread(Database.connect, cassandra)
        try:
            domain = await Domains(database).get_or_create(DEFAULT_DOMAIN)
            admin = await Users(database).create_in(ADMIN, domain, admin=True)
            await admin.set_password(PASSWORD)
            heading(f"registering {arguments.devices:,} devices")
            started = time.perf_counter()
            idents = await fill_fleet(database, arguments.devices)
            print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
            settings = dump_with_secrets(config)
            async with (
                running(settings, binary.home / "bin" / "nsqd", Path(tmp), (None,), None)
                as (platform, _),
                async_playwright() as playwright,
            ):  # fmt: skip
                ports = platform.ports
                base = f"http://{HOST}:{ports['web']}"
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS
                )
                context = await logged_in(browser, base)
                await bench_fleet(results, database, idents, base, context, arguments.rounds)
                await bench_plot(results, database, base, context, arguments.records,
                                 arguments.rounds)  # fmt: skip
                await bench_live(results, ports["alip"], base, context, arguments.live_devices,
                                 arguments.rate, arguments.seconds)  # fmt: skip
                await browser.close()
        finally:
            database.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="configuration file (default: as the m2m command)")
    parser.add_argument("--devices", type=int, default=10_000, help="fleet size (10,000)")
    parser.add_argument("--records", type=int, default=100_000,
                        help="records under the plot (100,000)")  # fmt: skip
    parser.add_argument("--live-devices", type=int, default=100, help="live devices (100)")
    parser.add_argument("--rate", type=float, default=10, help="readings/s per device (10)")
    parser.add_argument("--seconds", type=float, default=20, help="live run length (20)")
    parser.add_argument("--rounds", type=int, default=5, help="repeats of each timing (5)")
    parser.add_argument("--quick", action="store_true", help="small counts, about a minute")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.devices, arguments.records, arguments.seconds = 1_000, 10_000, 5
    results = asyncio.run(run(arguments))
    print("\n" + results.table())


if __name__ == "__main__":
    main()
