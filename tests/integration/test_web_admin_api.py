"""The HTTP API's registry, firmware, domains and users endpoints over real HTTP, against
``m2m serve``; what they write is read back with the ``m2m`` command, and the reverse.

Every test names what it makes with a fresh suffix: the keyspace is shared by the run.
Uploads that must stop half-way (too large, cut off) are sent on a raw socket, so the
test decides exactly which bytes the server gets before what it answers.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from m2m.registry.node import MAX_VALUES_BYTES
from m2m.registry.paths import MAX_PATH_BYTES
from tests.conftest import Platform, WebUser, eventually, make_web_user, run_m2m
from tests.web_http import API, error_of, ok, short_id

UPLOAD_CHUNK = 64 * 1024


def m2m_json_lines(*args: str, config: Path) -> list[dict[str, Any]]:
    output = run_m2m(*args, "--json", config=config).stdout.decode()
    return [json.loads(line) for line in output.splitlines()]


@pytest.fixture(scope="module")
def member(config_file: Path) -> WebUser:
    """A user who is no admin, in a domain of their own."""
    return make_web_user(config_file, domain=f"adm-{short_id()}")


# --- Who may ask ---------------------------------------------------------------------------


ADMIN_ONLY: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/registry/", None),
    ("PUT", "/registry/x", {"values": {}}),
    ("DELETE", "/registry/x", None),
    ("PUT", "/firmware/x", None),
    ("DELETE", "/firmware/x", None),
    ("POST", "/domains", {"name": "x"}),
    ("DELETE", "/domains/x", None),
    ("GET", "/users", None),
    ("POST", "/users", {"name": "x"}),
    ("DELETE", "/users/x", None),
    ("PUT", "/users/x/password", {"password": "long-enough-1"}),
    ("POST", "/users/x/tokens", None),
    ("GET", "/users/x/tokens", None),
    ("DELETE", "/users/x/tokens/x", None),
]


async def test_admin_endpoints_are_401_without_a_user_and_403_for_a_member(
    http: httpx.AsyncClient, member: WebUser
) -> None:
    for method, path, body in ADMIN_ONLY:
        error_of(await http.request(method, API + path, json=body), 401)
        error_of(await http.request(method, API + path, json=body, headers=member.headers), 403)


async def test_the_openapi_document_publishes_these_endpoints(http: httpx.AsyncClient) -> None:
    paths = ok(await http.get(f"{API}/openapi.json"))["paths"]
    assert {"get", "put", "delete"} <= set(paths[f"{API}/registry/{{path}}"])
    assert {"get", "put", "delete"} <= set(paths[f"{API}/firmware/{{name}}"])
    upload = paths[f"{API}/firmware/{{name}}"]["put"]["requestBody"]["content"]
    assert set(upload) == {"application/octet-stream"}
    assert {"get", "post"} <= set(paths[f"{API}/users/{{user}}/tokens"])


# --- Registry ------------------------------------------------------------------------------


async def test_a_node_put_through_the_api_is_read_by_the_cli(
    http: httpx.AsyncClient, admin: dict[str, str], config_file: Path
) -> None:
    top = f"/web-admin-{short_id()}/"
    node = ok(
        await http.put(
            f"{API}/registry{top}a/b", json={"values": {"x": "1", "é": "ü"}}, headers=admin
        ),
        201,
    )
    assert node == {"path": f"{top}a/b/", "status": "created", "values": {"x": "1", "é": "ü"},
                    "children": [], "withheld": []}  # fmt: skip
    again = ok(
        await http.put(f"{API}/registry{top}a/b/", json={"values": {"y": "2"}}, headers=admin)
    )
    assert again["values"] == {"x": "1", "y": "2", "é": "ü"}, "values merge, 200 when it exists"
    got = ok(await http.get(f"{API}/registry{top}a/b", headers=admin))
    assert got == again
    assert ok(await http.get(f"{API}/registry{top}a", headers=admin))["children"] == ["b"]

    cli_values = run_m2m("registry", "get", f"{top}a/b", config=config_file).stdout.decode()
    assert json.loads(cli_values) == {"x": "1", "y": "2", "é": "ü"}
    assert run_m2m("registry", "ls", f"{top}a", config=config_file).stdout.decode() == "b\n"


async def test_a_node_set_by_the_cli_is_read_by_the_api(
    http: httpx.AsyncClient, admin: dict[str, str], config_file: Path
) -> None:
    path = f"/web-admin-{short_id()}/from-cli/"
    run_m2m("registry", "set", path, "made-by", "cli", config=config_file)
    assert ok(await http.get(f"{API}/registry{path}", headers=admin))["values"] == {
        "made-by": "cli"
    }


async def test_hidden_children_are_listed_only_when_asked(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    top = f"/web-admin-{short_id()}"
    for child in ("seen", ".hidden"):
        ok(await http.put(f"{API}/registry{top}/{child}", json={}, headers=admin), 201)
    assert ok(await http.get(f"{API}/registry{top}", headers=admin))["children"] == ["seen"]
    every = ok(await http.get(f"{API}/registry{top}", params={"all": "true"}, headers=admin))
    assert every["children"] == [".hidden", "seen"]


async def test_a_delete_is_soft_and_recursive_unless_hard(
    http: httpx.AsyncClient, admin: dict[str, str], config_file: Path
) -> None:
    top = f"/web-admin-{short_id()}"
    ok(await http.put(f"{API}/registry{top}/a/b", json={"values": {"k": "v"}}, headers=admin), 201)
    assert ok(await http.delete(f"{API}/registry{top}/a", headers=admin)) == {"deleted": 2}
    error_of(await http.get(f"{API}/registry{top}/a/b", headers=admin), 404)
    error_of(await http.get(f"{API}/registry{top}/a", headers=admin), 404)
    assert run_m2m("registry", "get", f"{top}/a", config=config_file, check=False).returncode == 1
    assert ok(await http.get(f"{API}/registry{top}", headers=admin))["children"] == []
    error_of(await http.delete(f"{API}/registry{top}/a", headers=admin), 404)

    # Soft-deleted rows stay until a hard delete takes them.
    hard = await http.delete(f"{API}/registry{top}/a", params={"hard": "true"}, headers=admin)
    assert ok(hard) == {"deleted": 1}
    error_of(await http.delete(f"{API}/registry{top}/a", params={"hard": "true"}, headers=admin),
             404)  # fmt: skip


async def test_bad_paths_and_values_are_refused_422_and_write_nothing(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    top = f"/web-admin-{short_id()}"
    too_long = f"{top}/" + "é" * (MAX_PATH_BYTES // 2)  # over Cassandra's key limit soon
    bad_paths = (f"{top}//x", f"{top}/%2E%2E/x", f"{top}/%2E", f"{top}/a%01b", f"{top}/%7F")
    for bad in (*bad_paths, too_long):
        for method in ("GET", "PUT", "DELETE"):
            error = error_of(await http.request(method, f"{API}/registry{bad}", json={},
                                                headers=admin), 422)  # fmt: skip
            assert "invalid registry path" in error
    for values in ('{"k": "\\ud800"}', '{"\\udfff": "v"}'):
        response = await http.put(
            f"{API}/registry{top}/v",
            content=f'{{"values": {values}}}',
            headers={**admin, "Content-Type": "application/json"},
        )
        assert "surrogate" in error_of(response, 422)
    for values in ({"k": 1}, {"k": "x" * MAX_VALUES_BYTES}):
        error_of(await http.put(f"{API}/registry{top}/v", json={"values": values},
                                headers=admin), 422)  # fmt: skip
    error_of(await http.get(f"{API}/registry{top}", headers=admin), 404)


async def test_the_root_is_read_but_never_deleted(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    root = ok(await http.get(f"{API}/registry/", headers=admin))
    assert root["path"] == "/" and {"user", "domain"} <= set(root["children"])
    assert "root" in error_of(await http.delete(f"{API}/registry/", headers=admin), 422)
    assert ok(await http.get(f"{API}/registry/", headers=admin))["path"] == "/"


async def test_password_hashes_token_digests_and_the_session_key_are_withheld(
    http: httpx.AsyncClient, admin: dict[str, str], web_admin: WebUser
) -> None:
    me = ok(await http.get(f"{API}/me", headers=admin))
    user = ok(await http.get(f"{API}/registry/user/{me['id']}", headers=admin))
    assert user["withheld"] == ["password"] and "password" not in user["values"]
    assert user["values"]["name"] == web_admin.name
    token_id = web_admin.token.removeprefix("m2m_").partition("_")[0]
    token = ok(await http.get(f"{API}/registry/token/{token_id}", headers=admin))
    assert token["withheld"] == ["hash"] and set(token["values"]) == {"user", "created"}
    web = ok(await http.get(f"{API}/registry/web", headers=admin))
    assert web["withheld"] == ["session-key"] and web["values"] == {}


# --- Firmware ------------------------------------------------------------------------------


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    """``data`` as a body of unknown length (chunked), the way a stream is sent."""
    for start in range(0, len(data), UPLOAD_CHUNK):
        yield data[start : start + UPLOAD_CHUNK]


async def firmware_list(http: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    return {row["name"]: row for row in ok(await http.get(f"{API}/firmware", headers=headers))}


async def firmware_nodes(http: httpx.AsyncClient, admin: dict[str, str]) -> set[str]:
    """The children of ``/firmware/``: ``by-name`` and one per stored file, listed or not."""
    node = await http.get(f"{API}/registry/firmware", params={"all": "true"}, headers=admin)
    return set(ok(node)["children"])


async def test_an_upload_streams_in_and_downloads_byte_identical_for_everyone(
    http: httpx.AsyncClient, admin: dict[str, str], member: WebUser, config_file: Path
) -> None:
    name = f"fw-{short_id()}.bin"
    content = os.urandom(5 * 1024 * 1024 + 123)  # several blocks, the last one partial
    response = await http.put(
        f"{API}/firmware/{name}",
        content=chunks_of(content),
        headers={**admin, "Content-Type": "application/x-firmware"},
    )
    row = ok(response, 201)
    assert row == {"name": name, "id": row["id"], "size": len(content),
                   "type": "application/x-firmware"}  # fmt: skip
    assert (await firmware_list(http, member.headers))[name] == row

    download = await http.get(f"{API}/firmware/{name}", headers=member.headers)
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["content-length"] == str(len(content))
    assert download.headers["content-type"] == "application/x-firmware"
    assert download.headers["content-disposition"] == f'attachment; filename="{name}"'

    listed = m2m_json_lines("firmware", "ls", config=config_file)
    assert {"name": name, "id": row["id"], "size": len(content)} in listed
    from_cli = run_m2m("blob", "get", f"/firmware/{row['id']}/file/", config=config_file)
    assert from_cli.stdout == content


async def test_a_firmware_added_by_the_cli_is_downloaded_by_the_api(
    http: httpx.AsyncClient, member: WebUser, config_file: Path, tmp_path: Path
) -> None:
    suffix = short_id()
    name = f"fw-{suffix} (été).bin"
    content = os.urandom(700_000)
    local = tmp_path / "firmware.bin"
    local.write_bytes(content)
    run_m2m("firmware", "add", name, str(local), config=config_file)
    download = await http.get(f"{API}/firmware/{name}", headers=member.headers)
    assert download.status_code == 200 and download.content == content
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"] == (
        f"attachment; filename*=utf-8''fw-{suffix}%20%28%C3%A9t%C3%A9%29.bin"
    )


async def test_a_new_upload_replaces_the_old_and_a_delete_removes_it(
    http: httpx.AsyncClient, admin: dict[str, str], member: WebUser
) -> None:
    name = f"fw-{short_id()}"
    first = ok(await http.put(f"{API}/firmware/{name}", content=b"v1", headers=admin), 201)
    assert first["type"] == "application/octet-stream"
    second = ok(await http.put(f"{API}/firmware/{name}", content=b"v2!", headers=admin), 201)
    assert second["id"] != first["id"] and second["size"] == 3
    assert (await http.get(f"{API}/firmware/{name}", headers=member.headers)).content == b"v2!"
    assert first["id"] not in await firmware_nodes(http, admin), "the old file is gone"

    assert (await http.delete(f"{API}/firmware/{name}", headers=admin)).status_code == 204
    assert name not in await firmware_list(http, admin)
    assert second["id"] not in await firmware_nodes(http, admin)
    error_of(await http.get(f"{API}/firmware/{name}", headers=member.headers), 404)
    error_of(await http.delete(f"{API}/firmware/{name}", headers=admin), 404)


async def test_an_empty_firmware_round_trips(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    name = f"fw-{short_id()}"
    assert (
        ok(await http.put(f"{API}/firmware/{name}", content=b"", headers=admin), 201)["size"] == 0
    )
    download = await http.get(f"{API}/firmware/{name}", headers=admin)
    assert download.status_code == 200 and download.content == b""
    assert download.headers["content-length"] == "0"


async def raw_upload(
    platform: Platform, who: WebUser, name: str, declared: int, sent: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that declared a body of ``declared`` bytes and sent ``sent`` of it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", platform.web_port)
    head = (
        f"PUT {API}/firmware/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {who.token}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    writer.write(head.encode() + sent)
    await writer.drain()
    return reader, writer


async def test_an_upload_declared_too_large_is_refused_413_before_its_body(
    http: httpx.AsyncClient, admin: dict[str, str], platform: Platform, web_admin: WebUser
) -> None:
    name = f"fw-{short_id()}"
    limit = platform.config.web.max_upload_bytes
    before = await firmware_nodes(http, admin)
    reader, writer = await raw_upload(platform, web_admin, name, limit + 1, b"")
    try:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        status_line, *header_lines = head.split("\r\n")
        assert status_line.split()[1] == "413", head
        headers = dict(line.lower().split(": ", 1) for line in header_lines if line)
        body = await reader.readexactly(int(headers["content-length"]))
    finally:
        writer.close()
    assert str(limit) in json.loads(body)["error"]
    assert name not in await firmware_list(http, admin)
    assert await firmware_nodes(http, admin) == before


async def test_an_upload_cut_off_leaves_the_previous_firmware_and_nothing_else(
    http: httpx.AsyncClient, admin: dict[str, str], platform: Platform, web_admin: WebUser
) -> None:
    name = f"fw-{short_id()}"
    previous = ok(await http.put(f"{API}/firmware/{name}", content=b"old", headers=admin), 201)
    before = await firmware_nodes(http, admin)
    _, writer = await raw_upload(platform, web_admin, name, 4 << 20, os.urandom(1 << 20))
    try:
        await eventually(
            lambda: firmware_nodes(http, admin),
            lambda nodes: len(nodes - before) == 1,
            "the upload's file being written",
        )
        assert (await http.get(f"{API}/firmware/{name}", headers=admin)).content == b"old"
        assert (await firmware_list(http, admin))[name] == previous
    finally:
        writer.close()
    await eventually(
        lambda: firmware_nodes(http, admin),
        lambda nodes: nodes == before,
        "the cut-off upload's file removed",
    )
    assert (await firmware_list(http, admin))[name] == previous
    assert (await http.get(f"{API}/firmware/{name}", headers=admin)).content == b"old"


async def test_unknown_firmware_is_404(http: httpx.AsyncClient, member: WebUser) -> None:
    error_of(await http.get(f"{API}/firmware/nothing-{short_id()}", headers=member.headers), 404)
    error_of(await http.get(f"{API}/firmware"), 401)
    error_of(await http.get(f"{API}/firmware/x"), 401)


# --- Domains -------------------------------------------------------------------------------


async def test_domains_are_created_listed_and_deleted_by_name_or_id(
    http: httpx.AsyncClient, admin: dict[str, str], config_file: Path
) -> None:
    name = f"dom-{short_id()}"
    row = ok(await http.post(f"{API}/domains", json={"name": name}, headers=admin), 201)
    assert row == {"id": row["id"], "name": name, "devices": 0, "users": 0}
    error_of(await http.post(f"{API}/domains", json={"name": name}, headers=admin), 409)
    assert row in ok(await http.get(f"{API}/domains", headers=admin))
    assert {"name": name, "id": row["id"], "devices": 0, "users": 0} in m2m_json_lines(
        "domain", "ls", config=config_file
    )
    ident = f"dev-{short_id()}"
    ok(await http.post(f"{API}/devices", json={"ident": ident, "domain": name}, headers=admin), 201)
    listed = {found["id"]: found for found in ok(await http.get(f"{API}/domains", headers=admin))}
    assert listed[row["id"]]["devices"] == 1
    assert "members" in error_of(await http.delete(f"{API}/domains/{name}", headers=admin), 409)
    assert (await http.delete(f"{API}/devices/{ident}", headers=admin)).status_code == 204
    assert (await http.delete(f"{API}/domains/{row['id']}", headers=admin)).status_code == 204
    remaining = ok(await http.get(f"{API}/domains", headers=admin))
    assert row["id"] not in {found["id"] for found in remaining}
    error_of(await http.delete(f"{API}/domains/{name}", headers=admin), 404)

    other = f"dom-{short_id()}"
    ok(await http.post(f"{API}/domains", json={"name": other}, headers=admin), 201)
    assert (await http.delete(f"{API}/domains/{other}", headers=admin)).status_code == 204


async def test_a_member_sees_only_their_own_domain(
    http: httpx.AsyncClient, admin: dict[str, str], member: WebUser
) -> None:
    me = ok(await http.get(f"{API}/me", headers=member.headers))
    (own,) = ok(await http.get(f"{API}/domains", headers=member.headers))
    assert own["id"] == me["domain_id"] and own["users"] == 1 and own["name"].startswith("adm-")
    assert len(ok(await http.get(f"{API}/domains", headers=admin))) > 1
    error_of(await http.get(f"{API}/domains"), 401)


async def test_a_domain_with_users_or_a_bad_name_is_refused(
    http: httpx.AsyncClient, admin: dict[str, str], member: WebUser
) -> None:
    (own,) = ok(await http.get(f"{API}/domains", headers=member.headers))
    error_of(await http.delete(f"{API}/domains/{own['name']}", headers=admin), 409)
    for bad in ("", "a/b", "\x01", "d" * MAX_PATH_BYTES):
        error_of(await http.post(f"{API}/domains", json={"name": bad}, headers=admin), 422)
    error_of(await http.post(f"{API}/domains", json={}, headers=admin), 422)


# --- Users ---------------------------------------------------------------------------------


async def login(http: httpx.AsyncClient, user: str, password: str) -> httpx.Response:
    """The answer to a login; the client keeps no cookie, so it stays without credentials."""
    response = await http.post(f"{API}/login", json={"user": user, "password": password})
    http.cookies.clear()
    return response


async def test_a_user_is_created_listed_and_logs_in_and_no_hash_is_ever_sent(
    http: httpx.AsyncClient, admin: dict[str, str], member: WebUser, config_file: Path
) -> None:
    (domain,) = ok(await http.get(f"{API}/domains", headers=member.headers))
    name, password = f"u-{short_id()}", f"pw-{short_id()}-{short_id()}"
    body = {"name": name, "domain": domain["name"], "admin": False, "password": password}
    row = ok(await http.post(f"{API}/users", json=body, headers=admin), 201)
    assert row == {"id": row["id"], "name": name, "domain": domain["name"],
                   "domain_id": domain["id"], "admin": False}  # fmt: skip
    error_of(await http.post(f"{API}/users", json=body, headers=admin), 409)
    listing = await http.get(f"{API}/users", headers=admin)
    assert row in ok(listing)
    assert "argon2" not in listing.text and password not in listing.text
    assert {"name": name, "id": row["id"], "domain": domain["name"], "admin": False} in (
        m2m_json_lines("user", "ls", config=config_file)
    )
    assert ok(await login(http, name, password))["name"] == name

    admin_name = f"u-{short_id()}"
    made = ok(await http.post(f"{API}/users", json={"name": admin_name, "admin": True},
                              headers=admin), 201)  # fmt: skip
    assert (made["domain"], made["admin"]) == ("default", True)
    error_of(await login(http, admin_name, ""), 401)


async def test_a_bad_user_is_refused_and_nothing_is_made(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    name = f"u-{short_id()}"
    for body, status in (
        ({"name": name, "password": "short"}, 422),
        ({"name": name, "domain": f"nowhere-{short_id()}", "password": "long-enough"}, 404),
        ({"name": "a/b"}, 422),
        ({"name": "u" * MAX_PATH_BYTES}, 422),
        ({"name": ""}, 422),
        ({"name": name, "admin": "maybe"}, 422),
    ):
        error_of(await http.post(f"{API}/users", json=body, headers=admin), status)
    surrogate = f'{{"name": "{name}", "password": "long-enough-\\ud800"}}'
    response = await http.post(
        f"{API}/users", content=surrogate, headers={**admin, "Content-Type": "application/json"}
    )
    assert "surrogate" in error_of(response, 422)
    assert name not in {row["name"] for row in ok(await http.get(f"{API}/users", headers=admin))}


async def test_a_password_with_a_lone_surrogate_fails_to_log_in_without_error(
    http: httpx.AsyncClient, member: WebUser
) -> None:
    response = await http.post(
        f"{API}/login",
        content=f'{{"user": "{member.name}", "password": "x\\ud800"}}',
        headers={"Content-Type": "application/json"},
    )
    error_of(response, 401)


async def new_user(http: httpx.AsyncClient, admin: dict[str, str]) -> tuple[str, str]:
    """A user made through the API (faster than the ``m2m`` command): name, password."""
    name, password = f"u-{short_id()}", f"pw-{short_id()}-{short_id()}"
    body = {"name": name, "password": password}
    ok(await http.post(f"{API}/users", json=body, headers=admin), 201)
    return name, password


async def session_of(http: httpx.AsyncClient, name: str, password: str) -> dict[str, str]:
    """The headers of a browser logged in as ``name``."""
    response = await login(http, name, password)
    ok(response)
    return {"Cookie": response.headers["set-cookie"].split(";")[0]}


async def test_an_admin_sets_any_password_and_a_member_only_their_own(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    name, password = await new_user(http, admin)
    other, other_password = await new_user(http, admin)
    url = f"{API}/users/{name}/password"
    new = f"new-{short_id()}-{short_id()}"
    assert (await http.put(url, json={"password": new}, headers=admin)).status_code == 204
    error_of(await login(http, name, password), 401)

    own = f"own-{short_id()}-{short_id()}"
    session = await session_of(http, name, new)
    assert (await http.put(url, json={"password": own}, headers=session)).status_code == 204
    error_of(await http.get(f"{API}/me", headers=session), 401)  # a new password, new sessions
    session = await session_of(http, name, own)
    error_of(await http.put(url, json={"password": "short"}, headers=session), 422)
    other_url = f"{API}/users/{other}/password"
    error_of(await http.put(other_url, json={"password": own}, headers=session), 403)
    ok(await login(http, other, other_password))

    my_id = ok(await http.get(f"{API}/me", headers=session))["id"]
    by_id = f"{API}/users/{my_id}/password"
    again = f"again-{short_id()}-{short_id()}"
    assert (await http.put(by_id, json={"password": again}, headers=session)).status_code == 204
    session = await session_of(http, name, again)
    ok(await http.post(f"{API}/users", json={"name": my_id}, headers=admin), 201)
    error_of(await http.put(by_id, json={"password": own}, headers=session), 403)  # its name

    unknown_url = f"{API}/users/nobody-{short_id()}/password"
    error_of(await http.put(unknown_url, json={"password": own}, headers=admin), 404)
    error_of(await http.put(url, json={"password": own}), 401)


async def test_tokens_are_made_listed_and_revoked_and_the_secret_shown_once(
    http: httpx.AsyncClient, admin: dict[str, str], config_file: Path
) -> None:
    name, _ = await new_user(http, admin)
    url = f"{API}/users/{name}/tokens"
    made = [ok(await http.post(url, headers=admin), 201) for _ in range(2)]
    for token in made:
        assert set(token) == {"id", "token"} and token["token"].startswith(f"m2m_{token['id']}_")
    bearers = [{"Authorization": f"Bearer {token['token']}"} for token in made]
    assert ok(await http.get(f"{API}/me", headers=bearers[0]))["name"] == name

    listing = await http.get(url, headers=admin)
    rows = ok(listing)
    assert {row["id"] for row in rows} == {token["id"] for token in made}
    assert all(set(row) == {"id", "created"} and row["created"].endswith("Z") for row in rows)
    assert not any(token["token"].rpartition("_")[2] in listing.text for token in made)
    cli = m2m_json_lines("user", "token", "ls", name, config=config_file)
    assert [row["id"] for row in cli] == [row["id"] for row in rows]

    gone = await http.delete(f"{url}/{made[0]['id']}", headers=admin)
    assert gone.status_code == 204
    error_of(await http.get(f"{API}/me", headers=bearers[0]), 401)
    assert ok(await http.get(f"{API}/me", headers=bearers[1]))["name"] == name
    error_of(await http.delete(f"{url}/{made[0]['id']}", headers=admin), 404)
    error_of(await http.post(f"{API}/users/nobody-{short_id()}/tokens", headers=admin), 404)
    error_of(await http.get(f"{API}/users/nobody-{short_id()}/tokens", headers=admin), 404)


async def test_a_deleted_user_can_no_longer_act(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    name, password = await new_user(http, admin)
    token = ok(await http.post(f"{API}/users/{name}/tokens", headers=admin), 201)["token"]
    session = await session_of(http, name, password)
    assert (await http.delete(f"{API}/users/{name}", headers=admin)).status_code == 204
    error_of(await http.get(f"{API}/me", headers={"Authorization": f"Bearer {token}"}), 401)
    error_of(await http.get(f"{API}/me", headers=session), 401)
    error_of(await login(http, name, password), 401)
    remaining = ok(await http.get(f"{API}/users", headers=admin))
    assert name not in {row["name"] for row in remaining}
    error_of(await http.delete(f"{API}/users/{name}", headers=admin), 404)
