"""A real headless Chromium (Debian's ``chromium``) driven by Playwright, on the console.

One browser per test module, each test in a browser context of its own (cookies, storage
and pages apart). A Playwright browser belongs to the event loop that launched it, so the
browser tests of a module run on one loop: mark them with :data:`ON_MODULE_LOOP`.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.conftest import Platform, WebUser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
"""Where the run leaves pictures of the console for people to look at."""
VIEWPORT = {"width": 1360, "height": 900}
ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
"""``pytestmark`` of a module of browser tests."""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def context(browser: Browser, platform: Platform) -> AsyncIterator[BrowserContext]:
    """A browser context on the platform; any uncaught error of its pages fails the test."""
    opened = await browser.new_context(
        base_url=platform.web_url, viewport=VIEWPORT, accept_downloads=True
    )
    errors: list[str] = []
    opened.on("weberror", lambda error: errors.append(str(error.error)))
    yield opened
    await opened.close()
    assert not errors, f"the console threw: {errors}"


@pytest_asyncio.fixture(loop_scope="module")
async def page(context: BrowserContext) -> Page:
    """A page of its own, not logged in."""
    return await context.new_page()


@pytest_asyncio.fixture(loop_scope="module")
async def admin_page(context: BrowserContext, web_admin: WebUser) -> Page:
    """A page whose context holds an admin's session cookie (logged in through the API;
    the login form has a test of its own)."""
    response = await context.request.post(
        "/api/v1/login", data={"user": web_admin.name, "password": web_admin.password}
    )
    assert response.ok, await response.text()
    return await context.new_page()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
