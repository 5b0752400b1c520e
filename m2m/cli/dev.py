"""``m2m dev``: the whole platform on this machine, in the foreground."""

from __future__ import annotations

import click

from m2m.cli.app import App, pass_app
from m2m.cli.serve import serve_services
from m2m.schema import apply_schema
from m2m.services import SERVICE_NAMES
from m2m.stack.stack import LocalStack


@click.command()
@pass_app
def dev(app: App) -> None:
    """Start the local stack, apply the schema, then serve every receiver and worker."""
    config = app.config
    local = LocalStack(config.stack)
    for status in local.up():
        click.echo(f"{status.name:<11} {status.endpoints}")
    for migration in apply_schema(config.cassandra):
        click.echo(f"schema: applied version {migration.version} ({migration.name})")
    click.echo(f"keyspace {config.cassandra.keyspace} ready; state in {local.state_dir}")
    click.echo(
        f"M2MP devices: {config.receivers.m2mp.listen}, ALIP devices: "
        f"{config.receivers.alip.listen}; Ctrl-C stops the services (the stack keeps running)"
    )
    serve_services(app, SERVICE_NAMES)
