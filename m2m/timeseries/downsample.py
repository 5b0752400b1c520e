"""Downsampling: the records of one sensor over a time range, made into a few points to plot.

The range ``[start, end]`` (microseconds since the Unix epoch, both inclusive) is cut into
at most ``points`` buckets of one width, a whole number of microseconds; each bucket that
got values gives its start, min, max, mean, last (its newest value) and count, and empty
buckets are left out. Values come in pages, as the store reads them, in any page order;
within a page times ascend, so a bucket's share of a page is a slice, and min, max and sum
run over slices in C, not value by value in Python: a year of records plots at once.

A value is a JSON number, or a string holding a decimal number (ALIP devices send
``D T 21.5``, stored as ``"21.5"``), and must be finite; booleans are not numbers. With a
``field``, the value is that member of a JSON object. Records without one are left out.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
from operator import itemgetter

from m2m.timeseries.record import JsonValue

_DECIMAL = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")
_RAW_DECODE = json.JSONDecoder().raw_decode


@dataclass(frozen=True, slots=True)
class Bucket:
    time: int
    """The bucket's start, in microseconds since the Unix epoch."""
    min: float
    max: float
    avg: float
    last: float
    """The value with the latest time (of equal times, the one given last)."""
    count: int


@dataclass(slots=True)
class _Partial:
    """What a bucket has summed up so far."""

    min: float
    max: float
    total: float
    count: int
    last_time: int
    last: float

    def mean(self) -> float:
        mean = self.total / self.count
        if math.isnan(mean):  # sums past the floats' limit, both ways: no mean to be had
            mean = self.min / 2 + self.max / 2
        # The mean lies between min and max; summing floats may round it past them.
        return min(max(mean, self.min), self.max)


def plot_value(data: JsonValue, field: str | None = None) -> float | None:
    """The number ``data`` (or its member ``field``) holds, if it holds a usable one."""
    if field is not None:
        data = data.get(field) if isinstance(data, dict) else None
    value = data if type(data) is float else _number(data)
    return value if math.isfinite(value) else None


def _number(data: JsonValue) -> float:
    """What a JSON value other than a float holds as a float: a string holding a decimal
    number, or an integer (not a boolean) a float can hold; NaN for anything else."""
    if isinstance(data, str):
        return float(data) if _DECIMAL.fullmatch(data) else math.nan
    if isinstance(data, int) and not isinstance(data, bool):
        try:
            return float(data)
        except OverflowError:
            return math.nan
    return math.nan


def numeric_points(
    times: Sequence[int], texts: Sequence[str], field: str | None = None
) -> tuple[list[int], list[float]]:
    """The times and values of the records whose data (JSON text) holds a usable number:
    ``plot_value`` of each, a page at a time, with no Python call for a float."""
    data = decoded_page(texts)
    if field is not None:
        data = [value.get(field) if isinstance(value, dict) else None for value in data]
    numbers = [value if type(value) is float else _number(value) for value in data]
    usable = list(map(math.isfinite, numbers))
    return list(compress(times, usable)), list(compress(numbers, usable))


def decoded_page(texts: Sequence[str]) -> list[JsonValue]:
    """What each text holds as JSON; None for a text that is not one JSON value.

    ``json.loads`` costs several times the decoding itself in Python code per call: the
    decoder's own ``raw_decode``, mapped over the page, keeps nearly all of it in C. A text
    it does not read whole (not JSON, or more than one value) sends the page one by one.
    """
    try:
        decoded = list(map(_RAW_DECODE, texts))
    except (TypeError, ValueError, RecursionError):
        return [_decoded(text) for text in texts]
    # raw_decode never reads past a text: the ends add up to the lengths iff each is whole.
    if sum(map(itemgetter(1), decoded)) != sum(map(len, texts)):
        return [_decoded(text) for text in texts]
    return list(map(itemgetter(0), decoded))


def _decoded(text: str) -> JsonValue:
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return None


class Downsampler:
    """Buckets over ``[start, end]`` (microseconds, inclusive), at most ``points`` of them."""

    def __init__(self, start: int, end: int, points: int) -> None:
        if points < 1:
            raise ValueError(f"points must be at least 1, not {points}")
        if end < start:
            raise ValueError(f"the range ends ({end}) before it starts ({start})")
        self.start = start
        self.end = end
        self.width = -(-(end - start + 1) // points)
        """Microseconds a bucket spans: the range's, divided by ``points``, rounded up."""
        self._partials: dict[int, _Partial] = {}

    def add(self, times: Sequence[int], values: Sequence[float]) -> None:
        """Count a page of values; its ``times`` ascend. Times out of the range are left out."""
        first = bisect_left(times, self.start)
        stop = bisect_right(times, self.end)
        while first < stop:
            index = (times[first] - self.start) // self.width
            past = bisect_left(times, self.start + (index + 1) * self.width, first, stop)
            self._merge(index, values[first:past], times[past - 1])
            first = past

    def buckets(self) -> list[Bucket]:
        """The buckets that got values, oldest first."""
        return [
            Bucket(
                self.start + index * self.width,
                partial.min,
                partial.max,
                partial.mean(),
                partial.last,
                partial.count,
            )
            for index, partial in sorted(self._partials.items())
        ]

    def _merge(self, index: int, values: Sequence[float], last_time: int) -> None:
        low, high, total = min(values), max(values), sum(values)
        partial = self._partials.get(index)
        if partial is None:
            self._partials[index] = _Partial(low, high, total, len(values), last_time, values[-1])
            return
        partial.min = min(partial.min, low)
        partial.max = max(partial.max, high)
        partial.total += total
        partial.count += len(values)
        if last_time >= partial.last_time:
            partial.last_time = last_time
            partial.last = values[-1]
