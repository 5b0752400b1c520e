"""The console in a real headless Chromium, against a running ``m2m serve``.

Devices are simulated over real TCP (M2MP and ALIP clients); what they do must show in
the open page without reloading it, through the live event stream. Assertions are
Playwright's auto-waiting ``expect``: each waits for the page to get there, up to
:data:`~tests.conftest.WAIT`. Pictures of the pages go to ``test-artifacts/screenshots``.
"""

from __future__ import annotations

import math
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from playwright.async_api import Locator, Page, expect

from m2m.receivers.alip.client import ALIPClient
from m2m.receivers.m2mp.client import M2MPClient
from m2m.registry.device import device_id_for
from tests.browser.conftest import ON_MODULE_LOOP
from tests.conftest import WAIT, Platform, WebUser, eventually, run_m2m
from tests.web_http import API, ok

pytestmark = ON_MODULE_LOOP

HOST = "127.0.0.1"

expect.set_options(timeout=WAIT * 1000)


def m2mp_ident(label: str) -> str:
    return f"browser-{label}-{uuid.uuid4().hex[:8]}"


def alip_ident() -> str:
    return f"brw:{uuid.uuid4().hex[:16]}"


@asynccontextmanager
async def m2mp_device(platform: Platform, ident: str) -> AsyncIterator[M2MPClient]:
    """An M2MP device connected and identified as ``ident``."""
    client = await M2MPClient.connect(HOST, platform.m2mp_port)
    async with client:
        assert await client.identify(ident)
        yield client


@asynccontextmanager
async def api(platform: Platform, user: WebUser) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=platform.web_url + API, headers=user.headers, timeout=WAIT
    ) as client:
        yield client


async def open_live(page: Page, path: str) -> None:
    """Open a console page and wait until its live stream is open."""
    await page.goto(f"/#{path}")
    await expect(page.locator(".live")).to_have_attribute("data-state", "open")


def fleet_row(page: Page, ident: str) -> Locator:
    link = page.get_by_role("link", name=ident, exact=True)
    return page.get_by_role("table", name="Devices").get_by_role("row").filter(has=link)


def table_row(page: Page, table: str, text: str) -> Locator:
    return page.get_by_role("table", name=table).get_by_role("row").filter(has_text=text)


def track(page: Page, positions: int) -> Locator:
    return page.get_by_role("img", name=re.compile(rf"^Track of {positions} positions"))


async def received_array(client: M2MPClient, channel: str, first: bytes) -> list[bytes]:
    """The next array on ``channel`` whose first item is ``first`` (others are let by)."""
    while (items := await client.receive_array(channel, timeout=WAIT))[0] != first:
        pass
    return items


# --- Login ---------------------------------------------------------------------------------


async def test_login_refuses_a_wrong_password_and_logout_returns_to_the_form(
    page: Page, web_admin: WebUser, screenshots: Path
) -> None:
    await page.goto("/")
    await expect(page.get_by_role("heading", name="Log in to the console")).to_be_visible()
    await page.screenshot(path=screenshots / "login.png")

    await page.get_by_label("User").fill(web_admin.name)
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_have_text("Unknown user or wrong password.")

    await page.get_by_label("Password").fill(web_admin.password)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.locator(".who")).to_contain_text(f"Signed in as {web_admin.name}")
    await expect(page.get_by_role("heading", name="Fleet")).to_be_visible()

    await page.get_by_role("button", name="Log out").click()
    await expect(page.get_by_role("heading", name="Log in to the console")).to_be_visible()
    await page.reload()  # the cookie is gone, not just the page
    await expect(page.get_by_role("heading", name="Log in to the console")).to_be_visible()


async def test_a_user_of_a_domain_sees_its_devices_only_and_no_admin_pages(
    page: Page, platform: Platform, web_admin: WebUser
) -> None:
    label = uuid.uuid4().hex[:6]
    domain, name, password = f"browser-{label}", f"browser-user-{label}", uuid.uuid4().hex
    async with api(platform, web_admin) as http:
        ok(await http.post("/domains", json={"name": domain}), 201)
        user = {"name": name, "domain": domain, "password": password}
        ok(await http.post("/users", json=user), 201)
        own = {"ident": f"browser-{label}-own", "domain": domain}
        ok(await http.post("/devices", json=own), 201)
        ok(await http.post("/devices", json={"ident": f"browser-{label}-other"}), 201)

    await page.goto("/")
    await page.get_by_label("User").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await page.get_by_label("Search by ident").fill(f"browser-{label}")
    await expect(fleet_row(page, f"browser-{label}-own")).to_contain_text(domain)
    await expect(page.get_by_role("table", name="Devices").get_by_role("row")).to_have_count(2)
    await expect(page.get_by_role("link", name="Registry")).to_have_count(0)

    await page.get_by_role("link", name="Firmware").click()
    await expect(page.get_by_role("heading", name="Firmware")).to_be_visible()
    await expect(page.get_by_role("form", name="Upload firmware")).to_have_count(0)
    await page.goto("/#/registry/")
    await expect(page.get_by_role("heading", name="Admins only")).to_be_visible()


