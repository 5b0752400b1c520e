"""Device ports over TLS: ``m2m tls`` certificates, an ``ssl:`` listen string, real devices.

A platform serving both protocols inside TLS, with the certificates ``m2m tls init`` makes,
beside the plain platform the other tests use: devices identify and their records are
stored. A device that does not trust the receiver's CA, or that speaks plain TCP to a TLS
port, gets nowhere.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from m2m.cassandra import Database
from m2m.receivers.alip.client import ALIPClient
from m2m.receivers.m2mp.client import M2MPClient
from m2m.tls import IDENT_URI_PREFIX
from tests.conftest import (
    Platform,
    eventually,
    free_port,
    run_m2m,
    start_platform,
    stored,
    trusting,
)

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    result = run_m2m("tls", "init", "--dir", str(directory))
    assert result.stdout.decode().strip() == str(directory)
    return directory


@pytest.fixture(scope="module")
def tls_platform(
    config_file: Path, tls_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    running = start_platform(config_file, tmp_path_factory.mktemp("tls-platform"), tls=tls_dir)
    yield running
    running.stop()


def test_init_makes_a_ca_and_a_server_certificate_for_this_host(tls_dir: Path) -> None:
    assert {path.name for path in tls_dir.iterdir()} >= {
        "ca.pem", "ca.key", "server.pem", "server.key"
    }  # fmt: skip
    assert (tls_dir / "ca.key").stat().st_mode & 0o077 == 0
    server = x509.load_pem_x509_certificate((tls_dir / "server.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]


def test_a_device_certificate_names_its_ident_twice(tls_dir: Path) -> None:
    ident = "imei:356938035643809"
    result = run_m2m("tls", "device", ident, "--dir", str(tls_dir))
    certificate_path, key_path = (Path(line) for line in result.stdout.decode().splitlines())
    assert key_path.stat().st_mode & 0o077 == 0
    certificate = x509.load_pem_x509_certificate(certificate_path.read_bytes())
    common_name = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert [attribute.value for attribute in common_name] == [ident]
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"{IDENT_URI_PREFIX}{ident}"
    ]
    context = trusting(tls_dir / "ca.pem")
    context.load_cert_chain(certificate_path, key_path)  # a pair that belongs together


def test_a_device_certificate_needs_the_ca_first(tmp_path: Path) -> None:
    result = run_m2m("tls", "device", "imei:1", "--dir", str(tmp_path), check=False)
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        f"Error: no CA in {tmp_path}: run `m2m tls init --dir {tmp_path}`"
    )


async def test_an_m2mp_device_over_tls_identifies_and_its_data_is_stored(
    tls_platform: Platform, tls_dir: Path, database: Database
) -> None:
    ident = f"tls:{uuid.uuid4().hex[:12]}"
    async with await M2MPClient.connect(
        HOST, tls_platform.m2mp_port, tls=trusting(tls_dir / "ca.pem")
    ) as device:
        assert await device.identify(ident)
        device.send_data("sen:loc", struct.pack(">ff", 48.5, 2.25))
        await device.ping(1)
    records = await stored(database, ident, "sen:loc")
    assert records[0].data == {"lat": 48.5, "lon": 2.25}


async def test_an_alip_device_over_tls_identifies_and_its_data_is_stored(
    tls_platform: Platform, tls_dir: Path, database: Database
) -> None:
    ident = f"tls:{uuid.uuid4().hex[:12]}"
    async with await ALIPClient.connect(
        HOST, tls_platform.alip_port, tls=trusting(tls_dir / "ca.pem")
    ) as device:
        assert await device.identify(ident)
        device.send_line("D T 21.5")
        await device.ping("1")
    records = await stored(database, ident, "sen:temp")
    assert records[0].data == "21.5"  # as the device wrote it


async def test_a_device_that_does_not_trust_the_receivers_ca_does_not_connect(
    tls_platform: Platform, tmp_path: Path
) -> None:
    run_m2m("tls", "init", "--dir", str(tmp_path))
    with pytest.raises(ssl.SSLCertVerificationError):
        await ALIPClient.connect(HOST, tls_platform.alip_port, tls=trusting(tmp_path / "ca.pem"))


async def test_plain_tcp_to_a_tls_port_gets_no_answer(tls_platform: Platform) -> None:
    async with await ALIPClient.connect(HOST, tls_platform.alip_port) as device:
        with pytest.raises(ConnectionError):
            await device.identify("tls:plain0000")


async def test_the_plain_ports_keep_serving_beside_the_tls_ones(
    tls_platform: Platform, platform: Platform
) -> None:
    async with await ALIPClient.connect(HOST, platform.alip_port) as device:
        assert await device.identify(f"tls:{uuid.uuid4().hex[:12]}")


@pytest.mark.parametrize("protocol", ["m2mp", "alip"])
def test_simulated_devices_over_tls_get_in_and_are_acknowledged(
    tls_platform: Platform, tls_dir: Path, protocol: str
) -> None:
    port = tls_platform.m2mp_port if protocol == "m2mp" else tls_platform.alip_port
    prefix = f"tls{protocol[0]}:{uuid.uuid4().hex[:4]}"  # an ident ALIP accepts
    result = run_m2m(
        "simulate", protocol, "--port", str(port), "--tls", str(tls_dir / "ca.pem"),
        "--devices", "3", "--rate", "30", "--duration", "1", "--ident-prefix", prefix, "--json",
    )  # fmt: skip
    summary = json.loads(result.stdout)
    assert summary["identified"] == 3 and summary["errors"] == 0
    assert summary["sent"] == summary["acknowledged"] == 30


async def test_one_receiver_serves_a_plain_port_and_a_tls_port_side_by_side(
    config_file: Path,
    tls_dir: Path,
    database: Database,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    plain, tls = free_port(), free_port()
    server = f"privateKey={tls_dir}/server.key:certKey={tls_dir}/server.pem"
    listen = [f"tcp:{plain}:interface={HOST}", f"ssl:{tls}:interface={HOST}:{server}"]
    running = start_platform(config_file, tmp_path_factory.mktemp("both"), m2mp={"listen": listen})
    try:
        assert running.m2mp_port == plain  # the first endpoint's
        old, new = f"tls:{uuid.uuid4().hex[:12]}", f"tls:{uuid.uuid4().hex[:12]}"
        async with (
            await M2MPClient.connect(HOST, plain) as old_device,
            await M2MPClient.connect(HOST, tls, tls=trusting(tls_dir / "ca.pem")) as new_device,
        ):
            for device, ident, latitude in ((old_device, old, 1.5), (new_device, new, 2.5)):
                assert await device.identify(ident)
                device.send_data("sen:loc", struct.pack(">ff", latitude, 9.0))
                await device.ping(1)
        assert (await stored(database, old, "sen:loc"))[0].data == {"lat": 1.5, "lon": 9.0}
        assert (await stored(database, new, "sen:loc"))[0].data == {"lat": 2.5, "lon": 9.0}
    finally:
        running.stop()


# -- certificate-bound devices: client_ca and enrollment: certificate -----------------------


@pytest.fixture(scope="module")
def bound_platform(
    config_file: Path, tls_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """Device certificates required (signed by the test CA), and idents bound to them."""
    directory = tmp_path_factory.mktemp("bound-platform")
    running = start_platform(
        config_file, directory, tls=tls_dir, client_ca=tls_dir / "ca.pem", enrollment="certificate"
    )
    yield running
    running.stop()


def device_context(tls_dir: Path, ident: str) -> ssl.SSLContext:
    """A device trusting the receiver's CA and presenting a certificate for ``ident``."""
    certificate, key = run_m2m("tls", "device", ident, "--dir", str(tls_dir)).stdout.split()
    context = trusting(tls_dir / "ca.pem")
    context.load_cert_chain(certificate.decode(), key.decode())
    return context


