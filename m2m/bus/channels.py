"""Channels of one process's own: named after its host, deleted from every nsqd.

A process that reads a topic for itself alone (a receiver's control messages, the web
service's live feed) names its channel after its host and ports, so it takes it up
again when it restarts. Channels whose messages are worth nothing once their reader is
gone are deleted from every nsqd that has their topic, as nsqlookupd lists them: left
behind, nsqd would keep every message of the topic for them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import urllib.error
import urllib.parse
import urllib.request

from m2m.config import NsqConfig

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 5.0


def host_in_channel_name() -> str:
    """This host's name as a channel name may hold it (nsqd: ``[.a-zA-Z0-9_-]``, 64 at
    most, leaving room for the rest of the name)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40]


async def delete_channel(config: NsqConfig, topic: str, channel: str) -> int:
    """Delete ``channel`` of ``topic`` (both as the platform names them, prefix included)
    wherever it is; how many nsqd deleted it. Unreachable daemons are logged and skipped."""
    return await asyncio.to_thread(_delete_channel, config, topic, channel)


def _delete_channel(config: NsqConfig, topic: str, channel: str) -> int:
    query = urllib.parse.urlencode({"topic": topic, "channel": channel})
    nsqds: set[str] = set()
    for lookupd in config.lookupd_http_addresses:
        try:
            with urllib.request.urlopen(
                f"http://{lookupd}/lookup?{urllib.parse.urlencode({'topic': topic})}",
                timeout=HTTP_TIMEOUT,
            ) as response:
                producers = json.load(response).get("producers") or []
        except (OSError, ValueError) as exc:
            log.warning("nsqlookupd %s: cannot list the nsqd of %s: %s", lookupd, topic, exc)
            continue
        nsqds |= {f"{p['broadcast_address']}:{p['http_port']}" for p in producers}
    deleted = 0
    for nsqd in sorted(nsqds):
        request = urllib.request.Request(f"http://{nsqd}/channel/delete?{query}", method="POST")
        try:
            urllib.request.urlopen(request, timeout=HTTP_TIMEOUT).close()
            deleted += 1
        except urllib.error.HTTPError:
            pass  # that nsqd never had the channel
        except OSError as exc:
            log.warning("nsqd %s: cannot delete channel %s of %s: %s", nsqd, channel, topic, exc)
    return deleted
