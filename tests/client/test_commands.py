"""The `xo-migrate` client as a person or a script uses it: a real subprocess against the
server on the simulated lab (stdout is a pipe here: plain lines, or JSON with --json)."""

from __future__ import annotations

import asyncio
import json
import signal
import stat
from typing import Any

from tests.client.conftest import Cli
from tests.helpers import wait_until
from tests.migrations.helpers import start_one_running_one_queued


async def test_login_stores_a_token_readable_by_its_owner_only(cli: Cli) -> None:
    result = await cli.login()
    assert "logged in to" in result.out
    path = cli.config_home / "xo-migrate" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    stored = json.loads(path.read_text())
    assert stored["server"] == cli.lab.server.base
    assert "admin" not in json.dumps(stored).replace("admin@", "")  # no password kept
    # The token is a real one: the server signs in with it.
    client = await cli.lab.connect()
    await client.call("session.signIn", {"token": stored["token"]})
    # Logging in again keeps the client id, so the server hands the same token back.
    await cli.login()
    assert json.loads(path.read_text())["token"] == stored["token"]


async def test_login_errors(cli: Cli) -> None:
    wrong = await cli.run(
        "login",
        cli.lab.server.base,
        "--email",
        "admin@admin.net",
        "--password-stdin",
        input="nope\n",
    )
    assert wrong.code == 1
    assert "login refused" in wrong.err
    assert not (cli.config_home / "xo-migrate" / "config.json").exists()
    nowhere = await cli.run(
        "login", "http://127.0.0.1:1", "--email", "a@b.c", "--password-stdin", input="x\n"
    )
    assert nowhere.code == 1
    assert "cannot connect to ws://127.0.0.1:1/api/" in nowhere.err
    no_terminal = await cli.run("login", cli.lab.server.base, "--email", "admin@admin.net")
    assert no_terminal.code == 2
    assert "--password-stdin" in no_terminal.err
    not_logged_in = await cli.run("ls")
    assert not_logged_in.code == 1
    assert "not logged in" in not_logged_in.err and "xo-migrate login" in not_logged_in.err


async def test_ls_tables_and_filters(logged_in: Cli) -> None:
    vms = await logged_in.run("ls")
    assert vms.code == 0, vms
    lines = vms.out.splitlines()
    assert lines[0].split() == ["NAME", "POWER", "HOST", "POOL", "MEMORY", "UUID"]
    db01 = next(line for line in lines if line.startswith("db-01 "))
    assert db01.split()[1:4] == ["Running", "a1", "Pool"]
    pool_b = await logged_in.run("ls", "vms", "--pool", "Pool B")
    names = {line.split()[0] for line in pool_b.out.splitlines()[1:]}
    assert names == {"b-web-01", "b-db-01", "b-halted", "b-runner", "b-app"}
    web = await logged_in.run("ls", "vms", "web-*", "--power-state", "running")
    assert {line.split()[0] for line in web.out.splitlines()[1:]} == {"web-01", "web-02"}
    on_a1 = await logged_in.run("ls", "vms", "--host", "a1", "--json")
    assert "db-01" in {vm["name_label"] for vm in json.loads(on_a1.out)}
    a1 = await logged_in.lab.id_of("host", "a1")
    assert all(vm["$container"] == a1 for vm in json.loads(on_a1.out))
    hosts = await logged_in.run("ls", "hosts", "--json")
    assert sorted(h["name_label"] for h in json.loads(hosts.out)) == ["a1", "a2", "a3", "b1", "b2"]
    pools = await logged_in.run("ls", "pools")
    assert any(line.split()[:3] == ["Pool", "A", "a1"] for line in pools.out.splitlines())
    srs = await logged_in.run("ls", "srs", "--pool", "Pool B")
    assert "B shared iSCSI" in srs.out and "A shared NFS" not in srs.out


async def test_plan_explains_the_mode_the_disks_and_the_reasons(logged_in: Cli) -> None:
    result = await logged_in.run("plan", "db-01", "b1")
    assert result.code == 0, result
    out = result.out
    assert "Plan: db-01 from a1 (Pool A) to b1 (Pool B)" in out
    assert "storage motion (migrate_send)" in out
    assert "the target host is in another pool" in out  # why
    assert "the target pool's default SR" in out  # each disk's reason
    assert "the target host's management network" in out  # each NIC's reason
    assert "XAPI's verdict (VM.assert_can_migrate): ok" in out
    xenmotion = await logged_in.run("plan", "web-01", "a2")
    assert "XenMotion (pool_migrate)" in xenmotion.out
    assert "same pool and no storage change" in xenmotion.out
    mapped = await logged_in.run(
        "plan", "app-01", "a2", "--map-disk", "xvda=A shared NFS", "--json"
    )
    plan = json.loads(mapped.out)
    assert [d["reason"] for d in plan["disks"]] == ["explicit map"]
    assert plan["disks"][0]["srTo"] == await logged_in.lab.id_of("SR", "A shared NFS")
    # A refusal XAPI would answer: exit 1, the code, the reason.
    big = await logged_in.run("plan", "big-mem", "b1")
    assert big.code == 1
    assert "refused: HOST_NOT_ENOUGH_FREE_MEMORY" in big.out
    assert "XAPI will refuse this migration" in big.out


