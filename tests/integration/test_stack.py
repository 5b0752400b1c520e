"""The local stack: idempotent start, health, and stopping only what it started."""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
from pathlib import Path

import pytest
import yaml

from m2m.stack.process import Endpoint, ServiceProcess, StackError
from tests.conftest import run_m2m


def _pids(status_output: str) -> dict[str, str]:
    pids = {}
    for line in status_output.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[2] == "pid":
            pids[fields[0]] = fields[3]
    return pids


def test_up_is_idempotent_and_leaves_a_healthy_stack(stack: None) -> None:
    first = run_m2m("stack", "status")
    again = run_m2m("stack", "up")
    second = run_m2m("stack", "status")
    assert set(_pids(first.stdout.decode())) == {"nsqlookupd", "nsqd", "cassandra1"}
    assert _pids(first.stdout.decode()) == _pids(second.stdout.decode())
    assert _pids(again.stdout.decode()) == _pids(first.stdout.decode())
    assert "127.0.0.1:9042 (CQL)" in again.stdout.decode()
    assert "127.0.0.1:4150 (nsqd TCP)" in again.stdout.decode()


def test_status_fails_while_a_service_is_down_and_start_brings_it_back(stack: None) -> None:
    before = _pids(run_m2m("stack", "status").stdout.decode())
    assert run_m2m("stack", "stop", "nsqd").stdout.decode().strip() == "nsqd: stopped"
    try:
        down = run_m2m("stack", "status", check=False)
        assert down.returncode == 3  # the check ran and found a problem
        assert re.search(r"^nsqd\s+FAIL\s+stopped", down.stdout.decode(), re.M)
    finally:
        run_m2m("stack", "start", "nsqd")
    after = _pids(run_m2m("stack", "status").stdout.decode())
    assert after["nsqd"] != before["nsqd"]
    assert after["cassandra1"] == before["cassandra1"]


def test_unknown_service_name_is_a_clear_error(stack: None) -> None:
    result = run_m2m("stack", "stop", "redis", check=False)
    assert result.returncode == 1
    assert "no service named 'redis'" in result.stderr.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_server(tmp_path: Path, port: int) -> ServiceProcess:
    return ServiceProcess(
        name="web",
        command=[sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                 "--directory", str(tmp_path), str(port)],
        run_dir=tmp_path / "run",
        endpoints=[Endpoint("127.0.0.1", port, "http")],
        is_healthy=lambda: Endpoint("127.0.0.1", port, "http").is_open(),
        marker=str(tmp_path),
        start_timeout=30,
    )  # fmt: skip


def test_a_service_is_started_once_and_stopped_by_its_pid(tmp_path: Path) -> None:
    service = _http_server(tmp_path, _free_port())
    pid = service.start()
    service.wait_healthy()
    assert service.start() == pid
    assert service.pid() == pid
    assert service.stop() is True
    assert service.pid() is None
    assert service.stop() is False


def test_a_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    service = _http_server(tmp_path, _free_port())
    service.run_dir.mkdir(parents=True)
    service.pid_file.write_text(f"{os.getpid()}\n")  # a live process that is not ours
    assert service.pid() is None
    assert service.stop() is False  # and this test process is still alive


def test_a_taken_port_is_reported_by_name(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StackError, match=f"port 127.0.0.1:{port} .* already taken"):
            _http_server(tmp_path, port).start()


def test_a_failed_start_points_at_the_log(tmp_path: Path) -> None:
    service = ServiceProcess(
        name="broken",
        command=[
            sys.executable,
            "-c",
            f"import sys; print('boom', {str(tmp_path)!r}); sys.exit(3)",
        ],
        run_dir=tmp_path / "run",
        endpoints=[],
        is_healthy=lambda: False,
        marker=str(tmp_path),
        start_timeout=30,
    )
    service.start()
    with pytest.raises(StackError, match="broken exited during start-up") as raised:
        service.wait_healthy()
    assert str(service.log_file) in str(raised.value)
    assert "boom" in str(raised.value)


@pytest.mark.parametrize(
    ("available", "missing"), [((), "java"), (("java",), "go"), (("java", "go"), "mvn")]
)
def test_a_missing_toolchain_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, available: tuple[str, ...], missing: str
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in available:
        found = shutil.which(tool)
        assert found is not None, f"{tool} must be installed for this test"
        (bin_dir / tool).symlink_to(found)
    config = tmp_path / "m2m.yaml"
    config.write_text(
        yaml.safe_dump(
            {"stack": {"state_dir": str(tmp_path / "state"), "cache_dir": str(tmp_path / "cache")}}
        )
    )
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    result = run_m2m("stack", "up", config=config, check=False)
    assert result.returncode == 1
    assert f"'{missing}' is not installed or not on PATH" in result.stderr.decode()
