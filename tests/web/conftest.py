"""Fixtures: the real xo-web (`<repo>/../shared/xo-web/dist`) mounted at / on the server running
the simulated lab, and a fresh headless Chromium page on it (tests/web/harness.py).

    async def test_x(web_lab: Lab, ui: WebUi) -> None:
        ...                               # web_lab.client is a signed-in JSON-RPC client

Every test here is skipped, with the reason, when /usr/bin/chromium (Debian's `chromium`
package; `.ci/run` installs it) or the xo-web build is missing. When a test fails, the `ui`
fixture writes a screenshot and the browser's log (console, uncaught exceptions, JSON-RPC
requests) to `<the test's tmp dir>/web-artifacts/` and prints that path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import pytest

from server.migrations.service import MigrationSettings
from tests.migrations.conftest import Lab, lab_on
from tests.web.harness import CHROMIUM, CHROMIUM_ARGS, WebUi
from xen.sim import Simulator

REPO = Path(__file__).resolve().parents[2]
XO_WEB_DIST = REPO.parent / "shared" / "xo-web" / "dist"


def _missing() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} not found (Debian package `chromium`; .ci/run installs it)"
    if not (XO_WEB_DIST / "index.html").is_file():
        return f"xo-web's build not found at {XO_WEB_DIST}"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the `playwright` package is not installed (pip install -e '.[test]')"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing()
    if reason is None:
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, Any, None]:
    """Keep each phase's report on the item, so that fixtures know whether the test failed."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
async def web_lab(sim: Simulator, tmp_path: Path) -> AsyncIterator[Lab]:
    """The server on the simulated lab, both pools connected, xo-web mounted at /."""
    async with lab_on(
        sim, tmp_path / "server", MigrationSettings(), mounts={"/": XO_WEB_DIST}
    ) as lab:
        yield lab


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def ui(
    web_lab: Lab, browser: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[WebUi]:
    """A fresh browser context (no cookies) and page on `web_lab`."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    web = WebUi(page, web_lab.server.base)
    try:
        yield web
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            saved = await web.save_artifacts(tmp_path / "web-artifacts")
            print(f"\nweb artifacts (screenshot, browser log): {saved}")
        await context.close()
