"""Telling the receivers to act on a device now: one control message, acknowledged by nsqd.

Every receiver process reads the ``receivers`` topic on a channel of its own, so whichever
holds the device's connection acts on ``receivers;device_id=<uuid>`` and the others ignore
it. The registry change made before the push stands whatever happens here: a device that
misses the push still gets its pending settings and commands when it next connects. The
CLI and the web service both push this way.
"""

from __future__ import annotations

from m2m.bus import topics
from m2m.bus.envelope import Envelope
from m2m.bus.publisher import PublishDropped, Publisher, PublishTimeout
from m2m.errors import M2MError

PUSH_TIMEOUT = 5.0
"""Seconds nsqd has to acknowledge the message; a local nsqd takes milliseconds."""


class PushNotSentError(M2MError):
    """nsqd did not take the control message (the registry change was kept)."""


async def push_to_device(
    publisher: Publisher, device_id: str, call: str, sender: str, timeout: float = PUSH_TIMEOUT
) -> None:
    """Publish ``call`` for the device and wait for nsqd's acknowledgement.

    Raises :class:`PushNotSentError` if nsqd has not acknowledged within ``timeout``.
    """
    envelope = Envelope.make(f"{topics.RECEIVERS};device_id={device_id}", call, sender)
    try:
        await publisher.deliver(envelope, timeout=timeout)
    except (PublishTimeout, PublishDropped) as exc:
        raise PushNotSentError(
            f"nsqd did not take the {call} message within {timeout:g} s"
        ) from exc
