"""Users: people with a name, each a member of one domain."""

from __future__ import annotations

from m2m.registry.domain import Domain, Domains
from m2m.registry.named import NamedEntities, NamedEntity


class User(NamedEntity):
    async def domain_id(self) -> str | None:
        return await self.node.value("domain")


class Users(NamedEntities[User]):
    kind = "user"

    def _entity(self, entity_id: str) -> User:
        return User(self.database, entity_id, self.root)

    async def move(self, user: User, domain: Domain) -> None:
        """Make ``user`` a member of ``domain`` (and of no other)."""
        previous = await user.domain_id()
        if previous and previous != domain.id:
            old = await Domains(self.database).by_id(previous)
            if old is not None:
                await old.users_node.child(user.id).delete(hard=True)
        await user.node.set_value("domain", domain.id)
        await domain.users_node.child(user.id).create()

    async def delete(self, entity: User) -> None:
        """Soft delete, leaving the domain it belonged to."""
        domain_id = await entity.domain_id()
        if domain_id:
            domain = await Domains(self.database).by_id(domain_id)
            if domain is not None:
                await domain.users_node.child(entity.id).delete(hard=True)
        await super().delete(entity)
