"""The ``m2m`` console script.

The asyncio reactor is installed before anything else is imported: the Cassandra driver
imports ``twisted.internet.reactor`` as a side effect (for its optional Twisted connection
class), which would otherwise install Twisted's default reactor first.
"""

from __future__ import annotations


def main() -> None:
    from m2m.runtime import asyncio_reactor

    asyncio_reactor()

    from m2m.cli import main as cli

    cli()
