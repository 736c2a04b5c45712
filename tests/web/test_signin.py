"""Signing in and out of the real xo-web, as a user does in a browser."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.migrations.conftest import Lab
from tests.web.harness import ADMIN_EMAIL, WebUi

pytestmark = pytest.mark.timeout(120)


async def test_wrong_password_stays_on_signin_then_the_app_signs_in_with_the_cookie(
    web_lab: Lab, ui: WebUi
) -> None:
    await ui.open("/")
    assert ui.path() == "/signin"  # no token cookie: the gate sends the browser here
    await ui.sign_in(password="not the password")
    assert ui.path() == "/signin"
    assert await ui.signin_error() == "invalid credentials"
    assert await ui.cookie("token") is None
    await asyncio.sleep(0.35)  # the test config's throttling delay after a failed try
    await ui.sign_in()
    assert ui.path().split("#")[0] == "/"
    await ui.wait_app_loaded()
    # xo-web read the cookie and signed its WebSocket in with it, as with xo-server.
    token = await ui.cookie("token")
    assert token is not None and not token["httpOnly"] and token["sameSite"] == "Lax"
    assert token["expires"] == -1  # a session cookie without "remember me"
    assert ui.calls("session.signIn") == [{"token": token["value"]}]
    # What the user sees: signed in as the admin (Settings > Users lists the account).
    await ui.dismiss_modal()
    await ui.open("/#/settings/users")
    await ui.page.get_by_text(ADMIN_EMAIL, exact=True).wait_for()


async def test_remember_me_keeps_the_cookie_as_long_as_the_token(web_lab: Lab, ui: WebUi) -> None:
    await ui.open("/signin")
    await ui.sign_in(remember=True)
    await ui.wait_app_loaded()
    token = await ui.cookie("token")
    assert token is not None
    assert token["expires"] == pytest.approx(time.time() + 30 * 86400, abs=60)


async def test_a_deep_link_returns_after_sign_in(web_lab: Lab, ui: WebUi) -> None:
    # The server only sees path and query (xo-web's own routes are in the fragment, which
    # no server sees: xo-server's sign-in loses it too).
    await ui.open("/?from=bookmark")
    assert ui.path().startswith("/signin")
    await ui.sign_in()
    assert ui.path().split("#")[0] == "/?from=bookmark"
    await ui.wait_app_loaded()


async def test_sign_out_from_the_menu_and_from_signout(web_lab: Lab, ui: WebUi) -> None:
    await ui.open("/")
    await ui.sign_in()
    await ui.wait_app_loaded()
    await ui.dismiss_modal()
    # xo-web's own "Sign out" expires the cookie and reloads: the gate asks to sign in again.
    async with ui.page.expect_navigation(url=lambda url: "/signin" in url, wait_until="load"):
        await ui.page.locator(".xo-menu-item", has_text="Sign out").click()
    assert await ui.cookie("token") is None
    # GET /signout does the same for any client.
    await ui.sign_in()
    await ui.wait_app_loaded()
    await ui.open("/signout")
    assert ui.path().startswith("/signin") and await ui.cookie("token") is None


async def test_no_uncaught_exception_where_our_methods_feed_the_page(
    web_lab: Lab, ui: WebUi
) -> None:
    """Pages drawn from the methods of this branch (server.getAll, user.getAll, the pool
    page's tag.getAllConfigured): no uncaught exception there. Those of the object pages
    (home, VM, host) are the object shapes' business."""
    pool = await web_lab.id_of("pool", "Pool A")
    await ui.open("/signin")
    await ui.sign_in()
    await ui.wait_app_loaded()
    await ui.dismiss_modal()
    await ui.wait_rpc_answer("acl.getCurrentPermissions")
    before = len(ui.uncaught)
    for route, visible in (
        ("#/settings/servers", "Pool A"),
        ("#/settings/users", ADMIN_EMAIL),
        (f"#/pools/{pool}/general", "Pool RAM usage:"),
    ):
        await ui.open(f"/{route}")
        await ui.page.get_by_text(visible, exact=True).first.wait_for()
    assert await ui.wait_rpc_answer("tag.getAllConfigured") == []
    assert ui.uncaught[before:] == []
