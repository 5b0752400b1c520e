"""The registry: a filesystem of nodes on Cassandra, and the entities kept in it.

Start from :class:`RegistryNode` (``RegistryNode(database, "/device/…/")``); paths are
checked by :mod:`m2m.registry.paths`, subtrees move as JSON with :mod:`m2m.registry.export`.
"""

from m2m.registry.export import InvalidTreeError, NodeTree, export_tree, import_tree
from m2m.registry.node import (
    NodeExistsError,
    NodeNotFoundError,
    NodeState,
    NodeStatus,
    RegistryNode,
    cleanup,
)
from m2m.registry.paths import InvalidPathError, normalize_path

__all__ = [
    "InvalidPathError",
    "InvalidTreeError",
    "NodeExistsError",
    "NodeNotFoundError",
    "NodeState",
    "NodeStatus",
    "NodeTree",
    "RegistryNode",
    "cleanup",
    "export_tree",
    "import_tree",
    "normalize_path",
]
