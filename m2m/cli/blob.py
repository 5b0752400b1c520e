"""``m2m blob``: put files into the registry, get them back, inspect and remove them.

Content streams a block at a time in both directions, so a file of any size needs a
few blocks of memory; big files show a progress bar on a terminal (see ``files``).
"""

from __future__ import annotations

import json
import mimetypes
import os
from contextlib import ExitStack
from typing import IO

import click

from m2m.blobstore import BlobStat, delete_blob, open_blob, stat_blob
from m2m.cassandra import Database, run_with_database
from m2m.cli.app import App, pass_app
from m2m.cli.files import STDIO, LocalFileError, local_file, local_size, progress
from m2m.registry import normalize_path


def _stat_json(stat: BlobStat) -> str:
    return json.dumps(
        {
            "name": stat.name,
            "type": stat.mime_type,
            "size": stat.size,
            "block_size": stat.block_size,
            "ok": stat.ok,
        },
        ensure_ascii=False,
    )


def _write_local(target: IO[bytes], data: bytes, file: str) -> None:
    """Write ``data`` through (a block at a time: buffering would only copy it)."""
    try:
        target.write(data)
        target.flush()
    except OSError as exc:
        raise LocalFileError(f"{file}: cannot write: {exc.strerror}") from exc


@click.group()
def blob() -> None:
    """Files stored on registry nodes (firmware and the like)."""


@blob.command("put")
@click.argument("path")
@click.argument("file")
@click.option("--type", "mime_type", help="MIME type (default: guessed from FILE's name).")
@pass_app
def put(app: App, path: str, file: str, mime_type: str | None) -> None:
    """Store FILE (- for stdin) at PATH, replacing its content; print its stat as JSON."""
    path = normalize_path(path)
    name = None if file == STDIO else os.path.basename(file)
    if mime_type is None and name is not None:
        mime_type = mimetypes.guess_type(name)[0]

    with local_file(file, "rb") as source:
        length = local_size(file, source)

        async def work(database: Database) -> BlobStat:
            async with open_blob(database, path, "w", name=name, mime_type=mime_type) as blob:
                with progress(length, f"put {path}") as advance:
                    while chunk := source.read(blob.block_size):
                        await blob.write(chunk)
                        advance(len(chunk))
            return await stat_blob(database, path)

        stat = run_with_database(app.config.cassandra, work)
    click.echo(_stat_json(stat))


@blob.command("get")
@click.argument("path")
@click.argument("out", default=STDIO)
@pass_app
def get(app: App, path: str, out: str) -> None:
    """Write the file at PATH to OUT (default: stdout); refuses an incomplete file."""
    path = normalize_path(path)

    async def work(database: Database) -> None:
        async with open_blob(database, path) as blob:
            with ExitStack() as stack:
                target = stack.enter_context(local_file(out, "wb"))
                advance = stack.enter_context(progress(blob.size, f"get {path}"))
                async for chunk in blob.chunks():
                    _write_local(target, chunk, out)
                    advance(len(chunk))

    run_with_database(app.config.cassandra, work)


@blob.command("stat")
@click.argument("path")
@pass_app
def stat(app: App, path: str) -> None:
    """Print the file's name, type, size, block size and completeness as JSON."""
    path = normalize_path(path)

    async def work(database: Database) -> BlobStat:
        return await stat_blob(database, path)

    click.echo(_stat_json(run_with_database(app.config.cassandra, work)))


@blob.command("rm")
@click.argument("path")
@pass_app
def remove(app: App, path: str) -> None:
    """Remove the file at PATH, its data and its node, for good."""
    path = normalize_path(path)

    async def work(database: Database) -> None:
        await delete_blob(database, path)

    run_with_database(app.config.cassandra, work)
