"""How fast the M2MP codec decodes and encodes, in frames per second.

The receiver must decode and publish at least 20 000 frames/s per process, so the codec
alone should leave most of that budget to the rest. The construct line shows what the
declarative `FRAME_FORMATS` would cost on the hot path, which is why the codec does not
use it there.

Run from the repository root:  .venv/bin/python -m bench.m2mp_codec
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from m2m.receivers.m2mp.codec import (
    FRAME_FORMATS,
    ChannelDefinition,
    Data,
    DataArray,
    Decoder,
    DevicePing,
    Direction,
    Frame,
    encode,
)

REPEATS = 5
FRAMES_PER_RUN = 200_000
TCP_READ_SIZE = 65_536  # what Twisted asks the socket for at most


def best_seconds(run: Callable[[], object]) -> float:
    """The fastest of a few runs: the least disturbed by the rest of the machine."""
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return min(timings)


def pieces(stream: bytes, piece_size: int) -> list[bytes]:
    return [stream[start : start + piece_size] for start in range(0, len(stream), piece_size)]


def decode_all(chunks: Sequence[bytes]) -> int:
    decoder = Decoder(Direction.DEVICE_TO_SERVER)
    return sum(len(decoder.feed(chunk)) for chunk in chunks)


def report(label: str, count: int, seconds: float, unit: str = "frames/s") -> None:
    print(f"{label:<58} {count / seconds:>14,.0f} {unit}")


def bench_decoding(label: str, frames: Sequence[Frame], piece_size: int) -> None:
    chunks = pieces(b"".join(map(encode, frames)), piece_size)
    assert decode_all(chunks) == len(frames)
    report(
        f"decode {label}, {piece_size}-byte reads",
        len(frames),
        best_seconds(lambda: decode_all(chunks)),
    )


def bench_encoding(label: str, frames: Sequence[Frame]) -> None:
    report(f"encode {label}", len(frames), best_seconds(lambda: [encode(f) for f in frames]))


def bench_construct_reference(label: str, frames: Sequence[Frame]) -> None:
    parse = FRAME_FORMATS[Direction.DEVICE_TO_SERVER].compile().parse
    encoded = [encode(frame) for frame in frames]
    report(
        f"construct compiled parse (reference), {label}",
        len(frames),
        best_seconds(lambda: [parse(one) for one in encoded]),
    )


def bench_large_frame_trickling_in() -> None:
    frame = Data(1, bytes(1_048_575))  # the largest frame the limit allows
    chunks = pieces(encode(frame), 1_024)
    seconds = best_seconds(lambda: decode_all(chunks))
    report("decode one 1 MiB frame in 1 KiB reads", len(chunks), seconds, "reads/s")


def main() -> None:
    simple = [Data(index % 255, b"%d" % index) for index in range(FRAMES_PER_RUN)]
    arrays = [DataArray(0, (b"g", b"servers=127.0.0.1:3999"))] * FRAMES_PER_RUN
    startup_mix: list[Frame] = [
        ChannelDefinition(1, "sen:uptime"),
        Data(1, b"374"),
        DataArray(0, (b"g", b"servers=127.0.0.1:3999")),
        DevicePing(0),
    ] * (FRAMES_PER_RUN // 4)

    bench_decoding("simple data frames", simple, TCP_READ_SIZE)
    bench_decoding("simple data frames", simple, 1_460)
    bench_decoding("simple data frames", simple, 3)
    bench_decoding("2-item arrays", arrays, TCP_READ_SIZE)
    bench_decoding("start-up mix", startup_mix, TCP_READ_SIZE)
    bench_large_frame_trickling_in()
    bench_encoding("simple data frames", simple)
    bench_encoding("2-item arrays", arrays)
    bench_encoding("start-up mix", startup_mix)
    bench_construct_reference("simple data frames", simple[: FRAMES_PER_RUN // 10])
    bench_construct_reference("2-item arrays", arrays[: FRAMES_PER_RUN // 10])


if __name__ == "__main__":
    main()
