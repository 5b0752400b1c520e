"""The HTTP API's devices, session and auth endpoints over real HTTP, against ``m2m serve``.

Users are made with the ``m2m`` command (:func:`make_web_user`); devices through the API
itself, or by a real ALIP device identifying over TCP. Domains A and B, their users and
a handful of devices are made once per module: every test reads them, and those that
change something work on devices of their own.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from openapi_spec_validator import validate

from m2m.receivers.alip.client import ALIPClient
from m2m.registry.device import device_id_for
from tests.conftest import WAIT, Platform, WebUser, eventually, make_web_user, run_m2m
from tests.web_http import API, error_of, ok, short_id

PAGE = 2
A_DEVICES = 5
FIXED_PATHS = {
    ("get", "/api/v1/devices"),
    ("post", "/api/v1/devices"),
    ("get", "/api/v1/devices/{}"),
    ("delete", "/api/v1/devices/{}"),
    ("get", "/api/v1/devices/{}/settings"),
    ("put", "/api/v1/devices/{}/settings/{}"),
    ("delete", "/api/v1/devices/{}/settings/{}"),
    ("get", "/api/v1/devices/{}/commands"),
    ("post", "/api/v1/devices/{}/commands"),
    ("delete", "/api/v1/devices/{}/commands/{}"),
    ("get", "/api/v1/series/{}/types"),
    ("get", "/api/v1/series/{}/records"),
    ("get", "/api/v1/series/{}/downsample"),
    ("get", "/api/v1/registry/{}"),
    ("put", "/api/v1/registry/{}"),
    ("delete", "/api/v1/registry/{}"),
    ("post", "/api/v1/login"),
    ("get", "/api/v1/events"),
}
"""The paths the issue fixes, parameters unnamed (``{}``)."""
ROW_FIELDS = {"id", "ident", "domain", "domain_id", "connected", "since", "source", "last_seen"}
NO_LOGIN_NEEDED = {"/api/v1/login"}


# --- Fixtures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    """Two domains, a user of each, devices in both (all idents start with ``prefix``)."""

    prefix: str
    domain_a: str
    domain_b: str
    user_a: WebUser
    user_b: WebUser
    a_devices: list[dict[str, Any]]
    b_device: dict[str, Any]


@pytest.fixture(scope="module")
def admin_http(platform: Platform, web_admin: WebUser) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.web_url, headers=web_admin.headers, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def fleet(config_file: Path, admin_http: httpx.Client) -> Fleet:
    prefix = f"web-{short_id()}-"
    domain_a, domain_b = f"{prefix}a", f"{prefix}b"
    user_a = make_web_user(config_file, domain=domain_a)
    user_b = make_web_user(config_file, domain=domain_b)
    # Created out of ident order, so the listing's order is the API's doing.
    a_devices = [
        ok(
            admin_http.post(f"{API}/devices", json={"ident": f"{prefix}A-{n}", "domain": domain_a}),
            201,
        )
        for n in (3, 0, 4, 1, 2)
    ]
    b_device = ok(
        admin_http.post(f"{API}/devices", json={"ident": f"{prefix}B-0", "domain": domain_b}), 201
    )
    return Fleet(
        prefix,
        domain_a,
        domain_b,
        user_a,
        user_b,
        sorted(a_devices, key=lambda row: row["ident"]),
        b_device,
    )


async def pages(
    http: httpx.AsyncClient, who: WebUser, **query: str | int
) -> list[list[dict[str, Any]]]:
    """Every page the device list gives ``who`` for ``query``, following ``next``."""
    found: list[list[dict[str, Any]]] = []
    cursor: dict[str, str] = {}
    while True:
        params = {**query, **cursor}
        page = ok(await http.get(f"{API}/devices", params=params, headers=who.headers))
        found.append(page["devices"])
        if page["next"] is None:
            return found
        cursor = {"cursor": page["next"]}


async def listed(http: httpx.AsyncClient, who: WebUser, **query: str | int) -> list[dict[str, Any]]:
    return [row for page in await pages(http, who, **query) for row in page]


# --- Who may ask -----------------------------------------------------------------------------


def test_the_openapi_document_is_valid_and_has_the_fixed_paths(admin_http: httpx.Client) -> None:
    document = ok(admin_http.get(f"{API}/openapi.json"))
    validate(document)
    published = {
        (method, re.sub(r"\{[^}]+\}", "{}", path))
        for path, item in document["paths"].items()
        for method in item
    }
    assert FIXED_PATHS - published == set()
    row = document["components"]["schemas"]["DeviceRow"]["properties"]
    assert set(row) == ROW_FIELDS


async def test_health_and_the_openapi_document_need_no_login(http: httpx.AsyncClient) -> None:
    assert ok(await http.get("/healthz")) == {"status": "ok"}
    assert ok(await http.get(f"{API}/openapi.json"))["openapi"].startswith("3.")


async def test_every_endpoint_but_login_answers_401_without_a_user(
    http: httpx.AsyncClient,
) -> None:
    document = ok(await http.get(f"{API}/openapi.json"))
    endpoints = [
        (method, path)
        for path, item in document["paths"].items()
        if path not in NO_LOGIN_NEEDED
        for method in item
    ]
    strangers: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer m2m_0123_nope"},
        {"Cookie": "m2m_session=someone.99999999999.forged"},
    ]
    answers = await asyncio.gather(
        *(
            http.request(method, re.sub(r"\{[^}]+\}", "x", path), headers=headers)
            for method, path in endpoints
            for headers in strangers
        )
    )
    for answer in answers:
        error_of(answer, 401)
    asked = {(method, re.sub(r"\{[^}]+\}", "{}", path)) for method, path in endpoints}
    ours = {(method, path) for method, path in FIXED_PATHS if "/devices" in path}
    assert ours | {("get", f"{API}/events"), ("get", f"{API}/me")} <= asked


@pytest.mark.parametrize(
    "credentials",
    [
        (b"Authorization", b"Bearer m2m_\xaa_x"),
        (b"Authorization", b"Bearer nothing-like-a-token"),
        (b"Authorization", b"Basic dXNlcjpwYXNzd29yZA=="),
        (b"Cookie", b"m2m_session=../x.99999999999.forged"),
        (b"Cookie", b"m2m_session=a.1.expired-long-ago"),
        (b"Cookie", b"m2m_session=a.\xb2.not-an-ascii-digit"),
        (b"Cookie", b"m2m_session=a." + b"9" * 5000 + b".far-too-many-digits"),
    ],
)
async def test_credentials_that_are_not_are_answered_401(
    http: httpx.AsyncClient, credentials: tuple[bytes, bytes]
) -> None:
    error_of(await http.get(f"{API}/me", headers=[credentials]), 401)


async def test_a_bearer_token_acts_as_its_user(
    http: httpx.AsyncClient, web_admin: WebUser, fleet: Fleet
) -> None:
    me = ok(await http.get(f"{API}/me", headers=web_admin.headers))
    assert (me["name"], me["admin"]) == (web_admin.name, True)
    me = ok(await http.get(f"{API}/me", headers=fleet.user_a.headers))
    assert (me["name"], me["admin"]) == (fleet.user_a.name, False)
    assert me["domain_id"] == fleet.a_devices[0]["domain_id"]


async def login(http: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    return await http.post(f"{API}/login", json={"user": user, "password": password})


def session_cookie(response: httpx.Response) -> str:
    """``m2m_session=<value>``: what a browser would send back."""
    (set_cookie,) = response.headers.get_list("set-cookie")
    return set_cookie.split(";", 1)[0]


async def test_login_sets_an_httponly_strict_session_cookie_that_works(
    http: httpx.AsyncClient, fleet: Fleet
) -> None:
    user = fleet.user_a
    response = await login(http, user.name, user.password)
    assert ok(response)["name"] == user.name
    (set_cookie,) = response.headers.get_list("set-cookie")
    attributes = {
        part.strip().partition("=")[0].lower(): part.strip().partition("=")[2]
        for part in set_cookie.split(";")[1:]
    }
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "strict"
    assert attributes["path"] == "/"
    cookie = session_cookie(response)
    assert cookie.startswith("m2m_session=")
    me = ok(await http.get(f"{API}/me", headers={"Cookie": cookie}))
    assert (me["name"], me["admin"]) == (user.name, False)


async def test_a_wrong_password_or_an_unknown_user_is_refused(
    http: httpx.AsyncClient, fleet: Fleet
) -> None:
    user = fleet.user_a
    for name, password in (
        (user.name, user.password + "x"),
        (user.name, ""),
        (f"nobody-{short_id()}", user.password),
    ):
        response = await login(http, name, password)
        error_of(response, 401)
        assert "set-cookie" not in response.headers


async def test_logout_clears_the_cookie(http: httpx.AsyncClient, fleet: Fleet) -> None:
    error_of(await http.post(f"{API}/logout"), 401)
    cookie = session_cookie(await login(http, fleet.user_a.name, fleet.user_a.password))
    response = await http.post(f"{API}/logout", headers={"Cookie": cookie})
    assert response.status_code == 204
    (set_cookie,) = response.headers.get_list("set-cookie")
    assert set_cookie.startswith('m2m_session=""') or set_cookie.startswith("m2m_session=;")
    assert "max-age=0" in set_cookie.lower()


async def test_a_new_password_ends_the_sessions_of_the_old_one(
    http: httpx.AsyncClient, config_file: Path
) -> None:
    user = make_web_user(config_file)
    cookie = session_cookie(await login(http, user.name, user.password))
    ok(await http.get(f"{API}/me", headers={"Cookie": cookie}))
    new_password = f"new-{short_id()}-{short_id()}"
    run_m2m("user", "passwd", user.name, config=config_file, input=f"{new_password}\n".encode())
    error_of(await http.get(f"{API}/me", headers={"Cookie": cookie}), 401)
    error_of(await login(http, user.name, user.password), 401)
    cookie = session_cookie(await login(http, user.name, new_password))
    assert ok(await http.get(f"{API}/me", headers={"Cookie": cookie}))["name"] == user.name


async def test_a_removed_token_is_refused_and_a_removed_user_too(
    http: httpx.AsyncClient, config_file: Path
) -> None:
    user = make_web_user(config_file)
    second = run_m2m("user", "token", "create", user.name, config=config_file).stdout.decode()
    second_headers = {"Authorization": f"Bearer {second.strip()}"}
    ok(await http.get(f"{API}/me", headers=second_headers))
    token_id = second.strip().removeprefix("m2m_").partition("_")[0]
    run_m2m("user", "token", "rm", user.name, token_id, config=config_file)
    error_of(await http.get(f"{API}/me", headers=second_headers), 401)
    assert ok(await http.get(f"{API}/me", headers=user.headers))["name"] == user.name
    cookie = session_cookie(await login(http, user.name, user.password))
    run_m2m("user", "rm", user.name, config=config_file)
    error_of(await http.get(f"{API}/me", headers=user.headers), 401)
    error_of(await http.get(f"{API}/me", headers={"Cookie": cookie}), 401)


# --- Devices ---------------------------------------------------------------------------------


async def test_a_created_device_is_answered_with_its_row(
    http: httpx.AsyncClient, admin: dict[str, str], fleet: Fleet
) -> None:
    ident = f"{fleet.prefix}new-{short_id()}"
    row = ok(
        await http.post(
            f"{API}/devices", json={"ident": ident, "domain": fleet.domain_a}, headers=admin
        ),
        201,
    )
    assert row == {
        "id": device_id_for(ident),
        "ident": ident,
        "domain": fleet.domain_a,
        "domain_id": fleet.a_devices[0]["domain_id"],
        "connected": False,
        "since": None,
        "source": None,
        "last_seen": None,
    }
    error_of(await http.post(f"{API}/devices", json={"ident": ident}, headers=admin), 409)


async def test_a_user_creates_devices_in_their_own_domain_only(
    http: httpx.AsyncClient, fleet: Fleet
) -> None:
    ident = f"{fleet.prefix}own-{short_id()}"
    headers = fleet.user_a.headers
    row = ok(await http.post(f"{API}/devices", json={"ident": ident}, headers=headers), 201)
    assert row["domain"] == fleet.domain_a
    other = {"ident": f"{ident}-b", "domain": fleet.domain_b}
    error_of(await http.post(f"{API}/devices", json=other, headers=headers), 404)
    error_of(await http.get(f"{API}/devices/{ident}-b", headers=fleet.user_b.headers), 404)


@pytest.mark.parametrize(
    "body",
    [
        b'{"ident": "bad\\ud800"}',
        b'{"ident": "a/b"}',
        b'{"ident": ""}',
        b'{"ident": ".."}',
        b'{"ident": "nul\\u0000"}',
        b'{"ident": 7}',
        b'{"ident": "x", "colour": "red"}',
        b"{}",
        b"[]",
        b"not json",
    ],
)
async def test_a_bad_device_is_refused_422(
    http: httpx.AsyncClient, admin: dict[str, str], body: bytes
) -> None:
    headers = {**admin, "Content-Type": "application/json"}
    error_of(await http.post(f"{API}/devices", content=body, headers=headers), 422)


@pytest.mark.parametrize(
    "body",
    [
        {"ident": "é" * 32_760},  # its registry path is over Cassandra's 64 KiB key limit
        {"ident": "x", "domain": "d" * 70_000},
    ],
)
async def test_an_oversized_name_is_refused_not_failed(
    http: httpx.AsyncClient, admin: dict[str, str], body: dict[str, str]
) -> None:
    response = await http.post(f"{API}/devices", json=body, headers=admin)
    assert response.status_code in (404, 413, 422), response.text


async def test_a_device_in_an_unknown_domain_is_refused_404(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    body = {"ident": f"web-{short_id()}", "domain": f"nowhere-{short_id()}"}
    error_of(await http.post(f"{API}/devices", json=body, headers=admin), 404)


async def test_the_list_searches_idents_filters_by_domain_and_pages_without_gaps(
    http: httpx.AsyncClient, web_admin: WebUser, fleet: Fleet
) -> None:
    idents = [row["ident"] for row in fleet.a_devices]
    needle = f"{fleet.prefix}A-".upper()  # the search ignores case
    paged = await pages(http, web_admin, ident=needle, limit=PAGE)
    assert [len(page) for page in paged] == [PAGE, PAGE, A_DEVICES - 2 * PAGE]
    assert [row["ident"] for page in paged for row in page] == idents
    a_domain_id = fleet.a_devices[0]["domain_id"]
    for domain in (fleet.domain_a, a_domain_id):
        rows = await listed(http, web_admin, domain=domain, limit=PAGE)
        assert {row["domain"] for row in rows} == {fleet.domain_a}
        assert set(idents) <= {row["ident"] for row in rows}
        assert all(set(row) == ROW_FIELDS for row in rows)
    rows = await listed(http, web_admin, ident=fleet.prefix, connected="false")
    assert [row["ident"] for row in rows] == sorted(row["ident"] for row in rows)
    assert set(idents) | {fleet.b_device["ident"]} <= {row["ident"] for row in rows}


@pytest.mark.parametrize(
    "query",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": "many"},
        {"connected": "maybe"},
        {"cursor": "zz"},  # not UTF-8 once decoded
        {"cursor": "%%%"},  # not base64 at all
    ],
)
async def test_a_bad_list_query_is_refused_422(
    http: httpx.AsyncClient, admin: dict[str, str], query: dict[str, str | int]
) -> None:
    error_of(await http.get(f"{API}/devices", params=query, headers=admin), 422)


async def test_a_device_is_found_by_id_and_by_ident(
    http: httpx.AsyncClient, admin: dict[str, str], fleet: Fleet
) -> None:
    row = fleet.a_devices[0]
    by_id = ok(await http.get(f"{API}/devices/{row['id']}", headers=admin))
    by_ident = ok(await http.get(f"{API}/devices/{row['ident']}", headers=admin))
    assert by_id == by_ident
    assert {key: by_id[key] for key in ROW_FIELDS} == row
    assert (by_id["status"], by_id["settings"], by_id["commands"], by_id["last_location"]) == (
        {},
        [],
        [],
        None,
    )
    error_of(await http.get(f"{API}/devices/{fleet.prefix}none", headers=admin), 404)
    error_of(await http.get(f"{API}/devices/{uuid.uuid4()}", headers=admin), 404)


async def test_a_deleted_device_is_gone_and_its_ident_free_again(
    http: httpx.AsyncClient, admin: dict[str, str], fleet: Fleet
) -> None:
    ident = f"{fleet.prefix}doomed-{short_id()}"
    row = ok(await http.post(f"{API}/devices", json={"ident": ident}, headers=admin), 201)
    put = {"value": "1"}
    ok(await http.put(f"{API}/devices/{ident}/settings/kept", json=put, headers=admin))
    assert (await http.delete(f"{API}/devices/{row['id']}", headers=admin)).status_code == 204
    error_of(await http.get(f"{API}/devices/{row['id']}", headers=admin), 404)
    error_of(await http.get(f"{API}/devices/{ident}", headers=admin), 404)
    error_of(await http.delete(f"{API}/devices/{row['id']}", headers=admin), 404)
    assert ok(await http.get(f"{API}/devices", params={"ident": ident}, headers=admin)) == {
        "devices": [],
        "next": None,
    }
    ok(await http.post(f"{API}/devices", json={"ident": ident}, headers=admin), 201)
    assert ok(await http.get(f"{API}/devices/{ident}/settings", headers=admin)) == []


async def test_a_user_sees_only_their_domain_and_an_admin_sees_all(
    http: httpx.AsyncClient, web_admin: WebUser, fleet: Fleet
) -> None:
    a_idents = [row["ident"] for row in fleet.a_devices]
    b_ident = fleet.b_device["ident"]
    seen_by_a = [row["ident"] for row in await listed(http, fleet.user_a, ident=fleet.prefix)]
    assert b_ident not in seen_by_a and set(a_idents) <= set(seen_by_a)
    seen_by_b = [row["ident"] for row in await listed(http, fleet.user_b, ident=fleet.prefix)]
    assert seen_by_b == [b_ident]
    seen_by_admin = [row["ident"] for row in await listed(http, web_admin, ident=fleet.prefix)]
    assert {*a_idents, b_ident} <= set(seen_by_admin)
    for domain in (fleet.domain_b, fleet.b_device["domain_id"]):
        error_of(
            await http.get(
                f"{API}/devices", params={"domain": domain}, headers=fleet.user_a.headers
            ),
            404,
        )


async def test_another_domains_device_is_404_as_if_absent(
    http: httpx.AsyncClient, fleet: Fleet
) -> None:
    headers = fleet.user_a.headers
    absent = f"{fleet.prefix}absent"
    for device in (fleet.b_device["ident"], fleet.b_device["id"]):
        for method, path, body in (
            ("GET", "", None),
            ("GET", "/settings", None),
            ("PUT", "/settings/period", {"value": "1"}),
            ("DELETE", "/settings/period", None),
            ("GET", "/commands", None),
            ("POST", "/commands", {"text": "reboot"}),
            ("DELETE", f"/commands/{uuid.uuid4()}", None),
            ("DELETE", "", None),
        ):
            hidden = error_of(
                await http.request(
                    method, f"{API}/devices/{device}{path}", json=body, headers=headers
                ),
                404,
            )
            missing = error_of(
                await http.request(
                    method, f"{API}/devices/{absent}{path}", json=body, headers=headers
                ),
                404,
            )
            assert hidden == missing.replace(absent, device)
    still = ok(
        await http.get(f"{API}/devices/{fleet.b_device['id']}", headers=fleet.user_b.headers)
    )
    assert still["settings"] == [] and still["commands"] == []


# --- Settings and commands, without a device connected ---------------------------------------


@pytest.mark.parametrize("name", ["a b", "x=y", "tab\tname", "new\nline", " "])
async def test_a_setting_name_the_protocols_cannot_carry_is_refused_422(
    http: httpx.AsyncClient, admin: dict[str, str], fleet: Fleet, name: str
) -> None:
    url = f"{API}/devices/{fleet.a_devices[0]['id']}/settings/{quote(name, safe='')}"
    error_of(await http.put(url, json={"value": "1"}, headers=admin), 422)


async def test_bad_settings_and_commands_are_refused(
    http: httpx.AsyncClient, admin: dict[str, str], fleet: Fleet
) -> None:
    device = f"{API}/devices/{fleet.a_devices[1]['id']}"
    error_of(
        await http.put(f"{device}/settings/banner", json={"value": "two\nlines"}, headers=admin),
        422,
    )
    error_of(await http.put(f"{device}/settings/banner", json={"value": 5}, headers=admin), 422)
    error_of(await http.put(f"{device}/settings/banner", json={}, headers=admin), 422)
    error_of(await http.delete(f"{device}/settings/never-set", headers=admin), 404)
    error_of(await http.delete(f"{device}/commands/{uuid.uuid4()}", headers=admin), 404)
    error_of(await http.delete(f"{device}/commands/not-an-id", headers=admin), 404)
    error_of(await http.post(f"{device}/commands", json={"text": ""}, headers=admin), 422)
    assert ok(await http.get(f"{device}/settings", headers=admin)) == []
    assert ok(await http.get(f"{device}/commands", headers=admin)) == []


async def test_an_oversized_setting_or_command_is_refused_not_failed(
    http: httpx.AsyncClient, admin: dict[str, str], fleet: Fleet
) -> None:
    device = f"{API}/devices/{fleet.a_devices[3]['id']}"
    huge = "v" * 20_000_000  # over what one Cassandra request may carry (16 MiB)
    response = await http.put(f"{device}/settings/huge", json={"value": huge}, headers=admin)
    assert response.status_code in (413, 422), response.text
    response = await http.post(f"{device}/commands", json={"text": huge}, headers=admin)
    assert response.status_code in (413, 422), response.text


async def test_settings_and_commands_of_an_offline_device_wait_pending(
    http: httpx.AsyncClient, fleet: Fleet
) -> None:
    headers = fleet.user_a.headers  # a user may change their own domain's devices
    device = f"{API}/devices/{fleet.a_devices[2]['ident']}"
    put = ok(await http.put(f"{device}/settings/period", json={"value": "60"}, headers=headers))
    assert put == {
        "name": "period",
        "value": "60",
        "pending": True,
        "acked_at": None,
        "pushed": True,
    }
    created = ok(
        await http.post(f"{device}/commands", json={"text": "reboot now"}, headers=headers), 201
    )
    assert created["pushed"] is True
    detail = ok(await http.get(device, headers=headers))
    assert detail["settings"] == [
        {"name": "period", "value": "60", "pending": True, "acked_at": None}
    ]
    assert detail["commands"] == [
        {"id": created["id"], "text": "reboot now", "pending": True, "response": None}
    ]
    assert (await http.delete(f"{device}/settings/period", headers=headers)).status_code == 204
    cancelled = await http.delete(f"{device}/commands/{created['id']}", headers=headers)
    assert cancelled.status_code == 204
    assert ok(await http.get(f"{device}/settings", headers=headers)) == []
    assert ok(await http.get(f"{device}/commands", headers=headers)) == []


# --- A real device ---------------------------------------------------------------------------


@dataclass
class LiveDevice:
    client: ALIPClient
    ident: str


@pytest.fixture
async def alip(platform: Platform) -> AsyncIterator[LiveDevice]:
    """A new ALIP device, identified and past its greeting (``S GA``: no settings)."""
    ident = f"alip:{uuid.uuid4().hex[:20]}"
    async with await ALIPClient.connect("127.0.0.1", platform.alip_port) as client:
        assert await client.identify(ident) is True
        assert await client.receive_line() == "S GA"
        yield LiveDevice(client, ident)


async def row_of(http: httpx.AsyncClient, headers: dict[str, str], ident: str) -> dict[str, Any]:
    page = ok(await http.get(f"{API}/devices", params={"ident": ident}, headers=headers))
    (row,) = page["devices"]
    return dict(row)


async def test_a_device_shows_connected_while_it_is_and_then_not(
    http: httpx.AsyncClient, admin: dict[str, str], alip: LiveDevice
) -> None:
    async def probe() -> dict[str, Any]:
        return await row_of(http, admin, alip.ident)

    row = await eventually(probe, lambda row: row["connected"], "connected in the list")
    assert row["source"] == alip.client.local_address
    assert row["since"] is not None and row["last_seen"] is not None
    assert ok(await http.get(f"{API}/devices/{alip.ident}", headers=admin))["connected"] is True
    alip.client.send_line("QUIT")
    assert await alip.client.receive_line() == "QUIT bye !"
    row = await eventually(probe, lambda row: not row["connected"], "disconnected in the list")
    assert row["source"] == alip.client.local_address
    only_connected = {"ident": alip.ident, "connected": "true"}
    page = ok(await http.get(f"{API}/devices", params=only_connected, headers=admin))
    assert page == {"devices": [], "next": None}


async def test_a_setting_put_is_pushed_to_the_device_and_shown_acked(
    http: httpx.AsyncClient, admin: dict[str, str], alip: LiveDevice
) -> None:
    settings = f"{API}/devices/{alip.ident}/settings"
    put = ok(await http.put(f"{settings}/period", json={"value": "30 s"}, headers=admin))
    assert put == {
        "name": "period",
        "value": "30 s",
        "pending": True,
        "acked_at": None,
        "pushed": True,
    }
    assert await alip.client.receive_line(WAIT) == "S S period 30 s"
    alip.client.send_line("S A period 30 s")

    async def probe() -> list[dict[str, Any]]:
        return list(ok(await http.get(settings, headers=admin)))

    (row,) = await eventually(probe, lambda rows: not rows[0]["pending"], "the acknowledgement")
    assert (row["name"], row["value"]) == ("period", "30 s") and row["acked_at"] is not None
    assert (await http.delete(f"{settings}/period", headers=admin)).status_code == 204
    assert ok(await http.get(settings, headers=admin)) == []
    error_of(await http.delete(f"{settings}/period", headers=admin), 404)


async def test_a_command_posted_is_pushed_to_the_device_and_shown_answered(
    http: httpx.AsyncClient, admin: dict[str, str], alip: LiveDevice
) -> None:
    commands = f"{API}/devices/{alip.ident}/commands"
    created = ok(await http.post(commands, json={"text": "blink 3 times"}, headers=admin), 201)
    assert created["pushed"] is True
    number, text = (await alip.client.receive_line(WAIT, prefix="C ")).split(" ", 2)[1:]
    assert text == "blink 3 times"
    alip.client.send_line(f"C A {number}")

    async def probe() -> list[dict[str, Any]]:
        return list(ok(await http.get(commands, headers=admin)))

    rows = await eventually(probe, lambda rows: not any(r["pending"] for r in rows), "the answer")
    assert [(row["id"], row["pending"]) for row in rows] == [(created["id"], False)]


async def test_a_live_devices_detail_has_its_connection_and_last_location(
    http: httpx.AsyncClient, admin: dict[str, str], alip: LiveDevice
) -> None:
    alip.client.send_line("D L 48.85,2.35")

    async def probe() -> dict[str, Any]:
        return dict(ok(await http.get(f"{API}/devices/{alip.ident}", headers=admin)))

    detail = await eventually(probe, lambda found: found["last_location"], "a location")
    assert (detail["last_location"]["lat"], detail["last_location"]["lon"]) == (48.85, 2.35)
    assert detail["connected"] is True and detail["source"] == alip.client.local_address


async def test_deleting_a_connected_device_disconnects_it(
    http: httpx.AsyncClient, admin: dict[str, str], alip: LiveDevice
) -> None:
    assert (await http.delete(f"{API}/devices/{alip.ident}", headers=admin)).status_code == 204
    assert await alip.client.closed(WAIT)
    error_of(await http.get(f"{API}/devices/{alip.ident}", headers=admin), 404)


async def test_a_body_too_large_to_read_whole_is_refused_413(
    http: httpx.AsyncClient, admin: dict[str, str], fleet: Fleet
) -> None:
    settings = f"/api/v1/devices/{fleet.a_devices[0]['id']}/settings"
    device = f"{settings}/banner"
    declared = await http.put(device, headers=admin, json={"value": "x" * (2 * 1024 * 1024)})
    error_of(declared, 413)

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        yield b'{"value": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}'

    streamed = await http.put(device, headers={**admin, "Content-Type": "application/json"},
                              content=chunked())  # fmt: skip
    error_of(streamed, 413)
    listed = await http.get(settings, headers=admin)
    assert "banner" not in {row["name"] for row in listed.json()}
