"""The platform against the secure stack: Cassandra with passwords, permissions and TLS,
nsqd with TLS and client certificates (``m2m stack up --secure``).

The secure stack runs beside the plain one the other tests use, on its own loopback
address and state directory, and is stopped at the end. Devices are served end to end
through it; a wrong password, a missing CA or an expired certificate is one clear line;
the platform's role cannot touch another keyspace; and nothing any ``m2m`` command or
service printed holds a password or a private key.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import ssl
import stat
import struct
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cassandra import Unauthorized
from cassandra.cluster import Cluster, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from m2m.cassandra import Database, connect_session
from m2m.config import load_config
from m2m.receivers.alip.client import ALIPClient
from m2m.receivers.m2mp.client import M2MPClient
from m2m.stack.nsq import NSQD_HTTP_PORT, NSQD_TCP_PORT
from tests.conftest import M2M, Platform, run_m2m, start_platform, stored, trusting

ADDRESS = "127.0.2.1"
"""The secure stack's: the plain one keeps 127.0.0.1."""


@dataclass
class SecureStack:
    state_dir: Path
    stack_config: Path
    """What ``m2m stack up --secure`` ran with."""
    platform_config: Path
    """The platform's: the stack's ``m2m.yaml`` with topics of its own."""
    printed: list[str] = field(default_factory=list)
    """Everything the ``m2m`` commands printed, for the secrets check."""
    logs: list[Path] = field(default_factory=list)
    """The services' logs, likewise."""

    def m2m(self, *args: str, config: Path | None = None, check: bool = True) -> Any:
        result = run_m2m(*args, config=config or self.platform_config, check=check)
        self.printed += [result.stdout.decode(errors="replace"), result.stderr.decode()]
        return result

    def variant(self, name: str, change: dict[str, Any]) -> Path:
        """The platform's config with some keys changed (``{"cassandra.password": …}``)."""
        settings = yaml.safe_load(self.platform_config.read_text())
        for key, value in change.items():
            section, name_in_section = key.rsplit(".", 1)
            target = settings
            for part in section.split("."):
                target = target[part]
            target[name_in_section] = value
        path = self.platform_config.with_name(f"{name}.yaml")
        path.write_text(yaml.safe_dump(settings))
        path.chmod(0o600)
        return path

    def secret(self, name: str) -> str:
        return (self.state_dir / "secrets" / name).read_text()


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureStack]:
    directory = tmp_path_factory.mktemp("secure")
    keyspace = f"m2m_secure_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    stack_config = directory / "stack.yaml"
    stack_config.write_text(
        yaml.safe_dump(
            {
                "cassandra": {"keyspace": keyspace},
                "stack": {
                    "state_dir": str(directory / "stack"),
                    "address": ADDRESS,
                    "cassandra_heap": "512M",
                },
            }
        )
    )
    secure = SecureStack(directory / "stack", stack_config, directory / "platform.yaml")
    try:
        up = secure.m2m("stack", "up", "--secure", config=stack_config)
        assert f"platform config: {secure.state_dir / 'm2m.yaml'}" in up.stdout.decode()
        settings = yaml.safe_load((secure.state_dir / "m2m.yaml").read_text())
        settings["nsq"]["topic_prefix"] = f"{keyspace}."
        secure.platform_config.write_text(yaml.safe_dump(settings))
        secure.m2m("schema", "apply")
        yield secure
    finally:
        secure.m2m("stack", "down", config=stack_config)
        shutil.rmtree(secure.state_dir / "cassandra1", ignore_errors=True)  # its data


@pytest.fixture(scope="module")
def device_tls(secure: SecureStack) -> Path:
    directory = secure.state_dir.parent / "device-tls"
    secure.m2m("tls", "init", "--dir", str(directory))
    return directory


@pytest.fixture(scope="module")
def platform(secure: SecureStack, device_tls: Path) -> Iterator[Platform]:
    """``m2m serve`` on the secure stack, its device ports inside TLS too."""
    directory = secure.state_dir.parent / "serve"
    directory.mkdir()
    running = start_platform(secure.platform_config, directory, tls=device_tls)
    secure.logs.append(running.log)
    yield running
    running.stop()


def superuser_session(secure: SecureStack) -> tuple[Cluster, Session]:
    config = load_config(secure.platform_config).cassandra
    password = SecretStr(secure.secret("cassandra-cassandra"))
    return connect_session(
        config.model_copy(update={"username": "cassandra", "password": password})
    )


def nsqd_clients(secure: SecureStack) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"format": "json", "include_clients": "true"})
    url = f"http://{ADDRESS}:{NSQD_HTTP_PORT}/stats?{query}"
    with urllib.request.urlopen(url, timeout=10) as response:
        stats = json.load(response)
    prefix = yaml.safe_load(secure.platform_config.read_text())["nsq"]["topic_prefix"]
    clients = list(stats.get("producers") or [])
    for topic in stats["topics"] or []:
        if topic["topic_name"].startswith(prefix):
            clients += [c for channel in topic["channels"] for c in channel["clients"]]
    return clients


