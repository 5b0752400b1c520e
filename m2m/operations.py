"""A process's operations port (``metrics.listen``): metrics and health over HTTP.

- ``/metrics``: every metric of the process, in Prometheus's text format.
- ``/healthz``: 200 while the process runs its event loop (it answers: that is the proof).
  What a supervisor restarts the process on.
- ``/readyz``: 200 when every service of the process can do its work — Cassandra answers,
  nsqd is connected, the receivers listen — else 503; both say which check says what,
  ``{"status": "ready", "checks": {"cassandra": "ok", …}}``. What a load balancer sends
  devices by, and what ``m2m status`` asks.

The services register their checks (:meth:`Operations.add_check`) as they start; until the
process has started, it is not ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from m2m.http_server import HTTPServer
from m2m.metrics import READY, READY_CHECK

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[str | None]]
"""A readiness check: None when all is well, else what is wrong, in a few words."""

CHECK_TIMEOUT = 2.0
"""Seconds a check has to answer before it counts as failed."""
READINESS_INTERVAL = 15.0
"""Seconds between two readiness checks for the metrics (``m2m_ready``)."""
STARTING = "the process is starting"


class Operations:
    def __init__(self, listen: str, setting: str = "metrics.listen") -> None:
        self._checks: dict[str, Check] = {}
        self.started = False
        """Set once every service of the process started: not ready before."""
        app = Starlette(
            routes=[
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
                Route("/metrics", self._metrics),
            ]
        )
        self._server = HTTPServer(app, listen, setting)
        self._watching: asyncio.Task[None] | None = None

    def add_check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    async def start(self) -> int:
        """Serve; the port served on."""
        port = await self._server.start()
        self._watching = asyncio.get_running_loop().create_task(self._watch())
        return port

    async def stop(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
        await self._server.stop()

    async def _watch(self) -> None:
        """Readiness as metrics too, so Prometheus can alert on a process that is not."""
        while True:
            checks = await self.readiness()
            for name, answer in checks.items():
                READY_CHECK.labels(name).set(answer == "ok")
            READY.set(all(answer == "ok" for answer in checks.values()))
            await asyncio.sleep(READINESS_INTERVAL if self.started else 1.0)

    async def readiness(self) -> dict[str, str]:
        """Each check's answer, ``ok`` or what is wrong, all asked at once."""
        names = list(self._checks)
        answers = await asyncio.gather(*(self._ask(self._checks[name]) for name in names))
        checks = dict(zip(names, answers, strict=True))
        if not self.started:
            checks["process"] = STARTING
        return checks

    @staticmethod
    async def _ask(check: Check) -> str:
        try:
            problem = await asyncio.wait_for(check(), CHECK_TIMEOUT)
        except TimeoutError:
            return f"no answer in {CHECK_TIMEOUT:g} s"
        except Exception as exc:  # a check that fails says so; the endpoint stays up
            return str(exc) or type(exc).__name__
        return problem or "ok"

    async def _metrics(self, request: Request) -> Response:
        """The text format, or OpenMetrics to a scraper that asks for it."""
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(REGISTRY), headers={"Content-Type": content_type})

    async def _healthz(self, _: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, _: Request) -> JSONResponse:
        checks = await self.readiness()
        ready = all(answer == "ok" for answer in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "unready", "checks": checks},
            status_code=200 if ready else 503,
        )