async def test_a_device_sending_its_certificates_ident_is_accepted_and_stores(
    bound_platform: Platform, tls_dir: Path, database: Database
) -> None:
    ident = f"crt:{uuid.uuid4().hex[:12]}"  # new: its certificate enrolls it
    context = device_context(tls_dir, ident)
    async with await M2MPClient.connect(HOST, bound_platform.m2mp_port, tls=context) as device:
        assert await device.identify(ident)
        device.send_data("sen:loc", struct.pack(">ff", 1.5, 2.5))
        await device.ping(1)
    assert (await stored(database, ident, "sen:loc"))[0].data == {"lat": 1.5, "lon": 2.5}


async def test_an_ident_that_is_not_the_certificates_is_refused_and_logged(
    bound_platform: Platform, tls_dir: Path
) -> None:
    ident, other = f"crt:{uuid.uuid4().hex[:12]}", f"crt:{uuid.uuid4().hex[:12]}"
    context = device_context(tls_dir, ident)
    async with await ALIPClient.connect(HOST, bound_platform.alip_port, tls=context) as device:
        assert not await device.identify(other)
        assert await device.identify(ident)  # the connection stays: its own is accepted
    await eventually(
        lambda: asyncio.to_thread(bound_platform.log.read_text),
        lambda log: f"ident '{other}' refused: certificate sha256:" in log,
        "the refusal logged with the certificate's fingerprint",
    )


async def test_a_device_without_a_certificate_gets_nowhere(
    bound_platform: Platform, tls_dir: Path
) -> None:
    with pytest.raises((ConnectionError, ssl.SSLError)):
        async with await ALIPClient.connect(
            HOST, bound_platform.alip_port, tls=trusting(tls_dir / "ca.pem")
        ) as device:
            await device.identify(f"crt:{uuid.uuid4().hex[:12]}")


async def test_a_certificate_from_another_ca_gets_nowhere(
    bound_platform: Platform, tls_dir: Path, tmp_path: Path
) -> None:
    run_m2m("tls", "init", "--dir", str(tmp_path))
    ident = f"crt:{uuid.uuid4().hex[:12]}"
    certificate, key = run_m2m("tls", "device", ident, "--dir", str(tmp_path)).stdout.split()
    context = trusting(tls_dir / "ca.pem")  # the receiver is trusted; the device is not
    context.load_cert_chain(certificate.decode(), key.decode())
    with pytest.raises((ConnectionError, ssl.SSLError)):
        async with await ALIPClient.connect(HOST, bound_platform.alip_port, tls=context) as device:
            await device.identify(ident)
