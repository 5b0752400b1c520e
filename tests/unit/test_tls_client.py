"""The TLS files of the platform's own connections, checked before any is tried."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509

from m2m.config import NsqConfig, TlsFiles
from m2m.tls import TLSError, init_ca, issue_client
from m2m.tls_client import client_context, pynsq_tls


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    init_ca(tmp_path, ["127.0.2.1"])
    issue_client(tmp_path, "m2m")
    return tmp_path


def files(directory: Path, **changes: Path) -> TlsFiles:
    paths = {name: directory / file for name, file in
             (("ca", "ca.pem"), ("cert", "client-m2m.pem"), ("key", "client-m2m.key"))}  # fmt: skip
    return TlsFiles.model_validate(paths | changes)


def test_a_context_verifies_the_server_and_presents_the_client(ca: Path) -> None:
    context = client_context(files(ca), "cassandra.tls")
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    server = x509.load_pem_x509_certificate((ca / "server.pem").read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.2.1" in {str(address) for address in names.get_values_for_type(x509.IPAddress)}


def test_a_missing_ca_names_the_key_and_the_file(ca: Path) -> None:
    missing = ca / "nowhere.pem"
    with pytest.raises(TLSError) as raised:
        client_context(files(ca, ca=missing), "cassandra.tls")
    assert str(raised.value) == (
        f"cassandra.tls.ca: cannot read {missing}: No such file or directory"
    )


def test_a_ca_file_that_holds_no_certificate_is_refused(ca: Path) -> None:
    with pytest.raises(TLSError, match=r"^nsq\.tls\.ca: .* holds no PEM certificate"):
        client_context(files(ca, ca=ca / "client-m2m.key"), "nsq.tls")


def test_a_key_that_is_not_the_certificates_is_refused(ca: Path) -> None:
    with pytest.raises(TLSError, match=r"server\.key is not the key of .*client-m2m\.pem"):
        client_context(files(ca, key=ca / "server.key"), "nsq.tls")


def test_a_certificate_without_its_key_is_a_config_error(ca: Path) -> None:
    with pytest.raises(ValueError, match="cert and key go together"):
        TlsFiles.model_validate({"ca": ca / "ca.pem", "cert": ca / "client-m2m.pem"})


def test_pynsq_gets_tls_only_when_configured(ca: Path) -> None:
    assert pynsq_tls(NsqConfig()) == {}
    options = pynsq_tls(NsqConfig(tls=files(ca)))
    assert options["tls_v1"] is True
    assert options["tls_options"]["ca_certs"] == str(ca / "ca.pem")
    assert options["tls_options"]["certfile"] == str(ca / "client-m2m.pem")
