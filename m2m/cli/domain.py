"""``m2m domain``: the groups devices and users belong to (new devices join ``default``)."""

from __future__ import annotations

import click

from m2m.cassandra import Database, run_with_database
from m2m.cli.app import App, OneLineErrors, pass_app
from m2m.cli.named import add_rename_and_rm
from m2m.cli.output import Row, json_option, print_rows
from m2m.registry.domain import Domain, Domains


@click.group(cls=OneLineErrors)
def domain() -> None:
    """Domains: groups of devices and users (NAME is a name or an id)."""


@domain.command("create")
@click.argument("name")
@pass_app
def create(app: App, name: str) -> None:
    """Create a domain; print its id."""

    async def work(database: Database) -> str:
        return (await Domains(database).create(name)).id

    click.echo(run_with_database(app.config.cassandra, work))


@domain.command("ls")
@json_option
@pass_app
def list_domains(app: App, as_json: bool) -> None:
    """List domains: name, id, and how many devices and users each has."""

    async def row(domain: Domain) -> Row:
        return {
            "name": await domain.name(),
            "id": domain.id,
            "devices": len(await domain.device_ids()),
            "users": len(await domain.user_ids()),
        }

    async def work(database: Database) -> list[Row]:
        return [await row(domain) for domain in await Domains(database).all()]

    print_rows(run_with_database(app.config.cassandra, work), as_json)


add_rename_and_rm(domain, Domains)
