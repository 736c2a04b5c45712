"""`xo-migrate sim`: run the simulated lab until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from pathlib import Path
from typing import Any

from xen.sim.lab import LabError, load_lab
from xen.sim.simulator import Simulator

DEFAULT_PORT = 4430


def describe(sim: Simulator) -> str:
    m = sim.manifest()
    seed = "" if sim.seed is None else f", seed {sim.seed}"
    lines = [f"XAPI simulator on port {m['port']} (time scale {sim.timing.time_scale}{seed})"]
    for pool in m["pools"]:
        lines.append(
            f"  {pool['name']}: master {pool['master']} ({pool['username']} / {pool['password']})"
        )
        if "ca_file" in pool:
            lines.append(f"    self-signed certificates of its hosts: {pool['ca_file']}")
        for host in pool["hosts"]:
            lines.append(f"    {host['name']:<8} {host['address']:<12} {host['uuid']}")
    return "\n".join(lines)


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(manifest, indent=2) + "\n")


async def serve(args: argparse.Namespace, stop: asyncio.Event | None = None) -> None:
    lab = load_lab(args.lab)
    port = args.port if args.port is not None else DEFAULT_PORT
    # --https forces TLS on; without it the lab file's [server] https decides.
    https = True if getattr(args, "https", None) else None
    # --seed overrides the lab file's [server] seed; neither: random uuids and refs.
    seed = getattr(args, "seed", None)
    sim = Simulator(lab, port=port, time_scale=args.time_scale, https=https, seed=seed)
    await sim.start()
    try:
        if args.manifest:
            write_manifest(Path(args.manifest), sim.manifest())
        print(describe(sim), flush=True)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await sim.stop()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        asyncio.run(serve(args))
    except LabError as exc:
        print(f"bad lab file: {exc}")
        return 2
    except OSError as exc:
        print(f"cannot listen: {exc}")
        return 1
    except KeyboardInterrupt:
        pass
    return 0
