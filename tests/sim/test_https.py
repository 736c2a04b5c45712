"""The simulator's HTTPS mode, seen through the official XenAPI binding (xapi.md 1.1, 1.6)."""

from __future__ import annotations

import asyncio
import ssl
import xmlrpc.client
from pathlib import Path

import pytest
import XenAPI

from tests.conftest import SIM_TIME_SCALE
from tests.sim.helpers import cli_sim
from xen.sim import Simulator
from xen.sim.lab import DEFAULT_LAB, LabError, parse_lab

pytestmark = pytest.mark.timeout(30)


def lab_doc(**server: object) -> dict:
    import tomllib

    doc = tomllib.loads(DEFAULT_LAB.read_text())
    doc["server"] = server
    return doc


def is_file(path: str) -> bool:
    return Path(path).is_file()


def test_lab_server_table() -> None:
    assert parse_lab(lab_doc(https=True)).https is True
    assert parse_lab(lab_doc()).https is False
    with pytest.raises(LabError, match="server: unknown keys"):
        parse_lab(lab_doc(http=True))
    with pytest.raises(LabError, match=r"server\.https"):
        parse_lab(lab_doc(https="yes"))


async def test_lab_https_serves_tls_with_self_signed_certificates() -> None:
    sim = Simulator(parse_lab(lab_doc(https=True)), port=0, time_scale=SIM_TIME_SCALE)
    await sim.start()
    try:
        pool = sim.manifest()["pools"][0]
        url = pool["master"]
        assert url.startswith("https://127.0.1.1:")

        def work() -> tuple[str, str]:
            # The stdlib's default verification refuses a self-signed certificate ...
            with pytest.raises(ssl.SSLCertVerificationError):
                XenAPI.Session(url).xenapi.login_with_password("root", "password")
            # ... ignore_ssl accepts it, and a context pinned to the pool's bundle trusts it.
            loose = XenAPI.Session(url, ignore_ssl=True)
            loose.xenapi.login_with_password("root", "password", "1.1", "test")
            ctx = ssl.create_default_context(cafile=pool["ca_file"])
            pinned = XenAPI.Session(url, transport=xmlrpc.client.SafeTransport(context=ctx))
            pinned.xenapi.login_with_password("root", "password", "1.1", "test")
            host = pinned.xenapi.pool.get_master(pinned.xenapi.pool.get_all()[0])
            # migrate_receive hands out https:// URLs too (the dest map of a cross-pool move).
            net = pinned.xenapi.PIF.get_network(pinned.xenapi.host.get_PIFs(host)[0])
            dest = pinned.xenapi.host.migrate_receive(host, net, {})
            pem = loose.xenapi.host.get_server_certificate(host)
            for session in (loose, pinned):
                session.xenapi.session.logout()
            return pem, dest["master"]

        pem, dest_master = await asyncio.to_thread(work)
        assert pem == sim.server_certificate("127.0.1.1")
        assert pem.startswith("-----BEGIN CERTIFICATE-----")
        assert dest_master.startswith("https://")
        certs_dir = Path(pool["ca_file"]).parent
        assert certs_dir.is_dir()
    finally:
        await sim.stop()
    assert not certs_dir.exists()  # the private keys do not outlive the simulator


async def test_plain_http_host_still_has_a_certificate(sim: Simulator) -> None:
    url = sim.manifest()["pools"][0]["master"]
    assert url.startswith("http://")

    def work() -> str:
        session = XenAPI.Session(url)
        session.xenapi.login_with_password("root", "password", "1.1", "test")
        try:
            host = session.xenapi.host.get_all()[0]
            return session.xenapi.host.get_server_certificate(host)
        finally:
            session.xenapi.session.logout()

    pem = await asyncio.to_thread(work)
    assert pem.startswith("-----BEGIN CERTIFICATE-----")


async def test_cli_https_writes_https_manifest(tmp_path: Path) -> None:
    async with cli_sim(tmp_path / "manifest.json", https=True) as manifest:
        assert all(p["master"].startswith("https://") for p in manifest["pools"])
        assert all(is_file(p["ca_file"]) for p in manifest["pools"])
