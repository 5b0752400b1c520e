"""``/api/v1/series``: types, records a page at a time, downsampled plots, over real HTTP.

Records are written straight into the test keyspace with ``TimeSeries.save`` (for times
and values a test chooses), or by a real ALIP device through ``m2m serve``. The store's
own listing is the reference the pages are checked against.
"""

from __future__ import annotations

import itertools
import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from m2m.cassandra import Database
from m2m.receivers.alip.client import ALIPClient
from m2m.registry.device import device_id_for
from m2m.text import utc_text
from m2m.timeseries import JsonValue, Record, TimeSeries
from tests.conftest import Platform, WebUser, eventually, make_web_user
from tests.web_http import API, error_of, ok

T0 = datetime(2025, 3, 31, 23, 59, 58, 250000, tzinfo=UTC)
"""Close to a month's end: the records of a test span two buckets."""
SECOND = timedelta(seconds=1)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Domains:
    """A device of domain A, a user of A and one of B."""

    device_id: str
    user_a: WebUser
    user_b: WebUser

    @property
    def series(self) -> str:
        return f"dev-{self.device_id}"


@pytest.fixture(scope="module")
def domains(config_file: Path, platform: Platform, web_admin: WebUser) -> Domains:
    tag = uuid.uuid4().hex[:8]
    user_a = make_web_user(config_file, domain=f"series-{tag}-a")
    user_b = make_web_user(config_file, domain=f"series-{tag}-b")
    with httpx.Client(base_url=platform.web_url, headers=web_admin.headers) as http:
        device = ok(
            http.post(
                f"{API}/devices", json={"ident": f"series-{tag}", "domain": f"series-{tag}-a"}
            ),
            201,
        )
    return Domains(device["id"], user_a, user_b)


@pytest.fixture
def series(database: Database) -> TimeSeries:
    return TimeSeries(database)


@pytest.fixture
def key() -> str:
    """A series of the platform's own (not a device's): admins only."""
    return f"probe-{uuid.uuid4()}"


def row(record: Record) -> dict[str, Any]:
    return {
        "type": record.type,
        "time": utc_text(record.time),
        "uuid": str(record.uuid),
        "data": record.data,
    }


async def listing(series: TimeSeries, key: str, **options: Any) -> list[dict[str, Any]]:
    return [row(record) async for record in series.records(key, **options)]


async def all_pages(
    http: httpx.AsyncClient, headers: dict[str, str], key: str, **query: Any
) -> list[list[dict[str, Any]]]:
    """Every page of a listing, following ``next`` to its end."""
    pages: list[list[dict[str, Any]]] = []
    cursor: dict[str, str] = {}
    while True:
        answer = ok(
            await http.get(
                f"{API}/series/{key}/records", params={**query, **cursor}, headers=headers
            )
        )
        assert set(answer) == {"records", "next"}
        pages.append(answer["records"])
        if answer["next"] is None:
            return pages
        cursor = {"cursor": answer["next"]}


async def save_at(
    series: TimeSeries, key: str, record_type: str, moments: list[datetime]
) -> list[Record]:
    return [
        await series.save(key, record_type, {"n": n}, time=moment)
        for n, moment in enumerate(moments)
    ]


# --- Types -----------------------------------------------------------------------------------


async def test_types_are_those_with_records_sorted(
    http: httpx.AsyncClient, admin: dict[str, str], series: TimeSeries, key: str
) -> None:
    assert ok(await http.get(f"{API}/series/{key}/types", headers=admin)) == []
    for record_type in ("sen:temp", "_server", "sen:loc", "sen:temp"):
        await series.save(key, record_type, 1, time=T0)
    # Deleting a range leaves the type's index row: the type has no record left all the same.
    gone = await series.save(key, "sen:gone", 1, time=T0)
    assert await series.delete_range(key, "sen:gone", start=gone.time, end=gone.time) == 1
    types = ok(await http.get(f"{API}/series/{key}/types", headers=admin))
    assert types == ["_server", "sen:loc", "sen:temp"]


