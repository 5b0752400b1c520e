"""``m2m domain``, ``m2m user`` and ``m2m firmware`` as a person uses them: output, errors,
and the registry rows they leave."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest

from m2m.blobstore import DEFAULT_BLOCK_SIZE, BlobNotFoundError, open_blob
from m2m.cassandra import Database
from m2m.registry.domain import Domains
from m2m.registry.firmware import Firmwares
from m2m.registry.user import Users
from tests.integration.cli_checks import fails, m2m, m2m_json, new_ident


@pytest.fixture
def name() -> str:
    """A name no other test uses (the keyspace is shared by the whole run)."""
    return f"t-{uuid.uuid4().hex[:10]}"


# -- domains ----------------------------------------------------------------------------


async def test_domain_create_ls_rename_rm(config_file: Path, name: str, database: Database) -> None:
    domain_id = m2m("domain", "create", name, config=config_file).strip()
    domains = Domains(database)
    assert (await domains.find(name)).id == domain_id
    assert {"name": name, "id": domain_id, "devices": 0, "users": 0} in m2m_json(
        "domain", "ls", config=config_file
    )
    lines = m2m("domain", "ls", config=config_file).splitlines()
    assert re.fullmatch(r"NAME +ID +DEVICES +USERS", lines[0])
    (row,) = [line for line in lines if line.startswith(f"{name} ")]
    assert row.split() == [name, domain_id, "0", "0"]
    assert row.index(domain_id) == lines[0].index("ID")

    assert m2m("domain", "rename", name, f"{name}-2", config=config_file) == ""
    assert await domains.by_name(name) is None
    assert (await domains.find(f"{name}-2")).id == domain_id
    assert m2m("domain", "rm", domain_id, config=config_file) == ""  # named by id
    assert await domains.by_id(domain_id) is None
    assert f"{name}-2" not in m2m("domain", "ls", config=config_file)


def test_domain_errors(config_file: Path, name: str) -> None:
    m2m("domain", "create", name, config=config_file)
    m2m("domain", "create", f"{name}-b", config=config_file)
    fails("domain", "create", name, config=config_file,
          fragments=(f"a domain named {name!r} exists already",))  # fmt: skip
    fails("domain", "rename", name, f"{name}-b", config=config_file,
          fragments=(f"a domain named '{name}-b' exists already",))  # fmt: skip
    for command in (["rename", "nowhere", "x"], ["rm", "nowhere"]):
        fails("domain", *command, config=config_file, fragments=("no domain named 'nowhere'",))


def test_a_domain_with_members_cannot_be_removed(config_file: Path, name: str) -> None:
    m2m("domain", "create", name, config=config_file)
    ident = new_ident()
    m2m("device", "create", ident, "--domain", name, config=config_file)
    m2m("user", "create", f"{name}-user", "--domain", name, config=config_file)
    assert {"name": name, "devices": 1, "users": 1}.items() <= next(
        row for row in m2m_json("domain", "ls", config=config_file) if row["name"] == name
    ).items()
    fails("domain", "rm", name, config=config_file, fragments=("still has members",))
    m2m("device", "move", ident, "default", config=config_file)
    m2m("user", "move", f"{name}-user", "default", config=config_file)
    assert m2m("domain", "rm", name, config=config_file) == ""


# -- users ------------------------------------------------------------------------------


async def test_user_create_ls_move_rename_rm(
    config_file: Path, name: str, database: Database
) -> None:
    fleet = f"{name}-fleet"
    m2m("domain", "create", fleet, config=config_file)
    user_id = m2m("user", "create", name, config=config_file).strip()
    assert {"name": name, "id": user_id, "domain": "default", "admin": False} in m2m_json(
        "user", "ls", config=config_file
    )
    lines = m2m("user", "ls", config=config_file).splitlines()
    assert re.fullmatch(r"NAME +ID +DOMAIN +ADMIN", lines[0])
    assert [name, user_id, "default", "no"] in [line.split() for line in lines]

    assert m2m("user", "move", name, fleet, config=config_file) == ""
    domains = Domains(database)
    assert await (await domains.find(fleet)).user_ids() == [user_id]
    assert user_id not in await (await domains.find("default")).user_ids()
    assert m2m("user", "rename", user_id, f"{name}-2", config=config_file) == ""
    assert {"name": f"{name}-2", "id": user_id, "domain": fleet, "admin": False} in m2m_json(
        "user", "ls", config=config_file
    )
    assert m2m("user", "rm", f"{name}-2", config=config_file) == ""
    assert await Users(database).by_id(user_id) is None
    assert await (await domains.find(fleet)).user_ids() == []


def test_user_errors(config_file: Path, name: str) -> None:
    m2m("user", "create", name, config=config_file)
    fails("user", "create", name, config=config_file,
          fragments=(f"a user named {name!r} exists already",))  # fmt: skip
    fails("user", "create", f"{name}-b", "--domain", "nowhere", config=config_file,
          fragments=("no domain named 'nowhere'",))  # fmt: skip
    fails("user", "move", name, "nowhere", config=config_file,
          fragments=("no domain named 'nowhere'",))  # fmt: skip
    for command in (["move", "nobody", "default"], ["rename", "nobody", "x"], ["rm", "nobody"]):
        fails("user", *command, config=config_file, fragments=("no user named 'nobody'",))


# -- firmware ---------------------------------------------------------------------------


async def test_firmware_add_ls_replace_rm(
    config_file: Path, name: str, tmp_path: Path, database: Database
) -> None:
    content = os.urandom(2 * DEFAULT_BLOCK_SIZE + 17)
    local = tmp_path / "fw.bin"
    local.write_bytes(content)
    firmware_id = m2m("firmware", "add", name, str(local), config=config_file).strip()
    firmwares = Firmwares(database)
    assert (await firmwares.all())[name] == firmware_id
    blob = await firmwares.open(name)
    assert blob is not None
    async with blob:
        assert await blob.read() == content
    assert {"name": name, "id": firmware_id, "size": len(content)} in m2m_json(
        "firmware", "ls", config=config_file
    )
    lines = m2m("firmware", "ls", config=config_file).splitlines()
    assert re.fullmatch(r"NAME +ID +SIZE", lines[0])
    assert [name, firmware_id, str(len(content))] in [line.split() for line in lines]

    local.write_bytes(b"v2")
    replaced = m2m("firmware", "add", name, str(local), config=config_file).strip()
    assert replaced != firmware_id and (await firmwares.all())[name] == replaced
    with pytest.raises(BlobNotFoundError):  # the old file is gone
        await open_blob(database, f"/firmware/{firmware_id}/file/")

    assert m2m("firmware", "rm", name, config=config_file) == ""
    assert name not in await firmwares.all()
    assert name not in m2m("firmware", "ls", config=config_file)


def test_firmware_errors(config_file: Path, name: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.bin"
    fails("firmware", "add", name, str(missing), config=config_file,
          fragments=(f"{missing}: cannot open: No such file or directory",))  # fmt: skip
    local = tmp_path / "fw.bin"
    local.write_bytes(b"x")
    fails("firmware", "add", "a/b", str(local), config=config_file,
          fragments=("invalid firmware name 'a/b'",))  # fmt: skip
    fails("firmware", "rm", name, config=config_file, fragments=(f"no firmware named {name!r}",))
