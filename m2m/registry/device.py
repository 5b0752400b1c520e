"""Devices on the registry: identity, settings, commands, status, routes, listed sensors.

Layout (storage.md): ``/device/by-ident/<ident>/`` holds ``id``; ``/device/<uuid>/`` holds
``ident`` and ``domain`` and the children below. A device's id is the first 16 bytes of
SHA-1(ident): every server computes the same one without asking anyone.

Settings: defining one sets ``settings/<name>`` and ``settings-to-send/<name>`` and clears
its ack time. The device acknowledging the pending value removes it from
``settings-to-send`` and stamps ``settings-ack-time/<name>`` (unix seconds); the value it
reports is stored in ``settings`` either way. Commands: ``commands/<uuid>`` = text until
acknowledged, the response in ``commands-response/<uuid>``.

A device's records are kept in the series ``dev-<uuid>``; those of a listed sensor also
note the sensor under ``listed-sensors/<name>/`` (see :mod:`device_series`).
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from m2m.cassandra import Database
from m2m.errors import InvalidInput, M2MError
from m2m.registry.device_series import SERIES_PREFIX
from m2m.registry.domain import DEFAULT_DOMAIN, Domain, Domains
from m2m.registry.named import EntityExistsError, EntityNotFoundError
from m2m.registry.node import NodeState, NodeStatus, RegistryNode, Write, load_nodes
from m2m.registry.paths import InvalidPathError, child_path
from m2m.registry.routes import ChannelRouter, Route, parse_routes

_GREETING_CHILDREN = ("settings", "settings-to-send", "commands", "status", "channel-translation")
"""What a device's session reads of it when it identifies."""

DEVICES = "/device/"
BY_IDENT = "/device/by-ident/"
DEFAULT_DEVICE = "/device/default/"

DEVICE_CHILDREN = (
    "settings",
    "settings-to-send",
    "settings-ack-time",
    "commands",
    "commands-response",
    "status",
    "server-settings",
    "server-settings-public",
    "channel-translation",
    "listed-sensors",
)


class InvalidSettingError(InvalidInput):
    """A setting the protocols could not carry to the device."""


_UNSAFE_SETTING_NAME = re.compile(r"[\s=\x00-\x1f\x7f]")
"""M2MP sends ``name=value`` and ALIP ``S S name value``: either would split such a name,
and a control character is no part of a name a device knows."""
_UNSAFE_SETTING_VALUE = re.compile(r"[\r\n\x00]")


def check_setting(name: str, value: str) -> None:
    """Refuse a setting that M2MP or ALIP could not carry to the device intact."""
    if not name or _UNSAFE_SETTING_NAME.search(name):
        raise InvalidSettingError(
            f"invalid setting name {name!r}: it must be non-empty, without spaces, '=' "
            "or control characters"
        )
    if _UNSAFE_SETTING_VALUE.search(value):
        raise InvalidSettingError(
            f"invalid value for setting {name!r}: it spans lines or holds a NUL character"
        )


class UnknownCommandError(M2MError):
    """No pending command of the device has that id."""


def device_id_for(ident: str) -> str:
    """The id every server derives from an ident: SHA-1's first 16 bytes as a UUID."""
    return str(uuid.UUID(bytes=hashlib.sha1(ident.encode()).digest()[:16]))


