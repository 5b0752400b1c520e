"""``m2m device``: run the fleet from the command line.

A device is named by its ident or its id. What a connected device must act on (settings,
commands, a disconnection) is written to the registry first, then pushed to the receivers
at once (``push``), so it reaches the device within a second or two through whichever
receiver process holds it. Output is a table for people, JSON lines with ``--json``
(``output``); errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from m2m.bus import topics
from m2m.bus.push import PushNotSentError
from m2m.cassandra import Database, run_with_database
from m2m.cli.app import App, OneLineErrors, pass_app
from m2m.cli.output import (
    Row,
    domain_option,
    json_option,
    print_object,
    print_rows,
)
from m2m.cli.push import tell_receivers
from m2m.registry.device import (
    DefaultDevice,
    Device,
    Devices,
    RouteOwner,
    add_route,
    check_setting,
    remove_route,
)
from m2m.registry.device_views import (
    check_has_setting,
    command_rows,
    connection,
    device_rows,
    last_records,
    route_rows,
    setting_rows,
)
from m2m.registry.domain import Domains
from m2m.registry.routes import Route
from m2m.timeseries import TimeSeries

T = TypeVar("T")

DEFAULT_RULES = "default"
"""Names ``/device/default/`` in the route commands: rules for every device."""
# -- running a command on a device ------------------------------------------------------


def _run_on_device(app: App, name: str, work: Callable[[Device], Awaitable[T]]) -> T:
    """Find the device named by ident or id, then run ``work`` on it."""

    async def on_device(database: Database) -> T:
        return await work(await Devices(database).find(name))

    return run_with_database(app.config.cassandra, on_device)


def _run_and_push(
    app: App, name: str, call: str, change: Callable[[Device], Awaitable[Any]]
) -> None:
    """Apply ``change`` to the device in the registry, then tell the receivers ``call``."""

    async def change_then_push(device: Device) -> None:
        await change(device)
        try:
            await tell_receivers(app.config.nsq, device.id, call)
        except PushNotSentError as exc:
            raise PushNotSentError(
                f"saved, but not pushed to the device at once ({exc}); "
                "it gets the change when it next connects"
            ) from exc

    _run_on_device(app, name, change_then_push)


# -- what the commands show -------------------------------------------------------------


async def _status(device: Device) -> Row:
    """Who the device is, whether it is connected, and the status values it reported."""
    (row,) = await device_rows(device.database, [device])
    found = await connection(TimeSeries(device.database), device)
    del found["receiver"]
    return {**row, **found, "status": dict(sorted((await device.status()).items()))}


async def _route_owner(database: Database, name: str) -> RouteOwner:
    return DefaultDevice(database) if name == DEFAULT_RULES else await Devices(database).find(name)


# -- the commands -----------------------------------------------------------------------


@click.group(cls=OneLineErrors)
def device() -> None:
    """Devices: settings, commands, status, routes (DEV is an ident or an id)."""


@device.command("ls")
@click.option("--domain", "domain_name", metavar="NAME", help="Only the devices of this domain.")
@json_option
@pass_app
def list_devices(app: App, domain_name: str | None, as_json: bool) -> None:
    """List devices: id, ident and domain."""

    async def work(database: Database) -> list[Row]:
        if domain_name is None:
            members = await Devices(database).all()
        else:
            domain = await Domains(database).find(domain_name)
            members = [Device(database, device_id) for device_id in await domain.device_ids()]
        return await device_rows(database, members)

    print_rows(run_with_database(app.config.cassandra, work), as_json)


@device.command("show")
@click.argument("dev")
@json_option
@pass_app
def show(app: App, dev: str, as_json: bool) -> None:
    """Everything about a device.

    Its identity, connection, status, settings, pending commands and the last record of
    each type.
    """

    async def work(device: Device) -> Row:
        return {
            **await _status(device),
            "settings": await setting_rows(device),
            "commands": [
                {"id": command_id, "text": text}
                for command_id, text in sorted((await device.commands()).items())
            ],
            "last_records": await last_records(device),
        }

    print_object(_run_on_device(app, dev, work), as_json)


@device.command("status")
@click.argument("dev")
@json_option
@pass_app
def status(app: App, dev: str, as_json: bool) -> None:
    """Whether the device is connected (from its latest events) and the status it reported."""
    print_object(_run_on_device(app, dev, _status), as_json)


@device.command("disconnect")
@click.argument("dev")
@pass_app
def disconnect(app: App, dev: str) -> None:
    """Close the device's connection, whichever receiver holds it."""
    _run_on_device(
        app, dev, lambda device: tell_receivers(app.config.nsq, device.id, topics.DISCONNECT)
    )


