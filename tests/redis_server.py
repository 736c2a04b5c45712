"""A real redis-server (Debian's) on a free loopback port with its own temporary directory, for
the tests and benchmarks that run xo-migrate on Redis; nothing is written to disk.

`REDIS_MISSING` says why none can be started here (None when one can)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
)
REDIS_MISSING = (
    None
    if REDIS_SERVER
    else "redis-server is not installed (Debian: apt-get install redis-server; .ci/run does)"
)


# url -> its redis-server, for the tests that stop it for a while (SIGSTOP / SIGCONT).
PROCESSES: dict[str, subprocess.Popen[bytes]] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Start redis-server; yield its URL (database 0); stop it at the end."""
    assert REDIS_SERVER is not None, REDIS_MISSING
    with tempfile.TemporaryDirectory(prefix="xom-redis-") as tmp:
        for _attempt in range(5):  # the free port may be taken meanwhile: another one
            port = _free_port()
            proc = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--databases",
                    "64",  # one per data dir of a test (tests/storage.py)
                    "--dir",
                    tmp,
                    "--logfile",
                    str(Path(tmp) / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 10
            while proc.poll() is None and time.monotonic() < deadline:
                if _answers(port):
                    break
                time.sleep(0.02)
            if proc.poll() is None and _answers(port):
                break
            proc.kill()
            proc.wait()
        else:
            raise RuntimeError(
                "redis-server did not start: " + (Path(tmp) / "redis.log").read_text()
            )
        url = f"redis://127.0.0.1:{port}/0"
        PROCESSES[url] = proc
        try:
            yield url
        finally:
            PROCESSES.pop(url, None)
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def flush(url: str) -> None:
    """Empty the database (between tests), over a plain socket."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"FLUSHALL\r\n")
        assert s.recv(16).startswith(b"+OK")
