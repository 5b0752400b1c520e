"""``m2m registry fsck`` on registries broken on purpose, with raw CQL, one kind at a time.

Each test breaks what it made under its own paths (a fresh device, a fresh prefix) and
checks only there, so tests do not see each other's damage; the whole-registry runs use
a keyspace of their own. Every test reads the rows back after ``--repair``, and checks
again to find the registry clean.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from m2m.cassandra import Database
from m2m.config import load_config
from m2m.registry.device import device_id_for
from m2m.registry.fsck import path_token
from tests.conftest import fresh_platform, run_m2m
from tests.integration.cli_checks import failed_in_one_line, m2m, new_ident

FOUND, LEFT = 3, 4
"""fsck's exit statuses: found (and repairable, or repaired), and left for a person."""
CREATE = "UPDATE registrynode SET status = 100 WHERE path = ?"
CREATE_WITH_VALUES = "INSERT INTO registrynode (path, status, values) VALUES (?, 100, ?)"
LIST = "INSERT INTO registrynodechildren (path, name) VALUES (?, ?)"
INDEX = "INSERT INTO timeseries_index (id, type, date) VALUES (?, ?, ?)"


@dataclass
class Fsck:
    """What one ``m2m registry fsck`` printed: findings split at tabs, its stderr."""

    status: int
    findings: list[list[str]]
    stderr: str

    def kinds(self) -> list[str]:
        return sorted(finding[0] for finding in self.findings)

    def one(self, kind: str, path: str) -> list[str]:
        """The only finding; it is of ``kind`` at ``path``."""
        assert len(self.findings) == 1, self.findings
        assert self.findings[0][:2] == [kind, path], self.findings
        return self.findings[0]

    @property
    def nodes_checked(self) -> int:
        match = re.search(r"^fsck .*?: ([\d,]+) nodes", self.stderr, re.MULTILINE)
        assert match, self.stderr
        return int(match[1].replace(",", ""))


def fsck(*args: str, config: Path) -> Fsck:
    result = run_m2m("registry", "fsck", *args, config=config, check=False)
    findings = [line.split("\t") for line in result.stdout.decode().splitlines()]
    return Fsck(result.returncode, findings, result.stderr.decode())


def assert_clean(*args: str, config: Path) -> None:
    after = fsck(*args, config=config)
    assert (after.status, after.findings) == (0, []), after
    assert "no problems found" in after.stderr


def new_device(config: Path) -> tuple[str, str]:
    """A device made as a person makes one: its ident and its node's path."""
    ident = new_ident()
    device_id = m2m("device", "create", ident, config=config).strip()
    assert device_id == device_id_for(ident)
    return ident, f"/device/{device_id}/"


def id_of(device: str) -> str:
    """The id of the device at this path."""
    return device.removeprefix("/device/").removesuffix("/")


async def node(database: Database, path: str) -> tuple[int | None, dict[str, str]] | None:
    """A node's status and values as stored, None without a row."""
    rows = await database.execute("SELECT status, values FROM registrynode WHERE path = ?", (path,))
    return (rows[0].status, dict(rows[0].values or {})) if rows else None


async def listed(database: Database, parent: str, name: str) -> bool:
    cql = "SELECT name FROM registrynodechildren WHERE path = ? AND name = ?"
    return bool(await database.execute(cql, (parent, name)))


# -- one kind at a time, under paths of each test's own ----------------------------------


async def test_orphan_and_deleted_children_are_unlisted(
    config_file: Path, database: Database
) -> None:
    _, device = new_device(config_file)
    await database.execute(LIST, (device, "ghost"))
    await database.execute(
        "UPDATE registrynode SET status = 5 WHERE path = ?", (f"{device}commands/",)
    )

    found = fsck(device, config=config_file)
    assert found.status == FOUND
    assert found.kinds() == ["deleted-listed", "orphan-child"]
    assert [f"{device}ghost/", f"{device} lists 'ghost', which does not exist"] in [
        finding[1:] for finding in found.findings
    ]
    assert "fsck: orphan-child: 1 (1 repairable)" in found.stderr

    repaired = fsck("--repair", device, config=config_file)
    assert repaired.status == FOUND
    assert {finding[3] for finding in repaired.findings} == {
        f"repaired: removed 'ghost' from the children of {device}",
        f"repaired: removed 'commands' from the children of {device}",
    }
    assert not await listed(database, device, "ghost")
    assert not await listed(database, device, "commands")
    assert (await node(database, f"{device}commands/")) == (5, {})  # still recoverable
    assert_clean(device, config=config_file)


