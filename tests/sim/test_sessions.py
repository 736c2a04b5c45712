"""Sessions (xapi.md 1.5) and the pool control hooks client tests rely on."""

from __future__ import annotations

import asyncio
import socket
import time
import xmlrpc.client
from typing import Any

import pytest
import XenAPI

from tests.sim.helpers import PASSWORD, USER, host_url, in_thread, login, master_url, raw_call
from xen.sim import Simulator, load_lab
from xen.sim.registry import Fault


async def test_bad_password_fails_after_the_delay(sim: Simulator, manifest: dict[str, Any]) -> None:
    sim.timing.login_failure_delay_s = 50.0  # 0.1 s at the test time scale
    url = master_url(manifest)

    def attempt() -> tuple[list[str], float]:
        start = time.monotonic()
        try:
            XenAPI.Session(url).xenapi.login_with_password(USER, "wrong")
        except XenAPI.Failure as exc:
            return exc.details, time.monotonic() - start
        raise AssertionError("login succeeded")

    details, elapsed = await in_thread(attempt)
    assert details == ["SESSION_AUTHENTICATION_FAILED", USER, "Authentication failure"]
    assert elapsed >= 0.09


async def test_logout_then_session_invalid(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    session = (await raw_call(url, "session.login_with_password", USER, PASSWORD))["Value"]
    assert (await raw_call(url, "session.logout", session))["Status"] == "Success"
    reply = await raw_call(url, "VM.get_all", session)
    assert reply["ErrorDescription"] == ["SESSION_INVALID", session]


async def test_supporter_answers_host_is_slave(manifest: dict[str, Any]) -> None:
    url = host_url(manifest, "127.0.1.2")
    reply = await raw_call(url, "session.login_with_password", USER, PASSWORD)
    assert reply["ErrorDescription"] == ["HOST_IS_SLAVE", "127.0.1.1"]
    session = (await raw_call(master_url(manifest), "session.login_with_password", USER, PASSWORD))[
        "Value"
    ]
    assert (await raw_call(url, "VM.get_all", session))["ErrorDescription"] == [
        "HOST_IS_SLAVE", "127.0.1.1"]  # fmt: skip


async def test_expire_sessions_binding_relogs_in(sim: Simulator, manifest: dict[str, Any]) -> None:
    session = await in_thread(login, master_url(manifest))
    before = await in_thread(session.xenapi.VM.get_all)
    sim.pool("Pool A").expire_sessions()
    old = session._session
    # The official binding re-logs in transparently on SESSION_INVALID.
    assert sorted(await in_thread(session.xenapi.VM.get_all)) == sorted(before)
    assert session._session != old
    reply = await raw_call(master_url(manifest), "VM.get_all", old)
    assert reply["ErrorDescription"] == ["SESSION_INVALID", old]


async def test_failover(sim: Simulator, manifest: dict[str, Any]) -> None:
    pool = sim.pool("Pool A")
    pool.failover("a2")
    old = await raw_call(master_url(manifest), "session.login_with_password", USER, PASSWORD)
    assert old["ErrorDescription"] == ["HOST_IS_SLAVE", "127.0.1.2"]
    new = host_url(manifest, "127.0.1.2")
    session = (await raw_call(new, "session.login_with_password", USER, PASSWORD))["Value"]
    (pool_ref,) = (await raw_call(new, "pool.get_all", session))["Value"]
    master = (await raw_call(new, "pool.get_master", session, pool_ref))["Value"]
    assert (await raw_call(new, "host.get_address", session, master))["Value"] == "127.0.1.2"

    assert sim.manifest()["pools"][0]["master"] == new


def _connect(address: str, port: int) -> None:
    with socket.create_connection((address, port), timeout=2):
        pass


async def test_set_reachable(sim: Simulator, manifest: dict[str, Any]) -> None:
    pool = sim.pool("Pool A")
    url = master_url(manifest)
    session = await in_thread(login, url)
    pool.set_reachable(False)
    for address in ("127.0.1.1", "127.0.1.2", "127.0.1.3"):
        with pytest.raises(ConnectionRefusedError):
            await in_thread(_connect, address, sim.port)
    # a kept-alive connection is dropped too
    with pytest.raises((ConnectionError, xmlrpc.client.ProtocolError, OSError)):
        await in_thread(session.xenapi.VM.get_all)
    await in_thread(_connect, "127.0.2.1", sim.port)  # Pool B unaffected
    pool.set_reachable(True)
    fresh = await in_thread(login, url)
    assert await in_thread(fresh.xenapi.VM.get_all)


async def test_set_host_offline(sim: Simulator, manifest: dict[str, Any]) -> None:
    pool = sim.pool("Pool A")
    pool.set_host_offline("a3", True)
    with pytest.raises(ConnectionRefusedError):
        await in_thread(_connect, "127.0.1.3", sim.port)

    def live(x: Any) -> bool:
        (host,) = [h for h, r in x.host.get_all_records().items() if r["name_label"] == "a3"]
        return x.host_metrics.get_live(x.host.get_metrics(host))

    session = await in_thread(login, master_url(manifest))
    assert await in_thread(live, session.xenapi) is False
    pool.set_host_offline("a3", False)
    await in_thread(_connect, "127.0.1.3", sim.port)
    assert await in_thread(live, session.xenapi) is True


async def test_injected_session_expiry_and_login_faults() -> None:
    lab = load_lab()
    lab.faults = [Fault("session_expiry", pool="Pool A", after_s=50)]  # 0.1 s at 0.002
    sim = Simulator(lab, time_scale=0.002)
    await sim.start()
    try:
        url = master_url(sim.manifest())
        session = (await raw_call(url, "session.login_with_password", USER, PASSWORD))["Value"]
        assert (await raw_call(url, "VM.get_all", session))["Status"] == "Success"
        await asyncio.sleep(0.15)
        assert (await raw_call(url, "VM.get_all", session))["ErrorDescription"][
            0
        ] == "SESSION_INVALID"
        sim.pool("Pool A").add_fault(Fault("login_fail"))
        reply = await raw_call(url, "session.login_with_password", USER, PASSWORD)
        assert reply["ErrorDescription"][0] == "SESSION_AUTHENTICATION_FAILED"
        pool_b = master_url(sim.manifest(), "Pool B")
        assert (await raw_call(pool_b, "session.login_with_password", USER, PASSWORD))[
            "Status"
        ] == "Success"
    finally:
        await sim.stop()
