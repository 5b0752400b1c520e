"""Devices, domains and users on the registry, against the real Cassandra."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime

import pytest

from m2m.cassandra import Database
from m2m.registry.device import (
    DefaultDevice,
    Device,
    Devices,
    UnknownCommandError,
    add_route,
    device_id_for,
    remove_route,
)
from m2m.registry.domain import Domains
from m2m.registry.named import EntityExistsError, EntityInUseError, EntityNotFoundError
from m2m.registry.node import RegistryNode
from m2m.registry.paths import InvalidPathError
from m2m.registry.routes import ChannelRouter, InvalidRouteError, Route
from m2m.registry.user import Users


def _ident() -> str:
    return f"imei:{uuid.uuid4().int % 10**15:015d}"


@pytest.fixture
async def device(database: Database) -> Device:
    return await Devices(database).create(_ident())


def test_the_id_is_the_first_16_bytes_of_the_sha1_of_the_ident() -> None:
    digest = hashlib.sha1(b"imei:356938035643809").digest()
    assert device_id_for("imei:356938035643809") == str(uuid.UUID(bytes=digest[:16]))


async def test_a_created_device_is_found_by_ident_and_by_id(database: Database) -> None:
    devices = Devices(database)
    ident = _ident()
    created = await devices.create(ident)
    assert created.id == device_id_for(ident)
    assert await devices.by_ident(ident) == created
    assert await devices.by_id(created.id) == created
    assert await devices.find(ident) == created
    assert await devices.find(created.id.upper()) == created
    assert await created.ident() == ident
    assert await RegistryNode(database, f"/device/by-ident/{ident}/").value("id") == created.id
    assert "settings" in await created.node.children_names()
    with pytest.raises(EntityExistsError):
        await devices.create(ident)
    assert await devices.get_or_create(ident) == created


async def test_new_devices_join_the_default_domain(database: Database, device: Device) -> None:
    default = await Domains(database).find("default")
    assert await device.domain_id() == default.id
    assert device.id in await default.device_ids()


async def test_unknown_devices_and_bad_idents(database: Database) -> None:
    devices = Devices(database)
    assert await devices.by_ident(_ident()) is None
    assert await devices.by_id(str(uuid.uuid4())) is None
    assert await devices.by_id("not-a-uuid") is None
    with pytest.raises(EntityNotFoundError):
        await devices.find("imei:000")
    with pytest.raises(EntityNotFoundError, match="no device with ident or id '/device/x/'"):
        await devices.find("/device/x/")  # a path is neither
    with pytest.raises(InvalidPathError):
        await devices.create("bad/ident")


async def test_a_setting_is_pending_until_the_device_acknowledges_its_value(
    device: Device,
) -> None:
    await device.define_setting("period", "60")
    assert await device.settings() == {"period": "60"}
    assert await device.settings_to_send() == {"period": "60"}
    assert await device.settings_ack_times() == {}
    assert await device.ack_setting("period", "30") is False  # not the pending value
    assert await device.settings() == {"period": "30"}
    assert await device.settings_to_send() == {"period": "60"}
    before = int(time.time())
    assert await device.ack_setting("period", "60") is True
    assert await device.settings_to_send() == {}
    assert before <= (await device.settings_ack_times())["period"] <= int(time.time())
    await device.define_setting("period", "90")  # redefining clears the ack time
    assert await device.settings_ack_times() == {}
    await device.delete_setting("period")
    assert await device.settings() == {} and await device.settings_to_send() == {}


async def test_commands_until_acknowledged_with_their_response(device: Device) -> None:
    first = await device.add_command("reboot")
    second = await device.add_command("upload logs")
    assert await device.commands() == {first: "reboot", second: "upload logs"}
    await device.ack_command(first, "rebooting\nbye")
    assert await device.commands() == {second: "upload logs"}
    assert await device.command_responses() == {first: "rebooting\nbye"}
    await device.delete_command(second)
    assert await device.commands() == {}
    with pytest.raises(UnknownCommandError):
        await device.delete_command(second)
    await device.delete_command(first)  # answered: its response is forgotten
    assert await device.command_responses() == {}


async def test_status_values(device: Device) -> None:
    await device.set_status({"cap": "sen:loc", "fw": "1.2"})
    await device.set_status({"fw": "1.3"})
    assert await device.status() == {"cap": "sen:loc", "fw": "1.3"}


async def _router(device: Device) -> ChannelRouter:
    """The device's routes as its session reads them when it identifies."""
    state = await Devices(device.database).identify(await device.ident(), enroll=False)
    assert state is not None
    return state.router(cache_size=256)


