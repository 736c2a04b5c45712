"""The client's TLS paths against the simulator in HTTPS mode: self-signed certificates per
host, as real XAPI hosts have (xapi.md 1.1, 1.6, 8.2)."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.conftest import SIM_TIME_SCALE
from tests.xen.helpers import FAST, eventually, master_name, pool_manifest
from xen.config import PoolConfig
from xen.pools import PoolManager
from xen.sim import Simulator, load_lab
from xen.store import ObjectStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def https_sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(load_lab(), port=0, time_scale=SIM_TIME_SCALE, https=True)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


def https_config(
    sim: Simulator,
    name: str = "Pool A",
    *,
    host: str | None = None,
    allow_unauthorized: bool = False,
    ca_file: str = "",
) -> PoolConfig:
    manifest = sim.manifest()
    pool = pool_manifest(manifest, name)
    url = pool["master"]
    if host is not None:
        address = next(h["address"] for h in pool["hosts"] if h["name"] == host)
        url = f"https://{address}:{manifest['port']}/"
    return PoolConfig(
        id=str(uuid.uuid4()),
        url=url,
        username=pool["username"],
        password=pool["password"],
        label=name,
        allow_unauthorized=allow_unauthorized,
        ca_file=ca_file,
    )


def status_of(pools: PoolManager, cfg: PoolConfig) -> dict[str, Any]:
    return next(s for s in pools.statuses() if s["id"] == cfg.id)


def address_of(url: str) -> str:
    return url.split("//", 1)[1].rsplit(":", 1)[0]


async def test_manifest_and_served_certificate(https_sim: Simulator, pools: PoolManager) -> None:
    manifest = https_sim.manifest()
    pool = pool_manifest(manifest, "Pool A")
    assert all(p["master"].startswith("https://") for p in manifest["pools"])
    cfg = https_config(https_sim, allow_unauthorized=True)
    await pools.add(cfg)
    conn = pools.connection(cfg.id)
    await conn.wait_ready(15)
    assert pools.statuses()[0]["status"] == "connected"
    # host.get_server_certificate is the certificate the host presents in its handshake,
    # self-signed for its own address.
    address = address_of(pool["master"])
    host_ref = await conn.call("host.get_by_uuid", pool["hosts"][0]["uuid"])
    pem = await conn.call("host.get_server_certificate", host_ref)
    served = await asyncio.to_thread(ssl.get_server_certificate, (address, manifest["port"]))
    assert ssl.PEM_cert_to_DER_cert(pem) == ssl.PEM_cert_to_DER_cert(served)
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == address
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(address)]
    # Every host has its own certificate.
    pems = {https_sim.server_certificate(h["address"]) for h in pool["hosts"]}
    assert len(pems) == len(pool["hosts"])


async def test_default_verification_fails_clearly_and_gives_up(
    https_sim: Simulator, pools: PoolManager, store: ObjectStore
) -> None:
    cfg = https_config(https_sim)
    address = address_of(cfg.url)
    simpool = https_sim.pool("Pool A")
    simpool.reset_stats()
    await pools.add(cfg)
    await eventually(lambda: "error" in status_of(pools, cfg), 10, "TLS error visible")
    error = status_of(pools, cfg)["error"]
    assert f"TLS certificate of {address} rejected" in error
    assert "self-signed certificate" in error and "allowUnauthorized" in error
    # FAST: 3 attempts 0.3 s apart, then it gives up: no tight loop, not forever.
    await eventually(lambda: "gave up" in status_of(pools, cfg)["error"], 10, "gave up")
    assert status_of(pools, cfg)["status"] == "disconnected"
    attempts = https_sim.accepted[address]
    assert attempts == FAST.auth_max_attempts
    await asyncio.sleep(1.0)
    assert https_sim.accepted[address] == attempts
    assert simpool.stats() == {}  # no XAPI call ever got through
    assert not [o for o in store if o.get("$pool") == simpool.uuid]


async def test_ca_file_pinning_connects(https_sim: Simulator, pools: PoolManager) -> None:
    manifest = https_sim.manifest()
    pool = pool_manifest(manifest, "Pool A")
    # The manifest's bundle (every host of the pool) ...
    bundled = https_config(https_sim, ca_file=pool["ca_file"])
    # ... or just the master's certificate, as host.get_server_certificate returns it.
    single = https_sim.certificates.get(address_of(pool["master"])).cert_file
    pinned = https_config(https_sim, ca_file=str(single))
    for cfg in (bundled, pinned):
        await pools.add(cfg)
    for cfg in (bundled, pinned):
        conn = pools.connection(cfg.id)
        await conn.wait_ready(15)
        assert await conn.call("pool.get_all")


async def test_wrong_ca_file_fails_clearly(
    https_sim: Simulator, pools: PoolManager, tmp_path: Path
) -> None:
    manifest = https_sim.manifest()
    other_pool = pool_manifest(manifest, "Pool B")
    wrong = https_config(https_sim, ca_file=other_pool["ca_file"])
    missing = https_config(https_sim, ca_file=str(tmp_path / "nowhere.pem"))
    garbage_file = tmp_path / "garbage.pem"
    garbage_file.write_text("not a certificate\n")
    garbage = https_config(https_sim, ca_file=str(garbage_file))
    for cfg in (wrong, missing, garbage):
        await pools.add(cfg)
    for cfg in (wrong, missing, garbage):
        await eventually(lambda c=cfg: "gave up" in status_of(pools, c).get("error", ""), 10)
        assert status_of(pools, cfg)["status"] == "disconnected"
    address = address_of(wrong.url)
    error = status_of(pools, wrong)["error"]
    assert f"TLS certificate of {address} rejected" in error
    assert f"not signed by a certificate of ca_file {other_pool['ca_file']}" in error
    assert f"cannot load ca_file {tmp_path / 'nowhere.pem'}" in status_of(pools, missing)["error"]
    assert f"cannot load ca_file {garbage_file}" in status_of(pools, garbage)["error"]


async def test_https_url_on_a_plain_http_host_says_so(sim: Simulator, pools: PoolManager) -> None:
    pool = pool_manifest(sim.manifest(), "Pool A")
    cfg = PoolConfig(
        id=str(uuid.uuid4()),
        url=pool["master"].replace("http://", "https://"),
        username=pool["username"],
        password=pool["password"],
        allow_unauthorized=True,
    )
    await pools.add(cfg)
    await eventually(lambda: "gave up" in status_of(pools, cfg).get("error", ""), 10)
    assert "is it https?" in status_of(pools, cfg)["error"]


async def test_host_is_slave_redirect_and_failover_over_https(
    https_sim: Simulator, pools: PoolManager
) -> None:
    manifest = https_sim.manifest()
    pool = pool_manifest(manifest, "Pool A")
    supporters = [h["name"] for h in pool["hosts"] if h["name"] != master_name(pool)]
    # Configured with a supporter's address: HOST_IS_SLAVE leads to the master, over TLS,
    # with every host's certificate pinned.
    cfg = https_config(https_sim, host=supporters[0], ca_file=pool["ca_file"])
    await pools.add(cfg)
    conn = pools.connection(cfg.id)
    await conn.wait_ready(15)
    assert conn.master_url == pool["master"]
    # The master moves: the connection follows it, still verifying certificates.
    new_master = supporters[1]
    https_sim.pool("Pool A").failover(new_master)
    new_address = next(h["address"] for h in pool["hosts"] if h["name"] == new_master)
    new_url = f"https://{new_address}:{manifest['port']}/"
    await eventually(
        lambda: conn.master_url == new_url and conn.status == "connected", 10, "failover"
    )
    assert await conn.call("pool.get_all")


async def test_call_async_and_close_over_https(https_sim: Simulator, pools: PoolManager) -> None:
    pool = pool_manifest(https_sim.manifest(), "Pool A")
    cfg = https_config(https_sim, ca_file=pool["ca_file"])
    await pools.add(cfg)
    conn = pools.connection(cfg.id)
    await conn.wait_ready(15)
    db = https_sim.pool("Pool A").db
    vm_ref = db.find_one("VM", name_label="web-01")
    current = db.get("VM", vm_ref)["resident_on"]
    target = next(h for h in db.all_refs("host") if h != current)
    assert await conn.call_async("VM.pool_migrate", vm_ref, target, {"live": "true"}) is None
    assert db.get("VM", vm_ref)["resident_on"] == target
    # Closing unblocks the event long-poll on its TLS socket at once, and logs out.
    assert len(https_sim.pool("Pool A").sessions) >= 2  # event session + a worker's
    started = asyncio.get_running_loop().time()
    await pools.remove(cfg.id)
    assert asyncio.get_running_loop().time() - started < 1.5
    assert len(https_sim.pool("Pool A").sessions) == 0
