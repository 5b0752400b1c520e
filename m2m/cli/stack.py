"""``m2m stack``: the local Cassandra and NSQ stack for development and tests."""

from __future__ import annotations

import sys

import click

from m2m.cli.app import App, pass_app
from m2m.stack.stack import LocalStack, ServiceStatus


def _print_table(statuses: list[ServiceStatus]) -> None:
    for status in statuses:
        state = "healthy" if status.healthy else ("unhealthy" if status.pid else "stopped")
        pid = str(status.pid) if status.pid else "-"
        click.echo(f"{status.name:<11} {state:<9} pid {pid:<8} {status.endpoints}")
        if not status.healthy:
            click.echo(f"{'':<11} log: {status.log}")


@click.group()
def stack() -> None:
    """Run a real Cassandra and NSQ on this machine (provisioned and cached per user)."""


@stack.command()
@click.option("--nodes", default=1, show_default=True, help="Cassandra nodes (127.0.0.N).")
@pass_app
def up(app: App, nodes: int) -> None:
    """Provision and start the stack; wait until every service answers. Safe to re-run."""
    statuses = LocalStack(app.config.stack).up(nodes)
    _print_table(statuses)
    click.echo(f"state: {LocalStack(app.config.stack).state_dir}")


@stack.command()
@pass_app
def down(app: App) -> None:
    """Stop exactly the processes the stack started."""
    stopped = LocalStack(app.config.stack).down()
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack.command()
@pass_app
def status(app: App) -> None:
    """Show each service; exit 0 only when all of them are healthy."""
    statuses = LocalStack(app.config.stack).status()
    _print_table(statuses)
    if not all(s.healthy for s in statuses):
        sys.exit(1)


@stack.command()
@click.argument("name")
@pass_app
def start(app: App, name: str) -> None:
    """Start one service (e.g. cassandra2, nsqd) and wait until it answers."""
    _print_table([LocalStack(app.config.stack).start(name)])


@stack.command()
@click.argument("name")
@click.option("--kill", is_flag=True, help="SIGKILL at once, as a crash would.")
@pass_app
def stop(app: App, name: str, kill: bool) -> None:
    """Stop one service (e.g. cassandra2, nsqd)."""
    stopped = LocalStack(app.config.stack).stop(name, kill=kill)
    click.echo(f"{name}: {'stopped' if stopped else 'was not running'}")
