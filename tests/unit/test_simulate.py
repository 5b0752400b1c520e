"""What ``m2m simulate`` computes without a network: rates, shares, idents, percentiles."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m2m.cli.simulate import _summary_lines
from m2m.simulate import Latency, Pace, Plan, Summary, idents, parse_rate, percentile


@pytest.mark.parametrize(
    ("text", "rate"),
    [("200", 200.0), ("200/s", 200.0), (" 0.5/s ", 0.5), (".5", 0.5), ("0", 0.0), ("7.", 7.0)],
)
def test_a_rate_is_records_a_second_with_or_without_its_unit(text: str, rate: float) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "fast", "-1", "200/m", "200 /s", "1e3", "/s", "2/s/s"])
def test_anything_else_is_not_a_rate(text: str) -> None:
    with pytest.raises(ValueError, match="is not a rate"):
        parse_rate(text)


@given(
    rate=st.floats(min_value=0, max_value=10_000, allow_nan=False),
    devices=st.integers(min_value=1, max_value=500),
    elapsed=st.floats(min_value=0, max_value=100, allow_nan=False),
)
def test_together_the_devices_send_the_total_rate_each_its_share(
    rate: float, devices: int, elapsed: float
) -> None:
    pace = Pace(rate, devices, duration=100)
    sent = [pace.due(index, elapsed) for index in range(devices)]
    assert sum(sent) == math.floor(rate * elapsed)
    assert max(sent) - min(sent) <= 1  # even shares, never a burst on one device


def test_shares_are_exact_at_the_end_of_the_run() -> None:
    pace = Pace(rate=50, devices=5, duration=2)
    assert [pace.due(index, elapsed=2.0) for index in range(5)] == [20] * 5
    assert [pace.due(index, elapsed=30.0) for index in range(5)] == [20] * 5  # no more after


def test_the_fleet_spreads_its_records_over_the_second() -> None:
    pace = Pace(rate=4, devices=4, duration=10)
    # Each device sends once a second, a quarter of a second after the one before it.
    first_records = sorted(pace.next_due(index, sent=0) for index in range(4))
    assert first_records == [0.25, 0.5, 0.75, 1.0]


@given(
    rate=st.floats(min_value=0.01, max_value=10_000, allow_nan=False),
    devices=st.integers(min_value=1, max_value=500),
    index=st.integers(min_value=0, max_value=499),
    sent=st.integers(min_value=0, max_value=10_000),
)
def test_a_device_owes_its_next_record_when_it_is_due(
    rate: float, devices: int, index: int, sent: int
) -> None:
    index %= devices
    pace = Pace(rate, devices, duration=math.inf)
    at = pace.next_due(index, sent)
    assert pace.due(index, at * (1 + 1e-9) + 1e-9) >= sent + 1
    assert pace.due(index, at * (1 - 1e-9) - 1e-9) <= sent


def test_without_a_rate_nothing_is_ever_due() -> None:
    pace = Pace(rate=0, devices=3, duration=10)
    assert pace.next_due(0, sent=0) == math.inf
    assert pace.due(2, elapsed=10) == 0


def test_idents_are_the_prefix_and_a_zero_padded_number() -> None:
    assert idents("sim:", 3) == ["sim:00000", "sim:00001", "sim:00002"]
    assert idents("sim:", 2, first=99_999) == ["sim:099999", "sim:100000"]


def test_percentiles_are_values_that_were_measured() -> None:
    samples = [float(n) for n in range(100, 0, -1)]  # 1..100, unsorted
    latency = Latency.of(samples)
    assert latency == Latency(count=100, p50=50.0, p90=90.0, p99=99.0, max=100.0)
    assert percentile([0.003], 0.99) == 0.003
    assert percentile([1.0, 2.0], 0.5) == 1.0
    assert Latency.of([]) is None


def _summary(**changes: object) -> Summary:
    fields: dict[str, object] = {
        "plan": Plan("m2mp", "127.0.0.1", 3010, devices=4, rate=20, duration=2),
        "identified": 4,
        "refused": 0,
        "failed_to_connect": 0,
        "sent": 40,
        "acknowledged": 40,
        "errors": [],
        "latency": Latency(count=12, p50=0.0012, p90=0.002, p99=0.0031, max=0.0035),
        "seconds": 2.0,
        "stopped_early": False,
    }
    return Summary(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_clean_run_reads_in_four_lines() -> None:
    summary = _summary()
    assert summary.ok
    assert [f"{label:13}{text}" for label, text in _summary_lines(summary)] == [
        "devices      4 identified, 0 refused, 0 failed to connect",
        "records      sent 40, acknowledged 40 (20.0/s over 2.0 s)",
        "errors       0",
        "ping latency p50 1.2 ms, p90 2.0 ms, p99 3.1 ms, max 3.5 ms (12 barriers)",
    ]
    assert summary.to_json()["ping_ms"] == {
        "count": 12,
        "p50": 1.2,
        "p90": 2.0,
        "p99": 3.1,
        "max": 3.5,
    }


def test_each_reason_of_failure_is_a_line_with_how_many_devices_met_it() -> None:
    errors = [(f"reason {n}", 7 - n) for n in range(7)]
    summary = _summary(identified=0, refused=28, sent=0, acknowledged=0, errors=errors,
                       latency=None, seconds=0.0)  # fmt: skip
    assert not summary.ok
    assert summary.error_count == 28
    assert _summary_lines(summary)[1:] == [
        ("records", "sent 0, acknowledged 0 (none sent)"),
        ("errors", "28"),
        ("", "7 device(s): reason 0"),
        ("", "6 device(s): reason 1"),
        ("", "5 device(s): reason 2"),
        ("", "4 device(s): reason 3"),
        ("", "3 device(s): reason 4"),
        ("", "… and 2 other reason(s): --json lists them all"),
        ("ping latency", "- (no barrier answered)"),
    ]
    assert len(summary.to_json()["error_reasons"]) == 7


def test_a_device_that_did_not_identify_is_a_problem_even_without_an_error() -> None:
    # Stopped by Ctrl-C before every device connected: nothing failed, yet not all in.
    summary = _summary(identified=3, stopped_early=True)
    assert not summary.ok
    assert _summary_lines(summary)[1] == (
        "records",
        "sent 40, acknowledged 40 (20.0/s over 2.0 s, stopped early)",
    )
