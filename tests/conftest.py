"""Fixtures on the real local stack: Cassandra and NSQ started by ``m2m stack up``.

Each test run gets a fresh keyspace and NSQ topic prefix (both removed at the end),
described by a config file that both in-process code and ``m2m`` subprocesses use, so
tests see what a user would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from cassandra.cluster import Cluster, Session

from m2m.cassandra import Database, connect_session
from m2m.config import Config, NsqConfig, load_config
from m2m.endpoints import parse_endpoint
from m2m.registry.device import device_id_for
from m2m.schema import drop_keyspace
from m2m.stack.nsq import HOST as NSQD_HOST
from m2m.stack.nsq import NSQD_HTTP_PORT, delete_topics
from m2m.timeseries import Record, TimeSeries

M2M = str(Path(sys.executable).parent / "m2m")
WAIT = 30.0
"""Seconds a test waits for something the platform does in the background."""

T = TypeVar("T")


def run_m2m(
    *args: str, config: Path | None = None, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the ``m2m`` command as a person would; output captured."""
    command = [M2M, *(["--config", str(config)] if config else []), *args]
    result = subprocess.run(command, capture_output=True, input=input, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} exited {result.returncode}:\n"
            f"{result.stdout.decode(errors='replace')}{result.stderr.decode(errors='replace')}"
        )
    return result


