"""Text the platform can store (what Cassandra's ``text`` and the bus's UTF-8 JSON can
carry), and times as it writes them for people and programs.

A Python string may hold lone UTF-16 surrogates (``"\\ud800"``): JSON's ``\\u`` escapes
make them, and so do command-line arguments with bytes that are not UTF-8. They have no
UTF-8 form, so Cassandra's driver, or the bus's encoder, would fail on them long after
they were accepted. Every store checks its text with :func:`utf8_size` first.
"""

from __future__ import annotations

from datetime import UTC, datetime


def utf8_size(text: str) -> int | None:
    """The bytes ``text`` takes in UTF-8, or None if it holds a lone surrogate."""
    if text.isascii():  # nearly always, and a scan in C
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def utc_text(moment: datetime) -> str:
    """``2026-01-31T23:59:59Z``: ISO 8601 in UTC (with microseconds only if it has any)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def unix_time_text(seconds: int) -> str:
    return utc_text(datetime.fromtimestamp(seconds, UTC))
