"""Three ways of showing a command's result: `RichOutput` (stdout is a terminal: colours,
boxed tables), `PlainOutput` (a pipe or a file: aligned text, one fact per line, nothing
moving) and `JsonOutput` (`--json`: only the data, for scripts). Commands call all the
methods; each output keeps what it shows (JSON ignores the human text, the others the data).

rich is imported only by `RichOutput`, so plain and JSON runs never pay for it.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from client.errors import CliError

# Styles named by meaning; rich renders them, plain text drops them.
STYLES = {"ok": "green", "bad": "bold red", "warn": "yellow", "dim": "dim", "head": "bold"}


class Output:
    json = False

    def __init__(self, stream: TextIO | None = None, err: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.err = err or sys.stderr

    def heading(self, text: str) -> None:
        raise NotImplementedError

    def facts(self, rows: list[tuple[str, str]]) -> None:
        raise NotImplementedError

    def table(self, columns: list[str], rows: list[list[str]], title: str = "") -> None:
        raise NotImplementedError

    def line(self, text: str, style: str = "") -> None:
        raise NotImplementedError

    def data(self, value: Any) -> None:
        """The machine-readable result (shown by JsonOutput only)."""

    def error(self, exc: CliError) -> None:
        print(f"xo-migrate: {exc.message}", file=self.err)
        if exc.hint:
            print(f"hint: {exc.hint}", file=self.err)
        self.err.flush()


class PlainOutput(Output):
    def heading(self, text: str) -> None:
        print(f"\n{text}", file=self.stream)

    def facts(self, rows: list[tuple[str, str]]) -> None:
        width = max((len(k) for k, _ in rows), default=0)
        for key, value in rows:
            print(f"{key + ':':<{width + 1}} {value}", file=self.stream)

    def table(self, columns: list[str], rows: list[list[str]], title: str = "") -> None:
        if title:
            print(f"\n{title}", file=self.stream)
        cells = [[c.upper() for c in columns], *rows]
        widths = [max(len(str(r[i])) for r in cells) for i in range(len(columns))]
        for row in cells:
            text = "  ".join(f"{v!s:<{w}}" for v, w in zip(row, widths, strict=True))
            print(text.rstrip(), file=self.stream)

    def line(self, text: str, style: str = "") -> None:
        print(text, file=self.stream)
        self.stream.flush()


class JsonOutput(Output):
    json = True

    def heading(self, text: str) -> None:
        pass

    def facts(self, rows: list[tuple[str, str]]) -> None:
        pass

    def table(self, columns: list[str], rows: list[list[str]], title: str = "") -> None:
        pass

    def line(self, text: str, style: str = "") -> None:
        pass

    def data(self, value: Any) -> None:
        self.event(value)

    def event(self, value: Any) -> None:
        """One JSON document per line (`migrate --json` writes one per progress event)."""
        print(json.dumps(value, separators=(",", ":"), sort_keys=True), file=self.stream)
        self.stream.flush()


class RichOutput(Output):
    def __init__(self, stream: TextIO | None = None, err: TextIO | None = None) -> None:
        super().__init__(stream, err)
        from rich.console import Console

        self.console = Console(file=self.stream, highlight=False)
        self.err_console = Console(file=self.err, highlight=False)

    def heading(self, text: str) -> None:
        self.console.print()
        self.console.print(text, style=STYLES["head"], markup=False)

    def facts(self, rows: list[tuple[str, str]]) -> None:
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold cyan", no_wrap=True)
        grid.add_column()
        for key, value in rows:
            grid.add_row(key, value)
        self.console.print(grid)

    def table(self, columns: list[str], rows: list[list[str]], title: str = "") -> None:
        from rich.table import Table

        table = Table(*columns, title=title or None, header_style="bold", title_justify="left")
        for row in rows:
            table.add_row(*(str(v) for v in row))
        self.console.print(table)

    def line(self, text: str, style: str = "") -> None:
        self.console.print(text, style=STYLES.get(style, ""), markup=False)

    def error(self, exc: CliError) -> None:
        self.err_console.print(f"xo-migrate: {exc.message}", style="bold red", markup=False)
        if exc.hint:
            self.err_console.print(f"hint: {exc.hint}", style="yellow", markup=False)


def choose(json_mode: bool, stream: TextIO | None = None) -> Output:
    stream = stream or sys.stdout
    if json_mode:
        return JsonOutput(stream)
    if stream.isatty():
        return RichOutput(stream)
    return PlainOutput(stream)
