"""``m2m simulate m2mp|alip``: devices played against a deployment, from a shell.

The devices and their counts are :mod:`m2m.simulate`'s; here are the options, the
progress bar (on stderr, only on a terminal, so pipes and logs stay clean), Ctrl-C (stop
sending, raise a last barrier, print the summary; a second one quits at once) and the
summary: four lines for people, one JSON object for scripts. Exit 0 when every device
identified and nothing failed, 3 when the run found a problem, 1 when it could not run.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Final

import click

from m2m.cli.app import PROBLEMS_FOUND, App, OneLineErrors, pass_app
from m2m.cli.output import json_option, print_object
from m2m.config import Config
from m2m.endpoints import parse_endpoint
from m2m.simulate import (
    DIALECTS,
    Latency,
    Plan,
    Progress,
    SimulationError,
    Summary,
    parse_rate,
)
from m2m.simulate import simulate as run_simulation
from m2m.status import local_address

DEFAULT_HOST: Final = "127.0.0.1"
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
LABEL_WIDTH: Final = 13
REASONS_SHOWN: Final = 5

WHAT_DEVICES_DO: Final = {
    "m2mp": "sen:loc data frames (f32 lat, f32 lon); the barrier is a device ping (0x02 n)",
    "alip": "'D L <lat>,<lon>' lines; the barrier is 'A <n>', answered 'B <n>'",
}


class RateParam(click.ParamType):
    name = "R"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            return parse_rate(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.group(cls=OneLineErrors)
def simulate() -> None:
    """Play devices against a deployment: they connect, send, and count what is acknowledged."""


def _protocol_command(protocol: str) -> None:
    @simulate.command(
        protocol,
        help=f"""Play {protocol.upper()} devices: connect, identify, send, count.

        The devices connect and identify 50 at a time (the smallest listen backlog),
        idents PREFIX00000, PREFIX00001…, then send for S seconds R location records a
        second all together: {WHAT_DEVICES_DO[protocol]}. Each raises a barrier about
        every second and once at the end: the records sent before an answered one are
        acknowledged (on the bus), and the round trips (but the last) are the latency
        sample.

        Exit 0 when every device identified and nothing failed, 3 otherwise (refused,
        could not connect, stopped), 1 when nothing could connect at all. Ctrl-C stops
        early and still prints the summary.
        """,
    )
    @click.option(
        "--host",
        metavar="H",
        default=None,
        help=f"Where the receiver is (default: where this host reaches receivers.{protocol}"
        f".listen, {DEFAULT_HOST} when it listens on every interface).",
    )
    @click.option(
        "--port",
        type=click.IntRange(1, 65535),
        metavar="P",
        default=None,
        help=f"Its port (default: receivers.{protocol}.listen's; of a list, the first plain "
        "one, or with --tls the first TLS one).",
    )
    @click.option(
        "--devices",
        type=click.IntRange(min=1),
        metavar="N",
        default=10,
        show_default=True,
        help="Devices to play, each on a connection of its own.",
    )
    @click.option(
        "--rate",
        type=RateParam(),
        default="1",
        show_default=True,
        help="Records a second, all devices together: 200 or 200/s (0: barriers only).",
    )
    @click.option(
        "--duration",
        type=click.FloatRange(min=0, min_open=True),
        metavar="S",
        default=10.0,
        show_default=True,
        help="Seconds of sending, once every device connected.",
    )
    @click.option(
        "--ident-prefix",
        metavar="P",
        default="sim:",
        show_default=True,
        help="What each ident starts with (ALIP: a letter, 2 to 6 letters or digits, ':').",
    )
    @click.option(
        "--tls",
        "tls_ca",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        metavar="CA",
        default=None,
        help="Connect inside TLS, trusting a receiver certificate signed by this CA (PEM).",
    )
    @json_option
    @pass_app
    def command(
        app: App,
        host: str | None,
        port: int | None,
        devices: int,
        rate: float,
        duration: float,
        ident_prefix: str,
        tls_ca: Path | None,
        as_json: bool,
    ) -> None:
        if host is None or port is None:
            host, port = _receiver(app.config, protocol, host, port, tls_ca)
        plan = Plan(protocol, host, port, devices, rate, duration, ident_prefix, tls_ca=tls_ca)
        with _progress_bars() as show_progress:
            summary = asyncio.run(_until_interrupted(plan, show_progress))
        if as_json:
            print_object(summary.to_json(), as_json=True)
        else:
            _print_summary(summary)
        if not summary.ok:
            sys.exit(PROBLEMS_FOUND)


for _protocol in DIALECTS:
    _protocol_command(_protocol)


def _receiver(
    config: Config, protocol: str, host: str | None, port: int | None, tls_ca: Path | None
) -> tuple[str, int]:
    """The host and port not given, from the receiver's ``listen`` in the configuration."""
    key = f"receivers.{protocol}.listen"
    listen = _endpoint_for(getattr(config.receivers, protocol).endpoints, tls=tls_ca is not None)
    address = local_address(listen)
    if port is None:
        if address is None:
            raise SimulationError(f"{key} {listen!r} names no fixed TCP port: give --port")
        if parse_endpoint(listen).kind == "ssl" and tls_ca is None:
            raise SimulationError(
                f"{key} {listen!r} is TLS: give --tls CA, the CA that signed its certificate"
            )
        port = address[1]
    return host or (address[0] if address else DEFAULT_HOST), port


