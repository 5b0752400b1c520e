"""TLS for the connections the platform opens itself: to Cassandra and to nsqd.

Each is configured by a :class:`~m2m.config.TlsFiles` (``cassandra.tls``, ``nsq.tls``): the
CA the server's certificate must chain to (its name must match the address connected to),
and this client's certificate and key when the server requires one. The files are checked
before any connection is tried, so a missing CA, a certificate that expired or a key that
is not the certificate's is one line naming the config key and the file, not a handshake
failure later and elsewhere.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509

from m2m.config import NsqConfig, TlsFiles
from m2m.tls import TLSError


def client_context(files: TlsFiles, key: str) -> ssl.SSLContext:
    """A context for a client verifying its server against ``files.ca``; ``key`` is where
    the files are configured (``cassandra.tls``), for error messages."""
    try:
        context = ssl.create_default_context(cafile=str(files.ca))
    except ssl.SSLError as exc:  # an OSError too: first
        raise TLSError(f"{key}.ca: {files.ca} holds no PEM certificate ({exc.reason})") from None
    except OSError as exc:
        raise _unreadable(f"{key}.ca", files.ca, exc) from None
    if files.cert is not None and files.key is not None:
        _check_validity(files.cert, f"{key}.cert")
        try:
            context.load_cert_chain(str(files.cert), str(files.key))
        except ssl.SSLError as exc:
            raise TLSError(
                f"{key}: {files.key} is not the key of {files.cert} ({exc.reason})"
            ) from None
        except OSError as exc:
            raise _unreadable(f"{key}.key", files.key, exc) from None
    return context


def pynsq_tls(config: NsqConfig) -> dict[str, Any]:
    """The keyword arguments with which pynsq's readers and writers use ``nsq.tls``, none
    when it is unset. pynsq makes its context from a dict (Tornado's ``ssl_options``), so
    the files are checked by making one here first."""
    files = config.tls
    if files is None:
        return {}
    client_context(files, "nsq.tls")
    options: dict[str, Any] = {
        "ssl_version": ssl.PROTOCOL_TLS_CLIENT,  # checks the name; pynsq's own: TLS 1.2 only
        "cert_reqs": ssl.CERT_REQUIRED,
        "ca_certs": str(files.ca),
    }
    if files.cert is not None and files.key is not None:
        options |= {"certfile": str(files.cert), "keyfile": str(files.key)}
    return {"tls_v1": True, "tls_options": options}


def _check_validity(path: Path, key: str) -> None:
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise _unreadable(key, path, exc) from None
    except ValueError:
        raise TLSError(f"{key}: {path} holds no PEM certificate") from None
    now = datetime.datetime.now(datetime.UTC)
    if certificate.not_valid_after_utc < now:
        raise TLSError(f"{key}: {path} expired on {_when(certificate.not_valid_after_utc)}")
    if certificate.not_valid_before_utc > now:
        raise TLSError(
            f"{key}: {path} is not valid before {_when(certificate.not_valid_before_utc)}"
        )


def _when(moment: datetime.datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _unreadable(key: str, path: Path, exc: OSError) -> TLSError:
    return TLSError(f"{key}: cannot read {path}: {exc.strerror}")