def test_the_secure_stack_keeps_its_secrets_to_its_owner(secure: SecureStack) -> None:
    assert stat.S_IMODE((secure.state_dir / "secrets").stat().st_mode) == 0o700
    for secret in [*(secure.state_dir / "secrets").iterdir(),
                   *(secure.state_dir / "tls").glob("*.key")]:  # fmt: skip
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    written = yaml.safe_load((secure.state_dir / "m2m.yaml").read_text())
    assert written["cassandra"]["username"] == "m2m"
    assert written["cassandra"]["password"] == {
        "file": str(secure.state_dir / "secrets" / "cassandra-m2m")
    }
    status = secure.m2m("stack", "status", config=secure.stack_config)
    assert "127.0.2.1:4152 (nsqd HTTPS)" in status.stdout.decode()


def test_up_again_keeps_it_secure_and_plain_is_refused_while_it_runs(
    secure: SecureStack,
) -> None:
    password = secure.secret("cassandra-m2m")
    secure.m2m("stack", "up", "--secure", config=secure.stack_config)
    assert secure.secret("cassandra-m2m") == password
    plain = secure.m2m("stack", "up", config=secure.stack_config, check=False)
    assert plain.returncode == 1
    assert plain.stderr.decode() == (
        "Error: the stack runs secure; run 'm2m stack down' before changing it\n"
    )


async def test_devices_are_served_end_to_end_through_authenticated_encrypted_back_ends(
    secure: SecureStack, platform: Platform, device_tls: Path
) -> None:
    m2mp_ident, alip_ident = (f"sec:{uuid.uuid4().hex[:12]}" for _ in range(2))
    async with await M2MPClient.connect(
        "127.0.0.1", platform.m2mp_port, tls=trusting(device_tls / "ca.pem")
    ) as device:
        assert await device.identify(m2mp_ident)
        device.send_data("sen:loc", struct.pack(">ff", 48.5, 2.25))
        await device.ping(1)
    async with await ALIPClient.connect(
        "127.0.0.1", platform.alip_port, tls=trusting(device_tls / "ca.pem")
    ) as device:
        assert await device.identify(alip_ident)
        device.send_line("D T 21.5")
        await device.ping("1")
    cluster, session = connect_session(platform.config.cassandra)
    try:
        database = Database(cluster, session, platform.config.cassandra.keyspace, 64)
        assert (await stored(database, m2mp_ident, "sen:loc"))[0].data == {
            "lat": 48.5,
            "lon": 2.25,
        }
        assert (await stored(database, alip_ident, "sen:temp"))[0].data == "21.5"
    finally:
        cluster.shutdown()
    clients = nsqd_clients(secure)
    assert clients and all(client["tls"] for client in clients), clients
    status = secure.m2m("status", "--json", config=platform.config_file)
    checks = [json.loads(line) for line in status.stdout.decode().splitlines()]
    assert {check["status"] for check in checks} == {"OK"}, checks


def test_nsqd_refuses_a_client_without_tls(secure: SecureStack) -> None:
    with socket.create_connection((ADDRESS, NSQD_TCP_PORT), timeout=10) as connection:
        connection.sendall(b"  V2" + b"SUB storage plain\n")
        answer = connection.recv(1024)
    assert b"TLS required" in answer


def test_nsqd_refuses_tls_without_a_client_certificate(secure: SecureStack) -> None:
    identify = json.dumps({"tls_v1": True, "feature_negotiation": True}).encode()
    trusting_nsqd = trusting(secure.state_dir / "tls" / "ca.pem")  # but presenting nothing
    with socket.create_connection((ADDRESS, NSQD_TCP_PORT), timeout=10) as connection:
        connection.sendall(b"  V2IDENTIFY\n" + struct.pack(">l", len(identify)) + identify)
        size, _ = struct.unpack(">ll", connection.recv(8))
        assert json.loads(connection.recv(size - 4))["tls_v1"] is True  # upgrade now
        try:
            with trusting_nsqd.wrap_socket(connection, server_hostname=ADDRESS) as tls:
                answer = tls.recv(1024)
        except (ssl.SSLError, ConnectionError) as refused:
            answer = repr(refused).encode()
    assert b"certificate required" in answer or answer == b"", answer


@pytest.mark.parametrize("section", ["cassandra", "nsq"])
def test_a_missing_ca_is_one_clear_line(secure: SecureStack, section: str) -> None:
    missing = secure.state_dir / "nowhere" / "ca.pem"
    config = secure.variant(f"no-ca-{section}", {f"{section}.tls.ca": str(missing)})
    expected = f"{section}.tls.ca: cannot read {missing}: No such file or directory"
    assert_one_clear_line(secure, config, expected, using=section)


