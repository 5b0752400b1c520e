"""What sync carries: the registry nodes of a site's devices, by kind, each kind one way.

A node is synced when it is a device's (``/device/<id>/`` and below, and its
``/device/by-ident/<ident>/`` entry), ``/device/default/`` (the routes every device
follows) or under ``/firmware/`` (the files devices fetch). Its kind
(:class:`~m2m.config.SyncRules`' fields) says which way its values go: up (site to
cloud), down, both, or none. Which nodes exist goes both ways for every kind but
``none``, so the two sides hold the same subtree. Everything else (domains, users,
hidden nodes) is each platform's own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from m2m.config import SyncRules
from m2m.registry.device import BY_IDENT, DEFAULT_DEVICE, DEVICES, device_id_for
from m2m.registry.firmware import FIRMWARE
from m2m.sync.cells import NodeCells

Way = Literal["up", "down"]

_KIND_OF_CHILD = {
    "settings": "settings",
    "settings-to-send": "settings",
    "settings-ack-time": "settings",
    "commands": "commands",
    "commands-response": "commands",
    "status": "status",
    "channel-translation": "routes",
    "listed-sensors": "sensors",
    "server-settings": "server_settings",
    "server-settings-public": "server_settings",
}
LOCAL_VALUES = frozenset({"domain"})
"""Values of a device's node each platform keeps to itself: its domains are its own."""


@dataclass(frozen=True)
class SyncedNode:
    kind: str
    """A field of :class:`~m2m.config.SyncRules`."""
    device_id: str | None
    """The device the node belongs to; None for what every site gets (``/device/default/``,
    firmware)."""

    def carried(self, cells: NodeCells, rules: SyncRules, way: Way) -> NodeCells | None:
        """What of ``cells`` goes ``way``: all of them if the kind goes that way, else the
        node's existence only (status, erasure: a subtree has the same nodes on both
        sides), nothing if the kind is not synced at all."""
        direction = getattr(rules, self.kind)
        if direction in (way, "both"):
            return cells
        if direction == "none" or (cells.status is None and cells.erased is None):
            return None
        return NodeCells(cells.path, cells.status, erased=cells.erased)


def synced_node(path: str) -> SyncedNode | None:
    """What sync makes of the node at ``path`` (normalised), None if it is not synced."""
    if path.startswith(BY_IDENT):
        ident = path[len(BY_IDENT) : -1]
        return SyncedNode("device", device_id_for(ident)) if ident and "/" not in ident else None
    if path.startswith(DEFAULT_DEVICE):
        return SyncedNode("routes", None)
    if path.startswith(FIRMWARE):
        return SyncedNode("firmware", None)
    if not path.startswith(DEVICES):
        return None
    parts = path[len(DEVICES) : -1].split("/")
    if not _is_uuid(parts[0]):
        return None
    if len(parts) == 1:
        return SyncedNode("device", parts[0])
    kind = _KIND_OF_CHILD.get(parts[1])
    return None if kind is None else SyncedNode(kind, parts[0])


def local_values(path: str) -> frozenset[str]:
    """The values of the node at ``path`` that are not synced."""
    parts = path[len(DEVICES) : -1].split("/") if path.startswith(DEVICES) else []
    return LOCAL_VALUES if len(parts) == 1 and _is_uuid(parts[0]) else frozenset()


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False
