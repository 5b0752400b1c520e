"""``m2m sync``: an edge site's link to the cloud platform."""

from __future__ import annotations

import sys

import click

from m2m.cli.app import PROBLEMS_FOUND, App, pass_app
from m2m.cli.output import json_option, print_rows
from m2m.sync.status import uplink_report


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
    if app.config.sync.upstream is None:
        raise click.ClickException("this platform is no edge: sync.upstream is not set")
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
