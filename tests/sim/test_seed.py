"""Reproducible labs: with a seed (`[server] seed`, `xo-migrate sim --seed N`) two starts of
the same lab give the same uuids and refs; without one they differ, as on real pools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SIM_TIME_SCALE
from tests.sim.helpers import cli_sim, xenapi
from xen.sim import Simulator, load_lab
from xen.sim.lab import LabError, parse_lab

CLASSES = ("pool", "host", "host_cpu", "Certificate", "VM", "VM_metrics", "VBD", "VDI", "VIF",
           "SR", "PBD", "network", "PIF", "PIF_metrics", "console")  # fmt: skip


async def snapshot(seed: int | None) -> dict[str, Any]:
    """Every pool's objects of CLASSES, as (ref, uuid) per class, read over XenAPI."""
    sim = Simulator(load_lab(), port=0, time_scale=SIM_TIME_SCALE, seed=seed)
    await sim.start()
    try:
        out: dict[str, Any] = {}
        for pool in sim.manifest()["pools"]:

            def read(x: Any) -> dict[str, list[tuple[str, str]]]:
                return {
                    cls: sorted(
                        (ref, rec["uuid"]) for ref, rec in getattr(x, cls).get_all_records().items()
                    )
                    for cls in CLASSES
                }

            out[pool["name"]] = await xenapi(pool["master"], read)
        return out
    finally:
        await sim.stop()


async def test_two_starts_with_the_same_seed_give_identical_uuids_and_refs() -> None:
    first, second = await snapshot(7), await snapshot(7)
    assert first == second
    assert len(first["Pool A"]["VM"]) > 10 and len(first["Pool B"]["host_cpu"]) == 64
    other = await snapshot(8)
    assert other["Pool A"]["VM"] != first["Pool A"]["VM"]
    unseeded = await snapshot(None)
    assert unseeded["Pool A"]["host"] != first["Pool A"]["host"]
    # Pools draw from their own streams: the same seed never repeats an id across pools.
    ids = [u for pool in first.values() for pairs in pool.values() for pair in pairs for u in pair]
    assert len(ids) == len(set(ids))


def test_lab_seed_setting() -> None:
    base: dict[str, Any] = {
        "pools": [{"name": "P", "hosts": [{"name": "h", "address": "127.0.9.1"}],
                   "networks": [{"name": "n", "management": True}]}]
    }  # fmt: skip
    assert parse_lab(base).seed is None
    assert parse_lab({**base, "server": {"seed": 42}}).seed == 42
    for bad in ("42", True, 4.2):
        with pytest.raises(LabError, match=r"server\.seed"):
            parse_lab({**base, "server": {"seed": bad}})
    assert load_lab().seed is None  # the shipped lab is random unless asked
    # The file's seed is used (Simulator builds its pools at construction).
    seeded = {**base, "server": {"seed": 3}}
    hosts = [Simulator(parse_lab(seeded)).pool("P").db.table("host") for _ in range(2)]
    assert [r["uuid"] for r in hosts[0].values()] == [r["uuid"] for r in hosts[1].values()]
    assert list(hosts[0]) == list(hosts[1])


async def test_cli_seed_gives_the_same_manifest(tmp_path: Path) -> None:
    async with cli_sim(tmp_path / "one.json", seed=5) as first:
        pass
    async with cli_sim(tmp_path / "two.json", seed=5) as second:
        pass
    uuids = [(p["uuid"], [h["uuid"] for h in p["hosts"]]) for p in first["pools"]]
    assert uuids == [(p["uuid"], [h["uuid"] for h in p["hosts"]]) for p in second["pools"]]