# --- Records ---------------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_pages_follow_each_other_without_gaps_or_repeats(
    http: httpx.AsyncClient, admin: dict[str, str], series: TimeSeries, key: str, order: str
) -> None:
    # Groups of records of one instant, so that pages of 3 end in the middle of a group.
    instants = [T0] * 4 + [T0 + SECOND] * 3 + [T0 + 2 * SECOND] * 4 + [T0 + 3 * SECOND]
    await save_at(series, key, "sen:t", instants)
    await save_at(series, key, "sen:x", [T0, T0 + 2 * SECOND, T0 + 5 * SECOND])
    oldest_first = order == "asc"

    pages = await all_pages(http, admin, key, type="sen:t", limit=3, order=order)
    assert [len(page) for page in pages] == [3, 3, 3, 3]
    given = [record for page in pages for record in page]
    assert given == await listing(series, key, record_type="sen:t", oldest_first=oldest_first)
    assert len({record["uuid"] for record in given}) == len(instants)
    assert any(
        before[-1]["time"] == after[0]["time"] for before, after in itertools.pairwise(pages)
    )

    pages = await all_pages(http, admin, key, limit=5, order=order)
    assert [len(page) for page in pages] == [5, 5, 5]
    assert [r for page in pages for r in page] == await listing(
        series, key, oldest_first=oldest_first
    )


async def test_the_default_is_newest_first_a_hundred_at_a_time(
    http: httpx.AsyncClient, admin: dict[str, str], series: TimeSeries, key: str
) -> None:
    await save_at(series, key, "sen:t", [T0 + n * MICROSECOND for n in range(101)])
    answer = ok(await http.get(f"{API}/series/{key}/records", headers=admin))
    assert answer["records"] == (await listing(series, key))[:100]
    assert answer["records"][0]["time"] > answer["records"][-1]["time"]
    rest = ok(
        await http.get(
            f"{API}/series/{key}/records", params={"cursor": answer["next"]}, headers=admin
        )
    )
    assert rest == {"records": (await listing(series, key))[100:], "next": None}


async def test_a_page_continues_after_its_cursor_even_once_that_record_is_gone(
    http: httpx.AsyncClient, admin: dict[str, str], series: TimeSeries, key: str
) -> None:
    await save_at(series, key, "sen:t", [T0] * 5)
    url = f"{API}/series/{key}/records"
    first = ok(await http.get(url, params={"limit": 2}, headers=admin))
    await series.delete(key, "sen:t", uuid.UUID(first["records"][-1]["uuid"]))
    rest = ok(await http.get(url, params={"cursor": first["next"]}, headers=admin))
    assert rest["next"] is None and len(rest["records"]) == 3
    assert first["records"][:1] + rest["records"] == await listing(series, key)


async def test_a_cursor_continues_within_the_bounds_given_with_it(
    http: httpx.AsyncClient, admin: dict[str, str], series: TimeSeries, key: str
) -> None:
    saved = [
        row(r) for r in await save_at(series, key, "sen:t", [T0 + n * SECOND for n in range(6)])
    ]
    url = f"{API}/series/{key}/records"

    async def after_first_two(order: str, **bounds: datetime) -> list[dict[str, Any]]:
        first = ok(await http.get(url, params={"limit": 2, "order": order}, headers=admin))
        query = {"order": order, "cursor": first["next"]}
        query |= {name: utc_text(moment) for name, moment in bounds.items()}
        return list(ok(await http.get(url, params=query, headers=admin))["records"])

    assert await after_first_two("desc", to=T0 + 2 * SECOND) == saved[2::-1]
    assert await after_first_two("desc", **{"from": T0 + 5 * SECOND}) == []
    assert await after_first_two("asc", **{"from": T0 + 3 * SECOND}) == saved[3:]
    assert await after_first_two("asc", to=T0) == []


