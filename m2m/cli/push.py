"""The CLI's push to the receivers (:mod:`m2m.bus.push`), on a publisher of its own."""

from __future__ import annotations

import logging
import os
import socket

from m2m.bus.publisher import Publisher
from m2m.bus.push import PushNotSentError, push_to_device
from m2m.config import NsqConfig

RETRY_DELAY = 0.05
"""The first publish usually comes before the connection is up: try again soon."""
BUS_LIBRARY_LOGGERS = ("nsq", "tornado", "asyncio", "m2m.bus")


def cli_address() -> str:
    """The ``_from`` of the CLI's messages: who sent them, for the receivers' logs."""
    return f"cli;host={socket.gethostname()};pid={os.getpid()}"


async def tell_receivers(config: NsqConfig, device_id: str, call: str) -> None:
    """Publish ``call`` for the device and wait for nsqd's acknowledgement.

    Raises :class:`PushNotSentError` (naming the nsqd addresses) if nsqd did not take it.
    """
    mute_bus_libraries()
    publisher = Publisher(config, retry_delay=RETRY_DELAY)
    publisher.start()
    try:
        await push_to_device(publisher, device_id, call, cli_address())
    except PushNotSentError as exc:
        raise PushNotSentError(f"{exc} (nsqd at {', '.join(config.nsqd_tcp_addresses)})") from exc
    finally:
        publisher.close()


def mute_bus_libraries() -> None:
    """Silence the bus libraries for the rest of this command's (short) life.

    Their connections log as they close, and a reconnection attempt already under way
    still fails and logs on the event loop's last turns, after the push is over: that
    noise would bury the one line the command prints about the push.
    """
    for name in BUS_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