@dataclass(frozen=True)
class Device:
    database: Database
    id: str

    @functools.cached_property
    def node(self) -> RegistryNode:
        """Its path validated once: a session asks for its children at every step."""
        return RegistryNode(self.database, f"{DEVICES}{self.id}/")

    @property
    def series_id(self) -> str:
        """The time series the device's records are kept in."""
        return f"{SERIES_PREFIX}{self.id}"

    def _child(self, name: str) -> RegistryNode:
        return self.node.child(name)

    async def ident(self) -> str:
        return await self.node.value("ident") or ""

    async def domain_id(self) -> str | None:
        return await self.node.value("domain")

    # -- settings ----------------------------------------------------------------------

    async def settings(self) -> dict[str, str]:
        return await self._child("settings").values()

    async def settings_to_send(self) -> dict[str, str]:
        return await self._child("settings-to-send").values()

    async def settings_ack_times(self) -> dict[str, int]:
        stamps = await self._child("settings-ack-time").values()
        return {name: int(stamp) for name, stamp in stamps.items() if stamp.isdigit()}

    async def define_setting(self, name: str, value: str) -> None:
        """A setting the device must apply: pending until it acknowledges that value."""
        check_setting(name, value)
        await self._child("settings").set_value(name, value)
        await self._child("settings-to-send").set_value(name, value)
        await self._child("settings-ack-time").delete_value(name)

    async def delete_setting(self, name: str) -> None:
        await self._child("settings").delete_value(name)
        await self._child("settings-to-send").delete_value(name)
        await self._child("settings-ack-time").delete_value(name)

    async def ack_setting(self, name: str, value: str) -> bool:
        """The device applied ``name=value``; True if that was the pending value."""
        pending = await self._child("settings-to-send").value(name)
        acknowledged = pending == value
        if acknowledged:
            await self._child("settings-to-send").delete_value(name)
            await self._child("settings-ack-time").set_value(name, str(int(time.time())))
        await self._child("settings").set_value(name, value)
        return acknowledged

    # -- commands ----------------------------------------------------------------------

    async def commands(self) -> dict[str, str]:
        """Pending commands: id → text."""
        return await self._child("commands").values()

    async def command_responses(self) -> dict[str, str]:
        return await self._child("commands-response").values()

    async def add_command(self, text: str) -> str:
        command_id = str(uuid.uuid4())
        await self._child("commands").set_value(command_id, text)
        return command_id

    async def ack_command(self, command_id: str, response: str | None = None) -> None:
        """The device executed the command: no longer pending; its response kept (empty
        when it gave none, so the command still shows as answered)."""
        await self._child("commands-response").set_value(command_id, response or "")
        await self._child("commands").delete_value(command_id)

    async def delete_command(self, command_id: str) -> None:
        """Forget a command: cancelled if pending, its response dropped if answered."""
        pending = command_id in await self.commands()
        answered = command_id in await self.command_responses()
        if not pending and not answered:
            raise UnknownCommandError(f"no command {command_id!r}")
        await self._child("commands").delete_value(command_id)
        await self._child("commands-response").delete_value(command_id)

    # -- status ------------------------------------------------------------------------

    async def status(self) -> dict[str, str]:
        return await self._child("status").values()

    async def set_status(self, values: Mapping[str, str]) -> None:
        await self._child("status").set_values(values)

    # -- channel translation -----------------------------------------------------------

    async def routes(self) -> list[Route]:
        return parse_routes(await self._child("channel-translation").values())

    # -- listed sensors ----------------------------------------------------------------

    async def note_listed_sensor(self, name: str, when: datetime) -> None:
        """Record that the device reported sensor ``name``, and when it last did."""
        sensor = self._child("listed-sensors").child(name)
        stamp = str(int(when.timestamp()))
        state = await sensor.load()
        values = {"name": name, "date-last": stamp}
        if "date-create" not in state.values:
            values["date-create"] = stamp
        if state.status is NodeStatus.CREATED:
            await sensor.set_values(values)
        else:
            await sensor.mark_created(values)

    async def listed_sensors(self) -> dict[str, dict[str, str]]:
        parent = self._child("listed-sensors")
        return {child.name: await child.values() for child in await parent.children()}


@dataclass(frozen=True)
class DefaultDevice:
    """``/device/default/``: rules that apply to every device."""

    database: Database

    @property
    def node(self) -> RegistryNode:
        return RegistryNode(self.database, DEFAULT_DEVICE)

    async def routes(self) -> list[Route]:
        return parse_routes(await self.node.child("channel-translation").values())


