"""``GET /api/v1/events``: what real ALIP devices do, streamed live to the right people.

Streams are read over real HTTP while devices speak ALIP over TCP to ``m2m serve``. That a
stream did not get an event is asserted without waiting for it not to come: the live hub
offers each event to every open stream at once, so an event a stream should not have had
would have reached it before a marker made after everything else.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from m2m.receivers.alip.client import ALIPClient
from m2m.registry.device import device_id_for
from tests.conftest import (
    WAIT,
    Platform,
    WebUser,
    eventually,
    make_web_user,
    start_platform,
)
from tests.web_http import API

RECEIVER_LOST_WITHIN = 60.0
"""The issue's bound: a dead receiver's devices stop showing connected within a minute."""


@dataclass(frozen=True)
class Event:
    kind: str
    data: dict[str, Any]


class EventStream:
    """An open event stream, read in the background; waits take events in arrival order."""

    def __init__(self, response: httpx.Response) -> None:
        self.received: list[Event] = []
        self._arrival = asyncio.Event()
        self._reading = asyncio.create_task(self._read(response))

    async def _read(self, response: httpx.Response) -> None:
        kind, data = "message", ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                kind = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data += line.removeprefix("data:").strip()
            elif not line and data:
                self.received.append(Event(kind, json.loads(data)))
                self._arrival.set()
                kind, data = "message", ""

    async def take(
        self, kind: str, accept: Callable[[dict[str, Any]], bool], timeout: float = WAIT
    ) -> dict[str, Any]:
        """The data of the first event of ``kind`` that ``accept`` takes, waiting for it."""
        taken = 0
        async with asyncio.timeout(timeout):
            while True:
                for event in self.received[taken:]:
                    if event.kind == kind and accept(event.data):
                        return event.data
                taken = len(self.received)
                if self._reading.done():
                    self._reading.result()
                    raise AssertionError(f"the stream ended before a {kind} event")
                self._arrival.clear()
                await self._arrival.wait()

    def about(self, device_id: str) -> list[Event]:
        return [event for event in self.received if event.data.get("device_id") == device_id]

    async def close(self) -> None:
        self._reading.cancel()
        await asyncio.gather(self._reading, return_exceptions=True)


def of(device_id: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    """Accepts the data of an event of ``device_id`` that has all of ``fields``."""
    return lambda data: (
        data.get("device_id") == device_id
        and all(data.get(name) == value for name, value in fields.items())
    )


def is_server_record(device_id: str, kind: str) -> Callable[[dict[str, Any]], bool]:
    """Accepts a ``record`` event of the ``_server`` record ``kind`` of ``device_id``."""

    def accept(data: dict[str, Any]) -> bool:
        record = data.get("data")
        return (
            of(device_id, type="_server")(data)
            and isinstance(record, dict)
            and record.get("type") == kind
        )

    return accept


@dataclass(frozen=True)
class Scene:
    """A domain of its own with a user and a device, seen by an admin too."""

    domain: str
    user: WebUser
    device: str
    """The ident of that domain's device."""


@pytest.fixture(scope="module")
def scene(config_file: Path, platform: Platform, web_admin: WebUser) -> Scene:
    domain = f"events-{uuid.uuid4().hex[:8]}"
    user = make_web_user(config_file, domain=domain)
    ident = f"{domain}-device"
    body = {"ident": ident, "domain": domain}
    with httpx.Client(base_url=platform.web_url, headers=web_admin.headers) as http:
        assert http.post(f"{API}/devices", json=body).status_code == 201
    return Scene(domain, user, ident)


class OpenStream(Protocol):
    async def __call__(self, who: WebUser, **filters: str) -> EventStream: ...


@pytest.fixture
async def streams(http: httpx.AsyncClient) -> AsyncIterator[OpenStream]:
    """Opens event streams as ``who`` asks for them; all closed after the test."""
    async with AsyncExitStack() as stack:

        async def open_stream(who: WebUser, **filters: str) -> EventStream:
            return await stack.enter_async_context(_stream(http, who, filters))

        yield open_stream


@asynccontextmanager
async def _stream(
    http: httpx.AsyncClient, who: WebUser, params: dict[str, str]
) -> AsyncIterator[EventStream]:
    request = http.stream("GET", f"{API}/events", params=params, headers=who.headers)
    async with request as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        # The subscription is made before the answer starts: from here, nothing is missed.
        stream = EventStream(response)
        try:
            yield stream
        finally:
            await stream.close()


def new_ident() -> str:
    return f"alip:{uuid.uuid4().hex[:20]}"