async def test_the_device_rules_win_over_the_default_rules(
    database: Database, device: Device
) -> None:
    default = DefaultDevice(database)
    channel = f"sen:{uuid.uuid4().hex[:8]}"
    await add_route(default, Route.checked(0, f"^{channel}$", "default-first"))
    await add_route(device, Route.checked(20, "^sen:", "device-broad"))
    await add_route(device, Route.checked(10, "loc", "device-loc"))
    router = await _router(device)
    assert router.topic_for(channel) == "device-broad"  # any device rule before defaults
    assert router.topic_for("sen:loc") == "device-loc"  # lower priority number first
    assert router.topic_for("xsen:locx") == "device-loc"  # unanchored, as the original
    assert router.topic_for("echo") is None
    await remove_route(device, 20, "^sen:")
    await remove_route(device, 10, "loc")
    assert (await _router(device)).topic_for(channel) == "default-first"
    await remove_route(default, 0, f"^{channel}$")
    with pytest.raises(EntityNotFoundError):
        await remove_route(device, 10, "loc")


@pytest.mark.parametrize(
    ("priority", "regex", "topic"),
    [(1, "sen:(", "t"), (-1, "x", "t"), (10000, "x", "t"), (1, "x", ""), (1, "x", "a b")],
)
def test_bad_rules_are_refused_before_they_are_stored(
    priority: int, regex: str, topic: str
) -> None:
    with pytest.raises(InvalidRouteError):
        Route.checked(priority, regex, topic)


async def test_listed_sensors_keep_their_first_and_last_dates(device: Device) -> None:
    first = datetime(2026, 1, 1, tzinfo=UTC)
    last = datetime(2026, 2, 1, tzinfo=UTC)
    await device.note_listed_sensor("tank", first)
    await device.note_listed_sensor("tank", last)
    assert await device.listed_sensors() == {
        "tank": {
            "name": "tank",
            "date-create": str(int(first.timestamp())),
            "date-last": str(int(last.timestamp())),
        }
    }


async def test_deleting_a_device_removes_it_from_its_domain(database: Database) -> None:
    devices = Devices(database)
    ident = _ident()
    device = await devices.create(ident)
    await devices.delete(device)
    assert await devices.by_ident(ident) is None
    assert await devices.by_id(device.id) is None
    assert device.id not in await (await Domains(database).find("default")).device_ids()


async def test_domains_create_rename_move_and_delete(database: Database, device: Device) -> None:
    domains, devices = Domains(database), Devices(database)
    name = f"fleet-{uuid.uuid4().hex[:6]}"
    fleet = await domains.create(name)
    with pytest.raises(EntityExistsError):
        await domains.create(name)
    await devices.move(device, fleet)
    assert await fleet.device_ids() == [device.id]
    assert device.id not in await (await domains.find("default")).device_ids()
    await domains.rename(fleet, f"{name}-2")
    assert await domains.by_name(name) is None
    assert (await domains.find(f"{name}-2")).id == fleet.id
    assert await fleet.name() == f"{name}-2"
    with pytest.raises(EntityInUseError):
        await domains.delete(fleet)
    await devices.move(device, await domains.find("default"))
    await domains.delete(fleet)
    assert await domains.by_name(f"{name}-2") is None
    assert fleet.id not in [d.id for d in await domains.all()]


async def test_users_create_rename_move_and_delete(database: Database) -> None:
    users, domains = Users(database), Domains(database)
    name = f"ann-{uuid.uuid4().hex[:6]}"
    ann = await users.create(name)
    with pytest.raises(EntityExistsError):
        await users.create(name)
    fleet = await domains.create(f"ops-{uuid.uuid4().hex[:6]}")
    await users.move(ann, fleet)
    assert await fleet.user_ids() == [ann.id]
    assert await ann.domain_id() == fleet.id
    other = await domains.create(f"ops-{uuid.uuid4().hex[:6]}")
    await users.move(ann, other)
    assert await fleet.user_ids() == [] and await other.user_ids() == [ann.id]
    await users.rename(ann, f"{name}-b")
    assert (await users.find(f"{name}-b")).id == ann.id
    await users.delete(ann)
    assert await users.by_name(f"{name}-b") is None
    assert await other.user_ids() == []


