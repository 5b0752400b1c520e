"""What a store_ts message asks the storage worker to write, checked before any write."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from m2m.bus import topics
from m2m.bus.envelope import Envelope, InvalidMessage
from m2m.errors import InvalidInput
from m2m.timeseries.rules import check_record_type, check_series_id
from m2m.timeseries.timeuuids import time_of
from m2m.workers.storage import ListedSensor, StoreRequest

DEVICE_ID = "0f5e2c3a-8a4b-4c59-9d2e-4b6a1f0c7d21"
DEVICE_SERIES = f"dev-{DEVICE_ID}"
DATE_UUID = "3435c6ca-e6e4-11f1-a02f-02fc00000001"
NANOS = 1_700_000_000_123_456_789


def store_ts(call: str = topics.STORE_TS, **fields: Any) -> Envelope:
    """A store_ts message; ``fields`` override or add (None drops one)."""
    body = {
        "key": DEVICE_SERIES,
        "type": "sen:temp",
        "date_uuid": DATE_UUID,
        "data": "21.5",
        **fields,
    }
    body = {name: value for name, value in body.items() if value is not None}
    return Envelope(topics.STORAGE, "receivers/alip", call, 1_700_000_000, body)


def test_a_record_of_a_device_is_for_its_series_at_its_date_uuid() -> None:
    request = StoreRequest.of(store_ts(data={"lat": 48.85}))
    assert request == StoreRequest(
        key=DEVICE_SERIES,
        type="sen:temp",
        uuid=UUID(DATE_UUID),
        data={"lat": 48.85},
        listed_sensor=None,
    )


def test_a_listed_sensor_record_of_a_device_names_the_sensor_to_note() -> None:
    request = StoreRequest.of(store_ts(type="lsen:pressure"))
    assert request.listed_sensor == ListedSensor(DEVICE_ID, "pressure")


@pytest.mark.parametrize(
    "key",
    [
        "thing-1",
        DEVICE_ID,
        f"dev-{DEVICE_ID.upper()}",
        f"dev-{DEVICE_ID.replace('-', '')}",
        f"dev-{{{DEVICE_ID}}}",
        "dev-1",
    ],
)
def test_only_a_canonical_device_series_is_a_device_s(key: str) -> None:
    request = StoreRequest.of(store_ts(key=key, type="lsen:pressure"))
    assert (request.key, request.listed_sensor) == (key, None)


def test_a_series_of_no_device_may_have_a_type_no_registry_node_could_name() -> None:
    request = StoreRequest.of(store_ts(key="thing-1", type="lsen:.."))
    assert (request.type, request.listed_sensor) == ("lsen:..", None)


@pytest.mark.parametrize(
    ("record_type", "reason"),
    [
        ("lsen:..", "it contains a '..' segment"),
        ("lsen:.", "it contains a '.' segment"),
        ("lsen:", "a child name cannot be empty"),
        ("lsen:a/b", "a child name cannot contain '/'"),
        ("lsen:a\nb", "it contains a control character"),
    ],
)
def test_a_device_s_listed_sensor_that_cannot_name_a_node_is_refused(
    record_type: str, reason: str
) -> None:
    with pytest.raises(InvalidMessage) as refused:
        StoreRequest.of(store_ts(type=record_type))
    assert str(refused.value).startswith("store_ts refused: ")
    assert reason in str(refused.value)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"key": None}, "store_ts needs a key and a type (non-empty strings)"),
        ({"key": ""}, "store_ts needs a key and a type"),
        ({"key": 12}, "store_ts needs a key and a type"),
        ({"key": ["dev-1"]}, "store_ts needs a key and a type"),
        ({"type": None}, "store_ts needs a key and a type"),
        ({"type": ""}, "store_ts needs a key and a type"),
        ({"type": {"a": 1}}, "store_ts needs a key and a type"),
        ({"data": None}, "store_ts needs data"),
        ({"key": "dev-1!sen:x"}, "store_ts refused: a series id must be non-empty and without"),
        ({"key": "dev-\ud800"}, "store_ts refused: a series id must be text without lone"),
        ({"type": "sen:\udfff"}, "store_ts refused: a record type must be text without lone"),
        ({"key": "k" * 1025}, "store_ts refused: a series id is 1025 bytes long, above 1024"),
        ({"type": "é" * 513}, "store_ts refused: a record type is 1026 bytes long"),
        ({"type": "lsen:\ud800"}, "store_ts refused: a record type must be text without lone"),
    ],
)
def test_a_message_the_stores_would_refuse_is_refused_whole(
    fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidMessage) as refused:
        StoreRequest.of(store_ts(**fields))
    assert str(refused.value).startswith(reason)


def test_a_record_whose_data_is_null_is_still_a_record() -> None:
    envelope = store_ts()
    with_null = replace(envelope, fields={**envelope.fields, "data": None})
    assert StoreRequest.of(with_null).data is None


def test_only_store_ts_is_taken() -> None:
    with pytest.raises(InvalidMessage, match="the storage topic takes store_ts, not 'store'"):
        StoreRequest.of(store_ts("store"))


# --- The record's UUID ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("date_uuid", "reason"),
    [
        ("yesterday", "store_ts has an unusable time"),
        ("", "store_ts has an unusable time"),
        (12, "store_ts has an unusable time"),
        (None, "store_ts needs date_uuid (a time UUID) or date_nano (integer)"),
        ([DATE_UUID], "store_ts has an unusable time"),
        ("\ud800" * 32, "store_ts has an unusable time"),
        (DEVICE_ID, "is not a time UUID (version 1)"),
    ],
)
def test_a_date_uuid_that_is_no_time_uuid_is_refused(date_uuid: Any, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=re.escape(reason)):
        StoreRequest.of(store_ts(date_uuid=date_uuid))


def test_a_date_uuid_is_read_in_any_form_uuid_accepts() -> None:
    request = StoreRequest.of(store_ts(date_uuid=DATE_UUID.upper().replace("-", "")))
    assert request.uuid == UUID(DATE_UUID)


def test_a_date_nano_gives_a_uuid_at_that_microsecond_derived_from_the_message() -> None:
    first = StoreRequest.of(store_ts(date_uuid=None, date_nano=NANOS))
    again = StoreRequest.of(store_ts(date_uuid=None, date_nano=NANOS))
    other = StoreRequest.of(store_ts(date_uuid=None, date_nano=NANOS, data="22"))
    assert first.uuid == again.uuid != other.uuid
    assert first.uuid.version == 1
    assert time_of(first.uuid) == datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)


def test_a_date_uuid_wins_over_a_date_nano() -> None:
    assert StoreRequest.of(store_ts(date_nano=NANOS)).uuid == UUID(DATE_UUID)


@pytest.mark.parametrize(
    ("date_nano", "reason"),
    [
        (True, "store_ts needs date_uuid"),
        (1.7e18, "store_ts needs date_uuid"),
        ("1700000000000000000", "store_ts needs date_uuid"),
        (10**30, "store_ts has an unusable time"),
        (10**400, "store_ts has an unusable time"),
        (-(10**30), "store_ts has an unusable time"),
        (-13_000_000_000 * 10**9, "store_ts has an unusable time"),  # before 1582
    ],
)
def test_a_date_nano_that_is_no_usable_time_is_refused(date_nano: Any, reason: str) -> None:
    with pytest.raises(InvalidMessage, match=reason):
        StoreRequest.of(store_ts(date_uuid=None, date_nano=date_nano))


def test_a_date_nano_seed_survives_text_that_has_no_utf8_form() -> None:
    """The seed is ASCII JSON: a lone surrogate in the data does not break it (the store will)."""
    request = StoreRequest.of(store_ts(date_uuid=None, date_nano=NANOS, data="\ud800"))
    assert request.data == "\ud800"


def test_refusals_are_invalid_input_never_worth_retrying() -> None:
    with pytest.raises(InvalidInput):
        StoreRequest.of(store_ts(type="lsen:.."))


# --- Property ---------------------------------------------------------------------------

_SURROGATE_TEXTS = st.tuples(
    st.text(max_size=4), st.sampled_from(["\ud800", "\udfff"]), st.text(max_size=4)
).map("".join)
_TEXTS = st.text(max_size=8) | _SURROGATE_TEXTS
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXTS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXTS, children, max_size=3),
    max_leaves=8,
)
_KEYS = st.sampled_from([DEVICE_SERIES, "thing-1", "dev-1!x", ""]) | st.uuids().map(
    lambda device: f"dev-{device}"
)
_TYPES = st.sampled_from(["sen:temp", "lsen:p", "lsen:..", "lsen:", "_server", ""]) | st.lists(
    st.sampled_from(["lsen:", "/", ".", "\x00", "\ud800", "x"]), min_size=1, max_size=5
).map("".join)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "key": _KEYS | _VALUES,
            "type": _TYPES | _VALUES,
            "data": _VALUES,
            "date_uuid": st.uuids(version=1).map(str) | st.uuids().map(str) | _VALUES,
            "date_nano": st.integers() | _VALUES,
        },
    )
)
@example({"key": DEVICE_SERIES, "type": "lsen:..", "data": 1, "date_uuid": DATE_UUID})
@example({"key": "thing", "type": "lsen:..", "data": 1, "date_nano": NANOS})
def test_any_fields_give_a_request_the_stores_accept_or_an_invalid_message(
    fields: dict[str, Any],
) -> None:
    envelope = Envelope(topics.STORAGE, "tests", topics.STORE_TS, 1, fields)
    try:
        request = StoreRequest.of(envelope)
    except InvalidMessage as error:
        assert str(error)
        return
    check_series_id(request.key)
    check_record_type(request.type)
    assert time_of(request.uuid)
    assert json.dumps(request.data) == json.dumps(fields["data"])
    sensor = request.listed_sensor
    if sensor is not None:
        assert request.key == f"dev-{sensor.device_id}"
        assert str(UUID(sensor.device_id)) == sensor.device_id
        assert request.type == f"lsen:{sensor.name}"
