"""pool.*: what xo-web asks about pools (xo-server api/pool.mjs, xapi mixins/patching.mjs).

- `pool.listMissingPatches {host}`: on an XCP-ng host, the `updater.py` plugin's
  `check_update`: the packages yum would update, as the plugin lists them (`{name, version,
  release, description, changelog, url, size, license}`), asked at most once a minute per
  host. For other products xo-server downloads the vendor's patch catalogue; xo-migrate
  downloads nothing and knows of no missing patch there (`[]`).
- `pool.getGuestSecureBootReadiness {id, forceRefresh}`: XAPI's
  `pool.get_guest_secureboot_readiness`, reused for 30 s unless `forceRefresh`; XAPI's error
  as is where XAPI lacks it (xo-web ignores MESSAGE_METHOD_UNKNOWN).
"""

from __future__ import annotations

import json
from typing import Any

from api.registry import Call, Method, XoParams
from api.xapi_call import connection_of

MISSING_PATCHES_MEMO_S = 60.0
SECUREBOOT_MEMO_S = 30.0


class HostParams(XoParams):
    host: str


class SecureBootParams(XoParams):
    id: str
    forceRefresh: bool = False


class PluginError(Exception):
    """An `{error}` answer of a host plugin: a plain error, as xo-server throws it."""


async def list_missing_patches(call: Call, params: HostParams) -> Any:
    host = call.objects["host"]
    if host.get("productBrand") != "XCP-ng":
        return []
    conn = connection_of(call, host)

    async def check_update() -> Any:
        answer = json.loads(
            await conn.call("host.call_plugin", host["_xapiRef"], "updater.py", "check_update", {})
        )
        if isinstance(answer, dict) and answer.get("error") is not None:
            raise PluginError(str(answer["error"]))
        return answer

    return await conn.memo.get(
        ("missing_patches", host["_xapiRef"]), MISSING_PATCHES_MEMO_S, check_update
    )


async def get_guest_secure_boot_readiness(call: Call, params: SecureBootParams) -> Any:
    pool = call.objects["pool"]
    return await connection_of(call, pool).call_cached(
        SECUREBOOT_MEMO_S,
        "pool.get_guest_secureboot_readiness",
        pool["_xapiRef"],
        refresh=params.forceRefresh,
    )


METHODS = [
    Method(
        "pool.listMissingPatches",
        list_missing_patches,
        HostParams,
        resolve={"host": ("host", "host", "view")},
        description="return an array of missing new patches in the host",
    ),
    Method(
        "pool.getGuestSecureBootReadiness",
        get_guest_secure_boot_readiness,
        SecureBootParams,
        resolve={"pool": ("id", "pool", None)},
    ),
]
