"""Entities found by a unique name: domains and users share one layout.

``/<kind>/by-name/<name>/`` holds ``id``; ``/<kind>/<uuid>/`` holds ``name``. A rename
moves the by-name entry; the id never changes, so everything referring to it still does.
"""

from __future__ import annotations

import hashlib
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar

from m2m.cassandra import Database
from m2m.errors import M2MError
from m2m.registry.node import NodeState, NodeStatus, RegistryNode
from m2m.registry.paths import child_path


class EntityNotFoundError(M2MError):
    """No entity by that name or id."""


class EntityExistsError(M2MError):
    """An entity by that name exists already."""


class EntityInUseError(M2MError):
    """An entity others still refer to cannot be deleted."""


@dataclass(frozen=True)
class NamedEntity:
    database: Database
    id: str
    root: str

    @property
    def node(self) -> RegistryNode:
        return RegistryNode(self.database, f"{self.root}{self.id}/")

    async def name(self) -> str:
        return await self.node.value("name") or ""


E = TypeVar("E", bound=NamedEntity)


class NamedEntities(ABC, Generic[E]):
    """The entities of one kind: lookup by name or id, create, rename, delete."""

    kind: str
    """The root segment and the word used in messages, e.g. ``domain``."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.root = f"/{self.kind}/"

    @abstractmethod
    def _entity(self, entity_id: str) -> E:
        """The entity of this kind with that id (nothing is read)."""

    def name_node(self, name: str) -> RegistryNode:
        """``/<kind>/by-name/<name>/``: its value ``id`` names the entity."""
        return RegistryNode(self.database, child_path(f"{self.root}by-name/", name))

    async def by_name(self, name: str) -> E | None:
        return self.named_by(await self.name_node(name).load())

    def named_by(self, name_node: NodeState) -> E | None:
        """The entity a by-name node (its state, as read) names; None if it names none."""
        entity_id = name_node.values.get("id")
        if name_node.status is not NodeStatus.CREATED or not entity_id:
            return None
        return self._entity(entity_id)

    async def by_id(self, entity_id: str) -> E | None:
        try:
            canonical = str(uuid.UUID(entity_id))
        except ValueError:
            return None
        entity = self._entity(canonical)
        return entity if await entity.node.exists() else None

    async def find(self, name_or_id: str) -> E:
        """By name, else by id; an EntityNotFoundError names what was asked for."""
        found = await self.by_name(name_or_id) or await self.by_id(name_or_id)
        if found is None:
            raise EntityNotFoundError(f"no {self.kind} named {name_or_id!r}")
        return found

    async def create(self, name: str) -> E:
        """A new entity; EntityExistsError if the name is taken."""
        if await self.by_name(name) is not None:
            raise EntityExistsError(f"a {self.kind} named {name!r} exists already")
        return await self._create(name)

    async def get_or_create(self, name: str) -> E:
        return await self.by_name(name) or await self._create(name)

    async def _create(self, name: str) -> E:
        # Derived from the name, so servers creating the same entity at once agree on it;
        # random when that id is taken (by an entity since renamed).
        entity = self._entity(_derived_id(self.kind, name))
        if await entity.node.status() is not NodeStatus.UNDEFINED:
            entity = self._entity(str(uuid.uuid4()))
        await entity.node.create()
        await entity.node.set_value("name", name)
        by_name = self.name_node(name)
        await by_name.create()
        await by_name.set_value("id", entity.id)
        return entity

    async def all(self) -> list[E]:
        names = await RegistryNode(self.database, f"{self.root}by-name/").children_names()
        found = [await self.by_name(name) for name in names]
        return [entity for entity in found if entity is not None]

    async def rename(self, entity: E, new_name: str) -> None:
        if await self.by_name(new_name) is not None:
            raise EntityExistsError(f"a {self.kind} named {new_name!r} exists already")
        old_name = await entity.name()
        target = self.name_node(new_name)
        await target.create()
        await target.set_value("id", entity.id)
        await entity.node.set_value("name", new_name)
        if old_name:
            await self.name_node(old_name).delete()

    async def delete(self, entity: E) -> None:
        """Soft delete: the entity and its by-name entry (recoverable until cleanup)."""
        name = await entity.name()
        if name:
            await self.name_node(name).delete()
        await entity.node.delete()


def _derived_id(kind: str, name: str) -> str:
    return str(uuid.UUID(bytes=hashlib.sha1(f"{kind}:{name}".encode()).digest()[:16]))
