"""A device's series and the records in it: the rules, with no I/O in sight.

A device's records are kept in the series ``dev-<device uuid>``. A record of a listed
sensor (type ``lsen:<name>``) also notes the sensor on the device, under
``listed-sensors/<name>/``, so its type must pass the time series' rules and ``<name>``
the registry's. :func:`check_device_record_type` checks both, where records enter the
platform (the ALIP parser, the M2MP session, the converter) and in the storage worker.
"""

from __future__ import annotations

import uuid
from typing import Final

from m2m.registry.paths import check_name
from m2m.timeseries.rules import check_record_type

SERIES_PREFIX: Final = "dev-"
LISTED_SENSOR_PREFIX: Final = "lsen:"


def device_of_series(series_id: str) -> str | None:
    """The device id a series belongs to (``dev-<uuid>``); None for any other series."""
    text = series_id.removeprefix(SERIES_PREFIX)
    try:
        canonical = str(uuid.UUID(text))
    except ValueError:
        return None
    return text if series_id.startswith(SERIES_PREFIX) and text == canonical else None


def listed_sensor(record_type: str) -> str | None:
    """The listed sensor a record type names (``lsen:<name>``), None for other types.

    Raises :class:`~m2m.registry.paths.InvalidPathError` when ``<name>`` cannot name a node.
    """
    if not record_type.startswith(LISTED_SENSOR_PREFIX):
        return None
    name = record_type.removeprefix(LISTED_SENSOR_PREFIX)
    check_name(name, "/device/<id>/listed-sensors/")
    return name


def check_device_record_type(record_type: str) -> None:
    """Raise :class:`~m2m.errors.InvalidInput` unless a device's record can have this type."""
    check_record_type(record_type)
    listed_sensor(record_type)
