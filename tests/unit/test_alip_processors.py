"""Each data processor of the contract: the stored type, the value, the record time."""

import json
import math
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m2m.receivers.alip.commands import AlipError
from m2m.receivers.alip.processors import Echo, Reading, process_data
from m2m.registry.device_series import check_device_record_type

NOV_14_2023 = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("device_type", "content", "expected"),
    [
        ("L", "48.85,2.35", Reading("sen:loc", {"lat": 48.85, "lon": 2.35})),
        ("L", "48.85,2.35,12.5", Reading("sen:loc", {"lat": 48.85, "lon": 2.35, "spd": 12.5})),
        (
            "L",
            "-48.85,-2.35,0,35",
            Reading("sen:loc", {"lat": -48.85, "lon": -2.35, "spd": 0.0, "alt": 35.0}),
        ),
        (
            "L",
            "48.85,2.35,12.5,35,270,extra",
            Reading("sen:loc", {"lat": 48.85, "lon": 2.35, "spd": 12.5, "alt": 35.0}),
        ),
        ("L", "1e1,2", Reading("sen:loc", {"lat": 10.0, "lon": 2.0})),
        ("L", "7", Reading("sen:loc", {"sat": 7})),
        ("L", "0", Reading("sen:loc", {"sat": 0})),
        (
            "G",
            "1700000000,48.85,2.35",
            Reading("sen:loc", {"lat": 48.85, "lon": 2.35}, time=NOV_14_2023),
        ),
        (
            "G",
            "231114221320,48.85,2.35,12.5,35",
            Reading(
                "sen:loc", {"lat": 48.85, "lon": 2.35, "spd": 12.5, "alt": 35.0}, time=NOV_14_2023
            ),
        ),
        ("G", "20231114221320,9", Reading("sen:loc", {"sat": 9}, time=NOV_14_2023)),
        ("A0", "512", Reading("sen:adc:0", "512")),
        ("A12", "3.3", Reading("sen:adc:12", "3.3")),
        ("A01", "1", Reading("sen:adc:01", "1")),
        ("DI3", "1", Reading("sen:gpio:3", "1")),
        ("T", "21.5", Reading("sen:temp", "21.5")),
        ("V", "12.6", Reading("sen:volt", "12.6")),
        ("D", "open", Reading("sen:door", "open")),
        ("F", "75", Reading("sen:fuel", "75")),
        ("E", "on", Reading("sen:engine", "on")),
        ("SMS", "hello, world", Reading("sen:sms_received", "hello, world")),
        ("VER", "1.2.3", Reading("sen:version", "1.2.3")),
        ("LS:pressure", "1013", Reading("lsen:pressure", "1013")),
        ("LS:a:b", "x", Reading("lsen:a:b", "x")),
        ("echo", "are you there ?", Echo("are you there ?")),
        ("echo", "", Echo("")),
        # Anything else is stored unchanged, content included.
        ("sen:custom", "42", Reading("sen:custom", "42")),
        ("A", "1", Reading("A", "1")),
        ("Ax", "1", Reading("Ax", "1")),
        ("A1x", "1", Reading("A1x", "1")),
        ("A٣", "1", Reading("A٣", "1")),
        ("DI", "1", Reading("DI", "1")),
        ("DIx", "1", Reading("DIx", "1")),
        ("TT", "1", Reading("TT", "1")),
        ("l", "48.85,2.35", Reading("l", "48.85,2.35")),
        ("ECHO", "x", Reading("ECHO", "x")),
        ("XLS:a", "x", Reading("XLS:a", "x")),
    ],
)
def test_each_rule(device_type: str, content: str, expected: Reading | Echo) -> None:
    assert process_data(device_type, content) == expected


@pytest.mark.parametrize(
    ("device_type", "content", "reason"),
    [
        ("L", "", 'Invalid location "": expected lat,lon[,spd[,alt]] or a number of satellites'),
        ("L", "x", 'Invalid location "x": expected lat,lon'),
        ("L", "-1", 'Invalid location "-1": expected lat,lon'),
        ("L", "7.5", 'Invalid location "7.5": expected lat,lon'),
        ("L", "1" * 10, 'Invalid location "1111111111": expected lat,lon'),
        ("L", "abc,2.35", 'Invalid location "abc,2.35": lat "abc" is not a number'),
        ("L", "48.85,", 'Invalid location "48.85,": lon "" is not a number'),
        ("L", "48.85,2.35,fast", 'Invalid location "48.85,2.35,fast": spd "fast" is not'),
        ("L", "48.85,2.35,1,high", 'Invalid location "48.85,2.35,1,high": alt "high" is not'),
        ("L", "nan,2.35", 'Invalid location "nan,2.35": lat "nan" is not a number'),
        ("L", "48.85,inf", 'Invalid location "48.85,inf": lon "inf" is not a number'),
        ("L", "1e999,2", 'Invalid location "1e999,2": lat "1e999" is not a number'),
        ("G", "1700000000", 'Invalid G location "1700000000": expected <time>,lat,lon'),
        ("G", "", 'Invalid G location "": expected <time>,lat,lon'),
        ("G", "yesterday,48.85,2.35", 'Invalid G location "yesterday,48.85,2.35": Invalid time'),
        ("G", "231314221320,48.85,2.35", "month must be in 1..12"),
        ("G", "1700000000,abc,2.35", 'Invalid location "abc,2.35": lat "abc" is not a number'),
        ("G", "1700000000,", 'Invalid location "": expected lat,lon'),
        ("LS:", "1", 'Invalid listed sensor "LS:": a child name cannot be empty'),
        ("LS:a/b", "1", 'Invalid listed sensor "LS:a/b": a child name cannot contain'),
        ("LS:..", "1", """Invalid listed sensor "LS:..": it contains a '..' segment"""),
        ("LS:.", "1", """Invalid listed sensor "LS:.": it contains a '.' segment"""),
        ("LS:a\tb", "1", 'Invalid listed sensor "LS:a\tb": it contains a control character'),
        ("x" * 1025, "1", "Invalid type"),
    ],
)
def test_malformed_content_is_refused_with_a_reason(
    device_type: str, content: str, reason: str
) -> None:
    with pytest.raises(AlipError) as raised:
        process_data(device_type, content)
    assert reason in str(raised.value)


