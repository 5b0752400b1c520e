"""Faults, counted: not one acknowledged record lost, not one stored twice, whatever dies.

The scenarios of ``bench/faults.py`` at a small load, against real processes: ``m2m
serve`` laid out as deploy/ runs it (receivers, converter, storage) on topics of its own,
the stack's nsqd and Cassandra. Devices number their records, ask for an acknowledgement
after every batch and send again what was not acknowledged when their connection drops.
Each test kills or stops one thing mid-stream and starts it again, then counts per device
what was acknowledged and what Cassandra holds.

These tests stop the stack's nsqd and Cassandra: the stack is brought up again after each,
whatever happened.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bench.faults import (
    FAULTS,
    ROLES,
    Deployment,
    Load,
    Outcome,
    run_scenario,
)
from m2m.cassandra import Database
from m2m.timeseries import TimeSeries
from tests.conftest import run_m2m

LOAD = Load(devices=4, batch=10, interval=0.05, warmup=3.0, after=3.0)
CASSANDRA_OUTAGE = 60.0
MAX_OUTAGE_CPU_SHARE = 0.1
"""A worker holding its messages through an outage waits (one attempt a second, whichever
message makes it; measured: 0.04 of a core with 1,000 messages in hand); spinning would
take a core."""


@pytest.fixture(scope="module")
def deployment(config_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    settings = yaml.safe_load(config_file.read_text())
    deployed = Deployment(settings, tmp_path_factory.mktemp("faults"))
    try:
        for role in ("storage", "converter", "receivers"):
            deployed.start(role)
        yield deployed
    finally:
        deployed.stop()


@pytest.fixture
def stack_restored(deployment: Deployment) -> Iterator[None]:
    """Whatever a test stopped comes back, and every process of the deployment serves."""
    yield
    run_m2m("stack", "up")
    for role in ROLES:
        if not deployment.serving(role):
            deployment.start(role)


async def _outcome(name: str, deployment: Deployment, database: Database) -> Outcome:
    fault = FAULTS[name](CASSANDRA_OUTAGE)
    return await run_scenario(name, fault, deployment, TimeSeries(database), LOAD)


def _nothing_lost_or_doubled(outcome: Outcome) -> None:
    assert outcome.acknowledged > 0, outcome
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome
    assert outcome.acks_back is not None, f"no acknowledgement after the fault: {outcome}"
    assert outcome.all_stored is not None, f"acknowledged records never all stored: {outcome}"
    assert outcome.stored >= outcome.acknowledged, outcome


@pytest.mark.parametrize("name", ["receiver", "nsqd", "workers", "mid-frame"])
async def test_a_process_killed_mid_stream_loses_and_doubles_nothing(
    name: str, deployment: Deployment, database: Database, stack_restored: None
) -> None:
    _nothing_lost_or_doubled(await _outcome(name, deployment, database))


async def test_cassandra_stopped_for_a_minute_loses_nothing_and_nobody_spins(
    deployment: Deployment, database: Database, stack_restored: None
) -> None:
    outcome = await _outcome("cassandra", deployment, database)
    _nothing_lost_or_doubled(outcome)
    assert outcome.measures["outage s"] >= CASSANDRA_OUTAGE
    assert outcome.measures["storage CPU share"] < MAX_OUTAGE_CPU_SHARE, outcome.measures
    # The receivers kept accepting and acknowledging while Cassandra was away.
    assert outcome.measures["acknowledgements meanwhile"] > 0, outcome.measures
