"""Every error as ``{"error": "…"}`` with the status that says what went wrong.

The platform's own errors map by kind: not found 404, already there or still in use 409,
refused input 422, a back end down 503. Any other exception is a bug: logged with its
traceback, answered 500 without details.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from m2m.blobstore.errors import BlobNotFoundError
from m2m.errors import InvalidInput, M2MError, Unavailable
from m2m.registry.device import UnknownCommandError
from m2m.registry.device_views import UnknownSettingError
from m2m.registry.named import EntityExistsError, EntityInUseError, EntityNotFoundError
from m2m.registry.node import NodeExistsError, NodeNotFoundError

log = logging.getLogger(__name__)

_STATUS_BY_ERROR: tuple[tuple[type[M2MError], int], ...] = (
    (EntityNotFoundError, 404),
    (NodeNotFoundError, 404),
    (BlobNotFoundError, 404),
    (UnknownCommandError, 404),
    (UnknownSettingError, 404),
    (EntityExistsError, 409),
    (EntityInUseError, 409),
    (NodeExistsError, 409),
    (InvalidInput, 422),
    (Unavailable, 503),
)


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def status_of(error: M2MError) -> int:
    for kind, status in _STATUS_BY_ERROR:
        if isinstance(error, kind):
            return status
    return 400


def install_error_handlers(app: FastAPI) -> None:
    async def platform_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, M2MError)
        return error_response(status_of(exc), str(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        response = error_response(exc.status_code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        ]
        return error_response(422, "; ".join(problems) or "invalid request")

    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal error (logged by the web service)")

    app.add_exception_handler(M2MError, platform_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, bug)