async def test_an_unlisted_node_is_listed_again(config_file: Path, database: Database) -> None:
    _, device = new_device(config_file)
    await database.execute(
        "DELETE FROM registrynodechildren WHERE path = ? AND name = ?", (device, "status")
    )

    found = fsck(device, config=config_file)
    assert found.status == FOUND
    assert found.one("unlisted-node", f"{device}status/")[2] == f"{device} does not list it"

    repaired = fsck("--repair", device, config=config_file)
    assert repaired.status == FOUND
    assert repaired.findings[0][3] == f"repaired: listed it in {device}"
    assert await listed(database, device, "status")
    assert "status" in m2m("registry", "ls", device, config=config_file).split()
    assert_clean(device, config=config_file)


async def test_an_unlisted_node_whose_parent_is_gone_is_left(
    config_file: Path, database: Database
) -> None:
    base = f"/test-fsck-{uuid.uuid4().hex[:12]}/"
    m2m("registry", "set", f"{base}a/b", "x", "1", config=config_file)
    await database.execute("DELETE FROM registrynode WHERE path = ?", (f"{base}a/",))
    await database.execute(
        "DELETE FROM registrynodechildren WHERE path = ? AND name = ?", (f"{base}a/", "b")
    )

    for args in ((), ("--repair",)):
        found = fsck(*args, f"{base}a/b/", config=config_file)
        assert found.status == LEFT
        finding = found.one("unlisted-node", f"{base}a/b/")
        assert finding[3] == f"left: its parent {base}a/ does not exist: recover or create it first"
    assert (await node(database, f"{base}a/b/")) == (100, {"x": "1"})
    assert not await listed(database, f"{base}a/", "b")

    # Above it, the listing of the gone parent is an orphan: repaired, and the rest is left.
    found = fsck("--repair", base, config=config_file)
    assert found.status == LEFT
    assert found.kinds() == ["orphan-child", "unlisted-node"]
    assert not await listed(database, base, "a")
    await database.execute("DELETE FROM registrynode WHERE path = ?", (f"{base}a/b/",))
    assert_clean(base, config=config_file)


async def test_a_missing_by_ident_entry_is_written_again(
    config_file: Path, database: Database
) -> None:
    ident, device = new_device(config_file)
    entry = f"/device/by-ident/{ident}/"
    await database.execute("DELETE FROM registrynode WHERE path = ?", (entry,))

    found = fsck(device, config=config_file)
    assert found.status == FOUND
    assert found.one("ident-missing", device)[2] == f"{entry} does not exist"

    repaired = fsck("--repair", device, config=config_file)
    assert repaired.findings[0][3] == f"repaired: {entry} points to device {id_of(device)}"
    assert (await node(database, entry)) == (100, {"id": id_of(device)})
    shown = json.loads(m2m("device", "show", ident, "--json", config=config_file))
    assert shown["id"] == id_of(device)
    assert_clean(device, config=config_file)
    assert_clean(entry, config=config_file)


async def test_a_by_ident_entry_pointing_elsewhere_is_pointed_back(
    config_file: Path, database: Database
) -> None:
    ident, device = new_device(config_file)
    entry = f"/device/by-ident/{ident}/"
    nowhere = str(uuid.uuid4())
    await database.execute(
        "UPDATE registrynode SET values['id'] = ? WHERE path = ?", (nowhere, entry)
    )

    found = fsck(device, config=config_file)
    assert found.one("ident-mismatch", device)[2] == (
        f"{entry} points to device {nowhere}, which does not exist"
    )
    # Seen from the entry, the same damage: it points to no device with its ident.
    dangling = fsck(entry, config=config_file)
    assert dangling.one("ident-dangling", entry)[2] == (
        f"it points to device {nowhere}, which does not exist"
    )

    repaired = fsck("--repair", device, config=config_file)
    assert repaired.status == FOUND
    assert repaired.findings[0][3] == f"repaired: {entry} points to device {id_of(device)}"
    assert (await node(database, entry)) == (100, {"id": id_of(device)})
    assert_clean(device, config=config_file)
    assert_clean(entry, config=config_file)


async def test_two_devices_with_one_ident_are_left(config_file: Path, database: Database) -> None:
    ident, first = new_device(config_file)
    second_ident, second = new_device(config_file)
    set_ident = "UPDATE registrynode SET values['ident'] = ? WHERE path = ?"
    await database.execute(set_ident, (ident, second))

    for args in ((), ("--repair",)):
        found = fsck(*args, second, config=config_file)
        assert found.status == LEFT
        assert found.one("ident-mismatch", second)[3] == (
            f"left: device {id_of(first)} has ident '{ident}' too: which one keeps it "
            "needs a person"
        )
    assert (await node(database, f"/device/by-ident/{ident}/")) == (100, {"id": id_of(first)})
    await database.execute(set_ident, (second_ident, second))
    assert_clean(second, config=config_file)


