"""M2MP channel-id tables: names travel once, in 0x20 frames, then one-byte ids stand for them.

Each side numbers the channels it sends on and the peer learns the numbering from the
definitions, so a connection has two independent tables: `OutgoingChannels` for what we
send and `IncomingChannels` for what the peer sends.
"""

from __future__ import annotations

from typing import Final

from m2m.receivers.m2mp.codec import ChannelDefinition

CHANNEL_IDS: Final = 255
"""A sender uses ids 0..254."""


class OutgoingChannels:
    """Our numbering of the channels we send on.

    When all ids are taken, the spec has the sender forget them all and start again at
    0; names used before are then defined again, under new ids, as they come back.
    """

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def assign(self, name: str) -> tuple[int, ChannelDefinition | None]:
        """The id to send `name` on, and the definition to send first if the peer lacks it."""
        channel_id = self._ids.get(name)
        if channel_id is not None:
            return channel_id, None
        if len(self._ids) == CHANNEL_IDS:
            self._ids.clear()
        channel_id = len(self._ids)
        self._ids[name] = channel_id
        return channel_id, ChannelDefinition(channel_id, name)


class IncomingChannels:
    """The peer's numbering, as learnt from the `ChannelDefinition` frames it sent."""

    __slots__ = ("_names",)

    def __init__(self) -> None:
        self._names: dict[int, str] = {}

    def define(self, definition: ChannelDefinition) -> None:
        """Learn a definition; a later one for the same id replaces it."""
        self._names[definition.channel_id] = definition.name

    def name(self, channel_id: int) -> str:
        """The channel's name; an id never defined reads as ``__channel_<id>``."""
        name = self._names.get(channel_id)
        return f"__channel_{channel_id}" if name is None else name
