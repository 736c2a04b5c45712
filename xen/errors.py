"""Errors raised by the XAPI client layer, carrying XAPI's own code and params."""

from __future__ import annotations

from typing import Any


class XapiError(Exception):
    """A XAPI failure: `code` is ErrorDescription[0], `params` the rest (all strings).

    `task` holds the XAPI task record (xo-server shape) when the failure came from an async
    task, `call` the `{method, params}` of a synchronous call.
    """

    def __init__(
        self,
        code: str,
        params: list[str] | None = None,
        *,
        task: dict[str, Any] | None = None,
        call: dict[str, Any] | None = None,
    ) -> None:
        self.code = code
        self.params = list(params or [])
        self.task = task
        self.call = call
        super().__init__(f"{code}({', '.join(self.params)})")


class TaskCancelled(XapiError):
    """The XAPI task ended with status `cancelled` (error_info may be empty)."""

    def __init__(self, task_ref: str = "", *, task: dict[str, Any] | None = None) -> None:
        super().__init__("TASK_CANCELLED", [task_ref] if task_ref else [], task=task)


class PoolUnavailable(Exception):
    """No live connection to the pool (connecting, disconnected or disabled)."""

    def __init__(self, pool: str, reason: str = "") -> None:
        self.pool = pool
        self.reason = reason
        super().__init__(f"pool {pool} is not connected{': ' + reason if reason else ''}")


class XapiHttpError(Exception):
    """An HTTP resource of a host (`/rrd_updates` ...) answered with an error status."""

    def __init__(self, host: str, path: str, status: int, body: bytes = b"") -> None:
        self.host = host
        self.path = path
        self.status = status
        detail = body.decode("utf-8", "replace").strip()
        super().__init__(
            f"GET {path} on {host}: HTTP {status}" + (f" ({detail})" if detail else "")
        )
