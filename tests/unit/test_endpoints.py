"""Server endpoint strings, as the configuration's ``listen`` keys hold them."""

from __future__ import annotations

import pytest

from m2m.endpoints import ServerEndpoint, parse_endpoint
from m2m.http_server import ListenError, bind, url_of


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("tcp:3010", ServerEndpoint("tcp", 3010, "")),
        (
            "tcp:port=8080:interface=127.0.0.1",
            ServerEndpoint(
                "tcp", 8080, "127.0.0.1", None, {"port": "8080", "interface": "127.0.0.1"}
            ),
        ),
        (
            "tcp:0:interface=127.0.0.1:backlog=64",
            ServerEndpoint("tcp", 0, "127.0.0.1", 64, {"interface": "127.0.0.1", "backlog": "64"}),
        ),
        (
            "ssl:3011:privateKey=/k.pem:certKey=/c.pem",
            ServerEndpoint("ssl", 3011, "", None, {"privateKey": "/k.pem", "certKey": "/c.pem"}),
        ),
        (
            "tcp6:3010:interface=\\:\\:1",
            ServerEndpoint("tcp6", 3010, "::1", None, {"interface": "::1"}),
        ),
        ("unix:/run/m2m.sock", ServerEndpoint("unix", None, "")),
        ("tcp", ServerEndpoint("tcp", None, "")),
        ("haproxy:tcp:3010", ServerEndpoint("haproxy", None, "")),
    ],
)
def test_the_port_interface_backlog_and_options_of_an_endpoint(
    listen: str, expected: ServerEndpoint
) -> None:
    assert parse_endpoint(listen) == expected


def test_http_servers_take_tcp_endpoints_only() -> None:
    for listen in ("ssl:8080", "unix:/tmp/x", "tcp:http"):
        with pytest.raises(ListenError, match=r"metrics\.listen"):
            bind(listen, "metrics.listen")
    sock = bind("tcp:0:interface=127.0.0.1", "web.listen")
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
    assert url_of("tcp:8080") == "http://127.0.0.1:8080/"
    assert url_of("tcp:8080:interface=\\:\\:1") == "http://[::1]:8080/"