_COORDINATES = st.floats(allow_nan=False, allow_infinity=False)


@given(st.lists(_COORDINATES, min_size=2, max_size=4))
def test_any_location_round_trips_through_its_text(coordinates: list[float]) -> None:
    reading = process_data("L", ",".join(map(repr, coordinates)))
    assert isinstance(reading, Reading)
    assert reading.value == dict(zip(("lat", "lon", "spd", "alt"), coordinates, strict=False))


_DEVICE_TYPES = (
    st.sampled_from(["L", "G", "A1", "DI2", "T", "LS:x", "LS:", "echo"])
    | st.text(min_size=1)
    | st.lists(
        st.sampled_from(["LS:", "lsen:", "A", "DI", "1", "/", ".", "\t", "\x85", "\ud800"])
        | st.characters(),
        min_size=1,
        max_size=8,
    ).map("".join)
)
_CONTENTS = st.text() | st.text(alphabet="0123456789.,-+e", max_size=30)


@given(_DEVICE_TYPES, _CONTENTS)
def test_any_input_gives_a_record_a_device_may_have_or_an_alip_error(
    device_type: str, content: str
) -> None:
    try:
        result = process_data(device_type, content)
    except AlipError as error:
        assert str(error)
        return
    if isinstance(result, Reading):
        stored = json.loads(json.dumps(result.value, allow_nan=False))
        assert stored == result.value
        check_device_record_type(result.type)


@given(st.floats(allow_nan=False, allow_infinity=False), st.floats(allow_nan=False))
def test_stored_coordinates_are_always_finite(latitude: float, longitude: float) -> None:
    try:
        reading = process_data("L", f"{latitude},{longitude}")
    except AlipError:
        assert not math.isfinite(longitude)
    else:
        assert isinstance(reading, Reading)
        assert isinstance(reading.value, dict)
        assert all(
            isinstance(value, float) and math.isfinite(value) for value in reading.value.values()
        )


# --- Types a device's record cannot have: the store's rules, answered as ERR ------------


@pytest.mark.parametrize(
    ("device_type", "reason"),
    [
        ("LS:\x00", """Invalid listed sensor "LS:\x00": it contains a control character"""),
        ("LS:a\x7f", "it contains a control character"),
        ("LS:\x85", "it contains a control character"),
        ("LS:../x", """Invalid listed sensor "LS:../x": a child name cannot contain '/'"""),
        ("LS:/", "a child name cannot contain '/'"),
        # A stored type that names a listed sensor is checked however the device wrote it.
        ("lsen:..", """Invalid listed sensor "lsen:..": it contains a '..' segment"""),
        ("lsen:", 'Invalid listed sensor "lsen:": a child name cannot be empty'),
        ("lsen:a/b", "a child name cannot contain '/'"),
        # Lone surrogates (only in a str, never from the wire) break the time series' rule.
        ("LS:\ud800", 'Invalid type "LS:\ud800": a record type must be text without lone'),
        ("sen:\udfff", 'Invalid type "sen:\udfff": a record type must be text without lone'),
        ("é" * 513, "a record type is 1026 bytes long, above 1024"),
    ],
)
def test_a_type_no_device_record_can_have_is_refused_with_a_reason(
    device_type: str, reason: str
) -> None:
    with pytest.raises(AlipError) as raised:
        process_data(device_type, "1")
    assert reason in str(raised.value)


@pytest.mark.parametrize(
    ("device_type", "stored_type"),
    [
        ("LS:" + "a" * 1019, "lsen:" + "a" * 1019),
        ("x" * 1024, "x" * 1024),
        ("é" * 512, "é" * 512),
        ("A" + "1" * 1016, "sen:adc:" + "1" * 1016),
    ],
)
def test_a_stored_type_of_exactly_1024_bytes_is_accepted(
    device_type: str, stored_type: str
) -> None:
    assert process_data(device_type, "1") == Reading(stored_type, "1")


@pytest.mark.parametrize(
    "device_type", ["LS:" + "a" * 1020, "A" + "1" * 1017, "DI" + "1" * 1016, "x" * 1025]
)
def test_the_stored_type_not_the_device_s_is_what_must_fit(device_type: str) -> None:
    with pytest.raises(AlipError) as raised:
        process_data(device_type, "1")
    assert str(raised.value).startswith(f'Invalid type "{device_type[:80]}": a record type is ')
    assert "bytes long, above 1024" in str(raised.value)
    assert len(str(raised.value)) < 200  # the type is quoted briefly


def test_echo_stores_nothing_so_its_content_is_never_checked() -> None:
    assert process_data("echo", "LS:..") == Echo("LS:..")
