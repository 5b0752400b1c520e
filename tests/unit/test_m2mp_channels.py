"""M2MP channel tables: ids 0..254, a reset when they run out, `__channel_<id>` for the unknown."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from m2m.receivers.m2mp.channels import CHANNEL_IDS, IncomingChannels, OutgoingChannels
from m2m.receivers.m2mp.codec import ChannelDefinition


def test_a_name_is_defined_once_then_sent_on_its_id() -> None:
    outgoing = OutgoingChannels()
    assert outgoing.assign("_set") == (0, ChannelDefinition(0, "_set"))
    assert outgoing.assign("sen:uptime") == (1, ChannelDefinition(1, "sen:uptime"))
    assert outgoing.assign("_set") == (0, None)


def test_the_table_resets_after_255_names_and_redefines_names_as_they_come_back() -> None:
    outgoing = OutgoingChannels()
    first_ids = [outgoing.assign(f"name{index}")[0] for index in range(CHANNEL_IDS)]
    assert first_ids == list(range(255))
    assert outgoing.assign("name254") == (254, None)

    assert outgoing.assign("one too many") == (0, ChannelDefinition(0, "one too many"))
    assert outgoing.assign("name254") == (1, ChannelDefinition(1, "name254"))
    assert outgoing.assign("one too many") == (0, None)


def test_an_undefined_id_reads_as_a_placeholder_name() -> None:
    incoming = IncomingChannels()
    assert incoming.name(7) == "__channel_7"
    incoming.define(ChannelDefinition(7, "sen:loc"))
    assert incoming.name(7) == "sen:loc"
    assert incoming.name(8) == "__channel_8"


def test_a_later_definition_replaces_an_earlier_one() -> None:
    incoming = IncomingChannels()
    incoming.define(ChannelDefinition(0, "_set"))
    incoming.define(ChannelDefinition(0, "_sta"))
    assert incoming.name(0) == "_sta"


@given(st.lists(st.integers(0, 400).map(lambda index: f"channel{index}"), max_size=1_500))
def test_the_peer_always_reads_back_the_name_that_was_sent(names: list[str]) -> None:
    outgoing, incoming = OutgoingChannels(), IncomingChannels()
    for name in names:
        channel_id, definition = outgoing.assign(name)
        assert 0 <= channel_id < CHANNEL_IDS
        if definition is not None:
            incoming.define(definition)
        assert incoming.name(channel_id) == name
