"""`make bench`: run every benchmark module of bench/ and print one table with the date.

Each module (a bench/*.py not starting with "_") exposes `run() -> list[dict]`, rows
{name, value, unit, target?, op?, ok?}. Each runs in its own interpreter (a fresh heap and fd
table, and a hard time limit), which prints its rows as JSON on stdout; the benchmarks' own
notes go to stderr. Exit status 0 only if every benchmark ran and met every target.

    python -m bench                 # all of them
    python -m bench rpc fanout      # some of them
"""

from __future__ import annotations

import datetime
import json
import os
import pkgutil
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
MARKER = "@@bench-rows@@"
# Preferred order; any other module found in bench/ runs after these.
ORDER = (
    "rpc",
    "fanout",
    "xapi_calls",
    "scale",
    "large_pools",
    "batch",
    "conn_memory",
    "sim_throughput",
    "cluster",
)
TIME_LIMIT_S = {
    "rpc": 60,
    "fanout": 60,
    "xapi_calls": 60,
    "scale": 90,
    "large_pools": 150,
    "batch": 90,
    "sim_throughput": 60,
    "cluster": 150,
}
DEFAULT_LIMIT_S = 60

_CHILD = f"""
import importlib, json, sys
rows = importlib.import_module("bench." + sys.argv[1]).run()
sys.stdout.write("\\n{MARKER}" + json.dumps(rows) + "\\n")
"""


def modules() -> list[str]:
    found = {m.name for m in pkgutil.iter_modules([str(BENCH_DIR)]) if not m.name.startswith("_")}
    return [m for m in ORDER if m in found] + sorted(found - set(ORDER))


def run_module(name: str) -> tuple[list[dict[str, Any]], str | None]:
    """The module's rows, and an error message if it failed."""
    limit = TIME_LIMIT_S.get(name, DEFAULT_LIMIT_S)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, name],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a timeout ends its children too
    )
    try:
        out, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return [], f"timed out after {limit} s"
    for line in reversed(out.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER) :]), None
    return [], f"exit status {proc.returncode}, no result"


def _value(r: dict[str, Any]) -> str:
    value = r["value"]
    if isinstance(value, float) and value.is_integer() and abs(value) >= 100:
        value = int(value)
    return f"{value} {r['unit']}"


def print_table(results: list[tuple[str, list[dict[str, Any]], str | None, float]]) -> bool:
    lines = [("figure", "value", "target", "met?")]
    all_ok = True
    for name, rows, error, _seconds in results:
        if error is not None:
            lines.append((f"{name}: FAILED ({error})", "-", "-", "NO"))
            all_ok = False
        for r in rows:
            target = f"{r.get('op', '')} {r['target']} {r['unit']}".strip() if "target" in r else ""
            met = "" if "ok" not in r else ("yes" if r["ok"] else "NO")
            all_ok = all_ok and r.get("ok", True)
            lines.append((r["name"], _value(r), target, met))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    for i, line in enumerate(lines):
        print(
            f"| {line[0]:<{widths[0]}} | {line[1]:>{widths[1]}} "
            f"| {line[2]:<{widths[2]}} | {line[3]:<{widths[3]}} |"
        )
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return all_ok


def main(argv: list[str]) -> int:
    names = argv or modules()
    started = time.monotonic()
    results = []
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        rows, error = run_module(name)
        seconds = time.monotonic() - t0
        print(f"bench: {name} done in {seconds:.1f} s", file=sys.stderr, flush=True)
        results.append((name, rows, error, seconds))
    total = time.monotonic() - started
    now = datetime.datetime.now().astimezone()
    print()
    print(
        f"xo-migrate benchmarks, {now:%Y-%m-%d %H:%M %Z}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {total:.0f} s in all "
        f"({', '.join(f'{n} {s:.0f} s' for n, _, _, s in results)})"
    )
    print()
    ok = print_table(results)
    print()
    print("every target met" if ok else "some targets MISSED (or a benchmark failed)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
