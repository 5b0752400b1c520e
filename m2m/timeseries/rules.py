"""What the time series accept: series ids, record types and data, checked before any write.

The store checks every record against these rules, and so do the places where records
enter the platform (the ALIP parser, the M2MP session, the converter, the storage
worker): one function per rule, so a device is answered ``ERR …`` for exactly what the
store would refuse, and nothing the store refuses is ever put on the bus.

- A series id is non-empty and has no ``!`` (which joins id and type into the key of a
  type's partitions); a record type is non-empty. Both are text Cassandra can store (no
  lone surrogates) of at most ``MAX_KEY_BYTES`` in UTF-8: a partition key component
  holds 64 KiB, and no sensor needs a name of more than a line.
- Data is JSON (finite numbers, strings without lone surrogates) nested at most
  ``MAX_DATA_DEPTH`` deep, so every reader and every hop of the bus can decode it.
  What is stored is its compact JSON text.
"""

from __future__ import annotations

import json
from typing import Final

from m2m.text import utf8_size
from m2m.timeseries.errors import TimeSeriesError
from m2m.timeseries.record import JsonValue

TYPE_SEPARATOR: Final = "!"
"""Joins id and type into the key of a single type's partitions."""
MAX_KEY_BYTES: Final = 1024
"""The longest series id, and the longest record type, in UTF-8 bytes."""
MAX_DATA_DEPTH: Final = 64
"""How deep arrays and objects may nest in a record's data."""

_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""Made once: ``json.dumps`` with options builds an encoder per call."""


def check_series_id(series_id: str) -> None:
    """Raise :class:`TimeSeriesError` unless ``series_id`` can name a series."""
    _check_key(series_id, "a series id")
    if TYPE_SEPARATOR in series_id:
        raise TimeSeriesError(
            f"a series id must be non-empty and without '{TYPE_SEPARATOR}': {series_id!r:.80}"
        )


def check_record_type(record_type: str) -> None:
    """Raise :class:`TimeSeriesError` unless ``record_type`` can name a record type."""
    _check_key(record_type, "a record type")


def _check_key(key: str, what: str) -> None:
    if not key:
        raise TimeSeriesError(f"{what} must be non-empty")
    size = utf8_size(key)
    if size is None:
        raise TimeSeriesError(f"{what} must be text without lone surrogates: {key!r:.80}")
    if size > MAX_KEY_BYTES:
        raise TimeSeriesError(f"{what} is {size} bytes long, above {MAX_KEY_BYTES}")


def encode_data(data: JsonValue) -> str:
    """The JSON text a record's data is stored as; :class:`TimeSeriesError` if it cannot be."""
    try:
        text = _COMPACT_JSON.encode(data)
    except RecursionError:
        raise TimeSeriesError(f"record data is nested deeper than {MAX_DATA_DEPTH}") from None
    except (TypeError, ValueError) as exc:
        raise TimeSeriesError(f"record data is not JSON: {exc}") from None
    if utf8_size(text) is None:
        raise TimeSeriesError("record data holds a lone surrogate: it is not text")
    # Each level of nesting opens a bracket: few brackets, no need to walk the data.
    if text.count("[") + text.count("{") > MAX_DATA_DEPTH and _depth(data) > MAX_DATA_DEPTH:
        raise TimeSeriesError(f"record data is nested deeper than {MAX_DATA_DEPTH}")
    return text


def _depth(data: JsonValue) -> int:
    """How deep arrays and objects nest in ``data``; stops counting past the limit."""
    deepest = 0
    waiting: list[tuple[JsonValue, int]] = [(data, 0)]
    while waiting:
        value, depth = waiting.pop()
        if isinstance(value, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DATA_DEPTH:
                break
            children = value.values() if isinstance(value, dict) else value
            waiting.extend((child, depth) for child in children)
    return deepest
