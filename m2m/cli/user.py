"""``m2m user``: people with a name, each a member of one domain."""

from __future__ import annotations

import click

from m2m.cassandra import Database, run_with_database
from m2m.cli.app import App, OneLineErrors, pass_app
from m2m.cli.named import add_rename_and_rm
from m2m.cli.output import Row, domain_option, json_option, print_rows
from m2m.registry.domain import Domains
from m2m.registry.user import Users


@click.group(cls=OneLineErrors)
def user() -> None:
    """Users: people, each a member of one domain (USER is a name or an id)."""


@user.command("create")
@click.argument("name")
@domain_option
@pass_app
def create(app: App, name: str, domain_name: str) -> None:
    """Create a user in a domain; print its id."""

    async def work(database: Database) -> str:
        member_of = await Domains(database).find(domain_name)
        users = Users(database)
        created = await users.create(name)
        await users.move(created, member_of)
        return created.id

    click.echo(run_with_database(app.config.cassandra, work))


@user.command("ls")
@json_option
@pass_app
def list_users(app: App, as_json: bool) -> None:
    """List users: name, id and domain."""

    async def work(database: Database) -> list[Row]:
        users = await Users(database).all()
        domain_ids = [await user.domain_id() for user in users]
        names = await Domains(database).names(filter(None, domain_ids))
        return [
            {
                "name": await user.name(),
                "id": user.id,
                "domain": names.get(domain_id, domain_id) if domain_id else None,
            }
            for user, domain_id in zip(users, domain_ids, strict=True)
        ]

    print_rows(run_with_database(app.config.cassandra, work), as_json)


@user.command("move")
@click.argument("user_name", metavar="USER")
@click.argument("domain_name", metavar="DOMAIN")
@pass_app
def move(app: App, user_name: str, domain_name: str) -> None:
    """Make USER a member of DOMAIN (and of no other)."""

    async def work(database: Database) -> None:
        users = Users(database)
        await users.move(await users.find(user_name), await Domains(database).find(domain_name))

    run_with_database(app.config.cassandra, work)


add_rename_and_rm(user, Users)