def test_a_wrong_password_is_one_clear_line(secure: SecureStack) -> None:
    config = secure.variant("wrong-password", {"cassandra.password": "not-the-password"})
    assert_one_clear_line(secure, config, "Bad credentials")


def test_an_expired_certificate_is_one_clear_line(secure: SecureStack) -> None:
    certificate = expired_certificate(secure.state_dir / "tls", secure.state_dir.parent)
    config = secure.variant(
        "expired", {"cassandra.tls.cert": str(certificate), "nsq.tls.cert": str(certificate)}
    )
    assert_one_clear_line(secure, config, f"cassandra.tls.cert: {certificate} expired on")


def test_the_platforms_role_cannot_touch_another_keyspace(secure: SecureStack) -> None:
    other = f"m2m_secure_other_{uuid.uuid4().hex[:8]}"
    cluster, session = superuser_session(secure)
    try:
        session.execute(
            f"CREATE KEYSPACE {other} WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute(f"CREATE TABLE {other}.secrets (k text PRIMARY KEY, v text)")
        own = load_config(secure.platform_config).cassandra
        platform_cluster, platform_session = connect_session(own)
        try:
            for statement in (
                f"SELECT * FROM {other}.secrets",
                f"INSERT INTO {other}.secrets (k, v) VALUES ('a', 'b')",
                f"DROP TABLE {other}.secrets",
                f"DROP KEYSPACE {other}",
                f"DROP KEYSPACE {own.keyspace}",  # nor its own
                "CREATE KEYSPACE m2m_secure_more WITH replication = "
                "{'class': 'SimpleStrategy', 'replication_factor': 1}",
                "CREATE ROLE intruder WITH LOGIN = true AND PASSWORD = 'x'",
            ):
                with pytest.raises(Unauthorized):
                    platform_session.execute(statement)
            # What it does need on its own keyspace, it has.
            platform_session.execute(f"SELECT * FROM {own.keyspace}.registrynode LIMIT 1")
        finally:
            platform_cluster.shutdown()
        session.execute(f"DROP KEYSPACE {other}")
    finally:
        cluster.shutdown()


def test_nothing_printed_holds_a_secret(secure: SecureStack, platform: Platform) -> None:
    """Runs last: everything this module's commands and services printed, grepped for the
    passwords and the private keys."""
    secure.m2m("status", check=False)
    secure.m2m("stack", "status", config=secure.stack_config)
    texts = [*secure.printed, *(log.read_text(errors="replace") for log in secure.logs)]
    stack_logs = [*(secure.state_dir / "run").glob("*.log"),
                  *secure.state_dir.glob("cassandra*/logs/system.log")]  # fmt: skip
    assert len(stack_logs) == 4
    texts += [log.read_text(errors="replace") for log in stack_logs]
    keys = [
        line
        for key in (secure.state_dir / "tls").glob("*.key")
        for line in key.read_text().splitlines()
        if not line.startswith("-----")
    ]
    secrets = [secure.secret("cassandra-m2m"), secure.secret("cassandra-cassandra"), *keys]
    assert len(texts) > 10 and all(secrets)
    for text in texts:
        for secret in secrets:
            assert secret not in text


def assert_one_clear_line(
    secure: SecureStack, config: Path, expected: str, using: str = "cassandra"
) -> None:
    """The CLI says ``expected`` in one line and exits 1 (a command ``using`` that back
    end); ``m2m serve`` logs it as its one error and exits; neither shows a traceback."""
    if using == "cassandra":
        command = ["device", "ls"]
    else:  # a command that publishes
        ident = f"sec:{uuid.uuid4().hex[:12]}"
        secure.m2m("device", "create", ident)
        command = ["device", "disconnect", ident]
    cli = secure.m2m(*command, config=config, check=False)
    assert cli.returncode == 1
    assert cli.stdout == b""
    error = cli.stderr.decode()
    assert error.count("\n") == 1 and expected in error and "Traceback" not in error, error
    serve = run_serve(config)
    secure.printed.append(serve)
    errors = [line for line in serve.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and expected in errors[0], serve
    assert "Traceback" not in serve


def run_serve(config: Path) -> str:
    result = subprocess.run(
        [M2M, "--config", str(config), "serve", "--only", "storage"],
        capture_output=True,
        timeout=120,
    )
    assert result.returncode != 0
    return result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")


def expired_certificate(ca_dir: Path, directory: Path) -> Path:
    """A client certificate the stack's CA signed that expired yesterday (its key: the
    platform's own, so only its dates are wrong)."""
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = serialization.load_pem_private_key((ca_dir / "client-m2m.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "m2m")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now - datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    path = directory / "expired.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path
