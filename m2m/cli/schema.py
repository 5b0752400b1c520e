"""``m2m schema``: create and upgrade the keyspace's tables."""

from __future__ import annotations

import sys

import click

from m2m.cli.app import App, pass_app
from m2m.schema import apply_schema, schema_status


@click.group()
def schema() -> None:
    """The versioned CQL schema of the configured keyspace."""


@schema.command()
@pass_app
def apply(app: App) -> None:
    """Create the keyspace if needed and apply the schema versions it lacks."""
    applied = apply_schema(app.config.cassandra)
    keyspace = app.config.cassandra.keyspace
    if applied:
        for migration in applied:
            click.echo(f"{keyspace}: applied version {migration.version} ({migration.name})")
    else:
        click.echo(f"{keyspace}: schema is up to date")


@schema.command()
@pass_app
def status(app: App) -> None:
    """Show the applied version and whether the nodes agree; exit 1 if behind or split."""
    state = schema_status(app.config.cassandra)
    applied = "none" if state.applied_version is None else str(state.applied_version)
    click.echo(f"keyspace {state.keyspace}: version {applied} (latest {state.latest_version})")
    for version, nodes in state.nodes_by_schema.items():
        click.echo(f"schema {version}: {', '.join(sorted(nodes))}")
    click.echo("nodes agree" if state.nodes_agree else "nodes DISAGREE on the schema")
    if state.applied_version != state.latest_version or not state.nodes_agree:
        sys.exit(1)
