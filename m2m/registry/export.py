"""Registry subtrees as JSON, to back them up, move them between keyspaces or edit by hand.

The format nests one object per node; values and children never share a namespace, so a
value and a child may carry the same name::

    {
      "values": {"name": "value", ...},          strings only
      "children": {"child-name": {...}, ...}     the same shape, recursively
    }

Export always writes both keys, children in name order, hidden ones (``.name``)
included. Import accepts either key missing (nothing of that kind) and nothing else.
Data blocks are not part of it: a file node travels with its values (``fsize``,
``getOk``, …) but without its content, so use the blobstore to move files.

Import merges: nodes are created where missing and the given values set; values and
children already there and not in the document are left alone. The whole document is
checked before anything is written, so a bad document changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from m2m.errors import M2MError
from m2m.registry.node import NodeNotFoundError, RegistryNode, check_values
from m2m.registry.paths import child_path

NodeTree = dict[str, Any]
"""``{"values": {str: str}, "children": {str: NodeTree}}``"""

VALUES = "values"
CHILDREN = "children"


class InvalidTreeError(M2MError):
    """A document to import that does not have the export format; the message says where."""


async def export_tree(node: RegistryNode) -> NodeTree:
    """The node and its subtree; raises :class:`NodeNotFoundError` if it does not exist."""
    tree = await _export(node)
    if tree is None:
        raise NodeNotFoundError(node.path)
    return tree


async def _export(node: RegistryNode) -> NodeTree | None:
    state, children = await asyncio.gather(node.load(), node.children(include_hidden=True))
    if not state.exists:
        return None
    subtrees = await asyncio.gather(*(_export(child) for child in children))
    return {
        VALUES: dict(sorted(state.values.items())),
        CHILDREN: {
            child.name: subtree
            for child, subtree in zip(children, subtrees, strict=True)
            if subtree is not None
        },
    }


async def import_tree(node: RegistryNode, tree: object) -> int:
    """Write ``tree`` at ``node`` (see the module docstring); how many nodes it holds."""
    nodes = list(_flatten(node.path, tree))
    await asyncio.gather(
        node.check(),
        node.set_values(nodes[0][1]),
        *(RegistryNode(node.database, path).mark_created(values) for path, values in nodes[1:]),
    )
    return len(nodes)


def _flatten(path: str, tree: object) -> Iterator[tuple[str, dict[str, str]]]:
    """Each node of the document, parents first, as (path, values); checks as it goes."""
    if not isinstance(tree, dict):
        raise InvalidTreeError(f"{path}: a node must be a JSON object")
    unknown = sorted(set(tree) - {VALUES, CHILDREN})
    if unknown:
        raise InvalidTreeError(
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))} "
            f"(a node has only '{VALUES}' and '{CHILDREN}')"
        )
    values = tree.get(VALUES, {})
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise InvalidTreeError(f"{path}: '{VALUES}' must be an object of strings")
    check_values(path, values)
    children = tree.get(CHILDREN, {})
    if not isinstance(children, dict):
        raise InvalidTreeError(f"{path}: '{CHILDREN}' must be an object of nodes")
    yield path, values
    for name, subtree in children.items():
        yield from _flatten(child_path(path, name), subtree)