# --- Fleet ---------------------------------------------------------------------------------


async def test_the_fleet_shows_a_device_connect_and_disconnect_live(
    admin_page: Page, platform: Platform, web_admin: WebUser, screenshots: Path
) -> None:
    page = admin_page
    label = uuid.uuid4().hex[:6]
    offline = [f"browser-{label}-{name}" for name in ("pump", "meter")]
    async with api(platform, web_admin) as http:
        for ident in offline:
            ok(await http.post("/devices", json={"ident": ident}), 201)
        ok(await http.put(f"/devices/{offline[0]}/settings/period", json={"value": "60"}))
    await open_live(page, f"/?ident=browser-{label}")

    ident = f"browser-{label}-tracker"
    devices = page.get_by_role("table", name="Devices")
    async with m2mp_device(platform, ident), m2mp_device(platform, f"browser-{label}-gate"):
        row = fleet_row(page, ident)  # it shows up without reloading the page
        await expect(row.locator(".badge")).to_have_text("Connected")
        await expect(fleet_row(page, offline[0]).locator(".badge")).to_have_text("Offline")
        await expect(fleet_row(page, offline[0])).to_contain_text("1 setting")

        await page.get_by_label("Search by ident").fill(ident)
        await expect(devices.get_by_role("row")).to_have_count(2)  # its own and the header
        await expect(row.locator(".badge")).to_have_text("Connected")

        await page.get_by_label("Search by ident").fill(f"browser-{label}")
        await expect(devices.get_by_role("row")).to_have_count(5)
        await expect(devices).not_to_contain_text("…")  # every pending count is in
        await page.screenshot(path=screenshots / "fleet.png", full_page=True)
    await expect(row.locator(".badge")).to_have_text("Offline")


# --- Device --------------------------------------------------------------------------------


def history_lines(now: float) -> list[str]:
    """A day of temperatures and voltages, and a drive, as ALIP lines with their times."""
    lines = []
    for step in range(48):
        moment = int(now - 23.5 * 3600 + step * 1800)
        temperature = 20 + 3 * math.sin(step / 7.6) + (step % 5) / 10
        lines.append(f"E {moment} T {temperature:.1f}")
        lines.append(f"E {moment} V {12.2 + 0.3 * math.cos(step / 5):.2f}")
    for step in range(30):
        moment = int(now - 3 * 3600 + step * 300)
        lat, lon = 45.76 + 0.004 * step + 0.003 * math.sin(step / 3), 4.83 + 0.006 * step
        lines.append(f"D G {moment},{lat:.5f},{lon:.5f}")
    return lines


async def test_the_device_page_grows_live_with_records_plots_and_track(
    admin_page: Page, platform: Platform, web_admin: WebUser, screenshots: Path
) -> None:
    page = admin_page
    ident = alip_ident()
    device_id = device_id_for(ident)
    client = await ALIPClient.connect(HOST, platform.alip_port)
    async with client, api(platform, web_admin) as http:
        assert await client.identify(ident)
        for line in [*history_lines(time.time()), "S S apn internet"]:
            client.send_line(line)
        series = f"/series/dev-{device_id}/records"
        await eventually(
            lambda: http.get(series, params={"limit": 1000}),
            lambda response: (
                response.status_code == 200 and len(response.json()["records"]) >= 48 * 2 + 30
            ),
            "the history stored",
        )
        ok(await http.put(f"/devices/{device_id}/settings/period", json={"value": "30"}))
        ok(await http.post(f"/devices/{device_id}/commands", json={"text": "reboot"}), 201)
        run_m2m("device", "route", "add", ident, "10", "^sen:can:.*$", "can-frames",
                config=platform.config_file)  # fmt: skip

        await open_live(page, f"/device/{device_id}")
        await expect(page.get_by_role("heading", name=ident)).to_be_visible()
        temperature = page.locator("figure[data-type='sen:temp']")
        await expect(temperature.locator(".plot-area")).to_have_attribute(
            "data-points", re.compile(r"^[1-9]\d*$")
        )
        await expect(page.locator("figure[data-type='sen:volt']")).to_be_visible()
        await expect(track(page, 30)).to_be_visible()
        await expect(table_row(page, "Routes", "can-frames")).to_contain_text("^sen:can:.*$")

        client.send_line("D T 22.5")
        await expect(table_row(page, "Latest records", "sen:temp").first).to_contain_text("22.5")
        await expect(temperature.locator(".plot-area")).to_have_attribute("data-last", "22.5")
        await expect(temperature.locator(".latest")).to_contain_text("22.5")

        client.send_line("D L 45.9,4.99")
        await expect(track(page, 31)).to_be_visible()
        await expect(table_row(page, "Settings", "apn")).to_contain_text("Reported")
        await expect(table_row(page, "Settings", "period")).to_contain_text("Pending")
        await page.screenshot(path=screenshots / "device.png", full_page=True)


