"""Channel translation: which topic a device's channel goes to, by the device's rules.

A rule is stored as a node value ``<priority, 4 digits>_<regex>`` → topic. The device's own
rules are tried first, then those of ``/device/default/``; within each set, in sorted key
order (so by priority), the first regex found in the channel name (unanchored, as the
original platform matched) gives the topic. No match: the protocol's default topic.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from m2m.errors import M2MError

MAX_PRIORITY = 9999


class InvalidRouteError(M2MError):
    """A channel-translation rule that cannot be stored (bad priority, regex or topic)."""


@dataclass(frozen=True, slots=True)
class Route:
    priority: int
    regex: str
    topic: str

    @property
    def key(self) -> str:
        """The node value name the rule is stored under."""
        return f"{self.priority:04d}_{self.regex}"

    @classmethod
    def checked(cls, priority: int, regex: str, topic: str) -> Route:
        """A rule validated before it is stored: its regex must compile."""
        if not 0 <= priority <= MAX_PRIORITY:
            raise InvalidRouteError(f"priority {priority} is not between 0 and {MAX_PRIORITY}")
        try:
            re.compile(regex)
        except re.error as exc:
            raise InvalidRouteError(f"invalid regex {regex!r}: {exc}") from None
        if not topic or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}(#ephemeral)?", topic):
            raise InvalidRouteError(f"invalid NSQ topic {topic!r}")
        return cls(priority, regex, topic)


def parse_routes(values: Mapping[str, str]) -> list[Route]:
    """The rules of one node's values, in the order they are tried; malformed keys skipped."""
    routes = []
    for key in sorted(values):
        priority, separator, regex = key.partition("_")
        if separator and priority.isdigit():
            routes.append(Route(int(priority), regex, values[key]))
    return routes


class ChannelRouter:
    """A device's rules followed by the default device's, with compiled regexes.

    The topics of the ``cache_size`` channels used last are remembered: a device may send
    on any number of channel names, and must not grow a receiver's memory with them.
    """

    def __init__(self, own: list[Route], default: list[Route], cache_size: int = 256) -> None:
        self._compiled: list[tuple[re.Pattern[str], str]] = []
        for route in (*own, *default):
            try:
                self._compiled.append((re.compile(route.regex), route.topic))
            except re.error:
                continue  # stored by someone who did not validate it: it can never match
        first_match = functools.partial(_first_match, tuple(self._compiled))
        self.topic_for: Callable[[str], str | None] = functools.lru_cache(cache_size)(first_match)
        """The topic of the first rule that matches ``channel``; None if none does."""


def _first_match(compiled: tuple[tuple[re.Pattern[str], str], ...], channel: str) -> str | None:
    return next((topic for pattern, topic in compiled if pattern.search(channel)), None)
