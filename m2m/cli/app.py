"""What every command shares: the lazily loaded configuration and one way to fail."""

from __future__ import annotations

from functools import cached_property
from typing import Any, Final

import click

from m2m.config import Config, load_config
from m2m.errors import M2MError

PROBLEMS_FOUND: Final = 3
"""The exit status of a command whose checks ran and found a problem (1: it could not run)."""


class App:
    """The state behind one ``m2m`` invocation."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path)


pass_app = click.make_pass_decorator(App)


class M2MGroup(click.Group):
    """A group that turns the platform's own errors into one line on stderr and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except M2MError as exc:
            raise click.ClickException(str(exc)) from exc


class OneLineErrors(M2MGroup):
    """Bad values fail in one line too, without the usage text, like every other error."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.BadParameter as exc:
            raise click.ClickException(exc.format_message()) from exc
