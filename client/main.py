"""Run one client command: choose the output, run it on an event loop, turn the outcome into
an exit code (0 success, 1 failure, 2 usage, 130 interrupted)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from client import commands, follow
from client.errors import EXIT_FAILURE, EXIT_INTERRUPTED, CliError
from client.output import Output, choose

Command = Callable[[argparse.Namespace, Output], Coroutine[Any, Any, int]]

COMMANDS: dict[str, Command] = {
    "login": commands.login,
    "ls": commands.ls,
    "plan": commands.plan,
    "migrate": follow.migrate,
    "watch": follow.watch,
    "cancel": commands.cancel,
    "history": commands.history,
}


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    out = choose(args.json)
    try:
        return asyncio.run(COMMANDS[args.command](args, out))
    except CliError as exc:
        out.error(exc)
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say, and nowhere to say it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except KeyboardInterrupt:
        out.error(CliError("interrupted"))
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: say what, still with our exit code
        out.error(CliError(f"unexpected error: {type(exc).__name__}: {exc}"))
        return EXIT_FAILURE
