"""The bus envelope: what the original platform's services send and expect."""

from __future__ import annotations

import json

import pytest

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