async def test_a_setting_turns_from_pending_to_acknowledged_when_the_device_acks_it(
    admin_page: Page, platform: Platform
) -> None:
    page = admin_page
    ident = m2mp_ident("setting")
    async with m2mp_device(platform, ident) as device:
        await open_live(page, f"/device/{device_id_for(ident)}")
        await expect(page.locator(".page-head .badge")).to_have_text("Connected")
        await page.get_by_label("Name", exact=True).fill("period")
        await page.get_by_label("Value", exact=True).fill("30")
        await page.get_by_role("button", name="Save setting").click()
        row = table_row(page, "Settings", "period")
        await expect(row).to_contain_text("Pending")

        assert await received_array(device, "_set", b"sg") == [b"sg", b"period=30"]
        await expect(row).to_contain_text("Pending")  # sent is not acknowledged
        device.send_array("_set", [b"g", b"period=30"])
        await expect(row).to_contain_text("Acknowledged")
        await expect(row).not_to_contain_text("Pending")


async def test_a_command_is_sent_to_the_device_and_its_response_shown(
    admin_page: Page, platform: Platform
) -> None:
    page = admin_page
    ident = m2mp_ident("command")
    async with m2mp_device(platform, ident) as device:
        await open_live(page, f"/device/{device_id_for(ident)}")
        await page.get_by_label("Command", exact=True).fill("uptime")
        await page.get_by_role("button", name="Send command").click()
        row = table_row(page, "Commands", "uptime")
        await expect(row).to_contain_text("Pending")

        _, command_id, text = await received_array(device, "_cmd", b"e")
        assert text == b"uptime"
        device.send_array("_cmd", [b"a", command_id, b"up 3 days", b"load 0.11"])
        await expect(row).to_contain_text("Answered")
        await expect(row.locator("pre")).to_have_text("up 3 days\nload 0.11")
        await expect(row).to_contain_text("uptime")  # the text the page sent, kept


# --- Firmware and registry -------------------------------------------------------------------


async def test_firmware_uploads_and_downloads_back_byte_identical(
    admin_page: Page, tmp_path: Path, screenshots: Path
) -> None:
    page = admin_page
    name = f"browser-{uuid.uuid4().hex[:6]}.bin"
    content = os.urandom(3 * 1024 * 1024 + 17)  # several blobstore blocks, an odd size
    local = tmp_path / "firmware.bin"
    local.write_bytes(content)

    await page.goto("/#/firmware")
    await page.get_by_label("File", exact=True).set_input_files(local)
    await expect(page.get_by_label("Name", exact=True)).to_have_value("firmware.bin")
    await page.get_by_label("Name", exact=True).fill(name)
    await page.get_by_role("button", name="Upload").click()
    row = table_row(page, "Firmware", name)
    await expect(row).to_contain_text("3.0 MiB")
    await page.screenshot(path=screenshots / "firmware.png", full_page=True)

    async with page.expect_download() as downloading:
        await row.get_by_role("link", name=f"Download {name}").click()
    download = await downloading.value
    assert download.suggested_filename == name
    assert Path(await download.path()).read_bytes() == content

    delete = row.get_by_role("button", name=f"Delete {name}")
    await delete.click()
    await expect(delete).to_have_text("Really delete?")
    await delete.click()
    await expect(row).to_have_count(0)


async def test_the_registry_is_browsed_node_by_node_and_keeps_secrets(
    admin_page: Page, platform: Platform, web_admin: WebUser, screenshots: Path
) -> None:
    page = admin_page
    async with api(platform, web_admin) as http:
        user_id = ok(await http.get("/me"))["id"]
    await page.goto("/#/registry/")
    children = page.get_by_role("list", name="Children")
    await children.get_by_role("link", name="user", exact=True).click()
    await expect(page).to_have_url(re.compile(r"#/registry/user$"))

    await page.get_by_label("Filter children").fill(user_id)
    await children.get_by_role("link", name=user_id, exact=True).click()
    await expect(page.get_by_role("navigation", name="Registry path")).to_contain_text(
        f"registry / user / {user_id}"
    )
    values = page.get_by_role("table", name="Values")
    await expect(values.get_by_role("row", name=f"name {web_admin.name}")).to_be_visible()
    await expect(page.get_by_text("Withheld (secret): password")).to_be_visible()
    await expect(values).not_to_contain_text("argon2")
    await page.screenshot(path=screenshots / "registry.png", full_page=True)


# --- API docs --------------------------------------------------------------------------------


async def test_the_api_docs_browse_the_openapi_document_without_the_internet(
    page: Page, screenshots: Path
) -> None:
    await page.goto("/api/v1/docs")
    await expect(page.get_by_role("heading", name=re.compile(r"^m2m"))).to_be_visible()
    await expect(
        page.locator(".opblock-summary-path", has_text="/api/v1/devices").first
    ).to_be_visible()
    await page.screenshot(path=screenshots / "api-docs.png")
