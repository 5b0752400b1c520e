"""``/api/v1/registry/{path}``: the registry's raw nodes, for admins only.

Raw paths reach every domain's data, so nobody else may use them (403). A path is checked
by the registry's own rules (:mod:`m2m.registry.paths`): a bad one is 422 before anything
is read. What only proves who someone is (a user's password hash, a token's digest, the
key sessions are signed with) is never sent: the node lists those names as ``withheld``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from m2m.registry.node import NodeNotFoundError, RegistryNode, check_values
from m2m.registry.paths import ROOT, InvalidPathError
from m2m.web.api.models import DeletedNodes, NodeValues, RegistryNodeOut
from m2m.web.deps import Context, admin

router = APIRouter(prefix="/registry", tags=["registry"], dependencies=[Depends(admin)])

_SECRETS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"/user/[^/]+/"), "password"),
    (re.compile(r"/token/[^/]+/"), "hash"),
    (re.compile(r"/web/"), "session-key"),
)

IncludeHidden = Annotated[bool, Query(alias="all", description="List hidden children (.name) too")]


def _node(context: Context, path: str) -> RegistryNode:
    return RegistryNode(context.database, ROOT + path)


async def _shown(node: RegistryNode, include_hidden: bool) -> dict[str, Any]:
    state, children = await asyncio.gather(node.load(), node.children_names(include_hidden))
    if not state.exists:
        raise NodeNotFoundError(node.path)
    secret = {name for pattern, name in _SECRETS if pattern.fullmatch(node.path)}
    return {
        "path": node.path,
        "status": state.status.name.lower(),
        "values": {k: v for k, v in sorted(state.values.items()) if k not in secret},
        "children": children,
        "withheld": sorted(secret & state.values.keys()),
    }


@router.get("/{path:path}", response_model=RegistryNodeOut)
async def get_node(
    path: str, context: Context, include_hidden: IncludeHidden = False
) -> dict[str, Any]:
    return await _shown(_node(context, path), include_hidden)


@router.put(
    "/{path:path}",
    response_model=RegistryNodeOut,
    responses={201: {"model": RegistryNodeOut, "description": "The node was created"}},
)
async def put_node(
    path: str,
    body: NodeValues,
    context: Context,
    response: Response,
    include_hidden: IncludeHidden = False,
) -> dict[str, Any]:
    """Create the node (and its missing parents) if needed, then set these values."""
    node = _node(context, path)
    check_values(node.path, body.values)
    if await node.check():
        response.status_code = 201
    await node.set_values(body.values)
    return await _shown(node, include_hidden)


@router.delete("/{path:path}", response_model=DeletedNodes)
async def delete_node(
    path: str,
    context: Context,
    hard: Annotated[bool, Query(description="Remove the rows for good")] = False,
) -> dict[str, int]:
    """Delete the node and its subtree: marked deleted (recoverable until ``m2m registry
    cleanup``), or gone for good with ``hard=true``."""
    node = _node(context, path)
    if node.path == ROOT:
        raise InvalidPathError(ROOT, "the root holds the whole platform: it cannot be deleted")
    deleted = await node.delete(hard=hard)
    if not deleted:
        raise NodeNotFoundError(node.path)
    return {"deleted": deleted}
