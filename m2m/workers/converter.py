"""The converter worker: ``converter-m2mp`` messages become records and control messages.

The rules are pure (:mod:`m2m.workers.conversion`); this only publishes what they produce
and reports success once nsqd has acknowledged each of them, so the source message is
finished only when its results are safe on the bus.
"""

from __future__ import annotations

import asyncio

from m2m.bus.envelope import Envelope
from m2m.bus.publisher import Publisher
from m2m.workers.conversion import convert


class ConverterWorker:
    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    async def handle(self, envelope: Envelope) -> None:
        produced = convert(envelope)
        if len(produced) == 1:  # nearly always: one record, and no task to make for it
            await self._publisher.deliver(produced[0])
        else:
            await asyncio.gather(*(self._publisher.deliver(message) for message in produced))
