"""How the management commands print: aligned tables for people, JSON lines for scripts.

A command builds its rows once, as dicts whose keys are the JSON fields; the table shows
the same fields as columns (headers upper-cased), so the two views cannot drift apart.
In a table, a missing value reads ``-``, a flag ``yes``/``no``, and a line break ``\\n``,
so that each row stays on one line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click

from m2m.registry.domain import DEFAULT_DOMAIN

Row = dict[str, Any]
"""One object of output: field name → a JSON value."""

COLUMN_GAP = "  "

F = TypeVar("F", bound=Callable[..., Any])


def json_option(command: F) -> F:
    """``--json``, as ``as_json``: the same output as JSON objects, one per line."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON objects, one per line."
    )(command)


def print_rows(rows: Sequence[Mapping[str, Any]], as_json: bool) -> None:
    """The rows as JSON lines, or as a table with a header (nothing at all if no rows)."""
    if as_json:
        for row in rows:
            click.echo(_json(row))
    elif rows:
        headers = list(rows[0])
        lines = [[header.upper() for header in headers]]
        lines += [[_cell(row.get(header)) for header in headers] for row in rows]
        widths = [max(len(line[column]) for line in lines) for column in range(len(headers))]
        for line in lines:
            cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
            click.echo(COLUMN_GAP.join(cells).rstrip())


def print_object(document: Mapping[str, Any], as_json: bool) -> None:
    """One object: a JSON line, or ``name  value`` lines where a list of rows is a table.

    For people, fields holding a list (of rows) or a mapping come after the plain ones,
    each under its name, so the summary reads first.
    """
    if as_json:
        click.echo(_json(document))
        return
    plain = {name: value for name, value in document.items() if not _is_section(value)}
    width = max((len(name) for name in plain), default=0)
    for name, value in plain.items():
        click.echo(f"{name.ljust(width)}{COLUMN_GAP}{_cell(value)}".rstrip())
    for name, value in document.items():
        if _is_section(value):
            click.echo(f"\n{name}:")
            if isinstance(value, Mapping):
                value = [{"name": key, "value": item} for key, item in value.items()]
            if value:
                print_rows(value, as_json=False)
            else:
                click.echo("-")


def _is_section(value: Any) -> bool:
    return isinstance(value, Mapping | list)


def _json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, ensure_ascii=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False)
    return value.replace("\n", "\\n")


def domain_option(command: F) -> F:
    """``--domain NAME`` for what is created in a domain (default: the default domain)."""
    return click.option(
        "--domain",
        "domain_name",
        metavar="NAME",
        default=DEFAULT_DOMAIN,
        help=f"Its domain (default: {DEFAULT_DOMAIN}).",
    )(command)
