"""Text the platform can store: its UTF-8 size, or None when a lone surrogate makes it no text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m2m.text import utf8_size

LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("", 0),
        ("sen:loc", 7),
        ("\x00\x7f", 2),
        ("é", 2),
        ("€", 3),
        ("𝄞", 4),
        ("\U0010ffff", 4),
        ("a é € 𝄞", 13),
    ],
)
def test_the_size_of_text_is_its_utf8_length(text: str, size: int) -> None:
    assert utf8_size(text) == size


@pytest.mark.parametrize("surrogate", LONE_SURROGATES)
@pytest.mark.parametrize("template", ["{}", "a{}", "{}b", "é{}€", "\ud800\udc00{}"])
def test_a_lone_surrogate_anywhere_makes_text_without_a_size(template: str, surrogate: str) -> None:
    assert utf8_size(template.format(surrogate)) is None


def test_a_surrogate_pair_written_as_two_code_points_is_no_text_either() -> None:
    """Python keeps "\\ud834\\udd1e" as two lone surrogates, not as the character 𝄞."""
    assert utf8_size("\ud834\udd1e") is None
    assert utf8_size("\U0001d11e") == 4


@given(st.text())
def test_any_text_without_lone_surrogates_has_its_encoded_length(text: str) -> None:
    assert utf8_size(text) == len(text.encode("utf-8"))


@given(st.text(), st.sampled_from(LONE_SURROGATES), st.text())
def test_any_text_holding_a_lone_surrogate_has_no_size(
    before: str, surrogate: str, after: str
) -> None:
    assert utf8_size(before + surrogate + after) is None
