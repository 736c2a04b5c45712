"""Driving the real xo-web in headless Chromium: what a test needs to act as a user and to see
what the browser saw.

    async def test_x(ui: WebUi) -> None:          # a fresh browser page on the web lab
        await ui.open("/")                         # 302 to /signin: no token cookie yet
        await ui.sign_in()                         # the /signin form, as a user fills it
        await ui.wait_app_loaded()                 # xo-web's menu, its WebSocket signed in
        await ui.open("/#/settings/servers")       # any xo-web page (hash routes)
        assert ui.uncaught == []                   # uncaught exceptions of the page

`WebUi` records, from the moment the page exists: every console message (`console`), every
uncaught exception (`uncaught`, Playwright's `pageerror`), and every JSON-RPC request the page
sent over its WebSocket (`rpc_sent`, parsed frames). `save_artifacts` writes a screenshot and
all of that to a directory (the `ui` fixture does it when a test fails).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Locator, Page, WebSocket
from playwright.async_api import TimeoutError as PlaywrightTimeout

CHROMIUM = Path("/usr/bin/chromium")
# Headless Debian Chromium as root, without any network of its own (updates, sync, QUIC).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_EMAIL, ADMIN_PASSWORD = "admin@admin.net", "admin"
APP_TIMEOUT_MS = 20_000  # xo-web's bundle is 6.5 MB: parsing it takes a few seconds on 2 cores


@dataclass(eq=False)
class WebUi:
    page: Page
    base: str  # http://127.0.0.1:<port>
    console: list[str] = field(default_factory=list)  # "<type>: <text>", in order
    uncaught: list[str] = field(default_factory=list)  # uncaught exceptions: "<name>: <message>"
    rpc_sent: list[dict[str, Any]] = field(default_factory=list)  # JSON-RPC requests sent
    rpc_received: list[dict[str, Any]] = field(default_factory=list)  # answers (no `all` push)

    def __post_init__(self) -> None:
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.uncaught.append(f"{e.name}: {e.message}"))
        self.page.on("websocket", self._watch_socket)

    def _watch_socket(self, ws: WebSocket) -> None:
        def parse(payload: str | bytes) -> dict[str, Any] | None:
            try:
                frame = json.loads(payload)
            except ValueError:
                return None
            return frame if isinstance(frame, dict) else None

        def sent(payload: str | bytes) -> None:
            frame = parse(payload)
            if frame is not None and "method" in frame:
                self.rpc_sent.append(frame)

        def received(payload: str | bytes) -> None:
            frame = parse(payload)
            if frame is not None and "id" in frame:
                self.rpc_received.append(frame)

        ws.on("framesent", sent)
        ws.on("framereceived", received)

    # -- acting ------------------------------------------------------------------------------

    async def open(self, path: str) -> None:
        """Go to `path` (e.g. "/", "/#/home") and wait until its document is loaded."""
        await self.page.goto(self.base + path, wait_until="load")

    def path(self) -> str:
        """The current URL without the origin (path, query and fragment)."""
        url = self.page.url
        return url[len(self.base) :] if url.startswith(self.base) else url

    async def sign_in(
        self, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD, *, remember: bool = False
    ) -> None:
        """Fill and submit the /signin form (the page must be on it) and wait for the answer
        page to load (the app, or /signin again with an error)."""
        page = self.page
        await page.fill("input[name=username]", email)
        await page.fill("input[name=password]", password)
        if remember:
            await page.check("input[name=remember-me]")
        async with page.expect_navigation(wait_until="load"):
            await page.click("button[type=submit]")

    async def signin_error(self) -> str | None:
        """The error the sign-in page shows, if any."""
        error = self.page.locator("p.error")
        return await error.inner_text() if await error.count() else None

    async def wait_app_loaded(self, timeout_ms: float = APP_TIMEOUT_MS) -> None:
        """xo-web is up: its menu is drawn and its WebSocket's `session.signIn` succeeded."""
        await self.page.locator(".xo-menu-item", has_text="Sign out").wait_for(timeout=timeout_ms)
        await self.wait_rpc_answer("session.signIn", timeout_ms)

    async def wait_rpc_answer(self, method: str, timeout_ms: float = APP_TIMEOUT_MS) -> Any:
        """The result of the first `method` call the page made (TimeoutError without one,
        AssertionError if it failed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while loop.time() < deadline:
            ids = {f["id"] for f in self.rpc_sent if f.get("method") == method}
            for answer in self.rpc_received:
                if answer.get("id") in ids:
                    assert "error" not in answer, (method, answer["error"])
                    return answer.get("result")
            await asyncio.sleep(0.05)
        raise TimeoutError(f"the page got no answer to {method} within {timeout_ms:.0f} ms")

    def calls(self, method: str) -> list[Any]:
        """The params of every `method` request the page sent."""
        return [f.get("params") for f in self.rpc_sent if f.get("method") == method]

    async def dismiss_modal(self) -> None:
        """Close xo-web's modal if one is open (e.g. "Xen Orchestra from the sources", shown
        at start when the server is not an XOA), so that it does not take the clicks."""
        button = self.page.locator(".modal-footer button", has_text="OK")
        try:
            await button.first.click(timeout=3000)
        except PlaywrightTimeout:
            return
        await self.page.locator(".modal-dialog").wait_for(state="hidden", timeout=3000)

    async def choose(
        self, container: Locator, label: str | re.Pattern[str], option: str | re.Pattern[str]
    ) -> None:
        """In xo-web's forms (react-select): open the select on the row whose label shows
        `label` and click the option showing `option`, as a user does."""
        row = container.locator(".row", has=self.page.get_by_text(label, exact=True)).last
        await row.locator(".Select-control").first.click()
        await self.page.locator(".Select-option", has_text=option).first.click()

    async def home_lists_vms(self, names: list[str]) -> None:
        """The home page's VM list shows these VMs, and as many as them: xo-web shows running
        VMs first, so the filter is cleared as a user does."""
        await self.open("/#/home?t=VM")
        await self.page.get_by_text(f"(of {len(names)})").wait_for()
        await self.page.locator("button:has(i.xo-icon-clear-search)").first.click()
        await self.page.get_by_text(f"{len(names)}x").first.wait_for()
        for name in names:
            await self.page.get_by_text(name, exact=True).first.wait_for(timeout=5_000)

    def modal(self) -> Locator:
        return self.page.locator(".modal-dialog")

    async def cookie(self, name: str) -> dict[str, Any] | None:
        for cookie in await self.page.context.cookies(self.base):
            if cookie["name"] == name:
                return dict(cookie)
        return None

    # -- after the fact ----------------------------------------------------------------------

    def console_errors(self) -> list[str]:
        return [line for line in self.console if line.startswith("error: ")]

    async def save_artifacts(self, directory: Path) -> Path:
        """A screenshot of the page and a log of what the browser saw, in `directory`."""
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        lines = [f"url: {self.page.url}", "", "== uncaught exceptions", *self.uncaught]
        lines += ["", "== console", *self.console, "", "== JSON-RPC sent"]
        lines += [json.dumps(f)[:500] for f in self.rpc_sent]
        try:
            await self.page.screenshot(path=str(directory / "screenshot.png"), full_page=True)
        except Exception as exc:  # a crashed page still gets its log
            lines += ["", f"== no screenshot: {exc!r}"]
        await asyncio.to_thread((directory / "browser.log").write_text, "\n".join(lines) + "\n")
        return directory