async def test_records_read_back_as_saved(
    http: httpx.AsyncClient, admin: dict[str, str], series: TimeSeries, key: str
) -> None:
    data: list[JsonValue] = [{"lat": 48.85, "lon": 2.35}, "21.5", 7, None, [1, "a"], True]
    saved = [
        await series.save(key, f"sen:{n}", value, time=T0 + n * SECOND)
        for n, value in enumerate(data)
    ]
    answer = ok(
        await http.get(f"{API}/series/{key}/records", params={"order": "asc"}, headers=admin)
    )
    assert answer == {"records": [row(record) for record in saved], "next": None}
    assert answer["records"][0]["time"] == "2025-03-31T23:59:58.250000Z"


async def test_from_and_to_are_inclusive_and_read_zones(
    http: httpx.AsyncClient, admin: dict[str, str], series: TimeSeries, key: str
) -> None:
    moments = [T0 - MICROSECOND, T0, T0 + SECOND, T0 + 2 * SECOND, T0 + 2 * SECOND + MICROSECOND]
    saved = await save_at(series, key, "sen:t", moments)
    inside = [row(record) for record in reversed(saved[1:4])]
    end = T0 + 2 * SECOND
    for start_text, end_text in [
        (utc_text(T0), utc_text(end)),
        (T0.isoformat(), end.isoformat()),
        ("2025-04-01T01:59:58.25+02:00", "2025-04-01T02:00:00.250000+02:00"),
        (T0.replace(tzinfo=None).isoformat(), end.replace(tzinfo=None).isoformat()),
    ]:
        params = {"from": start_text, "to": end_text, "type": "sen:t"}
        answer = ok(await http.get(f"{API}/series/{key}/records", params=params, headers=admin))
        assert answer == {"records": inside, "next": None}, params
    only_to = ok(
        await http.get(f"{API}/series/{key}/records", params={"to": utc_text(T0)}, headers=admin)
    )
    assert only_to["records"] == [row(saved[1]), row(saved[0])]


# --- Downsampling ----------------------------------------------------------------------------


