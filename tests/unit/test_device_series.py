"""A device's series and its records' types: whose series it is, which listed sensor."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m2m.errors import InvalidInput
from m2m.registry.device_series import (
    check_device_record_type,
    device_of_series,
    listed_sensor,
)
from m2m.registry.paths import InvalidPathError
from m2m.timeseries.errors import TimeSeriesError

DEVICE_ID = "0f5e2c3a-8a4b-4c59-9d2e-4b6a1f0c7d21"


def test_a_device_series_names_its_device() -> None:
    assert device_of_series(f"dev-{DEVICE_ID}") == DEVICE_ID


@pytest.mark.parametrize(
    "series_id",
    [
        f"dev-{DEVICE_ID.upper()}",
        f"dev-{DEVICE_ID.replace('-', '')}",
        f"dev-{{{DEVICE_ID}}}",
        f"dev-urn:uuid:{DEVICE_ID}",
        f"dev-{DEVICE_ID} ",
        f"dev-{DEVICE_ID}x",
        f"dev-{DEVICE_ID}!sen:loc",
        "dev-" + "\u0660" * 32,  # int() reads these digits; no device id is written with them
        "dev-" + "\ud800" * 32,
        DEVICE_ID,
        f"DEV-{DEVICE_ID}",
        f"xdev-{DEVICE_ID}",
        f"dev-dev-{DEVICE_ID}",
        "dev-",
        "dev-1",
        "",
        "thing-1",
    ],
)
def test_only_a_canonical_device_series_names_a_device(series_id: str) -> None:
    assert device_of_series(series_id) is None


@given(st.uuids())
def test_every_device_id_has_its_series(device_id: uuid.UUID) -> None:
    assert device_of_series(f"dev-{device_id}") == str(device_id)


@given(st.text(max_size=50))
def test_any_series_names_at_most_a_device_whose_series_it_is(series_id: str) -> None:
    device_id = device_of_series(series_id)
    if device_id is not None:
        assert series_id == f"dev-{device_id}"
        assert str(uuid.UUID(device_id)) == device_id


@pytest.mark.parametrize(
    ("record_type", "sensor"),
    [
        ("lsen:pressure", "pressure"),
        ("lsen:a:b", "a:b"),
        ("lsen:.hidden", ".hidden"),
        ("lsen:...", "..."),
        ("lsen:é 𝄞", "é 𝄞"),
        ("lsen:lsen:x", "lsen:x"),
    ],
)
def test_a_listed_sensor_type_names_its_sensor(record_type: str, sensor: str) -> None:
    assert listed_sensor(record_type) == sensor
    check_device_record_type(record_type)


@pytest.mark.parametrize(
    "record_type", ["sen:loc", "_server", "LSEN:x", "lsen", "xlsen:x", "lsen-x", " lsen:x"]
)
def test_other_types_name_no_listed_sensor(record_type: str) -> None:
    assert listed_sensor(record_type) is None
    check_device_record_type(record_type)


@pytest.mark.parametrize(
    ("record_type", "problem"),
    [
        ("lsen:", "a child name cannot be empty"),
        ("lsen:.", "it contains a '.' segment"),
        ("lsen:..", "it contains a '..' segment"),
        ("lsen:a/b", "a child name cannot contain '/'"),
        ("lsen:/", "a child name cannot contain '/'"),
        ("lsen:../etc", "a child name cannot contain '/'"),
        ("lsen:a\tb", "it contains a control character"),
        ("lsen:\x00", "it contains a control character"),
        ("lsen:\x7f", "it contains a control character"),
        ("lsen:a\x85", "it contains a control character"),
        ("lsen:\ud800", "it contains a lone surrogate (not text)"),
        ("lsen:x\udfff", "it contains a lone surrogate (not text)"),
    ],
)
def test_a_listed_sensor_that_cannot_name_a_node_is_refused(record_type: str, problem: str) -> None:
    with pytest.raises(InvalidPathError) as caught:
        listed_sensor(record_type)
    assert caught.value.problem == problem
    with pytest.raises(InvalidInput):
        check_device_record_type(record_type)


@pytest.mark.parametrize(
    ("record_type", "reason"),
    [
        ("", "a record type must be non-empty"),
        ("sen:\ud800", "lone surrogates"),
        ("x" * 1025, "above 1024"),
        ("lsen:" + "x" * 1020, "above 1024"),  # the whole type counts
    ],
)
def test_a_type_no_record_can_have_is_refused_by_the_time_series_rule(
    record_type: str, reason: str
) -> None:
    with pytest.raises(TimeSeriesError, match=reason):
        check_device_record_type(record_type)


def test_the_longest_listed_sensor_type_is_accepted() -> None:
    check_device_record_type("lsen:" + "x" * 1019)


device_types = st.lists(
    st.sampled_from(["lsen:", "sen:", "/", ".", "\t", "\ud800", "x", "é", "!"]) | st.characters(),
    max_size=8,
).map("".join)


@given(device_types)
def test_a_type_is_a_device_s_exactly_when_both_stores_accept_it(record_type: str) -> None:
    try:
        check_device_record_type(record_type)
    except InvalidInput:
        accepted = False
    else:
        accepted = True
        assert record_type.encode("utf-8")
        sensor = listed_sensor(record_type)
        assert (sensor is not None) == record_type.startswith("lsen:")
    storable = bool(record_type) and not any("\ud800" <= c <= "\udfff" for c in record_type)
    if not record_type.startswith("lsen:"):
        assert accepted is storable
    elif not storable:
        assert not accepted
