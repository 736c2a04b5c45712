"""The client's errors and the exit codes they map to."""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """Stops the command: `message` (and `hint`) on stderr, `exit_code` for the shell."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.hint = hint


class UsageError(CliError):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, EXIT_USAGE, hint)


class RpcError(CliError):
    """An error answered by the server, in xo-server's shape ({code, message, data})."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.error = error
        self.code = error.get("code")
        data = error.get("data")
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}
        message = str(error.get("message") or "error")
        xapi_code = self.data.get("code")
        if isinstance(xapi_code, str) and xapi_code not in message:
            message = f"{xapi_code}: {message}"
        reason = self.data.get("reason")  # forbidden operation: why
        if isinstance(reason, str) and reason:
            message = f"{message} ({reason})"
        details = [
            f"{'.'.join(str(p) for p in e.get('loc') or [])}: {e.get('msg')}"
            for e in self.data.get("errors") or []
            if isinstance(e, dict)
        ]
        if details:  # invalid parameters: which, and why
            message = f"{message}: {'; '.join(details)}"
        super().__init__(message, EXIT_FAILURE, str(self.data.get("hint") or ""))
