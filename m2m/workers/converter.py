"""The converter worker: ``converter-m2mp`` messages become records and control messages.

The rules are pure (:mod:`m2m.workers.conversion`); this only publishes what they produce
and reports success once nsqd has acknowledged each of them, so the source message is
finished only when its results are safe on the bus. nsqd not acknowledging them in time is
an outage (:class:`~m2m.bus.publisher.PublishTimeout`): the consumer tries again.
"""

from __future__ import annotations

import asyncio

from m2m.bus.envelope import Envelope
from m2m.bus.publisher import Publisher
from m2m.workers.conversion import convert

DELIVERY_TIMEOUT = 10.0
"""Seconds nsqd has to acknowledge what a message led to; then the message is retried."""


class ConverterWorker:
    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    async def handle(self, envelope: Envelope) -> None:
        produced = convert(envelope)
        deliver = self._publisher.deliver
        if len(produced) == 1:  # nearly always: one record, and no task to make for it
            await deliver(produced[0], timeout=DELIVERY_TIMEOUT)
        else:
            await asyncio.gather(
                *(deliver(message, timeout=DELIVERY_TIMEOUT) for message in produced)
            )
