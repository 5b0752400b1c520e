"""``m2m status``: whether the configured platform works, one line per check.

The checks themselves are :mod:`m2m.status`'s. How they print (CHECK, STATUS ``OK`` or
``FAIL``, DETAIL) and the exit status they give (3: a check ran and found a problem) are
shared with ``m2m stack status``, so both answer a person the same way.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from m2m.cli.app import PROBLEMS_FOUND, App, pass_app
from m2m.cli.output import json_option, print_rows
from m2m.status import Check, platform_checks


def print_checks(checks: Sequence[Check], as_json: bool) -> None:
    print_rows(
        [
            {"check": check.name, "status": "OK" if check.ok else "FAIL", "detail": check.detail}
            for check in checks
        ],
        as_json,
    )


def report(checks: Sequence[Check], as_json: bool) -> None:
    """Print the checks; exit 3 if one failed."""
    print_checks(checks, as_json)
    if not all(check.ok for check in checks):
        sys.exit(PROBLEMS_FOUND)


@click.command()
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Whether the configured platform works: Cassandra, NSQ, and the services here.

    Cassandra: its nodes are up and the keyspace has the latest schema. NSQ: every
    nsqlookupd and nsqd answers, and no topic or channel holds more than nsq.max_depth.
    Services: the receivers' and web's configured ports accept connections on this host,
    web's /healthz answers, and metrics.listen's /readyz says ready (when it is set).
    Exit 0 when every check is OK, 3 when one FAILs.
    """
    report(platform_checks(app.config), as_json)