RouteOwner = Device | DefaultDevice


@dataclass(frozen=True)
class DeviceState:
    """What a device's session needs of the registry when the device says who it is."""

    device: Device
    settings: dict[str, str]
    settings_to_send: dict[str, str]
    commands: dict[str, str]
    """Pending: id → text."""
    status: dict[str, str]
    routes: list[Route]
    default_routes: list[Route]
    """``/device/default/``'s, tried after the device's own."""

    def router(self, cache_size: int) -> ChannelRouter:
        """The device's rules, then the default device's, ready to route channels; the
        topics of ``cache_size`` channels are remembered."""
        return ChannelRouter(self.routes, self.default_routes, cache_size)

    @classmethod
    def read(cls, device: Device, states: Mapping[str, NodeState]) -> DeviceState:
        """From the nodes ``Devices.identify`` read (``_GREETING_CHILDREN`` and the
        default device's rules)."""
        values = {name: states[device._child(name).path].values for name in _GREETING_CHILDREN}
        default = states[_default_routes_node(device.database).path].values
        return cls(
            device,
            settings=values["settings"],
            settings_to_send=values["settings-to-send"],
            commands=values["commands"],
            status=values["status"],
            routes=parse_routes(values["channel-translation"]),
            default_routes=parse_routes(default),
        )


def _default_routes_node(database: Database) -> RegistryNode:
    return DefaultDevice(database).node.child("channel-translation")


async def add_route(owner: RouteOwner, route: Route) -> None:
    node = owner.node.child("channel-translation")
    await node.check()
    await node.set_value(route.key, route.topic)


async def remove_route(owner: RouteOwner, priority: int, regex: str) -> None:
    key = Route(priority, regex, "").key
    node = owner.node.child("channel-translation")
    if key not in await node.values():
        raise EntityNotFoundError(f"no route with priority {priority} and regex {regex!r}")
    await node.delete_value(key)


