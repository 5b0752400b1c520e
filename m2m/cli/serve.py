"""``m2m serve``: run the receivers and workers against the configured Cassandra and NSQ."""

from __future__ import annotations

import sys

import click

from m2m.cli.app import App, pass_app
from m2m.config import Config, MetricsConfig
from m2m.runtime import asyncio_reactor, configure_logging, run
from m2m.services import SERVICE_NAMES, Services, default_services


def parse_names(only: str | None, config: Config) -> tuple[str, ...]:
    if not only:
        return default_services(config)
    return tuple(dict.fromkeys(name.strip() for name in only.split(",") if name.strip()))


@click.command()
@click.option(
    "--only",
    metavar="NAMES",
    help=f"Comma-separated subset of: {', '.join(SERVICE_NAMES)} (default: all; sync only "
    "with sync.upstream).",
)
@click.option(
    "--metrics-listen",
    metavar="ENDPOINT",
    help="Serve /metrics, /healthz and /readyz on tcp:PORT[:interface=ADDRESS] "
    "(instead of metrics.listen): one port per process on a host.",
)
@pass_app
def serve(app: App, only: str | None, metrics_listen: str | None) -> None:
    """Run receivers and workers until SIGTERM or SIGINT (then stop cleanly)."""
    serve_services(app, parse_names(only, app.config), metrics_listen)


def serve_services(app: App, names: tuple[str, ...], metrics_listen: str | None = None) -> None:
    config = app.config
    if metrics_listen is not None:
        config = config.model_copy(update={"metrics": MetricsConfig(listen=metrics_listen)})
    configure_logging(config.logging)
    reactor, _ = asyncio_reactor()
    services = Services(config, names, reactor)
    sys.exit(run(services.start, services.stop))
