"""Which new device connections a receiver process lets in: bounded in all, and per address.

Every open connection costs memory and a file descriptor whether or not it ever says who
it is, so a receiver process holds at most ``connections`` of them (both protocols
together) and at most ``connections_per_address`` from one peer IP address: one host
opening connections in a loop cannot take the place of a fleet. A connection refused is
closed at once; refusals are counted and logged (the first, then every thousandth).
"""

from __future__ import annotations

import logging
from collections import Counter

from m2m.config import LimitsConfig

log = logging.getLogger(__name__)

LOG_EVERY = 1000


class Admission:
    def __init__(self, limits: LimitsConfig) -> None:
        self._limits = limits
        self._open: Counter[str] = Counter()
        self._total = 0
        self.refused = 0

    @property
    def open(self) -> int:
        return self._total

    def admit(self, host: str) -> bool:
        """Whether a new connection from ``host`` may open; if so, it is counted open."""
        if self._total >= self._limits.connections:
            self._refuse(host, f"{self._total} connections are open, the limit")
            return False
        if self._open[host] >= self._limits.connections_per_address:
            self._refuse(host, f"{self._open[host]} connections from it are open, the limit")
            return False
        self._open[host] += 1
        self._total += 1
        return True

    def left(self, host: str) -> None:
        """A connection admitted from ``host`` closed."""
        self._total -= 1
        self._open[host] -= 1
        if not self._open[host]:
            del self._open[host]

    def _refuse(self, host: str, why: str) -> None:
        self.refused += 1
        if self.refused == 1 or self.refused % LOG_EVERY == 0:
            log.warning(
                "connection from %s refused: %s (%d refused so far)", host, why, self.refused,
                extra={"peer": host},
            )  # fmt: skip
