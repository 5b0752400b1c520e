"""An HTTP server inside ``m2m serve``: uvicorn, on the process's one event loop.

The ``web`` service's API and console and every process's operations port (metrics and
health) are ASGI apps served this way. uvicorn's own signal handling is left out: the
process's (Twisted's) handles SIGINT and SIGTERM and stops the server in its turn, like
every other service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

from m2m.endpoints import parse_endpoint
from m2m.errors import M2MError

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5.0
"""Seconds open requests get to finish when the service stops."""


class ListenError(M2MError):
    """A ``listen`` setting names an address the server cannot listen on."""


def bind(listen: str, setting: str) -> socket.socket:
    """A listening socket for ``tcp:PORT[:interface=ADDRESS]`` (port 0: any free port);
    ``setting`` names the configuration key in errors."""
    endpoint = parse_endpoint(listen)
    if endpoint.kind != "tcp" or endpoint.port is None:
        raise ListenError(f"{setting} {listen!r}: expected tcp:PORT[:interface=ADDRESS]")
    interface = endpoint.interface or "0.0.0.0"
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((interface, endpoint.port))
    except OSError as exc:
        sock.close()
        raise ListenError(f"{setting} {listen!r}: {exc.strerror}") from exc
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def url_of(listen: str) -> str:
    """Where a person (or a probe) on this machine reaches a server listening on ``listen``."""
    endpoint = parse_endpoint(listen)
    if endpoint.port is None:
        return listen
    interface = endpoint.interface or "127.0.0.1"
    host = f"[{interface}]" if ":" in interface else interface
    return f"http://{host}:{endpoint.port}/"


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HTTPServer:
    def __init__(self, app: ASGIApp, listen: str, setting: str) -> None:
        self._app = app
        self._listen = listen
        self._setting = setting
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> int:
        """Listen and serve; the port served on."""
        sock = bind(self._listen, self._setting)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(SHUTDOWN_GRACE),
            server_header=False,
            log_config=None,  # its loggers go through the process's handler (m2m.logs)
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve([sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise ListenError(f"{self._setting} {self._listen!r}: the server did not start")
            await asyncio.sleep(0.01)
        log.info("%s: serving HTTP on port %d", self._setting, self.port)
        return self.port

    @property
    def serving(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
