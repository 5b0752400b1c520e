"""``m2m dev``: the whole platform on this machine, in the foreground."""

from __future__ import annotations

import click

from m2m.cassandra import Database, run_with_database
from m2m.cli.app import App, pass_app
from m2m.cli.serve import serve_services
from m2m.http_server import url_of
from m2m.registry.domain import DEFAULT_DOMAIN, Domains
from m2m.registry.user import Users
from m2m.schema import apply_schema
from m2m.services import default_services
from m2m.stack.stack import LocalStack

FIRST_ADMIN = "admin"


async def _first_admin(database: Database) -> str | None:
    domain = await Domains(database).get_or_create(DEFAULT_DOMAIN)
    return await Users(database).first_admin(FIRST_ADMIN, domain)


@click.command()
@pass_app
def dev(app: App) -> None:
    """Start the local stack, apply the schema, then serve every service (web included).

    The first time, it makes an admin user and prints its password: the console's first
    login.
    """
    config = app.config
    local = LocalStack(config.stack)
    for status in local.up():
        click.echo(f"{status.name:<11} {status.endpoints}")
    for migration in apply_schema(config.cassandra):
        click.echo(f"schema: applied version {migration.version} ({migration.name})")
    click.echo(f"keyspace {config.cassandra.keyspace} ready; state in {local.state_dir}")
    password = run_with_database(config.cassandra, _first_admin)
    click.echo(f"console: {url_of(config.web.listen)}")
    if password is not None:
        click.echo(
            f"first login: user {FIRST_ADMIN}, password {password} "
            f"(shown once; change it with: m2m user passwd {FIRST_ADMIN})"
        )
    m2mp, alip = config.receivers.m2mp.endpoints, config.receivers.alip.endpoints
    click.echo(
        f"M2MP devices: {' and '.join(m2mp)}, ALIP devices: {' and '.join(alip)}; "
        "Ctrl-C stops the services (the stack keeps running)"
    )
    serve_services(app, default_services(app.config))
