"""The bus envelope: one JSON object per NSQ message, compatible with the original platform.

``_to`` is ``topic[/channel][;key=value;…]``, ``_from`` the sender's address in the same
form, ``_call`` the operation and ``_time`` the unix seconds when the message was made. The
other fields belong to the call; extra ones are kept and passed on, never refused.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from m2m.errors import InvalidInput

_ENVELOPE_KEYS = ("_to", "_from", "_call", "_time")
_NOT_A_TOPIC = "/;"
"""What an address cannot start with: it would name no topic."""
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""One encoder for every message (``json.dumps`` with options builds one per call)."""


class InvalidMessage(InvalidInput):
    """A bus message that is not an envelope, or that its call refuses: logged, counted and
    finished."""


@dataclass(frozen=True, slots=True)
class Address:
    """``topic[/channel][;key=value;…]`` split into its parts."""

    topic: str
    channel: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Address:
        route, *pairs = text.split(";")
        topic, _, channel = route.partition("/")
        if not topic:
            raise InvalidMessage(f"address {text!r} names no topic")
        params = {}
        for pair in pairs:
            if pair:
                key, _, value = pair.partition("=")
                params[key] = value
        return cls(topic, channel or None, params)

    def __str__(self) -> str:
        route = f"{self.topic}/{self.channel}" if self.channel else self.topic
        return ";".join([route, *(f"{k}={v}" for k, v in self.params.items())])


@dataclass(frozen=True, slots=True)
class Envelope:
    to: str
    sender: str
    call: str
    time: float
    fields: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, to: str | Address, call: str, sender: str | Address, **fields: Any) -> Envelope:
        """A new message, stamped with the current unix time."""
        return cls(str(to), str(sender), call, int(time.time()), fields)

    @property
    def address(self) -> Address:
        return Address.parse(self.to)

    @property
    def channel(self) -> str | None:
        """The channel ``_to`` names, if any."""
        if "/" not in self.to:
            return None  # the common case, on every message consumed: nothing to parse
        return self.address.channel

    @property
    def topic(self) -> str:
        if self.to and "/" not in self.to and ";" not in self.to:
            return self.to  # the common case, on every publish: nothing to parse
        return self.address.topic

    def to_json(self) -> bytes:
        body = {"_to": self.to, "_from": self.sender, "_call": self.call, "_time": self.time}
        body.update(self.fields)
        return _JSON.encode(body).encode()

    @classmethod
    def from_json(cls, body: bytes) -> Envelope:
        try:
            decoded = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidMessage(f"not a JSON message: {exc}") from exc
        except RecursionError:
            raise InvalidMessage("not a JSON message: nested too deep to decode") from None
        if not isinstance(decoded, dict):
            raise InvalidMessage("a message must be a JSON object")
        missing = [key for key in ("_to", "_from", "_call") if not decoded.get(key)]
        if missing:
            raise InvalidMessage(f"message lacks {', '.join(missing)}")
        if not all(isinstance(decoded[key], str) for key in ("_to", "_from", "_call")):
            raise InvalidMessage("_to, _from and _call must be strings")
        if decoded["_to"][0] in _NOT_A_TOPIC:
            raise InvalidMessage(f"_to {decoded['_to']!r:.80} names no topic")
        sent = decoded.get("_time", 0)
        if isinstance(sent, bool) or not isinstance(sent, int | float) or not math.isfinite(sent):
            raise InvalidMessage("_time must be unix seconds")
        fields = {k: v for k, v in decoded.items() if k not in _ENVELOPE_KEYS}
        return cls(decoded["_to"], decoded["_from"], decoded["_call"], sent, fields)
