"""Hostile input on live receivers: whatever bytes arrive, the platform keeps serving.

A dedicated ``m2m serve`` (every receiver and worker, NSQ topics of its own, a backlog of
256 KiB per connection) is fed over real TCP byte streams that hypothesis generates, each
example on connections of its own: random bytes; valid ALIP lines and M2MP frames with
bytes flipped, inserted or deleted; lone surrogates as JSON escapes and as raw CESU-8 /
WTF-8 bytes; M2MP frames declaring up to 4 GiB; ALIP lines over 64 KiB; streams dripped a
few bytes at a time; connections left half-open; connections that never read what they
are sent. Every barrage ends with these checks, and the last test makes them once more
after all of them:

1. ``m2m serve`` lives, and its log has no ERROR, CRITICAL or traceback: refused input is
   answered ``ERR`` (ALIP) or dropped with a WARNING (M2MP), it never fails a step.
2. Its resident memory (sampled all along) stays under its size once serving plus
   ``RSS_ALLOWANCE_MB``.
3. Nothing poisonous reaches the bus: taps of our own on ``storage`` and
   ``converter-m2mp``, subscribed before the platform started, check every message as the
   workers will take it (:class:`BusCheck`).
4. Two well-behaved devices, one per protocol, run through all the barrages on
   connections of their own (:class:`CountedALIPDevice`, :class:`CountedM2MPDevice`):
   acknowledgements keep coming during every barrage, and every record acknowledged is
   stored exactly once.

What the server answers hostile devices is checked too: ALIP answers are lines of the
protocol (never ``ERR Internal error``), M2MP answers decode as frames.

The connection limits get a platform of their own with tiny limits. So does each bug
this module found (now fixed, kept as regression tests): left in the shared barrage, a
relapse would jam or bloat the platform every other check watches.

Nothing is timed for speed: waits are generous polls. "The server stopped reading" is
read from the kernel: what we sent waits unread in the server's end of the connection
(``/proc/net/tcp``), and none of it is taken for half a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from m2m.bus import topics
from m2m.bus.consumer import Consumer
from m2m.bus.envelope import Envelope, InvalidMessage
from m2m.bus.publisher import Publisher
from m2m.cassandra import Database
from m2m.config import load_config
from m2m.receivers.alip.framing import MAX_LINE_LENGTH
from m2m.receivers.counted_device import (
    CountedALIPDevice,
    CountedDevice,
    CountedM2MPDevice,
    stored_numbers,
)
from m2m.receivers.m2mp.codec import (
    MAX_FRAME_SIZE,
    ChannelDefinition,
    Data,
    DataArray,
    Decoder,
    DevicePing,
    DevicePingAnswer,
    Direction,
    Frame,
    IdentificationRequest,
    IdentificationResult,
    ServerPingAnswer,
    encode,
)
from m2m.timeseries import TimeSeries
from m2m.timeseries.rules import encode_data
from m2m.workers.conversion import convert
from m2m.workers.storage import StoreRequest
from tests.conftest import (
    FAST_TIMING,
    WAIT,
    Platform,
    channel_stats,
    config_with_own_topics,
    eventually,
    start_platform,
)

HOST = "127.0.0.1"
CHECK_CHANNEL = "hostile-check"
"""Our channel on the platform's topics: every message published there reaches us too."""
BACKLOG = 256 * 1024
LIMITS = {"connections_per_address": 200, "buffered_bytes": BACKLOG}
"""The barrage holds at most ~60 connections at once, the good devices included."""
RSS_ALLOWANCE_MB = 150
"""What the barrage may add to the serving process's resident memory.

What hostile devices can make it hold at once is bounded: up to ``HELD_MAX`` (24)
identified M2MP connections left half-open each keep an unfinished frame of up to
``PARTIAL_MAX`` (768 KiB; the protocol allows 1 MiB frames, which must be buffered
whole): 18 MiB; each of the 9 connections that do not read keeps its 256 KiB backlog, one
64 KiB read and what it produced: under 1 MiB each. About 30 MiB in all (the barrage
peaks some 20 MB above the baseline): 150 MB leaves room for the allocator and the
workers' buffers, and is crossed by what a leak would keep (up to 16 MiB sent by each
device that does not read; ``DB LAST`` pages, see the regression test below).
"""
HELD_MAX = 24
PARTIAL_MAX = 768 * 1024
SEND_STALL = 1.0
"""Seconds a send stays blocked before a device that floods the server stops."""
FLOOD_MAX = 16 * 1024 * 1024
"""What a device that never reads sends at most: more than the process may hold for it."""
FLOOD_PIECE = 256 * 1024
"""Bytes a flood sends at once: in small writes, the kernel's receive queue at the server
collapses its many small buffers and takes more, a little at a time, for minutes."""
BUG_WAIT = 10.0
"""Seconds the regression tests give the platform to do what it does in milliseconds."""
READ_SIZE = 1 << 20
ACK_BARRIER = 42
QUIET = {
    **FAST_TIMING,
    "ping_after_silence": 120,
    "disconnect_after_silence": 240,
    "identification_timeout": 120,
}
"""Session timings that leave idle test connections alone (no pings, no timeouts)."""

_T = TypeVar("_T")

ALIP_LINE = re.compile(
    r"ID [01]|ERR .*|S S .*|S GA|C \d+ .*|B .*|T \d+|F N [01]|F S \d+|F G \d+ [0-9a-f]*"
    r"|DB .*|BEGIN LAST|END|QUIT .*|D echo .*|A \d+|\d{4}-\d\d-\d\dT\S+ .*"
)
"""Every line an ALIP receiver may send (a ``DB LAST`` record starts with its ISO time)."""
INTERNAL_FAILURES = ("ERR Internal error", "ERR Service unavailable")
LOG_PROBLEM = re.compile(r"^\S+ \S+ (ERROR|CRITICAL) |Traceback|Unhandled [Ee]rror")
NSQD_CONNECTION_CLOSED = re.compile(
    r"nsq\.client: .* ERROR: (ConnectionClosedError\('Stream is closed'\)"
    r"|IntegrityError\('failed to unpack size'\))$"
)
"""pynsq's own report of a connection to nsqd that closed: another test run may restart
the shared nsqd. nsqd refusing a message (``E_BAD_MESSAGE``) is still a problem."""


