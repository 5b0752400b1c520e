"""``/api/v1/firmware``: the named files devices download, as ``m2m firmware`` keeps them.

An upload is the raw file as the request body, written to the blobstore block by block as
it arrives: the web process holds a few blocks of it, never the whole file. The name
points at the new file only once it is complete (:class:`~m2m.registry.firmware.Firmwares`),
so an upload that fails, is too large or is cut off leaves the previous firmware in place
and nothing of its own behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from m2m.blobstore import BlobError, BlobFile, stat_blob
from m2m.cassandra import Database
from m2m.registry.firmware import Firmwares, file_path
from m2m.registry.named import EntityNotFoundError
from m2m.web.api.models import FirmwareRow
from m2m.web.deps import Admin, Context, CurrentUser
from m2m.web.limits import declared_length

router = APIRouter(prefix="/firmware", tags=["firmware"])


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_RAW_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/octet-stream": _BINARY}}
}


async def _row(database: Database, name: str, firmware_id: str) -> dict[str, Any]:
    try:
        stat = await stat_blob(database, file_path(firmware_id))
    except BlobError:
        return {"name": name, "id": firmware_id, "size": None, "type": None}
    return {"name": name, "id": firmware_id, "size": stat.size, "type": stat.mime_type}


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"a firmware file may hold at most {limit} bytes")


async def _received(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body as it arrives, refused once it passes ``limit`` bytes."""
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise _too_large(limit)
            yield chunk
    except ClientDisconnect:
        raise HTTPException(400, "the upload was cut off: nothing was stored") from None


def _attachment(name: str) -> str:
    quoted = quote(name, safe="")
    if quoted == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename*=utf-8''{quoted}"


async def _content(blob: BlobFile) -> AsyncIterator[bytes]:
    async with blob:
        async for chunk in blob.chunks():
            yield chunk


@router.get("", response_model=list[FirmwareRow])
async def list_firmware(context: Context, who: CurrentUser) -> list[dict[str, Any]]:
    found = sorted((await Firmwares(context.database).all()).items())
    return list(await asyncio.gather(*(_row(context.database, *item) for item in found)))


@router.put("/{name}", response_model=FirmwareRow, status_code=201, openapi_extra=_RAW_BODY)
async def upload_firmware(
    name: str, request: Request, context: Context, who: Admin
) -> dict[str, Any]:
    """Store the request body as firmware ``name``, replacing an older one once complete."""
    limit = context.config.web.max_upload_bytes
    declared = declared_length(request.headers.get("content-length", "0"))
    if declared is None or declared > limit:
        raise _too_large(limit)
    firmwares = Firmwares(context.database)
    mime_type = request.headers.get("content-type") or None
    firmware_id = await firmwares.add(name, _received(request, limit), mime_type)
    return await _row(context.database, name, firmware_id)


@router.get(
    "/{name}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download_firmware(name: str, context: Context, who: CurrentUser) -> StreamingResponse:
    blob = await Firmwares(context.database).open(name)
    if blob is None:
        raise EntityNotFoundError(f"no firmware named {name!r}")
    headers = {"Content-Length": str(blob.size), "Content-Disposition": _attachment(name)}
    return StreamingResponse(_content(blob), media_type=blob.mime_type, headers=headers)


@router.delete("/{name}", status_code=204)
async def delete_firmware(name: str, context: Context, who: Admin) -> Response:
    await Firmwares(context.database).remove(name)
    return Response(status_code=204)
