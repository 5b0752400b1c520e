"""What the time series accept: series ids, record types and data, one rule each."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from m2m.errors import InvalidInput
from m2m.timeseries.errors import TimeSeriesError
from m2m.timeseries.rules import (
    MAX_DATA_DEPTH,
    MAX_KEY_BYTES,
    TYPE_SEPARATOR,
    check_record_type,
    check_series_id,
    encode_data,
)

LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]


def nested(depth: int, leaf: Any = 1, *, as_object: bool = False) -> Any:
    """``leaf`` inside ``depth`` arrays (or one-key objects)."""
    value = leaf
    for _ in range(depth):
        value = {"a": value} if as_object else [value]
    return value


# --- Series ids and record types --------------------------------------------------------


@pytest.mark.parametrize(
    "series_id",
    ["dev-0f5e2c3a-8a4b-4c59-9d2e-4b6a1f0c7d21", "x", "a b", "é€𝄞", "\x00", "a" * MAX_KEY_BYTES],
)
def test_a_series_id_may_be_any_text_without_the_separator(series_id: str) -> None:
    check_series_id(series_id)


@pytest.mark.parametrize(
    "record_type", ["sen:loc", "_server", "lsen:a/b", "a!b", "!", "é" * (MAX_KEY_BYTES // 2)]
)
def test_a_record_type_may_be_any_text_even_with_the_separator(record_type: str) -> None:
    check_record_type(record_type)


@pytest.mark.parametrize(
    ("series_id", "reason"),
    [
        ("", "a series id must be non-empty"),
        ("!", "without '!'"),
        ("dev-1!sen:loc", "without '!'"),
        ("dev-1!", "without '!'"),
        ("dev-\ud800", "a series id must be text without lone surrogates"),
        ("\udfff", "a series id must be text without lone surrogates"),
        ("a" * (MAX_KEY_BYTES + 1), f"a series id is 1025 bytes long, above {MAX_KEY_BYTES}"),
        ("é" * 513, "a series id is 1026 bytes long, above 1024"),
        ("€" * 342, "a series id is 1026 bytes long, above 1024"),
        ("𝄞" * 257, "a series id is 1028 bytes long, above 1024"),
    ],
)
def test_a_series_id_the_store_cannot_key_is_refused(series_id: str, reason: str) -> None:
    with pytest.raises(TimeSeriesError, match=reason):
        check_series_id(series_id)


@pytest.mark.parametrize(
    ("record_type", "reason"),
    [
        ("", "a record type must be non-empty"),
        ("sen:\ud800", "a record type must be text without lone surrogates"),
        ("x" * (MAX_KEY_BYTES + 1), "a record type is 1025 bytes long, above 1024"),
        ("é" * 513, "a record type is 1026 bytes long, above 1024"),
    ],
)
def test_a_record_type_the_store_cannot_key_is_refused(record_type: str, reason: str) -> None:
    with pytest.raises(TimeSeriesError, match=reason):
        check_record_type(record_type)


def test_the_limit_counts_utf8_bytes_not_characters() -> None:
    check_series_id("€" * 341)  # 1023 bytes
    check_record_type("é" * 512)  # 1024 bytes
    with pytest.raises(TimeSeriesError):
        check_record_type("é" * 512 + "a")


def test_a_refusal_quotes_a_huge_series_id_briefly() -> None:
    with pytest.raises(TimeSeriesError) as refused:
        check_series_id("!" + "x" * 100_000)
    assert len(str(refused.value)) < 200


def test_key_refusals_are_invalid_input_never_worth_retrying() -> None:
    with pytest.raises(InvalidInput):
        check_series_id("")
    with pytest.raises(InvalidInput):
        check_record_type("\ud800")


@given(st.text(min_size=1, max_size=300).filter(lambda text: TYPE_SEPARATOR not in text))
def test_any_short_text_without_the_separator_is_a_series_id(series_id: str) -> None:
    check_series_id(series_id)
    check_record_type(series_id)


# --- Data -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (None, "null"),
        (True, "true"),
        (0, "0"),
        (-12, "-12"),
        (2.5, "2.5"),
        ("21.5", '"21.5"'),
        ("été €", '"été €"'),
        ("𝄞", '"𝄞"'),
        ({"lat": 48.85, "lon": 2.35}, '{"lat":48.85,"lon":2.35}'),
        ([1, "two", None, [], {}], '[1,"two",null,[],{}]'),
        ({"é": ["ü"]}, '{"é":["ü"]}'),
        ('quote " and \\ and \n', '"quote \\" and \\\\ and \\n"'),
    ],
)
def test_data_is_stored_as_compact_json_text_kept_as_utf8(data: Any, text: str) -> None:
    assert encode_data(data) == text


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("where", ["alone", "in a list", "in an object"])
def test_numbers_that_are_not_finite_are_refused(bad: float, where: str) -> None:
    data = {"alone": bad, "in a list": [1, bad], "in an object": {"v": bad}}[where]
    with pytest.raises(TimeSeriesError, match="record data is not JSON"):
        encode_data(data)


@pytest.mark.parametrize(
    "data",
    [b"bytes", {1, 2}, object(), datetime(2023, 1, 1, tzinfo=UTC), 1j, {(1, 2): "tuple key"}],
)
def test_values_json_has_no_form_for_are_refused(data: Any) -> None:
    with pytest.raises(TimeSeriesError, match="record data is not JSON"):
        encode_data(data)


def test_an_integer_too_long_to_write_is_refused() -> None:
    with pytest.raises(TimeSeriesError, match="record data is not JSON"):
        encode_data(10**5000)


def test_data_that_contains_itself_is_refused() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(TimeSeriesError):
        encode_data(loop)


@pytest.mark.parametrize("surrogate", LONE_SURROGATES)
@pytest.mark.parametrize(
    "place",
    [
        lambda s: s,
        lambda s: f"sen{s}",
        lambda s: [1, f"x{s}"],
        lambda s: {"k": s},
        lambda s: {s: 1},
        lambda s: {"a": {f"é{s}": None}},
        lambda s: [[[{"deep": [s]}]]],
    ],
    ids=["string", "inside", "in-list", "object-value", "object-key", "nested-key", "deep"],
)
def test_a_lone_surrogate_in_a_string_or_a_key_is_refused(place: Any, surrogate: str) -> None:
    with pytest.raises(TimeSeriesError, match="lone surrogate"):
        encode_data(place(surrogate))


def test_a_surrogate_pair_decoded_from_json_is_one_character_and_accepted() -> None:
    data = json.loads('"\\ud834\\udd1e"')
    assert encode_data(data) == '"𝄞"'


@pytest.mark.parametrize("as_object", [False, True])
def test_data_nested_exactly_as_deep_as_allowed_is_accepted(as_object: bool) -> None:
    data = nested(MAX_DATA_DEPTH, as_object=as_object)
    assert json.loads(encode_data(data)) == data


@pytest.mark.parametrize("as_object", [False, True])
@pytest.mark.parametrize("depth", [MAX_DATA_DEPTH + 1, 100, 900, 1000, 1500, 2000, 50_000])
def test_data_nested_deeper_than_allowed_is_refused(depth: int, as_object: bool) -> None:
    with pytest.raises(TimeSeriesError, match=f"nested deeper than {MAX_DATA_DEPTH}"):
        encode_data(nested(depth, as_object=as_object))


def test_depth_counts_nesting_not_brackets() -> None:
    wide = [[[]] for _ in range(500)]  # 1001 brackets, nested 3 deep
    assert encode_data(wide).count("[") == 1001
    brackets_in_text = {"note": "[{" * 500, "list": nested(MAX_DATA_DEPTH - 1)}
    assert json.loads(encode_data(brackets_in_text)) == brackets_in_text


def test_one_deep_branch_among_shallow_ones_is_refused() -> None:
    data = {"shallow": [1, 2, {"a": []}], "deep": nested(MAX_DATA_DEPTH)}
    with pytest.raises(TimeSeriesError, match="nested deeper"):
        encode_data(data)


def test_an_empty_array_or_object_counts_as_a_level() -> None:
    encode_data(nested(MAX_DATA_DEPTH - 1, []))
    with pytest.raises(TimeSeriesError):
        encode_data(nested(MAX_DATA_DEPTH, {}))


# --- Properties -------------------------------------------------------------------------

texts_with_lone_surrogates = st.tuples(
    st.text(max_size=4), st.sampled_from(LONE_SURROGATES), st.text(max_size=4)
).map("".join)
texts = st.text(max_size=8) | texts_with_lone_surrogates
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=20,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def storable(value: Any) -> bool:
    """Whether ``value`` holds only finite numbers and text (no lone surrogates), keys included."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return not any("\ud800" <= character <= "\udfff" for character in value)
    if isinstance(value, list):
        return all(map(storable, value))
    if isinstance(value, dict):
        return all(storable(key) and storable(item) for key, item in value.items())
    return True


@given(json_values)
@example({"a\ud800": 1})
@example(["ok", "\udfff"])
@example(nested(MAX_DATA_DEPTH, "\ud800"))
@example(nested(MAX_DATA_DEPTH + 1, 1))
def test_any_value_is_stored_as_utf8_json_that_reads_back_equal_or_refused(value: Any) -> None:
    try:
        text = encode_data(value)
    except TimeSeriesError:
        assert not storable(value) or depth(value) > MAX_DATA_DEPTH
        return
    assert storable(value)
    assert depth(value) <= MAX_DATA_DEPTH
    assert json.loads(text.encode("utf-8")) == value
    assert json.loads(text) == value
