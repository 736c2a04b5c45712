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
import urllib.parse
import xmlrpc.client
from dataclasses import dataclass
from typing import Any

import orjson
import XenAPI

from xen import bulk_json
from xen.errors import XapiError, XapiHttpError
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


class JsonRpcUnsupported(Exception):
    """The host has no JSON-RPC endpoint (XAPI older than XenServer 7.3): use XML-RPC."""


class JsonRpcChannel:
    """XAPI's JSON-RPC endpoint (`POST /jsonrpc`, the one xo-server uses) on one kept-alive
    connection, abortable from another thread like the XML-RPC transports. Only for calls
    whose answers are big: parsing JSON costs a small fraction of XML-RPC (a 10,000-VM
    `event.from` snapshot: 1.4 s of CPU instead of 21 s)."""

    def __init__(self, url: str, timeout: float, context: ssl.SSLContext | None) -> None:
        parsed = urllib.parse.urlsplit(url)
        self._host = parsed.hostname or ""
        self._port = parsed.port
        self._https = parsed.scheme == "https"
        self._timeout = timeout
        self._context = context
        self._lock = threading.Lock()
        self._conn: http.client.HTTPConnection | None = None
        self._ids = 0
        self.aborted = False

    def call(self, method: str, params: list[Any]) -> Any:
        """The result; XenAPI.Failure for a XAPI error, as the XML-RPC binding raises."""
        self._ids += 1
        body = orjson.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": self._ids})
        conn = self._connection()
        try:
            conn.request("POST", "/jsonrpc", body, {"Content-Type": "application/json"})
            reply = conn.getresponse()
            data = reply.read()
        except BaseException:
            self.close()
            raise
        if reply.status == 404 or "json" not in (reply.getheader("Content-Type") or ""):
            self.close()
            raise JsonRpcUnsupported(f"HTTP {reply.status} from /jsonrpc")
        try:
            answer = bulk_json.loads(data)  # a huge answer in pieces: the loop keeps running
        except orjson.JSONDecodeError as exc:
            raise http.client.HTTPException(f"invalid JSON-RPC answer: {exc}") from None
        error = answer.get("error") if isinstance(answer, dict) else None
        if error:
            if isinstance(error, dict):
                raise XenAPI.Failure([error.get("message", ""), *(error.get("data") or [])])
            raise XenAPI.Failure(list(error) if isinstance(error, list) else [str(error)])
        return answer.get("result")

    def _connection(self) -> http.client.HTTPConnection:
        with self._lock:
            if self.aborted:
                raise ConnectionAbortedError("request aborted")
            if self._conn is None:
                if self._https:
                    self._conn = http.client.HTTPSConnection(
                        self._host, self._port, timeout=self._timeout, context=self._context
                    )
                else:
                    self._conn = http.client.HTTPConnection(
                        self._host, self._port, timeout=self._timeout
                    )
            return self._conn

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            sock = self._conn.sock if self._conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class XapiSession:
    """One logged-in XenAPI session bound to one URL, used by one thread at a time."""

    def __init__(self, url: str, creds: Credentials, tls: TlsOptions, timeout: float) -> None:
        self.url = url
        self._creds = creds
        self._tls = tls
        context = tls.context() if url.startswith("https:") else None
        if context is not None:
            self._transport: TimeoutTransport | TimeoutSafeTransport = TimeoutSafeTransport(
                timeout, context
            )
        else:
            self._transport = TimeoutTransport(timeout)
        self._session = XenAPI.Session(url, transport=self._transport)
        self._json: JsonRpcChannel | None = JsonRpcChannel(url, timeout, context)
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

    def call_bulk(self, method: str, args: tuple[Any, ...]) -> Any:
        """`call` for answers that can be huge (event.from): over XAPI's JSON-RPC endpoint
        when the host has one, else XML-RPC. Ints come back as numbers and datetimes as
        strings there: the readers of these answers take both."""
        if self._json is None:
            return self.call(method, args)
        for attempt in (1, 2):
            try:
                return self._json.call(method, [self._session._session, *args])
            except JsonRpcUnsupported as exc:
                log.info("event=jsonrpc_unsupported url=%s reason=%s", url_host(self.url), exc)
                self._json = None
                return self.call(method, args)
            except XenAPI.Failure as exc:
                details = [str(d) for d in exc.details]
                if details[:1] == ["SESSION_INVALID"] and attempt == 1:
                    self.login()  # as the XML-RPC binding does on SESSION_INVALID
                    continue
                raise translate_failure(details, method) from None
            except ssl.SSLError as exc:
                raise self._tls.failure(self.url, exc) or exc from None
        raise AssertionError("unreachable")

    def http_get(self, base_url: str, path: str, query: dict[str, str], timeout: float) -> bytes:
        """GET `path` on the host at `base_url` (a member of this session's pool, whose HTTP
        handlers take the pool's sessions) with `session_id` appended to `query`, as
        xen-api's getResource does. XapiHttpError for an answer other than 200; a 401
        (session no longer valid) logs in again and retries once. The URL, which holds the
        session id, is never logged."""
        parsed = urllib.parse.urlsplit(base_url)
        context = self._tls.context() if parsed.scheme == "https" else None
        for attempt in (1, 2):
            if not self.logged_in:
                self.login()
            target = path + "?" + urllib.parse.urlencode({**query, "session_id": self._ref()})
            conn: http.client.HTTPConnection
            if context is not None:
                conn = http.client.HTTPSConnection(
                    parsed.hostname or "", parsed.port, timeout=timeout, context=context
                )
            else:
                conn = http.client.HTTPConnection(
                    parsed.hostname or "", parsed.port, timeout=timeout
                )
            try:
                conn.request("GET", target)
                reply = conn.getresponse()
                body = reply.read()
            except ssl.SSLError as exc:
                raise self._tls.failure(base_url, exc) or exc from None
            finally:
                conn.close()
            if reply.status == 200:
                return body
            if reply.status == 401 and attempt == 1:
                self.logged_in = False
                continue
            raise XapiHttpError(url_host(base_url), path, reply.status, body[:200])
        raise AssertionError("unreachable")

    def _ref(self) -> str:
        ref = self._session._session
        return ref if isinstance(ref, str) else ""

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
        if self._json is not None:
            self._json.abort()

    def close(self) -> None:
        """Drop the HTTP connections (a later call opens new ones, even after abort())."""
        self._transport.close()
        self._transport.aborted = False
        if self._json is not None:
            self._json.close()
            self._json.aborted = False


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
