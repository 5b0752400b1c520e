"""What the configuration's ``listen`` keys hold: Twisted server endpoint strings.

``tcp:3010``, ``tcp:port=8080:interface=127.0.0.1``, ``ssl:3011:privateKey=…``,
``tcp6:3010:interface=\\:\\:1`` (a colon in a value is escaped). The receivers hand them to
Twisted as they are; the HTTP servers (web, operations) take the ``tcp`` ones; the
receivers' channel names and ``m2m status`` need their port and interface.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_UNESCAPED_COLON = re.compile(r"(?<!\\):")
TCP_KINDS = ("tcp", "tcp6", "ssl")
"""Endpoint kinds that listen on a TCP port."""


@dataclass(frozen=True)
class ServerEndpoint:
    kind: str
    """``tcp``, ``ssl``, ``unix``, …"""
    port: int | None
    """The TCP port (0: one picked at start); None for a kind without one."""
    interface: str
    """The address listened on; empty for every interface."""
    backlog: int | None = None
    """Connections the kernel queues until they are accepted; None: the listener's default."""
    options: dict[str, str] = field(default_factory=dict)
    """Every ``name=value`` argument (``privateKey``, ``certKey``…), colons unescaped."""


def parse_endpoint(listen: str) -> ServerEndpoint:
    kind, _, rest = listen.partition(":")
    positional, named = [], {}
    for argument in _UNESCAPED_COLON.split(rest) if rest else []:
        name, equals, value = argument.partition("=")
        if equals:
            named[name] = value.replace("\\:", ":")
        else:
            positional.append(argument)
    port = named.get("port", positional[0] if positional else "")
    backlog = named.get("backlog", "")
    return ServerEndpoint(
        kind=kind,
        port=int(port) if kind in TCP_KINDS and port.isdigit() else None,
        interface=named.get("interface", ""),
        backlog=int(backlog) if backlog.isdigit() else None,
        options=named,
    )
