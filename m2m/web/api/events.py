"""``/api/v1/events``: what happens on the platform, live, as Server-Sent Events.

Event names: ``connected``, ``disconnected``, ``record``, ``setting_acked``,
``command_answered``, ``status``, ``settings_changed``, ``commands_changed``,
``receiver_lost`` (its devices are no longer connected), and ``skipped`` (``count``
events were not sent: fetch the state again from the API).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from m2m.registry.domain import Domains
from m2m.registry.named import EntityNotFoundError
from m2m.web.api.models import Shape
from m2m.web.deps import Admin, Context, CurrentUser, visible_device
from m2m.web.live import Subscription

router = APIRouter(tags=["events"])


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(
    context: Context,
    who: CurrentUser,
    device: Annotated[str | None, Query(description="Only this device (id or ident)")] = None,
    domain: Annotated[str | None, Query(description="Only this domain (name or id)")] = None,
) -> StreamingResponse:
    subscription = Subscription(who)
    if device is not None:
        subscription.device_id = (await visible_device(context, who, device)).id
    if domain is not None:
        found = await Domains(context.database).find(domain)
        if not who.sees(found.id):
            raise EntityNotFoundError(f"no domain named {domain!r}")
        subscription.domain_id = found.id
    hub = context.live
    hub.subscribe(subscription)

    async def stream() -> AsyncIterator[str]:
        # A browser that left is noticed when a write fails (a keep-alive goes out every
        # 15 s at the latest): the generator is closed, and the stream unsubscribed.
        try:
            async for text in subscription.stream():
                yield text
        finally:
            hub.unsubscribe(subscription)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


class LiveStats(Shape):
    streams: int
    skipped_late: int
    skipped_slow: int


@router.get("/events/stats", response_model=LiveStats)
async def live_stats(context: Context, _: Admin) -> dict[str, int]:
    """This web process's live streams open, and the events they skipped: bus messages
    read too late (older than ``web.live_lag_limit``) and events a slow browser had no
    room for."""
    hub = context.live
    return {"streams": hub.streams, "skipped_late": hub.skipped_late,
            "skipped_slow": hub.skipped_slow}  # fmt: skip
