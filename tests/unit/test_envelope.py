"""The bus envelope: what the original platform's services send and expect."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from m2m.bus.envelope import Address, Envelope, InvalidMessage


def test_round_trip_keeps_every_field() -> None:
    envelope = Envelope.make(
        "storage", "store_ts", "receivers/r1", key="dev-1", type="sen:x", data={"a": [1, "é"]}
    )
    decoded = Envelope.from_json(envelope.to_json())
    assert decoded == envelope
    body = json.loads(envelope.to_json())
    assert body["_to"] == "storage" and body["_from"] == "receivers/r1"
    assert body["_call"] == "store_ts" and isinstance(body["_time"], int)
    assert body["data"] == {"a": [1, "é"]}


def test_extra_fields_are_kept() -> None:
    body = b'{"_to":"events","_from":"x/y","_call":"new_receiver","_time":1,"tcp_port":3010}'
    assert Envelope.from_json(body).fields == {"tcp_port": 3010}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"_from":"a/b","_call":"x"}',
        b'{"_to":"t","_call":"x"}',
        b'{"_to":"t","_from":"a/b"}',
        b'{"_to":"","_from":"a/b","_call":"x"}',
        b'{"_to":1,"_from":"a/b","_call":"x"}',
        b'{"_to":"t","_from":"a/b","_call":"x","_time":"yesterday"}',
    ],
)
def test_invalid_messages(body: bytes) -> None:
    with pytest.raises(InvalidMessage):
        Envelope.from_json(body)


def test_address_parts() -> None:
    address = Address.parse("receivers/r-1;device_id=abc;connection_id=7")
    assert address == Address("receivers", "r-1", {"device_id": "abc", "connection_id": "7"})
    assert str(address) == "receivers/r-1;device_id=abc;connection_id=7"
    assert Address.parse("storage") == Address("storage")
    assert Address.parse("receivers;device_id=x").channel is None
    with pytest.raises(InvalidMessage):
        Address.parse(";device_id=x")


@pytest.mark.parametrize(
    ("to", "channel"),
    [
        ("storage", None),
        ("receivers/receiver-h-1#ephemeral;device_id=d", "receiver-h-1#ephemeral"),
        ("storage;path=/a/b", None),  # a slash in a parameter names no channel
        ("receivers/", None),
    ],
)
def test_the_channel_a_message_is_addressed_to(to: str, channel: str | None) -> None:
    envelope = Envelope.make(to, "call", "tests")
    assert envelope.channel == channel == envelope.address.channel


def body(**fields: object) -> bytes:
    """A message body: a valid envelope with ``fields`` added or replaced."""
    return json.dumps({"_to": "storage", "_from": "a/b", "_call": "store_ts", **fields}).encode()


@pytest.mark.parametrize("to", ["/", ";", "/storage", ";device_id=x", "/a;b=c", ";;", "//"])
def test_an_address_that_names_no_topic_is_refused(to: str) -> None:
    with pytest.raises(InvalidMessage, match="names no topic"):
        Envelope.from_json(body(_to=to))


@pytest.mark.parametrize(
    ("to", "topic"),
    [
        ("storage", "storage"),
        ("storage/", "storage"),
        ("receivers/r1;device_id=x", "receivers"),
        ("receivers;connection_id=7", "receivers"),
        ("a/;", "a"),
    ],
)
def test_an_address_that_starts_with_a_topic_is_accepted(to: str, topic: str) -> None:
    assert Envelope.from_json(body(_to=to)).topic == topic


@pytest.mark.parametrize("depth", [1000, 2000, 100_000])
def test_a_message_nested_too_deep_to_decode_is_refused_not_crashing(depth: int) -> None:
    nested = b'{"_to":"t","_from":"a/b","_call":"x","data":' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(InvalidMessage, match="nested too deep to decode"):
        Envelope.from_json(nested)
    with pytest.raises(InvalidMessage, match="nested too deep to decode"):
        Envelope.from_json(b"[" * depth + b"]" * depth)


def test_a_message_nested_deeper_than_a_store_allows_still_decodes() -> None:
    """Refusing it is the stores' rules' business: the bus only refuses what it cannot read."""
    envelope = Envelope.from_json(body(data=json.loads("[" * 100 + "]" * 100)))
    assert json.dumps(envelope.fields["data"]) == "[" * 100 + "]" * 100


def test_lone_surrogates_decode_as_they_are_for_the_stores_to_refuse() -> None:
    raw = (
        b'{"_to":"storage\\ud800","_from":"a/\\udfff","_call":"store_ts","_time":1,'
        b'"key":"dev-\\udc00","type":"sen:\\ud800","data":{"k\\ud800":["\\udfff"]}}'
    )
    envelope = Envelope.from_json(raw)
    assert envelope.to == "storage\ud800"
    assert envelope.sender == "a/\udfff"
    assert envelope.fields == {
        "key": "dev-\udc00",
        "type": "sen:\ud800",
        "data": {"k\ud800": ["\udfff"]},
    }


@pytest.mark.parametrize("sent", [b"true", b"null", b"[1]", b'"1700000000"', b"{}"])
def test_a_time_that_is_not_unix_seconds_is_refused(sent: bytes) -> None:
    raw = b'{"_to":"t","_from":"a/b","_call":"x","_time":' + sent + b"}"
    with pytest.raises(InvalidMessage, match="_time must be unix seconds"):
        Envelope.from_json(raw)


@pytest.mark.parametrize("sent", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_time_that_is_not_a_finite_number_is_refused(sent: bytes) -> None:
    raw = b'{"_to":"t","_from":"a/b","_call":"x","_time":' + sent + b"}"
    with pytest.raises(InvalidMessage):
        Envelope.from_json(raw)


@pytest.mark.parametrize("missing", [b'"_to":null', b'"_from":""', b'"_call":0'])
def test_an_envelope_field_that_is_empty_or_null_counts_as_missing(missing: bytes) -> None:
    raw = b'{"_to":"t","_from":"a/b","_call":"x",' + missing + b"}"
    with pytest.raises(InvalidMessage, match="message lacks"):
        Envelope.from_json(raw)


@given(st.binary(max_size=80))
@example(b'{"_to":"/","_from":"a","_call":"b"}')
@example(b"\xed\xa0\x80")
@example(b'"\\ud800"')
def test_any_bytes_decode_to_an_envelope_or_an_invalid_message(raw: bytes) -> None:
    try:
        envelope = Envelope.from_json(raw)
    except InvalidMessage as error:
        assert str(error)
        return
    assert envelope.to and envelope.sender and envelope.call
    assert envelope.to[0] not in "/;"


_SURROGATE_TEXTS = st.tuples(
    st.text(max_size=4), st.sampled_from(["\ud800", "\udfff"]), st.text(max_size=4)
).map("".join)
_TEXTS = st.text(max_size=8) | _SURROGATE_TEXTS | st.sampled_from(["/", ";", "a/b;c=d"])
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXTS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXTS, children, max_size=3),
    max_leaves=8,
)


_NAMES = st.text(min_size=1, max_size=8) | _SURROGATE_TEXTS | st.sampled_from(["/x", ";", "a/b"])
_ENVELOPE_FIELDS = st.fixed_dictionaries(
    {"_to": _NAMES, "_from": _NAMES, "_call": _NAMES | _VALUES},
    optional={"_time": st.integers() | st.floats() | _VALUES},
)
_OBJECTS = st.builds(
    lambda envelope, others, dropped: {
        key: value for key, value in {**others, **envelope}.items() if key != dropped
    },
    _ENVELOPE_FIELDS,
    st.dictionaries(_TEXTS, _VALUES, max_size=4),
    st.sampled_from(["none", "_to", "_from", "_call"]),
)


@given(_OBJECTS)
@example({"_to": "storage", "_from": "a\ud800", "_call": "store_ts", "k\udfff": ["\ud800"]})
@example({"_to": ";x", "_from": "a", "_call": "b"})
@example({"_to": "t", "_from": "a", "_call": "b", "_time": 1.5, "v": float("nan")})
def test_any_json_object_decodes_to_an_envelope_with_its_fields_or_is_refused(
    decoded: dict[str, object],
) -> None:
    raw = json.dumps(decoded).encode()
    try:
        envelope = Envelope.from_json(raw)
    except InvalidMessage as error:
        assert str(error)
        return
    assert (envelope.to, envelope.sender, envelope.call) == (
        decoded["_to"],
        decoded["_from"],
        decoded["_call"],
    )
    # Compared as JSON text: NaN, which json.dumps writes and json.loads reads, is not == NaN.
    assert json.dumps(envelope.time) == json.dumps(decoded.get("_time", 0))
    envelope_keys = ("_to", "_from", "_call", "_time")
    fields = {key: value for key, value in decoded.items() if key not in envelope_keys}
    assert json.dumps(dict(envelope.fields)) == json.dumps(fields)
