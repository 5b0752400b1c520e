"""Registry paths: what is accepted, how it is completed, and what a bad one is told."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m2m.registry.paths import (
    ROOT,
    InvalidPathError,
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
