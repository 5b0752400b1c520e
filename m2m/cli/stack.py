"""``m2m stack``: the local Cassandra and NSQ stack for development and tests."""

from __future__ import annotations

import click

from m2m.cli.app import App, pass_app
from m2m.cli.output import json_option
from m2m.cli.status import print_checks, report
from m2m.stack.stack import LocalStack, ServiceStatus
from m2m.status import Check


def _checks(statuses: list[ServiceStatus]) -> list[Check]:
    """Each service as ``m2m status`` shows a check."""
    return [_check(status) for status in statuses]


def _check(status: ServiceStatus) -> Check:
    if status.healthy:
        detail = f"pid {status.pid} serving {status.endpoints}"
    elif status.pid:
        detail = f"pid {status.pid} does not answer on {status.endpoints}; log: {status.log}"
    else:
        detail = f"stopped; log: {status.log}"
    return Check(status.name, status.healthy, detail)


@click.group()
def stack() -> None:
    """Run a real Cassandra and NSQ on this machine (provisioned and cached per user)."""


@stack.command()
@click.option("--nodes", default=1, show_default=True, help="Cassandra nodes (127.0.0.N).")
@click.option(
    "--secure",
    is_flag=True,
    help="Cassandra with passwords, permissions and TLS, nsqd with TLS; the platform's "
    "role may use cassandra.keyspace only. Writes the platform's settings to "
    "<state>/m2m.yaml.",
)
@pass_app
def up(app: App, nodes: int, secure: bool) -> None:
    """Provision and start the stack; wait until every service answers. Safe to re-run."""
    local = LocalStack(app.config.stack)
    statuses = local.up(nodes, app.config.cassandra if secure else None)
    print_checks(_checks(statuses), as_json=False)
    click.echo(f"state: {local.state_dir}")
    if secure:
        click.echo(f"platform config: {local.state_dir / 'm2m.yaml'}")


@stack.command()
@pass_app
def down(app: App) -> None:
    """Stop exactly the processes the stack started."""
    stopped = LocalStack(app.config.stack).down()
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack.command()
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Show each service, as m2m status does; exit 3 unless all of them answer."""
    report(_checks(LocalStack(app.config.stack).status()), as_json)


@stack.command()
@click.argument("name")
@pass_app
def start(app: App, name: str) -> None:
    """Start one service (e.g. cassandra2, nsqd) and wait until it answers."""
    print_checks(_checks([LocalStack(app.config.stack).start(name)]), as_json=False)


@stack.command()
@click.argument("name")
@click.option("--kill", is_flag=True, help="SIGKILL at once, as a crash would.")
@pass_app
def stop(app: App, name: str, kill: bool) -> None:
    """Stop one service (e.g. cassandra2, nsqd)."""
    stopped = LocalStack(app.config.stack).stop(name, kill=kill)
    click.echo(f"{name}: {'stopped' if stopped else 'was not running'}")
