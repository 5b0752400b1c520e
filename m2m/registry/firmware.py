"""Firmware: named files devices download, kept as blobs on the registry.

``/firmware/by-name/`` maps each firmware name to its id (node values); the file itself is
the blob at ``/firmware/<id>/file/``. A new upload under an existing name gets a new id and
replaces the name's entry only once it is complete, so a device never reads half a file.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterable

from m2m.blobstore import BlobFile, open_blob
from m2m.cassandra import Database
from m2m.errors import InvalidInput
from m2m.registry.named import EntityNotFoundError
from m2m.registry.node import RegistryNode

FIRMWARE = "/firmware/"
BY_NAME = f"{FIRMWARE}by-name/"


class InvalidFirmwareNameError(InvalidInput):
    """A firmware name that cannot be stored or asked for (empty, a ``/``, a control
    character: a device asks for it on a line, ALIP ``F N <name>``)."""


_UNUSABLE_NAME = re.compile(r"[/\x00-\x1f\x7f]")


def file_path(firmware_id: str) -> str:
    return f"{FIRMWARE}{firmware_id}/file/"


class Firmwares:
    def __init__(self, database: Database) -> None:
        self.database = database

    @property
    def _index(self) -> RegistryNode:
        return RegistryNode(self.database, BY_NAME)

    async def all(self) -> dict[str, str]:
        """Firmware name → id."""
        return await self._index.values()

    async def path_of(self, name: str) -> str | None:
        """The blob path of the named firmware, if there is one."""
        firmware_id = await self._index.value(name)
        return file_path(firmware_id) if firmware_id else None

    async def open(self, name: str) -> BlobFile | None:
        """The named firmware's file opened for reading (None if unknown or incomplete)."""
        path = await self.path_of(name)
        if path is None:
            return None
        return await open_blob(self.database, path, "r")

    async def add(
        self, name: str, content: AsyncIterable[bytes], mime_type: str | None = None
    ) -> str:
        """Store a firmware file under ``name`` (replacing an older one); returns its id."""
        if not name or _UNUSABLE_NAME.search(name):
            raise InvalidFirmwareNameError(
                f"invalid firmware name {name!r}: empty, or with a '/' or a control character"
            )
        firmware_id = str(uuid.uuid4())
        try:
            async with open_blob(
                self.database, file_path(firmware_id), "w", name=name, mime_type=mime_type
            ) as blob:
                async for chunk in content:
                    await blob.write(chunk)
        except BaseException:
            # Nothing refers to it yet (the name points at it only once complete): no orphan.
            await self._delete_files(firmware_id)
            raise
        previous = await self._index.value(name)
        await self._index.check()
        await self._index.set_value(name, firmware_id)
        if previous:
            await self._delete_files(previous)
        return firmware_id

    async def remove(self, name: str) -> None:
        firmware_id = await self._index.value(name)
        if firmware_id is None:
            raise EntityNotFoundError(f"no firmware named {name!r}")
        await self._index.delete_value(name)
        await self._delete_files(firmware_id)

    async def _delete_files(self, firmware_id: str) -> None:
        await RegistryNode(self.database, f"{FIRMWARE}{firmware_id}/").delete(hard=True)
