"""What the management command tests share: running ``m2m`` as a person does, and checking
what it printed and how it failed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

from tests.conftest import run_m2m


def new_ident() -> str:
    """An ident both protocols accept (ALIP wants ``^[a-z][0-9a-z]{2,6}:[a-zA-Z0-9]{4,20}$``)."""
    return f"imei:{uuid.uuid4().int % 10**15:015d}"


def m2m(*args: str, config: Path) -> str:
    """Run a command that must succeed; its stdout."""
    return run_m2m(*args, config=config).stdout.decode()


def m2m_json(*args: str, config: Path) -> list[Any]:
    """Run a command with ``--json`` that must succeed; the objects it printed, one a line."""
    return [json.loads(line) for line in m2m(*args, "--json", config=config).splitlines()]


async def m2m_async(*args: str, config: Path) -> str:
    """:func:`m2m` off the event loop, so simulated devices keep answering meanwhile."""
    return await asyncio.to_thread(m2m, *args, config=config)


async def m2m_json_async(*args: str, config: Path) -> list[Any]:
    return await asyncio.to_thread(m2m_json, *args, config=config)


def fails(*args: str, config: Path, fragments: tuple[str, ...] = ()) -> str:
    """Run a command that must fail: exit 1, one line on stderr holding every fragment."""
    result = run_m2m(*args, config=config, check=False)
    return failed_in_one_line(result, *fragments)


def failed_in_one_line(result: subprocess.CompletedProcess[bytes], *fragments: str) -> str:
    """Exit 1 with one line on stderr holding every fragment; returns that line."""
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1, (result.returncode, lines)
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
