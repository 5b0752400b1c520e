"""``m2m status`` against the real stack and a running ``m2m serve``, run as a person runs it.

The platform's config file names the ports its services listen on, so ``m2m status`` with
that file checks that very platform; a copy naming a port nothing listens on (or a
Cassandra, an nsqlookupd that is not there) must say so, one FAIL line each, and exit 3.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from m2m.bus.envelope import Envelope
from m2m.config import load_config
from m2m.schema import load_migrations
from m2m.stack.nsq import HOST, NSQD_HTTP_PORT
from tests.conftest import (
    Platform,
    config_with_own_topics,
    eventually,
    free_port,
    run_m2m,
    start_platform,
)

PROBLEMS_FOUND = 3


@pytest.fixture(scope="module")
def platform(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """Every service of ``m2m serve``, on NSQ topics of its own, with an operations port."""
    directory = tmp_path_factory.mktemp("status")
    own = config_with_own_topics(config_file, directory)
    metrics = {"listen": f"tcp:{free_port()}:interface=127.0.0.1"}
    running = start_platform(_changed(own, directory, metrics=metrics), directory)
    yield running
    running.stop()


def _status(config: Path) -> tuple[int, dict[str, dict[str, str]]]:
    """``m2m status --json``: its exit status and the checks by name."""
    result = run_m2m("status", "--json", config=config, check=False)
    assert result.returncode in (0, PROBLEMS_FOUND), result.stderr.decode()
    checks = [json.loads(line) for line in result.stdout.decode().splitlines()]
    return result.returncode, {check.pop("check"): check for check in checks}


def _changed(config: Path, directory: Path, **sections: dict[str, Any]) -> Path:
    """A copy of ``config`` with some keys of some sections changed."""
    settings = yaml.safe_load(config.read_text())
    for section, values in sections.items():
        settings[section] = {**settings.get(section, {}), **values}
    path = directory / f"changed-{free_port()}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def test_a_running_platform_is_all_ok(platform: Platform, tmp_path: Path) -> None:
    returncode, checks = _status(_changed(platform.config_file, tmp_path, metrics={"listen": None}))
    assert returncode == 0, checks
    assert {name: check["status"] for name, check in checks.items()} == dict.fromkeys(checks, "OK")
    latest = max(migration.version for migration in load_migrations())
    keyspace = platform.config.cassandra.keyspace
    assert checks["schema"]["detail"] == (
        f"keyspace {keyspace} at version {latest} (latest), nodes agree"
    )
    assert checks["cassandra"]["detail"].startswith("1 of 1 node(s) up (127.0.0.1), Cassandra 5.")
    assert checks["nsqlookupd 127.0.0.1:4161"]["detail"] == "knows 1 nsqd"
    assert checks["nsqd 127.0.0.1:4151"]["detail"] == "answers"
    assert "storage: 0 waiting, 1 consumer(s)" in checks["topic storage"]["detail"]
    assert (
        checks["m2mp receiver"]["detail"] == f"127.0.0.1:{platform.m2mp_port} accepts connections"
    )
    assert (
        checks["alip receiver"]["detail"] == f"127.0.0.1:{platform.alip_port} accepts connections"
    )
    assert checks["web"]["detail"] == "/healthz: ok"
    assert "metrics" not in checks  # metrics.listen unset
    # For people: one line each, the same as `m2m stack status` shows.
    lines = run_m2m("status", config=platform.config_file).stdout.decode().splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    m2mp = f"m2mp receiver +OK +127.0.0.1:{platform.m2mp_port} accepts connections"
    assert [line for line in lines if re.fullmatch(m2mp, line)] != []


def test_what_does_not_answer_is_a_fail_line_each(platform: Platform, tmp_path: Path) -> None:
    m2mp, cassandra, lookupd = free_port(), free_port(), free_port()
    broken = _changed(
        platform.config_file,
        tmp_path,
        receivers={"m2mp": {"listen": f"tcp:{m2mp}:interface=127.0.0.1"}},
        cassandra={"port": cassandra},
        nsq={"lookupd_http_addresses": ["127.0.0.1:4161", f"127.0.0.1:{lookupd}"]},
    )
    returncode, checks = _status(broken)
    assert returncode == PROBLEMS_FOUND
    assert checks["m2mp receiver"] == {
        "status": "FAIL",
        "detail": f"nothing listens on 127.0.0.1:{m2mp} (receivers.m2mp.listen)",
    }
    assert checks["cassandra"]["status"] == "FAIL"
    assert checks["cassandra"]["detail"].startswith(
        f"cannot use Cassandra at 127.0.0.1:{cassandra}"
    )
    assert "schema" not in checks  # not checked without Cassandra
    assert checks[f"nsqlookupd 127.0.0.1:{lookupd}"] == {
        "status": "FAIL",
        "detail": "does not answer: Connection refused",
    }
    # The rest still answers.
    for name in ("nsqlookupd 127.0.0.1:4161", "nsqd 127.0.0.1:4151", "alip receiver", "web"):
        assert checks[name]["status"] == "OK", name


def test_a_topic_deeper_than_max_depth_fails(config_file: Path, tmp_path: Path) -> None:
    own = _changed(config_with_own_topics(config_file, tmp_path), tmp_path, nsq={"max_depth": 2})
    orphan = f"{load_config(own).nsq.topic_prefix}orphan"
    for n in range(3):
        body = Envelope.make("orphan", "lost", "tests", n=n).to_json()
        query = urllib.parse.urlencode({"topic": orphan})
        url = f"http://{HOST}:{NSQD_HTTP_PORT}/pub?{query}"
        urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10).close()
    returncode, checks = _status(own)
    assert returncode == PROBLEMS_FOUND
    assert checks["topic orphan"]["status"] == "FAIL"
    assert checks["topic orphan"]["detail"].startswith(
        "orphan: 3 messages held by the topic itself: no channel reads it"
    )


async def test_the_operations_port_says_the_platform_is_ready(platform: Platform) -> None:
    async def metrics() -> dict[str, str]:
        return _status(platform.config_file)[1]["metrics"]

    # Ready once its first readiness round is done, soon after it started.
    ready = await eventually(metrics, lambda check: check["status"] == "OK", "ready")
    assert re.fullmatch(r"/readyz: ready \(.*cassandra.*nsqd.* ok\)", ready["detail"]), ready
    returncode, _ = _status(platform.config_file)
    assert returncode == 0


class _Readiness(BaseHTTPRequestHandler):
    """``/readyz`` as the contract has it, ready or not as the server's ``ready`` says."""

    def do_GET(self) -> None:
        ready = getattr(self.server, "ready", False)
        checks = {"cassandra": "ok", "nsqd": "ok" if ready else "no nsqd answers"}
        body = json.dumps({"status": "ready" if ready else "unready", "checks": checks})
        self.send_response(200 if ready else 503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *_: Any) -> None:
        pass


