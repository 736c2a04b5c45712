"""`xo-migrate serve`: run the API server until Ctrl-C (or SIGTERM), then shut down cleanly.

With `--config FILE` the file says where to listen and which pools to connect. Without it the
embedded simulated lab is started in-process (the XAPI simulator on its default port) and the
server connects to its pools: that is `make demo`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from server import logfilter
from server.app import GUARD, build_app, ssl_context
from server.config import (
    ConfigError,
    ServerConfig,
    load_config,
    manifest_pool_config,
    parse_mount,
    pool_id_for,
)
from server.datadir import DataDirError
from server.gc_tuning import tune_for_server
from server.guard import GuardedSite, make_runner, raise_open_file_limit
from xen.config import PoolConfig

log = logging.getLogger("xo_migrate.main")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.config) if args.config else ServerConfig(data_dir=Path("data"))
        for mount in args.mount:
            prefix, sep, directory = mount.partition("=")
            if not sep:
                raise ConfigError(f"--mount {mount!r}: expected PREFIX=DIR")
            prefix, path = parse_mount(prefix, directory, Path.cwd())
            config.mounts[prefix] = path
    except ConfigError as exc:
        print(f"xo-migrate: {exc}", file=sys.stderr)
        return 2
    logfilter.install(config.log_burst, config.log_window_s)
    if args.host:
        config.host = args.host
    if args.port is not None:
        config.port = args.port
    tune_for_server()
    raise_open_file_limit()
    try:
        asyncio.run(serve(config, embedded_lab=not args.config, seed=getattr(args, "seed", None)))
    except KeyboardInterrupt:
        pass
    except DataDirError as exc:
        # A damaged, vanished or unwritable data dir: one line saying what to do.
        print(f"xo-migrate: {exc}", file=sys.stderr)
        return 1
    return 0


async def serve(config: ServerConfig, *, embedded_lab: bool, seed: int | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        examples: list[str] = []
        if embedded_lab:
            config.pools, examples = await _start_embedded_lab(stack, seed)
        app = build_app(config)
        runner = make_runner(app, config.connections, handle_signals=False, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = GuardedSite(
            runner, config.host, config.port, guard=app[GUARD], ssl_context=ssl_context(config)
        )
        await site.start()
        scheme = "https" if config.cert_file else "http"
        port = runner.addresses[0][1] if config.port == 0 else config.port  # --port 0: any
        url = f"{scheme}://{config.host}:{port}"
        log.info("event=listening url=%s data_dir=%s", url, config.data_dir)
        print(f"xo-migrate is listening on {url} (WebSocket {url.replace('http', 'ws', 1)}/api/)")
        print(f"connect with: xo-cli register {url} admin@admin.net admin")
        for prefix in config.mounts:
            print(f"web UI: {url}{prefix} (admin@admin.net / admin)")
        for line in examples:
            print(line)
        sys.stdout.flush()
        await stop.wait()
        log.info("event=shutting_down")


async def _start_embedded_lab(
    stack: contextlib.AsyncExitStack, seed: int | None = None
) -> tuple[list[PoolConfig], list[str]]:
    """The shipped lab in-process; returns its pools and a few commands to try on it (the
    lab's uuids change at every start unless `seed` or the lab's [server] seed is set)."""
    from xen.sim import Simulator, load_lab
    from xen.sim.main import DEFAULT_PORT

    sim: Any = Simulator(load_lab(), port=DEFAULT_PORT, seed=seed)
    try:
        await sim.start()
    except OSError:
        # Another simulator holds the usual port: any free port does, pools are found by id.
        await sim.stop()
        sim = Simulator(load_lab(), port=0, seed=seed)
        await sim.start()
    stack.push_async_callback(sim.stop)
    pools = [
        manifest_pool_config(
            pool,
            pool_id_for(f"embedded-lab:{pool['name']}"),  # lab uuids change per run
            allow_unauthorized=True,
        )
        for pool in sim.manifest()["pools"]
    ]
    log.info("event=embedded_lab pools=%s", ",".join(p.label for p in pools))
    return pools, _lab_examples(sim)


def _lab_examples(sim: Any) -> list[str]:
    def uuid_of(pool: str, cls: str, name: str) -> str:
        db = sim.pool(pool).db
        ref = db.find_one(cls, name_label=name)
        return str(db.get(cls, ref)["uuid"]) if ref else "?"

    db01, web01 = uuid_of("Pool A", "VM", "db-01"), uuid_of("Pool A", "VM", "web-01")
    a2, b1 = uuid_of("Pool A", "host", "a2"), uuid_of("Pool B", "host", "b1")
    return [
        "then try, on the simulated lab:",
        "  # web-01 to a2: the plan, explained, then the move (XenMotion: shared storage)",
        f"  xo-cli migration.plan vm={web01} targetHost={a2}",
        f"  xo-cli vm.migrate vm={web01} targetHost={a2}",
        "  # db-01 to Pool B with storage motion, defaults chosen for you (about 7 s)",
        f"  xo-cli vm.migrate_pool id={db01} target_host_id={b1}",
        "  # the queue and the history",
        "  xo-cli migration.getAll",
    ]
