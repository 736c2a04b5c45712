"""Ctrl-C while following migrations: noticed on the event loop (not as KeyboardInterrupt in
the middle of anything), then, on a terminal, the question: cancel the migrations, stop
watching (they go on in the server), or resume watching."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator

QUESTION = (
    "\nInterrupted. [c] cancel the migration, [s] stop watching (it goes on), "
    "[r] resume watching? [s] "
)
ANSWERS = {"c": "cancel", "cancel": "cancel", "s": "stop", "stop": "stop", "": "stop"}
ANSWERS.update({"r": "resume", "resume": "resume", "w": "stop"})


@contextlib.contextmanager
def interrupts() -> Iterator[asyncio.Event]:
    """An event set by every SIGINT while the block runs (the default handler after)."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, event.set)
    try:
        yield event
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def can_ask() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


async def ask(again: asyncio.Event, settled: asyncio.Event) -> str:
    """'cancel', 'stop' or 'resume' from the person at the terminal; 'stop' on a second
    Ctrl-C or end of input; 'settled' if `settled` is set meanwhile (all migrations ended)."""
    while True:
        sys.stderr.write(QUESTION)
        sys.stderr.flush()
        again.clear()
        line = asyncio.ensure_future(_read_line())
        second = asyncio.ensure_future(again.wait())
        over = asyncio.ensure_future(settled.wait())
        try:
            await asyncio.wait({line, second, over}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (line, second, over):
                task.cancel()
        if over.done() and not over.cancelled():
            sys.stderr.write("\n")
            return "settled"
        if second.done() and not second.cancelled():
            sys.stderr.write("\n")
            return "stop"
        text = line.result() if line.done() and not line.cancelled() else None
        if text is None:
            return "stop"  # end of input
        answer = ANSWERS.get(text.strip().lower())
        if answer is not None:
            return answer
        sys.stderr.write("please answer c, s or r\n")


async def _read_line() -> str | None:
    """One line of stdin without blocking the loop (the terminal is in line mode)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str | None] = loop.create_future()
    fd = sys.stdin.fileno()

    def readable() -> None:
        line = sys.stdin.readline()
        if not future.done():
            future.set_result(line if line else None)

    loop.add_reader(fd, readable)
    try:
        return await future
    finally:
        loop.remove_reader(fd)
