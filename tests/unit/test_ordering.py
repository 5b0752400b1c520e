"""The in-order step runner: order kept across waiting steps, errors reported, bounded."""

from __future__ import annotations

import asyncio

from m2m.receivers.ordering import InOrder


async def test_steps_after_a_waiting_one_wait_for_it() -> None:
    done: list[str] = []
    errors: list[BaseException] = []
    gate = asyncio.Event()

    async def slow() -> None:
        await gate.wait()
        done.append("slow")

    steps = InOrder(errors.append, lambda _: None)
    steps.submit(lambda: done.append("first") and None)
    steps.submit(slow)
    steps.submit(lambda: done.append("after") and None)
    assert done == ["first"]
    gate.set()
    await asyncio.sleep(0.01)
    assert done == ["first", "slow", "after"]
    assert errors == []


async def test_a_failing_step_is_reported_and_the_next_ones_still_run() -> None:
    done: list[str] = []
    errors: list[BaseException] = []

    async def broken() -> None:
        raise ValueError("async")

    def also_broken() -> None:
        raise KeyError("sync")

    steps = InOrder(errors.append, lambda _: None)
    steps.submit(broken)
    steps.submit(also_broken)
    steps.submit(lambda: done.append("last") and None)
    await asyncio.sleep(0.01)
    assert done == ["last"]
    assert [type(e) for e in errors] == [ValueError, KeyError]


async def test_past_the_limit_reading_pauses_until_every_waiting_step_ran() -> None:
    backlog: list[bool] = []
    gate = asyncio.Event()

    async def slow() -> None:
        await gate.wait()

    steps = InOrder(lambda exc: None, backlog.append, limit=3)
    steps.submit(slow)
    for _ in range(2):
        steps.submit(lambda: None)
    assert backlog == []
    steps.submit(lambda: None)
    steps.submit(lambda: None)
    assert backlog == [True]
    gate.set()
    await asyncio.sleep(0.01)
    assert backlog == [True, False]
    assert steps.backlog == 0