async def test_names_uuids_prefixes_and_their_errors(logged_in: Cli) -> None:
    lab = logged_in.lab
    web01 = await lab.id_of("VM", "web-01")
    by_prefix = await logged_in.run("plan", web01[:8], "a2", "--json")
    assert json.loads(by_prefix.out)["vm"] == web01
    by_name_prefix = await logged_in.run("plan", "big", "a2", "--json")
    assert json.loads(by_name_prefix.out)["vmName"] == "big-mem"
    ambiguous = await logged_in.run("plan", "web", "a2")
    assert ambiguous.code == 2
    assert "'web' matches 2 VMs" in ambiguous.err
    assert "web-01" in ambiguous.err and "web-02" in ambiguous.err
    missing = await logged_in.run("plan", "wbe-01", "a2")
    assert missing.code == 2
    assert "no VM named 'wbe-01'" in missing.err and "did you mean: web-01" in missing.err
    host = await logged_in.run("plan", "web-01", "a")
    assert host.code == 2 and "matches 3 hosts" in host.err
    sr = await logged_in.run("plan", "app-01", "b1", "--sr", "A shared NFS")
    assert sr.code == 2 and "no SR named 'A shared NFS'" in sr.err  # not in the target pool
    usage = await logged_in.run("plan", "web-01")
    assert usage.code == 2


def _progress_of(events: list[dict[str, Any]], migration_id: str) -> list[float]:
    return [e["progress"] for e in events if e["id"] == migration_id and e["event"] == "progress"]


async def test_migrate_json_events_are_monotonic_and_end_at_1(logged_in: Cli) -> None:
    result = await logged_in.run("migrate", "db-01", "b1", "--json")
    assert result.code == 0, result
    events = result.events()
    migration_id = events[0]["id"]
    progress = _progress_of(events, migration_id)
    assert len(progress) >= 3
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    assert {e["phase"] for e in events} >= {"disks", "memory", "done"}
    final = events[-1]
    assert final["event"] == "finished" and final["status"] == "success"
    assert final["bytesDone"] == final["bytesTotal"] > 0
    lab = logged_in.lab
    vm = await lab.get(await lab.id_of("VM", "db-01"))
    assert vm["$container"] == await lab.id_of("host", "b1")


async def test_migrate_plain_lines_when_not_a_terminal(logged_in: Cli) -> None:
    result = await logged_in.run("migrate", "web-01", "app-01", "a3")
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert "\x1b[" not in result.out  # no terminal escapes in a pipe
    assert any(line.startswith("web-01 → a3: success in ") for line in lines)
    assert any(line.startswith("app-01 → a3: success in ") for line in lines)


async def test_migrate_failure_exit_1_with_the_xapi_code_and_the_hint(logged_in: Cli) -> None:
    result = await logged_in.run("migrate", "b-db-01", "b2")
    assert result.code == 1
    assert "b-db-01 → b2: failure: VM_INCOMPATIBLE_WITH_THIS_HOST" in result.out
    assert "failed: VM_INCOMPATIBLE_WITH_THIS_HOST" in result.err
    assert "hint: The target CPU lacks features" in result.err
    as_json = await logged_in.run("migrate", "b-db-01", "b2", "--json")
    assert as_json.code == 1
    final = as_json.events()[-1]
    assert final["status"] == "failure"
    assert final["error"]["code"] == "VM_INCOMPATIBLE_WITH_THIS_HOST" and final["error"]["hint"]


async def test_no_wait_then_history(logged_in: Cli) -> None:
    started = await logged_in.run("migrate", "web-02", "a3", "--no-wait", "--json")
    assert started.code == 0, started
    [entry] = json.loads(started.out)
    lab = logged_in.lab
    await lab.client.call("migration.wait", {"id": entry["id"]})
    history = await logged_in.run("history", "--vm", "web-02", "--since", "1h")
    assert history.code == 0, history
    rows = history.out.splitlines()[1:]
    assert len(rows) == 1
    assert rows[0].split()[2:5] == ["web-02", "a2", "a3"]
    assert "success" in rows[0] and entry["id"][:8] in rows[0]
    as_json = await logged_in.run("history", "--json", "--limit", "5")
    assert [r["id"] for r in json.loads(as_json.out)] == [entry["id"]]
    future = await logged_in.run("history", "--since", "2999-01-01")
    assert "no migration" in future.out
    bad = await logged_in.run("history", "--since", "yesterday-ish")
    assert bad.code == 2