def expected_buckets(
    points: list[tuple[datetime, float]], start: datetime, end: datetime, count: int
) -> list[dict[str, Any]]:
    """The buckets, computed directly: ``count`` of equal width (whole µs) over [start, end]."""
    span = (end - start) // MICROSECOND + 1
    width = -(-span // count)
    buckets: dict[int, list[float]] = {}
    for moment, value in sorted(points, key=lambda point: point[0]):
        buckets.setdefault((moment - start) // MICROSECOND // width, []).append(value)
    return [
        {
            "time": utc_text(start + index * width * MICROSECOND),
            "min": min(values),
            "max": max(values),
            "avg": math.fsum(values) / len(values),
            "last": values[-1],
            "count": len(values),
        }
        for index, values in sorted(buckets.items())
    ]


def assert_same_buckets(given: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [{**b, "avg": pytest.approx(b["avg"])} for b in given] == expected


async def test_downsampled_numbers_are_those_computed_directly(
    http: httpx.AsyncClient, admin: dict[str, str], series: TimeSeries, key: str
) -> None:
    rng = random.Random(12)
    usable: list[tuple[datetime, float]] = []
    moments: list[datetime] = []
    start, end = T0, T0 + timedelta(days=3)
    for n in range(300):
        moment = start + timedelta(microseconds=rng.randrange((end - start) // MICROSECOND))
        kind = n % 6
        value = round(rng.uniform(-40, 60), 2)
        data: JsonValue = [value, str(value), int(value), "warm", True, None][kind]
        await series.save(key, "sen:temp", data, time=moment)
        moments.append(moment)
        if kind < 3:
            usable.append((moment, float(int(value) if kind == 2 else value)))
    await series.save(key, "sen:other", 1000, time=start + SECOND)
    await series.save(key, "sen:temp", 1000, time=end + MICROSECOND)

    params: dict[str, str | int] = {
        "type": "sen:temp",
        "from": utc_text(start),
        "to": utc_text(end),
        "points": 7,
    }
    given = ok(await http.get(f"{API}/series/{key}/downsample", params=params, headers=admin))
    assert len(given) == 7
    assert_same_buckets(given, expected_buckets(usable, start, end, 7))
    assert sum(bucket["count"] for bucket in given) == len(usable)

    # Without bounds: the records' own span, from the oldest (a number or not) to the newest.
    params = {"type": "sen:temp", "points": 50}
    given = ok(await http.get(f"{API}/series/{key}/downsample", params=params, headers=admin))
    everything = [*usable, (end + MICROSECOND, 1000.0)]
    assert_same_buckets(given, expected_buckets(everything, min(moments), end + MICROSECOND, 50))


async def test_a_field_of_object_data_is_downsampled(
    http: httpx.AsyncClient, admin: dict[str, str], series: TimeSeries, key: str
) -> None:
    data: list[JsonValue] = [
        {"lat": 48.5, "lon": 2.3},
        {"lat": "49.25", "lon": 2.4},
        {"lon": 2.5},
        {"lat": None},
        {"lat": {"deg": 48}},
        [48.0],
        48.0,
        {"lat": 47.75, "sats": 9},
    ]
    for n, value in enumerate(data):
        await series.save(key, "sen:loc", value, time=T0 + n * SECOND)
    params: dict[str, str | int] = {"type": "sen:loc", "field": "lat", "points": 1}
    given = ok(await http.get(f"{API}/series/{key}/downsample", params=params, headers=admin))
    assert given == [
        {"time": utc_text(T0), "min": 47.75, "max": 49.25, "avg": 48.5, "last": 47.75, "count": 3}
    ]
    params["field"] = "nowhere"
    assert ok(await http.get(f"{API}/series/{key}/downsample", params=params, headers=admin)) == []


async def test_nothing_to_downsample_is_an_empty_list(
    http: httpx.AsyncClient, admin: dict[str, str], series: TimeSeries, key: str
) -> None:
    await series.save(key, "sen:temp", "cold", time=T0)
    queries: list[dict[str, str]] = [
        {"type": "sen:none"},
        {"type": "sen:temp"},
        {"type": "sen:temp", "from": utc_text(T0 + SECOND)},
        {"type": "sen:temp", "to": utc_text(T0 - SECOND)},
    ]
    for params in queries:
        assert (
            ok(await http.get(f"{API}/series/{key}/downsample", params=params, headers=admin)) == []
        )


async def test_a_real_devices_values_are_listed_and_plotted(
    http: httpx.AsyncClient, admin: dict[str, str], platform: Platform
) -> None:
    ident = f"alip:{uuid.uuid4().hex[:20]}"
    key = f"dev-{device_id_for(ident)}"
    base = 1_700_000_000
    async with await ALIPClient.connect("127.0.0.1", platform.alip_port) as client:
        assert await client.identify(ident) is True
        for offset, text in [(0, "21.5"), (10, "22.5"), (20, "warm"), (30, "18")]:
            client.send_line(f"E {base + offset} T {text}")

        async def records() -> list[dict[str, Any]]:
            query = {"type": "sen:temp", "order": "asc"}
            answer = ok(await http.get(f"{API}/series/{key}/records", params=query, headers=admin))
            return list(answer["records"])

        stored = await eventually(records, lambda found: len(found) == 4, "the four values stored")
    assert [record["data"] for record in stored] == ["21.5", "22.5", "warm", "18"]
    assert "sen:temp" in ok(await http.get(f"{API}/series/{key}/types", headers=admin))
    plot: dict[str, str | int] = {"type": "sen:temp", "points": 2}
    given = ok(await http.get(f"{API}/series/{key}/downsample", params=plot, headers=admin))
    start = datetime.fromtimestamp(base, UTC)
    assert given == [
        {"time": utc_text(start), "min": 21.5, "max": 22.5, "avg": 22.0, "last": 22.5, "count": 2},
        {
            "time": utc_text(start + timedelta(microseconds=15_000_001)),
            "min": 18.0,
            "max": 18.0,
            "avg": 18.0,
            "last": 18.0,
            "count": 1,
        },
    ]


# --- Who sees what ---------------------------------------------------------------------------


def series_urls(key: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (f"{API}/series/{key}/types", {}),
        (f"{API}/series/{key}/records", {}),
        (f"{API}/series/{key}/downsample", {"type": "sen:temp"}),
    ]


async def test_a_devices_series_is_seen_by_its_domain_and_admins_only(
    http: httpx.AsyncClient,
    admin: dict[str, str],
    series: TimeSeries,
    domains: Domains,
) -> None:
    await series.save(domains.series, "sen:temp", 20, time=T0)
    for url, params in series_urls(domains.series):
        assert ok(await http.get(url, params=params, headers=domains.user_a.headers))
        assert ok(await http.get(url, params=params, headers=admin))
        error_of(await http.get(url, params=params, headers=domains.user_b.headers), 404)


async def test_other_series_are_for_admins_only(
    http: httpx.AsyncClient,
    admin: dict[str, str],
    series: TimeSeries,
    domains: Domains,
    key: str,
) -> None:
    await series.save(key, "sen:temp", 20, time=T0)
    shouted = f"dev-{domains.device_id.upper()}"
    await series.save(shouted, "sen:temp", 20, time=T0)
    for hidden in (key, shouted, f"dev-{uuid.uuid4()}", "dev-", f"dev-series-{domains.device_id}"):
        for url, params in series_urls(hidden):
            error_of(await http.get(url, params=params, headers=domains.user_a.headers), 404)
    for url, params in series_urls(key) + series_urls(shouted):
        assert ok(await http.get(url, params=params, headers=admin))


# --- Refused ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "params"),
    [
        ("records", {"from": "yesterday"}),
        ("records", {"to": "2025-13-01T00:00:00Z"}),
        ("records", {"from": "2025-03-02T00:00:00Z", "to": "2025-03-01T00:00:00Z"}),
        ("records", {"from": "1000-01-01T00:00:00Z"}),
        ("records", {"order": "sideways"}),
        ("records", {"limit": 0}),
        ("records", {"limit": 1001}),
        ("records", {"limit": "many"}),
        ("records", {"type": ""}),
        ("records", {"cursor": "not-a-cursor"}),
        ("records", {"cursor": "AAAAAAAAAAAAAAAAAAAAAAAAAAA"}),
        ("downsample", {}),
        ("downsample", {"type": ""}),
        ("downsample", {"type": "sen:t", "points": 0}),
        ("downsample", {"type": "sen:t", "points": 5001}),
        ("downsample", {"type": "sen:t", "from": "now"}),
        ("downsample", {"type": "sen:t", "from": "2025-03-02T00:00Z", "to": "2025-03-01T00:00Z"}),
    ],
)
async def test_bad_queries_are_refused_422(
    http: httpx.AsyncClient, admin: dict[str, str], key: str, endpoint: str, params: Any
) -> None:
    error_of(await http.get(f"{API}/series/{key}/{endpoint}", params=params, headers=admin), 422)


async def test_a_bad_key_is_refused_422(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for url, params in series_urls("a!b"):
        error_of(await http.get(url, params=params, headers=admin), 422)


async def test_a_cursor_of_another_listing_is_refused_422(
    http: httpx.AsyncClient, admin: dict[str, str], series: TimeSeries, key: str
) -> None:
    await save_at(series, key, "sen:t", [T0, T0 + SECOND])
    url = f"{API}/series/{key}/records"
    cursor = ok(await http.get(url, params={"limit": 1}, headers=admin))["next"]
    for params in ({"order": "asc"}, {"type": "sen:t"}):
        error_of(await http.get(url, params={**params, "cursor": cursor}, headers=admin), 422)
    other = f"probe-{uuid.uuid4()}"
    error_of(
        await http.get(f"{API}/series/{other}/records", params={"cursor": cursor}, headers=admin),
        422,
    )
