"""Downsampling: which data hold a number, and buckets that add up, whatever the pages."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m2m.timeseries import JsonValue
from m2m.timeseries.downsample import (
    Bucket,
    Downsampler,
    decoded_page,
    numeric_points,
    plot_value,
)

START = 1_700_000_000_000_000
"""A range start, in microseconds since the Unix epoch."""

finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["lat", "lon", "t"]), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def points(draw: st.DrawFn, unique: bool = False) -> tuple[list[int], list[float]]:
    """Times (ascending, within a day of START) and their values."""
    times = sorted(
        draw(st.lists(st.integers(START, START + 86_400_000_000), max_size=60, unique=unique))
    )
    return times, draw(st.lists(finite, min_size=len(times), max_size=len(times)))


def direct(
    times: list[int], values: list[float], start: int, end: int, count: int
) -> list[tuple[int, float, float, float, float, int]]:
    """The buckets computed value by value: (time, min, max, avg, last, count)."""
    width = math.ceil((end - start + 1) / count)
    grouped: dict[int, list[float]] = {}
    for moment, value in zip(times, values, strict=True):
        if start <= moment <= end:
            grouped.setdefault((moment - start) // width, []).append(value)
    return [
        (start + index * width, min(vs), max(vs), math.fsum(vs) / len(vs), vs[-1], len(vs))
        for index, vs in sorted(grouped.items())
    ]


def as_tuples(buckets: list[Bucket]) -> list[tuple[int, float, float, float, float, int]]:
    return [(b.time, b.min, b.max, b.avg, b.last, b.count) for b in buckets]


def assert_close(
    given: list[tuple[int, float, float, float, float, int]],
    expected: list[tuple[int, float, float, float, float, int]],
) -> None:
    assert [(t, lo, hi, last, n) for t, lo, hi, _, last, n in given] == [
        (t, lo, hi, last, n) for t, lo, hi, _, last, n in expected
    ]
    for (*_, avg, _, _), (*_, expected_avg, _, _) in zip(given, expected, strict=True):
        assert avg == pytest.approx(expected_avg, rel=1e-9, abs=1e-3)


# --- What holds a number ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (21.5, 21.5),
        (-3, -3.0),
        (0, 0.0),
        ("21.5", 21.5),
        ("-0.5e3", -500.0),
        (" 7 ", 7.0),
        (".5", 0.5),
        ("+2.", 2.0),
        (10**400, None),
        ("1e999", None),
        ("nan", None),
        ("inf", None),
        ("1_000", None),
        ("0x1F", None),
        ("21,5", None),
        ("", None),
        ("warm", None),
        (True, None),
        (False, None),
        (None, None),
        ([1], None),
        ({"lat": 1}, None),
        (float("nan"), None),
        (float("inf"), None),
    ],
)
def test_a_value_is_a_finite_number_or_a_string_holding_one(data: JsonValue, value: Any) -> None:
    assert plot_value(data) == value


@pytest.mark.parametrize(
    ("data", "value"),
    [
        ({"lat": 48.85, "lon": 2.35}, 48.85),
        ({"lat": "48.85"}, 48.85),
        ({"lat": True}, None),
        ({"lon": 2.35}, None),
        ({"lat": {"deg": 48}}, None),
        (48.85, None),
        ("48.85", None),
        ([48.85], None),
    ],
)
def test_a_field_is_a_member_of_object_data(data: JsonValue, value: Any) -> None:
    assert plot_value(data, "lat") == value


@given(st.lists(json_values, max_size=20), st.sampled_from([None, "lat"]))
def test_numeric_points_are_the_records_whose_data_holds_a_number(
    data: list[JsonValue], field: str | None
) -> None:
    texts = [json.dumps(value) for value in data]
    times = list(range(len(texts)))
    expected = [(t, plot_value(d, field)) for t, d in zip(times, data, strict=True)]
    kept = [(t, v) for t, v in expected if v is not None]
    assert numeric_points(times, texts, field) == ([t for t, _ in kept], [v for _, v in kept])


@given(st.lists(json_values, max_size=10), st.integers(0, 10), st.sampled_from(["{", "1,2", ""]))
def test_a_text_that_is_not_one_json_value_is_skipped_alone(
    data: list[JsonValue], position: int, bad: str
) -> None:
    texts = [json.dumps(value) for value in data]
    at = min(position, len(texts))
    texts.insert(at, bad)
    expected: list[JsonValue] = [*data[:at], None, *data[at:]]
    assert decoded_page(texts) == expected


def test_json_with_whitespace_around_still_decodes() -> None:
    assert decoded_page([' "21.5" ', "7\n"]) == ["21.5", 7]
    assert numeric_points([1, 2], [' "21.5" ', "7\n"]) == ([1, 2], [21.5, 7.0])


# --- Buckets ---------------------------------------------------------------------------------


@given(points(), st.integers(1, 50))
def test_buckets_are_those_computed_value_by_value(
    page: tuple[list[int], list[float]], count: int
) -> None:
    times, values = page
    end = START + 86_400_000_000
    sampler = Downsampler(START, end, count)
    sampler.add(times, values)
    assert_close(as_tuples(sampler.buckets()), direct(times, values, START, end, count))


@given(points(), st.integers(1, 50), st.integers(0, 86_400_000_000), st.integers(0, 86_400))
def test_buckets_add_up_and_stay_in_order(
    page: tuple[list[int], list[float]], count: int, offset: int, length: int
) -> None:
    times, values = page
    start = START + offset
    end = start + length * 1_000_000
    sampler = Downsampler(start, end, count)
    sampler.add(times, values)
    buckets = sampler.buckets()
    assert sum(b.count for b in buckets) == sum(start <= t <= end for t in times)
    assert len(buckets) <= count
    assert [b.time for b in buckets] == sorted({b.time for b in buckets})
    for bucket in buckets:
        assert start <= bucket.time <= end
        assert (bucket.time - start) % sampler.width == 0
        assert bucket.min <= bucket.avg <= bucket.max
        assert bucket.min <= bucket.last <= bucket.max
        assert bucket.count >= 1


@given(points(unique=True), st.integers(1, 20), st.data())
def test_pages_give_the_same_buckets_in_any_order(
    page: tuple[list[int], list[float]], count: int, data: st.DataObject
) -> None:
    times, values = page
    end = START + 86_400_000_000
    cuts = sorted(data.draw(st.lists(st.integers(0, len(times)), max_size=5)))
    bounds = list(zip([0, *cuts], [*cuts, len(times)], strict=True))
    sampler = Downsampler(START, end, count)
    for first, past in data.draw(st.permutations(bounds)):
        sampler.add(times[first:past], values[first:past])
    assert_close(as_tuples(sampler.buckets()), direct(times, values, START, end, count))


def test_last_is_the_newest_value_of_its_bucket() -> None:
    sampler = Downsampler(0, 99, 2)
    sampler.add([60, 70], [6.0, 7.0])
    sampler.add([10, 20, 20], [1.0, 3.0, 2.0])
    sampler.add([30], [0.5])
    assert sampler.buckets() == [
        Bucket(0, 0.5, 3.0, 1.625, 0.5, 4),
        Bucket(50, 6.0, 7.0, 6.5, 7.0, 2),
    ]


def test_one_instant_is_one_bucket_and_values_outside_are_left_out() -> None:
    sampler = Downsampler(5, 5, 500)
    assert sampler.width == 1
    sampler.add([4, 5, 5, 6], [1.0, 2.0, 4.0, 8.0])
    assert sampler.buckets() == [Bucket(5, 2.0, 4.0, 3.0, 4.0, 2)]


def test_the_mean_of_equal_values_is_that_value() -> None:
    sampler = Downsampler(0, 10, 1)
    sampler.add([0, 1, 2], [0.1, 0.1, 0.1])
    (bucket,) = sampler.buckets()
    assert bucket.min == bucket.avg == bucket.max == 0.1


def test_values_near_the_floats_limit_still_give_a_mean_between_min_and_max() -> None:
    sampler = Downsampler(0, 10, 1)
    sampler.add([0, 1], [1e308, 1e308])
    assert sampler.buckets()[0].avg == 1e308
    sampler.add([2, 3], [-1e308, -1e308])
    (bucket,) = sampler.buckets()
    assert math.isfinite(bucket.avg) and bucket.min <= bucket.avg <= bucket.max


@pytest.mark.parametrize(("start", "end", "count"), [(0, 10, 0), (10, 9, 5)])
def test_a_range_without_buckets_is_refused(start: int, end: int, count: int) -> None:
    with pytest.raises(ValueError):
        Downsampler(start, end, count)
