"""``m2m sync``: an edge site's link to the cloud platform."""

from __future__ import annotations

import asyncio
import json
import sys

import click

from m2m.bus.publisher import Publisher
from m2m.cassandra import Database, run_with_database
from m2m.cli.app import PROBLEMS_FOUND, App, pass_app
from m2m.cli.output import json_option, print_rows
from m2m.cli.push import mute_bus_libraries
from m2m.sync.check import CLI_CHECKS, CheckFailed, CheckReport, SiteChecker
from m2m.sync.registry_link import SiteLink
from m2m.sync.status import uplink_report

CONNECT_TIMEOUT = 10.0
"""Seconds the cloud's nsqd has to accept the connection."""


@click.group()
def sync() -> None:
    """An edge site's link to the cloud platform (the sync service)."""


@sync.command()
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """The uplink: whether the cloud's nsqd is connected, the records waiting to go up
    and how long the oldest has waited. Exit 3 when it is down or the sync service is not
    running (its status older than three sync.status_interval)."""
    _site_only(app)
    report = uplink_report(app.config)
    print_rows(
        [
            {
                "upstream": report.upstream,
                "state": report.state,
                "backlog": report.backlog if report.backlog is not None else "no sync channel yet",
                "oldest_unsent_s": report.oldest_unsent,
                "forwarded": report.forwarded,
            }
        ],
        as_json,
    )
    if not report.ok:
        sys.exit(PROBLEMS_FOUND)


@sync.command()
@click.option("--repair", is_flag=True, help="Merge what differs, the later change winning.")
@json_option
@pass_app
def check(app: App, repair: bool, as_json: bool) -> None:
    """Compare this site's devices with the cloud's copy of them, by hashes (a Merkle
    tree over registry nodes, values and write times), and list the devices and nodes
    that differ. Exit 3 when some differ and were not repaired."""
    _site_only(app)
    mute_bus_libraries()
    report = run_with_database(app.config.cassandra, lambda database: _check(app, database, repair))
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        state = "in sync" if report.in_sync else f"{len(report.differing_devices)} device(s) differ"
        click.echo(
            f"{report.devices} device(s) here, {report.cloud_devices} in the cloud: {state}"
            f" ({report.seconds:.2f} s)"
        )
        for path in report.differing_nodes:
            click.echo(f"  differs: {path}")
        if report.repaired:
            click.echo("repaired: the later change of each value kept on both sides")
    if not report.in_sync and not report.repaired:
        sys.exit(PROBLEMS_FOUND)


async def _check(app: App, database: Database, repair: bool) -> CheckReport:
    sync = app.config.sync
    assert sync.upstream is not None
    upstream, local = Publisher(sync.upstream), Publisher(app.config.nsq)
    upstream.start()
    local.start()
    try:
        waited = 0.0
        while not upstream.connected:
            if waited >= CONNECT_TIMEOUT:
                cloud = ", ".join(sync.upstream.nsqd_tcp_addresses)
                raise click.ClickException(f"cannot reach the cloud's nsqd at {cloud}")
            await asyncio.sleep(0.1)
            waited += 0.1
        link = SiteLink(database, sync, upstream, local)
        checker = SiteChecker(database, sync, link, CLI_CHECKS)
        try:
            return await checker.check(repair)
        except CheckFailed as exc:
            raise click.ClickException(f"{exc} (is the cloud's sync service running?)") from exc
    finally:
        await upstream.flush(CONNECT_TIMEOUT)
        upstream.close()
        local.close()


def _site_only(app: App) -> None:
    if app.config.sync.upstream is None:
        raise click.ClickException("this platform is no edge: sync.upstream is not set")
