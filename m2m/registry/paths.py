"""Registry paths: what a valid one looks like, and how to take one apart.

A node path is absolute and ends with ``/`` (``/device/<uuid>/settings/``); the root is
``/``. The original platform stored paths in that form, so the same rows serve both. A
path given without its trailing ``/`` is accepted and completed; anything that could
name a node ambiguously (empty, ``.`` or ``..`` segments), that could not be printed
safely (control characters) or stored at all (lone surrogates, over ``MAX_PATH_BYTES``)
is refused with an :class:`InvalidPathError` that names the path and the problem, before
a single request is sent. A child's name is one segment: :func:`check_name` says whether
it can be one.
"""

from __future__ import annotations

import re

from m2m.errors import InvalidInput
from m2m.text import utf8_size

ROOT = "/"
SEPARATOR = "/"
HIDDEN_PREFIX = "."
"""Children whose name starts with it are left out of listings unless asked for."""
MAX_PATH_BYTES = 4096
"""The longest path, in UTF-8 bytes. Cassandra refuses keys over 64 KiB; no name a person
or a device gives (an ident, a user's, a domain's) comes near this."""

_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class InvalidPathError(InvalidInput):
    """A registry path or child name that cannot name a node; the message says why."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"invalid registry path {path!r}: {problem}")
        self.path = path
        self.problem = problem


def normalize_path(path: str) -> str:
    """``path`` validated and ending with ``/``; raises :class:`InvalidPathError`."""
    if not path:
        raise InvalidPathError(path, "it is empty")
    if not path.startswith(SEPARATOR):
        raise InvalidPathError(path, "it must be absolute (start with '/')")
    if _CONTROL_CHARACTER.search(path):
        raise InvalidPathError(path, "it contains a control character")
    size = utf8_size(path)
    if size is None:
        raise InvalidPathError(path, "it contains a lone surrogate (not text)")
    if size > MAX_PATH_BYTES:
        raise InvalidPathError(f"{path:.80}…", f"it is {size} bytes long, above {MAX_PATH_BYTES}")
    completed = path if path.endswith(SEPARATOR) else path + SEPARATOR
    if completed != ROOT:
        for segment in completed[1:-1].split(SEPARATOR):
            _check_segment(path, segment)
    return completed


def child_path(path: str, name: str) -> str:
    """The path of child ``name`` of the normalised ``path``; raises :class:`InvalidPathError`."""
    check_name(name, path)
    return f"{path}{name}{SEPARATOR}"


def check_name(name: str, parent: str = "") -> None:
    """Raise :class:`InvalidPathError` unless ``name`` can name a child (of the normalised
    ``parent``)."""
    if not name:
        raise InvalidPathError(parent, "a child name cannot be empty")
    if SEPARATOR in name:
        raise InvalidPathError(f"{parent}{name}", "a child name cannot contain '/'")
    path = f"{parent or ROOT}{name}{SEPARATOR}"
    if (
        path.isascii()  # so no lone surrogate, and as many bytes as characters
        and len(path) <= MAX_PATH_BYTES
        and name not in (".", "..")
        and not _CONTROL_CHARACTER.search(name)
    ):
        return  # the parent is valid, and so is the name: most names, checked quickly
    normalize_path(path)  # says what is wrong, if anything is


def _check_segment(path: str, segment: str) -> None:
    if not segment:
        raise InvalidPathError(path, "it contains an empty segment ('//')")
    if segment in (".", ".."):
        raise InvalidPathError(path, f"it contains a '{segment}' segment")


def parent_path(path: str) -> str | None:
    """The parent of a normalised path; None for the root."""
    if path == ROOT:
        return None
    return path[: path.rindex(SEPARATOR, 0, -1) + 1]


def node_name(path: str) -> str:
    """The last segment of a normalised path (the name its parent lists); "" for the root."""
    if path == ROOT:
        return ""
    return path[path.rindex(SEPARATOR, 0, -1) + 1 : -1]


def is_hidden(name: str) -> bool:
    return name.startswith(HIDDEN_PREFIX)


def is_within(path: str, ancestor: str) -> bool:
    """Whether normalised ``path`` is ``ancestor`` or lies below it."""
    return path.startswith(ancestor)
