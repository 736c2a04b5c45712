"""Thread-side XenAPI plumbing: sessions with per-connection timeouts and abortable sockets.

Everything here blocks and runs in a worker thread, never on the event loop. A `XenAPI.Session`
is not thread-safe, so each one is used by exactly one thread; `abort()` is the only method
meant to be called from another thread (it unblocks a long-poll on shutdown).
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import xmlrpc.client
from dataclasses import dataclass
from typing import Any

import XenAPI

from xen.errors import XapiError
from xen.wire import prepare_arg, url_host

log = logging.getLogger("xo_migrate.xen.session")

ORIGINATOR = "xo-migrate"


class TimeoutTransportMixin:
    """Gives every HTTP connection of one transport a socket timeout and lets another thread
    abort the connection in use (shutdown wakes a thread blocked in recv)."""

    timeout: float
    _abort_lock: threading.Lock
    _live_conn: http.client.HTTPConnection | None
    aborted: bool = False

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        # xmlrpc.client retries a request once on a dropped connection: after abort() that
        # retry must fail instead of starting a new long-poll.
        if self.aborted:
            raise ConnectionAbortedError("request aborted")
        conn = super().make_connection(host)  # type: ignore[misc]
        conn.timeout = self.timeout
        if conn.sock is not None:
            conn.sock.settimeout(self.timeout)
        with self._abort_lock:
            self._live_conn = conn
        return conn

    def abort(self) -> None:
        with self._abort_lock:
            self.aborted = True
            conn = self._live_conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class TimeoutTransport(TimeoutTransportMixin, xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout
        self._abort_lock = threading.Lock()
        self._live_conn = None


# The mixin's make_connection returns what SafeTransport makes (an HTTPSConnection); typeshed
# cannot express "same as the other base", hence the ignore.
class TimeoutSafeTransport(TimeoutTransportMixin, xmlrpc.client.SafeTransport):  # type: ignore[misc]
    def __init__(self, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self.timeout = timeout
        self._abort_lock = threading.Lock()
        self._live_conn = None


@dataclass(slots=True, frozen=True)
class Credentials:
    username: str
    password: str = ""  # never logged: __repr__ hides it

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r})"


@dataclass(slots=True, frozen=True)
class TlsOptions:
    allow_unauthorized: bool = False
    ca_file: str = ""

    def context(self) -> ssl.SSLContext:
        """TlsFailed when `ca_file` cannot be loaded (missing, not PEM)."""
        if self.allow_unauthorized:
            return ssl._create_unverified_context()
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file or None)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise TlsFailed(f"cannot load ca_file {self.ca_file}: {exc}") from None
        if self.ca_file:
            # A pinned XAPI certificate names the host by IP or by a name we do not use.
            ctx.check_hostname = False
        return ctx

    def failure(self, url: str, exc: ssl.SSLError) -> TlsFailed | None:
        """The TlsFailed to raise for `exc`, None when it is a transient TLS error (a host
        that vanished mid-handshake) to be handled like any broken connection."""
        host = url_host(url)
        if isinstance(exc, ssl.SSLCertVerificationError):
            reason = exc.verify_message or exc.reason or str(exc)
            if self.ca_file:
                return TlsFailed(
                    f"TLS certificate of {host} rejected: {reason}; it is not signed by a"
                    f" certificate of ca_file {self.ca_file}"
                )
            return TlsFailed(
                f"TLS certificate of {host} rejected: {reason}; XAPI hosts use self-signed"
                " certificates: set allowUnauthorized, or pin them with ca_file"
            )
        if exc.reason in ("WRONG_VERSION_NUMBER", "UNSUPPORTED_PROTOCOL", "RECORD_LAYER_FAILURE"):
            return TlsFailed(f"TLS handshake with {host} failed ({exc.reason}): is it https?")
        return None


class HostIsSlave(Exception):
    """The host we talked to is a pool supporter; `master` is the address it points to."""

    def __init__(self, master: str) -> None:
        self.master = master
        super().__init__(f"HOST_IS_SLAVE({master})")


class AuthFailed(Exception):
    """SESSION_AUTHENTICATION_FAILED: wrong credentials, never retried in a tight loop."""


class TlsFailed(Exception):
    """The host's TLS certificate is not trusted (or it does not speak TLS, or ca_file is
    unusable): a configuration error, retried slowly like wrong credentials, never in a loop.
    Not an OSError on purpose: it must not pass for a transient connection failure."""


class XapiSession:
    """One logged-in XenAPI session bound to one URL, used by one thread at a time."""

    def __init__(self, url: str, creds: Credentials, tls: TlsOptions, timeout: float) -> None:
        self.url = url
        self._creds = creds
        self._tls = tls
        if url.startswith("https:"):
            self._transport: TimeoutTransport | TimeoutSafeTransport = TimeoutSafeTransport(
                timeout, tls.context()
            )
        else:
            self._transport = TimeoutTransport(timeout)
        self._session = XenAPI.Session(url, transport=self._transport)
        self.logged_in = False

    def login(self) -> None:
        try:
            self._session.login_with_password(
                self._creds.username, self._creds.password, "1.1", ORIGINATOR
            )
        except XenAPI.Failure as exc:
            raise translate_failure(exc.details, "session.login_with_password") from None
        except ssl.SSLError as exc:
            raise self._tls.failure(self.url, exc) or exc from None
        self.logged_in = True

    def call(self, method: str, args: tuple[Any, ...]) -> Any:
        """A call with the session prepended; the binding re-logs in on SESSION_INVALID."""
        params = tuple(prepare_arg(a) for a in args)
        try:
            return self._session.xenapi_request(method, params)
        except XenAPI.Failure as exc:
            raise translate_failure(exc.details, method) from None
        except xmlrpc.client.Fault as exc:
            raise XapiError(
                "XMLRPC_FAULT", [str(exc.faultCode), exc.faultString], call={"method": method}
            ) from None
        except ssl.SSLError as exc:  # a new connection (after a drop) met a bad certificate
            raise self._tls.failure(self.url, exc) or exc from None

    def logout(self) -> None:
        if not self.logged_in:
            return
        self.logged_in = False
        try:
            self._session.xenapi.session.logout()
        except Exception as exc:  # best effort: the host may be gone
            log.debug("event=logout_failed url=%s error=%r", self.url, exc)

    def abort(self) -> None:
        """From another thread: break a blocked request (e.g. an event.from long-poll)."""
        self._transport.abort()

    def close(self) -> None:
        """Drop the HTTP connection (a later call opens a new one, even after abort())."""
        self._transport.close()
        self._transport.aborted = False


def translate_failure(details: list[Any], method: str) -> Exception:
    details = [str(d) for d in details] or ["UNKNOWN_ERROR"]
    code, params = details[0], details[1:]
    if code == "HOST_IS_SLAVE" and params:
        return HostIsSlave(params[0])
    if code == "SESSION_AUTHENTICATION_FAILED":
        return AuthFailed(f"SESSION_AUTHENTICATION_FAILED({', '.join(params)})")
    return XapiError(code, params, call={"method": method})


# Transport-level failures: the host did not answer, the call is worth retrying elsewhere.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    http.client.HTTPException,
    xmlrpc.client.ProtocolError,
)