def test_metrics_readyz_is_checked_when_metrics_listen_is_set(
    platform: Platform, tmp_path: Path
) -> None:
    """Against a stand-in server speaking the ``/readyz`` contract: an unready ``m2m
    serve`` would need Cassandra or nsqd down, which the other test runs share."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Readiness)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = _changed(
            platform.config_file,
            tmp_path,
            metrics={"listen": f"tcp:{server.server_port}:interface=127.0.0.1"},
        )
        server.ready = False  # type: ignore[attr-defined]
        returncode, unready = _status(config)
        server.ready = True  # type: ignore[attr-defined]
        ready_returncode, ready = _status(config)
    finally:
        server.shutdown()
    assert returncode == PROBLEMS_FOUND
    assert unready["metrics"] == {
        "status": "FAIL",
        "detail": "/readyz: unready: nsqd: no nsqd answers",
    }
    assert ready_returncode == 0
    assert ready["metrics"] == {"status": "OK", "detail": "/readyz: ready (cassandra, nsqd ok)"}


def test_stack_status_answers_the_same_way(stack: None) -> None:
    result = run_m2m("stack", "status")
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert re.fullmatch(r"nsqd +OK +pid \d+ serving 127\.0\.0\.1:4150 \(nsqd TCP\), .*", lines[2])
    checks = [json.loads(line) for line in run_m2m("stack", "status", "--json").stdout.splitlines()]
    assert [check["check"] for check in checks][:3] == ["nsqlookupd", "nsqd", "cassandra1"]
    assert {check["status"] for check in checks} == {"OK"}
