"""``m2m ts`` as a person or a script runs it: JSON lines out, one-line errors."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_m2m


@pytest.fixture
def key() -> str:
    return f"dev-{uuid.uuid4()}"


def put(config: Path, key: str, record_type: str, data: str, *options: str) -> str:
    result = run_m2m("ts", "put", key, record_type, data, *options, config=config)
    assert result.stderr == b""
    return result.stdout.decode().strip()


def get(config: Path, key: str, *options: str) -> list[dict[str, Any]]:
    result = run_m2m("ts", "get", key, *options, config=config)
    assert result.stderr == b""
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def test_put_then_get_prints_json_lines(config_file: Path, key: str) -> None:
    printed = put(
        config_file,
        key,
        "sen:loc",
        '{"lat": 48.85, "tags": ["a"]}',
        "--time",
        "2026-01-31T23:59:59.999",
    )
    assert uuid.UUID(printed).version == 1
    assert get(config_file, key) == [
        {
            "id": key,
            "type": "sen:loc",
            "time": "2026-01-31T23:59:59.999000Z",
            "uuid": printed,
            "data": {"lat": 48.85, "tags": ["a"]},
        }
    ]


def test_get_filters_orders_and_limits(config_file: Path, key: str) -> None:
    put(config_file, key, "sen:t", "1", "--time", "1767225599")  # 2025-12-31T23:59:59Z
    put(config_file, key, "sen:t", "2", "--time", "2026-01-01T00:00:00+00:00")
    put(config_file, key, "sen:loc", '"x"', "--time", "1767225600.5")
    put(config_file, key, "sen:t", "3", "--time", "2026-01-01T02:00:00+01:00")  # 01:00Z
    assert [r["data"] for r in get(config_file, key)] == [3, "x", 2, 1]
    assert [r["data"] for r in get(config_file, key, "--asc")] == [1, 2, "x", 3]
    assert [r["data"] for r in get(config_file, key, "--type", "sen:t", "--limit", "2")] == [3, 2]
    between = get(
        config_file, key, "--from", "2026-01-01", "--to", "2026-01-01T00:00:00.5", "--asc"
    )
    assert [(r["type"], r["time"]) for r in between] == [
        ("sen:t", "2026-01-01T00:00:00.000000Z"),
        ("sen:loc", "2026-01-01T00:00:00.500000Z"),
    ]


def test_rm_deletes_by_type_range_and_whole_series(config_file: Path, key: str) -> None:
    for hour in range(4):
        put(config_file, key, "sen:t", str(hour), "--time", f"2026-01-01T0{hour}:00:00")
    put(config_file, key, "sen:loc", '"x"', "--time", "2026-01-01T00:30:00")

    removed = run_m2m(
        "ts", "rm", key, "--type", "sen:t", "--from", "2026-01-01T03:00", config=config_file
    )
    assert (removed.stdout, removed.stderr.decode()) == (b"", f"{key}: deleted 1 records\n")
    removed = run_m2m("ts", "rm", key, "--to", "2026-01-01T00:30:00", config=config_file)
    assert removed.stderr.decode() == f"{key}: deleted 2 records\n"
    assert [r["data"] for r in get(config_file, key)] == [2, 1]

    removed = run_m2m("ts", "rm", key, config=config_file)
    assert removed.stderr.decode() == f"{key}: deleted 2 records\n"
    assert get(config_file, key) == []


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("put", "KEY", "sen:t", "{not json"), "not valid JSON"),
        (("put", "KEY", "sen:t", "1", "--time", "yesterday"), "neither ISO 8601 nor unix seconds"),
        (
            ("put", "KEY", "sen:t", "1", "--time", "1500-01-01T00:00:00Z"),
            "outside what a time UUID",
        ),
        (("put", "KEY", "sen:t", "1", "--ttl", "0"), "--ttl"),
        (("get", "KEY", "--limit", "0"), "--limit"),
        (("get", "KEY", "--limit", "ten"), "--limit"),
        (("get", "KEY", "--from", "2026-13-01"), "--from"),
        (("get", "KEY", "--from", "2026-02-01", "--to", "2026-01-01"), "after it ends"),
        (("rm", "KEY!x"), "without '!'"),
    ],
)
def test_bad_input_is_one_line_on_stderr(
    config_file: Path, key: str, args: tuple[str, ...], complaint: str
) -> None:
    result = run_m2m(
        "ts", *(key if a == "KEY" else a for a in args), config=config_file, check=False
    )
    assert result.returncode != 0
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ")
    assert complaint in lines[0]
    assert get(config_file, key) == []