def barrage(examples: int) -> settings:
    """Hypothesis settings for examples on the network: no deadline, few examples."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


# --- Blocking sockets: hostile devices ----------------------------------------------------


def connect(
    port: int, *, source: str = HOST, small_buffers: bool = False, no_delay: bool = False
) -> socket.socket:
    """A connection to a receiver; ``small_buffers`` makes a device that reads nothing
    fill up the way back sooner."""
    sock = socket.socket()
    try:
        if small_buffers:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        if no_delay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(WAIT)
        sock.bind((source, 0))
        sock.connect((HOST, port))
    except BaseException:
        sock.close()
        raise
    return sock


def send(sock: socket.socket, data: bytes) -> bool:
    """Send all of ``data``; False if the server closed the connection first."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def drip(sock: socket.socket, data: bytes, sizes: list[int], pause: float) -> bool:
    """Send ``data`` in pieces of ``sizes`` bytes (in turn), ``pause`` seconds apart."""
    position = 0
    for turn in range(len(data)):
        if position >= len(data):
            break
        size = sizes[turn % len(sizes)]
        if not send(sock, data[position : position + size]):
            return False
        position += size
        time.sleep(pause)
    return True


def received_until_closed(sock: socket.socket, timeout: float = WAIT) -> bytes:
    """Everything the server sends until it closes the connection (a reset ends it too)."""
    received = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(READ_SIZE)
        except ConnectionResetError:
            return bytes(received)
        except TimeoutError:
            raise AssertionError(
                f"the server did not close the connection in {timeout:.0f} s; it sent "
                f"{len(received)} bytes, ending {bytes(received[-200:])!r}"
            ) from None
        if not chunk:
            return bytes(received)
        received += chunk


def received_until(sock: socket.socket, wanted: bytes, timeout: float = WAIT) -> bytes:
    """What the server sends until ``wanted`` is in it; AssertionError if it closes first."""
    received = bytearray()
    deadline = time.monotonic() + timeout
    while wanted not in received:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(READ_SIZE)
        except TimeoutError:
            raise AssertionError(
                f"no {wanted!r} in {timeout:.0f} s; got {bytes(received[-300:])!r}"
            ) from None
        if not chunk:
            raise AssertionError(f"closed before {wanted!r}; got {bytes(received[-300:])!r}")
        received += chunk
    return bytes(received)


def flood(sock: socket.socket, line: bytes) -> None:
    """Send ``line`` again and again, reading nothing, until a send stays blocked (the
    kernel's buffers are full) or ``FLOOD_MAX`` went out."""
    piece = line * max(1, FLOOD_PIECE // len(line))
    sock.settimeout(SEND_STALL)
    sent = 0
    with contextlib.suppress(TimeoutError):
        while sent < FLOOD_MAX:
            sock.sendall(piece)
            sent += len(piece)
    sock.settimeout(WAIT)


def unread_by_server(sock: socket.socket) -> int:
    """Bytes we sent that wait, unread, in the server's end of the connection (Linux)."""
    ours, theirs = sock.getsockname()[1], sock.getpeername()[1]
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if (local, remote) == (theirs, ours):
            return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"no connection {theirs} <- {ours} in /proc/net/tcp")


def server_stopped_reading(sock: socket.socket) -> bool:
    """What we sent waits unread at the server, and for half a second no more is read."""
    unread = unread_by_server(sock)
    time.sleep(0.5)
    return unread > 0 and unread_by_server(sock) == unread


def checked_alip_answer(answer: bytes) -> list[str]:
    """The complete lines of an ALIP answer, each one the protocol's, none an internal
    failure."""
    complete = answer[: answer.rfind(b"\n") + 1]  # a reset may cut the last one
    lines = complete.decode().split("\n")[:-1]
    unexpected = [line for line in lines if not ALIP_LINE.fullmatch(line)]
    assert not unexpected, f"lines outside the protocol: {unexpected[:5]!r}"
    failures = [line for line in lines if line.startswith(INTERNAL_FAILURES)]
    assert not failures, f"the server failed: {failures[:5]!r}"
    return lines


def alip_conversation(port: int, stream: bytes) -> list[str]:
    """Send ``stream``, then ``QUIT``; the lines the server answered until it closed."""
    with connect(port) as sock:
        send(sock, stream + b"\nQUIT\n")
        return checked_alip_answer(received_until_closed(sock))


