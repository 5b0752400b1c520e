"""Local files for the commands that move them into the registry and out again.

A progress bar shows on stderr for big files, and only when stderr is a terminal, so
pipes and logs stay clean; ``-`` names stdin or stdout.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Literal

import click

from m2m.errors import M2MError

STDIO = "-"
PROGRESS_FROM_SIZE = 4 * 1024 * 1024
"""Smaller files go by too fast for a progress bar to help."""


class LocalFileError(M2MError):
    """A local file to read or write cannot be used."""


@contextmanager
def progress(length: int | None, label: str) -> Iterator[Callable[[int], None]]:
    """A function to report bytes done: drives a bar on stderr when that helps."""
    if length is None or length < PROGRESS_FROM_SIZE or not sys.stderr.isatty():
        yield lambda done: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


@contextmanager
def local_file(file: str, mode: Literal["rb", "wb"]) -> Iterator[IO[bytes]]:
    """FILE opened (and closed after), or stdin/stdout for ``-`` (left open)."""
    if file == STDIO:
        yield sys.stdin.buffer if mode == "rb" else sys.stdout.buffer
        return
    try:
        stream = open(file, mode)  # noqa: SIM115 (closed just below; open's errors differ)
    except OSError as exc:
        raise LocalFileError(f"{file}: cannot open: {exc.strerror}") from exc
    with stream:
        yield stream


def local_size(file: str, stream: IO[bytes]) -> int | None:
    """The size of an opened local file; None for stdin, whose size is not known ahead."""
    return None if file == STDIO else os.fstat(stream.fileno()).st_size
