"""``m2m user``: people, each a member of one domain; their passwords and API tokens."""

from __future__ import annotations

import sys

import click

from m2m.cassandra import Database, run_with_database
from m2m.cli.app import App, OneLineErrors, pass_app
from m2m.cli.named import add_rename_and_rm
from m2m.cli.output import Row, domain_option, json_option, print_rows
from m2m.registry.domain import Domains
from m2m.registry.tokens import Tokens
from m2m.registry.user import Users, user_rows
from m2m.text import unix_time_text


@click.group(cls=OneLineErrors)
def user() -> None:
    """Users: people, each a member of one domain (USER is a name or an id)."""


@user.command("create")
@click.argument("name")
@domain_option
@click.option("--admin", is_flag=True, help="Sees and changes every domain's devices.")
@pass_app
def create(app: App, name: str, domain_name: str, admin: bool) -> None:
    """Create a user in a domain; print its id."""

    async def work(database: Database) -> str:
        member_of = await Domains(database).find(domain_name)
        return (await Users(database).create_in(name, member_of, admin)).id

    click.echo(run_with_database(app.config.cassandra, work))


@user.command("ls")
@json_option
@pass_app
def list_users(app: App, as_json: bool) -> None:
    """List users: name, id, domain and whether each is an admin."""

    async def work(database: Database) -> list[Row]:
        rows = await user_rows(database, await Users(database).all())
        return [{key: row[key] for key in ("name", "id", "domain", "admin")} for row in rows]

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


@user.command("passwd")
@click.argument("user_name", metavar="USER")
@pass_app
def passwd(app: App, user_name: str) -> None:
    """Set USER's password, read from stdin (asked twice, unechoed, on a terminal)."""
    if sys.stdin.isatty():
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")

    async def work(database: Database) -> None:
        await (await Users(database).find(user_name)).set_password(password)

    run_with_database(app.config.cassandra, work)


@user.group("token", cls=OneLineErrors)
def token() -> None:
    """API tokens: what services send as ``Authorization: Bearer <token>``."""


@token.command("create")
@click.argument("user_name", metavar="USER")
@pass_app
def create_token(app: App, user_name: str) -> None:
    """Make a token acting as USER and print it (the only time it is shown)."""

    async def work(database: Database) -> str:
        return await Tokens(database).create(await Users(database).find(user_name))

    click.echo(run_with_database(app.config.cassandra, work))


@token.command("ls")
@click.argument("user_name", metavar="USER")
@json_option
@pass_app
def list_tokens(app: App, user_name: str, as_json: bool) -> None:
    """List USER's tokens: id and when each was made (never the secret)."""

    async def work(database: Database) -> list[Row]:
        found = await Tokens(database).of_user(await Users(database).find(user_name))
        return [{"id": info.id, "created": unix_time_text(info.created)} for info in found]

    print_rows(run_with_database(app.config.cassandra, work), as_json)


@token.command("rm")
@click.argument("user_name", metavar="USER")
@click.argument("token_id", metavar="TOKEN_ID")
@pass_app
def remove_token(app: App, user_name: str, token_id: str) -> None:
    """Revoke USER's token TOKEN_ID: requests sending it are refused from now on."""

    async def work(database: Database) -> None:
        await Tokens(database).remove(await Users(database).find(user_name), token_id)

    run_with_database(app.config.cassandra, work)


add_rename_and_rm(user, Users)
