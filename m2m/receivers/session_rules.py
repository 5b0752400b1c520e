"""The rules of a device session that need no I/O, as a sans-IO state machine (the h11 way).

Both protocols follow the same rules; only what goes on the wire differs. The adapter
tells :class:`SessionRules` what happened (something arrived and whether it needs the
device identified, the device identified, something was sent, time passed) and does what
it answers: handle, refuse, close with a cause, ping, send a greeting. Time is an input
(``now``, monotonic seconds), never read here, so every rule is tested without a reactor,
a socket or a database:

- **Identify first.** What needs the device's identity is refused before it identified:
  ALIP answers ``ERR`` each time; M2MP ignores a few data frames (an allowance for a
  device that sends before waiting for its answer) and closes on the next.
- **Timers.** Not identified within ``identification_timeout``: closed. ALIP only: silent
  for ``disconnect_after_silence``: closed. Silent for ``ping_after_silence`` while we too
  have said nothing for ``ping_quiet_period``: pinged, with the protocol's counter.
- **What to send, and when.** On identification: the pending settings, the pending
  commands, then questions (capabilities when none are on record, every setting when none
  is). Later pushes: a setting's value goes again to the same connection only after
  ``setting_resend_interval``; a command goes once per connection.

Channel numbering (M2MP, :mod:`m2m.receivers.m2mp.channels`) and command numbering (ALIP,
:mod:`m2m.receivers.alip.command_numbers`) are sans-IO too, each belonging to its wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from m2m.config import TimingConfig

CAPABILITIES_STATUS = "cap"
"""The status value a device's capabilities are recorded under."""


@dataclass(frozen=True)
class ProtocolRules:
    """Where the two protocols' sessions differ."""

    closes_unidentified: bool
    """Inputs needing identity before identification: ignored up to the allowance
    (``unidentified_frames_allowed``), then the connection closes (M2MP); or each refused
    while the connection stays (ALIP's ``ERR``)."""
    closes_when_silent: bool
    """Closes a connection silent for ``disconnect_after_silence`` (ALIP; M2MP never)."""
    ping_counter_modulo: int | None
    """The ping counter wraps at this (M2MP's is a byte); None: it grows."""


class Verdict(Enum):
    """What to do with something the device sent."""

    HANDLE = "handle"
    REFUSE = "refuse"
    """Not handled: the device must identify first (ALIP answers ``ERR``)."""
    CLOSE = "close"
    """Not handled, and the connection closes (``unidentified_data``)."""


@dataclass(frozen=True)
class Close:
    cause: str
    """The word the metrics count it under (``identification_timeout``, ``silent``)."""


@dataclass(frozen=True)
class Ping:
    counter: int


@dataclass(frozen=True)
class Greeting:
    """What a device is sent when it identifies, in this order."""

    settings: list[tuple[str, str]]
    commands: list[tuple[str, str]]
    ask_capabilities: bool
    ask_all_settings: bool


class SessionRules:
    """One connection's session, as rules and the state they need."""

    def __init__(self, protocol: ProtocolRules, timing: TimingConfig, now: float) -> None:
        self.protocol = protocol
        self.timing = timing
        self.connected_at = now
        self.last_received = self.last_sent = now
        self.identified = False
        self.refused_unidentified = 0
        """Inputs that needed identity and came before it."""
        self._pings = 0
        self._settings_sent: dict[tuple[str, str], float] = {}
        self._commands_sent: set[str] = set()

    # -- what happened -----------------------------------------------------------------

    def received(self, now: float) -> None:
        self.last_received = now

    def sent(self, now: float) -> None:
        self.last_sent = now

    def arrived(self, needs_identity: bool) -> Verdict:
        """Something arrived: handle it, or not before identification (see the module)."""
        if self.identified or not needs_identity:
            return Verdict.HANDLE
        self.refused_unidentified += 1
        allowance = self.timing.unidentified_frames_allowed
        if self.protocol.closes_unidentified and self.refused_unidentified > allowance:
            return Verdict.CLOSE
        return Verdict.REFUSE

    def greet(
        self,
        settings: Mapping[str, str],
        settings_to_send: Mapping[str, str],
        commands: Mapping[str, str],
        status: Mapping[str, str],
        now: float,
    ) -> Greeting:
        """The device identified; what it is sent, given what the registry holds for it."""
        self.identified = True
        return Greeting(
            settings=self.settings_due(settings_to_send, now),
            commands=self.commands_new(commands),
            ask_capabilities=CAPABILITIES_STATUS not in status,
            ask_all_settings=not settings,
        )

    def settings_due(self, pending: Mapping[str, str], now: float) -> list[tuple[str, str]]:
        """The pending settings to push now (by name), except those pushed to this
        connection within ``setting_resend_interval``; they count as pushed now."""
        interval = self.timing.setting_resend_interval
        due = [
            setting
            for setting in sorted(pending.items())
            if now - self._settings_sent.get(setting, now - interval) >= interval
        ]
        for setting in due:
            self._settings_sent[setting] = now
        return due

    def commands_new(self, pending: Mapping[str, str]) -> list[tuple[str, str]]:
        """The pending commands (id, text) by id that this connection was not sent yet;
        they count as sent."""
        new = [
            (cid, text) for cid, text in sorted(pending.items()) if cid not in self._commands_sent
        ]
        self._commands_sent.update(cid for cid, _ in new)
        return new

    # -- time passing ------------------------------------------------------------------

    def tick(self, now: float) -> Close | Ping | None:
        """What the time asks for: closing, pinging, or nothing."""
        timing = self.timing
        if not self.identified and now - self.connected_at >= timing.identification_timeout:
            return Close("identification_timeout")
        silent = now - self.last_received
        if self.protocol.closes_when_silent and silent >= timing.disconnect_after_silence:
            return Close("silent")
        if silent >= timing.ping_after_silence and now - self.last_sent >= timing.ping_quiet_period:
            return Ping(self._next_ping())
        return None

    def _next_ping(self) -> int:
        counter = self._pings
        modulo = self.protocol.ping_counter_modulo
        self._pings = (counter + 1) % modulo if modulo else counter + 1
        return counter
