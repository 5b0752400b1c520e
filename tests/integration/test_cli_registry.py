"""``m2m registry`` as a person uses it: stdout, stderr and exit codes of every command."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import run_m2m


@pytest.fixture
def base() -> str:
    return f"/test-cli-{uuid.uuid4().hex[:12]}/"


def _fails(result: subprocess.CompletedProcess[bytes], *fragments: str) -> None:
    """Exit 1 with one line on stderr holding every fragment, and nothing on stdout."""
    assert result.returncode == 1
    assert result.stdout == b""
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0]


def _stdout(*args: str, config: Path, input: bytes | None = None) -> str:
    return run_m2m("registry", *args, config=config, input=input).stdout.decode()


def test_set_creates_the_nodes_and_get_prints_the_values(config_file: Path, base: str) -> None:
    path = f"{base}device/abc"
    assert _stdout("set", path, "ident", "1234", config=config_file) == ""
    _stdout("set", path, "owner", "é", config=config_file)
    assert json.loads(_stdout("get", path, config=config_file)) == {"ident": "1234", "owner": "é"}
    assert _stdout("ls", base, config=config_file) == "device\n"


def test_unset_removes_one_value(config_file: Path, base: str) -> None:
    _stdout("set", base, "a", "1", config=config_file)
    _stdout("set", base, "b", "2", config=config_file)
    assert _stdout("unset", base, "a", config=config_file) == ""
    assert json.loads(_stdout("get", base, config=config_file)) == {"b": "2"}


def test_ls_lists_hidden_children_only_with_all(config_file: Path, base: str) -> None:
    for child in ("b", ".hidden", "a"):
        _stdout("set", f"{base}{child}", "x", "1", config=config_file)
    assert _stdout("ls", base, config=config_file) == "a\nb\n"
    assert _stdout("ls", base, "--all", config=config_file) == ".hidden\na\nb\n"


def test_tree_indents_names_by_depth(config_file: Path, base: str) -> None:
    _stdout("set", f"{base}a/deep", "x", "1", config=config_file)
    _stdout("set", f"{base}b", "x", "1", config=config_file)
    _stdout("set", f"{base}.h", "x", "1", config=config_file)
    assert _stdout("tree", base, config=config_file) == f"{base}\n  a\n    deep\n  b\n"
    assert "  .h\n" in _stdout("tree", base, "--all", config=config_file)


def test_rm_soft_then_hard_and_cleanup(config_file: Path, base: str) -> None:
    _stdout("set", f"{base}a/b", "x", "1", config=config_file)
    _stdout("set", f"{base}c", "x", "1", config=config_file)
    assert json.loads(_stdout("rm", f"{base}a", config=config_file)) == {"deleted": 2}
    _fails(
        run_m2m("registry", "get", f"{base}a", config=config_file, check=False),
        f"{base}a/",
        "does not exist",
    )
    assert json.loads(_stdout("rm", base, "--hard", config=config_file)) == {"deleted": 2}
    assert json.loads(_stdout("cleanup", config=config_file))["removed"] >= 2
    assert json.loads(_stdout("cleanup", config=config_file)) == {"removed": 0}


def test_export_then_import_through_a_file_and_stdin(
    config_file: Path, base: str, tmp_path: Path
) -> None:
    _stdout("set", f"{base}source/a", "x", "1", config=config_file)
    _stdout("set", f"{base}source", "top", "yes", config=config_file)
    exported = _stdout("export", f"{base}source", config=config_file)
    document = json.loads(exported)
    assert document == {
        "values": {"top": "yes"},
        "children": {"a": {"values": {"x": "1"}, "children": {}}},
    }
    saved = tmp_path / "tree.json"
    saved.write_text(exported)

    imported = _stdout("import", f"{base}from-file", str(saved), config=config_file)
    assert json.loads(imported) == {"imported": 2}
    piped = _stdout("import", f"{base}from-stdin", "-", config=config_file, input=exported.encode())
    assert json.loads(piped) == {"imported": 2}
    for copy in ("from-file", "from-stdin"):
        assert json.loads(_stdout("export", f"{base}{copy}", config=config_file)) == document


@pytest.mark.parametrize(
    "command",
    [["get"], ["ls"], ["tree"], ["export"], ["rm"], ["rm", "--hard"], ["unset", "NAME"]],
    ids=lambda command: " ".join(command),
)
def test_commands_on_a_missing_node_fail_in_one_line(
    config_file: Path, base: str, command: list[str]
) -> None:
    args = [command[0], f"{base}missing", *command[1:]]
    _fails(
        run_m2m("registry", *args, config=config_file, check=False),
        f"{base}missing/",
        "does not exist",
    )


@pytest.mark.parametrize(
    "command",
    [
        ["get"],
        ["ls"],
        ["tree"],
        ["export"],
        ["rm"],
        ["set", "N", "V"],
        ["unset", "N"],
        ["import", "-"],
    ],
    ids=lambda command: command[0],
)
def test_bad_paths_fail_in_one_line(config_file: Path, command: list[str]) -> None:
    args = [command[0], "/device/../etc", *command[1:]]
    _fails(
        run_m2m("registry", *args, config=config_file, check=False, input=b"{}"),
        "invalid registry path '/device/../etc'",
        "'..' segment",
    )


def test_import_errors_name_the_file_or_the_place(
    config_file: Path, base: str, tmp_path: Path
) -> None:
    _fails(
        run_m2m(
            "registry", "import", base, str(tmp_path / "nope.json"), config=config_file, check=False
        ),
        "nope.json: cannot read",
        "No such file",
    )
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    _fails(
        run_m2m("registry", "import", base, str(bad_json), config=config_file, check=False),
        "bad.json: not valid JSON",
    )
    _fails(
        run_m2m(
            "registry",
            "import",
            base,
            "-",
            config=config_file,
            check=False,
            input=b'{"children": {"a": {"values": {"n": 1}}}}',
        ),
        f"{base}a/: 'values' must be an object of strings",
    )
    _fails(run_m2m("registry", "get", base, config=config_file, check=False), "does not exist")
