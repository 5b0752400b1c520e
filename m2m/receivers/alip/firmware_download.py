"""An ALIP device downloading a firmware: ``F N <name>`` selects it, ``F S`` asks its size,
``F G <offset> <size>`` reads a chunk.

The selection is the connection's: the file is opened once, and read chunk by chunk as
the device asks, however slowly. A firmware replaced or removed while selected cannot be
read on (its blocks are gone for good): the device is told to select it again.
"""

from __future__ import annotations

from m2m.blobstore import BlobError, BlobFile
from m2m.logs import ConnectionLog
from m2m.receivers.alip.commands import AlipError
from m2m.registry.firmware import Firmwares

MAX_FIRMWARE_CHUNK = 32 * 1024
"""Bytes one ``F G`` answers at most: its line carries them in hex."""


class FirmwareDownload:
    def __init__(self, firmwares: Firmwares, log: ConnectionLog) -> None:
        self._firmwares = firmwares
        self._log = log
        self._selected: BlobFile | None = None

    async def select(self, name: str) -> bool:
        """Select the firmware called ``name``; False (and none selected) if none is."""
        try:
            self._selected = await self._firmwares.open(name)
        except BlobError as exc:
            self._log.warning("firmware %r: %s", name, exc)
            self._selected = None
        return self._selected is not None

    @property
    def size(self) -> int:
        return self._firmware().size

    async def chunk(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes (at most ``MAX_FIRMWARE_CHUNK``) from ``offset``."""
        firmware = self._firmware()
        try:
            return await firmware.read_at(offset, min(size, MAX_FIRMWARE_CHUNK))
        except BlobError as exc:
            self._log.warning("firmware %r: %s", firmware, exc)
            self._selected = None
            raise AlipError(
                f'Firmware "{firmware.name}" changed since it was selected: select it again'
            ) from None

    def _firmware(self) -> BlobFile:
        if self._selected is None:
            raise AlipError("No firmware selected (F N <name>)")
        return self._selected
