"""One `xo-migrate` entry point: the server's commands never load the client's code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from server.cli import main


def test_serve_imports_neither_the_client_nor_rich() -> None:
    code = (
        "import sys, server.cli, server.main, server.app\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'rich' or m.startswith("
        "('client.main', 'client.commands', 'client.follow'))]\n"
        "print(loaded)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_client_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["migrate", "web-01"], ["ls", "vdis"], ["history", "--limit", "x"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert f"xo-migrate {argv[0]}: error:" in capsys.readouterr().err
