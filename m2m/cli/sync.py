"""``m2m sync``: an edge site's link to the cloud platform."""

from __future__ import annotations

import sys
import time

import click

from m2m.cassandra import run_with_database
from m2m.cli.app import PROBLEMS_FOUND, App, pass_app
from m2m.cli.output import json_option, print_rows
from m2m.sync.status import UplinkStatus, backlog, read_status


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
    config = app.config.sync
    if config.upstream is None:
        raise click.ClickException("this platform is no edge: sync.upstream is not set")
    found = run_with_database(app.config.cassandra, read_status)
    waiting = backlog(app.config.nsq)
    now = time.time()
    state = _state(found, config.status_interval, now)
    oldest = found.oldest_waiting if found is not None and waiting else None
    print_rows(
        [
            {
                "upstream": ", ".join(config.upstream.nsqd_tcp_addresses),
                "state": state,
                "backlog": waiting if waiting is not None else "no sync channel yet",
                "oldest_unsent_s": None if oldest is None else round(now - oldest, 1),
                "forwarded": found.forwarded if found is not None else 0,
            }
        ],
        as_json,
    )
    if state != "connected":
        sys.exit(PROBLEMS_FOUND)


def _state(found: UplinkStatus | None, interval: float, now: float) -> str:
    if found is None:
        return "sync service never ran"
    if found.is_stale(interval, now):
        return f"sync service not running (last seen {now - found.updated:.0f} s ago)"
    return "connected" if found.connected else "disconnected"