async def test_a_device_without_ident_is_left(config_file: Path, database: Database) -> None:
    ident, device = new_device(config_file)
    await database.execute("DELETE values['ident'] FROM registrynode WHERE path = ?", (device,))

    found = fsck("--repair", device, config=config_file)
    assert found.status == LEFT
    assert found.one("ident-missing", device)[2:] == [
        "the device has no ident value",
        "left: which ident it has is unknown: set its ident value, then check again",
    ]
    m2m("registry", "set", device, "ident", ident, config=config_file)  # as the finding says
    assert_clean(device, config=config_file)


async def test_a_dangling_by_ident_entry_is_deleted(config_file: Path, database: Database) -> None:
    ident = new_ident()
    entry = f"/device/by-ident/{ident}/"
    nowhere = str(uuid.uuid4())
    await database.execute(CREATE_WITH_VALUES, (entry, {"id": nowhere}))
    await database.execute(LIST, ("/device/by-ident/", ident))

    found = fsck(entry, config=config_file)
    assert found.status == FOUND
    assert found.one("ident-dangling", entry)[2] == (
        f"it points to device {nowhere}, which does not exist"
    )
    repaired = fsck("--repair", entry, config=config_file)
    assert repaired.findings[0][3].startswith("repaired: deleted (soft), as deleting its device")
    assert (await node(database, entry)) == (5, {"id": nowhere})
    assert not await listed(database, "/device/by-ident/", ident)
    assert_clean(entry, config=config_file)


async def test_a_dangling_entry_is_pointed_to_the_device_its_ident_names(
    config_file: Path, database: Database
) -> None:
    ident, device = new_device(config_file)
    entry = f"/device/by-ident/{ident}/"
    await database.execute("DELETE values['id'] FROM registrynode WHERE path = ?", (entry,))

    found = fsck(entry, config=config_file)
    assert found.one("ident-dangling", entry)[2] == "no id"
    repaired = fsck("--repair", entry, config=config_file)
    assert repaired.findings[0][3] == (
        f"repaired: points to device {id_of(device)}, which has this ident"
    )
    assert (await node(database, entry)) == (100, {"id": id_of(device)})
    assert_clean(entry, config=config_file)


async def test_a_file_with_missing_or_short_blocks_is_left(
    config_file: Path, database: Database, tmp_path: Path
) -> None:
    path = f"/test-fsck-{uuid.uuid4().hex[:12]}/file/"
    content = tmp_path / "firmware.bin"
    content.write_bytes(os.urandom(3 * 512 * 1024 + 100))  # four blocks, the last short
    m2m("blob", "put", path, str(content), config=config_file)
    await database.execute("DELETE FROM registrynodedata WHERE path = ? AND block = 1", (path,))
    await database.execute(
        "UPDATE registrynodedata SET data = ? WHERE path = ? AND block = 3", (b"short", path)
    )

    for args in ((), ("--repair",)):
        found = fsck(*args, path, config=config_file)
        assert found.status == LEFT
        assert found.findings == [
            [
                "blob-blocks-missing",
                path,
                "1 of its 4 blocks are missing: 1",
                "left: the content is lost: upload the file again",
            ],
            [
                "blob-size-mismatch",
                path,
                f"fsize {len(content.read_bytes())} with blsize 524288, but 1 block(s) are "
                "shorter: block 3 holds 5",
                "left: the content is lost: upload the file again",
            ],
        ]
    m2m("blob", "put", path, str(content), config=config_file)
    assert_clean(path, config=config_file)


async def test_an_index_row_of_an_empty_bucket_is_removed(
    config_file: Path, database: Database
) -> None:
    _, device = new_device(config_file)
    series = f"dev-{id_of(device)}"
    m2m("ts", "put", series, "sen:loc", '{"lat": 1}', "--time", "2025-03-01", config=config_file)
    await database.execute(INDEX, (series, "sen:loc", "2020-01"))

    found = fsck(device, config=config_file)
    assert found.status == FOUND
    assert (
        found.one("ts-index-orphan", series)[2]
        == "bucket 2020-01 of type 'sen:loc' holds no record"
    )

    repaired = fsck("--repair", device, config=config_file)
    assert repaired.findings[0][3] == "repaired: removed the index row of bucket 2020-01"
    dates = await database.execute(
        "SELECT date FROM timeseries_index WHERE id = ? AND type = ?", (series, "sen:loc")
    )
    assert [row.date for row in dates] == ["2025-03"]
    assert len(m2m("ts", "get", series, config=config_file).splitlines()) == 1
    assert_clean(device, config=config_file)


