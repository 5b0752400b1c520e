"""A bound on request bodies: JSON is read whole into memory, so none may be large.

Uploads that stream to the blobstore (``PUT /api/v1/firmware/…``) bound themselves and
are let through. A body declared larger than the bound is answered 413 before it is
read; one that turns out larger (chunked) is cut off with 413 when it passes the bound.
"""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from m2m.web.errors import error_response

MAX_BODY_BYTES = 2 * 1024 * 1024
"""Twice what the registry takes in one write (its own rule answers 422 below that)."""


_LENGTH = re.compile(r"[0-9]{1,15}")


def declared_length(header: str) -> int | None:
    """A Content-Length's bytes; None for one that is no length (or beyond any limit)."""
    return int(header) if _LENGTH.fullmatch(header) else None


class BodyLimit:
    def __init__(self, app: ASGIApp, unbounded_prefixes: tuple[str, ...]) -> None:
        self._app = app
        self._unbounded = unbounded_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope["path"]).startswith(self._unbounded):
            await self._app(scope, receive, send)
            return
        declared = declared_length(
            dict(scope["headers"]).get(b"content-length", b"0").decode("latin-1")
        )
        if declared is None or declared > MAX_BODY_BYTES:
            response = error_response(413, f"request bodies are limited to {MAX_BODY_BYTES} bytes")
            await response(scope, receive, send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise HTTPException(413, f"request bodies are limited to {MAX_BODY_BYTES} bytes")
            return message

        await self._app(scope, bounded, send)
