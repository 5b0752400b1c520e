"""Domains: the groups devices and users belong to. New devices join ``default``."""

from __future__ import annotations

from collections.abc import Iterable

from m2m.registry.named import EntityInUseError, NamedEntities, NamedEntity
from m2m.registry.node import RegistryNode

DEFAULT_DOMAIN = "default"


class Domain(NamedEntity):
    @property
    def devices_node(self) -> RegistryNode:
        """Values: the id of each member device → ""."""
        return self.node.child("devices")

    @property
    def users_node(self) -> RegistryNode:
        """Children: ``<user id>/`` per member user."""
        return self.node.child("users")

    async def device_ids(self) -> list[str]:
        return sorted(await self.devices_node.values())

    async def user_ids(self) -> list[str]:
        return await self.users_node.children_names()


class Domains(NamedEntities[Domain]):
    kind = "domain"

    def _entity(self, entity_id: str) -> Domain:
        return Domain(self.database, entity_id, self.root)

    async def _create(self, name: str) -> Domain:
        domain = await super()._create(name)
        await domain.devices_node.create()
        await domain.users_node.create()
        return domain

    async def find(self, name_or_id: str) -> Domain:
        """As for any entity, except that ``default`` always exists: made when first asked."""
        if name_or_id == DEFAULT_DOMAIN:
            return await self.get_or_create(DEFAULT_DOMAIN)
        return await super().find(name_or_id)

    async def names(self, domain_ids: Iterable[str]) -> dict[str, str]:
        """Domain id → name for these ids; the ids of domains that are gone are left out."""
        found = {domain_id: await self.by_id(domain_id) for domain_id in set(domain_ids)}
        return {domain_id: await domain.name() for domain_id, domain in found.items() if domain}

    async def delete(self, entity: Domain) -> None:
        """Refused while devices or users are members: they would point at nothing."""
        if await entity.device_ids() or await entity.user_ids():
            raise EntityInUseError(
                f"domain {await entity.name()!r} still has members; move them first"
            )
        await super().delete(entity)