@device.command("create")
@click.argument("ident")
@domain_option
@pass_app
def create(app: App, ident: str, domain_name: str) -> None:
    """Register a device before it first connects; print its id."""

    async def work(database: Database) -> str:
        domain = await Domains(database).find(domain_name)
        return (await Devices(database).create(ident, domain)).id

    click.echo(run_with_database(app.config.cassandra, work))


@device.command("rm")
@click.argument("dev")
@pass_app
def remove(app: App, dev: str) -> None:
    """Delete a device (soft: recoverable from the registry until a cleanup)."""

    async def work(device: Device) -> None:
        await Devices(device.database).delete(device)

    _run_on_device(app, dev, work)


@device.command("move")
@click.argument("dev")
@click.argument("domain_name", metavar="DOMAIN")
@pass_app
def move(app: App, dev: str, domain_name: str) -> None:
    """Make the device a member of DOMAIN (a name or an id)."""

    async def work(device: Device) -> None:
        domain = await Domains(device.database).find(domain_name)
        await Devices(device.database).move(device, domain)

    _run_on_device(app, dev, work)


# -- settings ---------------------------------------------------------------------------


@device.group()
def setting() -> None:
    """Settings the device applies: pending until it acknowledges them."""


@setting.command("set")
@click.argument("dev")
@click.argument("name")
@click.argument("value")
@pass_app
def set_setting(app: App, dev: str, name: str, value: str) -> None:
    """Set NAME to VALUE and push it to the device if it is connected."""
    check_setting(name, value)
    _run_and_push(app, dev, topics.SEND_SETTINGS, lambda device: device.define_setting(name, value))


@setting.command("rm")
@click.argument("dev")
@click.argument("name")
@pass_app
def remove_setting(app: App, dev: str, name: str) -> None:
    """Delete setting NAME."""

    async def work(device: Device) -> None:
        await check_has_setting(device, name, dev)
        await device.delete_setting(name)

    _run_and_push(app, dev, topics.SEND_SETTINGS, work)


@setting.command("ls")
@click.argument("dev")
@json_option
@pass_app
def list_settings(app: App, dev: str, as_json: bool) -> None:
    """List settings: name, value, pending (not yet acknowledged), acked_at (UTC)."""
    print_rows(_run_on_device(app, dev, setting_rows), as_json)


# -- commands ---------------------------------------------------------------------------


@device.group()
def command() -> None:
    """Commands the device executes once, and the responses it gave."""


@command.command("add")
@click.argument("dev")
@click.argument("text")
@pass_app
def add_command(app: App, dev: str, text: str) -> None:
    """Queue command TEXT, print its id and push it to the device if it is connected."""

    async def work(device: Device) -> None:
        click.echo(await device.add_command(text))

    _run_and_push(app, dev, topics.SEND_COMMANDS, work)


@command.command("ls")
@click.argument("dev")
@json_option
@pass_app
def list_commands(app: App, dev: str, as_json: bool) -> None:
    """List commands: id, text, pending, response (answered commands keep only it)."""
    print_rows(_run_on_device(app, dev, command_rows), as_json)


@command.command("rm")
@click.argument("dev")
@click.argument("command_id", metavar="ID")
@pass_app
def remove_command(app: App, dev: str, command_id: str) -> None:
    """Cancel a pending command, or forget an answered one's response."""
    _run_on_device(app, dev, lambda device: device.delete_command(command_id))


# -- routes -----------------------------------------------------------------------------


@device.group()
def route() -> None:
    """Channel translation: which NSQ topic a device's channel goes to.

    DEV may be "default": rules for every device, tried after the device's own.
    """


@route.command("add")
@click.argument("dev")
@click.argument("priority", type=int)
@click.argument("regex")
@click.argument("topic")
@pass_app
def add_device_route(app: App, dev: str, priority: int, regex: str, topic: str) -> None:
    """Send channels matching REGEX to TOPIC (lower PRIORITY, 0-9999, is tried first)."""
    checked = Route.checked(priority, regex, topic)

    async def work(database: Database) -> None:
        await add_route(await _route_owner(database, dev), checked)

    run_with_database(app.config.cassandra, work)


@route.command("ls")
@click.argument("dev")
@json_option
@pass_app
def list_routes(app: App, dev: str, as_json: bool) -> None:
    """List the rules of DEV (or "default") in the order they are tried."""

    async def work(database: Database) -> list[Route]:
        return await (await _route_owner(database, dev)).routes()

    print_rows(route_rows(run_with_database(app.config.cassandra, work)), as_json)


@route.command("rm")
@click.argument("dev")
@click.argument("priority", type=int)
@click.argument("regex")
@pass_app
def remove_device_route(app: App, dev: str, priority: int, regex: str) -> None:
    """Delete the rule with this PRIORITY and REGEX."""

    async def work(database: Database) -> None:
        await remove_route(await _route_owner(database, dev), priority, regex)

    run_with_database(app.config.cassandra, work)
