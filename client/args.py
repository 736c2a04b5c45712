"""The client's subcommands on the `xo-migrate` command line (server/cli.py adds them next to
`serve` and `sim`). Only argparse here: building the parser imports nothing else."""

from __future__ import annotations

import argparse

COMMANDS = ("login", "ls", "plan", "migrate", "watch", "cancel", "history")


def _target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sr", help="target SR of every disk (name, uuid or prefix)")
    parser.add_argument(
        "--map-disk",
        action="append",
        default=[],
        metavar="DISK=SR",
        help="target SR of one disk (DISK: device such as xvda, name or uuid); repeatable",
    )
    parser.add_argument(
        "--map-vif",
        action="append",
        default=[],
        metavar="VIF=NET",
        help="target network of one network card (VIF: device number, MAC or uuid); repeatable",
    )
    parser.add_argument(
        "--network",
        "--migration-network",
        dest="network",
        help="network carrying the migration stream (default: the pool's, or management)",
    )
    parser.add_argument(
        "--force", action="store_true", help="migrate even if XAPI finds the CPUs incompatible"
    )


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, help=help_text, description=help_text
        )
        parser.add_argument("--json", action="store_true", help="JSON output, for scripts")
        return parser

    login = command("login", "log in to an xo-migrate server and store a token for the others")
    login.add_argument("url", metavar="URL", help="the server, e.g. http://127.0.0.1:8080")
    login.add_argument("--email", help="user (asked if not given)")
    login.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
    login.add_argument(
        "--allow-unauthorized", action="store_true", help="accept a self-signed certificate"
    )
    login.add_argument("--expires-in", help="token validity, e.g. '30 days' (server default)")

    ls = command("ls", "list VMs, hosts, pools or SRs")
    ls.add_argument("kind", nargs="?", default="vms", choices=("vms", "hosts", "pools", "srs"))
    ls.add_argument("pattern", nargs="?", help="only names matching this glob, e.g. 'web-*'")
    ls.add_argument("--pool", help="only in this pool")
    ls.add_argument("--host", help="only on this host (VMs: running there; SRs: local to it)")
    ls.add_argument("--power-state", help="only VMs or hosts in this power state, e.g. running")

    plan = command("plan", "explain what migrating VM to HOST would do, and whether XAPI agrees")
    plan.add_argument("vm", metavar="VM", help="name, uuid or unique prefix")
    plan.add_argument("host", metavar="HOST", help="target host: name, uuid or unique prefix")
    _target_options(plan)

    migrate = command("migrate", "migrate VMs to HOST and follow them live")
    migrate.add_argument("vms", metavar="VM", nargs="+", help="name, uuid or unique prefix")
    migrate.add_argument("host", metavar="HOST", help="target host: name, uuid or unique prefix")
    _target_options(migrate)
    migrate.add_argument(
        "--no-wait", action="store_true", help="print the migration ids and return at once"
    )

    watch = command("watch", "follow every live migration and the queue (Ctrl-C to stop)")
    watch.add_argument(
        "--once", action="store_true", help="show the live migrations once, do not follow"
    )

    cancel = command("cancel", "cancel a migration")
    cancel.add_argument("id", metavar="ID", help="migration id (or unique prefix), or its VM")

    history = command("history", "finished and live migrations, newest first")
    history.add_argument("--vm", help="only this VM's migrations (name, uuid or prefix)")
    history.add_argument("--since", help="only since then: 2h, 7d, or a date (2026-11-26)")
    history.add_argument("--limit", type=int, default=50, help="at most this many (50)")
