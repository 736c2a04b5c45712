"""The hosts' clock and stats, as xo-server reads them: host.get_servertime, then
GET /rrd_updates (RRD xport XML, or JSON with json=true), /host_rrd and /vm_rrd. Sessions
come from the official XenAPI binding; the stats are plain HTTP GETs, as on a real host."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import aiohttp

from tests.sim.test_migration_support import Xapi, host_ref, master, vm_ref
from xen.sim import Simulator

HOST_SOURCES = {"cpu0", "cpu31", "cpu_avg", "loadavg", "memory_total_kib", "memory_free_kib",
                "pif_eth0_rx", "pif_eth0_tx", "pif_eth1_rx", "pif_eth1_tx"}  # fmt: skip
VM_SOURCES = {"cpu0", "cpu1", "memory", "memory_internal_free", "vif_0_rx", "vif_0_tx",
              "vbd_xvda_read", "vbd_xvda_write"}  # fmt: skip


async def get(url: str, **query: Any) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(url, params=query) as resp:
        return resp.status, resp.content_type, await resp.text()


def parse_xport(body: str) -> tuple[dict[str, int], list[str], list[tuple[int, list[float]]]]:
    root = ET.fromstring(body)
    assert root.tag == "xport"
    meta = root.find("meta")
    assert meta is not None
    numbers = {k: int(meta.findtext(k) or "") for k in ("start", "step", "end", "rows", "columns")}
    legend = [e.text or "" for e in meta.iterfind("legend/entry")]
    rows = [
        (int(row.findtext("t") or ""), [float(v.text or "") for v in row.iterfind("v")])
        for row in root.iterfind("data/row")
    ]
    return numbers, legend, rows


def column(legend: list[str], rows: list[tuple[int, list[float]]], entry: str) -> list[float]:
    index = legend.index(entry)
    return [values[index] for _, values in rows]


async def test_servertime_is_the_hosts_clock(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    async with Xapi(master(sim, "Pool A")) as x:
        for name in ("a1", "a3"):
            value = await x("host.get_servertime", host_ref(pool, name))
            when = datetime.strptime(value.value, "%Y%m%dT%H:%M:%SZ").replace(tzinfo=UTC)
            assert abs((when - datetime.now(UTC)).total_seconds()) < 5
        local = await x("host.get_server_localtime", host_ref(pool, "a1"))
        assert local.value.endswith("Z")
        bad = "OpaqueRef:nope"
        assert await x.fails("host.get_servertime", bad) == ["HANDLE_INVALID", "host", bad]


async def test_rrd_updates_is_rrd_xport_xml_with_host_and_vm_sources(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    a1 = pool.db.get("host", host_ref(pool, "a1"))
    web01 = pool.db.get("VM", vm_ref(pool, "web-01"))  # running on a1
    async with Xapi(master(sim, "Pool A")) as x:
        assert x.session is not None
        session = x.session._session
        # What xo-server asks: the last 10 minutes at 5 s, host and VMs, AVERAGE.
        start = int(time.time()) - 120 * 5 + 5
        status, ctype, body = await get(
            master(sim, "Pool A") + "rrd_updates",
            session_id=session, start=start, cf="AVERAGE", interval=5, host="true",
        )  # fmt: skip
    assert (status, ctype) == (200, "text/xml")
    assert body.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    meta, legend, rows = parse_xport(body)
    assert meta["step"] == 5 and meta["columns"] == len(legend)
    assert meta["rows"] == len(rows) and 115 <= len(rows) <= 120
    host_prefix, vm_prefix = f"AVERAGE:host:{a1['uuid']}:", f"AVERAGE:vm:{web01['uuid']}:"
    assert {f"{host_prefix}{s}" for s in HOST_SOURCES} <= set(legend)
    assert {f"{vm_prefix}{s}" for s in VM_SOURCES} <= set(legend)
    # Every VM running on a1 (its control domain too), and nothing from other hosts.
    vm_uuids = {e.split(":")[2] for e in legend if e.startswith("AVERAGE:vm:")}
    resident = {pool.db.get("VM", v)["uuid"] for v in a1["resident_VMs"]}
    assert vm_uuids == resident
    # Rows newest first, 5 s apart, from the last complete row back to `start`.
    times = [t for t, _ in rows]
    assert times[0] == meta["end"] <= time.time() and times[-1] >= start
    assert all(a - b == 5 for a, b in itertools.pairwise(times))
    assert all(len(values) == meta["columns"] for _, values in rows)
    # Values change over time, and stay plausible.
    cpu = column(legend, rows, f"{vm_prefix}cpu0")
    assert len(set(cpu)) > 20 and all(0 <= c <= 1 for c in cpu)
    total = column(legend, rows, f"{host_prefix}memory_total_kib")
    metrics = pool.db.get("host_metrics", a1["metrics"])
    assert total[0] == float(f"{metrics['memory_total'] / 1024:0.5g}")
    free = column(legend, rows, f"{vm_prefix}memory_internal_free")
    assert all(0 < f < int(web01["memory_target"]) / 1024 for f in free)


async def test_rrd_updates_json_is_what_xo_server_parses(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    web01 = pool.db.get("VM", vm_ref(pool, "web-01"))
    async with Xapi(master(sim, "Pool A")) as x:
        assert x.session is not None
        session = x.session._session
        start = int(time.time()) - 120 * 60 + 60  # xo-server's "minutes" granularity
        query = {"session_id": session, "start": start, "cf": "AVERAGE", "interval": 60,
                 "host": "true", "json": "true"}  # fmt: skip
        status, _, body = await get(master(sim, "Pool A") + "rrd_updates", **query)
        assert status == 200
        doc = json.loads(body)
        meta = doc["meta"]
        assert meta["step"] == 60  # a number: xo-server compares it with the step it asked
        assert meta["rows"] == len(doc["data"]) and meta["columns"] == len(meta["legend"])
        assert doc["data"][0]["t"] == meta["end"] and meta["end"] % 60 == 0
        assert all(len(row["values"]) == meta["columns"] for row in doc["data"])
        assert f"AVERAGE:vm:{web01['uuid']}:cpu0" in meta["legend"]
        # One VM only, without the host; and the same columns in XML.
        one = {**query, "host": "false", "vm_uuid": web01["uuid"]}
        doc = json.loads((await get(master(sim, "Pool A") + "rrd_updates", **one))[2])
        assert {e.split(":")[2] for e in doc["meta"]["legend"]} == {web01["uuid"]}
        del one["json"]
        _, legend, _ = parse_xport((await get(master(sim, "Pool A") + "rrd_updates", **one))[2])
        assert legend == doc["meta"]["legend"]


async def test_stats_need_a_session_and_a_start(sim: Simulator) -> None:
    url = master(sim, "Pool A") + "rrd_updates"
    status, _, _ = await get(url, start=0)
    assert status == 401
    assert (await get(url, session_id="OpaqueRef:forged", start=0))[0] == 401
    async with Xapi(master(sim, "Pool A")) as x:
        assert x.session is not None
        session = x.session._session
        status, _, text = await get(url, session_id=session)
        assert status == 400 and "start" in text
        status, _, text = await get(url, session_id=session, start="soon")
        assert status == 400 and "integer" in text
        status, _, text = await get(master(sim, "Pool A") + "vm_rrd", session_id=session, uuid="x")
        assert status == 404


async def test_whole_rrds(sim: Simulator) -> None:
    pool = sim.pool("Pool B")
    b2 = pool.db.get("host", host_ref(pool, "b2"))
    vm = pool.db.get("VM", vm_ref(pool, "b-app"))
    async with Xapi(master(sim, "Pool B")) as x:
        assert x.session is not None
        session = x.session._session
        # Each host serves its own stats (b2 is not the master).
        url = f"http://{b2['address']}:{sim.port}/"
        status, ctype, body = await get(url + "host_rrd", session_id=session)
        assert (status, ctype) == (200, "text/xml")
        rrd = ET.fromstring(body)
        names = [d.findtext("name") for d in rrd.iterfind("ds")]
        assert rrd.findtext("step") == "5" and {"cpu0", "memory_free_kib"} <= set(names)
        archives = [(a.findtext("cf"), a.findtext("pdp_per_row")) for a in rrd.iterfind("rra")]
        assert archives == [(cf, p) for cf in ("AVERAGE", "MIN", "MAX")
                            for p in ("1", "12", "720", "17280")]  # fmt: skip
        rows = [len(a.findall("database/row")) for a in rrd.iterfind("rra")][:4]
        assert rows == [120, 120, 168, 366]
        status, _, body = await get(url + "vm_rrd", session_id=session, uuid=vm["uuid"])
        assert status == 200
        assert "memory_internal_free" in [
            d.findtext("name") for d in ET.fromstring(body).iter("ds")
        ]
        status, _, body = await get(url + "host_rrd", session_id=session, json="true")
        assert json.loads(body)["step"] == "5"  # XAPI writes a whole RRD's numbers as strings


async def test_a_migration_shows_as_traffic_on_the_hosts_nics(sim: Simulator) -> None:
    pool = sim.pool("Pool A")
    a2, a3 = host_ref(pool, "a2"), host_ref(pool, "a3")
    vm = vm_ref(pool, "web-02")  # 4 GiB on a2, shared disk: pool_migrate over management
    sim.timing.time_scale = 0.05  # its memory copy takes about 1 s
    async with Xapi(master(sim, "Pool A")) as x:
        assert x.session is not None
        session = x.session._session
        started = time.time()
        rec = await x.wait(await x("Async.VM.pool_migrate", vm, a3, {}))
        assert rec["status"] == "success", rec
        # Wait until the 5 s rows covering the whole copy are complete (on a loaded machine the
        # copy can end in a later row than the one it started in).
        finished = time.time()
        await asyncio.sleep(max(0.0, (finished // 5 + 1) * 5 - time.time() + 0.1))

        async def nic(host: str, entry: str) -> float:
            address = pool.db.get("host", host)["address"]
            _, _, body = await get(
                f"http://{address}:{sim.port}/rrd_updates",
                session_id=session, start=int(started) - 10, interval=5, host="true",
                cf="AVERAGE", vm_uuid="none",
            )  # fmt: skip
            _, legend, rows = parse_xport(body)
            uuid = pool.db.get("host", host)["uuid"]
            return max(column(legend, rows, f"AVERAGE:host:{uuid}:{entry}"))

        # Background traffic stays under 50 kB/s; the memory copy moved far more.
        assert await nic(a2, "pif_eth0_tx") > 1e6
        assert await nic(a3, "pif_eth0_rx") > 1e6
        assert await nic(a2, "pif_eth0_rx") < 1e5
        assert await nic(a2, "pif_eth1_tx") < 1e5
