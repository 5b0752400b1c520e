"""Registry paths: what is accepted, how it is completed, and what a bad one is told."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m2m.errors import InvalidInput
from m2m.registry.paths import (
    ROOT,
    InvalidPathError,
    check_name,
    child_path,
    is_hidden,
    is_within,
    node_name,
    normalize_path,
    parent_path,
)

segments = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/"),
    min_size=1,
).filter(lambda segment: segment not in (".", ".."))


@pytest.mark.parametrize(
    ("given_path", "normalised"),
    [
        ("/", "/"),
        ("/device", "/device/"),
        ("/device/", "/device/"),
        ("/device/abc/settings", "/device/abc/settings/"),
        ("/a b/é/.hidden/", "/a b/é/.hidden/"),
        ("/firmware/v1.2.3", "/firmware/v1.2.3/"),
    ],
)
def test_valid_paths_are_completed_with_a_trailing_slash(given_path: str, normalised: str) -> None:
    assert normalize_path(given_path) == normalised


@pytest.mark.parametrize(
    ("bad_path", "problem"),
    [
        ("", "it is empty"),
        ("device/abc", "it must be absolute"),
        ("//", "empty segment"),
        ("/device//abc/", "empty segment"),
        ("/device/./abc", "'.' segment"),
        ("/device/../etc", "'..' segment"),
        ("/..", "'..' segment"),
        ("/device/a\nb", "control character"),
        ("/device/\x00", "control character"),
        ("/device/\x7f", "control character"),
        ("/device/\x85", "control character"),
    ],
)
def test_bad_paths_are_refused_naming_the_path_and_the_problem(bad_path: str, problem: str) -> None:
    with pytest.raises(InvalidPathError) as caught:
        normalize_path(bad_path)
    assert problem in str(caught.value)
    assert repr(bad_path) in str(caught.value)
    assert caught.value.path == bad_path


def test_the_root_has_no_parent_and_no_name() -> None:
    assert parent_path(ROOT) is None
    assert node_name(ROOT) == ""


def test_parent_and_name_of_a_path() -> None:
    assert parent_path("/device/abc/settings/") == "/device/abc/"
    assert parent_path("/device/") == "/"
    assert node_name("/device/abc/settings/") == "settings"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "cannot be empty"),
        ("a/b", "cannot contain '/'"),
        ("..", "'..' segment"),
        (".", "'.' segment"),
        ("a\tb", "control character"),
    ],
)
def test_bad_child_names_are_refused(name: str, problem: str) -> None:
    with pytest.raises(InvalidPathError, match=re.escape(problem)):
        child_path("/device/", name)


def test_hidden_names_start_with_a_dot() -> None:
    assert is_hidden(".settings")
    assert not is_hidden("settings")


def test_within_means_the_node_itself_or_below() -> None:
    assert is_within("/a/b/", "/a/")
    assert is_within("/a/", "/a/")
    assert not is_within("/ab/", "/a/")
    assert not is_within("/a/", "/a/b/")


@given(st.lists(segments, min_size=1, max_size=6))
def test_child_parent_and_name_agree_for_any_valid_segments(names: list[str]) -> None:
    path = ROOT
    for name in names:
        child = child_path(path, name)
        assert parent_path(child) == path
        assert node_name(child) == name
        assert normalize_path(child) == child
        assert normalize_path(child.rstrip("/")) == child
        path = child


@pytest.mark.parametrize(
    "bad_path", ["/device/\ud800", "/\udfff/", "/a/b\udc00c/d", "/device/\ud834\udd1e/"]
)
def test_a_path_with_a_lone_surrogate_is_refused_as_no_text(bad_path: str) -> None:
    with pytest.raises(InvalidPathError, match="lone surrogate") as caught:
        normalize_path(bad_path)
    assert caught.value.path == bad_path
    assert caught.value.problem == "it contains a lone surrogate (not text)"


def test_a_path_with_any_character_outside_the_bmp_is_text() -> None:
    assert normalize_path("/device/\U0001d11e") == "/device/\U0001d11e/"


def test_a_refused_path_is_invalid_input_never_worth_retrying() -> None:
    with pytest.raises(InvalidInput):
        normalize_path("/a/../b")


@pytest.mark.parametrize(
    "name", ["settings", ".hidden", "...", "a.b", "a b", "é€𝄞", "a:b", "lsen:x", "x" * 2000]
)
def test_a_name_that_is_one_segment_is_accepted(name: str) -> None:
    check_name(name)
    check_name(name, "/device/abc/")
    assert child_path("/device/abc/", name) == f"/device/abc/{name}/"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "a child name cannot be empty"),
        ("/", "a child name cannot contain '/'"),
        ("a/b", "a child name cannot contain '/'"),
        ("a/", "a child name cannot contain '/'"),
        (".", "it contains a '.' segment"),
        ("..", "it contains a '..' segment"),
        ("a\x00b", "it contains a control character"),
        ("\n", "it contains a control character"),
        ("a\x9f", "it contains a control character"),
        ("\ud800", "it contains a lone surrogate (not text)"),
        ("x\udfff", "it contains a lone surrogate (not text)"),
    ],
)
def test_a_name_that_cannot_be_one_segment_is_refused(name: str, problem: str) -> None:
    with pytest.raises(InvalidPathError) as caught:
        check_name(name, "/device/abc/")
    assert caught.value.problem == problem
    with pytest.raises(InvalidPathError) as caught_without_parent:
        check_name(name)
    assert caught_without_parent.value.problem == problem


def test_a_refused_name_is_reported_with_the_path_it_would_make() -> None:
    with pytest.raises(InvalidPathError) as caught:
        check_name("a/b", "/device/abc/")
    assert caught.value.path == "/device/abc/a/b"
    with pytest.raises(InvalidPathError) as caught:
        check_name("..", "/device/abc/")
    assert caught.value.path == "/device/abc/../"
    with pytest.raises(InvalidPathError) as caught:
        check_name("", "/device/abc/")
    assert caught.value.path == "/device/abc/"


def test_child_path_refuses_what_check_name_refuses() -> None:
    for name in ("", "a/b", "..", "\ud800", "a\tb"):
        with pytest.raises(InvalidPathError):
            child_path("/device/", name)


names_with_anything = st.lists(
    st.sampled_from(["/", ".", "\x00", "\x85", "\ud800", "\udfff", "a", "é"]) | st.characters(),
    max_size=6,
).map("".join)


@given(names_with_anything)
def test_a_name_is_accepted_exactly_when_it_makes_a_path_with_one_more_segment(name: str) -> None:
    try:
        child = child_path("/device/", name)
    except InvalidPathError:
        accepted = False
    else:
        accepted = True
        assert parent_path(child) == "/device/"
        assert node_name(child) == name
        assert normalize_path(child) == child
        assert child.encode("utf-8")
    one_segment = (
        name not in ("", ".", "..")
        and "/" not in name
        and re.search(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]", name) is None
    )
    assert accepted is one_segment