class Devices:
    """Finding, creating and deleting devices."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def _by_ident(self, ident: str) -> RegistryNode:
        return RegistryNode(self.database, child_path(BY_IDENT, ident))

    async def by_ident(self, ident: str) -> Device | None:
        state = await self._by_ident(ident).load()
        device_id = state.values.get("id")
        if state.status is not NodeStatus.CREATED or not device_id:
            return None
        return Device(self.database, device_id)

    async def identify(self, ident: str, enroll: bool) -> DeviceState | None:
        """The device ``ident`` names and what its session needs of it; None if unknown
        (and, with ``enroll``, registered first: it is new).

        One request reads it all: the by-ident entry, the nodes of the device whose id the
        ident derives to (every platform's, see :func:`device_id_for`), the default
        device's rules and the default domain. A second is needed only for a device
        registered under another id. Raises :class:`InvalidPathError` for an ident no
        registry path can hold.
        """
        by_ident = self._by_ident(ident)
        device = Device(self.database, device_id_for(ident))
        domains = Domains(self.database)
        default_domain = domains.name_node(DEFAULT_DOMAIN)
        states = await load_nodes(
            self.database, [by_ident, default_domain, device.node, *self._greeting_nodes(device)]
        )
        registered = states[by_ident.path]
        registered_id = registered.values.get("id")
        if registered.exists and registered_id:
            if registered_id != device.id:
                device = Device(self.database, registered_id)
                states = await load_nodes(self.database, self._greeting_nodes(device))
            return DeviceState.read(device, states)
        if not enroll:
            return None
        domain = domains.named_by(states[default_domain.path])
        status = states[device.node.path].status
        await self._create(ident, domain, status)
        if status is NodeStatus.DELETED:  # purged: what was read of it is gone
            states = await load_nodes(self.database, self._greeting_nodes(device))
        return DeviceState.read(device, states)

    def _greeting_nodes(self, device: Device) -> list[RegistryNode]:
        return [
            *(device._child(name) for name in _GREETING_CHILDREN),
            _default_routes_node(self.database),
        ]

    async def by_id(self, device_id: str) -> Device | None:
        try:
            canonical = str(uuid.UUID(device_id))
        except ValueError:
            return None
        device = Device(self.database, canonical)
        return device if await device.node.exists() else None

    async def find(self, ident_or_id: str) -> Device:
        """A device named by ident or by id; EntityNotFoundError otherwise (a path, say)."""
        try:
            found = await self.by_ident(ident_or_id)
        except InvalidPathError:  # no ident at all: perhaps an id
            found = None
        found = found or await self.by_id(ident_or_id)
        if found is None:
            raise EntityNotFoundError(f"no device with ident or id {ident_or_id!r}")
        return found

    async def create(self, ident: str, domain: Domain | None = None) -> Device:
        """Register a device (in ``domain``, else ``default``); EntityExistsError if known."""
        if await self.by_ident(ident) is not None:
            raise EntityExistsError(f"a device with ident {ident!r} exists already")
        return await self._create(ident, domain)

    async def get_or_create(self, ident: str) -> Device:
        return await self.by_ident(ident) or await self._create(ident, None)

    async def _create(
        self, ident: str, domain: Domain | None, status: NodeStatus | None = None
    ) -> Device:
        """Register the device in one logged batch: all of it is written, or nothing.

        ``status`` is its node's, when the caller read it already.
        """
        device = Device(self.database, device_id_for(ident))
        if status is None:
            status = await device.node.status()
        if status is NodeStatus.DELETED:
            await self._purge(device)
        elif status is NodeStatus.CREATED:  # registered, its by-ident entry lost: it may
            await self._leave_domain(device)  # be a member of another domain
        domain = domain or await Domains(self.database).get_or_create(DEFAULT_DOMAIN)
        writes: list[Write] = [
            *RegistryNode(self.database, DEVICES).creation(),
            *RegistryNode(self.database, BY_IDENT).creation(),
            *device.node.creation({"ident": ident, "domain": domain.id}),
            *(write for child in DEVICE_CHILDREN for write in device._child(child).creation()),
            *domain.devices_node.values_write({device.id: ""}),
            *self._by_ident(ident).creation({"id": device.id}),
        ]
        await self.database.execute_atomically(writes)
        return device

    async def _purge(self, device: Device) -> None:
        """Remove a deleted device's nodes for good, before its ident is registered again.

        The same ident gives the same id: without this, the new device would get back the
        settings and commands of the one deleted. A soft delete unlists every node from its
        parent, so hard-deleting the device's node would not reach its children: each of
        them goes by name.
        """
        for node in (device.node, *(device._child(child) for child in DEVICE_CHILDREN)):
            await node.delete(hard=True)

    async def all(self) -> list[Device]:
        names = await RegistryNode(self.database, BY_IDENT).children_names()
        found = [await self.by_ident(name) for name in names]
        return [device for device in found if device is not None]

    async def move(self, device: Device, domain: Domain) -> None:
        """Make ``device`` a member of ``domain`` (and of no other)."""
        await self._leave_domain(device, unless=domain)
        await device.node.set_value("domain", domain.id)
        await domain.devices_node.set_value(device.id, "")

    async def _leave_domain(self, device: Device, unless: Domain | None = None) -> None:
        previous = await device.domain_id()
        if previous and (unless is None or previous != unless.id):
            old = await Domains(self.database).by_id(previous)
            if old is not None:
                await old.devices_node.delete_value(device.id)

    async def delete(self, device: Device) -> None:
        """Soft delete: out of its domain, its node and by-ident entry marked deleted."""
        ident = await device.ident()
        domain_id = await device.domain_id()
        if domain_id:
            domain = await Domains(self.database).by_id(domain_id)
            if domain is not None:
                await domain.devices_node.delete_value(device.id)
        if ident:
            await self._by_ident(ident).delete()
        await device.node.delete()
