"""One persistent, self-healing connection to one XAPI pool (xapi.md 1.5, 1.6, 8.2).

Threads (the XenAPI binding is blocking and not thread-safe):
- one dedicated thread owns the event session and runs the `event.from` long-poll;
- a bounded pool of worker threads runs `call()`s, each thread with its own session, logged in
  on first use and kept (the binding re-logs in by itself on SESSION_INVALID).

A supervisor coroutine finds the master (following HOST_IS_SLAVE, probing the other hosts the
cache knows when the master stops answering), logs in, syncs the cache with `event.from("")`
and then streams changes; any failure sends it back to reconnecting with capped exponential
backoff. Wrong credentials are retried slowly a bounded number of times, then given up.

XAPI cost: initial sync = 1 login + 1 event.from; idle = only event.from long-polls;
`call_async` = the Async call + task.destroy (the wait reads the event stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from xen.cache import PoolCache, TaskWatch
from xen.config import PoolConfig
from xen.errors import PoolUnavailable, TaskCancelled, XapiError
from xen.memo import TtlMemo
from xen.session import (
    TRANSPORT_ERRORS,
    AuthFailed,
    Credentials,
    HostIsSlave,
    TlsFailed,
    TlsOptions,
    XapiSession,
)
from xen.store import ObjectStore, XoObject
from xen.threads import ThreadRunner
from xen.wire import decode_task_result, member_url, url_host
from xen.xo_shape import FOLLOWED

log = logging.getLogger("xo_migrate.xen.pool")

Status = Literal["connected", "connecting", "disconnected"]

# Classes the cache follows: what migrations and the xo-server object views need.
# What the event stream carries: every published class and what their tables read.
MIGRATION_CLASSES: tuple[str, ...] = FOLLOWED

_MAX_REDIRECTS = 4  # HOST_IS_SLAVE hops while looking for the master

# Told of every XAPI call a connection made: (pool label, method, seconds, error), the error
# being the XAPI code or the exception's class name, None on success. `call_async` operations
# are also told under their own method name (`VM.migrate_send`: the task's outcome and
# duration) besides their `Async.` dispatch call. Runs on the event loop; it must be quick and
# must not raise. The server's metrics plug in here (xen/ knows nothing of them); a call
# cancelled by its caller is not reported.
CallObserver = Callable[[str, str, float, str | None], None]


@dataclass(slots=True)
class ConnectionOptions:
    workers: int = 4  # worker threads (and sessions) per pool for call()
    event_timeout: float = 60.0  # event.from long-poll, seconds (XAPI-side)
    socket_margin: float = 15.0  # socket timeout = event_timeout + margin for the event session
    call_timeout: float = 300.0  # socket timeout of worker calls
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    auth_retry_interval: float = 60.0  # after SESSION_AUTHENTICATION_FAILED
    auth_max_attempts: int = 5  # then give up until enable()/re-add
    call_wait: float = 5.0  # how long call() waits for a pool that is reconnecting
    cancel_grace: float = 5.0  # after task.cancel, how long to wait for the task to settle
    destroy_wait: float = 120.0  # how long a task.destroy waits for a pool that is reconnecting
    close_timeout: float = 2.0  # how long aclose() waits for threads (logouts)
    classes: tuple[str, ...] = MIGRATION_CLASSES
    observer: CallObserver | None = None
    # Wraps every full sync (the snapshot's fetch, parse and load into the cache): the process
    # owner may manage its memory around it (server/gc_tuning.py keeps the collector off
    # during it and freezes the long-lived cache after).
    full_sync: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext


class PoolConnection:
    def __init__(
        self, cfg: PoolConfig, store: ObjectStore, options: ConnectionOptions | None = None
    ) -> None:
        self.cfg = cfg
        self.options = options or ConnectionOptions()
        self.cache = PoolCache(store, cfg.label or cfg.url, self.options.classes)
        self.status: Status = "disconnected"
        self.last_error: str | None = None
        self.master_url: str = cfg.url  # read by worker threads; str assignment is atomic
        self._creds = Credentials(cfg.username, cfg.resolved_password())
        self._tls = TlsOptions(cfg.allow_unauthorized, cfg.ca_file)
        # Short-lived answers of this pool (xo-server's TTL caches around XAPI reads).
        self.memo = TtlMemo()
        self._ready = asyncio.Event()
        self._was_ready = False  # reached "connected" since the last failure
        self._generation = 0  # completed initial syncs, to notice a reconnect
        self._stopped = False
        self._supervisor: asyncio.Task[None] | None = None
        self._cleanups: set[asyncio.Task[None]] = set()  # tasks left behind by cancelled calls
        self._event_session: XapiSession | None = None
        self._login_session: XapiSession | None = None  # being logged in, abortable
        self._suspect_urls: set[str] = set()
        self._tls_sessions = threading.local()
        self._events = ThreadRunner(f"xapi-events-{cfg.id[:8]}", 1, self._logout_event_session)
        self._workers = ThreadRunner(
            f"xapi-calls-{cfg.id[:8]}", self.options.workers, self._logout_worker_session
        )

    # -- public surface ----------------------------------------------------------------

    @property
    def pool_id(self) -> str | None:
        return self.cache.pool_id

    @property
    def label(self) -> str:
        return self.cfg.label or self.cfg.url

    def start(self) -> None:
        if self._supervisor is None:
            self.status = "connecting"
            self._supervisor = asyncio.create_task(
                self._supervise(), name=f"pool-connection-{self.cfg.id}"
            )

    async def aclose(self) -> None:
        """Stop the supervisor, unblock the long-poll, log out every session."""
        self._stopped = True
        # Unblock the threads first: cancelling the supervisor forgets the login in flight.
        for session in (self._event_session, self._login_session):
            if session is not None:
                session.abort()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        cleanups = list(self._cleanups)
        if cleanups:
            # Give abandoned XAPI tasks a chance to be cancelled/destroyed, then stop waiting.
            await asyncio.wait(cleanups, timeout=self.options.close_timeout)
            for cleanup in cleanups:
                cleanup.cancel()
            await asyncio.gather(*cleanups, return_exceptions=True)
        self.cache.fail_watches(PoolUnavailable(self.label, "connection closed"))
        self._ready.clear()
        self.status = "disconnected"
        timeout = self.options.close_timeout
        results = await asyncio.gather(self._events.aclose(timeout), self._workers.aclose(timeout))
        if not all(results):
            log.warning("event=pool_threads_abandoned pool=%s", self.label)

    async def wait_ready(self, timeout: float) -> None:
        """Wait until connected with a complete cache; PoolUnavailable after `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            raise PoolUnavailable(self.label, self.last_error or self.status) from None

    async def call(self, method: str, *args: Any) -> Any:
        """`method(session, *args)` on the master; XapiError on a XAPI failure."""
        for _attempt in range(3):
            if self._stopped:
                raise PoolUnavailable(self.label, "connection closed")
            if not self._ready.is_set():
                if self._stopped or self.status == "disconnected":
                    raise PoolUnavailable(self.label, self.last_error or self.status)
                await self.wait_ready(self.options.call_wait)
            url = self.master_url
            try:
                return await self._observed(
                    method, self._workers.run(self._call_in_thread, url, method, args)
                )
            except HostIsSlave as exc:
                # The master moved: the request was not executed, retry on the new one.
                self._redirect(exc.master)
            except ConnectionRefusedError as exc:
                # Nothing was sent: wait for the supervisor to find the master again.
                self._suspect_urls.add(url)
                await self._wait_for_reconnect(self._generation, exc)
            except (AuthFailed, TlsFailed) as exc:
                raise PoolUnavailable(self.label, str(exc)) from None
            except TRANSPORT_ERRORS as exc:
                raise PoolUnavailable(self.label, f"{method}: {exc!r}") from None
        raise PoolUnavailable(self.label, f"{method}: master kept moving")

    async def call_cached(self, ttl: float, method: str, *args: Any, refresh: bool = False) -> Any:
        """`call`, its answer reused for `ttl` seconds (xo-server's `xapi.call(cache, ...)`);
        `refresh` asks XAPI again."""
        key = ("call", method, *args)
        if refresh:
            self.memo.forget(key)
        return await self.memo.get(key, ttl, lambda: self.call(method, *args))

    async def get_on_host(self, address: str, path: str, query: dict[str, str]) -> bytes:
        """An HTTP resource of one host of the pool (`/rrd_updates` ...), with this pool's
        session, the configured URL's scheme and port, and its TLS options; XapiHttpError
        when the host answers with an error status."""
        if self._stopped:
            raise PoolUnavailable(self.label, "connection closed")
        if not self._ready.is_set():
            await self.wait_ready(self.options.call_wait)
        base = member_url(self.cfg.url, address)
        try:
            return await self._workers.run(self._get_in_thread, base, path, query)
        except HostIsSlave as exc:  # the master moved while logging in: next time
            self._redirect(exc.master)
            raise PoolUnavailable(self.label, "the pool master moved") from None
        except (AuthFailed, TlsFailed) as exc:
            raise PoolUnavailable(self.label, str(exc)) from None
        except TRANSPORT_ERRORS as exc:
            raise PoolUnavailable(self.label, f"GET {path} on {address}: {exc!r}") from None

    async def call_async(
        self,
        method: str,
        *args: Any,
        on_task: Callable[[str], None] | None = None,
        cancel_on_cancel: bool | Callable[[], bool] = True,
    ) -> Any:
        """Run `Async.<method>`, wait for its task through the event stream, return the
        decoded result; XapiError / TaskCancelled on failure; the task is always destroyed.

        `on_task` is told the task ref as soon as XAPI returns it (to follow its progress or
        cancel it). Cancelling the caller cancels the XAPI task, unless `cancel_on_cancel` is
        false (or a callable answering false at that moment): then the XAPI task is left
        running and not destroyed (the caller is shutting down, not giving up on the
        operation). PoolUnavailable once the task exists means only that we lost sight of
        it: it may still be running; `follow_task` picks it up again."""

        # Observed twice: the `Async.<method>` call (dispatch) by `call`, and here the whole
        # operation under `<method>`, with the task's outcome and duration.
        return await self._observed(
            method, self._run_async(method, args, on_task, cancel_on_cancel)
        )

    async def _run_async(
        self,
        method: str,
        args: tuple[Any, ...],
        on_task: Callable[[str], None] | None,
        cancel_on_cancel: bool | Callable[[], bool],
    ) -> Any:
        def wants_cancel() -> bool:
            return cancel_on_cancel() if callable(cancel_on_cancel) else cancel_on_cancel

        start = asyncio.ensure_future(self.call(f"Async.{method}", *args))
        try:
            task_ref = await asyncio.shield(start)
        except asyncio.CancelledError:
            # The XAPI task may still get created: cancel and destroy it once it is known.
            cleanup = asyncio.ensure_future(self._abandon(start) if wants_cancel() else start)
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            raise
        if on_task is not None:
            on_task(task_ref)
        watch = self.cache.watch_task(task_ref)
        detached = False
        try:
            task = await self._wait_task(watch)
        except asyncio.CancelledError:
            if wants_cancel():
                await self._cancel_task(task_ref, watch)
            else:
                detached = True
            raise
        except PoolUnavailable:
            detached = True  # still running as far as we know: the caller may follow it
            raise
        finally:
            self.cache.unwatch(watch)
            if not detached:
                await self._destroy_task(task_ref)
        return task_outcome(task_ref, task)

    async def follow_task(self, task_ref: str) -> Any:
        """Wait for an existing task to end (through the event stream), destroy it and return
        its decoded result, as `call_async` does; for a task whose wait was cut short by a
        lost connection. XapiError("TASK_DESTROYED") if it vanished meanwhile."""
        watch = self.cache.watch_task(task_ref)
        try:
            task = await self._wait_task(watch)
        except XapiError as exc:
            if exc.code == "TASK_DESTROYED":
                raise
            # A XAPI failure reading the task, not the task's outcome: it may still exist.
            await self._destroy_task(task_ref)
            raise
        finally:
            self.cache.unwatch(watch)
        await self._destroy_task(task_ref)
        return task_outcome(task_ref, task)

    async def _observed(self, method: str, work: Awaitable[Any]) -> Any:
        """Await one XAPI call, telling the observer (if any) how long it took and how it
        ended."""
        observer = self.options.observer
        if observer is None:
            return await work
        started = time.perf_counter()
        try:
            result = await work
        except XapiError as exc:
            observer(self.label, method, time.perf_counter() - started, exc.code)
            raise
        except Exception as exc:
            observer(self.label, method, time.perf_counter() - started, type(exc).__name__)
            raise
        observer(self.label, method, time.perf_counter() - started, None)
        return result

    # -- tasks -------------------------------------------------------------------------

    async def _wait_task(self, watch: TaskWatch) -> XoObject:
        while True:
            task = await watch.future
            if task is not None:
                return task
            # Not seen by a fresh poll, or deleted unseen: one direct look settles it.
            try:
                record = await self.call("task.get_record", watch.ref)
            except XapiError as exc:
                if exc.code == "HANDLE_INVALID":
                    raise XapiError(
                        "TASK_DESTROYED",
                        [watch.ref, "the task was destroyed before it completed"],
                    ) from None
                raise
            task = self.cache.convert_detached("task", watch.ref, record)
            if task.get("status") in ("success", "failure", "cancelled"):
                return task
            # Still pending: it will show up in the stream; wait again.
            self.cache.unwatch(watch)
            watch = self.cache.watch_task(watch.ref)
            watch.seen = True

    async def _abandon(self, start: asyncio.Future[Any]) -> None:
        try:
            task_ref = await start
        except Exception:
            return
        with contextlib.suppress(XapiError, PoolUnavailable):
            await self.call("task.cancel", task_ref)
        await self._destroy_task(task_ref)

    async def _cancel_task(self, task_ref: str, watch: TaskWatch) -> None:
        try:
            await self.call("task.cancel", task_ref)
            async with asyncio.timeout(self.options.cancel_grace):
                await asyncio.shield(watch.future)
        except (XapiError, PoolUnavailable, TimeoutError) as exc:
            log.info("event=task_cancel_failed pool=%s task=%s error=%s", self.label, task_ref, exc)

    async def _destroy_task(self, task_ref: str) -> None:
        if not self._ready.is_set() and not self._stopped:
            # Reconnecting: destroy it once back, without holding the caller up (XAPI would
            # otherwise keep the finished task for 65 minutes).
            cleanup = asyncio.ensure_future(self._destroy_when_ready(task_ref))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            return
        try:
            await self.call("task.destroy", task_ref)
        except (XapiError, PoolUnavailable) as exc:
            log.info(
                "event=task_destroy_failed pool=%s task=%s error=%s", self.label, task_ref, exc
            )

    async def _destroy_when_ready(self, task_ref: str) -> None:
        try:
            await self.wait_ready(self.options.destroy_wait)
            await self.call("task.destroy", task_ref)
        except (XapiError, PoolUnavailable) as exc:
            log.info(
                "event=task_destroy_failed pool=%s task=%s deferred=true error=%s",
                self.label,
                task_ref,
                exc,
            )

    # -- worker threads ----------------------------------------------------------------

    def _thread_session(self, url: str) -> XapiSession:
        """This worker thread's session on `url`, logged in."""
        session: XapiSession | None = getattr(self._tls_sessions, "session", None)
        if session is None or session.url != url:
            if session is not None:
                session.close()
            session = XapiSession(url, self._creds, self._tls, self.options.call_timeout)
            self._tls_sessions.session = session
        if not session.logged_in:
            session.login()
        return session

    def _call_in_thread(self, url: str, method: str, args: tuple[Any, ...]) -> Any:
        return self._thread_session(url).call(method, args)

    def _get_in_thread(self, base: str, path: str, query: dict[str, str]) -> bytes:
        session = self._thread_session(self.master_url)
        return session.http_get(base, path, query, self.options.call_timeout)

    def _logout_worker_session(self) -> None:
        session: XapiSession | None = getattr(self._tls_sessions, "session", None)
        if session is not None:
            session.logout()
            session.close()

    def _logout_event_session(self) -> None:
        session, self._event_session = self._event_session, None
        if session is not None:
            session.close()  # its socket was shut down by abort(): log out on a fresh one
            session.logout()
            session.close()

    # -- supervisor --------------------------------------------------------------------

    async def _supervise(self) -> None:
        opts = self.options
        backoff = opts.backoff_initial
        auth_failures = 0
        redirects = 0
        while True:
            self.status = "connecting"
            self._was_ready = False
            try:
                await self._connect_and_stream()
            except asyncio.CancelledError:
                raise
            except (AuthFailed, TlsFailed) as exc:
                # Configuration errors (credentials, untrusted certificate): slow, bounded.
                auth_failures += 1
                self._lost(str(exc), "disconnected")
                if auth_failures >= opts.auth_max_attempts:
                    self.last_error = f"{exc} (gave up after {auth_failures} attempts)"
                    reason = "wrong credentials" if isinstance(exc, AuthFailed) else "TLS"
                    log.error("event=pool_gave_up pool=%s reason=%s", self.label, reason)
                    return
                await asyncio.sleep(opts.auth_retry_interval)
                continue
            except HostIsSlave as exc:
                # Seen on re-login of the event session: follow at once, but not forever
                # (hosts that keep pointing at each other get the backoff).
                self._redirect(exc.master)
                self._lost(str(exc), "connecting")
                redirects = 0 if self._was_ready else redirects + 1
                if redirects <= 2:
                    continue
            except Exception as exc:
                self._lost(describe(exc), "connecting")
            auth_failures = 0
            if self._was_ready:
                backoff = opts.backoff_initial
                redirects = 0
            log.debug("event=pool_reconnect_wait pool=%s delay_s=%.2f", self.label, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, opts.backoff_max)

    def _lost(self, error: str, status: Status) -> None:
        was = self._ready.is_set()
        repeated = not was and error == self.last_error
        self._ready.clear()
        self.status = status
        self.last_error = error
        # The same failure again while reconnecting is not news: keep the log readable.
        log.log(
            logging.DEBUG if repeated else logging.WARNING,
            "event=pool_lost pool=%s status=%s was_connected=%s error=%s",
            self.label,
            status,
            was,
            error,
        )

    async def _connect_and_stream(self) -> None:
        session = await self._find_master()
        token = ""
        while True:
            self.cache.polls_started += 1
            poll = self.cache.polls_started
            full = token == ""
            with self.options.full_sync() if full else contextlib.nullcontext():
                try:
                    result = await self._observed(
                        "event.from", self._events.run(self._event_from, session, token)
                    )
                except XapiError as exc:
                    if exc.code == "EVENT_FROM_TOKEN_PARSE_FAILURE":
                        token = ""
                        continue
                    raise
                except TRANSPORT_ERRORS:
                    self._suspect_urls.add(session.url)
                    raise
                await self.cache.apply(result.get("events", []), full=full, poll=poll)
            token = result.get("token", "")
            if full:
                self._suspect_urls.discard(session.url)
                self.master_url = session.url
                self.status = "connected"
                self.last_error = None
                self._was_ready = True
                self._generation += 1
                self._ready.set()
                log.info(
                    "event=pool_connected pool=%s pool_id=%s master=%s objects=%d",
                    self.label,
                    self.pool_id,
                    url_host(session.url),
                    len(self.cache),
                )

    def _event_from(self, session: XapiSession, token: str) -> dict[str, Any]:
        # With token "" XAPI answers at once (every object is an event), no need to special-case.
        timeout = float(self.options.event_timeout)
        started = time.monotonic()
        result = session.call_bulk("event.from", (list(self.options.classes), token, timeout))
        log.debug("event=event_from pool=%s took_s=%.3f", self.label, time.monotonic() - started)
        return result

    async def _find_master(self) -> XapiSession:
        """Log the event session in on the master; reuse the current one when still there."""
        candidates = [self.master_url]
        candidates += [member_url(self.cfg.url, a) for a in self.cache.host_addresses()]
        candidates.append(self.cfg.url)
        ordered = list(dict.fromkeys(candidates))
        ordered.sort(key=lambda u: u in self._suspect_urls)  # stable: suspects last
        last_exc: BaseException | None = None
        tls_exc: TlsFailed | None = None  # reported first: it needs the user, not a retry
        for start_url in ordered:
            url = start_url
            for _hop in range(_MAX_REDIRECTS):
                current = self._event_session
                if current is not None and current.url == url and current.logged_in:
                    return current
                session = XapiSession(
                    url,
                    self._creds,
                    self._tls,
                    self.options.event_timeout + self.options.socket_margin,
                )
                self._login_session = session
                try:
                    await self._observed(
                        "session.login_with_password", self._events.run(session.login)
                    )
                except HostIsSlave as exc:
                    session.close()
                    url = member_url(self.cfg.url, exc.master)
                    log.info("event=host_is_slave pool=%s master=%s", self.label, exc.master)
                    continue
                except AuthFailed:
                    session.close()
                    raise
                except TlsFailed as exc:
                    session.close()
                    tls_exc = exc
                    break
                except TRANSPORT_ERRORS as exc:
                    session.close()
                    self._suspect_urls.add(url)
                    last_exc = exc
                    break
                finally:
                    self._login_session = None
                # Replaced sessions are dropped without logout: their host may be gone.
                self._event_session = session
                self.master_url = url
                return session
        if tls_exc is not None:
            raise tls_exc
        raise last_exc if last_exc is not None else PoolUnavailable(self.label, "no master found")

    def _redirect(self, address: str) -> None:
        url = member_url(self.cfg.url, address)
        if url != self.master_url:
            log.info("event=master_moved pool=%s master=%s", self.label, address)
            self.master_url = url

    async def _wait_for_reconnect(self, generation: int, exc: BaseException) -> None:
        """After a refused connection: give the supervisor time to reconnect (anywhere)."""
        deadline = time.monotonic() + self.options.call_wait
        while time.monotonic() < deadline:
            if self._ready.is_set() and self._generation != generation:
                return
            if self._stopped or self.status == "disconnected":
                break
            await asyncio.sleep(0.05)
        raise PoolUnavailable(self.label, repr(exc))


def describe(exc: BaseException) -> str:
    if isinstance(exc, XapiError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def task_outcome(task_ref: str, task: XoObject) -> Any:
    status = task.get("status")
    if status == "success":
        return decode_task_result(task.get("result", ""))
    if status == "cancelled":
        raise TaskCancelled(task_ref, task=task)
    info = [str(x) for x in task.get("error_info") or []] or ["INTERNAL_ERROR"]
    if info[0] == "TASK_CANCELLED":
        raise TaskCancelled(task_ref, task=task)
    raise XapiError(info[0], info[1:], task=task)
