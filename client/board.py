"""Following migrations from their pushed `migration` objects, and showing them three ways.

`Board` keeps the latest state of each migration it follows (from `all` notifications and
`migration.get` answers) and tells its view what changed. Pushed frames and answers travel
separately on the socket, so an older state can arrive after a newer one: progress is kept
monotonic here and a terminal status is final.

Views: `RichView` (a live bar per migration: phase, %, bytes, rate, ETA, queue position),
`PlainView` (a line per status or phase change and every 10 %, for logs and pipes) and
`JsonView` (one JSON event per change, for scripts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from client import units
from client.output import JsonOutput, Output, RichOutput

TERMINAL = frozenset({"success", "failure", "cancelled", "interrupted"})
LIVE = frozenset({"queued", "running"})
EVENT_FIELDS = (
    "id",
    "vm",
    "vmName",
    "targetHost",
    "targetHostName",
    "mode",
    "status",
    "phase",
    "progress",
    "bytesDone",
    "bytesTotal",
    "rate",
    "eta",
    "queuePosition",
    "waitingFor",
)


def label(m: dict[str, Any]) -> str:
    return f"{m.get('vmName') or m.get('vm')} → {m.get('targetHostName') or m.get('targetHost')}"


def state_text(m: dict[str, Any]) -> str:
    status = m.get("status", "")
    if status == "queued":
        position = m.get("queuePosition")
        return f"queued #{position}" if position else "queued"
    if status == "running":
        waiting = m.get("waitingFor")
        return f"{m.get('phase')} (waiting: {waiting})" if waiting else str(m.get("phase"))
    return str(status)


def error_text(m: dict[str, Any]) -> tuple[str, str]:
    """(`CODE: message`, hint) of a failed migration."""
    error = m.get("error") or {}
    code, message = error.get("code") or "", error.get("message") or ""
    text = f"{code}: {message}" if code and code not in message else message or code
    return text or "no error given", str(error.get("hint") or "")


def outcome_text(m: dict[str, Any]) -> str:
    status = m.get("status")
    if status == "success":
        return f"success in {units.duration(m.get('duration'))} ({units.size(m.get('bytesTotal'))})"
    if status == "failure":
        return f"failure: {error_text(m)[0]}"
    return str(status)


def merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if old is None:
        return new
    if old.get("status") in TERMINAL:
        return old
    merged = dict(new)
    merged["progress"] = max(float(old.get("progress") or 0), float(new.get("progress") or 0))
    merged["bytesDone"] = max(int(old.get("bytesDone") or 0), int(new.get("bytesDone") or 0))
    return merged


class View:
    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def update(self, m: dict[str, Any]) -> None:
        raise NotImplementedError

    def message(self, text: str, style: str = "") -> None:
        raise NotImplementedError


class Board:
    """The followed migrations: `ids` given, or every live one (`watch`) when None."""

    def __init__(self, ids: Iterable[str] | None = None) -> None:
        self.view: View | None = None  # nothing is shown before `show`
        self.follow_all = ids is None
        self.wanted: set[str] = set(ids or ())
        self.migrations: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Event()
        self.settled = asyncio.Event()  # every wanted migration has ended

    def want(self, migration_id: str) -> None:
        self.wanted.add(migration_id)
        self.changed.set()

    def on_push(self, params: dict[str, Any]) -> None:
        """An `all` notification (the connection's listener)."""
        if params.get("type") != "enter":
            return
        for obj in (params.get("items") or {}).values():
            if isinstance(obj, dict) and obj.get("type") == "migration":
                self.offer(obj)

    def offer(self, m: dict[str, Any]) -> None:
        mid = m["id"]
        known = mid in self.migrations
        if not known and not self._wants(m):
            return
        merged = merge(self.migrations.get(mid), m)
        if merged is self.migrations.get(mid):
            return
        self.migrations[mid] = merged
        if self.view is not None and (self.follow_all or mid in self.wanted):
            self.view.update(merged)
        if self.wanted and self.all_done():
            self.settled.set()
        self.changed.set()

    def show(self, view: View) -> None:
        """Start showing on `view`, beginning with what is known so far."""
        self.view = view
        for m in self.followed():
            view.update(m)

    def _wants(self, m: dict[str, Any]) -> bool:
        return m["id"] in self.wanted or (self.follow_all and m.get("status") in LIVE)

    def followed(self) -> list[dict[str, Any]]:
        return [m for mid, m in self.migrations.items() if self.follow_all or mid in self.wanted]

    def all_done(self) -> bool:
        return all(self.migrations.get(mid, {}).get("status") in TERMINAL for mid in self.wanted)


class JsonView(View):
    """`{"event": "progress", ...}` per change, then `{"event": "finished", ..., "error"}`."""

    def __init__(self, out: JsonOutput) -> None:
        self.out = out
        self._last: dict[str, tuple[Any, ...]] = {}

    def update(self, m: dict[str, Any]) -> None:
        key = tuple(m.get(f) for f in EVENT_FIELDS)
        if self._last.get(m["id"]) == key:
            return
        self._last[m["id"]] = key
        event: dict[str, Any] = {"event": "progress", **{f: m.get(f) for f in EVENT_FIELDS}}
        self.out.event(event)
        if m.get("status") in TERMINAL:
            final = {**event, "event": "finished", "error": m.get("error")}
            final["duration"] = m.get("duration")
            self.out.event(final)

    def message(self, text: str, style: str = "") -> None:
        pass


class PlainView(View):
    """A line when the status, phase or queue position changes, and at every 10 %."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self._last: dict[str, tuple[Any, ...]] = {}

    def update(self, m: dict[str, Any]) -> None:
        progress = float(m.get("progress") or 0)
        key = (state_text(m), int(progress * 10))
        if self._last.get(m["id"]) == key:
            return
        self._last[m["id"]] = key
        if m.get("status") in TERMINAL:
            self.out.line(f"{label(m)}: {outcome_text(m)}")  # the hint goes to stderr
            return
        details = ""
        if m.get("status") == "running":
            details = (
                f" {progress * 100:.0f}% ({units.size(m.get('bytesDone'))} of "
                f"{units.size(m.get('bytesTotal'))}, {units.rate(m.get('rate'))}, "
                f"ETA {units.duration(m.get('eta'))})"
            )
        self.out.line(f"{label(m)}: {state_text(m)}{details}")

    def message(self, text: str, style: str = "") -> None:
        self.out.line(text, style)


class RichView(View):
    """A live bar per migration (rich.progress), refreshed 8 times a second."""

    def __init__(self, out: RichOutput) -> None:
        from rich.progress import BarColumn, Progress, TextColumn

        self.out = out
        self.progress = Progress(
            TextColumn("{task.description}"),
            TextColumn("{task.fields[state]}"),
            BarColumn(bar_width=30),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[bytes]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[eta]}"),
            console=out.console,
            refresh_per_second=8,
        )
        self._tasks: dict[str, Any] = {}

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.refresh()
        self.progress.stop()

    def update(self, m: dict[str, Any]) -> None:
        from rich.markup import escape

        status = m.get("status")
        fields: dict[str, Any] = {
            "state": _styled(state_text(m), status),
            "bytes": f"{units.size(m.get('bytesDone'))}/{units.size(m.get('bytesTotal'))}",
            "rate": units.rate(m.get("rate")) if status == "running" else "",
            "eta": f"ETA {units.duration(m.get('eta'))}" if status == "running" else "",
        }
        if status == "failure":
            fields["eta"] = escape(error_text(m)[0])
        task = self._tasks.get(m["id"])
        if task is None:
            task = self._tasks[m["id"]] = self.progress.add_task(
                escape(label(m)), total=1.0, **fields
            )
        self.progress.update(task, completed=float(m.get("progress") or 0), **fields)

    def message(self, text: str, style: str = "") -> None:
        self.progress.console.print(text, style=style, markup=False)


def _styled(text: str, status: Any) -> str:
    from rich.markup import escape

    style = {"success": "green", "failure": "bold red", "cancelled": "yellow"}.get(str(status))
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


def view_for(out: Output) -> View:
    if isinstance(out, JsonOutput):
        return JsonView(out)
    if isinstance(out, RichOutput):
        return RichView(out)
    return PlainView(out)
