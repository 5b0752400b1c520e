"""Real nsqlookupd and nsqd on loopback, nsqd registered with the lookup daemon.

Secure (``m2m stack up --secure``), nsqd takes TCP clients, the publishers and consumers,
only inside TLS and only with a certificate the stack's CA signed. Its HTTP port stays
plain, as nsqlookupd's: NSQ's lookup daemon has no TLS and advertises only that port, and
``m2m status`` and ``m2m bus stats`` read it; both listen on loopback only.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from m2m.config import NsqConfig
from m2m.stack.process import Endpoint, ServiceProcess

HOST = "127.0.0.1"
LOOKUPD_TCP_PORT = 4160
LOOKUPD_HTTP_PORT = 4161
NSQD_TCP_PORT = 4150
NSQD_HTTP_PORT = 4151
NSQD_HTTPS_PORT = 4152
START_TIMEOUT = 30.0
OPTIONS = ("--mem-queue-size=0", f"--max-msg-size={NsqConfig().max_message_bytes}")
"""nsqd writes every message to its disk queue before acknowledging it, so what it
acknowledged survives a SIGKILL of nsqd. Still at risk: a message nsqd had deferred (a
consumer requeued it with a delay: only messages failing unexpectedly are) or had sent to
a consumer that dies too, once its read position was synced to disk; and on a crash of
the machine, what was acknowledged since the last sync (``--sync-timeout``, 2 s). And it
takes messages as large as the platform publishes (a 1 MiB M2MP frame, in hex)."""


@dataclass(frozen=True)
class NsqdTls:
    """The files of a secure nsqd: its certificate and key, and the CA its clients'
    certificates must chain to."""

    certificate: Path
    key: Path
    client_ca: Path

    def options(self, host: str) -> list[str]:
        return [
            f"--tls-cert={self.certificate}",
            f"--tls-key={self.key}",
            f"--tls-root-ca-file={self.client_ca}",
            "--tls-client-auth-policy=require-verify",
            "--tls-required=tcp-https",
            "--tls-min-version=tls1.2",
            f"--https-address={host}:{NSQD_HTTPS_PORT}",
        ]


def answers_ping(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def nsqlookupd(bin_dir: Path, state_dir: Path, host: str = HOST) -> ServiceProcess:
    address = f"--tcp-address={host}:{LOOKUPD_TCP_PORT}"
    return ServiceProcess(
        name="nsqlookupd",
        command=[
            str(bin_dir / "nsqlookupd"),
            address,
            f"--http-address={host}:{LOOKUPD_HTTP_PORT}",
            f"--broadcast-address={host}",
        ],
        run_dir=state_dir / "run",
        endpoints=[
            Endpoint(host, LOOKUPD_TCP_PORT, "nsqlookupd TCP"),
            Endpoint(host, LOOKUPD_HTTP_PORT, "nsqlookupd HTTP"),
        ],
        is_healthy=lambda: answers_ping(host, LOOKUPD_HTTP_PORT),
        marker=address,
        start_timeout=START_TIMEOUT,
    )


def nsqd(
    bin_dir: Path, state_dir: Path, host: str = HOST, tls: NsqdTls | None = None
) -> ServiceProcess:
    data = state_dir / "nsqd"
    data.mkdir(parents=True, exist_ok=True)
    return ServiceProcess(
        name="nsqd",
        command=[
            str(bin_dir / "nsqd"),
            f"--tcp-address={host}:{NSQD_TCP_PORT}",
            f"--http-address={host}:{NSQD_HTTP_PORT}",
            f"--lookupd-tcp-address={host}:{LOOKUPD_TCP_PORT}",
            f"--broadcast-address={host}",
            f"--data-path={data}",
            *OPTIONS,
            *(tls.options(host) if tls else []),
        ],
        run_dir=state_dir / "run",
        endpoints=[
            Endpoint(host, NSQD_TCP_PORT, "nsqd TCP"),
            Endpoint(host, NSQD_HTTP_PORT, "nsqd HTTP"),
            *([Endpoint(host, NSQD_HTTPS_PORT, "nsqd HTTPS")] if tls else []),
        ],
        is_healthy=lambda: answers_ping(host, NSQD_HTTP_PORT),
        marker=str(data),
        start_timeout=START_TIMEOUT,
    )


def delete_topics(prefix: str, host: str = HOST) -> list[str]:
    """Delete the topics named ``prefix…`` from the stack's nsqd and nsqlookupd (a test
    run's or a benchmark's); the names deleted."""
    nsqd = f"http://{host}:{NSQD_HTTP_PORT}"
    lookupd = f"http://{host}:{LOOKUPD_HTTP_PORT}"
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
