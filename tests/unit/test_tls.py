"""The development CA's certificates, and what a device certificate says of its ident."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from m2m.tls import TLSError, certificate_idents, fingerprint, init_ca, issue_device


def test_a_device_certificate_names_its_ident_as_cn_and_san_uri(tmp_path: Path) -> None:
    init_ca(tmp_path)
    issued = issue_device(tmp_path, "imei:356938035643809")
    certificate = x509.load_pem_x509_certificate(issued.certificate.read_bytes())
    assert certificate_idents(certificate) == {"imei:356938035643809"}
    assert issued.certificate.name == "device-imei_356938035643809.pem"
    assert len(fingerprint(certificate)) == 64


def test_the_server_certificate_names_no_ident(tmp_path: Path) -> None:
    init_ca(tmp_path)
    server = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    assert certificate_idents(server) == {"localhost"}  # its CN: no device sends that


def test_init_keeps_the_ca_so_device_certificates_stay_valid(tmp_path: Path) -> None:
    init_ca(tmp_path)
    ca = (tmp_path / "ca.pem").read_bytes()
    init_ca(tmp_path)
    assert (tmp_path / "ca.pem").read_bytes() == ca


def test_no_device_certificate_without_a_ca(tmp_path: Path) -> None:
    with pytest.raises(TLSError, match="no CA in"):
        issue_device(tmp_path, "imei:1")
