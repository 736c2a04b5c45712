"""Scale and bad input: many concurrent callers, random arguments, never a crash or a hang."""

from __future__ import annotations

import asyncio
import random
import time
import xmlrpc.client
from collections import Counter
from typing import Any

import aiohttp
import pytest

from tests.sim.helpers import call_xml, master_url, raw_call, raw_login
from xen.sim.db import default_schema

MIGRATION = ("VM.pool_migrate", "VM.migrate_send", "VM.assert_can_migrate", "host.migrate_receive")


@pytest.mark.timeout(60)
async def test_200_concurrent_get_all_records(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    body = call_xml("VM.get_all_records", session)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one() -> int:
            async with http.post(url, data=body) as resp:
                reply = xmlrpc.client.loads(await resp.text())[0][0]
                assert reply["Status"] == "Success"
                return len(reply["Value"])

        start = time.monotonic()
        counts = await asyncio.gather(*(one() for _ in range(200)))
        elapsed = time.monotonic() - start
    assert set(counts) == {len(counts) and counts[0]} and counts[0] >= 20
    assert elapsed < 20


def _garbage(rng: random.Random) -> Any:
    return rng.choice(
        [
            "OpaqueRef:" + "f" * 8,
            "OpaqueRef:NULL",
            "",
            "x" * rng.randint(0, 40),
            rng.randint(-(2**31), 2**31 - 1),
            rng.random(),
            rng.choice([True, False]),
            [],
            ["a", 1],
            {},
            {"k": "v", "n": 1},
            None,
            xmlrpc.client.DateTime("20240101T00:00:00Z"),
        ]
    )


@pytest.mark.timeout(60)
async def test_random_arguments_never_crash(manifest: dict[str, Any]) -> None:
    url = master_url(manifest)
    session = await raw_login(url)
    methods = [
        m
        for m in await raw_call(url, "system.listMethods")
        if not m.startswith(("session.", "system.", "simtest.")) and m not in MIGRATION
        and not m.endswith(("destroy", "create", ".forget", "from"))
    ]  # fmt: skip
    rng = random.Random(1234)
    schema = default_schema()
    crashes = []
    codes: list[str] = []
    async with aiohttp.ClientSession() as http:
        for method in rng.sample(methods, 400):
            spec = schema.cls(method.split(".")[0]).messages.get(method.split(".")[1])
            nargs = len(spec.args) if spec and rng.random() < 0.8 else rng.randint(0, 4)
            args = [_garbage(rng) for _ in range(nargs)]
            wire = rng.choice([method, "Async." + method, method.replace(".", "_", 1)])
            async with http.post(url, data=call_xml(wire, session, *args)) as resp:
                assert resp.status == 200, (wire, args)
                reply = xmlrpc.client.loads(await resp.text())[0][0]
            assert reply["Status"] in ("Success", "Failure")
            codes.append(reply.get("ErrorDescription", ["ok"])[0])
            if reply["Status"] == "Failure" and reply["ErrorDescription"][0] == "INTERNAL_ERROR":
                crashes.append((wire, args, reply["ErrorDescription"]))
    seen = Counter(codes)
    assert seen["FIELD_TYPE_ERROR"] and seen["HANDLE_INVALID"] and seen["ok"], seen
    assert crashes == []
    # and the pool still answers
    assert (await raw_call(url, "VM.get_all", session))["Status"] == "Success"
