"""Deleting a channel from every nsqd that has its topic, as nsqlookupd lists them.

For channels whose messages are worth nothing once their reader is gone (the web
service's live feed): left behind, nsqd would keep every message of the topic for them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.parse
import urllib.request

from m2m.config import NsqConfig

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 5.0


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
