"""A development certificate authority: ``m2m tls init`` and ``m2m tls device``.

For tests, ``m2m dev`` and small deployments (production brings its own CA): a CA, a
server certificate for this host (127.0.0.1, ::1 and localhost) to put in a receiver's
``ssl:`` listen string, and device certificates signed by the CA. A device's certificate
names its ident twice, as its subject's common name and as a SAN URI ``m2m:ident:<ident>``,
which is what a certificate-bound receiver compares the ident it sends with.

Keys are ECDSA P-256 (small and quick for devices); private keys are written readable by
their owner only. Files in a directory: ``ca.pem``, ``ca.key``, ``server.pem``,
``server.key``, and ``device-<ident>.pem`` / ``.key`` per device (the ident made safe for a
file name).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from m2m.errors import M2MError

CA_DAYS = 3650
LEAF_DAYS = 825
"""Days a server or device certificate is valid (the most browsers accept)."""
IDENT_URI_PREFIX = "m2m:ident:"
SERVER_NAMES = ("localhost",)
SERVER_ADDRESSES = ("127.0.0.1", "::1")
_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class TLSError(M2MError):
    """The CA is missing, or a certificate cannot be made; the message says which."""


@dataclass(frozen=True)
class Issued:
    certificate: Path
    key: Path


def init_ca(directory: Path, addresses: Sequence[str] = SERVER_ADDRESSES) -> Path:
    """A CA and a server certificate for this host in ``directory`` (made if need be),
    naming ``localhost`` and ``addresses``.

    A CA already there is kept, so certificates issued before stay valid; the server
    certificate is issued again.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "ca.pem").exists():
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "m2m development CA")])
        certificate = (
            _builder(name, name, key.public_key(), CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .sign(key, hashes.SHA256())
        )
        _write(directory, "ca", certificate, key)
    _issue(
        directory,
        "server",
        common_name="localhost",
        alternative_names=[
            *(x509.DNSName(name) for name in SERVER_NAMES),
            *(x509.IPAddress(ipaddress.ip_address(address)) for address in addresses),
        ],
        purpose=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    return directory


def issue_device(directory: Path, ident: str) -> Issued:
    """A certificate and key for the device ``ident``, signed by the CA in ``directory``."""
    if not ident:
        raise TLSError("a device certificate needs an ident")
    return _issue(
        directory,
        f"device-{_UNSAFE_IN_FILE_NAME.sub('_', ident)}",
        common_name=ident,
        alternative_names=[x509.UniformResourceIdentifier(f"{IDENT_URI_PREFIX}{ident}")],
        purpose=ExtendedKeyUsageOID.CLIENT_AUTH,
    )


def issue_client(directory: Path, name: str) -> Issued:
    """A client certificate and key named ``name`` (``client-<name>.pem``/``.key``), signed
    by the CA in ``directory``: how a platform's processes prove themselves to a server
    that requires client certificates (the secure stack's nsqd and Cassandra)."""
    return _issue(
        directory,
        f"client-{_UNSAFE_IN_FILE_NAME.sub('_', name)}",
        common_name=name,
        alternative_names=[],
        purpose=ExtendedKeyUsageOID.CLIENT_AUTH,
    )


def certificate_idents(certificate: x509.Certificate) -> set[str]:
    """The idents a device certificate names: its subject's common names and its SAN URIs
    ``m2m:ident:<ident>``."""
    names = {
        str(attribute.value)
        for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    }
    try:
        alternative = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return names
    for uri in alternative.value.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(IDENT_URI_PREFIX):
            names.add(uri.removeprefix(IDENT_URI_PREFIX))
    return names


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate, hex: how logs name one."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def _issue(
    directory: Path,
    stem: str,
    common_name: str,
    alternative_names: list[x509.GeneralName],
    purpose: x509.ObjectIdentifier,
) -> Issued:
    ca_certificate, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        _builder(subject, ca_certificate.subject, key.public_key(), LEAF_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
    )
    if alternative_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(alternative_names), critical=False
        )
    return _write(directory, stem, builder.sign(ca_key, hashes.SHA256()), key)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # clocks a little behind
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        certificate = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    except FileNotFoundError:
        raise TLSError(f"no CA in {directory}: run `m2m tls init --dir {directory}`") from None
    except ValueError as exc:
        raise TLSError(f"the CA in {directory} cannot be read: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TLSError(f"the CA key in {directory} is not an ECDSA key made by m2m tls init")
    return certificate, key


def _write(
    directory: Path, stem: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    issued = Issued(directory / f"{stem}.pem", directory / f"{stem}.key")
    issued.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(issued.key, key_bytes)
    return issued


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (a key, a password)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    path.chmod(0o600)  # a file there before keeps its mode otherwise
