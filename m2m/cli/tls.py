"""``m2m tls``: a development CA, a server certificate for this host, device certificates.

See :mod:`m2m.tls`. The directory defaults to ``tls`` in the stack's state directory.
"""

from __future__ import annotations

from pathlib import Path

import click

from m2m.cli.app import App, M2MGroup, pass_app
from m2m.tls import init_ca, issue_device

DIR_HELP = "Where the CA and certificates are (default: <stack.state_dir>/tls)."


def _directory(app: App, given: Path | None) -> Path:
    return given or app.config.stack.state_dir.expanduser() / "tls"


@click.group(cls=M2MGroup)
def tls() -> None:
    """Certificates for TLS device ports: a development CA, for tests and small sites."""


@tls.command("init")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help=DIR_HELP)
@pass_app
def init(app: App, directory: Path | None) -> None:
    """Create a CA (kept if there) and a server certificate for 127.0.0.1, ::1, localhost.

    Writes ca.pem, ca.key, server.pem and server.key, and prints the directory. A receiver
    serves TLS with listen: "ssl:3011:privateKey=DIR/server.key:certKey=DIR/server.pem".
    """
    click.echo(init_ca(_directory(app, directory)))


@tls.command("device")
@click.argument("ident")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help=DIR_HELP)
@pass_app
def device(app: App, ident: str, directory: Path | None) -> None:
    """Issue a certificate and key for the device IDENT, signed by the CA.

    Its subject's common name is IDENT, and so is its SAN URI m2m:ident:IDENT. Prints the
    certificate's path, then the key's, one a line.
    """
    issued = issue_device(_directory(app, directory), ident)
    click.echo(issued.certificate)
    click.echo(issued.key)
