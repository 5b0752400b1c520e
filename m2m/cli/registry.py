"""``m2m registry``: look at and edit the registry's nodes by hand.

Data goes to stdout (names one per line, values and exports as JSON, counts as a JSON
object); errors are one line on stderr and exit 1. A path is checked before Cassandra is
contacted, so a mistyped one fails at once.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from m2m.cassandra import Database, run_with_database
from m2m.cli.app import App, pass_app
from m2m.errors import M2MError
from m2m.registry import (
    NodeNotFoundError,
    RegistryNode,
    cleanup,
    export_tree,
    import_tree,
    normalize_path,
)

TREE_INDENT = "  "


class ImportFileError(M2MError):
    """The document to import cannot be read or is not JSON."""


def _echo_json(document: Any, indent: int | None = None) -> None:
    click.echo(json.dumps(document, ensure_ascii=False, indent=indent))


async def _existing(database: Database, path: str) -> RegistryNode:
    node = RegistryNode(database, path)
    if not await node.exists():
        raise NodeNotFoundError(node.path)
    return node


@click.group()
def registry() -> None:
    """The registry: a filesystem of nodes holding string values."""


@registry.command("ls")
@click.argument("path")
@click.option("--all", "include_hidden", is_flag=True, help="Include hidden children (.name).")
@pass_app
def list_children(app: App, path: str, include_hidden: bool) -> None:
    """List the names of PATH's children, one per line."""
    path = normalize_path(path)

    async def work(database: Database) -> list[str]:
        node = await _existing(database, path)
        return await node.children_names(include_hidden)

    for name in run_with_database(app.config.cassandra, work):
        click.echo(name)


@registry.command("get")
@click.argument("path")
@pass_app
def get_values(app: App, path: str) -> None:
    """Print PATH's values as a JSON object."""
    path = normalize_path(path)

    async def work(database: Database) -> dict[str, str]:
        state = await RegistryNode(database, path).load()
        if not state.exists:
            raise NodeNotFoundError(path)
        return state.values

    _echo_json(dict(sorted(run_with_database(app.config.cassandra, work).items())))


@registry.command("set")
@click.argument("path")
@click.argument("name")
@click.argument("value")
@pass_app
def set_value(app: App, path: str, name: str, value: str) -> None:
    """Set value NAME of PATH to VALUE, creating PATH and its parents if needed."""
    path = normalize_path(path)

    async def work(database: Database) -> None:
        node = RegistryNode(database, path)
        await node.check()
        await node.set_value(name, value)

    run_with_database(app.config.cassandra, work)


@registry.command("unset")
@click.argument("path")
@click.argument("name")
@pass_app
def unset_value(app: App, path: str, name: str) -> None:
    """Remove value NAME of PATH (no error if it has no such value)."""
    path = normalize_path(path)

    async def work(database: Database) -> None:
        node = await _existing(database, path)
        await node.delete_value(name)

    run_with_database(app.config.cassandra, work)


@registry.command("rm")
@click.argument("path")
@click.option("--hard", is_flag=True, help="Remove the rows for good (else: mark deleted).")
@pass_app
def remove(app: App, path: str, hard: bool) -> None:
    """Delete PATH and everything below it; print how many nodes were deleted."""
    path = normalize_path(path)

    async def work(database: Database) -> int:
        deleted = await RegistryNode(database, path).delete(hard=hard)
        if not deleted:
            raise NodeNotFoundError(path)
        return deleted

    _echo_json({"deleted": run_with_database(app.config.cassandra, work)})


@registry.command("tree")
@click.argument("path")
@click.option("--all", "include_hidden", is_flag=True, help="Include hidden children (.name).")
@pass_app
def tree(app: App, path: str, include_hidden: bool) -> None:
    """Print PATH and the names below it, indented by depth."""
    path = normalize_path(path)

    async def work(database: Database) -> None:
        node = await _existing(database, path)
        async for depth, descendant in node.walk(include_hidden):
            click.echo(f"{TREE_INDENT * depth}{descendant.name}" if depth else node.path)

    run_with_database(app.config.cassandra, work)


@registry.command("export")
@click.argument("path")
@pass_app
def export(app: App, path: str) -> None:
    """Print PATH and its subtree as nested JSON: {"values": {...}, "children": {...}}."""
    path = normalize_path(path)

    async def work(database: Database) -> dict[str, Any]:
        return await export_tree(RegistryNode(database, path))

    _echo_json(run_with_database(app.config.cassandra, work), indent=2)


@registry.command("import")
@click.argument("path")
@click.argument("file")
@pass_app
def import_(app: App, path: str, file: str) -> None:
    """Write the JSON of FILE (- for stdin) at PATH, merging; print how many nodes."""
    path = normalize_path(path)
    document = _read_json(file)

    async def work(database: Database) -> int:
        return await import_tree(RegistryNode(database, path), document)

    _echo_json({"imported": run_with_database(app.config.cassandra, work)})


@registry.command("cleanup")
@pass_app
def cleanup_deleted(app: App) -> None:
    """Remove every soft-deleted node for good; print how many were removed."""
    _echo_json({"removed": run_with_database(app.config.cassandra, cleanup)})


def _read_json(file: str) -> Any:
    try:
        if file == "-":
            text = sys.stdin.read()
        else:
            with open(file, encoding="utf-8") as source:
                text = source.read()
    except OSError as exc:
        raise ImportFileError(f"{file}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"{file}: not UTF-8 text: {exc.reason}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFileError(f"{file}: not valid JSON: {exc}") from exc
