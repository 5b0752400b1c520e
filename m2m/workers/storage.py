"""The storage worker: ``store_ts`` messages become time-series records.

A record's UUID comes from the message (``date_uuid``, decided where the record was born),
so a redelivered message overwrites its own record and nothing is duplicated. Messages
from producers that send ``date_nano`` instead get a UUID derived from the message itself,
deterministic for the same reason. Records of listed sensors (``lsen:<name>``) of a device
(series ``dev-<uuid>``) also note the sensor on the device.

Everything a message asks for is checked against the stores' rules before anything is
written: a message they would refuse is refused whole (:class:`InvalidMessage`, finished
by the consumer), never half-stored and retried.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from m2m.bus import topics
from m2m.bus.envelope import Envelope, InvalidMessage
from m2m.cassandra import Database
from m2m.errors import InvalidInput
from m2m.registry.device import Device
from m2m.registry.device_series import LISTED_SENSOR_PREFIX, device_of_series, listed_sensor
from m2m.timeseries import TimeSeries, TimeSeriesError
from m2m.timeseries.rules import check_record_type, check_series_id
from m2m.timeseries.timeuuids import seeded_timeuuid, time_of


@dataclass(frozen=True, slots=True)
class StoreRequest:
    key: str
    type: str
    uuid: uuid.UUID
    data: Any
    listed_sensor: ListedSensor | None
    """The device's listed sensor the record is of, to note on the device."""

    @classmethod
    def of(cls, envelope: Envelope) -> StoreRequest:
        if envelope.call != topics.STORE_TS:
            raise InvalidMessage(f"the storage topic takes store_ts, not {envelope.call!r}")
        fields = envelope.fields
        key, record_type = fields.get("key"), fields.get("type")
        if (
            not isinstance(key, str)
            or not key
            or not isinstance(record_type, str)
            or not record_type
        ):
            raise InvalidMessage("store_ts needs a key and a type (non-empty strings)")
        if "data" not in fields:
            raise InvalidMessage("store_ts needs data")
        try:
            check_series_id(key)
            check_record_type(record_type)
            sensor = ListedSensor.of(key, record_type)
        except InvalidInput as exc:
            raise InvalidMessage(f"store_ts refused: {exc}") from None
        return cls(key, record_type, _record_uuid(fields), fields["data"], sensor)


@dataclass(frozen=True, slots=True)
class ListedSensor:
    device_id: str
    name: str

    @classmethod
    def of(cls, series_id: str, record_type: str) -> ListedSensor | None:
        """The listed sensor a record of a device is of; None for other records."""
        if not record_type.startswith(LISTED_SENSOR_PREFIX):
            return None  # nearly always: and no series id to parse
        device_id = device_of_series(series_id)
        if device_id is None:
            return None
        name = listed_sensor(record_type)
        assert name is not None
        return cls(device_id, name)


def _record_uuid(fields: Any) -> uuid.UUID:
    try:
        if "date_uuid" in fields:
            record_uuid = uuid.UUID(str(fields["date_uuid"]))
            time_of(record_uuid)  # only a time UUID orders a series
            return record_uuid
        nanos = fields.get("date_nano")
        if isinstance(nanos, int) and not isinstance(nanos, bool):
            moment = datetime.fromtimestamp(nanos // 1000 / 1_000_000, UTC)
            seed = json.dumps(fields, sort_keys=True, default=str).encode()
            return seeded_timeuuid(moment, seed)
    except (ValueError, OverflowError, OSError, RecursionError, TimeSeriesError) as exc:
        raise InvalidMessage(f"store_ts has an unusable time: {exc}") from None
    raise InvalidMessage("store_ts needs date_uuid (a time UUID) or date_nano (integer)")


class StorageWorker:
    def __init__(self, database: Database, timeseries: TimeSeries) -> None:
        self._database = database
        self._timeseries = timeseries

    async def handle(self, envelope: Envelope) -> None:
        request = StoreRequest.of(envelope)
        try:
            record = await self._timeseries.save(
                request.key, request.type, request.data, uuid=request.uuid
            )
        except TimeSeriesError as exc:  # refused as it is: retrying cannot help
            raise InvalidMessage(str(exc)) from exc
        sensor = request.listed_sensor
        if sensor is not None:
            await Device(self._database, sensor.device_id).note_listed_sensor(
                sensor.name, record.time
            )
