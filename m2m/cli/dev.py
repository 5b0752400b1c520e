"""``m2m dev``: everything a developer needs running, in one command."""

from __future__ import annotations

import click

from m2m.cli.app import App, pass_app
from m2m.schema import apply_schema
from m2m.stack.stack import LocalStack


@click.command()
@pass_app
def dev(app: App) -> None:
    """Start the local stack and apply the schema."""
    local = LocalStack(app.config.stack)
    for status in local.up():
        click.echo(f"{status.name:<11} {status.endpoints}")
    for migration in apply_schema(app.config.cassandra):
        click.echo(f"schema: applied version {migration.version} ({migration.name})")
    click.echo(f"keyspace {app.config.cassandra.keyspace} ready; state in {local.state_dir}")
