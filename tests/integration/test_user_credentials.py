"""Users' passwords, admin flag and API tokens, on the registry and through ``m2m user``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from m2m.cassandra import Database
from m2m.config import Config
from m2m.registry.domain import DEFAULT_DOMAIN, Domains
from m2m.registry.tokens import Tokens
from m2m.registry.user import User, Users, WeakPasswordError
from m2m.schema import apply_schema, drop_keyspace
from tests.conftest import run_m2m


async def _user(database: Database) -> User:
    domain = await Domains(database).get_or_create(DEFAULT_DOMAIN)
    return await Users(database).create_in(f"user-{uuid.uuid4().hex[:8]}", domain)


async def test_a_password_is_kept_as_an_argon2_hash_and_checked(database: Database) -> None:
    user = await _user(database)
    assert not await user.check_password("anything at all")
    await user.set_password("correct horse battery")
    stored = await user.password_hash()
    assert stored is not None and stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert await user.check_password("correct horse battery")
    assert not await user.check_password("correct horse battery!")
    with pytest.raises(WeakPasswordError):
        await user.set_password("short")


async def test_a_token_acts_as_its_user_until_removed(database: Database) -> None:
    user = await _user(database)
    tokens = Tokens(database)
    token = await tokens.create(user)
    assert token.startswith("m2m_")
    assert await tokens.user_of(token) == user
    (info,) = await tokens.of_user(user)
    assert info.id in token and token.split("_", 2)[2] not in str(await user.node.values())
    assert await tokens.user_of(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    for malformed in ("", "m2m_", "Bearer x", f"m2m_{info.id}", "m2m_../x_y", "\ud800"):
        assert await tokens.user_of(malformed) is None
    await tokens.remove(user, info.id)
    assert await tokens.user_of(token) is None
    assert await tokens.of_user(user) == []


async def test_the_first_admin_is_made_once(config: Config) -> None:
    fresh = config.cassandra.model_copy(
        update={"keyspace": f"{config.cassandra.keyspace[:30]}_admin_{uuid.uuid4().hex[:6]}"}
    )
    apply_schema(fresh)
    database = Database.connect(fresh)
    try:
        users = Users(database)
        domain = await Domains(database).get_or_create(DEFAULT_DOMAIN)
        password = await users.first_admin("admin", domain)
        assert password is not None
        admin = await users.find("admin")
        assert await admin.is_admin() and await admin.check_password(password)
        assert await users.first_admin("admin", domain) is None
        assert await admin.check_password(password), "a second call changes nothing"
    finally:
        database.close()
        drop_keyspace(fresh)


def test_the_cli_sets_passwords_from_stdin_and_manages_tokens(config_file: Path) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    run_m2m("user", "create", name, "--admin", config=config_file)
    (row,) = [
        json.loads(line)
        for line in run_m2m("user", "ls", "--json", config=config_file).stdout.splitlines()
        if json.loads(line)["name"] == name
    ]
    assert row["admin"] is True
    run_m2m("user", "passwd", name, config=config_file, input=b"a long enough one\n")
    short = run_m2m("user", "passwd", name, config=config_file, input=b"short\n", check=False)
    assert short.returncode == 1 and b"at least 8 characters" in short.stderr
    token = run_m2m("user", "token", "create", name, config=config_file).stdout.decode().strip()
    listed = run_m2m("user", "token", "ls", name, "--json", config=config_file).stdout
    (entry,) = [json.loads(line) for line in listed.splitlines()]
    assert entry["id"] in token and set(entry) == {"id", "created"}
    run_m2m("user", "token", "rm", name, entry["id"], config=config_file)
    assert run_m2m("user", "token", "ls", name, config=config_file).stdout == b""
    gone = run_m2m("user", "token", "rm", name, entry["id"], config=config_file, check=False)
    assert gone.returncode == 1 and b"no token" in gone.stderr
