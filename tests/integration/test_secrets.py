"""Secrets in the configuration, through the ``m2m`` command as a person runs it.

The Cassandra password comes from the environment or from a file of its own, reaches the
driver (the local Cassandra has no authentication, so it accepts any: what is checked here
is that the connection is made with the credentials set), and shows nowhere in what the
commands print, whether they succeed, find problems or fail.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_m2m

PROBLEMS_FOUND = 3


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """A password only this test knows, in ``$M2M_TEST_CASSANDRA_PASSWORD``."""
    value = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("M2M_TEST_CASSANDRA_PASSWORD", value)
    return value


def config_with_password(config_file: Path, directory: Path, password: object) -> Path:
    """The test platform's config file with a username and ``password`` (as written)."""
    settings = yaml.safe_load(config_file.read_text())
    settings["cassandra"] = {**settings["cassandra"], "username": "m2m", "password": password}
    path = directory / "secret.yaml"
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(settings))
    return path


def printed(*args: str, config: Path) -> tuple[int, str]:
    result = run_m2m(*args, config=config, check=False)
    return result.returncode, (result.stdout + result.stderr).decode()


@pytest.mark.parametrize("form", ["environment", "file"])
def test_status_connects_with_the_password_and_never_prints_it(
    config_file: Path, tmp_path: Path, secret: str, form: str
) -> None:
    if form == "environment":
        password: object = "${M2M_TEST_CASSANDRA_PASSWORD}"
    else:
        (tmp_path / "cassandra-password").touch(mode=0o600)
        (tmp_path / "cassandra-password").write_text(f"{secret}\n")
        password = {"file": "cassandra-password"}
    path = config_with_password(config_file, tmp_path, password)
    path.chmod(0o644)  # it holds no secret itself

    code, output = printed("status", config=path)
    # Nothing serves this platform's devices here: the services' checks fail, exit 3.
    assert code == PROBLEMS_FOUND, output
    assert "cassandra" in output and "1 of 1 node(s) up" in output
    code_json, output_json = printed("status", "--json", config=path)
    assert code_json == PROBLEMS_FOUND, output_json
    code, stack_output = printed("stack", "status", config=path)
    assert code == 0, stack_output
    for text in (output, output_json, stack_output):
        assert secret not in text


def test_errors_about_a_secret_never_print_it(
    config_file: Path, tmp_path: Path, secret: str
) -> None:
    path = config_with_password(config_file, tmp_path, secret)
    path.chmod(0o644)
    code, output = printed("status", config=path)
    assert code == 1
    assert output == (
        f"Error: {path}: holds a password and is readable by every user: chmod o-r {path}\n"
    )
    path.chmod(0o600)
    code, output = printed("stack", "status", config=path)
    assert code == 0 and secret not in output

    unset = config_with_password(config_file, tmp_path, "${M2M_TEST_UNSET_PASSWORD}")
    code, output = printed("status", config=unset)
    assert code == 1
    assert output == (
        f"Error: {unset}: cassandra.password: "
        "environment variable M2M_TEST_UNSET_PASSWORD is not set\n"
    )
