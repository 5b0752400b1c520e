"""The in-order step runner: order kept across waiting steps, errors reported, bounded."""

from __future__ import annotations

import asyncio

from m2m.receivers.ordering import DEFAULT_LIMIT, STEP_COST, InOrder


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

    steps = InOrder(lambda exc: None, backlog.append, limit=3 * STEP_COST)
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


class Gate:
    """A step that waits until opened, holding every step submitted after it."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()

    async def __call__(self) -> None:
        await self.opened.wait()


def nothing() -> None:
    return None


async def test_a_waiting_step_counts_the_bytes_it_carries_and_its_own_cost() -> None:
    gate = Gate()
    steps = InOrder(lambda exc: None, lambda _: None)
    steps.submit(gate, 10_000)  # runs at once: it never waits
    assert steps.backlog_bytes == 0
    steps.submit(nothing, 100)
    steps.submit(nothing)
    assert steps.backlog == 2
    assert steps.backlog_bytes == 100 + STEP_COST + STEP_COST
    gate.opened.set()
    await asyncio.sleep(0.01)
    assert (steps.backlog, steps.backlog_bytes) == (0, 0)


async def test_one_big_step_over_the_limit_pauses_reading_at_once() -> None:
    backlog: list[bool] = []
    gate = Gate()
    steps = InOrder(lambda exc: None, backlog.append, limit=10_000)
    steps.submit(gate)
    steps.submit(nothing, 9_999)
    assert backlog == [True]  # 9_999 + STEP_COST waiting reach the limit
    assert steps.backlog == 1


async def test_many_small_steps_pause_reading_once_their_bytes_reach_the_limit() -> None:
    backlog: list[bool] = []
    gate = Gate()
    steps = InOrder(lambda exc: None, backlog.append, limit=5 * (STEP_COST + 100))
    steps.submit(gate)
    for _ in range(4):
        steps.submit(nothing, 100)
    assert backlog == []
    steps.submit(nothing, 99)
    assert backlog == []
    steps.submit(nothing, 0)
    assert backlog == [True]
    for _ in range(10):
        steps.submit(nothing, 1_000)
    assert backlog == [True]  # told once


async def test_a_big_step_with_nothing_to_wait_for_runs_without_pausing() -> None:
    backlog: list[bool] = []
    ran: list[int] = []
    steps = InOrder(lambda exc: None, backlog.append, limit=1_000)
    steps.submit(lambda: ran.append(1) and None, 1_000_000)
    assert ran == [1]
    assert backlog == []
    assert steps.backlog_bytes == 0


async def test_reading_resumes_only_once_every_waiting_step_ran() -> None:
    backlog: list[bool] = []
    first, second = Gate(), Gate()
    steps = InOrder(lambda exc: None, backlog.append, limit=STEP_COST + 500)
    steps.submit(first)
    steps.submit(second, 500)
    steps.submit(nothing, 500)
    assert backlog == [True]
    first.opened.set()
    await asyncio.sleep(0.01)
    # `second` runs now, and the last step waits behind it: still paused.
    assert backlog == [True]
    assert steps.backlog == 1
    assert steps.backlog_bytes == 500 + STEP_COST
    second.opened.set()
    await asyncio.sleep(0.01)
    assert backlog == [True, False]
    assert steps.backlog_bytes == 0


async def test_failing_steps_free_their_bytes_too() -> None:
    backlog: list[bool] = []
    errors: list[BaseException] = []
    gate = Gate()

    def broken() -> None:
        raise RuntimeError("broken")

    steps = InOrder(errors.append, backlog.append, limit=2 * STEP_COST)
    steps.submit(gate)
    steps.submit(broken, 300)
    steps.submit(broken, 300)
    gate.opened.set()
    await asyncio.sleep(0.01)
    assert backlog == [True, False]
    assert steps.backlog_bytes == 0
    assert len(errors) == 2


async def test_reading_can_pause_again_after_it_resumed() -> None:
    backlog: list[bool] = []
    steps = InOrder(lambda exc: None, backlog.append, limit=1_000)
    for _ in range(2):
        gate = Gate()
        steps.submit(gate)
        steps.submit(nothing, 1_000)
        gate.opened.set()
        await asyncio.sleep(0.01)
    assert backlog == [True, False, True, False]


async def test_the_default_limit_is_a_thousand_empty_steps() -> None:
    backlog: list[bool] = []
    gate = Gate()
    steps = InOrder(lambda exc: None, backlog.append)
    steps.submit(gate)
    for _ in range(999):
        steps.submit(nothing)
    assert backlog == []
    steps.submit(nothing)
    assert backlog == [True]
    assert steps.backlog_bytes == DEFAULT_LIMIT
    gate.opened.set()
    await asyncio.sleep(0.01)
    assert backlog == [True, False]