async def test_rows_at_paths_the_registry_cannot_name_are_left(
    config_file: Path, database: Database
) -> None:
    base = f"/test-fsck-{uuid.uuid4().hex[:12]}/"
    m2m("registry", "set", base, "x", "1", config=config_file)
    for path in (f"{base}no-slash", f"{base}a//b/"):
        await database.execute(CREATE, (path,))

    for args in ((), ("--repair",)):
        found = fsck(*args, base, config=config_file)
        assert found.status == LEFT
        why = "left: no operation of the registry reaches it: remove its rows with CQL"
        assert sorted(found.findings) == [
            ["invalid-path", f"{base}a//b/", "it contains an empty segment ('//')", why],
            ["invalid-path", f"{base}no-slash", "it does not end with '/'", why],
        ]
    for path in (f"{base}no-slash", f"{base}a//b/"):
        await database.execute("DELETE FROM registrynode WHERE path = ?", (path,))
    assert_clean(base, config=config_file)


async def test_json_gives_one_object_a_line(config_file: Path, database: Database) -> None:
    base = f"/test-fsck-{uuid.uuid4().hex[:12]}/"
    m2m("registry", "set", base, "x", "1", config=config_file)
    await database.execute(LIST, (base, "ghost"))
    finding = {
        "kind": "orphan-child",
        "path": f"{base}ghost/",
        "detail": f"{base} lists 'ghost', which does not exist",
    }
    assert m2m_json("registry", "fsck", base, config=config_file, status=FOUND) == [finding]
    assert m2m_json("registry", "fsck", "--repair", base, config=config_file, status=FOUND) == [
        {**finding, "repaired": f"removed 'ghost' from the children of {base}"}
    ]
    assert m2m_json("registry", "fsck", base, config=config_file, status=0) == []


def m2m_json(*args: str, config: Path, status: int) -> list[dict[str, str]]:
    result = run_m2m(*args, "--json", config=config, check=False)
    assert result.returncode == status, result
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def test_a_bad_path_fails_in_one_line(config_file: Path) -> None:
    result = run_m2m("registry", "fsck", "relative/path", config=config_file, check=False)
    failed_in_one_line(result, "invalid registry path", "must be absolute")
    result = run_m2m("registry", "fsck", "--from", "a//b", config=config_file, check=False)
    failed_in_one_line(result, "invalid registry path")


# -- the whole registry, in a keyspace of its own ----------------------------------------


