"""Real nsqlookupd and nsqd on loopback, nsqd registered with the lookup daemon."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from m2m.config import NsqConfig
from m2m.stack.process import Endpoint, ServiceProcess

HOST = "127.0.0.1"
LOOKUPD_TCP_PORT = 4160
LOOKUPD_HTTP_PORT = 4161
NSQD_TCP_PORT = 4150
NSQD_HTTP_PORT = 4151
START_TIMEOUT = 30.0
OPTIONS = ("--mem-queue-size=0", f"--max-msg-size={NsqConfig().max_message_bytes}")
"""nsqd writes every message to its disk queue before acknowledging it, so what it
acknowledged survives a SIGKILL of nsqd. Still at risk: a message nsqd had deferred (a
consumer requeued it with a delay: only messages failing unexpectedly are) or had sent to
a consumer that dies too, once its read position was synced to disk; and on a crash of
the machine, what was acknowledged since the last sync (``--sync-timeout``, 2 s). And it
takes messages as large as the platform publishes (a 1 MiB M2MP frame, in hex)."""


def answers_ping(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/ping", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def nsqlookupd(bin_dir: Path, state_dir: Path) -> ServiceProcess:
    binary = str(bin_dir / "nsqlookupd")
    return ServiceProcess(
        name="nsqlookupd",
        command=[
            binary,
            f"--tcp-address={HOST}:{LOOKUPD_TCP_PORT}",
            f"--http-address={HOST}:{LOOKUPD_HTTP_PORT}",
            f"--broadcast-address={HOST}",
        ],
        run_dir=state_dir / "run",
        endpoints=[
            Endpoint(HOST, LOOKUPD_TCP_PORT, "nsqlookupd TCP"),
            Endpoint(HOST, LOOKUPD_HTTP_PORT, "nsqlookupd HTTP"),
        ],
        is_healthy=lambda: answers_ping(LOOKUPD_HTTP_PORT),
        marker=binary,
        start_timeout=START_TIMEOUT,
    )


def nsqd(bin_dir: Path, state_dir: Path) -> ServiceProcess:
    data = state_dir / "nsqd"
    data.mkdir(parents=True, exist_ok=True)
    return ServiceProcess(
        name="nsqd",
        command=[
            str(bin_dir / "nsqd"),
            f"--tcp-address={HOST}:{NSQD_TCP_PORT}",
            f"--http-address={HOST}:{NSQD_HTTP_PORT}",
            f"--lookupd-tcp-address={HOST}:{LOOKUPD_TCP_PORT}",
            f"--broadcast-address={HOST}",
            f"--data-path={data}",
            *OPTIONS,
        ],
        run_dir=state_dir / "run",
        endpoints=[
            Endpoint(HOST, NSQD_TCP_PORT, "nsqd TCP"),
            Endpoint(HOST, NSQD_HTTP_PORT, "nsqd HTTP"),
        ],
        is_healthy=lambda: answers_ping(NSQD_HTTP_PORT),
        marker=str(data),
        start_timeout=START_TIMEOUT,
    )


def delete_topics(prefix: str) -> list[str]:
    """Delete the topics named ``prefix…`` from the stack's nsqd and nsqlookupd (a test
    run's or a benchmark's); the names deleted."""
    nsqd = f"http://{HOST}:{NSQD_HTTP_PORT}"
    lookupd = f"http://{HOST}:{LOOKUPD_HTTP_PORT}"
    with urllib.request.urlopen(f"{nsqd}/stats?format=json", timeout=10) as response:
        names = {topic["topic_name"] for topic in json.load(response)["topics"] or []}
    with urllib.request.urlopen(f"{lookupd}/topics", timeout=10) as response:
        names |= set(json.load(response)["topics"] or [])
    deleted = sorted(name for name in names if name.startswith(prefix))
    for name in deleted:
        for daemon in (nsqd, lookupd):
            query = urllib.parse.urlencode({"topic": name})
            request = urllib.request.Request(f"{daemon}/topic/delete?{query}", method="POST")
            with contextlib.suppress(urllib.error.HTTPError):  # not known to that daemon
                urllib.request.urlopen(request, timeout=10).close()
    return deleted
