"""The M2MP codec against the spec: round-trips, size widths, fragmentation, bad input,
the bytes the public C client really sends, and the declarative construct format."""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m2m.receivers.m2mp.codec import (
    FRAME_FORMATS,
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
    ProtocolError,
    ServerPing,
    ServerPingAnswer,
    encode,
)

DEVICE = Direction.DEVICE_TO_SERVER
SERVER = Direction.SERVER_TO_DEVICE

# --- Strategies -------------------------------------------------------------------------

u8 = st.integers(0, 255)


def latin1_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(max_codepoint=0xFF), max_size=max_size)


frames_in_both_directions: st.SearchStrategy[Frame] = st.one_of(
    st.builds(ChannelDefinition, u8, latin1_text(254)),
    st.builds(Data, u8, st.binary(max_size=600)),
    st.builds(DataArray, u8, st.lists(st.binary(max_size=120), max_size=8).map(tuple)),
)
frames_sent_by: dict[Direction, st.SearchStrategy[Frame]] = {
    DEVICE: st.one_of(
        st.builds(IdentificationRequest, latin1_text(255)),
        st.builds(DevicePing, u8),
        st.builds(ServerPingAnswer, u8),
        frames_in_both_directions,
    ),
    SERVER: st.one_of(
        st.builds(IdentificationResult, st.booleans()),
        st.builds(DevicePingAnswer, u8),
        st.builds(ServerPing, u8),
        frames_in_both_directions,
    ),
}


def decode_whole(direction: Direction, stream: bytes) -> list[Frame]:
    decoder = Decoder(direction)
    frames = decoder.feed(stream)
    assert decoder.buffered_bytes == 0
    return frames


def decode_in_pieces(direction: Direction, pieces: list[bytes]) -> list[Frame]:
    decoder = Decoder(direction)
    frames = [frame for piece in pieces for frame in decoder.feed(piece)]
    assert decoder.buffered_bytes == 0
    return frames


def split_every(stream: bytes, piece_size: int) -> list[bytes]:
    return [stream[start : start + piece_size] for start in range(0, len(stream), piece_size)]


# --- Round-trips and fragmentation ------------------------------------------------------


@pytest.mark.parametrize("direction", [DEVICE, SERVER])
@given(data=st.data())
def test_every_frame_kind_round_trips(direction: Direction, data: st.DataObject) -> None:
    frame = data.draw(frames_sent_by[direction])
    assert decode_whole(direction, encode(frame)) == [frame]


@pytest.mark.parametrize("direction", [DEVICE, SERVER])
@given(data=st.data())
def test_any_fragmentation_of_a_stream_decodes_to_the_same_frames(
    direction: Direction, data: st.DataObject
) -> None:
    frames = data.draw(st.lists(frames_sent_by[direction], max_size=12))
    stream = b"".join(map(encode, frames))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40).map(sorted))
    pieces = [
        stream[start:end] for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True)
    ]
    assert decode_in_pieces(direction, pieces) == frames


def test_a_partial_frame_waits_in_the_buffer() -> None:
    decoder = Decoder(DEVICE)
    assert decoder.feed(b"\x21\x04\x01") == []
    assert decoder.buffered_bytes == 3
    assert decoder.feed(b"37") == []
    assert decoder.feed(b"4\x02") == [Data(1, b"374")]
    assert decoder.buffered_bytes == 1
    assert decoder.feed(b"\x07") == [DevicePing(7)]
    assert decoder.buffered_bytes == 0


@pytest.mark.parametrize("direction", [DEVICE, SERVER])
def test_the_same_header_means_different_frames_in_each_direction(direction: Direction) -> None:
    stream = bytes.fromhex("0100 0205 0309")
    expected: dict[Direction, list[Frame]] = {
        DEVICE: [IdentificationRequest(""), DevicePing(5), ServerPingAnswer(9)],
        SERVER: [IdentificationResult(False), DevicePingAnswer(5), ServerPing(9)],
    }
    assert decode_whole(direction, stream) == expected[direction]