@pytest.fixture(scope="module")
def own_keyspace(stack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A config file naming a fresh keyspace, for checks of a whole registry."""
    with fresh_platform(tmp_path_factory.mktemp("fsck"), "fsck_") as path:
        yield path


@pytest.fixture
async def own_database(own_keyspace: Path) -> AsyncIterator[Database]:
    database = Database.connect(load_config(own_keyspace).cassandra)
    yield database
    database.close()


async def test_a_whole_registry_clean_then_broken_then_repaired(
    own_keyspace: Path, own_database: Database, tmp_path: Path
) -> None:
    config = own_keyspace
    devices = [new_device(config) for _ in range(4)]
    (ident, device), (second_ident, second), (third_ident, third), (fourth_ident, fourth) = devices
    m2m("device", "setting", "set", ident, "interval", "60", config=config)
    m2m("device", "command", "add", ident, "reboot", config=config)
    m2m("device", "route", "add", ident, "10", "^gps", "positions", config=config)
    m2m("domain", "create", "fleet", config=config)
    m2m("user", "create", "alice", "--domain", "fleet", config=config)
    m2m("device", "move", second_ident, "fleet", config=config)
    firmware = tmp_path / "firmware.bin"
    firmware.write_bytes(os.urandom(600_000))
    m2m("blob", "put", "/firmware/v1/file", str(firmware), config=config)
    m2m("ts", "put", f"dev-{id_of(device)}", "sen:loc", "[1, 2]", config=config)
    m2m("ts", "put", "weather", "temp", "21.5", config=config)
    m2m("registry", "rm", f"{device}commands-response", config=config)  # soft: fine
    clean = fsck(config=config)
    assert (clean.status, clean.findings) == (0, []), clean
    assert clean.nodes_checked > 50

    breaks = {
        ("orphan-child", f"{device}ghost/"): (LIST, (device, "ghost")),
        ("deleted-listed", f"{second}status/"): (
            "UPDATE registrynode SET status = 5 WHERE path = ?",
            (f"{second}status/",),
        ),
        ("unlisted-node", f"{third}settings/"): (
            "DELETE FROM registrynodechildren WHERE path = ? AND name = ?",
            (third, "settings"),
        ),
        ("ident-missing", fourth): (
            "DELETE FROM registrynode WHERE path = ?",
            (f"/device/by-ident/{fourth_ident}/",),
        ),
        ("ident-dangling", f"/device/by-ident/{third_ident}/"): (
            "DELETE values['id'] FROM registrynode WHERE path = ?",
            (f"/device/by-ident/{third_ident}/",),
        ),
        ("blob-blocks-missing", "/firmware/v1/file/"): (
            "DELETE FROM registrynodedata WHERE path = ? AND block = 1",
            ("/firmware/v1/file/",),
        ),
        ("ts-index-orphan", "weather"): (INDEX, ("weather", "", "2001-01")),
        ("invalid-path", "garbage"): (CREATE, ("garbage",)),
    }
    for cql, params in breaks.values():
        await own_database.execute(cql, params)
    # Two breaks show twice: the deleted entry is still listed (an orphan), and the entry
    # without an id is the missing entry of its device.
    expected = {
        *breaks,
        ("orphan-child", f"/device/by-ident/{fourth_ident}/"),
        ("ident-missing", third),
    }

    broken = fsck(config=config)
    assert broken.status == LEFT  # the file's lost block needs a person
    assert {(finding[0], finding[1]) for finding in broken.findings} == expected
    assert "fsck: blob-blocks-missing: 1 (1 left)" in broken.stderr
    assert "fsck: unlisted-node: 1 (1 repairable)" in broken.stderr

    repaired = fsck("--repair", config=config)
    assert repaired.status == LEFT
    outcomes = {finding[1]: finding[3] for finding in repaired.findings}
    assert outcomes.pop("/firmware/v1/file/").startswith("left: ")
    assert outcomes.pop("garbage").startswith("left: ")
    assert all(outcome.startswith("repaired: ") for outcome in outcomes.values()), outcomes
    assert not await listed(own_database, device, "ghost")
    assert not await listed(own_database, second, "status")
    assert await listed(own_database, third, "settings")
    assert (await node(own_database, f"/device/by-ident/{fourth_ident}/")) == (
        100,
        {"id": id_of(fourth)},
    )
    assert (await node(own_database, f"/device/by-ident/{third_ident}/")) == (
        100,
        {"id": id_of(third)},
    )
    assert "2001-01" not in str(
        await own_database.execute("SELECT date FROM timeseries_index WHERE id = 'weather'")
    )

    left = fsck(config=config)
    assert (left.status, left.kinds()) == (LEFT, ["blob-blocks-missing", "invalid-path"])
    m2m("blob", "put", "/firmware/v1/file", str(firmware), config=config)
    await own_database.execute("DELETE FROM registrynode WHERE path = 'garbage'")
    assert_clean(config=config)


async def test_progress_names_a_point_the_check_resumes_from(
    own_keyspace: Path, own_database: Database
) -> None:
    base = f"/filler-{uuid.uuid4().hex[:8]}/"
    names = [f"n{i}" for i in range(12_000)]
    nodes = ["/", base, *(f"{base}{name}/" for name in names)]
    listings = [("/", base[1:-1]), *((base, name) for name in names[20:])]  # 20 unlisted
    await own_database.execute_all(
        [(CREATE, (path,)) for path in nodes] + [(LIST, listing) for listing in listings]
    )
    unlisted = {f"{base}{name}/" for name in names[:20]}

    whole = fsck(config=own_keyspace)  # the whole registry: every node read is checked
    assert whole.status == FOUND
    assert {finding[1] for finding in whole.findings} == unlisted
    progress = re.search(r"^fsck: ([\d,]+) nodes read in .* s; resume with --from (.*)$",
                         whole.stderr, re.MULTILINE)  # fmt: skip
    assert progress, whole.stderr
    read, resume_from = int(progress[1].replace(",", "")), shlex.split(progress[2])[0]

    rest = fsck("--from", resume_from, config=own_keyspace)
    after = {path for path in unlisted if path_token(path) > path_token(resume_from)}
    assert {finding[1] for finding in rest.findings} == after
    assert rest.status == (FOUND if after else 0)
    assert rest.nodes_checked == whole.nodes_checked - read
    assert f"fsck / (after {resume_from})" in rest.stderr
    fsck("--repair", config=own_keyspace)
    assert_clean(config=own_keyspace)
