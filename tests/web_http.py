"""What the tests of the web service share to read its answers."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

API = "/api/v1"


def short_id() -> str:
    return uuid.uuid4().hex[:8]


def ok(response: httpx.Response, status: int = 200) -> Any:
    """The JSON of an answer with ``status`` (None if it has no body)."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json() if response.content else None


def error_of(response: httpx.Response, status: int) -> str:
    """The ``error`` of a JSON error answer with ``status``; AssertionError otherwise."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return str(body["error"])
