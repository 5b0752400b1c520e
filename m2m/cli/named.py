"""What ``m2m domain`` and ``m2m user`` share: entities found by a unique name (or id)."""

from __future__ import annotations

from typing import Any

import click

from m2m.cassandra import Database, run_with_database
from m2m.cli.app import App, pass_app
from m2m.registry.named import NamedEntities

Kind = type[NamedEntities[Any]]


def add_rename_and_rm(group: click.Group, kind: Kind) -> None:
    """Give ``group`` the ``rename`` and ``rm`` commands for entities of ``kind``."""
    word = kind.kind

    @group.command("rename", help=f"Rename the {word} NAME (a name or an id) to NEW_NAME.")
    @click.argument("name")
    @click.argument("new_name")
    @pass_app
    def rename(app: App, name: str, new_name: str) -> None:
        async def work(database: Database) -> None:
            entities = kind(database)
            await entities.rename(await entities.find(name), new_name)

        run_with_database(app.config.cassandra, work)

    @group.command("rm", help=f"Delete the {word} NAME (a name or an id).")
    @click.argument("name")
    @pass_app
    def remove(app: App, name: str) -> None:
        async def work(database: Database) -> None:
            entities = kind(database)
            await entities.delete(await entities.find(name))

        run_with_database(app.config.cassandra, work)
