"""``m2m firmware``: the named files devices download (ALIP ``F N <name>``, ``F G``).

An upload streams the file a block at a time, with a progress bar on a terminal for big
files (``files``); the name points at the new file only once it is complete.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import click

from m2m.blobstore import DEFAULT_BLOCK_SIZE, BlobError, stat_blob
from m2m.cassandra import Database, run_with_database
from m2m.cli.app import App, OneLineErrors, pass_app
from m2m.cli.files import local_file, local_size, progress
from m2m.cli.output import Row, json_option, print_rows
from m2m.registry.firmware import Firmwares, file_path


@click.group(cls=OneLineErrors)
def firmware() -> None:
    """Firmware files, by name."""


@firmware.command("add")
@click.argument("name")
@click.argument("file")
@pass_app
def add(app: App, name: str, file: str) -> None:
    """Store FILE (- for stdin) as firmware NAME, replacing an older one; print its id."""
    with local_file(file, "rb") as source:

        async def blocks() -> AsyncIterator[bytes]:
            with progress(local_size(file, source), f"firmware {name}") as advance:
                while block := source.read(DEFAULT_BLOCK_SIZE):
                    yield block
                    advance(len(block))

        async def work(database: Database) -> str:
            return await Firmwares(database).add(name, blocks())

        click.echo(run_with_database(app.config.cassandra, work))


@firmware.command("ls")
@json_option
@pass_app
def list_firmware(app: App, as_json: bool) -> None:
    """List firmware: name, id and size in bytes."""

    async def size(database: Database, firmware_id: str) -> int | None:
        try:
            return (await stat_blob(database, file_path(firmware_id))).size
        except BlobError:
            return None  # its file is gone or unreadable: listed all the same, size unknown

    async def work(database: Database) -> list[Row]:
        return [
            {"name": name, "id": firmware_id, "size": await size(database, firmware_id)}
            for name, firmware_id in sorted((await Firmwares(database).all()).items())
        ]

    print_rows(run_with_database(app.config.cassandra, work), as_json)


@firmware.command("rm")
@click.argument("name")
@pass_app
def remove(app: App, name: str) -> None:
    """Delete firmware NAME and its file."""

    async def work(database: Database) -> None:
        await Firmwares(database).remove(name)

    run_with_database(app.config.cassandra, work)