async def test_a_device_deleted_then_created_again_starts_clean(database: Database) -> None:
    devices = Devices(database)
    ident = _ident()
    deleted = await devices.create(ident)
    await deleted.define_setting("period", "60")
    await deleted.add_command("reboot")
    await add_route(deleted, Route(1, "x", "topic-x"))
    await devices.delete(deleted)
    again = await devices.create(ident)
    assert again.id == deleted.id and await again.ident() == ident
    assert await again.settings() == {} and await again.settings_to_send() == {}
    assert await again.commands() == {} and await again.routes() == []
    assert await again.domain_id() == (await Domains(database).find("default")).id


async def test_the_default_domain_is_found_even_before_it_is_made(database: Database) -> None:
    domains = Domains(database)
    default = await domains.find("default")  # made now, or found if a device made it
    assert await domains.by_name("default") == default
    assert await domains.names([default.id, str(uuid.uuid4())]) == {default.id: "default"}
    with pytest.raises(EntityNotFoundError):
        await domains.find(f"nowhere-{uuid.uuid4().hex[:6]}")


# -- identification: what a device's session reads when it says who it is ----------------


async def test_identifying_an_unknown_device_without_enrollment_registers_nothing(
    database: Database,
) -> None:
    devices = Devices(database)
    ident = _ident()
    assert await devices.identify(ident, enroll=False) is None
    assert await devices.by_ident(ident) is None
    assert not await Device(database, device_id_for(ident)).node.exists()


async def test_identifying_an_unknown_device_with_enrollment_registers_it_whole(
    database: Database,
) -> None:
    devices = Devices(database)
    ident = _ident()
    state = await devices.identify(ident, enroll=True)
    assert state is not None
    device = state.device
    assert device.id == device_id_for(ident)
    assert (state.settings, state.settings_to_send, state.commands, state.status) == ({},) * 4
    assert state.routes == []
    assert await devices.by_ident(ident) == device
    assert await device.ident() == ident
    default = await Domains(database).find("default")
    assert await device.domain_id() == default.id
    assert device.id in await default.device_ids()
    assert set(await device.node.children_names()) >= {"settings", "commands", "status"}
    assert device.id in await RegistryNode(database, "/device/").children_names()


async def test_identifying_a_known_device_reads_what_its_greeting_needs(
    database: Database, device: Device
) -> None:
    await device.define_setting("period", "60")
    await device.ack_setting("period", "60")
    await device.define_setting("mode", "eco")
    command_id = await device.add_command("reboot")
    await device.set_status({"cap": "sen:loc"})
    await add_route(device, Route(1, "^sen:", "own-topic"))
    await add_route(DefaultDevice(database), Route(9998, "^zz-identify:", "default-topic"))
    try:
        state = await Devices(database).identify(await device.ident(), enroll=False)
        assert state is not None
        assert state.device == device
        assert state.settings == {"period": "60", "mode": "eco"}
        assert state.settings_to_send == {"mode": "eco"}
        assert state.commands == {command_id: "reboot"}
        assert state.status == {"cap": "sen:loc"}
        assert state.routes == [Route(1, "^sen:", "own-topic")]
        assert Route(9998, "^zz-identify:", "default-topic") in state.default_routes
    finally:
        await remove_route(DefaultDevice(database), 9998, "^zz-identify:")


async def test_a_device_registered_under_another_id_is_identified_as_that_one(
    database: Database,
) -> None:
    """A registry filled by other means may map an ident to an id it does not derive to."""
    ident = _ident()
    device = Device(database, str(uuid.uuid4()))
    await device.node.create()
    await device.node.set_value("ident", ident)
    await device.node.child("settings").mark_created({"period": "30"})
    by_ident = RegistryNode(database, f"/device/by-ident/{ident}/")
    await by_ident.create()
    await by_ident.set_value("id", device.id)
    state = await Devices(database).identify(ident, enroll=True)
    assert state is not None
    assert state.device == device and state.settings == {"period": "30"}
    assert not await Device(database, device_id_for(ident)).node.exists()


async def test_a_deleted_device_enrolled_again_is_greeted_as_new(database: Database) -> None:
    devices = Devices(database)
    ident = _ident()
    deleted = await devices.create(ident)
    await deleted.define_setting("period", "60")
    await devices.delete(deleted)
    state = await devices.identify(ident, enroll=True)
    assert state is not None
    assert state.device.id == deleted.id
    assert state.settings == {} and state.settings_to_send == {}
    assert await devices.by_ident(ident) == state.device