async def test_cancel_from_another_process(logged_in: Cli) -> None:
    lab = logged_in.lab
    lab.sim.timing.time_scale = 0.02  # db-01 to Pool B: about 7 s, long enough to cancel
    follower = await logged_in.start("migrate", "db-01", "b1", "--json")
    assert follower.stdout is not None
    first = json.loads(await asyncio.wait_for(follower.stdout.readline(), 30))
    migration_id = first["id"]

    async def moving() -> bool:
        record = await lab.client.call("migration.get", {"id": migration_id})
        return record["phase"] == "disks"

    await wait_until(moving)
    cancel = await logged_in.run("cancel", migration_id[:8])
    assert cancel.code == 0, cancel
    assert f"cancelled: db-01 → b1 ({migration_id})" in cancel.out
    out, err = await asyncio.wait_for(follower.communicate(), 30)
    assert follower.returncode == 1
    final = json.loads(out.decode().splitlines()[-1])
    assert final["event"] == "finished" and final["status"] == "cancelled"
    assert "db-01 → b1: cancelled" in err.decode()
    again = await logged_in.run("cancel", migration_id)
    assert again.code == 1
    assert "not cancelled (already_finished)" in again.err
    unknown = await logged_in.run("cancel", "ffffffff")
    assert unknown.code == 2


async def test_watch_once_shows_the_queue(logged_in: Cli) -> None:
    lab = logged_in.lab
    ids = await start_one_running_one_queued(lab, ("db-01", "web-01"), "b1")
    try:
        result = await logged_in.run("watch", "--once")
        assert result.code == 0, result
        lines = result.out.splitlines()
        assert any("db-01 → b1" in line and "%" in line for line in lines), result.out
        assert any("web-01 → b1" in line and "queued #1" in line for line in lines), result.out
        as_json = await logged_in.run("watch", "--once", "--json")
        assert {m["id"] for m in json.loads(as_json.out)} == set(ids)
    finally:
        for migration_id in reversed(ids):
            await lab.client.call("migration.cancel", {"id": migration_id})
    idle = await logged_in.run("watch", "--once")
    assert "no live migration" in idle.out


async def test_ctrl_c_without_a_terminal_stops_watching_only(logged_in: Cli) -> None:
    lab = logged_in.lab
    lab.sim.timing.time_scale = 0.02  # db-01 to Pool B: about 7 s
    follower = await logged_in.start("migrate", "db-01", "b1", "--json")
    assert follower.stdout is not None
    first = json.loads(await asyncio.wait_for(follower.stdout.readline(), 30))
    busy = await logged_in.run("migrate", "db-01", "b2")  # the VM is already moving
    assert busy.code == 1
    assert "db-01: not started" in busy.err and "already being migrated" in busy.err
    follower.send_signal(signal.SIGINT)
    _out, err = await asyncio.wait_for(follower.communicate(), 30)
    assert follower.returncode == 130
    assert "stopped watching; db-01 → b1 goes on" in err.decode()
    final = await lab.client.call("migration.wait", {"id": first["id"]}, timeout=60)
    assert final["status"] == "success"


async def test_watch_follows_new_migrations_until_ctrl_c(logged_in: Cli) -> None:
    lab = logged_in.lab
    watcher = await logged_in.start("watch", "--json")
    assert watcher.stdout is not None
    subscribers = len(lab.server.state.push)

    async def watcher_signed_in() -> bool:
        return len(lab.server.state.push) > subscribers

    await wait_until(watcher_signed_in)
    await asyncio.sleep(0.2)  # and has read the (empty) list of live migrations
    started = await lab.client.call(
        "migration.start",
        {"vm": await lab.id_of("VM", "web-01"), "targetHost": await lab.id_of("host", "a2")},
    )
    events = []
    while not events or events[-1]["event"] != "finished":
        events.append(json.loads(await asyncio.wait_for(watcher.stdout.readline(), 30)))
    assert {e["id"] for e in events} == {started}
    assert events[-1]["status"] == "success" and events[-1]["progress"] == 1.0
    watcher.send_signal(signal.SIGINT)
    await asyncio.wait_for(watcher.communicate(), 30)
    assert watcher.returncode == 130