async def create(http: httpx.AsyncClient, who: WebUser, ident: str) -> str:
    response = await http.post(f"{API}/devices", json={"ident": ident}, headers=who.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_a_devices_life_is_streamed_to_those_who_may_see_it(
    http: httpx.AsyncClient,
    streams: OpenStream,
    platform: Platform,
    web_admin: WebUser,
    scene: Scene,
) -> None:
    ident, other = new_ident(), new_ident()
    device_id = await create(http, web_admin, ident)
    other_id = await create(http, web_admin, other)
    everything = await streams(web_admin)
    only_it = await streams(web_admin, device=ident)
    only_other = await streams(web_admin, device=other_id)
    only_scene = await streams(web_admin, domain=scene.domain)
    scene_user = await streams(scene.user)
    admin = web_admin.headers

    async with await ALIPClient.connect("127.0.0.1", platform.alip_port) as device:
        assert await device.identify(ident) is True
        assert await device.receive_line() == "S GA"
        connected = await only_it.take("connected", of(device_id))
        assert connected["source"] == device.local_address
        assert connected["receiver"] and connected["since"]
        await everything.take("connected", of(device_id, source=device.local_address))

        device.send_line("D T 21.5")
        record = await only_it.take("record", of(device_id, type="sen:temp"))
        assert record["data"] == "21.5" and record["time"] and record["uuid"]

        settings = f"{API}/devices/{ident}/settings"
        put = await http.put(f"{settings}/period", json={"value": "60"}, headers=admin)
        assert put.status_code == 200 and put.json()["pushed"] is True
        await only_it.take("settings_changed", of(device_id))
        assert await device.receive_line(WAIT) == "S S period 60"
        device.send_line("S A period 60")
        acked = await only_it.take("setting_acked", of(device_id, name="period"))
        assert (acked["value"], acked["acknowledged"]) == ("60", True)

        commands = f"{API}/devices/{device_id}/commands"
        posted = await http.post(commands, json={"text": "reboot"}, headers=admin)
        assert posted.status_code == 201
        await only_it.take("commands_changed", of(device_id))
        number = (await device.receive_line(WAIT, prefix="C ")).split(" ")[1]
        device.send_line(f"C A {number}")
        await only_it.take("command_answered", of(device_id, command_id=posted.json()["id"]))

        device.send_line("QUIT")
        assert await device.receive_line() == "QUIT bye !"
    gone = await only_it.take("disconnected", of(device_id))
    assert gone["source"] == device.local_address
    await everything.take("disconnected", of(device_id))
    await only_it.take("record", is_server_record(device_id, "device_disconnected"))

    assert {event.data.get("device_id") for event in only_it.received} == {device_id}
    put = await http.put(
        f"{API}/devices/{other}/settings/marker", json={"value": "1"}, headers=admin
    )
    assert put.status_code == 200
    await only_other.take("settings_changed", of(other_id))
    put = await http.put(
        f"{API}/devices/{scene.device}/settings/marker",
        json={"value": "1"},
        headers=scene.user.headers,
    )
    assert put.status_code == 200
    scene_id = device_id_for(scene.device)
    await scene_user.take("settings_changed", of(scene_id))
    await only_scene.take("settings_changed", of(scene_id))
    await everything.take("settings_changed", of(scene_id))
    for stream in (only_other, only_scene, scene_user):
        assert stream.about(device_id) == []
    assert {event.data.get("device_id") for event in only_scene.received} <= {scene_id, None}
    assert {event.data.get("device_id") for event in only_other.received} <= {other_id, None}


async def test_streams_of_what_a_user_may_not_see_are_refused(
    http: httpx.AsyncClient, web_admin: WebUser, scene: Scene
) -> None:
    hidden = new_ident()
    await create(http, web_admin, hidden)  # in the default domain
    for params in (
        {"device": hidden},
        {"device": device_id_for(hidden)},
        {"domain": "default"},
        {"device": new_ident()},
        {"domain": f"nowhere-{uuid.uuid4().hex}"},
    ):
        response = await http.get(f"{API}/events", params=params, headers=scene.user.headers)
        assert response.status_code == 404, (params, response.text)
        assert set(response.json()) == {"error"}


async def test_a_dead_receivers_devices_stop_showing_connected(
    http: httpx.AsyncClient,
    streams: OpenStream,
    config_file: Path,
    tmp_path: Path,
    platform: Platform,
    web_admin: WebUser,
) -> None:
    """The platform's web service watches a second platform's receivers die unannounced."""
    ident = new_ident()
    device_id = device_id_for(ident)
    everything = await streams(web_admin)
    receivers_only = await asyncio.to_thread(start_platform, config_file, tmp_path, only="alip")
    try:
        async with await ALIPClient.connect("127.0.0.1", receivers_only.alip_port) as device:
            assert await device.identify(ident) is True
            receiver = (await everything.take("connected", of(device_id)))["receiver"]

            async def row() -> dict[str, Any]:
                response = await http.get(
                    f"{API}/devices", params={"ident": ident}, headers=web_admin.headers
                )
                (found,) = response.json()["devices"]
                return dict(found)

            await eventually(row, lambda found: found["connected"], "connected in the list")
            receivers_only.process.kill()
            receivers_only.process.wait(timeout=WAIT)
            await eventually(
                row,
                lambda found: not found["connected"],
                "disconnected once its receiver died",
                RECEIVER_LOST_WITHIN,
            )
            lost = await everything.take(
                "receiver_lost", lambda data: data["receiver"] == receiver, RECEIVER_LOST_WITHIN
            )
            assert "device_id" not in lost
            detail = await http.get(f"{API}/devices/{ident}", headers=web_admin.headers)
            assert detail.json()["connected"] is False
            assert not any(event.kind == "disconnected" for event in everything.about(device_id)), (
                "a killed receiver cannot have said so: the web service must have found out"
            )
    finally:
        if receivers_only.process.poll() is None:
            receivers_only.process.kill()
            receivers_only.process.wait(timeout=WAIT)