def m2mp_conversation(port: int, stream: bytes) -> list[Frame]:
    """Send ``stream`` and end it (shut down for writing); the frames the server sent
    until it closed."""
    with connect(port) as sock:
        if send(sock, stream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        return Decoder(Direction.SERVER_TO_DEVICE).feed(received_until_closed(sock))


def new_alip_ident() -> bytes:
    return f"alip:{uuid.uuid4().hex[:20]}".encode()


def new_m2mp_ident() -> str:
    return f"hostile-{uuid.uuid4().hex[:12]}"


def identification(ident: str) -> bytes:
    return encode(IdentificationRequest(ident))


# --- Generated input ----------------------------------------------------------------------

Edit = tuple[str, int, int]
EDITS = st.lists(
    st.tuples(
        st.sampled_from(("flip", "insert", "delete")), st.integers(0, 1 << 16), st.integers(1, 255)
    ),
    max_size=3,
)
"""Up to three edits of a line or frame: a byte flipped (xor), inserted or deleted."""


def mutated(data: bytes, edits: list[Edit]) -> bytes:
    out = bytearray(data)
    for kind, where, byte in edits:
        if kind == "insert":
            out.insert(where % (len(out) + 1), byte)
        elif out and kind == "flip":
            out[where % len(out)] ^= byte
        elif out:
            del out[where % len(out)]
    return bytes(out)


IDENT = b"{ident}"
ALIP_LINES = (
    b"ID {ident}",
    b"D T 22.5",
    b"E 1700000000 T 1",
    b'J 1700000000 sen:x {"a":1}',
    b"D LS:x 1",
    b"S A name v",
    b"C L",
    b"A 1",
    b"DB LAST 5",
    b"D L 48.85,2.35",
    b"D L 7",
    b"D G 1700000000,48.85,2.35,10,120",
    b"E 231114221320 A3 512",
    b"E 20231114221320 DI1 1",
    b"D SMS hello",
    b"S S name v",
    b"S GA",
    b"S G",
    b"S G name",
    b"S U name",
    b"C A 0",
    b"F N firmware",
    b"F S",
    b"F G 0 16",
    b"T",
    b"B 1",
    b"DB ID",
    b"DB SOURCE",
    b"DB CONNECTED",
    b"DB VERSION",
    b"DB SET_SETTING name v",
    b"DB ADD_COMMAND reboot",
    b"DB LOGLEVEL 3",
    b"D echo hello",
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
ALIP_LINE_TEMPLATES = (
    st.sampled_from(ALIP_LINES)
    | JSON_VALUES.map(lambda value: b"J 1700000000 sen:json " + json.dumps(value).encode())
    | st.binary(max_size=40)
)
ALIP_STREAMS = st.tuples(
    EDITS,  # of the identification line
    st.lists(st.tuples(ALIP_LINE_TEMPLATES, EDITS), max_size=12),
    st.sampled_from((b"\n", b"\r\n")),
)


def alip_stream(stream: tuple[list[Edit], list[tuple[bytes, list[Edit]]], bytes]) -> bytes:
    """Identification first (perhaps mutated), then the lines, each with its edits."""
    id_edits, lines, separator = stream
    ident = new_alip_ident()
    rendered = [mutated(b"ID " + ident, id_edits)]
    rendered += [mutated(line.replace(IDENT, ident), edits) for line, edits in lines]
    return separator.join(rendered)


M2MP_CHANNELS = (
    "sen:loc",
    "sen:temp",
    "sen:seq",
    "echo",
    "echo:x",
    "_set",
    "_sta",
    "_cmd",
    "_special",
    "lsen:x",
    "lsen:a/b",
    "dump",
    "",
)
LATIN_1 = st.text(st.characters(max_codepoint=255), max_size=24)
CHANNEL_IDS = st.integers(0, 3) | st.integers(0, 255)
PAYLOADS = st.binary(max_size=48) | st.sampled_from(
    (
        struct.pack(">ff", 48.85, 2.35),
        struct.pack(">Iff", 1700000000, 48.85, 2.35),
        struct.pack(">IffHH", 1700000000, 48.85, 2.35, 10, 120),
        struct.pack(">IB", 1700000000, 7),
        b"\x07",
        b"reboot",
    )
)
ARRAYS = st.lists(st.binary(max_size=16), max_size=5).map(tuple) | st.sampled_from(
    (
        (b"ga",),
        (b"u", b"name"),
        (b"sg", b"name=v"),
        (b"g", b"cap=1", b"fw=2"),
        (b"a", b"cmd-1", b"done"),
        (struct.pack(">I", 1700000000), b"21.5"),
        (b"e", b"x"),
    )
)


def m2mp_frames(payloads: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Valid frames a device may send, encoded."""
    return st.one_of(
        st.builds(ChannelDefinition, CHANNEL_IDS, st.sampled_from(M2MP_CHANNELS) | LATIN_1),
        st.builds(Data, CHANNEL_IDS, payloads),
        st.builds(DataArray, CHANNEL_IDS, ARRAYS),
        st.builds(DevicePing, st.integers(0, 255)),
        st.builds(ServerPingAnswer, st.integers(0, 255)),
        st.builds(IdentificationRequest, LATIN_1),
    ).map(encode)


M2MP_FRAMES = m2mp_frames(PAYLOADS | st.sampled_from((b"disconnect_me", b"disconnect_us")))
M2MP_STREAMS = st.tuples(
    EDITS,  # of the identification frame
    st.lists(st.sampled_from(M2MP_CHANNELS) | LATIN_1, max_size=4),  # channels 0, 1, ...
    st.lists(st.tuples(M2MP_FRAMES, EDITS), max_size=12),
)


def m2mp_stream(stream: tuple[list[Edit], list[str], list[tuple[bytes, list[Edit]]]]) -> bytes:
    """Identification (perhaps mutated), channel definitions, then frames with their edits."""
    id_edits, channels, frames = stream
    data = mutated(identification(new_m2mp_ident()), id_edits)
    data += b"".join(encode(ChannelDefinition(n, name)) for n, name in enumerate(channels))
    return data + b"".join(mutated(frame, edits) for frame, edits in frames)


SURROGATE_BYTES = (
    b"\xed\xa0\x80",  # U+D800 as CESU-8 / WTF-8 write it
    b"\xed\xbf\xbf",  # U+DFFF
    b"\xed\xb2\x80",  # U+DC80
    b"\xed\xa0\xbd\xed\xb8\x80",  # U+1F600 as a CESU-8 surrogate pair
    b"\xc0\x80",  # an overlong NUL (modified UTF-8)
    b"\xf4\x90\x80\x80",  # past U+10FFFF
)
JSON_SURROGATES = (
    rb"\ud800",
    rb"\udfff",
    rb"\udc00\ud800",
    rb"\ud83d",
    rb"\\ud800",  # an escaped backslash: the text \ud800, harmless
    rb"\ud83d\ude00",  # a proper pair: an emoji
)
ALIP_SURROGATE_TEMPLATES = (
    b'J 1700000000 sen:x {"a{s}": 1}',
    b'J 1700000000 sen:x ["{s}"]',
    b'J 1700000000 sen:x "{s}"',
    b'J 1700000000 sen:x {"k": {"{s}": ["x{s}"]}}',
    b"J 1700000000 x{s} 1",
    b"J 1700000000 lsen:{s} 1",
    b"D T {s}",
    b"D {s} 1",
    b"D LS:{s} 1",
    b"E 1700000000 {s} 1",
    b"S A {s} v",
    b"S S name {s}",
    b"S G {s}",
    b"S U {s}",
    b"DB SET_SETTING {s} v",
    b"DB SET_SETTING name {s}",
    b"DB ADD_COMMAND {s}",
    b"F N {s}",
    b"A {s}",
    b"D echo {s}",
    b"ID alip:{s}",
)
SURROGATES = st.sampled_from(SURROGATE_BYTES + JSON_SURROGATES)


# --- The platform under fire, and what watches it ----------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"process {pid} has no VmRSS")


class MemoryWatch:
    """A process's resident memory, sampled every 0.1 s on a thread of its own."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(OSError, AssertionError):  # the process is gone
                self.samples.append((time.monotonic(), rss_mb(self.pid)))

    def peak(self) -> float:
        return max([rss_mb(self.pid), *(mb for _, mb in self.samples)])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def log_problems(log: Path) -> list[str]:
    """ERROR and CRITICAL lines, tracebacks, unhandled errors of a serve log."""
    lines = log.read_text(errors="replace").splitlines()
    return [
        line
        for line in lines
        if LOG_PROBLEM.search(line) and not NSQD_CONNECTION_CLOSED.search(line)
    ]


def check_store(envelope: Envelope) -> None:
    """A ``store_ts`` message the storage worker will take as it is."""
    StoreRequest.of(envelope)
    encode_data(envelope.fields["data"])


def _with_a_payload_its_rule_takes(envelope: Envelope) -> Envelope | None:
    """The message with a payload its channel's converter rule takes, if it has one.

    m2mp.md gives the converter, not the receiver, the rules of ``sen:loc`` data and of
    ``sen:`` arrays: a receiver publishes such a payload as it came, and the converter
    refuses it (finished, logged). The rest of the message must still be sound.
    """
    channel = envelope.fields.get("channel")
    if not isinstance(channel, str):
        return None
    if envelope.call == topics.DATA_SIMPLE and channel == "sen:loc":
        data: Any = "07"
    elif envelope.call == topics.DATA_ARRAY and channel.startswith("sen:"):
        data = [struct.pack(">I", 1700000000).hex(), b"1".hex()]
    else:
        return None
    return replace(envelope, fields={**envelope.fields, "data": data})


class BusCheck:
    """Every message of the platform's ``storage`` and ``converter-m2mp`` topics, checked
    as the storage worker and the converter will take it. What fails is poison."""

    def __init__(self) -> None:
        self.checked: dict[str, int] = {topics.STORAGE: 0, topics.CONVERTER_M2MP: 0}
        self.refused_by_converter_rules = 0
        self.poison: list[str] = []

    async def storage(self, envelope: Envelope) -> None:
        self._check(topics.STORAGE, envelope)

    async def converter(self, envelope: Envelope) -> None:
        self._check(topics.CONVERTER_M2MP, envelope)

    def _check(self, topic: str, envelope: Envelope) -> None:
        self.checked[topic] += 1
        try:
            if topic == topics.STORAGE:
                check_store(envelope)
            else:
                self._check_conversion(envelope)
        except Exception as exc:  # whatever it is, it is what we look for
            self.poison.append(f"{topic}: {exc!r}: {envelope!r:.600}")

    def _check_conversion(self, envelope: Envelope) -> None:
        try:
            produced = convert(envelope)
        except InvalidMessage:
            substitute = _with_a_payload_its_rule_takes(envelope)
            if substitute is None:
                raise
            produced = convert(substitute)
            self.refused_by_converter_rules += 1
        for message in produced:
            if message.call == topics.STORE_TS:
                check_store(message)


class LoopThread:
    """An asyncio loop on a thread of its own: what runs through every barrage (the bus
    taps, the well-behaved devices) lives there while the tests drive blocking sockets."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="hostile", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, _T], timeout: float = 4 * WAIT) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)


@dataclass
class Hostile:
    """The platform under fire and everything that watches it."""

    platform: Platform
    thread: LoopThread
    bus: BusCheck
    taps: list[Consumer]
    devices: list[CountedDevice[Any]]
    stop_devices: asyncio.Event
    runs: list[asyncio.Future[None]]
    memory: MemoryWatch
    baseline_mb: float
    windows: list[tuple[str, float, float]] = field(default_factory=list)
    """Each barrage: its name, when it started and ended (``time.monotonic()``)."""
    held: list[socket.socket] = field(default_factory=list)
    """Identified M2MP connections left half-open, mid-frame, until the end."""

    @property
    def alip_port(self) -> int:
        return self.platform.alip_port

    @property
    def m2mp_port(self) -> int:
        return self.platform.m2mp_port

    @property
    def rss_bound_mb(self) -> float:
        return self.baseline_mb + RSS_ALLOWANCE_MB

    @contextlib.contextmanager
    def barrage(self, name: str) -> Iterator[None]:
        """A barrage: its window is recorded, and the checks follow it."""
        start = time.monotonic()
        yield
        self.windows.append((name, start, time.monotonic()))
        self.check(f"after {name}")

    def check(self, when: str) -> None:
        process = self.platform.process
        assert process.poll() is None, f"m2m serve exited {process.returncode} {when}"
        problems = log_problems(self.platform.log)
        assert not problems, f"{when}, the serve log has:\n" + "\n".join(problems[:30])
        peak = self.memory.peak()
        assert peak < self.rss_bound_mb, (
            f"{when}: m2m serve peaked at {peak:.0f} MB resident, above "
            f"{self.baseline_mb:.0f} MB once serving + {RSS_ALLOWANCE_MB} MB"
        )
        assert not self.bus.poison, f"{when}: poison on the bus:\n" + "\n".join(
            self.bus.poison[:10]
        )


async def _our_channel(nsq: Any, topic: str) -> None:
    async def probe() -> dict[str, Any] | None:
        try:
            return await channel_stats(nsq, topic, CHECK_CHANNEL)
        except AssertionError:  # not there yet
            return None

    await eventually(probe, lambda stats: stats is not None, f"our channel on {topic}")


async def _subscribe(bus: BusCheck, config_file: Path) -> tuple[Publisher, list[Consumer]]:
    nsq = load_config(config_file).nsq
    publisher = Publisher(nsq)
    publisher.start()
    taps = [
        Consumer(topics.STORAGE, CHECK_CHANNEL, bus.storage, nsq, publisher),
        Consumer(topics.CONVERTER_M2MP, CHECK_CHANNEL, bus.converter, nsq, publisher),
    ]
    for tap in taps:
        tap.start()
    for topic in (topics.STORAGE, topics.CONVERTER_M2MP):
        await _our_channel(nsq, topic)
    return publisher, taps


async def _start_devices(
    platform: Platform,
) -> tuple[list[CountedDevice[Any]], asyncio.Event, list[asyncio.Future[None]]]:
    devices: list[CountedDevice[Any]] = [
        CountedALIPDevice(new_alip_ident().decode(), HOST, platform.alip_port),
        CountedM2MPDevice(f"hostile-good-{uuid.uuid4().hex[:8]}", HOST, platform.m2mp_port),
    ]
    stop = asyncio.Event()
    runs = [asyncio.ensure_future(device.run(stop, 0.05, 4 * WAIT)) for device in devices]

    async def probe() -> bool:
        return all(device.acknowledged_at for device in devices)

    await eventually(probe, bool, "the well-behaved devices' first acknowledgements")
    return devices, stop, runs


async def _devices_stopped(stop: asyncio.Event, runs: list[asyncio.Future[None]]) -> None:
    """Tell the devices to stop: each does once all it sent is acknowledged."""
    stop.set()
    await asyncio.wait_for(asyncio.gather(*runs), 4 * WAIT)


async def _unsubscribed(publisher: Publisher, taps: list[Consumer]) -> None:
    for tap in taps:
        await tap.close()
    publisher.close()


@pytest.fixture(scope="module")
def hostile(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """The platform under fire: our taps subscribed first, then ``m2m serve``, then the
    well-behaved devices, then the memory watch (its baseline: the process once serving)."""
    directory = tmp_path_factory.mktemp("hostile")
    own_config = config_with_own_topics(config_file, directory)
    thread = LoopThread()
    try:
        bus = BusCheck()
        publisher, taps = thread.run(_subscribe(bus, own_config))
        platform = start_platform(own_config, directory, limits=LIMITS)
        try:
            devices, stop, runs = thread.run(_start_devices(platform))
            memory = MemoryWatch(platform.process.pid)
            baseline = rss_mb(platform.process.pid)
            watched = Hostile(platform, thread, bus, taps, devices, stop, runs, memory, baseline)
            yield watched
            for sock in watched.held:
                sock.close()
            with contextlib.suppress(Exception):  # the last test may have stopped them
                thread.run(_devices_stopped(stop, runs))
            memory.stop()
        finally:
            platform.stop()
            thread.run(_unsubscribed(publisher, taps))
    finally:
        thread.stop()


# --- Random bytes, mutated lines and frames ----------------------------------------------


@barrage(100)
@given(identify=st.booleans(), noise=st.binary(max_size=2048))
def random_alip_bytes(hostile: Hostile, identify: bool, noise: bytes) -> None:
    prefix = b"ID " + new_alip_ident() + b"\n" if identify else b""
    alip_conversation(hostile.alip_port, prefix + noise)


@barrage(100)
@given(identify=st.booleans(), noise=st.binary(max_size=2048))
def random_m2mp_bytes(hostile: Hostile, identify: bool, noise: bytes) -> None:
    prefix = identification(new_m2mp_ident()) if identify else b""
    m2mp_conversation(hostile.m2mp_port, prefix + noise)


def test_random_bytes_are_refused_without_harm(hostile: Hostile) -> None:
    with hostile.barrage("random bytes"):
        random_alip_bytes(hostile)
        random_m2mp_bytes(hostile)


@barrage(120)
@given(stream=ALIP_STREAMS)
def mutated_alip_lines(hostile: Hostile, stream: Any) -> None:
    alip_conversation(hostile.alip_port, alip_stream(stream))


@barrage(120)
@given(stream=M2MP_STREAMS)
def mutated_m2mp_frames(hostile: Hostile, stream: Any) -> None:
    m2mp_conversation(hostile.m2mp_port, m2mp_stream(stream))


def test_valid_lines_and_frames_with_bytes_flipped_inserted_or_deleted_do_no_harm(
    hostile: Hostile,
) -> None:
    with hostile.barrage("mutated lines and frames"):
        mutated_alip_lines(hostile)
        mutated_m2mp_frames(hostile)


# --- Lone surrogates ----------------------------------------------------------------------


@barrage(60)
@given(lines=st.lists(st.tuples(st.sampled_from(ALIP_SURROGATE_TEMPLATES), SURROGATES), max_size=6))
def alip_surrogates(hostile: Hostile, lines: list[tuple[bytes, bytes]]) -> None:
    rendered = [template.replace(b"{s}", surrogate) for template, surrogate in lines]
    alip_conversation(hostile.alip_port, b"\n".join([b"ID " + new_alip_ident(), *rendered]))


@barrage(40)
@given(
    surrogate=st.sampled_from(SURROGATE_BYTES),
    where=st.integers(0, 8),
    channel_id=st.integers(0, 255),
)
def m2mp_surrogates(hostile: Hostile, surrogate: bytes, where: int, channel_id: int) -> None:
    """The surrogate bytes in an ident, a channel name, data, and the reserved arrays."""
    ident = new_m2mp_ident().encode()
    name = b"sen:" + surrogate
    frames = [
        IdentificationRequest((ident[:where] + surrogate + ident[where:]).decode("latin-1")),
        IdentificationRequest(ident.decode()),  # the first may be refused
        ChannelDefinition(channel_id, name.decode("latin-1")),
        Data(channel_id, surrogate),
        DataArray(channel_id, (struct.pack(">I", 1700000000), surrogate)),
        ChannelDefinition(0, "lsen:" + surrogate.decode("latin-1")),
        Data(0, b"1"),
        ChannelDefinition(1, "_set"),
        DataArray(1, (b"sg", b"name" + surrogate + b"=v", b"n=" + surrogate)),
        DataArray(1, (b"u", surrogate)),
        ChannelDefinition(2, "_sta"),
        DataArray(2, (b"g", b"cap=" + surrogate, surrogate + b"=1")),
        ChannelDefinition(3, "_cmd"),
        DataArray(3, (b"a", surrogate, b"done" + surrogate)),
        ChannelDefinition(4, "echo:" + surrogate.decode("latin-1")),
        Data(4, surrogate),
    ]
    m2mp_conversation(hostile.m2mp_port, b"".join(encode(frame) for frame in frames))


def test_lone_surrogates_as_json_escapes_or_raw_bytes_never_reach_storage(
    hostile: Hostile,
) -> None:
    with hostile.barrage("lone surrogates"):
        answer = alip_conversation(
            hostile.alip_port,
            b"ID " + new_alip_ident() + b'\nJ 1700000000 sen:x {"a\\ud800": 1}\nA 1',
        )
        refused = [line for line in answer if line.startswith("ERR")]
        assert refused and refused[0].startswith("ERR Invalid JSON"), answer
        assert "B 1" in answer  # and the connection went on
        alip_surrogates(hostile)
        m2mp_surrogates(hostile)


# --- Huge declared sizes, overlong lines --------------------------------------------------

SIZE_WIDTHS = {0x21: 1, 0x22: 1, 0x41: 2, 0x42: 2, 0x61: 4, 0x62: 4}
SIZES = st.integers(0, 0xFFFF_FFFF) | st.sampled_from(
    (0, 1, 2, MAX_FRAME_SIZE, MAX_FRAME_SIZE + 1, 0x8000_0000, 0xFFFF_FFFF)
)


@barrage(80)
@given(
    identify=st.booleans(),
    header=st.sampled_from(sorted(SIZE_WIDTHS)),
    size=SIZES,
    body=st.binary(max_size=64),
)
def huge_m2mp_sizes(hostile: Hostile, identify: bool, header: int, size: int, body: bytes) -> None:
    width = SIZE_WIDTHS[header]
    size &= (1 << (8 * width)) - 1
    stream = identification(new_m2mp_ident()) if identify else b""
    stream += bytes([header]) + size.to_bytes(width, "big") + body
    if size <= MAX_FRAME_SIZE:
        m2mp_conversation(hostile.m2mp_port, stream)
        return
    with connect(hostile.m2mp_port) as sock:  # "not reasonable": closed without our end
        send(sock, stream)
        Decoder(Direction.SERVER_TO_DEVICE).feed(received_until_closed(sock))


@barrage(20)
@given(
    identify=st.booleans(),
    length=st.integers(MAX_LINE_LENGTH + 1, 4 * MAX_LINE_LENGTH),
    prefix=st.sampled_from((b"", b"D T ", b'J 1700000000 x ["', b"ID ", b"DB LAST ")),
    fill=st.binary(min_size=1, max_size=8).filter(lambda fill: b"\n" not in fill),
    ending=st.sampled_from((b"\n", b"\r\n", b"")),
)
def overlong_alip_lines(
    hostile: Hostile, identify: bool, length: int, prefix: bytes, fill: bytes, ending: bytes
) -> None:
    line = (prefix + fill * (length // len(fill) + 1))[:length]
    stream = (b"ID " + new_alip_ident() + b"\n" if identify else b"") + line + ending + b"\nT"
    answer = alip_conversation(hostile.alip_port, stream)
    assert "ERR Line too long" in answer
    assert any(line.startswith("T ") for line in answer), answer  # the connection went on
    assert answer[-1] == "QUIT bye !"


def test_huge_declared_sizes_and_overlong_lines_are_refused_and_nothing_is_buffered(
    hostile: Hostile,
) -> None:
    with hostile.barrage("huge sizes and overlong lines"):
        huge_m2mp_sizes(hostile)
        overlong_alip_lines(hostile)


# --- Slow drip ----------------------------------------------------------------------------

DRIPS = st.lists(st.integers(1, 6), min_size=1, max_size=8)
PAUSES = st.floats(0, 0.01)
DRIPPED_ALIP_STREAMS = st.tuples(
    st.just([]),  # the identification is not mutated: its answer is checked
    st.lists(st.tuples(ALIP_LINE_TEMPLATES, EDITS), min_size=2, max_size=12),
    st.sampled_from((b"\n", b"\r\n")),
)


@barrage(12)
@given(stream=DRIPPED_ALIP_STREAMS, sizes=DRIPS, pause=PAUSES)
def dripped_alip_lines(hostile: Hostile, stream: Any, sizes: list[int], pause: float) -> None:
    data = alip_stream(stream) + f"\nA {ACK_BARRIER}\n".encode()
    with connect(hostile.alip_port, no_delay=True) as sock:
        if drip(sock, data, sizes, pause) and b"\nQUIT" not in data:
            answer = received_until(sock, f"\nB {ACK_BARRIER}\n".encode())
            assert answer.startswith(b"ID 1\n"), answer[:200]
        send(sock, b"QUIT\n")
        checked_alip_answer(received_until_closed(sock))


M2MP_QUIET_FRAMES = m2mp_frames(PAYLOADS)
"""Valid frames that cannot make the platform close the connection (no ``_special``)."""


@barrage(12)
@given(frames=st.lists(M2MP_QUIET_FRAMES, min_size=2, max_size=12), sizes=DRIPS, pause=PAUSES)
def dripped_m2mp_frames(
    hostile: Hostile, frames: list[bytes], sizes: list[int], pause: float
) -> None:
    data = identification(new_m2mp_ident()) + b"".join(frames)
    data += encode(DevicePing(ACK_BARRIER))
    decoder = Decoder(Direction.SERVER_TO_DEVICE)
    answered: list[Frame] = []
    with connect(hostile.m2mp_port, no_delay=True) as sock:
        assert drip(sock, data, sizes, pause)
        while DevicePingAnswer(ACK_BARRIER) not in answered:
            chunk = sock.recv(READ_SIZE)
            assert chunk, f"closed before the ping's answer; got {answered!r:.300}"
            answered += decoder.feed(chunk)
        sock.shutdown(socket.SHUT_WR)
        decoder.feed(received_until_closed(sock))
    assert answered[0] == IdentificationResult(accepted=True)


def test_streams_dripped_a_few_bytes_at_a_time_are_put_back_together(hostile: Hostile) -> None:
    with hostile.barrage("slow drip"):
        dripped_alip_lines(hostile)
        dripped_m2mp_frames(hostile)


# --- Half-open connections ----------------------------------------------------------------


@dataclass
class HalfOpen:
    sock: socket.socket
    protocol: str
    identified: bool


@barrage(16)
@given(
    kind=st.sampled_from(("alip-line", "alip-overlong", "m2mp-frame", "m2mp-header")),
    identify=st.booleans(),
    shut=st.booleans(),
    header=st.sampled_from(sorted(SIZE_WIDTHS)),
    size=st.integers(2, MAX_FRAME_SIZE),
    part=st.floats(0, 0.99),
    length=st.integers(1, MAX_LINE_LENGTH - 100),
)
def half_open(
    hostile: Hostile,
    waiting: list[HalfOpen],
    kind: str,
    identify: bool,
    shut: bool,
    header: int,
    size: int,
    part: float,
    length: int,
) -> None:
    """One connection that stops mid-line or mid-frame: shut down for writing (the server
    must close it), or left open (kept in ``waiting``, or ``hostile.held``)."""
    alip = kind.startswith("alip")
    if alip:
        stream = b"ID " + new_alip_ident() + b"\n" if identify else b""
        if kind == "alip-line":
            stream += b'J 1700000000 x {"a": "' + b"x" * length
        else:
            stream += b"D T " + b"x" * (MAX_LINE_LENGTH + length)
    else:
        stream = identification(new_m2mp_ident()) if identify else b""
        width = SIZE_WIDTHS[header]
        size = min(size, (1 << (8 * width)) - 1)
        if kind == "m2mp-frame":
            sent = min(int(size * part), size - 1, PARTIAL_MAX)
            stream += bytes([header]) + size.to_bytes(width, "big") + bytes(sent)
        else:
            stream += bytes([header]) + size.to_bytes(width, "big")[: width - 1]
    keep = not alip and identify
    if keep and len(hostile.held) >= HELD_MAX:
        shut = True
    sock = connect(hostile.alip_port if alip else hostile.m2mp_port)
    assert send(sock, stream)
    if shut:
        with sock:
            sock.shutdown(socket.SHUT_WR)
            received_until_closed(sock)
    elif keep:  # M2MP does not disconnect a silent device: held until the end
        hostile.held.append(sock)
    else:
        waiting.append(HalfOpen(sock, "alip" if alip else "m2mp", identify))


def test_half_open_connections_are_closed_by_the_timers_or_held_at_bounded_cost(
    hostile: Hostile,
) -> None:
    waiting: list[HalfOpen] = []
    try:
        with hostile.barrage("half-open connections"):
            half_open(hostile, waiting)
            # Not identified in time (2 s here), or silent for too long (ALIP, 4 s here):
            # told so and closed. Identified M2MP devices are never closed for silence.
            for connection in waiting:
                answer = received_until_closed(connection.sock)
                if connection.protocol == "alip":
                    notice = "QUIT No data" if connection.identified else "QUIT It took you"
                    assert notice in answer.decode(), answer[-200:]
    finally:
        for connection in waiting:
            connection.sock.close()


# --- Devices that never read --------------------------------------------------------------


def _device_with_records(port: int, count: int, size: int) -> bytes:
    """The ALIP ident of a new device with ``count`` records of ``size`` bytes, stored."""
    ident = new_alip_ident()
    with connect(port) as sock:
        record = b"x" * size
        lines = b"".join(b"D big %d " % number + record + b"\n" for number in range(count))
        assert send(sock, b"ID " + ident + b"\n" + lines + b"A 1\n")
        received_until(sock, b"\nB 1\n")
        deadline = time.monotonic() + WAIT
        while True:  # stored once DB LAST lists them all
            assert send(sock, b"DB LAST %d\n" % count)
            listed = received_until(sock, b"\nEND\n").count(b" big ")
            if listed >= count:
                return ident
            assert time.monotonic() < deadline, f"{listed} of {count} records stored"
            time.sleep(0.2)


@barrage(3)
@given(size=st.integers(1, 60 * 1024))
def never_reading(
    hostile: Hostile, stalled: list[socket.socket], listed: bytes, protocol: str, size: int
) -> None:
    """A device that sends what makes the server write, and never reads: once the way
    back is full, the server leaves what it sends unread instead of buffering for it."""
    alip = protocol.startswith("alip")
    sock = connect(hostile.alip_port if alip else hostile.m2mp_port, small_buffers=True)
    stalled.append(sock)
    if protocol == "alip-last":
        assert send(sock, b"ID " + listed + b"\n" + b"DB LAST 1000\n" * 200)
    elif alip:
        assert send(sock, b"ID " + new_alip_ident() + b"\n")
    else:
        assert send(sock, identification(new_m2mp_ident()) + encode(ChannelDefinition(0, "echo")))
    flood(sock, b"D echo " + b"e" * size + b"\n" if alip else encode(Data(0, b"e" * size)))
    assert server_stopped_reading(sock)


def test_devices_that_never_read_are_paused_not_buffered_for(hostile: Hostile) -> None:
    listed = _device_with_records(hostile.alip_port, 200, 2000)
    stalled: list[socket.socket] = []
    try:
        with hostile.barrage("devices that never read"):
            for kind in ("alip-echo", "alip-last", "m2mp-echo"):
                never_reading(hostile, stalled, listed, kind)
            time.sleep(1)  # all of them paused at once, under the memory watch
    finally:
        for sock in stalled:
            sock.close()


# --- After all of it ----------------------------------------------------------------------


def _holds_all(numbers: set[int], counts: Counter[int]) -> bool:
    return numbers <= counts.keys()


async def _all_stored_once(database: Database, devices: list[CountedDevice[Any]]) -> None:
    timeseries = TimeSeries(database)
    for device in devices:
        assert not device.unacknowledged, f"{device.ident}: {device.unacknowledged[:10]}"
        counts = await eventually(
            partial(stored_numbers, timeseries, device),
            partial(_holds_all, device.acknowledged),
            f"the records acknowledged to {device.ident} stored",
            timeout=4 * WAIT,
        )
        assert sorted(counts) == sorted(device.acknowledged)
        twice = sorted(number for number, count in counts.items() if count > 1)
        assert not twice, f"{device.ident}: stored more than once: {twice[:20]}"


async def _bus_drained(nsq: Any) -> None:
    for topic in (topics.STORAGE, topics.CONVERTER_M2MP):
        await eventually(
            partial(channel_stats, nsq, topic, CHECK_CHANNEL),
            lambda stats: stats["depth"] == 0 and stats["in_flight_count"] == 0,
            f"every message of {topic} checked",
            timeout=4 * WAIT,
        )


async def _acknowledged_since(devices: list[CountedDevice[Any]], moment: float) -> None:
    async def probe() -> bool:
        return all(device.acknowledged_at[-1] > moment for device in devices)

    await eventually(probe, bool, "an acknowledgement to each good device after the barrages")


def test_through_every_barrage_the_good_devices_were_served_and_nothing_poisonous_published(
    hostile: Hostile, database: Database
) -> None:
    """The last test of the module: it stops the good devices and checks everything."""
    for sock in hostile.held:
        sock.close()
    hostile.held.clear()
    thread = hostile.thread
    barrages_over = max((end for _, _, end in hostile.windows), default=0.0)
    thread.run(_acknowledged_since(hostile.devices, barrages_over))
    thread.run(_devices_stopped(hostile.stop_devices, hostile.runs))
    thread.run(_all_stored_once(database, hostile.devices))
    first_barrage = min((start for _, start, _ in hostile.windows), default=float("inf"))
    for device in hostile.devices:
        answered = device.acknowledged_at
        assert device.sent > 0 and answered[0] < first_barrage
        for name, start, end in hostile.windows:
            assert any(start <= at <= end for at in answered), (
                f"{device.ident}: no acknowledgement during the barrage of {name} "
                f"({end - start:.0f} s)"
            )
    thread.run(_bus_drained(hostile.platform.config.nsq))
    bus = hostile.bus
    assert bus.checked[topics.STORAGE] > 0 and bus.checked[topics.CONVERTER_M2MP] > 0
    assert [(tap.stats.invalid, tap.stats.skipped) for tap in hostile.taps] == [(0, 0), (0, 0)]
    hostile.check("at the end")


# --- Connection limits --------------------------------------------------------------------


def alive(sock: socket.socket, protocol: str) -> bool:
    """Whether the connection is served (False: the server closed it without a word)."""
    try:
        if protocol == "alip":
            sock.sendall(b"T\n")
            answer = sock.recv(READ_SIZE)
            if not answer:
                return False
            assert re.fullmatch(rb"T \d+\n", answer), answer  # nothing else is sent (QUIET)
            return True
        sock.sendall(encode(DevicePing(7)))
        decoder = Decoder(Direction.SERVER_TO_DEVICE)
        frames: list[Frame] = []
        while DevicePingAnswer(7) not in frames:
            chunk = sock.recv(READ_SIZE)
            if not chunk:
                return False
            frames += decoder.feed(chunk)
        return True
    except (BrokenPipeError, ConnectionResetError):
        return False


def closed_without_a_word(sock: socket.socket) -> bool:
    """The server closed the connection at once, before we said anything."""
    with sock:
        try:
            return sock.recv(READ_SIZE) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:  # still open
            return False


def admitted(platform: Platform, protocol: str, source: str = HOST) -> socket.socket:
    """A connection the server serves, once it has taken note of the ones that closed."""
    port = platform.alip_port if protocol == "alip" else platform.m2mp_port
    deadline = time.monotonic() + WAIT
    while True:
        sock = connect(port, source=source)
        if alive(sock, protocol):
            return sock
        sock.close()
        assert time.monotonic() < deadline, f"no {protocol} connection from {source} admitted"
        time.sleep(0.1)


def test_one_connection_too_many_is_closed_at_once_and_admitted_again_once_others_close(
    config_file: Path, tmp_path: Path
) -> None:
    platform = start_platform(
        config_with_own_topics(config_file, tmp_path),
        tmp_path,
        only="m2mp,alip",
        limits={"connections_per_address": 3, "connections": 5},
        timing=QUIET,  # idle connections, and welcome
    )
    ports = {"alip": platform.alip_port, "m2mp": platform.m2mp_port}
    opened: list[socket.socket] = []
    try:
        first = [(admitted(platform, protocol), protocol) for protocol in ("alip", "m2mp", "alip")]
        opened += [sock for sock, _ in first]
        for protocol in ("alip", "m2mp"):  # the limit is per address, across protocols
            assert closed_without_a_word(connect(ports[protocol])), protocol
        assert all(alive(sock, protocol) for sock, protocol in first)
        # Other addresses have their own allowance, up to the process's limit.
        opened.append(admitted(platform, "m2mp", source="127.0.0.2"))
        opened.append(admitted(platform, "alip", source="127.0.0.3"))
        assert closed_without_a_word(connect(ports["alip"], source="127.0.0.4"))
        # Once connections close, their places are taken again.
        first[0][0].close()
        opened.append(admitted(platform, "alip"))
        assert closed_without_a_word(connect(ports["m2mp"]))
        for sock in opened:
            sock.close()
        again = [(admitted(platform, protocol), protocol) for protocol in ("m2mp", "m2mp", "alip")]
        opened = [sock for sock, _ in again]
        opened.append(admitted(platform, "alip", source="127.0.0.4"))
        assert all(alive(sock, protocol) for sock, protocol in again)
        assert platform.process.poll() is None
        log = platform.log.read_text()
        assert "connection from 127.0.0.1 refused" in log
        assert not log_problems(platform.log)
    finally:
        for sock in opened:
            sock.close()
        platform.stop()


# --- Bugs this module found, fixed: each on a platform of its own ------------------------


def test_an_m2mp_frame_too_large_for_one_bus_message_jams_no_one(
    config_file: Path, tmp_path: Path
) -> None:
    platform = start_platform(config_with_own_topics(config_file, tmp_path), tmp_path, timing=QUIET)
    try:
        with connect(platform.alip_port) as bystander, connect(platform.m2mp_port) as big:
            assert send(bystander, b"ID " + new_alip_ident() + b"\n")
            received_until(bystander, b"ID 1\n")
            frames = (
                IdentificationRequest(new_m2mp_ident()),
                ChannelDefinition(0, "dump"),
                ChannelDefinition(1, "echo"),
                Data(0, b"x" * 600_000),  # 1.2 MB of hex on the bus
                Data(1, b"after"),
            )
            assert send(big, b"".join(map(encode, frames)))
            # Its echo is sent by a later step: by then the big frame was published.
            decoder, echoed = Decoder(Direction.SERVER_TO_DEVICE), False
            while not echoed:
                chunk = big.recv(READ_SIZE)
                assert chunk, "the M2MP connection closed"
                echoed = any(
                    isinstance(frame, Data) and frame.data == b"after"
                    for frame in decoder.feed(chunk)
                )
            assert send(bystander, b"D T 21.5\nA 1\n")
            received_until(bystander, b"B 1\n", timeout=BUG_WAIT)
            assert not log_problems(platform.log)
    finally:
        platform.process.kill()  # a jammed publisher would hold SIGTERM 30 s
        platform.process.wait(timeout=WAIT)


def test_debug_last_on_connections_that_never_read_holds_bounded_memory(
    config_file: Path, tmp_path: Path
) -> None:
    platform = start_platform(
        config_with_own_topics(config_file, tmp_path), tmp_path, limits=LIMITS
    )
    try:
        listed = _device_with_records(platform.alip_port, 400, 60_000)
        memory = MemoryWatch(platform.process.pid)
        baseline = rss_mb(platform.process.pid)
        stalled = [connect(platform.alip_port, small_buffers=True) for _ in range(10)]
        try:
            for sock in stalled:
                assert send(sock, b"ID " + listed + b"\n" + b"DB LAST 1000\n" * 2)
            time.sleep(5)  # every page read and held, under the memory watch
        finally:
            for sock in stalled:
                sock.close()
        time.sleep(5)  # what the closed connections asked still runs
        peak = memory.peak()
        memory.stop()
        assert peak < baseline + RSS_ALLOWANCE_MB, f"{baseline:.0f} MB, then {peak:.0f} MB"
    finally:
        platform.stop()


def tcp_state(sock: socket.socket) -> int:
    """The kernel's TCP state of our end (1: established, 7: closed)."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def test_a_device_that_never_reads_is_still_dropped_when_its_silence_runs_out(
    config_file: Path, tmp_path: Path
) -> None:
    platform = start_platform(config_with_own_topics(config_file, tmp_path), tmp_path, only="alip")
    try:
        with connect(platform.alip_port, small_buffers=True) as sock:
            assert send(sock, b"ID " + new_alip_ident() + b"\n")
            flood(sock, b"D echo " + b"e" * 60_000 + b"\n")
            deadline = time.monotonic() + FAST_TIMING["disconnect_after_silence"] + BUG_WAIT
            while tcp_state(sock) == 1:  # established: the server has not dropped it
                assert time.monotonic() < deadline, "still connected"
                time.sleep(0.2)
    finally:
        platform.stop()