async def channel_stats(nsq: NsqConfig, topic: str, channel: str) -> dict[str, Any]:
    """nsqd's counters (depth, in flight, requeued, ...) for a channel of a platform topic."""
    nsq_topic = nsq.topic_prefix + topic
    query = urllib.parse.urlencode({"format": "json", "topic": nsq_topic, "channel": channel})
    url = f"http://{NSQD_HOST}:{NSQD_HTTP_PORT}/stats?{query}"

    def fetch() -> Any:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    stats = await asyncio.to_thread(fetch)
    for found in stats["topics"] or []:
        for stats_of_channel in found["channels"]:
            if stats_of_channel["channel_name"] == channel:
                return dict(stats_of_channel)
    raise AssertionError(f"nsqd has no channel {nsq_topic}/{channel}")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    what: str,
    timeout: float = WAIT,
) -> T:
    """Call ``probe`` until ``accept`` takes its result; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what}: not reached in {timeout:.0f} s; last seen {value!r:.600}"
            )
        await asyncio.sleep(0.1)


def trusting(ca: Path) -> ssl.SSLContext:
    """A device's TLS context trusting the receivers' CA (``m2m tls init``'s ``ca.pem``)."""
    return ssl.create_default_context(cafile=str(ca))


async def stored(database: Database, ident: str, record_type: str) -> list[Record]:
    """The device's records of ``record_type``, once there is one."""
    timeseries = TimeSeries(database)

    async def probe() -> list[Record]:
        records = timeseries.records(f"dev-{device_id_for(ident)}", record_type)
        return [record async for record in records]

    return await eventually(probe, bool, f"a {record_type} record of {ident}")


@pytest.fixture(scope="session")
def stack() -> None:
    """The local stack, up and healthy (started if needed; left running for the next run)."""
    run_m2m("stack", "up")


@contextlib.contextmanager
def fresh_platform(directory: Path, label: str = "") -> Iterator[Path]:
    """A config file naming a fresh keyspace with the schema applied, and NSQ topics of
    its own; both removed on the way out."""
    keyspace = f"m2m_test_{label}{os.getpid()}_{uuid.uuid4().hex[:6]}"
    path = directory / "m2m.yaml"
    # Its own NSQ topics too: another test run, or `m2m dev`, must not take its messages.
    settings = {"cassandra": {"keyspace": keyspace}, "nsq": {"topic_prefix": f"{keyspace}."}}
    path.write_text(yaml.safe_dump(settings))
    run_m2m("schema", "apply", config=path)
    try:
        yield path
    finally:
        config = load_config(path)
        drop_keyspace(config.cassandra)
        delete_topics(config.nsq.topic_prefix)


@pytest.fixture(scope="session")
def config_file(stack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The test run's platform: a config file naming a fresh keyspace and topics."""
    with fresh_platform(tmp_path_factory.mktemp("config")) as path:
        yield path


@pytest.fixture(scope="session")
def config(config_file: Path) -> Config:
    return load_config(config_file)


@pytest.fixture(scope="session")
def _session(config: Config) -> Iterator[tuple[Cluster, Session]]:
    cluster, session = connect_session(config.cassandra)
    yield cluster, session
    cluster.shutdown()


@pytest.fixture
def database(config: Config, _session: tuple[Cluster, Session]) -> Database:
    """A Database on the test keyspace (one driver session shared by the whole run)."""
    cluster, session = _session
    return Database(cluster, session, config.cassandra.keyspace, config.cassandra.max_in_flight)


def config_with_own_topics(config_file: Path, directory: Path) -> Path:
    """A config for platforms on the test keyspace with NSQ topics of their own.

    Platforms started on it share no work with the others: their storage worker is the
    only one storing what their receiver gets.
    """
    settings = yaml.safe_load(config_file.read_text())
    nsq = settings.setdefault("nsq", {})
    nsq["topic_prefix"] = f"{nsq.get('topic_prefix', '')}{uuid.uuid4().hex[:6]}."
    path = directory / f"own-topics-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


FAST_TIMING = {
    "ping_after_silence": 2,
    "ping_quiet_period": 1,
    "setting_resend_interval": 1,
    "identification_timeout": 2,
    "disconnect_after_silence": 4,
    "sweep_interval": 0.2,
    "heartbeat_interval": 1,
}


@dataclass
class Platform:
    """A running ``m2m serve``: its config file and the ports its receivers listen on."""

    config_file: Path
    config: Config
    m2mp_port: int
    alip_port: int
    web_port: int
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int | None = None
    """Where it serves /metrics, /healthz and /readyz, if started with ``metrics=True``."""

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def metrics_url(self) -> str:
        assert self.metrics_port is not None, "started without metrics=True"
        return f"http://127.0.0.1:{self.metrics_port}"

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def start_platform(
    base_config: Path,
    directory: Path,
    only: str | None = None,
    metrics: bool = False,
    tls: Path | None = None,
    client_ca: Path | None = None,
    **receivers: object,
) -> Platform:
    """``m2m serve`` on free ports with fast session timings, ready for devices; with
    ``metrics``, its operations port too (``metrics.listen``); with ``tls`` (a directory
    ``m2m tls init`` filled), the receivers serve TLS with its server certificate, and with
    ``client_ca`` require device certificates that CA signed. A receiver's ``listen`` may be
    given (``m2mp={"listen": [...]}``): then its port is its first endpoint's, and start-up
    waits for every one of them."""
    settings = yaml.safe_load(base_config.read_text())
    m2mp_port, alip_port, web_port = free_port(), free_port(), free_port()
    settings["web"] = {"listen": f"tcp:{web_port}:interface=127.0.0.1"}
    metrics_port = free_port() if metrics else None
    if metrics_port is not None:
        settings["metrics"] = {"listen": f"tcp:{metrics_port}:interface=127.0.0.1"}
    kind = f"ssl:privateKey={tls}/server.key:certKey={tls}/server.pem" if tls else "tcp"
    verified = {"client_ca": str(client_ca)} if client_ca else {}
    settings["receivers"] = {
        "m2mp": {"listen": f"{kind}:port={m2mp_port}:interface=127.0.0.1", **verified},
        "alip": {"listen": f"{kind}:port={alip_port}:interface=127.0.0.1", **verified},
        "timing": FAST_TIMING,
        **receivers,
    }
    settings["nsq"] = {**settings.get("nsq", {}), "lookupd_poll_interval": 1}
    config_file = directory / f"serve-{m2mp_port}.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    log = directory / f"serve-{m2mp_port}.log"
    command = [M2M, "--config", str(config_file), "serve", *(["--only", only] if only else [])]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    config = load_config(config_file)
    served = {name: [parse_endpoint(listen).port or 0
                     for listen in getattr(config.receivers, name).endpoints]
              for name in ("m2mp", "alip")}  # fmt: skip
    platform = Platform(
        config_file,
        config,
        served["m2mp"][0],
        served["alip"][0],
        web_port,
        process,
        log,
        metrics_port,
    )
    listening = [p for name, ports in (*served.items(), ("web", [web_port]))
                 if only is None or name in only for p in ports]  # fmt: skip
    if metrics_port is not None:
        listening.append(metrics_port)
    deadline = time.monotonic() + 60
    while not all(_accepts(port) for port in listening):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"m2m serve did not start:\n{log.read_text()}")
        time.sleep(0.1)
    return platform


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@pytest.fixture(scope="session")
def platform(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One ``m2m serve`` with every service, shared by the end-to-end tests."""
    running = start_platform(config_file, tmp_path_factory.mktemp("platform"))
    yield running
    running.stop()


@dataclass(frozen=True)
class WebUser:
    """A user of the platform, with an API token (and a password for the console)."""

    name: str
    password: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_web_user(config: Path, domain: str = "default", admin: bool = False) -> WebUser:
    """A new user (in ``domain``, created if needed), made with the ``m2m`` command."""
    name = f"user-{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    if run_m2m("domain", "create", domain, config=config, check=False).returncode not in (0, 1):
        raise AssertionError(f"m2m domain create {domain} failed")
    run_m2m("user", "create", name, "--domain", domain, *(["--admin"] if admin else []),
            config=config)  # fmt: skip
    run_m2m("user", "passwd", name, config=config, input=f"{password}\n".encode())
    token = run_m2m("user", "token", "create", name, config=config).stdout.decode().strip()
    return WebUser(name, password, token)


@pytest.fixture(scope="session")
def web_admin(config_file: Path) -> WebUser:
    """An admin of the test run's platform: sees every domain."""
    return make_web_user(config_file, admin=True)


@pytest.fixture
async def http(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the session platform's web service, without credentials: each request
    says who it is."""
    async with httpx.AsyncClient(base_url=platform.web_url, timeout=WAIT) as client:
        yield client


@pytest.fixture
def admin(web_admin: WebUser) -> dict[str, str]:
    """Headers that make a request the admin's."""
    return web_admin.headers
