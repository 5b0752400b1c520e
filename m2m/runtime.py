"""One event loop for the whole process: Twisted's reactor running on asyncio.

Receivers are Twisted protocols, the bus (pynsq, on Tornado) and the Cassandra bridge are
asyncio: with ``AsyncioSelectorReactor`` they all share one loop and one thread. Logs from
Twisted (``twisted.logger``), from Python's warnings and from the libraries (``logging``)
go to stderr in one format, the config's (:mod:`m2m.logs`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, cast

from twisted.internet import asyncioreactor
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, STDLibLogObserver, globalLogBeginner
from twisted.python.failure import Failure

from m2m import logs
from m2m.config import LoggingConfig

log = logging.getLogger(__name__)

Step = Callable[[], Coroutine[Any, Any, None]]


REPEATS_INTERVAL = 60.0
"""Seconds between two identical lines of the bus libraries (see :class:`logs.QuietRepeats`)."""


def configure_logging(config: LoggingConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logs.formatter(config.format))
    handler.addFilter(logs.QuietRepeats(("nsq", "tornado"), REPEATS_INTERVAL))
    level = logging.getLevelNamesMapping()[config.level.upper()]
    logging.basicConfig(level=level, handlers=[handler])
    logging.captureWarnings(True)
    for noisy in ("cassandra", "nsq", "tornado"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # STDLibLogObserver provides ILogObserver through zope.interface, which mypy cannot see.
    observer = cast(ILogObserver, STDLibLogObserver())
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def asyncio_reactor() -> tuple[asyncioreactor.AsyncioSelectorReactor, asyncio.AbstractEventLoop]:
    """The process's reactor and its loop, installing the asyncio reactor on first use."""
    if "twisted.internet.reactor" not in sys.modules:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(loop)
    from twisted.internet import reactor

    if not isinstance(reactor, asyncioreactor.AsyncioSelectorReactor):
        raise RuntimeError("another Twisted reactor was installed before the asyncio one")
    return reactor, reactor._asyncioEventloop


def run(start: Step, stop: Step) -> int:
    """Run until SIGINT/SIGTERM: ``start`` once the loop runs, ``stop`` before it ends.

    The exit status is 1 if ``start`` failed (after ``stop`` ran), else 0.
    """
    reactor, loop = asyncio_reactor()
    status = 0

    def started_badly(failure: Failure) -> None:
        nonlocal status
        status = 1
        log.error("start-up failed: %s", failure.getErrorMessage())
        reactor.stop()

    def begin() -> None:
        Deferred.fromFuture(loop.create_task(start())).addErrback(started_badly)

    reactor.callWhenRunning(begin)
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromFuture(loop.create_task(stop()))
    )
    reactor.run()
    return status
