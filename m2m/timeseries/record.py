"""A record of a time series: what one sensor of one thing reported at one time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias
from uuid import UUID

JsonValue: TypeAlias = Any
"""What ``json.loads`` returns: dict, list, str, int, float, bool or None, nested."""


@dataclass(frozen=True, slots=True)
class Record:
    """One record, as saved and as read back.

    ``time`` is the UTC time ``uuid`` carries, to the microsecond; ``uuid`` tells apart
    records of the same instant. ``data`` is the decoded JSON.
    """

    id: str
    """The thing the series belongs to, e.g. ``dev-<device uuid>``."""
    type: str
    """What kind of data: the sensor (``sen:loc``) or an internal kind (``_server``)."""
    time: datetime
    uuid: UUID
    data: JsonValue
