"""``m2m blob`` as a person uses it: files in and out, stat, rm, and every error in one line."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from m2m.blobstore import DEFAULT_BLOCK_SIZE, open_blob
from m2m.cassandra import Database
from tests.conftest import run_m2m


@pytest.fixture
def path() -> str:
    return f"/test-cli-blob-{uuid.uuid4().hex[:12]}/file/"


def _fails(result: subprocess.CompletedProcess[bytes], *fragments: str) -> None:
    assert result.returncode == 1
    assert result.stdout == b""
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0]


def test_put_stat_get_round_trip_through_files(
    config_file: Path, path: str, tmp_path: Path
) -> None:
    content = os.urandom(2 * DEFAULT_BLOCK_SIZE + 123)
    local = tmp_path / "firmware.bin"
    local.write_bytes(content)

    put = run_m2m("blob", "put", path, str(local), config=config_file)
    expected_stat = {
        "name": "firmware.bin",
        "type": "application/octet-stream",
        "size": len(content),
        "block_size": DEFAULT_BLOCK_SIZE,
        "ok": True,
    }
    assert json.loads(put.stdout) == expected_stat
    assert put.stderr == b"", "no progress bar when stderr is not a terminal"
    assert json.loads(run_m2m("blob", "stat", path, config=config_file).stdout) == expected_stat

    out = tmp_path / "out.bin"
    got = run_m2m("blob", "get", path, str(out), config=config_file)
    assert got.stdout == b""
    assert out.read_bytes() == content
    assert run_m2m("blob", "get", path, config=config_file).stdout == content
    assert run_m2m("blob", "get", path, "-", config=config_file).stdout == content


def test_put_from_stdin_takes_the_node_name(config_file: Path, path: str) -> None:
    put = run_m2m("blob", "put", path, "-", config=config_file, input=b"hello\n")
    assert json.loads(put.stdout)["name"] == "file"
    assert run_m2m("blob", "get", path, config=config_file).stdout == b"hello\n"


def test_the_type_is_guessed_from_the_name_or_given(
    config_file: Path, path: str, tmp_path: Path
) -> None:
    local = tmp_path / "settings.json"
    local.write_text("{}")
    guessed = run_m2m("blob", "put", path, str(local), config=config_file)
    assert json.loads(guessed.stdout)["type"] == "application/json"
    given = run_m2m("blob", "put", path, str(local), "--type", "x/custom", config=config_file)
    assert json.loads(given.stdout)["type"] == "x/custom"


async def test_get_refuses_an_incomplete_file(
    config_file: Path, database: Database, path: str, tmp_path: Path
) -> None:
    upload = await open_blob(database, path, "w")
    await upload.write(b"half of it")
    await upload.abandon()

    stat = run_m2m("blob", "stat", path, config=config_file)
    assert json.loads(stat.stdout)["ok"] is False
    out = tmp_path / "out.bin"
    _fails(
        run_m2m("blob", "get", path, str(out), config=config_file, check=False),
        f"file {path} is incomplete",
    )
    assert not out.exists(), "nothing is written for a refused file"


def test_rm_removes_the_file(config_file: Path, path: str) -> None:
    run_m2m("blob", "put", path, "-", config=config_file, input=b"x")
    assert run_m2m("blob", "rm", path, config=config_file).stdout == b""
    _fails(run_m2m("blob", "stat", path, config=config_file, check=False), f"no file at {path}")


@pytest.mark.parametrize("command", ["get", "stat", "rm"])
def test_commands_on_a_missing_file_fail_in_one_line(
    config_file: Path, path: str, command: str
) -> None:
    _fails(
        run_m2m("blob", command, path, config=config_file, check=False),
        f"no file at {path}",
        "does not exist",
    )


def test_commands_on_a_node_that_is_not_a_file_fail_in_one_line(
    config_file: Path, path: str
) -> None:
    run_m2m("registry", "set", path, "x", "1", config=config_file)
    for command in ("get", "stat", "rm"):
        _fails(
            run_m2m("blob", command, path, config=config_file, check=False),
            f"registry node {path} is not a file",
        )


def test_local_file_errors_fail_in_one_line(config_file: Path, path: str, tmp_path: Path) -> None:
    _fails(
        run_m2m("blob", "put", path, str(tmp_path / "absent.bin"), config=config_file, check=False),
        "absent.bin: cannot open: No such file or directory",
    )
    run_m2m("blob", "put", path, "-", config=config_file, input=b"x")
    _fails(
        run_m2m(
            "blob", "get", path, str(tmp_path / "no-dir" / "out"), config=config_file, check=False
        ),
        "out: cannot open: No such file or directory",
    )


@pytest.mark.parametrize(
    "command", [["put", "-"], ["get"], ["stat"], ["rm"]], ids=lambda command: command[0]
)
def test_bad_paths_fail_in_one_line(config_file: Path, command: list[str]) -> None:
    _fails(
        run_m2m(
            "blob",
            command[0],
            "firmware/x",
            *command[1:],
            config=config_file,
            check=False,
            input=b"",
        ),
        "invalid registry path 'firmware/x'",
        "must be absolute",
    )
