"""Telling the receivers to act on a device now: one control message, acknowledged by nsqd.

Every receiver process reads the ``receivers`` topic on a channel of its own, so whichever
holds the device's connection acts on ``receivers;device_id=<uuid>`` and the others ignore
it. The registry change made before the push stands whatever happens here: a device that
misses the push still gets its pending settings and commands when it next connects.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from m2m.bus import topics
from m2m.bus.envelope import Envelope
from m2m.bus.publisher import PublishDropped, Publisher
from m2m.config import NsqConfig
from m2m.errors import M2MError

PUSH_TIMEOUT = 5.0
"""Seconds nsqd has to acknowledge the message; a local nsqd takes milliseconds."""
RETRY_DELAY = 0.05
"""The first publish usually comes before the connection is up: try again soon."""
BUS_LIBRARY_LOGGERS = ("nsq", "tornado", "asyncio", "m2m.bus")


class PushNotSentError(M2MError):
    """nsqd did not take the control message (the registry change was kept)."""


def cli_address() -> str:
    """The ``_from`` of the CLI's messages: who sent them, for the receivers' logs."""
    return f"cli;host={socket.gethostname()};pid={os.getpid()}"


async def tell_receivers(config: NsqConfig, device_id: str, call: str) -> None:
    """Publish ``call`` for the device and wait for nsqd's acknowledgement.

    Raises :class:`PushNotSentError` if nsqd has not acknowledged within PUSH_TIMEOUT.
    """
    addresses = list(config.nsqd_tcp_addresses)
    envelope = Envelope.make(f"{topics.RECEIVERS};device_id={device_id}", call, cli_address())
    mute_bus_libraries()
    publisher = Publisher(config, retry_delay=RETRY_DELAY)
    publisher.start()
    try:
        await asyncio.wait_for(publisher.deliver(envelope), PUSH_TIMEOUT)
    except (TimeoutError, PublishDropped) as exc:
        raise PushNotSentError(
            f"nsqd at {', '.join(addresses)} did not take the {call} message "
            f"within {PUSH_TIMEOUT:g} s"
        ) from exc
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