def test_the_server_answer_in_the_c_client_exchange_decodes_as_identification_results() -> None:
    assert decode_whole(SERVER, b"\x01\x01\x01\x00") == [
        IdentificationResult(True),
        IdentificationResult(False),
    ]


def test_any_ident_byte_decodes_and_encodes_back_to_the_same_bytes() -> None:
    every_byte = bytes(range(256))[:255]
    wire = bytes((0x01, len(every_byte))) + every_byte
    (frame,) = decode_whole(DEVICE, wire)
    assert isinstance(frame, IdentificationRequest)
    assert encode(frame) == wire


# --- Size widths ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_length", "header", "size_width"),
    [
        (0, 0x21, 1),
        (253, 0x21, 1),  # size 254: the widest a u8 size is used for
        (254, 0x41, 2),  # size 255
        (65533, 0x41, 2),  # size 65534: the widest a u16 size is used for
        (65534, 0x61, 4),  # size 65535
        (MAX_FRAME_SIZE - 1, 0x61, 4),  # size exactly at the limit
    ],
)
def test_data_uses_the_narrowest_size_width(data_length: int, header: int, size_width: int) -> None:
    frame = Data(200, bytes(range(256)) * (data_length // 256) + bytes(data_length % 256))
    wire = encode(frame)
    size = int.from_bytes(wire[1 : 1 + size_width], "big")
    assert (wire[0], size, len(wire)) == (header, data_length + 1, 1 + size_width + size)
    assert decode_whole(DEVICE, wire) == [frame]
    assert decode_in_pieces(SERVER, split_every(wire, 977)) == [frame]


@pytest.mark.parametrize(
    ("items", "header", "size_width"),
    [
        ((), 0x22, 1),
        ((b"a" * 249,), 0x22, 1),  # 1 + 4 + 249 = 254
        ((b"a" * 250,), 0x42, 2),  # 255: u16 although the real size (253) would fit a u8
        ((b"a" * 100, b"b" * 145), 0x22, 1),  # 1 + 8 + 245 = 254 -> size 248
        ((b"a" * 100, b"b" * 146), 0x42, 2),  # 255
        ((b"a" * 65529,), 0x42, 2),  # 65534
        ((b"a" * 65530,), 0x62, 4),  # 65535
        ((b"x",) * 20_000, 0x62, 4),  # 1 + 80000 + 20000: many items widen the size
    ],
)
def test_arrays_pick_their_width_from_a_four_byte_estimate(
    items: tuple[bytes, ...], header: int, size_width: int
) -> None:
    frame = DataArray(3, items)
    wire = encode(frame)
    size = int.from_bytes(wire[1 : 1 + size_width], "big")
    expected_size = 1 + size_width * len(items) + sum(map(len, items))
    assert (wire[0], size, len(wire)) == (header, expected_size, 1 + size_width + expected_size)
    assert decode_whole(DEVICE, wire) == [frame]
    assert decode_in_pieces(SERVER, split_every(wire, 977)) == [frame]


@pytest.mark.parametrize(
    "wire",
    [
        bytes.fromhex("6100000004 01 333734"),
        bytes.fromhex("410004 01 333734"),
    ],
)
def test_a_wider_size_than_needed_is_accepted(wire: bytes) -> None:
    assert decode_whole(DEVICE, wire) == [Data(1, b"374")]


def test_an_array_with_a_wider_size_than_needed_is_accepted() -> None:
    wire = bytes.fromhex("62 0000000b 07 00000001 67 00000001 68")
    assert decode_whole(DEVICE, wire) == [DataArray(7, (b"g", b"h"))]


# --- Bad input --------------------------------------------------------------------------

KNOWN_HEADERS = {0x01, 0x02, 0x03, 0x20, 0x21, 0x41, 0x61, 0x22, 0x42, 0x62}


@pytest.mark.parametrize("direction", [DEVICE, SERVER])
@pytest.mark.parametrize("header", sorted(set(range(256)) - KNOWN_HEADERS))
def test_an_unknown_header_is_refused_as_soon_as_it_arrives(
    direction: Direction, header: int
) -> None:
    with pytest.raises(ProtocolError, match=f"unknown frame header 0x{header:02x}"):
        Decoder(direction).feed(bytes((header,)))


@pytest.mark.parametrize("header", [0x61, 0x62])
def test_a_frame_declaring_more_than_one_mebibyte_is_refused_before_its_body(
    header: int,
) -> None:
    declared = MAX_FRAME_SIZE + 1
    with pytest.raises(ProtocolError, match=f"0x{header:02x} declares {declared} bytes"):
        Decoder(DEVICE).feed(struct.pack(">BI", header, declared))


def test_a_frame_declaring_exactly_one_mebibyte_is_awaited() -> None:
    decoder = Decoder(DEVICE)
    assert decoder.feed(struct.pack(">BIB", 0x61, MAX_FRAME_SIZE, 1)) == []


@pytest.mark.parametrize(
    ("direction", "wire", "complaint"),
    [
        (DEVICE, "22 05 00 05 616263", "item of 5 bytes at offset 2 overruns the 5-byte frame"),
        (DEVICE, "22 04 00 01 61 02", "item of 2 bytes at offset 4 overruns the 4-byte"),
        (DEVICE, "42 0002 00 00", "size field at offset 1 is cut short"),
        (DEVICE, "62 00000004 00 000000", "size field at offset 1 is cut short"),
        (DEVICE, "22 00", "array frame of size 0 has no channel id"),
        (SERVER, "42 0000", "array frame of size 0 has no channel id"),
        (DEVICE, "21 00", "data frame of size 0 has no channel id"),
        (SERVER, "61 00000000", "data frame of size 0 has no channel id"),
        (DEVICE, "20 00", "channel definition \\(0x20\\) of length 0 has no channel id"),
        (SERVER, "01 02", "identification status 0x02 is neither 0x00 nor 0x01"),
    ],
)
def test_malformed_content_is_a_protocol_error(
    direction: Direction, wire: str, complaint: str
) -> None:
    with pytest.raises(ProtocolError, match=complaint):
        Decoder(direction).feed(bytes.fromhex(wire))


def test_frames_before_an_error_are_kept_and_the_broken_stream_stays_broken() -> None:
    decoder = Decoder(DEVICE)
    with pytest.raises(ProtocolError) as raised:
        decoder.feed(bytes.fromhex("0200 210401333734 ff 0201"))
    assert raised.value.frames_before_error == (DevicePing(0), Data(1, b"374"))
    with pytest.raises(ProtocolError, match="already broken: unknown frame header 0xff"):
        decoder.feed(bytes.fromhex("0201"))


@pytest.mark.parametrize(
    ("frame", "complaint"),
    [
        (Data(256, b""), "channel id must fit one byte \\(0..255\\), not 256"),
        (DataArray(-1, ()), "channel id must fit one byte"),
        (ChannelDefinition(300, "x"), "channel id must fit one byte"),
        (ChannelDefinition(1, "n" * 255), "channel name 'n+' is 255 bytes, above 254"),
        (ChannelDefinition(1, "caf\u00e9\u20ac"), "outside latin-1"),
        (IdentificationRequest("i" * 256), "ident 'i+' is 256 bytes, above 255"),
        (DevicePing(256), "ping counter must fit one byte"),
        (ServerPingAnswer(-1), "ping counter must fit one byte"),
    ],
)
def test_a_frame_that_does_not_fit_the_wire_is_not_encoded(frame: Frame, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        encode(frame)


# --- What the public C client sends -----------------------------------------------------

STARTUP_VECTOR = "vectors/m2mp-c-client-startup.txt"

DescriptionReader = Callable[[re.Match[str]], Frame]
DESCRIPTIONS: list[tuple[re.Pattern[str], DescriptionReader]] = [
    (
        re.compile(r'ident (?P<ident>".*")'),
        lambda match: IdentificationRequest(json.loads(match["ident"])),
    ),
    (
        re.compile(r'channel (?P<id>\d+) = (?P<name>".*")'),
        lambda match: ChannelDefinition(int(match["id"]), json.loads(match["name"])),
    ),
    (
        re.compile(r"array on channel (?P<id>\d+): (?P<items>\[.*\])"),
        lambda match: DataArray(
            int(match["id"]), tuple(item.encode() for item in json.loads(match["items"]))
        ),
    ),
    (
        re.compile(r"device ping, n=(?P<n>\d+)"),
        lambda match: DevicePing(int(match["n"])),
    ),
    (
        re.compile(r'data on channel (?P<id>\d+): (?P<data>".*")'),
        lambda match: Data(int(match["id"]), json.loads(match["data"]).encode()),
    ),
]


def frame_described_as(description: str) -> Frame:
    for pattern, read in DESCRIPTIONS:
        match = pattern.fullmatch(description)
        if match:
            return read(match)
    raise AssertionError(f"the test cannot read the vector description {description!r}")


def startup_vector_path() -> Path:
    shared_dir = os.environ.get("M2M_SHARED_DIR")
    if shared_dir:
        return Path(shared_dir) / STARTUP_VECTOR
    return Path(__file__).parents[2].parent / "shared" / STARTUP_VECTOR


@pytest.fixture
def c_client_startup() -> list[tuple[bytes, Frame]]:
    """Each frame the C client sent at start-up: its bytes and what the file says it is."""
    path = startup_vector_path()
    if not path.is_file():
        pytest.skip(f"{path} is absent (set M2M_SHARED_DIR to the shared directory)")
    vector = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            hex_bytes, description = line.split(maxsplit=1)
            vector.append((bytes.fromhex(hex_bytes), frame_described_as(description.strip())))
    assert vector, f"{path} holds no frames"
    return vector


def test_the_c_client_startup_decodes_as_the_vector_says(
    c_client_startup: list[tuple[bytes, Frame]],
) -> None:
    stream = b"".join(wire for wire, _ in c_client_startup)
    expected = [frame for _, frame in c_client_startup]
    assert decode_whole(DEVICE, stream) == expected
    assert decode_in_pieces(DEVICE, split_every(stream, 1)) == expected


def test_our_encoder_reproduces_the_c_client_bytes(
    c_client_startup: list[tuple[bytes, Frame]],
) -> None:
    assert [encode(frame) for _, frame in c_client_startup] == [
        wire for wire, _ in c_client_startup
    ]


# --- The declarative construct format agrees with the hand-written codec ----------------


def construct_fields(frame: Frame) -> dict[str, Any]:
    """The frame's body as `FRAME_FORMATS` names its fields."""
    match frame:
        case IdentificationRequest(ident=ident):
            return {"ident": ident.encode("latin-1")}
        case IdentificationResult(accepted=accepted):
            return {"status": int(accepted)}
        case DevicePing(n=n) | DevicePingAnswer(n=n) | ServerPing(n=n) | ServerPingAnswer(n=n):
            return {"n": n}
        case ChannelDefinition(channel_id=channel_id, name=name):
            return {"channel_id": channel_id, "name": name.encode("latin-1")}
        case Data(channel_id=channel_id, data=data):
            return {"channel_id": channel_id, "data": data}
        case DataArray(channel_id=channel_id, items=items):
            return {"channel_id": channel_id, "items": list(items)}
    raise AssertionError(f"unexpected frame {frame!r}")


@pytest.mark.parametrize("direction", [DEVICE, SERVER])
@given(data=st.data())
def test_the_construct_format_reads_and_writes_the_same_bytes(
    direction: Direction, data: st.DataObject
) -> None:
    frame = data.draw(frames_sent_by[direction])
    wire = encode(frame)
    parsed = FRAME_FORMATS[direction].parse(wire)
    body = {name: value for name, value in parsed.body.items() if not name.startswith("_")}
    assert (parsed.header, body) == (wire[0], construct_fields(frame))
    assert FRAME_FORMATS[direction].build({"header": wire[0], "body": body}) == wire
