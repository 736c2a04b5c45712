"""`xo-migrate` command line: `serve` runs the API server, `sim` runs the XAPI simulator, and
the terminal client's commands (login, ls, plan, migrate, watch, cancel, history: client/)
talk to a running server."""

from __future__ import annotations

import argparse
import sys

from client.args import COMMANDS as CLIENT_COMMANDS
from client.args import add_commands as add_client_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xo-migrate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the xo-server compatible API server")
    serve.add_argument("--config", help="TOML config file (default: embedded simulated lab)")
    serve.add_argument("--host", help="listen address (overrides the config)")
    serve.add_argument("--port", type=int, help="listen port (overrides the config)")
    serve.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="PREFIX=DIR",
        help="serve DIR under the URL PREFIX, e.g. /=../shared/xo-web/dist for Xen Orchestra's "
        "web UI (added to the config's [http.mounts]; repeatable)",
    )
    serve.add_argument(
        "--seed", type=int, help="embedded lab only: the same uuids and refs at every start"
    )

    sim = sub.add_parser("sim", help="run the XAPI simulator on loopback addresses")
    sim.add_argument("--lab", help="lab TOML file (default: the shipped lab)")
    sim.add_argument("--port", type=int, default=None, help="port every host listens on")
    sim.add_argument("--manifest", help="write a JSON manifest of pools and hosts here")
    sim.add_argument("--time-scale", type=float, default=None, help="override timing.time_scale")
    sim.add_argument(
        "--https",
        action="store_true",
        default=None,
        help="serve TLS with a self-signed certificate per host (as real hosts on 443)",
    )
    sim.add_argument(
        "--seed",
        type=int,
        default=None,
        help="the same uuids and refs at every start (overrides the lab's [server] seed)",
    )

    add_client_commands(sub)  # argparse only: serve never imports the client (nor rich)

    args = parser.parse_args(argv)
    if args.command in CLIENT_COMMANDS:
        from client.main import run as run_client

        return run_client(args)
    if args.command == "sim":
        from xen.sim.main import run as run_sim

        return run_sim(args)
    from server.main import run as run_server

    return run_server(args)


if __name__ == "__main__":
    sys.exit(main())
