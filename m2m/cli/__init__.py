"""The ``m2m`` command: one group, one module per command family."""

from __future__ import annotations

import click

from m2m.cli.app import App, M2MGroup
from m2m.cli.blob import blob
from m2m.cli.bus import bus
from m2m.cli.dev import dev
from m2m.cli.device import device
from m2m.cli.domain import domain
from m2m.cli.firmware import firmware
from m2m.cli.registry import registry
from m2m.cli.schema import schema
from m2m.cli.serve import serve
from m2m.cli.simulate import simulate
from m2m.cli.stack import stack
from m2m.cli.status import status
from m2m.cli.sync import sync
from m2m.cli.tls import tls
from m2m.cli.ts import ts
from m2m.cli.user import user


@click.group(cls=M2MGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Configuration file (default: $M2M_CONFIG, else ./m2m.yaml, else built-in defaults).",
)
@click.version_option(package_name="m2m")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """m2m: connect machine-to-machine devices and keep their data."""
    ctx.obj = App(config_path)


for command in (
    dev,
    serve,
    stack,
    status,
    schema,
    ts,
    registry,
    blob,
    device,
    domain,
    user,
    firmware,
    bus,
    simulate,
    tls,
    sync,
):
    main.add_command(command)
