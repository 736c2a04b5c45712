"""The methods xo-web calls at start and on the pool page (../shared/xo-web/README.md table),
each answer compared with the shape xo-server 5.207.2 gives on the default lab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from api.sr import vdi_chains_info
from server.migrations.service import MigrationSettings
from tests.migrations.conftest import lab_on
from tests.server.xo_client import XoClient
from xen.sim import Simulator

# method -> (permission as system.getMethodsInfo shows it (None: any signed-in user), answer)
EMPTY_ANSWERS: dict[str, tuple[str | None, Any]] = {
    "acl.getCurrentPermissions": (None, {}),
    "proxy.getAll": ("admin", []),
    "resourceSet.getAll": (None, []),
    "backupNg.getAllJobs": ("admin", []),
    "schedule.getAll": ("admin", []),
    "tag.getAllConfigured": (None, []),
    # Pages beyond the start: VM advanced and network tabs, settings, backups.
    "acl.get": ("admin", []),
    "group.getAll": ("admin", []),
    "plugin.get": ("admin", []),
    "metadataBackup.getAllJobs": ("admin", []),
    "mirrorBackup.getAllJobs": ("admin", []),
    "backupNg.getAllLogs": ("admin", {}),
    "ipPool.getAll": (None, []),
    "vif.getLockingModeValues": (None, ["disabled", "locked", "network_default", "unlocked"]),
    "vm.getHaValues": (None, ["best-effort", "restart", ""]),
    "role.getAll": (
        None,
        [
            {"id": "viewer", "name": "Viewer", "permissions": ["view"]},
            {"id": "operator", "name": "Operator", "permissions": ["view", "operate"]},
            {"id": "admin", "name": "Admin", "permissions": ["view", "operate", "administrate"]},
        ],
    ),
}
HEALTHY = {"vdisWithUnknownVhdParent": {}, "unhealthyVdis": {}, "nUnhealthyVdis": 0}


async def test_start_up_methods_answer_as_xo_server(sim: Simulator, tmp_path: Path) -> None:
    async with lab_on(sim, tmp_path, MigrationSettings()) as lab:
        info = await lab.client.call("system.getMethodsInfo")
        await lab.server.state.auth.add_user("op@x.net", "pw", "user")
        user = await XoClient.connect(lab.server.ws_url)
        anonymous = await XoClient.connect(lab.server.ws_url)
        await user.sign_in("op@x.net", "pw")
        try:
            for method, (permission, answer) in EMPTY_ANSWERS.items():
                assert info[method].get("permission") == permission, method
                assert await lab.client.call(method) == answer, method
                response = await user.request(method)
                if permission == "admin":
                    assert response["error"] == {
                        "message": "not enough permissions",
                        "code": 2,
                        "data": {"permission": "admin", "object": {}},
                    }, method
                else:
                    # No ACLs in xo-migrate yet: a user's explicit permissions are none too.
                    assert response["result"] == answer, method
                assert (await anonymous.request(method))["error"]["code"] == 2, method
            assert isinstance(await lab.client.call("system.getServerTimezone"), str)
        finally:
            await user.close()
            await anonymous.close()


async def test_backup_logs_as_ndjson_are_an_empty_download(sim: Simulator, tmp_path: Path) -> None:
    """xo-web's backup overview: backupNg.getAllLogs {ndjson: true}, then GET $getFrom."""
    async with lab_on(sim, tmp_path, MigrationSettings()) as lab:
        answer = await lab.client.call("backupNg.getAllLogs", {"ndjson": True})
        assert list(answer) == ["$getFrom"] and answer["$getFrom"].startswith("/api/")
        async with aiohttp.ClientSession() as http:
            async with http.get(lab.server.base + answer["$getFrom"]) as reply:
                assert reply.status == 200 and await reply.read() == b""
            async with http.get(lab.server.base + answer["$getFrom"]) as reply:
                assert reply.status == 404  # one shot
        error = await lab.error_of("backupNg.getAllLogs", {"ndjson": "yes"})
        assert error["code"] == 10


async def test_sr_chains_list_every_writable_sr_healthy(sim: Simulator, tmp_path: Path) -> None:
    async with lab_on(sim, tmp_path, MigrationSettings()) as lab:
        srs = await lab.objects(type="SR")
        writable = {
            sr["uuid"] for sr in srs.values() if sr["content_type"] != "iso" and sr["size"] > 0
        }
        assert len(writable) == len(srs) - 1  # all but "A ISO library"
        answer = await lab.client.call("sr.getAllUnhealthyVdiChainsLength")
        assert answer == dict.fromkeys(writable, HEALTHY)
        info = await lab.client.call("system.getMethodsInfo")
        assert info["sr.getAllUnhealthyVdiChainsLength"]["permission"] == "admin"


def test_vdi_chain_lengths_follow_the_vhd_parents() -> None:
    """base <- mid <- leaf (a chain waiting for coalesce), base <- snap (a snapshot keeps base
    alive), orphan's parent is gone."""

    def vdi(uuid: str, parent: str | None = None, kind: str = "VDI") -> dict[str, Any]:
        return {"id": uuid, "uuid": uuid, "type": kind, "$SR": "sr", "parent": parent}

    vdis = [
        vdi("base", kind="VDI-unmanaged"),
        vdi("mid", "base", kind="VDI-unmanaged"),
        vdi("leaf", "mid"),
        vdi("other", "base"),
        vdi("snap", "other", kind="VDI-snapshot"),
        vdi("orphan", "gone"),
        vdi("alone"),
    ]
    objects = {v["id"]: v for v in vdis}
    info = vdi_chains_info(vdis, objects.get)
    # mid has one child (leaf): a link to coalesce; base has two (mid, other): none; other
    # has one (snap); the missing "gone" has one (orphan), as xo-server counts it.
    assert info == {
        "vdisWithUnknownVhdParent": {"orphan": "gone"},
        "unhealthyVdis": {"leaf": 1, "other": 1, "orphan": 1},
        "nUnhealthyVdis": 3,  # mid, other, gone: each counted once
    }


async def test_server_get_all_tells_the_pool(sim: Simulator, tmp_path: Path) -> None:
    async with lab_on(sim, tmp_path, MigrationSettings()) as lab:
        servers = {s["label"]: s for s in await lab.client.call("server.getAll")}
        hosts = {h["name_label"]: h for h in (await lab.objects(type="host")).values()}
        pools = {p["name_label"]: p for p in (await lab.objects(type="pool")).values()}
        a = servers["Pool A"]
        assert set(a) == {
            "allowUnauthorized",
            "enabled",
            "host",
            "id",
            "label",
            "master",
            "poolId",
            "poolMembersAddresses",
            "poolNameLabel",
            "readOnly",
            "status",
            "username",
        }
        assert a["poolId"] == pools["Pool A"]["id"] and a["master"] == hosts["a1"]["id"]
        assert a["poolMembersAddresses"] == ["127.0.1.1", "127.0.1.2", "127.0.1.3"]
        assert a["poolNameLabel"] == "Pool A"
        b = servers["Pool B"]
        assert b["master"] == hosts["b1"]["id"]
        assert b["poolMembersAddresses"] == ["127.0.2.1", "127.0.2.2"]
        # Disconnected: xo-server has no master to tell (its fields are all optional).
        assert await lab.client.call("server.disable", {"id": b["id"]}) is True
        b = next(s for s in await lab.client.call("server.getAll") if s["id"] == b["id"])
        assert b["status"] == "disconnected" and "master" not in b
