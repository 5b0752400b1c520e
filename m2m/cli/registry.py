"""``m2m registry``: look at and edit the registry's nodes by hand.

Data goes to stdout (names one per line, values and exports as JSON, counts as a JSON
object); errors are one line on stderr and exit 1. A path is checked before Cassandra is
contacted, so a mistyped one fails at once.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections import Counter
from typing import Any

import click

from m2m.cassandra import Database, run_with_database
from m2m.cli.app import PROBLEMS_FOUND, App, pass_app
from m2m.cli.output import json_option, print_rows
from m2m.errors import M2MError
from m2m.registry import (
    NodeNotFoundError,
    RegistryNode,
    cleanup,
    export_tree,
    import_tree,
    normalize_path,
)
from m2m.registry.fsck import Checkpoint, Finding, Kind, Outcome, RegistryCheck

TREE_INDENT = "  "
FSCK_LEFT = 4
"""Exit status of ``fsck`` when something found needs a person (repair leaves it as it is);
``PROBLEMS_FOUND`` when all it found was repaired (or is repairable, without --repair)."""
FSCK_PROGRESS_EVERY = 10_000
"""``fsck`` prints a progress line with a resume point every this many nodes read."""
_DISPOSITIONS = ("repairable", "repaired", "left")
"""What became of a finding: not asked to repair, repaired, or left for a person."""


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


@registry.command("fsck")
@click.argument("path", default="/")
@click.option("--repair", is_flag=True, help="Fix what can be fixed without guessing.")
@click.option(
    "--from",
    "after",
    metavar="PATH",
    help="Resume: start after PATH in the walk's order (what a progress line printed).",
)
@json_option
@pass_app
def fsck(app: App, path: str, repair: bool, after: str | None, as_json: bool) -> None:
    """Check the registry's invariants under PATH (default /), and repair with --repair.

    \b
    Kinds of problem:
      invalid-path                  a node whose path the registry cannot name
      orphan-child, deleted-listed  a parent lists a child missing or deleted
      unlisted-node                 a created node its parent does not list
      ident-missing, ident-mismatch a device's by-ident entry is missing, or elsewhere
      ident-dangling                a by-ident entry points to no device with its ident
      blob-metadata-invalid, blob-blocks-missing, blob-size-mismatch
                                    a complete file that cannot be read whole
      ts-index-orphan               a time-series index row naming an empty bucket

    \b
    One line per problem on stdout: KIND<TAB>PATH<TAB>detail, then <TAB>"repaired: what"
    after a repair, or <TAB>"left: why" when only a person can fix it (with or without
    --repair); the PATH field of ts-index-orphan is a series id. --json: one object a
    line. On stderr: progress with a resume point (--from) every 10,000 nodes read, and
    a summary.

    \b
    The whole registry is read whatever PATH (only that finds unlisted nodes); problems
    are reported under PATH only. A device's time series counts as under its node; any
    other series, as under / only.

    \b
    Exit status: 0 nothing found; 3 problems found, and all repaired with --repair (all
    repairable without it); 4 something found is left as it is, with or without
    --repair; 1 error.
    """
    scope = normalize_path(path)
    after = None if after is None else normalize_path(after)
    started = time.monotonic()

    async def work(database: Database) -> tuple[Counter[tuple[Kind, str]], RegistryCheck]:
        check = RegistryCheck(database, scope, after)
        dispositions: Counter[tuple[Kind, str]] = Counter()
        reported = 0
        async for item in check.walk():
            if isinstance(item, Checkpoint):
                if check.tally.nodes_read - reported >= FSCK_PROGRESS_EVERY:
                    reported = check.tally.nodes_read
                    _fsck_progress(reported, started, item.path)
                continue
            outcome = await item.outcome(database, repair)
            _print_finding(item, outcome, as_json)
            dispositions[item.kind, _disposition(outcome)] += 1
        return dispositions, check

    dispositions, check = run_with_database(app.config.cassandra, work)
    _fsck_summary(check, dispositions, scope, after, time.monotonic() - started)
    if dispositions:
        sys.exit(FSCK_LEFT if any(d == "left" for _, d in dispositions) else PROBLEMS_FOUND)


def _disposition(outcome: Outcome | None) -> str:
    if outcome is None:
        return "repairable"
    return "repaired" if outcome.repaired else "left"


def _print_finding(finding: Finding, outcome: Outcome | None, as_json: bool) -> None:
    row = {"kind": str(finding.kind), "path": finding.path, "detail": finding.detail}
    if outcome is not None:
        row[_disposition(outcome)] = outcome.text
    if as_json:
        print_rows([row], as_json=True)
    else:
        outcomes = [f"{name}: {row[name]}" for name in ("repaired", "left") if name in row]
        click.echo("\t".join([finding.kind, finding.path, finding.detail, *outcomes]))


def _fsck_progress(nodes_read: int, started: float, last_path: str) -> None:
    click.echo(
        f"fsck: {nodes_read:,} nodes read in {time.monotonic() - started:.1f} s; "
        f"resume with --from {shlex.quote(last_path)}",
        err=True,
    )


def _fsck_summary(
    check: RegistryCheck,
    dispositions: Counter[tuple[Kind, str]],
    scope: str,
    after: str | None,
    seconds: float,
) -> None:
    tally = check.tally
    where = scope if after is None else f"{scope} (after {after})"
    click.echo(
        f"fsck {where}: {tally.nodes:,} nodes, {tally.listings:,} listings and "
        f"{tally.index_rows:,} time-series index rows checked in {seconds:.1f} s",
        err=True,
    )
    if not dispositions:
        click.echo("fsck: no problems found", err=True)
        return
    for kind in Kind:
        counts = {d: dispositions[kind, d] for d in _DISPOSITIONS if dispositions[kind, d]}
        if counts:
            parts = ", ".join(f"{count} {d}" for d, count in counts.items())
            click.echo(f"fsck: {kind}: {sum(counts.values())} ({parts})", err=True)


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