def _endpoint_for(endpoints: tuple[str, ...], tls: bool) -> str:
    """Of the receiver's endpoints, the first inside TLS (``tls``) or the first plain one
    (not); if it has none of that kind, its first."""
    wanted = (listen for listen in endpoints if (parse_endpoint(listen).kind == "ssl") == tls)
    return next(wanted, endpoints[0])


async def _until_interrupted(plan: Plan, on_progress: Callable[[Progress], None]) -> Summary:
    """The run; the first Ctrl-C (or SIGTERM) stops it early, a second one quits at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def interrupted() -> None:
        stop.set()
        for signal_number in STOP_SIGNALS:
            loop.remove_signal_handler(signal_number)
        click.echo("\nstopping: a last barrier each (Ctrl-C again quits at once)", err=True)

    for signal_number in STOP_SIGNALS:
        loop.add_signal_handler(signal_number, interrupted)
    return await run_simulation(plan, stop, on_progress)


class _ProgressBars:
    """A click progress bar for each phase of the run, one after the other."""

    def __init__(self, bars: ExitStack) -> None:
        self._bars = bars
        self._bar: Any = None
        self._phase = ""
        self._done = 0

    def __call__(self, progress: Progress) -> None:
        if progress.phase != self._phase:
            self._bars.close()
            bar = click.progressbar(
                length=progress.total,
                label=progress.phase.ljust(len("connecting")),
                file=sys.stderr,
                show_eta=False,
                item_show_func=lambda detail: detail,
            )
            self._bar = self._bars.enter_context(bar)
            self._phase, self._done = progress.phase, 0
        self._bar.update(progress.done - self._done, progress.detail)
        self._done = progress.done


@contextmanager
def _progress_bars() -> Iterator[Callable[[Progress], None]]:
    """Shows the run's progress on stderr when it is a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield lambda progress: None
        return
    with ExitStack() as bars:
        yield _ProgressBars(bars)


def _print_summary(summary: Summary) -> None:
    for label, value in _summary_lines(summary):
        click.echo(f"{label.ljust(LABEL_WIDTH)}{value}")


def _summary_lines(summary: Summary) -> list[tuple[str, str]]:
    """(label, text) for each line; a reason's line has no label of its own."""
    seconds = summary.seconds
    pace = f"{summary.sent / seconds:,.1f}/s over {seconds:.1f} s" if seconds else "none sent"
    if summary.stopped_early:
        pace += ", stopped early"
    lines = [
        (
            "devices",
            f"{summary.identified:,} identified, {summary.refused:,} refused, "
            f"{summary.failed_to_connect:,} failed to connect",
        ),
        ("records", f"sent {summary.sent:,}, acknowledged {summary.acknowledged:,} ({pace})"),
        ("errors", f"{summary.error_count:,}"),
    ]
    shown = summary.errors[:REASONS_SHOWN]
    lines += [("", f"{count:,} device(s): {reason}") for reason, count in shown]
    if len(summary.errors) > REASONS_SHOWN:
        more = len(summary.errors) - REASONS_SHOWN
        lines.append(("", f"… and {more} other reason(s): --json lists them all"))
    lines.append(("ping latency", _latency_text(summary.latency)))
    return lines


def _latency_text(latency: Latency | None) -> str:
    if latency is None:
        return "- (no barrier answered)"
    shown = ", ".join(f"{name} {ms:,.1f} ms" for name, ms in latency.milliseconds().items())
    return f"{shown} ({latency.count:,} barriers)"
