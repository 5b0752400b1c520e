"""Who is asking: a console session cookie or an API token, turned into a :class:`Principal`.

The session cookie is ``<user id>.<expiry>.<signature>``: an HMAC-SHA256, with a key kept
on the registry (``/web/`` ``session-key``, made by the first web service to start), over
the user id, the expiry and the user's password hash. Every web process checks it alone,
and a new password ends the user's sessions everywhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from m2m.cassandra import Database
from m2m.registry.node import NodeStatus, RegistryNode
from m2m.registry.tokens import Tokens
from m2m.registry.user import User, Users

COOKIE = "m2m_session"
_EXPIRY = re.compile(r"[0-9]{1,12}")
"""Unix seconds as the cookie carries them (not ``str.isdigit``: it takes ``²``)."""
_KEY_NODE = "/web/"
_KEY_VALUE = "session-key"


@dataclass(frozen=True)
class Principal:
    """A logged-in user: an admin sees every domain, anyone else only their own."""

    user: User
    name: str
    admin: bool
    domain_id: str | None

    def sees(self, domain_id: str | None) -> bool:
        return self.admin or (domain_id is not None and domain_id == self.domain_id)


async def session_key(database: Database) -> bytes:
    """The key sessions are signed with: the registry's, made once if there is none."""
    node = RegistryNode(database, _KEY_NODE)
    stored = await node.value(_KEY_VALUE)
    if stored is None:
        await node.check()
        # Two services starting at once may both write: the last one wins, and sessions
        # signed with the other key end (their users log in again). Nothing else breaks.
        await node.set_value(_KEY_VALUE, secrets.token_urlsafe(32))
        stored = await node.value(_KEY_VALUE)
    return base64.urlsafe_b64decode(_padded(stored or ""))


def _padded(text: str) -> str:
    return text + "=" * (-len(text) % 4)


class Authenticator:
    def __init__(self, database: Database, key: bytes, session_seconds: float) -> None:
        self._database = database
        self._key = key
        self._session_seconds = session_seconds

    async def login(self, name: str, password: str) -> tuple[Principal, str] | None:
        """The user and a new session cookie value, if the password is theirs."""
        user = await Users(self._database).by_name(name)
        if user is None or not await user.check_password(password):
            return None
        principal = await self._principal(user)
        if principal is None:
            return None
        password_hash = await user.password_hash() or ""
        expires = int(time.time() + self._session_seconds)
        return principal, f"{user.id}.{expires}.{self._sign(user.id, expires, password_hash)}"

    async def from_cookie(self, cookie: str) -> Principal | None:
        user_id, _, rest = cookie.partition(".")
        expires_text, _, signature = rest.partition(".")
        if not _EXPIRY.fullmatch(expires_text) or int(expires_text) < time.time():
            return None
        user = await Users(self._database).by_id(user_id)
        if user is None:
            return None
        expected = self._sign(user.id, int(expires_text), await user.password_hash() or "")
        if not hmac.compare_digest(expected, signature):
            return None
        return await self._principal(user)

    async def from_token(self, token: str) -> Principal | None:
        user = await Tokens(self._database).user_of(token)
        return None if user is None else await self._principal(user)

    async def _principal(self, user: User) -> Principal | None:
        state = await user.node.load()
        if state.status is not NodeStatus.CREATED:
            return None
        values = state.values
        return Principal(user, values.get("name", ""), values.get("admin") == "1",
                         values.get("domain"))  # fmt: skip

    def _sign(self, user_id: str, expires: int, password_hash: str) -> str:
        message = f"{user_id}\0{expires}\0{password_hash}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
